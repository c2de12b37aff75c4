//! The decision of what each slot should do, kept pure so it can be tested apart from
//! processes and ZooKeeper (Storm's `Slot` state machine, reduced to its decisions).

use std::collections::BTreeMap;
use std::time::Duration;

/// What should run in a slot: a topology at an assignment version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The topology id.
    pub topology_id: String,
    /// The assignment version.
    pub version: u64,
}

/// What runs in a slot now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The topology id.
    pub topology_id: String,
    /// The assignment version it was started with.
    pub version: u64,
    /// Whether the process is still running.
    pub alive: bool,
    /// Time since the process started.
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
    /// Stop the running worker (no longer assigned, or assigned differently).
    Kill(u16, String),
    /// Stop the worker and start it again.
    Restart(u16, String),
}

/// Decides per slot: kill what is no longer wanted, restart what died or stopped
/// heartbeating, launch what is missing.
pub fn decide(
    desired: &BTreeMap<u16, Desired>,
    observed: &BTreeMap<u16, Observed>,
    t: Timeouts,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (&port, o) in observed {
        match desired.get(&port) {
            Some(d) if d.topology_id == o.topology_id && d.version == o.version => {
                if !o.alive {
                    actions.push(Action::Restart(port, "the worker exited".into()));
                } else {
                    let timed_out = match o.heartbeat_age {
                        Some(age) => age > t.worker,
                        None => o.uptime > t.start,
                    };
                    if timed_out {
                        actions.push(Action::Restart(
                            port,
                            "the worker stopped heartbeating".into(),
                        ));
                    }
                }
            }
            Some(_) => actions.push(Action::Kill(port, "its assignment changed".into())),
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        worker: Duration::from_secs(30),
        start: Duration::from_secs(120),
    };

    fn d(id: &str, v: u64) -> Desired {
        Desired {
            topology_id: id.into(),
            version: v,
        }
    }

    fn o(id: &str, v: u64, alive: bool, up: u64, hb: Option<u64>) -> Observed {
        Observed {
            topology_id: id.into(),
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
    fn kills_unassigned_and_replaces_reassigned_workers() {
        let desired = BTreeMap::from([(6701, d("wc", 2))]);
        let observed = BTreeMap::from([
            (6700, o("wc", 1, true, 50, Some(1))),
            (6701, o("wc", 1, true, 50, Some(1))),
        ]);
        let actions = decide(&desired, &observed, T);
        assert!(matches!(&actions[0], Action::Kill(6700, _)));
        assert!(matches!(&actions[1], Action::Kill(6701, _)));
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
}
