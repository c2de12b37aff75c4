//! Nimbus's scheduler: spreads a topology's executors evenly over free worker slots.
//!
//! Pure: it sees the executors, the number of workers wanted and the free slots of the
//! live supervisors, and returns a placement. Workers are taken round-robin across
//! supervisors (so two workers land on two machines when there are two), executors
//! round-robin across the chosen workers (so each component's executors are spread).
//!
//! [`reschedule`] repairs an assignment after failures: only executors whose slot died
//! move, so workers that lost nothing keep running. [`should_spread`] tells when a
//! topology squeezed onto fewer workers than it asked for can be spread out again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use squall_api::TaskId;

use crate::state::{ExecutorAssignment, WorkerSlot};

/// The free slots of one live supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeSlots {
    /// Supervisor id.
    pub node: String,
    /// Free ports, ascending.
    pub ports: Vec<u16>,
}

/// Why nothing could be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No live supervisor has a free slot.
    #[error("no free worker slots: start a supervisor or kill a topology")]
    NoFreeSlots,
    /// The topology has no executors.
    #[error("the topology has no executors")]
    NoExecutors,
}

/// One executor to place: component, first and last task.
pub type ExecutorSpec = (String, TaskId, TaskId);

/// Places `executors` on up to `num_workers` slots from `free`. Uses fewer workers when
/// fewer slots are free or there are fewer executors than workers.
pub fn schedule(
    executors: &[ExecutorSpec],
    num_workers: u32,
    free: &[FreeSlots],
) -> Result<Vec<ExecutorAssignment>, ScheduleError> {
    if executors.is_empty() {
        return Err(ScheduleError::NoExecutors);
    }
    let want = (num_workers.max(1) as usize).min(executors.len());
    let slots = pick_slots(free, want, &BTreeMap::new());
    if slots.is_empty() {
        return Err(ScheduleError::NoFreeSlots);
    }
    Ok(executors
        .iter()
        .enumerate()
        .map(|(i, (component, first, last))| ExecutorAssignment {
            component: component.clone(),
            first: *first,
            last: *last,
            slot: slots[i % slots.len()].clone(),
        })
        .collect())
}

/// Takes up to `want` slots from `free`, round-robin across supervisors, supervisors
/// that already run fewer of `busy` (workers per node) first, then by id.
fn pick_slots(free: &[FreeSlots], want: usize, busy: &BTreeMap<&str, usize>) -> Vec<WorkerSlot> {
    let mut nodes: Vec<&FreeSlots> = free.iter().filter(|f| !f.ports.is_empty()).collect();
    nodes.sort_by(|a, b| {
        let load = |n: &FreeSlots| busy.get(n.node.as_str()).copied().unwrap_or(0);
        load(a).cmp(&load(b)).then_with(|| a.node.cmp(&b.node))
    });
    let mut slots = Vec::with_capacity(want);
    let mut round = 0;
    while slots.len() < want {
        let mut took = false;
        for n in &nodes {
            if slots.len() == want {
                break;
            }
            if let Some(&port) = n.ports.get(round) {
                slots.push(WorkerSlot {
                    node: n.node.clone(),
                    port,
                });
                took = true;
            }
        }
        if !took {
            break;
        }
        round += 1;
    }
    slots
}

/// Repairs `current` after the slots in `dead` were lost: every executor on a live slot
/// stays where it is; the executors of dead slots go to new workers on `free` slots
/// (the free slots of live supervisors, none in use), as many as keep the topology
/// within `num_workers`; when no new worker fits, they join the topology's surviving
/// workers, the least loaded first. The order of executors is kept.
///
/// Fails with [`ScheduleError::NoFreeSlots`] when executors must move and there is
/// neither a free slot nor a surviving worker.
pub fn reschedule(
    current: &[ExecutorAssignment],
    dead: &BTreeSet<WorkerSlot>,
    num_workers: u32,
    free: &[FreeSlots],
) -> Result<Vec<ExecutorAssignment>, ScheduleError> {
    if current.is_empty() {
        return Err(ScheduleError::NoExecutors);
    }
    let orphans = current.iter().filter(|e| dead.contains(&e.slot)).count();
    if orphans == 0 {
        return Ok(current.to_vec());
    }
    let mut load: BTreeMap<WorkerSlot, usize> = BTreeMap::new();
    for e in current.iter().filter(|e| !dead.contains(&e.slot)) {
        *load.entry(e.slot.clone()).or_default() += 1;
    }
    // Never hand out a dead or kept slot as a new one.
    let free: Vec<FreeSlots> = free
        .iter()
        .map(|f| FreeSlots {
            node: f.node.clone(),
            ports: f
                .ports
                .iter()
                .copied()
                .filter(|&port| {
                    let s = WorkerSlot {
                        node: f.node.clone(),
                        port,
                    };
                    !dead.contains(&s) && !load.contains_key(&s)
                })
                .collect(),
        })
        .collect();
    let room = (num_workers.max(1) as usize)
        .saturating_sub(load.len())
        .min(orphans);
    let mut busy: BTreeMap<&str, usize> = BTreeMap::new();
    for s in load.keys() {
        *busy.entry(s.node.as_str()).or_default() += 1;
    }
    let fresh = pick_slots(&free, room, &busy);
    if fresh.is_empty() && load.is_empty() {
        return Err(ScheduleError::NoFreeSlots);
    }
    let mut next_fresh = 0;
    Ok(current
        .iter()
        .map(|e| {
            if !dead.contains(&e.slot) {
                return e.clone();
            }
            let slot = if fresh.is_empty() {
                // Onto the least loaded surviving worker.
                let (slot, n) = load
                    .iter_mut()
                    .min_by_key(|(_, n)| **n)
                    .expect("surviving workers exist");
                *n += 1;
                slot.clone()
            } else {
                next_fresh += 1;
                fresh[(next_fresh - 1) % fresh.len()].clone()
            };
            ExecutorAssignment { slot, ..e.clone() }
        })
        .collect())
}

/// Whether a topology running on `current_workers` workers should be scheduled afresh
/// to spread out: it asked for more (`num_workers`, capped by its `executors`) and
/// `free_slots` slots of live supervisors are free.
pub fn should_spread(
    current_workers: usize,
    num_workers: u32,
    executors: usize,
    free_slots: usize,
) -> bool {
    let wanted = (num_workers.max(1) as usize).min(executors);
    current_workers < wanted && free_slots > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn execs(n: u32) -> Vec<ExecutorSpec> {
        (1..=n)
            .map(|t| (format!("c{}", t % 3), TaskId(t), TaskId(t)))
            .collect()
    }

    #[test]
    fn two_workers_land_on_two_supervisors() {
        let free = vec![
            FreeSlots {
                node: "a".into(),
                ports: vec![6700, 6701],
            },
            FreeSlots {
                node: "b".into(),
                ports: vec![6700, 6701],
            },
        ];
        let placed = schedule(&execs(5), 2, &free).unwrap();
        let nodes: BTreeSet<&str> = placed.iter().map(|e| e.slot.node.as_str()).collect();
        assert_eq!(nodes.len(), 2);
    }

    #[test]
    fn no_slots_is_an_error() {
        assert_eq!(
            schedule(
                &execs(2),
                1,
                &[FreeSlots {
                    node: "a".into(),
                    ports: vec![]
                }]
            ),
            Err(ScheduleError::NoFreeSlots)
        );
    }

    fn slot(node: &str, port: u16) -> WorkerSlot {
        WorkerSlot {
            node: node.into(),
            port,
        }
    }

    #[test]
    fn only_executors_of_dead_slots_move_and_to_new_workers() {
        let free = vec![
            FreeSlots {
                node: "a".into(),
                ports: vec![1, 2],
            },
            FreeSlots {
                node: "b".into(),
                ports: vec![1, 2],
            },
        ];
        let current = schedule(&execs(6), 2, &free).unwrap();
        let slots: BTreeSet<WorkerSlot> = current.iter().map(|e| e.slot.clone()).collect();
        assert_eq!(slots.len(), 2);
        // Supervisor b died: a:1 keeps its executors; b's move to a new worker on a:2
        // (b's other port is not offered: b is dead).
        let dead = BTreeSet::from([slot("b", 1)]);
        let free_now = vec![FreeSlots {
            node: "a".into(),
            ports: vec![2],
        }];
        let moved = reschedule(&current, &dead, 2, &free_now).unwrap();
        for (before, after) in current.iter().zip(&moved) {
            assert_eq!(
                (&before.component, before.first),
                (&after.component, after.first)
            );
            if before.slot == slot("a", 1) {
                assert_eq!(after.slot, before.slot);
            } else {
                assert_eq!(after.slot, slot("a", 2));
            }
        }
        // No free slot: they join the survivor.
        let squeezed = reschedule(&current, &dead, 2, &[]).unwrap();
        assert!(squeezed.iter().all(|e| e.slot == slot("a", 1)));
        // Nothing left at all.
        assert_eq!(
            reschedule(&current, &slots, 2, &[]),
            Err(ScheduleError::NoFreeSlots)
        );
    }

    #[test]
    fn spreading_back_needs_free_slots_and_fewer_workers_than_asked() {
        assert!(should_spread(1, 2, 5, 1));
        assert!(!should_spread(2, 2, 5, 3));
        assert!(!should_spread(1, 2, 5, 0));
        assert!(!should_spread(1, 4, 1, 3)); // one executor needs one worker
    }

    proptest! {
        #[test]
        fn reschedule_moves_exactly_the_dead_slots_executors(
            n in 1u32..30,
            workers in 1u32..6,
            ports in proptest::collection::vec(1usize..4, 1..4),
            dead_mask in proptest::collection::vec(any::<bool>(), 6),
            free_after in proptest::collection::vec(0usize..3, 0..3),
        ) {
            let free: Vec<FreeSlots> = ports.iter().enumerate().map(|(i, &p)| FreeSlots {
                node: format!("s{i}"),
                ports: (0..p as u16).map(|k| 6700 + k).collect(),
            }).collect();
            let current = schedule(&execs(n), workers, &free).unwrap();
            let slots: Vec<WorkerSlot> = {
                let s: BTreeSet<WorkerSlot> = current.iter().map(|e| e.slot.clone()).collect();
                s.into_iter().collect()
            };
            let dead: BTreeSet<WorkerSlot> = slots.iter().zip(&dead_mask)
                .filter(|(_, d)| **d).map(|(s, _)| s.clone()).collect();
            // Free slots after the failure: on new nodes, never in use.
            let free_now: Vec<FreeSlots> = free_after.iter().enumerate().map(|(i, &p)| FreeSlots {
                node: format!("t{i}"),
                ports: (0..p as u16).map(|k| 7700 + k).collect(),
            }).collect();
            let free_count: usize = free_after.iter().sum();
            let survivors: BTreeSet<&WorkerSlot> = slots.iter().filter(|s| !dead.contains(*s)).collect();
            let result = reschedule(&current, &dead, workers, &free_now);
            if !dead.is_empty() && survivors.is_empty() && free_count == 0 {
                prop_assert_eq!(result, Err(ScheduleError::NoFreeSlots));
                return Ok(());
            }
            let placed = result.unwrap();
            prop_assert_eq!(placed.len(), current.len());
            let room = (workers as usize).saturating_sub(survivors.len());
            for (before, after) in current.iter().zip(&placed) {
                // Same executor, same order.
                prop_assert_eq!((&before.component, before.first, before.last),
                    (&after.component, after.first, after.last));
                if dead.contains(&before.slot) {
                    prop_assert!(!dead.contains(&after.slot));
                    let on_free = free_now.iter().any(|f| f.node == after.slot.node && f.ports.contains(&after.slot.port));
                    if room > 0 && free_count > 0 {
                        prop_assert!(on_free, "moved onto a survivor although a new worker fits");
                    } else {
                        prop_assert!(survivors.contains(&after.slot));
                    }
                } else {
                    prop_assert_eq!(&after.slot, &before.slot);
                }
            }
            let used: BTreeSet<&WorkerSlot> = placed.iter().map(|e| &e.slot).collect();
            prop_assert!(used.len() <= (workers as usize).max(survivors.len()));
        }

        #[test]
        fn placement_is_complete_and_even(
            n in 1u32..40,
            workers in 1u32..8,
            ports in proptest::collection::vec(0usize..4, 1..4),
        ) {
            let free: Vec<FreeSlots> = ports.iter().enumerate().map(|(i, &p)| FreeSlots {
                node: format!("s{i}"),
                ports: (0..p as u16).map(|k| 6700 + k).collect(),
            }).collect();
            let total: usize = ports.iter().sum();
            let result = schedule(&execs(n), workers, &free);
            if total == 0 {
                prop_assert_eq!(result, Err(ScheduleError::NoFreeSlots));
                return Ok(());
            }
            let placed = result.unwrap();
            // Every executor exactly once, in a slot that was free.
            prop_assert_eq!(placed.len(), n as usize);
            for e in &placed {
                let node = free.iter().find(|f| f.node == e.slot.node).unwrap();
                prop_assert!(node.ports.contains(&e.slot.port));
            }
            let mut per_slot: BTreeMap<&WorkerSlot, usize> = BTreeMap::new();
            for e in &placed {
                *per_slot.entry(&e.slot).or_default() += 1;
            }
            let used = per_slot.len();
            prop_assert_eq!(used, (workers as usize).min(total).min(n as usize));
            let (min, max) = (per_slot.values().min().unwrap(), per_slot.values().max().unwrap());
            prop_assert!(max - min <= 1, "executors per worker uneven: {:?}", per_slot);
            // Workers spread over supervisors: per-node counts differ by at most one
            // among nodes that still had free ports.
            let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
            for s in per_slot.keys() {
                *per_node.entry(s.node.as_str()).or_default() += 1;
            }
            for f in &free {
                let c = per_node.get(f.node.as_str()).copied().unwrap_or(0);
                let other_max = per_node.values().max().copied().unwrap_or(0);
                prop_assert!(c + 1 >= other_max || c == f.ports.len());
            }
        }
    }
}
