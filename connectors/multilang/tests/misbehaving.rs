//! Subprocesses that die, hang, write garbage or fail to start: the error is reported
//! with component, task and stderr; pending tuples fail and replay; the subprocess is
//! restarted; the topology (the worker) keeps running and loses nothing.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use common::{conf, fixture, python, wait_until, Collect, Items, Running};
use squall_api::TopologyBuilder;
use squall_multilang::{ShellBolt, TOPOLOGY_SUBPROCESS_TIMEOUT_SECS};

/// Runs 60 items through fixtures/flaky.py in `mode`; returns the errors reported and
/// how many tuples the spout replayed.
fn run_flaky(name: &'static str, mode: &str) -> (Vec<String>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let items: Vec<String> = (0..60).map(|i| format!("item-{i}")).collect();
    let spout = Items::new(items.clone(), Some(40));
    let replays = spout.replays.clone();
    let sink = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", spout, 1);
    b.set_bolt(
        "flaky",
        ShellBolt::new([python(), fixture("flaky.py")])
            .env("FLAKY_MODE", mode)
            .env("FLAKY_MARKER", &marker.to_string_lossy())
            .output_fields(["word"]),
        1,
    )
    .shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1)
        .shuffle_grouping("flaky");
    let topology = b.create_topology().unwrap();
    let mut c = conf();
    c.set(TOPOLOGY_SUBPROCESS_TIMEOUT_SECS, 2i64);
    let run = Running::start(name, &c, &topology);
    let want: BTreeSet<String> = items.iter().cloned().collect();
    let complete = wait_until(40, || {
        sink.seen().into_iter().collect::<BTreeSet<_>>() == want
    });
    assert!(
        complete,
        "{mode}: {} of {} items arrived; errors: {:#?}",
        sink.seen().into_iter().collect::<BTreeSet<_>>().len(),
        want.len(),
        run.errors()
    );
    assert!(marker.exists(), "{mode}: the subprocess misbehaved");
    let stats = run.cluster.stats(name).unwrap();
    assert_eq!(
        stats.component("spout").acked,
        items.len() as u64,
        "{mode}: every item acked"
    );
    (run.errors(), replays.load(Ordering::Relaxed))
}

fn assert_reported(errors: &[String], parts: &[&str]) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("flaky ") && parts.iter().all(|p| e.contains(p))),
        "no error of 'flaky' containing {parts:?} in {errors:#?}"
    );
}

#[test]
fn a_subprocess_that_dies_is_reported_and_restarted() {
    let (errors, replays) = run_flaky("flaky-die", "die");
    assert_reported(
        &errors,
        &[
            "shell bolt 'flaky' task",
            "exited (exit status: 7)",
            "pending tuples failed",
            "flaky: misbehaving on purpose (die)",
            "restarting",
        ],
    );
    assert!(replays >= 1, "the pending tuples failed and were replayed");
}

#[test]
fn a_subprocess_that_hangs_is_killed_after_the_timeout() {
    let (errors, replays) = run_flaky("flaky-hang", "hang");
    assert_reported(
        &errors,
        &[
            "sent nothing for 2 s",
            "topology.subprocess.timeout.secs",
            "flaky: misbehaving on purpose (hang)",
        ],
    );
    assert!(replays >= 1, "the pending tuples failed and were replayed");
}

#[test]
fn a_subprocess_that_writes_garbage_is_restarted() {
    let (errors, replays) = run_flaky("flaky-garbage", "garbage");
    assert_reported(
        &errors,
        &[
            "wrote garbage",
            "this is not json",
            "flaky: misbehaving on purpose (garbage)",
        ],
    );
    assert!(replays >= 1, "the pending tuples failed and were replayed");
}

#[test]
fn a_subprocess_that_fails_to_start_is_retried() {
    let (errors, _) = run_flaky("flaky-nostart", "nostart");
    assert_reported(
        &errors,
        &[
            "failed to start",
            "exited before answering the handshake",
            "no module named 'nope'",
            "retrying in",
        ],
    );
}

#[test]
fn a_missing_program_is_reported_and_the_topology_keeps_running() {
    let sink = Collect::default();
    let mut b = TopologyBuilder::new();
    b.set_spout("spout", Items::new(vec!["a".into()], None), 1);
    b.set_bolt(
        "missing",
        ShellBolt::new(["/nonexistent/python3", "x.py"]).output_fields(["word"]),
        1,
    )
    .shuffle_grouping("spout");
    b.set_bolt("sink", sink.clone(), 1)
        .shuffle_grouping("spout");
    let run = Running::start("missing-program", &conf(), &b.create_topology().unwrap());
    assert!(wait_until(10, || !run.errors().is_empty()));
    let errors = run.errors();
    assert!(
        errors[0].starts_with("missing ")
            && errors[0].contains("cannot start [\"/nonexistent/python3\", \"x.py\"]")
            && errors[0].contains("No such file"),
        "{errors:?}"
    );
    // The rest of the topology runs.
    assert!(wait_until(10, || sink.seen().iter().any(|w| w == "a")));
}
