//! Automatic spout flow control: with acking and no `topology.max.spout.pending`, a
//! spout much faster than its slowest bolt keeps few trees in flight (complete latency
//! stays near its value with empty queues) instead of filling every queue; with
//! `squall.spout.flow.control: false` it fills them, as Storm's spouts do.

use std::time::{Duration, Instant};

use squall_api::config::keys::SQUALL_SPOUT_FLOW_CONTROL;
use squall_api::windowing::{TupleWindow, Windowed, WindowedBolt};
use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyBuilder, Tuple,
};
use squall_worker::LocalCluster;

/// Emits as fast as it is allowed to (or one tuple per 100 µs when `slow`), every
/// tuple tracked.
#[derive(Clone, Default)]
struct Flood(u64, bool);

impl Spout for Flood {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.1 {
            std::thread::sleep(Duration::from_micros(100));
        }
        self.0 += 1;
        out.emit_with_id(values![self.0 as i64], self.0 as i64);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// Works 50 µs on every tuple (about 20,000 tuples/s).
#[derive(Clone)]
struct Slow;

impl BasicBolt for Slow {
    fn execute(&mut self, _: &Tuple, _: &mut BasicOutputCollector<'_, '_>) -> Result<(), BoxError> {
        let until = Instant::now() + Duration::from_micros(50);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(())
    }
    fn declare_output_fields(&self, _: &mut OutputFieldsDeclarer) {}
}

/// Runs Flood → Slow for a while; returns the most trees the spout had in flight after
/// the first second, the trees acked, and the spout's final pending limit.
fn run(conf: Config) -> (u64, u64, u64) {
    let mut b = TopologyBuilder::new();
    b.set_spout("flood", Flood::default(), 1);
    b.set_bolt("slow", Slow, 1).shuffle_grouping("flood");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("flow", &conf, &b.create_topology().unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        most = most.max(cluster.stats("flow").unwrap().component("flood").pending);
        std::thread::sleep(Duration::from_millis(20));
    }
    let spout = cluster.stats("flow").unwrap().component("flood");
    cluster.kill_topology("flow").unwrap();
    (most, spout.acked, spout.pending_limit)
}

#[test]
fn a_flooding_spout_keeps_few_trees_in_flight_by_default() {
    let (most, acked, limit) = run(Config::new());
    assert!(acked > 1_000, "only {acked} trees acked");
    // The bolt takes ~20,000 tuples/s and the queueing budget is a few ms: a few
    // hundred trees keep it busy. Without flow control the spout fills the bolt's
    // queue: tens of thousands (below).
    assert!(
        most < 3_000,
        "the spout had up to {most} trees in flight (limit {limit})"
    );
    assert!(limit > 0 && limit < 3_000, "limit {limit}");

    let mut off = Config::new();
    off.set(SQUALL_SPOUT_FLOW_CONTROL, false);
    let (most, acked, limit) = run(off);
    assert!(acked > 1_000, "only {acked} trees acked");
    assert_eq!(limit, 0, "no limit is in use when flow control is off");
    assert!(
        most > 10_000,
        "without flow control the queues fill: only {most} trees were in flight"
    );

    // A set topology.max.spout.pending wins over flow control.
    let mut fixed = Config::new();
    fixed.set_max_spout_pending(5_000);
    let (most, _, limit) = run(fixed);
    assert_eq!(limit, 0);
    assert!(most > 3_000 && most <= 5_000, "{most} trees in flight");
}

/// Counts its windows' tuples.
#[derive(Clone)]
struct Sizes;

impl WindowedBolt for Sizes {
    fn execute(&mut self, w: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        out.emit(values![w.get().len() as i64]);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["size"]);
    }
}

#[test]
fn windowed_topologies_keep_their_trees_open_without_flow_control() {
    // A tuple is acked once it left its windows: complete latency is the window, not
    // queueing, so flow control would only slow the spout down.
    let mut b = TopologyBuilder::new();
    b.set_spout("flood", Flood(0, true), 1);
    b.set_bolt(
        "windows",
        Windowed::new(Sizes).with_tumbling_window(Duration::from_millis(500)),
        1,
    )
    .shuffle_grouping("flood");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("windowed", &Config::new(), &b.create_topology().unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let spout = cluster.stats("windowed").unwrap().component("flood");
    cluster.kill_topology("windowed").unwrap();
    assert_eq!(spout.pending_limit, 0, "{spout:?}");
    assert!(spout.acked > 100, "{spout:?}");
}
