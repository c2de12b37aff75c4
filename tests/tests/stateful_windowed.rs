//! Stateful windowed bolts in local mode (memory and Redis providers): a finite input
//! of timestamped events through random failures (upstream tuples failed, window
//! results failed downstream). The window results committed downstream (by a stateful
//! bolt: each window once) equal an ideal run's exactly, and the window's committed
//! state holds each event once.

#[path = "../../trident/tests/common/redis.rs"]
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::RedisServer;
use squall_api::state::{keys, namespace, KeyValueState, StatefulBolt, StatefulWindowedBolt};
use squall_api::windowing::{TupleWindow, Windowed};
use squall_api::{
    values, Bolt, Config, OutputCollector, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
    TaskLayout, Topology, TopologyBuilder, Tuple, Value,
};
use squall_worker::LocalCluster;

/// Event times start here and step by `STEP` ms.
const BASE: i64 = 1_700_000_000_000;
const STEP: i64 = 10;
const KEYS: i64 = 3;
/// The sliding window: the last `LENGTH` ms, every `SLIDE` ms.
const LENGTH: i64 = 200;
const SLIDE: i64 = 100;

fn event(i: u64) -> (i64, i64) {
    (BASE + i as i64 * STEP, i as i64 % KEYS)
}

/// Emits events 0..limit (`ts`, `key`) with message id = the event's number, the
/// smallest failed one first, at most `RATE` per second.
#[derive(Clone)]
struct Events {
    limit: u64,
    next: u64,
    replay: BTreeSet<u64>,
    started: Option<Instant>,
    sent: u64,
}

const RATE: u64 = 1000;

impl Spout for Events {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.sent >= started.elapsed().as_millis() as u64 * RATE / 1000 {
            return;
        }
        self.sent += 1;
        let i = match self.replay.pop_first() {
            Some(i) => i,
            None if self.next < self.limit => {
                self.next += 1;
                self.next - 1
            }
            None => return,
        };
        let (ts, key) = event(i);
        out.emit_with_id(values![ts, key], i as i64);
    }

    fn fail(&mut self, msg_id: Value) {
        if let Value::Int(i) = msg_id {
            self.replay.insert(i as u64);
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["ts", "key"]);
    }
}

/// Passes events on; fails one with probability `fail_rate`, and the first time it
/// sees the event stamped `fail_once` (so that a run has at least one failure).
#[derive(Clone)]
struct Flaky {
    fail_rate: f64,
    fail_once: Option<i64>,
}

impl Bolt for Flaky {
    fn execute(&mut self, t: Tuple, out: &mut OutputCollector<'_>) {
        let forced = self.fail_once.is_some() && t.get_long(0).ok() == self.fail_once;
        if forced {
            self.fail_once = None;
        }
        if forced || fastrand::f64() < self.fail_rate {
            return out.fail(&t);
        }
        out.emit_anchored(&t, t.values().iter().cloned().collect());
        out.ack(&t);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["ts", "key"]);
    }
}

/// Emits (key, end, count) per key of each window; its state counts the new events
/// per key and keeps the last window's end under "end".
#[derive(Clone)]
struct KeyCounts;

impl StatefulWindowedBolt for KeyCounts {
    type Key = String;
    type Value = i64;

    fn execute(
        &mut self,
        window: &TupleWindow<'_>,
        state: &mut KeyValueState<String, i64>,
        out: &mut OutputCollector<'_>,
    ) {
        let mut counts = BTreeMap::new();
        for t in window.get() {
            *counts.entry(t.get_long(1).unwrap()).or_insert(0i64) += 1;
        }
        for t in window.get_new() {
            let k = t.get_long(1).unwrap().to_string();
            let n = state.get(&k).copied().unwrap_or(0);
            state.put(k, n + 1);
        }
        state.put("end".to_owned(), window.end_timestamp());
        for (key, n) in counts {
            out.emit(values![key, window.end_timestamp(), n]);
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["key", "end", "count"]);
    }
}

/// Keeps each window result in its state ("key@end" → count), counting under "dup"
/// a result applied twice; fails one with probability `fail_rate`.
#[derive(Clone)]
struct Collect {
    fail_rate: f64,
}

impl StatefulBolt for Collect {
    type Key = String;
    type Value = i64;

    fn execute(
        &mut self,
        t: Tuple,
        state: &mut KeyValueState<String, i64>,
        out: &mut OutputCollector<'_>,
    ) {
        if fastrand::f64() < self.fail_rate {
            return out.fail(&t);
        }
        let (key, end, n) = (
            t.get_long(0).unwrap(),
            t.get_long(1).unwrap(),
            t.get_long(2).unwrap(),
        );
        let k = format!("{key}@{end}");
        if state.get(&k).is_some() {
            let d = state.get(&"dup".to_owned()).copied().unwrap_or(0);
            state.put("dup".to_owned(), d + 1);
        }
        state.put(k, n);
        out.ack(&t);
    }
}

/// The ideal count of `key` in the window ending at `end`.
fn ideal(events: u64, key: i64, end: i64) -> i64 {
    (0..events)
        .map(event)
        .filter(|&(ts, k)| k == key && ts > end - LENGTH && ts <= end)
        .count() as i64
}

fn topology(events: u64, flaky: f64, collect_fail: f64) -> Topology {
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "events",
        Events {
            limit: events,
            next: 0,
            replay: BTreeSet::new(),
            started: None,
            sent: 0,
        },
        1,
    );
    let flaky = Flaky {
        fail_rate: flaky,
        fail_once: (flaky > 0.0).then(|| event(events / 2).0),
    };
    b.set_bolt("flaky", flaky, 2).shuffle_grouping("events");
    b.set_stateful_windowed_bolt(
        "win",
        Windowed::stateful(KeyCounts)
            .with_window(
                Duration::from_millis(LENGTH as u64),
                Duration::from_millis(SLIDE as u64),
            )
            .with_timestamp_field("ts")
            .with_watermark_interval(Duration::from_millis(50)),
        2,
    )
    .fields_grouping("flaky", ["key"]);
    b.set_stateful_bolt(
        "collect",
        Collect {
            fail_rate: collect_fail,
        },
        1,
    )
    .shuffle_grouping("win");
    b.create_topology().unwrap()
}

/// The committed states of `component`'s tasks: per task, key → value.
fn states(conf: &Config, name: &str, t: &Topology, component: &str) -> Vec<BTreeMap<String, i64>> {
    TaskLayout::new(t.spec(), 1)
        .component_tasks(component)
        .iter()
        .map(|task| {
            let s: KeyValueState<String, i64> =
                KeyValueState::open(conf, &namespace(name, component, *task)).unwrap();
            s.iter().map(|(k, v)| (k.clone(), *v)).collect()
        })
        .collect()
}

fn run(name: &str, mut conf: Config, events: u64, flaky: f64, collect_fail: f64) {
    let t = topology(events, flaky, collect_fail);
    conf.set(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, 200);
    conf.set_max_spout_pending(500);
    conf.set_message_timeout_secs(5);
    let last_ts = event(events - 1).0;
    // Every window ending here fires: later events (the last 200, a fifth of a second)
    // carry every task's watermark past it.
    let cutoff = last_ts - 200 * STEP;
    let first_end = (BASE / SLIDE) * SLIDE;
    let wanted: BTreeMap<(i64, i64), i64> = (0..)
        .map(|k| first_end + k * SLIDE)
        .take_while(|end| *end <= cutoff)
        .flat_map(|end| (0..KEYS).map(move |key| ((key, end), ideal(events, key, end))))
        .filter(|(_, n)| *n > 0)
        .collect();
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, &conf, &t).unwrap();
    let start = Instant::now();
    let limit = Duration::from_secs(
        std::env::var("SWW_LIMIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let results = |collected: &[BTreeMap<String, i64>]| -> BTreeMap<(i64, i64), i64> {
        let mut got = BTreeMap::new();
        for (k, n) in collected.iter().flatten() {
            if let Some((key, end)) = k.split_once('@') {
                got.insert((key.parse().unwrap(), end.parse().unwrap()), *n);
            }
        }
        got
    };
    let done = |states: &[BTreeMap<String, i64>], got: &BTreeMap<(i64, i64), i64>| {
        wanted.keys().all(|k| got.contains_key(k))
            && states
                .iter()
                .all(|s| s.is_empty() || s.get("end").is_some_and(|e| *e >= cutoff))
            && states.iter().any(|s| !s.is_empty())
    };
    let mut last_states = Vec::new();
    let mut collected = Vec::new();
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
        // The collector first: its commits lag the window's.
        collected = states(&conf, name, &t, "collect");
        last_states = states(&conf, name, &t, "win");
        if done(&last_states, &results(&collected)) {
            break;
        }
    }
    let stats = cluster.kill_topology(name).unwrap();
    let got = results(&collected);
    let dups: i64 = collected.iter().filter_map(|s| s.get("dup")).sum();
    assert_eq!(dups, 0, "window results applied twice downstream");
    // Every committed result is the ideal run's.
    for ((key, end), n) in &got {
        let want = ideal(events, *key, *end);
        assert_eq!(
            *n, want,
            "window ending at {end}, key {key}: count {n}, the input has {want}"
        );
    }
    for (k, n) in &wanted {
        assert!(
            got.contains_key(k),
            "after {limit:?}, no result for window (key, end) {k:?} (want {n})"
        );
    }
    // The committed state counts each event of a fired window once.
    let mut keys_seen = BTreeSet::new();
    for s in &last_states {
        let Some(&end) = s.get("end") else { continue };
        assert!(end >= cutoff, "a task's committed state stops at {end}");
        for (k, n) in s {
            if k == "end" {
                continue;
            }
            let key: i64 = k.parse().unwrap();
            keys_seen.insert(key);
            let want = (0..events)
                .map(event)
                .filter(|&(ts, kk)| kk == key && ts <= end)
                .count() as i64;
            assert_eq!(
                *n, want,
                "key {key}: state counts {n} events up to {end}, the input has {want}"
            );
        }
    }
    assert_eq!(keys_seen.len(), KEYS as usize, "every key has state");
    assert!(stats.component("$checkpointspout").acked > 0);
    if flaky > 0.0 || collect_fail > 0.0 {
        assert!(
            stats.component("$checkpointspout").failed > 0,
            "failures rolled back: {:?}",
            stats.component("$checkpointspout")
        );
    }
}

#[test]
fn memory_windows_are_exact_without_failures() {
    run("sww-mem", Config::new(), 2000, 0.0, 0.0);
}

#[test]
fn memory_windows_are_exact_through_random_failures() {
    run("sww-mem-failures", Config::new(), 3000, 0.0005, 0.002);
}

#[test]
fn redis_windows_are_exact_through_random_failures() {
    let server = RedisServer::start();
    let mut conf = Config::new();
    conf.set(keys::TOPOLOGY_STATE_PROVIDER, "redis");
    conf.set(
        keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
        serde_json::json!({ "url": server.url() }).to_string(),
    );
    run("sww-redis", conf, 3000, 0.0005, 0.002);
}
