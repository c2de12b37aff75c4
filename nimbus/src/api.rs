//! Nimbus's RPC API as an axum [`Router`] (see `squall_cluster::rpc` for the API table),
//! served by the one tower stack of [`squall_cluster::http::serve`].
//!
//! - The cluster secret is checked by a middleware ([`authorize`]) before any route: `401`.
//! - Writes (and `HEAD` of a binary, which precedes an upload) take the [`Leader`]
//!   extractor: a standby answers them `503`, naming the leader in the body and in
//!   the `x-squall-leader` header, and the client follows.
//! - Every error is `{"error": "..."}` ([`Refusal`]); unknown paths and methods too.
//! - A topology is named in paths by its name or its id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Digest;
use squall_api::config::keys;
use squall_cluster::http::PeerAddr;
use squall_cluster::metrics::Window;
use squall_cluster::rpc::{
    hex, ApiError, ClusterSummary, ComponentSummary, ExecutorPage, KillRequest, LogLevelRequest,
    LogLevels, NotLeader, RebalanceCommand, SubmitRequest, SubmitResponse, SupervisorSummary,
    TopologyInfo, TopologyPage, TopologySummary, WindowCounters, WorkerSummary, LEADER_HEADER,
    PREFIX,
};
use squall_cluster::secret::{AUTHORIZATION, SECRET_FILE_KEY};
use squall_cluster::state::{
    now_secs, Assignment, HeartbeatResponse, StormBase, TopologyStatus, WorkerHeartbeat, WorkerSlot,
};
use tokio::io::AsyncWriteExt;

use crate::{exists, free_slots, loglevels, Nimbus, NimbusError, TopologyCode};

/// JSON request bodies are small; binaries go through the upload route.
const MAX_JSON: usize = 16 << 20;

/// A refused request: the response to send instead (`{"error": ...}` with its status).
pub(crate) struct Refusal(Box<Response>);

impl Refusal {
    fn new(r: Response) -> Refusal {
        Refusal(Box::new(r))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Reply = Result<Response, Refusal>;

/// A JSON response.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, Json(value)).into_response()
}

/// An error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal::new(json(
        status,
        &ApiError {
            error: message.into(),
        },
    ))
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bad(msg: impl Into<String>) -> Refusal {
    error(StatusCode::BAD_REQUEST, msg)
}

fn conflict(msg: impl Into<String>) -> Refusal {
    error(StatusCode::CONFLICT, msg)
}

fn not_found(name: &str) -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        format!("no topology named or with id '{name}': `squall list` shows the running ones"),
    )
}

fn state_err(e: impl Into<NimbusError>) -> Refusal {
    error(StatusCode::SERVICE_UNAVAILABLE, e.into().to_string())
}

fn ok() -> Response {
    json(StatusCode::OK, &serde_json::json!({}))
}

/// Reads a JSON body (at most [`MAX_JSON`] bytes; empty counts as `{}`).
async fn parse<T: DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|e| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or over {MAX_JSON} bytes: {e}"),
        )
    })?;
    let bytes = if bytes.is_empty() { "{}".into() } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid request body: {e}")))
}

/// Path parameters, percent-decoded; a segment that does not decode is a `400`.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(e) => Err(bad(format!(
                "invalid path {}: {}",
                parts.uri.path(),
                e.body_text()
            ))),
        }
    }
}

/// Present only on the leader: a standby refuses the request with `503` naming the
/// leader ([`not_leader`]).
struct Leader;

impl FromRequestParts<Arc<Nimbus>> for Leader {
    type Rejection = Refusal;

    async fn from_request_parts(_: &mut Parts, n: &Arc<Nimbus>) -> Result<Self, Refusal> {
        if n.is_leader() {
            Ok(Leader)
        } else {
            Err(not_leader(n).await)
        }
    }
}

/// Every route of Nimbus's RPC API.
pub(crate) fn router(nimbus: Arc<Nimbus>) -> Router {
    let topology = format!("{PREFIX}/topologies/{{name}}");
    Router::new()
        .route(
            &format!("{PREFIX}/binaries/{{sha}}"),
            put(upload).get(download).head(has_binary),
        )
        .route(&format!("{PREFIX}/topologies"), post(submit).get(list))
        .route(&topology, get(info))
        .route(&format!("{topology}/page"), get(page))
        .route(
            &format!("{topology}/log-levels"),
            get(log_levels).post(set_log_levels),
        )
        .route(&format!("{topology}/{{action}}"), post(action))
        .route(&format!("{PREFIX}/heartbeats"), post(heartbeat))
        .route(&format!("{PREFIX}/cluster"), get(cluster))
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        .layer(from_fn_with_state(nimbus.clone(), log_refusals))
        .layer(from_fn_with_state(nimbus.clone(), authorize))
        .with_state(nimbus)
}

async fn no_endpoint(method: Method, uri: axum::http::Uri) -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

/// Refuses a request without the cluster secret (when one is configured): `401`.
async fn authorize(State(n): State<Arc<Nimbus>>, req: Request, next: Next) -> Response {
    if let Some(secret) = &n.secret {
        let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !secret.check_bearer(header) {
            let peer = req
                .extensions()
                .get::<PeerAddr>()
                .map_or_else(|| "unknown".to_owned(), |p| p.0.to_string());
            tracing::warn!(%peer, method = %req.method(), path = %req.uri().path(), "refused: no or wrong cluster secret");
            return error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this cluster requires its secret: send `Authorization: Bearer <secret>` with the secret from the file named by {SECRET_FILE_KEY}"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Logs every request that is not answered with a success.
async fn log_refusals(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let r = next.run(req).await;
    if !r.status().is_success() {
        tracing::info!(%method, %path, status = r.status().as_u16(), "request refused");
    }
    r
}

async fn upload(
    _: Leader,
    State(n): State<Arc<Nimbus>>,
    Params(sha): Params<String>,
    body: Body,
) -> Reply {
    store_binary(&n, &sha, body).await
}

async fn download(State(n): State<Arc<Nimbus>>, Params(sha): Params<String>) -> Reply {
    valid_sha(&sha)?;
    if !n.is_leader() && !exists(&n.binary_path(&sha)) {
        // A standby that has not copied it yet: the leader has it.
        return Err(not_leader(&n).await);
    }
    let file = tokio::fs::File::open(n.binary_path(&sha))
        .await
        .map_err(|_| error(StatusCode::NOT_FOUND, format!("no binary {sha}")))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn has_binary(_: Leader, State(n): State<Arc<Nimbus>>, Params(sha): Params<String>) -> Reply {
    valid_sha(&sha)?;
    if exists(&n.binary_path(&sha)) {
        Ok(ok())
    } else {
        Err(error(StatusCode::NOT_FOUND, format!("no binary {sha}")))
    }
}

async fn submit(_: Leader, State(n): State<Arc<Nimbus>>, body: Body) -> Reply {
    submit_topology(&n, parse(body).await?).await
}

async fn list(State(n): State<Arc<Nimbus>>) -> Reply {
    let mut out = Vec::new();
    for base in n.state().storms().await.map_err(state_err)? {
        out.push(summary(&n, &base).await);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(json(StatusCode::OK, &out))
}

/// A topology's details carry live counters, which only the leader receives: a standby
/// sends the reader there while it knows the leader (and answers from ZooKeeper,
/// without counters, while none is elected).
async fn info(State(n): State<Arc<Nimbus>>, Params(name): Params<String>) -> Reply {
    if !n.is_leader() && n.known_leader().is_some() {
        return Err(not_leader(&n).await);
    }
    topology_info(&n, &name).await
}

async fn page(_: Leader, State(n): State<Arc<Nimbus>>, Params(name): Params<String>) -> Reply {
    topology_page(&n, &name).await
}

async fn action(
    _: Leader,
    State(n): State<Arc<Nimbus>>,
    Params((name, action)): Params<(String, String)>,
    body: Body,
) -> Reply {
    match action.as_str() {
        "kill" => kill(&n, &name, parse(body).await?).await,
        "activate" => set_status(&n, &name, TopologyStatus::Active).await,
        "deactivate" => set_status(&n, &name, TopologyStatus::Inactive).await,
        "rebalance" => rebalance(&n, &name, parse(body).await?).await,
        other => Err(error(
            StatusCode::NOT_FOUND,
            format!("no such action: {other}"),
        )),
    }
}

async fn heartbeat(_: Leader, State(n): State<Arc<Nimbus>>, body: Body) -> Reply {
    record_heartbeat(&n, parse(body).await?).await
}

async fn cluster(State(n): State<Arc<Nimbus>>) -> Reply {
    cluster_summary(&n).await
}

/// The log levels in force (any Nimbus answers, from ZooKeeper).
async fn log_levels(State(n): State<Arc<Nimbus>>, Params(name): Params<String>) -> Reply {
    let base = live(&n, &name).await?;
    let levels = n
        .state()
        .log_config::<LogLevels>(&base.topology_id)
        .await
        .map_err(state_err)?
        .unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        &loglevels::unexpired(&levels, now_secs()),
    ))
}

/// Sets and resets log levels: stored in ZooKeeper, then in the heartbeat view, from
/// which workers get them with their next heartbeat answer.
async fn set_log_levels(
    _: Leader,
    State(n): State<Arc<Nimbus>>,
    Params(name): Params<String>,
    body: Body,
) -> Reply {
    let req: LogLevelRequest = parse(body).await?;
    let _guard = n.lock.lock().await;
    let base = live(&n, &name).await?;
    let id = &base.topology_id;
    let current = n
        .state()
        .log_config::<LogLevels>(id)
        .await
        .map_err(state_err)?
        .unwrap_or_default();
    let next = loglevels::apply(&current, &req, now_secs()).map_err(bad)?;
    n.state()
        .set_log_config(id, &next)
        .await
        .map_err(state_err)?;
    n.lock_view().log_levels.insert(id.clone(), next.clone());
    tracing::info!(topology = %base.name, "log levels now {:?}", next.levels);
    Ok(json(StatusCode::OK, &next))
}

/// A standby's answer to a write: 503, naming the leader when one is known.
async fn not_leader(n: &Nimbus) -> Refusal {
    let leader = match n.known_leader() {
        Some(l) => Some(l),
        // Not looked up yet (just started): ask ZooKeeper.
        None if !n.is_leader() => n
            .state()
            .leader()
            .await
            .ok()
            .flatten()
            .filter(|l| *l != n.addr),
        None => None,
    };
    let header = leader.clone().unwrap_or_default();
    let mut resp = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &NotLeader {
            error: format!(
                "this Nimbus ({}) is not the leader; the leader is {}",
                n.addr,
                leader.as_deref().unwrap_or("not elected yet")
            ),
            leader,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&header) {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
    Refusal::new(resp)
}

fn valid_sha(sha: &str) -> Result<(), Refusal> {
    if sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(bad(format!("'{sha}' is not a lower-case hex SHA-256")))
    }
}

/// Streams an upload to disk, checking size and SHA-256; nothing is kept unless both are
/// right.
async fn store_binary(n: &Nimbus, sha: &str, mut body: Body) -> Reply {
    valid_sha(sha)?;
    let dest = n.binary_path(sha);
    if exists(&dest) {
        // Already stored: read the body anyway so the client can finish sending it.
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
        return Ok(ok());
    }
    let tmp = dest.with_extension(format!("upload-{}", std::process::id() as u64 ^ now_secs()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(internal)?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let result: Result<(), Refusal> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| bad(format!("upload interrupted: {e}")))?;
            if let Some(data) = frame.data_ref() {
                size += data.len() as u64;
                if size > n.max_binary_bytes {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "binary is larger than nimbus.binary.max.bytes ({} bytes)",
                            n.max_binary_bytes
                        ),
                    ));
                }
                hasher.update(data);
                file.write_all(data).await.map_err(internal)?;
            }
        }
        file.flush().await.map_err(internal)?;
        let got = hex(&hasher.finalize());
        if got != sha {
            return Err(bad(format!(
                "corrupted upload: the binary's SHA-256 is {got}, but {sha} was announced"
            )));
        }
        Ok(())
    }
    .await;
    drop(file);
    if let Err(r) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(r);
    }
    tokio::fs::rename(&tmp, &dest).await.map_err(internal)?;
    tracing::info!("stored binary {sha} ({size} bytes)");
    Ok(ok())
}

/// The live topology named `x`, or else with id `x`; a 404 naming it otherwise.
async fn live(n: &Nimbus, x: &str) -> Result<StormBase, Refusal> {
    n.find(x)
        .await
        .map_err(state_err)?
        .ok_or_else(|| not_found(x))
}

async fn submit_topology(n: &Nimbus, req: SubmitRequest) -> Reply {
    squall_cluster::validate_topology_name(&req.name).map_err(bad)?;
    req.spec
        .validate()
        .map_err(|e| bad(format!("invalid topology '{}': {e}", req.name)))?;
    let mut conf = req.conf;
    // The configuration as every component will run with it (the component's own keys
    // merged over the topology's), with the checks that span both: a window longer than
    // the message timeout, an unknown state provider, ...
    req.spec
        .validate_with_conf(&conf)
        .map_err(|e| bad(format!("invalid configuration for '{}': {e}", req.name)))?;
    valid_sha(&req.binary_sha256)?;
    if !exists(&n.binary_path(&req.binary_sha256)) {
        return Err(bad(format!(
            "binary {} has not been uploaded",
            req.binary_sha256
        )));
    }
    let num_workers = conf.num_workers().map_err(|e| bad(e.to_string()))?;
    // Fix the acker count at submission so task ids never change afterwards.
    let ackers = conf.num_ackers().map_err(|e| bad(e.to_string()))?;
    conf.set_num_ackers(ackers);
    conf.set(keys::TOPOLOGY_NAME, req.name.as_str());

    let _guard = n.lock.lock().await;
    let storms = n.state().storms().await.map_err(state_err)?;
    if storms.iter().any(|b| b.name == req.name) {
        return Err(conflict(format!(
            "a topology named '{}' is already running",
            req.name
        )));
    }
    let launch = now_secs();
    let counter = n.state().next_topology_number().await.map_err(state_err)?;
    let topology_id = format!("{}-{counter}-{launch}", req.name);
    let code = TopologyCode {
        spec: req.spec,
        conf,
    };
    n.state()
        .set_code(&topology_id, &code)
        .await
        .map_err(state_err)?;
    let base = StormBase {
        name: req.name.clone(),
        topology_id: topology_id.clone(),
        status: TopologyStatus::Active,
        prev_status: None,
        num_workers,
        component_executors: code
            .spec
            .components
            .iter()
            .map(|(id, c)| (id.to_string(), c.parallelism))
            .collect(),
        launch_time_secs: launch,
        owner: req.owner,
        binary_sha256: req.binary_sha256,
        args: req.args,
        action_at_secs: None,
        rebalance: None,
    };
    n.state().set_storm(&base).await.map_err(state_err)?;
    let (supervisors, assignments, _) = n.cluster_now().await.map_err(state_err)?;
    n.assign(&base, &supervisors, &assignments)
        .await
        .map_err(internal)?;
    n.refresh_view().await;
    tracing::info!(topology = %base.name, id = %topology_id, "submitted");
    Ok(json(StatusCode::OK, &SubmitResponse { topology_id }))
}

async fn summary(n: &Nimbus, base: &StormBase) -> TopologySummary {
    let assignment = n.state().assignment(&base.topology_id).await.ok().flatten();
    let num_tasks = n
        .code(&base.topology_id)
        .await
        .map_or(0, |code| Nimbus::layout(base, &code).max_task().0);
    TopologySummary {
        id: base.topology_id.clone(),
        name: base.name.clone(),
        status: base.status,
        uptime_secs: now_secs().saturating_sub(base.launch_time_secs),
        num_tasks,
        num_workers: assignment.as_ref().map_or(0, |a| a.slots().len() as u32),
        num_executors: assignment.as_ref().map_or(0, |a| a.executors.len() as u32),
        owner: base.owner.clone(),
    }
}

async fn topology_info(n: &Nimbus, name: &str) -> Reply {
    let base = live(n, name).await?;
    let summary = summary(n, &base).await;
    let assignment = n
        .state()
        .assignment(&base.topology_id)
        .await
        .map_err(state_err)?;
    let code = n.code(&base.topology_id).await;
    let beats = n
        .lock_heartbeats()
        .get(&base.topology_id)
        .cloned()
        .unwrap_or_default();
    let mut components: BTreeMap<String, ComponentSummary> = BTreeMap::new();
    if let Some(code) = &code {
        let layout = Nimbus::layout(&base, code);
        for (id, c) in layout.components() {
            components.insert(
                id.to_string(),
                ComponentSummary {
                    id: id.to_string(),
                    kind: match c.kind {
                        squall_api::ComponentKind::Spout => "spout".into(),
                        squall_api::ComponentKind::Bolt => "bolt".into(),
                    },
                    executors: c.executors.len() as u32,
                    tasks: c.tasks.len() as u32,
                    ..Default::default()
                },
            );
        }
    }
    let mut executors = Vec::new();
    let mut lat: BTreeMap<String, (f64, f64, u64)> = BTreeMap::new();
    let version = assignment.as_ref().map_or(0, |a| a.version);
    for (_, hb) in beats
        .values()
        .filter(|(_, hb)| hb.assignment_version == version)
    {
        for e in &hb.executors {
            let c = components.entry(e.component.clone()).or_default();
            c.emitted += e.emitted;
            c.transferred += e.transferred;
            c.acked += e.acked;
            c.failed += e.failed;
            c.executed += e.executed;
            let l = lat.entry(e.component.clone()).or_default();
            l.0 += e.execute_latency_ms * e.executed as f64;
            l.1 += e.complete_latency_ms * e.acked as f64;
            l.2 += 1;
            executors.push(e.clone());
        }
    }
    for (id, (exec, complete, _)) in lat {
        if let Some(c) = components.get_mut(&id) {
            if c.executed > 0 {
                c.execute_latency_ms = exec / c.executed as f64;
            }
            if c.acked > 0 {
                c.complete_latency_ms = complete / c.acked as f64;
            }
        }
    }
    let workers = workers(assignment.as_ref(), &beats);
    let errors = n
        .state()
        .errors(&base.topology_id)
        .await
        .map_err(state_err)?;
    Ok(json(
        StatusCode::OK,
        &TopologyInfo {
            summary,
            components: components.into_values().collect(),
            workers,
            executors,
            errors,
            conf: code.map(|c| c.conf.clone()).unwrap_or_default(),
        },
    ))
}

/// One row per worker slot of `assignment`, with what its last heartbeat said.
fn workers(assignment: Option<&Assignment>, beats: &Beats) -> Vec<WorkerSummary> {
    let now = Instant::now();
    let Some(a) = assignment else {
        return Vec::new();
    };
    a.slots()
        .into_iter()
        .map(|slot| {
            let hb = beats.get(&slot);
            WorkerSummary {
                host: a.node_host.get(&slot.node).cloned().unwrap_or_default(),
                num_executors: a.executors_of(&slot).len() as u32,
                heartbeat_age_secs: hb.map(|(t, _)| now.duration_since(*t).as_secs()),
                uptime_secs: hb.map_or(0, |(_, h)| h.uptime_secs),
                supervisor_id: slot.node,
                port: slot.port,
            }
        })
        .collect()
}

/// The last heartbeat per slot of one topology.
type Beats = BTreeMap<WorkerSlot, (Instant, WorkerHeartbeat)>;

/// Everything the UI shows of a topology: the executors of its assignment (zero
/// counters before their first heartbeat) with their rolling windows, its workers,
/// errors, spec, configuration and log levels.
async fn topology_page(n: &Nimbus, name: &str) -> Reply {
    let base = live(n, name).await?;
    let id = &base.topology_id;
    let summary = summary(n, &base).await;
    let assignment = n.state().assignment(id).await.map_err(state_err)?;
    let code = n.code(id).await;
    let errors = n.state().errors(id).await.map_err(state_err)?;
    let viewed = n.lock_view().log_levels.get(id).cloned();
    let log_levels = match viewed {
        Some(l) => l,
        None => n
            .state()
            .log_config::<LogLevels>(id)
            .await
            .map_err(state_err)?
            .unwrap_or_default(),
    };
    let beats = n.lock_heartbeats().get(id).cloned().unwrap_or_default();
    let now = now_secs();
    let instant = Instant::now();
    let mut executors = Vec::new();
    if let Some(a) = &assignment {
        let rolling = n.lock_rolling();
        let windows = rolling.get(id);
        let mut placed: Vec<_> = a.executors.iter().collect();
        placed.sort_by_key(|e| e.first);
        for e in placed {
            let beat = beats.get(&e.slot).and_then(|(t, hb)| {
                hb.executors
                    .iter()
                    .find(|x| x.component == e.component && x.first == e.first && x.last == e.last)
                    .map(|x| (t, hb, x))
            });
            let rolling = windows.and_then(|w| w.get(&(e.component.clone(), e.first.0, e.last.0)));
            executors.push(ExecutorPage {
                component: e.component.clone(),
                first: e.first.0,
                last: e.last.0,
                host: a.node_host.get(&e.slot.node).cloned().unwrap_or_default(),
                port: e.slot.port,
                supervisor_id: e.slot.node.clone(),
                uptime_secs: beat.map_or(0, |(_, hb, _)| hb.uptime_secs),
                heartbeat_age_secs: beat.map(|(t, _, _)| instant.duration_since(*t).as_secs()),
                windows: Window::ALL
                    .into_iter()
                    .map(|window| WindowCounters {
                        window,
                        counters: rolling.map(|r| r.window(now, window)).unwrap_or_default(),
                    })
                    .collect(),
                queue_depth: beat.map_or(0, |(_, _, x)| x.queue_depth),
                queue_capacity: beat.map_or(0, |(_, _, x)| x.queue_capacity),
                complete_latency_p50_ms: beat.map_or(0.0, |(_, _, x)| x.complete_latency_p50_ms),
                complete_latency_p99_ms: beat.map_or(0.0, |(_, _, x)| x.complete_latency_p99_ms),
                complete_latency_max_ms: beat.map_or(0.0, |(_, _, x)| x.complete_latency_max_ms),
                gauges: beat.map(|(_, _, x)| x.gauges.clone()).unwrap_or_default(),
            });
        }
    }
    let (spec, conf) = code
        .as_ref()
        .map(|c| (c.spec.clone(), c.conf.clone()))
        .unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        &TopologyPage {
            summary,
            msg_timeout_secs: conf.message_timeout_secs().unwrap_or(30),
            conf,
            spec,
            workers: workers(assignment.as_ref(), &beats),
            executors,
            errors,
            log_levels: loglevels::unexpired(&log_levels, now),
            time_secs: now,
        },
    ))
}

async fn message_timeout(n: &Nimbus, base: &StormBase) -> u64 {
    n.code(&base.topology_id)
        .await
        .and_then(|c| c.conf.message_timeout_secs().ok())
        .unwrap_or(30)
}

async fn kill(n: &Nimbus, name: &str, req: KillRequest) -> Reply {
    let _guard = n.lock.lock().await;
    let mut base = live(n, name).await?;
    let wait = match req.wait_secs {
        Some(w) => w,
        None => message_timeout(n, &base).await,
    };
    base.status = TopologyStatus::Killed;
    base.action_at_secs = Some(now_secs() + wait);
    n.state().set_storm(&base).await.map_err(state_err)?;
    n.refresh_view().await;
    tracing::info!(topology = %name, "killing in {wait} s");
    Ok(ok())
}

async fn set_status(n: &Nimbus, name: &str, status: TopologyStatus) -> Reply {
    let _guard = n.lock.lock().await;
    let mut base = live(n, name).await?;
    match base.status {
        TopologyStatus::Killed => {
            return Err(conflict(format!("topology '{name}' is being killed")))
        }
        TopologyStatus::Rebalancing => {
            return Err(conflict(format!("topology '{name}' is rebalancing")))
        }
        _ => {}
    }
    base.status = status;
    n.state().set_storm(&base).await.map_err(state_err)?;
    n.refresh_view().await;
    Ok(ok())
}

async fn rebalance(n: &Nimbus, name: &str, cmd: RebalanceCommand) -> Reply {
    let _guard = n.lock.lock().await;
    let mut base = live(n, name).await?;
    if matches!(
        base.status,
        TopologyStatus::Killed | TopologyStatus::Rebalancing
    ) {
        return Err(conflict(format!("topology '{name}' is {}", base.status)));
    }
    if cmd.request.num_workers == Some(0) {
        return Err(bad("the number of workers must be at least 1"));
    }
    for (component, &parallelism) in &cmd.request.executors {
        if !base.component_executors.contains_key(component) {
            return Err(bad(format!(
                "topology '{name}' has no component '{component}'"
            )));
        }
        if parallelism == 0 {
            return Err(bad(format!(
                "component '{component}' needs at least 1 executor"
            )));
        }
    }
    check_slots(n, name, &base, &cmd).await?;
    let wait = match cmd.wait_secs {
        Some(w) => w,
        None => message_timeout(n, &base).await,
    };
    base.prev_status = Some(base.status);
    base.status = TopologyStatus::Rebalancing;
    base.action_at_secs = Some(now_secs() + wait);
    base.rebalance = Some(cmd.request);
    n.state().set_storm(&base).await.map_err(state_err)?;
    n.refresh_view().await;
    Ok(ok())
}

/// The verdict on a worker heartbeat, from the in-memory view only: `unknown` until
/// this leader has loaded its view, `assigned` when the worker's slot holds exactly the
/// executors it reports in the current assignment of the same epoch, else
/// `not_assigned`.
fn verdict(n: &Nimbus, hb: &WorkerHeartbeat, slot: &WorkerSlot) -> HeartbeatResponse {
    let view = n.lock_view();
    if !view.loaded {
        return HeartbeatResponse::Unknown;
    }
    let Some(t) = view.topologies.get(&hb.topology_id) else {
        return HeartbeatResponse::NotAssigned;
    };
    let mut reported: Vec<(u32, u32)> =
        hb.executors.iter().map(|e| (e.first.0, e.last.0)).collect();
    reported.sort_unstable();
    match t.slots.get(slot) {
        Some(execs) if t.epoch == hb.epoch && *execs == reported => HeartbeatResponse::Assigned {
            status: t.status,
            assignment_version: t.version,
            log_levels: view
                .log_levels
                .get(&hb.topology_id)
                .map(|l| loglevels::in_force(l, now_secs()))
                .unwrap_or_default(),
        },
        _ => HeartbeatResponse::NotAssigned,
    }
}

/// Never touches ZooKeeper: errors go to a bounded queue that a background task
/// writes (dropped and counted when full); the executors' counters go to their rolling
/// windows.
async fn record_heartbeat(n: &Nimbus, mut hb: WorkerHeartbeat) -> Reply {
    let slot = WorkerSlot {
        node: hb.supervisor_id.clone(),
        port: hb.port,
    };
    let answer = verdict(n, &hb, &slot);
    if matches!(answer, HeartbeatResponse::Assigned { .. }) {
        for e in hb.errors.drain(..) {
            if n.errors.try_send((hb.topology_id.clone(), e)).is_err() {
                let dropped = n
                    .errors_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!("worker error queue full: {dropped} errors dropped so far");
                }
            }
        }
        n.record_counters(&hb);
        n.lock_heartbeats()
            .entry(hb.topology_id.clone())
            .or_default()
            .insert(slot, (Instant::now(), hb));
    }
    Ok(json(StatusCode::OK, &answer))
}

/// Refuses a rebalance that cannot get the workers it asks for: the free slots of live
/// supervisors plus the topology's own must cover them.
async fn check_slots(
    n: &Nimbus,
    name: &str,
    base: &StormBase,
    cmd: &RebalanceCommand,
) -> Result<(), Refusal> {
    let Some(code) = n.code(&base.topology_id).await else {
        return Ok(());
    };
    let mut after = base.clone();
    if let Some(w) = cmd.request.num_workers {
        after.num_workers = w;
    }
    for (c, &p) in &cmd.request.executors {
        after.component_executors.insert(c.clone(), p);
    }
    let executors = Nimbus::layout(&after, &code).executors().count();
    let needed = (after.num_workers.max(1) as usize).min(executors);
    let (supervisors, assignments, _) = n.cluster_now().await.map_err(state_err)?;
    let (free, _) = free_slots(&supervisors, assignments.values(), Some(&base.topology_id));
    let available: usize = free.iter().map(|f| f.ports.len()).sum();
    if needed > available {
        let own = assignments
            .get(&base.topology_id)
            .map_or(0, |a| a.slots().len());
        return Err(conflict(format!(
            "cannot rebalance '{name}' onto {needed} workers: only {available} slots are available ({} free, {own} in use by '{name}'); start supervisors or ask for fewer workers",
            available - own.min(available)
        )));
    }
    Ok(())
}

async fn cluster_summary(n: &Nimbus) -> Reply {
    let supervisors = n.state().supervisors().await.map_err(state_err)?;
    let assignments = n.state().assignments().await.map_err(state_err)?;
    let storms = n.state().storms().await.map_err(state_err)?;
    let nimbuses = n.state().nimbuses().await.map_err(state_err)?;
    let supervisors = supervisors
        .into_iter()
        .map(|info| {
            let mut used: Vec<u16> = assignments
                .iter()
                .flat_map(|a| a.slots())
                .filter(|s| s.node == info.id)
                .map(|s| s.port)
                .collect();
            used.sort_unstable();
            SupervisorSummary {
                info,
                used_ports: used,
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &ClusterSummary {
            supervisors,
            nimbuses,
            topologies: storms.len(),
            leader: n.known_leader(),
        },
    ))
}
