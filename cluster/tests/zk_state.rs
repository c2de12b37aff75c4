//! The cluster state store against a real ZooKeeper server.

use std::collections::BTreeMap;
use std::time::Duration;

use squall_api::{Config, TaskId};
use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::state::{
    Assignment, ErrorInfo, ExecutorAssignment, StormBase, SupervisorInfo, TopologyStatus,
    WorkerSlot,
};
use squall_cluster::zk::{ClusterState, ERRORS_PER_COMPONENT};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn base(id: &str) -> StormBase {
    StormBase {
        name: "wc".into(),
        topology_id: id.into(),
        status: TopologyStatus::Active,
        prev_status: None,
        num_workers: 2,
        component_executors: BTreeMap::from([("spout".to_owned(), 1)]),
        launch_time_secs: 1,
        owner: "me".into(),
        binary_sha256: "ab".repeat(32),
        args: vec!["wc".into()],
        action_at_secs: None,
        rebalance: None,
    }
}

#[test]
fn layout_round_trips_ephemerals_and_error_trimming() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    block(async {
        let s = ClusterState::connect(&zk.connect_string(), "/squall", Duration::from_secs(6))
            .await
            .unwrap();
        // Bases and assignments round-trip and are listed.
        s.set_storm(&base("wc-1-1")).await.unwrap();
        assert_eq!(s.storm("wc-1-1").await.unwrap(), Some(base("wc-1-1")));
        let a = Assignment {
            topology_id: "wc-1-1".into(),
            topology_name: "wc".into(),
            binary_sha256: "ab".repeat(32),
            args: vec![],
            conf: Config::new(),
            executors: vec![ExecutorAssignment {
                component: "spout".into(),
                first: TaskId(1),
                last: TaskId(1),
                slot: WorkerSlot {
                    node: "s1".into(),
                    port: 6700,
                },
            }],
            node_host: BTreeMap::from([("s1".to_owned(), "h1".to_owned())]),
            slot_start_secs: BTreeMap::new(),
            version: 1,
            epoch: 1,
        };
        s.set_assignment(&a).await.unwrap();

        // A node with data that is not an assignment is skipped, not fatal.
        let bad = s.path("assignments/garbage");
        s.client()
            .create(
                &bad,
                b"{not json",
                &zookeeper_client::CreateMode::Persistent
                    .with_acls(zookeeper_client::Acls::anyone_all()),
            )
            .await
            .unwrap();
        assert_eq!(s.assignments().await.unwrap(), vec![a.clone()]);

        // Supervisors are ephemeral: gone when their session closes.
        let other = ClusterState::connect(&zk.connect_string(), "/squall", Duration::from_secs(6))
            .await
            .unwrap();
        other
            .register_supervisor(&SupervisorInfo {
                id: "s1".into(),
                hostname: "h1".into(),
                ports: vec![6700],
                start_time_secs: 1,
                version: "x".into(),
                heartbeat_secs: 1,
            })
            .await
            .unwrap();
        assert_eq!(s.supervisors().await.unwrap().len(), 1);
        drop(other);
        let mut gone = false;
        for _ in 0..100 {
            if s.supervisors().await.unwrap().is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "an ephemeral supervisor node outlived its session");

        // Only the last 10 errors per component are kept.
        for i in 0..(ERRORS_PER_COMPONENT + 3) {
            s.add_error(
                "wc-1-1",
                &ErrorInfo {
                    component: "split".into(),
                    task: 3,
                    host: "h1".into(),
                    port: 6700,
                    time_secs: i as u64,
                    error: format!("boom {i}"),
                },
            )
            .await
            .unwrap();
        }
        let errors = s.errors("wc-1-1").await.unwrap();
        assert_eq!(errors.len(), ERRORS_PER_COMPONENT);
        assert_eq!(errors[0].error, "boom 3");

        // Removing a topology leaves no node behind.
        s.remove_assignment("wc-1-1").await.unwrap();
        s.remove_errors("wc-1-1").await.unwrap();
        s.remove_storm("wc-1-1").await.unwrap();
        assert!(s.topology_nodes("wc-1-1").await.unwrap().is_empty());
    });
}
