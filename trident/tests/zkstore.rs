//! [`ZkStore`] against a real ZooKeeper server (Debian's package, started on a free port;
//! `scripts/ensure-zookeeper.sh` installs it).

use std::time::{Duration, Instant};

use squall_api::Config;
use squall_cluster::dev_zookeeper::{ZooKeeperOptions, ZooKeeperServer};
use squall_trident::store::{CoordinatorStore, ZkStore};

fn start_zookeeper() -> ZooKeeperServer {
    ZooKeeperServer::start_temp()
        .expect("ZooKeeper starts (scripts/ensure-zookeeper.sh installs it)")
}

/// The configuration a cluster worker hands its components, for a server at `servers`.
fn conf(servers: &str, root: &str) -> Config {
    let (host, port) = servers.rsplit_once(':').expect("host:port");
    let mut conf = Config::new();
    conf.set(
        "storm.zookeeper.servers",
        vec![squall_api::Value::from(host)],
    )
    .set("storm.zookeeper.port", port.parse::<u64>().expect("port"))
    .set("storm.zookeeper.root", root)
    // ZooKeeper's shortest (2 x tickTime): the store's calls time out after it.
    .set("storm.zookeeper.session.timeout", 4000);
    conf
}

fn store(zk: &ZooKeeperServer) -> ZkStore {
    ZkStore::from_conf(&conf(&zk.connect_string(), "/squall")).expect("store connects")
}

/// A plain client, to look at the nodes the store wrote.
fn raw_get(servers: &str, path: &str) -> Option<Vec<u8>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = zookeeper_client::Client::connect(servers).await.unwrap();
            match client.get_data(path).await {
                Ok((data, _)) => Some(data),
                Err(zookeeper_client::Error::NoNode) => None,
                Err(e) => panic!("get {path}: {e}"),
            }
        })
}

#[test]
fn put_get_overwrite_and_delete_under_the_transactional_directory() {
    let zk = start_zookeeper();
    let s = store(&zk);
    assert_eq!(s.get("words/coordinator").unwrap(), None);

    // Parents are created; the value sits where Storm users look for it.
    s.put("words/coordinator", br#"{"txid":1}"#).unwrap();
    assert_eq!(
        s.get("words/coordinator").unwrap().as_deref(),
        Some(&br#"{"txid":1}"#[..])
    );
    assert_eq!(
        s.path("words/coordinator").unwrap(),
        "/squall/transactional/words/coordinator"
    );
    assert_eq!(
        raw_get(
            &zk.connect_string(),
            "/squall/transactional/words/coordinator"
        )
        .as_deref(),
        Some(&br#"{"txid":1}"#[..])
    );
    // A key that only has keys under it holds no value.
    assert_eq!(s.get("words").unwrap(), None);

    // Overwrite, also with a longer and a shorter value.
    s.put("words/coordinator", br#"{"txid":22,"attempt":3}"#)
        .unwrap();
    assert_eq!(
        s.get("words/coordinator").unwrap().as_deref(),
        Some(&br#"{"txid":22,"attempt":3}"#[..])
    );
    s.put("words/coordinator", b"{}").unwrap();
    assert_eq!(
        s.get("words/coordinator").unwrap().as_deref(),
        Some(&b"{}"[..])
    );

    // A value of almost the largest size round-trips; a larger one is refused, clearly.
    let big = vec![b'x'; 900_000];
    s.put("words/big", &big).unwrap();
    assert_eq!(s.get("words/big").unwrap(), Some(big));
    let e = s.put("words/huge", &vec![b'x'; 2_000_000]).unwrap_err();
    assert!(
        e.to_string().contains("/squall/transactional/words/huge"),
        "{e}"
    );
    assert!(e.to_string().contains("2000000 bytes"), "{e}");
    assert_eq!(s.get("words/huge").unwrap(), None);

    // Delete is recursive and leaves the neighbours alone.
    s.put("words/emitter/spout/p0", b"[0,10]").unwrap();
    s.put("words/emitter/spout/p1", b"[10,20]").unwrap();
    s.put("words/emitter/spout/p1/deeper", b"1").unwrap();
    s.put("words/emitter/spoutx", b"keep").unwrap();
    s.delete("words/emitter/spout").unwrap();
    assert_eq!(s.get("words/emitter/spout/p0").unwrap(), None);
    assert_eq!(s.get("words/emitter/spout/p1").unwrap(), None);
    assert_eq!(s.get("words/emitter/spout/p1/deeper").unwrap(), None);
    assert_eq!(
        raw_get(
            &zk.connect_string(),
            "/squall/transactional/words/emitter/spout"
        ),
        None
    );
    assert_eq!(
        s.get("words/emitter/spoutx").unwrap().as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(
        s.get("words/coordinator").unwrap().as_deref(),
        Some(&b"{}"[..])
    );

    // Absent keys: deleting is fine, reading gives nothing; a key can be written again.
    s.delete("words/emitter/spout").unwrap();
    s.delete("never/written").unwrap();
    assert_eq!(s.get("never/written").unwrap(), None);
    s.put("words/emitter/spout/p0", b"[20,30]").unwrap();
    assert_eq!(
        s.get("words/emitter/spout/p0").unwrap().as_deref(),
        Some(&b"[20,30]"[..])
    );

    // Deleting a whole topology's keys.
    s.delete("words").unwrap();
    assert_eq!(s.get("words/coordinator").unwrap(), None);
    assert_eq!(
        raw_get(&zk.connect_string(), "/squall/transactional/words"),
        None
    );
    assert!(raw_get(&zk.connect_string(), "/squall/transactional").is_some());
}

#[test]
fn bad_keys_are_errors_that_change_nothing() {
    let zk = start_zookeeper();
    let s = store(&zk);
    s.put("a", b"1").unwrap();
    for bad in ["", "/a", "a/", "a//b", "../a", "a\u{1}"] {
        let e = s.put(bad, b"2").unwrap_err().to_string();
        assert!(e.contains("invalid key"), "{bad:?}: {e}");
        assert!(s.get(bad).is_err(), "{bad:?}");
        assert!(s.delete(bad).is_err(), "{bad:?}");
    }
    // In particular, an empty key did not delete everything.
    assert_eq!(s.get("a").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn two_stores_see_each_others_writes_and_values_outlive_a_store() {
    let zk = start_zookeeper();
    let a = store(&zk);
    let b = store(&zk);
    a.put("t/coordinator/currtx", b"7").unwrap();
    assert_eq!(
        b.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"7"[..])
    );
    b.put("t/coordinator/currtx", b"8").unwrap();
    assert_eq!(
        a.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"8"[..])
    );
    b.delete("t").unwrap();
    assert_eq!(a.get("t/coordinator/currtx").unwrap(), None);

    // A coordinator restarted elsewhere (a new store) carries on from what was written.
    a.put("t/coordinator/currtx", b"9").unwrap();
    drop(a);
    drop(b);
    let c = store(&zk);
    assert_eq!(
        c.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"9"[..])
    );

    // Another root is another namespace.
    let other = ZkStore::from_conf(&conf(&zk.connect_string(), "/other/")).unwrap();
    assert_eq!(other.path("t").unwrap(), "/other/transactional/t");
    assert_eq!(other.get("t/coordinator/currtx").unwrap(), None);
}

#[test]
fn many_threads_share_one_store() {
    let zk = start_zookeeper();
    let s = store(&zk);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..20 {
                    let key = format!("shared/t{t}/k{i}");
                    s.put(&key, format!("{t}-{i}").as_bytes()).unwrap();
                    assert_eq!(s.get(&key).unwrap(), Some(format!("{t}-{i}").into_bytes()));
                }
            });
        }
    });
    assert_eq!(
        s.get("shared/t3/k19").unwrap().as_deref(),
        Some(&b"3-19"[..])
    );
    s.delete("shared").unwrap();
    assert_eq!(s.get("shared/t3/k19").unwrap(), None);
}

#[test]
fn no_server_is_an_error_naming_it_in_bounded_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let e = ZkStore::from_conf(&conf(&servers, "/squall"))
        .err()
        .expect("nothing listens there")
        .to_string();
    assert!(e.contains(&servers), "{e}");
    assert!(e.contains("/squall/transactional"), "{e}");
    // The call timeout (4 s) plus a margin, not forever.
    assert!(started.elapsed() < Duration::from_secs(30), "{e}");
}

#[test]
fn the_store_recovers_after_zookeeper_restarts() {
    let data = tempfile::tempdir().unwrap();
    let zk = ZooKeeperServer::start(ZooKeeperOptions::new(data.path())).expect("ZooKeeper starts");
    let port = zk.port();
    let servers = zk.connect_string();
    let s = store(&zk);
    s.put("t/coordinator/currtx", b"41").unwrap();

    // While ZooKeeper is down, calls fail (they do not hang) and say what failed where.
    zk.stop().unwrap();
    let e = s
        .put("t/coordinator/currtx", b"42")
        .unwrap_err()
        .to_string();
    assert!(e.contains(&servers), "{e}");
    assert!(
        e.contains("/squall/transactional/t/coordinator/currtx"),
        "{e}"
    );
    assert!(s.get("t/coordinator/currtx").is_err());
    eprintln!("while down: {e}");

    // Back on the same port with the same data: the next call gets through.
    let mut opts = ZooKeeperOptions::new(data.path());
    opts.port = port;
    let zk = ZooKeeperServer::start(opts).expect("ZooKeeper starts again");
    let started = Instant::now();
    assert_eq!(
        s.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"41"[..])
    );
    eprintln!("first call after the restart took {:?}", started.elapsed());
    s.put("t/coordinator/currtx", b"43").unwrap();
    assert_eq!(
        s.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"43"[..])
    );

    // Restarted while the store sat idle (its session drops in the background).
    zk.stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut opts = ZooKeeperOptions::new(data.path());
    opts.port = port;
    let _zk = ZooKeeperServer::start(opts).expect("ZooKeeper starts a third time");
    assert_eq!(
        s.get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"43"[..])
    );
    s.put("t/coordinator/currtx", b"44").unwrap();
    assert_eq!(
        store(&_zk).get("t/coordinator/currtx").unwrap().as_deref(),
        Some(&b"44"[..])
    );
}
