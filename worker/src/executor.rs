//! Executor threads: each runs the tasks of one component (or one acker) in a loop over
//! its receive queue.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use hdrhistogram::Histogram;
use squall_api::{
    Bolt, BoxError, Config, OutputCollector, Spout, SpoutOutputCollector, StreamSchema, TaskId,
    TopologyContext, Tuple, Value,
};

use crate::acker::{AckerOutcome, AckerState};
use crate::emitter::RuntimeEmitter;
use crate::flow::FlowControl;
use crate::message::{Msg, Packet};
use crate::ratelimit::LogLimiter;
use crate::stats::{new_histogram, ExecutorStats};
use crate::transfer::BatchPool;

/// Per-tuple warnings, one line per kind per few seconds for the whole process.
static BOLT_UNEXPECTED: LogLimiter = LogLimiter::per_tuple_warnings();
static ACKER_UNEXPECTED: LogLimiter = LogLimiter::per_tuple_warnings();
static SPOUT_UNEXPECTED: LogLimiter = LogLimiter::per_tuple_warnings();

/// Execute latency is measured for one tuple in this many (Storm samples 5%).
const SAMPLE_EVERY: u32 = 20;
/// A spout calls `next_tuple` at most this many rounds before it looks at its inbox.
const SPOUT_BURST: usize = 64;
/// How long an executor with nothing to do sleeps before it re-checks its timers.
const IDLE_WAIT: Duration = Duration::from_millis(100);

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const FAILED: u8 = 2;
const STOPPED: u8 = 3;

/// Where an executor is in its life, shared between its thread and the runtime:
/// starting (in `open`/`prepare`), running, failed (setup failed, or the thread died),
/// or stopped (its loop ended).
#[derive(Debug, Default)]
pub(crate) struct ExecutorHealth {
    state: AtomicU8,
    /// The task and cause of the first failure. Every state change to `FAILED` happens
    /// under this lock, so a reader that sees `FAILED` and then locks finds the cause.
    failure: Mutex<Option<(TaskId, String)>>,
}

impl ExecutorHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(TaskId, String)>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Still in `open`/`prepare`.
    pub fn is_starting(&self) -> bool {
        self.state.load(Ordering::Acquire) == STARTING
    }

    /// The task and cause of the failure, when the executor failed.
    pub fn failure(&self) -> Option<(TaskId, String)> {
        if self.state.load(Ordering::Acquire) != FAILED {
            return None;
        }
        self.lock().clone()
    }

    /// Whether the executor's loop ended without a failure.
    pub fn is_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == STOPPED
    }

    /// Setup succeeded: starting → running. `false` when the runtime already gave up
    /// waiting for it (then the executor must not run).
    fn running(&self) -> bool {
        let _guard = self.lock();
        self.state
            .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Records a failure (the first cause is kept).
    pub fn fail(&self, task: TaskId, cause: String) {
        let mut failure = self.lock();
        if failure.is_none() {
            *failure = Some((task, cause));
        }
        self.state.store(FAILED, Ordering::Release);
    }

    /// Fails the executor if it is still starting (the setup wait timed out).
    pub fn fail_if_starting(&self, task: TaskId, cause: String) -> bool {
        let mut failure = self.lock();
        let gave_up = self
            .state
            .compare_exchange(STARTING, FAILED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if gave_up && failure.is_none() {
            *failure = Some((task, cause));
        }
        gave_up
    }

    /// The thread's loop returned: running → stopped. An executor that ends while still
    /// starting failed.
    pub fn ended(&self, task: TaskId) {
        let mut failure = self.lock();
        match self.state.load(Ordering::Acquire) {
            RUNNING => self.state.store(STOPPED, Ordering::Release),
            STARTING => {
                if failure.is_none() {
                    *failure = Some((task, "the executor ended during its setup".to_owned()));
                }
                self.state.store(FAILED, Ordering::Release);
            }
            _ => {}
        }
    }
}

/// What every executor loop shares.
pub(crate) struct ExecutorCore {
    pub first_task: TaskId,
    pub rx: Receiver<Packet>,
    /// Where emptied batches of `rx` go back to their senders.
    pub pool: BatchPool,
    pub emitter: RuntimeEmitter,
    /// This executor's own copy of every stream schema (own reference counts, so the
    /// tuple path touches no cache line shared with other executors).
    pub schemas: Vec<Arc<StreamSchema>>,
    pub stats: Arc<ExecutorStats>,
    pub shutdown: Arc<AtomicBool>,
    pub conf: Config,
    pub flush_interval: Duration,
    /// The message timeout, when timeouts are enabled.
    pub timeout: Option<Duration>,
    pub health: Arc<ExecutorHealth>,
    /// Told once `open`/`prepare` of every task finished (the runtime's start barrier).
    setup_done: Option<Sender<()>>,
    last_flush: Instant,
}

impl ExecutorCore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        first_task: TaskId,
        rx: Receiver<Packet>,
        pool: BatchPool,
        emitter: RuntimeEmitter,
        schemas: Vec<Arc<StreamSchema>>,
        stats: Arc<ExecutorStats>,
        shutdown: Arc<AtomicBool>,
        conf: Config,
        flush_interval: Duration,
        timeout: Option<Duration>,
        health: Arc<ExecutorHealth>,
        setup_done: Sender<()>,
    ) -> Self {
        ExecutorCore {
            health,
            setup_done: Some(setup_done),
            first_task,
            rx,
            pool,
            emitter,
            schemas,
            stats,
            shutdown,
            conf,
            flush_interval,
            timeout,
            last_flush: Instant::now(),
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Ends the setup phase: records the first failure (`task`, cause), tells the
    /// runtime, and says whether the executor may run (no failure, and the runtime did
    /// not give up waiting).
    fn setup_finished(&mut self, failure: Option<(TaskId, String)>) -> bool {
        let run = match failure {
            None => self.health.running(),
            Some((task, cause)) => {
                self.health.fail(task, cause);
                false
            }
        };
        if let Some(tx) = self.setup_done.take() {
            let _ = tx.send(());
        }
        run
    }

    fn set_task(&mut self, index: usize) {
        self.emitter.task_index = index;
        self.emitter.task = TaskId(self.first_task.0 + index as u32);
    }

    /// Sends partial batches and publishes counters and changed gauges.
    fn flush(&mut self, now: Instant) {
        self.emitter.transfer.flush();
        self.emitter.stats.publish(&self.stats);
        self.emitter.gauges.publish(&self.stats.gauges);
        self.last_flush = now;
    }

    /// Flushes when the inbox ran dry (natural batching: at low load every tuple leaves
    /// at once, at high load batches fill) or when the flush interval passed.
    fn maybe_flush(&mut self, now: Instant) {
        if self.rx.is_empty() || now.duration_since(self.last_flush) >= self.flush_interval {
            self.flush(now);
        }
    }

    /// How long to block on the inbox: until the next timer, or the flush interval when
    /// partial batches wait.
    fn wait_time(&self, now: Instant, timers: &[Option<Instant>]) -> Duration {
        let mut wait = IDLE_WAIT;
        if self.emitter.transfer.has_pending() {
            wait = self
                .flush_interval
                .saturating_sub(now.duration_since(self.last_flush));
        }
        for t in timers.iter().flatten() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        wait
    }

    fn tuple(
        &self,
        stream: u32,
        source: TaskId,
        values: squall_api::Values,
        anchors: squall_api::Anchors,
    ) -> Tuple {
        // The caller checked `stream` against the schemas (a message from another
        // worker may carry anything).
        Tuple::new(self.schemas[stream as usize].clone(), source, values).with_anchors(anchors)
    }
}

/// The message of a caught panic. Consumes the payload: dropping a payload can itself
/// panic (a payload type with a panicking `Drop`), and that second panic is caught and
/// its payload leaked rather than let escape the boundary.
pub(crate) fn take_panic_message(p: Box<dyn Any + Send>) -> String {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(p))) {
        std::mem::forget(again);
    }
    msg
}

/// An error and its sources, `outer: inner: innermost`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Runs user code `f`, reporting a panic as an error of the current task instead of
/// unwinding. The runtime's own state is consistent at every point where user code
/// runs (an emit checks everything that can panic before it changes anything), so
/// the executor can go on after a caught panic.
fn guarded(core: &mut ExecutorCore, what: &str, f: impl FnOnce(&mut ExecutorCore)) -> bool {
    match catch_unwind(AssertUnwindSafe(|| f(core))) {
        Ok(()) => true,
        Err(p) => {
            let msg = take_panic_message(p);
            let (component, task) = (core.emitter.component.clone(), core.emitter.task);
            core.emitter.report(format!(
                "{what} of '{component}' task {task} panicked: {msg}"
            ));
            false
        }
    }
}

/// Runs a task's `open`/`prepare`; an `Err` or a panic is reported as an error of the
/// current task and returned as the cause.
fn setup_call(
    core: &mut ExecutorCore,
    what: &str,
    f: impl FnOnce() -> Result<(), BoxError>,
) -> Result<(), String> {
    let cause = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => format!("{what} returned an error: {}", error_chain(&*e)),
        Err(p) => format!("{what} panicked: {}", take_panic_message(p)),
    };
    core.emitter.report(cause.clone());
    Err(cause)
}

/// The tick interval: `squall.tick.tuple.freq.ms` (sub-second ticks, used by windowed
/// bolts) when set, else `topology.tick.tuple.freq.secs`.
fn tick_every(conf: &Config) -> Option<Duration> {
    conf.tick_interval().ok().flatten()
}

/// The loop of a bolt executor.
pub(crate) fn run_bolt(
    mut core: ExecutorCore,
    mut bolts: Vec<Box<dyn Bolt>>,
    contexts: Vec<TopologyContext>,
) {
    let conf = core.conf.clone();
    let mut prepared = 0;
    let mut failure = None;
    for (i, bolt) in bolts.iter_mut().enumerate() {
        core.set_task(i);
        match setup_call(&mut core, "prepare", || bolt.prepare(&conf, &contexts[i])) {
            Ok(()) => prepared += 1,
            Err(cause) => {
                failure = Some((core.emitter.task, cause));
                break;
            }
        }
    }
    if !core.setup_finished(failure) {
        // Never runs: clean up the tasks that did prepare.
        for (i, bolt) in bolts.iter_mut().enumerate().take(prepared) {
            core.set_task(i);
            guarded(&mut core, "cleanup", |_| bolt.cleanup());
        }
        core.flush(Instant::now());
        return;
    }
    let tick_freq = tick_every(&core.conf);
    let tick_schema = Arc::new(StreamSchema::tick());
    let mut next_tick = tick_freq.map(|f| Instant::now() + f);
    let mut sample = 0u32;

    let mut execute =
        |core: &mut ExecutorCore, bolts: &mut [Box<dyn Bolt>], index: usize, mut tuple: Tuple| {
            core.set_task(index);
            let roots = (!tuple.anchors().is_empty()).then(|| tuple.anchors().clone());
            let stream = tuple.schema().index;
            let row = core.emitter.input_rows.row(stream);
            sample = sample.wrapping_add(1);
            let start = sample.is_multiple_of(SAMPLE_EVERY).then(Instant::now);
            if let Some(at) = start {
                // The tuple carries its receipt time to its ack (process latency).
                tuple.set_sample_stamp(core.emitter.stamp(at));
            }
            let bolt = &mut bolts[index];
            let result = catch_unwind(AssertUnwindSafe(|| {
                bolt.execute(tuple, &mut OutputCollector::new(&mut core.emitter))
            }));
            let row = &mut core.emitter.stats.inputs[row];
            row.executed += 1;
            if let Some(start) = start {
                row.execute_ns += start.elapsed().as_nanos() as u64;
                row.execute_samples += 1;
            }
            if let Err(p) = result {
                let msg = take_panic_message(p);
                let (component, task) = (core.emitter.component.clone(), core.emitter.task);
                core.emitter.report(format!(
                "bolt '{component}' task {task} panicked in execute: {msg}; failing the input tuple"
            ));
                if let Some(roots) = roots {
                    core.emitter.count_failed(stream);
                    core.emitter.fail_roots(&roots);
                }
            }
        };

    loop {
        if core.stopping() {
            break;
        }
        let now = Instant::now();
        match core.rx.recv_timeout(core.wait_time(now, &[next_tick])) {
            Ok(Packet::Batch(mut batch)) => {
                for env in batch.drain(..) {
                    let index = env.task.0.wrapping_sub(core.first_task.0) as usize;
                    match env.msg {
                        Msg::Tuple {
                            stream,
                            source,
                            values,
                            anchors,
                        } if index < bolts.len() && (stream as usize) < core.schemas.len() => {
                            let tuple = core.tuple(stream, source, values, anchors);
                            execute(&mut core, &mut bolts, index, tuple);
                        }
                        other => {
                            if let Some(suppressed) = BOLT_UNEXPECTED.allow() {
                                tracing::warn!(
                                    component = %core.emitter.component,
                                    suppressed,
                                    "bolt executor ignoring unexpected message {other:?}"
                                )
                            }
                        }
                    }
                }
                core.pool.give(batch);
            }
            Ok(Packet::Wake | Packet::Activate | Packet::Deactivate) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if let (Some(due), Some(freq)) = (next_tick, tick_freq) {
            if now >= due {
                for i in 0..bolts.len() {
                    let tick = Tuple::tick(tick_schema.clone(), freq.as_secs());
                    execute(&mut core, &mut bolts, i, tick);
                }
                next_tick = Some(now + freq);
            }
        }
        core.maybe_flush(now);
    }
    for (i, bolt) in bolts.iter_mut().enumerate() {
        core.set_task(i);
        guarded(&mut core, "cleanup", |_| bolt.cleanup());
    }
    core.flush(Instant::now());
}

/// The loop of an acker executor.
pub(crate) fn run_acker(mut core: ExecutorCore) {
    if !core.setup_finished(None) {
        return;
    }
    let mut state = AckerState::new();
    let mut next_rotate = core.timeout.map(|t| Instant::now() + t);
    loop {
        if core.stopping() {
            break;
        }
        let now = Instant::now();
        match core.rx.recv_timeout(core.wait_time(now, &[next_rotate])) {
            Ok(Packet::Batch(mut batch)) => {
                for env in batch.drain(..) {
                    // The input rows of an acker: 0 ack-init, 1 ack, 2 fail.
                    let (row, outcome) = match env.msg {
                        Msg::AckInit {
                            root,
                            val,
                            spout_task,
                        } => (0, state.init(root, val, spout_task)),
                        Msg::Ack { root, val } => (1, state.ack(root, val)),
                        Msg::Fail { root } => (2, state.fail(root)),
                        other => {
                            if let Some(suppressed) = ACKER_UNEXPECTED.allow() {
                                tracing::warn!(
                                    suppressed,
                                    "acker ignoring unexpected message {other:?}"
                                );
                            }
                            continue;
                        }
                    };
                    let row = &mut core.emitter.stats.inputs[row];
                    row.executed += 1;
                    match outcome {
                        Some(AckerOutcome::Ack { root, spout_task }) => {
                            row.acked += 1;
                            core.emitter.send(spout_task, Msg::TreeAcked { root });
                        }
                        Some(AckerOutcome::Fail { root, spout_task }) => {
                            row.failed += 1;
                            core.emitter.send(spout_task, Msg::TreeFailed { root });
                        }
                        None => {}
                    }
                }
                core.pool.give(batch);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if let (Some(due), Some(t)) = (next_rotate, core.timeout) {
            if now >= due {
                state.rotate();
                next_rotate = Some(now + t);
            }
        }
        core.maybe_flush(now);
    }
    core.flush(Instant::now());
}

/// Spout executor state beyond the shared core.
pub(crate) struct SpoutSettings {
    pub max_pending: Option<usize>,
    /// Automatic flow control (no max pending set, and `squall.spout.flow.control`).
    pub flow_control: bool,
    pub wait: Duration,
}

struct SpoutLoop {
    core: ExecutorCore,
    spouts: Vec<Box<dyn Spout>>,
    /// Per task, the adaptive pending limit (automatic flow control), or none.
    flow: Vec<FlowControl>,
    active: bool,
    latency: Histogram<u64>,
    last_publish: Instant,
}

impl SpoutLoop {
    fn call(
        &mut self,
        index: usize,
        what: &str,
        f: impl FnOnce(&mut dyn Spout, &mut RuntimeEmitter),
    ) {
        self.core.set_task(index);
        let spout = &mut *self.spouts[index];
        guarded(&mut self.core, what, |core| f(spout, &mut core.emitter));
    }

    fn handle(&mut self, packet: Packet) {
        match packet {
            Packet::Batch(mut batch) => {
                for env in batch.drain(..) {
                    match env.msg {
                        Msg::TreeAcked { root } => self.complete(root, true),
                        Msg::TreeFailed { root } => self.complete(root, false),
                        // Checkpoint barriers of a stateful topology (its spout wrapper
                        // subscribes to them).
                        Msg::Tuple {
                            stream,
                            source,
                            values,
                            anchors,
                        } if (env.task.0.wrapping_sub(self.core.first_task.0) as usize)
                            < self.spouts.len()
                            && (stream as usize) < self.core.schemas.len() =>
                        {
                            let index = env.task.0.wrapping_sub(self.core.first_task.0) as usize;
                            let tuple = self.core.tuple(stream, source, values, anchors);
                            self.call(index, "receive", |s, e| {
                                s.receive_tuple(tuple, &mut SpoutOutputCollector::new(e))
                            });
                        }
                        other => {
                            if let Some(suppressed) = SPOUT_UNEXPECTED.allow() {
                                tracing::warn!(
                                    component = %self.core.emitter.component,
                                    suppressed,
                                    "spout executor ignoring unexpected message {other:?}"
                                )
                            }
                        }
                    }
                }
                self.core.pool.give(batch);
            }
            Packet::Activate if !self.active => {
                self.active = true;
                for i in 0..self.spouts.len() {
                    self.call(i, "activate", |s, _| s.activate());
                }
            }
            Packet::Deactivate => {
                if self.active {
                    self.active = false;
                    for i in 0..self.spouts.len() {
                        self.call(i, "deactivate", |s, _| s.deactivate());
                    }
                }
                // Nothing more is emitted from here on, so the pending count published
                // now can only go down: publish it, then that the request was handled.
                self.publish_pending();
                self.core
                    .stats
                    .deactivations
                    .fetch_add(1, Ordering::Release);
            }
            _ => {}
        }
    }

    /// Publishes the number of trees in flight (read by a graceful stop).
    fn publish_pending(&self) {
        let tracking = self.core.emitter.spout.as_ref().expect("spout tracking");
        self.core
            .stats
            .pending
            .store(tracking.pending.len() as u64, Ordering::Release);
        if !self.flow.is_empty() {
            let limit = self.flow.iter().map(|f| f.limit() as u64).sum();
            self.core
                .stats
                .pending_limit
                .store(limit, Ordering::Relaxed);
        }
    }

    fn complete(&mut self, root: u64, acked: bool) {
        let tracking = self.core.emitter.spout.as_mut().expect("spout tracking");
        // A tree that already timed out (and was failed) may still complete later.
        let Some(p) = tracking.pending.remove(&root) else {
            return;
        };
        let task = p.task_index as usize;
        tracking.pending_per_task[task] -= 1;
        let row = &mut self.core.emitter.stats.outputs[p.stream as usize];
        let now = Instant::now();
        let us = now.saturating_duration_since(p.start).as_micros() as u64;
        if let Some(flow) = self.flow.get_mut(task) {
            flow.completed(us, tracking.pending_per_task[task], now);
        }
        if acked {
            let _ = self.latency.record(us.max(1));
            row.acked += 1;
            row.complete_us += us;
            row.complete_samples += 1;
            self.call(p.task_index as usize, "ack", |s, e| {
                s.ack_with_collector(p.msg_id, &mut SpoutOutputCollector::new(e))
            });
        } else {
            row.failed += 1;
            self.call(p.task_index as usize, "fail", |s, e| {
                s.fail_with_collector(p.msg_id, &mut SpoutOutputCollector::new(e))
            });
        }
    }

    fn immediate_acks(&mut self) {
        let tracking = self.core.emitter.spout.as_mut().expect("spout tracking");
        if tracking.immediate_acks.is_empty() {
            return;
        }
        let acks: Vec<(usize, u32, Value)> = std::mem::take(&mut tracking.immediate_acks);
        for (_, stream, _) in &acks {
            self.core.emitter.stats.outputs[*stream as usize].acked += 1;
        }
        for (index, _, msg_id) in acks {
            self.call(index, "ack", |s, e| {
                s.ack_with_collector(msg_id, &mut SpoutOutputCollector::new(e))
            });
        }
    }

    fn time_out(&mut self, now: Instant) {
        let tracking = self.core.emitter.spout.as_mut().expect("spout tracking");
        let expired = tracking.pending.rotate();
        let stats = &mut self.core.emitter.stats;
        let mut timed_out = vec![false; self.flow.len()];
        for p in expired.values() {
            tracking.pending_per_task[p.task_index as usize] -= 1;
            stats.outputs[p.stream as usize].timed_out += 1;
            if let Some(t) = timed_out.get_mut(p.task_index as usize) {
                *t = true;
            }
        }
        for (flow, _) in self.flow.iter_mut().zip(timed_out).filter(|(_, t)| *t) {
            flow.timed_out(now);
        }
        for (_, p) in expired {
            self.call(p.task_index as usize, "fail", |s, e| {
                s.fail_with_collector(p.msg_id, &mut SpoutOutputCollector::new(e))
            });
        }
    }

    fn has_room(&mut self, max_pending: Option<usize>, index: usize) -> bool {
        let tracking = self.core.emitter.spout.as_ref().expect("spout tracking");
        let pending = tracking.pending_per_task[index];
        match (max_pending, self.flow.get_mut(index)) {
            (Some(m), _) => pending < m,
            (None, Some(flow)) => flow.has_room(pending),
            (None, None) => true,
        }
    }

    fn publish_latency(&mut self, now: Instant, force: bool) {
        if self.latency.is_empty() || (!force && now.duration_since(self.last_publish) < IDLE_WAIT)
        {
            return;
        }
        let mut shared = self
            .core
            .stats
            .complete_latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = shared.add(&self.latency);
        self.latency.reset();
        self.last_publish = now;
    }
}

/// The loop of a spout executor.
pub(crate) fn run_spout(
    core: ExecutorCore,
    spouts: Vec<Box<dyn Spout>>,
    contexts: Vec<TopologyContext>,
    settings: SpoutSettings,
) {
    let flow = if settings.flow_control {
        vec![FlowControl::new(Instant::now()); spouts.len()]
    } else {
        Vec::new()
    };
    let mut sl = SpoutLoop {
        core,
        flow,
        spouts,
        active: false,
        latency: new_histogram(),
        last_publish: Instant::now(),
    };
    let conf = sl.core.conf.clone();
    let mut opened = 0;
    let mut failure = None;
    for (i, ctx) in contexts.iter().enumerate() {
        sl.core.set_task(i);
        let spout = &mut sl.spouts[i];
        match setup_call(&mut sl.core, "open", || spout.open(&conf, ctx)) {
            Ok(()) => opened += 1,
            Err(cause) => {
                failure = Some((sl.core.emitter.task, cause));
                break;
            }
        }
    }
    if !sl.core.setup_finished(failure) {
        // Never gets `next_tuple`: close the tasks that did open.
        for i in 0..opened {
            sl.call(i, "close", |s, _| s.close());
        }
        sl.core.flush(Instant::now());
        return;
    }
    // The spouts start inactive; the runtime activates them once every executor of the
    // topology finished its setup.
    let mut next_rotate = sl.core.timeout.map(|t| Instant::now() + t);
    'outer: loop {
        if sl.core.stopping() {
            break;
        }
        loop {
            match sl.core.rx.try_recv() {
                Ok(p) => sl.handle(p),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break 'outer,
            }
        }
        sl.immediate_acks();
        let now = Instant::now();
        if let (Some(due), Some(t)) = (next_rotate, sl.core.timeout) {
            if now >= due {
                sl.time_out(now);
                next_rotate = Some(now + t);
            }
        }

        let mut emitted_any = false;
        let mut room_any = false;
        if sl.active {
            for _ in 0..SPOUT_BURST {
                let before = sl.core.emitter.stats.emitted;
                for i in 0..sl.spouts.len() {
                    if sl.has_room(settings.max_pending, i) {
                        room_any = true;
                        sl.call(i, "next_tuple", |s, e| {
                            s.next_tuple(&mut SpoutOutputCollector::new(e))
                        });
                    }
                }
                sl.immediate_acks();
                if sl.core.emitter.stats.emitted == before {
                    break;
                }
                emitted_any = true;
            }
        }
        let now = Instant::now();
        if emitted_any {
            if now.duration_since(sl.core.last_flush) >= sl.core.flush_interval {
                sl.core.flush(now);
            }
        } else {
            sl.core.flush(now);
            // Nothing emitted: sleep briefly when the spout had nothing to give, longer
            // when it is inactive or at max pending; an ack or a control message wakes it.
            let mut wait = if sl.active && room_any {
                settings.wait
            } else {
                IDLE_WAIT
            };
            if let Some(due) = next_rotate {
                wait = wait.min(due.saturating_duration_since(now));
            }
            match sl.core.rx.recv_timeout(wait) {
                Ok(p) => sl.handle(p),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        sl.publish_latency(now, false);
        sl.publish_pending();
    }
    if sl.active {
        sl.handle(Packet::Deactivate);
    }
    for i in 0..sl.spouts.len() {
        sl.call(i, "close", |s, _| s.close());
    }
    let now = Instant::now();
    sl.core.flush(now);
    sl.publish_latency(now, true);
}
