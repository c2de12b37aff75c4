//! Storm's REST API (`/api/v1/...`) with Storm's JSON field names.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /api/v1/cluster/summary` | slots, executors, tasks, `leader`, `secretRequired` |
//! | `GET /api/v1/cluster/configuration` | this UI daemon's cluster configuration |
//! | `GET /api/v1/nimbus/summary` | `{"nimbuses": [...]}`, the leader marked |
//! | `GET /api/v1/supervisor/summary` | `{"supervisors": [...]}` |
//! | `GET /api/v1/topology/summary` | `{"topologies": [...]}` |
//! | `GET /api/v1/topology/:id?window=W&sys=B` | one topology: stats, spouts, bolts, workers |
//! | `GET /api/v1/topology/:id/component/:component?window=W&sys=B` | one component |
//! | `GET /api/v1/topology-workers/:id` | `{"hostPortList": [...], "logviewerPort": N}` |
//! | `GET /api/v1/topology/:id/visualization?window=W` | the graph's data |
//! | `POST /api/v1/topology/:id/activate` / `deactivate` | the action's outcome |
//! | `POST /api/v1/topology/:id/rebalance/:wait-time` | body `{"rebalanceOptions": ...}` (optional) |
//! | `POST /api/v1/topology/:id/kill/:wait-time` | the action's outcome |
//!
//! `:id` is a topology's id or its name. Windows are Storm's `600`, `10800`, `86400` and
//! `:all-time` (the default); `sys=true` shows the ackers and system streams.
//!
//! The JSON is built by pure functions ([`topology_json`], [`component_json`], ...) from
//! Nimbus's answers, so its shape is tested without a cluster. Squall's extra fields
//! (timed-out trees apart from explicit fails, receive-queue depth, backpressure,
//! throttling, where every executor runs, custom gauges) sit beside Storm's, never
//! instead. The component page's `gauges` is an object of name → value per executor
//! (in each `executorStats` row, the latest values of its last heartbeat) and for the
//! component (the sum over its executors, see [`component_gauges`]).
//!
//! Errors answer `{"error": "<short>", "errorMessage": "<what is wrong>"}` with 400 (bad
//! input), 401 (an action without the cluster secret), 404 (unknown topology, component
//! or endpoint), 502 (Nimbus unreachable) or 503 (Nimbus cannot answer now).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use squall_api::{ComponentKind, Config};
use squall_cluster::config::ClusterConfig;
use squall_cluster::metrics::{pretty_duration, ExecutorCounters, StreamStats, Window};
use squall_cluster::rpc::{
    encode, ClusterSummary, ExecutorPage, RebalanceCommand, RpcError, TopologyPage, TopologySummary,
};
use squall_cluster::state::{now_secs, ErrorInfo, RebalanceRequest};

use crate::Ui;

/// A component throttles the topology when its producers were blocked on its full
/// receive queue for at least this share of the window ...
pub const THROTTLING_BACKPRESSURE: f64 = 0.05;
/// ... or (bolts) when it was busy executing for at least this share (its capacity).
pub const THROTTLING_CAPACITY: f64 = 0.9;

/// Routes of the REST API.
pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
        .route(
            "/api/v1/cluster/summary",
            get(cluster_summary).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/cluster/configuration",
            get(cluster_configuration).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/nimbus/summary",
            get(nimbus_summary).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/supervisor/summary",
            get(supervisor_summary).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/summary",
            get(topology_summary).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}",
            get(topology).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/component/{component}",
            get(component).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology-workers/{id}",
            get(topology_workers).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/visualization",
            get(visualization).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/activate",
            post(activate).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/deactivate",
            post(deactivate).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/rebalance/{wait}",
            post(rebalance).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/topology/{id}/kill/{wait}",
            post(kill).fallback(method_not_allowed),
        )
        .route("/api/v1", any(no_such_endpoint))
        .route("/api/v1/", any(no_such_endpoint))
        .route("/api/v1/{*rest}", any(no_such_endpoint))
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer: `{"error": "<short>", "errorMessage": "<what is wrong>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "errorMessage": self.message,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<RpcError> for ApiError {
    fn from(e: RpcError) -> ApiError {
        match e {
            RpcError::Api { status: 401, .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "Nimbus refused the UI daemon's credentials: give `squall ui` the cluster's \
                 secret (squall.secret.file)",
            ),
            RpcError::Api { status, message } => {
                let status = match status {
                    400 | 404 | 409 | 413 | 503 => {
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                ApiError::new(status, message)
            }
            e @ (RpcError::Unreachable { .. } | RpcError::Protocol { .. }) => {
                ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
            e @ RpcError::Io { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint: the REST API reads with GET and acts with POST",
    )
}

async fn no_such_endpoint(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}; see /api/v1/cluster/summary, /api/v1/topology/summary",
        uri.path()
    ))
}

// ---------------------------------------------------------------------------------------
// Request parts

/// The query parameters the GET endpoints take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `window`: one of Storm's four; `:all-time` when absent.
    pub window: Window,
    /// `sys`: show the ackers and system streams (`__...`).
    pub sys: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            window: Window::AllTime,
            sys: false,
        }
    }
}

impl Params {
    /// Reads `window` and `sys` from decoded query pairs; other keys are ignored.
    pub fn parse(pairs: &[(String, String)]) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "window" if v.is_empty() => {}
                "window" => {
                    p.window = Window::parse(v)
                        .filter(|w| Window::ALL.contains(w))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "bad window '{v}': use 600, 10800, 86400 or :all-time"
                            ))
                        })?;
                }
                "sys" => {
                    p.sys = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" | "" => false,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "bad sys '{v}': use true or false"
                            )))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn params(q: QueryPairs) -> Result<Params, ApiError> {
    match q {
        Ok(Query(pairs)) => Params::parse(&pairs),
        Err(e) => Err(ApiError::bad_request(format!("bad query string: {e}"))),
    }
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

/// Actions need `Authorization: Bearer <secret>` when the cluster has a secret.
fn authorize(ui: &Ui, headers: &HeaderMap) -> Result<(), ApiError> {
    match &ui.secret {
        None => Ok(()),
        Some(secret) => {
            let header = headers
                .get(squall_cluster::secret::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if secret.check_bearer(header) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this cluster has a secret: send it as 'Authorization: Bearer <secret>' \
                     (the contents of squall.secret.file)",
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Talking to Nimbus

/// The page of topology `id` (an id or a name).
async fn fetch_page(ui: &Ui, id: &str) -> Result<TopologyPage, ApiError> {
    match ui.nimbus(|c| async move { c.page(id).await }).await {
        Ok(p) => Ok(p),
        Err(RpcError::Api { status: 404, .. }) => {
            // A Nimbus that finds topologies by name only: look the id up.
            let t = resolve(ui, id).await?;
            if t.name == id {
                return Err(unknown_topology(id));
            }
            let name = t.name.as_str();
            ui.nimbus(|c| async move { c.page(name).await })
                .await
                .map_err(|e| match e {
                    RpcError::Api { status: 404, .. } => unknown_topology(id),
                    e => e.into(),
                })
        }
        Err(e) => Err(e.into()),
    }
}

/// The summary of topology `id` (an id or a name).
async fn resolve(ui: &Ui, id: &str) -> Result<TopologySummary, ApiError> {
    let list = ui.nimbus(|c| async move { c.list().await }).await?;
    list.iter()
        .find(|t| t.id == id)
        .or_else(|| list.iter().find(|t| t.name == id))
        .cloned()
        .ok_or_else(|| unknown_topology(id))
}

fn unknown_topology(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no topology with id or name '{id}' is running (see /api/v1/topology/summary)"
    ))
}

fn links(ui: &Ui) -> Links {
    Links::from_conf(&ui.conf)
}

// ---------------------------------------------------------------------------------------
// Handlers

async fn cluster_summary(State(ui): State<Arc<Ui>>) -> ApiResult {
    let (cluster, list) = ui
        .nimbus(|c| async move { Ok((c.cluster().await?, c.list().await?)) })
        .await?;
    Ok(Json(cluster_summary_json(&cluster, &list, ui.secret.is_some())).into_response())
}

async fn cluster_configuration(State(ui): State<Arc<Ui>>) -> ApiResult {
    Ok(Json(configuration_json(&ui.conf)).into_response())
}

async fn nimbus_summary(State(ui): State<Arc<Ui>>) -> ApiResult {
    let cluster = ui.nimbus(|c| async move { c.cluster().await }).await?;
    Ok(Json(nimbus_summary_json(&cluster, now_secs())).into_response())
}

async fn supervisor_summary(State(ui): State<Arc<Ui>>) -> ApiResult {
    let cluster = ui.nimbus(|c| async move { c.cluster().await }).await?;
    Ok(Json(supervisor_summary_json(&cluster, now_secs())).into_response())
}

async fn topology_summary(State(ui): State<Arc<Ui>>) -> ApiResult {
    let list = ui.nimbus(|c| async move { c.list().await }).await?;
    Ok(Json(topology_summary_json(&list)).into_response())
}

async fn topology(
    State(ui): State<Arc<Ui>>,
    id: Result<Path<String>, PathRejection>,
    q: QueryPairs,
) -> ApiResult {
    let id = path(id)?;
    let p = params(q)?;
    let page = fetch_page(&ui, &id).await?;
    Ok(Json(topology_json(&page, p, &links(&ui))).into_response())
}

async fn component(
    State(ui): State<Arc<Ui>>,
    ids: Result<Path<(String, String)>, PathRejection>,
    q: QueryPairs,
) -> ApiResult {
    let (id, component) = path(ids)?;
    let p = params(q)?;
    let page = fetch_page(&ui, &id).await?;
    Ok(Json(component_json(&page, &component, p, &links(&ui))?).into_response())
}

async fn topology_workers(
    State(ui): State<Arc<Ui>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    let page = fetch_page(&ui, &id).await?;
    Ok(Json(topology_workers_json(&page, &links(&ui))).into_response())
}

async fn visualization(
    State(ui): State<Arc<Ui>>,
    id: Result<Path<String>, PathRejection>,
    q: QueryPairs,
) -> ApiResult {
    let id = path(id)?;
    let p = params(q)?;
    let page = fetch_page(&ui, &id).await?;
    Ok(Json(visualization_json(&page, p.window)).into_response())
}

/// Storm's answer to an action.
pub fn action_json(operation: &str, topology_id: &str) -> Value {
    json!({
        "topologyOperation": operation,
        "topologyId": topology_id,
        "status": "success",
    })
}

async fn activate(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authorize(&ui, &headers)?;
    let t = resolve(&ui, &path(id)?).await?;
    let name = t.name.as_str();
    ui.nimbus(|c| async move { c.activate(name).await }).await?;
    Ok(Json(action_json("activate", &t.id)).into_response())
}

async fn deactivate(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authorize(&ui, &headers)?;
    let t = resolve(&ui, &path(id)?).await?;
    let name = t.name.as_str();
    ui.nimbus(|c| async move { c.deactivate(name).await })
        .await?;
    Ok(Json(action_json("deactivate", &t.id)).into_response())
}

async fn rebalance(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ids: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    authorize(&ui, &headers)?;
    let (id, wait) = path(ids)?;
    let wait = wait_secs(&wait)?;
    let request = rebalance_request(&body)?;
    let t = resolve(&ui, &id).await?;
    let cmd = RebalanceCommand {
        wait_secs: Some(wait),
        request,
    };
    let (name, cmd) = (t.name.as_str(), &cmd);
    ui.nimbus(|c| async move { c.rebalance(name, cmd).await })
        .await?;
    Ok(Json(action_json("rebalance", &t.id)).into_response())
}

async fn kill(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    authorize(&ui, &headers)?;
    let (id, wait) = path(ids)?;
    let wait = wait_secs(&wait)?;
    let t = resolve(&ui, &id).await?;
    let name = t.name.as_str();
    ui.nimbus(|c| async move { c.kill(name, Some(wait)).await })
        .await?;
    Ok(Json(action_json("kill", &t.id)).into_response())
}

/// A `:wait-time` path segment: whole seconds.
pub fn wait_secs(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n <= 86400 * 7)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "bad wait time '{s}': give whole seconds between 0 and 604800"
            ))
        })
}

#[derive(Deserialize)]
struct RebalanceBody {
    #[serde(rename = "rebalanceOptions", default)]
    options: Option<RebalanceOptions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceOptions {
    #[serde(rename = "numWorkers", default)]
    num_workers: Option<u32>,
    #[serde(default)]
    executors: BTreeMap<String, u32>,
}

/// The rebalance body (optional): `{"rebalanceOptions": {"numWorkers": 2, "executors":
/// {"split": 4}}}`; empty asks only for a re-spread.
pub fn rebalance_request(body: &[u8]) -> Result<RebalanceRequest, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(RebalanceRequest::default());
    }
    let parsed: RebalanceBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad rebalance body ({e}): expected {{\"rebalanceOptions\": {{\"numWorkers\": N, \"executors\": {{\"component\": N}}}}}}"
        ))
    })?;
    let Some(o) = parsed.options else {
        return Ok(RebalanceRequest::default());
    };
    if o.num_workers == Some(0) {
        return Err(ApiError::bad_request(
            "bad rebalance body: numWorkers must be at least 1",
        ));
    }
    if let Some((c, _)) = o.executors.iter().find(|(_, n)| **n == 0) {
        return Err(ApiError::bad_request(format!(
            "bad rebalance body: executors of '{c}' must be at least 1"
        )));
    }
    Ok(RebalanceRequest {
        num_workers: o.num_workers,
        executors: o.executors,
    })
}

// ---------------------------------------------------------------------------------------
// Links

/// How the UI links to worker logs: `logviewer.port` of the UI daemon's own config (as
/// Storm does), on the worker's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Links {
    /// The logviewers' port.
    pub logviewer_port: u16,
}

impl Links {
    /// From the UI daemon's config (`logviewer.port`, default 8000).
    pub fn from_conf(conf: &Config) -> Links {
        Links {
            logviewer_port: conf.logviewer_port().unwrap_or(8000),
        }
    }

    /// The logviewer page of a worker's log.
    pub fn worker_log(&self, host: &str, topology_id: &str, port: u16) -> String {
        format!(
            "http://{}:{}/api/v1/log?file={}",
            url_host(host),
            self.logviewer_port,
            encode(&format!("{topology_id}/{port}/worker.log"))
        )
    }

    /// The logviewer page of the worker log an error came from, opened at the last line
    /// holding the error's first line (at most 80 characters of it).
    pub fn error_log(&self, e: &ErrorInfo, topology_id: &str) -> String {
        let first: String = e
            .error
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        format!(
            "{}&search={}",
            self.worker_log(&e.host, topology_id, e.port),
            encode(first.trim_end())
        )
    }
}

/// A host for a URL: IPv6 addresses in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Number formats and counters

/// Storm's decimal strings: three places (`"0.048"`); `"0.000"` for anything not finite.
pub fn dec(x: f64) -> String {
    if x == 0.0 {
        // Also -0.0, which would print as "-0.000".
        "0.000".to_owned()
    } else if x.is_finite() {
        format!("{x:.3}")
    } else {
        "0.000".to_owned()
    }
}

/// Storm's executor id: `"[first-last]"`.
pub fn executor_id(e: &ExecutorPage) -> String {
    format!("[{}-{}]", e.first, e.last)
}

const EMPTY: &ExecutorCounters = &ExecutorCounters {
    outputs: Vec::new(),
    inputs: Vec::new(),
    blocked_ns: 0,
};

/// An executor's counts in `window` (zero when Nimbus has none).
fn counts(e: &ExecutorPage, window: Window) -> &ExecutorCounters {
    e.windows
        .iter()
        .find(|w| w.window == window)
        .map_or(EMPTY, |w| &w.counters)
}

/// The seconds `window` covers for an executor: the window, or the executor's uptime
/// when it is younger (and for all time).
fn period_secs(e: &ExecutorPage, window: Window) -> u64 {
    match window.secs() {
        Some(s) if e.uptime_secs > 0 => s.min(e.uptime_secs),
        Some(s) => s,
        None => e.uptime_secs,
    }
}

/// Storm's capacity of an executor: executed × mean execute latency / the window.
pub fn executor_capacity(e: &ExecutorPage, window: Window) -> f64 {
    let secs = period_secs(e, window);
    if secs == 0 {
        return 0.0;
    }
    // (A fold from +0.0: an empty float sum is -0.0.)
    let busy_ns = counts(e, window)
        .inputs
        .iter()
        .map(|r| r.executed as f64 * mean(r.execute_ns, r.execute_samples))
        .fold(0.0, |a, b| a + b);
    busy_ns / (secs as f64 * 1e9)
}

/// The share of `window` producers spent blocked on the executor's full receive queue.
pub fn executor_backpressure(e: &ExecutorPage, window: Window) -> f64 {
    let secs = period_secs(e, window);
    if secs == 0 {
        return 0.0;
    }
    (counts(e, window).blocked_ns as f64 / (secs as f64 * 1e9)).clamp(0.0, 1.0)
}

fn mean(sum: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

fn is_system(id: &str) -> bool {
    id.starts_with("__")
}

/// Whether a stream row is shown: system streams and inputs from system components only
/// with `sys`.
fn shown(row: &StreamStats, sys: bool) -> bool {
    sys || !(is_system(&row.stream) || row.component.as_deref().is_some_and(is_system))
}

fn sum_rows<'a>(rows: impl IntoIterator<Item = &'a StreamStats>) -> StreamStats {
    let mut total = StreamStats::default();
    for r in rows {
        total.add(r);
    }
    total
}

/// One component's counts in one window, over its executors.
#[derive(Clone, Debug, Default)]
struct Agg {
    /// Output rows summed.
    out: StreamStats,
    /// Input rows summed.
    inp: StreamStats,
    /// Max over executors.
    capacity: f64,
    /// Max over executors.
    backpressure: f64,
    queue_depth: u64,
    queue_capacity: u64,
    unbounded: bool,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Agg {
    fn of<'a>(execs: impl IntoIterator<Item = &'a ExecutorPage>, window: Window, sys: bool) -> Agg {
        let mut a = Agg::default();
        for e in execs {
            let c = counts(e, window);
            a.out
                .add(&sum_rows(c.outputs.iter().filter(|r| shown(r, sys))));
            a.inp
                .add(&sum_rows(c.inputs.iter().filter(|r| shown(r, sys))));
            a.capacity = a.capacity.max(executor_capacity(e, window));
            a.backpressure = a.backpressure.max(executor_backpressure(e, window));
            a.queue_depth += e.queue_depth;
            a.queue_capacity += e.queue_capacity;
            a.unbounded |= e.queue_capacity == 0;
            a.p50 = a.p50.max(e.complete_latency_p50_ms);
            a.p99 = a.p99.max(e.complete_latency_p99_ms);
            a.max = a.max.max(e.complete_latency_max_ms);
        }
        if a.unbounded {
            a.queue_capacity = 0;
        }
        a
    }

    fn throttling(&self, kind: ComponentKind) -> bool {
        self.backpressure >= THROTTLING_BACKPRESSURE
            || (kind == ComponentKind::Bolt && self.capacity >= THROTTLING_CAPACITY)
    }
}

/// `failed` with Storm's meaning (timeouts included) and Squall's split of it.
fn put_failed(m: &mut Map<String, Value>, s: &StreamStats) {
    m.insert("failed".into(), json!(s.failed.saturating_add(s.timed_out)));
    m.insert("timedOut".into(), json!(s.timed_out));
    m.insert("failedExplicit".into(), json!(s.failed));
}

/// Squall's receive-queue and backpressure fields.
fn put_pressure(m: &mut Map<String, Value>, a: &Agg, kind: ComponentKind) {
    m.insert("queueDepth".into(), json!(a.queue_depth));
    m.insert("queueCapacity".into(), json!(a.queue_capacity));
    m.insert("backpressure".into(), json!(dec(a.backpressure)));
    m.insert("throttling".into(), json!(a.throttling(kind)));
}

fn put_complete_percentiles(m: &mut Map<String, Value>, a: &Agg) {
    m.insert("completeLatencyP50".into(), json!(dec(a.p50)));
    m.insert("completeLatencyP99".into(), json!(dec(a.p99)));
    m.insert("completeLatencyMax".into(), json!(dec(a.max)));
}

/// Stats of a spout (output side) or a bolt (both sides), Storm's fields.
fn put_stats(m: &mut Map<String, Value>, a: &Agg, kind: ComponentKind) {
    m.insert("emitted".into(), json!(a.out.emitted));
    m.insert("transferred".into(), json!(a.out.transferred));
    match kind {
        ComponentKind::Spout => {
            m.insert(
                "completeLatency".into(),
                json!(dec(a.out.complete_latency_ms())),
            );
            m.insert("acked".into(), json!(a.out.acked));
            put_failed(m, &a.out);
        }
        ComponentKind::Bolt => {
            m.insert("executed".into(), json!(a.inp.executed));
            m.insert(
                "executeLatency".into(),
                json!(dec(a.inp.execute_latency_ms())),
            );
            m.insert(
                "processLatency".into(),
                json!(dec(a.inp.process_latency_ms())),
            );
            m.insert("capacity".into(), json!(dec(a.capacity)));
            m.insert("acked".into(), json!(a.inp.acked));
            put_failed(m, &a.inp);
        }
    }
}

/// Storm's error fields (`error`/`lastError`, `errorTime`, `errorHost`, `errorPort`,
/// `errorLapsedSecs`, `errorWorkerLogLink`); `""`/`null` without an error.
fn put_error(
    m: &mut Map<String, Value>,
    text_key: &str,
    e: Option<&ErrorInfo>,
    topology_id: &str,
    links: &Links,
    now: u64,
) {
    match e {
        Some(e) => {
            m.insert(text_key.into(), json!(e.error));
            m.insert("errorTime".into(), json!(e.time_secs));
            m.insert("errorHost".into(), json!(e.host));
            m.insert("errorPort".into(), json!(e.port));
            m.insert(
                "errorLapsedSecs".into(),
                json!(now.saturating_sub(e.time_secs)),
            );
            m.insert(
                "errorWorkerLogLink".into(),
                json!(links.error_log(e, topology_id)),
            );
        }
        None => {
            m.insert(text_key.into(), json!(""));
            for k in [
                "errorTime",
                "errorHost",
                "errorPort",
                "errorLapsedSecs",
                "errorWorkerLogLink",
            ] {
                m.insert(k.into(), Value::Null);
            }
        }
    }
}

/// The components of a topology in id order with their kind: the spec's, plus the
/// ackers (bolts) when `sys`.
fn components(page: &TopologyPage, sys: bool) -> Vec<(String, ComponentKind)> {
    let mut out: Vec<(String, ComponentKind)> = page
        .spec
        .components
        .iter()
        .map(|(id, c)| (id.as_str().to_owned(), c.kind))
        .collect();
    for e in &page.executors {
        if !out.iter().any(|(id, _)| *id == e.component) {
            out.push((e.component.clone(), ComponentKind::Bolt));
        }
    }
    out.retain(|(id, _)| sys || !is_system(id));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn kind_of(page: &TopologyPage, component: &str) -> Option<ComponentKind> {
    page.spec
        .components
        .iter()
        .find(|(id, _)| id.as_str() == component)
        .map(|(_, c)| c.kind)
        .or_else(|| {
            page.executors
                .iter()
                .any(|e| e.component == component)
                .then_some(ComponentKind::Bolt)
        })
}

fn executors_of<'a>(
    page: &'a TopologyPage,
    component: &'a str,
) -> impl Iterator<Item = &'a ExecutorPage> {
    page.executors
        .iter()
        .filter(move |e| e.component == component)
}

/// Executors and tasks of a component: as assigned, else as the spec asks.
fn sizes(page: &TopologyPage, component: &str) -> (u32, u32) {
    let (mut execs, mut tasks) = (0u32, 0u32);
    for e in executors_of(page, component) {
        execs += 1;
        tasks += e.last.saturating_sub(e.first) + 1;
    }
    if execs == 0 {
        if let Some((_, c)) = page
            .spec
            .components
            .iter()
            .find(|(id, _)| id.as_str() == component)
        {
            return (c.parallelism, c.num_tasks);
        }
    }
    (execs, tasks)
}

fn last_error<'a>(page: &'a TopologyPage, component: &str) -> Option<&'a ErrorInfo> {
    page.errors.iter().rfind(|e| e.component == component)
}

fn kind_name(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Spout => "spout",
        ComponentKind::Bolt => "bolt",
    }
}

// ---------------------------------------------------------------------------------------
// Cluster JSON

/// The leader Nimbus's `host:port`: as Nimbus says, else the only live Nimbus.
pub fn leader_of(cluster: &ClusterSummary) -> Option<String> {
    cluster
        .leader
        .clone()
        .or_else(|| match cluster.nimbuses.as_slice() {
            [only] => Some(format!("{}:{}", only.host, only.port)),
            _ => None,
        })
}

/// `/cluster/summary`.
pub fn cluster_summary_json(
    cluster: &ClusterSummary,
    topologies: &[TopologySummary],
    secret_required: bool,
) -> Value {
    let slots_total: usize = cluster.supervisors.iter().map(|s| s.info.ports.len()).sum();
    let slots_used: usize = cluster.supervisors.iter().map(|s| s.used_ports.len()).sum();
    json!({
        "stormVersion": squall_cluster::VERSION,
        "supervisors": cluster.supervisors.len(),
        "topologies": cluster.topologies.max(topologies.len()),
        "slotsTotal": slots_total,
        "slotsUsed": slots_used,
        "slotsFree": slots_total.saturating_sub(slots_used),
        "executorsTotal": topologies.iter().map(|t| u64::from(t.num_executors)).sum::<u64>(),
        "tasksTotal": topologies.iter().map(|t| u64::from(t.num_tasks)).sum::<u64>(),
        "schedulerDisplayResource": false,
        "secretRequired": secret_required,
        "leader": leader_of(cluster),
    })
}

/// `/cluster/configuration`: the UI daemon's cluster configuration, key to value.
pub fn configuration_json(conf: &Config) -> Value {
    serde_json::to_value(conf).unwrap_or_else(|_| json!({}))
}

/// `/nimbus/summary`.
pub fn nimbus_summary_json(cluster: &ClusterSummary, now: u64) -> Value {
    let leader = leader_of(cluster);
    let nimbuses: Vec<Value> = cluster
        .nimbuses
        .iter()
        .map(|n| {
            let addr = format!("{}:{}", n.host, n.port);
            let up = now.saturating_sub(n.start_time_secs);
            json!({
                "host": n.host,
                "port": n.port,
                "status": if leader.as_deref() == Some(addr.as_str()) { "Leader" } else { "Not a Leader" },
                "nimbusUpTime": pretty_duration(up),
                "nimbusUpTimeSeconds": up,
                // The logviewer serves worker logs only.
                "nimbusLogLink": Value::Null,
                "version": n.version,
            })
        })
        .collect();
    json!({ "nimbuses": nimbuses })
}

/// `/supervisor/summary`.
pub fn supervisor_summary_json(cluster: &ClusterSummary, now: u64) -> Value {
    let supervisors: Vec<Value> = cluster
        .supervisors
        .iter()
        .map(|s| {
            let up = now.saturating_sub(s.info.start_time_secs);
            let total = s.info.ports.len();
            let used = s.used_ports.len();
            json!({
                "id": s.info.id,
                "host": s.info.hostname,
                "uptime": pretty_duration(up),
                "uptimeSeconds": up,
                "slotsTotal": total,
                "slotsUsed": used,
                "slotsFree": total.saturating_sub(used),
                "totalMem": 0.0,
                "totalCpu": 0.0,
                "usedMem": 0.0,
                "usedCpu": 0.0,
                "version": s.info.version,
            })
        })
        .collect();
    json!({ "supervisors": supervisors, "schedulerDisplayResource": false })
}

fn topology_row(t: &TopologySummary) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.id));
    m.insert("encodedId".into(), json!(encode(&t.id)));
    m.insert("name".into(), json!(t.name));
    m.insert("owner".into(), json!(t.owner));
    m.insert("status".into(), json!(t.status.to_string()));
    m.insert("uptime".into(), json!(pretty_duration(t.uptime_secs)));
    m.insert("uptimeSeconds".into(), json!(t.uptime_secs));
    m.insert("tasksTotal".into(), json!(t.num_tasks));
    m.insert("workersTotal".into(), json!(t.num_workers));
    m.insert("executorsTotal".into(), json!(t.num_executors));
    m
}

/// `/topology/summary`.
pub fn topology_summary_json(list: &[TopologySummary]) -> Value {
    let mut rows: Vec<&TopologySummary> = list.iter().collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let topologies: Vec<Value> = rows
        .into_iter()
        .map(|t| Value::Object(topology_row(t)))
        .collect();
    json!({ "topologies": topologies, "schedulerDisplayResource": false })
}

// ---------------------------------------------------------------------------------------
// Topology JSON

/// `/topology/:id`: Storm's topology page, with Squall's extras.
pub fn topology_json(page: &TopologyPage, p: Params, links: &Links) -> Value {
    let id = &page.summary.id;
    let now = page.time_secs;
    let comps = components(page, p.sys);
    let mut m = topology_row(&page.summary);
    m.insert("window".into(), json!(p.window.name()));
    m.insert("windowHint".into(), json!(p.window.pretty()));
    m.insert("msgTimeout".into(), json!(page.msg_timeout_secs));
    m.insert("debug".into(), json!(page.conf.debug().unwrap_or(false)));
    m.insert("stormVersion".into(), json!(squall_cluster::VERSION));
    m.insert("schedulerDisplayResource".into(), json!(false));

    // Per window, over the (visible) components.
    let stats: Vec<Value> = Window::ALL
        .iter()
        .map(|&w| {
            let all = Agg::of(
                page.executors
                    .iter()
                    .filter(|e| p.sys || !is_system(&e.component)),
                w,
                p.sys,
            );
            let spouts = Agg::of(
                page.executors
                    .iter()
                    .filter(|e| kind_of(page, &e.component) == Some(ComponentKind::Spout)),
                w,
                p.sys,
            );
            let mut row = Map::new();
            row.insert("window".into(), json!(w.name()));
            row.insert("windowPretty".into(), json!(w.pretty()));
            row.insert("emitted".into(), json!(all.out.emitted));
            row.insert("transferred".into(), json!(all.out.transferred));
            row.insert(
                "completeLatency".into(),
                json!(dec(spouts.out.complete_latency_ms())),
            );
            row.insert("acked".into(), json!(spouts.out.acked));
            put_failed(&mut row, &spouts.out);
            Value::Object(row)
        })
        .collect();
    m.insert("topologyStats".into(), Value::Array(stats));

    let mut spouts = Vec::new();
    let mut bolts = Vec::new();
    let mut throttling = Vec::new();
    for (cid, kind) in &comps {
        let agg = Agg::of(executors_of(page, cid), p.window, p.sys);
        let (execs, tasks) = sizes(page, cid);
        let mut row = Map::new();
        let (id_key, enc_key) = match kind {
            ComponentKind::Spout => ("spoutId", "encodedSpoutId"),
            ComponentKind::Bolt => ("boltId", "encodedBoltId"),
        };
        row.insert(id_key.into(), json!(cid));
        row.insert(enc_key.into(), json!(encode(cid)));
        row.insert("executors".into(), json!(execs));
        row.insert("tasks".into(), json!(tasks));
        put_stats(&mut row, &agg, *kind);
        put_error(&mut row, "lastError", last_error(page, cid), id, links, now);
        put_pressure(&mut row, &agg, *kind);
        if agg.throttling(*kind) {
            throttling.push(cid.clone());
        }
        match kind {
            ComponentKind::Spout => {
                put_complete_percentiles(&mut row, &agg);
                spouts.push(Value::Object(row));
            }
            ComponentKind::Bolt => bolts.push(Value::Object(row)),
        }
    }
    m.insert("spouts".into(), Value::Array(spouts));
    m.insert("bolts".into(), Value::Array(bolts));
    m.insert("throttlingComponents".into(), json!(throttling));

    // Workers, with the tasks of each component they run.
    let workers: Vec<Value> = page
        .workers
        .iter()
        .map(|w| {
            let mut tasks: BTreeMap<&str, u32> = BTreeMap::new();
            for e in page
                .executors
                .iter()
                .filter(|e| e.supervisor_id == w.supervisor_id && e.port == w.port)
                .filter(|e| p.sys || !is_system(&e.component))
            {
                *tasks.entry(&e.component).or_default() += e.last.saturating_sub(e.first) + 1;
            }
            json!({
                "supervisorId": w.supervisor_id,
                "host": w.host,
                "port": w.port,
                "topologyId": id,
                "topologyName": page.summary.name,
                "executorsTotal": w.num_executors,
                "componentNumTasks": tasks,
                "uptime": pretty_duration(w.uptime_secs),
                "uptimeSeconds": w.uptime_secs,
                "workerLogLink": links.worker_log(&w.host, id, w.port),
                "owner": page.summary.owner,
            })
        })
        .collect();
    m.insert("workers".into(), Value::Array(workers));

    // Where every executor runs (ackers too).
    let placement: Vec<Value> = page
        .executors
        .iter()
        .map(|e| {
            json!({
                "component": e.component,
                "id": executor_id(e),
                "host": e.host,
                "port": e.port,
                "supervisorId": e.supervisor_id,
                "workerLogLink": links.worker_log(&e.host, id, e.port),
            })
        })
        .collect();
    m.insert("executorPlacement".into(), Value::Array(placement));

    let levels: Map<String, Value> = page
        .log_levels
        .levels
        .iter()
        .map(|(logger, l)| {
            (
                logger.clone(),
                json!({"level": l.level, "expiresSecs": l.expires_secs}),
            )
        })
        .collect();
    m.insert("logLevels".into(), Value::Object(levels));
    m.insert("configuration".into(), configuration_json(&page.conf));
    Value::Object(m)
}

/// `/topology/:id/component/:component`: Storm's component page, with Squall's extras;
/// 404 for a component the topology does not have.
pub fn component_json(
    page: &TopologyPage,
    component: &str,
    p: Params,
    links: &Links,
) -> Result<Value, ApiError> {
    let kind = kind_of(page, component).ok_or_else(|| {
        ApiError::not_found(format!(
            "topology '{}' has no component '{component}'",
            page.summary.name
        ))
    })?;
    let id = &page.summary.id;
    let now = page.time_secs;
    // A system component asked for by name shows its system streams.
    let sys = p.sys || is_system(component);
    let (execs, tasks) = sizes(page, component);
    let mut m = Map::new();
    m.insert("id".into(), json!(component));
    m.insert("encodedId".into(), json!(encode(component)));
    m.insert("name".into(), json!(page.summary.name));
    m.insert("topologyId".into(), json!(id));
    m.insert("encodedTopologyId".into(), json!(encode(id)));
    m.insert(
        "topologyStatus".into(),
        json!(page.summary.status.to_string()),
    );
    m.insert("componentType".into(), json!(kind_name(kind)));
    m.insert("executors".into(), json!(execs));
    m.insert("tasks".into(), json!(tasks));
    m.insert("window".into(), json!(p.window.name()));
    m.insert("windowHint".into(), json!(p.window.pretty()));
    m.insert("debug".into(), json!(page.conf.debug().unwrap_or(false)));

    // Per window.
    let per_window: Vec<Value> = Window::ALL
        .iter()
        .map(|&w| {
            let agg = Agg::of(executors_of(page, component), w, sys);
            let mut row = Map::new();
            row.insert("window".into(), json!(w.name()));
            row.insert("windowPretty".into(), json!(w.pretty()));
            put_stats(&mut row, &agg, kind);
            if kind == ComponentKind::Bolt {
                put_pressure(&mut row, &agg, kind);
            }
            Value::Object(row)
        })
        .collect();
    match kind {
        ComponentKind::Spout => m.insert("spoutSummary".into(), Value::Array(per_window)),
        ComponentKind::Bolt => m.insert("boltStats".into(), Value::Array(per_window)),
    };

    // Per output stream.
    let mut outputs: BTreeMap<&str, StreamStats> = BTreeMap::new();
    // Per input (source component, stream).
    let mut inputs: BTreeMap<(&str, &str), StreamStats> = BTreeMap::new();
    for e in executors_of(page, component) {
        let c = counts(e, p.window);
        for r in c.outputs.iter().filter(|r| shown(r, sys)) {
            outputs.entry(&r.stream).or_default().add(r);
        }
        for r in c.inputs.iter().filter(|r| shown(r, sys)) {
            inputs
                .entry((r.component.as_deref().unwrap_or(""), &r.stream))
                .or_default()
                .add(r);
        }
    }
    let output_stats: Vec<Value> = outputs
        .iter()
        .map(|(stream, s)| {
            let mut row = Map::new();
            row.insert("stream".into(), json!(stream));
            row.insert("emitted".into(), json!(s.emitted));
            row.insert("transferred".into(), json!(s.transferred));
            if kind == ComponentKind::Spout {
                row.insert(
                    "completeLatency".into(),
                    json!(dec(s.complete_latency_ms())),
                );
                row.insert("acked".into(), json!(s.acked));
                put_failed(&mut row, s);
            }
            Value::Object(row)
        })
        .collect();
    m.insert("outputStats".into(), Value::Array(output_stats));
    if kind == ComponentKind::Bolt {
        let input_stats: Vec<Value> = inputs
            .iter()
            .map(|((source, stream), s)| {
                let mut row = Map::new();
                row.insert("component".into(), json!(source));
                row.insert("encodedComponentId".into(), json!(encode(source)));
                row.insert("stream".into(), json!(stream));
                row.insert("executeLatency".into(), json!(dec(s.execute_latency_ms())));
                row.insert("processLatency".into(), json!(dec(s.process_latency_ms())));
                row.insert("executed".into(), json!(s.executed));
                row.insert("acked".into(), json!(s.acked));
                put_failed(&mut row, s);
                Value::Object(row)
            })
            .collect();
        m.insert("inputStats".into(), Value::Array(input_stats));
    }

    // Per executor.
    let executor_stats: Vec<Value> = executors_of(page, component)
        .map(|e| {
            let agg = Agg::of([e], p.window, sys);
            let eid = executor_id(e);
            let mut row = Map::new();
            row.insert("id".into(), json!(eid));
            row.insert("encodedId".into(), json!(encode(&eid)));
            row.insert("uptime".into(), json!(pretty_duration(e.uptime_secs)));
            row.insert("uptimeSeconds".into(), json!(e.uptime_secs));
            row.insert("host".into(), json!(e.host));
            row.insert("port".into(), json!(e.port));
            row.insert("supervisorId".into(), json!(e.supervisor_id));
            put_stats(&mut row, &agg, kind);
            put_pressure(&mut row, &agg, kind);
            if kind == ComponentKind::Spout {
                put_complete_percentiles(&mut row, &agg);
            }
            row.insert("gauges".into(), json!(e.gauges));
            row.insert(
                "workerLogLink".into(),
                json!(links.worker_log(&e.host, id, e.port)),
            );
            Value::Object(row)
        })
        .collect();
    m.insert("executorStats".into(), Value::Array(executor_stats));
    m.insert(
        "gauges".into(),
        json!(component_gauges(executors_of(page, component))),
    );

    // Errors, newest first.
    let errors: Vec<Value> = page
        .errors
        .iter()
        .rev()
        .filter(|e| e.component == component)
        .map(|e| {
            let mut row = Map::new();
            put_error(&mut row, "error", Some(e), id, links, now);
            Value::Object(row)
        })
        .collect();
    m.insert("componentErrors".into(), Value::Array(errors));
    Ok(Value::Object(m))
}

/// A component's custom gauges (the component page's `gauges`): every name any of
/// its executors reported, with the sum of their latest values (saturating). Each
/// executor's own values are in its `executorStats` row; a gauge that does not add up
/// (a transaction id) is best set by one task, or read per executor.
pub fn component_gauges<'a>(
    execs: impl IntoIterator<Item = &'a ExecutorPage>,
) -> BTreeMap<&'a str, i64> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for e in execs {
        for (name, &v) in &e.gauges {
            let sum = sums.entry(name).or_default();
            *sum = sum.saturating_add(v);
        }
    }
    sums
}

/// `/topology-workers/:id`: the hosts and ports of the topology's workers.
pub fn topology_workers_json(page: &TopologyPage, links: &Links) -> Value {
    let mut hosts: Vec<(&str, u16)> = page
        .workers
        .iter()
        .map(|w| (w.host.as_str(), w.port))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let list: Vec<Value> = hosts
        .into_iter()
        .map(|(host, port)| json!({"host": host, "port": port}))
        .collect();
    json!({ "hostPortList": list, "logviewerPort": links.logviewer_port })
}

/// A stream id usable as a DOM id or CSS class (Storm's `:sani-stream`): letters, digits,
/// `-` and `_`, starting with a letter, plus a hash of the original so different streams
/// never clash.
pub fn sanitize_stream(stream: &str) -> String {
    let mut out: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert(0, 's');
    }
    // FNV-1a: stable across runs and versions.
    let hash = stream.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{out}_{:08x}", hash as u32)
}

/// `/topology/:id/visualization`: Storm's graph data (component to its type, capacity,
/// latency, transfers, per-executor stats and inputs) plus Squall's backpressure,
/// throttling, executors and tasks. Ackers and `__system` are left out.
pub fn visualization_json(page: &TopologyPage, window: Window) -> Value {
    let mut out = Map::new();
    for (cid, kind) in components(page, false) {
        let agg = Agg::of(executors_of(page, &cid), window, false);
        let (execs, tasks) = sizes(page, &cid);
        let latency = match kind {
            ComponentKind::Spout => agg.out.complete_latency_ms(),
            ComponentKind::Bolt => agg.inp.execute_latency_ms(),
        };
        let stats: Vec<Value> = executors_of(page, &cid)
            .map(|e| {
                let c = counts(e, window);
                json!({
                    ":host": e.host,
                    ":port": e.port,
                    ":uptime_secs": e.uptime_secs,
                    ":transferred": c.outputs.iter().filter(|r| shown(r, false)).map(|r| r.transferred).sum::<u64>(),
                })
            })
            .collect();
        let inputs: Vec<Value> = page
            .spec
            .components
            .iter()
            .find(|(id, _)| id.as_str() == cid)
            .map(|(_, c)| {
                c.inputs
                    .iter()
                    .filter(|s| !is_system(s.source.component.as_str()))
                    .map(|s| {
                        json!({
                            ":component": s.source.component.as_str(),
                            ":stream": s.source.stream.as_str(),
                            ":sani-stream": sanitize_stream(s.source.stream.as_str()),
                            ":grouping": s.grouping.name(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        out.insert(
            cid.clone(),
            json!({
                ":type": kind_name(kind),
                ":capacity": finite(agg.capacity),
                ":latency": finite(latency),
                ":transferred": agg.out.transferred,
                ":stats": stats,
                ":link": format!(
                    "/component.html?topology={}&id={}",
                    encode(&page.summary.id),
                    encode(&cid)
                ),
                ":inputs": inputs,
                ":backpressure": finite(agg.backpressure),
                ":throttling": agg.throttling(kind),
                ":executors": execs,
                ":tasks": tasks,
            }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
pub(crate) mod tests;
