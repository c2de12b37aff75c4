//! Storm's StatefulWordCount on Squall: word counts in a stateful bolt, checkpointed
//! every `topology.state.checkpoint.interval.ms` into Redis (`--redis URL`) or memory,
//! exactly once through failures and worker kills.
//!
//! Run directly, it runs in local mode for `--seconds`, prints the top committed counts
//! and exits. `squall jar ./stateful-word-count NAME --redis URL` submits it; the
//! counts are then in Redis, in the hashes `NAME:count-<task>` (`redis-cli HGETALL`).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use squall_api::state::StateProvider;
use squall_api::TaskLayout;
use squall_examples::stateful::{
    committed_counts, state_conf, stateful_word_count, StatefulWordCountOptions,
};
use squall_examples::trident::expected_counts;
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "stateful-word-count",
    about = "Storm's StatefulWordCount on Squall: exactly-once word counts in a stateful bolt"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without it
    /// the topology runs in local mode.
    name: Option<String>,
    /// Keep the counts in this Redis (`redis://host:port[/db]`) instead of in memory.
    #[arg(long)]
    redis: Option<String>,
    /// Emit exactly this many sentences (Storm's five, in turn), then stop.
    #[arg(long)]
    sentences: Option<u64>,
    /// Local mode: how long to run, in seconds (with --sentences: at most this long,
    /// ending as soon as every sentence is committed).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Tasks of the spout, the split and the count.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Sentences per second per spout task (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Probability that the split fails a sentence (failure injection).
    #[arg(long, default_value_t = 0.0)]
    split_fail_rate: f64,
    /// Probability that the count fails a word (failure injection).
    #[arg(long, default_value_t = 0.0)]
    count_fail_rate: f64,
    /// Count in a plain bolt, without state or checkpoints (the benchmark's baseline).
    #[arg(long)]
    stateless: bool,
    /// Print this many of the highest counts.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let topology = stateful_word_count(&StatefulWordCountOptions {
        sentences: args.sentences,
        rate: args.rate,
        parallelism: args.parallelism,
        split_fail_rate: args.split_fail_rate,
        count_fail_rate: args.count_fail_rate,
        stateless: args.stateless,
    })?;
    let mut conf = state_conf(args.redis.as_deref());
    if args.sentences.is_none() {
        // Remembering every committed id is what makes a finite run exact through spout
        // restarts; without end it would only grow (the spout restarts from 0 anyway).
        conf.set(squall_api::state::keys::TOPOLOGY_STATE_SPOUT_DEDUP, false);
    }
    conf.set(
        squall_api::state::keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL,
        args.checkpoint_interval_ms,
    );
    conf.merge(&StormSubmitter::command_line_config()?);

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let name = "stateful-word-count";
    StateProvider::from_conf(&conf)?;
    let cluster = LocalCluster::new();
    cluster
        .submit_topology(name, &conf, &topology)
        .context("starting StatefulWordCount in local mode")?;
    println!(
        "StatefulWordCount running in local mode for up to {} s ...",
        args.seconds
    );
    let layout = TaskLayout::new(topology.spec(), 1);
    let tasks = layout.component_tasks("count").to_vec();
    let want = args.sentences.map(expected_counts);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut counts = committed_counts(&conf, name, tasks.iter().copied())?;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        counts = committed_counts(&conf, name, tasks.iter().copied())?;
        if want.as_ref().is_some_and(|w| *w == counts) {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = cluster.kill_topology(name)?;
    let counted = stats.component("count").acked;
    println!(
        "throughput: {:.0} words/s through the count bolt ({counted} in {secs:.1} s{})",
        counted as f64 / secs,
        if args.stateless { ", no state" } else { "" }
    );
    if args.stateless {
        return Ok(());
    }
    let total: u64 = counts.values().sum();
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("committed counts: {} words, {total} in all", counts.len());
    for (w, n) in top.into_iter().take(args.top) {
        println!("{n:>10} {w}");
    }
    if let Some(want) = want {
        if want == counts {
            println!(
                "exactly the counts of {} sentences",
                args.sentences.unwrap_or(0)
            );
        } else {
            let expected: u64 = want.values().sum();
            anyhow::bail!(
                "the committed counts ({total} words) are not those of {} sentences ({expected} words) after {} s",
                args.sentences.unwrap_or(0),
                args.seconds
            );
        }
    }
    Ok(())
}
