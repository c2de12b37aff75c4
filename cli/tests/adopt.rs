//! A supervisor killed with SIGKILL and started again (an upgrade, a crash) adopts the
//! workers it left running instead of restarting them, and still stops them gracefully
//! when they are no longer assigned. Real processes: ZooKeeper, Nimbus and the supervisor
//! from the built `squall` binary, WordCount as the topology.

mod common;
use common::{
    alive, block, free_port, spawn_daemon, stop_daemons, wait_until, word_count, worker_pids,
    SQUALL,
};

const PATIENCE: Duration = Duration::from_secs(90);

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::rpc::NimbusClient;

/// Kills the daemons on drop (SIGTERM, then SIGKILL).
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        stop_daemons(self.0.iter_mut().rev());
    }
}

fn counted(client: &NimbusClient) -> u64 {
    block(client.info("wc"))
        .ok()
        .and_then(|i| i.components.into_iter().find(|c| c.id == "count"))
        .map_or(0, |c| c.executed)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn a_restarted_supervisor_adopts_its_running_workers() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let nimbus_port = free_port();
    let base = format!(
        "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
         storm.zookeeper.port: {}\n\
         storm.zookeeper.session.timeout: 10000\n\
         nimbus.seeds: [\"127.0.0.1\"]\n\
         nimbus.thrift.port: {nimbus_port}\n\
         storm.local.hostname: 127.0.0.1\n\
         supervisor.monitor.frequency.secs: 1\n\
         supervisor.heartbeat.frequency.secs: 1\n",
        zk.port()
    );
    let config = |name: &str, extra: &str| -> PathBuf {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("storm.yaml");
        let local = d.join("local");
        std::fs::write(
            &f,
            format!("{base}storm.local.dir: {}\n{extra}", local.display()),
        )
        .unwrap();
        f
    };
    let nimbus_conf = config("nimbus", "");
    let sup_conf = config(
        "sup",
        &format!(
            "supervisor.slots.ports: [{}, {}]\n",
            free_port(),
            free_port()
        ),
    );
    let sup_dir = dir.path().join("sup");
    let sup_log = sup_dir.join("supervisor.log");
    let mut daemons = Daemons(vec![spawn_daemon(
        "nimbus",
        &nimbus_conf,
        &dir.path().join("nimbus/nimbus.log"),
    )]);
    let client = NimbusClient::new(&format!("127.0.0.1:{nimbus_port}"));
    assert!(wait_until(PATIENCE, || block(client.list()).is_ok()));
    daemons
        .0
        .push(spawn_daemon("supervisor", &sup_conf, &sup_log));

    let out = Command::new(SQUALL)
        .arg("jar")
        .arg(word_count())
        .args(["wc", "--workers", "2", "--rate", "2000", "--config"])
        .arg(&nimbus_conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(PATIENCE, || worker_pids(&sup_dir).len() == 2
            && counted(&client) > 0),
        "the workers did not start:\n{}",
        tail(&sup_log)
    );
    let pids = worker_pids(&sup_dir);

    // SIGKILL the supervisor: its workers keep running (own process group, output in
    // files, no pipe to the dead supervisor).
    let mut old = daemons.0.pop().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pids.iter().all(|&p| alive(p)),
        "workers died with the supervisor"
    );

    // Started again, it adopts them: the same pids ten seconds later, counts growing.
    daemons
        .0
        .push(spawn_daemon("supervisor", &sup_conf, &sup_log));
    assert!(
        wait_until(PATIENCE, || tail(&sup_log)
            .contains("adopted running worker")),
        "{}",
        tail(&sup_log)
    );
    let before = counted(&client);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        worker_pids(&sup_dir),
        pids,
        "workers were restarted instead of adopted:\n{}",
        tail(&sup_log)
    );
    assert!(
        wait_until(PATIENCE, || counted(&client) > before + 1000),
        "counts stopped growing after the adoption:\n{}",
        tail(&sup_log)
    );

    // An adopted worker no longer assigned is stopped (by pid: SIGTERM, then SIGKILL).
    let out = Command::new(SQUALL)
        .args(["kill", "wc", "-w", "1", "--config"])
        .arg(&nimbus_conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(PATIENCE, || pids.iter().all(|&p| !alive(p))),
        "adopted workers survived the kill:\n{}",
        tail(&sup_log)
    );
    drop(daemons);
    drop(zk);
}
