//! WordCount over Kafka: sentences are read from a topic by a KafkaSpout, split, counted,
//! and every second the changed `(word, count)` pairs are written to another topic by a
//! KafkaBolt (key: the word, value: its count).
//!
//! `kafka-word-count --brokers HOST:PORT` runs it in local mode for `--seconds` (default
//! 10): it creates the topics if missing, produces Storm's five sentences into the input
//! topic while it runs, then prints the top words and how many input messages were
//! consumed and acked. `squall jar ./kafka-word-count NAME --brokers HOST:PORT` submits
//! it to a cluster as NAME (it then produces nothing: feed the input topic yourself).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use squall_api::{values, Config, TopologyBuilder};
use squall_examples::{ReportBolt, SplitSentence, WordCount, WordCounts, SENTENCES};
use squall_kafka::{
    create_topics, FieldNameBasedTupleToKafkaMapper, KafkaBolt, KafkaSpout, KafkaSpoutConfig,
    SimpleRecordTranslator,
};
use squall_worker::submitter::{launch_mode, LaunchMode};
use squall_worker::{LocalCluster, StormSubmitter};

#[derive(Parser)]
#[command(
    name = "kafka-word-count",
    about = "Storm's WordCountTopology reading and writing Kafka"
)]
struct Args {
    /// Submit to the cluster under this name (when started by `squall jar`); without
    /// it the topology runs in local mode.
    name: Option<String>,
    /// Kafka's bootstrap servers, `host:port[,host:port...]`.
    #[arg(long)]
    brokers: String,
    /// The topic sentences are read from.
    #[arg(long, default_value = "sentences")]
    input: String,
    /// The topic `(word, count)` pairs are written to.
    #[arg(long, default_value = "word-counts")]
    output: String,
    /// The spout's consumer group.
    #[arg(long, default_value = "kafka-word-count")]
    group: String,
    /// Local mode: how long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Local mode: sentences produced per second into the input topic.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Partitions of topics created because they were missing.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// How many of the most frequent words to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Worker processes (cluster mode).
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

/// Produces Storm's five sentences into `topic` at `rate` per second until `stop`.
fn produce_sentences(
    brokers: &str,
    topic: &str,
    rate: u64,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .context("creating the sentence producer")?;
    let topic = topic.to_owned();
    Ok(std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let sentence = SENTENCES[(sent % SENTENCES.len() as u64) as usize];
                match producer.send(BaseRecord::<(), str>::to(&topic).payload(sentence)) {
                    Ok(()) => {
                        sent += 1;
                        produced.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break, // queue full: try again shortly
                }
            }
            producer.poll(Duration::from_millis(10));
        }
        let _ = producer.flush(Duration::from_secs(5));
    }))
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
        .with_context(|| format!("creating the topics on {}", args.brokers))?;
    }
    let sentences =
        SimpleRecordTranslator::new(["sentence"], |r| r.value_str().map(|v| values![v.as_ref()]));
    let spout = KafkaSpout::new(
        KafkaSpoutConfig::builder(&args.brokers, [args.input.as_str()])
            .group_id(&args.group)
            .offset_commit_period(Duration::from_secs(1))
            .record_translator(sentences)
            .build()?,
    );
    let to_kafka = KafkaBolt::new(&args.brokers)
        .with_topic(&args.output)
        .with_tuple_to_kafka_mapper(FieldNameBasedTupleToKafkaMapper::new("word", "count"));
    let counts = WordCounts::default();
    let mut builder = TopologyBuilder::new();
    builder.set_spout("kafka", spout, 2);
    builder
        .set_bolt("split", SplitSentence, 2)
        .shuffle_grouping("kafka");
    builder
        .set_bolt("count", WordCount::reporting_every(1), 2)
        .fields_grouping("split", ["word"]);
    builder
        .set_bolt("to-kafka", to_kafka, 1)
        .shuffle_grouping("count");
    if args.name.is_none() {
        builder
            .set_bolt(
                "report",
                ReportBolt {
                    counts: counts.clone(),
                },
                1,
            )
            .global_grouping("count");
    }
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
        .submit_topology("kafka-word-count", &conf, &topology)
        .context("starting kafka-word-count in local mode")?;
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = produce_sentences(
        &args.brokers,
        &args.input,
        args.rate,
        stop.clone(),
        produced.clone(),
    )?;
    println!(
        "kafka-word-count: {} -> split -> count -> {} in local mode for {} s ...",
        args.input, args.output, args.seconds
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let running = cluster.stats("kafka-word-count")?;
    let errors = cluster.errors("kafka-word-count")?;
    let stats = cluster.kill_topology_with_opts("kafka-word-count", Duration::from_millis(1500))?;

    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("\nTop {} words:", args.top.min(top.len()));
    for (word, count) in top.iter().take(args.top) {
        println!("  {word:<10} {count:>10}");
    }
    let spout = stats.component("kafka");
    let lag = running
        .component("kafka")
        .gauges
        .get("kafka.lag.total")
        .copied()
        .unwrap_or(0);
    println!("\nSummary:");
    println!(
        "  sentences produced   {:>10} (into {})",
        produced.load(Ordering::Relaxed),
        args.input
    );
    println!("  sentences consumed   {:>10}", spout.emitted);
    println!("  sentences acked      {:>10}", spout.acked);
    println!("  sentences failed     {:>10}", spout.failed);
    println!(
        "  counts written       {:>10} (into {})",
        stats.component("to-kafka").acked,
        args.output
    );
    println!("  consumer lag         {lag:>10} (kafka.lag.total, 1 s before the end)");
    if !errors.is_empty() {
        println!("  errors reported      {:>10}", errors.len());
        for e in errors.iter().take(5) {
            println!("    {} task {}: {}", e.component, e.task, e.error);
        }
    }
    Ok(())
}
