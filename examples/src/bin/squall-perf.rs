//! Perf topologies, as Storm's storm-perf: run one in local mode and print one JSON line
//! with throughput and complete-latency percentiles.
//!
//! ```text
//! squall-perf const-spout-null-bolt --seconds 20 --ackers 0
//! squall-perf const-spout-id-bolt-null-bolt --ackers 1 --rate 500000
//! squall-perf word-count --splitters 1 --counters 1
//! ```

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use squall_api::{Config, Topology, TopologyBuilder};
use squall_examples::{word_count_topology, ConstSpout, DevNullBolt, IdBolt, WordCountOptions};
use squall_worker::{LocalCluster, TopologyStats};

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Topo {
    /// ConstSpout → DevNullBolt (local-or-shuffle).
    ConstSpoutNullBolt,
    /// ConstSpout → IdBolt → DevNullBolt (local-or-shuffle).
    ConstSpoutIdBoltNullBolt,
    /// Five fixed sentences → split (shuffle) → count (fields on word).
    WordCount,
}

#[derive(Parser, Debug)]
#[command(
    name = "squall-perf",
    about = "Squall's perf topologies (as Storm's storm-perf)"
)]
struct Args {
    /// Which topology.
    #[arg(value_enum)]
    topology: Topo,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Acker executors; 0 turns acking off (spouts then emit without message ids).
    #[arg(long, default_value_t = 1)]
    ackers: u32,
    /// Spout executors.
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    /// Bolt executors per bolt of the const topologies.
    #[arg(long, default_value_t = 1)]
    bolts: u32,
    /// Split executors (word-count).
    #[arg(long, default_value_t = 1)]
    splitters: u32,
    /// Count executors (word-count).
    #[arg(long, default_value_t = 1)]
    counters: u32,
    /// topology.max.spout.pending (per spout task).
    #[arg(long)]
    max_pending: Option<u32>,
    /// Limit the spouts to this many tuples per second in total.
    #[arg(long)]
    rate: Option<u64>,
    /// topology.producer.batch.size.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Worker processes (needs cluster mode).
    #[arg(long, default_value_t = 1)]
    workers: u32,
}

fn topology(a: &Args) -> anyhow::Result<Topology> {
    let reliable = a.ackers > 0;
    let rate = a.rate.map(|r| (r / a.spouts as u64).max(1));
    let mut b = TopologyBuilder::new();
    match a.topology {
        Topo::ConstSpoutNullBolt => {
            b.set_spout("spout", ConstSpout::new(reliable, rate), a.spouts);
            b.set_bolt("bolt", DevNullBolt, a.bolts)
                .local_or_shuffle_grouping("spout");
        }
        Topo::ConstSpoutIdBoltNullBolt => {
            b.set_spout("spout", ConstSpout::new(reliable, rate), a.spouts);
            b.set_bolt("id", IdBolt, a.bolts)
                .local_or_shuffle_grouping("spout");
            b.set_bolt("bolt", DevNullBolt, a.bolts)
                .local_or_shuffle_grouping("id");
        }
        Topo::WordCount => {
            return Ok(word_count_topology(&WordCountOptions {
                spouts: a.spouts,
                splitters: a.splitters,
                counters: a.counters,
                reliable,
                rate,
                report: None,
            })?);
        }
    }
    Ok(b.create_topology()?)
}

/// The component whose executed count is the topology's throughput.
fn sink(t: Topo) -> &'static str {
    match t {
        Topo::ConstSpoutNullBolt | Topo::ConstSpoutIdBoltNullBolt => "bolt",
        Topo::WordCount => "count",
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if a.workers > 1 {
        bail!(
            "--workers {} needs cluster mode, which this build does not have yet",
            a.workers
        );
    }
    let topology = topology(&a)?;
    let mut conf = Config::new();
    conf.set_num_ackers(a.ackers);
    if let Some(p) = a.max_pending {
        conf.set_max_spout_pending(p);
    }
    if let Some(b) = a.batch_size {
        conf.set(squall_api::config::keys::TOPOLOGY_PRODUCER_BATCH_SIZE, b);
    }
    let name = format!("{:?}", a.topology).to_lowercase();
    let cluster = LocalCluster::new();
    cluster.submit_topology(&name, &conf, &topology)?;
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let before = cluster.stats(&name)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let after = cluster.stats(&name)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let errors = cluster.errors(&name)?;
    cluster.kill_topology(&name)?;

    let delta = |s: &TopologyStats, f: fn(&squall_worker::ComponentStats) -> u64, c: &str| {
        f(&s.component(c))
    };
    let sink = sink(a.topology);
    let processed = delta(&after, |c| c.executed, sink) - delta(&before, |c| c.executed, sink);
    let acked = delta(&after, |c| c.acked, "spout") - delta(&before, |c| c.acked, "spout");
    let failed = delta(&after, |c| c.failed, "spout") - delta(&before, |c| c.failed, "spout");
    let emitted = delta(&after, |c| c.emitted, "spout") - delta(&before, |c| c.emitted, "spout");
    let lat = after
        .component("spout")
        .complete_latency_ms
        .unwrap_or_default();
    let out = serde_json::json!({
        "topology": format!("{:?}", a.topology).chars().fold(String::new(), |mut s, ch| {
            if ch.is_uppercase() && !s.is_empty() { s.push('-'); }
            s.push(ch.to_ascii_lowercase());
            s
        }),
        "seconds": (elapsed * 100.0).round() / 100.0,
        "workers": a.workers,
        "ackers": a.ackers,
        "spouts": a.spouts,
        "max_pending": a.max_pending,
        "rate": a.rate,
        "tuples_per_sec": (processed as f64 / elapsed).round(),
        "spout_emits_per_sec": (emitted as f64 / elapsed).round(),
        "acked_per_sec": (acked as f64 / elapsed).round(),
        "latency_ms": { "p50": lat.p50, "p99": lat.p99, "max": lat.max, "mean": (lat.mean * 1000.0).round() / 1000.0 },
        "acked": acked,
        "failed": failed,
        "errors": errors.len(),
    });
    println!("{out}");
    Ok(())
}
