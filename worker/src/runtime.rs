//! Starting, steering and stopping the executors of one topology in this process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::Serialize;
use squall_api::{
    ComponentId, ComponentKind, Config, TaskId, TaskLayout, Topology, TopologyContext,
    ACKER_COMPONENT,
};

use crate::emitter::{RuntimeEmitter, SpoutTracking};
use crate::executor::{run_acker, run_bolt, run_spout, ExecutorCore, SpoutSettings};
use crate::message::Packet;
use crate::routing::build_routes;
use crate::stats::{ErrorLog, ExecutorStats, ReportedError};
use crate::transfer::Transfer;
use crate::WorkerError;

struct ExecutorHandle {
    component: ComponentId,
    kind: ComponentKind,
    tasks: (TaskId, TaskId),
    tx: Sender<Packet>,
    stats: Arc<ExecutorStats>,
    thread: Option<JoinHandle<()>>,
}

/// Which executors run here and where the others' tuples go.
pub struct RuntimePlan {
    /// Local executors: component, kind, first and last task.
    pub local: Vec<(ComponentId, ComponentKind, TaskId, TaskId)>,
    /// Per remote worker: its tasks and the queue its connection drains.
    pub remote: Vec<(Vec<TaskId>, Sender<Packet>)>,
    /// This worker's port (cluster mode).
    pub worker_port: Option<u16>,
}

/// The executors of one topology running in this process.
pub struct TopologyRuntime {
    topology_id: String,
    layout: Arc<TaskLayout>,
    local_dest: Vec<Option<usize>>,
    local_senders: Vec<Sender<Packet>>,
    executors: Vec<ExecutorHandle>,
    shutdown: Arc<AtomicBool>,
    errors: Arc<ErrorLog>,
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
    /// Bolts: mean execute latency in ms (sampled).
    pub execute_latency_ms: f64,
    /// Spouts: complete latency percentiles in ms: p50, p99, max, mean.
    pub complete_latency_ms: Option<LatencySummary>,
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
            remote: Vec::new(),
            worker_port: None,
        };
        Self::start_plan(topology_id, topology, conf, layout, plan, active)
    }

    /// Starts the executors `plan.local`; tuples for the tasks of `plan.remote` go to
    /// those queues (each drained by a connection to another worker). Every component
    /// instance is created from `topology` on this thread; `open`/`prepare` run on the
    /// executor threads.
    pub fn start_plan(
        topology_id: &str,
        topology: &Topology,
        conf: &Config,
        layout: Arc<TaskLayout>,
        plan: RuntimePlan,
        active: bool,
    ) -> Result<Self, WorkerError> {
        conf.validate()?;
        let spec = Arc::new(topology.spec().clone());
        let batch_size = conf.producer_batch_size()? as usize;
        let queue_batches = (conf.receive_buffer_size()? as usize / batch_size).max(4);
        let flush_interval = Duration::from_millis(conf.batch_flush_interval_millis()?);
        let timeout = if conf.message_timeouts_enabled()? {
            Some(Duration::from_secs(conf.message_timeout_secs()?))
        } else {
            None
        };

        // One queue per local executor; spouts get unbounded queues so that an acker is
        // never blocked by a spout (acker → spout traffic is bounded by the pending
        // trees). Remote workers are further destinations after the local ones.
        let all = plan.local;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        let mut dest_of_task = vec![None; layout.max_task().0 as usize + 1];
        for (i, (_, kind, first, last)) in all.iter().enumerate() {
            let (tx, rx) = match kind {
                ComponentKind::Spout => crossbeam_channel::unbounded(),
                ComponentKind::Bolt => crossbeam_channel::bounded(queue_batches),
            };
            senders.push(tx);
            receivers.push(rx);
            for t in first.0..=last.0 {
                dest_of_task[t as usize] = Some(i);
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
        let errors = Arc::new(ErrorLog::default());
        let ackers = layout.acker_tasks().to_vec();

        let mut executors = Vec::new();
        for ((component, kind, first, last), rx) in all.into_iter().zip(receivers) {
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
            );
            let n_tasks = (last.0 - first.0 + 1) as usize;
            let is_acker = component == ACKER_COMPONENT;
            let is_spout = kind == ComponentKind::Spout;
            let emitter = RuntimeEmitter::new(
                component.clone(),
                first,
                routes,
                Transfer::new(&senders, &dest_of_task, batch_size),
                ackers.clone(),
                errors.clone(),
                comp_conf.debug()?,
                is_spout.then(|| SpoutTracking::new(n_tasks)),
            );
            let stats = Arc::new(ExecutorStats::default());
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
            let core = ExecutorCore::new(
                first,
                rx,
                emitter,
                schemas,
                stats.clone(),
                shutdown.clone(),
                comp_conf,
                flush_interval,
                timeout,
            );
            let name = format!("squall-{component}-{first}");
            let builder = std::thread::Builder::new().name(name);
            let thread = if is_acker {
                builder.spawn(move || run_acker(core))
            } else if is_spout {
                let spouts = (0..n_tasks)
                    .map(|_| {
                        topology
                            .new_spout(component.as_str())
                            .ok_or_else(|| WorkerError::MissingComponent(component.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let settings = SpoutSettings {
                    active,
                    max_pending,
                    wait: spout_wait,
                };
                builder.spawn(move || run_spout(core, spouts, contexts, settings))
            } else {
                let bolts = (0..n_tasks)
                    .map(|_| {
                        topology
                            .new_bolt(component.as_str())
                            .ok_or_else(|| WorkerError::MissingComponent(component.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                builder.spawn(move || run_bolt(core, bolts, contexts))
            }
            .map_err(WorkerError::Spawn)?;
            executors.push(ExecutorHandle {
                component,
                kind,
                tasks: (first, last),
                tx: local_senders[executors.len()].clone(),
                stats,
                thread: Some(thread),
            });
        }
        Ok(TopologyRuntime {
            topology_id: topology_id.to_owned(),
            layout,
            local_dest,
            local_senders,
            executors,
            shutdown,
            errors,
            started: Instant::now(),
        })
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

    /// Counters per local executor: component, first task, last task, counters.
    pub fn executor_stats(&self) -> Vec<(ComponentId, TaskId, TaskId, ComponentStats)> {
        self.executors
            .iter()
            .map(|e| {
                let s = &e.stats;
                let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
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
                (
                    e.component.clone(),
                    e.tasks.0,
                    e.tasks.1,
                    ComponentStats {
                        executors: 1,
                        tasks: (e.tasks.1 .0 - e.tasks.0 .0 + 1) as usize,
                        emitted: load(&s.emitted),
                        transferred: load(&s.transferred),
                        acked: load(&s.acked),
                        failed: load(&s.failed),
                        timed_out: load(&s.timed_out),
                        executed: load(&s.executed),
                        execute_latency_ms: if samples > 0 {
                            load(&s.execute_ns) as f64 / samples as f64 / 1e6
                        } else {
                            0.0
                        },
                        complete_latency_ms: latency,
                    },
                )
            })
            .collect()
    }

    fn to_spouts(&self, packet: fn() -> Packet) {
        for e in self
            .executors
            .iter()
            .filter(|e| e.kind == ComponentKind::Spout)
        {
            let _ = e.tx.send(packet());
        }
    }

    /// Spouts start calling `next_tuple` again.
    pub fn activate(&self) {
        self.to_spouts(|| Packet::Activate)
    }

    /// Spouts stop calling `next_tuple`; in-flight tuples still complete.
    pub fn deactivate(&self) {
        self.to_spouts(|| Packet::Deactivate)
    }

    /// The errors tasks reported, oldest first.
    pub fn errors(&self) -> Vec<ReportedError> {
        self.errors.snapshot()
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

    /// A description of the first executor that stopped on its own (its thread ended
    /// while the runtime was not shutting down), or `None` while all run. A worker
    /// exits when this is `Some`, so its supervisor restarts it (Storm's worker dies on an
    /// executor error).
    pub fn failed_executor(&self) -> Option<String> {
        if self.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        self.executors.iter().find_map(|e| {
            e.thread.as_ref().filter(|t| t.is_finished()).map(|_| {
                format!(
                    "executor {}[{}-{}] stopped",
                    e.component, e.tasks.0, e.tasks.1
                )
            })
        })
    }

    /// Stops like Storm's worker on SIGTERM: spouts are deactivated, in-flight trees get
    /// up to `grace` to complete, then every executor stops (`close`/`cleanup` run).
    pub fn stop_gracefully(&mut self, grace: Duration) {
        self.deactivate();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
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
