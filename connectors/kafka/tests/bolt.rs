//! The KafkaBolt acks an input only once the broker confirmed its record, fails it when
//! delivery fails, and acks at once with fire-and-forget.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::broker::{unique_topic, KafkaBroker};
use common::{read_all, wait_until};
use squall_api::{
    values, Config, OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyBuilder, Value,
};
use squall_kafka::{create_topics, KafkaBolt};
use squall_worker::LocalCluster;

#[derive(Default)]
struct Log {
    acked: BTreeSet<i64>,
    failed: BTreeSet<i64>,
}

/// Emits `(key, message)` = `(k<i>, v<i>)` for `i` in `0..n`, tracked under `i`, once
/// each (no replays), and logs acks and fails.
#[derive(Clone)]
struct Numbers {
    n: i64,
    next: i64,
    log: Arc<Mutex<Log>>,
}

impl Spout for Numbers {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.next < self.n {
            let i = self.next;
            self.next += 1;
            out.emit_with_id(values![format!("k{i}"), format!("v{i}")], i);
        }
    }
    fn ack(&mut self, id: Value) {
        self.log.lock().unwrap().acked.insert(id.as_i64().unwrap());
    }
    fn fail(&mut self, id: Value) {
        self.log.lock().unwrap().failed.insert(id.as_i64().unwrap());
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["key", "message"]);
    }
}

/// Runs `n` numbers into `bolt`; returns the spout's log once `done` holds (or after
/// 30 s) and the errors reported.
fn run(name: &str, n: i64, bolt: KafkaBolt, done: impl Fn(&Log) -> bool) -> (Log, Vec<String>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut builder = TopologyBuilder::new();
    builder.set_spout(
        "numbers",
        Numbers {
            n,
            next: 0,
            log: log.clone(),
        },
        1,
    );
    builder
        .set_bolt("to-kafka", bolt, 2)
        .shuffle_grouping("numbers");
    let cluster = LocalCluster::new();
    let mut conf = Config::new();
    conf.set_message_timeout_secs(30);
    cluster
        .submit_topology(name, &conf, &builder.create_topology().unwrap())
        .unwrap();
    wait_until(Duration::from_secs(30), || done(&log.lock().unwrap()));
    let errors = cluster
        .errors(name)
        .unwrap()
        .into_iter()
        .map(|e| e.error)
        .collect();
    cluster.kill_topology(name).unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, errors)
}

/// A `host:port` where nothing listens.
fn dead_broker() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

#[test]
fn inputs_are_acked_once_their_records_are_delivered() {
    let broker = KafkaBroker::start();
    let b = broker.bootstrap().to_owned();
    let topic = unique_topic("bolt-out");
    create_topics(&b, &[(&topic, 2)], Duration::from_secs(10)).unwrap();
    let n = 300;
    let (log, errors) = run("bolt-acks", n, KafkaBolt::new(&b).with_topic(&topic), |l| {
        l.acked.len() + l.failed.len() == n as usize
    });
    assert_eq!(log.acked.len(), n as usize, "acked; errors: {errors:?}");
    assert!(log.failed.is_empty(), "failed: {:?}", log.failed);
    let mut records: Vec<(String, String)> = read_all(&b, &topic, 2)
        .into_iter()
        .map(|(_, _, k, v)| (k, v))
        .collect();
    records.sort();
    let mut want: Vec<(String, String)> =
        (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    want.sort();
    assert_eq!(
        records, want,
        "the topic holds each input's key and message once"
    );
}

#[test]
fn inputs_fail_when_delivery_fails() {
    let bolt = KafkaBolt::new(dead_broker())
        .with_topic("nowhere")
        .with_producer_property("message.timeout.ms", "1500");
    let n = 20;
    let (log, errors) = run("bolt-fails", n, bolt, |l| l.failed.len() == n as usize);
    assert_eq!(
        log.failed.len(),
        n as usize,
        "every input fails; acked: {:?}",
        log.acked
    );
    assert!(log.acked.is_empty());
    assert!(
        errors
            .iter()
            .any(|e| e.contains("delivery failed") && e.contains("to-kafka")),
        "{errors:?}"
    );
}

#[test]
fn fire_and_forget_acks_without_waiting_for_the_broker() {
    let bolt = KafkaBolt::new(dead_broker())
        .with_topic("nowhere")
        .with_producer_property("message.timeout.ms", "1500")
        .fire_and_forget(true);
    let n = 20;
    let (log, _) = run("bolt-faf", n, bolt, |l| l.acked.len() == n as usize);
    assert_eq!(log.acked.len(), n as usize);
    assert!(log.failed.is_empty());
}

#[test]
fn a_bolt_without_a_topic_is_refused_at_prepare() {
    let mut builder = TopologyBuilder::new();
    builder.set_spout(
        "numbers",
        Numbers {
            n: 1,
            next: 0,
            log: Default::default(),
        },
        1,
    );
    builder
        .set_bolt("to-kafka", KafkaBolt::new(dead_broker()), 1)
        .shuffle_grouping("numbers");
    let cluster = LocalCluster::new();
    let err = cluster
        .submit_topology(
            "no-topic",
            &Config::new(),
            &builder.create_topology().unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no topic"), "{err}");
}
