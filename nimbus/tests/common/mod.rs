//! Shared pieces of Nimbus's tests: a real ZooKeeper, Nimbus daemons in-process or as
//! child processes, a minimal topology.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use squall_api::{Config, OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyBuilder};
use squall_cluster::rpc::{NimbusClient, SubmitRequest};
use squall_cluster::zk::ClusterState;
use tokio_util::sync::CancellationToken;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A Nimbus config file in `dir`: its own local dir and port, the given extra lines.
pub fn nimbus_conf(dir: &Path, zk_port: u16, port: u16, extra: &str) -> PathBuf {
    let local = dir.join(format!("nimbus-{port}"));
    std::fs::create_dir_all(&local).unwrap();
    let file = local.join("storm.yaml");
    std::fs::write(
        &file,
        format!(
            "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
             storm.zookeeper.port: {zk_port}\n\
             storm.zookeeper.session.timeout: 4000\n\
             storm.local.hostname: 127.0.0.1\n\
             storm.local.dir: {}\n\
             nimbus.thrift.port: {port}\n\
             {extra}",
            local.join("local").display()
        ),
    )
    .unwrap();
    file
}

pub fn load(file: &Path) -> Config {
    squall_cluster::config::load(Some(file), &[]).unwrap()
}

/// Runs `squall_nimbus::start` in the background until the token is cancelled.
pub fn spawn_nimbus(rt: &tokio::runtime::Runtime, conf: Config) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    rt.spawn(async move {
        if let Err(e) = squall_nimbus::start(conf, t).await {
            panic!("nimbus failed: {e}");
        }
    });
    token
}

pub async fn state(zk_port: u16) -> ClusterState {
    ClusterState::connect(
        &format!("127.0.0.1:{zk_port}"),
        "/squall",
        Duration::from_secs(4),
    )
    .await
    .unwrap()
}

/// Waits until `addr` leads.
/// Waits until `addr` holds the leader lock *and* acts as leader (it answers a write
/// itself: 404 for an unknown topology, or 401 when it wants a secret this probe lacks).
pub async fn wait_leader(state: &ClusterState, addr: &str, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        state.leader().await.ok().flatten().as_deref() == Some(addr)
            && matches!(
                client(addr).activate("no-such-topology").await,
                Err(e) if matches!(e.status(), Some(404 | 401))
            )
    })
    .await
}

#[derive(Clone)]
pub struct Quiet;

impl Spout for Quiet {
    fn next_tuple(&mut self, _out: &mut SpoutOutputCollector<'_>) {}
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["x"]);
    }
}

/// A submission of a one-spout topology with `parallelism` executors and `workers`
/// workers, for binary `sha`.
pub fn request(name: &str, sha: &str, parallelism: u32, workers: u32) -> SubmitRequest {
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Quiet, parallelism);
    let topology = b.create_topology().unwrap();
    let mut conf = Config::new();
    conf.set_num_workers(workers);
    conf.set_num_ackers(0);
    SubmitRequest {
        name: name.into(),
        spec: topology.spec().clone(),
        conf,
        binary_sha256: sha.into(),
        args: vec![],
        owner: "test".into(),
    }
}

/// A small "binary" with distinct content; returns its path.
pub fn binary(dir: &Path, content: &str) -> PathBuf {
    let p = dir.join(format!("bin-{}", content.len()));
    std::fs::write(&p, content).unwrap();
    p
}

pub fn client(addr: &str) -> NimbusClient {
    NimbusClient::new(addr).with_timeout(Duration::from_secs(5))
}
