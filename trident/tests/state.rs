//! Trident map state, in memory and in a real Redis: Storm's semantics per flavour,
//! exactly-once under partial write failures and crashes (against a model), the cache,
//! and Redis being unreachable, going away and freezing.
//!
//! Every scenario runs against both stores (`in_memory::*`, `in_redis::*`); each Redis
//! test starts its own `redis-server` (see `common/redis.rs`).

#[path = "common/redis.rs"]
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::RedisServer;
use squall_api::{Config, Value};
use squall_trident::state::{
    Key, MapState, MemoryMapState, RedisMapState, Snapshot, StateContext, StateError, StateFactory,
    DEFAULT_CACHE_SIZE,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flavour {
    Transactional,
    Opaque,
    NonTransactional,
}

use Flavour::{NonTransactional, Opaque, Transactional};

/// A memory or Redis factory, with what the tests need of either.
#[derive(Clone)]
enum Factory {
    Memory(MemoryMapState),
    Redis(RedisMapState),
}

impl Factory {
    fn memory(flavour: Flavour) -> Factory {
        Factory::Memory(match flavour {
            Transactional => MemoryMapState::transactional(),
            Opaque => MemoryMapState::opaque(),
            NonTransactional => MemoryMapState::non_transactional(),
        })
    }

    /// A Redis factory under a prefix of its own.
    fn redis(server: &RedisServer, flavour: Flavour) -> Factory {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let url = server.url();
        let f = match flavour {
            Transactional => RedisMapState::transactional(url),
            Opaque => RedisMapState::opaque(url),
            NonTransactional => RedisMapState::non_transactional(url),
        };
        Factory::Redis(f.with_prefix(format!("t{}:", NEXT.fetch_add(1, Ordering::Relaxed))))
    }

    fn with_cache_size(self, n: usize) -> Factory {
        match self {
            Factory::Memory(f) => Factory::Memory(f.with_cache_size(n)),
            Factory::Redis(f) => Factory::Redis(f.with_cache_size(n)),
        }
    }

    fn with_write_failures(self, p: f64, seed: u64) -> Factory {
        match self {
            Factory::Memory(f) => Factory::Memory(f.with_write_failures(p, seed)),
            Factory::Redis(f) => Factory::Redis(f.with_write_failures(p, seed)),
        }
    }

    fn make(&self, partition: usize) -> Box<dyn MapState> {
        let ctx = StateContext {
            name: "counts".into(),
            topology: "state-test".into(),
            partition,
            num_partitions: 2,
        };
        let made = match self {
            Factory::Memory(f) => f.make_state(&Config::default(), &ctx),
            Factory::Redis(f) => f.make_state(&Config::default(), &ctx),
        };
        made.unwrap_or_else(|e| panic!("make_state: {e}"))
    }

    fn snapshot(&self) -> Snapshot {
        match self {
            Factory::Memory(f) => f.snapshot(),
            Factory::Redis(f) => f.snapshot().unwrap_or_else(|e| panic!("snapshot: {e}")),
        }
    }
}

fn key(word: &str) -> Key {
    vec![Value::from(word)]
}

fn int(v: Option<Value>) -> i64 {
    v.map(|v| v.as_i64().expect("an integer")).unwrap_or(0)
}

/// Commits one batch of `(word, delta)` as the runtime does: `begin_commit`, one
/// `multi_update` adding each delta to the stored count, `commit`. Returns the new
/// counts.
fn commit(
    state: &mut dyn MapState,
    txid: u64,
    batch: &[(&str, i64)],
) -> Result<Vec<i64>, StateError> {
    state.begin_commit(txid)?;
    let keys: Vec<Key> = batch.iter().map(|(w, _)| key(w)).collect();
    let out = state.multi_update(&keys, &mut |i, old| Value::Int(int(old) + batch[i].1))?;
    state.commit(txid)?;
    Ok(out.into_iter().map(|v| int(Some(v))).collect())
}

fn get(state: &mut dyn MapState, word: &str) -> Option<i64> {
    state.multi_get(&[key(word)]).unwrap()[0]
        .clone()
        .map(|v| int(Some(v)))
}

/// The snapshot as `word -> count`.
fn counts(snapshot: &Snapshot) -> BTreeMap<String, i64> {
    snapshot
        .iter()
        .map(|(k, v)| {
            (
                k[0].as_str().expect("a word").to_owned(),
                v.as_i64().expect("a count"),
            )
        })
        .collect()
}

// -----------------------------------------------------------------------------------------
// Storm's semantics, flavour by flavour

/// Transactional: a repeated txid is the same batch, and is skipped, also by a new
/// process (empty cache) after a crash.
fn transactional_replays_are_skipped(new: &dyn Fn(Flavour) -> Factory) {
    for cache in [0, DEFAULT_CACHE_SIZE] {
        let f = new(Transactional).with_cache_size(cache);
        let mut s = f.make(0);
        let batch = [("a", 1), ("b", 2)];
        assert_eq!(commit(&mut *s, 1, &batch).unwrap(), [1, 2]);
        assert_eq!(
            commit(&mut *s, 1, &batch).unwrap(),
            [1, 2],
            "a replay is skipped"
        );
        let mut after_crash = f.make(0);
        assert_eq!(commit(&mut *after_crash, 1, &batch).unwrap(), [1, 2]);
        assert_eq!(commit(&mut *after_crash, 2, &[("a", 10)]).unwrap(), [11]);
        assert_eq!(
            counts(&f.snapshot()),
            BTreeMap::from([("a".into(), 11), ("b".into(), 2)])
        );
    }
}

/// Opaque: a repeated txid may be another batch: it is recomputed from the value before
/// that txid, in this process or a new one.
fn opaque_replays_recompute_from_prev(new: &dyn Fn(Flavour) -> Factory) {
    let f = new(Opaque);
    let mut s = f.make(0);
    assert_eq!(commit(&mut *s, 1, &[("a", 1), ("b", 2)]).unwrap(), [1, 2]);
    assert_eq!(commit(&mut *s, 2, &[("a", 3)]).unwrap(), [4]);
    // Txid 2 again, with another batch: a = 1 + 5, b (last changed by txid 1) = 2 + 7.
    assert_eq!(commit(&mut *s, 2, &[("a", 5), ("b", 7)]).unwrap(), [6, 9]);
    // Again, in a new process, with yet another batch (the same keys).
    let mut s = f.make(0);
    assert_eq!(commit(&mut *s, 2, &[("a", 1), ("b", 1)]).unwrap(), [2, 3]);
    assert_eq!(commit(&mut *s, 3, &[("a", 1)]).unwrap(), [3]);
    // A replay that leaves out keys an earlier attempt touched puts them back.
    s.begin_commit(4).unwrap();
    s.multi_update(&[key("a"), key("b"), key("c")], &mut |_, old| {
        Value::Int(int(old) + 100)
    })
    .unwrap();
    assert_eq!(commit(&mut *s, 4, &[("a", 1)]).unwrap(), [4]);
    assert_eq!(get(&mut *s, "c"), None);
    assert_eq!(
        counts(&f.snapshot()),
        BTreeMap::from([("a".into(), 4), ("b".into(), 3)])
    );
}

/// Non-transactional: every replay applies again (at-least-once).
fn non_transactional_applies_replays(new: &dyn Fn(Flavour) -> Factory) {
    let f = new(NonTransactional);
    let mut s = f.make(0);
    assert_eq!(commit(&mut *s, 1, &[("a", 5)]).unwrap(), [5]);
    assert_eq!(commit(&mut *s, 1, &[("a", 5)]).unwrap(), [10]);
    assert_eq!(counts(&f.snapshot()), BTreeMap::from([("a".into(), 10)]));
}

/// Partitions made by one factory share the store; each sees its own keys.
fn partitions_share_the_store(new: &dyn Fn(Flavour) -> Factory) {
    let f = new(Opaque);
    let (mut p0, mut p1) = (f.make(0), f.make(1));
    commit(&mut *p0, 1, &[("a", 1)]).unwrap();
    commit(&mut *p1, 1, &[("b", 2)]).unwrap();
    commit(&mut *p0, 2, &[("a", 1)]).unwrap();
    let snap = f.snapshot();
    assert_eq!(
        counts(&snap),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );
    assert_eq!(snap.get(&key("b")), Some(&Value::Int(2)));
}

// -----------------------------------------------------------------------------------------
// Exactly-once under failures, against a model

const WORDS: usize = 24;

fn word(i: usize) -> &'static str {
    const NAMES: [&str; WORDS] = [
        "the", "storm", "trident", "batch", "state", "redis", "opaque", "txid", "spout", "bolt",
        "tuple", "stream", "group", "count", "word", "key", "value", "commit", "replay", "crash",
        "cache", "prev", "curr", "squall",
    ];
    NAMES[i]
}

fn partition_of(word: &str) -> usize {
    word.bytes().map(usize::from).sum::<usize>() % 2
}

/// A batch: distinct random words with deltas 1..=5; `must` words always in it.
fn random_batch(
    rng: &mut fastrand::Rng,
    must: &BTreeSet<&'static str>,
) -> Vec<(&'static str, i64)> {
    let mut words: BTreeSet<&'static str> = must.clone();
    for _ in 0..rng.usize(1..10) {
        words.insert(word(rng.usize(0..WORDS)));
    }
    let mut batch: Vec<_> = words.into_iter().map(|w| (w, rng.i64(1..=5))).collect();
    rng.shuffle(&mut batch);
    batch
}

/// What a run saw of the injected failures.
#[derive(Default, Debug)]
struct Failures {
    failed_commits: usize,
    partial_writes: usize,
    crashes: usize,
}

/// Reads through `state` (and its cache), as the retry of `txid` begins, equal reads
/// straight from the store by a fresh, cache-less partition at the same point.
fn assert_reads_match_store(
    f: &Factory,
    state: &mut dyn MapState,
    partition: usize,
    txid: u64,
    words: &[&str],
) {
    let keys: Vec<Key> = words.iter().map(|w| key(w)).collect();
    state.begin_commit(txid).unwrap();
    let mut fresh = f.clone().with_cache_size(0).make(partition);
    fresh.begin_commit(txid).unwrap();
    assert_eq!(
        state.multi_get(&keys).unwrap(),
        fresh.multi_get(&keys).unwrap(),
        "after a failed write of txid {txid}, reads through the cache differ from the store"
    );
}

/// Runs `rounds` batches on two partitions through flaky writes and crashes; each batch
/// is committed until it commits on both partitions (a failure on one fails the batch,
/// and both commit it again). Transactional retries carry the same batch; opaque ones
/// may carry another (after a crash, one that includes every key tried before, as a new
/// process cannot know what a lost attempt touched). Returns the final state, the model
/// (the batches that committed, each once) and what failed.
fn run_against_model(
    f: &Factory,
    flavour: Flavour,
    seed: u64,
    rounds: u64,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>, Failures) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut states: Vec<Box<dyn MapState>> = (0..2).map(|p| f.make(p)).collect();
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = Failures::default();
    for txid in 1..=rounds {
        let mut batch = random_batch(&mut rng, &BTreeSet::new());
        let mut tried: BTreeSet<&'static str> = BTreeSet::new();
        let mut must: BTreeSet<&'static str> = BTreeSet::new();
        loop {
            tried.extend(batch.iter().map(|(w, _)| *w));
            let mut failed = false;
            for (p, state) in states.iter_mut().enumerate() {
                let part: Vec<(&str, i64)> = batch
                    .iter()
                    .copied()
                    .filter(|(w, _)| partition_of(w) == p)
                    .collect();
                match commit(&mut **state, txid, &part) {
                    Ok(got) if flavour != NonTransactional => {
                        let want: Vec<i64> = part
                            .iter()
                            .map(|(w, d)| model.get(*w).copied().unwrap_or(0) + d)
                            .collect();
                        assert_eq!(got, want, "txid {txid}, partition {p}: the new counts");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert!(
                            e.0.contains("injected write failure"),
                            "unexpected error: {e}"
                        );
                        seen.failed_commits += 1;
                        if !e.0.contains("after writing 0 of") {
                            seen.partial_writes += 1;
                        }
                        let words: Vec<&str> = part.iter().map(|(w, _)| *w).collect();
                        assert_reads_match_store(f, &mut **state, p, txid, &words);
                        failed = true;
                    }
                }
            }
            if !failed {
                break;
            }
            // The worker dies now and then: its partitions start over, empty.
            let crashed = rng.u8(0..5) == 0;
            if crashed {
                seen.crashes += 1;
                states = (0..2).map(|p| f.make(p)).collect();
                must = tried.clone();
            }
            if flavour != Transactional && (crashed || rng.bool()) {
                batch = random_batch(&mut rng, &must);
            }
        }
        for (w, d) in &batch {
            *model.entry((*w).to_owned()).or_default() += d;
        }
    }
    (counts(&f.snapshot()), model, seen)
}

fn exactly_once_through_partial_writes_and_crashes(new: &dyn Fn(Flavour) -> Factory, seeds: u64) {
    for flavour in [Transactional, Opaque] {
        let mut total = Failures::default();
        for seed in 0..seeds {
            // A small cache for half the seeds, so that keys are evicted and read again.
            let cache = if seed % 2 == 0 { DEFAULT_CACHE_SIZE } else { 4 };
            let f = new(flavour)
                .with_write_failures(0.3, seed)
                .with_cache_size(cache);
            let (state, model, seen) = run_against_model(&f, flavour, seed, 40);
            assert_eq!(
                state, model,
                "{flavour:?}, seed {seed}: the state is the model's ({seen:?})"
            );
            total.failed_commits += seen.failed_commits;
            total.partial_writes += seen.partial_writes;
            total.crashes += seen.crashes;
        }
        // The run must have exercised what it claims to.
        assert!(total.failed_commits > 10, "{flavour:?}: {total:?}");
        assert!(total.partial_writes > 5, "{flavour:?}: {total:?}");
        assert!(total.crashes > 0, "{flavour:?}: {total:?}");
    }
}

/// Non-transactional state under the same failures loses nothing but counts retried
/// batches again.
fn at_least_once_without_transactions(new: &dyn Fn(Flavour) -> Factory) {
    let f = new(NonTransactional).with_write_failures(0.3, 11);
    let (state, model, seen) = run_against_model(&f, NonTransactional, 11, 40);
    assert!(seen.failed_commits > 0, "{seen:?}");
    assert_eq!(
        state.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>()
    );
    assert!(
        model.iter().all(|(w, n)| state[w] >= *n),
        "{state:?} vs {model:?}"
    );
    assert!(
        model.iter().any(|(w, n)| state[w] > *n),
        "retries counted again"
    );
}

/// Every write fails (half of them after writing part of their keys): reads after each
/// failure come from the store, never from a cache that kept the failed value.
fn a_failed_write_leaves_no_stale_cached_value(new: &dyn Fn(Flavour) -> Factory) {
    for flavour in [Transactional, Opaque, NonTransactional] {
        let f = new(flavour).with_write_failures(1.0, 3);
        let mut s = f.make(0);
        let words = ["a", "b", "c"];
        let keys: Vec<Key> = words.iter().map(|w| key(w)).collect();
        let mut partial = 0;
        for txid in 1..=30 {
            // Warm the cache with what the store holds now.
            s.multi_get(&keys).unwrap();
            s.begin_commit(txid).unwrap();
            let err = s
                .multi_update(&keys, &mut |_, old| Value::Int(int(old) + 1))
                .unwrap_err();
            if !err.0.contains("after writing 0 of") {
                partial += 1;
            }
            assert_reads_match_store(&f, &mut *s, 0, txid, &words);
        }
        assert!(
            partial > 3,
            "{flavour:?}: some failures wrote part of the keys"
        );
    }
}

macro_rules! in_both_stores {
    ($($scenario:ident;)*) => {
        mod in_memory {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(&super::Factory::memory);
                }
            )*
        }
        mod in_redis {
            $(
                #[test]
                fn $scenario() {
                    let server = super::RedisServer::start();
                    super::$scenario(&|f| super::Factory::redis(&server, f));
                }
            )*
        }
    };
}

in_both_stores! {
    transactional_replays_are_skipped;
    opaque_replays_recompute_from_prev;
    non_transactional_applies_replays;
    partitions_share_the_store;
    at_least_once_without_transactions;
    a_failed_write_leaves_no_stale_cached_value;
}

#[test]
fn exactly_once_in_memory() {
    exactly_once_through_partial_writes_and_crashes(&Factory::memory, 30);
}

#[test]
fn exactly_once_in_redis() {
    let server = RedisServer::start();
    exactly_once_through_partial_writes_and_crashes(&|f| Factory::redis(&server, f), 8);
}

// -----------------------------------------------------------------------------------------
// Redis specifics

fn ctx(topology: &str, name: &str) -> StateContext {
    StateContext {
        name: name.into(),
        topology: topology.into(),
        partition: 0,
        num_partitions: 1,
    }
}

#[test]
fn redis_unreachable_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let f = RedisMapState::transactional(&url);
    let err = f
        .make_state(&Config::default(), &ctx("wc", "counts"))
        .err()
        .unwrap();
    assert_eq!(
        err.0,
        format!("cannot connect to Redis at {url}: connection refused")
    );
    let err = f.snapshot_of("wc", "counts").unwrap_err();
    assert_eq!(
        err.0,
        format!("cannot connect to Redis at {url}: connection refused")
    );
    let err = RedisMapState::opaque("localhost:6379")
        .make_state(&Config::default(), &ctx("wc", "counts"))
        .err()
        .unwrap();
    assert!(
        err.0.starts_with("invalid Redis URL localhost:6379: "),
        "{err}"
    );
}

#[test]
fn redis_going_away_fails_calls_until_it_is_back() {
    let mut server = RedisServer::start();
    let url = server.url();
    let f = Factory::redis(&server, Transactional).with_cache_size(0);
    let mut s = f.make(0);
    commit(&mut *s, 1, &[("a", 1)]).unwrap();

    server.stop();
    let err = s.multi_get(&[key("a")]).unwrap_err();
    assert!(
        err.0
            .starts_with(&format!("Redis at {url}: MGET of 1 keys failed: ")),
        "{err}"
    );
    let err = commit(&mut *s, 2, &[("a", 1)]).unwrap_err();
    assert!(
        err.0
            .starts_with(&format!("cannot connect to Redis at {url}: ")),
        "{err}"
    );

    // Back (empty: the test server keeps nothing): the same state reconnects.
    server.restart();
    assert_eq!(get(&mut *s, "a"), None);
    assert_eq!(commit(&mut *s, 2, &[("a", 1)]).unwrap(), [1]);
    assert_eq!(get(&mut *s, "a"), Some(1));
}

#[test]
fn redis_that_stops_answering_times_out_and_the_next_call_reconnects() {
    let server = RedisServer::start();
    let Factory::Redis(f) = Factory::redis(&server, Opaque).with_cache_size(0) else {
        unreachable!()
    };
    let f = f.with_timeout(Duration::from_secs(1));
    let mut s = f
        .make_state(&Config::default(), &ctx("wc", "counts"))
        .unwrap();
    commit(&mut *s, 1, &[("a", 7)]).unwrap();

    server.pause();
    let started = Instant::now();
    let err = s.multi_get(&[key("a")]).unwrap_err();
    let waited = started.elapsed();
    server.resume();
    assert!(err.0.ends_with("failed: no answer within 1s"), "{err}");
    assert!(waited < Duration::from_secs(4), "gave up after {waited:?}");
    // The late answer to the timed-out MGET is never read as the answer to a later call.
    assert_eq!(get(&mut *s, "a"), Some(7));
    assert_eq!(commit(&mut *s, 2, &[("a", 1), ("b", 2)]).unwrap(), [8, 2]);
    assert_eq!(get(&mut *s, "b"), Some(2));
}

#[test]
fn redis_keys_and_records_are_readable_with_redis_cli() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.connection();
    let mut raw =
        |k: &str| -> Option<String> { ::redis::cmd("GET").arg(k).query(&mut conn).unwrap() };

    // The default prefix: <topology>:<state name>:
    let t = RedisMapState::transactional(&url);
    let mut s = t
        .make_state(&Config::default(), &ctx("wordcount", "counts"))
        .unwrap();
    commit(&mut *s, 5, &[("the", 12)]).unwrap();
    assert_eq!(
        raw(r#"wordcount:counts:["the"]"#).as_deref(),
        Some(r#"{"txid":5,"val":12}"#)
    );
    assert_eq!(
        counts(&t.snapshot_of("wordcount", "counts").unwrap()),
        BTreeMap::from([("the".into(), 12)])
    );

    let o = RedisMapState::opaque(&url).with_prefix("o:");
    let mut s = o
        .make_state(&Config::default(), &ctx("wordcount", "opaque"))
        .unwrap();
    commit(&mut *s, 4, &[("the", 7)]).unwrap();
    commit(&mut *s, 5, &[("the", 5)]).unwrap();
    assert_eq!(
        raw(r#"o:["the"]"#).as_deref(),
        Some(r#"{"txid":5,"prev":7,"curr":12}"#)
    );

    let n = RedisMapState::non_transactional(&url).with_prefix("n[1]*:");
    let mut s = n
        .make_state(&Config::default(), &ctx("wordcount", "plain"))
        .unwrap();
    s.multi_put(&[vec!["nl".into(), 2024.into()]], vec![3.into()])
        .unwrap();
    assert_eq!(raw(r#"n[1]*:["nl",2024]"#).as_deref(), Some("3"));
    // A prefix with glob characters matches only its own keys.
    let snap = n.snapshot().unwrap();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap.get(&["nl".into(), 2024.into()]), Some(&Value::Int(3)));

    // A key under the prefix that holds something else is named in the error.
    let _: () = ::redis::cmd("SET")
        .arg(r#"o:["x"]"#)
        .arg("garbage")
        .query(&mut server.connection())
        .unwrap();
    let err = o.snapshot().unwrap_err();
    assert!(
        err.0
            .contains(r#"the value stored at key ["x"] is not an opaque record"#),
        "{err}"
    );
}

#[test]
fn redis_round_trips_one_per_call_whatever_the_number_of_keys() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let f = Factory::redis(&server, Opaque);
    let mut s = f.make(0);
    let batch: Vec<(String, i64)> = (0..200).map(|i| (format!("w{i}"), 1)).collect();
    let batch: Vec<(&str, i64)> = batch.iter().map(|(w, d)| (w.as_str(), *d)).collect();
    let keys: Vec<Key> = batch.iter().map(|(w, _)| key(w)).collect();

    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    commit(&mut *s, 1, &batch).unwrap();
    let calls = |conn: &mut ::redis::Connection, cmd: &str| -> u64 {
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query(conn)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    };
    assert_eq!((calls(&mut conn, "mget"), calls(&mut conn, "mset")), (1, 1));
    // The 200 keys are cached now: reading them again costs no round trip.
    assert_eq!(s.multi_get(&keys).unwrap().len(), 200);
    assert_eq!(calls(&mut conn, "mget"), 1);
    // Without a cache, one MGET for all of them.
    let mut uncached = f.clone().with_cache_size(0).make(0);
    assert!(uncached
        .multi_get(&keys)
        .unwrap()
        .iter()
        .all(|v| v == &Some(Value::Int(1))));
    assert_eq!(calls(&mut conn, "mget"), 2);
}
