//! The window benchmark: word count over a sliding duration window (default 10 s
//! window, 1 s slide). Random words (a vocabulary of `--vocabulary`) are fields-grouped
//! to `--counters` windowed word-count tasks, which keep their counts incrementally and
//! emit one summary per window; a sink measures the delay from each window's end to
//! its result. Prints one JSON line: words/s through the windows and the delay
//! percentiles.
//!
//! ```text
//! window-perf --seconds 30 --ackers 1 --max-pending 200000
//! window-perf --seconds 30 --ackers 0 --rate 200000
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::windowing::Windowed;
use squall_api::{Config, TopologyBuilder};
use squall_examples::windows::{DelaySink, WindowWordCount, WordSpout};
use squall_worker::LocalCluster;

#[derive(Parser)]
#[command(name = "window-perf", about = "Sliding-window word count benchmark")]
struct Args {
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Warm-up seconds (the first window must have filled), not measured.
    #[arg(long, default_value_t = 12.0)]
    warmup: f64,
    /// Window length in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    window_ms: u64,
    /// Sliding interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    slide_ms: u64,
    /// Acker executors; 0 turns acking off (words are then untracked).
    #[arg(long, default_value_t = 1)]
    ackers: u32,
    /// `topology.max.spout.pending` per spout task (with ackers).
    #[arg(long, default_value_t = 500_000)]
    max_pending: u32,
    /// Words per second per spout task (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Spout tasks.
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    /// Windowed word-count tasks.
    #[arg(long, default_value_t = 2)]
    counters: u32,
    /// Distinct words.
    #[arg(long, default_value_t = 1000)]
    vocabulary: usize,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let a = Args::parse();
    let words: Vec<String> = (0..a.vocabulary).map(|i| format!("w{i}")).collect();
    let sink = DelaySink::default();
    let delays = sink.delays.clone();
    let mut builder = TopologyBuilder::new();
    builder.set_spout(
        "spout",
        WordSpout::new(words, a.ackers > 0, a.rate),
        a.spouts,
    );
    builder
        .set_bolt(
            "count",
            Windowed::new(WindowWordCount::default()).with_window(
                Duration::from_millis(a.window_ms),
                Duration::from_millis(a.slide_ms),
            ),
            a.counters,
        )
        .fields_grouping("spout", ["word"]);
    builder.set_bolt("sink", sink, 1).shuffle_grouping("count");
    let topology = builder.create_topology()?;
    let mut conf = Config::new();
    conf.set_num_ackers(a.ackers);
    if a.ackers > 0 {
        conf.set_max_spout_pending(a.max_pending);
    }
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("window-perf", &conf, &topology)
        .context("starting window-perf")?;
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let before = cluster.stats("window-perf")?;
    delays.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    let after = cluster.stats("window-perf")?;
    let elapsed = started.elapsed().as_secs_f64();
    let measured = delays.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let errors = cluster.errors("window-perf")?;
    cluster.kill_topology_with_opts("window-perf", Duration::from_millis(200))?;

    let words =
        after.component("count").executed as f64 - before.component("count").executed as f64;
    let acked = after.component("spout").acked as f64 - before.component("spout").acked as f64;
    let failed = after.component("spout").failed - before.component("spout").failed;
    let mut d: Vec<i64> = measured.iter().map(|m| m.0).collect();
    d.sort_unstable();
    let avg_window = if measured.is_empty() {
        0.0
    } else {
        measured.iter().map(|m| m.1 as f64).sum::<f64>() / measured.len() as f64
    };
    println!(
        "{}",
        serde_json::json!({
            "topology": "window-word-count",
            "window_ms": a.window_ms,
            "slide_ms": a.slide_ms,
            "ackers": a.ackers,
            "max_pending": if a.ackers > 0 { Some(a.max_pending) } else { None },
            "spouts": a.spouts,
            "counters": a.counters,
            "seconds": elapsed,
            "words_per_sec": (words / elapsed).round(),
            "acked_per_sec": (acked / elapsed).round(),
            "failed": failed,
            "window_results": d.len(),
            "avg_tuples_per_window_task": avg_window.round(),
            "result_delay_ms": {
                "p50": percentile(&d, 0.5),
                "p99": percentile(&d, 0.99),
                "max": d.last().copied().unwrap_or(0),
            },
            "errors": errors.len(),
        })
    );
    Ok(())
}
