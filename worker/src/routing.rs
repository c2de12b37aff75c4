//! Groupings at the emitting side: which tasks receive each tuple.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;
use squall_api::{CustomStreamGrouping, Grouping, TaskId, TaskLayout, TopologySpec, Value};

/// Seeds for the fields-grouping hashes. Fixed, so every worker process of a topology
/// sends a key to the same task.
const FIELDS_SEED: u64 = 0x5157_4c4c_0000_0001;
const PARTIAL_KEY_SEED_2: u64 = 0x5157_4c4c_0000_0002;

/// Maps a 64-bit hash onto `0..n` using its high bits (fast range reduction).
fn reduce(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

fn hash_fields(values: &[Value], indices: &[usize], seed: u64) -> u64 {
    // The common case, one string field (a word, a user id): hashed in one call.
    if let [i] = indices {
        if let Value::Str(s) = &values[*i] {
            return FixedState::with_seed(seed).hash_one(s.as_bytes());
        }
    }
    let mut h = FixedState::with_seed(seed).build_hasher();
    for &i in indices {
        values[i].stable_hash(&mut h);
    }
    h.finish()
}

/// How one subscribing component picks its tasks for a tuple.
pub(crate) enum Grouper {
    /// Round-robin over a shuffled task order (shuffle, none, local-or-shuffle).
    RoundRobin { order: Vec<TaskId>, next: usize },
    /// Hash of the grouping fields.
    Fields { indices: Vec<usize> },
    /// Every task.
    All,
    /// The lowest task.
    Global,
    /// The emitter names the task.
    Direct,
    /// The less loaded of two hashed candidates.
    PartialKey { indices: Vec<usize>, sent: Vec<u64> },
    /// A user grouping.
    Custom {
        grouping: Box<dyn CustomStreamGrouping>,
        scratch: Vec<TaskId>,
    },
}

/// One subscribing component of a stream.
pub(crate) struct Target {
    /// The component's tasks, ascending.
    pub tasks: Vec<TaskId>,
    pub grouper: Grouper,
}

impl Target {
    /// Builds the grouper for `grouping`. `local_tasks` are the tasks in this worker;
    /// `fields` are the stream's declared fields.
    pub fn new(
        tasks: Vec<TaskId>,
        grouping: &Grouping,
        stream_fields: &squall_api::Fields,
        local_tasks: &[TaskId],
        custom: Option<Box<dyn CustomStreamGrouping>>,
        rng: &mut fastrand::Rng,
    ) -> Self {
        let indices = |f: &squall_api::Fields| -> Vec<usize> {
            f.names()
                .iter()
                .map(|n| {
                    stream_fields
                        .index_of(n)
                        .expect("grouping fields are validated against the stream")
                })
                .collect()
        };
        let grouper = match grouping {
            Grouping::Shuffle | Grouping::None => {
                let mut order = tasks.clone();
                rng.shuffle(&mut order);
                Grouper::RoundRobin { order, next: 0 }
            }
            Grouping::LocalOrShuffle => {
                let mut order: Vec<TaskId> = tasks
                    .iter()
                    .copied()
                    .filter(|t| local_tasks.contains(t))
                    .collect();
                if order.is_empty() {
                    order = tasks.clone();
                }
                rng.shuffle(&mut order);
                Grouper::RoundRobin { order, next: 0 }
            }
            Grouping::Fields(f) => Grouper::Fields {
                indices: indices(f),
            },
            Grouping::PartialKey(f) => Grouper::PartialKey {
                indices: indices(f),
                sent: vec![0; tasks.len()],
            },
            Grouping::All => Grouper::All,
            Grouping::Global => Grouper::Global,
            Grouping::Direct => Grouper::Direct,
            Grouping::Custom(name) => Grouper::Custom {
                grouping: custom.unwrap_or_else(|| {
                    panic!("custom grouping {name} has no implementation in this binary")
                }),
                scratch: Vec::new(),
            },
        };
        Target { tasks, grouper }
    }

    /// Pushes the receiving tasks of a tuple with `values` onto `out`.
    #[inline]
    pub fn choose(&mut self, source: TaskId, values: &[Value], out: &mut Vec<TaskId>) {
        match &mut self.grouper {
            Grouper::RoundRobin { order, next } => {
                out.push(order[*next]);
                *next += 1;
                if *next == order.len() {
                    *next = 0;
                }
            }
            Grouper::Fields { indices } => {
                let h = hash_fields(values, indices, FIELDS_SEED);
                out.push(self.tasks[reduce(h, self.tasks.len())]);
            }
            Grouper::All => out.extend_from_slice(&self.tasks),
            Grouper::Global => out.push(self.tasks[0]),
            Grouper::Direct => {}
            Grouper::PartialKey { indices, sent } => {
                let n = self.tasks.len();
                let a = reduce(hash_fields(values, indices, FIELDS_SEED), n);
                let b = reduce(hash_fields(values, indices, PARTIAL_KEY_SEED_2), n);
                let pick = if sent[b] < sent[a] { b } else { a };
                sent[pick] += 1;
                out.push(self.tasks[pick]);
            }
            Grouper::Custom { grouping, scratch } => {
                scratch.clear();
                grouping.choose_tasks(source, values, scratch);
                out.extend(
                    scratch
                        .iter()
                        .filter(|t| self.tasks.binary_search(t).is_ok()),
                );
            }
        }
    }
}

/// One output stream of the emitting component, with its subscribers.
pub(crate) struct StreamRoute {
    pub name: String,
    pub index: u32,
    pub num_fields: usize,
    pub direct: bool,
    pub targets: Vec<Target>,
}

/// The routes of every output stream of `component`. A custom grouping without code in
/// this binary, or whose `prepare` panics, is an error naming the bolt and the stream.
pub(crate) fn build_routes(
    spec: &TopologySpec,
    layout: &TaskLayout,
    component: &str,
    local_tasks: &[TaskId],
    mut custom: impl FnMut(&str, &squall_api::GlobalStreamId) -> Option<Box<dyn CustomStreamGrouping>>,
    rng: &mut fastrand::Rng,
) -> Result<Vec<StreamRoute>, String> {
    let Some(c) = spec.components.get(component) else {
        return Ok(Vec::new());
    };
    let mut routes = Vec::with_capacity(c.outputs.len());
    for (stream, decl) in &c.outputs {
        let schema = layout
            .stream(component, stream.as_str())
            .expect("every declared stream is in the layout");
        let source = squall_api::GlobalStreamId::new(component, stream.as_str());
        let mut targets = Vec::new();
        for (bolt, grouping) in spec.subscribers(component, stream.as_str()) {
            let tasks = layout.component_tasks(bolt.as_str()).to_vec();
            let mut user = None;
            if let Grouping::Custom(name) = grouping {
                let Some(mut g) = custom(bolt.as_str(), &source) else {
                    return Err(format!(
                        "custom grouping {name} of bolt '{bolt}' on stream {source} has no implementation in this binary"
                    ));
                };
                let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    g.prepare(&source, &tasks)
                }));
                if let Err(p) = prepared {
                    return Err(format!(
                        "custom grouping {name} of bolt '{bolt}' on stream {source} panicked in prepare: {}",
                        crate::executor::take_panic_message(p)
                    ));
                }
                user = Some(g);
            }
            targets.push(Target::new(
                tasks,
                grouping,
                &decl.fields,
                local_tasks,
                user,
                rng,
            ));
        }
        routes.push(StreamRoute {
            name: stream.to_string(),
            index: schema.index,
            num_fields: decl.fields.len(),
            direct: decl.direct,
            targets,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use squall_api::{values, Fields};

    fn tasks(n: u32) -> Vec<TaskId> {
        (1..=n).map(TaskId).collect()
    }

    fn target(grouping: Grouping, n: u32) -> Target {
        let fields = Fields::new(["word", "n"]);
        let mut rng = fastrand::Rng::with_seed(1);
        Target::new(tasks(n), &grouping, &fields, &[], None, &mut rng)
    }

    proptest! {
        #[test]
        fn fields_grouping_sends_equal_keys_to_one_task(
            words in proptest::collection::vec("[a-e]{1,3}", 1..200),
            n in 1u32..9,
        ) {
            // Two independent emitters (as in two worker processes) agree on every key.
            let mut a = target(Grouping::Fields(Fields::new(["word"])), n);
            let mut b = target(Grouping::Fields(Fields::new(["word"])), n);
            let mut seen = std::collections::HashMap::new();
            for (i, w) in words.iter().enumerate() {
                let v = values![w.as_str(), i];
                let (mut oa, mut ob) = (Vec::new(), Vec::new());
                a.choose(TaskId(99), &v, &mut oa);
                b.choose(TaskId(98), &v, &mut ob);
                prop_assert_eq!(oa.len(), 1);
                prop_assert_eq!(&oa, &ob);
                let prev = seen.insert(w.clone(), oa[0]);
                prop_assert!(prev.is_none() || prev == Some(oa[0]));
            }
        }

        #[test]
        fn shuffle_spreads_evenly(n in 1u32..9, rounds in 1usize..20) {
            let mut t = target(Grouping::Shuffle, n);
            let mut counts = vec![0usize; n as usize + 1];
            for _ in 0..(n as usize * rounds) {
                let mut out = Vec::new();
                t.choose(TaskId(99), &values!["x", 1], &mut out);
                counts[out[0].0 as usize] += 1;
            }
            prop_assert!(counts[1..].iter().all(|&c| c == rounds));
        }

        #[test]
        fn partial_key_uses_at_most_two_tasks_per_key(n in 2u32..9, count in 1usize..300) {
            let mut t = target(Grouping::PartialKey(Fields::new(["word"])), n);
            let mut used = std::collections::BTreeSet::new();
            for i in 0..count {
                let mut out = Vec::new();
                t.choose(TaskId(99), &values!["hot", i], &mut out);
                used.insert(out[0]);
            }
            prop_assert!(used.len() <= 2);
        }
    }

    #[test]
    fn all_and_global() {
        let mut out = Vec::new();
        target(Grouping::All, 4).choose(TaskId(9), &values!["a", 1], &mut out);
        assert_eq!(out, tasks(4));
        out.clear();
        target(Grouping::Global, 4).choose(TaskId(9), &values!["a", 1], &mut out);
        assert_eq!(out, vec![TaskId(1)]);
    }

    #[test]
    fn partial_key_balances_a_hot_key() {
        let mut t = target(Grouping::PartialKey(Fields::new(["word"])), 4);
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..1000 {
            let mut out = Vec::new();
            t.choose(TaskId(99), &values!["hot", i], &mut out);
            *counts.entry(out[0]).or_insert(0) += 1;
        }
        let loads: Vec<i32> = counts.values().copied().collect();
        assert!(
            loads.len() == 1 || loads.iter().all(|&c| c == 500),
            "{loads:?}"
        );
    }
}
