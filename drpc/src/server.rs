//! The `squall drpc` daemon (Storm's DRPC server).
//!
//! It listens on up to three ports, all on every interface:
//!
//! - `drpc.port` (3772): Squall's DRPC API ([`crate::api`]) for clients (`execute`) and
//!   topologies (`fetch`, `result`, `fail`). Fetched requests name this server as
//!   `host:port` with this port and `storm.local.hostname` (else the system's
//!   hostname), so answers come back here.
//! - `drpc.invocations.port` (3773): the same API again. Storm splits clients and
//!   topologies over these two ports; Squall serves both on each, so a Storm-style
//!   firewall layout keeps working. `-1` turns it off.
//! - `drpc.http.port` (3774): Storm's DRPC HTTP (`GET /drpc/<function>/<args>`,
//!   `GET /drpc/<function>`, `POST /drpc/<function>`). `-1` turns it off.
//!
//! Port 0 asks the OS for a free port; the daemon prints where it listens.
//!
//! Each port is served by [`squall_cluster::http::serve`] (at most 256 requests in
//! progress, then they queue). Clients waiting for an answer hold a request each, so at
//! most [`MAX_WAITING_PER_PORT`] may wait on one port; more are refused at once with
//! `SERVER_BUSY` (503), which keeps room for the topologies' fetches and answers.
//! Request bodies are limited to `drpc.max_buffer_size` (1 MiB, `413` above).
//!
//! On shutdown every waiting client is answered `SERVER_SHUTDOWN` (503) before the
//! connections drain.
//!
//! Like Storm's DRPC without an authorizer, the daemon is open to whoever reaches its
//! ports: keep them inside the cluster's network.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use squall_api::Config;
use squall_cluster::config::ClusterConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ErrorBody, ExecuteRequest, ExecuteResponse, FailRequest, FetchRequest, FetchResponse,
    ResultRequest, BAD_REQUEST, DEFAULT_FAIL_MESSAGE, MAX_FETCH_WAIT_MS, METHOD_NOT_ALLOWED,
    NOT_FOUND, PAYLOAD_TOO_LARGE, SERVER_BUSY, UNKNOWN_REQUEST,
};
use crate::core::{Core, Settings, FETCH_WAIT};
use crate::DrpcError;

/// Clients that may wait for an answer at once on one port; more are refused with
/// `SERVER_BUSY` (503).
pub const MAX_WAITING_PER_PORT: usize = 128;

/// The address every port is bound to.
const BIND_HOST: &str = "0.0.0.0";

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DrpcServerError {
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] squall_api::ConfigError),
    /// A port could not be opened.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The config key naming the port.
        key: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a bound [`DrpcServer`] listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrpcAddrs {
    /// `host:port` that fetched requests name as their server: the host topologies
    /// reach this machine by (`storm.local.hostname`, else the hostname) and the port
    /// of [`api`](Self::api).
    pub server: String,
    /// Squall's DRPC API (`drpc.port`).
    pub api: SocketAddr,
    /// The same API on `drpc.invocations.port` (`None`: off).
    pub invocations: Option<SocketAddr>,
    /// Storm's DRPC HTTP (`drpc.http.port`; `None`: off).
    pub http: Option<SocketAddr>,
}

/// A DRPC server with its ports open, ready to [`run`](Self::run).
pub struct DrpcServer {
    core: Arc<Core>,
    api: TcpListener,
    invocations: Option<TcpListener>,
    http: Option<TcpListener>,
    addrs: DrpcAddrs,
    max_body: usize,
}

async fn bind(port: u16, key: &'static str) -> Result<(TcpListener, SocketAddr), DrpcServerError> {
    let addr = format!("{BIND_HOST}:{port}");
    let err = |source| DrpcServerError::Bind {
        addr: addr.clone(),
        key,
        source,
    };
    let listener = TcpListener::bind((BIND_HOST, port)).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

impl DrpcServer {
    /// Checks the configuration and opens the ports (`drpc.port`,
    /// `drpc.invocations.port`, `drpc.http.port`).
    pub async fn bind(conf: &Config) -> Result<DrpcServer, DrpcServerError> {
        use squall_cluster::config::keys;
        conf.validate_cluster()?;
        let settings = Settings {
            request_timeout: conf.drpc_request_timeout()?,
            fetcher_timeout: conf.drpc_fetcher_timeout()?,
        };
        let max_body = usize::try_from(conf.drpc_max_buffer_size()?).unwrap_or(usize::MAX);
        let (api, api_addr) = bind(conf.drpc_port()?, keys::DRPC_PORT).await?;
        let (invocations, invocations_addr) = match conf.drpc_invocations_port()? {
            Some(p) => {
                let (l, a) = bind(p, keys::DRPC_INVOCATIONS_PORT).await?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let (http, http_addr) = match conf.drpc_http_port()? {
            Some(p) => {
                let (l, a) = bind(p, keys::DRPC_HTTP_PORT).await?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let host = squall_cluster::local_hostname(conf);
        let server = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", api_addr.port())
        } else {
            format!("{host}:{}", api_addr.port())
        };
        Ok(DrpcServer {
            core: Core::new(settings, server.clone()),
            api,
            invocations,
            http,
            addrs: DrpcAddrs {
                server,
                api: api_addr,
                invocations: invocations_addr,
                http: http_addr,
            },
            max_body,
        })
    }

    /// Where it listens.
    pub fn addrs(&self) -> &DrpcAddrs {
        &self.addrs
    }

    /// Serves until `shutdown` is cancelled; then answers every waiting client
    /// `SERVER_SHUTDOWN` and gives connections up to 5 s to finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let DrpcServer {
            core,
            api,
            invocations,
            http,
            addrs,
            max_body,
        } = self;
        let closer = {
            let (core, shutdown) = (core.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                core.close(DrpcError::Unreachable {
                    server: addrs.server,
                    message: "the DRPC server is shutting down".to_owned(),
                });
            }
        };
        let serve = |listener: Option<TcpListener>, router: Router| {
            let shutdown = shutdown.clone();
            async move {
                if let Some(l) = listener {
                    squall_cluster::http::serve(l, router, shutdown).await;
                }
            }
        };
        tokio::join!(
            closer,
            serve(Some(api), api_router(core.clone(), max_body)),
            serve(invocations, api_router(core.clone(), max_body)),
            serve(http, http_router(core, max_body)),
        );
    }
}

/// Runs `squall drpc` until `shutdown` is cancelled. Prints one line per port
/// (`DRPC ... listening on http://ADDR`) once it listens.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), DrpcServerError> {
    let server = DrpcServer::bind(&conf).await?;
    let a = server.addrs().clone();
    let on = |what: &str, addr: Option<SocketAddr>, key: &str| match addr {
        Some(addr) => format!("{what} on {addr} ({key})"),
        None => format!("no {what} ({key} is -1)"),
    };
    tracing::info!(
        "DRPC server {}: API on {} (drpc.port), {}, {}; requests time out after {} s",
        a.server,
        a.api,
        on("invocations API", a.invocations, "drpc.invocations.port"),
        on("Storm's DRPC HTTP", a.http, "drpc.http.port"),
        conf.drpc_request_timeout()?.as_secs()
    );
    println!(
        "DRPC API listening on http://{} (server {})",
        a.api, a.server
    );
    if let Some(i) = a.invocations {
        println!("DRPC invocations listening on http://{i}");
    }
    if let Some(h) = a.http {
        println!("DRPC HTTP listening on http://{h}");
    }
    server.run(shutdown).await;
    Ok(())
}

/// What the handlers of one port share: the core and that port's waiting clients.
#[derive(Clone)]
struct Port {
    core: Arc<Core>,
    waiting: Arc<Semaphore>,
}

impl Port {
    fn new(core: Arc<Core>) -> Port {
        Port {
            core,
            waiting: Arc::new(Semaphore::new(MAX_WAITING_PER_PORT)),
        }
    }

    /// Submits a request and waits for its outcome (the request is withdrawn if the
    /// client goes away first).
    async fn execute(&self, function: &str, args: &str) -> Result<String, Refusal> {
        let Ok(_waiting) = self.waiting.clone().try_acquire_owned() else {
            return Err(Refusal::new(
                SERVER_BUSY,
                format!(
                    "{MAX_WAITING_PER_PORT} clients are already waiting on this port of the \
                     DRPC server; try again later"
                ),
            ));
        };
        let ticket = self.core.submit(function, args).map_err(Refusal::from)?;
        ticket.wait_async().await.map_err(Refusal::from)
    }
}

/// An error answer.
struct Refusal(ErrorBody);

impl Refusal {
    fn new(kind: &str, message: impl Into<String>) -> Refusal {
        Refusal(ErrorBody::new(kind, message))
    }
}

impl From<DrpcError> for Refusal {
    fn from(e: DrpcError) -> Refusal {
        Refusal(ErrorBody::from_error(&e))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// The API's routes (`/drpc/v1/...`).
fn api_router(core: Arc<Core>, max_body: usize) -> Router {
    Router::new()
        .route("/drpc/v1/execute", post(execute))
        .route("/drpc/v1/fetch", post(fetch))
        .route("/drpc/v1/result", post(result))
        .route("/drpc/v1/fail", post(fail))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(log_refusals))
        .with_state(Port::new(core))
}

/// Storm's DRPC HTTP routes (`/drpc/<function>[/<args>]`).
fn http_router(core: Arc<Core>, max_body: usize) -> Router {
    Router::new()
        .route("/drpc/{function}", get(http_get_empty).post(http_post))
        .route("/drpc/{function}/", get(http_get_empty))
        .route("/drpc/{function}/{*args}", get(http_get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(log_refusals))
        .with_state(Port::new(core))
}

async fn not_found(method: Method, uri: Uri) -> Refusal {
    Refusal::new(
        NOT_FOUND,
        format!(
            "no such DRPC endpoint: {method} {}; the API is POST /drpc/v1/execute, fetch, \
             result, fail; Storm's DRPC HTTP is GET /drpc/<function>[/<args>] and POST \
             /drpc/<function> on drpc.http.port",
            shorten(uri.path())
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Refusal {
    Refusal::new(
        METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", shorten(uri.path())),
    )
}

/// Logs every request not answered with a success.
async fn log_refusals(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = shorten(req.uri().path());
    let r = next.run(req).await;
    if !r.status().is_success() {
        tracing::info!(%method, %path, status = r.status().as_u16(), "DRPC request not answered with a result");
    }
    r
}

/// At most 200 characters of `s`, for messages and logs.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 200 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(200).collect();
        format!("{head}...")
    }
}

/// A request body as `T`, or a clear 4xx.
fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, Refusal> {
    let bytes = body.map_err(body_refusal)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            BAD_REQUEST,
            format!("the request body is not the JSON this endpoint takes ({shape}): {e}"),
        )
    })
}

fn body_refusal(r: BytesRejection) -> Refusal {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Refusal::new(
            PAYLOAD_TOO_LARGE,
            "the request body is larger than drpc.max_buffer_size allows",
        )
    } else {
        Refusal::new(
            BAD_REQUEST,
            format!("the request body could not be read: {}", r.body_text()),
        )
    }
}

async fn execute(
    State(p): State<Port>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ExecuteResponse>, Refusal> {
    let req: ExecuteRequest = parse(body, r#"{"function": "...", "args": "..."}"#)?;
    let result = p.execute(&req.function, &req.args).await?;
    Ok(Json(ExecuteResponse { result }))
}

async fn fetch(
    State(p): State<Port>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FetchResponse>, Refusal> {
    let req: FetchRequest = parse(body, r#"{"function": "...", "max": 1, "wait_ms": 200}"#)?;
    let wait = match req.wait_ms {
        None => FETCH_WAIT,
        Some(ms) if ms <= MAX_FETCH_WAIT_MS => std::time::Duration::from_millis(ms),
        Some(ms) => {
            return Err(Refusal::new(
                BAD_REQUEST,
                format!("wait_ms must be at most {MAX_FETCH_WAIT_MS}, got {ms}"),
            ))
        }
    };
    let requests = p.core.fetch_async(&req.function, req.max, wait).await?;
    Ok(Json(FetchResponse { requests }))
}

/// A `result` or `fail` for an id that is not outstanding is a 404.
fn unknown_request(e: DrpcError) -> Refusal {
    match e {
        DrpcError::Refused(m) => Refusal::new(UNKNOWN_REQUEST, m),
        other => Refusal::from(other),
    }
}

async fn result(
    State(p): State<Port>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let req: ResultRequest = parse(body, r#"{"id": "...", "result": "..."}"#)?;
    p.core
        .result(&req.id, &req.result)
        .map_err(unknown_request)?;
    Ok(Json(serde_json::json!({})))
}

async fn fail(
    State(p): State<Port>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let req: FailRequest = parse(body, r#"{"id": "...", "message": "..."}"#)?;
    let message = req.message.as_deref().unwrap_or(DEFAULT_FAIL_MESSAGE);
    p.core.fail(&req.id, message).map_err(unknown_request)?;
    Ok(Json(serde_json::json!({})))
}

/// A result as Storm's DRPC HTTP answers it: the text itself.
fn text(result: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        result,
    )
        .into_response()
}

fn path_refusal(r: PathRejection) -> Refusal {
    Refusal::new(
        BAD_REQUEST,
        format!(
            "the function or argument in the path is not valid UTF-8 once decoded: {}",
            r.body_text()
        ),
    )
}

async fn http_get(
    State(p): State<Port>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Refusal> {
    let Path((function, args)) = path.map_err(path_refusal)?;
    Ok(text(p.execute(&function, &args).await?))
}

async fn http_get_empty(
    State(p): State<Port>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Refusal> {
    let Path(function) = path.map_err(path_refusal)?;
    Ok(text(p.execute(&function, "").await?))
}

async fn http_post(
    State(p): State<Port>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let Path(function) = path.map_err(path_refusal)?;
    let bytes = body.map_err(body_refusal)?;
    let args = String::from_utf8(bytes.to_vec()).map_err(|_| {
        Refusal::new(
            BAD_REQUEST,
            "the request body (the function's argument) is not UTF-8",
        )
    })?;
    Ok(text(p.execute(&function, &args).await?))
}
