//! The example binaries, run as a user would.

use std::process::Command;

#[test]
fn word_count_runs_in_local_mode_and_exits() {
    let out = Command::new(env!("CARGO_BIN_EXE_word-count"))
        .args(["--seconds", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Top 10 words:"), "{stdout}");
    let acked: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("sentences acked"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no acked count in {stdout}"));
    assert!(acked > 0, "{stdout}");
    assert!(stdout.contains("the "), "{stdout}");
}

#[test]
fn word_count_refuses_to_submit_outside_squall_jar() {
    let out = Command::new(env!("CARGO_BIN_EXE_word-count"))
        .arg("my-topology")
        .env_remove("SQUALL_LAUNCH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not started by `squall jar`"), "{stderr}");
}

#[test]
fn perf_prints_one_json_line_with_throughput_and_latency() {
    for topology in [
        "const-spout-null-bolt",
        "const-spout-id-bolt-null-bolt",
        "word-count",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_squall-perf"))
            .args([
                topology,
                "--seconds",
                "1",
                "--warmup",
                "0.5",
                "--ackers",
                "1",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["topology"], topology);
        assert!(v["tuples_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["acked"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["failed"], 0, "{v}");
        for k in ["p50", "p99", "max"] {
            assert!(v["latency_ms"][k].as_f64().unwrap() > 0.0, "{v}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_squall-perf"))
        .args(["no-such-topology"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
