//! What a topology's `main` sees of `squall jar` / `squall local`: the `-c` options in
//! `SQUALL_CONF`, and logs without any setup. One test per concern, each in a process of
//! its own (environment variables and the global log subscriber are process-wide).

use std::process::Command;
use std::time::Duration;

use squall_api::{
    values, Bolt, Config, OutputCollector, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
    TopologyBuilder, Tuple,
};
use squall_worker::submitter::CONF_ENV;
use squall_worker::{LocalCluster, StormSubmitter, WorkerError};

/// Set when this test binary runs one test as a child process.
const CHILD_ENV: &str = "SQUALL_TESTS_CHILD";

/// Runs test `name` of this binary in a child process with `env`; returns its output.
fn run_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env_remove(CONF_ENV)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

#[test]
fn command_line_config_reads_what_squall_jar_passes() {
    if !is_child() {
        for (conf, expect_ok) in [
            (
                Some(r#"{"topology.workers": 4, "my.app.splitters": "8"}"#),
                true,
            ),
            (None, true),
            (Some("not json"), false),
        ] {
            let env: Vec<(&str, &str)> = conf.map(|c| (CONF_ENV, c)).into_iter().collect();
            let out = run_child("command_line_config_reads_what_squall_jar_passes", &env);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("CONF ").map(|(_, rest)| rest))
                .unwrap_or_else(|| panic!("no CONF line in {stdout}"));
            match (conf, expect_ok) {
                (Some(_), true) => assert_eq!(line, "workers=4 splitters=8"),
                (None, _) => assert_eq!(line, "empty"),
                (Some(_), false) => assert!(
                    line.starts_with("error invalid command-line configuration in SQUALL_CONF:"),
                    "{line}"
                ),
            }
        }
        return;
    }
    match StormSubmitter::command_line_config() {
        Ok(c) if c == Config::new() => println!("CONF empty"),
        Ok(c) => println!(
            "CONF workers={} splitters={}",
            c.num_workers().unwrap(),
            c.get_u64("my.app.splitters").unwrap().unwrap()
        ),
        Err(e @ WorkerError::CommandLineConfig(_)) => println!("CONF error {e}"),
        Err(e) => println!("CONF unexpected {e:?}"),
    }
}

#[derive(Clone)]
struct One(bool);

impl Spout for One {
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if !self.0 {
            self.0 = true;
            out.emit(values!["x"]);
        }
    }
    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["x"]);
    }
}

#[derive(Clone)]
struct Grumpy;

impl Bolt for Grumpy {
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        out.report_error(&"grumpy bolt refuses tuple 7f3a");
        out.ack(&input);
    }
}

#[test]
fn local_mode_logs_a_topologys_errors_without_any_logging_setup() {
    if !is_child() {
        let out = run_child(
            "local_mode_logs_a_topologys_errors_without_any_logging_setup",
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("grumpy bolt refuses tuple 7f3a"),
            "{stderr}"
        );
        assert!(stderr.contains("ERROR"), "{stderr}");
        return;
    }
    // The child: a program that set up no logging at all.
    let mut b = TopologyBuilder::new();
    b.set_spout("one", One(false), 1);
    b.set_bolt("grumpy", Grumpy, 1).shuffle_grouping("one");
    let cluster = LocalCluster::new();
    cluster
        .submit_topology("grumpy", &Config::new(), &b.create_topology().unwrap())
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.errors("grumpy").unwrap().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.kill_topology("grumpy").unwrap();
}
