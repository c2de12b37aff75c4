//! Storm's StatefulWordCount on Squall: sentences are split and counted by a stateful
//! bolt whose counts survive failures, exactly once (see `squall_api::state`).

use std::collections::{BTreeMap, VecDeque};

use squall_api::state::{keys, namespace, KeyValueState, StateError, StatefulBolt};
use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TaskId, Topology, TopologyBuilder,
    TopologyContext, TopologyError, Tuple, Value,
};

use crate::{Pacer, SENTENCES};

/// Emits sentence `i` = `SENTENCES[i % 5]` with message id `i`, for `i` from 0 (up to
/// `limit`), spread over its tasks (task `k` of `n` emits the `i` with `i % n == k`);
/// replays failed ones. It keeps no progress of its own: restarted, it starts again
/// from 0, and the stateful topology's `topology.state.spout.dedup` acks the ids that
/// were committed already.
#[derive(Clone, Default)]
pub struct NumberedSentences {
    /// Stop after this many sentences (over all tasks).
    pub limit: Option<u64>,
    /// Sentences per second per task (`None`: as fast as possible).
    pub rate: Option<u64>,
    next: u64,
    step: u64,
    replay: VecDeque<u64>,
    pacer: Option<Pacer>,
    /// The id last emitted, and whether it was acked before the next `next_tuple`
    /// (committed before a restart: it does not count against the rate).
    last: Option<u64>,
    free: bool,
}

impl NumberedSentences {
    /// A spout emitting `limit` sentences (`None`: without end).
    pub fn new(limit: Option<u64>) -> Self {
        NumberedSentences {
            limit,
            ..Default::default()
        }
    }
}

impl Spout for NumberedSentences {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.next = ctx.this_task_index() as u64;
        self.step = ctx
            .component_tasks(ctx.this_component_id().as_str())
            .len()
            .max(1) as u64;
        self.pacer = self.rate.map(Pacer::new);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.last = None;
        if !std::mem::take(&mut self.free) && self.pacer.as_mut().is_some_and(|p| !p.ready()) {
            return;
        }
        let i = match self.replay.pop_front() {
            Some(i) => i,
            None if self.limit.is_none_or(|n| self.next < n) => {
                self.next += self.step;
                self.next - self.step
            }
            None => return,
        };
        self.last = Some(i);
        out.emit_with_id(values![SENTENCES[(i % 5) as usize]], i as i64);
    }

    fn ack(&mut self, msg_id: Value) {
        if let Value::Int(i) = msg_id {
            self.free = self.last == Some(i as u64);
        }
        self.last = None;
    }

    fn fail(&mut self, msg_id: Value) {
        if let Value::Int(i) = msg_id {
            self.replay.push_back(i as u64);
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["sentence"]);
    }
}

/// Splits sentences into words; fails a sentence with probability `fail_rate`
/// (before emitting anything), to test recovery.
#[derive(Clone, Default)]
pub struct FlakySplit {
    /// Probability of failing an input.
    pub fail_rate: f64,
}

impl BasicBolt for FlakySplit {
    fn execute(
        &mut self,
        t: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            return Err("injected failure".into());
        }
        for w in t.get_string(0)?.split(' ') {
            out.emit(values![w]);
        }
        Ok(())
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word"]);
    }
}

/// Counts words in its state (Storm's `StatefulWordCountBolt`); emits `(word, count)`.
/// Fails a word with probability `fail_rate` before counting it, to test recovery.
#[derive(Clone, Default)]
pub struct StatefulWordCount {
    /// Probability of failing an input.
    pub fail_rate: f64,
}

impl StatefulBolt for StatefulWordCount {
    type Key = String;
    type Value = u64;

    fn execute(
        &mut self,
        input: Tuple,
        state: &mut KeyValueState<String, u64>,
        out: &mut OutputCollector<'_>,
    ) {
        let Ok(word) = input.get_string(0) else {
            return out.fail(&input);
        };
        if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            return out.fail(&input);
        }
        let word = word.to_owned();
        let n = match state.get_mut(&word) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                state.put(word.clone(), 1);
                1
            }
        };
        out.emit_anchored(&input, values![word, n as i64]);
        out.ack(&input);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word", "count"]);
    }
}

/// How to build the stateful word count.
#[derive(Clone, Default)]
pub struct StatefulWordCountOptions {
    /// Sentences to emit (`None`: without end).
    pub sentences: Option<u64>,
    /// Sentences per second per spout task (`None`: as fast as possible).
    pub rate: Option<u64>,
    /// Tasks of the spout, the split and the count.
    pub parallelism: u32,
    /// Probability that the split fails a sentence.
    pub split_fail_rate: f64,
    /// Probability that the count fails a word.
    pub count_fail_rate: f64,
    /// Count in a plain bolt instead (no state, no checkpoints): the baseline of the
    /// checkpointing benchmark.
    pub stateless: bool,
}

/// `sentences → split → count` (fields grouping on `word`), the count stateful.
pub fn stateful_word_count(o: &StatefulWordCountOptions) -> Result<Topology, TopologyError> {
    let p = o.parallelism.max(1);
    let mut b = TopologyBuilder::new();
    let spout = NumberedSentences {
        limit: o.sentences,
        rate: o.rate,
        ..Default::default()
    };
    b.set_spout("sentences", spout, p);
    b.set_bolt(
        "split",
        FlakySplit {
            fail_rate: o.split_fail_rate,
        },
        p,
    )
    .shuffle_grouping("sentences");
    if o.stateless {
        b.set_bolt_with("count", crate::WordCount::default, p)
            .fields_grouping("split", ["word"]);
    } else {
        b.set_stateful_bolt(
            "count",
            StatefulWordCount {
                fail_rate: o.count_fail_rate,
            },
            p,
        )
        .fields_grouping("split", ["word"]);
    }
    b.create_topology()
}

/// The configuration the example runs with: Redis when `redis` is a URL (memory
/// otherwise), spouts that remember committed ids (`topology.state.spout.dedup`; the
/// binary turns it off when the input has no end, as the set of ids would only grow).
pub fn state_conf(redis: Option<&str>) -> Config {
    let mut conf = Config::new();
    if let Some(url) = redis {
        conf.set(keys::TOPOLOGY_STATE_PROVIDER, "redis");
        conf.set(
            keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
            serde_json::json!({ "url": url }).to_string(),
        );
    }
    conf.set(keys::TOPOLOGY_STATE_SPOUT_DEDUP, true);
    conf.set_max_spout_pending(1000);
    conf
}

/// The committed counts of topology `name` (its count bolt's tasks, read from the state
/// provider `conf` names), merged over the tasks.
pub fn committed_counts(
    conf: &Config,
    name: &str,
    tasks: impl IntoIterator<Item = TaskId>,
) -> Result<BTreeMap<String, u64>, StateError> {
    let mut all = BTreeMap::new();
    for task in tasks {
        let state: KeyValueState<String, u64> =
            KeyValueState::open(conf, &namespace(name, "count", task))?;
        for (w, n) in state.iter() {
            *all.entry(w.clone()).or_insert(0) += n;
        }
    }
    Ok(all)
}
