//! A real cluster on this machine: Apache ZooKeeper, Nimbus and two supervisors as
//! separate processes of the built `squall` binary, WordCount submitted with
//! `squall jar`, all on free ports.

mod common;
use common::{
    block, find_files, free_port, spawn_daemon, stdout, stop_daemons, wait_until, word_count,
    SQUALL,
};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::rpc::{NimbusClient, SubmitRequest, TopologyInfo};

const PATIENCE: Duration = Duration::from_secs(90);

struct Daemon {
    name: String,
    what: String,
    config: PathBuf,
    child: Child,
    log: PathBuf,
}

/// ZooKeeper + Nimbus + two supervisors; everything is stopped on drop.
struct TestCluster {
    _zk: ZooKeeperServer,
    dir: tempfile::TempDir,
    config: PathBuf,
    nimbus_port: u16,
    daemons: Vec<Daemon>,
}

impl TestCluster {
    fn start() -> TestCluster {
        let zk = ZooKeeperServer::start_temp()
            .expect("ZooKeeper starts (scripts/ensure-zookeeper.sh installs it)");
        let dir = tempfile::tempdir().unwrap();
        let nimbus_port = free_port();
        let base = format!(
            "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
             storm.zookeeper.port: {}\n\
             storm.zookeeper.session.timeout: 6000\n\
             nimbus.seeds: [\"127.0.0.1\"]\n\
             nimbus.thrift.port: {nimbus_port}\n\
             storm.local.hostname: 127.0.0.1\n\
             supervisor.monitor.frequency.secs: 1\n",
            zk.port()
        );
        let config = dir.path().join("storm.yaml");
        std::fs::write(&config, &base).unwrap();
        let mut cluster = TestCluster {
            _zk: zk,
            dir,
            config,
            nimbus_port,
            daemons: Vec::new(),
        };
        let local = |name: &str, extra: String| {
            let d = cluster.dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let f = d.join("storm.yaml");
            std::fs::write(
                &f,
                format!(
                    "{base}storm.local.dir: {}\n{extra}",
                    d.join("local").display()
                ),
            )
            .unwrap();
            f
        };
        let nimbus_conf = local("nimbus", String::new());
        let sup1 = local(
            "sup1",
            format!(
                "supervisor.slots.ports: [{}, {}]\n",
                free_port(),
                free_port()
            ),
        );
        let sup2 = local(
            "sup2",
            format!(
                "supervisor.slots.ports: [{}, {}]\n",
                free_port(),
                free_port()
            ),
        );
        cluster.spawn("nimbus", &nimbus_conf);
        cluster.wait_for_nimbus();
        cluster.spawn("supervisor", &sup1);
        cluster.spawn("supervisor", &sup2);
        let client = cluster.client();
        let ok = wait_until(PATIENCE, || {
            block(client.cluster()).is_ok_and(|c| c.supervisors.len() == 2)
        });
        assert!(ok, "supervisors did not register:\n{}", cluster.logs());
        cluster
    }

    fn spawn(&mut self, what: &str, config: &Path) {
        let log = config.with_file_name(format!("{what}.log"));
        let child = spawn_daemon(what, config, &log);
        self.daemons.push(Daemon {
            name: format!("{what} ({})", config.parent().unwrap().display()),
            what: what.to_owned(),
            config: config.to_path_buf(),
            child,
            log,
        });
    }

    /// Stops Nimbus (SIGTERM) and starts it again with the same config and local dir.
    fn restart_nimbus(&mut self) {
        let i = self
            .daemons
            .iter()
            .position(|d| d.what == "nimbus")
            .unwrap();
        let mut d = self.daemons.remove(i);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(d.child.id().to_string())
            .status();
        let _ = d.child.wait();
        self.spawn("nimbus", &d.config);
        self.wait_for_nimbus();
    }

    fn wait_for_nimbus(&self) {
        let client = self.client();
        let ok = wait_until(PATIENCE, || block(client.list()).is_ok());
        assert!(ok, "Nimbus did not come up:\n{}", self.logs());
    }

    fn client(&self) -> NimbusClient {
        NimbusClient::new(&format!("127.0.0.1:{}", self.nimbus_port))
    }

    fn squall(&self, args: &[&str]) -> Output {
        Command::new(SQUALL)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    fn info(&self, name: &str) -> Option<TopologyInfo> {
        block(self.client().info(name)).ok()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", d.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        for log in worker_logs(self.dir.path()) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                log.display(),
                text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// Pids of the worker processes, from their heartbeat files.
    fn worker_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for hb in find_files(self.dir.path(), "heartbeat") {
            if let Ok(bytes) = std::fs::read(&hb) {
                if let Ok(h) =
                    serde_json::from_slice::<squall_cluster::state::LocalHeartbeat>(&bytes)
                {
                    if Path::new(&format!("/proc/{}", h.pid)).exists() {
                        pids.push(h.pid);
                    }
                }
            }
        }
        pids
    }

    /// Processes still running a binary from the supervisors' caches.
    fn running_workers(&self) -> usize {
        let root = self.dir.path().to_path_buf();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe.starts_with(&root))
            })
            .count()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        stop_daemons(self.daemons.iter_mut().rev().map(|d| &mut d.child));
    }
}

fn worker_logs(dir: &Path) -> Vec<PathBuf> {
    find_files(dir, "worker.log")
}

/// A bare HTTP/1.1 request: (status, body).
fn raw_http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

fn component(info: &TopologyInfo, id: &str) -> squall_cluster::rpc::ComponentSummary {
    info.components
        .iter()
        .find(|c| c.id == id)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn word_count_on_a_real_cluster() {
    let mut c = TestCluster::start();
    let wc = word_count();
    let wc = wc.to_str().unwrap();

    // Submit with two workers: one lands on each supervisor.
    let submitted = Instant::now();
    let out = c.squall(&["jar", wc, "wc", "--workers", "2", "--rate", "3000"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), c.logs());
    assert!(
        stdout(&out).contains("Submitted topology 'wc'"),
        "{}",
        stdout(&out)
    );
    let first = wait_until(PATIENCE, || {
        c.info("wc")
            .is_some_and(|i| component(&i, "count").executed > 0)
    });
    assert!(first, "no tuple was processed:\n{}", c.logs());
    eprintln!("submit to first tuple processed: {:?}", submitted.elapsed());
    let info = c.info("wc").unwrap();
    let nodes: std::collections::BTreeSet<_> = info
        .workers
        .iter()
        .map(|w| w.supervisor_id.clone())
        .collect();
    assert_eq!(info.workers.len(), 2, "{info:?}");
    assert_eq!(
        nodes.len(),
        2,
        "both supervisors should run a worker: {info:?}"
    );

    // `squall list` shows it ACTIVE with Storm's columns.
    let list = stdout(&c.squall(&["list"]));
    assert!(list.contains("Topology_name"), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with("wc "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("ACTIVE"), "{row}");

    // Counts grow.
    let before = component(&c.info("wc").unwrap(), "count").executed;
    assert!(wait_until(PATIENCE, || component(
        &c.info("wc").unwrap(),
        "count"
    )
    .executed
        > before + 1000));

    // Deactivate stops the spouts; activate resumes them.
    assert!(c.squall(&["deactivate", "wc"]).status.success());
    std::thread::sleep(Duration::from_secs(3));
    let paused = component(&c.info("wc").unwrap(), "spout").emitted;
    std::thread::sleep(Duration::from_secs(2));
    let info = c.info("wc").unwrap();
    assert_eq!(info.summary.status.to_string(), "INACTIVE");
    assert_eq!(
        component(&info, "spout").emitted,
        paused,
        "spouts kept emitting while inactive"
    );
    assert!(c.squall(&["activate", "wc"]).status.success());
    assert!(
        wait_until(PATIENCE, || component(&c.info("wc").unwrap(), "spout")
            .emitted
            > paused + 500),
        "spouts did not resume:\n{}",
        c.logs()
    );

    // A killed worker is restarted by its supervisor and the counts carry on.
    let pids = c.worker_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pids[0].to_string())
        .status();
    assert!(
        wait_until(PATIENCE, || {
            let now = c.worker_pids();
            now.len() == 2 && !now.contains(&pids[0])
        }),
        "the killed worker was not restarted:\n{}",
        c.logs()
    );
    let after_restart = component(&c.info("wc").unwrap(), "count").executed;
    assert!(wait_until(PATIENCE, || component(
        &c.info("wc").unwrap(),
        "count"
    )
    .executed
        > after_restart + 1000));

    // A restarted Nimbus carries on from ZooKeeper and its local dir.
    c.restart_nimbus();
    let list = stdout(&c.squall(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("wc ") && l.contains("ACTIVE")),
        "{list}"
    );
    assert!(
        wait_until(PATIENCE, || c.info("wc").is_some_and(|i| component(
            &i, "count"
        )
        .executed
            > 1000)),
        "no counts after Nimbus restarted:\n{}",
        c.logs()
    );

    // Rebalance down to one worker, then from one to three while running: it keeps
    // counting and nothing fails.
    let rebalance_to = |n: usize| {
        let out = c.squall(&["rebalance", "wc", "-w", "1", "-n", &n.to_string()]);
        assert!(out.status.success(), "{}", stdout(&out));
        assert!(
            wait_until(PATIENCE, || {
                c.info("wc").is_some_and(|i| {
                    i.workers.len() == n
                        && i.workers.iter().all(|w| w.heartbeat_age_secs.is_some())
                        && component(&i, "count").executed > 1000
                })
            }),
            "rebalance to {n} workers did not take effect:\n{}",
            c.logs()
        );
    };
    rebalance_to(1);
    rebalance_to(3);
    let before = component(&c.info("wc").unwrap(), "count").executed;
    assert!(wait_until(PATIENCE, || component(
        &c.info("wc").unwrap(),
        "count"
    )
    .executed
        > before + 1000));
    let info = c.info("wc").unwrap();
    assert_eq!(component(&info, "spout").failed, 0, "{info:?}");
    assert_eq!(info.summary.status.to_string(), "ACTIVE");

    // A second submission under the same name is refused; the cluster keeps running.
    let out = c.squall(&["jar", wc, "wc"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("a topology named 'wc' is already running"),
        "{}",
        stdout(&out)
    );

    // kill -w 1: the topology, its workers and its ZooKeeper nodes go.
    let id = info.summary.id.clone();
    let out = c.squall(&["kill", "wc", "-w", "1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(wait_until(PATIENCE, || stdout(&c.squall(&["list"]))
        .contains("No topologies running.")));
    assert!(
        wait_until(PATIENCE, || c.running_workers() == 0),
        "workers survived the kill:\n{}",
        c.logs()
    );
    let zk_nodes = block(async {
        let state = squall_cluster::zk::ClusterState::connect(
            &c._zk.connect_string(),
            "/squall",
            Duration::from_secs(6),
        )
        .await
        .unwrap();
        state.topology_nodes(&id).await.unwrap()
    });
    assert!(zk_nodes.is_empty(), "ZooKeeper still holds {zk_nodes:?}");
}

#[test]
fn bad_submissions_are_refused_and_change_nothing() {
    let c = TestCluster::start();
    let client = c.client();

    // A corrupted upload: the bytes do not match the announced SHA-256.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("binary");
    std::fs::write(&good, b"#!/bin/sh\necho hi\n").unwrap();
    let sha = block(client.upload_binary(&good)).unwrap();
    let (code, body) = raw_http(
        c.nimbus_port,
        "PUT",
        &format!("/nimbus/v1/binaries/{}", "0".repeat(64)),
        b"tampered",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("corrupted upload"), "{body}");
    assert!(!c
        .dir
        .path()
        .join("nimbus/local/nimbus/binaries")
        .join("0".repeat(64))
        .exists());

    // A topology that does not validate.
    let mut spec = squall_api::TopologySpec::default();
    let bolt = squall_api::ComponentSpec {
        kind: squall_api::ComponentKind::Bolt,
        parallelism: 1,
        num_tasks: 1,
        inputs: vec![squall_api::Subscription {
            source: "nowhere".into(),
            grouping: squall_api::Grouping::Shuffle,
        }],
        outputs: Default::default(),
        conf: Default::default(),
    };
    let mut spout = bolt.clone();
    spout.kind = squall_api::ComponentKind::Spout;
    spout.inputs.clear();
    spec.components.insert("spout".into(), spout);
    spec.components.insert("bolt".into(), bolt);
    let request = |name: &str, spec: &squall_api::TopologySpec, sha: &str| SubmitRequest {
        name: name.into(),
        spec: spec.clone(),
        conf: squall_api::Config::new(),
        binary_sha256: sha.into(),
        args: vec![],
        owner: "test".into(),
    };
    let err = block(client.submit(&request("broken", &spec, &sha))).unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string()
            .contains("bolt 'bolt' subscribes to unknown component 'nowhere'"),
        "{err}"
    );

    // A binary that was never uploaded.
    spec.components.get_mut("bolt").unwrap().inputs[0].source = "spout".into();
    spec.components.get_mut("spout").unwrap().outputs.insert(
        "default".into(),
        squall_api::StreamDecl {
            fields: ["x"].into(),
            direct: false,
        },
    );
    let err = block(client.submit(&request("orphan", &spec, &"a".repeat(64)))).unwrap_err();
    assert!(err.to_string().contains("has not been uploaded"), "{err}");

    // A window longer than the message timeout (30 s by default), sent straight to
    // Nimbus, past the client-side checks of `squall jar`.
    let mut windowed = spec.clone();
    let wconf = &mut windowed.components.get_mut("bolt").unwrap().conf;
    wconf.set("topology.bolts.window.length.duration.ms", 40_000u64);
    wconf.set("topology.bolts.sliding.interval.duration.ms", 1_000u64);
    let err = block(client.submit(&request("windowed", &windowed, &sha))).unwrap_err();
    assert_eq!(err.status(), Some(400));
    let text = err.to_string();
    assert!(
        text.contains("invalid configuration for 'windowed'") && text.contains("'bolt'"),
        "{text}"
    );
    assert!(text.contains("topology.message.timeout.secs"), "{text}");

    // A bad name.
    let err = block(client.submit(&request("a/b", &spec, &sha))).unwrap_err();
    assert!(err.to_string().contains("invalid topology name"), "{err}");

    // Garbage instead of JSON, and a request line that is not HTTP.
    let (code, body) = raw_http(c.nimbus_port, "POST", "/nimbus/v1/topologies", b"{not json");
    assert_eq!(code, 400);
    assert!(body.contains("invalid request body"), "{body}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.nimbus_port)).unwrap();
    let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    drop(s);

    // Nothing was stored and Nimbus still answers.
    assert!(block(client.list()).unwrap().is_empty());
    let out = c.squall(&["kill", "nope"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("no topology named or with id 'nope'"),
        "{}",
        stdout(&out)
    );

    // An unreachable Nimbus is one clear line.
    let out = Command::new(SQUALL)
        .args(["list", "-c", "nimbus.seeds=[\"127.0.0.1\"]", "-c"])
        .arg(format!("nimbus.thrift.port={}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stdout(&out).starts_with("error: Nimbus unreachable at 127.0.0.1:"),
        "{}",
        stdout(&out)
    );
}
