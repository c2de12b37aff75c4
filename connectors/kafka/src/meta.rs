//! The spout's metadata thread: every partition refresh period it lists the partitions
//! of the topics read, deals them over the spout's tasks (Storm 2's
//! `RoundRobinManualPartitioner`), finds where newly owned partitions start (the first
//! poll offset strategy against the group's committed offsets), and reads the high
//! watermarks of the partitions owned, for the lag gauges. It also makes the spout's
//! commits (synchronously, so it knows which succeeded: librdkafka reports nothing about
//! manual asynchronous commits). It talks to the brokers with its own client, so the
//! executor thread never waits for a broker.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{FirstPollOffsetStrategy, KafkaSpoutConfig, Topics};
use crate::util::{committed_by, ErrorSink};

/// How long one metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic partition.
pub(crate) type Tp = (String, i32);

/// The partitions of `topics` in `md`, sorted by topic and partition.
pub(crate) fn matching_partitions(md: &Metadata, topics: &Topics) -> Vec<Tp> {
    let mut all: Vec<Tp> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && topics.matches(t.name()))
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(move |p| (t.name().to_owned(), p.id()))
        })
        .collect();
    all.sort();
    all
}

/// Task `task_index` of `num_tasks`' share of `all` (sorted): positions `task_index`,
/// `task_index + num_tasks`, ... (Storm's `RoundRobinManualPartitioner`).
pub(crate) fn share(all: &[Tp], task_index: usize, num_tasks: usize) -> Vec<Tp> {
    all.iter()
        .skip(task_index)
        .step_by(num_tasks.max(1))
        .cloned()
        .collect()
}

/// Where a newly owned partition starts reading: its committed offset (`committed`,
/// with the topology id stored in the commit's metadata) unless the strategy ignores
/// commits made by another deployment, else its first (`low`) or end (`high`) offset.
pub(crate) fn start_offset(
    strategy: FirstPollOffsetStrategy,
    committed: Option<(i64, Option<String>)>,
    low: i64,
    high: i64,
    topology_id: &str,
) -> i64 {
    let committed = committed
        .filter(|(_, by)| !strategy.ignores_earlier_commits() || by.as_deref() == Some(topology_id))
        .map(|(o, _)| o);
    match committed {
        Some(o) if (low..=high).contains(&o) => o,
        // Deleted by retention since: the first offset still there.
        Some(o) if o < low => low,
        // Past the end (the topic was recreated): as if nothing were committed.
        _ if strategy.from_beginning() => low,
        _ => high,
    }
}

/// A new assignment for the spout: the partitions it now owns; those it did not own
/// before come with the offset to start at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) partitions: Vec<Tp>,
    pub(crate) starts: HashMap<Tp, i64>,
}

/// What the metadata thread shares with the spout.
pub(crate) struct Shared {
    plan: Mutex<Option<Plan>>,
    plan_version: AtomicU64,
    high: Mutex<HashMap<Tp, i64>>,
    confirmed: Mutex<Vec<(String, i32, i64)>>,
    committing: AtomicBool,
    pub(crate) errors: ErrorSink,
}

impl Shared {
    pub(crate) fn new(errors: ErrorSink) -> Arc<Self> {
        Arc::new(Shared {
            plan: Mutex::new(None),
            plan_version: AtomicU64::new(0),
            high: Mutex::new(HashMap::new()),
            confirmed: Mutex::new(Vec::new()),
            committing: AtomicBool::new(false),
            errors,
        })
    }

    /// The commits Kafka confirmed since the last call: `(topic, partition, offset)`.
    pub(crate) fn take_confirmed(&self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether a commit sent to the thread is not finished yet.
    pub(crate) fn committing(&self) -> bool {
        self.committing.load(Ordering::Acquire)
    }

    /// The newest plan, if one came since the last call (cheap when none did).
    pub(crate) fn take_plan(&self, seen: &mut u64) -> Option<Plan> {
        let v = self.plan_version.load(Ordering::Acquire);
        if v == *seen {
            return None;
        }
        *seen = v;
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn publish(&self, plan: Plan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan);
        self.plan_version.fetch_add(1, Ordering::Release);
    }

    /// The latest high watermark read for each owned partition.
    pub(crate) fn high_watermarks(&self) -> HashMap<Tp, i64> {
        self.high.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A commit for the metadata thread to make.
pub(crate) struct Commit {
    /// `(topic, partition, offset)` to commit.
    pub(crate) offsets: Vec<(String, i32, i64)>,
    /// Stored with each offset.
    pub(crate) metadata: String,
    /// Told whether the commit succeeded.
    pub(crate) done: Option<mpsc::Sender<bool>>,
}

/// Hands commits to the metadata thread; stops it when dropped (without waiting).
pub(crate) struct MetaThread {
    requests: mpsc::Sender<Commit>,
    shared: Arc<Shared>,
}

impl MetaThread {
    /// Commits in the background; the result shows in [`Shared::take_confirmed`] (and
    /// an error in the error sink).
    pub(crate) fn commit(&self, commit: Commit) {
        self.shared.committing.store(true, Ordering::Release);
        if self.requests.send(commit).is_err() {
            self.shared.committing.store(false, Ordering::Release);
        }
    }
}

/// Who the metadata thread works for.
pub(crate) struct Owner {
    pub(crate) topology_id: String,
    pub(crate) component: String,
    pub(crate) task: u32,
    pub(crate) task_index: usize,
    pub(crate) num_tasks: usize,
}

/// Starts the metadata thread; its first round runs at once.
pub(crate) fn spawn(
    config: &KafkaSpoutConfig,
    owner: Owner,
    shared: Arc<Shared>,
) -> Result<MetaThread, crate::Error> {
    let mut cc = config.client_config();
    cc.set(
        "client.id",
        format!("squall-{}-{}-meta", owner.component, owner.task),
    );
    let consumer: BaseConsumer = cc.create().map_err(|e| {
        crate::Error::kafka(
            format!("creating the Kafka consumer of {}", owner.component),
            e,
        )
    })?;
    let (requests, incoming) = mpsc::channel::<Commit>();
    let config = config.clone();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("kafka-meta-{}", owner.task))
        .spawn(move || {
            let mut round = Round {
                consumer,
                config,
                owner,
                shared: thread_shared,
                owned: Vec::new(),
                missing_reported: BTreeSet::new(),
            };
            'rounds: loop {
                round.run();
                let next = std::time::Instant::now() + round.config.refresh_period;
                loop {
                    let wait = next.saturating_duration_since(std::time::Instant::now());
                    match incoming.recv_timeout(wait) {
                        Ok(c) => round.commit(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break 'rounds,
                    }
                }
            }
            // Dropping an rdkafka client can block for a while: this thread is not waited
            // for, so it does not matter.
        })
        .map_err(|e| crate::Error::Config(format!("cannot start a thread: {e}")))?;
    Ok(MetaThread { requests, shared })
}

struct Round {
    consumer: BaseConsumer,
    config: KafkaSpoutConfig,
    owner: Owner,
    shared: Arc<Shared>,
    owned: Vec<Tp>,
    missing_reported: BTreeSet<String>,
}

impl Round {
    fn err(&self, what: String) {
        self.shared
            .errors
            .push(format!("KafkaSpout {}: {what}", self.owner.component));
    }

    fn commit(&mut self, c: Commit) {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &c.offsets {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_ok() {
                if let Some(mut e) = tpl.find_partition(t, *p) {
                    e.set_metadata(c.metadata.as_str());
                }
            }
        }
        let ok = match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.shared
                    .confirmed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(c.offsets);
                true
            }
            Err(e) => {
                self.err(format!(
                    "committing offsets for group '{}' failed: {e}; retried at the next commit",
                    self.config.group_id
                ));
                false
            }
        };
        self.shared.committing.store(false, Ordering::Release);
        if let Some(done) = c.done {
            let _ = done.send(ok);
        }
    }

    fn run(&mut self) {
        let md = match self.consumer.fetch_metadata(None, REQUEST_TIMEOUT) {
            Ok(md) => md,
            Err(e) => {
                self.err(format!(
                    "cannot list the partitions of {} on {}: {e} (retried every {:?})",
                    self.config.topics, self.config.bootstrap_servers, self.config.refresh_period
                ));
                return;
            }
        };
        if let Topics::Names(names) = &self.config.topics {
            for n in names {
                let exists = md
                    .topics()
                    .iter()
                    .any(|t| t.name() == n && t.error().is_none());
                if !exists && self.missing_reported.insert(n.clone()) {
                    self.err(format!(
                        "topic '{n}' does not exist on {} (yet); it is read once it does",
                        self.config.bootstrap_servers
                    ));
                } else if exists {
                    self.missing_reported.remove(n);
                }
            }
        }
        let all = matching_partitions(&md, &self.config.topics);
        let mine = share(&all, self.owner.task_index, self.owner.num_tasks);
        if mine != self.owned {
            let new: Vec<Tp> = mine
                .iter()
                .filter(|tp| !self.owned.contains(tp))
                .cloned()
                .collect();
            match self.start_offsets(&new) {
                Ok(starts) => {
                    self.shared.publish(Plan {
                        partitions: mine.clone(),
                        starts,
                    });
                    self.owned = mine;
                }
                Err(e) => {
                    self.err(e);
                    return;
                }
            }
        }
        let mut high = HashMap::new();
        for tp in &self.owned {
            match self.consumer.fetch_watermarks(&tp.0, tp.1, REQUEST_TIMEOUT) {
                Ok((_, h)) => {
                    high.insert(tp.clone(), h);
                }
                Err(e) => {
                    self.err(format!(
                        "cannot read the latest offset of {}/{}: {e}",
                        tp.0, tp.1
                    ));
                }
            }
        }
        *self.shared.high.lock().unwrap_or_else(|p| p.into_inner()) = high;
    }

    fn start_offsets(&self, new: &[Tp]) -> Result<HashMap<Tp, i64>, String> {
        let mut starts = HashMap::new();
        if new.is_empty() {
            return Ok(starts);
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in new {
            tpl.add_partition(t, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(|e| {
                format!(
                    "cannot read the committed offsets of group '{}': {e}",
                    self.config.group_id
                )
            })?;
        for (t, p) in new {
            let (low, high) = self
                .consumer
                .fetch_watermarks(t, *p, REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot read the offsets of {t}/{p}: {e}"))?;
            let c = committed
                .find_partition(t, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some((o, committed_by(e.metadata()))),
                    _ => None,
                });
            let start = start_offset(
                self.config.first_poll,
                c,
                low,
                high,
                &self.owner.topology_id,
            );
            starts.insert((t.clone(), *p), start);
        }
        Ok(starts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FirstPollOffsetStrategy::*;

    fn tps(v: &[(&str, i32)]) -> Vec<Tp> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn partitions_are_dealt_round_robin_over_the_sorted_list() {
        let all = tps(&[("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]);
        assert_eq!(share(&all, 0, 2), tps(&[("a", 0), ("a", 2), ("b", 1)]));
        assert_eq!(share(&all, 1, 2), tps(&[("a", 1), ("b", 0)]));
        assert_eq!(share(&all, 3, 4), tps(&[("b", 0)]));
        assert_eq!(share(&all, 0, 1), all);
        // Every partition has exactly one owner.
        for n in 1..7 {
            let mut got: Vec<Tp> = (0..n).flat_map(|i| share(&all, i, n)).collect();
            got.sort();
            assert_eq!(got, all, "{n} tasks");
        }
    }

    #[test]
    fn start_offsets_follow_the_first_poll_strategy() {
        let mine = Some((50, Some("topo-1".to_owned())));
        let older = Some((50, Some("topo-0".to_owned())));
        let storms = Some((50, None));
        // (strategy, committed, expected) with low 10, high 100.
        let cases = [
            (Earliest, None, 10),
            (Earliest, older.clone(), 10),
            (Earliest, mine.clone(), 50),
            (Latest, None, 100),
            (Latest, storms.clone(), 100),
            (Latest, mine.clone(), 50),
            (UncommittedEarliest, None, 10),
            (UncommittedEarliest, older.clone(), 50),
            (UncommittedLatest, None, 100),
            (UncommittedLatest, storms, 50),
            // Committed below the first offset still there: the first one.
            (UncommittedLatest, Some((3, None)), 10),
            // Committed past the end: as if nothing were committed.
            (UncommittedEarliest, Some((500, None)), 10),
            (UncommittedLatest, Some((500, None)), 100),
        ];
        for (strategy, committed, want) in cases {
            assert_eq!(
                start_offset(strategy, committed.clone(), 10, 100, "topo-1"),
                want,
                "{strategy:?} {committed:?}"
            );
        }
    }
}
