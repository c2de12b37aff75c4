//! The operation graph a [`TridentTopology`](crate::TridentTopology) records, and its
//! compilation into stages: one bolt per stretch of operations between
//! repartitionings, plus one master batch coordinator (a spout) per batch group.
//!
//! A *batch group* is a connected part of the graph: its spouts take part in the same
//! batches (txids). A *stage* is a bolt; operations that need no repartitioning run in
//! their parent's stage, in the same thread, with no copy of the tuple (a tuple inside a
//! stage is a stack of value segments, see [`Slot`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use squall_api::{Fields, Grouping};

use crate::operation::{
    Aggregator, CombinerAggregator, Consumer, Filter, FlatMapFunction, Function, MapFunction,
    QueryFunction, ReducerAggregator,
};
use crate::spout::{SpoutDef, SpoutKind};
use crate::state::StateFactory;
use crate::tuple::{Slot, TridentCollector, TridentTuple};

pub(crate) type NodeId = usize;

/// Makes a per-task instance of an operation.
pub(crate) type Factory<T> = Arc<dyn Fn() -> Box<T> + Send + Sync>;

pub(crate) fn factory<T: ?Sized + 'static, O: Clone + Send + 'static>(
    proto: O,
    boxed: fn(O) -> Box<T>,
) -> Factory<T> {
    let proto = Mutex::new(proto);
    Arc::new(move || boxed(proto.lock().unwrap_or_else(|p| p.into_inner()).clone()))
}

/// A general aggregator with its state type erased.
pub(crate) trait ErasedAggregator: Send {
    fn init(&mut self, txid: u64) -> Box<dyn std::any::Any + Send>;
    fn aggregate(
        &mut self,
        state: &mut Box<dyn std::any::Any + Send>,
        input: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), squall_api::BoxError>;
    fn complete(
        &mut self,
        state: Box<dyn std::any::Any + Send>,
        out: &mut TridentCollector,
    ) -> Result<(), squall_api::BoxError>;
}

impl<A: Aggregator> ErasedAggregator for A {
    fn init(&mut self, txid: u64) -> Box<dyn std::any::Any + Send> {
        Box::new(Aggregator::init(self, txid))
    }
    fn aggregate(
        &mut self,
        state: &mut Box<dyn std::any::Any + Send>,
        input: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), squall_api::BoxError> {
        let state = state
            .downcast_mut::<A::State>()
            .expect("aggregator state has its own type");
        Aggregator::aggregate(self, state, input, out)
    }
    fn complete(
        &mut self,
        state: Box<dyn std::any::Any + Send>,
        out: &mut TridentCollector,
    ) -> Result<(), squall_api::BoxError> {
        let state = state
            .downcast::<A::State>()
            .expect("aggregator state has its own type");
        Aggregator::complete(self, *state, out)
    }
}

/// A factory of per-task general aggregators.
pub(crate) type AggFactory = Factory<dyn ErasedAggregator>;

pub(crate) fn agg_factory<A: Aggregator + Clone>(a: A) -> AggFactory {
    factory(a, |a| Box::new(a) as Box<dyn ErasedAggregator>)
}

/// How a batch-end aggregation computes.
#[derive(Clone)]
pub(crate) enum AggImpl {
    /// `init` per tuple, `combine` within the group; `partials`: the input is already
    /// partial values (the last field), combined without `init`.
    Combine {
        agg: Arc<dyn CombinerAggregator>,
        partials: bool,
    },
    Reduce(Arc<dyn ReducerAggregator>),
    General(AggFactory),
}

/// How a persistent aggregation updates the state.
#[derive(Clone)]
pub(crate) enum PersistImpl {
    /// The input holds partial values in its last field.
    CombinePartials(Arc<dyn CombinerAggregator>),
    /// The input is raw tuples, reduced onto the stored value.
    Reduce(Arc<dyn ReducerAggregator>),
}

#[derive(Clone)]
pub(crate) enum NodeKind {
    Spout(SpoutDef),
    /// Passes tuples on (a repartitioning, a merge, a stage entry).
    Identity,
    Each {
        input: Fields,
        func: Factory<dyn Function>,
    },
    Filter {
        input: Fields,
        filter: Factory<dyn Filter>,
    },
    Map {
        func: Factory<dyn MapFunction>,
    },
    FlatMap {
        func: Factory<dyn FlatMapFunction>,
    },
    Project,
    Peek {
        consumer: Factory<dyn Consumer>,
    },
    /// Emits per group at the end of the batch: the group fields, then the aggregate's.
    Aggregate {
        group: Fields,
        input: Fields,
        agg: AggImpl,
    },
    /// Updates state `state` at commit; keyed by `key`.
    Persist {
        key: Fields,
        input: Fields,
        update: PersistImpl,
        state: usize,
    },
    /// Reads state `state` for the batch's tuples at the end of the batch.
    Query {
        state: usize,
        input: Fields,
        query: Factory<dyn QueryFunction>,
    },
    /// Joins its parents' tuples on their key fields at the end of the batch.
    Join {
        keys: Vec<Fields>,
    },
    /// Answers the DRPC request of the batch: parent 0 gives the results, parent 1 the
    /// request.
    DrpcReturn,
}

/// Where a node runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Placement {
    /// In its (single) parent's stage.
    Chain,
    /// Starts a new stage; tuples from each parent arrive with these groupings.
    NewStage(Vec<Grouping>),
    /// In the stage of node `.0` (a state query next to its state).
    Colocate(NodeId, Vec<Grouping>),
}

#[derive(Clone)]
pub(crate) struct GNode {
    pub kind: NodeKind,
    pub parents: Vec<NodeId>,
    pub fields: Fields,
    pub placement: Placement,
    /// What the node is, for messages: `each(Split)`.
    pub op: String,
    /// The name given with `.name()`.
    pub name: Option<String>,
    pub parallelism: Option<u32>,
}

/// A state declared by `persistent_aggregate`.
#[derive(Clone)]
pub(crate) struct StateDecl {
    pub factory: Arc<dyn StateFactory>,
    pub name: String,
}

/// What a [`TridentTopology`](crate::TridentTopology) records.
#[derive(Default)]
pub(crate) struct Graph {
    pub nodes: Vec<GNode>,
    pub states: Vec<StateDecl>,
    pub errors: Vec<String>,
    pub stream_names: BTreeSet<String>,
    /// Spout node -> the stream name it was created with: the batch group's
    /// transactional state (`<root>/transactional/<name>/...`, as Storm's txId).
    pub spout_streams: BTreeMap<NodeId, String>,
}

impl Graph {
    pub fn add(&mut self, node: GNode) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }
}

/// One edge between stages: tuples of node `from` go to node `to` (its parent number
/// `to_parent`), on data stream `stream`; when the batch is done at a task of the
/// sending stage, it tells every task of the receiving stage on `coord_stream` how many
/// tuples it sent it.
#[derive(Clone, Debug)]
pub(crate) struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub to_parent: usize,
    pub grouping: Grouping,
    pub stream: String,
    pub coord_stream: String,
    pub from_stage: usize,
    /// This edge's position among the sending stage's out-edges.
    pub from_pos: usize,
    pub to_stage: usize,
    pub group: usize,
}

/// A compiled node.
pub(crate) struct PNode {
    pub g: GNode,
    pub group: usize,
    /// Nodes of the same stage that take this node's tuples.
    pub children: Vec<NodeId>,
    /// Edges that carry this node's tuples to other stages.
    pub out_edges: Vec<usize>,
    /// Where each output field lives in the node's segment stack.
    pub layout: Vec<Slot>,
    /// How many segments the node's tuples have.
    pub nsegs: usize,
    /// Where each input field lives in the *parent's* segment stack (ops with input
    /// fields), or in this node's (aggregations, persists, queries read their own
    /// entry tuple).
    pub input_slots: Vec<Slot>,
    pub input_fields: Fields,
    /// Group-by fields' slots (aggregations, persists: the key).
    pub key_slots: Vec<Slot>,
}

pub(crate) struct Stage {
    pub component: String,
    pub parallelism: u32,
    /// The stage's nodes in an order where parents come before children.
    pub nodes: Vec<NodeId>,
    pub spout: Option<NodeId>,
    pub in_edges: Vec<usize>,
    pub out_edges: Vec<usize>,
}

pub(crate) struct Group {
    pub coordinator: String,
    pub spout_stages: Vec<usize>,
    pub committer_stages: Vec<usize>,
    /// Names the group's transactional state (the first spout's stream name).
    pub txstate: String,
    /// The DRPC function, when the group is a DRPC stream.
    pub drpc: Option<(String, Option<squall_drpc::LocalDrpc>)>,
    /// Every stage that takes part in the group's batches.
    pub stages: Vec<usize>,
}

pub(crate) struct Plan {
    pub nodes: Vec<PNode>,
    pub stages: Vec<Stage>,
    pub edges: Vec<Edge>,
    pub groups: Vec<Group>,
    pub states: Vec<StateDecl>,
}

pub(crate) const BATCH_STREAM: &str = "$batch";
pub(crate) const COMMIT_STREAM: &str = "$commit";
pub(crate) const TXID: &str = "$txid";
pub(crate) const ATTEMPT: &str = "$attempt";

/// Compiles the graph. Errors name the operation.
pub(crate) fn compile(graph: &Graph) -> Result<Plan, String> {
    if let Some(e) = graph.errors.first() {
        return Err(e.clone());
    }
    let n = graph.nodes.len();
    if n == 0 {
        return Err("the topology has no streams: call new_stream first".into());
    }

    // Batch groups: connected components over parent links.
    let mut comp: Vec<usize> = (0..n).collect();
    fn find(c: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while c[r] != r {
            r = c[r];
        }
        let mut y = x;
        while c[y] != r {
            let next = c[y];
            c[y] = r;
            y = next;
        }
        r
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        for &p in &node.parents {
            let (a, b) = (find(&mut comp, i), find(&mut comp, p));
            comp[a] = b;
        }
    }
    let mut group_of_root = BTreeMap::new();
    let mut node_group = vec![0; n];
    for (i, g) in node_group.iter_mut().enumerate() {
        let root = find(&mut comp, i);
        let next = group_of_root.len();
        *g = *group_of_root.entry(root).or_insert(next);
    }

    // Stages, in node order (parents are always added before children).
    let mut node_stage = vec![usize::MAX; n];
    let mut stages: Vec<Stage> = Vec::new();
    let mut edges: Vec<Edge> = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let stage = match &node.placement {
            Placement::Chain => node_stage[node.parents[0]],
            Placement::NewStage(_) => {
                stages.push(Stage {
                    component: String::new(),
                    parallelism: 1,
                    nodes: Vec::new(),
                    spout: matches!(node.kind, NodeKind::Spout(_)).then_some(i),
                    in_edges: Vec::new(),
                    out_edges: Vec::new(),
                });
                stages.len() - 1
            }
            Placement::Colocate(with, _) => node_stage[*with],
        };
        node_stage[i] = stage;
        stages[stage].nodes.push(i);
        let groupings = match &node.placement {
            Placement::NewStage(g) | Placement::Colocate(_, g) => g.clone(),
            Placement::Chain => Vec::new(),
        };
        for (k, grouping) in groupings.into_iter().enumerate() {
            let from = node.parents[k];
            let e = edges.len();
            edges.push(Edge {
                from,
                to: i,
                to_parent: k,
                grouping,
                stream: format!("s{e}"),
                coord_stream: format!("s{e}-coord"),
                from_stage: node_stage[from],
                from_pos: 0,
                to_stage: stage,
                group: node_group[i],
            });
        }
    }
    for (e, edge) in edges.iter_mut().enumerate() {
        edge.from_pos = stages[edge.from_stage].out_edges.len();
        stages[edge.from_stage].out_edges.push(e);
        stages[edge.to_stage].in_edges.push(e);
    }

    // Stage names and parallelism: the last hint given to any of its nodes wins, as
    // Storm's parallelismHint applies to the whole bolt.
    let mut used = BTreeSet::new();
    for (s, stage) in stages.iter_mut().enumerate() {
        for &i in &stage.nodes {
            if let Some(p) = graph.nodes[i].parallelism {
                stage.parallelism = p.max(1);
            }
        }
        if stage
            .nodes
            .iter()
            .any(|&i| matches!(graph.nodes[i].kind, NodeKind::DrpcReturn))
        {
            stage.parallelism = 1;
        }
        let names: Vec<&str> = stage
            .nodes
            .iter()
            .filter_map(|&i| graph.nodes[i].name.as_deref())
            .collect();
        let mut component = match stage.spout {
            Some(i) => match &graph.nodes[i].kind {
                NodeKind::Spout(_) => graph.nodes[i].op.clone(),
                _ => unreachable!("spout stage starts with a spout"),
            },
            None if names.is_empty() => format!("b-{s}"),
            None => format!("b-{s}-{}", names.join("-")),
        };
        while !used.insert(component.clone()) {
            component.push('_');
        }
        stage.component = component;
    }

    // Groups.
    let ngroups = group_of_root.len();
    let mut groups: Vec<Group> = (0..ngroups)
        .map(|g| Group {
            coordinator: format!("$mastercoord-bg{g}"),
            spout_stages: Vec::new(),
            committer_stages: Vec::new(),
            txstate: String::new(),
            drpc: None,
            stages: Vec::new(),
        })
        .collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        let g = &mut groups[node_group[i]];
        let s = node_stage[i];
        if !g.stages.contains(&s) {
            g.stages.push(s);
        }
        match &node.kind {
            NodeKind::Spout(def) => {
                g.spout_stages.push(s);
                if g.txstate.is_empty() {
                    // The name given to `new_stream` (Storm's txId), not the
                    // component's `spout-<name>`.
                    g.txstate = graph
                        .spout_streams
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| graph.nodes[i].op.clone());
                }
                if let SpoutKind::Drpc { function, local } = &def.kind {
                    g.drpc = Some((function.clone(), local.clone()));
                }
            }
            NodeKind::Persist { .. } if !g.committer_stages.contains(&s) => {
                g.committer_stages.push(s)
            }
            _ => {}
        }
    }
    for g in &groups {
        if g.drpc.is_some() && g.spout_stages.len() > 1 {
            return Err(format!(
                "a DRPC stream cannot be merged or joined with another stream (batch group of '{}')",
                g.txstate
            ));
        }
    }

    // Children, layouts and slots.
    let mut nodes: Vec<PNode> = Vec::with_capacity(n);
    for (i, node) in graph.nodes.iter().enumerate() {
        let entry = !matches!(node.placement, Placement::Chain);
        let parent = node.parents.first().copied();
        let (layout, nsegs) = match (&node.kind, entry) {
            (NodeKind::Each { .. } | NodeKind::Query { .. }, _) => {
                let (mut layout, base) = if entry {
                    // A query's entry tuple is one segment (its parent's fields).
                    let pf = graph.nodes[parent.expect("query has a parent")]
                        .fields
                        .len();
                    ((0..pf).map(|o| (0u8, o as u16)).collect::<Vec<_>>(), 1)
                } else {
                    let p = &nodes[parent.expect("each has a parent")];
                    (p.layout.clone(), p.nsegs)
                };
                let added = node.fields.len() - layout.len();
                layout.extend((0..added).map(|o| (base as u8, o as u16)));
                (layout, base + 1)
            }
            (NodeKind::Filter { .. } | NodeKind::Peek { .. } | NodeKind::Identity, false) => {
                let p = &nodes[parent.expect("chained node has a parent")];
                (p.layout.clone(), p.nsegs)
            }
            _ => ((0..node.fields.len()).map(|o| (0u8, o as u16)).collect(), 1),
        };
        if nsegs > u8::MAX as usize {
            return Err(format!(
                "{}: too many chained operations in one bolt",
                node.op
            ));
        }
        // Input slots: where the op reads its input fields.
        let source_fields = |k: usize| graph.nodes[node.parents[k]].fields.clone();
        let resolve =
            |fields: &Fields, within: &Fields, layout: &[Slot]| -> Result<Vec<Slot>, String> {
                fields
                    .names()
                    .iter()
                    .map(|f| {
                        within.index_of(f).map(|i| layout[i]).ok_or_else(|| {
                            format!("{}: input field '{f}' is not one of {within}", node.op)
                        })
                    })
                    .collect()
            };
        let (input_fields, input_slots, key_slots) = match &node.kind {
            NodeKind::Each { input, .. } | NodeKind::Filter { input, .. } => {
                let pf = source_fields(0);
                let pl = if entry {
                    (0..pf.len()).map(|o| (0u8, o as u16)).collect()
                } else {
                    nodes[node.parents[0]].layout.clone()
                };
                (input.clone(), resolve(input, &pf, &pl)?, Vec::new())
            }
            NodeKind::Map { .. }
            | NodeKind::FlatMap { .. }
            | NodeKind::Peek { .. }
            | NodeKind::Project => {
                let pf = source_fields(0);
                let pl: Vec<Slot> = if entry {
                    (0..pf.len()).map(|o| (0u8, o as u16)).collect()
                } else {
                    nodes[node.parents[0]].layout.clone()
                };
                let input = if matches!(node.kind, NodeKind::Project) {
                    node.fields.clone()
                } else {
                    pf.clone()
                };
                (input.clone(), resolve(&input, &pf, &pl)?, Vec::new())
            }
            NodeKind::Aggregate { group, input, .. }
            | NodeKind::Persist {
                key: group, input, ..
            } => {
                let pf = source_fields(0);
                let pl: Vec<Slot> = if entry {
                    (0..pf.len()).map(|o| (0u8, o as u16)).collect()
                } else {
                    nodes[node.parents[0]].layout.clone()
                };
                (
                    input.clone(),
                    resolve(input, &pf, &pl)?,
                    resolve(group, &pf, &pl)?,
                )
            }
            NodeKind::Query { input, .. } => {
                let pf = source_fields(0);
                let pl: Vec<Slot> = (0..pf.len()).map(|o| (0u8, o as u16)).collect();
                (input.clone(), resolve(input, &pf, &pl)?, Vec::new())
            }
            NodeKind::Join { keys } => {
                // Key slots of each side, one after the other (side k's keys at
                // k * keys[0].len()).
                let mut slots = Vec::new();
                for (k, key) in keys.iter().enumerate() {
                    let pf = source_fields(k);
                    let pl: Vec<Slot> = (0..pf.len()).map(|o| (0u8, o as u16)).collect();
                    slots.extend(resolve(key, &pf, &pl)?);
                }
                (Fields::default(), Vec::new(), slots)
            }
            _ => (Fields::default(), Vec::new(), Vec::new()),
        };
        nodes.push(PNode {
            g: node.clone(),
            group: node_group[i],
            children: Vec::new(),
            out_edges: Vec::new(),
            layout,
            nsegs,
            input_slots,
            input_fields,
            key_slots,
        });
        if !entry {
            let p = node.parents[0];
            nodes[p].children.push(i);
        }
    }
    for (e, edge) in edges.iter().enumerate() {
        nodes[edge.from].out_edges.push(e);
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.children.is_empty()
            && node.out_edges.is_empty()
            && !matches!(
                node.g.kind,
                NodeKind::Persist { .. } | NodeKind::DrpcReturn | NodeKind::Peek { .. }
            )
            && groups[node.group].drpc.is_none()
        {
            // A dangling stream is allowed (Storm allows it), but it is work for
            // nothing: say so in the log once the topology starts.
            tracing::debug!(
                "Trident: the output of {} (node {i}) is not used",
                node.g.op
            );
        }
    }

    Ok(Plan {
        nodes,
        stages,
        edges,
        groups,
        states: graph.states.clone(),
    })
}
