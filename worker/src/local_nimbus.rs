//! Local mode's stand-in for Nimbus: the read side of Nimbus's RPC (and activate,
//! deactivate, kill) served from a [`LocalCluster`](crate::LocalCluster), so the web UI
//! (`squall local BINARY --ui`) shows a local-mode topology exactly as it shows one on a
//! cluster.
//!
//! It starts when the environment names a port in [`LOCAL_NIMBUS_PORT_ENV`] (the `squall`
//! CLI sets it), listens on 127.0.0.1 only, and answers:
//!
//! | method and path (under `/nimbus/v1`) | answer |
//! |---|---|
//! | `GET /cluster` | [`ClusterSummary`] (one local "supervisor" and "Nimbus") |
//! | `GET /topologies` | `[`[`TopologySummary`]`]` |
//! | `GET /topologies/<name>/page` | [`TopologyPage`] with rolling windows |
//! | `GET /topologies/<name>/log-levels` | [`LogLevels`] (always empty here) |
//! | `POST /topologies/<name>/activate`, `deactivate`, `kill` | `{}` |
//!
//! Anything else answers `{"error": ...}` with 404 or 400 (rebalancing and log levels
//! need a cluster).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use squall_cluster::metrics::{Rolling, Window};
use squall_cluster::rpc::{
    ApiError, ClusterSummary, ExecutorPage, LogLevels, SupervisorSummary, TopologyPage,
    TopologySummary, WindowCounters, WorkerSummary,
};
use squall_cluster::state::{now_secs, ErrorInfo, NimbusSummary, SupervisorInfo, TopologyStatus};

use crate::local::{Shared, Topologies};

/// The environment variable naming the loopback port local mode serves Nimbus's read
/// API on (set by `squall local --ui`).
pub const LOCAL_NIMBUS_PORT_ENV: &str = "SQUALL_LOCAL_NIMBUS_PORT";

/// The host and supervisor id local mode reports its one "worker" under.
const HOST: &str = "localhost";
const SUPERVISOR: &str = "local";

struct Facade {
    topologies: Weak<Shared>,
    /// Rolling windows per (topology name, component, first task).
    rolling: Mutex<HashMap<(String, String, u32), Rolling>>,
    started: u64,
}

type AppState = Arc<Facade>;

/// Starts the facade on `127.0.0.1:port` on a thread of its own; it stops when the
/// cluster is dropped. Returns the bound address.
pub(crate) fn start(shared: &Arc<Shared>, port: u16) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let facade = Arc::new(Facade {
        topologies: Arc::downgrade(shared),
        rolling: Mutex::default(),
        started: now_secs(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("squall-local-nimbus".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let sampler = facade.clone();
                tokio::spawn(async move {
                    // Windows need snapshots over time even when nobody is looking.
                    let mut every = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        every.tick().await;
                        if sampler.topologies.upgrade().is_none() {
                            return;
                        }
                        sampler.sample();
                    }
                });
                let gone = facade.clone();
                let app = router(facade);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        while gone.topologies.upgrade().is_some() {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    })
                    .await;
            });
        })?;
    Ok(addr)
}

fn router(facade: AppState) -> Router {
    Router::new()
        .route("/nimbus/v1/cluster", get(cluster))
        .route("/nimbus/v1/topologies", get(list))
        .route("/nimbus/v1/topologies/{name}/page", get(page))
        .route("/nimbus/v1/topologies/{name}/log-levels", get(log_levels))
        .route("/nimbus/v1/topologies/{name}/{action}", post(action))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint in local mode") })
        .with_state(facade)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ApiError { error: msg.into() })).into_response()
}

fn unknown(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no topology named or with id '{name}' in this local cluster"),
    )
}

impl Facade {
    fn with<T>(&self, f: impl FnOnce(&mut Topologies) -> T) -> Option<T> {
        let shared = self.topologies.upgrade()?;
        let mut map = shared.lock();
        Some(f(&mut map))
    }

    /// Feeds every executor's counters to its rolling windows.
    fn sample(&self) {
        let now = now_secs();
        let rows = self
            .with(|map| {
                map.iter()
                    .map(|(name, t)| (name.clone(), t.uptime_secs(), t.runtime.heartbeats()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut rolling = self.rolling.lock().unwrap_or_else(|p| p.into_inner());
        rolling.retain(|(name, _, _), _| rows.iter().any(|(n, _, _)| n == name));
        for (name, uptime, execs) in rows {
            for e in execs {
                rolling
                    .entry((name.clone(), e.component.clone(), e.first.0))
                    .or_default()
                    .record(now, HOST, uptime, &e.counters);
            }
        }
    }
}

async fn cluster(State(f): State<AppState>) -> Response {
    let Some(n) = f.with(|m| m.len()) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "local cluster shut down");
    };
    let used = if n > 0 { vec![0] } else { Vec::new() };
    Json(ClusterSummary {
        supervisors: vec![SupervisorSummary {
            info: SupervisorInfo {
                id: SUPERVISOR.to_owned(),
                hostname: HOST.to_owned(),
                ports: vec![0],
                start_time_secs: f.started,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                heartbeat_secs: now_secs(),
            },
            used_ports: used,
        }],
        nimbuses: vec![NimbusSummary {
            host: HOST.to_owned(),
            port: 0,
            start_time_secs: f.started,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }],
        topologies: n,
        leader: Some(format!("{HOST}:0")),
    })
    .into_response()
}

async fn list(State(f): State<AppState>) -> Response {
    match f.with(|m| {
        m.iter()
            .map(|(n, t)| t.summary(n, &t.runtime.heartbeats()))
            .collect::<Vec<_>>()
    }) {
        Some(rows) => Json(rows).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "local cluster shut down"),
    }
}

async fn log_levels(State(f): State<AppState>, Path(name): Path<String>) -> Response {
    match f.with(|m| find(m, &name).is_some()) {
        Some(true) => Json(LogLevels::default()).into_response(),
        _ => unknown(&name),
    }
}

/// The topology named `name`, or whose id is `name`.
fn find<'a>(
    m: &'a mut Topologies,
    name: &str,
) -> Option<(String, &'a mut crate::local::LocalTopology)> {
    let key = if m.contains_key(name) {
        name.to_owned()
    } else {
        m.iter()
            .find(|(_, t)| t.runtime.topology_id() == name)?
            .0
            .clone()
    };
    let t = m.get_mut(&key)?;
    Some((key, t))
}

async fn page(State(f): State<AppState>, Path(name): Path<String>) -> Response {
    f.sample();
    let now = now_secs();
    let built = f.with(|m| {
        let (key, t) = find(m, &name)?;
        let execs = t.runtime.heartbeats();
        let summary = t.summary(&key, &execs);
        let errors = t
            .runtime
            .errors()
            .into_iter()
            .map(|e| ErrorInfo {
                component: e.component.to_string(),
                task: e.task.0,
                host: HOST.to_owned(),
                port: 0,
                time_secs: e.time_secs,
                error: e.error,
            })
            .collect::<Vec<_>>();
        Some((
            key,
            summary,
            t.conf.clone(),
            t.spec.clone(),
            execs,
            errors,
            t.uptime_secs(),
        ))
    });
    let Some(Some((key, summary, conf, spec, execs, errors, uptime))) = built else {
        return unknown(&name);
    };
    let rolling = f.rolling.lock().unwrap_or_else(|p| p.into_inner());
    let executors = execs
        .into_iter()
        .map(|e| {
            let r = rolling.get(&(key.clone(), e.component.clone(), e.first.0));
            ExecutorPage {
                windows: Window::ALL
                    .iter()
                    .map(|&w| WindowCounters {
                        window: w,
                        counters: r.map(|r| r.window(now, w)).unwrap_or_default(),
                    })
                    .collect(),
                component: e.component,
                first: e.first.0,
                last: e.last.0,
                host: HOST.to_owned(),
                port: 0,
                supervisor_id: SUPERVISOR.to_owned(),
                uptime_secs: uptime,
                heartbeat_age_secs: Some(0),
                queue_depth: e.queue_depth,
                queue_capacity: e.queue_capacity,
                complete_latency_p50_ms: e.complete_latency_p50_ms,
                complete_latency_p99_ms: e.complete_latency_p99_ms,
                complete_latency_max_ms: e.complete_latency_max_ms,
                gauges: e.gauges,
            }
        })
        .collect::<Vec<_>>();
    let msg_timeout_secs = conf.message_timeout_secs().unwrap_or(30);
    Json(TopologyPage {
        workers: vec![WorkerSummary {
            supervisor_id: SUPERVISOR.to_owned(),
            host: HOST.to_owned(),
            port: 0,
            num_executors: executors.len() as u32,
            heartbeat_age_secs: Some(0),
            uptime_secs: uptime,
        }],
        summary,
        conf,
        spec,
        msg_timeout_secs,
        executors,
        errors,
        log_levels: LogLevels::default(),
        time_secs: now,
    })
    .into_response()
}

async fn action(
    State(f): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let done = f.with(|m| {
        let (key, t) = find(m, &name)?;
        match action.as_str() {
            "activate" => {
                t.runtime.activate();
                t.active = true;
                Some(Ok(()))
            }
            "deactivate" => {
                t.runtime.deactivate();
                t.active = false;
                Some(Ok(()))
            }
            "kill" => {
                if let Some(mut t) = m.remove(&key) {
                    // Off this thread: stopping executors may take a moment.
                    std::thread::spawn(move || t.runtime.shutdown(Duration::from_secs(10)));
                }
                Some(Ok(()))
            }
            "rebalance" => Some(Err(
                "local mode cannot rebalance: its one worker runs every executor",
            )),
            "log-levels" => Some(Err(
                "local mode cannot change log levels: set RUST_LOG instead",
            )),
            _ => Some(Err("unknown action")),
        }
    });
    match done {
        Some(Some(Ok(()))) => Json(serde_json::json!({})).into_response(),
        Some(Some(Err(why))) => error(StatusCode::BAD_REQUEST, why),
        _ => unknown(&name),
    }
}

impl crate::local::LocalTopology {
    fn uptime_secs(&self) -> u64 {
        now_secs().saturating_sub(self.launched)
    }

    fn summary(
        &self,
        name: &str,
        executors: &[squall_cluster::state::ExecutorHeartbeat],
    ) -> TopologySummary {
        let tasks: u32 = executors.iter().map(|e| e.last.0 - e.first.0 + 1).sum();
        TopologySummary {
            id: self.runtime.topology_id().to_owned(),
            name: name.to_owned(),
            status: if self.active {
                TopologyStatus::Active
            } else {
                TopologyStatus::Inactive
            },
            uptime_secs: self.uptime_secs(),
            num_tasks: tasks,
            num_workers: 1,
            num_executors: executors.len() as u32,
            owner: std::env::var("USER").unwrap_or_default(),
        }
    }
}
