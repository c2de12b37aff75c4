//! Multilang on a real cluster (real ZooKeeper, Nimbus, two supervisors, `squall ui`):
//! `squall jar` submits `multilang-word-count`, whose split bolt is a Python (pystorm)
//! script carried in the binary with its requirements list. Nothing is copied to the
//! machines by hand: the worker unpacks the script into its own directory and makes the
//! Python env on first use (in a cache directory this test owns, so a previous run
//! cannot help). The words are counted (the report bolt's `count.<word>` gauges, read
//! through the UI API). Then the Python subprocess is SIGKILLed: it is started again,
//! the error is on the split component's UI page, counting goes on, and once the spout
//! is deactivated every acked sentence was counted (at least once).
//!
//! Timings are printed on stderr
//! (`cargo test -p squall-cli --test multilang_cluster -- --nocapture`). The example
//! binary is built when missing; after changing it, build it first
//! (`cargo build -p squall-multilang --bin multilang-word-count`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::chaos::ChaosCluster;
use common::ui::{http, start_ui};
use common::{alive, find_files, package_binary, signal, stdout, wait_until};
use serde_json::Value;
use squall_examples::SENTENCES;

const NAME: &str = "mlwc";
/// Sentences per second: slow enough for a loaded machine, fast enough to see counts.
const RATE: &str = "100";

/// The UI daemon, stopped on drop.
struct Ui {
    child: Child,
    port: u16,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ui {
    fn get(&self, path: &str) -> Value {
        let a = http(self.port, "GET", path, &[], b"");
        assert_eq!(a.status, 200, "GET {path}: {}", a.text());
        a.json()
    }

    fn component(&self, component: &str) -> Value {
        self.get(&format!("/api/v1/topology/{NAME}/component/{component}"))
    }

    /// The report bolt's `count.<word>` gauges: each word's latest count.
    fn counts(&self) -> BTreeMap<String, u64> {
        let page = self.component("report");
        page["gauges"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix("count.")?.to_owned(), v.as_u64()?)))
            .collect()
    }

    /// The split component's errors (newest first).
    fn split_errors(&self) -> Vec<String> {
        self.component("split")["componentErrors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["error"].as_str().map(str::to_owned))
            .collect()
    }

    /// The spout's all-time (emitted, acked, failed).
    fn spout_totals(&self) -> (u64, u64, u64) {
        let page = self.component("spout");
        let all = page["spoutSummary"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["window"] == ":all-time")
            .cloned()
            .unwrap_or(Value::Null);
        let n = |k: &str| all[k].as_u64().unwrap_or(0);
        (n("emitted"), n("acked"), n("failed"))
    }
}

/// Every `multilang/pids` directory (a worker's `pidDir`) below `root`.
fn pid_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.ends_with("multilang/pids") {
                out.push(p.clone());
            }
            stack.push(p);
        }
    }
    out
}

/// Live subprocesses that announced themselves in a `pidDir` (the file named after the
/// pid that the protocol's handshake asks for), with their worker's directory.
fn python_pids(root: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for dir in pid_dirs(root) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if alive(pid) {
                let worker = dir.parent().unwrap().parent().unwrap().to_path_buf();
                out.push((pid, worker));
            }
        }
    }
    out.sort();
    out
}

/// The first word of each sentence that no other sentence has: counting it counts the
/// sentence.
fn markers() -> Vec<&'static str> {
    SENTENCES
        .iter()
        .map(|s| {
            s.split(' ')
                .find(|w| {
                    SENTENCES
                        .iter()
                        .filter(|o| o.split(' ').any(|x| x == *w))
                        .count()
                        == 1
                })
                .expect("every sentence has a word of its own")
        })
        .collect()
}

#[test]
fn multilang_word_count_runs_from_the_binary_and_survives_a_python_kill() {
    // The Python env is made on first use, here in a cache only this run sees. Set
    // before the daemons start: the supervisors' workers inherit it.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("SQUALL_MULTILANG_CACHE", cache.path());
    let c = ChaosCluster::start(1, 2);
    let (child, port) = start_ui(&c.config, &c.dir.path().join("ui.log"), &[]);
    let ui = Ui { child, port };

    let bin = package_binary("squall-multilang", "multilang-word-count");
    let t0 = Instant::now();
    let out = c.squall(&[
        "jar",
        bin.to_str().unwrap(),
        NAME,
        "--gauges",
        "--rate",
        RATE,
        "--workers",
        "2",
    ]);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        stdout(&out),
        c.logs()
    );

    // Words are counted: every word of the five sentences, nothing else (a Python split
    // that went wrong would show other "words").
    let words: BTreeSet<String> = SENTENCES
        .iter()
        .flat_map(|s| s.split(' '))
        .map(str::to_owned)
        .collect();
    let mut counts = BTreeMap::new();
    let counted = wait_until(Duration::from_secs(150), || {
        counts = ui.counts();
        counts.len() == words.len() && counts.values().all(|&n| n > 0)
    });
    assert!(
        counted,
        "the words were not counted; report gauges {counts:?}\n{}",
        c.logs()
    );
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), words);
    eprintln!(
        "multilang: all {} words counted {:.1} s after the submission (Python env made meanwhile)",
        words.len(),
        t0.elapsed().as_secs_f64()
    );
    let errors = ui.split_errors();
    assert!(
        errors.is_empty(),
        "split errors before the kill: {errors:?}"
    );

    // The resources came in the binary and were unpacked under the worker's directory;
    // the Python runs there, from the env made in this test's cache.
    let pythons = python_pids(c.dir.path());
    assert_eq!(
        pythons.len(),
        1,
        "one split task, one Python: {pythons:?}\n{}",
        c.logs()
    );
    let (pid, worker_dir) = pythons[0].clone();
    assert!(
        worker_dir.parent().is_some_and(|p| p.ends_with("workers")),
        "the pidDir is under a worker's directory: {}",
        worker_dir.display()
    );
    let scripts = find_files(&worker_dir.join("multilang"), "splitsentence.py");
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    assert_eq!(
        std::fs::read_to_string(&scripts[0]).unwrap(),
        include_str!("../../connectors/multilang/multilang/splitsentence.py"),
        "the unpacked script is the one compiled into the binary"
    );
    let resources = scripts[0].parent().unwrap();
    assert!(resources
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("resources-"));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        resources.canonicalize().unwrap(),
        "the subprocess runs in its resources' directory"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let program = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next().unwrap());
    assert!(
        Path::new(program.as_ref()).starts_with(cache.path()),
        "the Python is the venv's in SQUALL_MULTILANG_CACHE: {program}"
    );
    assert!(
        find_files(cache.path(), ".squall-ready").len() == 1,
        "one venv made"
    );

    // SIGKILL the Python: it is started again, the error is on the UI, counting goes on.
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let before = total(&ui.counts());
    let killed_at = Instant::now();
    signal(pid, "KILL");
    let mut restarted = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            restarted = python_pids(c.dir.path())
                .into_iter()
                .find(|(p, _)| *p != pid);
            restarted.is_some()
        }),
        "the Python subprocess was not started again:\n{}",
        c.logs()
    );
    let (new_pid, new_dir) = restarted.unwrap();
    assert_eq!(new_dir, worker_dir, "restarted by the same worker");
    eprintln!(
        "multilang: killed Python pid {pid}, pid {new_pid} took over after {:.2} s",
        killed_at.elapsed().as_secs_f64()
    );
    let mut errors = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            errors = ui.split_errors();
            errors
                .iter()
                .any(|e| e.contains(&format!("(pid {pid}) exited")))
        }),
        "the subprocess's death is not among the split component's errors: {errors:?}"
    );
    let error = errors
        .iter()
        .find(|e| e.contains(&format!("(pid {pid}) exited")))
        .unwrap();
    assert!(
        error.contains("shell bolt 'split' task") && error.contains("restarting it"),
        "{error}"
    );
    let resumed_from = total(&ui.counts()).max(before);
    assert!(
        wait_until(Duration::from_secs(30), || total(&ui.counts())
            > resumed_from + 500),
        "counting did not go on after the restart (total {} words, {resumed_from} at the restart)",
        total(&ui.counts())
    );
    eprintln!(
        "multilang: counting again {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );

    // Stop the spout and let what is in flight finish: every acked sentence was counted
    // (at least once; a sentence whose Python died mid-way is replayed and its first
    // words counted again), and no sentence was counted more often than emitted.
    let out = c.squall(&["deactivate", NAME]);
    assert!(out.status.success(), "deactivate: {}", stdout(&out));
    let mut last = (0, 0, 0);
    let mut stable_since = Instant::now();
    let settled = wait_until(Duration::from_secs(60), || {
        let now = ui.spout_totals();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        let (emitted, acked, failed) = now;
        emitted > 0 && acked + failed >= emitted && stable_since.elapsed() > Duration::from_secs(3)
    });
    let (emitted, acked, failed) = last;
    assert!(
        settled,
        "the spout's tuples did not settle: emitted {emitted}, acked {acked}, failed {failed}"
    );
    let marked = |m: &BTreeMap<String, u64>| {
        markers()
            .iter()
            .map(|w| m.get(*w).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let mut counts = BTreeMap::new();
    let all_counted = wait_until(Duration::from_secs(20), || {
        counts = ui.counts();
        marked(&counts) >= acked
    });
    assert!(
        all_counted,
        "{acked} sentences acked, but their own words ({:?}) counted only {} times: {counts:?}",
        markers(),
        marked(&counts)
    );
    assert!(
        marked(&counts) <= emitted,
        "sentences counted {} times, more than the {emitted} emitted: {counts:?}",
        marked(&counts)
    );
    eprintln!(
        "multilang: {emitted} sentences emitted, {acked} acked, {failed} failed, counted {} times; {:.1} s in all",
        marked(&counts),
        t0.elapsed().as_secs_f64()
    );
}
