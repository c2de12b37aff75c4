//! The DRPC daemon in-process on free ports, with real clients: `DrpcClient` for callers,
//! `RemoteInvocations` in a thread standing in for a topology (fetch, result, fail),
//! and raw HTTP for Storm's DRPC HTTP and for bad input.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use squall_api::Config;
use squall_drpc::server::{DrpcAddrs, DrpcServer};
use squall_drpc::{DrpcClient, DrpcError, DrpcInvocations, DrpcRequest, RemoteInvocations};
use tokio_util::sync::CancellationToken;

/// A `squall drpc` server on free ports of this process.
struct Daemon {
    addrs: DrpcAddrs,
    shutdown: CancellationToken,
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// Starts a server with `extra` YAML over free ports and loopback as its host.
    /// Requests time out after 30 s unless `extra` says otherwise, so a broken answer
    /// path fails a test instead of hanging it for Storm's 10 minutes.
    fn start(extra: &str) -> Daemon {
        let timeout = if extra.contains("drpc.request.timeout.secs") {
            ""
        } else {
            "drpc.request.timeout.secs: 30\n"
        };
        let conf = squall_cluster::config::load_str(&format!(
            "drpc.port: 0\ndrpc.invocations.port: 0\ndrpc.http.port: 0\n\
             storm.local.hostname: 127.0.0.1\n{timeout}{extra}"
        ))
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(DrpcServer::bind(&conf)).unwrap();
        let addrs = server.addrs().clone();
        let shutdown = CancellationToken::new();
        let task = rt.spawn(server.run(shutdown.clone()));
        Daemon {
            addrs,
            shutdown,
            rt,
            task: Some(task),
        }
    }

    /// `127.0.0.1:<drpc.port>`.
    fn api(&self) -> String {
        format!("127.0.0.1:{}", self.addrs.api.port())
    }

    /// `127.0.0.1:<drpc.http.port>`.
    fn http(&self) -> String {
        format!("127.0.0.1:{}", self.addrs.http.unwrap().port())
    }

    /// `127.0.0.1:<drpc.invocations.port>`.
    fn invocations(&self) -> String {
        format!("127.0.0.1:{}", self.addrs.invocations.unwrap().port())
    }

    fn client(&self) -> DrpcClient {
        DrpcClient::new(&self.api())
    }

    /// Stops the server; returns how long it took.
    fn stop(&mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await })
                .expect("the DRPC server stops")
                .unwrap();
        }
        start.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A topology's config naming the servers at `addrs`.
fn conf(addrs: &[String]) -> Config {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    squall_cluster::config::load_str(&format!("drpc.servers: [{}]", list.join(", "))).unwrap()
}

type Answer = fn(&str) -> Result<String, String>;

/// A thread standing in for a topology serving `function` through `RemoteInvocations`.
struct Topology {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The `server` of every request fetched.
    servers: Arc<Mutex<HashSet<String>>>,
    answered: Arc<AtomicUsize>,
}

impl Topology {
    fn serve(inv: RemoteInvocations, function: &'static str, answer: Answer) -> Topology {
        let stop = Arc::new(AtomicBool::new(false));
        let servers = Arc::new(Mutex::new(HashSet::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let (s, seen, n) = (stop.clone(), servers.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(requests) = inv.fetch(function, 16) else {
                    continue;
                };
                for r in requests {
                    seen.lock().unwrap().insert(r.server.clone());
                    // Counted before the answer, which may wake the last client at once.
                    n.fetch_add(1, Ordering::Relaxed);
                    match answer(&r.args) {
                        Ok(v) => inv.result(&r.server, &r.id, &v).unwrap(),
                        Err(m) => inv.fail(&r.server, &r.id, &m).unwrap(),
                    }
                }
            }
        });
        Topology {
            stop,
            thread: Some(thread),
            servers,
            answered,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}

fn upper(a: &str) -> Result<String, String> {
    if a == "fail me" {
        Err(format!("cannot upper-case '{a}'"))
    } else {
        Ok(a.to_uppercase())
    }
}

/// An HTTP/1.0 exchange: status and body.
fn http(addr: &str, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may refuse before reading a large body; a write error is fine then.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP answer: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        String::from_utf8(raw[split + 4..].to_vec()).unwrap(),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn execute_reaches_the_topology_and_its_answer_comes_back() {
    let d = Daemon::start("");
    assert_eq!(d.addrs.server, d.api(), "requests name the API port");
    let topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap(),
        "upper",
        upper,
    );
    let c = d.client();
    assert_eq!(c.execute("upper", "hello").unwrap(), "HELLO");
    assert_eq!(c.execute("upper", "").unwrap(), "");
    assert_eq!(c.execute("upper", "grüße, 世界").unwrap(), "GRÜSSE, 世界");
    let big = "x".repeat(200_000);
    assert_eq!(c.execute("upper", &big).unwrap(), big.to_uppercase());
    assert_eq!(
        *topo.servers.lock().unwrap(),
        HashSet::from([d.api()]),
        "fetched requests name the server that holds the client"
    );
}

#[test]
fn a_failed_request_reaches_the_client_as_failed_with_the_message() {
    let d = Daemon::start("");
    let _topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap(),
        "upper",
        upper,
    );
    let e = d.client().execute("upper", "fail me").unwrap_err();
    assert_eq!(
        e,
        DrpcError::Failed {
            function: "upper".into(),
            message: "cannot upper-case 'fail me'".into()
        }
    );
    // The server keeps serving.
    assert_eq!(d.client().execute("upper", "ok").unwrap(), "OK");
}

#[test]
fn unanswered_requests_time_out_and_late_answers_are_refused() {
    let d = Daemon::start("drpc.request.timeout.secs: 1");
    // Nobody serves the function: a timeout, not a hang.
    let start = Instant::now();
    let e = d.client().execute("nobody", "x").unwrap_err();
    assert_eq!(
        e,
        DrpcError::Timeout {
            function: "nobody".into(),
            secs: 1
        }
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(e.to_string().contains("timed out after 1 s"), "{e}");

    // A live topology fetches but never answers: a timeout too, and its late answer is
    // refused.
    let inv = Arc::new(RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap());
    let fetched: Arc<Mutex<Vec<DrpcRequest>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let (inv, fetched, stop) = (inv.clone(), fetched.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fetched
                    .lock()
                    .unwrap()
                    .extend(inv.fetch("slow", 4).unwrap());
            }
        })
    };
    let e = d.client().execute("slow", "x").unwrap_err();
    assert!(matches!(e, DrpcError::Timeout { .. }), "{e:?}");
    stop.store(true, Ordering::Relaxed);
    fetcher.join().unwrap();
    let r = fetched
        .lock()
        .unwrap()
        .pop()
        .expect("the request was fetched");
    let late = inv.result(&r.server, &r.id, "too late").unwrap_err();
    match &late {
        DrpcError::Refused(m) => {
            assert!(
                m.contains("unknown DRPC request id") && m.contains(&d.api()),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_topology_that_stops_fetching_fails_its_fetched_and_pending_requests() {
    let d = Daemon::start("squall.drpc.fetcher.timeout.secs: 1");
    let inv = RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap();
    let call = |args: &'static str| {
        let c = d.client();
        std::thread::spawn(move || (c.execute("words", args), Instant::now()))
    };
    // The topology takes the first request, then is "killed" (fetches no more).
    let first = call("cat dog");
    let got = loop {
        let got = inv.fetch("words", 10).unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    assert_eq!(got.len(), 1);
    let killed = Instant::now();
    // A second request arrives while nobody fetches: it stays pending.
    let second = call("the man");
    for (outcome, at) in [first.join().unwrap(), second.join().unwrap()] {
        match outcome {
            Err(DrpcError::Failed { function, message }) => {
                assert_eq!(function, "words");
                assert!(
                    message.starts_with("no topology is serving DRPC function 'words' any more")
                        && message.contains("was it killed?"),
                    "{message}"
                );
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let after = at.duration_since(killed);
        assert!(
            after >= Duration::from_millis(500) && after < Duration::from_secs(5),
            "failed {after:?} after the last fetch"
        );
    }
    // Its answer, had it come, is refused now.
    let late = inv.result(&got[0].server, &got[0].id, "1").unwrap_err();
    assert!(matches!(late, DrpcError::Refused(_)), "{late:?}");
}

#[test]
fn a_busy_topology_keeps_its_requests_alive_with_heartbeats() {
    let d = Daemon::start("squall.drpc.fetcher.timeout.secs: 1");
    let inv = RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap();
    let c = d.client();
    let call = std::thread::spawn(move || c.execute("slow", "x"));
    let r = loop {
        if let Some(r) = inv.fetch("slow", 1).unwrap().pop() {
            break r;
        }
    };
    // A slow batch: for 2.5 s (over twice the fetcher timeout) the topology takes no
    // requests, but says it is alive with fetches of max 0, which never wait.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let beat = Instant::now();
        assert!(inv.fetch("slow", 0).unwrap().is_empty());
        assert!(
            beat.elapsed() < Duration::from_millis(150),
            "a heartbeat does not wait"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    inv.result(&r.server, &r.id, "slow but alive").unwrap();
    assert_eq!(call.join().unwrap().unwrap(), "slow but alive");
}

#[test]
fn concurrent_clients_each_get_their_own_answer() {
    let d = Daemon::start("");
    let topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap(),
        "upper",
        upper,
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let c = d.client();
            std::thread::spawn(move || {
                for j in 0..25 {
                    let arg = format!("client {i} call {j} ü");
                    assert_eq!(c.execute("upper", &arg).unwrap(), arg.to_uppercase());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(topo.answered.load(Ordering::Relaxed), 200);
}

#[test]
fn one_topology_serves_two_servers_and_answers_each() {
    let a = Daemon::start("");
    let b = Daemon::start("");
    let topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[a.api(), b.api()])).unwrap(),
        "upper",
        upper,
    );
    let calls: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|d| {
            (0..10).map(|i| {
                let c = d.client();
                std::thread::spawn(move || {
                    let arg = format!("via {i}");
                    let start = Instant::now();
                    assert_eq!(c.execute("upper", &arg).unwrap(), arg.to_uppercase());
                    start.elapsed()
                })
            })
        })
        .collect();
    for c in calls {
        let took = c.join().unwrap();
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    assert_eq!(
        *topo.servers.lock().unwrap(),
        HashSet::from([a.api(), b.api()])
    );
}

#[test]
fn fetches_keep_going_when_one_of_two_servers_is_down() {
    let a = Daemon::start("");
    let mut b = Daemon::start("");
    let b_addr = b.api();
    b.stop();
    let _topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[b_addr, a.api()])).unwrap(),
        "upper",
        upper,
    );
    for i in 0..5 {
        let start = Instant::now();
        assert_eq!(
            a.client().execute("upper", &format!("{i}x")).unwrap(),
            format!("{i}X")
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn the_invocations_port_serves_the_same_api() {
    let d = Daemon::start("");
    let inv = RemoteInvocations::from_conf(&conf(&[d.invocations()])).unwrap();
    let _topo = Topology::serve(inv, "upper", upper);
    assert_eq!(d.client().execute("upper", "abc").unwrap(), "ABC");
    assert_eq!(
        DrpcClient::new(&d.invocations())
            .execute("upper", "def")
            .unwrap(),
        "DEF"
    );
}

#[test]
fn storms_drpc_http_answers_get_and_post() {
    let d = Daemon::start("drpc.request.timeout.secs: 1");
    let _topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap(),
        "upper",
        upper,
    );
    let h = d.http();
    assert_eq!(
        http(&h, "GET", "/drpc/upper/hello", b""),
        (200, "HELLO".into())
    );
    assert_eq!(
        http(&h, "GET", "/drpc/upper/hello%20w%C3%B6rld%2Fx%3F", b""),
        (200, "HELLO WÖRLD/X?".into()),
        "percent-decoded, UTF-8"
    );
    assert_eq!(http(&h, "GET", "/drpc/upper/a/b", b""), (200, "A/B".into()));
    assert_eq!(http(&h, "GET", "/drpc/upper", b""), (200, "".into()));
    assert_eq!(http(&h, "GET", "/drpc/upper/", b""), (200, "".into()));
    assert_eq!(
        http(&h, "POST", "/drpc/upper", "grüße über alles".as_bytes()),
        (200, "GRÜSSE ÜBER ALLES".into())
    );
    // Errors are Storm's: a failed request 400, a timeout 504, JSON with error and
    // errorMessage.
    let (status, body) = http(&h, "GET", "/drpc/upper/fail%20me", b"");
    assert_eq!(status, 400);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "FAILED_REQUEST", "errorMessage": "cannot upper-case 'fail me'"})
    );
    let (status, body) = http(&h, "GET", "/drpc/nobody/x", b"");
    assert_eq!(status, 504, "{body}");
    assert_eq!(json(&body)["error"], "SERVER_TIMEOUT");
    // Not UTF-8 once decoded: a clear 400.
    let (status, body) = http(&h, "GET", "/drpc/upper/%FF%FE", b"");
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"], "BAD_REQUEST");
    let (status, body) = http(&h, "POST", "/drpc/upper", &[0xff, 0xfe]);
    assert_eq!(status, 400, "{body}");
    assert!(json(&body)["errorMessage"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));
    let (status, body) = http(&h, "GET", "/nothing/here", b"");
    assert_eq!((status, &json(&body)["error"]), (404, &"NOT_FOUND".into()));
}

#[test]
fn bad_requests_get_clear_json_errors_and_the_server_keeps_serving() {
    let d = Daemon::start("drpc.max_buffer_size: 10000");
    let _topo = Topology::serve(
        RemoteInvocations::from_conf(&conf(&[d.api()])).unwrap(),
        "upper",
        upper,
    );
    let a = d.api();
    let check = |method: &str, path: &str, body: &[u8], status: u16, kind: &str, says: &str| {
        let (got, text) = http(&a, method, path, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        let v = json(&text);
        assert_eq!(v["error"], kind, "{text}");
        let message = v["errorMessage"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    };
    check(
        "POST",
        "/drpc/v1/execute",
        b"{not json",
        400,
        "BAD_REQUEST",
        "not the JSON",
    );
    check(
        "POST",
        "/drpc/v1/execute",
        br#"{"args": "x"}"#,
        400,
        "BAD_REQUEST",
        "function",
    );
    check(
        "POST",
        "/drpc/v1/execute",
        br#"{"function": ""}"#,
        400,
        "BAD_REQUEST",
        "empty",
    );
    check(
        "POST",
        "/drpc/v1/execute",
        br#"{"function": "a\u0000b"}"#,
        400,
        "BAD_REQUEST",
        "control characters",
    );
    check(
        "POST",
        "/drpc/v1/fetch",
        br#"{"function": "upper", "max": -1}"#,
        400,
        "BAD_REQUEST",
        "not the JSON this endpoint takes",
    );
    check(
        "POST",
        "/drpc/v1/fetch",
        br#"{"function": "upper", "wait_ms": 60000}"#,
        400,
        "BAD_REQUEST",
        "wait_ms",
    );
    check(
        "POST",
        "/drpc/v1/result",
        br#"{"id": "0000000000000000", "result": "x"}"#,
        404,
        "UNKNOWN_REQUEST",
        "unknown DRPC request id '0000000000000000'",
    );
    check(
        "POST",
        "/drpc/v1/fail",
        br#"{"id": "nope"}"#,
        404,
        "UNKNOWN_REQUEST",
        "nope",
    );
    check(
        "POST",
        "/drpc/v1/nothing",
        b"{}",
        404,
        "NOT_FOUND",
        "no such DRPC endpoint",
    );
    check(
        "GET",
        "/drpc/v1/execute",
        b"",
        405,
        "METHOD_NOT_ALLOWED",
        "GET",
    );
    let huge = format!(
        r#"{{"function": "upper", "args": "{}"}}"#,
        "x".repeat(20_000)
    );
    check(
        "POST",
        "/drpc/v1/execute",
        huge.as_bytes(),
        413,
        "PAYLOAD_TOO_LARGE",
        "drpc.max_buffer_size",
    );
    // The clients report the same refusals as errors, naming the server.
    let e = d.client().execute("", "x").unwrap_err();
    assert!(
        matches!(&e, DrpcError::Refused(m) if m.contains(&a)),
        "{e:?}"
    );
    // Still serving.
    assert_eq!(
        d.client().execute("upper", "still here").unwrap(),
        "STILL HERE"
    );
}

#[test]
fn clients_waiting_past_the_limit_are_refused_and_topologies_still_get_through() {
    let d = Daemon::start("");
    let a = d.api();
    // 128 clients wait on raw connections (requests sent, answers not read yet).
    let body = br#"{"function": "slowpoke", "args": "x"}"#;
    let mut waiting: Vec<TcpStream> = (0..squall_drpc::server::MAX_WAITING_PER_PORT)
        .map(|_| {
            let mut s = TcpStream::connect(&a).unwrap();
            write!(
                s,
                "POST /drpc/v1/execute HTTP/1.0\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.write_all(body).unwrap();
            s
        })
        .collect();
    // Wait until all are queued: fetch them through the invocations API of the same
    // port, which must not be starved by the waiting clients.
    let inv = RemoteInvocations::from_conf(&conf(std::slice::from_ref(&a))).unwrap();
    let mut fetched = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetched.len() < waiting.len() && Instant::now() < deadline {
        fetched.extend(inv.fetch("slowpoke", 64).unwrap());
    }
    assert_eq!(fetched.len(), waiting.len());
    // One more is refused at once.
    let e = d.client().execute("slowpoke", "y").unwrap_err();
    assert!(
        matches!(&e, DrpcError::Refused(m) if m.contains("already waiting")),
        "{e:?}"
    );
    // Answer them all; every waiting client gets its answer.
    for r in &fetched {
        inv.result(&r.server, &r.id, &format!("answer {}", r.id))
            .unwrap();
    }
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
        assert!(raw.contains(r#"{"result":"answer "#), "{raw}");
    }
    // And the port takes clients again.
    let _topo = Topology::serve(inv, "upper", upper);
    assert_eq!(d.client().execute("upper", "again").unwrap(), "AGAIN");
}

#[test]
fn a_stopping_server_answers_its_waiting_clients() {
    let mut d = Daemon::start("");
    let c = d.client();
    let server = d.api();
    let waiter = std::thread::spawn(move || c.execute("nobody", "x"));
    std::thread::sleep(Duration::from_millis(300));
    let took = d.stop();
    let e = waiter.join().unwrap().unwrap_err();
    assert_eq!(
        e,
        DrpcError::Unreachable {
            server,
            message: "the DRPC server is shutting down".into()
        }
    );
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}
