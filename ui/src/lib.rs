//! Squall's web UI daemon (`squall ui`) and logviewer (`squall logviewer`), as Storm's
//! storm-webapp.
//!
//! - [`api`]: Storm's REST API under `/api/v1/...`, with Storm's JSON field names,
//!   computed from Nimbus's [`TopologyPage`](squall_cluster::rpc::TopologyPage).
//! - [`prometheus`]: `/metrics` in the Prometheus text format.
//! - [`pages`]: the HTML pages (embedded in the binary).
//! - [`logviewer`]: the per-machine worker log server.
//!
//! [`start`] runs the UI daemon (`squall ui`): it listens on `ui.host:ui.port` and asks
//! the Nimbus daemons of `nimbus.seeds` for everything it shows.

pub mod api;
pub mod logviewer;
pub mod pages;
pub mod prometheus;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use squall_api::Config;
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::{nimbus_addresses, NimbusClient, RpcError};
use squall_cluster::secret::Secret;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

/// Requests the UI daemon serves at once; more wait.
const MAX_CONCURRENT: usize = 256;

/// The longest a request may take (a Nimbus that does not answer, a slow log search).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open connections get to finish once the daemon stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Every route of the UI daemon: the REST API, `/metrics`, the pages and log search.
pub fn router(ui: Arc<Ui>) -> axum::Router {
    axum::Router::new()
        .merge(api::routes())
        .merge(prometheus::routes())
        .merge(pages::routes())
        .merge(logviewer::ui_routes())
        .with_state(ui)
}

/// [`router`] behind the UI daemon's tower stack: at most 256 requests at once, each
/// answered within 30 s (else `503` with a JSON error).
pub fn service(ui: Arc<Ui>) -> axum::Router {
    router(ui).layer(
        ServiceBuilder::new()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                MAX_CONCURRENT,
            ))
            .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
                let status = if e.is::<tower::timeout::error::Elapsed>() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                api::ApiError::new(status, format!("request not answered: {e}")).into_response()
            }))
            .timeout(REQUEST_TIMEOUT),
    )
}

/// Runs the UI daemon until `shutdown` is cancelled: Storm's REST API, `/metrics` and
/// the pages on `ui.host:ui.port` (port 0: any free port). Prints
/// `UI listening on http://ADDR` once it listens.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), UiError> {
    conf.validate_cluster()?;
    let host = conf.ui_host()?;
    let port = conf.ui_port()?;
    let addr = format!("{host}:{port}");
    let bind_err = |source| UiError::Bind {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let ui = Ui::new(conf)?;
    tracing::info!(
        "UI listening on http://{local}{}",
        if ui.secret.is_some() {
            " (actions need the cluster secret)"
        } else {
            ""
        }
    );
    println!("UI listening on http://{local}");
    let server = axum::serve(listener, service(ui))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        r = server => r.map_err(|source| UiError::Serve { source }),
        // Connections that do not finish within the drain are cut.
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        } => Ok(()),
    }
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
    /// Serving failed.
    #[error("serving HTTP failed: {source}")]
    Serve {
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
    /// requests on to the leader). `f` gets its own handle on the client (cheap: it
    /// shares the connection pool), so the future is `Send` and fits an axum handler:
    ///
    /// ```ignore
    /// let id = id.as_str();
    /// let page = ui.nimbus(|c| async move { c.page(id).await }).await?;
    /// ```
    pub async fn nimbus<T, F, Fut>(&self, f: F) -> Result<T, RpcError>
    where
        F: Fn(NimbusClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let mut last = None;
        for client in &self.clients {
            match f(client.clone()).await {
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
