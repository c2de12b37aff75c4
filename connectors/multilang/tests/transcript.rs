//! The protocol, message by message: a hand-written component (fixtures/recorder.py)
//! records everything it receives; the transcript is compared field by field with
//! the handshake, tuples, task-id answers, heartbeats and ticks Storm sends.

mod common;

use std::time::Duration;

use common::{conf, fixture, python, wait_until, Collect, Items, Running};
use serde_json::{json, Value as Json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use squall_api::{
    Bolt, BoxError, Config, OutputCollector, OutputFieldsDeclarer, TopologyBuilder,
    TopologyContext, Tuple,
};
use squall_multilang::{ShellBolt, TOPOLOGY_SHELLBOLT_MAX_PENDING};

fn transcript(path: &std::path::Path) -> Vec<(String, Json)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            (v["kind"].as_str().unwrap().to_owned(), v["msg"].clone())
        })
        .collect()
}

#[test]
fn transcript_matches_storms_protocol() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("transcript.jsonl");
    // Non-ASCII words must round-trip unchanged.
    let words: Vec<String> = ["héllo", "wörld ☃", "日本語", "plain"]
        .map(String::from)
        .to_vec();
    let sink = Collect::default();
    let direct = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Items::new(words.clone(), None), 1);
    b.set_bolt(
        "rec",
        ShellBolt::new([python(), fixture("recorder.py")])
            .env("RECORD_TO", &record.to_string_lossy())
            .output_fields(["word"])
            .output_direct_stream("direct", ["word"])
            .tick_tuple_freq_secs(1),
        1,
    )
    .shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1)
        .fields_grouping("rec", ["word"]);
    b.set_bolt("direct-sink", direct.clone(), 1)
        .direct_grouping(("rec", "direct"));
    let topology = b.create_topology()?;
    let mut c = conf();
    c.set("test.marker", "ü-conf");
    let started = std::time::Instant::now();
    let run = Running::start("transcript", &c, &topology);

    assert!(
        wait_until(20, || sink.seen().len() == 2 * words.len()),
        "errors: {:?}",
        run.errors()
    );
    assert!(wait_until(20, || direct.seen().len() == words.len()));
    // Long enough for heartbeats and ticks.
    assert!(wait_until(20, || {
        let t = transcript(&record);
        let count = |s: &str| t.iter().filter(|(_, m)| m["stream"] == s).count();
        count("__heartbeat") >= 2 && count("__tick") >= 2
    }));
    // The bolt drains its subprocess on a 10 ms tick of its own, but forwards ticks
    // only as often as `tick_tuple_freq_secs` says: about one a second.
    let ticks = transcript(&record)
        .iter()
        .filter(|(_, m)| m["stream"] == "__tick")
        .count();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        ticks as f64 <= secs + 1.0,
        "{ticks} ticks forwarded in {secs:.1} s, asked for one a second"
    );
    let stats = run.cluster.stats("transcript")?;
    assert_eq!(stats.component("spout").acked, words.len() as u64);
    assert_eq!(stats.component("spout").failed, 0);
    let t = transcript(&record);

    // The handshake: conf, pidDir (with the pid file) and the full context.
    let (kind, hs) = &t[0];
    assert_eq!(kind, "handshake");
    assert_eq!(hs["conf"]["test.marker"], "ü-conf");
    let pid_dir = std::path::Path::new(hs["pidDir"].as_str().unwrap());
    assert!(pid_dir.is_dir(), "pidDir {pid_dir:?}");
    let ctx = &hs["context"];
    let task_of = |component: &str| -> u64 {
        let map = ctx["task->component"].as_object().unwrap();
        map.iter()
            .find(|(_, c)| *c == component)
            .unwrap()
            .0
            .parse()
            .unwrap()
    };
    assert_eq!(ctx["task->component"]["-1"], "__system");
    assert_eq!(ctx["taskid"], json!(task_of("rec")));
    assert_eq!(ctx["componentid"], "rec");
    assert_eq!(ctx["streams"], json!(["default", "direct"]));
    assert_eq!(
        ctx["stream->outputfields"],
        json!({"default": ["word"], "direct": ["word"]})
    );
    assert_eq!(
        ctx["stream->target->grouping"],
        json!({"default": {"sink": {"type": "FIELDS", "fields": ["word"]}},
               "direct": {"direct-sink": {"type": "DIRECT"}}})
    );
    assert_eq!(
        ctx["source->stream->grouping"],
        json!({"spout": {"default": {"type": "SHUFFLE"}}})
    );
    assert_eq!(
        ctx["source->stream->fields"],
        json!({"spout": {"default": ["word"]}})
    );

    // Tuples, each followed by the task ids of its one emit that needed them.
    let spout_task = task_of("spout");
    let sink_task = task_of("sink");
    let mut got_words = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, (kind, m)) in t.iter().enumerate().skip(1) {
        assert_ne!(
            kind, "unexpected task ids",
            "task ids nobody asked for (need_task_ids: false?) at {i}: {m}"
        );
        if kind != "tuple" {
            continue;
        }
        let id = m["id"].as_str().expect("tuple ids are strings");
        assert!(ids.insert(id.to_owned()), "tuple id {id} reused");
        match m["stream"].as_str().unwrap() {
            "__heartbeat" => {
                assert_eq!(
                    (m["task"].clone(), m["tuple"].clone()),
                    (json!(-1), json!([])),
                    "{m}"
                );
            }
            "__tick" => {
                assert_eq!(
                    (m["comp"].clone(), m["task"].clone(), m["tuple"].clone()),
                    (json!("__system"), json!(-1), json!([1])),
                    "{m}"
                );
            }
            "default" => {
                assert_eq!(
                    (m["comp"].clone(), m["task"].clone()),
                    (json!("spout"), json!(spout_task)),
                    "{m}"
                );
                got_words.push(m["tuple"][0].as_str().unwrap().to_owned());
                assert_eq!(
                    t[i + 1].0,
                    "task ids",
                    "the emit's task ids follow the tuple"
                );
                assert_eq!(t[i + 1].1, json!([sink_task]));
            }
            other => panic!("unexpected stream {other}: {m}"),
        }
    }
    got_words.sort();
    let mut want = words.clone();
    want.sort();
    assert_eq!(
        got_words, want,
        "every word reached the subprocess once, unchanged"
    );
    let mut seen = sink.seen();
    seen.sort();
    let mut want: Vec<String> = words
        .iter()
        .flat_map(|w| [format!("{w}!"), format!("{w}?")])
        .collect();
    want.sort();
    assert_eq!(seen, want, "emits came back unchanged (UTF-8)");
    let mut seen = direct.seen();
    seen.sort();
    let mut want = words.clone();
    want.sort();
    assert_eq!(seen, want, "direct emits reached the direct-grouped task");
    // The metric became a gauge.
    let gauges = run
        .cluster
        .stats("transcript")?
        .component("rec")
        .gauges
        .clone();
    assert_eq!(
        gauges.get("recorder.seen").copied(),
        Some(words.len() as i64),
        "{gauges:?}"
    );
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    Ok(())
}

#[test]
fn max_pending_bounds_the_tuples_queued_for_the_subprocess() -> Result<(), BoxError> {
    // Big tuples fill the pipe at once; the subprocess reads nothing until the gate
    // file exists: `execute` then blocks once max.pending tuples are queued.
    let dir = tempfile::tempdir()?;
    let gate = dir.path().join("gate");
    let script = dir.path().join("gated.py");
    std::fs::write(
        &script,
        format!(
            "import os, sys, time\nsys.path.insert(0, {fixtures:?})\nfrom pystorm import Bolt\n\
             class Gated(Bolt):\n    def initialize(self, conf, ctx):\n        \
             while not os.path.exists({gate:?}):\n            time.sleep(0.05)\n    \
             def process(self, tup):\n        self.emit([tup.values[0][:5]])\nGated().run()\n",
            fixtures = fixture(""),
            gate = gate.to_string_lossy()
        ),
    )?;
    let big = "x".repeat(200_000);
    let items: Vec<String> = (0..40).map(|i| format!("{i:05}{big}")).collect();
    let sink = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Items::new(items.clone(), None), 1);
    let calls = Arc::new(AtomicU64::new(0));
    let shell =
        ShellBolt::new([python(), script.to_string_lossy().into_owned()]).output_fields(["word"]);
    b.set_bolt("gated", Counting(shell, calls.clone()), 1)
        .shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1)
        .shuffle_grouping("gated");
    let topology = b.create_topology()?;
    let mut c = conf();
    c.set(TOPOLOGY_SHELLBOLT_MAX_PENDING, 5i64);
    let run = Running::start("max-pending", &c, &topology);
    std::thread::sleep(Duration::from_millis(1500));
    // One tuple in the writer's hands (blocked on the full pipe), five queued, the
    // seventh `execute` waiting.
    let started = calls.load(Ordering::SeqCst);
    assert!(
        (6..=8).contains(&started),
        "{started} execute calls with max.pending 5"
    );
    std::fs::write(&gate, "")?;
    assert!(
        wait_until(30, || sink.seen().len() == items.len()),
        "errors: {:?}",
        run.errors()
    );
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    Ok(())
}

/// A shell bolt that counts the `execute` calls that started.
#[derive(Clone)]
struct Counting(ShellBolt, Arc<AtomicU64>);

impl Bolt for Counting {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.0.prepare(conf, ctx)
    }
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if !input.is_tick() {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        self.0.execute(input, out)
    }
    fn cleanup(&mut self) {
        self.0.cleanup()
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        self.0.declare_output_fields(d)
    }
    fn component_configuration(&self) -> Config {
        self.0.component_configuration()
    }
}
