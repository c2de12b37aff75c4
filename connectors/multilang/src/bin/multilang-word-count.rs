//! WordCountTopology with its split bolt in Python (pystorm), Storm's multilang example.
//!
//! `multilang-word-count` runs it in local mode for `--seconds` (default 10), then
//! prints the top words and a summary; the first run makes the Python env the bolt
//! needs (a venv with pystorm, cached). `squall jar ./multilang-word-count NAME`
//! submits it to a cluster as NAME: the Python script and its requirements travel in
//! the binary. `--rate` paces the spout; the summary then shows the complete latency
//! and how much CPU the Python processes used (the bench mode of BENCHMARKS.md).
//! `--gauges` makes the counts observable on a cluster: the `report` bolt shows every
//! word's latest count as the gauge `count.<word>` (the UI's component page, `/metrics`),
//! beside the spout's `sentences.pending` / `sentences.replayed` and the count bolt's
//! `words.distinct`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::{validate_gauge_name, Bolt, Config, OutputCollector, TopologyBuilder, Tuple};
use squall_examples::{SentenceSpout, WordCount, WordCounts};
use squall_multilang::{Resources, ShellBolt};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "multilang-word-count",
    about = "WordCount with a Python split bolt (pystorm) on Squall"
)]
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
    /// Python split bolt executors (one subprocess each).
    #[arg(long, default_value_t = 1)]
    splitters: u32,
    /// Count bolt executors.
    #[arg(long, default_value_t = 2)]
    counters: u32,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Sentences per second (default: as fast as the split bolt takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// topology.max.spout.pending.
    #[arg(long, default_value_t = 1000)]
    max_pending: u32,
    /// Set custom gauges, shown on the UI's component pages and in `/metrics`: the
    /// report bolt's `count.<word>` (each word's latest count), the spout's
    /// `sentences.pending` and `sentences.replayed`, the count bolt's `words.distinct`.
    #[arg(long)]
    gauges: bool,
}

/// Keeps the latest `(word, count)` of every word in `counts` (printed at the end in
/// local mode) and, with `gauges`, shows it as the gauge `count.<word>`, which is how
/// the counts are seen from outside on a cluster.
#[derive(Clone)]
struct Report {
    counts: WordCounts,
    gauges: bool,
}

impl Bolt for Report {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let word = input.get_string_by_field("word");
        let count = input.get_long_by_field("count");
        match (word, count) {
            (Ok(word), Ok(count)) => {
                if self.gauges {
                    let name = format!("count.{word}");
                    // A word that cannot be a gauge name is counted all the same.
                    if validate_gauge_name(&name).is_ok() {
                        out.set_gauge(&name, count);
                    }
                }
                self.counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(word.to_owned(), count as u64);
                out.ack(&input);
            }
            (Err(e), _) | (_, Err(e)) => {
                out.report_error(&e);
                out.fail(&input);
            }
        }
    }
}

/// The split bolt: pystorm code and its requirements, compiled into this binary.
fn split_bolt() -> ShellBolt {
    ShellBolt::new(["python3", "splitsentence.py"])
        .resources(
            Resources::new()
                .file(
                    "splitsentence.py",
                    include_str!("../../multilang/splitsentence.py"),
                )
                .python_requirements(include_str!("../../multilang/requirements.txt")),
        )
        .output_fields(["word"])
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The pids of this process's children (the Python subprocesses).
fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if stat[close + 2..].split(' ').nth(1) == Some(me.as_str()) {
            out.push(pid);
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let counts = WordCounts::default();
    let mut b = TopologyBuilder::new();
    let mut spout = SentenceSpout::new();
    spout.rate = args.rate;
    spout.gauges = args.gauges;
    b.set_spout("spout", spout, 1);
    b.set_bolt("split", split_bolt(), args.splitters)
        .shuffle_grouping("spout");
    let mut count = WordCount::reporting_every(1);
    count.gauges = args.gauges;
    b.set_bolt("count", count, args.counters)
        .fields_grouping("split", ["word"]);
    b.set_bolt(
        "report",
        Report {
            counts: counts.clone(),
            gauges: args.gauges,
        },
        1,
    )
    .global_grouping("count");
    let topology = b.create_topology()?;
    let mut conf = Config::new();
    conf.set_max_spout_pending(args.max_pending);

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let cluster = LocalCluster::new();
    println!(
        "Starting WordCount with a Python split bolt (the first run makes its Python env) ..."
    );
    cluster
        .submit_topology("multilang-word-count", &conf, &topology)
        .context("starting multilang-word-count in local mode")?;
    // Measure after a short warm-up, over the rest of the run.
    let warmup = Duration::from_secs_f64((args.seconds / 5.0).min(2.0));
    std::thread::sleep(warmup);
    let before = cluster
        .stats("multilang-word-count")?
        .component("spout")
        .acked;
    let cpu_before: HashMap<u32, f64> = children()
        .into_iter()
        .filter_map(|p| Some((p, cpu_secs(p)?)))
        .collect();
    let self_before = cpu_secs(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    println!("Running in local mode for {} s ...", args.seconds);
    std::thread::sleep(
        Duration::from_secs_f64(args.seconds) - warmup.min(Duration::from_secs_f64(args.seconds)),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let python_cpu: Vec<(u32, f64)> = cpu_before
        .iter()
        .filter_map(|(&p, &c)| Some((p, (cpu_secs(p)? - c) / elapsed * 100.0)))
        .collect();
    let self_cpu = (cpu_secs(std::process::id()).unwrap_or(0.0) - self_before) / elapsed * 100.0;
    let running = cluster.stats("multilang-word-count")?;
    let acked = running.component("spout").acked - before;
    let errors = cluster.errors("multilang-word-count")?;
    let stats =
        cluster.kill_topology_with_opts("multilang-word-count", Duration::from_millis(1500))?;

    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("\nTop {} words:", args.top.min(top.len()));
    for (word, count) in top.iter().take(args.top) {
        println!("  {word:<10} {count:>12}");
    }
    let spout = stats.component("spout");
    let latency = running
        .component("spout")
        .complete_latency_ms
        .unwrap_or_default();
    println!("\nSummary:");
    println!("  sentences emitted  {:>12}", spout.emitted);
    println!("  sentences acked    {:>12}", spout.acked);
    println!("  sentences failed   {:>12}", spout.failed);
    println!(
        "  throughput         {:>12.0} sentences/s ({:.0} words/s) through {} Python split process(es), over {elapsed:.1} s",
        acked as f64 / elapsed,
        acked as f64 * 6.0 / elapsed,
        args.splitters
    );
    println!(
        "  complete latency   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latency.p50, latency.p99, latency.max
    );
    for (pid, cpu) in &python_cpu {
        println!("  python pid {pid:<7} CPU {cpu:>6.1} %");
    }
    println!("  squall process     CPU {self_cpu:>6.1} % (all its threads)");
    if !errors.is_empty() {
        println!("  errors reported    {:>12}", errors.len());
        for e in errors.iter().take(5) {
            println!("    {} task {}: {}", e.component, e.task, e.error);
        }
        anyhow::bail!("the topology reported errors");
    }
    Ok(())
}
