//! Squall's web UI daemon (`squall ui`) and logviewer (`squall logviewer`), as Storm's
//! storm-webapp.
//!
//! - [`api`]: Storm's REST API under `/api/v1/...`, with Storm's JSON field names,
//!   computed from Nimbus's [`TopologyPage`](squall_cluster::rpc::TopologyPage).
//! - [`prometheus`]: `/metrics` in the Prometheus text format.
//! - [`pages`]: the HTML pages (embedded in the binary).
//! - [`logviewer`]: the per-machine worker log server.

pub mod api;
pub mod logviewer;
pub mod pages;
pub mod prometheus;

use std::sync::Arc;

use squall_api::Config;
use squall_cluster::rpc::{nimbus_addresses, NimbusClient, RpcError};
use squall_cluster::secret::Secret;

/// Every route of the UI daemon: the REST API, `/metrics`, the pages and log search.
pub fn router(ui: Arc<Ui>) -> axum::Router {
    axum::Router::new()
        .merge(api::routes())
        .merge(prometheus::routes())
        .merge(pages::routes())
        .merge(logviewer::ui_routes())
        .with_state(ui)
}

/// Why the UI or logviewer could not start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] squall_api::ConfigError),
    /// The cluster secret could not be read.
    #[error(transparent)]
    Secret(#[from] squall_cluster::secret::SecretError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The UI's view of the cluster: the Nimbus daemons of `nimbus.seeds`, asked in order.
pub struct Ui {
    /// The daemon's configuration.
    pub conf: Config,
    /// The cluster secret, when one is configured.
    pub secret: Option<Secret>,
    clients: Vec<NimbusClient>,
}

impl Ui {
    /// A UI for the cluster `conf` describes.
    pub fn new(conf: Config) -> Result<Arc<Ui>, UiError> {
        let secret = Secret::load(&conf)?;
        let clients = nimbus_addresses(&conf)?
            .iter()
            .map(|a| NimbusClient::new(a).with_secret(secret.clone()))
            .collect();
        Ok(Arc::new(Ui {
            conf,
            secret,
            clients,
        }))
    }

    /// Runs `f` against the first Nimbus that answers (a standby passes leader-only
    /// requests on to the leader).
    pub async fn nimbus<T>(
        &self,
        f: impl AsyncFn(&NimbusClient) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut last = None;
        for client in &self.clients {
            match f(client).await {
                Ok(v) => return Ok(v),
                Err(e @ RpcError::Unreachable { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RpcError::Unreachable {
            addr: String::new(),
            reason: "no Nimbus configured in nimbus.seeds".to_owned(),
        }))
    }
}
