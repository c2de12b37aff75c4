//! `squall drpc` as a real process, a topology stand-in answering through
//! `RemoteInvocations`, and `squall drpc-client` as a user runs it: output lines, exit
//! codes, timeouts and failures.

mod common;
use common::{free_port, stop_daemons, SQUALL};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_drpc::{DrpcInvocations, RemoteInvocations};

/// A `squall drpc` process on free ports, and its config file.
struct Drpc {
    child: Child,
    port: u16,
    http_port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Drpc {
    fn drop(&mut self) {
        stop_daemons([&mut self.child]);
    }
}

fn start() -> Drpc {
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let config = dir.path().join("storm.yaml");
    std::fs::write(
        &config,
        format!(
            "drpc.servers: [\"127.0.0.1\"]\ndrpc.port: {port}\ndrpc.invocations.port: -1\n\
             drpc.http.port: {http_port}\ndrpc.request.timeout.secs: 2\n\
             squall.drpc.fetcher.timeout.secs: 1\nstorm.local.hostname: 127.0.0.1\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(SQUALL)
        .arg("drpc")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("DRPC HTTP listening"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("squall drpc did not say it listens; it said {lines:?}"),
        }
    }
    assert!(
        lines[0].starts_with(&format!(
            "DRPC API listening on http://0.0.0.0:{port} (server 127.0.0.1:{port})"
        )),
        "{lines:?}"
    );
    Drpc {
        child,
        port,
        http_port,
        config,
        _dir: dir,
    }
}

/// Runs `squall drpc-client` with `args` against the config file.
fn client(config: &Path, args: &[&str]) -> Output {
    Command::new(SQUALL)
        .arg("drpc-client")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A topology stand-in serving `upper` and `count` (words in the argument), failing
/// arguments that say `fail`.
fn topology(port: u16) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let conf = squall_cluster::config::load_str(&format!(
        "drpc.servers: [\"127.0.0.1\"]\ndrpc.port: {port}"
    ))
    .unwrap();
    let inv = RemoteInvocations::from_conf(&conf).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            for f in ["upper", "count"] {
                for r in inv.fetch(f, 8).unwrap_or_default() {
                    if r.args.contains("fail") {
                        inv.fail(&r.server, &r.id, "the topology refused 'fail'")
                            .unwrap();
                    } else if f == "upper" {
                        inv.result(&r.server, &r.id, &r.args.to_uppercase())
                            .unwrap();
                    } else {
                        let n = r.args.split_whitespace().count();
                        inv.result(&r.server, &r.id, &n.to_string()).unwrap();
                    }
                }
            }
        }
    });
    (stop, thread)
}

#[test]
fn drpc_client_calls_functions_served_by_a_topology() {
    let d = start();
    let (stop, thread) = topology(d.port);

    // -f: every argument is one call of that function.
    let o = client(&d.config, &["-f", "upper", "hello", "grüße über", "-5"]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "upper \"hello\" => \"HELLO\"\nupper \"grüße über\" => \"GRÜSSE ÜBER\"\nupper \"-5\" => \"-5\"\n"
    );

    // Without -f: FUNCTION ARGUMENT pairs, here with the server given by -c instead of a
    // file (the default ~/.squall/storm.yaml is not read when --config is absent and it
    // does not exist; -c alone is enough).
    let o = Command::new(SQUALL)
        .args(["drpc-client", "count", "cat dog the man", "upper", "x"])
        .args(["-c", "drpc.servers=[\"127.0.0.1\"]"])
        .args(["-c", &format!("drpc.port={}", d.port)])
        .env("HOME", d._dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "count \"cat dog the man\" => \"4\"\nupper \"x\" => \"X\"\n"
    );

    // A request the topology fails: the calls before it print, then a non-zero exit
    // with the topology's message.
    let o = client(&d.config, &["-f", "upper", "first", "please fail", "never"]);
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success());
    assert_eq!(stdout, "upper \"first\" => \"FIRST\"\n");
    assert_eq!(
        stderr.trim(),
        "error: DRPC request 'upper' failed: the topology refused 'fail'"
    );

    // Storm's DRPC HTTP on the same server.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /drpc/upper/via%20http HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.0 200") && raw.ends_with("\r\n\r\nVIA HTTP"),
        "{raw}"
    );

    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();

    // The topology is gone: a function it served fails within the fetcher timeout, one
    // nobody ever served times out (drpc.request.timeout.secs: 2).
    let start = Instant::now();
    let o = client(&d.config, &["-f", "upper", "anyone?"]);
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success() && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("DRPC request 'upper'")
            && (stderr.contains("was it killed?") || stderr.contains("timed out")),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    let o = client(&d.config, &["never-served", "x"]);
    let (stdout, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: DRPC request 'never-served' timed out after 2 s without an answer"
    );
}

#[test]
fn drpc_client_errors_are_one_line_with_a_non_zero_exit() {
    // No server: the address is named.
    let port = free_port();
    let o = Command::new(SQUALL)
        .args(["drpc-client", "-f", "upper", "x"])
        .args(["-c", "drpc.servers=[\"127.0.0.1\"]"])
        .args(["-c", &format!("drpc.port={port}")])
        .output()
        .unwrap();
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!("error: DRPC server 127.0.0.1:{port}: "))
            && stderr.contains("Connection refused"),
        "{stderr}"
    );
    // Arguments that are not pairs.
    let o = Command::new(SQUALL)
        .args(["drpc-client", "upper", "a", "count"])
        .output()
        .unwrap();
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("arguments come in pairs"), "{stderr}");
    // A typo in a DRPC key is refused like any other.
    let o = Command::new(SQUALL)
        .args(["drpc-client", "-f", "upper", "x", "-c", "drpc.server=[a]"])
        .output()
        .unwrap();
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("did you mean 'drpc.servers'?"), "{stderr}");
}

#[test]
fn squall_drpc_stops_on_sigterm_answering_waiting_clients() {
    let mut d = start();
    let config = d.config.clone();
    let waiting = std::thread::spawn(move || client(&config, &["-f", "nobody", "x"]));
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    common::signal(d.child.id(), "TERM");
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let o = waiting.join().unwrap();
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("the DRPC server is shutting down"),
        "{stderr}"
    );
}
