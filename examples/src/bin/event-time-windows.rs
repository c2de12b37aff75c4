//! Tumbling event-time windows: a spout emits timestamped events out of order (within
//! the allowed lag) with some late ones (beyond it), all from a seed; a windowed bolt
//! counts each window once the watermark passes it and sends late events to its late
//! tuple stream, where they are counted. The output is the same for a given seed.
//!
//! `event-time-windows` runs it in local mode for `--seconds` (default 10) and prints
//! each window's count and the late events; `squall jar ./event-time-windows NAME`
//! submits it as NAME.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use squall_api::windowing::Windowed;
use squall_api::{Config, TopologyBuilder};
use squall_examples::windows::{EventCounts, EventSpout, WindowReport};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "event-time-windows",
    about = "Tumbling event-time windows with late tuples"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without
    /// it the topology runs in local mode.
    name: Option<String>,
    /// Local mode: how long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The seed of the events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Batches of events (one every ~120 ms).
    #[arg(long, default_value_t = 30)]
    batches: u64,
    /// Events per batch (10 ms of event time apart).
    #[arg(long, default_value_t = 20)]
    per_batch: u64,
    /// Tumbling window length in milliseconds of event time.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Allowed disorder (the watermark's lag) in milliseconds.
    #[arg(long, default_value_t = 150)]
    lag_ms: u64,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let mut spout = EventSpout::new(args.seed, args.batches, args.per_batch, args.lag_ms as i64);
    spout.flush_ms = (args.window_ms + args.lag_ms) as i64 + 1;
    let base = spout.base_ms;
    let sent = spout.sent.clone();
    let report = WindowReport {
        base_ms: base,
        print: true,
        ..WindowReport::default()
    };
    let log = report.log.clone();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("events", spout, 1);
    builder
        .set_bolt(
            "windows",
            Windowed::new(EventCounts)
                .with_tumbling_window(Duration::from_millis(args.window_ms))
                .with_timestamp_field("ts")
                .with_lag(Duration::from_millis(args.lag_ms))
                .with_watermark_interval(Duration::from_millis(40))
                .with_late_tuple_stream("late"),
            1,
        )
        .shuffle_grouping("events");
    builder
        .set_bolt("report", report, 1)
        .shuffle_grouping("windows")
        .shuffle_grouping(("windows", "late"));
    let topology = builder.create_topology()?;
    let conf = Config::new();

    if let Some(name) = &args.name {
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let cluster = LocalCluster::new();
    cluster
        .submit_topology("event-time-windows", &conf, &topology)
        .context("starting event-time-windows in local mode")?;
    println!(
        "event-time-windows (seed {}) running in local mode for {} s: tumbling {} ms windows, lag {} ms",
        args.seed, args.seconds, args.window_ms, args.lag_ms
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let errors = cluster.errors("event-time-windows")?;
    cluster.kill_topology_with_opts("event-time-windows", Duration::from_millis(300))?;
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    let in_windows: i64 = log.windows.iter().map(|w| w.2).sum();
    let mut late = log.late.clone();
    late.sort();
    println!("\nSummary:");
    match *sent.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(n) => println!("  events sent        {n:>6} (all)"),
        None => println!("  events sent        not all yet: run longer for the full output"),
    }
    println!("  windows            {:>6}", log.windows.len());
    println!("  events in windows  {in_windows:>6}");
    println!("  late events        {:>6}", late.len());
    for (id, ts) in late.iter().take(10) {
        println!("    late event {id:>4} at {:>6} ms", ts - base);
    }
    if late.len() > 10 {
        println!("    ... and {} more", late.len() - 10);
    }
    if !errors.is_empty() {
        println!("  errors reported    {:>6}", errors.len());
        for e in errors.iter().take(5) {
            println!("    {} task {}: {}", e.component, e.task, e.error);
        }
    }
    Ok(())
}
