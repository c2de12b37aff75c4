//! Clients of a `squall drpc` server.

use squall_api::Config;

use crate::{DrpcError, DrpcInvocations, DrpcRequest};

/// Calls DRPC functions on a `squall drpc` server (Storm's `DRPCClient`).
pub struct DrpcClient {}

impl DrpcClient {
    /// A client of the server at `host:port` (its `drpc.port`).
    pub fn new(server: &str) -> Self {
        let _ = server;
        todo!("H2")
    }

    /// Calls `function` with `args` and waits for the answer.
    pub fn execute(&self, function: &str, args: &str) -> Result<String, DrpcError> {
        let _ = (function, args);
        todo!("H2")
    }
}

/// [`DrpcInvocations`] over the network, to every server in `drpc.servers` (port
/// `drpc.port`), as a topology's DRPC spout uses them in cluster mode.
pub struct RemoteInvocations {}

impl RemoteInvocations {
    /// Reads `drpc.servers` and `drpc.port` from `conf`.
    pub fn from_conf(conf: &Config) -> Result<Self, DrpcError> {
        let _ = conf;
        todo!("H2")
    }
}

impl DrpcInvocations for RemoteInvocations {
    fn fetch(&self, function: &str, max: usize) -> Result<Vec<DrpcRequest>, DrpcError> {
        let _ = (function, max);
        todo!("H2")
    }
    fn result(&self, server: &str, id: &str, result: &str) -> Result<(), DrpcError> {
        let _ = (server, id, result);
        todo!("H2")
    }
    fn fail(&self, server: &str, id: &str, message: &str) -> Result<(), DrpcError> {
        let _ = (server, id, message);
        todo!("H2")
    }
}
