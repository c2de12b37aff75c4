//! storm-starter's RollingTopWords: random words are counted over a sliding window by
//! several counter tasks (fields grouping on the word), whose rankings a single task
//! merges and prints as the window slides.
//!
//! `rolling-top-words` runs it in local mode for `--seconds` (default 10) and prints the
//! top words at every slide; `squall jar ./rolling-top-words NAME` submits it as NAME.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use squall_api::windowing::Windowed;
use squall_api::{Config, TopologyBuilder};
use squall_examples::windows::{RollingCounts, TotalRankings, WordSpout, TEST_WORDS};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "rolling-top-words",
    about = "storm-starter's RollingTopWords on Squall"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without
    /// it the topology runs in local mode.
    name: Option<String>,
    /// Local mode: how long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// How many words to rank.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Window length in milliseconds.
    #[arg(long, default_value_t = 6000)]
    window_ms: u64,
    /// Sliding interval in milliseconds.
    #[arg(long, default_value_t = 2000)]
    slide_ms: u64,
    /// Counter tasks.
    #[arg(long, default_value_t = 2)]
    counters: u32,
    /// Words per second per spout task.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let latest = squall_examples::windows::Rankings::default();
    let words = TEST_WORDS.iter().map(|w| w.to_string()).collect();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("word", WordSpout::new(words, true, Some(args.rate)), 2);
    builder
        .set_bolt(
            "counter",
            Windowed::new(RollingCounts::new(args.top)).with_window(
                Duration::from_millis(args.window_ms),
                Duration::from_millis(args.slide_ms),
            ),
            args.counters,
        )
        .fields_grouping("word", ["word"]);
    builder
        .set_bolt(
            "total-rankings",
            TotalRankings::new(args.top, latest.clone()),
            1,
        )
        .global_grouping("counter");
    let topology = builder.create_topology()?;
    let conf = Config::new();

    if let Some(name) = &args.name {
        let mut conf = conf;
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let cluster = LocalCluster::new();
    cluster
        .submit_topology("rolling-top-words", &conf, &topology)
        .context("starting RollingTopWords in local mode")?;
    println!(
        "RollingTopWords running in local mode for {} s: top {} words over the last {} ms, every {} ms",
        args.seconds, args.top, args.window_ms, args.slide_ms
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let errors = cluster.errors("rolling-top-words")?;
    let stats = cluster.kill_topology_with_opts("rolling-top-words", Duration::from_millis(500))?;
    let latest = latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!("\nLast ranking:");
    for (word, count) in &latest {
        println!("  {word:<10} {count:>8}");
    }
    let spout = stats.component("word");
    println!("\nSummary:");
    println!("  words emitted      {:>10}", spout.emitted);
    println!("  words acked        {:>10}", spout.acked);
    println!("  words failed       {:>10}", spout.failed);
    if !errors.is_empty() {
        println!("  errors reported    {:>10}", errors.len());
        for e in errors.iter().take(5) {
            println!("    {} task {}: {}", e.component, e.task, e.error);
        }
    }
    Ok(())
}
