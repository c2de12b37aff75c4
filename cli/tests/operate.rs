//! The operator's commands against a real cluster (Apache ZooKeeper, Nimbus and a
//! supervisor as processes of the built `squall` binary): `get-errors`, `monitor` and
//! `set_log_level`, with WordCount (which reports no errors) and `reliable-ids
//! --reject-every` (whose relay bolt reports some).

mod common;
use common::ui::{UiCluster, PATIENCE};
use common::{block, example, stdout, wait_until, word_count};

use std::path::Path;

/// The data lines of `squall monitor`: (component, parallelism, stream, count, rate).
fn monitor_lines(out: &str) -> Vec<(String, usize, String, u64, f64)> {
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "{l}");
            (
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[3].to_owned(),
                f[5].parse().unwrap(),
                f[6].parse().unwrap(),
            )
        })
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn get_errors_monitor_and_set_log_level_on_a_real_cluster() {
    let c = UiCluster::start("");
    let wc = word_count();
    let out = c.squall(&[
        "jar",
        path_str(&wc),
        "wc",
        "--workers",
        "1",
        "--rate",
        "500",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), c.logs());
    let ids_dir = c.dir.path().join("ids");
    let ids = example("reliable-ids");
    let out = c.squall(&[
        "jar",
        path_str(&ids),
        "--dir",
        path_str(&ids_dir),
        "--count",
        "1000000",
        "--rate",
        "200",
        "--workers",
        "1",
        "--reject-every",
        "20",
        "ids",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), c.logs());

    // monitor: a line per interval, the all-time counts growing between polls.
    let client = c.client();
    assert!(
        wait_until(PATIENCE, || block(client.info("wc")).is_ok_and(|i| i
            .components
            .iter()
            .any(|c| c.id == "count" && c.executed > 0))),
        "WordCount did not run:\n{}",
        c.logs()
    );
    let out = c.squall(&["monitor", "wc", "-i", "1", "--count", "2"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(
            "topology\tcomponent\tparallelism\tstream\ttime-diff ms\temitted\tthroughput (tuples/s)\n"
        ),
        "{text}"
    );
    let lines = monitor_lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    for (component, _, stream, count, rate) in &lines {
        assert_eq!((component.as_str(), stream.as_str()), ("(all)", "default"));
        assert!(*count > 0 && *rate > 0.0, "no throughput: {text}");
    }
    let out = c.squall(&[
        "monitor",
        "wc",
        "-i",
        "1",
        "--count",
        "1",
        "-m",
        "split",
        "-w",
        "transferred",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = monitor_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!((lines[0].0.as_str(), lines[0].1), ("split", 2), "{text}");
    assert!(lines[0].3 > 0, "{text}");
    let out = c.squall(&["monitor", "wc", "-m", "nope", "--count", "1"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("topology 'wc' has no component 'nope'; its components:"),
        "{}",
        stdout(&out)
    );
    let out = c.squall(&["monitor", "wc", "-s", "nope", "--count", "1"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("declares the stream 'nope'"),
        "{}",
        stdout(&out)
    );

    // get-errors: none for WordCount; the relay's reported errors for ids.
    let out = c.squall(&["get-errors", "wc"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no errors in topology 'wc'\n"
    );
    let mut text = String::new();
    let found = wait_until(PATIENCE, || {
        let out = c.squall(&["get-errors", "ids"]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && text.contains("relay: ")
    });
    assert!(found, "no error reported: {text}\n{}", c.logs());
    let line = text.lines().find(|l| l.starts_with("relay: ")).unwrap();
    assert!(
        line.contains("(127.0.0.1:") && line.ends_with(" UTC)"),
        "{line}"
    );
    let out = c.squall(&["get-errors", "ids", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["Topology Name"], "ids");
    assert!(json["Comp-Errors"]["relay"].is_string(), "{json}");
    let out = c.squall(&["get-errors", "nope"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("no topology named or with id 'nope'"),
        "{}",
        stdout(&out)
    );

    // set_log_level: set, reset, print; Nimbus keeps what the command printed.
    let out = c.squall(&[
        "set_log_level",
        "wc",
        "-l",
        "ROOT=debug:60",
        "-l",
        "squall_worker=WARN",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("log levels of topology 'wc':\n"), "{text}");
    let root = text
        .lines()
        .find(|l| l.trim_start().starts_with("ROOT"))
        .unwrap();
    assert!(
        root.contains("DEBUG") && root.contains(" s more, until "),
        "{text}"
    );
    let worker = text
        .lines()
        .find(|l| l.trim_start().starts_with("squall_worker"))
        .unwrap();
    assert!(
        worker.contains("WARN") && worker.contains("(until reset)"),
        "{text}"
    );
    let levels = block(client.log_levels("wc")).unwrap();
    assert_eq!(levels.levels.len(), 2);
    assert_eq!(levels.levels["ROOT"].level, "DEBUG");

    let out = c.squall(&["set-log-level", "wc", "-r", "squall_worker"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let levels = block(client.log_levels("wc")).unwrap();
    assert_eq!(levels.levels.keys().collect::<Vec<_>>(), ["ROOT"]);
    let out = c.squall(&["set_log_level", "wc"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("ROOT") && !text.contains("squall_worker"),
        "{text}"
    );
    let out = c.squall(&["set_log_level", "wc", "-r", "ROOT"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no log levels set for topology 'wc': workers use their defaults\n"
    );

    // A bad -l is a usage error naming it; nothing changes.
    let out = c.squall(&["set_log_level", "wc", "-l", "ROOT=LOUD"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("invalid value 'ROOT=LOUD'") && stdout(&out).contains("'LOUD'"),
        "{}",
        stdout(&out)
    );
    assert!(block(client.log_levels("wc")).unwrap().levels.is_empty());
}
