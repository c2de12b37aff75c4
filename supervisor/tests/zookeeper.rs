//! The supervisor against a real ZooKeeper, with a stand-in worker (a shell script that
//! heartbeats like a worker): it heartbeats its node, keeps a worker whose executors did
//! not move when the assignment version changes, keeps its workers while ZooKeeper is
//! down and registers again when it is back, stops and cleans up what is unassigned.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use squall_api::{Config, TaskId};
use squall_cluster::dev_zookeeper::{ZooKeeperOptions, ZooKeeperServer};
use squall_cluster::state::{Assignment, ExecutorAssignment, WorkerLaunch, WorkerSlot};
use squall_cluster::zk::ClusterState;
use tokio_util::sync::CancellationToken;

const ID: &str = "sup-test";
const SHA: &str = "stand-in-worker";

/// Writes a heartbeat file next to its launch file every 200 ms, like a worker.
const WORKER: &str = r#"#!/bin/sh
hb="$(dirname "$SQUALL_WORKER_SPEC")/heartbeat"
while :; do
  printf '{"topology_id":"t","assignment_version":1,"time_secs":%s,"pid":%s}' "$(date +%s)" "$$" > "$hb.tmp"
  mv "$hb.tmp" "$hb"
  sleep 0.2
done
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn assignment(port: u16, version: u64, other_port: u16) -> Assignment {
    let slot = |port| WorkerSlot {
        node: ID.into(),
        port,
    };
    Assignment {
        topology_id: "t-1-1".into(),
        topology_name: "t".into(),
        binary_sha256: SHA.into(),
        args: vec![],
        conf: Config::new(),
        executors: vec![
            ExecutorAssignment {
                component: "spout".into(),
                first: TaskId(1),
                last: TaskId(1),
                slot: slot(port),
            },
            // Another executor, moved between versions: this slot's work is unchanged.
            ExecutorAssignment {
                component: "bolt".into(),
                first: TaskId(2),
                last: TaskId(2),
                slot: WorkerSlot {
                    node: "elsewhere".into(),
                    port: other_port,
                },
            },
        ],
        node_host: BTreeMap::new(),
        slot_start_secs: BTreeMap::new(),
        version,
        epoch: 1,
    }
}

fn pid_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_heartbeats_keeps_workers_through_zookeeper_outages_and_cleans_up() {
    let zk_dir = tempfile::tempdir().unwrap();
    let zk_port = free_port();
    let zk_opts = || {
        let mut o = ZooKeeperOptions::new(zk_dir.path().join("data"));
        o.port = zk_port;
        o
    };
    let zk = ZooKeeperServer::start(zk_opts()).expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(local.join("supervisor/binaries")).unwrap();
    std::fs::write(local.join("supervisor/id"), ID).unwrap();
    let bin = local.join("supervisor/binaries").join(SHA);
    std::fs::write(&bin, WORKER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A stray partial download and an unused binary: cleaned up (the binary only after
    // its grace, so it stays during this test).
    std::fs::write(local.join("supervisor/binaries/abc.part"), b"x").unwrap();
    let port = free_port();
    let conf = squall_cluster::config::load(
        None,
        &[
            "storm.zookeeper.servers=[\"127.0.0.1\"]".into(),
            format!("storm.zookeeper.port={zk_port}"),
            "storm.zookeeper.session.timeout=4000".into(),
            format!("storm.local.dir={}", local.display()),
            format!("supervisor.slots.ports=[{port}]"),
            "supervisor.heartbeat.frequency.secs=1".into(),
            "supervisor.monitor.frequency.secs=1".into(),
            "supervisor.worker.shutdown.sleep.secs=1".into(),
            "nimbus.seeds=[\"127.0.0.1\"]".into(),
            format!("nimbus.thrift.port={}", free_port()),
        ],
    )
    .unwrap();
    let state = ClusterState::connect(&zk.connect_string(), "/squall", Duration::from_secs(4))
        .await
        .unwrap();
    state
        .set_assignment(&assignment(port, 1, 7000))
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let sup = tokio::spawn(squall_supervisor::start(conf, shutdown.clone()));

    // 1. Registered, and its heartbeat moves on.
    let beat = async |state: &ClusterState| {
        state
            .supervisors()
            .await
            .ok()
            .and_then(|s| s.into_iter().find(|s| s.id == ID))
            .map(|s| s.heartbeat_secs)
    };
    wait_until("registration", async || beat(&state).await.is_some()).await;
    let first = beat(&state).await.unwrap();
    wait_until("a newer heartbeat", async || {
        beat(&state).await.is_some_and(|b| b > first)
    })
    .await;

    // The worker runs.
    let wdir: PathBuf = local.join("workers").join(format!("t-1-1-{port}"));
    wait_until("the worker", async || {
        pid_of(&wdir).is_some_and(alive) && wdir.join("heartbeat").exists()
    })
    .await;
    let pid = pid_of(&wdir).unwrap();
    assert!(!local.join("supervisor/binaries/abc.part").exists());

    // 2. A new version that moves only another executor: same worker, new launch file.
    state
        .set_assignment(&assignment(port, 2, 7001))
        .await
        .unwrap();
    let launch_version = || {
        std::fs::read(wdir.join("launch.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<WorkerLaunch>(&b).ok())
            .map(|l| l.assignment.version)
    };
    wait_until("the launch file update", async || {
        launch_version() == Some(2)
    })
    .await;
    assert_eq!(pid_of(&wdir), Some(pid));
    assert!(alive(pid));

    // 10. ZooKeeper goes away for longer than the session: the worker is kept.
    drop(state);
    zk.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        alive(pid),
        "the worker was stopped while ZooKeeper was down"
    );
    assert_eq!(pid_of(&wdir), Some(pid));
    let zk = ZooKeeperServer::start(zk_opts()).expect("ZooKeeper restarts");
    let state = ClusterState::connect(&zk.connect_string(), "/squall", Duration::from_secs(4))
        .await
        .unwrap();
    // Registered again (the old session expired), heartbeating, the worker untouched.
    let back = squall_cluster::state::now_secs();
    wait_until("re-registration", async || {
        beat(&state).await.is_some_and(|b| b > back)
    })
    .await;
    assert!(alive(pid));
    assert_eq!(pid_of(&wdir), Some(pid));

    // 4 + 5. Unassigned: stopped, its directory removed; its logs stay (retention).
    state.remove_assignment("t-1-1").await.unwrap();
    wait_until("the worker to stop", async || !alive(pid)).await;
    wait_until("the worker dir to go", async || !wdir.exists()).await;
    assert!(local
        .join("workers-artifacts/t-1-1")
        .join(port.to_string())
        .join("worker.log")
        .exists());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), sup)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The supervisor's node goes with its session.
    wait_until("deregistration", async || beat(&state).await.is_none()).await;
}
