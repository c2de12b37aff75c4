//! # squall-cluster: what the daemons and workers share
//!
//! - [`config`]: cluster configuration from Storm-style YAML files and `-c key=value`
//!   overrides, over defaults embedded in the binary.
//! - [`dev_zookeeper`]: starts a real Apache ZooKeeper server (Debian's package) for
//!   development and tests.
//! - [`state`]: what the cluster stores (topology bases, assignments, supervisors,
//!   heartbeats) and [`zk`] where in ZooKeeper (feature `zk`).
//! - [`scheduler`]: Nimbus's even scheduler, pure.
//! - [`secret`]: the cluster secret (`squall.secret.file`) and its checks.
//! - [`rpc`]: Nimbus's HTTP API: request/answer types and a client; [`http`]: the
//!   server setup every service uses.
#![deny(missing_docs)]

pub mod config;
pub mod dev_zookeeper;
pub mod http;
pub mod metrics;
pub mod rpc;
pub mod scheduler;
pub mod secret;
pub mod state;
#[cfg(feature = "zk")]
pub mod zk;

/// Squall's version, as daemons report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name other machines reach this one by: `storm.local.hostname` when set, else the
/// system's hostname, else `localhost`.
pub fn local_hostname(conf: &squall_api::Config) -> String {
    if let Ok(Some(h)) = conf.get_str(config::keys::STORM_LOCAL_HOSTNAME) {
        if !h.is_empty() {
            return h.to_owned();
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Checks a topology name: 1-200 characters, no `/`, `\` or control characters, not
/// `.` or `..` (the name becomes part of paths and ids).
pub fn validate_topology_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 200
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(format!(
            "invalid topology name '{name}': use 1-200 characters without '/', '\\' or control characters"
        ));
    }
    Ok(())
}
