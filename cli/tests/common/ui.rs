//! The UI daemon in black-box tests: [`start_ui`] runs `squall ui` on a free port;
//! [`UiCluster`] is a whole cluster with it (real ZooKeeper, Nimbus, one supervisor,
//! `squall ui`), every process stopped on drop; [`http`] is a small HTTP/1.1 client.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use squall_cluster::dev_zookeeper::ZooKeeperServer;

use super::{block, find_files, free_port, spawn_daemon, stop_daemons, wait_until, SQUALL};

/// How long daemons get to come up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Starts `squall ui --config CONFIG -c ui.port=0 [extra args]` with its output appended
/// to `log`; waits until it prints `UI listening on http://ADDR` and returns the
/// process and its port.
pub fn start_ui(config: &Path, log: &Path, extra: &[&str]) -> (Child, u16) {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(SQUALL)
        .arg("ui")
        .arg("--config")
        .arg(config)
        .args(["-c", "ui.port=0", "-c", "ui.host=127.0.0.1"])
        .args(extra)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let end = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text.lines().find_map(|l| {
            let addr = l.split("UI listening on http://").nth(1)?;
            addr.split_whitespace()
                .next()?
                .rsplit_once(':')?
                .1
                .parse::<u16>()
                .ok()
        });
        if let Some(port) = port {
            return (child, port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("squall ui exited with {status}:\n{text}");
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("squall ui did not say where it listens:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding undone).
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = unchunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap().trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
}

/// ZooKeeper, Nimbus, one supervisor with two slots and `squall ui`, on free ports;
/// everything is stopped on drop.
pub struct UiCluster {
    /// ZooKeeper.
    pub zk: ZooKeeperServer,
    /// Every daemon's files.
    pub dir: tempfile::TempDir,
    /// The cluster config (for `squall jar`, `squall list`).
    pub config: PathBuf,
    /// Nimbus's port.
    pub nimbus_port: u16,
    /// The UI's port.
    pub ui_port: u16,
    /// The logviewer port the UI links to.
    pub logviewer_port: u16,
    daemons: Vec<(String, Child, PathBuf)>,
}

impl UiCluster {
    /// Starts it; `extra` is YAML added to every daemon's config.
    pub fn start(extra: &str) -> UiCluster {
        let zk = ZooKeeperServer::start_temp()
            .expect("ZooKeeper starts (scripts/ensure-zookeeper.sh installs it)");
        let dir = tempfile::tempdir().unwrap();
        let nimbus_port = free_port();
        let logviewer_port = free_port();
        let base = format!(
            "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
             storm.zookeeper.port: {}\n\
             storm.zookeeper.session.timeout: 6000\n\
             nimbus.seeds: [\"127.0.0.1\"]\n\
             nimbus.thrift.port: {nimbus_port}\n\
             storm.local.hostname: 127.0.0.1\n\
             supervisor.monitor.frequency.secs: 1\n\
             logviewer.port: {logviewer_port}\n\
             {extra}",
            zk.port()
        );
        let config = dir.path().join("storm.yaml");
        std::fs::write(&config, &base).unwrap();
        let mut c = UiCluster {
            zk,
            dir,
            config,
            nimbus_port,
            ui_port: 0,
            logviewer_port,
            daemons: Vec::new(),
        };
        let local = |name: &str, more: String| {
            let d = c.dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let f = d.join("storm.yaml");
            std::fs::write(
                &f,
                format!(
                    "{base}storm.local.dir: {}\n{more}",
                    d.join("local").display()
                ),
            )
            .unwrap();
            f
        };
        let nimbus = local("nimbus", String::new());
        let sup = local(
            "sup",
            format!(
                "supervisor.slots.ports: [{}, {}]\n",
                free_port(),
                free_port()
            ),
        );
        let ui = local("ui", String::new());
        c.spawn("nimbus", &nimbus);
        c.spawn("supervisor", &sup);
        let log = ui.with_file_name("ui.log");
        let (child, port) = start_ui(&ui, &log, &[]);
        c.daemons.push(("ui".into(), child, log));
        c.ui_port = port;
        let client = squall_cluster::rpc::NimbusClient::new(&format!("127.0.0.1:{nimbus_port}"))
            .with_secret(
                squall_cluster::secret::Secret::load(&config_of(&base))
                    .ok()
                    .flatten(),
            );
        let ok = wait_until(PATIENCE, || {
            block(client.cluster()).is_ok_and(|s| s.supervisors.len() == 1)
        });
        assert!(ok, "the cluster did not come up:\n{}", c.logs());
        c
    }

    fn spawn(&mut self, what: &str, config: &Path) {
        let log = config.with_file_name(format!("{what}.log"));
        let child = spawn_daemon(what, config, &log);
        self.daemons.push((what.to_owned(), child, log));
    }

    /// A Nimbus client (no secret).
    pub fn client(&self) -> squall_cluster::rpc::NimbusClient {
        squall_cluster::rpc::NimbusClient::new(&format!("127.0.0.1:{}", self.nimbus_port))
    }

    /// Runs `squall ARGS --config CONFIG`.
    pub fn squall(&self, args: &[&str]) -> Output {
        Command::new(SQUALL)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// `GET path` on the UI.
    pub fn get(&self, path: &str) -> Answer {
        http(self.ui_port, "GET", path, &[], b"")
    }

    /// `POST path` on the UI with a JSON body and extra headers.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        http(self.ui_port, "POST", path, &h, body.as_bytes())
    }

    /// The last lines of every daemon's and worker's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |p: &Path, n: usize| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().rev().take(n).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        for (name, _, log) in &self.daemons {
            out.push_str(&format!("--- {name} ---\n{}\n", tail(log, 30)));
        }
        for log in find_files(self.dir.path(), "worker.log") {
            out.push_str(&format!("--- {} ---\n{}\n", log.display(), tail(&log, 20)));
        }
        out
    }
}

fn config_of(yaml: &str) -> squall_api::Config {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, yaml).unwrap();
    squall_cluster::config::load(Some(&f), &[]).unwrap()
}

impl Drop for UiCluster {
    fn drop(&mut self) {
        stop_daemons(self.daemons.iter_mut().rev().map(|(_, c, _)| c));
    }
}
