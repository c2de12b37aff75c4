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

#[test]
fn ids_are_unique_across_sessions_code_round_trips_and_the_leader_is_the_lowest_candidate() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    block(async {
        let servers = zk.connect_string();
        let connect = || ClusterState::connect(&servers, "/squall", Duration::from_secs(6));
        let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
        // Two Nimbus sessions taking numbers at once never get the same one.
        let (xs, ys) = tokio::join!(
            async {
                let mut v = Vec::new();
                for _ in 0..20 {
                    v.push(a.next_topology_number().await.unwrap());
                }
                v
            },
            async {
                let mut v = Vec::new();
                for _ in 0..20 {
                    v.push(b.next_topology_number().await.unwrap());
                }
                v
            }
        );
        let mut all: Vec<u64> = xs.into_iter().chain(ys).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=40).collect::<Vec<u64>>());

        // Code is stored for any Nimbus to read, and removed with the topology.
        let code = serde_json::json!({"spec": {"x": 1}, "conf": {}});
        a.set_code("wc-1-1", &code).await.unwrap();
        assert_eq!(
            b.code::<serde_json::Value>("wc-1-1").await.unwrap(),
            Some(code)
        );
        assert_eq!(b.topology_nodes("wc-1-1").await.unwrap().len(), 1);
        b.remove_code("wc-1-1").await.unwrap();
        assert!(a.topology_nodes("wc-1-1").await.unwrap().is_empty());

        // The election: the lowest sequence leads; when it goes, the next one does.
        assert_eq!(a.leader().await.unwrap(), None);
        let dir = a.leader_lock_dir();
        let ephemeral_seq = zookeeper_client::CreateMode::EphemeralSequential
            .with_acls(zookeeper_client::Acls::anyone_all());
        let (_, s1) = a
            .client()
            .create(&format!("{dir}/_c_x-latch-"), b"h1:1", &ephemeral_seq)
            .await
            .unwrap();
        b.client()
            .create(&format!("{dir}/_c_y-latch-"), b"h2:2", &ephemeral_seq)
            .await
            .unwrap();
        assert_eq!(b.leader().await.unwrap().as_deref(), Some("h1:1"));
        assert_eq!(b.nimbus_candidates().await.unwrap().len(), 2);
        a.client()
            .delete(&format!("{dir}/_c_x-latch-{s1}"), None)
            .await
            .unwrap();
        assert_eq!(a.leader().await.unwrap().as_deref(), Some("h2:2"));
    });
}
