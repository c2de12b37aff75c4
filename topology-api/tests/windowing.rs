//! Windowed bolts against a simple model: the wrapper is driven directly, tuple by
//! tuple and tick by tick with a fake clock, and after every step the windows it fired,
//! the tuples it acked and the late tuples it emitted must be exactly the model's.
//!
//! The model states Storm's rules directly, with no incremental bookkeeping: tuples
//! get an index in their final order (arrival; for event time, event-time order once
//! the watermark passes them); every trigger `(p, r)` has the window "index ≤ p and
//! (the last n | time in (r − len, r])"; a window fires when non-empty; its new tuples
//! are those not in the previous trigger's window; a tuple is acked at the first
//! trigger that leaves it out; duration triggers happen at every `origin + k·slide`
//! (the model visits every one, the wrapper skips empty stretches).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use squall_api::windowing::{Count, Span, TupleWindow, Windowed, WindowedBolt};
use squall_api::{
    values, Bolt, Config, Emit, Emitter, Fields, OutputCollector, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, StreamSchema, TaskId, TaskLayout, TopologyBuilder, TopologyContext,
    Tuple, Value,
};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Win {
    all: Vec<i64>,
    new: Vec<i64>,
    expired: Vec<i64>,
    start: Option<i64>,
    end: i64,
}

/// The windowed bolt under test: records each window and emits one unanchored tuple.
#[derive(Clone, Default)]
struct Recorder {
    windows: Arc<Mutex<Vec<Win>>>,
}

fn ids(tuples: &[Tuple]) -> Vec<i64> {
    tuples.iter().map(|t| t.get_long(0).unwrap()).collect()
}

impl WindowedBolt for Recorder {
    fn execute(&mut self, w: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        self.windows.lock().unwrap().push(Win {
            all: ids(w.get()),
            new: ids(w.get_new()),
            expired: ids(w.get_expired()),
            start: w.start_timestamp(),
            end: w.end_timestamp(),
        });
        out.emit(values![w.get().len() as i64]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// Records what the wrapper does with its collector.
#[derive(Default)]
struct Rec {
    acks: Vec<i64>,
    fails: Vec<i64>,
    /// (stream, values, anchor ids)
    emits: Vec<(String, Vec<Value>, Vec<i64>)>,
    errors: Vec<String>,
}

impl Emitter for Rec {
    fn emit(&mut self, emit: Emit<'_>, _task_ids: Option<&mut Vec<TaskId>>) {
        let anchors = emit
            .anchors
            .iter()
            .map(|t| t.get_long(0).unwrap())
            .collect();
        self.emits
            .push((emit.stream.to_owned(), emit.values.to_vec(), anchors));
    }
    fn ack(&mut self, input: &Tuple) {
        self.acks.push(input.get_long(0).unwrap());
    }
    fn fail(&mut self, input: &Tuple) {
        self.fails.push(input.get_long(0).unwrap());
    }
    fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.errors.push(error.to_string());
    }
}

#[derive(Clone)]
struct Src;
impl Spout for Src {
    fn next_tuple(&mut self, _out: &mut SpoutOutputCollector<'_>) {}
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id", "ts"]);
    }
}

/// A wrapper under test, prepared as task of component "win" subscribed to `sources`
/// tasks of "src".
struct Harness {
    bolt: Windowed<Recorder>,
    windows: Arc<Mutex<Vec<Win>>>,
    clock: Arc<AtomicI64>,
    schema: Arc<StreamSchema>,
    tick: Arc<StreamSchema>,
    src_tasks: Vec<TaskId>,
    rec: Rec,
}

impl Harness {
    fn new(
        sources: u32,
        start: i64,
        configure: impl FnOnce(Windowed<Recorder>) -> Windowed<Recorder>,
    ) -> Harness {
        let recorder = Recorder::default();
        let windows = recorder.windows.clone();
        let clock = Arc::new(AtomicI64::new(start));
        let c = clock.clone();
        let bolt = configure(Windowed::new(recorder).with_clock(move || c.load(Ordering::SeqCst)));
        let mut builder = TopologyBuilder::new();
        builder.set_spout("src", Src, sources);
        builder
            .set_bolt("win", bolt.clone(), 1)
            .shuffle_grouping("src");
        let topology = builder.create_topology().unwrap();
        let spec = topology.spec().clone();
        let layout = TaskLayout::new(&spec, 0);
        let task = layout.component_tasks("win")[0];
        let src_tasks = layout.component_tasks("src").to_vec();
        let conf = spec.components["win"].conf.clone();
        let ctx = TopologyContext::new(
            "t-1".into(),
            Arc::new(spec),
            Arc::new(layout),
            task,
            Arc::from(vec![task]),
            None,
        );
        let mut bolt = bolt;
        bolt.prepare(&conf, &ctx).unwrap();
        Harness {
            bolt,
            windows,
            clock,
            schema: Arc::new(StreamSchema {
                component: "src".into(),
                stream: "default".into(),
                fields: Fields::new(["id", "ts"]),
                direct: false,
                index: 0,
            }),
            tick: Arc::new(StreamSchema::tick()),
            src_tasks,
            rec: Rec::default(),
        }
    }

    fn set_clock(&self, now: i64) {
        self.clock.store(now, Ordering::SeqCst);
    }

    fn tuple(&mut self, source: usize, id: i64, ts: i64) {
        let t = Tuple::new(self.schema.clone(), self.src_tasks[source], values![id, ts]);
        self.bolt
            .execute(t, &mut OutputCollector::new(&mut self.rec));
    }

    fn tick(&mut self) {
        let t = Tuple::tick(self.tick.clone(), 0);
        self.bolt
            .execute(t, &mut OutputCollector::new(&mut self.rec));
    }

    /// What happened since the last call: windows, acks (sorted), late tuple ids.
    fn take(&mut self) -> (Vec<Win>, Vec<i64>, Vec<i64>) {
        let windows = std::mem::take(&mut *self.windows.lock().unwrap());
        let mut acks = std::mem::take(&mut self.rec.acks);
        acks.sort();
        let emits = std::mem::take(&mut self.rec.emits);
        let mut late = Vec::new();
        let mut results = Vec::new();
        for (stream, values, anchors) in emits {
            if stream == "late" {
                let Value::List(l) = &values[0] else {
                    panic!("late_tuple is not a list: {values:?}")
                };
                assert_eq!(
                    anchors,
                    vec![l[0].as_i64().unwrap()],
                    "late emit anchored to it"
                );
                late.push(l[0].as_i64().unwrap());
            } else {
                results.push(anchors);
            }
        }
        // Each window's output is anchored to exactly the window's tuples.
        assert_eq!(
            results,
            windows.iter().map(|w| w.all.clone()).collect::<Vec<_>>(),
            "output anchors"
        );
        assert!(
            self.rec.fails.is_empty() && self.rec.errors.is_empty(),
            "{:?}",
            self.rec.errors
        );
        (windows, acks, late)
    }
}

/// The model.
struct Model {
    length: Span,
    slide: Span,
    /// Final tuples (id, time), index = position + 1.
    finals: Vec<(i64, i64)>,
    evicted: BTreeSet<i64>,
    prev_window: BTreeSet<i64>,
    expired_since: Vec<i64>,
    /// Duration triggers: the last reference time visited.
    last_r: i64,
    out: (Vec<Win>, Vec<i64>, Vec<i64>),
}

impl Model {
    fn new(length: Span, slide: Span, origin: i64) -> Model {
        Model {
            length,
            slide,
            finals: Vec::new(),
            evicted: BTreeSet::new(),
            prev_window: BTreeSet::new(),
            expired_since: Vec::new(),
            last_r: origin,
            out: Default::default(),
        }
    }

    fn in_window(&self, idx: u64, time: i64, p: u64, r: i64) -> bool {
        idx <= p
            && match self.length {
                Span::Count(n) => idx + n > p,
                Span::Millis(l) => time > r - l as i64,
            }
    }

    fn trigger(&mut self, p: u64, r: i64) {
        let mut window = Vec::new();
        for (i, &(id, time)) in self.finals.iter().enumerate() {
            let idx = i as u64 + 1;
            if idx > p {
                break;
            }
            if self.in_window(idx, time, p, r) {
                assert!(!self.evicted.contains(&id), "windows only slide forward");
                window.push(id);
            } else if self.evicted.insert(id) {
                self.expired_since.push(id);
                self.out.1.push(id);
            }
        }
        if !window.is_empty() {
            let new = window
                .iter()
                .copied()
                .filter(|id| !self.prev_window.contains(id))
                .collect();
            self.out.0.push(Win {
                all: window.clone(),
                new,
                expired: std::mem::take(&mut self.expired_since),
                start: match self.length {
                    Span::Millis(l) => Some(r - l as i64),
                    Span::Count(_) => None,
                },
                end: r,
            });
        }
        self.prev_window = window.into_iter().collect();
    }

    /// A final tuple; count slides trigger on it (reference `now`, or its own time).
    fn push(&mut self, id: i64, time: i64, now: Option<i64>) {
        self.finals.push((id, time));
        let p = self.finals.len() as u64;
        if let Span::Count(s) = self.slide {
            if p.is_multiple_of(s) {
                self.trigger(p, now.unwrap_or(time));
            }
        }
    }

    /// Every duration trigger with reference time ≤ horizon.
    fn advance(&mut self, horizon: i64) {
        let Span::Millis(s) = self.slide else { return };
        let s = s as i64;
        while self.last_r + s <= horizon {
            let r = self.last_r + s;
            let p = self.finals.iter().filter(|&&(_, t)| t <= r).count() as u64;
            self.trigger(p, r);
            self.last_r = r;
        }
    }

    fn take(&mut self) -> (Vec<Win>, Vec<i64>, Vec<i64>) {
        let mut out = std::mem::take(&mut self.out);
        out.1.sort();
        out
    }
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        (1u64..7).prop_map(Span::Count),
        (10u64..120).prop_map(Span::Millis),
    ]
}

/// The window through the user's API: `Count` / `Duration`, tumbling or sliding.
fn configure(
    length: Span,
    slide: Span,
    tumbling: bool,
) -> impl FnOnce(Windowed<Recorder>) -> Windowed<Recorder> {
    move |w: Windowed<Recorder>| match (tumbling, length, slide) {
        (true, Span::Count(n), _) => w.with_tumbling_window(Count(n)),
        (true, Span::Millis(ms), _) => w.with_tumbling_window(Duration::from_millis(ms)),
        (false, Span::Count(l), Span::Count(s)) => w.with_window(Count(l), Count(s)),
        (false, Span::Count(l), Span::Millis(s)) => {
            w.with_window(Count(l), Duration::from_millis(s))
        }
        (false, Span::Millis(l), Span::Count(s)) => {
            w.with_window(Duration::from_millis(l), Count(s))
        }
        (false, Span::Millis(l), Span::Millis(s)) => {
            w.with_window(Duration::from_millis(l), Duration::from_millis(s))
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// The clock advances, then a tuple arrives (event time: from a source, with an
    /// offset from the event clock).
    Tuple {
        advance: i64,
        source: usize,
        offset: i64,
    },
    /// The clock advances, then a tick.
    Tick { advance: i64 },
}

fn ops(sources: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0i64..30, 0..sources, -150i64..20).prop_map(|(advance, source, offset)| Op::Tuple { advance, source, offset }),
            1 => (0i64..120).prop_map(|advance| Op::Tick { advance }),
        ],
        1..120,
    )
}

const START: i64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Processing time: count and duration, sliding and tumbling, every combination.
    #[test]
    fn processing_time_matches_model(
        length in span(),
        slide in span(),
        tumbling in any::<bool>(),
        ops in ops(1),
    ) {
        let slide = if tumbling { length } else { slide };
        let mut h = Harness::new(1, START, configure(length, slide, tumbling));
        let mut m = Model::new(length, slide, START);
        let mut now = START;
        for (id, op) in ops.iter().enumerate() {
            let id = id as i64;
            match *op {
                Op::Tuple { advance, .. } => {
                    now += advance;
                    h.set_clock(now);
                    h.tuple(0, id, 0);
                    m.advance(now - 1);
                    m.push(id, now, Some(now));
                }
                Op::Tick { advance } => {
                    now += advance;
                    h.set_clock(now);
                    h.tick();
                    m.advance(now - 1);
                }
            }
            prop_assert_eq!(h.take(), m.take(), "after op {} {:?}", id, op);
        }
    }

    /// Event time from three sources, out of order within and beyond the lag: windows,
    /// acks and late tuples match the model, whose watermark is the minimum over the
    /// sources of their latest time minus the lag.
    #[test]
    fn event_time_matches_model(
        length in span(),
        slide in span(),
        tumbling in any::<bool>(),
        lag in (0i64..6).prop_map(|l| l * 10),
        interval in 1i64..100,
        ops in ops(3),
    ) {
        let slide = if tumbling { length } else { slide };
        let mut h = Harness::new(3, START, |w| {
            configure(length, slide, tumbling)(w)
                .with_timestamp_field("ts")
                .with_lag(Duration::from_millis(lag as u64))
                .with_watermark_interval(Duration::from_millis(interval as u64))
                .with_late_tuple_stream("late")
        });
        let mut m = Model::new(length, slide, 0);
        let mut latest: BTreeMap<usize, i64> = BTreeMap::new();
        let mut watermark: Option<i64> = None;
        let mut next_at: Option<i64> = None;
        let mut pending: Vec<(i64, i64)> = Vec::new(); // (time, id); id is arrival order
        let mut now = START;
        let mut event_clock = 1000i64;
        for (id, op) in ops.iter().enumerate() {
            let id = id as i64;
            match *op {
                Op::Tuple { advance, source, offset } => {
                    now += advance;
                    event_clock += advance;
                    // Coarse times, so ties and times right at the watermark happen.
                    let ts = ((event_clock + offset) / 10 * 10).max(10);
                    h.set_clock(now);
                    h.tuple(source, id, ts);
                    let l = latest.entry(source).or_insert(ts);
                    *l = (*l).max(ts);
                    if watermark.is_some_and(|w| ts <= w) {
                        m.out.1.push(id);
                        m.out.2.push(id);
                    } else {
                        pending.push((ts, id));
                    }
                }
                Op::Tick { advance } => {
                    now += advance;
                    h.set_clock(now);
                    h.tick();
                    let due = match next_at {
                        None => { next_at = Some(now + interval); false }
                        Some(at) if now >= at => { next_at = Some(now + interval); true }
                        Some(_) => false,
                    };
                    if due && latest.len() == 3 {
                        let candidate = latest.values().min().unwrap() - lag;
                        if watermark.is_none_or(|w| candidate > w) {
                            watermark = Some(candidate);
                            pending.sort();
                            let ready: Vec<_> = pending.iter().copied().filter(|&(t, _)| t <= candidate).collect();
                            pending.retain(|&(t, _)| t > candidate);
                            for (t, id) in ready {
                                m.push(id, t, None);
                            }
                            m.advance(candidate);
                        }
                    }
                }
            }
            let (got, want) = (h.take(), m.take());
            prop_assert_eq!(got, want, "after op {} {:?}", id, op);
            prop_assert_eq!(h.bolt.watermark(), watermark);
        }
    }
}

/// Every tuple lands in exactly the windows it belongs to: a tumbling window puts each
/// tuple in exactly one, a sliding duration window in `length / slide` (once the stream
/// runs), and each tuple is acked exactly once, after its last window.
#[test]
fn each_tuple_in_its_windows_and_acked_once() {
    let mut h = Harness::new(1, START, |w| {
        w.with_window(Duration::from_millis(300), Duration::from_millis(100))
    });
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut acked = Vec::new();
    for i in 0..100 {
        h.set_clock(START + 10 * i + 5);
        h.tuple(0, i, 0);
        let (wins, acks, _) = h.take();
        for w in wins {
            for id in w.all {
                *seen.entry(id).or_default() += 1;
                assert!(
                    !acked.contains(&id),
                    "tuple {id} is in a window after its ack"
                );
            }
        }
        acked.extend(acks);
    }
    h.set_clock(START + 2000);
    h.tick();
    let (wins, acks, _) = h.take();
    for w in wins {
        for id in w.all {
            *seen.entry(id).or_default() += 1;
        }
    }
    acked.extend(acks);
    acked.sort();
    assert_eq!(
        acked,
        (0..100).collect::<Vec<_>>(),
        "every tuple acked once"
    );
    assert!(seen.values().all(|&n| n == 3), "{seen:?}");
    assert_eq!(h.bolt.held(), 0);
}

/// One lagging upstream task holds the watermark: no window closes before its tuples
/// arrive, and they land in their windows instead of the late stream.
#[test]
fn lagging_source_holds_windows_open() {
    let mut h = Harness::new(2, START, |w| {
        w.with_tumbling_window(Duration::from_millis(100))
            .with_timestamp_field("ts")
            .with_watermark_interval(Duration::from_millis(10))
            .with_late_tuple_stream("late")
    });
    h.tick();
    // Source 0 races ahead to t=1000; source 1 is still at t=50.
    for i in 0..10 {
        h.tuple(0, i, 100 * i + 50);
    }
    h.tuple(1, 100, 50);
    for step in 1..5 {
        h.set_clock(START + 20 * step);
        h.tick();
    }
    let (wins, _, late) = h.take();
    assert_eq!(h.bolt.watermark(), Some(50));
    assert!(late.is_empty());
    assert_eq!(wins.len(), 0, "the window (0, 100] is still open: {wins:?}");
    // The lagging source catches up; its tuples are in time.
    h.tuple(1, 101, 60);
    h.tuple(1, 102, 200);
    h.set_clock(START + 200);
    h.tick();
    let (wins, _, late) = h.take();
    assert!(late.is_empty());
    assert_eq!(wins.len(), 2, "{wins:?}");
    assert_eq!(wins[0].all, vec![0, 100, 101]);
    assert_eq!(wins[1].all, vec![1, 102]);
    assert_eq!(h.bolt.watermark(), Some(200));
    // Now a tuple at or before the watermark is late.
    h.tuple(1, 103, 200);
    assert_eq!(h.take().2, vec![103]);
}

/// A bad event time fails the tuple with an error naming the bolt.
#[test]
fn missing_timestamp_fails_the_tuple() {
    let mut h = Harness::new(1, START, |w| {
        w.with_tumbling_window(Count(2))
            .with_timestamp_extractor(|t| {
                let ts = t.get_long(1)?;
                if ts < 0 {
                    return Err(format!("negative time {ts}").into());
                }
                Ok(ts)
            })
    });
    h.tuple(0, 7, -5);
    assert_eq!(h.rec.fails, vec![7]);
    assert!(
        h.rec.errors[0].contains("windowed bolt 'win'"),
        "{:?}",
        h.rec.errors
    );
    assert!(
        h.rec.errors[0].contains("negative time -5"),
        "{:?}",
        h.rec.errors
    );
}

/// Settings are stored under Storm's keys, with sub-second ticks for the wrapper.
#[test]
fn settings_use_storms_keys() {
    let w = Windowed::new(Recorder::default())
        .with_window(Duration::from_secs(10), Count(5))
        .with_timestamp_field("ts")
        .with_lag(Duration::from_millis(500))
        .with_watermark_interval(Duration::from_millis(200))
        .with_late_tuple_stream("late");
    let conf: Config = Bolt::component_configuration(&w);
    let get = |k: &str| conf.get(k).cloned();
    assert_eq!(
        get("topology.bolts.window.length.duration.ms"),
        Some(Value::Int(10_000))
    );
    assert_eq!(
        get("topology.bolts.sliding.interval.count"),
        Some(Value::Int(5))
    );
    assert_eq!(
        get("topology.bolts.window.timestamp.field.name"),
        Some(Value::from("ts"))
    );
    assert_eq!(
        get("topology.bolts.tuple.timestamp.max.lag.ms"),
        Some(Value::Int(500))
    );
    assert_eq!(
        get("topology.bolts.watermark.event.interval.ms"),
        Some(Value::Int(200))
    );
    assert_eq!(
        get("topology.bolts.late.tuple.stream"),
        Some(Value::from("late"))
    );
    assert_eq!(get("squall.tick.tuple.freq.ms"), Some(Value::Int(200)));
    let mut d = OutputFieldsDeclarer::default();
    Bolt::declare_output_fields(&w, &mut d);
    assert_eq!(
        d.streams()["late"].fields,
        Fields::new(["late_tuple", "timestamp", "source_component"])
    );
}
