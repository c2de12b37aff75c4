//! Storm's XOR acker, as a pure state machine.
//!
//! Every spout tuple tree has a random 64-bit root id. Each tuple of the tree is an edge
//! with a random 64-bit id. The spout sends `init(root, xor of its edges)`; a bolt that
//! acks an input sends `ack(root, input edge ^ xor of the edges it emitted anchored to
//! that input)`. Every edge id is XORed in exactly twice (once when created, once when
//! acked), so the value is 0 exactly when the whole tree is processed. Messages may
//! arrive in any order; an entry is created by whichever comes first.

use squall_api::TaskId;

use crate::rotating::RotatingMap;

/// What the acker tells a spout task about one of its tuple trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckerOutcome {
    /// The tree completed.
    Ack {
        /// The tree.
        root: u64,
        /// The spout task that emitted it.
        spout_task: TaskId,
    },
    /// A tuple of the tree failed.
    Fail {
        /// The tree.
        root: u64,
        /// The spout task that emitted it.
        spout_task: TaskId,
    },
}

#[derive(Debug, Default)]
struct Entry {
    val: u64,
    spout_task: Option<TaskId>,
    failed: bool,
}

/// The pending tuple trees of one acker task: about 24 bytes per tree.
pub struct AckerState {
    pending: RotatingMap<u64, Entry>,
}

impl Default for AckerState {
    fn default() -> Self {
        Self::new()
    }
}

impl AckerState {
    /// Rotated every message timeout, entries expire after two to three timeouts; by then
    /// the spout has already failed the tree, so expiry only reclaims memory.
    pub fn new() -> Self {
        AckerState {
            pending: RotatingMap::new(3),
        }
    }

    /// The spout emitted tree `root` with edges XORing to `val`.
    pub fn init(&mut self, root: u64, val: u64, spout_task: TaskId) -> Option<AckerOutcome> {
        self.apply(root, |e| {
            e.val ^= val;
            e.spout_task = Some(spout_task);
        })
    }

    /// A tuple of tree `root` was acked.
    pub fn ack(&mut self, root: u64, val: u64) -> Option<AckerOutcome> {
        self.apply(root, |e| e.val ^= val)
    }

    /// A tuple of tree `root` failed.
    pub fn fail(&mut self, root: u64) -> Option<AckerOutcome> {
        self.apply(root, |e| e.failed = true)
    }

    /// Applies a message to tree `root` and reports (and forgets) the tree once its
    /// verdict is known: one hash probe for a tree of the newest generation.
    fn apply(&mut self, root: u64, change: impl FnOnce(&mut Entry)) -> Option<AckerOutcome> {
        self.pending.update(root, Entry::default, |e| {
            change(e);
            let Some(spout_task) = e.spout_task else {
                return (false, None);
            };
            if e.failed {
                (true, Some(AckerOutcome::Fail { root, spout_task }))
            } else if e.val == 0 {
                (true, Some(AckerOutcome::Ack { root, spout_task }))
            } else {
                (false, None)
            }
        })
    }

    /// Drops trees older than the retention window; returns how many.
    pub fn rotate(&mut self) -> usize {
        self.pending.rotate().len()
    }

    /// Number of trees in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tuple tree as a model: node i's children are the nodes whose parent is i.
    /// Node 0..spout_edges are the spout's direct children.
    #[derive(Debug, Clone)]
    struct Tree {
        /// parent[i] = None for the spout's children.
        parent: Vec<Option<usize>>,
        /// Which nodes fail instead of acking.
        fails: Vec<bool>,
    }

    fn tree() -> impl Strategy<Value = Tree> {
        (0usize..12).prop_flat_map(|n| {
            (
                proptest::collection::vec(any::<prop::sample::Index>(), n),
                proptest::collection::vec(prop::bool::weighted(0.1), n),
            )
                .prop_map(|(parents, fails)| {
                    let parent = parents
                        .iter()
                        .enumerate()
                        .map(|(i, ix)| {
                            // The first node hangs off the spout; the others off the spout
                            // or an earlier node.
                            let choice = ix.index(i + 1);
                            if choice == i {
                                None
                            } else {
                                Some(choice)
                            }
                        })
                        .collect();
                    Tree { parent, fails }
                })
        })
    }

    #[derive(Debug, Clone, Copy)]
    enum Msg {
        Init(u64),
        Ack(u64),
        Fail,
    }

    /// The messages the runtime sends for a tree, computed the way emitters do.
    fn messages(t: &Tree, rng: &mut fastrand::Rng) -> Vec<Msg> {
        let edges: Vec<u64> = t.parent.iter().map(|_| rng.u64(..)).collect();
        let mut init = 0;
        let mut ack_val = vec![0u64; edges.len()];
        for (i, p) in t.parent.iter().enumerate() {
            match p {
                None => init ^= edges[i],
                Some(p) => ack_val[*p] ^= edges[i],
            }
        }
        let mut out = vec![Msg::Init(init)];
        for i in 0..edges.len() {
            out.push(if t.fails[i] {
                Msg::Fail
            } else {
                Msg::Ack(edges[i] ^ ack_val[i])
            });
        }
        out
    }

    proptest! {
        #[test]
        fn tree_completes_exactly_when_every_edge_is_acked(
            trees in proptest::collection::vec(tree(), 1..6),
            seed in any::<u64>(),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut acker = AckerState::new();
            // Interleave the messages of all trees in a random order: acks may come
            // before their tree's init.
            let mut all = Vec::new();
            for (root, t) in trees.iter().enumerate() {
                for m in messages(t, &mut rng) {
                    all.push((root as u64 + 1, m));
                }
            }
            rng.shuffle(&mut all);
            let total: Vec<usize> = (0..trees.len())
                .map(|r| all.iter().filter(|(root, _)| *root == r as u64 + 1).count())
                .collect();
            let mut seen = vec![0usize; trees.len()];
            let mut reported = vec![None; trees.len()];
            for (root, m) in all {
                let r = (root - 1) as usize;
                seen[r] += 1;
                let out = match m {
                    Msg::Init(v) => acker.init(root, v, TaskId(7)),
                    Msg::Ack(v) => acker.ack(root, v),
                    Msg::Fail => acker.fail(root),
                };
                if let Some(o) = out {
                    prop_assert!(reported[r].is_none(), "tree {} reported twice", root);
                    reported[r] = Some((o, seen[r]));
                }
            }
            for (r, t) in trees.iter().enumerate() {
                let root = r as u64 + 1;
                let fails = t.fails.iter().any(|&f| f);
                match reported[r] {
                    None => prop_assert!(false, "tree {} never reported", root),
                    Some((AckerOutcome::Ack { root: got, spout_task }, at)) => {
                        prop_assert!(!fails, "tree {} with a failed tuple was acked", root);
                        prop_assert_eq!(got, root);
                        prop_assert_eq!(spout_task, TaskId(7));
                        // Complete exactly on the last message of the tree, not before.
                        prop_assert_eq!(at, total[r]);
                    }
                    Some((AckerOutcome::Fail { root: got, .. }, _)) => {
                        prop_assert!(fails, "tree {} failed without a failed tuple", root);
                        prop_assert_eq!(got, root);
                    }
                }
            }
            // Completed trees leave nothing behind (acks after a failure may leave
            // orphans that expire by rotation).
            if trees.iter().all(|t| !t.fails.iter().any(|&f| f)) {
                prop_assert_eq!(acker.pending(), 0);
            }
        }
    }

    #[test]
    fn ack_before_init_waits_for_init() {
        let mut a = AckerState::new();
        assert_eq!(a.ack(1, 5), None);
        assert_eq!(
            a.init(1, 5, TaskId(2)),
            Some(AckerOutcome::Ack {
                root: 1,
                spout_task: TaskId(2)
            })
        );
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn fail_before_init_fails_on_init() {
        let mut a = AckerState::new();
        assert_eq!(a.fail(9), None);
        assert_eq!(
            a.init(9, 3, TaskId(4)),
            Some(AckerOutcome::Fail {
                root: 9,
                spout_task: TaskId(4)
            })
        );
    }

    #[test]
    fn unfinished_trees_expire_after_rotations() {
        let mut a = AckerState::new();
        a.init(1, 5, TaskId(2));
        assert_eq!(a.rotate(), 0);
        assert_eq!(a.rotate(), 0);
        assert_eq!(a.rotate(), 1);
        assert_eq!(a.pending(), 0);
    }
}
