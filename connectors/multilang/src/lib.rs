//! # squall-multilang: shell components speaking Storm's multilang protocol
//!
//! [`ShellBolt`] and [`ShellSpout`] run a component in a subprocess that speaks
//! Storm's multilang protocol (JSON messages over stdin/stdout, each followed by a line
//! `end`), so bolts and spouts written in Python with **pystorm** / **streamparse** or
//! against Storm's own `storm.py` run unchanged.
//!
//! | Storm | Squall |
//! |---|---|
//! | `ShellBolt`, `ShellSpout` | [`ShellBolt`], [`ShellSpout`] |
//! | `setEnv` | [`ShellBolt::env`], [`ShellSpout::env`] |
//! | the jar's `resources/` directory | [`Resources`] (compiled into the binary) |
//! | `topology.shellbolt.max.pending` (100) | [`TOPOLOGY_SHELLBOLT_MAX_PENDING`] |
//! | `topology.subprocess.timeout.secs` | [`TOPOLOGY_SUBPROCESS_TIMEOUT_SECS`] |
//!
//! Map of the crate: `protocol` (the wire format and the handshake's context),
//! `process` (a subprocess and its reader, writer and stderr threads), `shell`
//! (starting, restarting, what bolts and spouts share), `bolt`, `spout`, `resources`.
//!
//! ```no_run
//! use squall_api::TopologyBuilder;
//! use squall_multilang::{Resources, ShellBolt};
//! let split = ShellBolt::new(["python3", "splitsentence.py"])
//!     .resources(
//!         Resources::new()
//!             .file("splitsentence.py", "...python source, e.g. include_str!(...)...")
//!             .python_requirements("pystorm==3.1.4\n"),
//!     )
//!     .output_fields(["word"]);
//! let mut b = TopologyBuilder::new();
//! b.set_bolt("split", split, 4).shuffle_grouping("spout");
//! ```
#![deny(missing_docs)]

mod bolt;
mod process;
mod protocol;
mod resources;
mod shell;
mod spout;

pub use bolt::ShellBolt;
pub use protocol::HEARTBEAT_STREAM;
pub use resources::{ensure_venv, venv_cache_dir, Resources};
pub use spout::ShellSpout;

/// Tuples queued for a shell bolt's subprocess at most; `execute` waits (applying the
/// subprocess's replies) beyond that. Storm's key; default 100.
pub const TOPOLOGY_SHELLBOLT_MAX_PENDING: &str = "topology.shellbolt.max.pending";

/// Seconds a subprocess may stay silent (no answer to heartbeats, no `sync` for a
/// spout's command) before it is considered hung, killed and restarted. Storm's key;
/// default `supervisor.worker.timeout.secs` when set, else 30.
pub const TOPOLOGY_SUBPROCESS_TIMEOUT_SECS: &str = "topology.subprocess.timeout.secs";

/// Errors of setting a shell component up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resources could not be unpacked.
    #[error("multilang resources: {0}")]
    Resources(String),
    /// The Python virtual env could not be made.
    #[error("multilang Python env: {0}")]
    Venv(String),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
