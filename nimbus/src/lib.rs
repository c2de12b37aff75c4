//! # squall-nimbus: the master daemon
//!
//! Nimbus takes topology submissions over its RPC API ([`squall_cluster::rpc`]),
//! validates them, stores them in ZooKeeper, schedules their executors onto the free
//! slots of live supervisors and drives their lifecycle: activate, deactivate, kill with
//! a wait, rebalance.
//!
//! **High availability.** Several Nimbus daemons may run; they elect a leader through
//! ZooKeeper (`<root>/leader-lock`, the ephemeral-sequential lock recipe of the
//! `zookeeper-client` crate: lowest sequence leads, each candidate watches its
//! predecessor). Only the leader runs the monitor and accepts writes; any Nimbus serves
//! reads; a standby answers writes with `503` naming the leader, which
//! [`squall_cluster::rpc::NimbusClient`] follows. Everything a new leader needs is in
//! ZooKeeper (bases, assignments, topology code, the id counter) except the binaries,
//! which standbys copy from the leader in the background (module `leader`); a candidate that
//! wins without every live topology's binary lets another candidate lead (a few times,
//! then leads anyway). A leader whose ZooKeeper connection is lost stops leading at once
//! and leads again, with fresh clocks, only when it holds the lock again.
//!
//! **The monitor** runs every second on the leader: it finishes kills and rebalances
//! whose wait is over and schedules topologies without an assignment. Every
//! `nimbus.monitor.freq.secs` it also detects failures (module `liveness`) and moves only the
//! executors of dead slots ([`squall_cluster::scheduler::reschedule`]), or spreads a
//! topology out again when it runs on fewer workers than it asked for and slots are free.
//!
//! **For the UI and operators** (module `api`): the leader keeps rolling windows of every
//! executor's counters, fed by heartbeats without touching ZooKeeper, and answers them in
//! `GET .../topologies/<name-or-id>/page`; log levels set with `squall set_log_level`
//! (module `loglevels`) live in ZooKeeper and reach workers in their heartbeat answers.
#![deny(missing_docs)]

mod api;
mod leader;
mod liveness;
mod loglevels;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use squall_api::{Config, TaskLayout, TopologySpec};
use squall_cluster::config::ClusterConfig;
use squall_cluster::metrics::{ExecutorCounters, Rolling, StreamStats};
use squall_cluster::rpc::LogLevels;
use squall_cluster::scheduler::{reschedule, schedule, should_spread, FreeSlots};
use squall_cluster::secret::{Secret, SecretError};
use squall_cluster::state::{
    now_secs, Assignment, ErrorInfo, ExecutorHeartbeat, NimbusSummary, StormBase, SupervisorInfo,
    TopologyStatus, WorkerHeartbeat, WorkerSlot,
};
use squall_cluster::zk::{ClusterState, StateError};
use tokio_util::sync::CancellationToken;

use crate::liveness::{Liveness, Timeouts};

/// Why Nimbus could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NimbusError {
    /// Bad configuration.
    #[error("nimbus: {0}")]
    Config(#[from] squall_api::ConfigError),
    /// The cluster secret could not be loaded.
    #[error("nimbus: {0}")]
    Secret(#[from] SecretError),
    /// ZooKeeper failed.
    #[error("nimbus: {0}")]
    State(#[from] StateError),
    /// Local files or the listening socket.
    #[error("nimbus: {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A topology's code: the spec and the configuration it was submitted with. Stored in
/// ZooKeeper (`<root>/code/<topology-id>`) so every Nimbus can schedule it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TopologyCode {
    pub spec: TopologySpec,
    pub conf: Config,
}

/// Latest heartbeat per topology id and worker slot, with when it arrived.
pub(crate) type Heartbeats = HashMap<String, BTreeMap<WorkerSlot, (Instant, WorkerHeartbeat)>>;

/// What heartbeats are answered from, per topology id.
pub(crate) struct TopologyView {
    pub status: TopologyStatus,
    pub version: u64,
    pub epoch: u64,
    /// Each slot's executors (first, last task), sorted.
    pub slots: BTreeMap<WorkerSlot, Vec<(u32, u32)>>,
}

/// The heartbeat view: empty and not `loaded` until this Nimbus, as leader, has read
/// the cluster state.
#[derive(Default)]
pub(crate) struct View {
    pub loaded: bool,
    pub topologies: HashMap<String, TopologyView>,
    /// Log levels per topology id (`squall set_log_level`), read from ZooKeeper once per
    /// term and topology and kept up to date by the leader, which alone changes them.
    pub log_levels: HashMap<String, LogLevels>,
}

/// The rolling windows of every executor of one topology, by (component, first task,
/// last task).
pub(crate) type TopologyWindows = HashMap<(String, u32, u32), Rolling>;

/// Errors reported by workers wait here for the background writer.
const ERROR_QUEUE: usize = 1024;

pub(crate) struct Nimbus {
    /// Status and assignment per topology, as last read from ZooKeeper.
    view: Mutex<View>,
    /// The ZooKeeper session; replaced when it expires.
    state: std::sync::RwLock<ClusterState>,
    /// Settings to reconnect and re-register with.
    zk: ZkSettings,
    summary: NimbusSummary,
    /// This Nimbus's `host:port`.
    pub addr: String,
    pub dir: PathBuf,
    pub max_binary_bytes: u64,
    /// Serializes every change of cluster state.
    pub lock: tokio::sync::Mutex<()>,
    /// Latest heartbeat per topology and worker slot.
    pub heartbeats: Mutex<Heartbeats>,
    /// Rolling windows per topology id and executor, fed by heartbeats (leader only).
    rolling: Mutex<HashMap<String, TopologyWindows>>,
    /// Whether this Nimbus leads now.
    leading: AtomicBool,
    /// Bumped whenever leadership starts or stops (so a view read during one term is
    /// never installed in another).
    term: AtomicU64,
    /// The leader's `host:port`, as last seen in ZooKeeper.
    leader_addr: Mutex<Option<String>>,
    /// The cluster secret every request must carry, when configured.
    pub secret: Option<Secret>,
    timeouts: Timeouts,
    monitor_freq: Duration,
    liveness: Mutex<Liveness>,
    /// Worker errors on their way to ZooKeeper.
    errors: tokio::sync::mpsc::Sender<(String, ErrorInfo)>,
    /// Errors dropped because the queue was full.
    pub errors_dropped: AtomicU64,
    /// Topology code read from ZooKeeper (immutable once submitted).
    code_cache: Mutex<HashMap<String, Arc<TopologyCode>>>,
}

/// How to reach ZooKeeper.
pub(crate) struct ZkSettings {
    servers: String,
    root: String,
    session_timeout: Duration,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NimbusError {
    let what = what.into();
    move |source| NimbusError::Io { what, source }
}

/// Runs Nimbus until `shutdown` is cancelled.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), NimbusError> {
    conf.validate_cluster()?;
    let secret = Secret::load(&conf)?;
    let dir = conf.local_dir()?.join("nimbus");
    let binaries = dir.join("binaries");
    std::fs::create_dir_all(&binaries)
        .map_err(io_err(format!("creating {}", binaries.display())))?;
    let port = conf.nimbus_port()?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(io_err(format!("binding port {port}")))?;
    let port = listener
        .local_addr()
        .map_err(io_err("local address"))?
        .port();
    let zk = ZkSettings {
        servers: conf.zookeeper_connect_string()?,
        root: conf.zookeeper_root()?,
        session_timeout: conf.zookeeper_session_timeout()?,
    };
    let timeouts = Timeouts {
        supervisor: conf.nimbus_supervisor_timeout()?,
        task: conf.nimbus_task_timeout()?,
        worker_start: conf.supervisor_worker_start_timeout()?,
    };
    let monitor_freq = conf.nimbus_monitor_freq()?;
    let host = squall_cluster::local_hostname(&conf);
    let summary = NimbusSummary {
        host: host.clone(),
        port,
        start_time_secs: now_secs(),
        version: squall_cluster::VERSION.to_owned(),
    };
    // ZooKeeper may be down or restarting while Nimbus starts: wait for it rather than
    // exit (a standby that dies here leaves the cluster without a spare).
    let mut retry = Duration::from_millis(500);
    let state = loop {
        let attempt = async {
            let state = ClusterState::connect(&zk.servers, &zk.root, zk.session_timeout).await?;
            state.register_nimbus(&summary).await?;
            Ok::<_, StateError>(state)
        };
        match attempt.await {
            Ok(state) => break state,
            Err(e) => {
                tracing::warn!("{e}; retrying in {retry:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    };
    let (errors_tx, errors_rx) = tokio::sync::mpsc::channel(ERROR_QUEUE);
    let nimbus = Arc::new(Nimbus {
        max_binary_bytes: conf.nimbus_binary_max_bytes()?,
        state: std::sync::RwLock::new(state),
        zk,
        addr: format!("{host}:{port}"),
        summary,
        dir,
        lock: tokio::sync::Mutex::new(()),
        heartbeats: Mutex::new(HashMap::new()),
        rolling: Mutex::new(HashMap::new()),
        view: Mutex::new(View::default()),
        leading: AtomicBool::new(false),
        term: AtomicU64::new(0),
        leader_addr: Mutex::new(None),
        secret,
        timeouts,
        monitor_freq,
        liveness: Mutex::new(Liveness::new(Instant::now())),
        errors: errors_tx,
        errors_dropped: AtomicU64::new(0),
        code_cache: Mutex::new(HashMap::new()),
    });
    tracing::info!(
        "Nimbus listening on {host}:{port}{}",
        if nimbus.secret.is_some() {
            " (cluster secret required)"
        } else {
            ""
        }
    );
    println!("Nimbus listening on {host}:{port}");

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(leader::elect(nimbus.clone(), shutdown.clone()));
    tasks.spawn(leader::sync_as_standby(nimbus.clone(), shutdown.clone()));
    tasks.spawn(monitor_loop(nimbus.clone(), shutdown.clone()));
    tasks.spawn(write_errors(nimbus.clone(), errors_rx, shutdown.clone()));
    squall_cluster::http::serve(listener, api::router(nimbus.clone()), shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// The leader's loop: kills, rebalances and new topologies every second; failure
/// detection every `nimbus.monitor.freq.secs`.
async fn monitor_loop(nimbus: Arc<Nimbus>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full: Option<Instant> = None;
    let mut term = u64::MAX;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !nimbus.is_leader() {
            continue;
        }
        let now = Instant::now();
        let current = nimbus.term.load(Ordering::SeqCst);
        if current != term {
            // A new term: the first failure check waits one full monitor period.
            term = current;
            last_full = Some(now);
        }
        let full = last_full.is_none_or(|t| now.duration_since(t) >= nimbus.monitor_freq);
        if full {
            last_full = Some(now);
        }
        if let Err(e) = nimbus.monitor(full).await {
            tracing::warn!("monitor: {e}");
        }
        nimbus.refresh_view().await;
    }
}

/// Writes worker errors to ZooKeeper, off the heartbeat path; errors of topologies that
/// are gone (killed meanwhile) are dropped.
async fn write_errors(
    nimbus: Arc<Nimbus>,
    mut rx: tokio::sync::mpsc::Receiver<(String, ErrorInfo)>,
    shutdown: CancellationToken,
) {
    loop {
        let (topology_id, e) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = rx.recv() => match next {
                Some(x) => x,
                None => break,
            },
        };
        let live = nimbus
            .lock_view()
            .topologies
            .get(&topology_id)
            .is_some_and(|t| t.status != TopologyStatus::Killed);
        if !live || !nimbus.is_leader() {
            continue;
        }
        if let Err(err) = nimbus.state().add_error(&topology_id, &e).await {
            tracing::warn!("cannot record an error of {topology_id}: {err}");
        }
    }
}

/// The free slots of `supervisors` (live ones) not used by any assignment except
/// `except`'s, and every supervisor's host.
pub(crate) fn free_slots<'a>(
    supervisors: &[SupervisorInfo],
    assignments: impl Iterator<Item = &'a Assignment>,
    except: Option<&str>,
) -> (Vec<FreeSlots>, BTreeMap<String, String>) {
    let used: BTreeSet<WorkerSlot> = assignments
        .filter(|a| Some(a.topology_id.as_str()) != except)
        .flat_map(|a| a.slots())
        .collect();
    let mut hosts = BTreeMap::new();
    let free = supervisors
        .iter()
        .map(|s| {
            hosts.insert(s.id.clone(), s.hostname.clone());
            FreeSlots {
                node: s.id.clone(),
                ports: s
                    .ports
                    .iter()
                    .copied()
                    .filter(|&port| {
                        !used.contains(&WorkerSlot {
                            node: s.id.clone(),
                            port,
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    (free, hosts)
}

impl Nimbus {
    /// The current ZooKeeper session.
    pub fn state(&self) -> ClusterState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces an expired ZooKeeper session and registers this Nimbus again.
    async fn ensure_session(&self) -> Result<(), StateError> {
        if self.state().is_alive() {
            return Ok(());
        }
        tracing::warn!("ZooKeeper session lost; reconnecting");
        let state =
            ClusterState::connect(&self.zk.servers, &self.zk.root, self.zk.session_timeout).await?;
        state.register_nimbus(&self.summary).await?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    /// Whether this Nimbus leads now.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// The leader's address as last seen, unless it is this Nimbus (which then is
    /// between terms).
    pub fn known_leader(&self) -> Option<String> {
        self.leader_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|l| *l != self.addr)
    }

    fn set_known_leader(&self, leader: Option<String>) {
        *self.leader_addr.lock().unwrap_or_else(|p| p.into_inner()) = leader;
    }

    /// Starts a term as leader: fresh clocks, no heartbeats from before, then the view.
    async fn begin_leading(&self) {
        {
            let _guard = self.lock.lock().await;
            *self.liveness.lock().unwrap_or_else(|p| p.into_inner()) =
                Liveness::new(Instant::now());
            self.lock_heartbeats().clear();
            self.lock_rolling().clear();
            self.term.fetch_add(1, Ordering::SeqCst);
            self.set_known_leader(Some(self.addr.clone()));
            self.leading.store(true, Ordering::SeqCst);
        }
        tracing::info!("this Nimbus ({}) is the leader", self.addr);
        self.refresh_view().await;
    }

    /// Ends a term at once: no scheduling, writes refused, heartbeats answered `unknown`.
    fn stop_leading(&self, why: &str) {
        if self.leading.swap(false, Ordering::SeqCst) {
            tracing::warn!("this Nimbus ({}) stops leading: {why}", self.addr);
        }
        self.term.fetch_add(1, Ordering::SeqCst);
        self.set_known_leader(None);
        let mut view = self.lock_view();
        view.loaded = false;
        view.topologies.clear();
        view.log_levels.clear();
    }

    pub fn binary_path(&self, sha: &str) -> PathBuf {
        self.dir.join("binaries").join(sha)
    }

    /// A topology's code, from ZooKeeper (cached). Code a Nimbus of an earlier version
    /// kept in its local dir is moved to ZooKeeper when found.
    pub async fn code(&self, topology_id: &str) -> Option<Arc<TopologyCode>> {
        if let Some(c) = self.lock_code_cache().get(topology_id) {
            return Some(c.clone());
        }
        let code = match self.state().code::<TopologyCode>(topology_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let legacy = self
                    .dir
                    .join("topologies")
                    .join(format!("{topology_id}.json"));
                let c: TopologyCode = serde_json::from_slice(&std::fs::read(legacy).ok()?).ok()?;
                if self.is_leader() {
                    if let Err(e) = self.state().set_code(topology_id, &c).await {
                        tracing::warn!("cannot move the code of {topology_id} to ZooKeeper: {e}");
                    }
                }
                c
            }
            Err(e) => {
                tracing::warn!("cannot read the code of {topology_id}: {e}");
                return None;
            }
        };
        let code = Arc::new(code);
        self.lock_code_cache()
            .insert(topology_id.to_owned(), code.clone());
        Some(code)
    }

    fn lock_code_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TopologyCode>>> {
        self.code_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layout a topology runs with: its spec with the current parallelism.
    pub fn layout(base: &StormBase, code: &TopologyCode) -> TaskLayout {
        let mut spec = code.spec.clone();
        for (id, c) in spec.components.iter_mut() {
            if let Some(&n) = base.component_executors.get(id.as_str()) {
                c.parallelism = n.clamp(1, c.num_tasks);
            }
        }
        TaskLayout::new(&spec, code.conf.num_ackers().unwrap_or(1))
    }

    /// The supervisors that may get work (present and alive), every assignment, and the
    /// instant the supervisors were judged at: decisions taken with this list must judge
    /// slots at that same instant, or a supervisor crossing its timeout in between would
    /// be both usable and dead.
    pub async fn cluster_now(
        &self,
    ) -> Result<(Vec<SupervisorInfo>, HashMap<String, Assignment>, Instant), StateError> {
        let state = self.state();
        let supervisors = state.supervisors().await?;
        let now = Instant::now();
        let usable = {
            let mut l = self.lock_liveness();
            l.observe_supervisors(now, &supervisors);
            l.usable_supervisors(now, self.timeouts.supervisor)
        };
        let supervisors = supervisors
            .into_iter()
            .filter(|s| usable.contains(&s.id))
            .collect();
        let assignments = state
            .assignments()
            .await?
            .into_iter()
            .map(|a| (a.topology_id.clone(), a))
            .collect();
        Ok((supervisors, assignments, now))
    }

    /// Schedules `base` afresh (a new epoch) on the slots of `supervisors` and stores the
    /// assignment. `None` when nothing could be placed (the topology waits for slots).
    pub async fn assign(
        &self,
        base: &StormBase,
        supervisors: &[SupervisorInfo],
        assignments: &HashMap<String, Assignment>,
    ) -> Result<Option<Assignment>, NimbusError> {
        let Some(code) = self.code(&base.topology_id).await else {
            tracing::warn!(topology = %base.topology_id, "no stored code; cannot schedule");
            return Ok(None);
        };
        let layout = Self::layout(base, &code);
        let executors: Vec<_> = layout
            .executors()
            .map(|(c, a, b)| (c.to_string(), a, b))
            .collect();
        let (free, node_host) =
            free_slots(supervisors, assignments.values(), Some(&base.topology_id));
        let placed = match schedule(&executors, base.num_workers, &free) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topology = %base.name, "cannot schedule: {e}");
                return Ok(None);
            }
        };
        let previous = assignments.get(&base.topology_id);
        let now = now_secs();
        let mut assignment = Assignment {
            topology_id: base.topology_id.clone(),
            topology_name: base.name.clone(),
            binary_sha256: base.binary_sha256.clone(),
            args: base.args.clone(),
            conf: code.conf.clone(),
            executors: placed,
            node_host,
            slot_start_secs: BTreeMap::new(),
            version: previous.map_or(1, |p| p.version + 1),
            epoch: previous.map_or(1, |p| p.epoch + 1),
        };
        let used: BTreeSet<String> = assignment.slots().iter().map(|s| s.node.clone()).collect();
        assignment.node_host.retain(|node, _| used.contains(node));
        for slot in assignment.slots() {
            assignment.slot_start_secs.insert(slot.to_string(), now);
        }
        tracing::info!(
            topology = %base.name,
            version = assignment.version,
            epoch = assignment.epoch,
            "assigned {} executors to {:?}",
            assignment.executors.len(),
            assignment.slots().iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        self.state().set_assignment(&assignment).await?;
        Ok(Some(assignment))
    }

    /// Moves the executors of `dead` slots (and only those) and stores the assignment:
    /// a new version, the same epoch.
    async fn repair(
        &self,
        base: &StormBase,
        current: &Assignment,
        dead: &BTreeSet<WorkerSlot>,
        supervisors: &[SupervisorInfo],
        assignments: &HashMap<String, Assignment>,
    ) -> Result<Option<Assignment>, NimbusError> {
        let (free, hosts) = free_slots(supervisors, assignments.values(), None);
        let placed = match reschedule(&current.executors, dead, base.num_workers, &free) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topology = %base.name, "cannot move the executors of dead workers {:?}: {e}",
                    dead.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                return Ok(None);
            }
        };
        let mut next = current.clone();
        next.executors = placed;
        next.version += 1;
        next.node_host.extend(hosts);
        let used: BTreeSet<String> = next.slots().iter().map(|s| s.node.clone()).collect();
        next.node_host.retain(|node, _| used.contains(node));
        let now = now_secs();
        let mut starts = BTreeMap::new();
        for slot in next.slots() {
            let key = slot.to_string();
            let same = current.executors_of(&slot) == next.executors_of(&slot);
            let start = match current.slot_start_secs.get(&key) {
                Some(&t) if same => t,
                _ => now,
            };
            starts.insert(key, start);
        }
        next.slot_start_secs = starts;
        tracing::warn!(
            topology = %base.name,
            version = next.version,
            "workers {:?} are dead; their executors move to {:?}",
            dead.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            next.slots().iter().filter(|s| !current.slots().contains(s) || current.executors_of(s) != next.executors_of(s)).map(|s| s.to_string()).collect::<Vec<_>>()
        );
        self.state().set_assignment(&next).await?;
        Ok(Some(next))
    }

    /// One pass of the leader's monitor; `full` adds failure detection and spreading.
    async fn monitor(&self, full: bool) -> Result<(), NimbusError> {
        let _guard = self.lock.lock().await;
        if !self.is_leader() {
            return Ok(());
        }
        let now = now_secs();
        let (supervisors, mut assignments, judged_at) = self.cluster_now().await?;
        for mut base in self.state().storms().await? {
            if !self.is_leader() {
                break;
            }
            let id = base.topology_id.clone();
            let due = base.action_at_secs.is_none_or(|t| t <= now);
            match base.status {
                TopologyStatus::Killed if due => {
                    tracing::info!(topology = %base.name, "killed: removing its assignment and state");
                    // Workers hear "not assigned" from now on, before the nodes go.
                    self.lock_view().topologies.remove(&id);
                    self.state().remove_assignment(&id).await?;
                    self.state().remove_errors(&id).await?;
                    self.state().remove_storm(&id).await?;
                    self.state().remove_code(&id).await?;
                    self.state().remove_log_config(&id).await?;
                    self.lock_code_cache().remove(&id);
                    self.lock_heartbeats().remove(&id);
                    self.lock_rolling().remove(&id);
                    self.lock_view().log_levels.remove(&id);
                    self.lock_liveness().forget_topology(&id);
                    assignments.remove(&id);
                }
                TopologyStatus::Rebalancing if due => {
                    let req = base.rebalance.take().unwrap_or_default();
                    if let Some(n) = req.num_workers {
                        base.num_workers = n.max(1);
                    }
                    let code = self.code(&id).await;
                    for (component, n) in req.executors {
                        let max = code
                            .as_ref()
                            .and_then(|c| c.spec.components.get(component.as_str()))
                            .map_or(n, |c| c.num_tasks);
                        base.component_executors.insert(component, n.clamp(1, max));
                    }
                    base.status = base.prev_status.take().unwrap_or(TopologyStatus::Active);
                    base.action_at_secs = None;
                    self.state().set_storm(&base).await?;
                    tracing::info!(topology = %base.name, "rebalancing to {} workers", base.num_workers);
                    if let Some(a) = self.assign(&base, &supervisors, &assignments).await? {
                        assignments.insert(id, a);
                    }
                }
                TopologyStatus::Killed | TopologyStatus::Rebalancing => {}
                TopologyStatus::Active | TopologyStatus::Inactive => {
                    let Some(current) = assignments.get(&id).cloned() else {
                        if let Some(a) = self.assign(&base, &supervisors, &assignments).await? {
                            assignments.insert(id, a);
                        }
                        continue;
                    };
                    let instant = judged_at;
                    self.lock_liveness().observe_assignment(instant, &current);
                    if !full {
                        continue;
                    }
                    let beats: BTreeMap<WorkerSlot, Instant> = self
                        .lock_heartbeats()
                        .get(&id)
                        .map(|m| m.iter().map(|(s, (t, _))| (s.clone(), *t)).collect())
                        .unwrap_or_default();
                    let dead =
                        self.lock_liveness()
                            .dead_slots(&current, &beats, instant, &self.timeouts);
                    let next = if !dead.is_empty() {
                        self.repair(&base, &current, &dead, &supervisors, &assignments)
                            .await?
                    } else {
                        let (free, _) = free_slots(&supervisors, assignments.values(), None);
                        let free_count = free.iter().map(|f| f.ports.len()).sum();
                        if should_spread(
                            current.slots().len(),
                            base.num_workers,
                            current.executors.len(),
                            free_count,
                        ) {
                            tracing::info!(topology = %base.name, "slots are free again: spreading it over up to {} workers", base.num_workers);
                            self.assign(&base, &supervisors, &assignments).await?
                        } else {
                            None
                        }
                    };
                    if let Some(a) = next {
                        self.lock_liveness().observe_assignment(Instant::now(), &a);
                        assignments.insert(id, a);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn lock_view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every topology's status and assignment into the heartbeat view (leader
    /// only; the view counts as loaded from then on, for this term).
    pub async fn refresh_view(&self) {
        let term = self.term.load(Ordering::SeqCst);
        if !self.is_leader() {
            return;
        }
        let state = self.state();
        let (storms, assignments) = match (state.storms().await, state.assignments().await) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot refresh the topology view: {e}");
                return;
            }
        };
        let topologies: HashMap<String, TopologyView> = storms
            .into_iter()
            .filter_map(|b| {
                let a = assignments
                    .iter()
                    .find(|a| a.topology_id == b.topology_id)?;
                let mut slots: BTreeMap<WorkerSlot, Vec<(u32, u32)>> = BTreeMap::new();
                for e in &a.executors {
                    slots
                        .entry(e.slot.clone())
                        .or_default()
                        .push((e.first.0, e.last.0));
                }
                for execs in slots.values_mut() {
                    execs.sort_unstable();
                }
                Some((
                    b.topology_id.clone(),
                    TopologyView {
                        status: b.status,
                        version: a.version,
                        epoch: a.epoch,
                        slots,
                    },
                ))
            })
            .collect();
        // Log levels: from ZooKeeper only for topologies this term has not seen yet.
        let known: BTreeSet<String> = self.lock_view().log_levels.keys().cloned().collect();
        let mut log_levels = HashMap::new();
        for id in topologies.keys().filter(|id| !known.contains(*id)) {
            match state.log_config::<LogLevels>(id).await {
                Ok(l) => {
                    log_levels.insert(id.clone(), l.unwrap_or_default());
                }
                Err(e) => tracing::warn!("cannot read the log levels of {id}: {e}"),
            }
        }
        self.prune_windows(&assignments);
        let mut view = self.lock_view();
        if self.term.load(Ordering::SeqCst) == term && self.is_leader() {
            // Levels set meanwhile (by this leader) are newer than what was read.
            for (id, l) in view.log_levels.drain() {
                log_levels.insert(id, l);
            }
            log_levels.retain(|id, _| topologies.contains_key(id));
            *view = View {
                loaded: true,
                topologies,
                log_levels,
            };
        }
    }

    pub fn lock_rolling(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopologyWindows>> {
        self.rolling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds the counters of a heartbeat's executors to their rolling windows.
    pub fn record_counters(&self, hb: &WorkerHeartbeat) {
        let now = now_secs();
        let source = format!("{}:{}", hb.host, hb.port);
        // Workers that report totals only (no per-stream rows): placed on the streams
        // when that is unambiguous.
        let legacy: Vec<Option<ExecutorCounters>> = if hb
            .executors
            .iter()
            .all(|e| e.counters.outputs.is_empty() && e.counters.inputs.is_empty())
        {
            let code = self.lock_code_cache().get(&hb.topology_id).cloned();
            hb.executors
                .iter()
                .map(|e| code.as_ref().map(|c| legacy_counters(&c.spec, e)))
                .collect()
        } else {
            Vec::new()
        };
        let mut rolling = self.lock_rolling();
        let windows = match rolling.get_mut(&hb.topology_id) {
            Some(w) => w,
            None => rolling.entry(hb.topology_id.clone()).or_default(),
        };
        for (i, e) in hb.executors.iter().enumerate() {
            let counters = legacy
                .get(i)
                .and_then(Option::as_ref)
                .unwrap_or(&e.counters);
            windows
                .entry((e.component.clone(), e.first.0, e.last.0))
                .or_default()
                .record(now, &source, hb.uptime_secs, counters);
        }
    }

    /// Forgets the windows of topologies and executors no assignment has any more.
    fn prune_windows(&self, assignments: &[Assignment]) {
        let current: HashMap<&str, BTreeSet<(&str, u32, u32)>> = assignments
            .iter()
            .map(|a| {
                let execs = a
                    .executors
                    .iter()
                    .map(|e| (e.component.as_str(), e.first.0, e.last.0))
                    .collect();
                (a.topology_id.as_str(), execs)
            })
            .collect();
        let mut rolling = self.lock_rolling();
        rolling.retain(|id, windows| {
            let Some(execs) = current.get(id.as_str()) else {
                return false;
            };
            windows.retain(|(component, first, last), _| {
                execs.contains(&(component.as_str(), *first, *last))
            });
            true
        });
    }

    pub fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, Heartbeats> {
        self.heartbeats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live topology named `x`, or else the one with id `x` (names are tried first:
    /// a name may look like an id, an id never changes).
    pub async fn find(&self, x: &str) -> Result<Option<StormBase>, StateError> {
        let storms = self.state().storms().await?;
        let by_name = storms.iter().position(|b| b.name == x);
        let found = by_name.or_else(|| storms.iter().position(|b| b.topology_id == x));
        Ok(found.map(|i| storms[i].clone()))
    }

    /// The binaries of live topologies that this Nimbus does not hold.
    pub async fn missing_binaries(&self) -> Result<BTreeSet<String>, StateError> {
        Ok(self
            .state()
            .storms()
            .await?
            .into_iter()
            .map(|b| b.binary_sha256)
            .filter(|sha| !exists(&self.binary_path(sha)))
            .collect())
    }
}

/// Per-stream counters made from the totals of a worker that reports no per-stream rows
/// (a worker of an earlier version): the outputs go to the component's only output
/// stream and the inputs to its only subscription; a component with several gets none
/// (its totals cannot be split).
fn legacy_counters(spec: &TopologySpec, e: &ExecutorHeartbeat) -> ExecutorCounters {
    let mut out = ExecutorCounters::default();
    let Some(c) = spec.components.get(e.component.as_str()) else {
        return out;
    };
    if let (1, Some(stream)) = (c.outputs.len(), c.outputs.keys().next()) {
        let mut row = StreamStats {
            stream: stream.as_str().to_owned(),
            emitted: e.emitted,
            transferred: e.transferred,
            ..Default::default()
        };
        if c.kind == squall_api::ComponentKind::Spout {
            // The trees rooted on the spout's stream; timeouts are also in `failed`.
            row.acked = e.acked;
            row.failed = e.failed.saturating_sub(e.timed_out);
            row.timed_out = e.timed_out;
            row.complete_us = (e.complete_latency_ms * 1e3 * e.acked as f64) as u64;
            row.complete_samples = e.acked;
        }
        out.outputs.push(row);
    }
    if let [input] = c.inputs.as_slice() {
        out.inputs.push(StreamStats {
            component: Some(input.source.component.as_str().to_owned()),
            stream: input.source.stream.as_str().to_owned(),
            executed: e.executed,
            acked: e.acked,
            failed: e.failed,
            execute_ns: (e.execute_latency_ms * 1e6 * e.executed as f64) as u64,
            execute_samples: e.executed,
            ..Default::default()
        });
    }
    out
}

/// Whether `path` holds a complete binary.
pub(crate) fn exists(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::{
        Bolt, OutputCollector, OutputFieldsDeclarer, Spout, SpoutOutputCollector, Tuple,
    };

    #[derive(Clone)]
    struct Src;

    impl Spout for Src {
        fn next_tuple(&mut self, _: &mut SpoutOutputCollector<'_>) {}
        fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
            d.declare(["x"]);
        }
    }

    #[derive(Clone)]
    struct Pass;

    impl Bolt for Pass {
        fn execute(&mut self, _: Tuple, _: &mut OutputCollector<'_>) {}
        fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
            d.declare(["x"]);
        }
    }

    #[derive(Clone)]
    struct Two;

    impl Bolt for Two {
        fn execute(&mut self, _: Tuple, _: &mut OutputCollector<'_>) {}
        fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
            d.declare(["x"]);
            d.declare_stream("other", ["y"]);
        }
    }

    #[test]
    fn totals_of_old_workers_land_on_the_only_stream() {
        let mut b = squall_api::TopologyBuilder::new();
        b.set_bolt("one", Pass, 1).shuffle_grouping("src");
        b.set_bolt("two", Two, 1)
            .shuffle_grouping("src")
            .shuffle_grouping("one");
        b.set_spout("src", Src, 1);
        let spec = b.create_topology().unwrap().spec().clone();
        let hb = |component: &str| ExecutorHeartbeat {
            component: component.into(),
            emitted: 10,
            transferred: 20,
            executed: 5,
            acked: 4,
            failed: 1,
            execute_latency_ms: 2.0,
            ..Default::default()
        };
        let one = legacy_counters(&spec, &hb("one"));
        assert_eq!(one.outputs.len(), 1);
        assert_eq!(one.outputs[0].stream, "default");
        assert_eq!(
            (one.outputs[0].emitted, one.outputs[0].transferred),
            (10, 20)
        );
        let input = &one.inputs[0];
        assert_eq!(input.component.as_deref(), Some("src"));
        assert_eq!((input.executed, input.acked, input.failed), (5, 4, 1));
        assert!((input.execute_latency_ms() - 2.0).abs() < 1e-9);
        // Two output streams and two inputs: the totals cannot be split.
        let two = legacy_counters(&spec, &hb("two"));
        assert!(two.outputs.is_empty() && two.inputs.is_empty());
    }
}
