//! What the cluster stores: topology bases, assignments, supervisor and Nimbus
//! summaries, worker heartbeats and launch specs. All serde, stored as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use squall_api::{Config, TaskId};

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A topology's lifecycle status (Storm's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TopologyStatus {
    /// Spouts run.
    Active,
    /// Spouts paused.
    Inactive,
    /// Waiting for a rebalance to happen.
    Rebalancing,
    /// Being killed: spouts paused until the kill wait ends.
    Killed,
}

impl fmt::Display for TopologyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopologyStatus::Active => "ACTIVE",
            TopologyStatus::Inactive => "INACTIVE",
            TopologyStatus::Rebalancing => "REBALANCING",
            TopologyStatus::Killed => "KILLED",
        })
    }
}

/// A requested rebalance, applied when its wait ends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceRequest {
    /// New number of workers.
    pub num_workers: Option<u32>,
    /// New parallelism per component.
    pub executors: BTreeMap<String, u32>,
}

/// `/storms/<topology-id>`: a submitted topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormBase {
    /// The topology's name (unique among live topologies).
    pub name: String,
    /// Its id: `<name>-<counter>-<launch secs>`.
    pub topology_id: String,
    /// Lifecycle status.
    pub status: TopologyStatus,
    /// Status to return to after a rebalance.
    pub prev_status: Option<TopologyStatus>,
    /// Requested worker processes.
    pub num_workers: u32,
    /// Executors per component (parallelism after rebalances).
    pub component_executors: BTreeMap<String, u32>,
    /// Launch time, seconds since the epoch.
    pub launch_time_secs: u64,
    /// Who submitted it.
    pub owner: String,
    /// SHA-256 of the topology binary.
    pub binary_sha256: String,
    /// Arguments the binary was submitted with (given again to workers).
    pub args: Vec<String>,
    /// When a pending kill or rebalance takes effect (seconds since the epoch).
    pub action_at_secs: Option<u64>,
    /// The pending rebalance.
    pub rebalance: Option<RebalanceRequest>,
}

/// A worker slot: a port on a supervisor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerSlot {
    /// The supervisor id.
    pub node: String,
    /// The port.
    pub port: u16,
}

impl fmt::Display for WorkerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.port)
    }
}

/// One executor's place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorAssignment {
    /// The component.
    pub component: String,
    /// First task.
    pub first: TaskId,
    /// Last task.
    pub last: TaskId,
    /// Where it runs.
    pub slot: WorkerSlot,
}

/// `/assignments/<topology-id>`: where every executor runs, and what supervisors need
/// to start the workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The topology id.
    pub topology_id: String,
    /// The topology name.
    pub topology_name: String,
    /// SHA-256 of the binary to run.
    pub binary_sha256: String,
    /// The binary's arguments.
    pub args: Vec<String>,
    /// The topology configuration (as submitted, with cluster defaults underneath).
    pub conf: Config,
    /// Every executor, including ackers.
    pub executors: Vec<ExecutorAssignment>,
    /// Supervisor id → hostname.
    pub node_host: BTreeMap<String, String>,
    /// Start time of each slot's current assignment (seconds since the epoch).
    pub slot_start_secs: BTreeMap<String, u64>,
    /// Bumped on every change of this assignment (an executor moved, a slot added).
    pub version: u64,
    /// The layout epoch: bumped only when the executors themselves change (a fresh
    /// schedule, a rebalance). Moving executors to other slots keeps it, so workers whose
    /// own executors did not move keep running. Workers exchange tuples only with
    /// workers of the same epoch (the transport hello carries it).
    #[serde(default)]
    pub epoch: u64,
}

impl Assignment {
    /// The slots in use.
    pub fn slots(&self) -> Vec<WorkerSlot> {
        let mut s: Vec<WorkerSlot> = self.executors.iter().map(|e| e.slot.clone()).collect();
        s.sort();
        s.dedup();
        s
    }

    /// The executors of `slot`.
    pub fn executors_of(&self, slot: &WorkerSlot) -> Vec<&ExecutorAssignment> {
        self.executors.iter().filter(|e| &e.slot == slot).collect()
    }

    /// `host:port` of a slot.
    pub fn address(&self, slot: &WorkerSlot) -> String {
        let host = self
            .node_host
            .get(&slot.node)
            .map_or("127.0.0.1", String::as_str);
        format!("{host}:{}", slot.port)
    }
}

/// `/supervisors/<id>` (ephemeral): a live supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// Its id (kept across restarts in its local dir).
    pub id: String,
    /// Hostname workers on other machines reach it by.
    pub hostname: String,
    /// Its slot ports.
    pub ports: Vec<u16>,
    /// Start time, seconds since the epoch.
    pub start_time_secs: u64,
    /// Squall version.
    pub version: String,
    /// Seconds since the epoch of the supervisor's last heartbeat: it rewrites its node
    /// every `supervisor.heartbeat.frequency.secs`. Nimbus notices the changes with its
    /// own clock and declares the supervisor dead after `nimbus.supervisor.timeout.secs`
    /// without one.
    #[serde(default)]
    pub heartbeat_secs: u64,
}

/// `/nimbuses/<host:port>` (ephemeral): a live Nimbus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NimbusSummary {
    /// Host.
    pub host: String,
    /// RPC port.
    pub port: u16,
    /// Start time, seconds since the epoch.
    pub start_time_secs: u64,
    /// Squall version.
    pub version: String,
}

/// An error reported by a task, as kept under `/errors/<topology-id>/<component>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The component.
    pub component: String,
    /// The task.
    pub task: u32,
    /// The worker's host.
    pub host: String,
    /// The worker's port.
    pub port: u16,
    /// Seconds since the epoch.
    pub time_secs: u64,
    /// The message.
    pub error: String,
}

/// Counters of one executor, as workers report them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorHeartbeat {
    /// The component.
    pub component: String,
    /// First task.
    pub first: TaskId,
    /// Last task.
    pub last: TaskId,
    /// Emitted.
    pub emitted: u64,
    /// Transferred.
    pub transferred: u64,
    /// Acked.
    pub acked: u64,
    /// Failed.
    pub failed: u64,
    /// Executed.
    pub executed: u64,
    /// Mean execute latency, ms.
    pub execute_latency_ms: f64,
    /// Mean complete latency, ms (spouts).
    pub complete_latency_ms: f64,
    /// Complete latency percentiles, ms (spouts): median.
    #[serde(default)]
    pub complete_latency_p50_ms: f64,
    /// 99th percentile.
    #[serde(default)]
    pub complete_latency_p99_ms: f64,
    /// Maximum.
    #[serde(default)]
    pub complete_latency_max_ms: f64,
    /// Spouts: trees that timed out (also counted in `failed`, as Storm does).
    #[serde(default)]
    pub timed_out: u64,
    /// Per-stream counters (cumulative) and backpressure, for the UI's windows.
    #[serde(default)]
    pub counters: crate::metrics::ExecutorCounters,
    /// Batches waiting in the executor's receive queue when the heartbeat was taken
    /// (each up to `topology.producer.batch.size` envelopes).
    #[serde(default)]
    pub queue_depth: u64,
    /// The receive queue's capacity in batches (`topology.executor.receive.buffer.size`
    /// / `topology.producer.batch.size`; 0 when unbounded, as for spouts).
    #[serde(default)]
    pub queue_capacity: u64,
    /// Custom gauges its tasks set (`set_gauge` on a collector): name → the latest
    /// value, summed over the executor's tasks when several set the same name.
    #[serde(default)]
    pub gauges: BTreeMap<String, i64>,
}

/// What a worker tells Nimbus every `worker.heartbeat.frequency.secs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// The topology id.
    pub topology_id: String,
    /// The supervisor running the worker.
    pub supervisor_id: String,
    /// The worker's host.
    pub host: String,
    /// The worker's port.
    pub port: u16,
    /// Assignment version the worker runs.
    pub assignment_version: u64,
    /// The layout epoch of that assignment ([`Assignment::epoch`]).
    #[serde(default)]
    pub epoch: u64,
    /// Seconds since the worker started.
    pub uptime_secs: u64,
    /// Seconds since the epoch.
    pub time_secs: u64,
    /// Per-executor counters (cumulative).
    pub executors: Vec<ExecutorHeartbeat>,
    /// Errors reported since the last heartbeat.
    pub errors: Vec<ErrorInfo>,
}

/// Nimbus's answer to a worker heartbeat.
///
/// JSON: `{"verdict": "assigned", "status": "ACTIVE", "assignment_version": 4}`,
/// `{"verdict": "not_assigned"}` or `{"verdict": "unknown"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum HeartbeatResponse {
    /// The worker's slot runs these executors in the current assignment: its spouts
    /// follow `status`.
    Assigned {
        /// The topology's status.
        status: TopologyStatus,
        /// The current assignment version (may be newer than the worker's when other
        /// executors moved; the worker then re-reads its launch file).
        assignment_version: u64,
        /// Log levels set with `squall set_log_level` that have not expired: logger
        /// (a `tracing` target such as `squall_worker`, or `ROOT`) to level (`TRACE`,
        /// `DEBUG`, `INFO`, `WARN`, `ERROR`, `OFF`). Empty: the worker's own defaults.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        log_levels: std::collections::BTreeMap<String, String>,
    },
    /// Nimbus knows the topology's current assignment and this worker is not part of it
    /// (killed topology, slot given away, executors moved, other epoch): stop.
    NotAssigned,
    /// Nimbus cannot tell yet (just started or took over, or lost ZooKeeper): carry on
    /// as before and ask again.
    Unknown,
}

/// What a supervisor hands a worker process it starts (as a JSON file named by
/// `SQUALL_WORKER_SPEC`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerLaunch {
    /// The topology id.
    pub topology_id: String,
    /// The topology name.
    pub topology_name: String,
    /// The supervisor id.
    pub supervisor_id: String,
    /// This worker's host.
    pub host: String,
    /// This worker's port (it listens there for tuples).
    pub port: u16,
    /// The assignment this worker runs.
    pub assignment: Assignment,
    /// Nimbus RPC addresses (`host:port`), tried in order. Empty for a standalone
    /// worker (as `squall-perf --workers` starts them): its spouts start active and it
    /// runs until it is stopped.
    pub nimbus: Vec<String>,
    /// The file this worker touches as its heartbeat to the supervisor.
    pub heartbeat_file: std::path::PathBuf,
    /// The cluster secret's file (`squall.secret.file`), when the cluster has one: every
    /// Nimbus RPC and worker-to-worker connection must prove knowledge of it.
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// Cluster settings the worker hands its components underneath the topology's
    /// configuration (Storm gives components the cluster config merged under the
    /// topology's): the supervisor's `storm.zookeeper.servers`, `storm.zookeeper.port`,
    /// `storm.zookeeper.root` and `storm.zookeeper.session.timeout`, so that Trident's
    /// coordinators find the cluster's ZooKeeper. A key the topology sets wins. Empty in
    /// launch files written before it existed and for standalone workers.
    #[serde(default)]
    pub cluster_conf: Config,
}

/// What a worker writes into its heartbeat file for the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalHeartbeat {
    /// The topology id.
    pub topology_id: String,
    /// Assignment version.
    pub assignment_version: u64,
    /// The layout epoch ([`Assignment::epoch`]).
    #[serde(default)]
    pub epoch: u64,
    /// Seconds since the epoch.
    pub time_secs: u64,
    /// The worker's process id.
    pub pid: u32,
    /// Per-executor counters (cumulative), as sent to Nimbus.
    #[serde(default)]
    pub executors: Vec<ExecutorHeartbeat>,
}
