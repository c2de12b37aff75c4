//! Nimbus's RPC API: HTTP/1.1 with JSON bodies on `nimbus.thrift.port` (Storm's key and
//! port, 6627; the protocol is HTTP instead of Thrift so any HTTP tool can talk to it).
//!
//! | method and path | body → answer |
//! |---|---|
//! | `PUT /nimbus/v1/binaries/<sha256>` | the topology binary (streamed) → `{}` |
//! | `GET /nimbus/v1/binaries/<sha256>` | → the binary |
//! | `HEAD /nimbus/v1/binaries/<sha256>` | → 200 when stored, 404 otherwise |
//! | `POST /nimbus/v1/topologies` | [`SubmitRequest`] → [`SubmitResponse`] |
//! | `GET /nimbus/v1/topologies` | → `[`[`TopologySummary`]`]` |
//! | `GET /nimbus/v1/topologies/<name>` | → [`TopologyInfo`] |
//! | `POST /nimbus/v1/topologies/<name>/kill` | [`KillRequest`] → `{}` |
//! | `POST /nimbus/v1/topologies/<name>/activate` / `deactivate` | → `{}` |
//! | `POST /nimbus/v1/topologies/<name>/rebalance` | [`RebalanceCommand`] → `{}` |
//! | `POST /nimbus/v1/heartbeats` | [`WorkerHeartbeat`] → [`HeartbeatResponse`] |
//! | `GET /nimbus/v1/cluster` | → [`ClusterSummary`] |
//! | `GET /nimbus/v1/topologies/<name>/page` | → [`TopologyPage`] (windowed stats, for the UI) |
//! | `POST /nimbus/v1/topologies/<name>/log-levels` | [`LogLevelRequest`] → [`LogLevels`] |
//! | `GET /nimbus/v1/topologies/<name>/log-levels` | → [`LogLevels`] |
//!
//! Errors answer 4xx/5xx with `{"error": "<what is wrong>"}`.
//!
//! **Several Nimbus daemons** (high availability): one leads, elected through ZooKeeper.
//! Any Nimbus answers reads (list, info, cluster, binary download); a standby answers
//! writes (and `HEAD` of a binary, which precedes an upload) with `503` and
//! `{"error": "this Nimbus (h:p) is not the leader; the leader is h2:p2", "leader": "h2:p2"}`
//! (`"leader": null` while no leader is known) and the leader in the `x-squall-leader`
//! header ([`LEADER_HEADER`]). [`NimbusClient`] follows such an answer
//! to the leader once, transparently; when there is no leader to follow it reports
//! [`RpcError::Unreachable`], so callers walking a seed list ([`nimbus_addresses`]) try
//! the next one.
//!
//! **The cluster secret**: when `squall.secret.file` is set, every request must carry
//! `Authorization: Bearer <secret>` ([`NimbusClient::with_secret`]); Nimbus answers `401`
//! otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use squall_api::{Config, TopologySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ClusterConfig;
use crate::state::{
    ErrorInfo, ExecutorHeartbeat, HeartbeatResponse, NimbusSummary, RebalanceRequest,
    SupervisorInfo, TopologyStatus, WorkerHeartbeat,
};

/// Path prefix of every RPC.
pub const PREFIX: &str = "/nimbus/v1";

/// A topology submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The name.
    pub name: String,
    /// The topology as data (validated again by Nimbus).
    pub spec: TopologySpec,
    /// The topology configuration.
    pub conf: Config,
    /// SHA-256 of the uploaded binary.
    pub binary_sha256: String,
    /// Arguments to give the binary when it runs as a worker.
    pub args: Vec<String>,
    /// Who submits.
    pub owner: String,
}

/// Answer to a submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The new topology's id.
    pub topology_id: String,
}

/// A row of `squall list` (Storm's columns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologySummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: TopologyStatus,
    /// Seconds since launch.
    pub uptime_secs: u64,
    /// Tasks (including ackers).
    pub num_tasks: u32,
    /// Workers assigned.
    pub num_workers: u32,
    /// Executors (including ackers).
    pub num_executors: u32,
    /// Owner.
    pub owner: String,
}

/// One worker of a topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Supervisor id.
    pub supervisor_id: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Executors it runs.
    pub num_executors: u32,
    /// Seconds since its last heartbeat reached Nimbus (`None`: never).
    pub heartbeat_age_secs: Option<u64>,
    /// Worker uptime at its last heartbeat.
    pub uptime_secs: u64,
}

/// One component, summed over its executors' last heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// Component id.
    pub id: String,
    /// `spout` or `bolt` (`__acker` is a bolt).
    pub kind: String,
    /// Executors.
    pub executors: u32,
    /// Tasks.
    pub tasks: u32,
    /// Emitted.
    pub emitted: u64,
    /// Transferred.
    pub transferred: u64,
    /// Acked.
    pub acked: u64,
    /// Failed.
    pub failed: u64,
    /// Executed.
    pub executed: u64,
    /// Mean execute latency, ms.
    pub execute_latency_ms: f64,
    /// Mean complete latency, ms.
    pub complete_latency_ms: f64,
}

/// `GET /topologies/<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologyInfo {
    /// The summary row.
    pub summary: TopologySummary,
    /// Per component.
    pub components: Vec<ComponentSummary>,
    /// Per worker.
    pub workers: Vec<WorkerSummary>,
    /// Raw executor heartbeats.
    pub executors: Vec<ExecutorHeartbeat>,
    /// Recent errors.
    pub errors: Vec<ErrorInfo>,
    /// Topology configuration.
    pub conf: Config,
}

/// Everything the UI shows of one topology (`GET /topologies/<name>/page`): answered
/// by the leader, which holds the rolling windows of every executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologyPage {
    /// The summary row.
    pub summary: TopologySummary,
    /// The topology configuration.
    pub conf: Config,
    /// The topology as data (components, streams, groupings) for the graph.
    pub spec: squall_api::TopologySpec,
    /// Seconds the topology's message timeout is (`topology.message.timeout.secs`).
    pub msg_timeout_secs: u64,
    /// Per worker.
    pub workers: Vec<WorkerSummary>,
    /// Per executor, with where it runs and its windows; ackers (`__acker`) included.
    pub executors: Vec<ExecutorPage>,
    /// The last errors, at most 10 per component, oldest first.
    pub errors: Vec<ErrorInfo>,
    /// Log levels in force (`squall set_log_level`).
    #[serde(default)]
    pub log_levels: LogLevels,
    /// Seconds since the epoch at which Nimbus answered.
    pub time_secs: u64,
}

/// One executor of a [`TopologyPage`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorPage {
    /// The component.
    pub component: String,
    /// First task.
    pub first: u32,
    /// Last task.
    pub last: u32,
    /// Host of its worker (from the assignment).
    pub host: String,
    /// Port of its worker.
    pub port: u16,
    /// The supervisor running it.
    pub supervisor_id: String,
    /// Its worker's uptime at the last heartbeat (0 before the first).
    pub uptime_secs: u64,
    /// Seconds since its last heartbeat reached Nimbus (`None`: none yet).
    pub heartbeat_age_secs: Option<u64>,
    /// Counts per window, in [`crate::metrics::Window::ALL`] order (`:all-time` last).
    pub windows: Vec<WindowCounters>,
    /// Receive-queue depth at the last heartbeat.
    pub queue_depth: u64,
    /// Receive-queue capacity (0: unbounded).
    pub queue_capacity: u64,
    /// Spouts: complete latency percentiles since the worker started, ms.
    pub complete_latency_p50_ms: f64,
    /// 99th percentile.
    pub complete_latency_p99_ms: f64,
    /// Maximum.
    pub complete_latency_max_ms: f64,
    /// Custom gauges of its last heartbeat ([`ExecutorHeartbeat::gauges`]): the latest
    /// value per name, summed over the executor's tasks; no windows.
    ///
    /// [`ExecutorHeartbeat::gauges`]: crate::state::ExecutorHeartbeat::gauges
    #[serde(default)]
    pub gauges: BTreeMap<String, i64>,
}

/// The counts of one window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounters {
    /// The window.
    pub window: crate::metrics::Window,
    /// Its counts.
    pub counters: crate::metrics::ExecutorCounters,
}

/// `POST /topologies/<name>/log-levels` (`squall set_log_level`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelRequest {
    /// Loggers to set: `tracing` target (`ROOT` for the default) to level and timeout.
    #[serde(default)]
    pub set: BTreeMap<String, LogLevelSetting>,
    /// Loggers to put back to the worker's defaults.
    #[serde(default)]
    pub reset: Vec<String>,
}

/// A level for one logger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelSetting {
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` or `OFF`.
    pub level: String,
    /// Seconds until the level reverts (`None`: until reset).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The log levels of a topology (kept in ZooKeeper under `/logconfigs/<topology-id>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevels {
    /// Logger to level and expiry.
    #[serde(default)]
    pub levels: BTreeMap<String, LogLevelEntry>,
}

/// A level in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelEntry {
    /// The level.
    pub level: String,
    /// Seconds since the epoch at which it reverts (`None`: never).
    #[serde(default)]
    pub expires_secs: Option<u64>,
}

/// `POST /topologies/<name>/kill`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KillRequest {
    /// Seconds to keep the spouts deactivated before the workers stop (default: the
    /// topology's message timeout).
    pub wait_secs: Option<u64>,
}

/// `POST /topologies/<name>/rebalance`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RebalanceCommand {
    /// Seconds to wait (spouts deactivated) before re-assigning (default: message timeout).
    pub wait_secs: Option<u64>,
    /// What to change.
    #[serde(flatten)]
    pub request: RebalanceRequest,
}

/// A supervisor as `GET /cluster` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SupervisorSummary {
    /// Registration.
    pub info: SupervisorInfo,
    /// Slots in use.
    pub used_ports: Vec<u16>,
}

/// `GET /cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// Live supervisors.
    pub supervisors: Vec<SupervisorSummary>,
    /// Live Nimbus daemons.
    pub nimbuses: Vec<NimbusSummary>,
    /// Number of topologies.
    pub topologies: usize,
    /// The leader's `host:port`, as the answering Nimbus knows it.
    #[serde(default)]
    pub leader: Option<String>,
}

/// The error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What is wrong.
    pub error: String,
}

/// The header of a standby's `503` naming the leader (empty while none is known); it
/// makes the redirect readable in answers without a body (`HEAD`).
pub const LEADER_HEADER: &str = "x-squall-leader";

/// A standby Nimbus's answer to a write: `503` with this body and [`LEADER_HEADER`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    /// What is wrong, naming this Nimbus and the leader.
    pub error: String,
    /// The leader's `host:port`, when one is known.
    pub leader: Option<String>,
}

/// The Nimbus RPC addresses (`host:port`) of `nimbus.seeds`, in order. A seed may be
/// `host` (the port is `nimbus.thrift.port`) or `host:port`, so several Nimbus daemons
/// can run on one machine.
pub fn nimbus_addresses(conf: &Config) -> Result<Vec<String>, squall_api::ConfigError> {
    let default_port = conf.nimbus_port()?;
    conf.nimbus_seeds()?
        .into_iter()
        .map(|seed| match split_port(&seed) {
            None if seed.contains(':') => Ok(format!("[{seed}]:{default_port}")),
            None => Ok(format!("{seed}:{default_port}")),
            Some((host, Some(port))) if !host.is_empty() && port > 0 => Ok(seed),
            Some(_) => Err(squall_api::ConfigError::Invalid {
                key: crate::config::keys::NIMBUS_SEEDS.to_owned(),
                expected: "host names or host:port entries with a port between 1 and 65535",
                found: format!("\"{seed}\""),
            }),
        })
        .collect()
}

/// Splits `host:port` (an IPv6 address only when bracketed): `None` when there is no
/// port, `Some((host, None))` when the port is not a number in range.
fn split_port(seed: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = seed.rsplit_once(':')?;
    if host.contains(':') && !host.ends_with(']') {
        return None; // a bare IPv6 address
    }
    let port = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten();
    Some((host, port))
}

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Nimbus could not be reached.
    #[error("Nimbus unreachable at {addr}: {reason}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Nimbus answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Nimbus's message.
        message: String,
    },
    /// Nimbus's answer was not understood.
    #[error("unexpected answer from Nimbus at {addr}: {reason}")]
    Protocol {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Ends the reason of an [`RpcError::Unreachable`] that a Nimbus gave because no leader
/// is elected yet.
const NO_LEADER: &str = "(no leader elected yet)";

/// The environment variable naming the cluster secret's file for a topology binary
/// started by `squall jar` (its submitter sends the secret to Nimbus).
pub const SECRET_FILE_ENV: &str = "SQUALL_SECRET_FILE";

impl RpcError {
    /// Whether the Nimbus answered but no leader is elected yet (worth retrying soon).
    pub fn is_no_leader(&self) -> bool {
        matches!(self, RpcError::Unreachable { reason, .. } if reason.ends_with(NO_LEADER))
    }

    /// The HTTP status for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            RpcError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A client of one Nimbus.
#[derive(Clone)]
pub struct NimbusClient {
    addr: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    timeout: Duration,
    secret: Option<crate::secret::Secret>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// SHA-256 of a file, hex.
pub async fn sha256_file(path: &Path) -> Result<String, RpcError> {
    let io = |source| RpcError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl NimbusClient {
    /// A client for Nimbus at `host:port`.
    pub fn new(addr: &str) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        NimbusClient {
            addr: addr.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(60),
            secret: None,
        }
    }

    /// Proves knowledge of the cluster secret on every request (`Authorization: Bearer`).
    pub fn with_secret(mut self, secret: Option<crate::secret::Secret>) -> Self {
        self.secret = secret;
        self
    }

    /// Gives up on a request after `timeout` (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A request body, made afresh for each attempt (a redirect sends it again).
    async fn body(&self, payload: &Payload<'_>) -> Result<Body, RpcError> {
        match payload {
            Payload::Bytes(b) => Ok(full(b.clone())),
            Payload::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| RpcError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                    .map(|chunk| chunk.map(Frame::data));
                Ok(StreamBody::new(stream).boxed_unsync())
            }
        }
    }

    /// One exchange with the Nimbus at `addr`: the response when it is a success, else
    /// the error it carries (`Err(Ok(leader))` for a standby's redirect).
    async fn exchange(
        &self,
        addr: &str,
        method: &Method,
        path: &str,
        body: Body,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Result<Option<String>, RpcError>> {
        let unreachable = |reason: String| RpcError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{PREFIX}{path}"))
            .header("content-type", "application/json");
        if let Some(s) = &self.secret {
            req = req.header(crate::secret::AUTHORIZATION, s.bearer());
        }
        let req = req.body(body).map_err(|e| {
            Err(RpcError::Protocol {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })
        })?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| Err(unreachable(format!("no answer within {:?}", self.timeout))))?
            .map_err(|e| Err(unreachable(error_chain(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let leader_header = resp
            .headers()
            .get(LEADER_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Err(unreachable(e.to_string())))?
            .to_bytes();
        if let (StatusCode::SERVICE_UNAVAILABLE, Some(leader)) = (status, leader_header) {
            return if !leader.is_empty() && leader != addr {
                Err(Ok(Some(leader)))
            } else {
                let why = serde_json::from_slice::<NotLeader>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| "this Nimbus is not the leader".to_owned());
                Err(Err(unreachable(format!("{why} {NO_LEADER}"))))
            };
        }
        let message = if method == Method::HEAD {
            format!("{status}")
        } else {
            serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
        };
        Err(Err(RpcError::Api {
            status: status.as_u16(),
            message,
        }))
    }

    /// Sends a request, following a standby's redirect to the leader once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RpcError> {
        let body = self.body(&payload).await?;
        let leader = match self.exchange(&self.addr, &method, path, body).await {
            Ok(resp) => return Ok(resp),
            Err(Err(e)) => return Err(e),
            Err(Ok(leader)) => leader.expect("a redirect names the leader"),
        };
        tracing::debug!(
            "Nimbus at {} is a standby; asking the leader at {leader}",
            self.addr
        );
        let body = self.body(&payload).await?;
        match self.exchange(&leader, &method, path, body).await {
            Ok(resp) => Ok(resp),
            Err(Err(e)) => Err(e),
            Err(Ok(_)) => Err(RpcError::Unreachable {
                addr: leader,
                reason: format!("it is not the leader either {NO_LEADER}"),
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<Bytes, RpcError> {
        let resp = self.request(method, path, payload).await?;
        let addr = self.addr.clone();
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| RpcError::Unreachable {
                addr,
                reason: e.to_string(),
            })?
            .to_bytes())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, RpcError> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("requests serialize")),
            None => Bytes::new(),
        };
        let bytes = self.send(method, path, Payload::Bytes(body)).await?;
        serde_json::from_slice(&bytes).map_err(|e| RpcError::Protocol {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })
    }

    /// Uploads a topology binary, streamed from disk, unless Nimbus already has it;
    /// returns its SHA-256.
    pub async fn upload_binary(&self, path: &Path) -> Result<String, RpcError> {
        let sha = sha256_file(path).await?;
        match self
            .send(
                Method::HEAD,
                &format!("/binaries/{sha}"),
                Payload::Bytes(Bytes::new()),
            )
            .await
        {
            Ok(_) => return Ok(sha),
            Err(RpcError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        self.send(
            Method::PUT,
            &format!("/binaries/{sha}"),
            Payload::File(path),
        )
        .await?;
        Ok(sha)
    }

    /// Downloads binary `sha` to `dest` (via a temporary file), checking its SHA-256.
    pub async fn download_binary(&self, sha: &str, dest: &Path) -> Result<(), RpcError> {
        let resp = match self
            .request(
                Method::GET,
                &format!("/binaries/{sha}"),
                Payload::Bytes(Bytes::new()),
            )
            .await
        {
            Ok(resp) => resp,
            Err(RpcError::Api { status, message }) => {
                return Err(RpcError::Api {
                    status,
                    message: format!("binary {sha} is not available from Nimbus: {message}"),
                })
            }
            Err(e) => return Err(e),
        };
        let tmp = dest.with_extension("part");
        let io = |source| RpcError::Io {
            path: tmp.display().to_string(),
            source,
        };
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut h = sha2::Sha256::new();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| RpcError::Unreachable {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                h.update(data);
                f.write_all(data).await.map_err(io)?;
            }
        }
        f.flush().await.map_err(io)?;
        drop(f);
        let got = hex(&h.finalize());
        if got != sha {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(RpcError::Protocol {
                addr: self.addr.clone(),
                reason: format!("downloaded binary has SHA-256 {got}, expected {sha}"),
            });
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|source| RpcError::Io {
                path: dest.display().to_string(),
                source,
            })
    }

    /// Submits a topology.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<SubmitResponse, RpcError> {
        self.json(Method::POST, "/topologies", Some(req)).await
    }

    /// Lists topologies.
    pub async fn list(&self) -> Result<Vec<TopologySummary>, RpcError> {
        self.json(Method::GET, "/topologies", None::<&()>).await
    }

    /// Details of one topology.
    pub async fn info(&self, name: &str) -> Result<TopologyInfo, RpcError> {
        self.json(
            Method::GET,
            &format!("/topologies/{}", encode(name)),
            None::<&()>,
        )
        .await
    }

    /// Kills a topology.
    pub async fn kill(&self, name: &str, wait_secs: Option<u64>) -> Result<(), RpcError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!("/topologies/{}/kill", encode(name)),
                Some(&KillRequest { wait_secs }),
            )
            .await?;
        Ok(())
    }

    /// Activates a topology.
    pub async fn activate(&self, name: &str) -> Result<(), RpcError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!("/topologies/{}/activate", encode(name)),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// Deactivates a topology.
    pub async fn deactivate(&self, name: &str) -> Result<(), RpcError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!("/topologies/{}/deactivate", encode(name)),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// Rebalances a topology.
    pub async fn rebalance(&self, name: &str, cmd: &RebalanceCommand) -> Result<(), RpcError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!("/topologies/{}/rebalance", encode(name)),
                Some(cmd),
            )
            .await?;
        Ok(())
    }

    /// Sends a worker heartbeat.
    pub async fn heartbeat(&self, hb: &WorkerHeartbeat) -> Result<HeartbeatResponse, RpcError> {
        self.json(Method::POST, "/heartbeats", Some(hb)).await
    }

    /// The cluster summary.
    pub async fn cluster(&self) -> Result<ClusterSummary, RpcError> {
        self.json(Method::GET, "/cluster", None::<&()>).await
    }

    /// Everything the UI shows of a topology (by name or id), with windowed stats.
    pub async fn page(&self, name: &str) -> Result<TopologyPage, RpcError> {
        self.json(
            Method::GET,
            &format!("/topologies/{}/page", encode(name)),
            None::<&()>,
        )
        .await
    }

    /// Sets or resets log levels of a running topology; answers the levels now in force.
    pub async fn set_log_levels(
        &self,
        name: &str,
        req: &LogLevelRequest,
    ) -> Result<LogLevels, RpcError> {
        self.json(
            Method::POST,
            &format!("/topologies/{}/log-levels", encode(name)),
            Some(req),
        )
        .await
    }

    /// The log levels in force for a topology.
    pub async fn log_levels(&self, name: &str) -> Result<LogLevels, RpcError> {
        self.json(
            Method::GET,
            &format!("/topologies/{}/log-levels", encode(name)),
            None::<&()>,
        )
        .await
    }
}

/// What a request carries.
enum Payload<'a> {
    /// Bytes in memory (JSON).
    Bytes(Bytes),
    /// A file, streamed.
    File(&'a Path),
}

/// An error with its causes, innermost last: `tcp connect error: Connection refused`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Percent-encodes a topology name for a path segment.
pub fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment.
pub fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(seeds: &[&str], port: u16) -> Config {
        let mut c = Config::new();
        c.set(
            crate::config::keys::NIMBUS_SEEDS,
            squall_api::Value::List(seeds.iter().map(|s| (*s).into()).collect()),
        );
        c.set(crate::config::keys::NIMBUS_THRIFT_PORT, port as i64);
        c
    }

    #[test]
    fn seeds_take_the_default_port_unless_they_name_one() {
        assert_eq!(
            nimbus_addresses(&conf(&["n1", "127.0.0.1:7001", "[::1]:7002", "::1"], 6627)).unwrap(),
            vec!["n1:6627", "127.0.0.1:7001", "[::1]:7002", "[::1]:6627"]
        );
        for bad in ["n1:0", "n1:70000", "n1:x", ":7000"] {
            let e = nimbus_addresses(&conf(&[bad], 6627))
                .unwrap_err()
                .to_string();
            assert!(e.contains("nimbus.seeds") && e.contains(bad), "{e}");
        }
    }
}
