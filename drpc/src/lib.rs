//! # squall-drpc: distributed RPC (Storm's DRPC)
//!
//! A client calls a *function* with a string argument and waits for a string result; a
//! topology serves the function: its DRPC spout fetches pending requests, the topology
//! computes, and the result goes back to the server that holds the waiting client.
//!
//! - [`DrpcClient`]: what an application calls (Storm's `DRPCClient`), also behind
//!   `squall drpc-client`.
//! - [`LocalDrpc`]: an in-process server for local mode (Storm's `LocalDRPC`).
//! - [`DrpcInvocations`]: what a topology's DRPC spout and result bolt use to fetch
//!   requests and answer them; implemented by [`LocalDrpc`] and, over the network, by
//!   [`RemoteInvocations`].
//! - `server` (feature `server`): the `squall drpc` daemon, with Squall's JSON API on
//!   `drpc.port` and Storm's DRPC HTTP on `drpc.http.port`; [`api`] is its wire format.
//!
//! The daemon and [`LocalDrpc`] share one core: per function a queue of pending
//! requests; a client waits until the topology answers or fails its request, or until
//! `drpc.request.timeout.secs` ([`DrpcError::Timeout`]). A function that was being
//! fetched and then is neither fetched nor answered for
//! `squall.drpc.fetcher.timeout.secs` (its topology was killed or died) fails its
//! outstanding requests at once ([`DrpcError::Failed`])
//! instead of leaving them hanging; requests for a function never fetched wait for the
//! request timeout, as in Storm, since a topology may still be starting.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// One pending request as a topology fetches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrpcRequest {
    /// The request's id, unique within the server that issued it.
    pub id: String,
    /// The function's argument.
    pub args: String,
    /// Which server holds the waiting client (`host:port` of its DRPC API, `drpc.port`;
    /// empty for a [`LocalDrpc`]). Answers go back there.
    pub server: String,
}

/// Why a DRPC call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrpcError {
    /// No answer within the request timeout (`drpc.request.timeout.secs`).
    #[error("DRPC request '{function}' timed out after {secs} s without an answer")]
    Timeout {
        /// The function called.
        function: String,
        /// The timeout.
        secs: u64,
    },
    /// The topology failed the request (its batch failed, the topology was killed
    /// while holding it, ...). The message says what happened.
    #[error("DRPC request '{function}' failed: {message}")]
    Failed {
        /// The function called.
        function: String,
        /// Why.
        message: String,
    },
    /// The server could not be reached or answered something that is not DRPC.
    #[error("DRPC server {server}: {message}")]
    Unreachable {
        /// `host:port`.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused the call (bad function name, unknown request id, ...).
    #[error("DRPC server refused: {0}")]
    Refused(String),
}

/// What a topology uses to serve DRPC functions. Calls block; they are made from
/// executor threads.
pub trait DrpcInvocations: Send + Sync + 'static {
    /// Takes up to `max` pending requests of `function` (possibly none). Waits at most
    /// a short while (well under a second) for one to arrive when none is pending.
    ///
    /// Fetches also tell the server that the function is served: one that saw fetches
    /// and then none (nor results or fails) for `squall.drpc.fetcher.timeout.secs`
    /// fails its outstanding requests as if the topology were killed. A fetcher that
    /// cannot take requests for a while (a slow batch) keeps the function alive with
    /// `max` 0, which takes nothing and does not wait.
    fn fetch(&self, function: &str, max: usize) -> Result<Vec<DrpcRequest>, DrpcError>;
    /// Answers request `id` (held by `server`) with `result`.
    fn result(&self, server: &str, id: &str, result: &str) -> Result<(), DrpcError>;
    /// Fails request `id` (held by `server`): the waiting client gets
    /// [`DrpcError::Failed`] with `message`.
    fn fail(&self, server: &str, id: &str, message: &str) -> Result<(), DrpcError>;
}

pub mod api;
mod client;
mod core;
mod local;
#[cfg(feature = "server")]
pub mod server;

pub use client::{DrpcClient, RemoteInvocations};
pub use local::LocalDrpc;
