//! Copies one Kafka topic into another, at least once: a KafkaSpout feeds a KafkaBolt,
//! which writes each record's key and value and acks it once the broker confirmed the
//! copy; the spout commits an input offset only when every earlier input was copied.
//!
//! `kafka-forward --brokers HOST:PORT --input IN --output OUT` runs it in local mode for
//! `--seconds` and prints what was copied; `squall jar ./kafka-forward NAME --brokers ...`
//! submits it to a cluster as NAME.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use squall_api::{Config, TopologyBuilder};
use squall_kafka::{
    create_topics, FieldNameBasedTupleToKafkaMapper, KafkaBolt, KafkaSpout, KafkaSpoutConfig,
};
use squall_worker::submitter::{launch_mode, LaunchMode};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "kafka-forward",
    about = "Copies a Kafka topic into another, at least once (KafkaSpout -> KafkaBolt)"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without
    /// it the topology runs in local mode.
    name: Option<String>,
    /// Kafka's bootstrap servers, `host:port[,host:port...]`.
    #[arg(long)]
    brokers: String,
    /// The topic read.
    #[arg(long, default_value = "forward-in")]
    input: String,
    /// The topic written.
    #[arg(long, default_value = "forward-out")]
    output: String,
    /// The consumer group (whose committed offsets say where reading resumes).
    #[arg(long, default_value = "kafka-forward")]
    group: String,
    /// Partitions of topics created because they were missing.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// Spout and bolt executors.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// How often the spout commits offsets, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    commit_ms: u64,
    /// Local mode: how long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    squall_examples::init_logging();
    let args = Args::parse();
    if launch_mode() != LaunchMode::Worker {
        create_topics(
            &args.brokers,
            &[
                (&args.input, args.partitions),
                (&args.output, args.partitions),
            ],
            Duration::from_secs(30),
        )
        .context("creating the topics")?;
    }
    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(&args.brokers, [args.input.as_str()])
            .group_id(&args.group)
            .offset_commit_period(Duration::from_millis(args.commit_ms.max(1)))
            .build()?,
    );
    let bolt = KafkaBolt::new(&args.brokers)
        .with_topic(&args.output)
        .with_tuple_to_kafka_mapper(FieldNameBasedTupleToKafkaMapper::new("key", "value"));
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, args.parallelism);
    builder
        .set_bolt("to-kafka", bolt, args.parallelism)
        .shuffle_grouping("kafka");
    let topology = builder.create_topology()?;
    let mut conf = Config::new();
    conf.set_max_spout_pending(1000);

    if let Some(name) = &args.name {
        conf.set_num_workers(args.workers);
        StormSubmitter::submit_topology(name, &conf, &topology)?;
        return Ok(());
    }
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("kafka-forward", &conf, &topology)
        .context("starting kafka-forward in local mode")?;
    println!(
        "kafka-forward: copying {} to {} for {} s ...",
        args.input, args.output, args.seconds
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let stats = cluster.kill_topology_with_opts("kafka-forward", Duration::from_millis(1500))?;
    let (spout, bolt) = (stats.component("kafka"), stats.component("to-kafka"));
    println!("  records read     {:>10}", spout.emitted);
    println!("  records copied   {:>10} (acked)", spout.acked);
    println!("  copies failed    {:>10}", spout.failed);
    println!("  bolt acked       {:>10}", bolt.acked);
    Ok(())
}
