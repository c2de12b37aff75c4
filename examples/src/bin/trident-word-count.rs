//! Storm's TridentWordCount on Squall: sentences are split and counted into a
//! transactional state, exactly once; the DRPC function `words` sums the counts of the
//! words it is given.
//!
//! Run directly, it runs in local mode for `--seconds`, then prints the answers to a
//! few DRPC queries and exits. `squall jar ./trident-word-count NAME` submits it to a
//! cluster (DRPC through `squall drpc`, e.g. `squall drpc-client words "the cow"`).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use squall_api::Config;
use squall_examples::trident::{
    expected_counts, trident_word_count, SentenceSpout, TridentWordCountOptions,
};
use squall_trident::LocalDrpc;
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "trident-word-count",
    about = "Storm's TridentWordCount on Squall"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without it
    /// the topology runs in local mode.
    name: Option<String>,
    /// Emit exactly this many sentences (Storm's five, in order), then stop.
    #[arg(long)]
    sentences: Option<u64>,
    /// Keep the counts in this Redis (`redis://host:port`) instead of in memory.
    #[arg(long)]
    redis: Option<String>,
    /// Local mode: how long to run before the queries, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Tasks of the spout and of the counts.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Spout partitions.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Sentences per partition per batch.
    #[arg(long, default_value_t = 500)]
    batch_size: u64,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

const QUERIES: [&str; 4] = [
    "cat the dog jumped",
    "the man went to the store",
    "seven",
    "moon cow",
];

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    let local = args.name.is_none();
    let drpc = local.then(LocalDrpc::new);
    let topology = trident_word_count(&TridentWordCountOptions {
        spout: SentenceSpout {
            partitions: args.partitions,
            batch_size: args.batch_size,
            limit: args.sentences,
        },
        parallelism: args.parallelism,
        redis: args.redis.clone(),
        local_drpc: drpc.clone(),
    })?;
    let mut conf = Config::new();
    conf.set_max_spout_pending(2);

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }

    let drpc = drpc.expect("local mode has a LocalDrpc");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("trident-word-count", &conf, &topology)
        .context("starting TridentWordCount in local mode")?;
    println!(
        "TridentWordCount running in local mode for {} s ...",
        args.seconds
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    for q in QUERIES {
        let answer = drpc.execute("words", q).context("DRPC query")?;
        println!("DRPC RESULT words \"{q}\": {answer}");
    }
    if let Some(n) = args.sentences {
        let want = expected_counts(n);
        let the = want.get("the").copied().unwrap_or(0);
        println!("(after {n} sentences \"the\" must count {the})");
    }
    cluster.kill_topology("trident-word-count")?;
    Ok(())
}
