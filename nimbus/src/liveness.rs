//! Failure detection, pure: which supervisors and worker slots are dead, judged with
//! this Nimbus's own clock (`Instant`s), never with timestamps other machines wrote.
//!
//! - A supervisor rewrites its ZooKeeper node every `supervisor.heartbeat.frequency.secs`.
//!   Nimbus notes when it last saw the node *change*; a supervisor whose node did not
//!   change, or vanished, for `nimbus.supervisor.timeout.secs` is dead.
//! - A slot (a worker) is dead when its supervisor is dead, or when no heartbeat came
//!   from it for `nimbus.task.timeout.secs`; a slot whose executors were (re)assigned
//!   first gets `supervisor.worker.start.timeout.secs` of grace.
//!
//! Every clock starts afresh when this Nimbus becomes the leader ([`Liveness::new`]), so
//! a failover or a short ZooKeeper outage never looks like dead supervisors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use squall_cluster::state::{Assignment, SupervisorInfo, WorkerSlot};

/// The timeouts failure detection uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// `nimbus.supervisor.timeout.secs`.
    pub supervisor: Duration,
    /// `nimbus.task.timeout.secs`.
    pub task: Duration,
    /// `supervisor.worker.start.timeout.secs`.
    pub worker_start: Duration,
}

struct SupervisorSeen {
    info: SupervisorInfo,
    changed: Instant,
    present: bool,
}

/// A slot's executors (first, last task), sorted, and since when it has had them.
type SlotSince = (Vec<(u32, u32)>, Instant);

/// What this Nimbus has seen since it became the leader.
pub(crate) struct Liveness {
    start: Instant,
    supervisors: HashMap<String, SupervisorSeen>,
    /// Per topology and slot: the slot's executors (first, last task) and since when.
    slots: HashMap<String, BTreeMap<WorkerSlot, SlotSince>>,
}

impl Liveness {
    /// Fresh clocks, starting `now`.
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            start: now,
            supervisors: HashMap::new(),
            slots: HashMap::new(),
        }
    }

    /// Notes the supervisor nodes present now.
    pub fn observe_supervisors(&mut self, now: Instant, present: &[SupervisorInfo]) {
        for seen in self.supervisors.values_mut() {
            seen.present = false;
        }
        for info in present {
            match self.supervisors.get_mut(&info.id) {
                Some(seen) => {
                    if seen.info != *info {
                        seen.info = info.clone();
                        seen.changed = now;
                    }
                    seen.present = true;
                }
                None => {
                    self.supervisors.insert(
                        info.id.clone(),
                        SupervisorSeen {
                            info: info.clone(),
                            changed: now,
                            present: true,
                        },
                    );
                }
            }
        }
    }

    /// Whether supervisor `id` is alive: its node changed within the timeout (one never
    /// seen counts from when this Nimbus started leading).
    pub fn supervisor_alive(&self, id: &str, now: Instant, timeout: Duration) -> bool {
        let since = self.supervisors.get(id).map_or(self.start, |s| s.changed);
        now.saturating_duration_since(since) <= timeout
    }

    /// Supervisors whose node is present and alive: only they get new work.
    pub fn usable_supervisors(&self, now: Instant, timeout: Duration) -> BTreeSet<String> {
        self.supervisors
            .iter()
            .filter(|(id, s)| s.present && self.supervisor_alive(id, now, timeout))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Notes `assignment`'s slots: a slot seen for the first time, or whose executors
    /// changed, starts its grace period `now`.
    pub fn observe_assignment(&mut self, now: Instant, assignment: &Assignment) {
        let slots = self
            .slots
            .entry(assignment.topology_id.clone())
            .or_default();
        let mut current: BTreeMap<WorkerSlot, Vec<(u32, u32)>> = BTreeMap::new();
        for e in &assignment.executors {
            current
                .entry(e.slot.clone())
                .or_default()
                .push((e.first.0, e.last.0));
        }
        slots.retain(|slot, _| current.contains_key(slot));
        for (slot, mut execs) in current {
            execs.sort_unstable();
            match slots.get(&slot) {
                Some((known, _)) if *known == execs => {}
                _ => {
                    slots.insert(slot, (execs, now));
                }
            }
        }
    }

    /// Forgets a topology (killed).
    pub fn forget_topology(&mut self, topology_id: &str) {
        self.slots.remove(topology_id);
    }

    /// The dead slots of `assignment` (observed with [`Liveness::observe_assignment`]):
    /// on a dead supervisor, or silent too long. `heartbeats` holds when each slot's
    /// worker last sent a heartbeat that matched its assignment.
    pub fn dead_slots(
        &self,
        assignment: &Assignment,
        heartbeats: &BTreeMap<WorkerSlot, Instant>,
        now: Instant,
        t: &Timeouts,
    ) -> BTreeSet<WorkerSlot> {
        let known = self.slots.get(&assignment.topology_id);
        assignment
            .slots()
            .into_iter()
            .filter(|slot| {
                if !self.supervisor_alive(&slot.node, now, t.supervisor) {
                    return true;
                }
                let since = known
                    .and_then(|k| k.get(slot))
                    .map_or(self.start, |(_, since)| *since);
                let mut deadline = since + t.worker_start;
                if let Some(&last) = heartbeats.get(slot) {
                    deadline = deadline.max(last + t.task);
                }
                now > deadline
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::{Config, TaskId};
    use squall_cluster::state::ExecutorAssignment;

    const T: Timeouts = Timeouts {
        supervisor: Duration::from_secs(10),
        task: Duration::from_secs(5),
        worker_start: Duration::from_secs(20),
    };

    fn sup(id: &str, hb: u64) -> SupervisorInfo {
        SupervisorInfo {
            id: id.into(),
            hostname: "h".into(),
            ports: vec![1, 2],
            start_time_secs: 1,
            version: "v".into(),
            heartbeat_secs: hb,
        }
    }

    fn slot(node: &str, port: u16) -> WorkerSlot {
        WorkerSlot {
            node: node.into(),
            port,
        }
    }

    fn assignment(slots: &[(WorkerSlot, u32)]) -> Assignment {
        Assignment {
            topology_id: "t-1-1".into(),
            topology_name: "t".into(),
            binary_sha256: String::new(),
            args: vec![],
            conf: Config::new(),
            executors: slots
                .iter()
                .map(|(s, task)| ExecutorAssignment {
                    component: "c".into(),
                    first: TaskId(*task),
                    last: TaskId(*task),
                    slot: s.clone(),
                })
                .collect(),
            node_host: BTreeMap::new(),
            slot_start_secs: BTreeMap::new(),
            version: 1,
            epoch: 1,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_supervisor_dies_when_its_node_stops_changing_or_vanishes() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        l.observe_supervisors(t0, &[sup("a", 1), sup("b", 1)]);
        // a heartbeats, b's node stays the same.
        l.observe_supervisors(t0 + secs(8), &[sup("a", 9), sup("b", 1)]);
        let now = t0 + secs(15);
        l.observe_supervisors(now, &[sup("a", 9), sup("b", 1)]);
        assert!(l.supervisor_alive("a", now, T.supervisor));
        assert!(!l.supervisor_alive("b", now, T.supervisor));
        assert_eq!(
            l.usable_supervisors(now, T.supervisor),
            BTreeSet::from(["a".to_owned()])
        );
        // a vanishes: no new work at once, but dead only after the timeout.
        l.observe_supervisors(now, &[sup("b", 1)]);
        assert!(l.usable_supervisors(now, T.supervisor).is_empty());
        assert!(l.supervisor_alive("a", now, T.supervisor));
        assert!(!l.supervisor_alive("a", t0 + secs(19), T.supervisor));
        // Never seen: counts from the start of leadership.
        assert!(l.supervisor_alive("z", t0 + secs(10), T.supervisor));
        assert!(!l.supervisor_alive("z", t0 + secs(11), T.supervisor));
    }

    #[test]
    fn fresh_clocks_after_a_failover_kill_nothing() {
        // A new leader whose supervisors and workers were silent before it led (it could
        // not see them): nothing is dead until the timeouts pass on its own clock.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        let a = assignment(&[(slot("a", 1), 1), (slot("b", 1), 2)]);
        l.observe_supervisors(t0, &[sup("a", 1), sup("b", 1)]);
        l.observe_assignment(t0, &a);
        assert!(l
            .dead_slots(&a, &BTreeMap::new(), t0 + secs(9), &T)
            .is_empty());
    }

    #[test]
    fn silent_workers_die_after_the_task_timeout_new_ones_get_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        let a = assignment(&[(slot("a", 1), 1), (slot("a", 2), 2)]);
        let mut hb = BTreeMap::new();
        for s in [0, 5, 10, 15, 20, 25] {
            let now = t0 + secs(s);
            l.observe_supervisors(now, &[sup("a", s)]);
            l.observe_assignment(now, &a);
            hb.insert(slot("a", 1), now);
        }
        let now = t0 + secs(25);
        // a:1 heartbeats; a:2 never did and its grace (20 s) is over.
        assert_eq!(
            l.dead_slots(&a, &hb, now, &T),
            BTreeSet::from([slot("a", 2)])
        );
        // A heartbeat long ago: dead after the task timeout.
        hb.insert(slot("a", 2), t0 + secs(21));
        assert!(l.dead_slots(&a, &hb, now, &T).is_empty());
        assert_eq!(
            l.dead_slots(&a, &hb, t0 + secs(27), &T),
            BTreeSet::from([slot("a", 2)])
        );
        // Executors moved onto a:2: its grace starts again.
        let moved = assignment(&[(slot("a", 1), 1), (slot("a", 2), 2), (slot("a", 2), 3)]);
        l.observe_assignment(t0 + secs(27), &moved);
        l.observe_supervisors(t0 + secs(40), &[sup("a", 40)]);
        hb.insert(slot("a", 1), t0 + secs(40));
        assert!(l.dead_slots(&moved, &hb, t0 + secs(40), &T).is_empty());
        l.observe_supervisors(t0 + secs(48), &[sup("a", 48)]);
        hb.insert(slot("a", 1), t0 + secs(48));
        assert_eq!(
            l.dead_slots(&moved, &hb, t0 + secs(48), &T),
            BTreeSet::from([slot("a", 2)])
        );
    }

    #[test]
    fn slots_of_a_dead_supervisor_are_dead_even_with_recent_heartbeats() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        let a = assignment(&[(slot("a", 1), 1), (slot("b", 1), 2)]);
        l.observe_supervisors(t0, &[sup("a", 0), sup("b", 0)]);
        l.observe_assignment(t0, &a);
        let now = t0 + secs(11);
        l.observe_supervisors(now, &[sup("a", 11), sup("b", 0)]);
        let hb = BTreeMap::from([(slot("a", 1), now), (slot("b", 1), now)]);
        assert_eq!(
            l.dead_slots(&a, &hb, now, &T),
            BTreeSet::from([slot("b", 1)])
        );
    }
}
