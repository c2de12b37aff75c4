//! Squall's log subscriber: levels changed at run time, and the lines a worker writes
//! (checked in child processes, since a subscriber is global to its process).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use squall_api::{
    values, Bolt, Config, OutputCollector, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
    TopologyBuilder, Tuple,
};
use squall_worker::logging::{apply_log_levels, init_default_logging, init_worker_logging};
use squall_worker::LocalCluster;
use tracing::Level;

const CHILD_ENV: &str = "SQUALL_LOG_TEST_CHILD";

fn levels(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn levels_change_at_run_time_and_go_back_to_the_defaults() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    std::env::remove_var("RUST_LOG");
    init_worker_logging();
    let bolt_debug = || tracing::enabled!(target: "my_topo::bolts", Level::DEBUG);
    let other_debug = || tracing::enabled!(target: "other", Level::DEBUG);
    let other_warn = || tracing::enabled!(target: "other", Level::WARN);
    let other_info = || tracing::enabled!(target: "other", Level::INFO);
    assert!(
        !bolt_debug() && other_info() && !other_debug(),
        "defaults: info"
    );

    assert!(apply_log_levels(&levels(&[("my_topo::bolts", "DEBUG")])));
    assert!(bolt_debug() && !other_debug() && other_info());
    // The same levels again change nothing.
    assert!(!apply_log_levels(&levels(&[("my_topo::bolts", "DEBUG")])));

    // ROOT sets the default level; a bad level is ignored.
    assert!(apply_log_levels(&levels(&[
        ("ROOT", "ERROR"),
        ("my_topo::bolts", "LOUD")
    ])));
    assert!(!other_warn() && !bolt_debug());
    assert!(tracing::enabled!(target: "other", Level::ERROR));

    // No levels: back to the defaults.
    assert!(apply_log_levels(&BTreeMap::new()));
    assert!(!bolt_debug() && other_info() && !other_debug());
}

/// Reports one two-line error, then does nothing.
#[derive(Clone)]
struct Complainer;

impl Bolt for Complainer {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if input.get_long(0) == Ok(1) {
            out.report_error(&"bad thing happened\nsecond line of it");
        }
    }
}

#[derive(Clone)]
struct One(i64);

impl Spout for One {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        self.0 += 1;
        out.emit(values![self.0]);
        std::thread::sleep(Duration::from_millis(5));
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["n"]);
    }
}

/// The body of the child processes, by mode.
#[test]
fn child() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    std::env::remove_var("RUST_LOG");
    match mode.to_str() {
        Some("worker") => {
            init_worker_logging();
            tracing::info!(target: "my_topo", "hello from the worker");
            let mut b = TopologyBuilder::new();
            b.set_spout("one", One(0), 1);
            b.set_bolt("complainer", Complainer, 1)
                .shuffle_grouping("one");
            let cluster = LocalCluster::new();
            cluster
                .submit_topology("complain", &Config::new(), &b.create_topology().unwrap())
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while cluster.errors("complain").unwrap().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            cluster.kill_topology("complain").unwrap();
        }
        Some("local") => {
            init_default_logging();
            tracing::warn!(target: "my_topo", "plain warning");
        }
        Some("foreign") => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            init_worker_logging();
            let l = levels(&[("ROOT", "DEBUG")]);
            assert!(!apply_log_levels(&l));
            assert!(!apply_log_levels(&levels(&[("ROOT", "TRACE")])));
        }
        other => panic!("unknown mode {other:?}"),
    }
}

/// Runs the `child` test in a new process in `mode`; returns its stderr.
fn run_child(mode: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child {mode} failed:\n{stderr}");
    stderr
}

#[test]
fn a_worker_logs_plain_lines_with_time_level_target_and_one_line_per_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let log = run_child("worker");
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log}");
    let hello = log
        .lines()
        .find(|l| l.contains("hello from the worker"))
        .unwrap_or_else(|| panic!("no hello line in:\n{log}"));
    // e.g. "2026-11-21T23:59:01.123456Z  INFO my_topo: hello from the worker"
    assert!(hello.starts_with("20"), "no timestamp: {hello}");
    assert!(hello.contains(" INFO my_topo: "), "{hello}");
    // The reported error is one line holding its text (line break written as \n), so
    // the UI finds it by searching for the text.
    let error = log
        .lines()
        .find(|l| l.contains("bad thing happened"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(error.contains("ERROR"), "{error}");
    assert!(
        error.contains(r"bad thing happened\nsecond line of it"),
        "{error}"
    );
    assert!(error.contains("complainer"), "{error}");

    let log = run_child("local");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes with stderr not a terminal:\n{log}"
    );
    assert!(log.contains("WARN my_topo: plain warning"), "{log}");

    let log = run_child("foreign");
    assert_eq!(
        log.matches("cannot change log levels").count(),
        1,
        "said once that levels cannot change:\n{log}"
    );
}
