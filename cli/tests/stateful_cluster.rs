//! Stateful bolts' exactly-once promise on a real cluster, with kills. StatefulWordCount
//! (`stateful-word-count`) counts a known stream of sentences into a real Redis on three
//! workers over two supervisors (real ZooKeeper and Nimbus), while workers are
//! SIGKILLed: the one running the stateful count bolt, the one running a spout (which
//! then starts its sentences again from the first: the spouts' record of committed ids
//! keeps them from being counted twice), then all of them at once. At the end the
//! counts in Redis equal those of the input exactly.
//!
//! Figures are printed on stderr
//! (`cargo test -p squall-cli --test stateful_cluster -- --nocapture`).

mod common;
#[path = "../../trident/tests/common/redis.rs"]
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::chaos::ChaosCluster;
use common::{example, signal, stdout, wait_until};
use squall_examples::trident::expected_counts;

/// The topology's name (and so the prefix of its Redis keys).
const NAME: &str = "scount";
/// Sentences in all, and per second per spout task: the input lasts about 50 s.
const SENTENCES: u64 = 40_000;
const RATE: u64 = 400;
/// `topology.message.timeout.secs`: a checkpoint lost with a worker fails after
/// between one and two of these.
const MESSAGE_TIMEOUT_SECS: u64 = 6;
/// How long progress may take to resume after a kill.
const RECOVERY: Duration = Duration::from_secs(90);
/// How long the counts may take to be complete after the last kill.
const CONVERGE: Duration = Duration::from_secs(120);

/// The last committed checkpoint, from the checkpoint spout's record in Redis (a state
/// like any other: JSON field `"committed"`).
fn committed(conn: &mut ::redis::Connection) -> u64 {
    ::redis::cmd("HGET")
        .arg(format!("{NAME}:$checkpointspout-1"))
        .arg("\"committed\"")
        .query::<Option<u64>>(conn)
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The committed counts: the hashes `scount:count-<task>` (JSON word → count), summed.
fn redis_counts(conn: &mut ::redis::Connection) -> BTreeMap<String, u64> {
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{NAME}:count-*"))
        .query(conn)
        .expect("KEYS");
    let mut counts = BTreeMap::new();
    for key in keys.iter().filter(|k| !k.contains('$')) {
        let hash: BTreeMap<String, u64> = ::redis::cmd("HGETALL")
            .arg(key)
            .query(conn)
            .expect("HGETALL");
        for (word, n) in hash {
            let word: String = serde_json::from_str(&word)
                .unwrap_or_else(|e| panic!("{key}: field {word:?} is not a JSON string: {e}"));
            *counts.entry(word).or_insert(0) += n;
        }
    }
    counts
}

/// What Redis holds, for failure messages: every key, and the checkpoint spout's record.
fn redis_dump(conn: &mut ::redis::Connection) -> String {
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query(conn)
        .unwrap_or_default();
    let record: BTreeMap<String, String> = ::redis::cmd("HGETALL")
        .arg(format!("{NAME}:$checkpointspout-1"))
        .query(conn)
        .unwrap_or_default();
    format!("Redis keys {keys:?}; checkpoint spout record {record:?}")
}

/// Words counted more often than the input has them (applied twice).
fn over(want: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> Vec<String> {
    got.iter()
        .filter(|(w, n)| **n > want.get(*w).copied().unwrap_or(0))
        .map(|(w, n)| format!("{w}: {n} > {}", want.get(w).copied().unwrap_or(0)))
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// A worker running the stateful count bolt.
    Count,
    /// A worker running a spout task (not the one just killed if possible).
    Spout,
    /// Every worker at once.
    All,
}

#[test]
fn stateful_counts_exactly_once_through_worker_kills() {
    let c = ChaosCluster::start(1, 2);
    let redis = redis::RedisServer::start();
    let mut conn = redis.connection();
    let want = expected_counts(SENTENCES);
    let total: u64 = want.values().sum();

    let bin = example("stateful-word-count");
    let out = c.squall(&[
        "jar",
        bin.to_str().unwrap(),
        NAME,
        "--sentences",
        &SENTENCES.to_string(),
        "--rate",
        &RATE.to_string(),
        "--redis",
        &redis.url(),
        "--parallelism",
        "2",
        "--workers",
        "3",
        "--checkpoint-interval-ms",
        "500",
        "-c",
        &format!("topology.message.timeout.secs={MESSAGE_TIMEOUT_SECS}"),
    ]);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        stdout(&out),
        c.logs()
    );
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(90), || committed(&mut conn) >= 3),
        "no checkpoint committed ({}):\n{}",
        redis_dump(&mut conn),
        c.logs()
    );
    eprintln!(
        "stateful: 3 checkpoints committed {:.1} s after the submission",
        t0.elapsed().as_secs_f64()
    );
    let where_ = c.placement(NAME).expect("placement");
    eprintln!("stateful: placement {where_:?}");

    let mut kills = 0;
    let mut last_killed: Vec<u16> = Vec::new();
    let mut counted_at_last_kill = 0;
    for target in [Target::Count, Target::Spout, Target::All] {
        std::thread::sleep(Duration::from_millis(fastrand::u64(500..2500)));
        let ports = c.placement(NAME).expect("placement");
        let all: BTreeSet<u16> = ports.values().flatten().copied().collect();
        let victims: Vec<u16> = match target {
            Target::Count => vec![*ports["count"].iter().next().expect("count runs")],
            Target::Spout => {
                let spouts = &ports["sentences"];
                let pick = spouts.iter().find(|p| !last_killed.contains(p));
                vec![*pick.unwrap_or_else(|| spouts.iter().next().expect("spout runs"))]
            }
            Target::All => all.iter().copied().collect(),
        };
        let before = committed(&mut conn);
        let got = redis_counts(&mut conn);
        counted_at_last_kill = got.values().sum();
        let pids: Vec<u32> = victims
            .iter()
            .map(|&port| {
                c.worker_at(port)
                    .unwrap_or_else(|| panic!("no live worker on port {port}:\n{}", c.logs()))
                    .1
            })
            .collect();
        let t = Instant::now();
        for &pid in &pids {
            signal(pid, "KILL");
        }
        kills += pids.len();
        last_killed = victims.clone();
        assert!(
            wait_until(RECOVERY, || c.all_workers_up(NAME, &pids)),
            "the workers killed by {target:?} (ports {victims:?}) were not replaced:\n{}",
            c.logs()
        );
        let replaced = t.elapsed();
        assert!(
            wait_until(RECOVERY, || committed(&mut conn) >= before + 3),
            "no checkpoint committed within {RECOVERY:?} after killing {target:?} (ports \
             {victims:?}); committed {}:\n{}",
            committed(&mut conn),
            c.logs()
        );
        let bad = over(&want, &redis_counts(&mut conn));
        assert!(bad.is_empty(), "counted twice after {target:?}: {bad:?}");
        eprintln!(
            "stateful: killed {target:?} (ports {victims:?}) at checkpoint {before} \
             ({counted_at_last_kill} words counted): replaced after {:.1} s, 3 more \
             checkpoints after {:.1} s",
            replaced.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
    assert!(
        counted_at_last_kill < total,
        "the input was all counted ({counted_at_last_kill} words) before the last kill: \
         raise SENTENCES"
    );

    let t = Instant::now();
    let mut got = BTreeMap::new();
    let done = wait_until(CONVERGE, || {
        got = redis_counts(&mut conn);
        got == want
    });
    let bad = over(&want, &got);
    assert!(bad.is_empty(), "counted twice: {bad:?}");
    assert!(
        done,
        "the counts were not complete within {CONVERGE:?} after the last kill: {} of {total} \
         words; checkpoint {}:\n{}",
        got.values().sum::<u64>(),
        committed(&mut conn),
        c.logs()
    );
    // A few more checkpoints change nothing.
    let at = committed(&mut conn);
    assert!(wait_until(Duration::from_secs(30), || committed(&mut conn) >= at + 2));
    assert_eq!(
        redis_counts(&mut conn),
        want,
        "the counts moved after they were complete"
    );
    eprintln!(
        "stateful: {SENTENCES} sentences ({total} words), {kills} workers killed, counts \
         exact {:.1} s after the last recovery ({:.1} s in all, {} checkpoints)",
        t.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        committed(&mut conn)
    );
}
