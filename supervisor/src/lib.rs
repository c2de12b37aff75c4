//! # squall-supervisor: one per machine
//!
//! Registers itself in ZooKeeper (an ephemeral node listing its slots, rewritten every
//! `supervisor.heartbeat.frequency.secs` as its heartbeat), watches the assignments, and
//! keeps one worker process per assigned slot. The per-slot decision is the pure
//! [`slots::decide`]:
//!
//! - a missing worker is launched: its binary is downloaded from Nimbus in a task of
//!   its own ([`download`], bounded in time; cached by SHA-256, verified), then started
//!   in worker mode in its own process group, with stdout/stderr appended to
//!   `storm.local.dir/workers-artifacts/<topology>/<port>/worker.log` (rotated by
//!   [`logs`]);
//! - a worker whose executors did not change keeps running when the assignment version
//!   changes: its launch file gets the newer assignment;
//! - a worker that exited or stopped heartbeating is restarted, with a back-off when it
//!   keeps failing ([`slots::Backoff`]); one no longer assigned is stopped: SIGTERM, then
//!   SIGKILL after `supervisor.worker.shutdown.sleep.secs` ([`process`]).
//!
//! Workers outlive the supervisor: a restarted supervisor adopts the workers it finds
//! running (identified by their launch file, watched by pid). While ZooKeeper cannot be
//! read, workers are left as they are. What nothing needs any more is removed
//! ([`cleanup`]).
#![deny(missing_docs)]

pub mod cleanup;
pub mod download;
pub mod logs;
pub mod process;
pub mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use squall_api::Config;
use squall_cluster::config::{keys, ClusterConfig};
use squall_cluster::secret::{Secret, SecretError};
use squall_cluster::state::{
    now_secs, Assignment, LocalHeartbeat, SupervisorInfo, WorkerLaunch, WorkerSlot,
};
use squall_cluster::zk::{ClusterState, StateError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cleanup::BinaryUse;
use crate::download::DownloadLimits;
use crate::process::Proc;
use crate::slots::{decide, Action, Backoff, Desired, Observed, Timeouts, Work};

/// Environment variable naming the worker's launch file.
pub const WORKER_SPEC_ENV: &str = "SQUALL_WORKER_SPEC";

/// A cached binary no assigned topology uses is deleted after this long unused.
pub const BINARY_GRACE: Duration = Duration::from_secs(600);

/// How often unused files are looked for.
const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// Why the supervisor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Bad configuration.
    #[error("supervisor: {0}")]
    Config(#[from] squall_api::ConfigError),
    /// The cluster secret could not be loaded.
    #[error("supervisor: {0}")]
    Secret(#[from] SecretError),
    /// ZooKeeper failed.
    #[error("supervisor: {0}")]
    State(#[from] StateError),
    /// Local files.
    #[error("supervisor: {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A topology binary could not be downloaded.
    #[error("cannot download binary {sha}: {reason}")]
    Download {
        /// The binary's SHA-256.
        sha: String,
        /// Why, per Nimbus address tried.
        reason: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}

/// The cluster keys a worker hands its components under the topology's configuration
/// (as Storm merges the cluster config under the topology's): where the cluster's
/// ZooKeeper is, so that Trident coordinators keep their state there, and where its DRPC
/// servers are (`drpc.servers`, `drpc.port`), for DRPC streams. Values are this
/// supervisor's, defaults filled in and normalized (servers as a list, the root without
/// a trailing `/`, the session timeout in milliseconds).
fn worker_cluster_conf(conf: &Config) -> Result<Config, squall_api::ConfigError> {
    let servers: Vec<squall_api::Value> = conf
        .zookeeper_servers()?
        .into_iter()
        .map(squall_api::Value::from)
        .collect();
    let timeout_ms =
        u64::try_from(conf.zookeeper_session_timeout()?.as_millis()).unwrap_or(u64::MAX);
    let mut out = Config::new();
    out.set(keys::STORM_ZOOKEEPER_SERVERS, servers)
        .set(
            keys::STORM_ZOOKEEPER_PORT,
            u64::from(conf.zookeeper_port()?),
        )
        .set(keys::STORM_ZOOKEEPER_ROOT, conf.zookeeper_root()?)
        .set(keys::STORM_ZOOKEEPER_SESSION_TIMEOUT, timeout_ms);
    let drpc: Vec<squall_api::Value> = conf
        .drpc_servers()?
        .into_iter()
        .map(squall_api::Value::from)
        .collect();
    out.set(keys::DRPC_SERVERS, drpc)
        .set(keys::DRPC_PORT, u64::from(conf.drpc_port()?));
    Ok(out)
}

/// What the supervisor reads from its configuration once.
struct Settings {
    id: String,
    hostname: String,
    ports: Vec<u16>,
    local_dir: PathBuf,
    nimbus: Vec<String>,
    secret: Option<Secret>,
    secret_file: Option<PathBuf>,
    timeouts: Timeouts,
    shutdown_sleep: Duration,
    log_max_bytes: u64,
    log_max_files: u32,
    log_retention: Duration,
    download: DownloadLimits,
    monitor: Duration,
    heartbeat: Duration,
    zk_timeout: Duration,
    start_time_secs: u64,
    /// The cluster settings workers hand their components ([`WorkerLaunch::cluster_conf`]).
    worker_cluster_conf: Config,
}

impl Settings {
    fn from_conf(conf: &Config) -> Result<Settings, SupervisorError> {
        conf.validate_cluster()?;
        std::fs::create_dir_all(conf.local_dir()?)
            .map_err(io_err(format!("creating {}", conf.local_dir()?.display())))?;
        // Absolute, so the paths handed to workers (which run in their own directory)
        // and the launch file paths adoption looks for are the same in every run.
        let local_dir = std::fs::canonicalize(conf.local_dir()?)
            .map_err(io_err(format!("resolving {}", conf.local_dir()?.display())))?;
        let sup_dir = local_dir.join("supervisor");
        std::fs::create_dir_all(sup_dir.join("binaries"))
            .map_err(io_err(format!("creating {}", sup_dir.display())))?;
        let hostname = squall_cluster::local_hostname(conf);
        let id = supervisor_id(&sup_dir, &hostname)?;
        let secret = Secret::load(conf)?;
        let secret_file = match conf.get_str(keys::SQUALL_SECRET_FILE)? {
            Some(p) if secret.is_some() => {
                let p = Path::new(p.trim());
                Some(
                    std::fs::canonicalize(p)
                        .map_err(io_err(format!("resolving {}", p.display())))?,
                )
            }
            _ => None,
        };
        Ok(Settings {
            id,
            hostname,
            ports: conf.supervisor_slot_ports()?,
            local_dir,
            nimbus: squall_cluster::rpc::nimbus_addresses(conf)?,
            secret,
            secret_file,
            timeouts: Timeouts {
                worker: conf.supervisor_worker_timeout()?,
                start: conf.supervisor_worker_start_timeout()?,
            },
            shutdown_sleep: conf.supervisor_worker_shutdown_sleep()?,
            log_max_bytes: conf.worker_log_max_bytes()?,
            log_max_files: conf.worker_log_max_files()?,
            log_retention: conf.logviewer_cleanup_age()?,
            download: DownloadLimits::default(),
            monitor: conf.supervisor_monitor_frequency()?,
            heartbeat: conf.supervisor_heartbeat_frequency()?,
            zk_timeout: conf
                .zookeeper_session_timeout()?
                .max(Duration::from_secs(5)),
            start_time_secs: now_secs(),
            worker_cluster_conf: worker_cluster_conf(conf)?,
        })
    }

    fn info(&self) -> SupervisorInfo {
        SupervisorInfo {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            ports: self.ports.clone(),
            start_time_secs: self.start_time_secs,
            version: squall_cluster::VERSION.to_owned(),
            heartbeat_secs: now_secs(),
        }
    }

    fn workers_dir(&self) -> PathBuf {
        self.local_dir.join("workers")
    }

    fn worker_dir(&self, topology_id: &str, port: u16) -> PathBuf {
        self.workers_dir().join(format!("{topology_id}-{port}"))
    }

    fn artifacts_dir(&self) -> PathBuf {
        self.local_dir.join("workers-artifacts")
    }

    fn log_file(&self, topology_id: &str, port: u16) -> PathBuf {
        self.artifacts_dir()
            .join(topology_id)
            .join(port.to_string())
            .join("worker.log")
    }

    fn binaries_dir(&self) -> PathBuf {
        self.local_dir.join("supervisor/binaries")
    }
}

/// A worker process this supervisor watches.
struct Worker {
    work: Work,
    version: u64,
    binary_sha256: String,
    proc: Proc,
    started: Instant,
    dir: PathBuf,
    log: PathBuf,
}

impl Worker {
    fn heartbeat_file(&self) -> PathBuf {
        self.dir.join("heartbeat")
    }
}

struct Supervisor {
    s: Arc<Settings>,
    workers: BTreeMap<u16, Worker>,
    /// Restart back-off per slot.
    backoff: BTreeMap<u16, Backoff>,
    /// Downloads in flight, by SHA-256.
    downloads: BTreeMap<String, JoinHandle<Result<(), SupervisorError>>>,
    /// Back-off of failed downloads, by SHA-256.
    download_backoff: BTreeMap<String, Backoff>,
    /// Binaries and topologies the last assignments want here.
    wanted_binaries: BTreeSet<String>,
    wanted_topologies: BTreeSet<String>,
    binaries: BinaryUse,
    last_cleanup: Option<Instant>,
    wake: Arc<Notify>,
}

/// The supervisor's id: kept in `storm.local.dir/supervisor/id` so a restarted
/// supervisor is the same node.
fn supervisor_id(dir: &Path, hostname: &str) -> Result<String, SupervisorError> {
    let path = dir.join("id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("{hostname}-{:016x}", fastrand::u64(..));
    std::fs::write(&path, &id).map_err(io_err(format!("writing {}", path.display())))?;
    Ok(id)
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), so a reader
/// never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs the supervisor until `shutdown` is cancelled; then stops its workers.
///
/// ZooKeeper being unreachable (at start or later) is not an error: the supervisor keeps
/// its workers as they are and connects again.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), SupervisorError> {
    let s = Arc::new(Settings::from_conf(&conf)?);
    let mut sup = Supervisor {
        s: s.clone(),
        workers: BTreeMap::new(),
        backoff: BTreeMap::new(),
        downloads: BTreeMap::new(),
        download_backoff: BTreeMap::new(),
        wanted_binaries: BTreeSet::new(),
        wanted_topologies: BTreeSet::new(),
        binaries: BinaryUse::default(),
        last_cleanup: None,
        wake: Arc::new(Notify::new()),
    };
    sup.adopt().await;
    println!(
        "Supervisor {} on {} with slots {:?}",
        s.id, s.hostname, s.ports
    );
    let (state_tx, mut state_rx) = watch::channel(None);
    let session = tokio::spawn(keep_session(
        conf.clone(),
        s.clone(),
        state_tx,
        shutdown.clone(),
    ));
    let mut assignments_cache: Option<Vec<Assignment>> = None;
    let mut watch: Option<(
        zookeeper_client::Client,
        zookeeper_client::PersistentWatcher,
    )> = None;
    loop {
        let state = state_rx.borrow_and_update().clone();
        let mut fresh = None;
        if let Some(state) = &state {
            match tokio::time::timeout(s.zk_timeout, state.assignments()).await {
                Ok(Ok(a)) => fresh = Some(a),
                Ok(Err(e)) => tracing::warn!("cannot read assignments, keeping workers: {e}"),
                Err(_) => tracing::warn!(
                    "ZooKeeper did not answer within {:?}, keeping workers",
                    s.zk_timeout
                ),
            }
            if watch.is_none() {
                watch = tokio::time::timeout(s.zk_timeout, assignments_watch(&conf))
                    .await
                    .ok()
                    .flatten();
            }
        }
        if fresh.is_some() {
            assignments_cache = fresh;
        }
        // With no assignments known (ZooKeeper unreachable since the start), workers are
        // only watched: nothing is launched, nothing is killed.
        match &assignments_cache {
            Some(a) => sup.sync(a).await,
            None => sup.forget_dead(),
        }
        sup.housekeeping().await;
        let next = sup.next_wake(s.monitor);
        let mut watch_lost = false;
        let woke = async {
            match watch.as_mut() {
                Some((_, w)) => {
                    let event = w.changed().await;
                    watch_lost = event.session_state.is_terminated();
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(next) => {}
            _ = woke => {}
            _ = sup.wake.notified() => {}
            _ = state_rx.changed() => {}
        }
        if watch_lost {
            // A terminated session's watcher must not be polled again.
            watch = None;
        }
    }
    session.abort();
    for (_, d) in std::mem::take(&mut sup.downloads) {
        d.abort();
    }
    let workers = std::mem::take(&mut sup.workers);
    sup.stop_all(
        workers
            .into_iter()
            .map(|(port, w)| (port, w, "the supervisor is shutting down".into())),
    )
    .await;
    Ok(())
}

/// Keeps the ZooKeeper session: connects (retrying while ZooKeeper is unreachable),
/// registers the supervisor's ephemeral node, rewrites it every
/// `supervisor.heartbeat.frequency.secs`, registers again when it is gone, and connects
/// again when the session expires. Publishes the usable session (or `None`).
async fn keep_session(
    conf: Config,
    s: Arc<Settings>,
    tx: watch::Sender<Option<ClusterState>>,
    shutdown: CancellationToken,
) {
    let mut state: Option<ClusterState> = None;
    let mut retry = Duration::from_millis(500);
    loop {
        let wait = match &state {
            Some(st) if st.is_alive() => {
                match tokio::time::timeout(s.zk_timeout, st.update_supervisor(&s.info())).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::warn!("supervisor node gone from ZooKeeper; registering again");
                        if let Err(e) = register(st, &s).await {
                            tracing::warn!("{e}");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("supervisor heartbeat failed: {e}"),
                    Err(_) => tracing::warn!("supervisor heartbeat: no answer from ZooKeeper"),
                }
                s.heartbeat
            }
            _ => {
                if state.take().is_some() {
                    tracing::warn!("ZooKeeper session lost; reconnecting");
                    tx.send_replace(None);
                }
                match tokio::time::timeout(s.zk_timeout, connect(&conf)).await {
                    Ok(Ok(st)) => match register(&st, &s).await {
                        Ok(()) => {
                            tracing::info!(id = %s.id, "registered in ZooKeeper");
                            retry = Duration::from_millis(500);
                            state = Some(st.clone());
                            tx.send_replace(Some(st));
                        }
                        Err(e) => tracing::warn!("{e}"),
                    },
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(_) => tracing::warn!("connecting to ZooKeeper timed out"),
                }
                if state.is_some() {
                    s.heartbeat
                } else {
                    retry = (retry * 2).min(Duration::from_secs(5));
                    retry
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn connect(conf: &Config) -> Result<ClusterState, SupervisorError> {
    Ok(ClusterState::connect(
        &conf.zookeeper_connect_string()?,
        &conf.zookeeper_root()?,
        conf.zookeeper_session_timeout()?,
    )
    .await?)
}

async fn register(state: &ClusterState, s: &Settings) -> Result<(), SupervisorError> {
    match tokio::time::timeout(s.zk_timeout, state.register_supervisor(&s.info())).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SupervisorError::Io {
            what: "registering in ZooKeeper".into(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
        }),
    }
}

/// A separate session with a persistent recursive watch on the assignments, so a new or
/// changed assignment wakes the supervisor at once (the poll remains the safety net).
async fn assignments_watch(
    conf: &Config,
) -> Option<(
    zookeeper_client::Client,
    zookeeper_client::PersistentWatcher,
)> {
    let servers = conf.zookeeper_connect_string().ok()?;
    let root = conf.zookeeper_root().ok()?;
    let client = zookeeper_client::Client::connect(&servers).await.ok()?;
    let path = format!("{}/assignments", root.trim_end_matches('/'));
    let watcher = client
        .watch(&path, zookeeper_client::AddWatchMode::PersistentRecursive)
        .await
        .ok()?;
    Some((client, watcher))
}

/// Age of the heartbeat in `path`, when it was written by process `pid` (if known).
fn heartbeat_age(path: &Path, pid: Option<u32>) -> Option<Duration> {
    let bytes = std::fs::read(path).ok()?;
    let hb: LocalHeartbeat = serde_json::from_slice(&bytes).ok()?;
    if pid.is_some_and(|p| p != hb.pid) {
        return None;
    }
    Some(Duration::from_secs(now_secs().saturating_sub(hb.time_secs)))
}

impl Supervisor {
    /// Takes over the workers an earlier run of this supervisor left running: for each
    /// worker directory, the pid in its `pid` file must be alive, be that worker (its
    /// environment names the launch file) and heartbeat. A live worker that is not
    /// heartbeating is stopped.
    async fn adopt(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.s.workers_dir()) else {
            return;
        };
        for dir in entries.flatten().map(|e| e.path()) {
            let launch_file = dir.join("launch.json");
            let Some(launch) = std::fs::read(&launch_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<WorkerLaunch>(&b).ok())
            else {
                continue;
            };
            let Some(pid) = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let port = launch.port;
            if launch.supervisor_id != self.s.id
                || self.workers.contains_key(&port)
                || !process::pid_alive(pid)
                || !process::is_worker_of(pid, WORKER_SPEC_ENV, &launch_file)
            {
                continue;
            }
            let age = heartbeat_age(&dir.join("heartbeat"), Some(pid));
            if age.is_none_or(|a| a > self.s.timeouts.worker) {
                tracing::warn!(
                    port,
                    pid,
                    "stopping a left-over worker that does not heartbeat"
                );
                Proc::Adopted(pid).stop(self.s.shutdown_sleep).await;
                continue;
            }
            let slot = WorkerSlot {
                node: self.s.id.clone(),
                port,
            };
            tracing::info!(port, pid, topology = %launch.topology_id, "adopted running worker");
            self.workers.insert(
                port,
                Worker {
                    work: Work::of(&launch.assignment, &slot),
                    version: launch.assignment.version,
                    binary_sha256: launch.assignment.binary_sha256.clone(),
                    proc: Proc::Adopted(pid),
                    started: Instant::now(),
                    log: self.s.log_file(&launch.topology_id, port),
                    dir,
                },
            );
        }
    }

    /// Forgets workers that ended (used while no assignments are known).
    fn forget_dead(&mut self) {
        let now = Instant::now();
        let dead: Vec<u16> = self
            .workers
            .iter_mut()
            .filter_map(|(&port, w)| (!w.proc.alive()).then_some(port))
            .collect();
        for port in dead {
            if let Some(mut w) = self.workers.remove(&port) {
                // Killed by a signal (SIGKILL by an operator, the OOM killer, a crash):
                // an incident, restarted at once. Exited with a code soon after its start
                // (a failed open/prepare exits 1): a failure that backs off.
                let by_signal = w.proc.killed_by_signal();
                tracing::warn!(
                    port,
                    topology = %w.work.topology_id,
                    by_signal,
                    "worker exited"
                );
                let ran = if by_signal {
                    Backoff::HEALTHY
                } else {
                    w.started.elapsed()
                };
                self.backoff.entry(port).or_default().worker_ended(ran, now);
            }
        }
    }

    /// The time until the next tick: the monitor frequency, or sooner when a slot's
    /// back-off ends.
    fn next_wake(&self, monitor: Duration) -> Duration {
        let now = Instant::now();
        self.backoff
            .values()
            .chain(self.download_backoff.values())
            .filter_map(|b| b.not_before())
            .filter(|&t| t > now)
            .map(|t| t - now)
            .fold(monitor, Duration::min)
    }

    async fn sync(&mut self, assignments: &[Assignment]) {
        self.reap_downloads().await;
        let now = Instant::now();
        let mut desired_assignments: BTreeMap<u16, &Assignment> = BTreeMap::new();
        for a in assignments {
            for slot in a.slots() {
                if slot.node == self.s.id {
                    desired_assignments.insert(slot.port, a);
                }
            }
        }
        self.wanted_binaries = desired_assignments
            .values()
            .map(|a| a.binary_sha256.clone())
            .collect();
        self.wanted_topologies = desired_assignments
            .values()
            .map(|a| a.topology_id.clone())
            .collect();
        let slot = |port| WorkerSlot {
            node: self.s.id.clone(),
            port,
        };
        let desired: BTreeMap<u16, Desired> = desired_assignments
            .iter()
            .map(|(&port, a)| {
                (
                    port,
                    Desired {
                        work: Work::of(a, &slot(port)),
                        version: a.version,
                    },
                )
            })
            .collect();
        let observed: BTreeMap<u16, Observed> = self
            .workers
            .iter_mut()
            .map(|(&port, w)| {
                let alive = w.proc.alive();
                let pid = w.proc.pid();
                (
                    port,
                    Observed {
                        work: w.work.clone(),
                        version: w.version,
                        alive,
                        uptime: w.started.elapsed(),
                        heartbeat_age: heartbeat_age(&w.heartbeat_file(), pid),
                    },
                )
            })
            .collect();
        let mut stops = Vec::new();
        let mut launches = Vec::new();
        for action in decide(&desired, &observed, self.s.timeouts) {
            match action {
                Action::Kill(port, why) => {
                    if let Some(w) = self.workers.remove(&port) {
                        // New work in the slot starts with a clean back-off.
                        self.backoff.remove(&port);
                        stops.push((port, w, why));
                    }
                }
                Action::Restart(port, why) => {
                    if let Some(w) = self.workers.remove(&port) {
                        tracing::warn!(port, topology = %w.work.topology_id, "restarting worker: {why}");
                        self.backoff
                            .entry(port)
                            .or_default()
                            .worker_ended(w.started.elapsed(), now);
                        stops.push((port, w, why));
                    }
                    launches.push(port);
                }
                Action::Update(port) => {
                    if let Some(a) = desired_assignments.get(&port) {
                        self.update(port, a);
                    }
                }
                Action::Launch(port) => launches.push(port),
            }
        }
        self.stop_all(stops).await;
        for port in launches {
            if let Some(a) = desired_assignments.get(&port) {
                self.launch(port, a).await;
            }
        }
    }

    /// Stops workers concurrently (each SIGTERM, then SIGKILL after the grace).
    async fn stop_all(&self, stops: impl IntoIterator<Item = (u16, Worker, String)>) {
        let grace = self.s.shutdown_sleep;
        let mut set = tokio::task::JoinSet::new();
        for (port, mut w, why) in stops {
            tracing::info!(port, topology = %w.work.topology_id, pid = ?w.proc.pid(), "stopping worker: {why}");
            set.spawn(async move { w.proc.stop(grace).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// Hands a newer assignment to a worker whose own executors did not move.
    fn update(&mut self, port: u16, a: &Assignment) {
        let Some(w) = self.workers.get_mut(&port) else {
            return;
        };
        match write_launch(&self.s, &w.dir, port, a) {
            Ok(_) => {
                tracing::info!(
                    port,
                    topology = %a.topology_id,
                    "assignment version {} -> {}: executors unchanged, worker kept",
                    w.version,
                    a.version
                );
                w.version = a.version;
            }
            Err(e) => tracing::error!(port, "cannot update the launch file: {e}"),
        }
    }

    /// Collects finished downloads.
    async fn reap_downloads(&mut self) {
        let done: Vec<String> = self
            .downloads
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(sha, _)| sha.clone())
            .collect();
        for sha in done {
            let Some(h) = self.downloads.remove(&sha) else {
                continue;
            };
            match h.await {
                Ok(Ok(())) => {
                    self.download_backoff.remove(&sha);
                }
                Ok(Err(e)) => {
                    tracing::error!("{e}");
                    self.download_backoff
                        .entry(sha)
                        .or_default()
                        .launch_failed(Instant::now());
                }
                Err(e) => tracing::error!("download task failed: {e}"),
            }
        }
    }

    /// Starts the worker of `port` when its binary is here and its back-off allows; else
    /// starts the download (in the background) and leaves the slot waiting.
    async fn launch(&mut self, port: u16, a: &Assignment) {
        let now = Instant::now();
        if !self.backoff.get(&port).is_none_or(|b| b.ready(now)) {
            return;
        }
        let sha = &a.binary_sha256;
        let binary = self.s.binaries_dir().join(sha);
        if self.downloads.contains_key(sha) {
            return;
        }
        if !binary.is_file() {
            if self.download_backoff.get(sha).is_none_or(|b| b.ready(now)) {
                self.start_download(sha.clone(), binary);
            }
            return;
        }
        match spawn_worker(&self.s, port, a, &binary) {
            Ok(w) => {
                self.workers.insert(port, w);
            }
            Err(e) => {
                tracing::error!(port, topology = %a.topology_id, "cannot start worker: {e}");
                self.backoff.entry(port).or_default().launch_failed(now);
            }
        }
    }

    fn start_download(&mut self, sha: String, dest: PathBuf) {
        tracing::info!(sha = %sha, "downloading binary");
        let s = self.s.clone();
        let wake = self.wake.clone();
        let task_sha = sha.clone();
        let handle = tokio::spawn(async move {
            let r = async {
                download::download(&s.nimbus, s.secret.as_ref(), &task_sha, &dest, s.download)
                    .await?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err(format!("chmod {}", dest.display())))
            }
            .await;
            wake.notify_one();
            r
        });
        self.downloads.insert(sha, handle);
    }

    /// Rotates the logs of running workers; now and then, removes what is unused.
    async fn housekeeping(&mut self) {
        let logs: Vec<PathBuf> = self.workers.values().map(|w| w.log.clone()).collect();
        let (max_bytes, max_files) = (self.s.log_max_bytes, self.s.log_max_files);
        let rotated = tokio::task::spawn_blocking(move || {
            for log in logs {
                match logs::rotate_if_needed(&log, max_bytes, max_files) {
                    Ok(true) => tracing::info!(log = %log.display(), "rotated worker log"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(log = %log.display(), "cannot rotate: {e}"),
                }
            }
        });
        let _ = rotated.await;
        let now = Instant::now();
        if self
            .last_cleanup
            .is_some_and(|t| now.duration_since(t) < CLEANUP_EVERY)
        {
            return;
        }
        self.last_cleanup = Some(now);
        self.cleanup(now);
    }

    fn cleanup(&mut self, now: Instant) {
        let remove_dir = |d: &Path, what: &str| match std::fs::remove_dir_all(d) {
            Ok(()) => tracing::info!(dir = %d.display(), "removed {what}"),
            Err(e) => tracing::warn!(dir = %d.display(), "cannot remove {what}: {e}"),
        };
        let keep: BTreeSet<String> = self
            .workers
            .values()
            .filter_map(|w| w.dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for d in cleanup::stale_dirs(&self.s.workers_dir(), &keep) {
            remove_dir(&d, "the directory of a stopped worker");
        }
        let mut topologies = self.wanted_topologies.clone();
        topologies.extend(self.workers.values().map(|w| w.work.topology_id.clone()));
        for d in cleanup::stale_artifacts(
            &self.s.artifacts_dir(),
            &topologies,
            self.s.log_retention,
            SystemTime::now(),
        ) {
            remove_dir(
                &d,
                "the logs of a topology gone for longer than logviewer.cleanup.age.mins",
            );
        }
        let dir = self.s.binaries_dir();
        let mut present = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match name.split_once('.') {
                None => present.push(name),
                // A partial or temporary file of no running download.
                Some((sha, _)) if !self.downloads.contains_key(sha) => {
                    let _ = std::fs::remove_file(e.path());
                }
                Some(_) => {}
            }
        }
        let mut in_use = self.wanted_binaries.clone();
        in_use.extend(self.workers.values().map(|w| w.binary_sha256.clone()));
        in_use.extend(self.downloads.keys().cloned());
        for sha in self.binaries.stale(&present, &in_use, now, BINARY_GRACE) {
            let p = dir.join(&sha);
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(binary = %p.display(), "removed unused binary"),
                Err(e) => tracing::warn!(binary = %p.display(), "cannot remove: {e}"),
            }
        }
    }
}

/// Writes the worker's launch file (atomically: the worker polls it).
fn write_launch(s: &Settings, dir: &Path, port: u16, a: &Assignment) -> Result<PathBuf, String> {
    let launch = WorkerLaunch {
        topology_id: a.topology_id.clone(),
        topology_name: a.topology_name.clone(),
        supervisor_id: s.id.clone(),
        host: s.hostname.clone(),
        port,
        assignment: a.clone(),
        nimbus: s.nimbus.clone(),
        heartbeat_file: dir.join("heartbeat"),
        secret_file: s.secret_file.clone(),
        cluster_conf: s.worker_cluster_conf.clone(),
    };
    let path = dir.join("launch.json");
    let json = serde_json::to_vec_pretty(&launch).expect("launch serializes");
    write_atomic(&path, &json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Starts the worker of `port`: in its own process group (so signals to the
/// supervisor's group do not reach it and it outlives the supervisor), output appended to
/// its `worker.log`, its pid recorded for a later adoption.
fn spawn_worker(s: &Settings, port: u16, a: &Assignment, binary: &Path) -> Result<Worker, String> {
    let dir = s.worker_dir(&a.topology_id, port);
    let log_path = s.log_file(&a.topology_id, port);
    let logs = log_path.parent().expect("log file has a directory");
    for d in [dir.as_path(), logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let _ = std::fs::remove_file(dir.join("heartbeat"));
    let spec = write_launch(s, &dir, port, a)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let child = tokio::process::Command::new(binary)
        .args(&a.args)
        .env("SQUALL_LAUNCH", "worker")
        .env(WORKER_SPEC_ENV, &spec)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    let pid_file = dir.join("pid");
    if let Err(e) = write_atomic(&pid_file, pid.to_string().as_bytes()) {
        // Not fatal: only a later adoption needs it.
        tracing::warn!("writing {}: {e}", pid_file.display());
    }
    tracing::info!(
        port,
        topology = %a.topology_id,
        pid,
        log = %log_path.display(),
        "started worker for {}",
        WorkerSlot { node: s.id.clone(), port }
    );
    Ok(Worker {
        work: Work::of(
            a,
            &WorkerSlot {
                node: s.id.clone(),
                port,
            },
        ),
        version: a.version,
        binary_sha256: a.binary_sha256.clone(),
        proc: Proc::Child(child),
        started: Instant::now(),
        dir,
        log: log_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_the_clusters_zookeeper_and_drpc_settings_with_defaults_filled_in() {
        let conf = squall_cluster::config::load(
            None,
            &[
                "storm.zookeeper.servers=zk1".to_owned(),
                "storm.zookeeper.root=/prod/".to_owned(),
                "drpc.servers=[\"d1\", \"d2\"]".to_owned(),
            ],
        )
        .unwrap();
        let out = worker_cluster_conf(&conf).unwrap();
        let keys: Vec<&str> = out.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "drpc.port",
                "drpc.servers",
                "storm.zookeeper.port",
                "storm.zookeeper.root",
                "storm.zookeeper.servers",
                "storm.zookeeper.session.timeout"
            ]
        );
        assert_eq!(out.zookeeper_connect_string().unwrap(), "zk1:2181");
        assert_eq!(out.drpc_servers().unwrap(), ["d1", "d2"]);
        assert_eq!(out.drpc_port().unwrap(), 3772);
        assert_eq!(out.get_str("storm.zookeeper.root").unwrap(), Some("/prod"));
        assert_eq!(
            out.get_u64("storm.zookeeper.session.timeout").unwrap(),
            Some(20_000)
        );
    }

    #[test]
    fn the_launch_file_carries_the_zookeeper_settings() {
        let local = tempfile::tempdir().unwrap();
        let conf = squall_cluster::config::load(
            None,
            &[
                format!("storm.local.dir={}", local.path().display()),
                "storm.zookeeper.servers=[zk1, zk2]".to_owned(),
                "storm.zookeeper.port=2182".to_owned(),
                "storm.zookeeper.session.timeout=9000".to_owned(),
            ],
        )
        .unwrap();
        let settings = Settings::from_conf(&conf).unwrap();
        let mut topology_conf = Config::new();
        topology_conf.set("topology.workers", 1);
        let a = Assignment {
            topology_id: "t-1-1".into(),
            topology_name: "t".into(),
            binary_sha256: String::new(),
            args: Vec::new(),
            conf: topology_conf.clone(),
            executors: Vec::new(),
            node_host: BTreeMap::new(),
            slot_start_secs: BTreeMap::new(),
            version: 1,
            epoch: 1,
        };
        let dir = local.path().join("w");
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_launch(&settings, &dir, 6700, &a).unwrap();
        let launch: WorkerLaunch = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        // The topology's configuration is left as submitted; the cluster's settings ride
        // beside it.
        assert_eq!(launch.assignment.conf, topology_conf);
        let zk = &launch.cluster_conf;
        assert_eq!(zk.zookeeper_connect_string().unwrap(), "zk1:2182,zk2:2182");
        assert_eq!(zk.zookeeper_root().unwrap(), "/squall");
        assert_eq!(
            zk.zookeeper_session_timeout().unwrap(),
            Duration::from_secs(9)
        );
    }
}
