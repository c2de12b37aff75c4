//! The life of a topology's executors: setup that fails, executors that die, a graceful
//! stop, errors that never stop being counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::{
    values, Bolt, BoxError, ComponentKind, Config, OutputCollector, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, TaskId, TaskLayout, Topology, TopologyBuilder, TopologyContext, Tuple,
    Value,
};
use squall_worker::{LocalCluster, RuntimePlan, TopologyRuntime, WorkerError};

/// What the components of a test saw, by event name (`open`, `next_tuple`, ...).
#[derive(Clone, Default)]
struct Events(Arc<Mutex<BTreeMap<String, u64>>>);

impl Events {
    fn add(&self, what: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what.to_owned())
            .or_default() += 1;
    }
    fn get(&self, what: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

/// How a component's setup goes.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Ok,
    /// Only the task with this index (within the component) fails with an `Err`.
    ErrOnTask(u32),
    Panic,
    Sleep(Duration),
}

fn setup(how: Setup, ctx: &TopologyContext, events: &Events, who: &str) -> Result<(), BoxError> {
    events.add(&format!("{who}.setup"));
    let index = ctx.this_task_id().0 - ctx.component_tasks(ctx.this_component_id().as_str())[0].0;
    match how {
        Setup::Ok => {}
        Setup::ErrOnTask(i) if i == index => {
            let io = std::io::Error::new(std::io::ErrorKind::NotFound, "/data/words.txt");
            return Err(format!("cannot read the word list: {io}").into());
        }
        Setup::ErrOnTask(_) => {}
        Setup::Panic => panic!("{who} exploded in setup"),
        Setup::Sleep(d) => std::thread::sleep(d),
    }
    events.add(&format!("{who}.ready"));
    Ok(())
}

/// Emits increasing numbers, tracked, and records every call.
#[derive(Clone)]
struct Numbers {
    name: &'static str,
    setup: Setup,
    limit: u64,
    next: u64,
    events: Events,
}

impl Numbers {
    fn new(name: &'static str, setup: Setup, limit: u64, events: &Events) -> Self {
        Numbers {
            name,
            setup,
            limit,
            next: 0,
            events: events.clone(),
        }
    }
}

impl Spout for Numbers {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        setup(self.setup, ctx, &self.events, self.name)
    }
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.events.add(&format!("{}.next_tuple", self.name));
        if self.next < self.limit {
            self.next += 1;
            out.emit_with_id(values![self.next as i64], self.next as i64);
            self.events.add(&format!("{}.emitted", self.name));
        }
    }
    fn ack(&mut self, _msg_id: Value) {
        self.events.add(&format!("{}.acked", self.name));
    }
    fn fail(&mut self, _msg_id: Value) {
        self.events.add(&format!("{}.failed", self.name));
    }
    fn close(&mut self) {
        self.events.add(&format!("{}.close", self.name));
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// Acks every tuple after `delay` (never, when `delay` is `None`).
#[derive(Clone)]
struct Sink {
    name: &'static str,
    setup: Setup,
    delay: Option<Duration>,
    events: Events,
}

impl Sink {
    fn new(name: &'static str, setup: Setup, delay: Option<Duration>, events: &Events) -> Self {
        Sink {
            name,
            setup,
            delay,
            events: events.clone(),
        }
    }
}

impl Bolt for Sink {
    fn prepare(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        setup(self.setup, ctx, &self.events, self.name)
    }
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        self.events.add(&format!("{}.execute", self.name));
        if let Some(d) = self.delay {
            std::thread::sleep(d);
            out.ack(&input);
        }
    }
    fn cleanup(&mut self) {
        self.events.add(&format!("{}.cleanup", self.name));
    }
}

/// Threads of this process whose name starts with `prefix` (Linux truncates thread
/// names to 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end().starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn a_failed_open_fails_the_local_submit_naming_component_task_and_cause() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    // Two spouts: "lkgood" opens fine, task 2 of "lkbad" fails. Neither may ever emit.
    b.set_spout("lkgood", Numbers::new("good", Setup::Ok, 1000, &events), 2);
    b.set_spout(
        "lkbad",
        Numbers::new("bad", Setup::ErrOnTask(1), 1000, &events),
        3,
    );
    b.set_bolt(
        "lksink",
        Sink::new("sink", Setup::Ok, Some(Duration::ZERO), &events),
        2,
    )
    .shuffle_grouping("lkgood")
    .shuffle_grouping("lkbad");
    let topology = b.create_topology().unwrap();
    let layout = TaskLayout::new(topology.spec(), 1);
    let failing_task = layout.component_tasks("lkbad")[1];

    let cluster = LocalCluster::new();
    let err = cluster
        .submit_topology("bad-open", &Config::new(), &topology)
        .unwrap_err();
    let WorkerError::ExecutorFailed(failure) = &err else {
        panic!("expected an executor failure, got {err:?}");
    };
    assert_eq!(failure.component.as_str(), "lkbad");
    assert_eq!(failure.task, failing_task);
    assert_eq!(failure.kind, ComponentKind::Spout);
    assert_eq!(
        err.to_string(),
        format!(
            "spout 'lkbad' task {failing_task} failed: open returned an error: cannot read the word list: /data/words.txt"
        )
    );

    // Nothing of the topology runs: not listed, no thread left, no tuple ever emitted.
    assert!(cluster.topology_names().is_empty());
    assert_eq!(threads_named("squall-lk"), 0, "executor threads leaked");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(events.get("good.next_tuple"), 0);
    assert_eq!(events.get("bad.next_tuple"), 0);
    assert_eq!(events.get("sink.execute"), 0);
    // What did start was closed / cleaned up: both "good" tasks, the "bad" tasks that
    // opened (its three tasks run on three executors), both sinks.
    assert_eq!(events.get("good.close"), 2);
    assert_eq!(events.get("bad.ready"), 2);
    assert_eq!(events.get("bad.close"), 2);
    assert_eq!(events.get("sink.cleanup"), 2);

    // The name is free again: a good topology of that name starts.
    let mut b = TopologyBuilder::new();
    b.set_spout("lkgood", Numbers::new("good2", Setup::Ok, 10, &events), 1);
    cluster
        .submit_topology("bad-open", &Config::new(), &b.create_topology().unwrap())
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || events
        .get("good2.acked")
        == 10));
    cluster.kill_topology("bad-open").unwrap();
}

#[test]
fn a_panic_in_prepare_fails_the_local_submit() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("pspout", Numbers::new("spout", Setup::Ok, 1000, &events), 1);
    b.set_bolt(
        "pbolt",
        Sink::new("bolt", Setup::Panic, Some(Duration::ZERO), &events),
        1,
    )
    .shuffle_grouping("pspout");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    let err = cluster
        .submit_topology("panicky", &Config::new(), &topology)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("bolt 'pbolt' task 1 failed: prepare panicked: bolt exploded in setup"),
        "{msg}"
    );
    assert_eq!(events.get("spout.next_tuple"), 0);
    assert_eq!(events.get("spout.close"), 1);
    assert!(cluster.topology_names().is_empty());
}

fn all_executors(
    layout: &TaskLayout,
) -> Vec<(squall_api::ComponentId, ComponentKind, TaskId, TaskId)> {
    layout
        .executors()
        .map(|(c, a, b)| (c.clone(), layout.components()[c].kind, a, b))
        .collect()
}

fn start_worker(topology: &Topology, setup_timeout: Option<Duration>) -> TopologyRuntime {
    let conf = Config::new();
    let layout = Arc::new(TaskLayout::new(topology.spec(), 1));
    let plan = RuntimePlan {
        local: all_executors(&layout),
        worker_port: Some(6711),
        host: Some("node-7".into()),
        setup_timeout,
        ..RuntimePlan::default()
    };
    TopologyRuntime::start_plan("t-1-1", topology, &conf, layout, plan, true).unwrap()
}

#[test]
fn in_worker_mode_a_failed_prepare_is_a_failed_executor_with_host_and_port() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("wspout", Numbers::new("spout", Setup::Ok, 1000, &events), 1);
    b.set_bolt(
        "wbolt",
        Sink::new("bolt", Setup::ErrOnTask(0), Some(Duration::ZERO), &events),
        1,
    )
    .shuffle_grouping("wspout");
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, None);

    let failed = rt
        .failed_executor()
        .expect("the worker must see the failure");
    assert_eq!(
        failed,
        "bolt 'wbolt' task 1 on node-7:6711 failed: prepare returned an error: cannot read the word list: /data/words.txt"
    );
    // Reported as an error of the component, with host and port, for Nimbus.
    let errors = rt.errors();
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!((e.component.as_str(), e.task), ("wbolt", TaskId(1)));
    assert_eq!((e.host.as_deref(), e.port), (Some("node-7"), Some(6711)));
    assert_eq!(e.seq, 1);
    // Started active, but a failed start activates nothing.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(events.get("spout.next_tuple"), 0);
    rt.shutdown(Duration::from_secs(5));
    assert_eq!(events.get("spout.close"), 1);
    assert_eq!(
        rt.failed_executor(),
        None,
        "a shut-down runtime reports nothing"
    );
}

#[test]
fn an_open_that_does_not_finish_in_time_fails_the_start() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "slowspout",
        Numbers::new(
            "spout",
            Setup::Sleep(Duration::from_millis(1500)),
            1000,
            &events,
        ),
        1,
    );
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, Some(Duration::from_millis(200)));
    let failed = rt.failed_executor().expect("a hung open is a failure");
    assert!(
        failed.ends_with("failed: open did not finish within 0.2 s"),
        "{failed}"
    );
    // When open finally returns, the spout still never runs; it is closed on shutdown.
    assert!(wait_until(Duration::from_secs(10), || events
        .get("spout.ready")
        == 1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(events.get("spout.next_tuple"), 0);
    rt.shutdown(Duration::from_secs(5));
    assert_eq!(events.get("spout.close"), 1);
}

#[test]
fn a_healthy_runtime_reports_no_failed_executor() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("hspout", Numbers::new("spout", Setup::Ok, 50, &events), 2);
    b.set_bolt(
        "hbolt",
        Sink::new("bolt", Setup::Ok, Some(Duration::ZERO), &events),
        2,
    )
    .shuffle_grouping("hspout");
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, None);
    assert!(wait_until(Duration::from_secs(30), || events
        .get("spout.acked")
        == 100));
    assert_eq!(rt.failed_executor(), None);
    rt.shutdown(Duration::from_secs(5));
}

#[test]
fn a_graceful_stop_lets_in_flight_trees_complete_then_closes_and_cleans_up() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "gspout",
        Numbers::new("spout", Setup::Ok, u64::MAX, &events),
        2,
    );
    b.set_bolt(
        "gbolt",
        Sink::new("bolt", Setup::Ok, Some(Duration::from_millis(2)), &events),
        2,
    )
    .shuffle_grouping("gspout");
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_max_spout_pending(50);
    let layout = Arc::new(TaskLayout::new(topology.spec(), 1));
    let mut rt = TopologyRuntime::start("g-1-1", &topology, &conf, layout, true).unwrap();
    // Run until trees are in flight (the slow bolt keeps the spouts at their cap).
    assert!(wait_until(Duration::from_secs(30), || {
        events.get("spout.acked") > 100 && rt.pending_trees() > 0
    }));

    rt.stop_gracefully(Duration::from_secs(60));
    let (emitted, acked) = (events.get("spout.emitted"), events.get("spout.acked"));
    assert_eq!(
        acked, emitted,
        "every tree in flight completed before the stop"
    );
    assert_eq!(events.get("spout.failed"), 0);
    assert_eq!(events.get("spout.close"), 2);
    assert_eq!(events.get("bolt.cleanup"), 2);
    assert_eq!(rt.pending_trees(), 0);
}

#[test]
fn a_graceful_stop_gives_up_after_the_grace_period() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("nspout", Numbers::new("spout", Setup::Ok, 20, &events), 1);
    // Never acks: the trees can only time out (30 s), long after the grace.
    b.set_bolt("nbolt", Sink::new("bolt", Setup::Ok, None, &events), 1)
        .shuffle_grouping("nspout");
    let topology = b.create_topology().unwrap();
    let layout = Arc::new(TaskLayout::new(topology.spec(), 1));
    let mut rt = TopologyRuntime::start("n-1-1", &topology, &Config::new(), layout, true).unwrap();
    assert!(wait_until(Duration::from_secs(30), || events
        .get("bolt.execute")
        == 20));
    assert!(wait_until(Duration::from_secs(5), || rt.pending_trees() == 20));
    rt.stop_gracefully(Duration::from_millis(300));
    assert_eq!(events.get("spout.acked"), 0);
    assert_eq!(events.get("spout.close"), 1);
    assert_eq!(events.get("bolt.cleanup"), 1);
}

/// A panic payload whose own `Drop` panics: dropping it carelessly would unwind out of
/// the runtime's guard.
struct Grenade;

impl Drop for Grenade {
    fn drop(&mut self) {
        panic!("the payload's drop panicked too");
    }
}

/// Throws a `Grenade` on every third tuple, acks the others.
#[derive(Clone)]
struct Thrower(Arc<AtomicU64>);

impl Bolt for Thrower {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if self.0.fetch_add(1, Ordering::SeqCst).is_multiple_of(3) {
            std::panic::panic_any(Grenade);
        }
        out.ack(&input);
    }
}

#[test]
fn a_panic_payload_that_panics_on_drop_does_not_kill_the_executor() {
    let events = Events::default();
    let seen = Arc::new(AtomicU64::new(0));
    let mut b = TopologyBuilder::new();
    b.set_spout("tspout", Numbers::new("spout", Setup::Ok, 30, &events), 1);
    b.set_bolt("tbolt", Thrower(seen.clone()), 1)
        .shuffle_grouping("tspout");
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, None);
    assert!(wait_until(Duration::from_secs(30), || seen
        .load(Ordering::SeqCst)
        >= 30));
    assert_eq!(rt.failed_executor(), None, "the bolt executor must survive");
    let errors = rt.errors();
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|e| e
            .error
            .contains("panicked in execute: non-string panic payload")),
        "{errors:?}"
    );
    // Failed tuples are replayed by nobody here; the thrower still processes new ones.
    rt.shutdown(Duration::from_secs(5));
}

#[derive(Clone)]
struct Complainer;

impl Bolt for Complainer {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        // Two errors per tuple.
        let n = input.get_long(0).unwrap();
        out.report_error(&format!("first complaint about {n}"));
        out.report_error(&format!("second complaint about {n}"));
        out.ack(&input);
    }
}

#[test]
fn errors_are_throttled_as_storm_throttles_reports() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("tspout", Numbers::new("spout", Setup::Ok, 12, &events), 1);
    b.set_bolt("tbolt", Complainer, 1)
        .shuffle_grouping("tspout");
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, None);
    assert!(wait_until(Duration::from_secs(30), || events
        .get("spout.acked")
        == 12));
    // 24 errors within a second: the first 5 are reported (and logged), as with
    // Storm's defaults (topology.max.error.report.per.interval 5 per 10 s).
    assert_eq!(rt.error_total(), 5);
    let kept: Vec<String> = rt.errors().into_iter().map(|e| e.error).collect();
    assert_eq!(kept[0], "first complaint about 1");
    assert_eq!(kept[4], "first complaint about 3");
    rt.shutdown(Duration::from_secs(5));
}

#[test]
fn errors_keep_their_sequence_past_the_ten_kept() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("espout", Numbers::new("spout", Setup::Ok, 12, &events), 1);
    // Storm's report throttle (5 per 10 s per executor) opened up for this test.
    b.set_bolt("ebolt", Complainer, 1)
        .shuffle_grouping("espout")
        .add_configuration("topology.max.error.report.per.interval", 1000);
    let topology = b.create_topology().unwrap();
    let mut rt = start_worker(&topology, None);
    assert!(wait_until(Duration::from_secs(30), || events
        .get("spout.acked")
        == 12));
    assert_eq!(rt.error_total(), 24);
    let kept = rt.errors();
    assert_eq!(kept.len(), 10, "the last 10 per component are kept");
    assert_eq!(
        kept.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (15..=24).collect::<Vec<_>>()
    );
    // A heartbeat that sent up to seq 20 sends exactly the last four.
    let newer = rt.errors_since(20);
    assert_eq!(newer.len(), 4);
    assert_eq!(newer[3].error, "second complaint about 12");
    rt.shutdown(Duration::from_secs(5));
}

#[test]
fn a_bad_config_is_refused_before_any_task_opens() {
    let events = Events::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("cspout", Numbers::new("spout", Setup::Ok, 10, &events), 1);
    b.set_bolt(
        "cbolt",
        Sink::new("bolt", Setup::Ok, Some(Duration::ZERO), &events),
        1,
    )
    .shuffle_grouping("cspout")
    .add_configuration(squall_api::config::keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS, 5);
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set(
        squall_api::config::keys::TOPOLOGY_BATCH_FLUSH_INTERVAL_MILLIS,
        "soon",
    );
    let cluster = LocalCluster::new();
    let err = cluster
        .submit_topology("bad-conf", &conf, &topology)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("topology.batch.flush.interval.millis"),
        "{err}"
    );
    assert_eq!(events.get("spout.setup") + events.get("bolt.setup"), 0);
    assert_eq!(threads_named("squall-c"), 0);
    // The runtime itself refuses it too, before any thread starts.
    let layout = Arc::new(TaskLayout::new(topology.spec(), 1));
    assert!(TopologyRuntime::start("x-1-1", &topology, &conf, layout, true).is_err());
    assert_eq!(events.get("spout.setup") + events.get("bolt.setup"), 0);
}
