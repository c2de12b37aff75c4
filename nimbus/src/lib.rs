//! # squall-nimbus: the master daemon
//!
//! Nimbus takes topology submissions over its RPC API ([`squall_cluster::rpc`]),
//! validates them, stores them in ZooKeeper and its local dir, schedules their executors
//! onto the free slots of live supervisors and drives their lifecycle: activate,
//! deactivate, kill with a wait, rebalance. Everything needed to carry on after a
//! restart lives in ZooKeeper (bases, assignments) and `storm.local.dir/nimbus`
//! (binaries, topology specs).
//!
//! A monitor loop runs every second: it finishes kills and rebalances whose wait is
//! over, and re-schedules topologies that have no assignment yet or lost a supervisor.
#![deny(missing_docs)]

mod api;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use squall_api::{Config, TaskLayout, TopologySpec};
use squall_cluster::config::ClusterConfig;
use squall_cluster::scheduler::{schedule, FreeSlots};
use squall_cluster::state::{
    now_secs, Assignment, NimbusSummary, StormBase, TopologyStatus, WorkerHeartbeat, WorkerSlot,
};
use squall_cluster::zk::{ClusterState, StateError};
use tokio_util::sync::CancellationToken;

/// Why Nimbus could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NimbusError {
    /// Bad configuration.
    #[error("nimbus: {0}")]
    Config(#[from] squall_api::ConfigError),
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

/// What Nimbus keeps on disk per topology: the spec and the configuration it was
/// submitted with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TopologyCode {
    pub spec: TopologySpec,
    pub conf: Config,
}

/// Latest heartbeat per topology id and worker slot, with when it arrived.
pub(crate) type Heartbeats = HashMap<String, BTreeMap<WorkerSlot, (Instant, WorkerHeartbeat)>>;

/// What heartbeats are answered from: per topology id, its status, assignment version
/// and slots.
pub(crate) struct TopologyView {
    pub status: TopologyStatus,
    pub version: u64,
    pub slots: Vec<WorkerSlot>,
}

pub(crate) struct Nimbus {
    /// Status and assignment per topology, as last read from ZooKeeper.
    view: Mutex<HashMap<String, TopologyView>>,
    /// The ZooKeeper session; replaced when it expires.
    state: std::sync::RwLock<ClusterState>,
    /// Settings to reconnect and re-register with.
    zk: ZkSettings,
    summary: NimbusSummary,
    pub dir: PathBuf,
    pub max_binary_bytes: u64,
    /// Serializes every change of cluster state.
    pub lock: tokio::sync::Mutex<()>,
    /// Latest heartbeat per topology and worker slot.
    pub heartbeats: Mutex<Heartbeats>,
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
    let dir = conf.local_dir()?.join("nimbus");
    for sub in ["binaries", "topologies"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
    }
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
    let state = ClusterState::connect(&zk.servers, &zk.root, zk.session_timeout).await?;
    let host = squall_cluster::local_hostname(&conf);
    let summary = NimbusSummary {
        host: host.clone(),
        port,
        start_time_secs: now_secs(),
        version: squall_cluster::VERSION.to_owned(),
    };
    state.register_nimbus(&summary).await?;
    let nimbus = Arc::new(Nimbus {
        max_binary_bytes: conf.nimbus_binary_max_bytes()?,
        state: std::sync::RwLock::new(state),
        zk,
        summary,
        dir,
        lock: tokio::sync::Mutex::new(()),
        heartbeats: Mutex::new(HashMap::new()),
        view: Mutex::new(HashMap::new()),
    });
    tracing::info!("Nimbus listening on {host}:{port}");
    println!("Nimbus listening on {host}:{port}");

    let monitor = {
        let nimbus = nimbus.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = nimbus.ensure_session().await {
                            tracing::warn!("ZooKeeper: {e}");
                            continue;
                        }
                        if let Err(e) = nimbus.monitor().await {
                            tracing::warn!("monitor: {e}");
                        }
                        nimbus.refresh_view().await;
                    }
                }
            }
        })
    };
    let handler = api::handler(nimbus.clone());
    squall_cluster::http::serve(listener, handler, shutdown).await;
    let _ = monitor.await;
    Ok(())
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

    /// The next topology number (Storm's id counter), kept in the local dir so ids are
    /// never reused, even across restarts.
    pub fn next_topology_number(&self) -> Result<u64, NimbusError> {
        let path = self.dir.join("topology-counter");
        let n = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        std::fs::write(&path, n.to_string())
            .map_err(io_err(format!("writing {}", path.display())))?;
        Ok(n)
    }

    pub fn code_path(&self, topology_id: &str) -> PathBuf {
        self.dir
            .join("topologies")
            .join(format!("{topology_id}.json"))
    }

    pub fn binary_path(&self, sha: &str) -> PathBuf {
        self.dir.join("binaries").join(sha)
    }

    pub fn read_code(&self, topology_id: &str) -> Option<TopologyCode> {
        let bytes = std::fs::read(self.code_path(topology_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_code(&self, topology_id: &str, code: &TopologyCode) -> Result<(), NimbusError> {
        let path = self.code_path(topology_id);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(code).expect("code serializes"))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(io_err(format!("writing {}", path.display())))
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

    /// Free slots of live supervisors, not counting those `except` uses.
    async fn free_slots(
        &self,
        except: &str,
    ) -> Result<(Vec<FreeSlots>, BTreeMap<String, String>), StateError> {
        let supervisors = self.state().supervisors().await?;
        let assignments = self.state().assignments().await?;
        let mut used: Vec<WorkerSlot> = Vec::new();
        for a in assignments.iter().filter(|a| a.topology_id != except) {
            used.extend(a.slots());
        }
        let mut hosts = BTreeMap::new();
        let free = supervisors
            .into_iter()
            .map(|s| {
                hosts.insert(s.id.clone(), s.hostname.clone());
                FreeSlots {
                    ports: s
                        .ports
                        .iter()
                        .copied()
                        .filter(|&p| !used.iter().any(|u| u.node == s.id && u.port == p))
                        .collect(),
                    node: s.id,
                }
            })
            .collect();
        Ok((free, hosts))
    }

    /// Schedules `base` afresh and stores the assignment. Returns false when no slot is
    /// free (the topology waits for one).
    pub async fn assign(&self, base: &StormBase) -> Result<bool, NimbusError> {
        let Some(code) = self.read_code(&base.topology_id) else {
            tracing::warn!(topology = %base.topology_id, "no stored spec; cannot schedule");
            return Ok(false);
        };
        let layout = Self::layout(base, &code);
        let executors: Vec<_> = layout
            .executors()
            .map(|(c, a, b)| (c.to_string(), a, b))
            .collect();
        let (free, node_host) = self.free_slots(&base.topology_id).await?;
        let placed = match schedule(&executors, base.num_workers, &free) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topology = %base.name, "cannot schedule: {e}");
                return Ok(false);
            }
        };
        let previous = self.state().assignment(&base.topology_id).await?;
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
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            epoch: previous.as_ref().map_or(1, |p| p.epoch + 1),
        };
        for slot in assignment.slots() {
            assignment.slot_start_secs.insert(slot.to_string(), now);
        }
        tracing::info!(
            topology = %base.name,
            version = assignment.version,
            "assigned {} executors to {:?}",
            assignment.executors.len(),
            assignment.slots().iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        self.state().set_assignment(&assignment).await?;
        Ok(true)
    }

    /// Finishes due kills and rebalances; schedules what needs a (new) place.
    async fn monitor(&self) -> Result<(), NimbusError> {
        let _guard = self.lock.lock().await;
        let now = now_secs();
        let live: Vec<String> = self
            .state()
            .supervisors()
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        for mut base in self.state().storms().await? {
            let due = base.action_at_secs.is_none_or(|t| t <= now);
            match base.status {
                TopologyStatus::Killed if due => {
                    tracing::info!(topology = %base.name, "killed: removing its assignment and state");
                    self.state().remove_assignment(&base.topology_id).await?;
                    self.state().remove_errors(&base.topology_id).await?;
                    self.state().remove_storm(&base.topology_id).await?;
                    let _ = std::fs::remove_file(self.code_path(&base.topology_id));
                    self.lock_heartbeats().remove(&base.topology_id);
                }
                TopologyStatus::Rebalancing if due => {
                    let req = base.rebalance.take().unwrap_or_default();
                    if let Some(n) = req.num_workers {
                        base.num_workers = n.max(1);
                    }
                    let code = self.read_code(&base.topology_id);
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
                    self.assign(&base).await?;
                }
                TopologyStatus::Killed | TopologyStatus::Rebalancing => {}
                TopologyStatus::Active | TopologyStatus::Inactive => {
                    let needs = match self.state().assignment(&base.topology_id).await? {
                        None => true,
                        Some(a) => a.slots().iter().any(|s| !live.contains(&s.node)),
                    };
                    if needs {
                        self.assign(&base).await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn lock_view(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopologyView>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every topology's status and assignment into the heartbeat view.
    pub async fn refresh_view(&self) {
        let state = self.state();
        let (storms, assignments) = match (state.storms().await, state.assignments().await) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot refresh the topology view: {e}");
                return;
            }
        };
        let view = storms
            .into_iter()
            .filter_map(|b| {
                let a = assignments
                    .iter()
                    .find(|a| a.topology_id == b.topology_id)?;
                Some((
                    b.topology_id.clone(),
                    TopologyView {
                        status: b.status,
                        version: a.version,
                        slots: a.slots(),
                    },
                ))
            })
            .collect();
        *self.lock_view() = view;
    }

    pub fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, Heartbeats> {
        self.heartbeats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live topology named `name`.
    pub async fn find(&self, name: &str) -> Result<Option<StormBase>, StateError> {
        Ok(self
            .state()
            .storms()
            .await?
            .into_iter()
            .find(|b| b.name == name))
    }
}

/// Whether `path` holds a complete binary.
pub(crate) fn exists(path: &Path) -> bool {
    path.is_file()
}
