//! An opaque transactional Trident spout over Kafka (Storm's `KafkaTridentSpoutOpaque`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use squall_api::{BoxError, Config, Fields, TopologyContext, Value};
use squall_trident::spout::{parse_range, range_meta};
use squall_trident::{PartitionedEmitter, PartitionedSpout, TransactionAttempt, TridentCollector};

use crate::config::KafkaSpoutConfig;
use crate::meta::matching_partitions;
use crate::record::KafkaRecord;

/// How long one metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replayed batch may take to read again before it fails (and is retried).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// An opaque partitioned Trident spout reading Kafka (Storm's `KafkaTridentSpoutOpaque`):
/// wrap it in [`squall_trident::Opaque`] and pair it with an opaque state
/// (`MemoryMapState::opaque()`, `RedisMapState::opaque(..)`) for exactly-once results.
///
/// Trident partitions are Kafka partitions, named `topic@partition` and dealt over the
/// spout's tasks by the runtime. A batch of a partition is the offset range `[start,
/// end)` that follows the partition's previous batch (its metadata, kept by Trident in
/// its coordinator store), holding at most
/// [`max_batch_size`](Self::max_batch_size) records; a partition's first batch starts
/// at its first offset, or at its end for the `Latest` first poll strategies. Offsets are
/// not committed to Kafka: Trident's metadata is the spout's position. The records
/// become tuples through the configuration's record translator (its one stream).
///
/// ```no_run
/// use squall_kafka::{KafkaSpoutConfig, KafkaTridentSpout};
/// use squall_trident::{Count, MemoryMapState, Opaque, TridentTopology};
/// let spout = KafkaTridentSpout::new(
///     KafkaSpoutConfig::builder("127.0.0.1:9092", ["words"]).group_id("counts").build()?,
/// );
/// let mut topology = TridentTopology::new();
/// topology
///     .new_stream("words", Opaque(spout))
///     .group_by(["value"])
///     .persistent_aggregate(MemoryMapState::opaque(), Count, ["count"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct KafkaTridentSpout {
    config: KafkaSpoutConfig,
    max_batch_size: usize,
}

impl KafkaTridentSpout {
    /// A spout reading as `config` says (its topics, brokers, consumer properties,
    /// record translator and first poll strategy are used).
    pub fn new(config: KafkaSpoutConfig) -> Self {
        let max_batch_size = config.max_poll_records;
        KafkaTridentSpout {
            config,
            max_batch_size,
        }
    }

    /// At most this many records per partition per batch (default: the configuration's
    /// `max_poll_records`, 500).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = n.max(1);
        self
    }
}

impl PartitionedSpout for KafkaTridentSpout {
    fn output_fields(&self) -> Fields {
        self.config
            .translator
            .streams()
            .into_iter()
            .next()
            .map(|(_, f)| f)
            .unwrap_or_else(|| Fields::new(Vec::<String>::new()))
    }

    fn emitter(
        &self,
        _conf: &Config,
        ctx: &TopologyContext,
    ) -> Result<Box<dyn PartitionedEmitter>, BoxError> {
        let streams = self.config.translator.streams();
        if streams.len() != 1 {
            return Err(format!(
                "KafkaTridentSpout: the record translator must declare exactly one stream, \
                 not {}",
                streams.len()
            )
            .into());
        }
        let client_id = format!(
            "squall-{}-{}",
            ctx.this_component_id(),
            ctx.this_task_id().0
        );
        let mut cc = self.config.client_config();
        cc.set("client.id", format!("{client_id}-meta"));
        let meta: BaseConsumer = cc
            .create()
            .map_err(|e| format!("KafkaTridentSpout: cannot create a Kafka consumer: {e}"))?;
        Ok(Box::new(KafkaTridentEmitter {
            config: self.config.clone(),
            max_batch_size: self.max_batch_size,
            client_id,
            meta: Some(meta),
            readers: HashMap::new(),
        }))
    }
}

/// Reads one partition for the emitter.
struct Reader {
    consumer: BaseConsumer,
    topic: Arc<str>,
    partition: i32,
    /// Where the last batch read ended: a batch starting here needs no seek.
    cursor: Option<i64>,
    /// One past the last offset polled.
    fetched: i64,
    /// Records polled past the last batch.
    buffer: VecDeque<KafkaRecord>,
}

impl Reader {
    /// Makes the next records read start at `start`.
    fn seek(&mut self, start: i64) -> Result<(), BoxError> {
        if self.cursor == Some(start) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(start))?;
        self.consumer.assign(&tpl).map_err(|e| {
            format!(
                "KafkaTridentSpout: cannot read {}/{} from offset {start}: {e}",
                self.topic, self.partition
            )
        })?;
        self.buffer.clear();
        self.fetched = start;
        self.cursor = Some(start);
        Ok(())
    }

    /// The consumer's position (past any transaction markers it skipped).
    fn position(&self) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        match tpl.find_partition(&self.topic, self.partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Reads the records in `[start, end)`, at most `max` of them, until `deadline`.
    /// Returns them and where the batch ends.
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max: usize,
        deadline: Instant,
    ) -> Result<(Vec<KafkaRecord>, i64), BoxError> {
        self.seek(start)?;
        let mut got: Vec<KafkaRecord> = Vec::new();
        let mut reached = start;
        loop {
            while let Some(r) = self.buffer.front() {
                if r.offset >= end || got.len() >= max {
                    break;
                }
                reached = r.offset + 1;
                got.push(self.buffer.pop_front().expect("front exists"));
            }
            if got.len() >= max || reached >= end || self.buffer.front().is_some() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.consumer.poll(deadline - now) {
                Some(Ok(m)) => {
                    if m.offset() >= self.fetched {
                        self.fetched = m.offset() + 1;
                        self.buffer
                            .push_back(KafkaRecord::from_message(&m, self.topic.clone()));
                    }
                }
                Some(Err(e)) => {
                    return Err(format!(
                        "KafkaTridentSpout: reading {}/{} failed: {e}",
                        self.topic, self.partition
                    )
                    .into())
                }
                None => {
                    // Only transaction markers left before `end`?
                    if self.buffer.is_empty() && self.position().is_some_and(|p| p >= end) {
                        reached = end;
                        break;
                    }
                }
            }
        }
        self.cursor = Some(reached);
        Ok((got, reached))
    }
}

struct KafkaTridentEmitter {
    config: KafkaSpoutConfig,
    max_batch_size: usize,
    client_id: String,
    meta: Option<BaseConsumer>,
    readers: HashMap<String, Reader>,
}

impl Drop for KafkaTridentEmitter {
    fn drop(&mut self) {
        // librdkafka's teardown can take long when a broker is gone: not on this thread.
        let meta = self.meta.take();
        let readers: Vec<Reader> = self.readers.drain().map(|(_, r)| r).collect();
        let _ = std::thread::Builder::new()
            .name("kafka-trident-close".into())
            .spawn(move || drop((meta, readers)));
    }
}

/// `topic@partition` (Storm's `KafkaTridentSpoutTopicPartition` id).
fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}@{partition}")
}

fn parse_partition(name: &str) -> Result<(&str, i32), BoxError> {
    name.rsplit_once('@')
        .and_then(|(t, p)| Some((t, p.parse().ok()?)))
        .ok_or_else(|| format!("KafkaTridentSpout: bad partition name '{name}'").into())
}

impl KafkaTridentEmitter {
    fn meta(&self) -> &BaseConsumer {
        self.meta.as_ref().expect("present until dropped")
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), BoxError> {
        self.meta()
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| {
                format!("KafkaTridentSpout: cannot read the offsets of {topic}/{partition}: {e}")
                    .into()
            })
    }

    fn reader(&mut self, name: &str) -> Result<&mut Reader, BoxError> {
        if !self.readers.contains_key(name) {
            let (topic, partition) = parse_partition(name)?;
            let mut cc = self.config.client_config();
            cc.set("client.id", format!("{}-{name}", self.client_id));
            let consumer: BaseConsumer = cc
                .create()
                .map_err(|e| format!("KafkaTridentSpout: cannot create a Kafka consumer: {e}"))?;
            self.readers.insert(
                name.to_owned(),
                Reader {
                    consumer,
                    topic: Arc::from(topic),
                    partition,
                    cursor: None,
                    fetched: 0,
                    buffer: VecDeque::new(),
                },
            );
        }
        Ok(self.readers.get_mut(name).expect("inserted"))
    }

    fn emit(&self, records: &[KafkaRecord], out: &mut TridentCollector) {
        for r in records {
            if let Some(t) = self.config.translator.translate(r) {
                out.emit(t.values);
            }
        }
    }
}

impl PartitionedEmitter for KafkaTridentEmitter {
    fn partitions(&mut self) -> Result<Vec<String>, BoxError> {
        let md = self
            .meta()
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| {
                format!(
                    "KafkaTridentSpout: cannot list the partitions of {} on {}: {e}",
                    self.config.topics, self.config.bootstrap_servers
                )
            })?;
        Ok(matching_partitions(&md, &self.config.topics)
            .into_iter()
            .map(|(t, p)| partition_name(&t, p))
            .collect())
    }

    fn emit_new(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        prev: Option<&Value>,
        out: &mut TridentCollector,
    ) -> Result<Value, BoxError> {
        let (topic, p) = parse_partition(partition)?;
        let (low, high) = self.watermarks(topic, p)?;
        let start = match prev {
            Some(meta) => parse_range(meta)?.1 as i64,
            None if self.config.first_poll.from_beginning() => low,
            None => high,
        };
        // Records deleted by retention are gone: go on from the first one left.
        let start = start.max(low);
        let end = high.min(start.saturating_add(self.max_batch_size as i64));
        if end <= start {
            return Ok(range_meta(start as u64, start as u64));
        }
        let (max, timeout) = (self.max_batch_size, self.config.poll_timeout);
        let (records, reached) =
            self.reader(partition)?
                .read(start, end, max, Instant::now() + timeout)?;
        self.emit(&records, out);
        Ok(range_meta(start as u64, reached as u64))
    }

    fn emit_again(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        meta: &Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        let (start, end) = parse_range(meta)?;
        let (start, end) = (start as i64, end as i64);
        if end <= start {
            return Ok(());
        }
        let (records, reached) = self.reader(partition)?.read(
            start,
            end,
            usize::MAX,
            Instant::now() + REPLAY_TIMEOUT,
        )?;
        if reached < end {
            return Err(format!(
                "KafkaTridentSpout: replaying {partition} offsets {start}..{end}: only read up \
                 to {reached} in {REPLAY_TIMEOUT:?}"
            )
            .into());
        }
        self.emit(&records, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_name("orders.eu-1", 12), "orders.eu-1@12");
        assert_eq!(
            parse_partition("orders.eu-1@12").unwrap(),
            ("orders.eu-1", 12)
        );
        assert!(parse_partition("orders").is_err());
        assert!(parse_partition("orders@x").is_err());
    }
}
