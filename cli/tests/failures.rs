//! Nothing lost, nothing stuck: a finite, durable stream (`reliable-ids`) flows through a
//! real cluster — ZooKeeper, two Nimbus processes, three supervisors — while its parts
//! are killed, hung, restarted. At the end every id is acked and seen at least once;
//! duplicates (replays) are counted and printed, and so is the time each failure took
//! to recover from.
//!
//! `SQUALL_CHAOS_SECS` (default 100) sets how long the chaos run kills things;
//! `SQUALL_CHAOS_SECS=900` gives a run of well over 100 kills.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::chaos::{ChaosCluster, Ledger, Progress};
use common::{block, example, signal, stdout, wait_until};

/// These tests start whole clusters: one at a time, so that they do not starve each
/// other of the machine's cores (and time out for that reason).
static SERIAL: Mutex<()> = Mutex::new(());

const DRAIN: Duration = Duration::from_secs(240);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `reliable-ids` run: `count` ids at `rate` per spout task (2 tasks), 3 workers.
struct Run {
    dir: PathBuf,
    count: u64,
    progress: Progress,
}

fn submit(c: &ChaosCluster, name: &str, count: u64, rate: u64, extra: &[&str]) -> Run {
    let dir = c.dir.path().join(format!("ids-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = example("reliable-ids");
    let (count_s, rate_s) = (count.to_string(), rate.to_string());
    let mut args = vec![
        "jar",
        bin.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--count",
        &count_s,
        "--rate",
        &rate_s,
        "--workers",
        "3",
        "--max-pending",
        "0",
        "--timeout",
        "8",
    ];
    args.extend_from_slice(extra);
    args.push(name);
    let out = c.squall(&args);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        stdout(&out),
        c.logs()
    );
    let progress = Progress::new(&dir, count, 2.0 * rate as f64);
    let started = wait_until(Duration::from_secs(90), || progress.acked() > 0);
    assert!(started, "nothing was acked:\n{}", c.logs());
    Run {
        dir,
        count,
        progress,
    }
}

impl Run {
    /// Waits until every id is acked and seen; prints and returns the ledger.
    fn drain(&self, c: &ChaosCluster, what: &str) -> Ledger {
        let t = Instant::now();
        let mut ledger = Ledger::read(&self.dir, self.count);
        while !ledger.complete() && t.elapsed() < DRAIN {
            std::thread::sleep(Duration::from_millis(500));
            ledger = Ledger::read(&self.dir, self.count);
        }
        let missing = ledger.missing();
        eprintln!(
            "{what}: {} ids, {} acked, {} seen, {} lost, {} duplicates",
            self.count,
            ledger.acked.len(),
            ledger.seen.len(),
            missing.len(),
            ledger.duplicates()
        );
        assert!(
            missing.is_empty(),
            "{what}: {} ids never completed, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(20)],
            c.logs()
        );
        ledger
    }
}

fn supervisor_id(c: &ChaosCluster, sup: &str) -> String {
    let path = c.dir.path().join(sup).join("local/supervisor/id");
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Nodes (supervisor ids) the topology's workers run on, with heartbeats younger than 3 s.
fn healthy_nodes(c: &ChaosCluster, name: &str) -> Option<BTreeSet<String>> {
    let info = block(c.client().info(name)).ok()?;
    if info.workers.is_empty()
        || info
            .workers
            .iter()
            .any(|w| w.heartbeat_age_secs.is_none_or(|a| a > 3))
    {
        return None;
    }
    Some(info.workers.into_iter().map(|w| w.supervisor_id).collect())
}

fn report(what: &str, took: Option<Duration>) -> Duration {
    match took {
        Some(d) => {
            eprintln!("{what}: recovered in {:.1} s", d.as_secs_f64());
            d
        }
        None => panic!("{what}: processing did not resume"),
    }
}

#[test]
fn every_kind_of_failure_loses_nothing() {
    let _one = serial();
    let mut c = ChaosCluster::start(2, 3);
    let rate = 250;
    let run = submit(&c, "ids", 2 * rate * 110, rate, &[]);
    let patience = Duration::from_secs(60);

    // A worker SIGKILLed: its supervisor starts it again.
    let (sup, pid) = c.all_worker_pids()[0].clone();
    let t = Instant::now();
    signal(pid, "KILL");
    assert!(
        wait_until(patience, || {
            let now = c.worker_pids(&sup);
            !now.contains(&pid) && !now.is_empty()
        }),
        "the killed worker was not restarted:\n{}",
        c.logs()
    );
    report(
        "worker SIGKILL",
        run.progress.wait_resumed(t, Duration::from_secs(60)),
    );

    // A worker hung (SIGSTOP): it stops heartbeating and is replaced.
    let (sup, pid) = c.all_worker_pids()[0].clone();
    let t = Instant::now();
    signal(pid, "STOP");
    assert!(
        wait_until(patience, || {
            let now = c.worker_pids(&sup);
            !now.contains(&pid) && !now.is_empty()
        }),
        "the hung worker was not replaced:\n{}",
        c.logs()
    );
    signal(pid, "CONT");
    signal(pid, "KILL");
    report(
        "worker SIGSTOP",
        run.progress.wait_resumed(t, Duration::from_secs(60)),
    );

    // A supervisor restarted alone adopts its running workers: same pids.
    let sup = c
        .names("sup")
        .into_iter()
        .find(|s| !c.worker_pids(s).is_empty())
        .unwrap();
    let before = c.worker_pids(&sup);
    c.kill(&sup);
    std::thread::sleep(Duration::from_secs(1));
    c.spawn(&sup);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        c.worker_pids(&sup),
        before,
        "a restarted supervisor must adopt its workers, not restart them:\n{}",
        c.logs()
    );

    // A slow Nimbus (SIGSTOP for longer than the workers' heartbeat timeout) gets no
    // healthy worker restarted.
    let leader = c.leader().expect("a leader");
    let pids = c.all_worker_pids();
    let nimbus_pid = c.pid(&format!("nimbus{leader}"));
    signal(nimbus_pid, "STOP");
    std::thread::sleep(Duration::from_secs(8));
    signal(nimbus_pid, "CONT");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.all_worker_pids(),
        pids,
        "workers were restarted because Nimbus was slow:\n{}",
        c.logs()
    );

    // A supervisor killed with its workers: its executors move to the other supervisors
    // within nimbus.supervisor.timeout.secs (6 s here) + 5 s.
    let victim = c
        .names("sup")
        .into_iter()
        .find(|s| !c.worker_pids(s).is_empty())
        .unwrap();
    let victim_id = supervisor_id(&c, &victim);
    let workers = c.worker_pids(&victim);
    let t = Instant::now();
    c.kill(&victim);
    for p in workers {
        signal(p, "KILL");
    }
    assert!(
        wait_until(Duration::from_secs(45), || {
            healthy_nodes(&c, "ids").is_some_and(|n| !n.contains(&victim_id))
        }),
        "the dead supervisor's executors were not moved:\n{}",
        c.logs()
    );
    let moved = t.elapsed();
    eprintln!(
        "supervisor killed: executors running elsewhere after {:.1} s",
        moved.as_secs_f64()
    );
    assert!(
        moved < Duration::from_secs(6 + 5 + 3),
        "moving took {moved:?}"
    );
    report(
        "supervisor killed",
        run.progress.wait_resumed(t, Duration::from_secs(60)),
    );
    c.spawn(&victim);

    // The Nimbus leader killed: the standby leads and `squall list` works.
    let leader = c.leader().expect("a leader");
    let t = Instant::now();
    c.kill(&format!("nimbus{leader}"));
    assert!(
        wait_until(Duration::from_secs(30), || {
            c.leader().is_some_and(|l| l != leader)
                && stdout(&c.squall(&["list"])).contains("ACTIVE")
        }),
        "no standby took over:\n{}",
        c.logs()
    );
    let failover = t.elapsed();
    eprintln!(
        "Nimbus leader killed: a standby leads and `squall list` works after {:.1} s",
        failover.as_secs_f64()
    );
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    c.spawn(&format!("nimbus{leader}"));

    // ZooKeeper restarted: nothing is killed, everything carries on.
    let pids = c.all_worker_pids();
    let t = Instant::now();
    c.restart_zookeeper(Duration::from_secs(3));
    report(
        "ZooKeeper restarted",
        run.progress.wait_resumed(t, Duration::from_secs(60)),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        c.all_worker_pids(),
        pids,
        "workers were restarted because ZooKeeper restarted:\n{}",
        c.logs()
    );
    assert!(
        wait_until(Duration::from_secs(30), || block(c.client().cluster())
            .is_ok_and(|s| s.supervisors.len() == 3)),
        "supervisors did not re-register after the ZooKeeper restart:\n{}",
        c.logs()
    );

    run.drain(&c, "every kind of failure");
}

#[test]
fn chaos_loses_nothing() {
    let _one = serial();
    let secs: u64 = std::env::var("SQUALL_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut c = ChaosCluster::start(2, 3);
    let rate = 200;
    let run = submit(&c, "chaos", 2 * rate * (secs + 20), rate, &[]);
    let mut rng = fastrand::Rng::with_seed(
        std::env::var("SQUALL_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..)),
    );
    eprintln!("chaos seed {}", rng.get_seed());
    let start = Instant::now();
    let mut kills: Vec<(String, Duration)> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        // Restore what earlier rounds took down, so the cluster keeps enough slots.
        for name in c.names("") {
            if !c.is_running(&name) {
                c.spawn(&name);
            }
        }
        let t = Instant::now();
        let what = match rng.u32(0..10) {
            0..=5 => {
                let pids = c.all_worker_pids();
                if pids.is_empty() {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                let (sup, pid) = pids[rng.usize(..pids.len())].clone();
                signal(pid, "KILL");
                format!("worker {pid} on {sup}")
            }
            6 => {
                let sup = format!("sup{}", rng.usize(0..3));
                let pids = c.worker_pids(&sup);
                c.kill(&sup);
                for p in pids {
                    signal(p, "KILL");
                }
                format!("{sup} with its workers")
            }
            7 => {
                let sup = format!("sup{}", rng.usize(0..3));
                c.kill(&sup);
                format!("{sup} alone")
            }
            _ => match c.leader() {
                Some(l) => {
                    c.kill(&format!("nimbus{l}"));
                    format!("nimbus{l} (leader)")
                }
                None => continue,
            },
        };
        let took = run.progress.wait_resumed(t, Duration::from_secs(90));
        eprintln!(
            "chaos: killed {what}; full speed again after {}",
            took.map_or("(not within 90 s)".to_owned(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            ))
        );
        kills.push((what, took.unwrap_or(Duration::from_secs(90))));
        std::thread::sleep(Duration::from_millis(rng.u64(500..3000)));
    }
    for name in c.names("") {
        if !c.is_running(&name) {
            c.spawn(&name);
        }
    }
    let ledger = run.drain(&c, "chaos");
    let worst = kills.iter().map(|k| k.1).max().unwrap_or_default();
    eprintln!(
        "chaos: {} kills in {:.0} s, {} ids, 0 lost, {} duplicates, slowest recovery {:.1} s",
        kills.len(),
        start.elapsed().as_secs_f64(),
        run.count,
        ledger.duplicates(),
        worst.as_secs_f64()
    );
}

#[test]
fn saturated_acking_across_workers_keeps_progressing() {
    let _one = serial();
    let c = ChaosCluster::start(1, 3);
    // No pending cap, spouts as fast as they go, a slow relay: queues stay full on every
    // worker, and acks and verdicts cross between them all the time.
    let run = submit(
        &c,
        "saturated",
        u64::MAX / 4,
        0,
        &["--slow-us", "200", "--spouts", "3", "--bolts", "3"],
    );
    let secs: u64 = std::env::var("SQUALL_SATURATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut last = run.progress.acked();
    for window in 0..secs / 5 {
        std::thread::sleep(Duration::from_secs(5));
        let now = run.progress.acked();
        eprintln!("saturation: window {window}: {} ids acked", now - last);
        assert!(
            now > last,
            "no tree completed in 5 s (window {window}): stuck\n{}",
            c.logs()
        );
        last = now;
    }
}

#[test]
fn a_cluster_with_a_secret_refuses_strangers() {
    let _one = serial();
    let c = ChaosCluster::start_with(1, 2, |dir| {
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret-of-this-test-cluster\n").unwrap();
        format!("squall.secret.file: {}\n", file.display())
    });
    // Everyone who has the secret's file works as usual: CLI, supervisors, workers.
    let run = submit(&c, "guarded", 2000, 200, &[]);
    let list = stdout(&c.squall(&["list"]));
    assert!(list.contains("guarded"), "{list}");

    // Without it: 401, and nothing changes.
    let port = c.nimbus_ports[0];
    for (method, path, body) in [
        ("GET", "/nimbus/v1/topologies", ""),
        ("GET", "/nimbus/v1/cluster", ""),
        (
            "POST",
            "/nimbus/v1/topologies/guarded/kill",
            "{\"wait_secs\": 0}",
        ),
        ("POST", "/nimbus/v1/topologies/guarded/deactivate", ""),
        ("POST", "/nimbus/v1/heartbeats", "{}"),
        (
            "GET",
            &format!("/nimbus/v1/binaries/{}", "0".repeat(64)),
            "",
        ),
    ] {
        let (code, body) = common::chaos::http(port, method, path, body, None).unwrap();
        assert_eq!(code, 401, "{method} {path} without the secret: {body}");
    }
    let stranger = c.dir.path().join("stranger.yaml");
    let config = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &stranger,
        config
            .lines()
            .filter(|l| !l.starts_with("squall.secret.file"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = std::process::Command::new(common::SQUALL)
        .args(["kill", "guarded", "-w", "0", "--config"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a kill without the secret succeeded");
    assert!(
        stdout(&out).contains("401") || stdout(&out).to_lowercase().contains("secret"),
        "{}",
        stdout(&out)
    );

    // A stranger talking to a worker's port is refused; the topology is unharmed.
    let info = block(c.client().info("guarded")).unwrap();
    let worker_port = info.workers[0].port;
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", worker_port)).unwrap();
        let _ = s.write_all(b"SQL1\x00\x00\x00\x05hello");
    }
    assert!(
        wait_until(Duration::from_secs(10), || c.worker_logs_contain("refus")),
        "the worker did not log refusing the stranger:\n{}",
        c.logs()
    );
    run.drain(&c, "with a secret");
}
