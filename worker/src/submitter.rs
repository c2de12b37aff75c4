//! The entry point of a topology binary.
//!
//! A topology is a binary whose `main` builds the topology and hands it to Squall.
//! Run directly, the binary runs the topology in local mode. `squall jar ./binary args`
//! runs the same binary with the launch environment set, and the same call submits the
//! binary to Nimbus; supervisors later start the binary as a worker, and again the same
//! call runs the worker's executors. So the same code builds the topology everywhere.

use squall_api::{Config, Topology};

use crate::WorkerError;

/// Set by `squall jar` (value `submit`) and by supervisors (value `worker`).
pub const LAUNCH_ENV: &str = "SQUALL_LAUNCH";

/// How this process was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchMode {
    /// Run directly by a user.
    Direct,
    /// Run by `squall jar`: submit to Nimbus.
    Submit,
    /// Started by a supervisor: run assigned executors.
    Worker,
}

/// Reads [`LAUNCH_ENV`].
pub fn launch_mode() -> LaunchMode {
    match std::env::var(LAUNCH_ENV).as_deref() {
        Ok("submit") => LaunchMode::Submit,
        Ok("worker") => LaunchMode::Worker,
        _ => LaunchMode::Direct,
    }
}

/// Submits topologies to a cluster (Storm's `StormSubmitter`).
pub struct StormSubmitter;

impl StormSubmitter {
    /// Submits `topology` as `name`. Only works in a binary started by `squall jar`;
    /// a binary run directly gets a clear error saying so.
    pub fn submit_topology(
        name: &str,
        conf: &Config,
        topology: &Topology,
    ) -> Result<(), WorkerError> {
        crate::local::validate_topology_name(name)?;
        conf.validate()?;
        topology.spec().validate()?;
        match launch_mode() {
            LaunchMode::Direct => Err(WorkerError::NotLaunched(format!(
                "cannot submit topology '{name}': this binary was not started by `squall jar`. \
                 Run `squall jar <binary> {name}` to submit it, or run it without arguments for local mode"
            ))),
            LaunchMode::Submit | LaunchMode::Worker => Err(WorkerError::NotLaunched(format!(
                "cannot submit topology '{name}': cluster mode is not available in this build"
            ))),
        }
    }
}
