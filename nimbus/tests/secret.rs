//! The cluster secret on Nimbus's RPC: without it nothing is read or changed.

mod common;
use common::*;

use std::time::Duration;

use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::rpc::{NimbusClient, RpcError};
use squall_cluster::secret::Secret;
use squall_cluster::state::WorkerHeartbeat;

fn refused<T: std::fmt::Debug>(r: Result<T, RpcError>) {
    match r {
        Err(e) => assert_eq!(e.status(), Some(401), "{e}"),
        Ok(v) => panic!("accepted without the secret: {v:?}"),
    }
}

#[test]
fn every_endpoint_requires_the_secret() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "a-long-enough-cluster-secret\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = nimbus_conf(
        dir.path(),
        zk.port(),
        port,
        &format!(
            "nimbus.seeds: [\"{addr}\"]\nsquall.secret.file: {}\n",
            secret_file.display()
        ),
    );
    let rt = rt();
    let _nimbus = spawn_nimbus(&rt, load(&conf));
    let state = rt.block_on(state(zk.port()));
    assert!(rt.block_on(wait_leader(&state, &addr, Duration::from_secs(30))));
    let secret = Secret::from_file(&secret_file).unwrap();
    let good = client(&addr).with_secret(Some(secret));
    let wrong =
        client(&addr).with_secret(Some(Secret::new(b"not-the-cluster-secret-at-all").unwrap()));
    let none = client(&addr);
    let binaries = conf.with_file_name("local").join("nimbus/binaries");

    // Without (or with a wrong) secret: nothing is stored, nothing is read.
    let bin = binary(dir.path(), "topology bytes");
    for c in [&none, &wrong] {
        refused(rt.block_on(c.upload_binary(&bin)));
        refused(rt.block_on(c.list()));
        refused(rt.block_on(c.cluster()));
        refused(rt.block_on(c.heartbeat(&WorkerHeartbeat::default())));
    }
    assert_eq!(std::fs::read_dir(&binaries).unwrap().count(), 0);

    // With it, everything works.
    let sha = rt.block_on(good.upload_binary(&bin)).unwrap();
    assert!(binaries.join(&sha).is_file());
    refused(rt.block_on(none.submit(&request("t", &sha, 1, 1))));
    assert!(rt.block_on(state.storms()).unwrap().is_empty());
    rt.block_on(good.submit(&request("t", &sha, 1, 1))).unwrap();
    let dest = dir.path().join("downloaded");
    refused(rt.block_on(none.download_binary(&sha, &dest)));
    assert!(!dest.exists());
    rt.block_on(good.download_binary(&sha, &dest)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"topology bytes");

    // Steering needs it too.
    refused(rt.block_on(none.kill("t", Some(0))));
    refused(rt.block_on(wrong.deactivate("t")));
    let listed = rt.block_on(good.list()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status.to_string(), "ACTIVE");
    rt.block_on(good.kill("t", Some(0))).unwrap();

    // A raw request gets a JSON error naming the key.
    let raw: NimbusClient = client(&addr);
    let e = rt.block_on(raw.list()).unwrap_err().to_string();
    assert!(e.contains("squall.secret.file"), "{e}");
}
