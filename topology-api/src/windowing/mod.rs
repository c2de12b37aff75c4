//! Windowed bolts (Storm's `BaseWindowedBolt` / `IWindowedBolt`).
//!
//! A [`WindowedBolt`] processes a [`TupleWindow`] at a time instead of single tuples.
//! Wrap it in [`Windowed`], say how long the windows are and how far they slide, and
//! add it to a topology like any bolt:
//!
//! ```
//! use std::time::Duration;
//! use squall_api::windowing::{Count, TupleWindow, Windowed, WindowedBolt};
//! use squall_api::{values, OutputCollector, OutputFieldsDeclarer, Spout,
//!     SpoutOutputCollector, TopologyBuilder};
//! # #[derive(Clone)] struct Words;
//! # impl Spout for Words {
//! #     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {}
//! #     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["word"]); }
//! # }
//! #[derive(Clone, Default)]
//! struct Tally;
//! impl WindowedBolt for Tally {
//!     fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
//!         // Anchored to every tuple of the window, as in Storm.
//!         out.emit(values![window.get().len() as i64, window.get_new().len() as i64]);
//!     }
//!     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
//!         d.declare(["in_window", "new"]);
//!     }
//! }
//!
//! let mut builder = TopologyBuilder::new();
//! builder.set_spout("words", Words, 1);
//! // The last 10 tuples, every 5 tuples (Storm: withWindow(Count.of(10), Count.of(5))).
//! builder.set_bolt("count10", Windowed::new(Tally).with_window(Count(10), Count(5)), 1)
//!     .shuffle_grouping("words");
//! // The last 10 seconds, every second.
//! builder.set_bolt("last10s", Windowed::new(Tally)
//!         .with_window(Duration::from_secs(10), Duration::from_secs(1)), 1)
//!     .shuffle_grouping("words");
//! builder.create_topology().unwrap();
//! ```
//!
//! **Time.** Windows are in processing time (when a tuple reached the bolt) unless
//! [`with_timestamp_field`](Windowed::with_timestamp_field) or
//! [`with_timestamp_extractor`](Windowed::with_timestamp_extractor) gives event times
//! (milliseconds). Then a window fires once the bolt's *watermark* passes its end. The
//! watermark is computed every [`with_watermark_interval`](Windowed::with_watermark_interval)
//! (default 1 s) as the minimum, over the bolt's input tasks (every task of every
//! component it subscribes to), of the latest event time each sent minus the
//! [`with_lag`](Windowed::with_lag) (default 0): one slow upstream task holds every
//! window open until its tuples arrive. It waits until every input task has sent at
//! least one tuple, so an input task that never sends to this task (a fields grouping
//! with few keys) holds it back. A tuple at or before the watermark is *late*: it goes
//! to the [`with_late_tuple_stream`](Windowed::with_late_tuple_stream) stream when one
//! is set (fields `late_tuple`: its values as a list, `timestamp`, `source_component`),
//! and is dropped otherwise; either way it is acked.
//!
//! **Windows.** A count length keeps the last `n` tuples, a duration length the tuples
//! of the last `d` (times in `(end − d, end]`). A count slide fires every `n` tuples, a
//! duration slide every `d` (processing time: from the task's start; event time: at
//! multiples of `d` since the epoch). Empty windows do not fire. Duration windows of
//! event time hold the tuples in event-time order; count windows of event time count
//! tuples in event-time order once the watermark has passed them.
//!
//! **Acking.** The wrapper acks a tuple as soon as it has left every window it belongs
//! to (Storm's rule), so `topology.message.timeout.secs` must exceed window length +
//! sliding interval: the topology is refused otherwise, as is a count window larger
//! than `topology.max.spout.pending`. Output emitted without anchors in `execute` is
//! anchored to every tuple of the window, as Storm does; `ack` on the collector does
//! nothing (the wrapper acks), `fail` fails the tuple's tree.
//!
//! **Ticks.** Duration slides and watermarks run on tick tuples every
//! `squall.tick.tuple.freq.ms`, which the wrapper sets in its component configuration;
//! ticks reach the wrapper, never the windowed bolt.
//!
//! Settings live in the component configuration under Storm's keys
//! (`topology.bolts.window.length.count`, `topology.bolts.window.length.duration.ms`,
//! `topology.bolts.sliding.interval.count`, `topology.bolts.sliding.interval.duration.ms`,
//! `topology.bolts.window.timestamp.field.name`, `topology.bolts.tuple.timestamp.max.lag.ms`,
//! `topology.bolts.watermark.event.interval.ms`, `topology.bolts.late.tuple.stream`).

mod manager;
pub(crate) mod persist;
mod settings;
mod watermark;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::component::{Bolt, BoxError, Emit, Emitter, OutputCollector, OutputFieldsDeclarer};
use crate::config::{keys, Config};
use crate::context::TopologyContext;
use crate::ids::TaskId;
use crate::tuple::Tuple;
use crate::value::{Value, Values};

use manager::{Activation, Sink, WindowManager};
pub(crate) use settings::check_component;
pub use settings::{Count, Span};
use settings::{Settings, TimestampSource};
use watermark::WatermarkTracker;

/// The fields of a late tuple stream: the late tuple's values (a list), its event time
/// and the component that sent it.
pub const LATE_TUPLE_FIELDS: [&str; 3] = ["late_tuple", "timestamp", "source_component"];

/// A bolt that processes windows of tuples (Storm's `IWindowedBolt`). Only `execute` is
/// required; wrap it in [`Windowed`] to add it to a topology.
pub trait WindowedBolt: Send + 'static {
    /// Called once when the task starts; an `Err` is handled as for [`Bolt::prepare`].
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one window. Emits without anchors are anchored to every tuple of the
    /// window; the wrapper acks the tuples when they leave their last window.
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>);

    /// Called when the task shuts down cleanly.
    fn cleanup(&mut self) {}

    /// Declares the bolt's output streams (the late tuple stream is declared by the
    /// wrapper).
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration; the wrapper's window settings are merged over
    /// it.
    fn component_configuration(&self) -> Config {
        Config::new()
    }

    /// Whether the bolt only works with persistent windows (a stateful windowed bolt).
    #[doc(hidden)]
    fn needs_persistence(&self) -> bool {
        false
    }
}

/// One window of tuples (Storm's `TupleWindow`).
#[derive(Clone, Copy, Debug)]
pub struct TupleWindow<'a> {
    tuples: &'a [Tuple],
    new_from: usize,
    expired: &'a [Tuple],
    start: Option<i64>,
    end: i64,
}

impl<'a> TupleWindow<'a> {
    /// Every tuple in the window, oldest first (event-time order for event time).
    pub fn get(&self) -> &'a [Tuple] {
        self.tuples
    }

    /// The tuples that were not in the previous window.
    pub fn get_new(&self) -> &'a [Tuple] {
        &self.tuples[self.new_from..]
    }

    /// The tuples that left the window since the previous one fired (already acked).
    pub fn get_expired(&self) -> &'a [Tuple] {
        self.expired
    }

    /// Start of a duration window, exclusive, in ms since the epoch (`None` for count
    /// windows, as in Storm).
    pub fn start_timestamp(&self) -> Option<i64> {
        self.start
    }

    /// The window's end (its trigger's reference time), inclusive, in ms since the
    /// epoch: a duration window's end, or when a count window fired (processing time)
    /// or the event time of its last tuple (event time).
    pub fn end_timestamp(&self) -> i64 {
        self.end
    }
}

/// Extracts a tuple's event time in milliseconds (Storm's `TimestampExtractor`).
pub type TimestampExtractor = Arc<dyn Fn(&Tuple) -> Result<i64, BoxError> + Send + Sync>;

/// The clock of processing time, in ms since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A [`WindowedBolt`] made into a [`Bolt`] (Storm's `WindowedBoltExecutor`, configured
/// with `BaseWindowedBolt`'s `with*` methods). See the [module docs](self).
pub struct Windowed<B> {
    bolt: B,
    conf: Config,
    extractor: Option<TimestampExtractor>,
    clock: Clock,
    run: Option<Running>,
    /// Persistent windows (a stateful windowed bolt): the window holds detached copies
    /// of its tuples, checkpointed with the state; see [`persist`].
    pub(crate) persistent: bool,
}

impl<B: Clone> Clone for Windowed<B> {
    /// A copy with the same settings and no windows (each task starts empty).
    fn clone(&self) -> Self {
        Windowed {
            bolt: self.bolt.clone(),
            conf: self.conf.clone(),
            extractor: self.extractor.clone(),
            clock: self.clock.clone(),
            run: None,
            persistent: self.persistent,
        }
    }
}

impl<B> std::fmt::Debug for Windowed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windowed")
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

fn set_span(conf: &mut Config, span: Span, count_key: &str, ms_key: &str) {
    conf.remove(count_key);
    conf.remove(ms_key);
    match span {
        Span::Count(n) => conf.set(count_key, n.min(i64::MAX as u64) as i64),
        Span::Millis(ms) => conf.set(ms_key, ms.min(i64::MAX as u64) as i64),
    };
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl<B: WindowedBolt> Windowed<B> {
    /// Wraps `bolt`; set its window with one of the `with_*window*` methods.
    pub fn new(bolt: B) -> Self {
        Windowed {
            bolt,
            conf: Config::new(),
            extractor: None,
            clock: Arc::new(system_clock),
            run: None,
            persistent: false,
        }
    }

    fn set_length(&mut self, length: Span) {
        set_span(
            &mut self.conf,
            length,
            keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT,
            keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS,
        );
    }

    fn set_slide(&mut self, slide: Option<Span>) {
        self.conf
            .remove(keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_COUNT);
        self.conf
            .remove(keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_DURATION_MS);
        if let Some(slide) = slide {
            set_span(
                &mut self.conf,
                slide,
                keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_COUNT,
                keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_DURATION_MS,
            );
        }
    }

    /// A sliding window of `length` that fires every `slide`; each is a [`Count`] or a
    /// [`Duration`] (Storm's `withWindow(length, slidingInterval)`, any combination).
    pub fn with_window(mut self, length: impl Into<Span>, slide: impl Into<Span>) -> Self {
        self.set_length(length.into());
        self.set_slide(Some(slide.into()));
        self
    }

    /// A window of `length` that slides with every tuple (Storm's `withWindow(length)`).
    pub fn with_window_length(mut self, length: impl Into<Span>) -> Self {
        self.set_length(length.into());
        self.set_slide(None);
        self
    }

    /// A tumbling window: each tuple is in exactly one window (Storm's
    /// `withTumblingWindow`).
    pub fn with_tumbling_window(mut self, length: impl Into<Span>) -> Self {
        let length = length.into();
        self.set_length(length);
        self.set_slide(Some(length));
        self
    }

    /// Event time from field `name` (an integer, ms since the epoch) of every input
    /// stream (Storm's `withTimestampField`).
    pub fn with_timestamp_field(mut self, name: &str) -> Self {
        self.extractor = None;
        self.conf
            .remove(keys::SQUALL_BOLTS_WINDOW_TIMESTAMP_EXTRACTOR);
        self.conf
            .set(keys::TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME, name);
        self
    }

    /// Event time from `extract` (ms since the epoch; Storm's
    /// `withTimestampExtractor`). An `Err` fails the tuple and is reported.
    pub fn with_timestamp_extractor(
        mut self,
        extract: impl Fn(&Tuple) -> Result<i64, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.extractor = Some(Arc::new(extract));
        self.conf
            .remove(keys::TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME);
        self.conf
            .set(keys::SQUALL_BOLTS_WINDOW_TIMESTAMP_EXTRACTOR, "custom");
        self
    }

    /// How far event times may be out of order: the watermark trails the latest event
    /// time by `lag` (Storm's `withLag`, default 0).
    pub fn with_lag(mut self, lag: Duration) -> Self {
        self.conf
            .set(keys::TOPOLOGY_BOLTS_TUPLE_TIMESTAMP_MAX_LAG_MS, millis(lag));
        self
    }

    /// How often the watermark is computed (Storm's `withWatermarkInterval`, default
    /// 1 s).
    pub fn with_watermark_interval(mut self, interval: Duration) -> Self {
        self.conf.set(
            keys::TOPOLOGY_BOLTS_WATERMARK_EVENT_INTERVAL_MS,
            millis(interval),
        );
        self
    }

    /// Emits late tuples on `stream` (declared by the wrapper with
    /// [`LATE_TUPLE_FIELDS`]) instead of dropping them (Storm's `withLateTupleStream`).
    /// Needs event time.
    pub fn with_late_tuple_stream(mut self, stream: &str) -> Self {
        self.conf
            .set(keys::TOPOLOGY_BOLTS_LATE_TUPLE_STREAM, stream);
        self
    }

    /// Uses `clock` (ms since the epoch) for processing time and watermark intervals
    /// instead of the system clock: for tests that drive the bolt with a fake clock.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The wrapped bolt.
    pub fn bolt(&self) -> &B {
        &self.bolt
    }

    pub(crate) fn bolt_mut(&mut self) -> &mut B {
        &mut self.bolt
    }

    /// This task's watermark (event time), once it has one.
    pub fn watermark(&self) -> Option<i64> {
        self.run
            .as_ref()
            .and_then(|r| r.watermark.as_ref())
            .and_then(|w| w.watermark())
    }

    /// Number of tuples this task holds in its windows (and, for event time, waiting
    /// for the watermark).
    pub fn held(&self) -> usize {
        self.run
            .as_ref()
            .map_or(0, |r| r.manager.len() + r.pending.len())
    }
}

/// The state of a running task.
pub(crate) struct Running {
    component: String,
    settings: Settings,
    manager: WindowManager<Tuple>,
    watermark: Option<WatermarkTracker>,
    /// Event time: tuples the watermark has not passed yet, with their time and
    /// arrival order.
    pending: Vec<(i64, u64, Tuple)>,
    seq: u64,
    late: u64,
    /// Persistent windows: the latest input tuple of the current checkpoint epoch,
    /// not acked yet, that window output is anchored to.
    anchor: Option<Tuple>,
}

/// The tasks whose tuples the watermark waits for.
fn input_tasks(ctx: &TopologyContext) -> Vec<TaskId> {
    let mut tasks = Vec::new();
    for (source, _) in ctx.this_sources() {
        let (c, s) = (source.component.as_str(), source.stream.as_str());
        if c.starts_with("__") || s.starts_with("__") || s.starts_with('$') {
            continue;
        }
        tasks.extend_from_slice(ctx.component_tasks(c));
    }
    tasks
}

impl<B: WindowedBolt> Windowed<B> {
    fn start(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let component = ctx.this_component_id().to_string();
        if self.bolt.needs_persistence() && !self.persistent {
            return Err(format!(
                "bolt '{component}' is a stateful windowed bolt: add it with \
                 TopologyBuilder::set_stateful_windowed_bolt"
            )
            .into());
        }
        let settings = Settings::from_conf(&component, conf)?;
        if settings.timestamps == TimestampSource::Extractor && self.extractor.is_none() {
            return Err(format!(
                "windowed bolt '{component}': '{}' is set but the bolt has no timestamp extractor",
                keys::SQUALL_BOLTS_WINDOW_TIMESTAMP_EXTRACTOR
            )
            .into());
        }
        if let TimestampSource::Field(field) = &settings.timestamps {
            for (source, _) in ctx.this_sources() {
                let (c, s) = (source.component.as_str(), source.stream.as_str());
                if c.starts_with("__") || s.starts_with("__") || s.starts_with('$') {
                    // System streams (ticks, checkpoint barriers) carry no event time.
                    continue;
                }
                if let Some(fields) = ctx.component_output_fields(c, s) {
                    if !fields.contains(field) {
                        return Err(format!(
                            "windowed bolt '{component}' takes event times from field '{field}', \
                             but its input stream {c}:{s} has fields {fields}"
                        )
                        .into());
                    }
                }
            }
        }
        let now = (self.clock)();
        let watermark = settings.event_time().then(|| {
            WatermarkTracker::new(
                input_tasks(ctx),
                settings.lag_ms,
                settings.watermark_interval_ms,
            )
        });
        let manager = if settings.event_time() {
            WindowManager::new(settings.length, settings.slide, 0, false)
        } else {
            WindowManager::new(settings.length, settings.slide, now, true)
        };
        self.run = Some(Running {
            component,
            settings,
            manager,
            watermark,
            pending: Vec::new(),
            seq: 0,
            late: 0,
            anchor: None,
        });
        Ok(())
    }
}

/// Acks evicted tuples and runs the bolt on each window.
struct BoltSink<'s, 'o, B> {
    bolt: &'s mut B,
    out: &'s mut OutputCollector<'o>,
    component: &'s str,
    /// Persistent windows: window tuples are detached copies (nothing to ack), and
    /// output is anchored to this live tuple of the current epoch, if any.
    persistent: Option<Option<&'s Tuple>>,
}

impl<B: WindowedBolt> Sink<Tuple> for BoltSink<'_, '_, B> {
    fn evicted(&mut self, item: &Tuple) {
        if self.persistent.is_none() {
            self.out.ack(item);
        }
    }

    fn fire(&mut self, w: Activation<'_, Tuple>) {
        let window = TupleWindow {
            tuples: w.tuples,
            new_from: w.new_from,
            expired: w.expired,
            start: w.start,
            end: w.end,
        };
        let anchors: Vec<&Tuple> = match self.persistent {
            None => w.tuples.iter().collect(),
            Some(live) => live.into_iter().collect(),
        };
        let mut emitter = WindowEmitter {
            out: &mut *self.out,
            anchors: &anchors,
            fixed: self.persistent.is_some(),
        };
        let bolt = &mut *self.bolt;
        let result = catch_unwind(AssertUnwindSafe(|| {
            bolt.execute(&window, &mut OutputCollector::new(&mut emitter))
        }));
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            self.out.report_error(&format!(
                "windowed bolt '{}' panicked in execute for the window ending at {}: {msg}; \
                 failing its {} tuples",
                self.component,
                w.end,
                w.tuples.len()
            ));
            for t in w.tuples {
                self.out.fail(t);
            }
            if let Some(Some(live)) = self.persistent {
                self.out.fail(live);
            }
        }
    }
}

/// The collector a windowed bolt emits through: unanchored emits are anchored to the
/// window's tuples; acks are the wrapper's business.
struct WindowEmitter<'c, 'o, 'w> {
    out: &'c mut OutputCollector<'o>,
    anchors: &'w [&'w Tuple],
    /// Persistent windows: always `anchors` (the bolt's own anchors are detached).
    fixed: bool,
}

impl Emitter for WindowEmitter<'_, '_, '_> {
    fn emit(&mut self, emit: Emit<'_>, task_ids: Option<&mut Vec<TaskId>>) {
        let anchors = if emit.anchors.is_empty() || self.fixed {
            self.anchors
        } else {
            emit.anchors
        };
        match (emit.direct_task, task_ids) {
            (Some(task), ids) => {
                self.out
                    .emit_direct(task, emit.stream, anchors, emit.values);
                if let Some(ids) = ids {
                    ids.push(task);
                }
            }
            (None, Some(ids)) => {
                self.out
                    .emit_with_task_ids_into(emit.stream, anchors, emit.values, ids)
            }
            (None, None) => self.out.emit_stream(emit.stream, anchors, emit.values),
        }
    }

    fn ack(&mut self, _input: &Tuple) {}

    fn fail(&mut self, input: &Tuple) {
        if self.fixed {
            // A window tuple is a detached copy: fail the epoch's live tuple instead,
            // which rolls the topology back.
            if let Some(live) = self.anchors.first() {
                self.out.fail(live);
            }
        } else {
            self.out.fail(input)
        }
    }

    fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.out.report_error(error)
    }

    fn set_gauge(&mut self, name: &str, value: i64) {
        self.out.set_gauge(name, value)
    }
}

impl<B: WindowedBolt> Windowed<B> {
    fn on_tick(&mut self, out: &mut OutputCollector<'_>) {
        let now = (self.clock)();
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if self.persistent && run.anchor.is_none() {
            // No input since the last checkpoint: a window firing now would have no
            // live tuple to anchor its output to (a lost output would go unnoticed).
            // The next input tuple's ticks fire it.
            return;
        }
        let mut sink = BoltSink {
            bolt: &mut self.bolt,
            out,
            component: &run.component,
            persistent: self.persistent.then_some(run.anchor.as_ref()),
        };
        match run.watermark.as_mut() {
            None => run.manager.advance(now.saturating_sub(1), &mut sink),
            Some(tracker) => {
                if let Some(wm) = tracker.tick(now) {
                    // The watermark passed these: their order is final.
                    let mut ready = Vec::new();
                    let mut i = 0;
                    while i < run.pending.len() {
                        if run.pending[i].0 <= wm {
                            ready.push(run.pending.swap_remove(i));
                        } else {
                            i += 1;
                        }
                    }
                    ready.sort_unstable_by_key(|&(time, seq, _)| (time, seq));
                    for (time, _, tuple) in ready {
                        run.manager.push(tuple, time, None, &mut sink);
                    }
                    run.manager.advance(wm, &mut sink);
                }
            }
        }
        let held = (run.manager.len() + run.pending.len()) as i64;
        sink.out.set_gauge("window.held", held);
        sink.out.set_gauge("window.late", run.late as i64);
    }

    fn event_time(&self, input: &Tuple, field: Option<&str>) -> Result<i64, BoxError> {
        match (field, &self.extractor) {
            (Some(f), _) => Ok(input.get_long_by_field(f)?),
            (None, Some(extract)) => extract(input),
            (None, None) => Err("no timestamp extractor".into()),
        }
    }
}

impl<B: WindowedBolt> Bolt for Windowed<B> {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.start(conf, ctx)?;
        self.bolt.prepare(conf, ctx)
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if input.is_tick() {
            self.on_tick(out);
            return;
        }
        let Some(run) = self.run.as_mut() else {
            out.report_error(&"windowed bolt got a tuple before prepare; failing it");
            out.fail(&input);
            return;
        };
        let input = if self.persistent {
            // The window keeps a detached copy (checkpointed with the state); the live
            // tuple anchors the window's output until the next one or the checkpoint.
            let copy = Tuple::new(
                input.schema().clone(),
                input.source_task(),
                input.values().iter().cloned().collect(),
            );
            if let Some(previous) = run.anchor.replace(input) {
                out.ack(&previous);
            }
            copy
        } else {
            input
        };
        let run = self.run.as_ref().expect("checked above");
        if !run.settings.event_time() {
            let now = (self.clock)();
            let run = self.run.as_mut().expect("checked above");
            let mut sink = BoltSink {
                bolt: &mut self.bolt,
                out,
                component: &run.component,
                persistent: self.persistent.then_some(run.anchor.as_ref()),
            };
            run.manager.advance(now.saturating_sub(1), &mut sink);
            run.manager.push(input, now, Some(now), &mut sink);
            return;
        }
        let field = match &run.settings.timestamps {
            TimestampSource::Field(f) => Some(f.clone()),
            _ => None,
        };
        let time = match self.event_time(&input, field.as_deref()) {
            Ok(t) => t,
            Err(e) if self.persistent => {
                // Failing would roll back and replay it forever: leave it out.
                out.report_error(&format!(
                    "windowed bolt '{}' cannot read the event time of {input}: {e}; dropping it",
                    run.component
                ));
                return;
            }
            Err(e) => {
                out.report_error(&format!(
                    "windowed bolt '{}' cannot read the event time of {input}: {e}; failing it",
                    run.component
                ));
                out.fail(&input);
                return;
            }
        };
        let run = self.run.as_mut().expect("checked above");
        let tracker = run.watermark.as_mut().expect("event time has a tracker");
        if tracker.track(input.source_task(), time) {
            run.late += 1;
            if let Some(stream) = &run.settings.late_stream {
                let mut values = Values::new();
                values.push(Value::List(input.values().to_vec()));
                values.push(Value::Int(time));
                values.push(Value::from(input.source_component()));
                let anchor = if self.persistent {
                    run.anchor.as_ref()
                } else {
                    Some(&input)
                };
                out.emit_stream(stream, &anchor.into_iter().collect::<Vec<_>>(), values);
            }
            if !self.persistent {
                out.ack(&input);
            }
            return;
        }
        run.seq += 1;
        run.pending.push((time, run.seq, input));
    }

    fn cleanup(&mut self) {
        // Held tuples are neither acked nor failed: their trees time out and replay,
        // as in Storm.
        self.run = None;
        self.bolt.cleanup()
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        if let Ok(Some(stream)) = self.conf.get_str(keys::TOPOLOGY_BOLTS_LATE_TUPLE_STREAM) {
            declarer.declare_stream(stream, LATE_TUPLE_FIELDS);
        }
        self.bolt.declare_output_fields(declarer)
    }

    fn component_configuration(&self) -> Config {
        let mut conf = self.bolt.component_configuration();
        conf.merge(&self.conf);
        conf.set(settings::WINDOWED_MARKER, true);
        if let Some(ms) = Settings::from_conf("", &self.conf)
            .ok()
            .and_then(|s| s.tick_ms())
        {
            conf.set_tick_tuple_freq_ms(ms);
        }
        conf
    }
}
