//! Local mode end to end: guaranteed processing, groupings, lifecycle, backpressure.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::{
    values, Bolt, BoxError, Config, CustomStreamGrouping, GlobalStreamId, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TaskId, TopologyBuilder, TopologyContext,
    Tuple, Value,
};
use squall_worker::{LocalCluster, WorkerError};

type Shared<T> = Arc<Mutex<T>>;

fn shared<T: Default>() -> Shared<T> {
    Arc::default()
}

fn lock<T>(m: &Shared<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `cond` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

const LONG: Duration = Duration::from_secs(120);

/// What a finite reliable spout observed.
#[derive(Default, Debug)]
struct SpoutLog {
    acked: BTreeSet<i64>,
    acks: u64,
    fails: u64,
    emits: u64,
    max_in_flight: usize,
    collector_pending_max: usize,
}

/// Emits ids `0..n` once each with message ids, replays failed ids.
#[derive(Clone)]
struct FiniteSpout {
    n: i64,
    next: i64,
    replay: VecDeque<i64>,
    in_flight: usize,
    log: Shared<SpoutLog>,
}

impl FiniteSpout {
    fn new(n: i64, log: Shared<SpoutLog>) -> Self {
        FiniteSpout {
            n,
            next: 0,
            replay: VecDeque::new(),
            in_flight: 0,
            log,
        }
    }
}

impl Spout for FiniteSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let id = match self.replay.pop_front() {
            Some(id) => id,
            None if self.next < self.n => {
                self.next += 1;
                self.next - 1
            }
            None => return,
        };
        out.emit_with_id(values![id], id);
        self.in_flight += 1;
        let mut log = lock(&self.log);
        log.emits += 1;
        log.max_in_flight = log.max_in_flight.max(self.in_flight);
        log.collector_pending_max = log.collector_pending_max.max(out.pending_count());
    }

    fn ack(&mut self, msg_id: Value) {
        self.in_flight -= 1;
        let mut log = lock(&self.log);
        log.acks += 1;
        log.acked.insert(msg_id.as_i64().unwrap());
    }

    fn fail(&mut self, msg_id: Value) {
        self.in_flight -= 1;
        lock(&self.log).fails += 1;
        self.replay.push_back(msg_id.as_i64().unwrap());
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id"]);
    }
}

/// Emits `fanout` children anchored to each input, then acks it.
#[derive(Clone)]
struct Fanout(u32);

impl Bolt for Fanout {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let id = input.get_long(0).unwrap();
        for child in 0..self.0 {
            out.emit_anchored(&input, values![id, child]);
        }
        out.ack(&input);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id", "child"]);
    }
}

/// Fails or drops (never acks) a share of its inputs; acks the rest.
#[derive(Clone)]
struct Flaky {
    fail: f64,
    drop: f64,
    seen: Shared<HashMap<(i64, i64), u32>>,
    acked: Shared<BTreeSet<(i64, i64)>>,
}

impl Bolt for Flaky {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let key = (input.get_long(0).unwrap(), input.get_long(1).unwrap());
        *lock(&self.seen).entry(key).or_default() += 1;
        let r = fastrand::f64();
        if r < self.fail {
            out.fail(&input);
        } else if r < self.fail + self.drop {
            // Dropped: the tree times out and the spout replays it.
        } else {
            lock(&self.acked).insert(key);
            out.ack(&input);
        }
    }
}

#[test]
fn every_message_is_acked_despite_failures_and_timeouts() {
    let n = 1500;
    let log = shared::<SpoutLog>();
    let flaky = Flaky {
        fail: 0.1,
        drop: 0.05,
        seen: shared(),
        acked: shared(),
    };
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", FiniteSpout::new(n, log.clone()), 1);
    b.set_bolt("fanout", Fanout(3), 2).shuffle_grouping("spout");
    b.set_bolt("flaky", flaky.clone(), 2)
        .fields_grouping("fanout", ["id"]);
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_message_timeout_secs(2)
        .set_num_ackers(2)
        .set_max_spout_pending(300);

    let cluster = LocalCluster::new();
    cluster
        .submit_topology("reliable", &conf, &topology)
        .unwrap();
    let all_acked = wait_until(LONG, || lock(&log).acked.len() == n as usize);
    let stats = cluster.stats("reliable").unwrap();
    cluster.kill_topology("reliable").unwrap();

    let log = lock(&log);
    assert!(
        all_acked,
        "only {} of {n} messages acked: {log:?}",
        log.acked.len()
    );
    assert_eq!(
        log.acked,
        (0..n).collect::<BTreeSet<_>>(),
        "a message was lost"
    );
    assert!(
        log.fails > 0,
        "the flaky bolt's failures must reach the spout"
    );
    let spout = stats.component("spout");
    assert!(
        spout.timed_out > 0,
        "dropped tuples must time out: {spout:?}"
    );
    assert_eq!(spout.failed, log.fails);
    // Every child of every acked message was acked by the flaky bolt at least once.
    let acked_children = lock(&flaky.acked);
    for id in 0..n {
        for child in 0..3 {
            assert!(
                acked_children.contains(&(id, child)),
                "child {child} of {id} never acked"
            );
        }
    }
}

/// Emits forever with message ids and records how many are in flight.
#[derive(Clone)]
struct EndlessSpout {
    seq: i64,
    in_flight: usize,
    log: Shared<SpoutLog>,
}

impl Spout for EndlessSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.seq += 1;
        out.emit_with_id(values![self.seq], self.seq);
        self.in_flight += 1;
        let mut log = lock(&self.log);
        log.emits += 1;
        log.max_in_flight = log.max_in_flight.max(self.in_flight);
        log.collector_pending_max = log.collector_pending_max.max(out.pending_count());
    }
    fn ack(&mut self, _msg_id: Value) {
        self.in_flight -= 1;
        lock(&self.log).acks += 1;
    }
    fn fail(&mut self, _msg_id: Value) {
        self.in_flight -= 1;
        lock(&self.log).fails += 1;
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id"]);
    }
}

/// Acks after a short pause.
#[derive(Clone)]
struct SlowAck(Duration);

impl Bolt for SlowAck {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        std::thread::sleep(self.0);
        out.ack(&input);
    }
}

#[test]
fn max_spout_pending_is_never_exceeded() {
    let log = shared::<SpoutLog>();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "spout",
        EndlessSpout {
            seq: 0,
            in_flight: 0,
            log: log.clone(),
        },
        2,
    );
    b.set_bolt("slow", SlowAck(Duration::from_micros(200)), 2)
        .shuffle_grouping("spout");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_max_spout_pending(40);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("pending", &conf, &topology)
        .unwrap();
    assert!(wait_until(LONG, || lock(&log).acks > 2000));
    cluster.kill_topology("pending").unwrap();
    let log = lock(&log);
    assert!(
        log.max_in_flight <= 40,
        "in flight reached {}",
        log.max_in_flight
    );
    assert_eq!(log.max_in_flight, 40, "the spout should run at its cap");
    assert!(log.collector_pending_max <= 40);
    assert_eq!(log.fails, 0);
}

/// Emits keys `k0..k19` with a sequence number, plus a direct stream.
#[derive(Clone)]
struct KeySpout {
    n: i64,
    next: i64,
    direct_targets: Vec<TaskId>,
}

impl Spout for KeySpout {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.direct_targets = ctx.component_tasks("direct").to_vec();
        Ok(())
    }
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.next >= self.n {
            return;
        }
        let i = self.next;
        self.next += 1;
        out.emit_with_id(values![format!("k{}", i % 20), i], i);
        let target = self.direct_targets[i as usize % self.direct_targets.len()];
        out.emit_direct(target, "to-task", values![target.0, i], None);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["key", "i"]);
        d.declare_direct_stream("to-task", ["target", "i"]);
    }
}

/// Records `(task, first value)` for every tuple.
#[derive(Clone)]
struct Recorder {
    task: TaskId,
    log: Shared<Vec<(TaskId, Value)>>,
}

impl Bolt for Recorder {
    fn prepare(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.task = ctx.this_task_id();
        Ok(())
    }
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        lock(&self.log).push((self.task, input.values()[0].clone()));
        out.ack(&input);
    }
}

/// Always picks the highest task.
#[derive(Clone)]
struct LastTask(Vec<TaskId>);

impl CustomStreamGrouping for LastTask {
    fn prepare(&mut self, _stream: &GlobalStreamId, target_tasks: &[TaskId]) {
        self.0 = target_tasks.to_vec();
    }
    fn choose_tasks(&mut self, _source: TaskId, _values: &[Value], out: &mut Vec<TaskId>) {
        out.push(*self.0.last().unwrap());
    }
}

#[test]
fn groupings_deliver_where_they_promise() {
    let n = 400;
    let names = [
        "fields", "all", "global", "direct", "local", "partial", "custom", "none",
    ];
    let logs: BTreeMap<&str, Shared<Vec<(TaskId, Value)>>> =
        names.iter().map(|&k| (k, shared())).collect();
    let rec = |k: &str| Recorder {
        task: TaskId(0),
        log: logs[k].clone(),
    };
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "spout",
        KeySpout {
            n,
            next: 0,
            direct_targets: vec![],
        },
        1,
    );
    b.set_bolt("fields", rec("fields"), 4)
        .fields_grouping("spout", ["key"]);
    b.set_bolt("all", rec("all"), 3).all_grouping("spout");
    b.set_bolt("global", rec("global"), 3)
        .global_grouping("spout");
    b.set_bolt("direct", rec("direct"), 3)
        .direct_grouping(("spout", "to-task"));
    b.set_bolt("local", rec("local"), 2)
        .local_or_shuffle_grouping("spout");
    b.set_bolt("partial", rec("partial"), 3)
        .partial_key_grouping("spout", ["key"]);
    b.set_bolt("custom", rec("custom"), 3)
        .custom_grouping("spout", LastTask(vec![]));
    b.set_bolt("none", rec("none"), 2).none_grouping("spout");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("groupings", &Config::new(), &topology)
        .unwrap();
    let expected = |k: &str| {
        if k == "all" {
            3 * n as usize
        } else {
            n as usize
        }
    };
    let done = wait_until(LONG, || {
        names.iter().all(|k| lock(&logs[k]).len() == expected(k))
    });
    let stats = cluster.stats("groupings").unwrap();
    let layout_tasks = |c: &str| -> Vec<TaskId> {
        let log = lock(&logs[c]);
        let mut t: Vec<TaskId> = log
            .iter()
            .map(|e| e.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        t.sort();
        t
    };
    cluster.kill_topology("groupings").unwrap();
    assert!(done, "not every tuple arrived: {stats:?}");

    // fields: each key reaches exactly one task, and keys spread over several tasks.
    let mut key_tasks: BTreeMap<String, BTreeSet<TaskId>> = BTreeMap::new();
    for (task, key) in lock(&logs["fields"]).iter() {
        key_tasks.entry(key.to_string()).or_default().insert(*task);
    }
    assert_eq!(key_tasks.len(), 20);
    assert!(key_tasks.values().all(|t| t.len() == 1), "{key_tasks:?}");
    assert!(layout_tasks("fields").len() > 1);

    // all: every task receives every tuple.
    let all = lock(&logs["all"]);
    let per_task = all.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e.0).or_insert(0usize) += 1;
        m
    });
    assert_eq!(per_task.len(), 3);
    assert!(per_task.values().all(|&c| c == n as usize), "{per_task:?}");
    drop(all);

    // global: only the lowest task of the bolt.
    let global_tasks = layout_tasks("global");
    assert_eq!(global_tasks.len(), 1);
    let direct_tasks = layout_tasks("direct");
    assert_eq!(direct_tasks.len(), 3);

    // direct: each tuple reaches the task named in it.
    for (task, target) in lock(&logs["direct"]).iter() {
        assert_eq!(
            target.as_i64().unwrap(),
            task.0 as i64,
            "direct tuple went astray"
        );
    }

    // partial key: each key on at most two tasks.
    let mut pk: BTreeMap<String, BTreeSet<TaskId>> = BTreeMap::new();
    for (task, key) in lock(&logs["partial"]).iter() {
        pk.entry(key.to_string()).or_default().insert(*task);
    }
    assert!(pk.values().all(|t| t.len() <= 2));
    assert!(
        pk.values().any(|t| t.len() == 2),
        "partial key never split a key"
    );

    // custom: only the last task; shuffle-like groupings use every task.
    assert_eq!(layout_tasks("custom").len(), 1);
    assert_eq!(layout_tasks("local").len(), 2);
    assert_eq!(layout_tasks("none").len(), 2);
    let lowest_global = global_tasks[0];
    // The lowest task id of the global bolt is the first of its tasks.
    let topology_tasks = squall_api::TaskLayout::new(topology.spec(), 1);
    assert_eq!(topology_tasks.component_tasks("global")[0], lowest_global);
    assert_eq!(
        *topology_tasks.component_tasks("custom").last().unwrap(),
        layout_tasks("custom")[0]
    );
}

/// Panics the first time it sees an id divisible by 10.
#[derive(Clone)]
struct Boom {
    seen: Shared<BTreeSet<i64>>,
}

impl Bolt for Boom {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let id = input.get_long(0).unwrap();
        if id % 10 == 0 && lock(&self.seen).insert(id) {
            panic!("boom on {id}");
        }
        out.ack(&input);
    }
}

#[test]
fn a_panicking_bolt_fails_its_tuple_which_replays() {
    let n = 200;
    let log = shared::<SpoutLog>();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", FiniteSpout::new(n, log.clone()), 1);
    // Storm's report throttle (5 per 10 s per executor) opened up, to see the 10 kept.
    b.set_bolt("boom", Boom { seen: shared() }, 1)
        .shuffle_grouping("spout")
        .add_configuration("topology.max.error.report.per.interval", 1000);
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("panics", &Config::new(), &topology)
        .unwrap();
    let ok = wait_until(LONG, || lock(&log).acked.len() == n as usize);
    let errors = cluster.errors("panics").unwrap();
    cluster.kill_topology("panics").unwrap();
    let log = lock(&log);
    assert!(ok, "the topology stopped after a panic: {log:?}");
    assert_eq!(
        log.fails,
        (n / 10) as u64,
        "each panic fails exactly its tuple"
    );
    assert_eq!(
        errors.len(),
        10,
        "only the last 10 errors are kept per component"
    );
    let e = &errors[0];
    assert_eq!(e.component.as_str(), "boom");
    assert!(e.error.contains("bolt 'boom' task"), "{}", e.error);
    assert!(
        e.error.contains("panicked in execute: boom on"),
        "{}",
        e.error
    );
}

/// Counts tick tuples.
#[derive(Clone)]
struct TickCounter(Shared<Vec<(String, String)>>);

impl Bolt for TickCounter {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if input.is_tick() {
            lock(&self.0).push((
                input.source_component().to_owned(),
                input.source_stream().to_owned(),
            ));
        }
        out.ack(&input);
    }
    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set_tick_tuple_freq_secs(1);
        c
    }
}

#[test]
fn tick_tuples_arrive_at_the_configured_rate() {
    let ticks = shared();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", FiniteSpout::new(0, shared()), 1);
    b.set_bolt("ticked", TickCounter(ticks.clone()), 2)
        .shuffle_grouping("spout");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("ticks", &Config::new(), &topology)
        .unwrap();
    // Two tasks, one tick per second each.
    assert!(wait_until(LONG, || lock(&ticks).len() >= 4));
    cluster.kill_topology("ticks").unwrap();
    let t = lock(&ticks);
    assert!(t.iter().all(|(c, s)| c == "__system" && s == "__tick"));
}

/// Never acks.
#[derive(Clone)]
struct BlackHole;

impl Bolt for BlackHole {
    fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {}
}

#[test]
fn without_ackers_spout_tuples_are_acked_at_once() {
    let n = 500;
    let log = shared::<SpoutLog>();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", FiniteSpout::new(n, log.clone()), 1);
    b.set_bolt("hole", BlackHole, 1).shuffle_grouping("spout");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_num_ackers(0).set_message_timeout_secs(1);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("no-ackers", &conf, &topology)
        .unwrap();
    assert!(wait_until(LONG, || lock(&log).acked.len() == n as usize));
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill_topology("no-ackers").unwrap();
    assert_eq!(lock(&log).fails, 0);
}

#[test]
fn local_cluster_lifecycle() {
    let log = shared::<SpoutLog>();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "spout",
        EndlessSpout {
            seq: 0,
            in_flight: 0,
            log: log.clone(),
        },
        1,
    );
    b.set_bolt("sink", SlowAck(Duration::ZERO), 1)
        .shuffle_grouping("spout");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_max_spout_pending(100);
    let cluster = LocalCluster::new();
    cluster.submit_topology("one", &conf, &topology).unwrap();
    cluster.submit_topology("two", &conf, &topology).unwrap();
    assert_eq!(cluster.topology_names(), vec!["one", "two"]);
    assert!(matches!(
        cluster.submit_topology("one", &conf, &topology),
        Err(WorkerError::AlreadyRunning(_))
    ));
    assert!(matches!(
        cluster.submit_topology("bad/name", &conf, &topology),
        Err(WorkerError::InvalidName(_))
    ));
    let mut bad = Config::new();
    bad.set(squall_api::config::keys::TOPOLOGY_MAX_SPOUT_PENDING, "lots");
    let err = cluster
        .submit_topology("three", &bad, &topology)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key 'topology.max.spout.pending' must be a non-negative integer, found \"lots\""
    );

    assert!(wait_until(LONG, || lock(&log).acks > 1000));
    cluster.deactivate("one").unwrap();
    cluster.deactivate("two").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let paused = lock(&log).emits;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lock(&log).emits,
        paused,
        "a deactivated spout kept emitting"
    );
    cluster.activate("one").unwrap();
    assert!(wait_until(LONG, || lock(&log).emits > paused + 1000));

    let stats = cluster.kill_topology("one").unwrap();
    assert!(stats.component("sink").executed > 0);
    assert_eq!(cluster.topology_names(), vec!["two"]);
    assert!(matches!(
        cluster.kill_topology("one"),
        Err(WorkerError::UnknownTopology(_))
    ));
    cluster.shutdown();
    assert!(cluster.topology_names().is_empty());
}

/// Emits untracked tuples as fast as it can.
#[derive(Clone)]
struct Firehose;

impl Spout for Firehose {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        out.emit(values!["data"]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["d"]);
    }
}

#[test]
fn a_slow_bolt_holds_a_fast_spout_back() {
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Firehose, 1);
    b.set_bolt("slow", SlowAck(Duration::from_micros(100)), 1)
        .shuffle_grouping("spout");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set(
        squall_api::config::keys::TOPOLOGY_EXECUTOR_RECEIVE_BUFFER_SIZE,
        1024,
    )
    .set(squall_api::config::keys::TOPOLOGY_PRODUCER_BATCH_SIZE, 64)
    .set_num_ackers(0);
    let cluster = LocalCluster::new();
    cluster.submit_topology("bp", &conf, &topology).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let s = cluster.stats("bp").unwrap();
    cluster.kill_topology("bp").unwrap();
    let emitted = s.component("spout").emitted;
    let executed = s.component("slow").executed;
    assert!(executed > 100, "{s:?}");
    // Queued at most: the bolt's queue (16 batches of 64), the spout's open batch and
    // the batch the bolt is working on, plus counters not yet published.
    assert!(
        emitted - executed < 4 * 1024,
        "the spout ran {} tuples ahead of the bolt",
        emitted - executed
    );
}
