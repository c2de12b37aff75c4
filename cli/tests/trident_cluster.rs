//! Trident's exactly-once promise on a real cluster, with kills. TridentWordCount
//! (`trident-word-count`) counts a known stream of sentences into a real Redis on three
//! workers spread over two supervisors (real ZooKeeper, Nimbus, `squall drpc`), while
//! workers are SIGKILLed again and again: the one running the master batch coordinator
//! (`$mastercoord-bg0`), ones holding count partitions, two at once, all at once. At the
//! end every count in Redis, and every DRPC answer, equals the count of an ideal run
//! exactly: no batch lost, none applied twice. The coordinator's metadata is in ZooKeeper under
//! `<storm.zookeeper.root>/transactional/sentences/`.
//!
//! Figures (sentences, kills, recoveries, time to converge) are printed on stderr
//! (`cargo test -p squall-cli --test trident_cluster -- --nocapture`).

mod common;
#[path = "../../trident/tests/common/redis.rs"]
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::chaos::ChaosCluster;
use common::{block, example, free_port, signal, stdout, stop_daemons, wait_until, SQUALL};
use squall_drpc::DrpcClient;
use squall_examples::trident::expected_counts;

/// `storm.zookeeper.root` (Squall's default).
const ROOT: &str = "/squall";
/// The topology's name (and so the prefix of its Redis keys).
const NAME: &str = "tcount";
/// The master batch coordinator of the sentences' batch group.
const COORDINATOR: &str = "$mastercoord-bg0";
/// The spout stream's name: its batch group's directory in ZooKeeper.
const SPOUT: &str = "sentences";
/// The component running the spout.
const SPOUT_COMPONENT: &str = "spout-sentences";
/// Sentences per round of kills: enough that the run lasts through them.
const SENTENCES_PER_ROUND: u64 = 150_000;
/// Spout partitions, and sentences per partition per batch.
const PARTITIONS: u64 = 2;
const BATCH_SIZE: u64 = 100;
/// `topology.message.timeout.secs`: a batch lost with a worker is replayed after
/// between one and two of these.
const MESSAGE_TIMEOUT_SECS: u64 = 10;
/// How long progress may take to resume after a kill.
const RECOVERY: Duration = Duration::from_secs(90);
/// How long the counts may take to converge after the last kill.
const CONVERGE: Duration = Duration::from_secs(150);

/// A `squall drpc` process on free ports; stopped on drop.
struct DrpcDaemon {
    child: Child,
    port: u16,
}

impl Drop for DrpcDaemon {
    fn drop(&mut self) {
        stop_daemons([&mut self.child]);
    }
}

fn start_drpc(dir: &Path) -> DrpcDaemon {
    let port = free_port();
    let config = dir.join("drpc.yaml");
    std::fs::write(
        &config,
        format!(
            "drpc.servers: [\"127.0.0.1\"]\ndrpc.port: {port}\ndrpc.invocations.port: -1\n\
             drpc.http.port: -1\ndrpc.request.timeout.secs: 30\n\
             storm.local.hostname: 127.0.0.1\n"
        ),
    )
    .unwrap();
    let log = dir.join("drpc.log");
    let mut child = common::spawn_daemon("drpc", &config, &log);
    let up = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("DRPC API listening on"))
            || !common::alive(child.id())
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !up || !common::alive(child.id()) {
        let _ = child.kill();
        panic!("squall drpc did not start:\n{text}");
    }
    DrpcDaemon { child, port }
}

/// The bolt holding the counts: the one the spout's stage sends its words to.
fn state_component(c: &ChaosCluster) -> String {
    let page = block(c.client().page(NAME)).expect("the topology's page");
    let found: Vec<String> = page
        .spec
        .components
        .iter()
        .filter(|(_, spec)| {
            spec.inputs
                .iter()
                .any(|s| s.source.component.as_str() == SPOUT_COMPONENT)
        })
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one bolt fed by '{SPOUT_COMPONENT}', found {found:?}"
    );
    found.into_iter().next().unwrap()
}

/// A ZooKeeper session of the test's own, on a runtime that keeps it alive.
struct Zk {
    rt: tokio::runtime::Runtime,
    state: squall_cluster::zk::ClusterState,
}

impl Zk {
    fn connect(servers: &str) -> Zk {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = rt
            .block_on(squall_cluster::zk::ClusterState::connect(
                servers,
                ROOT,
                Duration::from_secs(10),
            ))
            .expect("a ZooKeeper session for the test");
        Zk { rt, state }
    }

    fn children(&self, path: &str) -> Vec<String> {
        self.rt
            .block_on(self.state.client().list_children(path))
            .unwrap_or_else(|e| panic!("cannot list {path} in ZooKeeper: {e}"))
    }

    /// The coordinator's record, `<root>/transactional/sentences/coordinator`.
    fn coordinator_record(&self) -> Option<serde_json::Value> {
        let path = format!("{ROOT}/transactional/{SPOUT}/coordinator");
        let (data, _) = self.rt.block_on(self.state.client().get_data(&path)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// How many times the coordinator started (it counts its starts there, so that
    /// attempt numbers keep increasing).
    fn incarnation(&self) -> u64 {
        self.coordinator_record()
            .and_then(|r| r["incarnation"].as_u64())
            .unwrap_or(0)
    }

    /// The last committed txid of the sentences' batch group (0 before the first).
    fn committed(&self) -> u64 {
        self.coordinator_record()
            .and_then(|r| r["committed"].as_u64())
            .unwrap_or(0)
    }
}

/// Every count of `NAME` in Redis: word → (txid, count), read from the state's keys
/// (`tcount:<state>:["word"]` → `{"txid":..,"val":..}`) with `SCAN`.
fn redis_counts(conn: &mut ::redis::Connection) -> BTreeMap<String, (u64, u64)> {
    let mut counts = BTreeMap::new();
    let mut prefixes = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{NAME}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("SCAN");
        for key in keys {
            let at = key
                .find(":[")
                .unwrap_or_else(|| panic!("unexpected key {key:?} in Redis"));
            prefixes.insert(key[..at].to_owned());
            let word: Vec<String> = serde_json::from_str(&key[at + 1..])
                .unwrap_or_else(|e| panic!("key {key:?}: not a JSON array of a word: {e}"));
            let raw: String = ::redis::cmd("GET").arg(&key).query(conn).expect("GET");
            let rec: serde_json::Value = serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("{key} = {raw:?}: not JSON: {e}"));
            let (Some(txid), Some(val)) = (rec["txid"].as_u64(), rec["val"].as_u64()) else {
                panic!("{key} = {raw}: not a transactional record {{\"txid\":..,\"val\":..}}");
            };
            assert_eq!(word.len(), 1, "{key}");
            counts.insert(word[0].clone(), (txid, val));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(
        prefixes.len() <= 1,
        "the counts live under one prefix, found {prefixes:?}"
    );
    counts
}

/// A readable difference between two count maps; empty when they are equal.
fn diff(want: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> String {
    let words: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let mut out = String::new();
    for w in words {
        let (a, b) = (want.get(w).copied(), got.get(w).copied());
        if a != b {
            out.push_str(&format!(
                "  {w:>8}: expected {}, got {}\n",
                a.map_or("nothing".to_owned(), |n| n.to_string()),
                b.map_or("nothing".to_owned(), |n| n.to_string()),
            ));
        }
    }
    out
}

/// The sum DRPC `words` answers (`[[sum]]`); the error, or the answer of another shape.
fn drpc_sum(client: &DrpcClient, args: &str) -> Result<u64, String> {
    let answer = client.execute("words", args).map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("{answer:?}: {e}"))?;
    v[0][0]
        .as_u64()
        .ok_or_else(|| format!("unexpected answer {answer}"))
}

/// What a kill aims at.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The worker running the master batch coordinator.
    Coordinator,
    /// A worker holding a partition of the counts, not the coordinator's if possible.
    State,
    /// The coordinator's worker and another one at the same moment.
    CoordinatorAndAnother,
    /// Every worker of the topology at the same moment.
    All,
}

#[test]
fn trident_counts_exactly_once_through_worker_kills() {
    let c = ChaosCluster::start(1, 2);
    let redis = redis::RedisServer::start();
    let drpc = start_drpc(c.dir.path());
    let zk = Zk::connect(&c.zk_connect_string());

    // `SQUALL_TRIDENT_ROUNDS` (default 1) repeats the kills, with more sentences;
    // `SQUALL_TRIDENT_SEED` replays a run's pauses between kills.
    let rounds: u64 = std::env::var("SQUALL_TRIDENT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let sentences = SENTENCES_PER_ROUND * rounds;
    let mut rng = fastrand::Rng::with_seed(
        std::env::var("SQUALL_TRIDENT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..)),
    );
    eprintln!(
        "trident: seed {}, {rounds} round(s) of kills",
        rng.get_seed()
    );

    let bin = example("trident-word-count");
    let drpc_port = format!("drpc.port={}", drpc.port);
    let timeout = format!("topology.message.timeout.secs={MESSAGE_TIMEOUT_SECS}");
    let out = c.squall(&[
        "jar",
        bin.to_str().unwrap(),
        NAME,
        "--sentences",
        &sentences.to_string(),
        "--redis",
        &redis.url(),
        "--partitions",
        &PARTITIONS.to_string(),
        "--batch-size",
        &BATCH_SIZE.to_string(),
        "--parallelism",
        "2",
        "--workers",
        "3",
        "-c",
        &timeout,
        "-c",
        "topology.trident.batch.emit.interval.millis=50",
        "-c",
        "drpc.servers=[\"127.0.0.1\"]",
        "-c",
        &drpc_port,
    ]);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        stdout(&out),
        c.logs()
    );
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(90), || zk.committed() >= 5),
        "no batch committed:\n{}",
        c.logs()
    );
    eprintln!(
        "trident: first 5 batches committed {:.1} s after the submission",
        t0.elapsed().as_secs_f64()
    );
    let state = state_component(&c);
    let where_ = c.placement(NAME).expect("placement");
    eprintln!("trident: placement {where_:?}");
    assert_eq!(
        where_.values().flatten().collect::<BTreeSet<_>>().len(),
        3,
        "three workers: {where_:?}"
    );
    let page = block(c.client().page(NAME)).expect("the topology's page");
    let nodes: BTreeSet<&str> = page
        .executors
        .iter()
        .map(|e| e.supervisor_id.as_str())
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "the workers run on both supervisors: {nodes:?}"
    );

    let batches_needed = sentences.div_ceil(PARTITIONS * BATCH_SIZE);
    let round = [
        Target::Coordinator,
        Target::State,
        Target::CoordinatorAndAnother,
        Target::State,
        Target::All,
        Target::Coordinator,
    ];
    let mut kills = 0;
    let mut last_kill_txid = 0;
    for target in (0..rounds).flat_map(|_| round) {
        // Let it run a little, so that kills land in every phase of a batch.
        std::thread::sleep(Duration::from_millis(rng.u64(0..2000)));
        let ports = c.placement(NAME).expect("placement");
        let coord = *ports[COORDINATOR]
            .iter()
            .next()
            .expect("the coordinator runs");
        let state_ports = &ports[&state];
        let victims: Vec<u16> = match target {
            Target::Coordinator => vec![coord],
            Target::State => {
                let other = state_ports.iter().find(|&&p| p != coord);
                vec![*other.unwrap_or(&coord)]
            }
            Target::CoordinatorAndAnother => {
                let all: BTreeSet<u16> = ports.values().flatten().copied().collect();
                let other = all.into_iter().find(|&p| p != coord).expect("3 workers");
                vec![coord, other]
            }
            Target::All => ports
                .values()
                .flatten()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let before = zk.committed();
        let incarnation = zk.incarnation();
        let mut pids = Vec::new();
        for &port in &victims {
            let (_, pid) = c
                .worker_at(port)
                .unwrap_or_else(|| panic!("no live worker on port {port}:\n{}", c.logs()));
            pids.push(pid);
        }
        let t = Instant::now();
        for &pid in &pids {
            signal(pid, "KILL");
        }
        kills += pids.len();
        last_kill_txid = before;
        // The killed workers are replaced (on their slots, or elsewhere when Nimbus moves
        // their executors: a supervisor backs off from restarting a worker that keeps
        // dying young), and batches commit again.
        assert!(
            wait_until(RECOVERY, || c.all_workers_up(NAME, &pids)),
            "the workers killed by {target:?} (ports {victims:?}) were not replaced:\n{}",
            c.logs()
        );
        let restarted = t.elapsed();
        if !matches!(target, Target::State) {
            // The coordinator started again, from what it stored in ZooKeeper.
            assert!(
                wait_until(RECOVERY, || zk.incarnation() > incarnation),
                "the coordinator did not start again after {target:?} (ports {victims:?}): {:?}",
                zk.coordinator_record()
            );
        }
        assert!(
            wait_until(RECOVERY, || zk.committed() >= before + 3),
            "no batch committed within {RECOVERY:?} after killing {target:?} (ports {victims:?}); \
             committed batch {}:\n{}",
            zk.committed(),
            c.logs()
        );
        eprintln!(
            "trident: killed {target:?} (ports {victims:?}) at batch {before}: replaced after {:.1} s, \
             3 more batches committed after {:.1} s",
            restarted.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
    // The kills must have hit a run still under way, else they prove nothing.
    assert!(
        last_kill_txid < batches_needed,
        "the run was over (batch {last_kill_txid} of {batches_needed}) before the last kill: \
         raise SENTENCES_PER_ROUND"
    );

    // Converge: DRPC's sum over every word equals the total number of words.
    let want = expected_counts(sentences);
    let total: u64 = want.values().sum();
    let all_words = want.keys().cloned().collect::<Vec<_>>().join(" ");
    let client =
        DrpcClient::new(&format!("127.0.0.1:{}", drpc.port)).with_timeout(Duration::from_secs(30));
    let t = Instant::now();
    let mut last = Err("not asked yet".to_owned());
    let converged = wait_until(CONVERGE * rounds as u32, || {
        last = drpc_sum(&client, &all_words);
        last.as_ref().is_ok_and(|&n| n == total)
    });
    let mut conn = redis.connection();
    if !converged {
        let got: BTreeMap<String, u64> = redis_counts(&mut conn)
            .into_iter()
            .map(|(w, (_, n))| (w, n))
            .collect();
        panic!(
            "the counts did not converge within {:?} after the last kill: DRPC said \
             {last:?} for every word, {total} expected; last committed batch {} ({batches_needed} hold the sentences); \
             Redis differs:\n{}\n{}",
            CONVERGE * rounds as u32,
            zk.committed(),
            diff(&want, &got),
            c.logs()
        );
    }
    let converge = t.elapsed();

    // Each word on its own, through `squall drpc-client` as a user asks.
    let words: Vec<&str> = want.keys().map(String::as_str).collect();
    let out = std::process::Command::new(SQUALL)
        .args(["drpc-client", "-f", "words"])
        .args(&words)
        .args(["-c", "drpc.servers=[\"127.0.0.1\"]", "-c", &drpc_port])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected_lines: String = want
        .iter()
        .map(|(w, n)| format!("words \"{w}\" => \"[[{n}]]\"\n"))
        .collect();
    assert_eq!(text, expected_lines, "DRPC answers per word");

    // Redis itself: every word's count exactly, each written by a committed batch.
    let records = redis_counts(&mut conn);
    let got: BTreeMap<String, u64> = records.iter().map(|(w, &(_, n))| (w.clone(), n)).collect();
    let d = diff(&want, &got);
    assert!(d.is_empty(), "Redis counts differ from an ideal run:\n{d}");
    let record = zk
        .coordinator_record()
        .expect("the coordinator's record in ZooKeeper");
    let last_committed = record["committed"].as_u64().expect("a committed txid");
    for (w, &(txid, _)) in &records {
        assert!(
            (1..=last_committed).contains(&txid),
            "'{w}' was written by batch {txid}, after the last committed {last_committed}"
        );
    }

    // The coordinator's metadata in ZooKeeper: the last committed batch (at least every
    // batch the sentences needed), restarts counted, and the emitters' batch metadata.
    assert!(
        last_committed >= batches_needed,
        "committed {last_committed} < {batches_needed} batches: {record}"
    );
    assert!(
        record["incarnation"].as_u64().unwrap_or(0) >= 2,
        "the coordinator was killed, so it started more than once: {record}"
    );
    let dir = format!("/squall/transactional/{SPOUT}");
    let children = zk.children(&dir);
    assert!(
        children.contains(&"coordinator".to_owned()) && children.contains(&"emitter".to_owned()),
        "{dir} holds {children:?}"
    );

    eprintln!(
        "trident: {sentences} sentences ({total} words) in {} batches, {kills} workers killed, \
         counts exact {:.1} s after the last kill recovered ({:.1} s in all)",
        last_committed,
        converge.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
