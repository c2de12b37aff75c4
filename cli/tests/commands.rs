//! `squall` commands that need no cluster.

mod common;
use common::{word_count, SQUALL};

use std::process::Command;

#[test]
fn local_runs_a_topology_binary_for_its_ttl() {
    let out = Command::new(SQUALL)
        .args(["local", "--local-ttl", "2"])
        .arg(word_count())
        .args(["wc", "-c", "topology.max.spout.pending=100"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Running topology 'wc' in local mode for 2 s"),
        "{text}"
    );
    let count = text
        .lines()
        .find(|l| l.trim_start().starts_with("count"))
        .unwrap_or_else(|| panic!("{text}"));
    let executed: u64 = count.split_whitespace().last().unwrap().parse().unwrap();
    assert!(executed > 0, "{text}");
}

#[test]
fn version_and_bad_arguments() {
    let out = Command::new(SQUALL).arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Squall "));

    let out = Command::new(SQUALL)
        .args(["rebalance", "wc", "-e", "split"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-e takes component=parallelism, got 'split'"),
        "{err}"
    );

    let out = Command::new(SQUALL)
        .args(["list", "-c", "nimbus.thrift.port=not-a-port"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nimbus.thrift.port"), "{err}");

    let out = Command::new(SQUALL)
        .args(["list", "--config", "/nonexistent/storm.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/storm.yaml"), "{err}");

    let out = Command::new(SQUALL)
        .args(["jar", "/nonexistent/topology"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topology binary /nonexistent/topology does not exist"),
        "{err}"
    );
}
