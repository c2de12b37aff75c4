//! Failure detection and partial rescheduling against a real ZooKeeper and a real
//! Nimbus; supervisors and workers are played by the test (their ZooKeeper nodes and
//! heartbeats), so it can make them fall silent at will.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::rpc::{NimbusClient, RebalanceCommand};
use squall_cluster::state::{
    now_secs, Assignment, ErrorInfo, ExecutorHeartbeat, HeartbeatResponse, RebalanceRequest,
    SupervisorInfo, WorkerHeartbeat, WorkerSlot,
};
use squall_cluster::zk::ClusterState;

fn supervisor(id: &str, beat: u64) -> SupervisorInfo {
    SupervisorInfo {
        id: id.into(),
        hostname: "127.0.0.1".into(),
        ports: vec![6700, 6701],
        start_time_secs: 1,
        version: "test".into(),
        heartbeat_secs: beat,
    }
}

fn slot(node: &str, port: u16) -> WorkerSlot {
    WorkerSlot {
        node: node.into(),
        port,
    }
}

/// The heartbeat a worker on `slot` running `a`'s executors there would send.
fn worker_heartbeat(a: &Assignment, slot: &WorkerSlot) -> WorkerHeartbeat {
    WorkerHeartbeat {
        topology_id: a.topology_id.clone(),
        supervisor_id: slot.node.clone(),
        host: "127.0.0.1".into(),
        port: slot.port,
        assignment_version: a.version,
        epoch: a.epoch,
        uptime_secs: 1,
        time_secs: now_secs(),
        executors: a
            .executors_of(slot)
            .into_iter()
            .map(|e| ExecutorHeartbeat {
                component: e.component.clone(),
                first: e.first,
                last: e.last,
                ..Default::default()
            })
            .collect(),
        errors: vec![],
    }
}

/// What the test's supervisors and workers do.
#[derive(Default)]
struct Cluster {
    /// Supervisors that heartbeat (their node changes).
    alive: BTreeSet<String>,
    /// Worker slots that fell silent (the others heartbeat, whatever their supervisor).
    silent: BTreeSet<WorkerSlot>,
}

/// Plays the supervisors and workers of `alive` every 300 ms.
async fn play(
    state: ClusterState,
    nimbus: NimbusClient,
    topology: String,
    cluster: Arc<Mutex<Cluster>>,
) {
    let mut beat = 1;
    loop {
        beat += 1;
        let (alive, silent) = {
            let c = cluster.lock().unwrap();
            (c.alive.clone(), c.silent.clone())
        };
        for id in &alive {
            let _ = state.update_supervisor(&supervisor(id, beat)).await;
        }
        if let Ok(Some(a)) = state.assignment(&topology).await {
            for s in a.slots() {
                if !silent.contains(&s) {
                    let _ = nimbus.heartbeat(&worker_heartbeat(&a, &s)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Sends `hb` until Nimbus answers `want` (up to 5 s); returns the last answer.
fn verdict_becomes(
    rt: &tokio::runtime::Runtime,
    c: &NimbusClient,
    hb: &WorkerHeartbeat,
    want: HeartbeatResponse,
) -> HeartbeatResponse {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = rt.block_on(c.heartbeat(hb)).unwrap();
        if got == want || std::time::Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 15 s) for an assignment of `id` that satisfies `done`; returns the last
/// one seen.
async fn wait_assignment(
    state: &ClusterState,
    id: &str,
    done: impl Fn(&Assignment) -> bool,
) -> Assignment {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = state.assignment(id).await.unwrap().unwrap();
        if done(&a) || std::time::Instant::now() > end {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn dead_workers_move_and_only_they_and_topologies_spread_out_again() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = nimbus_conf(
        dir.path(),
        zk.port(),
        port,
        &format!(
            "nimbus.seeds: [\"{addr}\"]\n\
             nimbus.monitor.freq.secs: 1\n\
             nimbus.supervisor.timeout.secs: 3\n\
             nimbus.task.timeout.secs: 2\n\
             supervisor.worker.start.timeout.secs: 3\n"
        ),
    );
    let rt = rt();
    let _nimbus = spawn_nimbus(&rt, load(&conf));
    let state = rt.block_on(state(zk.port()));
    assert!(rt.block_on(wait_leader(&state, &addr, Duration::from_secs(30))));
    let c = client(&addr);
    for id in ["a", "b"] {
        rt.block_on(state.register_supervisor(&supervisor(id, 1)))
            .unwrap();
    }

    let sha = rt
        .block_on(c.upload_binary(&binary(dir.path(), "bytes")))
        .unwrap();
    let id = rt
        .block_on(c.submit(&request("t", &sha, 6, 2)))
        .unwrap()
        .topology_id;
    let first = rt.block_on(state.assignment(&id)).unwrap().unwrap();
    assert_eq!(first.slots(), vec![slot("a", 6700), slot("b", 6700)]);
    let cluster = Arc::new(Mutex::new(Cluster {
        alive: BTreeSet::from(["a".into(), "b".into()]),
        ..Default::default()
    }));
    rt.spawn(play(state.clone(), c.clone(), id.clone(), cluster.clone()));

    // Workers that report exactly their executors are assigned; others are not.
    let hb = worker_heartbeat(&first, &slot("a", 6700));
    let assigned = |r: HeartbeatResponse| matches!(r, HeartbeatResponse::Assigned { .. });
    assert!(rt.block_on(wait_until(Duration::from_secs(5), || {
        let (c, hb) = (c.clone(), hb.clone());
        async move { c.heartbeat(&hb).await.is_ok_and(assigned) }
    })));
    let mut wrong = hb.clone();
    wrong.executors.pop();
    assert_eq!(
        rt.block_on(c.heartbeat(&wrong)).unwrap(),
        HeartbeatResponse::NotAssigned
    );
    let mut other_epoch = hb.clone();
    other_epoch.epoch += 1;
    assert_eq!(
        rt.block_on(c.heartbeat(&other_epoch)).unwrap(),
        HeartbeatResponse::NotAssigned
    );
    let mut unknown = hb.clone();
    unknown.topology_id = "gone-9-9".into();
    assert_eq!(
        rt.block_on(c.heartbeat(&unknown)).unwrap(),
        HeartbeatResponse::NotAssigned
    );

    // Supervisor b stops heartbeating (its worker goes on): after
    // nimbus.supervisor.timeout.secs its executors move to the free slot a:6701 (b gets
    // no new work); a:6700 keeps its own.
    cluster.lock().unwrap().alive.remove("b");
    let moved = rt.block_on(wait_assignment(&state, &id, |a| a.version > first.version));
    assert_eq!(moved.slots(), vec![slot("a", 6700), slot("a", 6701)]);
    assert_eq!(moved.epoch, first.epoch, "moving executors keeps the epoch");
    assert_eq!(moved.version, first.version + 1);
    for (before, after) in first.executors.iter().zip(&moved.executors) {
        let expected = if before.slot == slot("b", 6700) {
            slot("a", 6701)
        } else {
            before.slot.clone()
        };
        assert_eq!(after.slot, expected);
    }
    // The untouched worker still runs the old version: assigned, told the new one (as
    // soon as the heartbeat view, refreshed after each monitor pass, has it).
    assert_eq!(
        verdict_becomes(
            &rt,
            &c,
            &hb,
            HeartbeatResponse::Assigned {
                status: squall_cluster::state::TopologyStatus::Active,
                assignment_version: moved.version,
                log_levels: Default::default(),
            }
        ),
        HeartbeatResponse::Assigned {
            status: squall_cluster::state::TopologyStatus::Active,
            assignment_version: moved.version,
            log_levels: Default::default(),
        }
    );
    // The dead supervisor's worker is not.
    let dead_hb = worker_heartbeat(&first, &slot("b", 6700));
    assert_eq!(
        verdict_becomes(&rt, &c, &dead_hb, HeartbeatResponse::NotAssigned),
        HeartbeatResponse::NotAssigned
    );

    // The new worker on a:6701 never heartbeats: after its start grace its executors
    // join the surviving worker (no slot is free).
    cluster.lock().unwrap().silent.insert(slot("a", 6701));
    let squeezed = rt.block_on(wait_assignment(&state, &id, |a| a.version > moved.version));
    assert_eq!(squeezed.slots(), vec![slot("a", 6700)]);
    assert_eq!(squeezed.epoch, first.epoch);
    cluster.lock().unwrap().silent.clear();

    // A new supervisor: the topology asked for 2 workers and spreads out again.
    rt.block_on(state.register_supervisor(&supervisor("c", 1)))
        .unwrap();
    cluster.lock().unwrap().alive.insert("c".into());
    let spread = rt.block_on(wait_assignment(&state, &id, |a| a.slots().len() == 2));
    assert_eq!(spread.slots().len(), 2, "{spread:?}");
    assert!(spread.slots().iter().all(|s| s.node != "b"));
    assert_eq!(
        spread.epoch,
        first.epoch + 1,
        "a fresh schedule is a new epoch"
    );

    // A rebalance onto more workers than there are slots is refused, naming both.
    let err = rt
        .block_on(c.rebalance(
            "t",
            &RebalanceCommand {
                wait_secs: Some(0),
                request: RebalanceRequest {
                    num_workers: Some(5),
                    ..Default::default()
                },
            },
        ))
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(
        err.to_string().contains("onto 5 workers") && err.to_string().contains("only 4 slots"),
        "{err}"
    );

    // Errors of a live topology's worker are recorded (off the heartbeat path).
    let s0 = spread.slots()[0].clone();
    let mut with_error = worker_heartbeat(&spread, &s0);
    with_error.errors.push(ErrorInfo {
        component: "spout".into(),
        task: spread.executors_of(&s0)[0].first.0,
        host: "127.0.0.1".into(),
        port: s0.port,
        time_secs: now_secs(),
        error: "boom".into(),
    });
    let recorded = rt.block_on(async {
        // The spread worker may need a moment to count as assigned in the view.
        wait_until(Duration::from_secs(5), || {
            let (c, hb) = (c.clone(), with_error.clone());
            async move { c.heartbeat(&hb).await.is_ok_and(assigned) }
        })
        .await;
        wait_until(Duration::from_secs(5), || async {
            c.info("t")
                .await
                .is_ok_and(|i| i.errors.iter().any(|e| e.error == "boom"))
        })
        .await
    });
    assert!(recorded, "the worker's error was not recorded");

    // Killed: its errors are gone and a late heartbeat does not bring them back.
    rt.block_on(c.kill("t", Some(0))).unwrap();
    assert!(rt.block_on(wait_until(Duration::from_secs(10), || async {
        state.topology_nodes(&id).await.unwrap().is_empty()
    })));
    assert_eq!(
        rt.block_on(c.heartbeat(&with_error)).unwrap(),
        HeartbeatResponse::NotAssigned
    );
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(1500)).await });
    assert_eq!(
        rt.block_on(state.topology_nodes(&id)).unwrap(),
        Vec::<String>::new()
    );
}
