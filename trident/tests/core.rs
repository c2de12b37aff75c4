//! The batch runtime end to end in local mode, with a small state of the test's own
//! (the real map states have their own tests).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::{values, BoxError, Config, Value};
use squall_trident::state::{Key, MapState, StateContext, StateError, StateFactory};
use squall_trident::store::CoordinatorStore;
use squall_trident::{
    Count, FeederSpout, Opaque, Transactional, TridentCollector, TridentTopology, TridentTuple,
};
use squall_worker::LocalCluster;

/// A transactional map in memory, failing `multi_update` with probability `p`.
#[derive(Clone)]
struct TestMap {
    map: Arc<Mutex<HashMap<String, (u64, Value)>>>,
    p: f64,
}

impl TestMap {
    fn new(p: f64) -> Self {
        TestMap {
            map: Arc::default(),
            p,
        }
    }
    fn counts(&self) -> BTreeMap<String, i64> {
        self.map
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.as_i64().unwrap()))
            .collect()
    }
}

struct TestPartition {
    map: Arc<Mutex<HashMap<String, (u64, Value)>>>,
    p: f64,
    rng: fastrand::Rng,
    txid: u64,
}

fn key(k: &Key) -> String {
    k.iter()
        .map(|v| v.as_str().unwrap_or("?").to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

impl StateFactory for TestMap {
    fn make_state(
        &self,
        _conf: &Config,
        ctx: &StateContext,
    ) -> Result<Box<dyn MapState>, StateError> {
        Ok(Box::new(TestPartition {
            map: self.map.clone(),
            p: self.p,
            rng: fastrand::Rng::with_seed(ctx.partition as u64 + 7),
            txid: 0,
        }))
    }
}

impl MapState for TestPartition {
    fn begin_commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.txid = txid;
        Ok(())
    }
    fn commit(&mut self, _txid: u64) -> Result<(), StateError> {
        Ok(())
    }
    fn multi_get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StateError> {
        let m = self.map.lock().unwrap();
        Ok(keys
            .iter()
            .map(|k| m.get(&key(k)).map(|(_, v)| v.clone()))
            .collect())
    }
    fn multi_update(
        &mut self,
        keys: &[Key],
        update: &mut dyn FnMut(usize, Option<Value>) -> Value,
    ) -> Result<Vec<Value>, StateError> {
        let mut m = self.map.lock().unwrap();
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            // Fail part-way through, as a store can.
            if self.rng.f64() < self.p {
                return Err(StateError::new("injected write failure"));
            }
            let e = m.entry(key(k)).or_insert((0, Value::Int(0)));
            if e.0 != self.txid {
                let v = update(i, Some(e.1.clone()));
                *e = (self.txid, v);
            }
            out.push(e.1.clone());
        }
        Ok(out)
    }
    fn multi_put(&mut self, keys: &[Key], values: Vec<Value>) -> Result<(), StateError> {
        let mut m = self.map.lock().unwrap();
        for (k, v) in keys.iter().zip(values) {
            m.insert(key(k), (self.txid, v));
        }
        Ok(())
    }
}

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

fn wait_for(state: &TestMap, want: &BTreeMap<String, i64>, secs: u64) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = state.counts();
        if &got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(name: &str, opaque: bool, p_fn: f64, p_state: f64) {
    let feeder = FeederSpout::new(["sentence"], 3)
        .max_batch_size(7)
        .vary_batches(11);
    let state = TestMap::new(p_state);
    let mut topology = TridentTopology::new();
    let stream = if opaque {
        topology.new_stream(name, Opaque(feeder.clone()))
    } else {
        topology.new_stream(name, Transactional(feeder.clone()))
    };
    stream
        .parallelism_hint(2)
        .each(
            ["sentence"],
            FlakySplit {
                p: p_fn,
                rng: fastrand::Rng::with_seed(3),
            },
            ["word"],
        )
        .group_by(["word"])
        .persistent_aggregate(state.clone(), Count, ["count"])
        .parallelism_hint(2);
    let topology = topology.build().unwrap();
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, &conf(), &topology).unwrap();
    let n = 500;
    feeder.feed((0..n).map(|i| values![SENTENCES[i % 5]]));
    let want = expected(n);
    let got = wait_for(&state, &want, 60);
    cluster.kill_topology(name).unwrap();
    assert_eq!(got, want, "final counts differ from the input's");
    // The batch group's transactional state is named after the stream (Storm's txId).
    let record = squall_trident::store::MemoryStore::global()
        .get(&format!("{name}/coordinator"))
        .unwrap();
    assert!(
        record.is_some(),
        "no coordinator record at {name}/coordinator"
    );
}

#[test]
fn transactional_counts_are_exact() {
    run("core-tx", false, 0.0, 0.0);
}

#[test]
fn transactional_counts_are_exact_under_failures() {
    run("core-tx-fail", false, 0.002, 0.05);
}

#[test]
fn opaque_counts_are_exact_under_failures() {
    run("core-opaque-fail", true, 0.002, 0.05);
}
