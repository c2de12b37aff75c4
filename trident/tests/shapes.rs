//! Batch shapes known to hang in Storm complete here, and the stream operations compute
//! what they say: merges, joins, several states in one batch, global aggregations, DRPC.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::{values, BoxError, Config, Value, Values};
use squall_trident::{
    Count, DrpcError, FeederSpout, FilterNull, LocalDrpc, MapGet, MemoryMapState, Min, Sum,
    Transactional, TridentCollector, TridentTopology, TridentTuple,
};
use squall_worker::LocalCluster;

fn split(t: &TridentTuple<'_>, out: &mut TridentCollector) -> Result<(), BoxError> {
    for w in t.get_string(0)?.split(' ') {
        out.emit(values![w]);
    }
    Ok(())
}

fn conf() -> Config {
    let mut c = Config::new();
    c.set("topology.trident.batch.emit.interval.millis", 10);
    c.set_max_spout_pending(3);
    c.set_message_timeout_secs(10);
    c
}

fn counts(m: &MemoryMapState) -> BTreeMap<String, i64> {
    m.snapshot()
        .iter()
        .map(|(k, v)| {
            let key: Vec<String> = k
                .iter()
                .map(|v| match v {
                    Value::Str(s) => s.to_string(),
                    v => format!("{v:?}"),
                })
                .collect();
            (key.join(","), v.as_i64().unwrap_or(-1))
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn words(sentences: &[&str]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for s in sentences {
        for w in s.split(' ') {
            *m.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

const TEXT: [&str; 4] = [
    "the cow jumped over the moon",
    "the man went to the store and bought some candy",
    "four score and seven years ago",
    "how many apples can you eat",
];

fn feed(f: &FeederSpout, times: usize) -> Vec<&'static str> {
    let all: Vec<&str> = (0..times).flat_map(|_| TEXT).collect();
    f.feed(all.iter().map(|s| values![*s]));
    all
}

#[test]
fn group_by_after_partition_by_completes() {
    let feeder = FeederSpout::new(["sentence"], 2).max_batch_size(5);
    let state = MemoryMapState::transactional();
    let mut t = TridentTopology::new();
    t.new_stream("shape-pb", Transactional(feeder.clone()))
        .partition_by(["sentence"])
        .each(["sentence"], split, ["word"])
        .parallelism_hint(3)
        .group_by(["word"])
        .persistent_aggregate(state.clone(), Count, ["count"])
        .parallelism_hint(2);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("shape-pb", &conf(), &t.build().unwrap())
        .unwrap();
    let want = words(&feed(&feeder, 25));
    wait_until("counts", || counts(&state) == want);
    cluster.kill_topology("shape-pb").unwrap();
}

#[test]
fn a_merge_of_two_streams_feeds_one_persistent_aggregate() {
    let (a, b) = (
        FeederSpout::new(["sentence"], 1).max_batch_size(4),
        FeederSpout::new(["line"], 2).max_batch_size(3),
    );
    let state = MemoryMapState::opaque();
    let mut t = TridentTopology::new();
    let sa = t.new_stream("shape-merge-a", Transactional(a.clone()));
    let sb = t.new_stream("shape-merge-b", Transactional(b.clone()));
    t.merge(&[sa, sb])
        .each(["sentence"], split, ["word"])
        .group_by(["word"])
        .persistent_aggregate(state.clone(), Count, ["count"]);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("shape-merge", &conf(), &t.build().unwrap())
        .unwrap();
    let mut all = feed(&a, 10);
    all.extend(feed(&b, 7));
    let want = words(&all);
    wait_until("counts", || counts(&state) == want);
    cluster.kill_topology("shape-merge").unwrap();
}

#[test]
fn several_persistent_aggregates_in_one_batch() {
    let feeder = FeederSpout::new(["sentence"], 2).max_batch_size(6);
    let (by_word, by_letter, total) = (
        MemoryMapState::transactional(),
        MemoryMapState::opaque(),
        MemoryMapState::transactional(),
    );
    let mut t = TridentTopology::new();
    let w = t
        .new_stream("shape-many", Transactional(feeder.clone()))
        .each(["sentence"], split, ["word"]);
    w.group_by(["word"])
        .persistent_aggregate(by_word.clone(), Count, ["count"]);
    w.each(
        ["word"],
        |t: &TridentTuple<'_>, out: &mut TridentCollector| -> Result<(), BoxError> {
            out.emit(values![t.get_string(0)?[..1].to_owned()]);
            Ok(())
        },
        ["letter"],
    )
    .group_by(["letter"])
    .persistent_aggregate(by_letter.clone(), Count, ["count"]);
    w.persistent_aggregate(total.clone(), Count, ["count"]);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("shape-many", &conf(), &t.build().unwrap())
        .unwrap();
    let all = feed(&feeder, 20);
    let want = words(&all);
    let mut letters = BTreeMap::new();
    for (w, n) in &want {
        *letters.entry(w[..1].to_owned()).or_insert(0) += n;
    }
    let n: i64 = want.values().sum();
    wait_until("three states", || {
        counts(&by_word) == want
            && counts(&by_letter) == letters
            && counts(&total) == BTreeMap::from([(String::new(), n)])
    });
    cluster.kill_topology("shape-many").unwrap();
}

#[test]
fn a_join_pairs_tuples_of_the_same_batch_by_key() {
    let (people, cities) = (
        FeederSpout::new(["id", "name"], 1).max_batch_size(100),
        FeederSpout::new(["pid", "city"], 1).max_batch_size(100),
    );
    let seen: Arc<Mutex<Vec<Values>>> = Arc::default();
    let sink = seen.clone();
    let mut t = TridentTopology::new();
    let p = t.new_stream("join-people", Transactional(people.clone()));
    let c = t.new_stream("join-cities", Transactional(cities.clone()));
    t.join(&p, ["id"], &c, ["pid"], ["id", "name", "city"])
        .peek(move |t: &TridentTuple<'_>| sink.lock().unwrap().push(t.to_values()));
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("join", &conf(), &t.build().unwrap())
        .unwrap();
    people.feed([values![1, "ann"], values![2, "bob"], values![3, "cid"]]);
    cities.feed([
        values![1, "oslo"],
        values![3, "rome"],
        values![3, "nice"],
        values![9, "x"],
    ]);
    wait_until("joined tuples", || seen.lock().unwrap().len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    let mut got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|v| format!("{v:?}"))
        .collect();
    got.sort();
    cluster.kill_topology("join").unwrap();
    let mut want: Vec<String> = [
        values![1, "ann", "oslo"],
        values![3, "cid", "rome"],
        values![3, "cid", "nice"],
    ]
    .iter()
    .map(|v| format!("{v:?}"))
    .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn drpc_queries_state_and_aggregates_per_request() {
    let feeder = FeederSpout::new(["sentence"], 2).max_batch_size(10);
    let drpc = LocalDrpc::new();
    let mut t = TridentTopology::new();
    let counts = t
        .new_stream("drpc-counts", Transactional(feeder.clone()))
        .parallelism_hint(2)
        .each(["sentence"], split, ["word"])
        .group_by(["word"])
        .persistent_aggregate(MemoryMapState::transactional(), Count, ["count"])
        .parallelism_hint(2);
    t.new_local_drpc_stream("words", &drpc)
        .each(["args"], split, ["word"])
        .group_by(["word"])
        .state_query(&counts, ["word"], MapGet, ["count"])
        .filter(["count"], FilterNull)
        .aggregate(["count"], Sum, ["sum"]);
    t.new_local_drpc_stream("stats", &drpc)
        .each(["args"], split, ["word"])
        .group_by(["word"])
        .state_query(&counts, ["word"], MapGet, ["count"])
        .filter(["count"], FilterNull)
        .each(
            ["count"],
            |t: &TridentTuple<'_>, out: &mut TridentCollector| -> Result<(), BoxError> {
                out.emit(values![t.get(0).clone(), t.get(0).clone()]);
                Ok(())
            },
            ["lo", "hi"],
        )
        .aggregate(["lo"], Min, ["min"]);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("drpc-words", &conf(), &t.build().unwrap())
        .unwrap();
    let all = feed(&feeder, 10);
    let want = words(&all);
    let the = want["the"];
    let expect = format!("[[{}]]", the + want["cow"]);
    wait_until("DRPC answers", || {
        drpc.execute("words", "the cow").ok().as_deref() == Some(expect.as_str())
    });
    // Requests aggregate separately, even when served concurrently.
    let handles: Vec<_> = ["moon", "ago eat", "store candy store"]
        .into_iter()
        .map(|q| {
            let d = drpc.clone();
            std::thread::spawn(move || (q, d.execute("words", q)))
        })
        .collect();
    for h in handles {
        let (q, got) = h.join().unwrap();
        let sum: i64 = q.split(' ').map(|w| want[w]).sum();
        assert_eq!(got.unwrap(), format!("[[{sum}]]"), "query {q}");
    }
    // No known word: the sum of nothing.
    assert_eq!(drpc.execute("words", "zebra").unwrap(), "[[0]]");
    assert_eq!(
        drpc.execute("stats", "the moon").unwrap(),
        format!("[[{}]]", want["moon"])
    );
    cluster.kill_topology("drpc-words").unwrap();
}

#[test]
fn a_drpc_request_to_a_killed_topology_fails_instead_of_hanging() {
    let drpc = LocalDrpc::with_timeouts(Duration::from_secs(60), Duration::from_secs(3));
    let mut t = TridentTopology::new();
    t.new_local_drpc_stream("slow", &drpc).each(
        ["args"],
        |_t: &TridentTuple<'_>, out: &mut TridentCollector| -> Result<(), BoxError> {
            std::thread::sleep(Duration::from_secs(2));
            out.emit(values![1]);
            Ok(())
        },
        ["one"],
    );
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("slow", &conf(), &t.build().unwrap())
        .unwrap();
    let d = drpc.clone();
    let pending = std::thread::spawn(move || d.execute("slow", "x"));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    cluster.kill_topology("slow").unwrap();
    let got = pending.join().unwrap();
    assert!(
        matches!(&got, Err(DrpcError::Failed { .. })),
        "a killed topology must fail its requests: {got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_drpc_request_that_times_out_says_so() {
    let drpc = LocalDrpc::with_timeouts(Duration::from_secs(1), Duration::from_secs(30));
    let got = drpc.execute("nobody-serves-this", "x");
    assert!(matches!(got, Err(DrpcError::Timeout { .. })), "{got:?}");
    assert!(got.unwrap_err().to_string().contains("timed out"));
}

#[test]
fn a_stuck_batch_is_reported_with_the_operation_it_waits_for() {
    let feeder = FeederSpout::new(["sentence"], 2).max_batch_size(5);
    let slept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = slept.clone();
    let mut t = TridentTopology::new();
    t.new_stream("stuck", Transactional(feeder.clone()))
        .parallelism_hint(2)
        .each(
            ["sentence"],
            move |t: &TridentTuple<'_>, out: &mut TridentCollector| -> Result<(), BoxError> {
                if !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(9));
                }
                split(t, out)
            },
            ["word"],
        )
        .name("slowsplit")
        .group_by(["word"])
        .persistent_aggregate(MemoryMapState::transactional(), Count, ["count"]);
    let mut c = conf();
    c.set_message_timeout_secs(3);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("stuck", &c, &t.build().unwrap())
        .unwrap();
    feed(&feeder, 4);
    let mut errors = Vec::new();
    wait_until("a stuck batch and a timed-out batch reported", || {
        errors = cluster.errors("stuck").unwrap();
        errors.iter().any(|e| e.error.contains("is stuck"))
            && errors.iter().any(|e| e.error.contains("timed out after"))
    });
    cluster.kill_topology("stuck").unwrap();
    let stuck = errors
        .iter()
        .find(|e| e.error.contains("is stuck"))
        .unwrap();
    assert!(
        stuck.error.contains("waits for 'spout-stuck' task")
            && stuck
                .error
                .contains("(running spout-stuck → each(closure) → "),
        "{}",
        stuck.error
    );
}

type Seen = Arc<Mutex<Vec<String>>>;

fn collect(seen: &Seen) -> impl FnMut(&TridentTuple<'_>) + Clone + Send + 'static {
    let seen = seen.clone();
    move |t: &TridentTuple<'_>| {
        if t.values().all(|v| !v.is_null()) {
            seen.lock()
                .unwrap()
                .push(format!("{:?}", t.to_values().to_vec()));
        }
    }
}

fn sorted(seen: &Seen) -> Vec<String> {
    let mut v = seen.lock().unwrap().clone();
    v.sort();
    v
}

#[test]
fn stream_operations_compute_what_they_say() {
    let feeder = FeederSpout::new(["k", "v"], 1).max_batch_size(100);
    feeder.feed([values!["a", 1], values!["b", 2], values!["a", 3]]);
    let (mapped, flat, maxed, firsts, everywhere, projected) = (
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
    );
    let mut t = TridentTopology::new();
    let s = t.new_stream("ops", Transactional(feeder.clone()));
    let m = s.map(
        |t: &TridentTuple<'_>| -> Result<Values, BoxError> {
            Ok(values![t.get_string(0)?.to_uppercase(), t.get_i64(1)? * 10])
        },
        ["key", "ten"],
    );
    m.peek(collect(&mapped));
    m.flat_map(
        |t: &TridentTuple<'_>| -> Result<Vec<Values>, BoxError> {
            let n = t.get_i64(1)?;
            Ok(vec![values![n], values![n + 1]])
        },
        ["n"],
    )
    .shuffle()
    .parallelism_hint(2)
    .peek(collect(&flat));
    s.global()
        .partition_aggregate(["v"], squall_trident::Max, ["max"])
        .peek(collect(&maxed));
    s.group_by(["k"])
        .aggregate(["k", "v"], squall_trident::First, ["first_k", "first_v"])
        .peek(collect(&firsts));
    s.broadcast().parallelism_hint(3).peek(collect(&everywhere));
    s.project(["v"]).peek(collect(&projected));
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("ops", &conf(), &t.build().unwrap())
        .unwrap();
    wait_until("every branch", || {
        everywhere.lock().unwrap().len() >= 9 && firsts.lock().unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_topology("ops").unwrap();
    assert_eq!(
        sorted(&mapped),
        [
            r#"[Str("A"), Int(10)]"#,
            r#"[Str("A"), Int(30)]"#,
            r#"[Str("B"), Int(20)]"#
        ]
    );
    assert_eq!(
        sorted(&flat),
        [
            "[Int(10)]",
            "[Int(11)]",
            "[Int(20)]",
            "[Int(21)]",
            "[Int(30)]",
            "[Int(31)]"
        ]
    );
    assert_eq!(sorted(&maxed), ["[Int(3)]"]);
    assert_eq!(
        sorted(&firsts),
        [
            r#"[Str("a"), Str("a"), Int(1)]"#,
            r#"[Str("b"), Str("b"), Int(2)]"#
        ]
    );
    assert_eq!(everywhere.lock().unwrap().len(), 9, "3 tuples × 3 tasks");
    assert_eq!(sorted(&projected), ["[Int(1)]", "[Int(2)]", "[Int(3)]"]);
}

/// A batch spout with no replay guarantee: each task emits its sentences once.
#[derive(Clone)]
struct Once {
    done: bool,
}

impl squall_trident::BatchSpout for Once {
    fn output_fields(&self) -> squall_api::Fields {
        squall_api::Fields::new(["sentence"])
    }
    fn emit_batch(
        &mut self,
        _tx: &squall_trident::TransactionAttempt,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        if !std::mem::replace(&mut self.done, true) {
            for s in TEXT {
                out.emit(values![s]);
            }
        }
        Ok(())
    }
}

#[test]
fn a_non_transactional_spout_feeds_a_non_transactional_state() {
    let state = MemoryMapState::non_transactional();
    let mut t = TridentTopology::new();
    t.new_stream(
        "nontx",
        squall_trident::NonTransactional(Once { done: false }),
    )
    .parallelism_hint(2)
    .each(["sentence"], split, ["word"])
    .group_by(["word"])
    .persistent_aggregate(state.clone(), Count, ["count"]);
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("nontx", &conf(), &t.build().unwrap())
        .unwrap();
    let want = words(&[TEXT, TEXT].concat());
    wait_until("counts", || counts(&state) == want);
    cluster.kill_topology("nontx").unwrap();
}
