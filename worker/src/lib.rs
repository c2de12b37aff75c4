//! # squall-worker: the executor runtime
//!
//! Runs the spouts and bolts of a [`squall_api::Topology`]:
//!
//! - [`runtime`]: one thread per executor, each with a receive queue. Producers batch
//!   outgoing messages per receiving executor ([`transfer`]) and hand over whole
//!   batches; a full bounded queue blocks the producer (backpressure).
//! - [`routing`]: groupings evaluated at the emitting side.
//! - [`transport`]: the worker-to-worker data plane, batches of envelopes as
//!   MessagePack frames over TCP; a remote worker is one more destination of
//!   [`transfer`].
//! - [`cluster_worker`]: worker mode, as started by a supervisor.
//! - [`acker`]: Storm's XOR acker, a pure state machine run by acker executors.
//! - [`local`]: [`LocalCluster`], whole topologies in one process.
//! - [`submitter`]: the entry point a topology binary calls, deciding between local
//!   mode, submission to Nimbus and running as a worker.
//! - [`ratelimit`]: at most a few log lines per interval for messages that could
//!   repeat once per tuple.
//! - [`logging`]: the log subscriber Squall installs (worker logs) and log levels
//!   changed at run time (`squall set_log_level`).
//! - [`stats`]: per-executor and per-stream counters, published in bulk by executors.
#![deny(missing_docs)]

pub mod acker;
pub mod cluster_worker;
mod emitter;
mod executor;
mod flow;
pub mod local;
pub mod local_nimbus;
pub mod logging;
pub mod message;
pub mod ratelimit;
pub mod rotating;
pub mod routing;
pub mod runtime;
pub mod stats;
pub mod submitter;
pub mod transfer;
pub mod transport;
pub mod wire;

pub use local::LocalCluster;
pub use runtime::{
    ComponentStats, ExecutorFailure, LatencySummary, RuntimePlan, TopologyRuntime, TopologyStats,
};
pub use stats::ReportedError;
pub use submitter::StormSubmitter;

/// Why the runtime refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The topology is invalid.
    #[error(transparent)]
    Topology(#[from] squall_api::TopologyError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] squall_api::ConfigError),
    /// A topology of that name runs already.
    #[error("a topology named '{0}' is already running")]
    AlreadyRunning(String),
    /// No topology of that name runs.
    #[error("no topology named '{0}' is running")]
    UnknownTopology(String),
    /// The name cannot be used (the message says why).
    #[error("{0}")]
    InvalidName(String),
    /// The binary lacks a component of the topology.
    #[error("component '{0}' has no implementation in this binary")]
    MissingComponent(String),
    /// An executor thread could not be started.
    #[error("could not start an executor thread: {0}")]
    Spawn(std::io::Error),
    /// The binary was not started by `squall jar`.
    #[error("{0}")]
    NotLaunched(String),
    /// An executor failed: a task's `open`/`prepare` returned an error, panicked or did
    /// not finish in time, creating a task's instance panicked, or an executor thread
    /// died. The message names the component, task and cause.
    #[error("{0}")]
    ExecutorFailed(ExecutorFailure),
    /// `SQUALL_CONF` (the `-c` options of `squall jar` / `squall local`) is not a JSON
    /// object of config keys.
    #[error("invalid command-line configuration in SQUALL_CONF: {0}")]
    CommandLineConfig(String),
}
