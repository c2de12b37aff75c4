//! # squall-cluster: what the daemons and workers share
//!
//! - [`config`]: cluster configuration from Storm-style YAML files and `-c key=value`
//!   overrides, over defaults embedded in the binary.
//! - [`dev_zookeeper`]: starts a real Apache ZooKeeper server (Debian's package) for
//!   development and tests.
#![deny(missing_docs)]

pub mod config;
pub mod dev_zookeeper;
