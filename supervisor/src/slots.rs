//! The decision of what each slot should do, kept pure so it can be tested apart from
//! processes and ZooKeeper (Storm's `Slot` state machine, reduced to its decisions), and
//! the restart back-off of a slot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use squall_api::TaskId;
use squall_cluster::state::{Assignment, WorkerSlot};

/// What a worker runs: a topology's executors (first and last task, sorted) in one layout
/// epoch. Two workers with the same work are interchangeable, whatever the assignment
/// version: Nimbus bumps the version when other executors move, and the epoch when the
/// layout itself changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    /// The topology id.
    pub topology_id: String,
    /// The layout epoch ([`Assignment::epoch`]).
    pub epoch: u64,
    /// The executors of the slot, as (first task, last task), sorted.
    pub executors: Vec<(TaskId, TaskId)>,
}

impl Work {
    /// The work of `slot` in assignment `a`.
    pub fn of(a: &Assignment, slot: &WorkerSlot) -> Work {
        let mut executors: Vec<(TaskId, TaskId)> = a
            .executors_of(slot)
            .into_iter()
            .map(|e| (e.first, e.last))
            .collect();
        executors.sort_unstable();
        Work {
            topology_id: a.topology_id.clone(),
            epoch: a.epoch,
            executors,
        }
    }
}

/// What should run in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The work.
    pub work: Work,
    /// The assignment version.
    pub version: u64,
}

/// What runs in a slot now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The work it was started with.
    pub work: Work,
    /// The assignment version its launch file holds.
    pub version: u64,
    /// Whether the process is still running.
    pub alive: bool,
    /// Time since the process started (or was adopted).
    pub uptime: Duration,
    /// Age of its last heartbeat (`None`: none yet).
    pub heartbeat_age: Option<Duration>,
}

/// Timeouts of the decision.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// `supervisor.worker.timeout.secs`: a running worker must heartbeat this often.
    pub worker: Duration,
    /// `supervisor.worker.start.timeout.secs`: grace before the first heartbeat.
    pub start: Duration,
}

/// What to do with a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the desired worker.
    Launch(u16),
    /// Stop the running worker (no longer assigned, or assigned different work).
    Kill(u16, String),
    /// Stop the worker and start it again.
    Restart(u16, String),
    /// Keep the worker running and give it the newer assignment (other executors moved):
    /// rewrite its launch file.
    Update(u16),
}

/// Decides per slot: kill what is no longer wanted, restart what died or stopped
/// heartbeating, hand a newer assignment version to workers whose own work did not
/// change, launch what is missing.
pub fn decide(
    desired: &BTreeMap<u16, Desired>,
    observed: &BTreeMap<u16, Observed>,
    t: Timeouts,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (&port, o) in observed {
        match desired.get(&port) {
            Some(d) if d.work == o.work => {
                let timed_out = match o.heartbeat_age {
                    Some(age) => age > t.worker,
                    None => o.uptime > t.start,
                };
                if !o.alive {
                    actions.push(Action::Restart(port, "the worker exited".into()));
                } else if timed_out {
                    actions.push(Action::Restart(
                        port,
                        "the worker stopped heartbeating".into(),
                    ));
                } else if d.version != o.version {
                    actions.push(Action::Update(port));
                }
            }
            Some(d) if d.work.topology_id == o.work.topology_id => {
                actions.push(Action::Kill(port, "its executors changed".into()))
            }
            Some(_) => actions.push(Action::Kill(
                port,
                "its slot was given to another topology".into(),
            )),
            None => actions.push(Action::Kill(port, "it is no longer assigned here".into())),
        }
    }
    for &port in desired.keys() {
        let replaced = actions
            .iter()
            .any(|a| matches!(a, Action::Kill(p, _) if *p == port));
        if !observed.contains_key(&port) || replaced {
            actions.push(Action::Launch(port));
        }
    }
    actions
}

/// Restart back-off of one slot: a worker that keeps exiting soon after its start (or
/// cannot be started) waits 1 s, 2 s, 4 s … up to 60 s before its next start; one that
/// ran healthy for [`Backoff::HEALTHY`] is restarted at once and resets the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// The first delay.
    pub const MIN: Duration = Duration::from_secs(1);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A worker that ran this long was healthy: its end does not count as a failure.
    pub const HEALTHY: Duration = Duration::from_secs(60);

    /// The delay after `failures` consecutive failures.
    pub fn delay(failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(6);
        (Self::MIN * factor).min(Self::MAX)
    }

    /// A worker ended (exited, or was stopped for not heartbeating) after `uptime`.
    pub fn worker_ended(&mut self, uptime: Duration, now: Instant) {
        if uptime >= Self::HEALTHY {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        self.not_before = Some(now + Self::delay(self.failures));
    }

    /// A start failed (download, spawn).
    pub fn launch_failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + Self::delay(self.failures));
    }

    /// Whether the slot may start a worker at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// When the slot may start a worker again (`None`: now).
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        worker: Duration::from_secs(30),
        start: Duration::from_secs(120),
    };

    fn work(id: &str, epoch: u64, executors: &[(u32, u32)]) -> Work {
        Work {
            topology_id: id.into(),
            epoch,
            executors: executors
                .iter()
                .map(|&(a, b)| (TaskId(a), TaskId(b)))
                .collect(),
        }
    }

    fn d(id: &str, v: u64) -> Desired {
        Desired {
            work: work(id, 1, &[(1, 2)]),
            version: v,
        }
    }

    fn o(id: &str, v: u64, alive: bool, up: u64, hb: Option<u64>) -> Observed {
        Observed {
            work: work(id, 1, &[(1, 2)]),
            version: v,
            alive,
            uptime: Duration::from_secs(up),
            heartbeat_age: hb.map(Duration::from_secs),
        }
    }

    #[test]
    fn launches_missing_workers_and_keeps_healthy_ones() {
        let desired = BTreeMap::from([(6700, d("wc", 1)), (6701, d("wc", 1))]);
        let observed = BTreeMap::from([(6700, o("wc", 1, true, 50, Some(1)))]);
        assert_eq!(decide(&desired, &observed, T), vec![Action::Launch(6701)]);
    }

    #[test]
    fn a_new_version_with_the_same_work_keeps_the_worker_and_updates_it() {
        // Nimbus moved other executors: version 2, same epoch, same executors here.
        let desired = BTreeMap::from([(6700, d("wc", 2))]);
        let observed = BTreeMap::from([(6700, o("wc", 1, true, 50, Some(1)))]);
        assert_eq!(decide(&desired, &observed, T), vec![Action::Update(6700)]);
        // Same version: nothing to do.
        let observed = BTreeMap::from([(6700, o("wc", 2, true, 50, Some(1)))]);
        assert!(decide(&desired, &observed, T).is_empty());
        // A dead worker is restarted, not updated.
        let observed = BTreeMap::from([(6700, o("wc", 1, false, 50, Some(1)))]);
        assert!(matches!(
            &decide(&desired, &observed, T)[..],
            [Action::Restart(6700, _)]
        ));
    }

    #[test]
    fn other_executors_or_another_epoch_replace_the_worker() {
        let running = BTreeMap::from([(6700, o("wc", 1, true, 50, Some(1)))]);
        for changed in [
            work("wc", 1, &[(1, 2), (5, 5)]), // an executor added to the slot
            work("wc", 1, &[(3, 4)]),         // other executors
            work("wc", 2, &[(1, 2)]),         // a new layout epoch (rebalance)
            work("other", 1, &[(1, 2)]),      // another topology
        ] {
            let desired = BTreeMap::from([(
                6700,
                Desired {
                    work: changed.clone(),
                    version: 2,
                },
            )]);
            let actions = decide(&desired, &running, T);
            assert!(
                matches!(&actions[..], [Action::Kill(6700, _), Action::Launch(6700)]),
                "{changed:?}: {actions:?}"
            );
        }
    }

    #[test]
    fn work_of_a_slot_is_its_sorted_executors_and_epoch() {
        let slot = |port| WorkerSlot {
            node: "s1".into(),
            port,
        };
        let ex = |first, last, port| squall_cluster::state::ExecutorAssignment {
            component: "c".into(),
            first: TaskId(first),
            last: TaskId(last),
            slot: slot(port),
        };
        let mut a = Assignment {
            topology_id: "wc-1".into(),
            topology_name: "wc".into(),
            binary_sha256: "00".into(),
            args: vec![],
            conf: Default::default(),
            executors: vec![ex(5, 6, 6700), ex(1, 2, 6700), ex(3, 4, 6701)],
            node_host: Default::default(),
            slot_start_secs: Default::default(),
            version: 3,
            epoch: 7,
        };
        let w = Work::of(&a, &slot(6700));
        assert_eq!(w, work("wc-1", 7, &[(1, 2), (5, 6)]));
        // Moving the executor of another slot changes the version, not this work.
        a.executors[2].slot = slot(6702);
        a.version = 4;
        assert_eq!(Work::of(&a, &slot(6700)), w);
    }

    #[test]
    fn kills_unassigned_and_replaces_reassigned_workers() {
        let mut desired = BTreeMap::from([(6701, d("wc", 2))]);
        desired.get_mut(&6701).unwrap().work.epoch = 2;
        let observed = BTreeMap::from([
            (6700, o("wc", 1, true, 50, Some(1))),
            (6701, o("wc", 1, true, 50, Some(1))),
        ]);
        let actions = decide(&desired, &observed, T);
        assert!(matches!(&actions[0], Action::Kill(6700, r) if r.contains("no longer")));
        assert!(matches!(&actions[1], Action::Kill(6701, r) if r.contains("executors")));
        assert_eq!(actions[2], Action::Launch(6701));
        assert_eq!(actions.len(), 3);
    }

    #[test]
    fn restarts_dead_and_silent_workers_after_their_grace() {
        let desired = BTreeMap::from([
            (1, d("a", 1)),
            (2, d("a", 1)),
            (3, d("a", 1)),
            (4, d("a", 1)),
        ]);
        let observed = BTreeMap::from([
            (1, o("a", 1, false, 5, Some(1))),   // exited
            (2, o("a", 1, true, 100, Some(31))), // silent too long
            (3, o("a", 1, true, 100, None)),     // starting, within grace
            (4, o("a", 1, true, 121, None)),     // never heartbeated
        ]);
        let actions = decide(&desired, &observed, T);
        assert!(matches!(&actions[0], Action::Restart(1, r) if r.contains("exited")));
        assert!(matches!(&actions[1], Action::Restart(2, r) if r.contains("heartbeat")));
        assert!(matches!(&actions[2], Action::Restart(4, _)));
        assert_eq!(actions.len(), 3);
    }

    #[test]
    fn quick_exits_back_off_exponentially_up_to_a_minute() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(t0));
        let quick = Duration::from_millis(200);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            b.worker_ended(quick, now);
            let wait = b.not_before().unwrap() - now;
            assert!(!b.ready(now + wait - Duration::from_millis(1)));
            assert!(b.ready(now + wait));
            delays.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failures(), 9);
    }

    #[test]
    fn a_healthy_run_resets_the_back_off_and_restarts_at_once() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.worker_ended(Duration::from_secs(1), t0);
        }
        assert!(!b.ready(t0 + Duration::from_secs(15)));
        b.worker_ended(Backoff::HEALTHY, t0);
        assert_eq!(b.failures(), 0);
        assert!(b.ready(t0));
        // The next quick exit starts again at one second.
        b.worker_ended(Duration::ZERO, t0);
        assert_eq!(b.not_before(), Some(t0 + Duration::from_secs(1)));
        // Failed starts count like quick exits.
        b.launch_failed(t0);
        assert_eq!(b.not_before(), Some(t0 + Duration::from_secs(2)));
    }
}
