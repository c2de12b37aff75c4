//! Per-stream executor counters and backpressure as a worker reports them
//! (`TopologyRuntime::heartbeats`), checked against exact expected counts in local mode.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use squall_api::config::keys;
use squall_api::{
    values, Bolt, Config, OutputCollector, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
    TopologyBuilder, Tuple,
};
use squall_cluster::metrics::StreamStats;
use squall_cluster::state::ExecutorHeartbeat;
use squall_worker::LocalCluster;

/// Emits ids 1..=N once each with message id `n`: odd ids on stream `a`, even on `b`.
#[derive(Clone)]
struct TwoStreams {
    next: i64,
    last: i64,
}

impl Spout for TwoStreams {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.next > self.last {
            std::thread::sleep(Duration::from_millis(1));
            return;
        }
        let n = self.next;
        self.next += 1;
        let stream = if n % 2 == 1 { "a" } else { "b" };
        out.emit_stream(stream, values![n, n % 13], Some(n.into()));
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare_stream("a", ["n", "key"]);
        d.declare_stream("b", ["n", "key"]);
    }
}

/// Passes every input on, anchored, on stream `out`, and acks it.
#[derive(Clone)]
struct Relay;

impl Bolt for Relay {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let n = input.get_long(0).expect("n");
        out.emit_stream("out", &[&input], values![n]);
        out.ack(&input);
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare_stream("out", ["n"]);
    }
}

/// Fails multiples of 5 explicitly, leaves other multiples of 7 un-acked (they time
/// out), acks the rest.
#[derive(Clone)]
struct Judge;

fn verdict(n: i64) -> Verdict {
    if n % 5 == 0 {
        Verdict::Fail
    } else if n % 7 == 0 {
        Verdict::TimeOut
    } else {
        Verdict::Ack
    }
}

#[derive(PartialEq)]
enum Verdict {
    Ack,
    Fail,
    TimeOut,
}

impl Bolt for Judge {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        match verdict(input.get_long(0).expect("n")) {
            Verdict::Ack => out.ack(&input),
            Verdict::Fail => out.fail(&input),
            Verdict::TimeOut => {}
        }
    }
}

/// Rows of all executors of `component`, summed per (source component, stream).
fn rows(
    hbs: &[ExecutorHeartbeat],
    component: &str,
    inputs: bool,
) -> BTreeMap<(Option<String>, String), StreamStats> {
    let mut out: BTreeMap<(Option<String>, String), StreamStats> = BTreeMap::new();
    for hb in hbs.iter().filter(|h| h.component == component) {
        let rows = if inputs {
            &hb.counters.inputs
        } else {
            &hb.counters.outputs
        };
        for r in rows {
            out.entry((r.component.clone(), r.stream.clone()))
                .or_insert_with(|| StreamStats {
                    component: r.component.clone(),
                    stream: r.stream.clone(),
                    ..Default::default()
                })
                .add(r);
        }
    }
    out
}

/// The counts a test compares: (row, field) → value.
type Counts = BTreeMap<String, u64>;

fn observed(hbs: &[ExecutorHeartbeat]) -> Counts {
    let mut c = Counts::new();
    let mut put = |k: String, v: u64| {
        c.insert(k, v);
    };
    for (component, inputs) in [
        ("src", false),
        ("relay", false),
        ("relay", true),
        ("judge", true),
    ] {
        for ((src, stream), r) in rows(hbs, component, inputs) {
            let name = match src {
                Some(s) => format!("{component} <- {s}:{stream}"),
                None => format!("{component} -> {stream}"),
            };
            for (field, v) in [
                ("emitted", r.emitted),
                ("transferred", r.transferred),
                ("acked", r.acked),
                ("failed", r.failed),
                ("timed_out", r.timed_out),
                ("executed", r.executed),
            ] {
                put(format!("{name} {field}"), v);
            }
        }
    }
    let spout = hbs.iter().find(|h| h.component == "src").expect("spout");
    put("src total failed".into(), spout.failed);
    put("src total timed_out".into(), spout.timed_out);
    put("src total acked".into(), spout.acked);
    c
}

#[test]
fn per_stream_counts_are_exact_and_timeouts_are_not_failures() {
    const N: i64 = 1000;
    let mut b = TopologyBuilder::new();
    b.set_spout("src", TwoStreams { next: 1, last: N }, 1);
    b.set_bolt("relay", Relay, 2)
        .shuffle_grouping(("src", "a"))
        .fields_grouping(("src", "b"), ["key"]);
    b.set_bolt("judge", Judge, 1)
        .shuffle_grouping(("relay", "out"));
    let topology = b.create_topology().expect("valid topology");
    let mut conf = Config::new();
    conf.set_num_ackers(1).set_message_timeout_secs(3);

    // What must be counted: per spout stream, the trees acked, failed and timed out.
    let mut expected = Counts::new();
    let mut put = |k: &str, v: u64| {
        expected.insert(k.to_owned(), v);
    };
    let mut per_stream: BTreeMap<&str, [u64; 4]> = BTreeMap::new(); // emitted, acked, failed, timed out
    for n in 1..=N {
        let s = per_stream
            .entry(if n % 2 == 1 { "a" } else { "b" })
            .or_default();
        s[0] += 1;
        match verdict(n) {
            Verdict::Ack => s[1] += 1,
            Verdict::Fail => s[2] += 1,
            Verdict::TimeOut => s[3] += 1,
        }
    }
    let (mut acked, mut failed, mut timed_out) = (0, 0, 0);
    for (stream, [e, a, f, t]) in &per_stream {
        put(&format!("src -> {stream} emitted"), *e);
        put(&format!("src -> {stream} transferred"), *e);
        put(&format!("src -> {stream} acked"), *a);
        put(&format!("src -> {stream} failed"), *f);
        put(&format!("src -> {stream} timed_out"), *t);
        put(&format!("src -> {stream} executed"), 0);
        for field in ["emitted", "transferred", "timed_out", "failed"] {
            put(&format!("relay <- src:{stream} {field}"), 0);
        }
        put(&format!("relay <- src:{stream} executed"), *e);
        put(&format!("relay <- src:{stream} acked"), *e);
        acked += a;
        failed += f;
        timed_out += t;
    }
    let n = N as u64;
    for (k, v) in [
        ("relay -> out emitted", n),
        ("relay -> out transferred", n),
        ("relay -> out acked", 0),
        ("relay -> out failed", 0),
        ("relay -> out timed_out", 0),
        ("relay -> out executed", 0),
        ("judge <- relay:out executed", n),
        ("judge <- relay:out acked", acked),
        ("judge <- relay:out failed", failed),
        ("judge <- relay:out emitted", 0),
        ("judge <- relay:out transferred", 0),
        ("judge <- relay:out timed_out", 0),
        // Storm counts a timeout as a failure in the spout's total; the rows do not.
        ("src total failed", failed + timed_out),
        ("src total timed_out", timed_out),
        ("src total acked", acked),
    ] {
        put(k, v);
    }
    assert!(failed > 0 && timed_out > 0 && failed != timed_out);

    let cluster = LocalCluster::new();
    cluster
        .submit_topology("per-stream", &conf, &topology)
        .expect("submit");
    // Timeouts take between one and two message timeouts after the last emit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = observed(&cluster.heartbeats("per-stream").unwrap());
    while seen != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        seen = observed(&cluster.heartbeats("per-stream").unwrap());
    }
    let diff: Vec<String> = expected
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v}, got {:?}", seen.get(k)))
        .chain(
            seen.keys()
                .filter(|k| !expected.contains_key(*k))
                .map(|k| format!("unexpected row {k}")),
        )
        .collect();
    assert!(diff.is_empty(), "counts differ:\n{}", diff.join("\n"));

    let hbs = cluster.heartbeats("per-stream").unwrap();
    // Complete latency: every acked tree, per stream.
    for ((_, stream), r) in rows(&hbs, "src", false) {
        assert_eq!(r.complete_samples, r.acked, "stream {stream}");
        assert!(r.complete_us > 0, "stream {stream}");
    }
    // Sampled execute and process latency on every input row.
    for component in ["relay", "judge"] {
        for ((src, stream), r) in rows(&hbs, component, true) {
            assert!(
                r.execute_samples > 0 && r.process_samples > 0,
                "{component} <- {src:?}:{stream}: {r:?}"
            );
            assert!(r.process_samples <= r.acked && r.execute_samples <= r.executed);
        }
    }
    // The acker: one row per message kind; every init and ack executed.
    let acker = rows(&hbs, "__acker", true);
    let init = &acker[&(Some("__system".into()), "__ack_init".into())];
    assert_eq!(init.executed, n);
    let ack = &acker[&(Some("__system".into()), "__ack_ack".into())];
    // The relay acks every tuple, the judge the acked ones.
    assert_eq!(ack.executed, n + acked);
    let fail = &acker[&(Some("__system".into()), "__ack_fail".into())];
    assert_eq!(fail.executed, failed);
    // A verdict counts in the row of the message that decided it.
    assert_eq!(init.acked + ack.acked, acked);
    assert_eq!(init.failed + fail.failed, failed);
    // Totals are the sums of the rows.
    for hb in &hbs {
        let out = hb.counters.output_total();
        assert_eq!((hb.emitted, hb.transferred), (out.emitted, out.transferred));
        if hb.component != "src" {
            assert_eq!(hb.executed, hb.counters.input_total().executed);
        }
    }
    cluster.kill_topology("per-stream").unwrap();
}

/// Emits as fast as it may; with `pause`, sleeps that long after each tuple.
#[derive(Clone)]
struct Numbers {
    n: i64,
    pause: Duration,
}

impl Spout for Numbers {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.n += 1;
        out.emit(values![self.n]);
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// Sleeps `0` per tuple.
#[derive(Clone)]
struct Sink(Duration);

impl Bolt for Sink {
    fn execute(&mut self, _input: Tuple, _out: &mut OutputCollector<'_>) {
        if !self.0.is_zero() {
            std::thread::sleep(self.0);
        }
    }
}

/// Runs spout → sink for `secs`; returns the sink's blocked time, the deepest queue
/// seen and its capacity.
fn backpressure(
    name: &str,
    spout_pause: Duration,
    sink: Duration,
    conf: &Config,
) -> (u64, u64, u64) {
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "numbers",
        Numbers {
            n: 0,
            pause: spout_pause,
        },
        1,
    );
    b.set_bolt("sink", Sink(sink), 1)
        .shuffle_grouping("numbers");
    let topology = b.create_topology().unwrap();
    let cluster = LocalCluster::new();
    cluster.submit_topology(name, conf, &topology).unwrap();
    let sink_hb = || {
        cluster
            .heartbeats(name)
            .unwrap()
            .into_iter()
            .find(|h| h.component == "sink")
            .expect("sink executor")
    };
    let end = Instant::now() + Duration::from_secs(2);
    let mut deepest = 0;
    while Instant::now() < end {
        deepest = deepest.max(sink_hb().queue_depth);
        std::thread::sleep(Duration::from_millis(20));
    }
    let hb = sink_hb();
    cluster.kill_topology(name).unwrap();
    (hb.counters.blocked_ns, deepest, hb.queue_capacity)
}

#[test]
fn a_slow_bolt_behind_a_small_queue_shows_backpressure_and_a_fast_one_does_not() {
    let mut conf = Config::new();
    conf.set_num_ackers(0)
        .set(keys::TOPOLOGY_EXECUTOR_RECEIVE_BUFFER_SIZE, 8)
        .set(keys::TOPOLOGY_PRODUCER_BATCH_SIZE, 1);
    let (blocked, deepest, capacity) =
        backpressure("slow", Duration::ZERO, Duration::from_millis(1), &conf);
    assert_eq!(capacity, 8);
    assert!(deepest > 0, "the slow bolt's queue was never seen filled");
    // The spout spent most of the 2 s waiting on the sink's full queue.
    assert!(blocked > 1_000_000_000, "blocked only {blocked} ns in 2 s");

    // A bolt that keeps up with a paced spout blocks nobody.
    let (blocked, _, capacity) = backpressure(
        "fast",
        Duration::from_micros(200),
        Duration::ZERO,
        &Config::new(),
    );
    assert_eq!(capacity, 32768 / 256);
    assert!(blocked < 100_000_000, "blocked {blocked} ns");
}
