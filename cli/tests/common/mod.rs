//! Helpers shared by the `squall` black-box tests.
#![allow(dead_code)]

pub mod chaos;
pub mod ui;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use squall_cluster::state::LocalHeartbeat;

/// The built `squall` binary.
pub const SQUALL: &str = env!("CARGO_BIN_EXE_squall");

/// A binary of the examples crate, built beside the tests (built here if missing).
pub fn example(name: &str) -> PathBuf {
    package_binary("squall-examples", name)
}

/// Binary `name` of workspace package `package`, built beside the tests (built here if
/// missing).
pub fn package_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

/// The WordCount binary.
pub fn word_count() -> PathBuf {
    example("word-count")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a future to completion on a fresh runtime.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Polls `cond` every 200 ms until it holds or `timeout` passes; its last answer.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// Sends signal `sig` (`KILL`, `TERM`, `STOP`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Running and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Starts `squall WHAT --config CONFIG` with stdout and stderr appended to `log`.
pub fn spawn_daemon(what: &str, config: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(SQUALL)
        .arg(what)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap()
}

/// Stops daemons as an operator would, in the order given: SIGTERM to all (supervisors
/// stop their workers on the way out), then up to 15 s each to exit, then SIGKILL.
pub fn stop_daemons<'a>(children: impl IntoIterator<Item = &'a mut Child>) {
    let mut children: Vec<&mut Child> = children.into_iter().collect();
    for c in &children {
        signal(c.id(), "TERM");
    }
    for c in &mut children {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A command's stdout and stderr.
pub fn stdout(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file called `name` below `dir`.
pub fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().is_some_and(|n| n == name) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Live worker pids, from the heartbeat files below `dir`, sorted.
pub fn worker_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = find_files(dir, "heartbeat")
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<LocalHeartbeat>(&b).ok())
        .map(|h| h.pid)
        .filter(|&p| alive(p))
        .collect();
    pids.sort_unstable();
    pids
}
