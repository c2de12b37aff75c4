//! [`TridentTopology`]: the builder, and its streams.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use squall_api::{Fields, Grouping, Topology, TopologyBuilder};
use squall_drpc::LocalDrpc;

use crate::operation::{
    AggKind, Aggregation, Consumer, Filter, FlatMapFunction, Function, MapFunction, QueryFunction,
};
use crate::plan::{
    factory, AggImpl, GNode, Graph, NodeId, NodeKind, PersistImpl, Placement, StateDecl,
};
use crate::spout::{SpoutDef, SpoutKind, TridentSpout};
use crate::state::StateFactory;

/// The hidden field of a DRPC stream's spout tuples that says where the answer goes.
pub(crate) const DRPC_RETURN: &str = "$return";

/// Why a Trident topology could not be built: names the stream operation at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Trident topology: {0}")]
pub struct TridentError(pub String);

/// Builds a Trident topology (Storm's `TridentTopology`): streams of batches, processed
/// by operations, aggregated into state that DRPC streams query.
///
/// ```
/// use squall_api::values;
/// use squall_trident::{Count, FixedBatchSpout, MemoryMapState, TridentTopology};
///
/// let mut topology = TridentTopology::new();
/// let spout = FixedBatchSpout::new(["sentence"], 3, vec![
///     values!["the cow jumped over the moon"],
///     values!["the man went to the store"],
/// ]);
/// let counts = topology
///     .new_stream("sentences", spout)
///     .flat_map(
///         |t: &squall_trident::TridentTuple<'_>| {
///             Ok(t.get_string(0)?.split(' ').map(|w| values![w]).collect())
///         },
///         ["word"],
///     )
///     .group_by(["word"])
///     .persistent_aggregate(MemoryMapState::transactional(), Count, ["count"]);
/// # let _ = counts;
/// let built = topology.build().unwrap();
/// # let _ = built;
/// ```
#[derive(Default)]
pub struct TridentTopology {
    graph: Rc<RefCell<Graph>>,
}

/// A stream of batches (Storm's `Stream`). Operations return a new stream; a stream can
/// be used more than once (it branches).
#[derive(Clone)]
pub struct Stream {
    graph: Rc<RefCell<Graph>>,
    node: NodeId,
}

/// A stream grouped by fields (Storm's `GroupedStream`): aggregations run per group.
#[derive(Clone)]
pub struct GroupedStream {
    stream: Stream,
    fields: Fields,
}

/// A state made by `persistent_aggregate` (Storm's `TridentState`), for `state_query`.
#[derive(Clone)]
pub struct TridentState {
    graph: Rc<RefCell<Graph>>,
    node: NodeId,
    state: usize,
}

fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    let name = base.rsplit("::").next().unwrap_or(base);
    if name.starts_with('{') || full.contains("{{closure}}") {
        "closure".to_owned()
    } else {
        name.to_owned()
    }
}

impl TridentTopology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream from `spout`. `name` names the spout's bolt and its transactional state
    /// (the coordinator's txids and the batch metadata, kept in ZooKeeper on a cluster):
    /// keep it when you redeploy a topology onto the same state, as a transactional
    /// state remembers the txids it applied.
    pub fn new_stream(&mut self, name: &str, spout: impl TridentSpout) -> Stream {
        let def: SpoutDef = spout.into_def();
        self.add_spout(name, def, format!("spout-{name}"))
    }

    fn add_spout(&mut self, name: &str, def: SpoutDef, component: String) -> Stream {
        let mut g = self.graph.borrow_mut();
        if name.is_empty() || name.starts_with("__") || name.contains('/') {
            g.errors.push(format!(
                "stream name '{name}' must be non-empty, not start with '__' and contain no '/'"
            ));
        }
        if !g.stream_names.insert(name.to_owned()) {
            g.errors.push(format!(
                "two streams are named '{name}': stream names must be unique"
            ));
        }
        let fields = def.fields.clone();
        let node = g.add(GNode {
            kind: NodeKind::Spout(def),
            parents: Vec::new(),
            fields,
            placement: Placement::NewStage(Vec::new()),
            op: component,
            name: None,
            parallelism: None,
        });
        g.spout_streams.insert(node, name.to_owned());
        drop(g);
        Stream {
            graph: self.graph.clone(),
            node,
        }
    }

    /// A stream of the requests to DRPC function `function` (Storm's `newDRPCStream`),
    /// served by the DRPC servers of `drpc.servers`: one field, `args`. Whatever the
    /// stream ends with is the answer: its tuples, as a JSON list of lists.
    pub fn new_drpc_stream(&mut self, function: &str) -> Stream {
        self.drpc_stream(function, None)
    }

    /// Like [`new_drpc_stream`](Self::new_drpc_stream), served by `drpc` in local mode
    /// (Storm's `newDRPCStream(function, localDRPC)`).
    pub fn new_local_drpc_stream(&mut self, function: &str, drpc: &LocalDrpc) -> Stream {
        self.drpc_stream(function, Some(drpc.clone()))
    }

    fn drpc_stream(&mut self, function: &str, local: Option<LocalDrpc>) -> Stream {
        let def = SpoutDef {
            fields: Fields::new(["args", DRPC_RETURN]),
            kind: SpoutKind::Drpc {
                function: function.to_owned(),
                local,
            },
        };
        let spout = self.add_spout(&format!("drpc-{function}"), def, format!("drpc-{function}"));
        spout.chain(
            NodeKind::Project,
            Fields::new(["args"]),
            "project".to_owned(),
        )
    }

    /// One stream of the tuples of `streams` (Storm's `merge`); they must have as many
    /// fields; the first stream's field names are kept.
    pub fn merge(&mut self, streams: &[Stream]) -> Stream {
        let mut g = self.graph.borrow_mut();
        let first = streams.first().map(|s| s.node);
        let fields = first.map(|n| g.nodes[n].fields.clone()).unwrap_or_default();
        if streams.len() < 2 {
            g.errors.push("merge needs at least two streams".into());
        }
        for s in streams {
            if g.nodes[s.node].fields.len() != fields.len() {
                let e = format!(
                    "merge: stream with fields {} cannot merge with one with fields {fields}",
                    g.nodes[s.node].fields
                );
                g.errors.push(e);
            }
        }
        let node = g.add(GNode {
            kind: NodeKind::Identity,
            parents: streams.iter().map(|s| s.node).collect(),
            fields,
            placement: Placement::NewStage(
                streams.iter().map(|_| Grouping::LocalOrShuffle).collect(),
            ),
            op: "merge".into(),
            name: None,
            parallelism: None,
        });
        drop(g);
        Stream {
            graph: self.graph.clone(),
            node,
        }
    }

    /// Joins two streams on key fields, batch by batch (Storm's `join`, an inner join):
    /// the output has `out` fields: the keys, then `left`'s other fields, then
    /// `right`'s.
    pub fn join(
        &mut self,
        left: &Stream,
        left_keys: impl Into<Fields>,
        right: &Stream,
        right_keys: impl Into<Fields>,
        out: impl Into<Fields>,
    ) -> Stream {
        let (lk, rk, out) = (left_keys.into(), right_keys.into(), out.into());
        let mut g = self.graph.borrow_mut();
        let (lf, rf) = (
            g.nodes[left.node].fields.clone(),
            g.nodes[right.node].fields.clone(),
        );
        let width = lf.len() + rf.len() - rk.len();
        if lk.len() != rk.len() || lk.is_empty() {
            g.errors.push(format!(
                "join: the key fields {lk} and {rk} must be as many, and at least one"
            ));
        } else if out.len() != width {
            g.errors.push(format!(
                "join: {out} names {} fields but the join has {width} (keys, then the left's other fields, then the right's)",
                out.len()
            ));
        }
        let node = g.add(GNode {
            kind: NodeKind::Join {
                keys: vec![lk.clone(), rk.clone()],
            },
            parents: vec![left.node, right.node],
            fields: out,
            placement: Placement::NewStage(vec![Grouping::Fields(lk), Grouping::Fields(rk)]),
            op: "join".into(),
            name: None,
            parallelism: None,
        });
        drop(g);
        Stream {
            graph: self.graph.clone(),
            node,
        }
    }

    /// Compiles the streams into spouts and bolts (one master coordinator per batch
    /// group, one bolt per stretch between repartitionings), ready for
    /// `LocalCluster::submit_topology` or `StormSubmitter::submit_topology`.
    pub fn build(self) -> Result<Topology, TridentError> {
        let mut graph = std::mem::take(&mut *self.graph.borrow_mut());
        add_drpc_returns(&mut graph);
        let plan = Arc::new(crate::plan::compile(&graph).map_err(TridentError)?);
        let mut builder = TopologyBuilder::new();
        for (gi, group) in plan.groups.iter().enumerate() {
            let p = plan.clone();
            builder.set_spout_with(
                &group.coordinator,
                move || crate::coordinator::Coordinator::new(p.clone(), gi),
                1,
            );
        }
        for (si, stage) in plan.stages.iter().enumerate() {
            let p = plan.clone();
            let mut d = builder.set_bolt_with(
                &stage.component,
                move || crate::stage::StageBolt::new(p.clone(), si),
                stage.parallelism,
            );
            for (gi, group) in plan.groups.iter().enumerate() {
                let _ = gi;
                if group.spout_stages.contains(&si) {
                    d.all_grouping((group.coordinator.as_str(), crate::plan::BATCH_STREAM));
                }
                if group.committer_stages.contains(&si) {
                    d.all_grouping((group.coordinator.as_str(), crate::plan::COMMIT_STREAM));
                }
            }
            for &e in &stage.in_edges {
                let edge = &plan.edges[e];
                let from = plan.stages[edge.from_stage].component.as_str();
                d.grouping((from, edge.stream.as_str()), edge.grouping.clone());
                d.direct_grouping((from, edge.coord_stream.as_str()));
            }
        }
        builder
            .create_topology()
            .map_err(|e| TridentError(e.to_string()))
    }
}

/// Ends each DRPC stream with the bolt that answers the requests.
fn add_drpc_returns(g: &mut Graph) {
    let spouts: Vec<NodeId> = (0..g.nodes.len())
        .filter(|&i| {
            matches!(
                &g.nodes[i].kind,
                NodeKind::Spout(SpoutDef {
                    kind: SpoutKind::Drpc { .. },
                    ..
                })
            )
        })
        .collect();
    for spout in spouts {
        // The nodes downstream of the spout, and which of them end the stream.
        let mut reach = vec![false; g.nodes.len()];
        reach[spout] = true;
        for i in spout + 1..g.nodes.len() {
            if g.nodes[i].parents.iter().any(|&p| reach[p]) {
                reach[i] = true;
            }
        }
        let sinks: Vec<NodeId> = (0..g.nodes.len())
            .filter(|&i| reach[i] && !g.nodes.iter().any(|n| n.parents.contains(&i)))
            .collect();
        let op = g.nodes[spout].op.clone();
        match sinks.as_slice() {
            [sink] if !matches!(g.nodes[*sink].kind, NodeKind::Persist { .. }) => {
                g.add(GNode {
                    kind: NodeKind::DrpcReturn,
                    parents: vec![*sink, spout],
                    fields: Fields::default(),
                    placement: Placement::NewStage(vec![Grouping::Global, Grouping::Global]),
                    op: format!("{op}-return"),
                    name: None,
                    parallelism: Some(1),
                });
            }
            [_] => g
                .errors
                .push(format!("DRPC stream {op} ends in a persistent_aggregate: it must end in a stream whose tuples are the answer")),
            _ => g.errors.push(format!(
                "DRPC stream {op} ends in {} places: it must end in exactly one stream, whose tuples are the answer",
                sinks.len()
            )),
        }
    }
}

impl Stream {
    fn with<T>(&self, f: impl FnOnce(&mut Graph) -> T) -> T {
        f(&mut self.graph.borrow_mut())
    }

    fn fields(&self) -> Fields {
        self.with(|g| g.nodes[self.node].fields.clone())
    }

    /// The stream's fields.
    pub fn output_fields(&self) -> Fields {
        self.fields()
    }

    fn add(&self, node: GNode) -> Stream {
        let id = self.with(|g| g.add(node));
        Stream {
            graph: self.graph.clone(),
            node: id,
        }
    }

    fn chain(&self, kind: NodeKind, fields: Fields, op: String) -> Stream {
        self.add(GNode {
            kind,
            parents: vec![self.node],
            fields,
            placement: Placement::Chain,
            op,
            name: None,
            parallelism: None,
        })
    }

    fn error(&self, e: String) {
        self.with(|g| g.errors.push(e));
    }

    fn check_input(&self, op: &str, input: &Fields) {
        let fields = self.fields();
        for f in input.names() {
            if !fields.contains(f) {
                self.error(format!("{op}: input field '{f}' is not one of {fields}"));
            }
        }
    }

    fn appended(&self, op: &str, out: &Fields) -> Fields {
        let fields = self.fields();
        let mut all = fields.names().to_vec();
        for f in out.names() {
            if fields.contains(f) {
                self.error(format!(
                    "{op}: output field '{f}' is already a field of the stream {fields}"
                ));
            }
            all.push(f.clone());
        }
        Fields::new(all)
    }

    /// Runs `function` on each tuple's `input` fields; each values it emits (the
    /// `output` fields) make a tuple of the input tuple plus them (Storm's `each`).
    pub fn each<F: Function + Clone>(
        &self,
        input: impl Into<Fields>,
        function: F,
        output: impl Into<Fields>,
    ) -> Stream {
        let (input, output) = (input.into(), output.into());
        let op = format!("each({})", short_type_name::<F>());
        self.check_input(&op, &input);
        let fields = self.appended(&op, &output);
        self.chain(
            NodeKind::Each {
                input,
                func: factory(function, |f| Box::new(f) as Box<dyn Function>),
            },
            fields,
            op,
        )
    }

    /// Keeps the tuples for which `filter` (seeing the `input` fields) says so.
    pub fn filter<F: Filter + Clone>(&self, input: impl Into<Fields>, filter: F) -> Stream {
        let input = input.into();
        let op = format!("filter({})", short_type_name::<F>());
        self.check_input(&op, &input);
        let fields = self.fields();
        self.chain(
            NodeKind::Filter {
                input,
                filter: factory(filter, |f| Box::new(f) as Box<dyn Filter>),
            },
            fields,
            op,
        )
    }

    /// Replaces each tuple by what `function` makes of it; the stream's fields become
    /// `output`.
    pub fn map<F: MapFunction + Clone>(&self, function: F, output: impl Into<Fields>) -> Stream {
        let op = format!("map({})", short_type_name::<F>());
        self.chain(
            NodeKind::Map {
                func: factory(function, |f| Box::new(f) as Box<dyn MapFunction>),
            },
            output.into(),
            op,
        )
    }

    /// Replaces each tuple by the tuples `function` makes of it; the stream's fields
    /// become `output`.
    pub fn flat_map<F: FlatMapFunction + Clone>(
        &self,
        function: F,
        output: impl Into<Fields>,
    ) -> Stream {
        let op = format!("flat_map({})", short_type_name::<F>());
        self.chain(
            NodeKind::FlatMap {
                func: factory(function, |f| Box::new(f) as Box<dyn FlatMapFunction>),
            },
            output.into(),
            op,
        )
    }

    /// Keeps only `fields`, in that order.
    pub fn project(&self, fields: impl Into<Fields>) -> Stream {
        let fields = fields.into();
        self.check_input("project", &fields);
        self.chain(NodeKind::Project, fields, "project".into())
    }

    /// Shows each tuple to `consumer` and passes it on unchanged.
    pub fn peek<C: Consumer + Clone>(&self, consumer: C) -> Stream {
        let op = format!("peek({})", short_type_name::<C>());
        let fields = self.fields();
        self.chain(
            NodeKind::Peek {
                consumer: factory(consumer, |c| Box::new(c) as Box<dyn Consumer>),
            },
            fields,
            op,
        )
    }

    fn repartition(&self, grouping: Grouping, op: &str) -> Stream {
        if let Some(f) = grouping.fields() {
            self.check_input(op, f);
        }
        let fields = self.fields();
        self.add(GNode {
            kind: NodeKind::Identity,
            parents: vec![self.node],
            fields,
            placement: Placement::NewStage(vec![grouping]),
            op: op.to_owned(),
            name: None,
            parallelism: None,
        })
    }

    /// Sends tuples with equal `fields` to the same task of a new bolt.
    pub fn partition_by(&self, fields: impl Into<Fields>) -> Stream {
        self.repartition(Grouping::Fields(fields.into()), "partition_by")
    }

    /// Spreads tuples evenly over the tasks of a new bolt.
    pub fn shuffle(&self) -> Stream {
        self.repartition(Grouping::Shuffle, "shuffle")
    }

    /// Sends every tuple to every task of a new bolt.
    pub fn broadcast(&self) -> Stream {
        self.repartition(Grouping::All, "broadcast")
    }

    /// Sends every tuple to one task of a new bolt.
    pub fn global(&self) -> Stream {
        self.repartition(Grouping::Global, "global")
    }

    /// How many tasks run the bolt this stream is computed in (Storm's
    /// `parallelismHint`: it applies to every operation since the last repartitioning).
    pub fn parallelism_hint(&self, n: u32) -> Stream {
        if n == 0 {
            self.error("parallelism_hint must be at least 1".into());
        }
        self.with(|g| g.nodes[self.node].parallelism = Some(n.max(1)));
        self.clone()
    }

    /// Names the operation: the bolt it runs in is called `b-N-<name>` in the UI.
    pub fn name(&self, name: &str) -> Stream {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            self.error(format!(
                "name '{name}': use letters, digits, '-' and '_' (it becomes part of a bolt's id)"
            ));
        }
        self.with(|g| g.nodes[self.node].name = Some(name.to_owned()));
        self.clone()
    }

    /// Groups the stream by `fields` for the aggregations that follow.
    pub fn group_by(&self, fields: impl Into<Fields>) -> GroupedStream {
        let fields = fields.into();
        self.check_input("group_by", &fields);
        if fields.is_empty() {
            self.error("group_by needs at least one field".into());
        }
        GroupedStream {
            stream: self.clone(),
            fields,
        }
    }

    /// Aggregates each batch into one tuple per batch (per group when grouped), over
    /// the whole stream: `output` is the aggregate's fields.
    pub fn aggregate(
        &self,
        input: impl Into<Fields>,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> Stream {
        self.aggregate_grouped(Fields::default(), input.into(), agg.kind().0, output.into())
    }

    fn aggregate_grouped(
        &self,
        group: Fields,
        input: Fields,
        kind: AggKind,
        output: Fields,
    ) -> Stream {
        let op = format!("aggregate{}", agg_name(&kind));
        self.check_input(&op, &input);
        let mut out_fields = group.names().to_vec();
        out_fields.extend(output.names().iter().cloned());
        let out_fields = Fields::new(out_fields);
        let grouping = if group.is_empty() {
            Grouping::Global
        } else {
            Grouping::Fields(group.clone())
        };
        match kind {
            AggKind::Combiner(agg) => {
                if output.len() != 1 {
                    self.error(format!(
                        "{op}: a combiner aggregator has one output field, not {output}"
                    ));
                }
                let partial = self.chain(
                    NodeKind::Aggregate {
                        group: group.clone(),
                        input,
                        agg: AggImpl::Combine {
                            agg: agg.clone(),
                            partials: false,
                        },
                    },
                    out_fields.clone(),
                    format!("{op}-partial"),
                );
                let moved = partial.repartition(grouping, "partition");
                moved.chain(
                    NodeKind::Aggregate {
                        group,
                        input: output,
                        agg: AggImpl::Combine {
                            agg,
                            partials: true,
                        },
                    },
                    out_fields,
                    op,
                )
            }
            AggKind::Reducer(agg) => {
                if output.len() != 1 {
                    self.error(format!(
                        "{op}: a reducer aggregator has one output field, not {output}"
                    ));
                }
                self.repartition(grouping, "partition").chain(
                    NodeKind::Aggregate {
                        group,
                        input,
                        agg: AggImpl::Reduce(agg),
                    },
                    out_fields,
                    op,
                )
            }
            AggKind::General(f) => self.repartition(grouping, "partition").chain(
                NodeKind::Aggregate {
                    group,
                    input,
                    agg: AggImpl::General(f),
                },
                out_fields,
                op,
            ),
        }
    }

    /// Aggregates each batch within each task, with no repartitioning (Storm's
    /// `partitionAggregate`).
    pub fn partition_aggregate(
        &self,
        input: impl Into<Fields>,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> Stream {
        self.partition_aggregate_grouped(
            Fields::default(),
            input.into(),
            agg.kind().0,
            output.into(),
        )
    }

    fn partition_aggregate_grouped(
        &self,
        group: Fields,
        input: Fields,
        kind: AggKind,
        output: Fields,
    ) -> Stream {
        let op = format!("partition_aggregate{}", agg_name(&kind));
        self.check_input(&op, &input);
        let mut out_fields = group.names().to_vec();
        out_fields.extend(output.names().iter().cloned());
        let agg = match kind {
            AggKind::Combiner(agg) => AggImpl::Combine {
                agg,
                partials: false,
            },
            AggKind::Reducer(agg) => AggImpl::Reduce(agg),
            AggKind::General(f) => AggImpl::General(f),
        };
        self.chain(
            NodeKind::Aggregate { group, input, agg },
            Fields::new(out_fields),
            op,
        )
    }

    /// Aggregates the whole stream into one value kept in `state` (Storm's
    /// `persistentAggregate` on an ungrouped stream).
    pub fn persistent_aggregate(
        &self,
        state: impl StateFactory,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> TridentState {
        let input = self.fields();
        self.persist(
            Fields::default(),
            input,
            Arc::new(state),
            agg.kind().0,
            output.into(),
        )
    }

    fn persist(
        &self,
        key: Fields,
        input: Fields,
        state: Arc<dyn StateFactory>,
        kind: AggKind,
        output: Fields,
    ) -> TridentState {
        let op = format!("persistent_aggregate{}", agg_name(&kind));
        self.check_input(&op, &input);
        if output.len() != 1 {
            self.error(format!(
                "{op}: the stored value has one field, not {output}"
            ));
        }
        let drpc = self.with(|g| {
            // A DRPC stream's batches are requests: nothing to persist.
            let mut n = self.node;
            loop {
                let node = &g.nodes[n];
                match node.parents.first() {
                    Some(&p) => n = p,
                    None => {
                        break matches!(
                            &node.kind,
                            NodeKind::Spout(SpoutDef {
                                kind: SpoutKind::Drpc { .. },
                                ..
                            })
                        )
                    }
                }
            }
        });
        if drpc {
            self.error(format!("{op}: a DRPC stream cannot persist state"));
        }
        let grouping = if key.is_empty() {
            Grouping::Global
        } else {
            Grouping::Fields(key.clone())
        };
        let state_id = self.with(|g| g.states.len());
        let name = format!("state{state_id}");
        let (upstream, persist_input, update) = match kind {
            AggKind::Combiner(agg) => {
                let mut f = key.names().to_vec();
                f.push("$partial".to_owned());
                let partial = self.chain(
                    NodeKind::Aggregate {
                        group: key.clone(),
                        input,
                        agg: AggImpl::Combine {
                            agg: agg.clone(),
                            partials: false,
                        },
                    },
                    Fields::new(f.clone()),
                    format!("{op}-partial"),
                );
                (partial, Fields::new(f), PersistImpl::CombinePartials(agg))
            }
            AggKind::Reducer(agg) => (self.clone(), input, PersistImpl::Reduce(agg)),
            AggKind::General(_) => {
                self.error(format!(
                    "{op}: persistent_aggregate takes a combiner or a reducer aggregator, not a general one"
                ));
                (self.clone(), input, PersistImpl::Reduce(Arc::new(Unused)))
            }
        };
        let moved = upstream.repartition(grouping, "partition");
        let persisted = moved.chain(
            NodeKind::Persist {
                key,
                input: persist_input,
                update,
                state: state_id,
            },
            output,
            op,
        );
        self.with(|g| {
            g.states.push(StateDecl {
                factory: state,
                name,
            })
        });
        TridentState {
            graph: self.graph.clone(),
            node: persisted.node,
            state: state_id,
        }
    }

    /// Queries `state` for each tuple with `query`, which sees the `input` fields (for
    /// [`MapGet`](crate::MapGet): the key); what it emits (`output`) is appended (Storm's
    /// `stateQuery`). The tuples go to the task holding their key's part of the state.
    pub fn state_query<Q: QueryFunction + Clone>(
        &self,
        state: &TridentState,
        input: impl Into<Fields>,
        query: Q,
        output: impl Into<Fields>,
    ) -> Stream {
        let (input, output) = (input.into(), output.into());
        let op = format!("state_query({})", short_type_name::<Q>());
        self.check_input(&op, &input);
        let fields = self.appended(&op, &output);
        let key_len = self.with(|g| match &g.nodes[state.node].kind {
            NodeKind::Persist { key, .. } => key.len(),
            _ => 0,
        });
        let grouping = if key_len == 0 {
            Grouping::Global
        } else {
            if input.len() != key_len {
                self.error(format!(
                    "{op}: the state is keyed by {key_len} fields but the query's input has {}",
                    input.len()
                ));
            }
            Grouping::Fields(input.clone())
        };
        self.add(GNode {
            kind: NodeKind::Query {
                state: state.state,
                input,
                query: factory(query, |q| Box::new(q) as Box<dyn QueryFunction>),
            },
            parents: vec![self.node],
            fields,
            placement: Placement::Colocate(state.node, vec![grouping]),
            op,
            name: None,
            parallelism: None,
        })
    }
}

fn agg_name(kind: &AggKind) -> &'static str {
    match kind {
        AggKind::Combiner(_) => "(combiner)",
        AggKind::Reducer(_) => "(reducer)",
        AggKind::General(_) => "(aggregator)",
    }
}

impl GroupedStream {
    /// Aggregates each batch per group: the output is the group fields, then the
    /// aggregate's.
    pub fn aggregate(
        &self,
        input: impl Into<Fields>,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> Stream {
        self.stream.aggregate_grouped(
            self.fields.clone(),
            input.into(),
            agg.kind().0,
            output.into(),
        )
    }

    /// Aggregates per group within each task, with no repartitioning.
    pub fn partition_aggregate(
        &self,
        input: impl Into<Fields>,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> Stream {
        self.stream.partition_aggregate_grouped(
            self.fields.clone(),
            input.into(),
            agg.kind().0,
            output.into(),
        )
    }

    /// Aggregates every batch into `state`, one value per group (Storm's
    /// `persistentAggregate`): the aggregate sees all fields of the stream.
    pub fn persistent_aggregate(
        &self,
        state: impl StateFactory,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> TridentState {
        let input = self.stream.fields();
        self.persistent_aggregate_on(state, input, agg, output)
    }

    /// [`persistent_aggregate`](Self::persistent_aggregate) with the aggregate seeing
    /// only `input` (e.g. the field to `Sum`).
    pub fn persistent_aggregate_on(
        &self,
        state: impl StateFactory,
        input: impl Into<Fields>,
        agg: impl Aggregation,
        output: impl Into<Fields>,
    ) -> TridentState {
        self.stream.persist(
            self.fields.clone(),
            input.into(),
            Arc::new(state),
            agg.kind().0,
            output.into(),
        )
    }

    /// Queries `state` per tuple; see [`Stream::state_query`].
    pub fn state_query<Q: QueryFunction + Clone>(
        &self,
        state: &TridentState,
        input: impl Into<Fields>,
        query: Q,
        output: impl Into<Fields>,
    ) -> Stream {
        self.stream.state_query(state, input, query, output)
    }

    /// The stream, partitioned by the group fields.
    pub fn to_stream(&self) -> Stream {
        self.stream.partition_by(self.fields.clone())
    }
}

impl TridentState {
    /// How many tasks hold the state (partitions).
    pub fn parallelism_hint(&self, n: u32) -> TridentState {
        {
            let mut g = self.graph.borrow_mut();
            if n == 0 {
                g.errors.push("parallelism_hint must be at least 1".into());
            }
            g.nodes[self.node].parallelism = Some(n.max(1));
        }
        self.clone()
    }
}

/// Stands in for an aggregator that was refused (the build reports the error).
struct Unused;

impl crate::operation::ReducerAggregator for Unused {
    fn init(&self) -> squall_api::Value {
        squall_api::Value::Null
    }
    fn reduce(
        &self,
        acc: squall_api::Value,
        _input: &crate::TridentTuple<'_>,
    ) -> Result<squall_api::Value, squall_api::BoxError> {
        Ok(acc)
    }
}
