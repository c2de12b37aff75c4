//! # squall-cluster: what the daemons and workers share
//!
//! - [`config`]: cluster configuration from Storm-style YAML files and `-c key=value`
//!   overrides, over defaults embedded in the binary.
//! - [`dev_zookeeper`]: starts a real Apache ZooKeeper server (Debian's package) for
//!   development and tests.
//! - [`state`]: what the cluster stores (topology bases, assignments, supervisors,
//!   heartbeats) and [`zk`] where in ZooKeeper (feature `zk`).
//! - [`scheduler`]: Nimbus's even scheduler, pure.
//! - [`rpc`]: Nimbus's HTTP API: request/answer types and a client.
#![deny(missing_docs)]

pub mod config;
pub mod dev_zookeeper;
pub mod rpc;
pub mod scheduler;
pub mod state;
#[cfg(feature = "zk")]
pub mod zk;

/// Squall's version, as daemons report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
