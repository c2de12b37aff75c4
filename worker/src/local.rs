//! Local mode: whole topologies in this process (Storm's `LocalCluster`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use squall_api::{Config, TaskLayout, Topology};

use crate::runtime::{TopologyRuntime, TopologyStats};
use crate::stats::ReportedError;
use crate::WorkerError;

/// Runs topologies inside this process, each executor on its own thread, exactly as a
/// worker would but with every task local. Dropping the cluster kills its topologies.
///
/// [`LocalCluster::new`] installs a default log subscriber if the program set none
/// (level `warn`, or as `RUST_LOG` says, on stderr, in colour only on a terminal), so the
/// errors of a topology show up without any logging setup; its levels can be changed
/// while topologies run ([`crate::logging::apply_log_levels`]).
///
/// ```no_run
/// # fn demo(topology: squall_api::Topology) -> Result<(), squall_worker::WorkerError> {
/// use squall_worker::LocalCluster;
/// let cluster = LocalCluster::new();
/// cluster.submit_topology("word-count", &squall_api::Config::new(), &topology)?;
/// std::thread::sleep(std::time::Duration::from_secs(10));
/// println!("{:?}", cluster.stats("word-count")?);
/// cluster.kill_topology("word-count")?;
/// # Ok(()) }
/// ```
pub struct LocalCluster {
    shared: Arc<Shared>,
}

/// The topologies of a [`LocalCluster`], shared with its Nimbus stand-in
/// ([`crate::local_nimbus`]).
#[derive(Default)]
pub(crate) struct Shared {
    topologies: Mutex<Topologies>,
}

pub(crate) type Topologies = BTreeMap<String, LocalTopology>;

/// A running local topology and what the UI shows of it.
pub(crate) struct LocalTopology {
    pub runtime: TopologyRuntime,
    pub spec: squall_api::TopologySpec,
    pub conf: Config,
    /// Seconds since the epoch at submission.
    pub launched: u64,
    /// Whether its spouts were last activated (not deactivated).
    pub active: bool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Topologies> {
        self.topologies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks a topology name the way Nimbus does ([`squall_cluster::validate_topology_name`]).
pub fn validate_topology_name(name: &str) -> Result<(), WorkerError> {
    squall_cluster::validate_topology_name(name).map_err(WorkerError::InvalidName)
}

impl Default for LocalCluster {
    fn default() -> Self {
        Self::new()
    }
}

pub use crate::logging::init_default_logging;

impl LocalCluster {
    /// An empty local cluster (see the type's docs for the logging it sets up).
    pub fn new() -> Self {
        init_default_logging();
        let shared = Arc::new(Shared::default());
        if let Ok(port) = std::env::var(crate::local_nimbus::LOCAL_NIMBUS_PORT_ENV) {
            match port.parse::<u16>() {
                Ok(port) => match crate::local_nimbus::start(&shared, port) {
                    Ok(addr) => tracing::info!(%addr, "serving the local cluster to the UI"),
                    Err(e) => tracing::warn!(
                        "cannot serve the local cluster to the UI on port {port}: {e}"
                    ),
                },
                Err(_) => tracing::warn!(
                    "ignoring {}={port:?}: not a port number",
                    crate::local_nimbus::LOCAL_NIMBUS_PORT_ENV
                ),
            }
        }
        LocalCluster { shared }
    }

    fn lock(&self) -> MutexGuard<'_, Topologies> {
        self.shared.lock()
    }

    /// Serves Nimbus's read API (and activate, deactivate, kill) for this cluster's
    /// topologies on `127.0.0.1:port` (0: any free port), so the web UI can show them
    /// (see [`crate::local_nimbus`]; `squall local --ui` does this through the
    /// environment). Returns the bound address; serving stops when the cluster is
    /// dropped.
    pub fn serve_nimbus_api(&self, port: u16) -> std::io::Result<std::net::SocketAddr> {
        crate::local_nimbus::start(&self.shared, port)
    }

    /// Validates and starts `topology` under `name`, active.
    ///
    /// Everything is checked before any thread starts: the name, the configuration,
    /// the topology and each component's configuration merged over `conf`. Then every
    /// task's `open`/`prepare` runs; when one fails (returns an error, panics or does
    /// not finish within a minute) the topology is stopped again (the tasks that did
    /// start are closed / cleaned up, no spout ever gets `next_tuple`) and the error
    /// names the component, task and cause.
    pub fn submit_topology(
        &self,
        name: &str,
        conf: &Config,
        topology: &Topology,
    ) -> Result<(), WorkerError> {
        validate_topology_name(name)?;
        conf.validate()?;
        topology.spec().validate()?;
        topology.spec().validate_with_conf(conf)?;
        let mut topologies = self.lock();
        if topologies.contains_key(name) {
            return Err(WorkerError::AlreadyRunning(name.to_owned()));
        }
        let mut conf = conf.clone();
        conf.set(squall_api::config::keys::TOPOLOGY_NAME, name);
        let layout = Arc::new(TaskLayout::new(topology.spec(), conf.num_ackers()?));
        let launched = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("{name}-1-{launched}");
        let mut runtime = TopologyRuntime::start(&id, topology, &conf, layout, true)?;
        if let Some(failure) = runtime.executor_failure() {
            runtime.shutdown(Duration::from_secs(10));
            return Err(WorkerError::ExecutorFailed(failure));
        }
        topologies.insert(
            name.to_owned(),
            LocalTopology {
                runtime,
                spec: topology.spec().clone(),
                conf,
                launched,
                active: true,
            },
        );
        Ok(())
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut LocalTopology) -> T,
    ) -> Result<T, WorkerError> {
        let mut topologies = self.lock();
        let t = topologies
            .get_mut(name)
            .ok_or_else(|| WorkerError::UnknownTopology(name.to_owned()))?;
        Ok(f(t))
    }

    /// Names of the running topologies.
    pub fn topology_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Resumes the spouts of `name`.
    pub fn activate(&self, name: &str) -> Result<(), WorkerError> {
        self.with(name, |t| {
            t.runtime.activate();
            t.active = true;
        })
    }

    /// Pauses the spouts of `name`.
    pub fn deactivate(&self, name: &str) -> Result<(), WorkerError> {
        self.with(name, |t| {
            t.runtime.deactivate();
            t.active = false;
        })
    }

    /// Counters of `name`.
    pub fn stats(&self, name: &str) -> Result<TopologyStats, WorkerError> {
        self.with(name, |t| t.runtime.stats())
    }

    /// Per-executor counters of `name`, exactly as a worker reports them to Nimbus
    /// ([`TopologyRuntime::heartbeats`]: totals, per-stream rows, backpressure).
    pub fn heartbeats(
        &self,
        name: &str,
    ) -> Result<Vec<squall_cluster::state::ExecutorHeartbeat>, WorkerError> {
        self.with(name, |t| t.runtime.heartbeats())
    }

    /// Errors reported by the tasks of `name`.
    pub fn errors(&self, name: &str) -> Result<Vec<ReportedError>, WorkerError> {
        self.with(name, |t| t.runtime.errors())
    }

    /// Kills `name` at once.
    pub fn kill_topology(&self, name: &str) -> Result<TopologyStats, WorkerError> {
        self.kill_topology_with_opts(name, Duration::ZERO)
    }

    /// Deactivates `name`, lets in-flight tuples finish for `wait`, then stops it and
    /// returns its final counters.
    pub fn kill_topology_with_opts(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<TopologyStats, WorkerError> {
        let mut rt = self
            .lock()
            .remove(name)
            .ok_or_else(|| WorkerError::UnknownTopology(name.to_owned()))?
            .runtime;
        if !wait.is_zero() {
            rt.deactivate();
            std::thread::sleep(wait);
        }
        rt.shutdown(Duration::from_secs(10));
        Ok(rt.stats())
    }

    /// Kills every topology.
    pub fn shutdown(&self) {
        let all: Vec<LocalTopology> = std::mem::take(&mut *self.lock()).into_values().collect();
        for mut t in all {
            t.runtime.shutdown(Duration::from_secs(10));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
