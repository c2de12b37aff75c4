//! Exactly-once in local mode: a finite input, functions that fail batches at random,
//! state writes that fail at random (part-way through a commit), for transactional and
//! opaque spouts with memory and Redis state: the final counts equal the input's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use squall_api::{values, BoxError, Config};
use squall_trident::state::Snapshot;
use squall_trident::store::CoordinatorStore;
use squall_trident::{
    Count, FeederSpout, MemoryMapState, Opaque, RedisMapState, Transactional, TridentCollector,
    TridentTopology, TridentTuple,
};
use squall_worker::LocalCluster;

#[path = "common/redis.rs"]
mod redis;

const SENTENCES: [&str; 5] = [
    "the cow jumped over the moon",
    "an apple a day keeps the doctor away",
    "four score and seven years ago",
    "snow white and the seven dwarfs",
    "i am at two with nature",
];

fn expected(n: usize) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        for w in SENTENCES[i % 5].split(' ') {
            *m.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

/// Splits, failing the batch with probability `p`.
#[derive(Clone)]
struct FlakySplit {
    p: f64,
    rng: fastrand::Rng,
}

impl squall_trident::Function for FlakySplit {
    fn execute(
        &mut self,
        t: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        if self.rng.f64() < self.p {
            return Err("injected function failure".into());
        }
        for w in t.get_string(0)?.split(' ') {
            out.emit(values![w]);
        }
        Ok(())
    }
}

fn conf() -> Config {
    let mut c = Config::new();
    c.set("topology.trident.batch.emit.interval.millis", 10);
    c.set_max_spout_pending(3);
    c.set_message_timeout_secs(10);
    c.set(
        squall_api::config::keys::TOPOLOGY_MAX_ERROR_REPORT_PER_INTERVAL,
        1000,
    );
    c
}

fn counts(s: &Snapshot) -> BTreeMap<String, i64> {
    s.iter()
        .map(|(k, v)| (k[0].as_str().unwrap().to_owned(), v.as_i64().unwrap()))
        .collect()
}

#[derive(Clone, Copy)]
enum Store {
    Memory,
    Redis,
}

fn run(name: &str, opaque: bool, store: Store, p_fn: f64, p_state: f64) {
    let feeder = FeederSpout::new(["sentence"], 3)
        .max_batch_size(7)
        .vary_batches(11);
    let redis = matches!(store, Store::Redis).then(redis::RedisServer::start);
    let mut topology = TridentTopology::new();
    let stream = if opaque {
        topology.new_stream(name, Opaque(feeder.clone()))
    } else {
        topology.new_stream(name, Transactional(feeder.clone()))
    };
    let grouped = stream
        .parallelism_hint(2)
        .each(
            ["sentence"],
            FlakySplit {
                p: p_fn,
                rng: fastrand::Rng::with_seed(3),
            },
            ["word"],
        )
        .group_by(["word"]);
    let memory = match (opaque, store) {
        (false, Store::Memory) => Some(MemoryMapState::transactional()),
        (true, Store::Memory) => Some(MemoryMapState::opaque()),
        _ => None,
    }
    .map(|m| m.with_write_failures(p_state, 5));
    let redis_state = redis.as_ref().map(|r| {
        if opaque {
            RedisMapState::opaque(r.url())
        } else {
            RedisMapState::transactional(r.url())
        }
        .with_write_failures(p_state, 5)
    });
    match (&memory, &redis_state) {
        (Some(m), _) => grouped.persistent_aggregate(m.clone(), Count, ["count"]),
        (_, Some(r)) => grouped.persistent_aggregate(r.clone(), Count, ["count"]),
        _ => unreachable!(),
    }
    .parallelism_hint(2);
    let topology = topology.build().unwrap();
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, &conf(), &topology).unwrap();
    let n = 500;
    feeder.feed((0..n).map(|i| values![SENTENCES[i % 5]]));
    let want = expected(n);
    let snapshot = || match (&memory, &redis_state) {
        (Some(m), _) => counts(&m.snapshot()),
        (_, Some(r)) => counts(&r.snapshot_of(name, "state0").unwrap()),
        _ => unreachable!(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = snapshot();
        if got == want || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let errors = cluster.errors(name).unwrap();
    let stats = cluster.kill_topology(name).unwrap();
    assert_eq!(got, want, "final counts differ from the input's");
    // The batch group's transactional state is named after the stream (Storm's txId).
    let record = squall_trident::store::MemoryStore::global()
        .get(&format!("{name}/coordinator"))
        .unwrap();
    assert!(
        record.is_some(),
        "no coordinator record at {name}/coordinator"
    );
    // The coordinator's gauges say where the batches are.
    let gauges = &stats.component("$mastercoord-bg0").gauges;
    assert!(
        gauges
            .get("trident.txid.committed")
            .is_some_and(|&t| t >= 1),
        "{gauges:?}"
    );
    if p_fn > 0.0 || p_state > 0.0 {
        assert!(
            gauges.get("trident.replays").is_some_and(|&r| r >= 1),
            "{gauges:?}"
        );
    }
    // The failures really happened (and were reported as errors).
    if p_fn > 0.0 {
        assert!(
            errors.iter().any(|e| e.error.contains("injected")),
            "{errors:?}"
        );
    }
}

#[test]
fn transactional_memory() {
    run("tx-memory", false, Store::Memory, 0.002, 0.05);
}

#[test]
fn opaque_memory() {
    run("opaque-memory", true, Store::Memory, 0.002, 0.05);
}

#[test]
fn transactional_redis() {
    run("tx-redis", false, Store::Redis, 0.002, 0.05);
}

#[test]
fn opaque_redis() {
    run("opaque-redis", true, Store::Redis, 0.002, 0.05);
}

#[test]
fn without_failures() {
    run("no-failures", false, Store::Memory, 0.0, 0.0);
}
