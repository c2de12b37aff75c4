//! Two workers in one process, connected by the real TCP transport on loopback, with
//! executors placed so that tuples and acks cross both ways: W → X → Z → Y with the spout
//! W and the bolt Z on worker B, the slow bolt X, the bolt Y and the acker on worker A.
//!
//! With one connection per pair of workers this deadlocks within seconds: X's full
//! queue stops A's reader, so B's connection to A fills, Z blocks sending to Y, Z's
//! queue fills, B's reader stops, A's connection to B fills, and X blocks sending to Z.
//! With one lane per remote executor, every wait follows the topology's DAG.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputFieldsDeclarer, Spout,
    SpoutOutputCollector, TaskLayout, TopologyBuilder, Tuple,
};
use squall_cluster::state::{Assignment, ExecutorAssignment, WorkerSlot};
use squall_worker::cluster_worker::WorkerNet;

#[derive(Clone)]
struct Source(u64);

impl Spout for Source {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.0 += 1;
        out.emit_with_id(values![self.0 as i64, "x".repeat(2000)], self.0 as i64);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n", "pad"]);
    }
}

#[derive(Clone)]
struct Pass(Duration);

impl BasicBolt for Pass {
    fn execute(
        &mut self,
        input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        if !self.0.is_zero() {
            std::thread::sleep(self.0);
        }
        out.emit(input.values().into());
        Ok(())
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n", "pad"]);
    }
}

#[test]
fn acking_across_two_workers_never_stalls() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut b = TopologyBuilder::new();
    b.set_spout("w", Source(0), 1);
    b.set_bolt("x", Pass(Duration::from_micros(200)), 1)
        .shuffle_grouping("w");
    b.set_bolt("z", Pass(Duration::ZERO), 1)
        .shuffle_grouping("x");
    b.set_bolt("y", Pass(Duration::ZERO), 1)
        .shuffle_grouping("z");
    let topology = b.create_topology().unwrap();
    // No max spout pending; small queues so that they fill at once.
    let mut conf = Config::new();
    conf.set_num_ackers(1);
    conf.set("topology.executor.receive.buffer.size", 64i64);
    conf.set("topology.producer.batch.size", 16i64);
    let layout = TaskLayout::new(topology.spec(), 1);
    let listeners = [
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    ];
    let slots: Vec<WorkerSlot> = listeners
        .iter()
        .map(|l| WorkerSlot {
            node: "local".into(),
            port: l.local_addr().unwrap().port(),
        })
        .collect();
    let (a, b) = (&slots[0], &slots[1]);
    let executors = layout
        .executors()
        .map(|(c, first, last)| ExecutorAssignment {
            component: c.to_string(),
            first,
            last,
            slot: if matches!(c.as_str(), "x" | "y" | "__acker") {
                a.clone()
            } else {
                b.clone()
            },
        })
        .collect();
    let assignment = Assignment {
        topology_id: "cross-1".into(),
        topology_name: "cross".into(),
        binary_sha256: String::new(),
        args: Vec::new(),
        conf,
        executors,
        node_host: BTreeMap::from([("local".to_owned(), "127.0.0.1".to_owned())]),
        slot_start_secs: BTreeMap::new(),
        version: 1,
        epoch: 1,
    };
    let mut workers: Vec<WorkerNet> = listeners
        .into_iter()
        .zip(&slots)
        .map(|(l, slot)| WorkerNet::start(&topology, &assignment, slot, l, None, true).unwrap())
        .collect();
    let spout = |w: &[WorkerNet]| w[1].runtime().stats().component("w");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let mut last = spout(&workers).acked;
    while start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_secs(3));
        let s = spout(&workers);
        assert!(
            s.acked > last,
            "no tree was acked in 3 s: stalled at {} acked, {} failed; transport {:?} / {:?}",
            s.acked,
            s.failed,
            workers[0].transport_stats(),
            workers[1].transport_stats()
        );
        assert_eq!(s.failed, 0, "trees failed");
        last = s.acked;
    }
    // Every acked tree went through both workers twice.
    let y = workers[0].runtime().stats().component("y");
    assert!(y.executed >= last, "{y:?}");
    for w in workers.drain(..) {
        w.shutdown(None);
    }
}
