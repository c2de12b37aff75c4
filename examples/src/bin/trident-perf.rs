//! Exactly-once word count throughput in local mode: TridentWordCount's counting half
//! (sentences → split → group by word → persistent count), measured. Prints one JSON
//! line: words committed per second, batches, batch latency (start to commit)
//! percentiles and replays.
//!
//! ```text
//! trident-perf --seconds 10                          # memory state, 500 ms batches
//! trident-perf --emit-interval-ms 0 --redis redis://127.0.0.1:6379
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::Config;
use squall_examples::trident::{SentenceSpout, Split};
use squall_trident::{Count, MemoryMapState, RedisMapState, Transactional, TridentTopology};
use squall_worker::LocalCluster;

#[derive(Parser)]
#[command(
    name = "trident-perf",
    about = "Exactly-once word count throughput (local mode)"
)]
struct Args {
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// topology.trident.batch.emit.interval.millis.
    #[arg(long, default_value_t = 500)]
    emit_interval_ms: u64,
    /// Sentences per spout partition per batch.
    #[arg(long, default_value_t = 100_000)]
    batch_size: u64,
    /// Spout partitions.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Tasks of the spout bolt and of the count state.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// topology.max.spout.pending: batches in flight.
    #[arg(long, default_value_t = 2)]
    pending: u32,
    /// Keep the counts in this Redis instead of memory.
    #[arg(long)]
    redis: Option<String>,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let a = Args::parse();
    let name = format!("trident-perf-{}", std::process::id());
    let mut t = TridentTopology::new();
    let grouped = t
        .new_stream(
            &name,
            Transactional(SentenceSpout {
                partitions: a.partitions,
                batch_size: a.batch_size,
                limit: None,
            }),
        )
        .parallelism_hint(a.parallelism)
        .each(["sentence"], Split, ["word"])
        .group_by(["word"]);
    let memory = MemoryMapState::transactional();
    let redis = a
        .redis
        .as_ref()
        .map(|u| RedisMapState::transactional(u.clone()));
    match &redis {
        Some(r) => grouped.persistent_aggregate(r.clone(), Count, ["count"]),
        None => grouped.persistent_aggregate(memory.clone(), Count, ["count"]),
    }
    .parallelism_hint(a.parallelism);
    let topology = t.build()?;
    let mut conf = Config::new();
    conf.set(
        "topology.trident.batch.emit.interval.millis",
        a.emit_interval_ms,
    );
    conf.set_max_spout_pending(a.pending);
    let total = || -> anyhow::Result<i64> {
        let snap = match &redis {
            Some(r) => r.snapshot_of(&name, "state0")?,
            None => memory.snapshot(),
        };
        Ok(snap.iter().filter_map(|(_, v)| v.as_i64()).sum())
    };
    let cluster = LocalCluster::new();
    cluster
        .submit_topology(&name, &conf, &topology)
        .context("starting the topology")?;
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let (w0, s0, t0) = (
        total()?,
        squall_trident::metrics::batch_stats(&name).unwrap_or_default(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let (w1, s1, secs) = (
        total()?,
        squall_trident::metrics::batch_stats(&name).unwrap_or_default(),
        t0.elapsed().as_secs_f64(),
    );
    cluster.kill_topology_with_opts(&name, Duration::from_millis(200))?;
    println!(
        "{}",
        serde_json::json!({
            "topology": "trident-word-count",
            "state": if redis.is_some() { "redis" } else { "memory" },
            "emit_interval_ms": a.emit_interval_ms,
            "batch_size": a.batch_size * u64::from(a.partitions),
            "pending": a.pending,
            "seconds": secs,
            "words_per_s": ((w1 - w0) as f64 / secs).round(),
            "batches": s1.committed - s0.committed,
            "replays": s1.replays - s0.replays,
            "batch_latency_ms": {"p50": s1.latency_p50_ms, "p99": s1.latency_p99_ms, "max": s1.latency_max_ms},
        })
    );
    Ok(())
}
