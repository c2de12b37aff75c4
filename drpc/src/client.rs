//! Clients of a `squall drpc` server.
//!
//! Both clients block the calling thread (they are called from executor threads and
//! command-line code). Their HTTP runs on one small runtime per process (one thread,
//! started on first use), so they work from any thread, inside an async runtime too
//! (where they block that runtime's thread: call them from `spawn_blocking` there).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use squall_api::Config;
use squall_cluster::config::ClusterConfig;

use crate::api::{
    ErrorBody, ExecuteRequest, ExecuteResponse, FailRequest, FetchRequest, FetchResponse,
    ResultRequest, PREFIX,
};
use crate::core::FETCH_WAIT;
use crate::{DrpcError, DrpcInvocations, DrpcRequest};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer than the server's request timeout a client waits for an execute
/// (the server answers a timeout itself when its own runs out).
const EXECUTE_MARGIN: Duration = Duration::from_secs(30);

/// How long a fetch, result or fail may take beyond any wait it asked for.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server that could not be reached is left out of fetches at first; the
/// time doubles with every failure in a row, up to [`MAX_DOWN_FOR`].
const DOWN_FOR: Duration = Duration::from_secs(1);

/// The longest a server is left out of fetches before it is tried again.
const MAX_DOWN_FOR: Duration = Duration::from_secs(30);

/// Storm's default `drpc.request.timeout.secs`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The process's DRPC client runtime: one thread doing the HTTP of every client.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("squall-drpc-client")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the DRPC client's runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs `call` on the client runtime and waits for it on this thread.
fn block<T: Send + 'static>(
    server: &str,
    call: impl Future<Output = Result<T, Failure>> + Send + 'static,
) -> Result<T, Failure> {
    let rt = runtime().map_err(|message| Failure::other(server, message))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(call.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(Failure::other(
            server,
            "the DRPC client's call ended without an answer".to_owned(),
        ))
    })
}

/// A failed call: the error, and whether the connection could not even be opened (the
/// request never reached the server, so another server may be tried).
struct Failure {
    error: DrpcError,
    not_connected: bool,
}

impl Failure {
    fn other(server: &str, message: String) -> Failure {
        Failure {
            error: DrpcError::Unreachable {
                server: server.to_owned(),
                message,
            },
            not_connected: false,
        }
    }
}

/// An error with its causes: `client error (Connect): tcp connect error: Connection refused`.
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

/// The HTTP side of both clients (cheap to clone: a shared connection pool).
#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `POST http://server/drpc/v1/<what>` with `body`; the decoded answer, or the
    /// error it carries (for a call of `function`).
    fn call<Req: Serialize, Resp: DeserializeOwned + Send + 'static>(
        &self,
        server: &str,
        what: &str,
        body: &Req,
        function: &str,
        timeout: Duration,
    ) -> Result<Resp, Failure> {
        let body = Bytes::from(serde_json::to_vec(body).expect("requests serialize"));
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{server}{PREFIX}/{what}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| Failure {
                error: DrpcError::Unreachable {
                    server: server.to_owned(),
                    message: format!("not a usable server address: {e}"),
                },
                not_connected: true,
            })?;
        let client = self.client.clone();
        let (server_owned, function) = (server.to_owned(), function.to_owned());
        block(server, async move {
            let server = server_owned;
            let unreachable = |message: String, not_connected: bool| Failure {
                error: DrpcError::Unreachable {
                    server: server.clone(),
                    message,
                },
                not_connected,
            };
            let resp = match tokio::time::timeout(timeout, client.request(request)).await {
                Err(_) => {
                    return Err(unreachable(
                        format!("no answer within {} s", timeout.as_secs_f64().ceil()),
                        false,
                    ))
                }
                Ok(Err(e)) => return Err(unreachable(error_chain(&e), e.is_connect())),
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            let bytes = match tokio::time::timeout(timeout, resp.into_body().collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return Err(unreachable(error_chain(&e), false)),
                Err(_) => return Err(unreachable("the answer stalled".to_owned(), false)),
            };
            let not_drpc = |why: String| {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                unreachable(
                    format!("answered HTTP {status} that is not DRPC ({why}): {text}"),
                    false,
                )
            };
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| not_drpc(e.to_string()));
            }
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(Failure {
                    error: body.into_error(&function, &server),
                    not_connected: false,
                }),
                Err(e) => Err(not_drpc(e.to_string())),
            }
        })
    }
}

/// The DRPC server addresses (`host:port`) of `drpc.servers`: an entry may name its own
/// port, else it gets `drpc.port`.
fn server_addresses(conf: &Config) -> Result<Vec<String>, DrpcError> {
    let bad = |e: squall_api::ConfigError| DrpcError::Refused(e.to_string());
    let port = conf.drpc_port().map_err(bad)?;
    let servers = conf.drpc_servers().map_err(bad)?;
    servers
        .into_iter()
        .map(|s| {
            let named_port = s.rsplit_once(':').and_then(|(host, p)| {
                let plain = !host.contains(':') || host.ends_with(']');
                (plain && !host.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then_some(p)
            });
            match named_port {
                Some(p) if p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(s),
                Some(_) => Err(DrpcError::Refused(format!(
                    "config key 'drpc.servers': \"{s}\" names a port outside 1-65535"
                ))),
                None if port == 0 => Err(DrpcError::Refused(format!(
                    "config key 'drpc.servers': \"{s}\" has no port and drpc.port is 0; \
                     name the port (host:port) or set drpc.port"
                ))),
                None if s.contains(':') => Ok(format!("[{s}]:{port}")),
                None => Ok(format!("{s}:{port}")),
            }
        })
        .collect()
}

/// Calls DRPC functions on a `squall drpc` server (Storm's `DRPCClient`).
///
/// ```no_run
/// use squall_drpc::DrpcClient;
///
/// let client = DrpcClient::new("drpc-host:3772");
/// match client.execute("words", "cat dog the man") {
///     Ok(count) => println!("{count}"),
///     Err(e) => eprintln!("{e}"), // Timeout, Failed (by the topology), Unreachable, Refused
/// }
/// ```
///
/// With a `storm.yaml`-style configuration, [`from_conf`](Self::from_conf) takes the
/// servers from `drpc.servers` and `drpc.port`.
#[derive(Clone)]
pub struct DrpcClient {
    servers: Vec<String>,
    http: Http,
    timeout: Duration,
}

impl std::fmt::Debug for DrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrpcClient")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DrpcClient {
    /// A client of the server at `host:port` (its `drpc.port`). It waits for an answer
    /// as long as a server with Storm's default request timeout (600 s) holds a request,
    /// plus a margin; see [`with_timeout`](Self::with_timeout).
    pub fn new(server: &str) -> Self {
        DrpcClient {
            servers: vec![server.to_owned()],
            http: Http::new(),
            timeout: DEFAULT_REQUEST_TIMEOUT + EXECUTE_MARGIN,
        }
    }

    /// A client of the servers of `drpc.servers` (an entry is `host`, reached on
    /// `drpc.port`, or `host:port`), waiting as long as `drpc.request.timeout.secs` plus
    /// a margin. Calls go to the first server that accepts a connection.
    pub fn from_conf(conf: &Config) -> Result<Self, DrpcError> {
        let timeout = conf
            .drpc_request_timeout()
            .map_err(|e| DrpcError::Refused(e.to_string()))?;
        Ok(DrpcClient {
            servers: server_addresses(conf)?,
            http: Http::new(),
            timeout: timeout + EXECUTE_MARGIN,
        })
    }

    /// Waits for an answer as long as a server whose request timeout is
    /// `request_timeout` holds a request, plus a margin of 30 s.
    pub fn with_timeout(mut self, request_timeout: Duration) -> Self {
        self.timeout = request_timeout + EXECUTE_MARGIN;
        self
    }

    /// The servers this client calls, in order.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Calls `function` with `args` and waits for the answer.
    ///
    /// Errors: [`DrpcError::Timeout`] (no answer within the server's request timeout),
    /// [`DrpcError::Failed`] (the topology failed the request, or stopped serving the
    /// function), [`DrpcError::Unreachable`] (no server could be reached, or the server
    /// stopped; names the server), [`DrpcError::Refused`] (an invalid function name, a
    /// server too busy).
    pub fn execute(&self, function: &str, args: &str) -> Result<String, DrpcError> {
        let body = ExecuteRequest {
            function: function.to_owned(),
            args: args.to_owned(),
        };
        let mut last = None;
        for server in &self.servers {
            match self.http.call::<_, ExecuteResponse>(
                server,
                "execute",
                &body,
                function,
                self.timeout,
            ) {
                Ok(r) => return Ok(r.result),
                // Never reached this server: the next one may take it.
                Err(f) if f.not_connected => last = Some(f.error),
                Err(f) => return Err(f.error),
            }
        }
        Err(last.unwrap_or_else(|| DrpcError::Refused("no DRPC server configured".to_owned())))
    }
}

/// One server of a [`RemoteInvocations`].
struct Server {
    addr: String,
    health: Mutex<Health>,
}

/// Whether a server answered its last fetch.
#[derive(Default)]
struct Health {
    /// Failures in a row.
    failures: u32,
    /// Left out of fetches until then.
    down_until: Option<Instant>,
}

impl Server {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_down(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|t| now < t)
    }

    /// Records the outcome of a fetch: `Some(error)` when the server could not answer.
    fn mark(&self, error: Option<&DrpcError>) {
        let mut h = self.health();
        match error {
            Some(e) => {
                let wait = DOWN_FOR
                    .saturating_mul(1 << h.failures.min(5))
                    .min(MAX_DOWN_FOR);
                if h.failures == 0 {
                    tracing::warn!(
                        "DRPC server {} left out of fetches for now (tried again after {} s, \
                         then less often): {e}",
                        self.addr,
                        wait.as_secs()
                    );
                }
                h.failures = h.failures.saturating_add(1);
                h.down_until = Some(Instant::now() + wait);
            }
            None if h.failures > 0 => {
                tracing::info!("DRPC server {} answers fetches again", self.addr);
                *h = Health::default();
            }
            None => {}
        }
    }
}

/// [`DrpcInvocations`] over the network, to every server in `drpc.servers` (port
/// `drpc.port`), as a topology's DRPC spout uses them in cluster mode.
///
/// A fetch asks the servers in turn, starting with a different one each call: every
/// server but the last is asked without waiting, the last with a short long poll
/// (200 ms), and the first requests found are returned. A server that cannot be reached
/// is logged and left out for a second; the fetch fails only when no server answers
/// (after a short pause, so a caller retrying at once does not spin). Results and
/// fails go to the server named in the request.
pub struct RemoteInvocations {
    servers: Vec<Server>,
    next: AtomicUsize,
    http: Http,
}

impl std::fmt::Debug for RemoteInvocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.servers.iter().map(|s| s.addr.as_str()).collect();
        f.debug_struct("RemoteInvocations")
            .field("servers", &addrs)
            .finish_non_exhaustive()
    }
}

impl RemoteInvocations {
    /// Reads `drpc.servers` and `drpc.port` from `conf` (missing keys take Squall's
    /// defaults: `localhost`, 3772).
    pub fn from_conf(conf: &Config) -> Result<Self, DrpcError> {
        Ok(RemoteInvocations {
            servers: server_addresses(conf)?
                .into_iter()
                .map(|addr| Server {
                    addr,
                    health: Mutex::default(),
                })
                .collect(),
            next: AtomicUsize::new(0),
            http: Http::new(),
        })
    }

    /// The servers fetched from (`host:port`).
    pub fn servers(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.addr.as_str()).collect()
    }

    fn answer<Req: Serialize>(
        &self,
        server: &str,
        what: &str,
        body: &Req,
    ) -> Result<(), DrpcError> {
        if server.is_empty() {
            return Err(DrpcError::Refused(
                "the request names no DRPC server (it came from a LocalDrpc, not a `squall \
                 drpc` server)"
                    .to_owned(),
            ));
        }
        self.http
            .call::<_, serde_json::Value>(server, what, body, "", CALL_TIMEOUT)
            .map(drop)
            .map_err(|f| f.error)
    }
}

impl DrpcInvocations for RemoteInvocations {
    fn fetch(&self, function: &str, max: usize) -> Result<Vec<DrpcRequest>, DrpcError> {
        let now = Instant::now();
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<&Server> = (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .filter(|s| !s.is_down(now))
            .collect();
        if order.is_empty() {
            // All down: ask them all anyway, they may be back.
            order = (0..n).map(|i| &self.servers[(start + i) % n]).collect();
        }
        let mut first_error = None;
        let mut answered = false;
        for (k, server) in order.iter().enumerate() {
            let wait = if k + 1 == order.len() && max > 0 {
                FETCH_WAIT
            } else {
                Duration::ZERO
            };
            let body = FetchRequest {
                function: function.to_owned(),
                max,
                wait_ms: Some(wait.as_millis() as u64),
            };
            match self.http.call::<_, FetchResponse>(
                &server.addr,
                "fetch",
                &body,
                function,
                wait + CALL_TIMEOUT,
            ) {
                Ok(r) => {
                    server.mark(None);
                    answered = true;
                    if !r.requests.is_empty() {
                        return Ok(r.requests);
                    }
                }
                Err(f) => {
                    if matches!(f.error, DrpcError::Refused(_)) {
                        // A bad request, not a bad server (after a pause: no spinning).
                        std::thread::sleep(FETCH_WAIT);
                        return Err(f.error);
                    }
                    server.mark(Some(&f.error));
                    first_error.get_or_insert(f.error);
                }
            }
        }
        match first_error {
            // No server answered: an error, after a pause so a caller retrying at once
            // does not spin.
            Some(e) if !answered => {
                std::thread::sleep(FETCH_WAIT);
                Err(e)
            }
            // Some answered (with nothing); the others are logged and left out a while.
            _ => Ok(Vec::new()),
        }
    }

    fn result(&self, server: &str, id: &str, result: &str) -> Result<(), DrpcError> {
        self.answer(
            server,
            "result",
            &ResultRequest {
                id: id.to_owned(),
                result: result.to_owned(),
            },
        )
    }

    fn fail(&self, server: &str, id: &str, message: &str) -> Result<(), DrpcError> {
        self.answer(
            server,
            "fail",
            &FailRequest {
                id: id.to_owned(),
                message: Some(message.to_owned()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(yaml: &str) -> Config {
        squall_cluster::config::load_str(yaml).unwrap()
    }

    #[test]
    fn servers_take_drpc_port_unless_they_name_one() {
        assert_eq!(
            server_addresses(&conf(
                "drpc.servers: [d1, \"127.0.0.1:4000\", \"[::1]:4001\", \"::1\"]\ndrpc.port: 3999"
            ))
            .unwrap(),
            vec!["d1:3999", "127.0.0.1:4000", "[::1]:4001", "[::1]:3999"]
        );
        assert_eq!(
            server_addresses(&Config::new()).unwrap(),
            vec!["localhost:3772"]
        );
        for bad in ["d1:0", "d1:70000"] {
            let e = server_addresses(&conf(&format!("drpc.servers: [\"{bad}\"]"))).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = server_addresses(&conf("drpc.servers: []")).unwrap_err();
        assert!(e.to_string().contains("drpc.servers"), "{e}");
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let e = DrpcClient::new(&addr).execute("f", "x").unwrap_err();
        match &e {
            DrpcError::Unreachable { server, message } => {
                assert_eq!(server, &addr);
                assert!(message.contains("onnection refused"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let inv =
            RemoteInvocations::from_conf(&conf(&format!("drpc.servers: [\"{addr}\"]"))).unwrap();
        let start = Instant::now();
        let e = inv.fetch("f", 1).unwrap_err();
        assert!(e.to_string().contains(&addr), "{e}");
        assert!(
            start.elapsed() >= FETCH_WAIT,
            "a failing fetch does not spin"
        );
        let e = inv.result("", "id", "r").unwrap_err();
        assert!(e.to_string().contains("LocalDrpc"), "{e}");
    }

    #[test]
    fn the_blocking_clients_work_inside_an_async_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(async { DrpcClient::new("127.0.0.1:1").execute("f", "x") });
        assert!(matches!(e, Err(DrpcError::Unreachable { .. })), "{e:?}");
    }
}
