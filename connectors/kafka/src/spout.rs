//! `KafkaSpout`: reads Kafka topics into a topology (Storm's `KafkaSpout`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use squall_api::{
    BoxError, Config, OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyContext, Value,
};

use crate::config::{KafkaSpoutConfig, ProcessingGuarantee};
use crate::meta::{self, Commit, MetaThread, Owner, Plan, Shared};
use crate::offsets::{Failed, PartitionOffsets};
use crate::record::KafkaRecord;
use crate::util::{commit_metadata, partition_gauge_name, ErrorSink};

/// How often the gauges are set.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);
/// At most this many partitions of one task get a `kafka.lag.<topic>.<partition>` gauge
/// (a task may set at most `squall_api::MAX_GAUGES_PER_TASK` gauges); all count in
/// `kafka.lag.total`.
const MAX_PARTITION_GAUGES: usize = 90;
/// How long `close` waits for its last commit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same error from librdkafka is reported at most once per this period.
const ERROR_QUIET: Duration = Duration::from_secs(30);

/// A spout reading Kafka topics (Storm's `KafkaSpout`), configured by a
/// [`KafkaSpoutConfig`].
///
/// Each record becomes the tuple its [`RecordTranslator`](crate::RecordTranslator)
/// makes (by default `topic, partition, offset, key, value`). With
/// [`ProcessingGuarantee::AtLeastOnce`] the tuple's message id is `[topic, partition,
/// offset]`; the offset committed for a partition is the lowest one not yet acked, so
/// a restarted spout resumes with every message that was not fully processed. Records in
/// flight are kept in memory until acked (at most `topology.max.spout.pending` per task),
/// and a failed one is emitted again from there after its back-off.
///
/// See the [crate documentation](crate) for an example.
pub struct KafkaSpout {
    config: KafkaSpoutConfig,
    run: Option<Running>,
}

impl Clone for KafkaSpout {
    /// A spout with the same configuration, not yet opened.
    fn clone(&self) -> Self {
        KafkaSpout::new(self.config.clone())
    }
}

impl KafkaSpout {
    /// A spout reading as `config` says.
    pub fn new(config: KafkaSpoutConfig) -> Self {
        KafkaSpout { config, run: None }
    }

    /// Its configuration.
    pub fn config(&self) -> &KafkaSpoutConfig {
        &self.config
    }
}

/// Errors librdkafka reports on the spout's consumer.
struct SpoutContext {
    errors: ErrorSink,
    component: String,
}

impl ClientContext for SpoutContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.push(format!(
            "KafkaSpout {}: Kafka client error: {error} ({reason})",
            self.component
        ));
    }
}

impl ConsumerContext for SpoutContext {}

type Consumer_ = BaseConsumer<SpoutContext>;

/// One owned partition.
struct Part {
    topic: Arc<str>,
    partition: i32,
    offsets: PartitionOffsets,
    paused: bool,
}

struct Running {
    consumer: Option<Consumer_>,
    errors: ErrorSink,
    component: String,
    shared: Arc<Shared>,
    meta: Option<MetaThread>,
    plan_seen: u64,
    parts: Vec<Part>,
    index: HashMap<String, HashMap<i32, usize>>,
    queue: VecDeque<(usize, i64)>,
    retries: BTreeSet<(Instant, usize, i64)>,
    last_commit: Instant,
    last_gauges: Option<Instant>,
    exhausted: i64,
    metadata: String,
    at_most_once_pending: bool,
    stale_gauges: Vec<String>,
    gauge_limit_reported: bool,
}

impl Spout for KafkaSpout {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let component = ctx.this_component_id().to_string();
        let task = ctx.this_task_id().0;
        let errors = ErrorSink::new(ERROR_QUIET);
        let mut cc = self.config.client_config();
        if !self.config.props.iter().any(|(k, _)| k == "client.id") {
            cc.set("client.id", format!("squall-{component}-{task}"));
        }
        let consumer: Consumer_ = cc
            .create_with_context(SpoutContext {
                errors: errors.clone(),
                component: component.clone(),
            })
            .map_err(|e| {
                format!(
                    "KafkaSpout {component}: cannot create the Kafka consumer for {}: {e}",
                    self.config.bootstrap_servers
                )
            })?;
        let shared = Shared::new(errors.clone());
        let num_tasks = ctx.component_tasks(&component).len().max(1);
        let meta = meta::spawn(
            &self.config,
            Owner {
                topology_id: ctx.topology_id().to_owned(),
                component: component.clone(),
                task,
                task_index: ctx.this_task_index(),
                num_tasks,
            },
            shared.clone(),
        )?;
        self.run = Some(Running {
            consumer: Some(consumer),
            errors,
            component,
            shared,
            meta: Some(meta),
            plan_seen: 0,
            parts: Vec::new(),
            index: HashMap::new(),
            queue: VecDeque::new(),
            retries: BTreeSet::new(),
            last_commit: Instant::now(),
            last_gauges: None,
            exhausted: 0,
            metadata: commit_metadata(ctx.topology_id(), task),
            at_most_once_pending: false,
            stale_gauges: Vec::new(),
            gauge_limit_reported: false,
        });
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let config = &self.config;
        if let Some(plan) = run.shared.take_plan(&mut run.plan_seen) {
            run.apply_plan(config, plan);
        }
        if run.queue.is_empty() {
            run.poll(config);
        }
        run.apply_confirmed();
        for e in run.errors.drain() {
            out.report_error(&e);
        }
        let now = Instant::now();
        if run.at_most_once_pending && !run.commit_polled_sync() {
            return;
        }
        if config.guarantee != ProcessingGuarantee::AtMostOnce
            && now.duration_since(run.last_commit) >= config.commit_period
        {
            run.commit(false);
        }
        if run
            .last_gauges
            .is_none_or(|t| now.duration_since(t) >= GAUGE_PERIOD)
        {
            run.set_gauges(out);
            run.last_gauges = Some(now);
        }
        run.emit_one(config, now, out);
    }

    fn ack(&mut self, msg_id: Value) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if let Some((i, offset)) = run.lookup(&msg_id) {
            if self.config.guarantee == ProcessingGuarantee::AtLeastOnce {
                run.parts[i].offsets.done(offset);
            }
        }
    }

    fn fail(&mut self, msg_id: Value) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if self.config.guarantee != ProcessingGuarantee::AtLeastOnce {
            return;
        }
        let Some((i, offset)) = run.lookup(&msg_id) else {
            return;
        };
        let now = Instant::now();
        let part = &mut run.parts[i];
        match part.offsets.failed(offset, &self.config.retry, now) {
            Failed::Retry(at) => {
                run.retries.insert((at, i, offset));
            }
            Failed::Exhausted { fails } => {
                run.exhausted += 1;
                run.errors.push(format!(
                    "KafkaSpout {}: message {}/{} offset {offset} failed {fails} times, more \
                     than the {} retries allowed: given up on (it counts as processed and \
                     its offset can be committed)",
                    run.component,
                    part.topic,
                    part.partition,
                    self.config.retry.max_retries().unwrap_or(u32::MAX)
                ));
            }
            Failed::Unknown => {}
        }
    }

    fn deactivate(&mut self) {
        if let Some(run) = self.run.as_mut() {
            if self.config.guarantee != ProcessingGuarantee::AtMostOnce {
                run.commit(true);
            }
        }
    }

    fn close(&mut self) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        // A last commit, waited for (bounded: the broker may be gone).
        if self.config.guarantee != ProcessingGuarantee::AtMostOnce {
            if let (Some(meta), Some(offsets)) = (&run.meta, run.commit_list(true)) {
                let (done, wait) = mpsc::channel();
                meta.commit(Commit {
                    offsets,
                    metadata: run.metadata.clone(),
                    done: Some(done),
                });
                let _ = wait.recv_timeout(CLOSE_TIMEOUT);
            }
        }
        run.meta = None;
        // librdkafka can take long to close a consumer: not on this thread.
        if let Some(consumer) = run.consumer.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-spout-close".into())
                .spawn(move || drop(consumer));
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        for (stream, fields) in self.config.translator.streams() {
            d.declare_stream(stream, fields);
        }
    }
}

/// The message id of a record: `[topic, partition, offset]`.
fn message_id(topic: &str, partition: i32, offset: i64) -> Value {
    Value::List(vec![
        Value::from(topic),
        Value::Int(i64::from(partition)),
        Value::Int(offset),
    ])
}

impl Running {
    fn lookup(&self, msg_id: &Value) -> Option<(usize, i64)> {
        let Value::List(l) = msg_id else {
            return None;
        };
        let [topic, partition, offset] = l.as_slice() else {
            return None;
        };
        let i = *self
            .index
            .get(topic.as_str()?)?
            .get(&i32::try_from(partition.as_i64()?).ok()?)?;
        Some((i, offset.as_i64()?))
    }

    fn err(&self, msg: String) {
        self.errors
            .push(format!("KafkaSpout {}: {msg}", self.component));
    }

    /// Takes the partitions of `plan`: kept ones go on where they are, new ones start
    /// where the plan says, dropped ones are committed a last time and forgotten.
    fn apply_plan(&mut self, config: &KafkaSpoutConfig, plan: Plan) {
        if config.guarantee != ProcessingGuarantee::AtMostOnce {
            self.commit(false);
        }
        let mut old: HashMap<(String, i32), (usize, Part)> = self
            .parts
            .drain(..)
            .enumerate()
            .map(|(i, p)| ((p.topic.to_string(), p.partition), (i, p)))
            .collect();
        let mut remap: HashMap<usize, usize> = HashMap::new();
        let mut parts = Vec::with_capacity(plan.partitions.len());
        for tp in &plan.partitions {
            let part = match old.remove(tp) {
                Some((i, p)) => {
                    remap.insert(i, parts.len());
                    p
                }
                None => match plan.starts.get(tp) {
                    Some(&start) => Part {
                        topic: Arc::from(tp.0.as_str()),
                        partition: tp.1,
                        offsets: PartitionOffsets::new(start),
                        paused: false,
                    },
                    None => {
                        self.err(format!("no start offset for {}/{}", tp.0, tp.1));
                        continue;
                    }
                },
            };
            parts.push(part);
        }
        for (_, p) in old.values() {
            self.stale_gauges
                .push(partition_gauge_name("kafka.lag", &p.topic, p.partition));
        }
        self.parts = parts;
        self.index.clear();
        for (i, p) in self.parts.iter().enumerate() {
            self.index
                .entry(p.topic.to_string())
                .or_default()
                .insert(p.partition, i);
        }
        self.queue = self
            .queue
            .drain(..)
            .filter_map(|(i, o)| remap.get(&i).map(|&n| (n, o)))
            .collect();
        self.retries = self
            .retries
            .iter()
            .filter_map(|&(at, i, o)| remap.get(&i).map(|&n| (at, n, o)))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for p in &mut self.parts {
            p.paused = false;
            let _ = tpl.add_partition_offset(
                &p.topic,
                p.partition,
                Offset::Offset(p.offsets.fetched_to()),
            );
        }
        if let Some(c) = &self.consumer {
            if let Err(e) = c.assign(&tpl) {
                self.err(format!("assigning partitions failed: {e}"));
            }
        }
        self.last_gauges = None;
    }

    /// Reads what the consumer has, up to `max_poll_records` records.
    fn poll(&mut self, config: &KafkaSpoutConfig) {
        let Some(c) = &self.consumer else {
            return;
        };
        let mut got = 0;
        while got < config.max_poll_records {
            match c.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    self.errors.push(format!(
                        "KafkaSpout {}: polling failed: {e}",
                        self.component
                    ));
                    break;
                }
                Some(Ok(m)) => {
                    use rdkafka::Message;
                    let Some(&i) = self
                        .index
                        .get(m.topic())
                        .and_then(|ps| ps.get(&m.partition()))
                    else {
                        continue;
                    };
                    let part = &mut self.parts[i];
                    let record = KafkaRecord::from_message(&m, part.topic.clone());
                    let offset = record.offset;
                    if part.offsets.polled(record) {
                        self.queue.push_back((i, offset));
                        got += 1;
                    }
                }
            }
        }
        if got > 0 && config.guarantee == ProcessingGuarantee::AtMostOnce {
            self.at_most_once_pending = true;
        }
        // Back-pressure per partition: `max_uncommitted_offsets`.
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for p in &mut self.parts {
            let full = p.offsets.uncommitted() >= config.max_uncommitted;
            if full != p.paused {
                p.paused = full;
                if full { &mut pause } else { &mut resume }.add_partition(&p.topic, p.partition);
            }
        }
        if pause.count() > 0 {
            if let Err(e) = c.pause(&pause) {
                self.err(format!("pausing partitions failed: {e}"));
            }
        }
        if resume.count() > 0 {
            if let Err(e) = c.resume(&resume) {
                self.err(format!("resuming partitions failed: {e}"));
            }
        }
    }

    /// Takes the commits Kafka confirmed.
    fn apply_confirmed(&mut self) {
        for (t, p, o) in self.shared.take_confirmed() {
            if let Some(&i) = self.index.get(&t).and_then(|ps| ps.get(&p)) {
                let offs = &mut self.parts[i].offsets;
                if o > offs.committed() {
                    offs.confirm_commit(o);
                }
            }
        }
    }

    /// The offsets to commit: each partition's commit point past its confirmed commit
    /// (`all`: every partition's point, confirmed or not).
    fn commit_list(&self, all: bool) -> Option<Vec<(String, i32, i64)>> {
        let offsets: Vec<(String, i32, i64)> = self
            .parts
            .iter()
            .filter_map(|p| {
                let point = p.offsets.commit_point();
                (all || point > p.offsets.committed())
                    .then(|| (p.topic.to_string(), p.partition, point))
            })
            .collect();
        (!offsets.is_empty()).then_some(offsets)
    }

    /// Commits in the background (the metadata thread confirms what succeeded); skipped
    /// while an earlier commit is still being made, unless `all`.
    fn commit(&mut self, all: bool) {
        if self.shared.committing() && !all {
            return;
        }
        self.last_commit = Instant::now();
        if let (Some(meta), Some(offsets)) = (&self.meta, self.commit_list(all)) {
            meta.commit(Commit {
                offsets,
                metadata: self.metadata.clone(),
                done: None,
            });
        }
    }

    /// At most once: commits everything polled before any of it is emitted.
    fn commit_polled_sync(&mut self) -> bool {
        let Some(c) = &self.consumer else {
            return false;
        };
        let mut tpl = TopicPartitionList::new();
        for p in &self.parts {
            if p.offsets.fetched_to() > p.offsets.committed() {
                let _ = tpl.add_partition_offset(
                    &p.topic,
                    p.partition,
                    Offset::Offset(p.offsets.fetched_to()),
                );
                if let Some(mut e) = tpl.find_partition(&p.topic, p.partition) {
                    e.set_metadata(self.metadata.as_str());
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
                self.err(format!(
                    "committing polled offsets failed: {e}; nothing is emitted until it succeeds"
                ));
                return false;
            }
            for p in &mut self.parts {
                let f = p.offsets.fetched_to();
                p.offsets.confirm_commit(f);
            }
        }
        self.at_most_once_pending = false;
        true
    }

    fn set_gauges(&mut self, out: &mut SpoutOutputCollector<'_>) {
        for name in self.stale_gauges.drain(..) {
            out.set_gauge(&name, 0);
        }
        let high = self.shared.high_watermarks();
        let mut total = 0i64;
        let mut all_known = true;
        for (n, p) in self.parts.iter().enumerate() {
            let Some(&h) = high.get(&(p.topic.to_string(), p.partition)) else {
                all_known = false;
                continue;
            };
            let lag = (h - p.offsets.committed()).max(0);
            total += lag;
            if n < MAX_PARTITION_GAUGES {
                out.set_gauge(
                    &partition_gauge_name("kafka.lag", &p.topic, p.partition),
                    lag,
                );
            }
        }
        if self.parts.len() > MAX_PARTITION_GAUGES && !self.gauge_limit_reported {
            self.gauge_limit_reported = true;
            out.report_error(&format!(
                "KafkaSpout {}: {} partitions: only the first {MAX_PARTITION_GAUGES} get a \
                 kafka.lag.<topic>.<partition> gauge; kafka.lag.total counts them all",
                self.component,
                self.parts.len()
            ));
        }
        // A total over only some partitions would read as "caught up" too early.
        if all_known {
            out.set_gauge("kafka.lag.total", total);
        }
        out.set_gauge("kafka.retries.exhausted", self.exhausted);
    }

    /// Emits one tuple: a retry that is due, else the next polled record.
    fn emit_one(
        &mut self,
        config: &KafkaSpoutConfig,
        now: Instant,
        out: &mut SpoutOutputCollector<'_>,
    ) {
        while let Some(&(at, i, offset)) = self.retries.first() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            if self.emit(config, i, offset, out) {
                return;
            }
        }
        while let Some((i, offset)) = self.queue.pop_front() {
            if self.emit(config, i, offset, out) {
                return;
            }
        }
    }

    /// Emits the record at `offset` of partition `i`; `false` when nothing was emitted
    /// (the translator skipped it, or it is no longer due).
    fn emit(
        &mut self,
        config: &KafkaSpoutConfig,
        i: usize,
        offset: i64,
        out: &mut SpoutOutputCollector<'_>,
    ) -> bool {
        let Some(part) = self.parts.get_mut(i) else {
            return false;
        };
        let Some(record) = part.offsets.take_for_emit(offset) else {
            return false;
        };
        let Some(tuple) = config.translator.translate(record) else {
            part.offsets.done(offset);
            return false;
        };
        let tracked =
            config.guarantee == ProcessingGuarantee::AtLeastOnce || config.tracking_enforced;
        let id = tracked.then(|| message_id(&part.topic, part.partition, offset));
        if config.guarantee != ProcessingGuarantee::AtLeastOnce {
            part.offsets.done(offset);
        }
        out.emit_stream(&tuple.stream, tuple.values, id);
        true
    }
}
