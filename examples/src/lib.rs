//! Components of the example topologies: WordCountTopology (as in Storm's storm-starter)
//! and the perf topologies (as in Storm's storm-perf), and TridentWordCount ([`trident`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use foldhash::fast::RandomState;
use squall_api::{
    values, BasicBolt, BasicOutputCollector, Bolt, BoxError, Config, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, Topology, TopologyBuilder, TopologyContext,
    TopologyError, Tuple, Value,
};

pub mod stateful;
pub mod trident;
pub mod windows;

/// The five sentences of Storm's `RandomSentenceSpout`.
pub const SENTENCES: [&str; 5] = [
    "the cow jumped over the moon",
    "an apple a day keeps the doctor away",
    "four score and seven years ago",
    "snow white and the seven dwarfs",
    "i am at two with nature",
];

/// Emits the five sentences in turn, each with a message id; failed sentences are
/// replayed, so every sentence emitted is eventually counted (at-least-once).
/// With `rate` set, emits at most that many sentences per second per task.
#[derive(Clone, Default)]
pub struct SentenceSpout {
    /// Sentences per second per task (`None`: as fast as possible).
    pub rate: Option<u64>,
    /// Whether to emit with message ids (tracked by the acker).
    pub reliable: bool,
    /// Whether to set the gauges `sentences.pending` (sentences in flight) and
    /// `sentences.replayed` (failed sentences emitted again).
    pub gauges: bool,
    replayed: i64,
    next: usize,
    seq: u64,
    pending: HashMap<u64, usize, RandomState>,
    replay: VecDeque<(u64, usize)>,
    pacer: Option<Pacer>,
}

impl SentenceSpout {
    /// A reliable spout emitting as fast as possible.
    pub fn new() -> Self {
        SentenceSpout {
            reliable: true,
            ..Default::default()
        }
    }
}

/// Spreads emits evenly over time at a fixed rate.
#[derive(Clone)]
pub struct Pacer {
    start: Instant,
    per_sec: u64,
    sent: u64,
}

impl Pacer {
    /// A pacer for `per_sec` events per second.
    pub fn new(per_sec: u64) -> Self {
        Pacer {
            start: Instant::now(),
            per_sec: per_sec.max(1),
            sent: 0,
        }
    }

    /// Whether another event may go now (and counts it).
    pub fn ready(&mut self) -> bool {
        let due = (self.start.elapsed().as_secs_f64() * self.per_sec as f64) as u64;
        if self.sent < due {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

impl Spout for SentenceSpout {
    fn open(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        self.pacer = self.rate.map(Pacer::new);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if let Some(p) = &mut self.pacer {
            if !p.ready() {
                return;
            }
        }
        if self.gauges {
            out.set_gauge("sentences.pending", out.pending_count() as i64);
            out.set_gauge("sentences.replayed", self.replayed);
        }
        if let Some((id, idx)) = self.replay.pop_front() {
            self.pending.insert(id, idx);
            self.replayed += 1;
            out.emit_with_id(values![Value::from_static(SENTENCES[idx])], id);
            return;
        }
        let idx = self.next;
        self.next = (self.next + 1) % SENTENCES.len();
        if self.reliable {
            self.seq += 1;
            self.pending.insert(self.seq, idx);
            out.emit_with_id(values![Value::from_static(SENTENCES[idx])], self.seq);
        } else {
            out.emit(values![Value::from_static(SENTENCES[idx])]);
        }
    }

    fn ack(&mut self, msg_id: Value) {
        if let Some(id) = msg_id.as_i64() {
            self.pending.remove(&(id as u64));
        }
    }

    fn fail(&mut self, msg_id: Value) {
        if let Some(id) = msg_id.as_i64() {
            if let Some(idx) = self.pending.remove(&(id as u64)) {
                self.replay.push_back((id as u64, idx));
            }
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["sentence"]);
    }
}

/// Splits sentences into words (Storm's `SplitSentence`), anchored and acked.
#[derive(Clone, Default)]
pub struct SplitSentence;

impl BasicBolt for SplitSentence {
    fn execute(
        &mut self,
        input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        for word in input.get_string(0)?.split(' ') {
            out.emit(values![word]);
        }
        Ok(())
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word"]);
    }
}

/// Counts words (Storm's `WordCount`). With `report_every` set, emits `(word, count)`
/// for the words that changed, on each tick tuple, instead of one tuple per word.
#[derive(Clone, Default)]
pub struct WordCount {
    /// Emit changed counts every this many seconds (tick tuples); `None` emits nothing.
    pub report_every: Option<u32>,
    /// Whether to set the gauge `words.distinct` (the words this task counts; summed
    /// over the tasks, the distinct words seen, as the fields grouping splits them).
    pub gauges: bool,
    counts: HashMap<String, u64, RandomState>,
    changed: HashMap<String, (), RandomState>,
}

impl WordCount {
    /// A counter that reports changed counts every `secs` seconds.
    pub fn reporting_every(secs: u32) -> Self {
        WordCount {
            report_every: Some(secs),
            ..Default::default()
        }
    }
}

impl Bolt for WordCount {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if input.is_tick() {
            for (word, ()) in self.changed.drain() {
                let count = self.counts[&word];
                out.emit(values![word, count]);
            }
            return;
        }
        match input.get_string(0) {
            Ok(word) => {
                match self.counts.get_mut(word) {
                    Some(c) => *c += 1,
                    None => {
                        self.counts.insert(word.to_owned(), 1);
                        if self.gauges {
                            out.set_gauge("words.distinct", self.counts.len() as i64);
                        }
                    }
                }
                if self.report_every.is_some() && !self.changed.contains_key(word) {
                    self.changed.insert(word.to_owned(), ());
                }
                out.ack(&input);
            }
            Err(e) => {
                out.report_error(&e);
                out.fail(&input);
            }
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word", "count"]);
    }

    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        if let Some(secs) = self.report_every {
            c.set_tick_tuple_freq_secs(secs);
        }
        c
    }
}

/// The latest count of every word, shared with whoever built the topology.
pub type WordCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Keeps the latest `(word, count)` it receives in a shared map (and logs nothing).
#[derive(Clone, Default)]
pub struct ReportBolt {
    /// Where the counts go.
    pub counts: WordCounts,
}

impl BasicBolt for ReportBolt {
    fn execute(
        &mut self,
        input: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        let word = input.get_string_by_field("word")?;
        let count = input.get_long_by_field("count")?;
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(word.to_owned(), count as u64);
        Ok(())
    }
}

/// Sizes of the WordCount topology.
#[derive(Clone, Debug)]
pub struct WordCountOptions {
    /// Spout tasks.
    pub spouts: u32,
    /// Split tasks.
    pub splitters: u32,
    /// Count tasks.
    pub counters: u32,
    /// Whether the spout tracks sentences (message ids).
    pub reliable: bool,
    /// Sentences per second per spout task.
    pub rate: Option<u64>,
    /// Report counts every this many seconds to a `report` bolt writing to `counts`.
    pub report: Option<(u32, WordCounts)>,
    /// Whether the spout and the count bolt set custom gauges (see
    /// [`SentenceSpout::gauges`] and [`WordCount::gauges`]).
    pub gauges: bool,
}

impl Default for WordCountOptions {
    fn default() -> Self {
        WordCountOptions {
            spouts: 1,
            splitters: 2,
            counters: 2,
            reliable: true,
            rate: None,
            report: None,
            gauges: false,
        }
    }
}

/// WordCountTopology: sentences → split (shuffle) → count (fields on `word`) [→ report].
pub fn word_count_topology(o: &WordCountOptions) -> Result<Topology, TopologyError> {
    let mut b = TopologyBuilder::new();
    let spout = SentenceSpout {
        rate: o.rate,
        reliable: o.reliable,
        gauges: o.gauges,
        ..Default::default()
    };
    b.set_spout("spout", spout, o.spouts);
    b.set_bolt("split", SplitSentence, o.splitters)
        .shuffle_grouping("spout");
    let count = WordCount {
        gauges: o.gauges,
        ..match &o.report {
            Some((secs, _)) => WordCount::reporting_every(*secs),
            None => WordCount::default(),
        }
    };
    b.set_bolt("count", count, o.counters)
        .fields_grouping("split", ["word"]);
    if let Some((_, counts)) = &o.report {
        b.set_bolt(
            "report",
            ReportBolt {
                counts: counts.clone(),
            },
            1,
        )
        .global_grouping("count");
    }
    b.create_topology()
}

/// Emits one constant string forever (storm-perf's `ConstSpout`), with a message id
/// when `reliable`.
#[derive(Clone)]
pub struct ConstSpout {
    /// Whether to emit with message ids.
    pub reliable: bool,
    /// Tuples per second per task (`None`: as fast as possible).
    pub rate: Option<u64>,
    seq: u64,
    pacer: Option<Pacer>,
}

impl ConstSpout {
    /// A const spout.
    pub fn new(reliable: bool, rate: Option<u64>) -> Self {
        ConstSpout {
            reliable,
            rate,
            seq: 0,
            pacer: None,
        }
    }
}

impl Spout for ConstSpout {
    fn open(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        self.pacer = self.rate.map(Pacer::new);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if let Some(p) = &mut self.pacer {
            if !p.ready() {
                return;
            }
        }
        if self.reliable {
            self.seq += 1;
            out.emit_with_id(values!["some data"], self.seq);
        } else {
            out.emit(values!["some data"]);
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["str"]);
    }
}

/// Passes every tuple on, anchored (storm-perf's `IdBolt`).
#[derive(Clone, Default)]
pub struct IdBolt;

impl Bolt for IdBolt {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let values = input.values().iter().cloned().collect();
        out.emit_anchored(&input, values);
        out.ack(&input);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["str"]);
    }
}

/// Acks and drops every tuple (storm-perf's `DevNullBolt`).
#[derive(Clone, Default)]
pub struct DevNullBolt;

impl Bolt for DevNullBolt {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        out.ack(&input);
    }
}

/// Logs to stderr at `warn` (or as `RUST_LOG` says), for the example binaries; does
/// nothing when a subscriber is installed already.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// The README's code examples, compiled as doc tests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
