//! [`LocalDrpc`]: an in-process DRPC server for local mode.

use crate::{DrpcError, DrpcInvocations, DrpcRequest};

/// An in-process DRPC server (Storm's `LocalDRPC`). Cloning gives another handle to the
/// same server. Hand it to `TridentTopology::new_local_drpc_stream` and call
/// [`execute`](Self::execute) from any thread.
#[derive(Clone, Default)]
pub struct LocalDrpc {}

impl LocalDrpc {
    /// A new server with Storm's default request timeout (`drpc.request.timeout.secs`,
    /// 600 s).
    pub fn new() -> Self {
        todo!("H2")
    }

    /// Calls `function` with `args` and waits for the topology's answer.
    pub fn execute(&self, function: &str, args: &str) -> Result<String, DrpcError> {
        let _ = (function, args);
        todo!("H2")
    }
}

impl DrpcInvocations for LocalDrpc {
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
