//! Perf topologies, as Storm's storm-perf: run one in local mode and print one JSON line
//! with throughput and complete-latency percentiles.
//!
//! ```text
//! squall-perf const-spout-null-bolt --seconds 20 --ackers 0
//! squall-perf const-spout-id-bolt-null-bolt --ackers 1 --rate 500000
//! squall-perf word-count --splitters 1 --counters 1
//! ```

use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use squall_api::{Config, TaskLayout, Topology, TopologyBuilder};
use squall_cluster::state::{
    Assignment, ExecutorAssignment, LocalHeartbeat, WorkerLaunch, WorkerSlot,
};
use squall_examples::{word_count_topology, ConstSpout, DevNullBolt, IdBolt, WordCountOptions};
use squall_worker::submitter::{launch_mode, LaunchMode, LAUNCH_ENV};
use squall_worker::StormSubmitter;
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
    /// Turn automatic spout flow control off (`squall.spout.flow.control: false`):
    /// without --max-pending, spouts then emit without limit.
    #[arg(long)]
    no_flow_control: bool,
    /// Limit the spouts to this many tuples per second in total.
    #[arg(long)]
    rate: Option<u64>,
    /// topology.producer.batch.size.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Worker processes. With 2 or more, squall-perf starts itself that many times as
    /// standalone workers (no ZooKeeper or Nimbus) and places consecutive components on
    /// different workers, so every tuple crosses between processes over TCP.
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
                gauges: false,
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
    squall_examples::init_logging();
    let a = Args::parse();
    let topology = topology(&a)?;
    let mut conf = Config::new();
    conf.set_num_ackers(a.ackers);
    if let Some(p) = a.max_pending {
        conf.set_max_spout_pending(p);
    }
    if a.no_flow_control {
        conf.set(squall_api::config::keys::SQUALL_SPOUT_FLOW_CONTROL, false);
    }
    if let Some(b) = a.batch_size {
        conf.set(squall_api::config::keys::TOPOLOGY_PRODUCER_BATCH_SIZE, b);
    }
    let name = format!("{:?}", a.topology).to_lowercase();
    if launch_mode() == LaunchMode::Worker {
        // One of the workers started by `--workers` below.
        StormSubmitter::submit_topology(&name, &conf, &topology)?;
        return Ok(());
    }
    if a.workers > 1 {
        return multi_process(&a, &name, &conf, &topology);
    }
    let cluster = LocalCluster::new();
    cluster.submit_topology(&name, &conf, &topology)?;
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let before = cluster.stats(&name)?;
    let cpu_before = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let after = cluster.stats(&name)?;
    let cpu = cpu_seconds(std::process::id()) - cpu_before;
    let rss = rss_mb(std::process::id());
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
    let pending_limit = after.component("spout").pending_limit;
    print_result(
        &a,
        elapsed,
        Counts {
            processed,
            emitted,
            acked,
            failed,
            cpu,
            pending_limit,
            rss_mb: rss,
        },
        (lat.p50, lat.p99, lat.max, lat.mean),
    );
    if !errors.is_empty() {
        eprintln!(
            "{} errors reported; the first: {}",
            errors.len(),
            errors[0].error
        );
    }
    Ok(())
}

/// What a run counted during the measured seconds.
struct Counts {
    processed: u64,
    emitted: u64,
    acked: u64,
    failed: u64,
    /// CPU seconds the topology's processes used.
    cpu: f64,
    /// The spouts' automatic pending limit at the end (0: not in use or not known).
    pending_limit: u64,
    /// Resident memory at the end of the run, in MB: the process, or the largest worker.
    rss_mb: f64,
}

/// The resident memory of process `pid` in MB, from `/proc` (0 where there is none).
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

/// CPU seconds (user + system) process `pid` used so far, from `/proc` (0 where there
/// is no `/proc`). Less noisy than throughput on a shared machine: the CPU cost of a
/// tuple does not depend on how much of the machine the run got.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses: utime and stime
    // are the 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // In USER_HZ, which Linux fixes at 100 for /proc.
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints the one JSON line of a run. `latency` is p50, p99, max and mean in ms.
fn print_result(a: &Args, elapsed: f64, c: Counts, latency: (f64, f64, f64, f64)) {
    let per_sec = |n: u64| (n as f64 / elapsed).round();
    let out = serde_json::json!({
        "topology": kebab(a.topology),
        "seconds": (elapsed * 100.0).round() / 100.0,
        "workers": a.workers,
        "ackers": a.ackers,
        "spouts": a.spouts,
        "max_pending": a.max_pending,
        "flow_control_limit": c.pending_limit,
        "rate": a.rate,
        "tuples_per_sec": per_sec(c.processed),
        "spout_emits_per_sec": per_sec(c.emitted),
        "acked_per_sec": per_sec(c.acked),
        "latency_ms": {
            "p50": latency.0, "p99": latency.1, "max": latency.2,
            "mean": (latency.3 * 1000.0).round() / 1000.0,
        },
        "acked": c.acked,
        "failed": c.failed,
        "cpu_cores": (c.cpu / elapsed * 100.0).round() / 100.0,
        "rss_mb": c.rss_mb,
        "cpu_ns_per_tuple": if c.processed > 0 { (c.cpu * 1e9 / c.processed as f64).round() } else { 0.0 },
    });
    println!("{out}");
}

fn kebab(t: Topo) -> String {
    format!("{t:?}").chars().fold(String::new(), |mut s, ch| {
        if ch.is_uppercase() && !s.is_empty() {
            s.push('-');
        }
        s.push(ch.to_ascii_lowercase());
        s
    })
}

/// The components of the perf topologies in the order tuples flow.
fn flow(t: Topo) -> &'static [&'static str] {
    match t {
        Topo::ConstSpoutNullBolt => &["spout", "bolt"],
        Topo::ConstSpoutIdBoltNullBolt => &["spout", "id", "bolt"],
        Topo::WordCount => &["spout", "split", "count"],
    }
}

/// Counters summed over the workers' heartbeat files, and the newest file time.
struct Snapshot {
    at: std::time::SystemTime,
    executed: BTreeMap<String, u64>,
    acked: u64,
    failed: u64,
    emitted: u64,
    latency: (f64, f64, f64, f64),
}

fn snapshot(files: &[PathBuf]) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot {
        at: std::time::UNIX_EPOCH,
        executed: BTreeMap::new(),
        acked: 0,
        failed: 0,
        emitted: 0,
        latency: (0.0, 0.0, 0.0, 0.0),
    };
    for f in files {
        let bytes =
            std::fs::read(f).with_context(|| format!("no heartbeat yet in {}", f.display()))?;
        let hb: LocalHeartbeat = serde_json::from_slice(&bytes)?;
        s.at = s.at.max(std::fs::metadata(f)?.modified()?);
        for e in hb.executors {
            *s.executed.entry(e.component.clone()).or_default() += e.executed;
            if e.component == "spout" {
                s.acked += e.acked;
                s.failed += e.failed;
                s.emitted += e.emitted;
                s.latency = (
                    s.latency.0.max(e.complete_latency_p50_ms),
                    s.latency.1.max(e.complete_latency_p99_ms),
                    s.latency.2.max(e.complete_latency_max_ms),
                    s.latency.3.max(e.complete_latency_ms),
                );
            }
        }
    }
    Ok(s)
}

/// Runs the topology as `a.workers` standalone worker processes of this binary.
fn multi_process(a: &Args, name: &str, conf: &Config, topology: &Topology) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("squall-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let layout = TaskLayout::new(topology.spec(), conf.num_ackers()?);
    let slots: Vec<WorkerSlot> = (0..a.workers)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            Ok(WorkerSlot {
                node: "perf".into(),
                port,
            })
        })
        .collect::<std::io::Result<_>>()?;
    let order = flow(a.topology);
    let executors = layout
        .executors()
        .map(|(component, first, last)| {
            // Consecutive components on different workers; ackers with the last one.
            let i = order
                .iter()
                .position(|c| *c == component.as_str())
                .unwrap_or(order.len() - 1);
            ExecutorAssignment {
                component: component.to_string(),
                first,
                last,
                slot: slots[i % slots.len()].clone(),
            }
        })
        .collect();
    let assignment = Assignment {
        topology_id: format!("{name}-perf"),
        topology_name: name.to_owned(),
        binary_sha256: String::new(),
        args: Vec::new(),
        conf: conf.clone(),
        executors,
        node_host: BTreeMap::from([("perf".to_owned(), "127.0.0.1".to_owned())]),
        slot_start_secs: BTreeMap::new(),
        version: 1,
        epoch: 1,
    };
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut beats = Vec::new();
    for slot in &slots {
        let heartbeat_file = dir.join(format!("heartbeat-{}", slot.port));
        let launch = WorkerLaunch {
            topology_id: assignment.topology_id.clone(),
            topology_name: name.to_owned(),
            supervisor_id: slot.node.clone(),
            host: "127.0.0.1".into(),
            port: slot.port,
            assignment: assignment.clone(),
            nimbus: Vec::new(),
            heartbeat_file: heartbeat_file.clone(),
            secret_file: None,
            cluster_conf: Default::default(),
        };
        let spec = dir.join(format!("launch-{}.json", slot.port));
        std::fs::write(&spec, serde_json::to_vec(&launch)?)?;
        let log = std::fs::File::create(dir.join(format!("worker-{}.log", slot.port)))?;
        children.push(
            std::process::Command::new(&exe)
                .args(std::env::args().skip(1))
                .env(LAUNCH_ENV, "worker")
                .env(squall_worker::cluster_worker::WORKER_SPEC_ENV, &spec)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        beats.push(heartbeat_file);
    }
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let result = measure(a, &beats, &dir, &pids);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(a: &Args, beats: &[PathBuf], dir: &Path, pids: &[u32]) -> anyhow::Result<()> {
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let started = Instant::now();
    while snapshot(beats).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("workers did not start; see the logs in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let before = snapshot(beats)?;
    let cpu_before = cpu();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let after = snapshot(beats)?;
    let cpu_used = cpu() - cpu_before;
    let elapsed = after
        .at
        .duration_since(before.at)
        .unwrap_or(Duration::from_secs_f64(a.seconds))
        .as_secs_f64()
        .max(0.001);
    let sink = sink(a.topology);
    let processed = after.executed.get(sink).copied().unwrap_or(0)
        - before.executed.get(sink).copied().unwrap_or(0);
    print_result(
        a,
        elapsed,
        Counts {
            processed,
            emitted: after.emitted - before.emitted,
            acked: after.acked - before.acked,
            failed: after.failed - before.failed,
            cpu: cpu_used,
            pending_limit: 0,
            rss_mb: pids.iter().map(|&p| rss_mb(p)).fold(0.0, f64::max),
        },
        after.latency,
    );
    Ok(())
}
