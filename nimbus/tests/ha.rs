//! Nimbus high availability against a real ZooKeeper: two Nimbus processes, the leader
//! killed with SIGKILL, the standby takes over.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use squall_cluster::dev_zookeeper::ZooKeeperServer;

const CONF_ENV: &str = "SQUALL_TEST_NIMBUS_CONF";

/// Not a test: the body of a Nimbus child process (run by `spawn_child`).
#[test]
#[ignore = "the body of a Nimbus child process, run by spawn_child"]
fn nimbus_child() {
    let Ok(file) = std::env::var(CONF_ENV) else {
        return;
    };
    let conf = load(std::path::Path::new(&file));
    rt().block_on(squall_nimbus::start(
        conf,
        tokio_util::sync::CancellationToken::new(),
    ))
    .unwrap();
}

fn spawn_child(conf: &std::path::Path) -> Child {
    let log = std::fs::File::create(conf.with_file_name("nimbus.log")).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "nimbus_child", "--nocapture"])
        .env(CONF_ENV, conf)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

struct KillOnDrop(Vec<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_standby_takes_over_when_the_leader_dies() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let seeds = format!("nimbus.seeds: [\"{a1}\", \"{a2}\"]\n");
    let c1 = nimbus_conf(dir.path(), zk.port(), p1, &seeds);
    let c2 = nimbus_conf(dir.path(), zk.port(), p2, &seeds);
    let rt = rt();
    let state = rt.block_on(state(zk.port()));

    let mut children = KillOnDrop(vec![spawn_child(&c1)]);
    assert!(
        rt.block_on(wait_leader(&state, &a1, Duration::from_secs(30))),
        "the first Nimbus did not lead:\n{}",
        std::fs::read_to_string(c1.with_file_name("nimbus.log")).unwrap_or_default()
    );
    children.0.push(spawn_child(&c2));
    let standby = client(&a2);
    assert!(rt.block_on(wait_until(Duration::from_secs(30), || async {
        standby.list().await.is_ok()
    })));

    // Writes through the standby reach the leader: upload and submit.
    let bin = binary(dir.path(), "not really a binary, but bytes with a SHA-256");
    let sha = rt.block_on(standby.upload_binary(&bin)).unwrap();
    let first = rt
        .block_on(standby.submit(&request("first", &sha, 2, 1)))
        .expect("a submission through the standby is passed on to the leader");
    // Reads are answered by either.
    let listed = rt.block_on(standby.list()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, first.topology_id);

    // The standby copies the binary from the leader in the background.
    let copied = c2
        .with_file_name("local")
        .join("nimbus/binaries")
        .join(&sha);
    assert!(
        rt.block_on(wait_until(Duration::from_secs(15), || {
            let copied = copied.clone();
            async move { copied.is_file() }
        })),
        "the standby did not copy the binary"
    );

    // Kill the leader outright (no chance to hand over).
    children.0[0].kill().unwrap();
    children.0[0].wait().unwrap();
    let killed = Instant::now();
    assert!(
        rt.block_on(wait_leader(&state, &a2, Duration::from_secs(10))),
        "the standby did not take over within 10 s:\n{}",
        std::fs::read_to_string(c2.with_file_name("nimbus.log")).unwrap_or_default()
    );
    let seeds_client = client(&a1); // the dead one first, as a seed list would
    let second = rt.block_on(async {
        loop {
            // Through the seed list: the dead seed is unreachable, the next one leads.
            let mut last = None;
            for addr in [&a1, &a2] {
                match client(addr).submit(&request("second", &sha, 1, 1)).await {
                    Ok(r) => return r,
                    Err(e) => last = Some(e),
                }
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "no submission after failover: {:?}",
                last
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!(
        "failover: the standby accepted a submission {:.2} s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    assert!(rt.block_on(seeds_client.list()).is_err());
    let listed = rt.block_on(client(&a2).list()).unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    // Ids stay unique across leaders: the counter lives in ZooKeeper.
    let number = |id: &str| id.split('-').nth(1).unwrap().parse::<u64>().unwrap();
    assert_eq!(number(&first.topology_id), 1);
    assert_eq!(number(&second.topology_id), 2);
    // The new leader knows the first topology's code (from ZooKeeper).
    let info = rt.block_on(client(&a2).info("first")).unwrap();
    assert_eq!(info.summary.num_tasks, 2);

    // The old leader comes back as a standby and passes writes on.
    children.0[0] = spawn_child(&c1);
    let back = client(&a1);
    assert!(rt.block_on(wait_until(Duration::from_secs(30), || async {
        back.list().await.is_ok()
    })));
    rt.block_on(back.deactivate("first"))
        .expect("the returning Nimbus passes writes to the leader");
    let status = rt
        .block_on(client(&a2).info("first"))
        .unwrap()
        .summary
        .status;
    assert_eq!(status.to_string(), "INACTIVE");
    assert_eq!(
        rt.block_on(state.leader()).unwrap().as_deref(),
        Some(a2.as_str())
    );
}
