//! A Kafka broker for tests: `noida-db` (a Kafka-protocol broker; `SQUALL_NOIDA`, or
//! installed by `scripts/ensure-kafka-broker.sh`) on a free port with a temporary data
//! directory, stopped and reaped on drop. With `SQUALL_KAFKA_BOOTSTRAP=host:port` the
//! tests use that broker (a real Kafka) instead and start nothing.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker the test talks to.
pub struct KafkaBroker {
    child: Option<Child>,
    bootstrap: String,
    port: u16,
    dir: Option<tempfile::TempDir>,
    binary: Option<PathBuf>,
}

fn noida() -> PathBuf {
    if let Ok(p) = std::env::var("SQUALL_NOIDA") {
        return PathBuf::from(p);
    }
    // The repository's scripts, found from whichever package's tests include this file.
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts/ensure-kafka-broker.sh"))
        .find(|p| p.is_file())
        .expect("scripts/ensure-kafka-broker.sh above the package");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: set SQUALL_NOIDA to a noida-db binary or SQUALL_KAFKA_BOOTSTRAP to a Kafka",
        script.display()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl KafkaBroker {
    /// A broker that answers metadata requests: `SQUALL_KAFKA_BOOTSTRAP`'s, or a new
    /// noida-db.
    pub fn start() -> Self {
        if let Ok(b) = std::env::var("SQUALL_KAFKA_BOOTSTRAP") {
            let broker = KafkaBroker {
                child: None,
                bootstrap: b,
                port: 0,
                dir: None,
                binary: None,
            };
            broker.wait_ready(Duration::from_secs(30));
            return broker;
        }
        let dir = tempfile::Builder::new()
            .prefix("squall-kafka-test")
            .tempdir()
            .expect("a temp dir");
        let port = free_port();
        let mut broker = KafkaBroker {
            child: None,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            dir: Some(dir),
            binary: Some(noida()),
        };
        broker.spawn();
        broker
    }

    /// `host:port` of the broker.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this is a broker the test did not start (`SQUALL_KAFKA_BOOTSTRAP`).
    pub fn is_external(&self) -> bool {
        self.child.is_none() && self.binary.is_none()
    }

    fn spawn(&mut self) {
        let dir = self.dir.as_ref().expect("own broker").path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("noida.log"))
            .expect("broker log");
        let child = Command::new(self.binary.as_ref().expect("own broker"))
            .args(["start", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting noida-db");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match squall_kafka::topic_partitions(&self.bootstrap, "-", Duration::from_secs(1)) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "Kafka broker at {} not ready: {e}\n{}",
                        self.bootstrap,
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The broker's log (own broker only).
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("noida.log")).ok())
            .unwrap_or_default()
    }

    /// Stops the broker (SIGINT, then SIGKILL after 10 s) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the broker and starts it again on the same port with the same data.
    /// Panics for an external broker (check [`is_external`](Self::is_external)).
    pub fn restart(&mut self) {
        assert!(!self.is_external(), "cannot restart an external broker");
        self.stop();
        self.spawn();
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A topic name no earlier run used.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
