//! Nimbus's scheduler: spreads a topology's executors evenly over free worker slots.
//!
//! Pure: it sees the executors, the number of workers wanted and the free slots of the
//! live supervisors, and returns a placement. Workers are taken round-robin across
//! supervisors (so two workers land on two machines when there are two), executors
//! round-robin across the chosen workers (so each component's executors are spread).

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
    let mut nodes: Vec<&FreeSlots> = free.iter().filter(|f| !f.ports.is_empty()).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let want = (num_workers.max(1) as usize).min(executors.len());
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

    proptest! {
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
