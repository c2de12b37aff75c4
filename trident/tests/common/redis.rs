//! A real `redis-server` for tests: started on a free loopback port in a temporary
//! directory, without persistence, and stopped when dropped.
//!
//! The binary is `$SQUALL_REDIS_SERVER` (set by `scripts/test.sh`, from
//! `scripts/ensure-redis.sh`), else `redis-server` on `PATH`. Self-contained (std,
//! tempfile and the redis crate), so other test crates include it with
//! `#[path = "../../trident/tests/common/redis.rs"] mod redis;`; inside such a crate,
//! name the redis crate `::redis` (the module shadows it).
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a new server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`; killed (and waited for) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// When no `redis-server` can be found or started (the message says why).
    pub fn start() -> RedisServer {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("squall-redis-")
            .tempdir()
            .expect("a temporary directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            binary,
            dir,
        };
        let mut why = String::new();
        // Another process may take the free port before redis-server binds it: try
        // another one.
        for _ in 0..5 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(e) => why = e,
            }
        }
        panic!("cannot start {}: {why}", server.binary.display());
    }

    /// The URL clients connect to, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection to the server (reads and writes time out after 5 s).
    pub fn connection(&self) -> ::redis::Connection {
        connect(&self.url(), Duration::from_secs(5)).unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test redis-server at {}: {e}",
                self.url()
            )
        })
    }

    /// Kills the server (SIGKILL) and waits for it; idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with an empty database.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot restart redis-server on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server frozen by [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Launches on `self.port` and waits for `PING`; on failure, says why (with the
    /// server's log).
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join(format!("redis-{}.log", self.port));
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}): run scripts/ensure-redis.sh, or set \
                     SQUALL_REDIS_SERVER to the path of redis-server",
                    self.binary.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("redis-server exited ({status}); its log:\n{log}"));
            }
            if ping(&url) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?}; its log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$SQUALL_REDIS_SERVER`, else `redis-server` (looked up on `PATH`).
fn binary() -> PathBuf {
    match std::env::var_os("SQUALL_REDIS_SERVER") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from("redis-server"),
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn connect(url: &str, timeout: Duration) -> ::redis::RedisResult<::redis::Connection> {
    let conn = ::redis::Client::open(url)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

fn ping(url: &str) -> bool {
    connect(url, Duration::from_millis(500))
        .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c))
        .is_ok_and(|pong| pong == "PONG")
}
