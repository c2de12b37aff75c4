//! Helpers of the Kafka tests: a broker, producing, reading a topic back, committed
//! offsets, and bolts that record what they saw.

#![allow(dead_code)]

pub mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use squall_api::{Bolt, OutputCollector, OutputFieldsDeclarer, Tuple};

/// Counts failed deliveries.
#[derive(Default)]
struct Count(AtomicUsize);
struct CountCtx(Arc<Count>);
impl ClientContext for CountCtx {}
impl ProducerContext for CountCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.0 .0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces `(partition, key, value)` records and waits until all are delivered.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Option<i32>, String, String)>,
) {
    let failed = Arc::new(Count::default());
    let p: BaseProducer<CountCtx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .create_with_context(CountCtx(failed.clone()))
        .expect("a producer");
    for (partition, key, value) in records {
        let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
        if let Some(pt) = partition {
            rec = rec.partition(pt);
        }
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            if let Err((e, r)) = p.send(r) {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "producing to {topic}: {e}"
                );
                p.poll(Duration::from_millis(20));
                rec = Some(r);
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))
        .expect("flushing the producer");
    assert_eq!(
        failed.0.load(Ordering::Relaxed),
        0,
        "failed deliveries to {topic}"
    );
}

/// Produces values `prefix-i` for `i` in `range`, round-robin over `partitions`.
pub fn produce_numbered(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    partitions: i32,
) {
    produce(
        bootstrap,
        topic,
        range.map(|i| {
            (
                Some((i % partitions as usize) as i32),
                format!("k{i}"),
                format!("{prefix}-{i}"),
            )
        }),
    );
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer")
}

/// The group's committed offset of each partition (`None`: nothing committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c = consumer(bootstrap, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    let out = (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect();
    std::thread::spawn(move || drop(c));
    out
}

/// Commits `offset` for partition 0 of `topic` as group `group`, with `metadata`.
pub fn commit(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) {
    let c = consumer(bootstrap, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    tpl.find_partition(topic, partition)
        .unwrap()
        .set_metadata(metadata);
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("committing");
    std::thread::spawn(move || drop(c));
}

/// The high watermark of each partition.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c = consumer(bootstrap, "watermarks");
    let out = (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect();
    std::thread::spawn(move || drop(c));
    out
}

/// Every record of `topic` (partitions `0..partitions`) as `(partition, offset, key,
/// value)`, read up to the high watermarks.
pub fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String, String)> {
    let high = high_watermarks(bootstrap, topic, partitions);
    let c = consumer(bootstrap, "reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut next = vec![0i64; partitions as usize];
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..partitions as usize).any(|p| next[p] < high[p]) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} back timed out: {next:?} of {high:?}"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("reading back");
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            next[m.partition() as usize] = m.offset() + 1;
            out.push((m.partition(), m.offset(), text(m.key()), text(m.payload())));
        }
    }
    std::thread::spawn(move || drop(c));
    out
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a [`Recorder`] saw: values acked (with how often), and the `(partition,
/// offset)` of every tuple it acked.
#[derive(Default)]
pub struct Seen {
    pub values: BTreeMap<String, u32>,
    pub acked: BTreeSet<(i32, i64)>,
    pub failed: u64,
}

/// Shared [`Seen`].
pub type SeenRef = Arc<Mutex<Seen>>;

/// Records and acks every tuple from a KafkaSpout with the default translator; fails a
/// tuple with probability `p_fail` instead (seeded per task).
#[derive(Clone)]
pub struct Recorder {
    pub seen: SeenRef,
    pub p_fail: f64,
    pub rng: fastrand::Rng,
}

impl Recorder {
    pub fn new(seen: &SeenRef, p_fail: f64) -> Self {
        Recorder {
            seen: seen.clone(),
            p_fail,
            rng: fastrand::Rng::with_seed(7),
        }
    }
}

impl Bolt for Recorder {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if self.p_fail > 0.0 && self.rng.f64() < self.p_fail {
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
            out.fail(&input);
            return;
        }
        let partition = input.get_long_by_field("partition").unwrap() as i32;
        let offset = input.get_long_by_field("offset").unwrap();
        let value = input.get_string_by_field("value").unwrap().to_owned();
        {
            // Recorded before the ack: whatever the spout sees acked is in here.
            let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            *s.values.entry(value).or_insert(0) += 1;
            s.acked.insert((partition, offset));
        }
        out.ack(&input);
    }

    fn declare_output_fields(&self, _d: &mut OutputFieldsDeclarer) {}
}

/// The values `prefix-i` for `i` in `range`.
pub fn numbered(prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}
