//! Worker mode: the topology binary started by a supervisor runs its share of the
//! executors, exchanges tuples with the other workers over TCP and heartbeats to its
//! supervisor (a local file) and to Nimbus (RPC).
//!
//! [`run`] does, in order: install a default log subscriber (stderr, `info` unless
//! `RUST_LOG` says otherwise), listen on the slot's port, start the local executors and
//! one [`Lane`] per remote executor ([`WorkerNet`]), print one line per local executor,
//! then supervise until something says stop:
//!
//! - a **local heartbeat** thread writes the heartbeat file every
//!   `worker.heartbeat.frequency.secs`, whatever Nimbus does;
//! - a **Nimbus heartbeat** thread posts executor counters and new errors (5 s timeout
//!   per Nimbus) and hands the verdict over: `Assigned` sets the spouts' status,
//!   `NotAssigned` for 3 s stops the worker, `Unknown` or no answer changes nothing;
//! - the **main** thread applies verdicts, re-reads the launch file every period (the
//!   supervisor rewrites it when executors of *other* workers moved: the lanes to them
//!   are re-pointed; when this worker's own executors or the epoch changed, it stops),
//!   watches for SIGTERM (stop gracefully: spouts off, in-flight trees get
//!   `supervisor.worker.shutdown.sleep.secs`, then exit 0) and for a dead executor (report
//!   it to Nimbus, exit 1 so the supervisor restarts the worker).
//!
//! Components get the topology's configuration with the cluster settings of the launch
//! file underneath ([`component_conf`]): the cluster's `storm.zookeeper.*`, unless the
//! topology sets them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use squall_api::{ComponentId, ComponentKind, Config, TaskId, TaskLayout, Topology};
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::NimbusClient;
use squall_cluster::secret::Secret;
use squall_cluster::state::{
    now_secs, Assignment, ErrorInfo, ExecutorHeartbeat, HeartbeatResponse, LocalHeartbeat,
    TopologyStatus, WorkerHeartbeat, WorkerLaunch, WorkerSlot,
};

use crate::ratelimit::LogLimiter;
use crate::runtime::{RuntimePlan, TopologyRuntime};
use crate::transport::{
    connect_lane, Identity, Lane, LocalRouter, Role, TransportServer, TransportStats,
};
use crate::WorkerError;

/// Environment variable naming the launch file a supervisor wrote for this worker.
pub const WORKER_SPEC_ENV: &str = "SQUALL_WORKER_SPEC";

/// Storm's key for how long a stopping worker gets before it is killed; the worker
/// gives its in-flight trees that long (default 3 s).
pub const SHUTDOWN_SLEEP_KEY: &str = "supervisor.worker.shutdown.sleep.secs";

/// How long one heartbeat to one Nimbus may take.
const NIMBUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last report of a dead executor may take.
const LAST_REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `NotAssigned` must last before the worker stops (Nimbus may be writing a
/// new assignment).
const NOT_ASSIGNED_GRACE: Duration = Duration::from_secs(3);
/// For this long after it starts, a worker heartbeats Nimbus every
/// [`STARTUP_HEARTBEAT`] instead of every `worker.heartbeat.frequency.secs`: a new
/// topology's first counters (and a restarted worker's recovery) show in the UI within
/// a tenth of a second instead of up to a heartbeat period later.
const STARTUP: Duration = Duration::from_secs(3);
const STARTUP_HEARTBEAT: Duration = Duration::from_millis(100);

fn fail(msg: impl Into<String>) -> WorkerError {
    WorkerError::NotLaunched(msg.into())
}

/// Reads the launch file named by [`WORKER_SPEC_ENV`].
pub fn read_launch() -> Result<WorkerLaunch, WorkerError> {
    let path = std::env::var(WORKER_SPEC_ENV).map_err(|_| {
        fail(format!(
            "{WORKER_SPEC_ENV} is not set; workers are started by a supervisor"
        ))
    })?;
    read_launch_file(Path::new(&path))
}

/// Reads a launch file.
pub fn read_launch_file(path: &Path) -> Result<WorkerLaunch, WorkerError> {
    let p = path.display();
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {p}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| fail(format!("invalid launch file {p}: {e}")))
}

/// The configuration this worker hands its components (`open` / `prepare`): the
/// topology's, with the cluster settings of the launch file
/// ([`WorkerLaunch::cluster_conf`]) underneath, as Storm merges the cluster config under
/// the topology's. A key the topology sets wins; one it leaves unset or `null` takes the
/// cluster's value. A launch file without cluster settings gives the topology's as is.
pub fn component_conf(launch: &WorkerLaunch) -> Config {
    let mut conf = launch.cluster_conf.clone();
    for (key, value) in launch.assignment.conf.iter() {
        if !value.is_null() || conf.get(key).is_none() {
            conf.set(key, value.clone());
        }
    }
    conf
}

fn resolve(addr: &str) -> Result<SocketAddr, WorkerError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| fail(format!("cannot resolve worker address {addr}")))
}

/// What a newer assignment means for a running worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchChange {
    /// Nothing this worker acts on.
    Unchanged,
    /// Only executors of other workers moved: re-point the lanes to them, by first task,
    /// to their new `host:port`.
    Moved(Vec<(TaskId, String)>),
    /// This worker's own executors, the epoch or the topology changed: stop, the
    /// supervisor starts a new worker (the reason says what changed).
    Restart(String),
}

/// Compares the assignment a worker runs with a newer one for slot `me` (pure).
pub fn compare(current: &Assignment, newer: &Assignment, me: &WorkerSlot) -> LaunchChange {
    if newer.version <= current.version && newer.epoch == current.epoch {
        return LaunchChange::Unchanged;
    }
    if newer.topology_id != current.topology_id {
        return LaunchChange::Restart(format!("the slot now runs topology {}", newer.topology_id));
    }
    if newer.epoch != current.epoch {
        return LaunchChange::Restart(format!(
            "the assignment moved from epoch {} to epoch {}",
            current.epoch, newer.epoch
        ));
    }
    let mine = |a: &Assignment| -> Vec<(String, TaskId, TaskId)> {
        let mut v: Vec<_> = a
            .executors_of(me)
            .into_iter()
            .map(|e| (e.component.clone(), e.first, e.last))
            .collect();
        v.sort();
        v
    };
    if mine(current) != mine(newer) {
        return LaunchChange::Restart("this worker's executors changed".to_owned());
    }
    let others = |a: &Assignment| -> BTreeMap<TaskId, (TaskId, String)> {
        a.executors
            .iter()
            .filter(|e| &e.slot != me)
            .map(|e| (e.first, (e.last, a.address(&e.slot))))
            .collect()
    };
    let (before, after) = (others(current), others(newer));
    if before.len() != after.len()
        || before
            .iter()
            .zip(&after)
            .any(|((f1, (l1, _)), (f2, (l2, _)))| f1 != f2 || l1 != l2)
    {
        return LaunchChange::Restart("the other workers' executors changed".to_owned());
    }
    let moved: Vec<(TaskId, String)> = before
        .iter()
        .zip(after)
        .filter(|((_, (_, old)), (_, (_, new)))| old != new)
        .map(|(_, (first, (_, new)))| (first, new))
        .collect();
    if moved.is_empty() {
        LaunchChange::Unchanged
    } else {
        LaunchChange::Moved(moved)
    }
}

/// The executors of one worker and their transport: the local executors, a server for
/// the lanes of other workers, and a [`Lane`] per remote executor.
pub struct WorkerNet {
    runtime: TopologyRuntime,
    server: TransportServer,
    /// By the remote executor's first task.
    lanes: BTreeMap<TaskId, Lane>,
    me: WorkerSlot,
    assignment: Mutex<Assignment>,
}

impl WorkerNet {
    /// Starts the executors `assignment` puts on slot `me`, serving `listener`; lanes to
    /// every other executor (bounded for bolts, unbounded for spouts and ackers). With
    /// `secret`, every connection must prove knowledge of it. Spouts start `active` or
    /// not.
    pub fn start(
        topology: &Topology,
        assignment: &Assignment,
        me: &WorkerSlot,
        listener: TcpListener,
        secret: Option<Secret>,
        active: bool,
    ) -> Result<Self, WorkerError> {
        let a = assignment;
        let conf = a.conf.clone();
        let layout = Arc::new(TaskLayout::new(topology.spec(), conf.num_ackers()?));
        // The assignment must describe the topology this binary builds.
        for e in &a.executors {
            let tasks = layout.component_tasks(&e.component);
            if !tasks.contains(&e.first) || !tasks.contains(&e.last) {
                return Err(fail(format!(
                    "the assignment of topology '{}' puts tasks {}-{} in component '{}', which this binary does not build that way; was it submitted with other arguments?",
                    a.topology_name, e.first, e.last, e.component
                )));
            }
        }
        let kind = |c: &str| {
            layout
                .components()
                .get(c)
                .map_or(ComponentKind::Bolt, |t| t.kind)
        };
        let local = a
            .executors_of(me)
            .into_iter()
            .map(|e| {
                (
                    ComponentId::new(e.component.as_str()),
                    kind(&e.component),
                    e.first,
                    e.last,
                )
            })
            .collect::<Vec<_>>();
        let identity =
            Identity::new(a.topology_id.clone(), a.epoch, me.to_string()).with_secret(secret);
        let capacity = (conf.receive_buffer_size()? / conf.producer_batch_size()?).max(4) as usize;
        let mut remote = Vec::new();
        let mut lanes = BTreeMap::new();
        for e in a.executors.iter().filter(|e| &e.slot != me) {
            let addr = resolve(&a.address(&e.slot))?;
            let bound = (!Role::of(&layout, e.first).unbounded_lane()).then_some(capacity);
            let (tx, lane) = connect_lane(addr, &identity, e.first, bound)
                .map_err(|err| fail(format!("cannot start the lane to {addr}: {err}")))?;
            remote.push(((e.first.0..=e.last.0).map(TaskId).collect(), tx));
            lanes.insert(e.first, lane);
        }
        let plan = RuntimePlan {
            local,
            remote,
            worker_port: Some(me.port),
            host: a.node_host.get(&me.node).cloned(),
            ..RuntimePlan::default()
        };
        let runtime =
            TopologyRuntime::start_plan(&a.topology_id, topology, &conf, layout, plan, active)?;
        let server = TransportServer::start(listener, identity, LocalRouter::for_runtime(&runtime))
            .map_err(|e| fail(format!("cannot serve port {}: {e}", me.port)))?;
        Ok(WorkerNet {
            runtime,
            server,
            lanes,
            me: me.clone(),
            assignment: Mutex::new(assignment.clone()),
        })
    }

    /// The local executors.
    pub fn runtime(&self) -> &TopologyRuntime {
        &self.runtime
    }

    /// The assignment the worker follows now.
    pub fn assignment(&self) -> Assignment {
        self.assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The transport's counters: the server's plus every lane's.
    pub fn transport_stats(&self) -> TransportStats {
        self.lanes
            .values()
            .fold(self.server.stats(), |s, l| s + l.stats())
    }

    /// The lane to the remote executor whose first task is `first`.
    pub fn lane(&self, first: TaskId) -> Option<&Lane> {
        self.lanes.get(&first)
    }

    /// Follows `newer` when only other workers' executors moved (re-pointing their
    /// lanes); otherwise says why this worker must stop. Returns what changed.
    pub fn follow(&self, newer: &Assignment) -> Result<LaunchChange, WorkerError> {
        let mut current = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let change = compare(&current, newer, &self.me);
        match &change {
            LaunchChange::Unchanged => {
                if newer.version > current.version {
                    *current = newer.clone();
                }
            }
            LaunchChange::Moved(moved) => {
                for (first, addr) in moved {
                    let addr = resolve(addr)?;
                    if let Some(lane) = self.lanes.get(first) {
                        lane.set_addr(addr);
                    }
                }
                *current = newer.clone();
            }
            LaunchChange::Restart(_) => {}
        }
        Ok(change)
    }

    /// Stops the executors (gracefully with `Some(grace)`: spouts off, in-flight trees get
    /// that long), then the transport.
    pub fn shutdown(mut self, grace: Option<Duration>) {
        match grace {
            Some(g) => self.runtime.stop_gracefully(g),
            None => self.runtime.shutdown(Duration::from_secs(5)),
        }
        self.server.shutdown();
        for lane in self.lanes.values_mut() {
            lane.shutdown();
        }
    }
}

/// A channel that receives once when the process gets SIGTERM.
fn watch_sigterm() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("squall-sigterm".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("cannot watch for SIGTERM: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut s) => {
                        let _ = ready_tx.send(());
                        if s.recv().await.is_some() {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => tracing::warn!("cannot watch for SIGTERM: {e}"),
                }
            });
        });
    if spawned.is_ok() {
        // Handle SIGTERM before any executor runs.
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    }
    rx
}

/// `supervisor.worker.shutdown.sleep.secs`, 3 s when absent.
fn shutdown_grace(conf: &Config) -> Duration {
    match conf.get_u64(SHUTDOWN_SLEEP_KEY) {
        Ok(Some(s)) => Duration::from_secs(s),
        Ok(None) => Duration::from_secs(3),
        Err(e) => {
            tracing::warn!("{e}; using 3 s");
            Duration::from_secs(3)
        }
    }
}

/// Runs this process as the worker described by `launch` until it is told to stop
/// (SIGTERM, Nimbus no longer assigns it, its executors were re-assigned); then returns.
/// When an executor dies, reports it and exits the process with code 1 so the supervisor
/// restarts the worker.
pub fn run(topology: &Topology, launch: WorkerLaunch) -> Result<(), WorkerError> {
    crate::logging::init_worker_logging();
    let sigterm = watch_sigterm();
    let spec_path = std::env::var_os(WORKER_SPEC_ENV).map(PathBuf::from);
    let secret = match &launch.secret_file {
        Some(p) => Some(Secret::from_file(p).map_err(|e| fail(e.to_string()))?),
        None => None,
    };
    let mut assignment = launch.assignment.clone();
    assignment.conf = component_conf(&launch);
    let a = &assignment;
    let conf = a.conf.clone();
    let me = WorkerSlot {
        node: launch.supervisor_id.clone(),
        port: launch.port,
    };
    // Listen first so peers can connect while the executors start.
    let listener = TcpListener::bind(("0.0.0.0", launch.port))
        .map_err(|e| fail(format!("cannot listen on port {}: {e}", launch.port)))?;
    // Spouts start inactive until Nimbus answers, so nothing is emitted before every
    // worker can be reached; a standalone worker has no Nimbus to wait for.
    let standalone = launch.nimbus.is_empty();
    let net = WorkerNet::start(topology, a, &me, listener, secret.clone(), standalone)?;
    eprintln!(
        "worker {me} of topology {} (epoch {}, assignment version {}) running {} executors on port {}",
        a.topology_id,
        a.epoch,
        a.version,
        net.runtime.executor_stats().len(),
        launch.port
    );
    for e in a.executors_of(&me) {
        eprintln!(
            "  executor {} tasks [{}-{}] on {}",
            e.component,
            e.first,
            e.last,
            a.address(&me)
        );
    }
    let every = conf
        .worker_heartbeat_frequency()?
        .max(Duration::from_millis(100));
    let sup = Supervision {
        net: &net,
        launch: &launch,
        spec_path: spec_path.as_deref(),
        secret,
        every,
        not_assigned_grace: NOT_ASSIGNED_GRACE,
    };
    match sup.run(&sigterm) {
        Outcome::Stop(reason) => {
            eprintln!("worker {me}: {reason}; stopping");
            net.shutdown(Some(shutdown_grace(&conf)));
            Ok(())
        }
        Outcome::Failed(what) => {
            eprintln!("worker {me}: {what}; exiting so that the supervisor restarts it");
            net.shutdown(None);
            std::process::exit(1);
        }
    }
}

/// Why supervision ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Stop gracefully and exit 0.
    Stop(String),
    /// An executor died (already reported): exit non-zero.
    Failed(String),
}

/// What the Nimbus heartbeat thread hands the main thread after each round.
type Verdict = Option<HeartbeatResponse>;

struct Supervision<'a> {
    net: &'a WorkerNet,
    launch: &'a WorkerLaunch,
    spec_path: Option<&'a Path>,
    secret: Option<Secret>,
    every: Duration,
    not_assigned_grace: Duration,
}

impl Supervision<'_> {
    /// Heartbeats until something says stop (`stop` receiving counts as SIGTERM).
    fn run(&self, sigterm: &Receiver<()>) -> Outcome {
        let started = Instant::now();
        // Errors with a higher seq than this are still to be sent.
        let sent_seq = AtomicU64::new(0);
        let (verdict_tx, verdicts) = crossbeam_channel::unbounded::<Verdict>();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let cancel = tokio::sync::Notify::new();
        let outcome = std::thread::scope(|s| {
            let local_stop = stop_rx.clone();
            let _ = std::thread::Builder::new()
                .name("squall-heartbeat-file".into())
                .spawn_scoped(s, move || self.local_heartbeat_loop(&local_stop));
            if !self.launch.nimbus.is_empty() {
                let (sent_seq, cancel) = (&sent_seq, &cancel);
                let _ = std::thread::Builder::new()
                    .name("squall-heartbeat-nimbus".into())
                    .spawn_scoped(s, move || {
                        self.nimbus_loop(started, sent_seq, &verdict_tx, &stop_rx, cancel)
                    });
            }
            let outcome = self.main_loop(sigterm, &verdicts);
            // End both heartbeat loops, even in the middle of a post to a hung Nimbus.
            drop(stop_tx);
            cancel.notify_one();
            outcome
        });
        if let Outcome::Failed(what) = &outcome {
            self.report_failure(started, &sent_seq, what);
        }
        outcome
    }

    fn main_loop(&self, sigterm: &Receiver<()>, verdicts: &Receiver<Verdict>) -> Outcome {
        let runtime = self.net.runtime();
        let mut active = self.launch.nimbus.is_empty();
        let mut not_assigned_since: Option<Instant> = None;
        let mut next_poll = Instant::now() + self.every;
        let tick = self.every.min(Duration::from_millis(200));
        loop {
            crossbeam_channel::select! {
                recv(sigterm) -> _ => return Outcome::Stop("received SIGTERM".to_owned()),
                recv(verdicts) -> v => match v {
                    Ok(Some(HeartbeatResponse::Assigned { status, assignment_version, log_levels })) => {
                        not_assigned_since = None;
                        crate::logging::apply_log_levels(&log_levels);
                        let want_active = status == TopologyStatus::Active;
                        if want_active != active {
                            if want_active {
                                runtime.activate();
                            } else {
                                runtime.deactivate();
                            }
                            active = want_active;
                        }
                        if assignment_version > self.net.assignment().version {
                            next_poll = Instant::now(); // re-read the launch file now
                        }
                    }
                    Ok(Some(HeartbeatResponse::NotAssigned)) => {
                        let since = *not_assigned_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.not_assigned_grace {
                            return Outcome::Stop("Nimbus no longer assigns this worker".to_owned());
                        }
                    }
                    // Nimbus cannot tell, or cannot be reached: carry on as before.
                    Ok(Some(HeartbeatResponse::Unknown) | None) | Err(_) => {}
                },
                default(tick) => {}
            }
            if let Some(what) = runtime.failed_executor() {
                return Outcome::Failed(what);
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.every;
                if let Some(reason) = self.poll_launch_file() {
                    return Outcome::Stop(reason);
                }
            }
        }
    }

    /// Re-reads the launch file; `Some(reason)` when this worker must stop.
    fn poll_launch_file(&self) -> Option<String> {
        let path = self.spec_path?;
        let newer = match read_launch_file(path) {
            Ok(l) => l.assignment,
            // The supervisor replaces the file atomically; a failure is transient or
            // the file is gone with the worker's slot (Nimbus will say).
            Err(e) => {
                tracing::debug!("{e}");
                return None;
            }
        };
        match self.net.follow(&newer) {
            Ok(LaunchChange::Restart(reason)) => Some(reason),
            Ok(LaunchChange::Moved(moved)) => {
                tracing::info!(
                    "assignment version {}: {} executors of other workers moved; lanes re-pointed",
                    newer.version,
                    moved.len()
                );
                None
            }
            Ok(LaunchChange::Unchanged) => None,
            Err(e) => {
                tracing::warn!("cannot follow assignment version {}: {e}", newer.version);
                None
            }
        }
    }

    fn executors(&self) -> Vec<ExecutorHeartbeat> {
        self.net.runtime().heartbeats()
    }

    fn local_heartbeat_loop(&self, stop: &Receiver<()>) {
        let pid = std::process::id();
        let warn = LogLimiter::new(Duration::from_secs(60), 1);
        loop {
            let a = self.net.assignment();
            let hb = LocalHeartbeat {
                topology_id: self.launch.topology_id.clone(),
                assignment_version: a.version,
                epoch: a.epoch,
                time_secs: now_secs(),
                pid,
                executors: self.executors(),
            };
            if let Err(e) = write_local_heartbeat(&self.launch.heartbeat_file, &hb) {
                if let Some(n) = warn.allow() {
                    tracing::warn!(
                        "cannot write heartbeat file {}: {e}{}",
                        self.launch.heartbeat_file.display(),
                        LogLimiter::suffix(n)
                    );
                }
            }
            match stop.recv_timeout(self.every) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    fn heartbeat(&self, started: Instant, errors: Vec<ErrorInfo>) -> WorkerHeartbeat {
        let l = self.launch;
        let a = self.net.assignment();
        WorkerHeartbeat {
            topology_id: l.topology_id.clone(),
            supervisor_id: l.supervisor_id.clone(),
            host: l.host.clone(),
            port: l.port,
            assignment_version: a.version,
            epoch: a.epoch,
            uptime_secs: started.elapsed().as_secs(),
            time_secs: now_secs(),
            executors: self.executors(),
            errors,
        }
    }

    /// The errors reported after `sent_seq`, and the highest seq among them.
    fn new_errors(&self, sent_seq: u64) -> (Vec<ErrorInfo>, u64) {
        let mut last = sent_seq;
        let errors = self
            .net
            .runtime()
            .errors_since(sent_seq)
            .into_iter()
            .map(|e| {
                last = last.max(e.seq);
                ErrorInfo {
                    component: e.component.to_string(),
                    task: e.task.0,
                    host: self.launch.host.clone(),
                    port: self.launch.port,
                    time_secs: e.time_secs,
                    error: e.error,
                }
            })
            .collect();
        (errors, last)
    }

    fn clients(&self, timeout: Duration) -> Vec<NimbusClient> {
        self.launch
            .nimbus
            .iter()
            .map(|a| {
                NimbusClient::new(a)
                    .with_secret(self.secret.clone())
                    .with_timeout(timeout)
            })
            .collect()
    }

    /// Posts `hb` to each Nimbus in turn until one answers.
    /// `None` also when `cancel` is notified meanwhile.
    fn post(
        rt: &tokio::runtime::Runtime,
        clients: &[NimbusClient],
        hb: &WorkerHeartbeat,
        warn: &LogLimiter,
        cancel: &tokio::sync::Notify,
    ) -> Verdict {
        for c in clients {
            let answer = rt.block_on(async {
                tokio::select! {
                    r = c.heartbeat(hb) => Some(r),
                    _ = cancel.notified() => None,
                }
            });
            match answer? {
                Ok(r) => return Some(r),
                Err(e) => {
                    if let Some(n) = warn.allow() {
                        tracing::warn!(
                            "heartbeat to Nimbus at {} failed: {e}{}",
                            c.addr(),
                            LogLimiter::suffix(n)
                        );
                    }
                }
            }
        }
        None
    }

    fn nimbus_loop(
        &self,
        started: Instant,
        sent_seq: &AtomicU64,
        verdicts: &Sender<Verdict>,
        stop: &Receiver<()>,
        cancel: &tokio::sync::Notify,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot start the Nimbus heartbeat runtime: {e}");
                return;
            }
        };
        let clients = rt.block_on(async { self.clients(NIMBUS_TIMEOUT) });
        let warn = LogLimiter::new(Duration::from_secs(30), 1);
        loop {
            let (errors, last) = self.new_errors(sent_seq.load(Ordering::Relaxed));
            let hb = self.heartbeat(started, errors);
            let verdict = Self::post(&rt, &clients, &hb, &warn, cancel);
            if verdict.is_some() {
                sent_seq.store(last, Ordering::Relaxed);
            }
            if verdicts.send(verdict).is_err() {
                return;
            }
            let wait = if started.elapsed() < STARTUP {
                self.every.min(STARTUP_HEARTBEAT)
            } else {
                self.every
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Best effort: tells Nimbus which executor died, as an error of its component.
    fn report_failure(&self, started: Instant, sent_seq: &AtomicU64, what: &str) {
        if self.launch.nimbus.is_empty() {
            return;
        }
        let (mut errors, _) = self.new_errors(sent_seq.load(Ordering::Relaxed));
        let (component, task) = self.net.runtime().executor_failure().map_or_else(
            || ("__system".to_owned(), 0),
            |f| (f.component.to_string(), f.task.0),
        );
        errors.push(ErrorInfo {
            component,
            task,
            host: self.launch.host.clone(),
            port: self.launch.port,
            time_secs: now_secs(),
            error: format!("{what}; the worker exits and is restarted"),
        });
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let clients = rt.block_on(async { self.clients(LAST_REPORT_TIMEOUT) });
        let warn = LogLimiter::new(Duration::from_secs(30), 1);
        let hb = self.heartbeat(started, errors);
        let _ = Self::post(&rt, &clients, &hb, &warn, &tokio::sync::Notify::new());
    }
}

/// Writes the heartbeat file atomically (a temporary file, then a rename).
fn write_local_heartbeat(path: &Path, hb: &LocalHeartbeat) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(hb).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use squall_api::{values, Bolt, OutputCollector, Spout, SpoutOutputCollector, Tuple};
    use squall_api::{OutputFieldsDeclarer, TopologyBuilder, Value};
    use squall_cluster::state::ExecutorAssignment;

    use super::*;

    fn slot(port: u16) -> WorkerSlot {
        WorkerSlot {
            node: "n1".into(),
            port,
        }
    }

    fn assignment(places: &[(&str, u32, u32, u16)], version: u64, epoch: u64) -> Assignment {
        Assignment {
            topology_id: "t-1".into(),
            topology_name: "t".into(),
            binary_sha256: String::new(),
            args: Vec::new(),
            conf: Config::new(),
            executors: places
                .iter()
                .map(|&(c, first, last, port)| ExecutorAssignment {
                    component: c.into(),
                    first: TaskId(first),
                    last: TaskId(last),
                    slot: slot(port),
                })
                .collect(),
            node_host: BTreeMap::from([("n1".to_owned(), "127.0.0.1".to_owned())]),
            slot_start_secs: BTreeMap::new(),
            version,
            epoch,
        }
    }

    fn launch_json(a: &Assignment) -> serde_json::Value {
        serde_json::json!({
            "topology_id": a.topology_id,
            "topology_name": a.topology_name,
            "supervisor_id": "n1",
            "host": "127.0.0.1",
            "port": 6700,
            "assignment": a,
            "nimbus": ["127.0.0.1:6627"],
            "heartbeat_file": "/tmp/heartbeat",
        })
    }

    #[test]
    fn components_get_the_clusters_zookeeper_settings_under_the_topologys() {
        let mut a = assignment(&[("s", 1, 1, 6700)], 1, 1);
        a.conf
            .set("topology.workers", 2)
            .set("my.app.key", "x")
            .set("storm.zookeeper.root", "/mine")
            .set("storm.zookeeper.servers", Value::Null);

        // A launch file written before the cluster settings existed still reads, and
        // components get the topology's configuration as is.
        let old: WorkerLaunch = serde_json::from_value(launch_json(&a)).unwrap();
        assert!(old.cluster_conf.iter().next().is_none());
        assert_eq!(component_conf(&old), a.conf);

        let mut json = launch_json(&a);
        json["cluster_conf"] = serde_json::json!({
            "storm.zookeeper.servers": ["zk1", "zk2"],
            "storm.zookeeper.port": 2182,
            "storm.zookeeper.root": "/squall",
            "storm.zookeeper.session.timeout": 20000,
        });
        let launch: WorkerLaunch = serde_json::from_value(json).unwrap();
        let conf = component_conf(&launch);
        // The topology's own keys stay; the root it set wins over the cluster's; the
        // servers it left null and the keys it did not set come from the cluster.
        assert_eq!(conf.get_u64("topology.workers").unwrap(), Some(2));
        assert_eq!(conf.get_str("my.app.key").unwrap(), Some("x"));
        assert_eq!(conf.zookeeper_root().unwrap(), "/mine");
        assert_eq!(
            conf.zookeeper_connect_string().unwrap(),
            "zk1:2182,zk2:2182"
        );
        assert_eq!(
            conf.zookeeper_session_timeout().unwrap(),
            Duration::from_secs(20)
        );
        // Nothing else is added.
        assert_eq!(conf.iter().count(), a.conf.iter().count() + 2);
    }

    #[test]
    fn newer_assignments_re_point_moved_executors_or_restart_the_worker() {
        let me = slot(1);
        let a = assignment(&[("s", 1, 1, 1), ("b", 2, 3, 2), ("b", 4, 5, 3)], 4, 2);
        // Not newer, or newer and nothing of interest changed.
        assert_eq!(compare(&a, &a, &me), LaunchChange::Unchanged);
        let mut same = a.clone();
        same.version = 5;
        assert_eq!(compare(&a, &same, &me), LaunchChange::Unchanged);
        // An executor of another worker moved: re-point its lane.
        let moved = assignment(&[("s", 1, 1, 1), ("b", 2, 3, 2), ("b", 4, 5, 7)], 5, 2);
        assert_eq!(
            compare(&a, &moved, &me),
            LaunchChange::Moved(vec![(TaskId(4), "127.0.0.1:7".into())])
        );
        // An older file (the supervisor lags) changes nothing.
        assert_eq!(compare(&moved, &a, &me), LaunchChange::Unchanged);
        // This worker's executors changed, or the epoch: a new worker is due.
        let mine = assignment(&[("s", 1, 1, 9), ("b", 2, 3, 2), ("b", 4, 5, 3)], 5, 2);
        assert!(
            matches!(compare(&a, &mine, &me), LaunchChange::Restart(r) if r.contains("executors"))
        );
        let gained = assignment(&[("s", 1, 1, 1), ("b", 2, 3, 1), ("b", 4, 5, 3)], 5, 2);
        assert!(matches!(
            compare(&a, &gained, &me),
            LaunchChange::Restart(_)
        ));
        let epoch = assignment(&[("s", 1, 1, 1), ("b", 2, 3, 2), ("b", 4, 5, 3)], 5, 3);
        assert!(
            matches!(compare(&a, &epoch, &me), LaunchChange::Restart(r) if r.contains("epoch"))
        );
        let other = assignment(&[("s", 1, 1, 1), ("b", 2, 2, 2), ("b", 3, 5, 3)], 5, 2);
        assert!(matches!(compare(&a, &other, &me), LaunchChange::Restart(_)));
    }

    #[derive(Clone)]
    struct Ticker;

    impl Spout for Ticker {
        fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
            std::thread::sleep(Duration::from_millis(1));
            out.emit(values![1]);
        }
        fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
            d.declare(["n"]);
        }
    }

    #[derive(Clone)]
    struct Sink;

    impl Bolt for Sink {
        fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {}
    }

    /// A fake Nimbus: answers every request with the JSON in `answer`; counts requests.
    /// With `None` it accepts and never answers.
    fn fake_nimbus(answer: Arc<Mutex<Option<String>>>) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            let mut silent = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::Relaxed);
                let Some(body) = answer.lock().unwrap().clone() else {
                    silent.push(conn); // keep it open, never answer
                    continue;
                };
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the headers and the body announced.
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&req).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if req.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        (addr, requests)
    }

    struct Fixture {
        net: WorkerNet,
        launch: WorkerLaunch,
        dir: PathBuf,
        spec: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// One worker running the spout (and the acker); the bolt runs on a worker that is
    /// not there (its lane keeps retrying).
    fn fixture(name: &str, nimbus: Vec<String>) -> Fixture {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let mut b = TopologyBuilder::new();
        b.set_spout("s", Ticker, 1);
        b.set_bolt("b", Sink, 1).shuffle_grouping("s");
        let topology = b.create_topology().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let me = listener.local_addr().unwrap().port();
        let nobody = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Tasks: b = 1, s = 2, acker = 3.
        let mut a = assignment(
            &[("b", 1, 1, nobody), ("s", 2, 2, me), ("__acker", 3, 3, me)],
            1,
            1,
        );
        a.conf.set_num_ackers(1);
        let dir = std::env::temp_dir().join(format!("squall-worker-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let launch = WorkerLaunch {
            topology_id: a.topology_id.clone(),
            topology_name: a.topology_name.clone(),
            supervisor_id: "n1".into(),
            host: "127.0.0.1".into(),
            port: me,
            assignment: a.clone(),
            nimbus,
            heartbeat_file: dir.join("heartbeat"),
            secret_file: None,
            cluster_conf: Config::new(),
        };
        let spec = dir.join("launch.json");
        std::fs::write(&spec, serde_json::to_vec(&launch).unwrap()).unwrap();
        let net = WorkerNet::start(&topology, &a, &slot(me), listener, None, false).unwrap();
        Fixture {
            net,
            launch,
            dir,
            spec,
        }
    }

    impl Fixture {
        fn supervision(&self) -> Supervision<'_> {
            Supervision {
                net: &self.net,
                launch: &self.launch,
                spec_path: Some(&self.spec),
                secret: None,
                every: Duration::from_millis(200),
                not_assigned_grace: Duration::from_millis(600),
            }
        }

        fn emitted(&self) -> u64 {
            self.net.runtime().stats().component("s").emitted
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_heartbeat_file_is_written_while_nimbus_hangs_and_sigterm_still_stops() {
        let (nimbus, requests) = fake_nimbus(Arc::new(Mutex::new(None)));
        let f = fixture("hung", vec![nimbus]);
        let (term_tx, term) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            let sup = f.supervision();
            let run = s.spawn(move || sup.run(&term));
            wait_for("a heartbeat to Nimbus", || {
                requests.load(Ordering::Relaxed) > 0
            });
            // Nimbus holds the post; the file keeps being rewritten.
            for _ in 0..3 {
                let _ = std::fs::remove_file(&f.launch.heartbeat_file);
                wait_for("the heartbeat file", || f.launch.heartbeat_file.exists());
            }
            let hb: LocalHeartbeat =
                serde_json::from_slice(&std::fs::read(&f.launch.heartbeat_file).unwrap()).unwrap();
            assert_eq!(
                (hb.topology_id.as_str(), hb.assignment_version, hb.epoch),
                ("t-1", 1, 1)
            );
            assert_eq!(hb.pid, std::process::id());
            assert_eq!(hb.executors.len(), 2);
            // Without an answer the spouts never started.
            assert_eq!(f.emitted(), 0);
            let asked = Instant::now();
            term_tx.send(()).unwrap();
            let outcome = run.join().unwrap();
            assert_eq!(outcome, Outcome::Stop("received SIGTERM".into()));
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "stopping waited for the hung Nimbus"
            );
        });
    }

    #[test]
    fn verdicts_steer_the_spouts_and_not_assigned_stops_the_worker() {
        let answer = Arc::new(Mutex::new(Some(
            r#"{"verdict":"assigned","status":"ACTIVE","assignment_version":1}"#.to_owned(),
        )));
        let (nimbus, _) = fake_nimbus(answer.clone());
        let f = fixture("verdicts", vec![nimbus]);
        let (_term_tx, term) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            let sup = f.supervision();
            let run = s.spawn(move || sup.run(&term));
            wait_for("the spout to start", || f.emitted() > 0);
            // Unknown: carry on (the spout keeps emitting).
            *answer.lock().unwrap() = Some(r#"{"verdict":"unknown"}"#.to_owned());
            let before = f.emitted();
            std::thread::sleep(Duration::from_millis(800));
            wait_for("the spout to keep emitting", || f.emitted() > before);
            assert!(!run.is_finished());
            // Inactive: the spout stops.
            *answer.lock().unwrap() = Some(
                r#"{"verdict":"assigned","status":"INACTIVE","assignment_version":1}"#.to_owned(),
            );
            std::thread::sleep(Duration::from_millis(800));
            let paused = f.emitted();
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(f.emitted(), paused, "an inactive spout emitted");
            // Not assigned, for longer than the grace: stop.
            *answer.lock().unwrap() = Some(r#"{"verdict":"not_assigned"}"#.to_owned());
            let outcome = run.join().unwrap();
            assert!(
                matches!(&outcome, Outcome::Stop(r) if r.contains("no longer assigns")),
                "{outcome:?}"
            );
        });
    }

    #[test]
    fn the_launch_file_re_points_moved_executors_and_a_changed_one_stops_the_worker() {
        let f = fixture("launch", Vec::new());
        let (_term_tx, term) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            let sup = f.supervision();
            let run = s.spawn(move || sup.run(&term));
            let write = |a: &Assignment| {
                let mut l = f.launch.clone();
                l.assignment = a.clone();
                let tmp = f.spec.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&l).unwrap()).unwrap();
                std::fs::rename(&tmp, &f.spec).unwrap();
            };
            // The bolt moved to another worker: its lane follows.
            let mut moved = f.launch.assignment.clone();
            moved.version = 2;
            moved.executors[0].slot.port = 1;
            write(&moved);
            let lane = f.net.lane(TaskId(1)).unwrap();
            wait_for("the lane re-pointed", || lane.addr().port() == 1);
            wait_for("the new version in the heartbeat", || {
                std::fs::read(&f.launch.heartbeat_file)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LocalHeartbeat>(&b).ok())
                    .is_some_and(|h| h.assignment_version == 2)
            });
            assert!(!run.is_finished());
            // This worker's own executors moved: stop (a new worker takes over).
            let mut mine = moved.clone();
            mine.version = 3;
            mine.executors[1].slot.port = 2;
            write(&mine);
            let outcome = run.join().unwrap();
            assert!(
                matches!(&outcome, Outcome::Stop(r) if r.contains("executors")),
                "{outcome:?}"
            );
        });
    }
}
