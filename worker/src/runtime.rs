//! Starting, steering and stopping the executors of one topology in this process.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use serde::Serialize;
use squall_api::{
    Bolt, ComponentId, ComponentKind, Config, Spout, TaskId, TaskLayout, Topology, TopologyContext,
    ACKER_COMPONENT,
};
use squall_cluster::metrics::{ExecutorCounters, StreamStats};
use squall_cluster::state::ExecutorHeartbeat;

use crate::emitter::{RuntimeEmitter, SpoutTracking};
use crate::executor::{
    run_acker, run_bolt, run_spout, take_panic_message, ExecutorCore, ExecutorHealth, SpoutSettings,
};
use crate::logging::log_reported_error;
use crate::message::Packet;
use crate::routing::build_routes;
use crate::stats::{ErrorLog, ExecutorStats, InputRows, ReportedError};
use crate::transfer::{BatchPool, Transfer};
use crate::WorkerError;

/// How long [`TopologyRuntime::start_plan`] waits, by default, for every executor to
/// finish `open`/`prepare` before it declares the stragglers failed.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(60);

struct ExecutorHandle {
    component: ComponentId,
    kind: ComponentKind,
    tasks: (TaskId, TaskId),
    tx: Sender<Packet>,
    stats: Arc<ExecutorStats>,
    /// Names of the output rows of `stats` (stream ids).
    outputs: Vec<String>,
    /// Names of the input rows of `stats` (source component, stream).
    inputs: Vec<(String, String)>,
    health: Arc<ExecutorHealth>,
    /// Deactivation requests sent to this (spout) executor.
    deactivations_sent: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

/// Which executors run here and where the others' tuples go.
#[derive(Default)]
pub struct RuntimePlan {
    /// Local executors: component, kind, first and last task.
    pub local: Vec<(ComponentId, ComponentKind, TaskId, TaskId)>,
    /// Per remote worker: its tasks and the queue its connection drains.
    pub remote: Vec<(Vec<TaskId>, Sender<Packet>)>,
    /// This worker's port (cluster mode).
    pub worker_port: Option<u16>,
    /// This worker's host name (cluster mode), named in errors and failures.
    pub host: Option<String>,
    /// How long to wait for every executor's `open`/`prepare`
    /// ([`DEFAULT_SETUP_TIMEOUT`] when `None`).
    pub setup_timeout: Option<Duration>,
}

/// Why an executor stopped: its `open`/`prepare` failed (returned an error, panicked or
/// did not finish in time), or its thread died of a panic outside user code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorFailure {
    /// Spout or bolt (ackers are bolts).
    pub kind: ComponentKind,
    /// The component.
    pub component: ComponentId,
    /// The task that failed (the executor's first task when no task is to blame).
    pub task: TaskId,
    /// The worker's host (cluster mode).
    pub host: Option<String>,
    /// The worker's port (cluster mode).
    pub port: Option<u16>,
    /// What went wrong, e.g. `open returned an error: connection refused`.
    pub cause: String,
}

impl fmt::Display for ExecutorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}' task {}", self.kind, self.component, self.task)?;
        match (&self.host, self.port) {
            (Some(h), Some(p)) => write!(f, " on {h}:{p}")?,
            (None, Some(p)) => write!(f, " on port {p}")?,
            (Some(h), None) => write!(f, " on {h}")?,
            (None, None) => {}
        }
        write!(f, " failed: {}", self.cause)
    }
}

/// The executors of one topology running in this process.
pub struct TopologyRuntime {
    topology_id: String,
    layout: Arc<TaskLayout>,
    local_dest: Vec<Option<usize>>,
    local_senders: Vec<Sender<Packet>>,
    /// Blocked-time counters of the local executors, as `local_senders`.
    local_blocked: Vec<Arc<AtomicU64>>,
    executors: Vec<ExecutorHandle>,
    shutdown: Arc<AtomicBool>,
    errors: Arc<ErrorLog>,
    host: Option<String>,
    port: Option<u16>,
    started: Instant,
}

/// Counters of one component, summed over its executors.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComponentStats {
    /// Number of executors.
    pub executors: usize,
    /// Number of tasks.
    pub tasks: usize,
    /// Tuples emitted.
    pub emitted: u64,
    /// Tuples sent to tasks.
    pub transferred: u64,
    /// Spouts: trees acked; bolts: tuples acked; ackers: trees completed.
    pub acked: u64,
    /// Spouts: trees failed (including timeouts); bolts: tuples failed.
    pub failed: u64,
    /// Spouts: trees that timed out.
    pub timed_out: u64,
    /// Bolts: tuples executed.
    pub executed: u64,
    /// Spouts: tuple trees in flight (message ids not yet acked or failed).
    pub pending: u64,
    /// Spouts under automatic flow control (`squall.spout.flow.control`, no
    /// `topology.max.spout.pending`): the current limit on trees in flight, summed
    /// over the tasks; 0 for other components.
    pub pending_limit: u64,
    /// Bolts: mean execute latency in ms (sampled).
    pub execute_latency_ms: f64,
    /// Spouts: complete latency percentiles in ms: p50, p99, max, mean.
    pub complete_latency_ms: Option<LatencySummary>,
    /// Custom gauges (`set_gauge`): name → the last value each task set, summed over
    /// the tasks (and executors) that set it.
    pub gauges: BTreeMap<String, i64>,
}

/// Latency percentiles.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// A snapshot of a running topology's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TopologyStats {
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Per component (ackers under `__acker`).
    pub components: BTreeMap<ComponentId, ComponentStats>,
}

impl TopologyStats {
    /// The counters of `component` (zeros when unknown).
    pub fn component(&self, component: &str) -> ComponentStats {
        self.components.get(component).cloned().unwrap_or_default()
    }
}

/// The component instances of one executor, made before any thread starts.
enum Instances {
    Acker,
    Spouts(Vec<Box<dyn Spout>>, SpoutSettings),
    Bolts(Vec<Box<dyn Bolt>>),
}

/// One executor, ready to be started on its thread.
struct Prepared {
    component: ComponentId,
    kind: ComponentKind,
    tasks: (TaskId, TaskId),
    core: ExecutorCore,
    instances: Instances,
    contexts: Vec<TopologyContext>,
    stats: Arc<ExecutorStats>,
    outputs: Vec<String>,
    inputs: Vec<(String, String)>,
    health: Arc<ExecutorHealth>,
    tx: Sender<Packet>,
}

/// Calls a user factory (a clone or a `set_*_with` closure), turning a panic into an
/// error of the executor.
fn make_instances<T>(
    n: usize,
    failure: impl Fn(String) -> WorkerError,
    make: impl Fn() -> Option<T>,
) -> Result<Vec<T>, WorkerError> {
    (0..n)
        .map(|_| match catch_unwind(AssertUnwindSafe(&make)) {
            Ok(Some(instance)) => Ok(instance),
            Ok(None) => Err(failure(
                "the component has no implementation of that kind in this binary".to_owned(),
            )),
            Err(p) => Err(failure(format!(
                "creating the task's instance panicked: {}",
                take_panic_message(p)
            ))),
        })
        .collect()
}

/// The outermost frame of an executor thread: runs the executor's loop `run`. User code
/// is guarded inside the loops, so a panic that reaches this frame is a runtime bug: it
/// is logged, recorded as an error of the component and marks the executor failed, so
/// [`TopologyRuntime::failed_executor`] reports it instead of a silently dead thread.
fn executor_thread(
    component: &ComponentId,
    first: TaskId,
    health: &ExecutorHealth,
    errors: &ErrorLog,
    run: impl FnOnce(),
) {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(()) => health.ended(first),
        Err(panic) => {
            let cause = format!(
                "the executor thread panicked outside user code (a Squall bug): {}",
                take_panic_message(panic)
            );
            log_reported_error(component, first, &cause, 0);
            errors.push(component.clone(), first, cause.clone());
            health.fail(first, cause);
        }
    }
}

impl TopologyRuntime {
    /// Starts every executor of `layout` in this process (local mode).
    pub fn start(
        topology_id: &str,
        topology: &Topology,
        conf: &Config,
        layout: Arc<TaskLayout>,
        active: bool,
    ) -> Result<Self, WorkerError> {
        let local = layout
            .components()
            .iter()
            .flat_map(|(id, c)| {
                c.executors
                    .iter()
                    .map(move |&(a, b)| (id.clone(), c.kind, a, b))
            })
            .collect();
        let plan = RuntimePlan {
            local,
            ..RuntimePlan::default()
        };
        Self::start_plan(topology_id, topology, conf, layout, plan, active)
    }

    /// Starts the executors `plan.local`; tuples for the tasks of `plan.remote` go to
    /// those queues (each drained by a connection to another worker).
    ///
    /// Everything that can be checked is checked before any thread starts: the
    /// topology's and every component's merged configuration, the custom groupings,
    /// and every task's instance (made from `topology` on this thread). Then each
    /// executor runs `open`/`prepare` for its tasks on its own thread, and this call
    /// waits until all finished (up to `plan.setup_timeout`). When every setup
    /// succeeded, the spouts are activated if `active`; when one failed (an `Err`, a
    /// panic, or no answer in time), nothing is activated, the failure is recorded as an
    /// error of its component and [`failed_executor`](Self::failed_executor) /
    /// [`executor_failure`](Self::executor_failure) report it: the runtime is returned
    /// all the same, for the caller to report and shut down.
    pub fn start_plan(
        topology_id: &str,
        topology: &Topology,
        conf: &Config,
        layout: Arc<TaskLayout>,
        plan: RuntimePlan,
        active: bool,
    ) -> Result<Self, WorkerError> {
        conf.validate()?;
        topology.spec().validate_with_conf(conf)?;
        let spec = Arc::new(topology.spec().clone());
        let batch_size = conf.producer_batch_size()? as usize;
        let queue_batches = (conf.receive_buffer_size()? as usize / batch_size).max(4);
        let flush_interval = Duration::from_millis(conf.batch_flush_interval_millis()?);
        let timeout = if conf.message_timeouts_enabled()? {
            Some(Duration::from_secs(conf.message_timeout_secs()?))
        } else {
            None
        };
        let setup_timeout = plan.setup_timeout.unwrap_or(DEFAULT_SETUP_TIMEOUT);

        // One queue per local executor; spouts get unbounded queues so that an acker is
        // never blocked by a spout (acker → spout traffic is bounded by the pending
        // trees). Remote workers are further destinations after the local ones.
        let all = plan.local;
        let mut senders = Vec::new();
        let mut blocked: Vec<Arc<AtomicU64>> = Vec::new();
        let mut pools = Vec::new();
        let mut receivers = Vec::new();
        let mut dest_of_task = vec![None; layout.max_task().0 as usize + 1];
        for (i, (_, kind, first, last)) in all.iter().enumerate() {
            let (tx, rx) = match kind {
                ComponentKind::Spout => crossbeam_channel::unbounded(),
                ComponentKind::Bolt => crossbeam_channel::bounded(queue_batches),
            };
            senders.push(tx);
            blocked.push(Arc::default());
            // Room for the buffers of a full queue, and a few being filled.
            pools.push(BatchPool::new(queue_batches + 16, batch_size));
            receivers.push(rx);
            for t in first.0..=last.0 {
                if let Some(slot) = dest_of_task.get_mut(t as usize) {
                    *slot = Some(i);
                }
            }
        }
        let local_dest = dest_of_task.clone();
        let local_senders = senders.clone();
        for (tasks, tx) in plan.remote {
            let d = senders.len();
            senders.push(tx);
            for t in tasks {
                if let Some(slot) = dest_of_task.get_mut(t.0 as usize) {
                    *slot = Some(d);
                }
            }
        }
        let local_tasks: Vec<TaskId> = all
            .iter()
            .flat_map(|(_, _, a, b)| (a.0..=b.0).map(TaskId))
            .collect();
        let worker_tasks: Arc<[TaskId]> = local_tasks.clone().into();
        let topology_id_arc: Arc<str> = topology_id.into();
        let shutdown = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(ErrorLog::new(plan.host.clone(), plan.worker_port));
        let ackers = layout.acker_tasks().to_vec();
        let (setup_tx, setup_rx) = crossbeam_channel::unbounded::<()>();

        // Phase 1, no thread yet: every executor's config, routes and instances.
        let mut prepared = Vec::with_capacity(all.len());
        for (i, ((component, kind, first, last), rx)) in all.into_iter().zip(receivers).enumerate()
        {
            let failure = |cause: String| {
                WorkerError::ExecutorFailed(ExecutorFailure {
                    kind,
                    component: component.clone(),
                    task: first,
                    host: plan.host.clone(),
                    port: plan.worker_port,
                    cause,
                })
            };
            if first > last || last > layout.max_task() {
                return Err(failure(format!(
                    "the plan gives it tasks {first}-{last}, which are not in the topology"
                )));
            }
            let mut rng = fastrand::Rng::new();
            let mut comp_conf = conf.clone();
            if let Some(c) = spec.components.get(&component) {
                comp_conf.merge(&c.conf);
            }
            comp_conf.validate()?;
            let routes = build_routes(
                &spec,
                &layout,
                component.as_str(),
                &local_tasks,
                |bolt, source| topology.new_custom_grouping(bolt, source),
                &mut rng,
            )
            .map_err(failure)?;
            let n_tasks = (last.0 - first.0 + 1) as usize;
            let is_acker = component == ACKER_COMPONENT;
            let is_spout = kind == ComponentKind::Spout;
            let input_rows = if is_acker {
                InputRows::acker()
            } else if is_spout {
                InputRows::default()
            } else {
                let subscribed = spec.components.get(&component).into_iter().flat_map(|c| {
                    c.inputs.iter().filter_map(|sub| {
                        let (c, s) = (&sub.source.component, &sub.source.stream);
                        let schema = layout.stream(c.as_str(), s.as_str())?;
                        Some((schema.index, c.to_string(), s.to_string()))
                    })
                });
                let ticks = comp_conf.tick_interval().ok().flatten().is_some();
                InputRows::bolt(layout.streams().len(), subscribed, ticks)
            };
            let outputs: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
            let inputs = input_rows.names.clone();
            let stats = Arc::new(ExecutorStats::new(
                outputs.len(),
                inputs.len(),
                blocked[i].clone(),
            ));
            let emitter = RuntimeEmitter::new(
                component.clone(),
                first,
                routes,
                Transfer::new(&senders, &blocked, &pools, &dest_of_task, batch_size),
                ackers.clone(),
                errors.clone(),
                crate::ratelimit::LogLimiter::new(
                    Duration::from_secs(comp_conf.error_throttle_interval_secs()?),
                    u32::try_from(comp_conf.max_error_report_per_interval()?).unwrap_or(u32::MAX),
                ),
                comp_conf.debug()?,
                is_spout.then(|| SpoutTracking::new(n_tasks)),
                input_rows,
                n_tasks,
            );
            let health = Arc::new(ExecutorHealth::default());
            let schemas = layout
                .streams()
                .iter()
                .map(|s| Arc::new(s.clone()))
                .collect();
            let contexts: Vec<TopologyContext> = (first.0..=last.0)
                .map(|t| {
                    TopologyContext::new(
                        topology_id_arc.clone(),
                        spec.clone(),
                        layout.clone(),
                        TaskId(t),
                        worker_tasks.clone(),
                        plan.worker_port,
                    )
                })
                .collect();
            let max_pending = comp_conf.max_spout_pending()?.map(|n| n as usize);
            let spout_wait = Duration::from_millis(comp_conf.spout_wait_millis()?);
            let instances = if is_acker {
                Instances::Acker
            } else if is_spout {
                let spouts =
                    make_instances(n_tasks, failure, || topology.new_spout(component.as_str()))?;
                Instances::Spouts(
                    spouts,
                    SpoutSettings {
                        max_pending,
                        flow_control: max_pending.is_none()
                            && !ackers.is_empty()
                            && comp_conf.spout_flow_control()?
                            && !acks_held_by_design(&spec),
                        wait: spout_wait,
                    },
                )
            } else {
                Instances::Bolts(make_instances(n_tasks, failure, || {
                    topology.new_bolt(component.as_str())
                })?)
            };
            let core = ExecutorCore::new(
                first,
                rx,
                pools[i].clone(),
                emitter,
                schemas,
                stats.clone(),
                shutdown.clone(),
                comp_conf,
                flush_interval,
                timeout,
                health.clone(),
                setup_tx.clone(),
            );
            prepared.push(Prepared {
                component,
                kind,
                tasks: (first, last),
                core,
                instances,
                contexts,
                stats,
                outputs,
                inputs,
                health,
                tx: local_senders[i].clone(),
            });
        }

        // Phase 2: one thread per executor.
        let mut runtime = TopologyRuntime {
            topology_id: topology_id.to_owned(),
            layout,
            local_dest,
            local_senders,
            local_blocked: blocked,
            executors: Vec::with_capacity(prepared.len()),
            shutdown,
            errors,
            host: plan.host,
            port: plan.worker_port,
            started: Instant::now(),
        };
        for p in prepared {
            let first = p.tasks.0;
            let name = format!("squall-{}-{first}", p.component);
            let (health, errors, done) =
                (p.health.clone(), runtime.errors.clone(), setup_tx.clone());
            let component = p.component.clone();
            let (core, instances, contexts) = (p.core, p.instances, p.contexts);
            let body = move || {
                executor_thread(
                    &component,
                    first,
                    &health,
                    &errors,
                    move || match instances {
                        Instances::Acker => run_acker(core),
                        Instances::Spouts(spouts, settings) => {
                            run_spout(core, spouts, contexts, settings)
                        }
                        Instances::Bolts(bolts) => run_bolt(core, bolts, contexts),
                    },
                );
                let _ = done.send(());
            };
            let thread = match std::thread::Builder::new().name(name).spawn(body) {
                Ok(t) => t,
                Err(e) => {
                    runtime.shutdown(Duration::from_secs(5));
                    return Err(WorkerError::Spawn(e));
                }
            };
            runtime.executors.push(ExecutorHandle {
                component: p.component,
                kind: p.kind,
                tasks: p.tasks,
                tx: p.tx,
                stats: p.stats,
                outputs: p.outputs,
                inputs: p.inputs,
                health: p.health,
                deactivations_sent: AtomicU64::new(0),
                thread: Some(thread),
            });
        }
        drop(setup_tx);

        // Phase 3: the barrier. Each executor signals once its setup finished (and
        // again when its thread ends), so wake on every signal and look.
        let deadline = Instant::now() + setup_timeout;
        while runtime.executors.iter().any(|e| e.health.is_starting()) {
            match setup_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    for e in &runtime.executors {
                        let what = if e.kind == ComponentKind::Spout {
                            "open"
                        } else {
                            "prepare"
                        };
                        let cause = format!(
                            "{what} did not finish within {} s",
                            setup_timeout.as_secs_f64()
                        );
                        if e.health.fail_if_starting(e.tasks.0, cause.clone()) {
                            log_reported_error(&e.component, e.tasks.0, &cause, 0);
                            runtime.errors.push(e.component.clone(), e.tasks.0, cause);
                        }
                    }
                    break;
                }
                // Every thread ended: each recorded how before it let go of its sender.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if runtime.executor_failure().is_none() && active {
            runtime.activate();
        }
        Ok(runtime)
    }

    /// The topology's id.
    pub fn topology_id(&self) -> &str {
        &self.topology_id
    }

    /// The task layout.
    pub fn layout(&self) -> &TaskLayout {
        &self.layout
    }

    /// The local executors' queues and which queue each local task uses (for the
    /// transport that delivers tuples from other workers).
    pub fn local_queues(&self) -> (Vec<Sender<Packet>>, Vec<Option<usize>>) {
        (self.local_senders.clone(), self.local_dest.clone())
    }

    /// The blocked-time counters of the local executors, in the order of
    /// [`local_queues`](Self::local_queues): the transport adds the time its readers
    /// wait on a full queue.
    pub fn local_blocked(&self) -> Vec<Arc<AtomicU64>> {
        self.local_blocked.clone()
    }

    /// Counters per local executor: component, first task, last task, counters.
    pub fn executor_stats(&self) -> Vec<(ComponentId, TaskId, TaskId, ComponentStats)> {
        self.executors
            .iter()
            .map(|e| {
                (
                    e.component.clone(),
                    e.tasks.0,
                    e.tasks.1,
                    executor_totals(e),
                )
            })
            .collect()
    }

    /// Per local executor, its counters as a worker reports them to Nimbus: totals
    /// since the executors started, per-stream rows ([`ExecutorCounters`]: outputs in
    /// stream-id order; inputs as described at [`InputRows`]), the time its producers
    /// were blocked on its full receive queue, that queue's depth and capacity, and the
    /// custom gauges its tasks set (summed over the executor's tasks per name).
    ///
    /// `queue_depth` and `queue_capacity` count **batches** (each up to
    /// `topology.producer.batch.size` envelopes; the capacity is
    /// `topology.executor.receive.buffer.size` / `topology.producer.batch.size`, at
    /// least 4). Spouts have unbounded queues: capacity 0.
    pub fn heartbeats(&self) -> Vec<ExecutorHeartbeat> {
        self.executors
            .iter()
            .map(|e| {
                let s = executor_totals(e);
                let lat = s.complete_latency_ms.unwrap_or_default();
                let rows =
                    |shared: &[crate::stats::SharedRow],
                     names: &mut dyn Iterator<Item = (Option<&str>, &str)>| {
                        names
                            .zip(shared)
                            .map(|((c, n), r)| r.load(c, n))
                            .collect::<Vec<StreamStats>>()
                    };
                let counters = ExecutorCounters {
                    outputs: rows(
                        &e.stats.outputs,
                        &mut e.outputs.iter().map(|n| (None, n.as_str())),
                    ),
                    inputs: rows(
                        &e.stats.inputs,
                        &mut e.inputs.iter().map(|(c, n)| (Some(c.as_str()), n.as_str())),
                    ),
                    blocked_ns: e.stats.blocked_ns.load(Ordering::Relaxed),
                };
                ExecutorHeartbeat {
                    component: e.component.to_string(),
                    first: e.tasks.0,
                    last: e.tasks.1,
                    emitted: s.emitted,
                    transferred: s.transferred,
                    acked: s.acked,
                    failed: s.failed,
                    executed: s.executed,
                    execute_latency_ms: s.execute_latency_ms,
                    complete_latency_ms: lat.mean,
                    complete_latency_p50_ms: lat.p50,
                    complete_latency_p99_ms: lat.p99,
                    complete_latency_max_ms: lat.max,
                    timed_out: s.timed_out,
                    counters,
                    queue_depth: e.tx.len() as u64,
                    queue_capacity: e.tx.capacity().unwrap_or(0) as u64,
                    gauges: s.gauges,
                }
            })
            .collect()
    }

    fn spouts(&self) -> impl Iterator<Item = &ExecutorHandle> {
        self.executors
            .iter()
            .filter(|e| e.kind == ComponentKind::Spout)
    }

    /// Spouts start calling `next_tuple` again.
    pub fn activate(&self) {
        for e in self.spouts() {
            let _ = e.tx.send(Packet::Activate);
        }
    }

    /// Spouts stop calling `next_tuple`; in-flight tuples still complete.
    pub fn deactivate(&self) {
        for e in self.spouts() {
            e.deactivations_sent.fetch_add(1, Ordering::Relaxed);
            let _ = e.tx.send(Packet::Deactivate);
        }
    }

    /// The kept errors tasks reported (the last [`ErrorLog::PER_COMPONENT`] per
    /// component), oldest first.
    pub fn errors(&self) -> Vec<ReportedError> {
        self.errors.snapshot()
    }

    /// The kept errors with a `seq` greater than `seq`, oldest first: a heartbeat that
    /// remembers the last `seq` it sent sends each error once, however many there are.
    pub fn errors_since(&self, seq: u64) -> Vec<ReportedError> {
        self.errors.since(seq)
    }

    /// How many errors were reported in all (kept or not).
    pub fn error_total(&self) -> u64 {
        self.errors.total()
    }

    /// Tuple trees in flight over the spouts of this process.
    pub fn pending_trees(&self) -> u64 {
        self.spouts()
            .map(|e| e.stats.pending.load(Ordering::Acquire))
            .sum()
    }

    /// A snapshot of every component's counters.
    pub fn stats(&self) -> TopologyStats {
        let mut components: BTreeMap<ComponentId, ComponentStats> = BTreeMap::new();
        let mut histograms: BTreeMap<ComponentId, hdrhistogram::Histogram<u64>> = BTreeMap::new();
        let mut exec_ns: BTreeMap<ComponentId, (u64, u64)> = BTreeMap::new();
        for e in &self.executors {
            let c = components.entry(e.component.clone()).or_default();
            let s = &e.stats;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            c.executors += 1;
            c.tasks += (e.tasks.1 .0 - e.tasks.0 .0 + 1) as usize;
            c.emitted += load(&s.emitted);
            c.transferred += load(&s.transferred);
            c.acked += load(&s.acked);
            c.failed += load(&s.failed);
            c.timed_out += load(&s.timed_out);
            c.executed += load(&s.executed);
            c.pending += load(&s.pending);
            c.pending_limit += load(&s.pending_limit);
            for (name, &v) in s.gauges.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let sum = c.gauges.entry(name.clone()).or_default();
                *sum = sum.saturating_add(v);
            }
            let ns = exec_ns.entry(e.component.clone()).or_default();
            ns.0 += load(&s.execute_ns);
            ns.1 += load(&s.execute_samples);
            if e.kind == ComponentKind::Spout {
                let h = s
                    .complete_latency_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let _ = histograms
                    .entry(e.component.clone())
                    .or_insert_with(crate::stats::new_histogram)
                    .add(&*h);
            }
        }
        for (id, (ns, samples)) in exec_ns {
            if samples > 0 {
                if let Some(c) = components.get_mut(&id) {
                    c.execute_latency_ms = ns as f64 / samples as f64 / 1e6;
                }
            }
        }
        for (id, h) in histograms {
            if let Some(c) = components.get_mut(&id) {
                c.complete_latency_ms = Some(summarize(&h));
            }
        }
        TopologyStats {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            components,
        }
    }

    /// The first executor that failed or stopped on its own, while the runtime was not
    /// shutting down: its `open`/`prepare` failed (an `Err`, a panic, or no answer within
    /// the setup timeout), its thread died of a panic outside user code, or its thread
    /// ended. `None` while all run (and once [`shutdown`](Self::shutdown) began).
    pub fn executor_failure(&self) -> Option<ExecutorFailure> {
        if self.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        self.executors.iter().find_map(|e| {
            let (task, cause) = match e.health.failure() {
                Some(f) => f,
                None if e.health.is_stopped()
                    || e.thread.as_ref().is_some_and(|t| t.is_finished()) =>
                {
                    (e.tasks.0, "the executor stopped unexpectedly".to_owned())
                }
                None => return None,
            };
            Some(ExecutorFailure {
                kind: e.kind,
                component: e.component.clone(),
                task,
                host: self.host.clone(),
                port: self.port,
                cause,
            })
        })
    }

    /// [`executor_failure`](Self::executor_failure) as one line naming the component,
    /// task, host, port and cause, or `None` while all run. A worker exits when this is
    /// `Some`, so its supervisor restarts it (Storm's worker dies on an executor error).
    pub fn failed_executor(&self) -> Option<String> {
        self.executor_failure().map(|f| f.to_string())
    }

    /// Stops like Storm's worker on SIGTERM: spouts are deactivated, the tuple trees in
    /// flight get up to `grace` to complete (until no spout task has a pending tree),
    /// then every executor stops (`close`/`cleanup` run). Trees still pending when
    /// `grace` ran out fail by timeout at their spout after a restart (they are replayed
    /// by reliable spouts).
    pub fn stop_gracefully(&mut self, grace: Duration) {
        self.deactivate();
        let deadline = Instant::now() + grace;
        let settled = |e: &ExecutorHandle| {
            e.thread.as_ref().is_none_or(|t| t.is_finished())
                || (e.stats.deactivations.load(Ordering::Acquire)
                    >= e.deactivations_sent.load(Ordering::Relaxed)
                    && e.stats.pending.load(Ordering::Acquire) == 0)
        };
        while !self.spouts().all(settled) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = self.pending_trees();
        if left > 0 {
            tracing::warn!(
                topology = %self.topology_id,
                "stopping with {left} tuple trees still pending after {} s",
                grace.as_secs_f64()
            );
        }
        self.shutdown(Duration::from_secs(5));
    }
    /// Stops every executor: spouts are closed and bolts cleaned up. Executors stuck in
    /// user code longer than `grace` are left behind (their threads are detached).
    pub fn shutdown(&mut self, grace: Duration) {
        self.shutdown.store(true, Ordering::Relaxed);
        for e in &self.executors {
            let _ = e.tx.try_send(Packet::Wake);
        }
        let deadline = Instant::now() + grace;
        for e in &mut self.executors {
            if let Some(t) = e.thread.take() {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    tracing::warn!(component = %e.component, "executor did not stop in time; detaching it");
                }
            }
        }
    }
}

impl Drop for TopologyRuntime {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// Whether the topology holds tuple trees open by design: a windowed bolt acks a tuple
/// once it left its windows, a stateful topology once a checkpoint committed. Their
/// complete latency is the window or the checkpoint interval, not queueing, so spouts'
/// automatic flow control (which reads queueing from latency) stays off there; set
/// `topology.max.spout.pending` as in Storm.
fn acks_held_by_design(spec: &squall_api::TopologySpec) -> bool {
    use squall_api::config::keys;
    spec.components.iter().any(|(id, c)| {
        id.as_str() == squall_api::state::CHECKPOINT_COMPONENT
            || c.conf
                .get(keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT)
                .is_some()
            || c.conf
                .get(keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS)
                .is_some()
    })
}

/// The totals of one executor.
fn executor_totals(e: &ExecutorHandle) -> ComponentStats {
    let s = &e.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let samples = load(&s.execute_samples);
    let latency = if e.kind == ComponentKind::Spout {
        let h = s
            .complete_latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(summarize(&h))
    } else {
        None
    };
    ComponentStats {
        executors: 1,
        tasks: (e.tasks.1 .0 - e.tasks.0 .0 + 1) as usize,
        emitted: load(&s.emitted),
        transferred: load(&s.transferred),
        acked: load(&s.acked),
        failed: load(&s.failed),
        timed_out: load(&s.timed_out),
        executed: load(&s.executed),
        pending: load(&s.pending),
        pending_limit: load(&s.pending_limit),
        execute_latency_ms: if samples > 0 {
            load(&s.execute_ns) as f64 / samples as f64 / 1e6
        } else {
            0.0
        },
        complete_latency_ms: latency,
        gauges: s.gauges.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

/// p50 / p99 / max / mean of a microsecond histogram, in milliseconds.
pub fn summarize(h: &hdrhistogram::Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_outside_user_code_marks_the_executor_failed_and_is_reported() {
        let (component, task) = (ComponentId::new("count"), TaskId(4));
        let health = ExecutorHealth::default();
        let errors = ErrorLog::default();
        executor_thread(&component, task, &health, &errors, || {
            panic!("index out of bounds")
        });
        let (t, cause) = health.failure().expect("the executor is failed");
        assert_eq!(t, task);
        assert_eq!(
            cause,
            "the executor thread panicked outside user code (a Squall bug): index out of bounds"
        );
        let e = errors.snapshot();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].component.as_str(), e[0].task), ("count", task));

        // A loop that returns normally only ends the executor; one that never finished
        // its setup failed.
        let ok = ExecutorHealth::default();
        executor_thread(&component, task, &ok, &errors, || {});
        assert!(ok.failure().unwrap().1.contains("ended during its setup"));
    }

    #[test]
    fn failures_name_kind_component_task_host_port_and_cause() {
        let mut f = ExecutorFailure {
            kind: ComponentKind::Spout,
            component: ComponentId::new("words"),
            task: TaskId(3),
            host: Some("node-1".into()),
            port: Some(6701),
            cause: "open returned an error: no such file".into(),
        };
        assert_eq!(
            f.to_string(),
            "spout 'words' task 3 on node-1:6701 failed: open returned an error: no such file"
        );
        f.host = None;
        f.port = None;
        assert_eq!(
            f.to_string(),
            "spout 'words' task 3 failed: open returned an error: no such file"
        );
    }
}
