//! WordCountTopology: random sentences are split into words and counted.
//!
//! `word-count` runs it in local mode for `--seconds` (default 10), then prints the top
//! words and a summary. `squall jar ./word-count NAME` submits it to a cluster as NAME.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::Config;
use squall_examples::{word_count_topology, WordCountOptions, WordCounts};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(name = "word-count", about = "Storm's WordCountTopology on Squall")]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without
    /// it the topology runs in local mode.
    name: Option<String>,
    /// Local mode: how long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// How many of the most frequent words to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Split bolt executors.
    #[arg(long, default_value_t = 2)]
    splitters: u32,
    /// Count bolt executors.
    #[arg(long, default_value_t = 2)]
    counters: u32,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Sentences per second per spout task (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Set custom gauges, shown on the UI's component pages and in `/metrics`: the
    /// spout's `sentences.pending` and `sentences.replayed`, the count bolt's
    /// `words.distinct`.
    #[arg(long)]
    gauges: bool,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let counts = WordCounts::default();
    let topology = word_count_topology(&WordCountOptions {
        splitters: args.splitters,
        counters: args.counters,
        rate: args.rate,
        report: Some((1, counts.clone())),
        gauges: args.gauges,
        ..Default::default()
    })?;
    let mut conf = Config::new();
    conf.set_max_spout_pending(10_000);

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let cluster = LocalCluster::new();
    let started = Instant::now();
    cluster
        .submit_topology("word-count", &conf, &topology)
        .context("starting WordCount in local mode")?;
    println!("WordCount running in local mode for {} s ...", args.seconds);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let active = started.elapsed().as_secs_f64();
    // Deactivate, let in-flight sentences finish and the last counts reach the report.
    let errors = cluster.errors("word-count")?;
    // Gauges while it runs (a deactivated spout no longer updates its own).
    let running = cluster.stats("word-count")?;
    let stats = cluster.kill_topology_with_opts("word-count", Duration::from_millis(1500))?;

    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("\nTop {} words:", args.top.min(top.len()));
    for (word, count) in top.iter().take(args.top) {
        println!("  {word:<10} {count:>12}");
    }
    let spout = stats.component("spout");
    let words = stats.component("count").executed;
    let latency = spout.complete_latency_ms.unwrap_or_default();
    println!("\nSummary:");
    println!("  sentences emitted  {:>12}", spout.emitted);
    println!("  sentences acked    {:>12}", spout.acked);
    println!("  sentences failed   {:>12}", spout.failed);
    println!("  words counted      {:>12}", words);
    println!(
        "  throughput         {:>12.0} words/s ({:.0} sentences/s) over {:.1} s",
        words as f64 / active,
        spout.acked as f64 / active,
        active
    );
    println!(
        "  complete latency   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latency.p50, latency.p99, latency.max
    );
    if args.gauges {
        for component in ["spout", "count"] {
            for (name, value) in &running.component(component).gauges {
                println!("  gauge {:<18} {value:>8} ({component})", name);
            }
        }
    }
    if !errors.is_empty() {
        println!("  errors reported    {:>12}", errors.len());
        for e in errors.iter().take(5) {
            println!("    {} task {}: {}", e.component, e.task, e.error);
        }
    }
    Ok(())
}
