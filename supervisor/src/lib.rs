//! # squall-supervisor: one per machine
//!
//! Registers itself in ZooKeeper (an ephemeral node listing its slots), watches the
//! assignments, and keeps one worker process per assigned slot: it downloads the
//! topology binary from Nimbus (cached by SHA-256, verified), starts it in worker mode
//! with its stdout/stderr in `storm.local.dir/workers-artifacts/<topology>/<port>/worker.log`,
//! restarts it when it exits or stops heartbeating, and stops workers whose slot is no
//! longer assigned. The per-slot decision is the pure [`slots::decide`].
#![deny(missing_docs)]

pub mod slots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use squall_api::Config;
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::NimbusClient;
use squall_cluster::state::{
    now_secs, Assignment, LocalHeartbeat, SupervisorInfo, WorkerLaunch, WorkerSlot,
};
use squall_cluster::zk::{ClusterState, StateError};
use tokio_util::sync::CancellationToken;

use crate::slots::{decide, Action, Desired, Observed, Timeouts};

/// Environment variable naming the worker's launch file.
pub const WORKER_SPEC_ENV: &str = "SQUALL_WORKER_SPEC";

/// Why the supervisor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Bad configuration.
    #[error("supervisor: {0}")]
    Config(#[from] squall_api::ConfigError),
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
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}

struct Worker {
    topology_id: String,
    version: u64,
    child: tokio::process::Child,
    started: Instant,
    heartbeat_file: PathBuf,
}

struct Supervisor {
    id: String,
    hostname: String,
    ports: Vec<u16>,
    local_dir: PathBuf,
    nimbus: Vec<String>,
    timeouts: Timeouts,
    workers: BTreeMap<u16, Worker>,
    /// Consecutive launch failures per slot, to back off.
    failures: BTreeMap<u16, (u32, Instant)>,
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

/// Runs the supervisor until `shutdown` is cancelled; then stops its workers.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), SupervisorError> {
    conf.validate_cluster()?;
    let local_dir = conf.local_dir()?;
    let sup_dir = local_dir.join("supervisor");
    std::fs::create_dir_all(sup_dir.join("binaries"))
        .map_err(io_err(format!("creating {}", sup_dir.display())))?;
    let hostname = squall_cluster::local_hostname(&conf);
    let id = supervisor_id(&sup_dir, &hostname)?;
    let ports = conf.supervisor_slot_ports()?;
    let nimbus_port = conf.nimbus_port()?;
    let nimbus = conf
        .nimbus_seeds()?
        .into_iter()
        .map(|h| format!("{h}:{nimbus_port}"))
        .collect();
    let monitor = conf.supervisor_monitor_frequency()?;
    let mut sup = Supervisor {
        id,
        hostname,
        ports,
        local_dir,
        nimbus,
        timeouts: Timeouts {
            worker: conf.supervisor_worker_timeout()?,
            start: conf.supervisor_worker_start_timeout()?,
        },
        workers: BTreeMap::new(),
        failures: BTreeMap::new(),
    };
    let connect = || async {
        let state = ClusterState::connect(
            &conf.zookeeper_connect_string()?,
            &conf.zookeeper_root()?,
            conf.zookeeper_session_timeout()?,
        )
        .await?;
        Ok::<_, SupervisorError>(state)
    };
    let mut state = connect().await?;
    sup.register(&state).await?;
    println!(
        "Supervisor {} on {} with slots {:?}",
        sup.id, sup.hostname, sup.ports
    );
    let mut watch = assignments_watch(&conf).await;
    loop {
        if !state.is_alive() {
            tracing::warn!("ZooKeeper session lost; reconnecting");
            match connect().await {
                Ok(s) => {
                    state = s;
                    sup.register(&state).await?;
                    watch = assignments_watch(&conf).await;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        match state.assignments().await {
            Ok(assignments) => sup.sync(&assignments).await,
            Err(e) => tracing::warn!("cannot read assignments: {e}"),
        }
        let woke = async {
            match watch.as_mut() {
                Some((_, w)) => {
                    w.changed().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(monitor) => {}
            _ = woke => {}
        }
    }
    for (port, w) in std::mem::take(&mut sup.workers) {
        stop(port, w, "the supervisor is shutting down").await;
    }
    Ok(())
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

async fn stop(port: u16, mut w: Worker, why: &str) {
    tracing::info!(port, topology = %w.topology_id, "stopping worker: {why}");
    let _ = w.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
}

fn heartbeat_age(path: &Path) -> Option<Duration> {
    let bytes = std::fs::read(path).ok()?;
    let hb: LocalHeartbeat = serde_json::from_slice(&bytes).ok()?;
    Some(Duration::from_secs(now_secs().saturating_sub(hb.time_secs)))
}

impl Supervisor {
    async fn register(&self, state: &ClusterState) -> Result<(), SupervisorError> {
        state
            .register_supervisor(&SupervisorInfo {
                id: self.id.clone(),
                hostname: self.hostname.clone(),
                ports: self.ports.clone(),
                start_time_secs: now_secs(),
                version: squall_cluster::VERSION.to_owned(),
                heartbeat_secs: now_secs(),
            })
            .await?;
        Ok(())
    }

    async fn sync(&mut self, assignments: &[Assignment]) {
        let mut desired_assignments: BTreeMap<u16, &Assignment> = BTreeMap::new();
        for a in assignments {
            for slot in a.slots() {
                if slot.node == self.id {
                    desired_assignments.insert(slot.port, a);
                }
            }
        }
        let desired: BTreeMap<u16, Desired> = desired_assignments
            .iter()
            .map(|(&port, a)| {
                (
                    port,
                    Desired {
                        topology_id: a.topology_id.clone(),
                        version: a.version,
                    },
                )
            })
            .collect();
        let observed: BTreeMap<u16, Observed> = self
            .workers
            .iter_mut()
            .map(|(&port, w)| {
                let alive = matches!(w.child.try_wait(), Ok(None));
                (
                    port,
                    Observed {
                        topology_id: w.topology_id.clone(),
                        version: w.version,
                        alive,
                        uptime: w.started.elapsed(),
                        heartbeat_age: heartbeat_age(&w.heartbeat_file),
                    },
                )
            })
            .collect();
        for action in decide(&desired, &observed, self.timeouts) {
            match action {
                Action::Kill(port, why) => {
                    if let Some(w) = self.workers.remove(&port) {
                        stop(port, w, &why).await;
                    }
                }
                Action::Restart(port, why) => {
                    if let Some(w) = self.workers.remove(&port) {
                        tracing::warn!(port, topology = %w.topology_id, "restarting worker: {why}");
                        stop(port, w, &why).await;
                    }
                    if let Some(a) = desired_assignments.get(&port) {
                        self.launch(port, a).await;
                    }
                }
                Action::Launch(port) => {
                    if let Some(a) = desired_assignments.get(&port) {
                        self.launch(port, a).await;
                    }
                }
            }
        }
    }

    async fn binary(&self, sha: &str) -> Result<PathBuf, String> {
        let path = self.local_dir.join("supervisor/binaries").join(sha);
        if path.is_file() {
            return Ok(path);
        }
        let mut last = String::from("no nimbus.seeds configured");
        for addr in &self.nimbus {
            match NimbusClient::new(addr).download_binary(sha, &path).await {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                    return Ok(path);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("cannot download binary {sha}: {last}"))
    }

    async fn launch(&mut self, port: u16, a: &Assignment) {
        if let Some((n, at)) = self.failures.get(&port) {
            let backoff = Duration::from_secs(1 << (*n).min(5));
            if at.elapsed() < backoff {
                return;
            }
        }
        match self.try_launch(port, a).await {
            Ok(w) => {
                self.failures.remove(&port);
                self.workers.insert(port, w);
            }
            Err(e) => {
                tracing::error!(port, topology = %a.topology_id, "cannot start worker: {e}");
                let n = self.failures.get(&port).map_or(0, |f| f.0 + 1);
                self.failures.insert(port, (n, Instant::now()));
            }
        }
    }

    async fn try_launch(&self, port: u16, a: &Assignment) -> Result<Worker, String> {
        let binary = self.binary(&a.binary_sha256).await?;
        let dir = self
            .local_dir
            .join("workers")
            .join(format!("{}-{port}", a.topology_id));
        let logs = self
            .local_dir
            .join("workers-artifacts")
            .join(&a.topology_id)
            .join(port.to_string());
        for d in [&dir, &logs] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let heartbeat_file = dir.join("heartbeat");
        let _ = std::fs::remove_file(&heartbeat_file);
        let launch = WorkerLaunch {
            topology_id: a.topology_id.clone(),
            topology_name: a.topology_name.clone(),
            supervisor_id: self.id.clone(),
            host: self.hostname.clone(),
            port,
            assignment: a.clone(),
            nimbus: self.nimbus.clone(),
            heartbeat_file: heartbeat_file.clone(),
            secret_file: None,
        };
        let spec = dir.join("launch.json");
        std::fs::write(
            &spec,
            serde_json::to_vec_pretty(&launch).expect("launch serializes"),
        )
        .map_err(|e| format!("writing {}: {e}", spec.display()))?;
        let log_path = logs.join("worker.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let child = tokio::process::Command::new(&binary)
            .args(&a.args)
            .env("SQUALL_LAUNCH", "worker")
            .env(WORKER_SPEC_ENV, &spec)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        tracing::info!(
            port,
            topology = %a.topology_id,
            pid = child.id().unwrap_or(0),
            log = %log_path.display(),
            "started worker for {}",
            WorkerSlot { node: self.id.clone(), port }
        );
        Ok(Worker {
            topology_id: a.topology_id.clone(),
            version: a.version,
            child,
            started: Instant::now(),
            heartbeat_file,
        })
    }
}
