//! Windowed bolts in local mode: event-time windows over three spout tasks, one of them
//! lagging, close only once the lagging task's events are in; late tuples reach the
//! late stream; every tuple is acked once it left its window; invalid window settings
//! are refused when the topology is built or submitted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::windowing::{Count, TupleWindow, Windowed, WindowedBolt};
use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyBuilder, TopologyContext, Tuple,
    Value,
};
use squall_worker::LocalCluster;

/// Events per spout task, 10 ms of event time apart.
const EVENTS: i64 = 50;
const BASE: i64 = 1_000_000;

/// Emits `EVENTS` tracked events with times `BASE + 10·n`, then one far-future event
/// that moves the watermark past them. Task 0 lags: after its first event it pauses for
/// 600 ms, while the others send everything. Task 1 sends one late event (at `BASE +
/// 50`) 1.5 s after it started, when every window up to the far-future events closed.
#[derive(Clone, Default)]
struct Events {
    index: usize,
    next: i64,
    started: Option<Instant>,
    late_sent: bool,
    acked: Arc<AtomicU64>,
}

impl Spout for Events {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.index = ctx.this_task_index();
        self.next = 1;
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.index == 0 && self.next == 2 && started.elapsed() < Duration::from_millis(600) {
            std::thread::sleep(Duration::from_millis(5));
            return;
        }
        let id = self.index as i64 * 1000 + self.next;
        if self.next <= EVENTS {
            out.emit_with_id(values![id, BASE + 10 * self.next], id);
            self.next += 1;
        } else if self.next == EVENTS + 1 {
            out.emit_with_id(values![id, BASE + 100_005], id);
            self.next += 1;
        } else if self.index == 1
            && !self.late_sent
            && started.elapsed() > Duration::from_millis(1500)
        {
            self.late_sent = true;
            out.emit_with_id(values![id, BASE + 50], id);
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn ack(&mut self, _msg_id: Value) {
        self.acked.fetch_add(1, Ordering::SeqCst);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id", "ts"]);
    }
}

/// Emits each window's end and size.
#[derive(Clone, Default)]
struct Sizes;

impl WindowedBolt for Sizes {
    fn execute(&mut self, w: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        out.emit(values![w.end_timestamp(), w.get().len() as i64]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["end", "size"]);
    }
}

/// Collects what it receives, by stream.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Received>>>);

/// A received tuple: its stream and values.
type Received = (String, Vec<Value>);

impl BasicBolt for Collect {
    fn execute(
        &mut self,
        t: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap()
            .push((t.source_stream().to_owned(), t.values().to_vec()));
        Ok(())
    }
}

#[test]
fn lagging_task_holds_event_time_windows_open() {
    let acked = Arc::new(AtomicU64::new(0));
    let got = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "events",
        Events {
            acked: acked.clone(),
            ..Events::default()
        },
        3,
    );
    b.set_bolt(
        "windows",
        Windowed::new(Sizes)
            .with_tumbling_window(Duration::from_millis(100))
            .with_timestamp_field("ts")
            .with_watermark_interval(Duration::from_millis(20))
            .with_late_tuple_stream("late"),
        1,
    )
    .shuffle_grouping("events");
    b.set_bolt("collect", got.clone(), 1)
        .shuffle_grouping("windows")
        .shuffle_grouping(("windows", "late"));
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("windows", &Config::new(), &topology)
        .unwrap();

    // Every event but the far-future ones (held in their open window) is acked, and the
    // late one too.
    let want_acked = 3 * EVENTS as u64 + 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < want_acked && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    cluster.kill_topology("windows").unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), want_acked);

    let got = got.0.lock().unwrap().clone();
    let windows: Vec<(i64, i64)> = got
        .iter()
        .filter(|(s, _)| s == "default")
        .map(|(_, v)| (v[0].as_i64().unwrap(), v[1].as_i64().unwrap()))
        .collect();
    // Five windows of 100 ms, each with 10 events from each of the three tasks: none
    // closed before the lagging task's events arrived.
    let want: Vec<(i64, i64)> = (1..=5).map(|k| (BASE + 100 * k, 30)).collect();
    assert_eq!(windows, want);
    let late: Vec<&Vec<Value>> = got
        .iter()
        .filter(|(s, _)| s == "late")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(
        late[0],
        &vec![
            Value::List(vec![Value::Int(1000 + EVENTS + 2), Value::Int(BASE + 50)]),
            Value::Int(BASE + 50),
            Value::from("events"),
        ]
    );
}

/// A sliding count window in processing time through the runtime: every tuple acked.
#[test]
fn count_window_acks_every_tuple_in_local_mode() {
    let acked = Arc::new(AtomicU64::new(0));
    let got = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "events",
        Events {
            acked: acked.clone(),
            ..Events::default()
        },
        1,
    );
    b.set_bolt(
        "windows",
        Windowed::new(Sizes).with_window(Count(10), Count(5)),
        1,
    )
    .shuffle_grouping("events");
    b.set_bolt("collect", got.clone(), 1)
        .shuffle_grouping("windows");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("counts", &Config::new(), &topology)
        .unwrap();
    // 51 tuples: windows every 5 tuples; the last 11 are still held (not acked).
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    cluster.kill_topology("counts").unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 40);
    let sizes: Vec<i64> = got
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, v)| v[1].as_i64().unwrap())
        .collect();
    assert_eq!(sizes, vec![5, 10, 10, 10, 10, 10, 10, 10, 10, 10]);
}

fn refused(conf: &Config, bolt: Windowed<Sizes>) -> String {
    let mut b = TopologyBuilder::new();
    b.set_spout("events", Events::default(), 1);
    b.set_bolt("windows", bolt, 1).shuffle_grouping("events");
    let topology = match b.create_topology() {
        Ok(t) => t,
        Err(e) => return e.to_string(),
    };
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("bad", conf, &topology)
        .expect_err("an invalid window must be refused")
        .to_string()
}

#[test]
fn invalid_windows_are_refused_naming_the_bolt() {
    // Length + slide not below the message timeout (default 30 s).
    let e = refused(
        &Config::new(),
        Windowed::new(Sizes).with_window(Duration::from_secs(25), Duration::from_secs(5)),
    );
    assert!(e.contains("component 'windows'"), "{e}");
    assert!(e.contains("30000 ms") || e.contains("is 30000 ms"), "{e}");
    assert!(e.contains("topology.message.timeout.secs"), "{e}");
    // ... fine with a longer timeout.
    let mut conf = Config::new();
    conf.set_message_timeout_secs(31);
    let mut b = TopologyBuilder::new();
    b.set_spout("events", Events::default(), 1);
    b.set_bolt(
        "windows",
        Windowed::new(Sizes).with_window(Duration::from_secs(25), Duration::from_secs(5)),
        1,
    )
    .shuffle_grouping("events");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("ok", &conf, &b.create_topology().unwrap())
        .unwrap();
    cluster.kill_topology("ok").unwrap();

    // A count window larger than max spout pending.
    let mut conf = Config::new();
    conf.set_max_spout_pending(12);
    let e = refused(&conf, Windowed::new(Sizes).with_window(Count(10), Count(5)));
    assert!(e.contains("component 'windows'"), "{e}");
    assert!(e.contains("topology.max.spout.pending"), "{e}");
    assert!(e.contains("15 tuples"), "{e}");

    // Zero length or slide: refused by create_topology.
    let e = refused(
        &Config::new(),
        Windowed::new(Sizes).with_tumbling_window(Count(0)),
    );
    assert!(
        e.contains("component 'windows'") && e.contains("is 0"),
        "{e}"
    );
    let e = refused(
        &Config::new(),
        Windowed::new(Sizes).with_window(Duration::from_secs(1), Duration::ZERO),
    );
    assert!(e.contains("sliding interval") && e.contains("is 0"), "{e}");
    // No window at all.
    let e = refused(&Config::new(), Windowed::new(Sizes));
    assert!(e.contains("window length is not set"), "{e}");
    // A late stream without event time.
    let e = refused(
        &Config::new(),
        Windowed::new(Sizes)
            .with_tumbling_window(Count(5))
            .with_late_tuple_stream("late"),
    );
    assert!(e.contains("late tuple stream needs event time"), "{e}");
    // A timestamp field the input does not have: refused when the task prepares.
    let e = refused(
        &Config::new(),
        Windowed::new(Sizes)
            .with_tumbling_window(Count(5))
            .with_timestamp_field("time"),
    );
    assert!(
        e.contains("field 'time'") && e.contains("events:default"),
        "{e}"
    );
}
