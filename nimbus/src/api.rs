//! Nimbus's RPC handlers (see `squall_cluster::rpc` for the API table).
//!
//! Handlers return `Result<Response, Response>`: the error side is the HTTP answer.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use sha2::Digest;
use squall_api::config::keys;
use squall_cluster::http::{error, json, read_body, Body, Handler, PeerAddr};
use squall_cluster::rpc::{
    decode, hex, ClusterSummary, ComponentSummary, KillRequest, NotLeader, RebalanceCommand,
    SubmitRequest, SubmitResponse, SupervisorSummary, TopologyInfo, TopologySummary, WorkerSummary,
    LEADER_HEADER, PREFIX,
};
use squall_cluster::secret::{AUTHORIZATION, SECRET_FILE_KEY};
use squall_cluster::state::{
    now_secs, HeartbeatResponse, StormBase, TopologyStatus, WorkerHeartbeat, WorkerSlot,
};
use tokio::io::AsyncWriteExt;

use crate::{exists, free_slots, Nimbus, NimbusError, TopologyCode};

/// JSON request bodies are small; binaries go through the upload route.
const MAX_JSON: usize = 16 << 20;

type Reply = Result<Response<Body>, Response<Body>>;

fn internal(e: impl std::fmt::Display) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bad(msg: impl Into<String>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, msg)
}

async fn parse<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    let bytes = read_body(req.into_body(), MAX_JSON).await?;
    let bytes = if bytes.is_empty() { "{}".into() } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid request body: {e}")))
}

fn ok() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({}))
}

pub(crate) fn handler(nimbus: Arc<Nimbus>) -> Handler {
    Arc::new(move |req| {
        let nimbus = nimbus.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            if let Some(secret) = &nimbus.secret {
                let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
                if !secret.check_bearer(header) {
                    let peer = req
                        .extensions()
                        .get::<PeerAddr>()
                        .map_or_else(|| "unknown".to_owned(), |p| p.0.to_string());
                    tracing::warn!(%peer, %method, %path, "refused: no or wrong cluster secret");
                    return error(
                        StatusCode::UNAUTHORIZED,
                        format!(
                            "this cluster requires its secret: send `Authorization: Bearer <secret>` with the secret from the file named by {SECRET_FILE_KEY}"
                        ),
                    );
                }
            }
            match route(&nimbus, req).await {
                Ok(r) | Err(r) => {
                    if !r.status().is_success() {
                        tracing::info!(%method, %path, status = r.status().as_u16(), "request refused");
                    }
                    r
                }
            }
        })
    })
}

async fn route(n: &Arc<Nimbus>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path}"),
        ));
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    // Writes (and HEAD of a binary, which precedes an upload) only on the leader.
    let write = method == Method::POST
        || method == Method::PUT
        || (method == Method::HEAD && matches!(segs.as_slice(), ["binaries", _]));
    if write && !n.is_leader() {
        return Err(not_leader(n).await);
    }
    // A topology's details carry live counters, which only the leader receives: a
    // standby sends the reader there while it knows the leader (and answers from
    // ZooKeeper, without counters, while none is elected).
    let live_read = method == Method::GET && matches!(segs.as_slice(), ["topologies", _]);
    if live_read && !n.is_leader() && n.known_leader().is_some() {
        return Err(not_leader(n).await);
    }
    match (&method, segs.as_slice()) {
        (&Method::PUT, ["binaries", sha]) => upload(n, sha, req).await,
        (&Method::GET, ["binaries", sha]) => {
            if !n.is_leader() && valid_sha(sha).is_ok() && !exists(&n.binary_path(sha)) {
                // A standby that has not copied it yet: the leader has it.
                return Err(not_leader(n).await);
            }
            download(n, sha).await
        }
        (&Method::HEAD, ["binaries", sha]) => {
            valid_sha(sha)?;
            if exists(&n.binary_path(sha)) {
                Ok(ok())
            } else {
                Err(error(StatusCode::NOT_FOUND, format!("no binary {sha}")))
            }
        }
        (&Method::POST, ["topologies"]) => submit(n, parse(req).await?).await,
        (&Method::GET, ["topologies"]) => list(n).await,
        (&Method::GET, ["topologies", name]) => info(n, &name_of(name)?).await,
        (&Method::POST, ["topologies", name, action]) => {
            let name = name_of(name)?;
            match *action {
                "kill" => kill(n, &name, parse(req).await?).await,
                "activate" => set_status(n, &name, TopologyStatus::Active).await,
                "deactivate" => set_status(n, &name, TopologyStatus::Inactive).await,
                "rebalance" => rebalance(n, &name, parse(req).await?).await,
                other => Err(error(
                    StatusCode::NOT_FOUND,
                    format!("no such action: {other}"),
                )),
            }
        }
        (&Method::POST, ["heartbeats"]) => heartbeat(n, parse(req).await?).await,
        (&Method::GET, ["cluster"]) => cluster(n).await,
        _ => Err(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        )),
    }
}

/// A standby's answer to a write: 503, naming the leader when one is known.
async fn not_leader(n: &Nimbus) -> Response<Body> {
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
    if let Ok(v) = hyper::header::HeaderValue::from_str(&header) {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
    resp
}

fn name_of(segment: &str) -> Result<String, Response<Body>> {
    decode(segment).ok_or_else(|| bad(format!("invalid topology name in path: {segment}")))
}

fn valid_sha(sha: &str) -> Result<(), Response<Body>> {
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
async fn upload(n: &Nimbus, sha: &str, req: Request<Incoming>) -> Reply {
    valid_sha(sha)?;
    let dest = n.binary_path(sha);
    if exists(&dest) {
        // Already stored: read the body anyway so the client can finish sending it.
        let mut body = req.into_body();
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
    let mut body = req.into_body();
    let result: Result<(), Response<Body>> = async {
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

async fn download(n: &Nimbus, sha: &str) -> Reply {
    valid_sha(sha)?;
    let file = tokio::fs::File::open(n.binary_path(sha))
        .await
        .map_err(|_| error(StatusCode::NOT_FOUND, format!("no binary {sha}")))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(squall_cluster::http::stream_file(file))
        .expect("valid response"))
}

fn conflict(msg: impl Into<String>) -> Response<Body> {
    error(StatusCode::CONFLICT, msg)
}

fn not_found(name: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        format!("unknown topology '{name}': `squall list` shows the running ones"),
    )
}

/// The live topology `name`, or a 404 naming it.
async fn live(n: &Nimbus, name: &str) -> Result<StormBase, Response<Body>> {
    n.find(name)
        .await
        .map_err(state_err)?
        .ok_or_else(|| not_found(name))
}

fn state_err(e: impl Into<NimbusError>) -> Response<Body> {
    error(StatusCode::SERVICE_UNAVAILABLE, e.into().to_string())
}

async fn submit(n: &Nimbus, req: SubmitRequest) -> Reply {
    squall_cluster::validate_topology_name(&req.name).map_err(bad)?;
    req.spec
        .validate()
        .map_err(|e| bad(format!("invalid topology '{}': {e}", req.name)))?;
    let mut conf = req.conf;
    conf.validate()
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

async fn list(n: &Nimbus) -> Reply {
    let mut out = Vec::new();
    for base in n.state().storms().await.map_err(state_err)? {
        out.push(summary(n, &base).await);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(json(StatusCode::OK, &out))
}

async fn info(n: &Nimbus, name: &str) -> Reply {
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
    let now = Instant::now();
    let workers = assignment
        .as_ref()
        .map(|a| {
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
        })
        .unwrap_or_default();
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
            log_levels: Default::default(),
        },
        _ => HeartbeatResponse::NotAssigned,
    }
}

/// Never touches ZooKeeper: errors go to a bounded queue that a background task
/// writes (dropped and counted when full).
async fn heartbeat(n: &Nimbus, mut hb: WorkerHeartbeat) -> Reply {
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
) -> Result<(), Response<Body>> {
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

async fn cluster(n: &Nimbus) -> Reply {
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
