//! pystorm and storm.py components run unchanged: counts arrive, nothing is lost, acks
//! and fails reach a Python spout.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{conf, fixture, python, wait_until, Collect, Items, Running};
use squall_api::{Bolt, BoxError, OutputCollector, TopologyBuilder, Tuple};
use squall_examples::SENTENCES;
use squall_multilang::{Resources, ShellBolt, ShellSpout};

fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| SENTENCES[i % SENTENCES.len()].to_owned())
        .collect()
}

fn expected_words(sentences: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in sentences {
        for w in s.split(' ') {
            *m.entry(w.to_owned()).or_default() += 1;
        }
    }
    m
}

fn counts(words: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in words {
        *m.entry(w.clone()).or_default() += 1;
    }
    m
}

fn run_split(name: &'static str, split: ShellBolt) {
    let input = sentences(200);
    let collect = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Items::new(input.clone(), None), 1);
    b.set_bolt("split", split, 2).shuffle_grouping("spout");
    b.set_bolt("count", collect.clone(), 1)
        .fields_grouping("split", ["word"]);
    let topology = b.create_topology().unwrap();
    let run = Running::start(name, &conf(), &topology);
    let want = expected_words(&input);
    let total: usize = want.values().sum();
    assert!(
        wait_until(30, || collect.seen().len() >= total),
        "{} of {total} words arrived; errors: {:?}",
        collect.seen().len(),
        run.errors()
    );
    assert!(wait_until(10, || run
        .cluster
        .stats(name)
        .unwrap()
        .component("spout")
        .acked
        == input.len() as u64));
    assert_eq!(counts(&collect.seen()), want, "every word exactly once");
    let stats = run.cluster.stats(name).unwrap();
    assert_eq!(stats.component("spout").failed, 0);
    assert!(run.errors().is_empty(), "{:?}", run.errors());
}

#[test]
fn pystorm_bolt_splits_sentences() {
    run_split(
        "pystorm-bolt",
        ShellBolt::new([python(), fixture("pystorm_split.py")]).output_fields(["word"]),
    );
}

#[test]
fn storm_py_bolt_runs_unchanged_from_packaged_resources() {
    // storm.py blocks for the task ids after every emit; both files travel as resources.
    let res = Resources::new()
        .file("storm.py", include_str!("fixtures/storm.py"))
        .file("splitsentence.py", include_str!("fixtures/storm_split.py"));
    run_split(
        "storm-py-bolt",
        ShellBolt::new([python().as_str(), "splitsentence.py"])
            .resources(res)
            .output_fields(["word"]),
    );
}

/// Fails every sentence the first time it sees it, acks it the second time.
#[derive(Clone, Default)]
struct FailOnce {
    seen: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Bolt for FailOnce {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let key = format!("{}", input.get_value(0).unwrap());
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(key).or_default();
            *n += 1;
            *n
        };
        if n == 1 {
            out.fail(&input)
        } else {
            out.ack(&input)
        }
    }
}

#[test]
fn pystorm_spout_gets_its_acks_and_fails() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("acks.log");
    let n = 20;
    let mut c = conf();
    c.set("test.sentences", n as i64);
    c.set("test.acks.path", log.to_string_lossy().into_owned());
    let mut b = TopologyBuilder::new();
    b.set_spout(
        "spout",
        ShellSpout::new([python(), fixture("pystorm_spout.py")]).output_fields(["sentence"]),
        1,
    );
    // Each tuple's text starts with its id: fail every id once.
    b.set_bolt("check", FailOnce::default(), 1)
        .shuffle_grouping("spout");
    let topology = b.create_topology()?;
    let run = Running::start("pystorm-spout", &c, &topology);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let done = wait_until(30, || {
        read().lines().filter(|l| l.starts_with("ack ")).count() >= n
    });
    assert!(done, "acks so far:\n{}\nerrors: {:?}", read(), run.errors());
    let text = read();
    for i in 0..n {
        assert!(
            text.lines().any(|l| l == format!("fail {i}")),
            "no fail {i} in\n{text}"
        );
        assert!(
            text.lines().any(|l| l == format!("ack {i}")),
            "no ack {i} in\n{text}"
        );
    }
    assert_eq!(
        text.lines().count(),
        2 * n,
        "exactly one fail and one ack per id:\n{text}"
    );
    let stats = run.cluster.stats("pystorm-spout")?;
    assert_eq!(stats.component("spout").acked, n as u64);
    assert_eq!(stats.component("spout").failed, n as u64);
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    Ok(())
}

/// An idle bolt applies its subprocess's late replies on its own 10 ms drain tick: a
/// tuple whose reply comes 50 ms after it (beyond what `execute` waits for), with no
/// other tuple behind it, completes in about that, not at the next tuple or second.
#[test]
fn replies_of_an_idle_subprocess_are_applied_quickly() {
    let items: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    let sink = Collect::default();
    let mut b = TopologyBuilder::new();
    // One tuple a second: the bolt is idle when each reply comes.
    b.set_spout("spout", Items::new(items.clone(), Some(1)), 1);
    b.set_bolt(
        "slow",
        ShellBolt::new([python(), fixture("slow.py")])
            .env("SLOW_MS", "50")
            .output_fields(["word"]),
        1,
    )
    .shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1).shuffle_grouping("slow");
    let run = Running::start("idle", &conf(), &b.create_topology().unwrap());
    assert!(
        wait_until(30, || run
            .cluster
            .stats("idle")
            .unwrap()
            .component("spout")
            .acked
            == items.len() as u64),
        "errors: {:?}",
        run.errors()
    );
    let mut latency = None;
    assert!(wait_until(5, || {
        latency = run
            .cluster
            .stats("idle")
            .unwrap()
            .component("spout")
            .complete_latency_ms;
        latency.is_some()
    }));
    let max = latency.unwrap().max;
    eprintln!("idle replies: complete latency max {max:.1} ms (each reply takes 50 ms)");
    // Each reply takes 50 ms; with a once-a-second drain the slowest of five would
    // almost surely wait far longer.
    assert!(
        max < 400.0,
        "complete latency max {max:.1} ms: the replies waited"
    );
    assert_eq!(sink.seen(), items);
    assert!(run.errors().is_empty(), "{:?}", run.errors());
}
