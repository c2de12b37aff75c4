//! A cluster on this machine whose every part can be killed and restarted: ZooKeeper on
//! a fixed port and data dir, several Nimbus processes, several supervisors, all from the
//! built `squall` binary, with failure detection tuned to seconds. And the
//! `reliable-ids` topology's logs, read to tell what was acked, seen, lost, duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use squall_cluster::dev_zookeeper::{ZooKeeperOptions, ZooKeeperServer};
use squall_cluster::rpc::NimbusClient;

use super::{block, find_files, free_port, signal, wait_until, SQUALL};

/// A bare HTTP/1.1 request to 127.0.0.1:`port`: (status, body), `None` when it cannot
/// connect.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
}

struct Daemon {
    what: &'static str,
    config: PathBuf,
    local: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// ZooKeeper, `nimbuses` Nimbus processes and `supervisors` supervisors with two slots
/// each. Daemons are named `nimbus0..`, `sup0..`. Everything is stopped on drop.
pub struct ChaosCluster {
    pub dir: tempfile::TempDir,
    zk: Option<ZooKeeperServer>,
    zk_dir: PathBuf,
    zk_port: u16,
    /// The config every CLI command uses (all Nimbus seeds).
    pub config: PathBuf,
    pub nimbus_ports: Vec<u16>,
    daemons: BTreeMap<String, Daemon>,
    /// `Bearer <secret>` when the cluster has one.
    bearer: Option<String>,
}

impl ChaosCluster {
    pub fn start(nimbuses: usize, supervisors: usize) -> ChaosCluster {
        Self::start_with(nimbuses, supervisors, |_| String::new())
    }

    /// As [`start`](Self::start), with more config lines for every daemon and the CLI,
    /// made from the cluster's directory.
    pub fn start_with(
        nimbuses: usize,
        supervisors: usize,
        extra: impl FnOnce(&Path) -> String,
    ) -> ChaosCluster {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(dir.path());
        let bearer = extra
            .lines()
            .find_map(|l| l.strip_prefix("squall.secret.file:"))
            .map(|f| std::fs::read_to_string(f.trim()).unwrap())
            .map(|s| format!("Bearer {}", s.trim()));
        let zk_dir = dir.path().join("zookeeper");
        let zk = ZooKeeperServer::start(ZooKeeperOptions::new(&zk_dir))
            .expect("ZooKeeper starts (scripts/ensure-zookeeper.sh installs it)");
        let zk_port = zk.port();
        let nimbus_ports: Vec<u16> = (0..nimbuses).map(|_| free_port()).collect();
        let seeds: Vec<String> = nimbus_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let base = format!(
            "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
             storm.zookeeper.port: {zk_port}\n\
             storm.zookeeper.session.timeout: 6000\n\
             nimbus.seeds: [{}]\n\
             storm.local.hostname: 127.0.0.1\n\
             nimbus.monitor.freq.secs: 1\n\
             nimbus.supervisor.timeout.secs: 6\n\
             nimbus.task.timeout.secs: 8\n\
             supervisor.heartbeat.frequency.secs: 1\n\
             supervisor.monitor.frequency.secs: 1\n\
             supervisor.worker.timeout.secs: 5\n\
             supervisor.worker.start.timeout.secs: 30\n\
             supervisor.worker.shutdown.sleep.secs: 1\n\
             {extra}",
            seeds.join(", ")
        );
        let config = dir.path().join("storm.yaml");
        std::fs::write(&config, &base).unwrap();
        let mut c = ChaosCluster {
            dir,
            zk: Some(zk),
            zk_dir,
            zk_port,
            config,
            nimbus_ports: nimbus_ports.clone(),
            daemons: BTreeMap::new(),
            bearer,
        };
        for (i, port) in nimbus_ports.iter().enumerate() {
            c.add(
                &format!("nimbus{i}"),
                "nimbus",
                &base,
                format!("nimbus.thrift.port: {port}\n"),
            );
        }
        for i in 0..supervisors {
            c.add(
                &format!("sup{i}"),
                "supervisor",
                &base,
                format!(
                    "supervisor.slots.ports: [{}, {}]\n",
                    free_port(),
                    free_port()
                ),
            );
        }
        let names: Vec<String> = c.daemons.keys().cloned().collect();
        for n in names.iter().filter(|n| n.starts_with("nimbus")) {
            c.spawn(n);
        }
        c.wait_for_leader();
        for n in names.iter().filter(|n| n.starts_with("sup")) {
            c.spawn(n);
        }
        let want = supervisors;
        let ok = wait_until(Duration::from_secs(60), || {
            block(c.client().cluster()).is_ok_and(|s| s.supervisors.len() == want)
        });
        assert!(ok, "supervisors did not register:\n{}", c.logs());
        c
    }

    fn add(&mut self, name: &str, what: &'static str, base: &str, extra: String) {
        let d = self.dir.path().join(name);
        let local = d.join("local");
        std::fs::create_dir_all(&d).unwrap();
        let config = d.join("storm.yaml");
        std::fs::write(
            &config,
            format!("{base}storm.local.dir: {}\n{extra}", local.display()),
        )
        .unwrap();
        self.daemons.insert(
            name.to_owned(),
            Daemon {
                what,
                log: d.join(format!("{what}.log")),
                config,
                local,
                child: None,
            },
        );
    }

    /// Starts (or starts again) the daemon `name`.
    pub fn spawn(&mut self, name: &str) {
        let d = self.daemons.get_mut(name).unwrap();
        if let Some(mut old) = d.child.take() {
            // It exited by itself (or was never reaped): reap it first.
            assert!(
                matches!(old.try_wait(), Ok(Some(_))),
                "{name} is already running"
            );
        }
        let child = super::spawn_daemon(d.what, &d.config, &d.log);
        d.child = Some(child);
    }

    /// SIGKILLs the daemon `name` (its workers, for a supervisor, keep running).
    pub fn kill(&mut self, name: &str) {
        let d = self.daemons.get_mut(name).unwrap();
        if let Some(mut c) = d.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id of the running daemon `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.daemons[name]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is not running"))
            .id()
    }

    /// Whether the daemon `name` was started and has not exited.
    pub fn is_running(&self, name: &str) -> bool {
        self.daemons[name]
            .child
            .as_ref()
            .is_some_and(|c| super::alive(c.id()))
    }

    pub fn names(&self, prefix: &str) -> Vec<String> {
        self.daemons
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Stops ZooKeeper (SIGKILL) and starts it again on the same port and data.
    pub fn restart_zookeeper(&mut self, down_for: Duration) {
        drop(self.zk.take());
        std::thread::sleep(down_for);
        let mut opts = ZooKeeperOptions::new(&self.zk_dir);
        opts.port = self.zk_port;
        self.zk = Some(ZooKeeperServer::start(opts).expect("ZooKeeper restarts"));
    }

    /// ZooKeeper's connect string, `127.0.0.1:<port>`.
    pub fn zk_connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.zk_port)
    }

    /// A client of a running Nimbus (a standby redirects to the leader).
    pub fn client(&self) -> NimbusClient {
        let i = (0..self.nimbus_ports.len())
            .find(|i| self.is_running(&format!("nimbus{i}")))
            .unwrap_or(0);
        self.client_of(i)
    }

    pub fn client_of(&self, i: usize) -> NimbusClient {
        let secret = self
            .bearer
            .as_deref()
            .and_then(|b| b.strip_prefix("Bearer "))
            .and_then(|s| squall_cluster::secret::Secret::new(s.as_bytes()));
        NimbusClient::new(&format!("127.0.0.1:{}", self.nimbus_ports[i])).with_secret(secret)
    }

    /// Index of the leading Nimbus: the one that answers a write itself (a standby
    /// answers 503 and names the leader).
    pub fn leader(&self) -> Option<usize> {
        self.nimbus_ports.iter().enumerate().find_map(|(i, &port)| {
            if !self.is_running(&format!("nimbus{i}")) {
                return None;
            }
            let (code, _) = http(
                port,
                "POST",
                "/nimbus/v1/topologies/no-such-topology-here/activate",
                "",
                self.bearer.as_deref(),
            )?;
            (code == 404).then_some(i)
        })
    }

    pub fn wait_for_leader(&self) -> Duration {
        let t = Instant::now();
        let ok = wait_until(Duration::from_secs(60), || {
            self.leader().is_some() && block(self.client().list()).is_ok()
        });
        assert!(ok, "no Nimbus leads:\n{}", self.logs());
        t.elapsed()
    }

    /// Runs `squall ARGS --config <all seeds>`.
    pub fn squall(&self, args: &[&str]) -> Output {
        Command::new(SQUALL)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Live worker pids per supervisor, from their heartbeat files.
    pub fn worker_pids(&self, sup: &str) -> Vec<u32> {
        super::worker_pids(&self.daemons[sup].local.join("workers"))
    }

    /// Where the executors of topology `name` run: component → slot ports (from
    /// Nimbus's page of the topology, which reads the assignment).
    pub fn placement(&self, name: &str) -> Option<BTreeMap<String, BTreeSet<u16>>> {
        let page = block(self.client().page(name)).ok()?;
        let mut m: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for e in page.executors {
            m.entry(e.component).or_default().insert(e.port);
        }
        Some(m)
    }

    /// Every slot topology `name` is assigned has a live worker, none of them in
    /// `killed`.
    pub fn all_workers_up(&self, name: &str, killed: &[u32]) -> bool {
        let Some(ports) = self.placement(name) else {
            return false;
        };
        let slots: BTreeSet<u16> = ports.values().flatten().copied().collect();
        slots.into_iter().all(|port| {
            self.worker_at(port)
                .is_some_and(|(_, pid)| !killed.contains(&pid))
        })
    }

    /// The live worker on slot `port` (of any supervisor): its supervisor and pid,
    /// from the heartbeat file in its `workers/<topology-id>-<port>` directory.
    pub fn worker_at(&self, port: u16) -> Option<(String, u32)> {
        let suffix = format!("-{port}");
        self.names("sup").into_iter().find_map(|sup| {
            let dir = self.daemons[&sup].local.join("workers");
            find_files(&dir, "heartbeat").into_iter().find_map(|p| {
                let slot = p.parent()?.file_name()?.to_str()?;
                if !slot.ends_with(&suffix) {
                    return None;
                }
                let hb: squall_cluster::state::LocalHeartbeat =
                    serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                super::alive(hb.pid).then(|| (sup.clone(), hb.pid))
            })
        })
    }

    pub fn all_worker_pids(&self) -> Vec<(String, u32)> {
        self.names("sup")
            .into_iter()
            .flat_map(|s| {
                self.worker_pids(&s)
                    .into_iter()
                    .map(move |p| (s.clone(), p))
            })
            .collect()
    }

    /// The last lines of every daemon's and worker's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<(String, PathBuf)> = self
            .daemons
            .iter()
            .map(|(n, d)| (n.clone(), d.log.clone()))
            .collect();
        for log in find_files(self.dir.path(), "worker.log") {
            files.push((log.display().to_string(), log));
        }
        files.push(("zookeeper".to_owned(), self.zk_dir.join("zookeeper.log")));
        for (name, path) in files {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- {name} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Whether any worker log contains `needle` (case-insensitive).
    pub fn worker_logs_contain(&self, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        find_files(self.dir.path(), "worker.log")
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.to_lowercase().contains(&needle)))
    }

    /// Processes still running a binary from the supervisors' caches.
    pub fn stray_workers(&self) -> Vec<u32> {
        let root = self.dir.path().to_path_buf();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe.starts_with(&root))
            })
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect()
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        // Supervisors first (SIGTERM: they stop their workers), then Nimbus. Names sort
        // "nimbus…" before "sup…", so reversed order does that.
        super::stop_daemons(
            self.daemons
                .values_mut()
                .rev()
                .filter_map(|d| d.child.as_mut()),
        );
        // Workers left by killed supervisors.
        for pid in self.stray_workers() {
            signal(pid, "CONT");
            signal(pid, "KILL");
        }
    }
}

fn read_ids(path: &Path) -> Vec<u64> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// What the `reliable-ids` logs in a directory say about ids `0..count`.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub count: u64,
    pub acked: BTreeSet<u64>,
    pub seen: BTreeSet<u64>,
    pub seen_total: usize,
}

impl Ledger {
    pub fn read(dir: &Path, count: u64) -> Ledger {
        let mut l = Ledger {
            count,
            ..Default::default()
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return l;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("acked-") {
                l.acked.extend(read_ids(&path));
            } else if name.starts_with("seen-") {
                let ids = read_ids(&path);
                l.seen_total += ids.len();
                l.seen.extend(ids);
            }
        }
        l
    }

    /// Ids not (yet) both acked and seen.
    pub fn missing(&self) -> Vec<u64> {
        (0..self.count)
            .filter(|id| !self.acked.contains(id) || !self.seen.contains(id))
            .collect()
    }

    pub fn duplicates(&self) -> usize {
        self.seen_total - self.seen.len()
    }

    pub fn complete(&self) -> bool {
        self.acked.len() as u64 >= self.count && self.missing().is_empty()
    }
}

/// Watches the acked count of a paced `reliable-ids` run to tell when processing runs at
/// full speed again after a failure.
pub struct Progress {
    dir: PathBuf,
    count: u64,
    /// Ids per second the spouts emit in all.
    pub rate: f64,
}

impl Progress {
    pub fn new(dir: &Path, count: u64, rate: f64) -> Progress {
        Progress {
            dir: dir.to_owned(),
            count,
            rate,
        }
    }

    /// Ids acked so far: lines of the `acked-*` logs, counted without parsing (cheap
    /// however long the run; a moved task acking an id twice counts it twice).
    pub fn acked(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("acked-"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
            .sum()
    }

    /// Waits until, over a 2 s window, new ids are acked at 80 % of the paced rate (or
    /// everything is acked); returns how long that took from `since`.
    pub fn wait_resumed(&self, since: Instant, timeout: Duration) -> Option<Duration> {
        let end = since + timeout;
        let mut window: std::collections::VecDeque<(Instant, usize)> = Default::default();
        while Instant::now() < end {
            let now = Instant::now();
            let acked = self.acked();
            if acked as u64 >= self.count {
                return Some(now - since);
            }
            window.push_back((now, acked));
            while window
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(2))
            {
                window.pop_front();
            }
            if let Some((t0, a0)) = window.front() {
                let secs = now.duration_since(*t0).as_secs_f64();
                if secs >= 1.5 && acked.saturating_sub(*a0) as f64 / secs >= 0.8 * self.rate {
                    return Some(
                        now.duration_since(since)
                            .saturating_sub(Duration::from_secs_f64(secs)),
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }
}
