//! The bolt that runs one stage of a Trident topology, batch by batch.
//!
//! ## How a task knows a batch is done
//! Data tuples travel unanchored, prefixed with the batch's txid and attempt. When a
//! task has finished a batch, it sends every task of each downstream stage a
//! *coordination* tuple on the edge's direct coord stream: how many tuples it sent that
//! task for the batch. A task has all of a batch once it holds a coordination tuple
//! from every upstream task and has received as many tuples as they announced. Then it
//! runs the batch-end operations (aggregations, state queries, joins), sends its own
//! coordination tuples anchored to the ones it received and acks those. Spout stages
//! start from the coordinator's `$batch` tuple. So the acker sees only coordination
//! tuples: the `$batch` tuple's tree completes when every task has finished the batch,
//! and the coordinator learns it through `ack` (or `fail` when any task failed it or the
//! message timeout passed).
//!
//! ## Commit
//! Stages holding a `persistent_aggregate` keep the batch's partial aggregates until
//! the coordinator's `$commit` for that txid, which comes strictly in txid order; they
//! update the state then, and ack or fail the `$commit` tuple.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use squall_api::{
    values, Bolt, BoxError, Config, OutputCollector, OutputFieldsDeclarer, TaskId, TopologyContext,
    Tuple, Value, Values,
};
use squall_drpc::DrpcInvocations;

use crate::operation::{Consumer, Filter, FlatMapFunction, Function, MapFunction, QueryFunction};
use crate::plan::{
    AggImpl, ErasedAggregator, NodeId, NodeKind, PersistImpl, Plan, ATTEMPT, BATCH_STREAM,
    COMMIT_STREAM, TXID,
};
use crate::spout::{BatchSpout, PartitionedEmitter, SpoutKind, TransactionAttempt};
use crate::state::{Key, MapState, StateContext};
use crate::store::{CoordinatorStore, StoreError};
use crate::tuple::{Slot, TridentCollector, TridentTuple};

type FoldHashMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A group key: the values of the group-by fields, hashed with [`Value::stable_hash`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HKey(pub Key);

impl Eq for HKey {}

impl Hash for HKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for v in &self.0 {
            v.stable_hash(h);
        }
    }
}

/// A batch of a group, as this task sees it.
type BatchKey = (usize, u64);

/// Why a batch failed at this task: the operation and what went wrong.
struct OpError {
    op: String,
    msg: String,
}

impl OpError {
    fn new(op: &str, msg: impl std::fmt::Display) -> Self {
        OpError {
            op: op.to_owned(),
            msg: msg.to_string(),
        }
    }
}

/// Per-task instance of a node's operation.
enum Proc {
    None,
    Each(Box<dyn Function>),
    Filter(Box<dyn Filter>),
    Map(Box<dyn MapFunction>),
    FlatMap(Box<dyn FlatMapFunction>),
    Peek(Box<dyn Consumer>),
    Agg(Option<Box<dyn ErasedAggregator>>),
    Query(Box<dyn QueryFunction>),
}

/// A node's per-batch state.
enum NodeBatch {
    /// Combiner or reducer values per group (also a persist's combiner partials).
    Values(FoldHashMap<HKey, Value>),
    /// General aggregator states per group, in first-seen order.
    General(
        FoldHashMap<HKey, usize>,
        Vec<(HKey, Box<dyn std::any::Any + Send>)>,
    ),
    /// Persist inputs per key: the raw input tuples of a reducer (combiner partials
    /// are `Values`).
    Tuples(FoldHashMap<HKey, Vec<Values>>),
    /// Buffered tuples (state queries), per side (joins), or results and the request
    /// (DRPC return).
    Buffered(Vec<Vec<Values>>),
}

struct Batch {
    attempt: u64,
    started: Instant,
    failed: bool,
    /// Coordination tuples (or the `$batch` tuple) held until the batch is done here.
    anchors: Vec<Tuple>,
    /// `(in-edge position, source task)` pairs whose coordination tuple is still due.
    awaiting: Vec<(usize, TaskId)>,
    announced: u64,
    received: u64,
    /// Per out-edge position: tuples sent to each task.
    sent: Vec<FoldHashMap<TaskId, u64>>,
    nodes: FoldHashMap<NodeId, NodeBatch>,
    /// The batch-end work is done; a committer waits for `$commit`.
    processed: bool,
    reported_stuck: bool,
}

/// Partition metadata a spout task keeps (and stores) per txid.
struct MetaLog {
    /// txid -> metadata, for txids from the last committed one up.
    metas: std::collections::BTreeMap<u64, Value>,
}

enum SpoutRunner {
    Partitioned {
        emitter: Box<dyn PartitionedEmitter>,
        transactional: bool,
        logs: HashMap<String, MetaLog>,
    },
    Batch(Box<dyn BatchSpout>),
    Drpc,
}

pub(crate) struct StageBolt {
    plan: Arc<Plan>,
    stage: usize,
    procs: Vec<Proc>,
    scratch: Vec<Vec<Values>>,
    batches: FoldHashMap<BatchKey, Batch>,
    /// Stream id -> (in-edge position, is coordination).
    streams: HashMap<String, (usize, bool)>,
    /// Per in-edge position: the upstream tasks.
    upstream: Vec<Vec<TaskId>>,
    /// Per out-edge position: the downstream tasks.
    downstream: Vec<Vec<TaskId>>,
    states: HashMap<usize, Box<dyn MapState>>,
    task_buf: Vec<TaskId>,
    spout: Option<SpoutRunner>,
    store: Option<Arc<dyn CoordinatorStore>>,
    drpc: Option<Arc<dyn DrpcInvocations>>,
    task_index: usize,
    num_tasks: usize,
    message_timeout: Duration,
    /// Per group: the last committed txid this task heard of.
    committed: HashMap<usize, u64>,
    component: String,
    task: TaskId,
}

impl StageBolt {
    pub(crate) fn new(plan: Arc<Plan>, stage: usize) -> Self {
        let n = plan.nodes.len();
        let component = plan.stages[stage].component.clone();
        let mut streams = HashMap::new();
        for (pos, &e) in plan.stages[stage].in_edges.iter().enumerate() {
            let edge = &plan.edges[e];
            streams.insert(edge.stream.clone(), (pos, false));
            streams.insert(edge.coord_stream.clone(), (pos, true));
        }
        StageBolt {
            procs: (0..n).map(|_| Proc::None).collect(),
            scratch: vec![Vec::new(); n],
            batches: FoldHashMap::default(),
            streams,
            upstream: Vec::new(),
            downstream: Vec::new(),
            states: HashMap::new(),
            task_buf: Vec::new(),
            spout: None,
            store: None,
            drpc: None,
            task_index: 0,
            num_tasks: 1,
            message_timeout: Duration::from_secs(30),
            committed: HashMap::new(),
            component,
            task: TaskId(0),
            plan,
            stage,
        }
    }

    fn make_procs(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let plan = self.plan.clone();
        for &i in &plan.stages[self.stage].nodes {
            let node = &plan.nodes[i];
            let op = &node.g.op;
            let named = |e: BoxError| -> BoxError { format!("{op}: {e}").into() };
            self.procs[i] = match &node.g.kind {
                NodeKind::Each { func, .. } => {
                    let mut f = func();
                    f.prepare(conf, ctx).map_err(named)?;
                    Proc::Each(f)
                }
                NodeKind::Filter { filter, .. } => {
                    let mut f = filter();
                    f.prepare(conf, ctx).map_err(named)?;
                    Proc::Filter(f)
                }
                NodeKind::Map { func } => Proc::Map(func()),
                NodeKind::FlatMap { func } => Proc::FlatMap(func()),
                NodeKind::Peek { consumer } => Proc::Peek(consumer()),
                NodeKind::Aggregate { agg, .. } => match agg {
                    AggImpl::General(f) => Proc::Agg(Some(f())),
                    _ => Proc::Agg(None),
                },
                NodeKind::Query { query, .. } => Proc::Query(query()),
                NodeKind::Persist { state, .. } => {
                    let decl = &plan.states[*state];
                    let sctx = StateContext {
                        name: decl.name.clone(),
                        topology: conf
                            .get_str(squall_api::config::keys::TOPOLOGY_NAME)
                            .ok()
                            .flatten()
                            .unwrap_or("topology")
                            .to_owned(),
                        partition: self.task_index,
                        num_partitions: self.num_tasks,
                    };
                    let st = decl
                        .factory
                        .make_state(conf, &sctx)
                        .map_err(|e| format!("{op}: cannot open state '{}': {e}", decl.name))?;
                    self.states.insert(*state, st);
                    Proc::None
                }
                NodeKind::Spout(def) => {
                    self.spout = Some(match &def.kind {
                        SpoutKind::Partitioned {
                            spout,
                            transactional,
                        } => SpoutRunner::Partitioned {
                            emitter: spout.emitter(conf, ctx).map_err(named)?,
                            transactional: *transactional,
                            logs: HashMap::new(),
                        },
                        SpoutKind::Batch(make) => {
                            let mut s = make();
                            s.open(conf, ctx).map_err(named)?;
                            SpoutRunner::Batch(s)
                        }
                        SpoutKind::Drpc { .. } => SpoutRunner::Drpc,
                    });
                    if matches!(def.kind, SpoutKind::Partitioned { .. }) {
                        self.store =
                            Some(crate::store::open_store(conf).map_err(|e| named(e.into()))?);
                    }
                    Proc::None
                }
                NodeKind::DrpcReturn => {
                    let group = &plan.groups[node.group];
                    let (function, local) = group.drpc.clone().expect("a DRPC group");
                    self.drpc = Some(
                        crate::coordinator::invocations(conf, local)
                            .map_err(|e| format!("DRPC function '{function}': {e}"))?,
                    );
                    Proc::None
                }
                NodeKind::Identity | NodeKind::Project | NodeKind::Join { .. } => Proc::None,
            };
        }
        Ok(())
    }

    // ---- per tuple -------------------------------------------------------------------

    /// Node `node` produced a tuple (`segs`): hand it to its children and out-edges.
    fn push(
        &mut self,
        out: &mut OutputCollector<'_>,
        bk: BatchKey,
        attempt: u64,
        node: NodeId,
        segs: &[&[Value]],
    ) -> Result<(), OpError> {
        let plan = self.plan.clone();
        let pnode = &plan.nodes[node];
        for &e in &pnode.out_edges {
            let edge = &plan.edges[e];
            let mut values: Values = SmallVec::with_capacity(2 + pnode.layout.len());
            values.push(Value::Int(bk.1 as i64));
            values.push(Value::Int(attempt as i64));
            for &(s, o) in &pnode.layout {
                values.push(segs[s as usize][o as usize].clone());
            }
            self.task_buf.clear();
            out.emit_with_task_ids_into(&edge.stream, &[], values, &mut self.task_buf);
            if let Some(batch) = self.batches.get_mut(&bk) {
                let sent = &mut batch.sent[edge.from_pos];
                for &t in &self.task_buf {
                    *sent.entry(t).or_insert(0) += 1;
                }
            }
        }
        for &c in &pnode.children {
            self.process(out, bk, attempt, c, segs)?;
        }
        Ok(())
    }

    /// Node `c` gets a tuple from its parent (`segs` in the parent's layout, or the
    /// entry tuple for a stage entry).
    fn process(
        &mut self,
        out: &mut OutputCollector<'_>,
        bk: BatchKey,
        attempt: u64,
        c: NodeId,
        segs: &[&[Value]],
    ) -> Result<(), OpError> {
        let plan = self.plan.clone();
        let node = &plan.nodes[c];
        let input = || TridentTuple::new(segs, &node.input_slots, &node.input_fields);
        match &node.g.kind {
            NodeKind::Identity => self.push(out, bk, attempt, c, segs),
            NodeKind::Each { .. } => {
                let mut buf = std::mem::take(&mut self.scratch[c]);
                let result = match &mut self.procs[c] {
                    Proc::Each(f) => {
                        let mut col = TridentCollector { out: buf };
                        let r = f.execute(&input(), &mut col);
                        buf = col.out;
                        r
                    }
                    _ => unreachable!("each has a function"),
                };
                let r = result
                    .map_err(|e| OpError::new(&node.g.op, e))
                    .and_then(|()| {
                        let added = node.g.fields.len() - input_len_before(node);
                        let mut next: SmallVec<[&[Value]; 8]> = segs.iter().copied().collect();
                        for v in &buf {
                            if v.len() != added {
                                return Err(OpError::new(
                                    &node.g.op,
                                    format!(
                                        "emitted {} values for its {} output fields",
                                        v.len(),
                                        added
                                    ),
                                ));
                            }
                            next.push(v);
                            self.push(out, bk, attempt, c, &next)?;
                            next.pop();
                        }
                        Ok(())
                    });
                buf.clear();
                self.scratch[c] = buf;
                r
            }
            NodeKind::Filter { .. } => {
                let keep = match &mut self.procs[c] {
                    Proc::Filter(f) => f.is_keep(&input()),
                    _ => unreachable!("filter has a filter"),
                };
                if keep {
                    self.push(out, bk, attempt, c, segs)
                } else {
                    Ok(())
                }
            }
            NodeKind::Peek { .. } => {
                if let Proc::Peek(f) = &mut self.procs[c] {
                    f.accept(&input());
                }
                self.push(out, bk, attempt, c, segs)
            }
            NodeKind::Project => {
                let v: Values = input().to_values();
                self.push(out, bk, attempt, c, &[&v])
            }
            NodeKind::Map { .. } => {
                let v = match &mut self.procs[c] {
                    Proc::Map(f) => f.execute(&input()),
                    _ => unreachable!("map has a function"),
                }
                .map_err(|e| OpError::new(&node.g.op, e))?;
                check_width(node, &v)?;
                self.push(out, bk, attempt, c, &[&v])
            }
            NodeKind::FlatMap { .. } => {
                let vs = match &mut self.procs[c] {
                    Proc::FlatMap(f) => f.execute(&input()),
                    _ => unreachable!("flat_map has a function"),
                }
                .map_err(|e| OpError::new(&node.g.op, e))?;
                for v in &vs {
                    check_width(node, v)?;
                    self.push(out, bk, attempt, c, &[v])?;
                }
                Ok(())
            }
            NodeKind::Aggregate { agg, .. } => self.aggregate(bk, c, agg, segs),
            NodeKind::Persist { update, .. } => {
                let key = key_of(&node.key_slots, segs);
                let batch = self.batches.get_mut(&bk).expect("batch exists");
                match update {
                    PersistImpl::CombinePartials(agg) => {
                        let partial = input().get(node.input_fields.len() - 1).clone();
                        combine_into(values_of(batch, c), key, partial, agg.as_ref());
                    }
                    PersistImpl::Reduce(_) => {
                        let NodeBatch::Tuples(map) = batch
                            .nodes
                            .entry(c)
                            .or_insert_with(|| NodeBatch::Tuples(FoldHashMap::default()))
                        else {
                            unreachable!("persist tuples")
                        };
                        map.entry(key).or_default().push(input().to_values());
                    }
                }
                Ok(())
            }
            NodeKind::Query { .. } => {
                let batch = self.batches.get_mut(&bk).expect("batch exists");
                let v: Values = segs[0].iter().cloned().collect();
                buffered(batch, c, 1)[0].push(v);
                Ok(())
            }
            NodeKind::Join { .. } | NodeKind::DrpcReturn => {
                unreachable!("entries with several parents go through process_entry")
            }
            NodeKind::Spout(_) => unreachable!("spouts have no parents"),
        }
    }

    fn aggregate(
        &mut self,
        bk: BatchKey,
        c: NodeId,
        agg: &AggImpl,
        segs: &[&[Value]],
    ) -> Result<(), OpError> {
        let plan = self.plan.clone();
        let node = &plan.nodes[c];
        let input = TridentTuple::new(segs, &node.input_slots, &node.input_fields);
        let key = key_of(&node.key_slots, segs);
        let batch = self.batches.get_mut(&bk).expect("batch exists");
        let op = &node.g.op;
        match agg {
            AggImpl::Combine { agg, partials } => {
                let v = if *partials {
                    input.get(input.len() - 1).clone()
                } else {
                    agg.init(&input).map_err(|e| OpError::new(op, e))?
                };
                combine_into(values_of(batch, c), key, v, agg.as_ref());
            }
            AggImpl::Reduce(agg) => {
                let map = values_of(batch, c);
                let acc = map.remove(&key).unwrap_or_else(|| agg.init());
                let acc = agg.reduce(acc, &input).map_err(|e| OpError::new(op, e))?;
                map.insert(key, acc);
            }
            AggImpl::General(_) => {
                let Proc::Agg(Some(a)) = &mut self.procs[c] else {
                    unreachable!("general aggregator instance")
                };
                let NodeBatch::General(index, states) = batch
                    .nodes
                    .entry(c)
                    .or_insert_with(|| NodeBatch::General(FoldHashMap::default(), Vec::new()))
                else {
                    unreachable!("general states")
                };
                let i = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        states.push((key.clone(), a.init(bk.1)));
                        index.insert(key, states.len() - 1);
                        states.len() - 1
                    }
                };
                // What an aggregator emits before `complete` is dropped: Storm's
                // aggregators emit in `complete`, and so do the built-ins.
                let mut col = TridentCollector::default();
                a.aggregate(&mut states[i].1, &input, &mut col)
                    .map_err(|e| OpError::new(op, e))?;
            }
        }
        Ok(())
    }

    // ---- batch bookkeeping -----------------------------------------------------------

    /// The batch `bk` at `attempt`, created (or reset from an older attempt) as needed;
    /// `None` when the tuple belongs to an older attempt or a failed one.
    fn batch_for(&mut self, bk: BatchKey, attempt: u64) -> Option<&mut Batch> {
        let reset = match self.batches.get(&bk) {
            Some(b) if b.attempt == attempt => false,
            Some(b) if b.attempt > attempt => return None,
            _ => true,
        };
        if reset {
            if let Some(old) = self.batches.remove(&bk) {
                drop(old); // its tree failed already: the coordinator replays
            }
            if self.committed.get(&bk.0).is_some_and(|&c| bk.1 <= c) {
                return None;
            }
            let plan = &self.plan;
            let stage = &plan.stages[self.stage];
            let mut awaiting = Vec::new();
            for (pos, &e) in stage.in_edges.iter().enumerate() {
                if plan.edges[e].group == bk.0 {
                    for &t in &self.upstream[pos] {
                        awaiting.push((pos, t));
                    }
                }
            }
            self.batches.insert(
                bk,
                Batch {
                    attempt,
                    started: Instant::now(),
                    failed: false,
                    anchors: Vec::new(),
                    awaiting,
                    announced: 0,
                    received: 0,
                    sent: stage
                        .out_edges
                        .iter()
                        .map(|_| FoldHashMap::default())
                        .collect(),
                    nodes: FoldHashMap::default(),
                    processed: false,
                    reported_stuck: false,
                },
            );
        }
        let b = self.batches.get_mut(&bk).expect("just inserted");
        (!b.failed).then_some(b)
    }

    fn fail_batch(&mut self, out: &mut OutputCollector<'_>, bk: BatchKey, err: OpError) {
        out.report_error(&format_args!(
            "{} failed batch {} of {}: {}",
            err.op, bk.1, self.plan.groups[bk.0].txstate, err.msg
        ));
        if let Some(b) = self.batches.get_mut(&bk) {
            b.failed = true;
            b.nodes.clear();
            for t in b.anchors.drain(..) {
                out.fail(&t);
            }
        }
    }

    fn is_complete(b: &Batch) -> bool {
        b.awaiting.is_empty() && b.received >= b.announced && !b.processed
    }

    /// Runs the batch-end work of `bk` if everything has arrived.
    fn try_finish(&mut self, out: &mut OutputCollector<'_>, bk: BatchKey) {
        let ready = self
            .batches
            .get(&bk)
            .is_some_and(|b| !b.failed && Self::is_complete(b));
        if !ready {
            return;
        }
        if let Err(e) = self.finish(out, bk) {
            self.fail_batch(out, bk, e);
        }
    }

    fn finish(&mut self, out: &mut OutputCollector<'_>, bk: BatchKey) -> Result<(), OpError> {
        let plan = self.plan.clone();
        let attempt = self.batches[&bk].attempt;
        // Batch-end operations, parents first.
        for &i in plan.stages[self.stage].nodes.iter() {
            let node = &plan.nodes[i];
            if node.group != bk.0 {
                continue;
            }
            match &node.g.kind {
                NodeKind::Aggregate { agg, group, .. } => {
                    let state = self.batches.get_mut(&bk).and_then(|b| b.nodes.remove(&i));
                    let mut rows: Vec<Values> = Vec::new();
                    match (agg, state) {
                        (AggImpl::Combine { agg, .. }, state) => {
                            let map = match state {
                                Some(NodeBatch::Values(m)) => m,
                                _ => FoldHashMap::default(),
                            };
                            if map.is_empty() && group.is_empty() {
                                rows.push(values![agg.zero()]);
                            }
                            for (k, v) in map {
                                let mut row: Values = k.0.into_iter().collect();
                                row.push(v);
                                rows.push(row);
                            }
                        }
                        (AggImpl::Reduce(agg), state) => {
                            let map = match state {
                                Some(NodeBatch::Values(m)) => m,
                                _ => FoldHashMap::default(),
                            };
                            if map.is_empty() && group.is_empty() {
                                rows.push(values![agg.init()]);
                            }
                            for (k, v) in map {
                                let mut row: Values = k.0.into_iter().collect();
                                row.push(v);
                                rows.push(row);
                            }
                        }
                        (AggImpl::General(_), state) => {
                            let Proc::Agg(Some(a)) = &mut self.procs[i] else {
                                unreachable!("general aggregator instance")
                            };
                            let mut states = match state {
                                Some(NodeBatch::General(_, s)) => s,
                                _ => Vec::new(),
                            };
                            if states.is_empty() && group.is_empty() {
                                states.push((HKey(Vec::new()), a.init(bk.1)));
                            }
                            for (k, s) in states {
                                let mut col = TridentCollector::default();
                                a.complete(s, &mut col)
                                    .map_err(|e| OpError::new(&node.g.op, e))?;
                                for v in col.out {
                                    let mut row: Values = k.0.iter().cloned().collect();
                                    row.extend(v);
                                    rows.push(row);
                                }
                            }
                        }
                    }
                    for row in &rows {
                        check_width(node, row)?;
                        self.push(out, bk, attempt, i, &[row])?;
                    }
                }
                NodeKind::Query { state, .. } => {
                    let tuples = match self.batches.get_mut(&bk).and_then(|b| b.nodes.remove(&i)) {
                        Some(NodeBatch::Buffered(mut sides)) => sides.pop().unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    if tuples.is_empty() {
                        continue;
                    }
                    let slots: Vec<Slot> = node.input_slots.clone();
                    let keys: Vec<Key> = tuples
                        .iter()
                        .map(|t| slots.iter().map(|&(_, o)| t[o as usize].clone()).collect())
                        .collect();
                    let st = self.states.get_mut(state).ok_or_else(|| {
                        OpError::new(&node.g.op, "its state lives in another bolt")
                    })?;
                    let Proc::Query(q) = &mut self.procs[i] else {
                        unreachable!("query function")
                    };
                    let results = q
                        .batch_retrieve(st.as_mut(), &keys)
                        .map_err(|e| OpError::new(&node.g.op, e))?;
                    if results.len() != tuples.len() {
                        return Err(OpError::new(
                            &node.g.op,
                            format!(
                                "returned {} results for {} keys",
                                results.len(),
                                tuples.len()
                            ),
                        ));
                    }
                    let pf = tuples.first().map_or(0, |t| t.len());
                    let added = node.g.fields.len() - pf;
                    let mut buf = std::mem::take(&mut self.scratch[i]);
                    let mut r = Ok(());
                    for (t, result) in tuples.iter().zip(results) {
                        let seg: &[&[Value]] = &[t];
                        let input = TridentTuple::new(seg, &node.input_slots, &node.input_fields);
                        let mut col = TridentCollector { out: buf };
                        let Proc::Query(q) = &mut self.procs[i] else {
                            unreachable!("query function")
                        };
                        let res = q.execute(&input, result, &mut col);
                        buf = col.out;
                        if let Err(e) = res {
                            r = Err(OpError::new(&node.g.op, e));
                            break;
                        }
                        for v in buf.drain(..) {
                            if v.len() != added {
                                r = Err(OpError::new(
                                    &node.g.op,
                                    format!(
                                        "emitted {} values for its {added} output fields",
                                        v.len()
                                    ),
                                ));
                                break;
                            }
                            if let Err(e) = self.push(out, bk, attempt, i, &[t, &v]) {
                                r = Err(e);
                                break;
                            }
                        }
                        if r.is_err() {
                            break;
                        }
                    }
                    buf.clear();
                    self.scratch[i] = buf;
                    r?;
                }
                NodeKind::Join { .. } => {
                    let sides = match self.batches.get_mut(&bk).and_then(|b| b.nodes.remove(&i)) {
                        Some(NodeBatch::Buffered(s)) => s,
                        _ => Vec::new(),
                    };
                    for row in join_rows(node, sides) {
                        self.push(out, bk, attempt, i, &[&row])?;
                    }
                }
                NodeKind::DrpcReturn => {
                    let sides = match self.batches.get_mut(&bk).and_then(|b| b.nodes.remove(&i)) {
                        Some(NodeBatch::Buffered(s)) => s,
                        _ => Vec::new(),
                    };
                    self.drpc_return(node, &plan, sides)?;
                }
                _ => {}
            }
        }
        // Tell every downstream task how many tuples it got from this one.
        let b = self.batches.get_mut(&bk).expect("batch exists");
        let anchors = std::mem::take(&mut b.anchors);
        let sent = std::mem::take(&mut b.sent);
        b.processed = true;
        let committed = self.committed.get(&bk.0).copied().unwrap_or(0);
        {
            let refs: Vec<&Tuple> = anchors.iter().collect();
            for (pos, &e) in plan.stages[self.stage].out_edges.iter().enumerate() {
                let edge = &plan.edges[e];
                if edge.group != bk.0 {
                    continue;
                }
                for &t in &self.downstream[pos] {
                    let n = sent[pos].get(&t).copied().unwrap_or(0);
                    out.emit_direct(
                        t,
                        &edge.coord_stream,
                        &refs,
                        values![bk.1 as i64, attempt as i64, n as i64, committed as i64],
                    );
                }
            }
        }
        for t in &anchors {
            out.ack(t);
        }
        let committer = plan.groups[bk.0].committer_stages.contains(&self.stage);
        if !committer {
            self.batches.remove(&bk);
        }
        Ok(())
    }

    fn drpc_return(
        &mut self,
        node: &crate::plan::PNode,
        plan: &Plan,
        mut sides: Vec<Vec<Values>>,
    ) -> Result<(), OpError> {
        sides.resize_with(2, Vec::new);
        let requests = std::mem::take(&mut sides[1]);
        let results = std::mem::take(&mut sides[0]);
        let sink = &plan.nodes[node.g.parents[0]].g.fields;
        let visible: Vec<usize> = (0..sink.len())
            .filter(|&i| !sink.get(i).unwrap_or("").starts_with('$'))
            .collect();
        let rows: Vec<Vec<&Value>> = results
            .iter()
            .map(|r| visible.iter().map(|&i| &r[i]).collect())
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|e| OpError::new(&node.g.op, format!("cannot encode the result: {e}")))?;
        let drpc = self.drpc.as_ref().expect("DRPC return has invocations");
        let spout_fields = &plan.nodes[node.g.parents[1]].g.fields;
        let ret = spout_fields
            .index_of(crate::topology::DRPC_RETURN)
            .unwrap_or(1);
        for req in requests {
            let (server, id) = crate::coordinator::return_info(&req[ret]);
            if let Err(e) = drpc.result(&server, &id, &json) {
                // The client is gone (timed out) or the server is: nothing to replay.
                tracing::warn!("DRPC answer for request {id} not delivered: {e}");
            }
        }
        Ok(())
    }

    // ---- spout stages ----------------------------------------------------------------

    fn run_spout(
        &mut self,
        out: &mut OutputCollector<'_>,
        bk: BatchKey,
        tx: TransactionAttempt,
        reuse: bool,
        payload: &Value,
    ) -> Result<(), OpError> {
        let plan = self.plan.clone();
        let spout_node = plan.stages[self.stage].spout.expect("spout stage");
        let op = plan.nodes[spout_node].g.op.clone();
        let mut col = TridentCollector::default();
        let committed = self.committed.get(&bk.0).copied().unwrap_or(0);
        match self.spout.as_mut().expect("spout runner") {
            SpoutRunner::Partitioned {
                emitter,
                transactional,
                logs,
            } => {
                let store = self.store.clone().expect("partitioned spouts have a store");
                let parts = emitter
                    .partitions()
                    .map_err(|e| OpError::new(&op, format!("cannot list partitions: {e}")))?;
                let txstate = &plan.groups[bk.0].txstate;
                for (i, p) in parts.iter().enumerate() {
                    if i % self.num_tasks != self.task_index {
                        continue;
                    }
                    let key = format!("{txstate}/emitter/{op}/{p}");
                    if !logs.contains_key(p) {
                        let metas =
                            load_metas(store.as_ref(), &key).map_err(|e| OpError::new(&op, e))?;
                        logs.insert(p.clone(), MetaLog { metas });
                    }
                    let log = logs.get_mut(p).expect("just loaded");
                    let before = log.metas.clone();
                    // Keep the newest committed entry (the next batch follows it).
                    if let Some(&base) = log.metas.range(..=committed).next_back().map(|(k, _)| k) {
                        log.metas = log.metas.split_off(&base);
                    }
                    let stored = log.metas.get(&tx.txid).cloned();
                    match stored {
                        Some(meta) if *transactional || reuse => {
                            emitter
                                .emit_again(&tx, p, &meta, &mut col)
                                .map_err(|e| OpError::new(&op, e))?;
                        }
                        _ => {
                            let prev = match log.metas.range(..tx.txid).next_back() {
                                Some((&t, m)) if t + 1 == tx.txid => Some(m.clone()),
                                None => None,
                                Some((&t, _)) => {
                                    return Err(OpError::new(
                                        &op,
                                        format!(
                                            "partition {p}: the metadata of batch {} is missing (last known: batch {t}); \
                                             the batch will be replayed from the last committed one",
                                            tx.txid - 1
                                        ),
                                    ))
                                }
                            };
                            let meta = emitter
                                .emit_new(&tx, p, prev.as_ref(), &mut col)
                                .map_err(|e| OpError::new(&op, e))?;
                            // Later batches were emitted after an older attempt of this
                            // one: they follow it no more.
                            log.metas.split_off(&tx.txid);
                            log.metas.insert(tx.txid, meta);
                        }
                    }
                    if log.metas != before {
                        store_metas(store.as_ref(), &key, &log.metas)
                            .map_err(|e| OpError::new(&op, e))?;
                    }
                }
            }
            SpoutRunner::Batch(s) => {
                s.emit_batch(&tx, &mut col)
                    .map_err(|e| OpError::new(&op, e))?;
            }
            SpoutRunner::Drpc => {
                if let Value::Map(m) = payload {
                    let args = m.get("args").cloned().unwrap_or_default();
                    let mut ret = m.clone();
                    ret.remove("args");
                    col.out.push(values![args, Value::Map(ret)]);
                }
            }
        }
        let width = plan.nodes[spout_node].g.fields.len();
        for v in std::mem::take(&mut col.out) {
            if v.len() != width {
                return Err(OpError::new(
                    &op,
                    format!("emitted {} values for its {width} output fields", v.len()),
                ));
            }
            self.push(out, bk, tx.attempt, spout_node, &[&v])?;
        }
        Ok(())
    }

    // ---- commit ----------------------------------------------------------------------

    fn commit(&mut self, group: usize, txid: u64, attempt: u64) -> Result<(), String> {
        let bk = (group, txid);
        let Some(b) = self.batches.get(&bk) else {
            return Err(format!(
                "batch {txid} is not here (this task restarted?); it will be replayed"
            ));
        };
        if b.attempt != attempt || !b.processed || b.failed {
            return Err(format!(
                "batch {txid}: commit of attempt {attempt} but this task holds attempt {} ({})",
                b.attempt,
                if b.failed {
                    "failed"
                } else if b.processed {
                    "processed"
                } else {
                    "unfinished"
                }
            ));
        }
        let plan = self.plan.clone();
        let mut batch = self.batches.remove(&bk).expect("checked");
        for &i in plan.stages[self.stage].nodes.iter() {
            let node = &plan.nodes[i];
            let NodeKind::Persist { update, state, .. } = &node.g.kind else {
                continue;
            };
            if node.group != group {
                continue;
            }
            let st = self.states.get_mut(state).expect("state opened in prepare");
            let named = |e: crate::state::StateError| {
                format!(
                    "{}: state '{}' batch {txid}: {e}",
                    node.g.op, plan.states[*state].name
                )
            };
            st.begin_commit(txid).map_err(named)?;
            match (update, batch.nodes.remove(&i)) {
                (PersistImpl::CombinePartials(agg), Some(NodeBatch::Values(map))) => {
                    let (keys, partials): (Vec<Key>, Vec<Value>) =
                        map.into_iter().map(|(k, v)| (k.0, v)).unzip();
                    let mut partials: Vec<Option<Value>> = partials.into_iter().map(Some).collect();
                    st.multi_update(&keys, &mut |i, old| {
                        agg.combine(
                            old.unwrap_or_else(|| agg.zero()),
                            partials[i].take().unwrap_or_default(),
                        )
                    })
                    .map_err(named)?;
                }
                (PersistImpl::Reduce(agg), Some(NodeBatch::Tuples(map))) => {
                    let (keys, rows): (Vec<Key>, Vec<Vec<Values>>) =
                        map.into_iter().map(|(k, v)| (k.0, v)).unzip();
                    let fields = &node.input_fields;
                    let slots: Vec<Slot> = (0..fields.len()).map(|o| (0u8, o as u16)).collect();
                    let mut error = None;
                    st.multi_update(&keys, &mut |i, old| {
                        let mut acc = old.unwrap_or_else(|| agg.init());
                        for r in &rows[i] {
                            let seg: &[&[Value]] = &[r];
                            match agg.reduce(acc, &TridentTuple::new(seg, &slots, fields)) {
                                Ok(v) => acc = v,
                                Err(e) => {
                                    error.get_or_insert_with(|| e.to_string());
                                    return Value::Null;
                                }
                            }
                        }
                        acc
                    })
                    .map_err(named)?;
                    if let Some(e) = error {
                        return Err(format!("{}: {e}", node.g.op));
                    }
                }
                _ => {}
            }
            st.commit(txid).map_err(named)?;
        }
        Ok(())
    }

    fn check_stuck(&mut self, out: &mut OutputCollector<'_>) {
        let plan = self.plan.clone();
        let now = Instant::now();
        let limit = self.message_timeout;
        let mut reports = Vec::new();
        for (bk, b) in self.batches.iter_mut() {
            let age = now.duration_since(b.started);
            if b.reported_stuck || b.failed || age + Duration::from_secs(1) < limit {
                continue;
            }
            b.reported_stuck = true;
            let what = if b.processed {
                "waits for its commit".to_owned()
            } else if let Some(&(pos, t)) = b.awaiting.first() {
                let e = &plan.edges[plan.stages[self.stage].in_edges[pos]];
                let up = &plan.stages[e.from_stage];
                let ops: Vec<&str> = up
                    .nodes
                    .iter()
                    .filter(|&&n| plan.nodes[n].group == bk.0)
                    .map(|&n| plan.nodes[n].g.op.as_str())
                    .collect();
                format!(
                    "waits for '{}' task {} (running {}) to finish it{}",
                    up.component,
                    t.0,
                    ops.join(" → "),
                    if b.awaiting.len() > 1 {
                        format!(" and {} more upstream tasks", b.awaiting.len() - 1)
                    } else {
                        String::new()
                    }
                )
            } else {
                format!("has {} of the {} tuples announced", b.received, b.announced)
            };
            reports.push(format!(
                "batch {} of {} (attempt {}) is stuck after {} s in '{}' task {}: it {what}",
                bk.1,
                plan.groups[bk.0].txstate,
                b.attempt,
                age.as_secs(),
                self.component,
                self.task.0
            ));
        }
        for r in reports {
            out.report_error(&r);
        }
        // Forget batches that are committed (or far too old to be live).
        let committed = &self.committed;
        self.batches.retain(|bk, b| {
            let done = committed.get(&bk.0).is_some_and(|&c| bk.1 <= c);
            let ancient = now.duration_since(b.started) > limit * 4;
            !(done || ancient)
        });
    }
}

fn input_len_before(node: &crate::plan::PNode) -> usize {
    // An `each` node's fields are its parent's plus what the function adds.
    node.layout
        .iter()
        .take_while(|&&(s, _)| (s as usize) < node.nsegs - 1)
        .count()
}

fn check_width(node: &crate::plan::PNode, v: &Values) -> Result<(), OpError> {
    if v.len() != node.g.fields.len() {
        return Err(OpError::new(
            &node.g.op,
            format!(
                "emitted {} values for its {} output fields {}",
                v.len(),
                node.g.fields.len(),
                node.g.fields
            ),
        ));
    }
    Ok(())
}

/// The values of the group-by fields at `slots`.
fn key_of(slots: &[Slot], segs: &[&[Value]]) -> HKey {
    HKey(
        slots
            .iter()
            .map(|&(s, o)| segs[s as usize][o as usize].clone())
            .collect(),
    )
}

/// A node's per-group values in `batch` (combiners, reducers, persist partials).
fn values_of(batch: &mut Batch, node: NodeId) -> &mut FoldHashMap<HKey, Value> {
    match batch
        .nodes
        .entry(node)
        .or_insert_with(|| NodeBatch::Values(FoldHashMap::default()))
    {
        NodeBatch::Values(map) => map,
        _ => unreachable!("a node keeps one kind of batch state"),
    }
}

/// Combines `v` into the value of `key`.
fn combine_into(
    map: &mut FoldHashMap<HKey, Value>,
    key: HKey,
    v: Value,
    agg: &dyn crate::operation::CombinerAggregator,
) {
    match map.get_mut(&key) {
        Some(acc) => *acc = agg.combine(std::mem::take(acc), v),
        None => {
            map.insert(key, v);
        }
    }
}

fn buffered(batch: &mut Batch, node: NodeId, sides: usize) -> &mut Vec<Vec<Values>> {
    let nb = batch
        .nodes
        .entry(node)
        .or_insert_with(|| NodeBatch::Buffered(vec![Vec::new(); sides]));
    match nb {
        NodeBatch::Buffered(v) => v,
        _ => unreachable!("buffered node"),
    }
}

/// Inner join of the sides on their keys: key fields, then each side's other fields.
fn join_rows(node: &crate::plan::PNode, mut sides: Vec<Vec<Values>>) -> Vec<Values> {
    let NodeKind::Join { keys } = &node.g.kind else {
        return Vec::new();
    };
    let nk = keys[0].len();
    sides.resize_with(keys.len(), Vec::new);
    let key_pos = |side: usize| -> Vec<usize> {
        node.key_slots[side * nk..(side + 1) * nk]
            .iter()
            .map(|&(_, o)| o as usize)
            .collect()
    };
    let mut acc: Vec<(Key, Values)> = {
        let kp = key_pos(0);
        sides[0]
            .iter()
            .map(|t| {
                let key: Key = kp.iter().map(|&i| t[i].clone()).collect();
                let rest: Values = (0..t.len())
                    .filter(|i| !kp.contains(i))
                    .map(|i| t[i].clone())
                    .collect();
                (key, rest)
            })
            .collect()
    };
    for (side, rows) in sides.iter().enumerate().skip(1) {
        let kp = key_pos(side);
        let mut index: HashMap<HKey, Vec<Values>> = HashMap::new();
        for t in rows {
            let key = HKey(kp.iter().map(|&i| t[i].clone()).collect());
            let rest: Values = (0..t.len())
                .filter(|i| !kp.contains(i))
                .map(|i| t[i].clone())
                .collect();
            index.entry(key).or_default().push(rest);
        }
        let mut next = Vec::new();
        for (key, left) in acc {
            if let Some(matches) = index.get(&HKey(key.clone())) {
                for right in matches {
                    let mut row = left.clone();
                    row.extend(right.iter().cloned());
                    next.push((key.clone(), row));
                }
            }
        }
        acc = next;
    }
    acc.into_iter()
        .map(|(k, rest)| {
            let mut row: Values = k.into_iter().collect();
            row.extend(rest);
            row
        })
        .collect()
}

fn load_metas(
    store: &dyn CoordinatorStore,
    key: &str,
) -> Result<std::collections::BTreeMap<u64, Value>, StoreError> {
    match store.get(key)? {
        None => Ok(Default::default()),
        Some(bytes) => {
            let m: std::collections::BTreeMap<String, Value> = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError(format!("{key}: unreadable metadata: {e}")))?;
            Ok(m.into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
                .collect())
        }
    }
}

fn store_metas(
    store: &dyn CoordinatorStore,
    key: &str,
    metas: &std::collections::BTreeMap<u64, Value>,
) -> Result<(), StoreError> {
    let m: std::collections::BTreeMap<String, &Value> =
        metas.iter().map(|(k, v)| (k.to_string(), v)).collect();
    let bytes = serde_json::to_vec(&m).map_err(|e| StoreError(format!("{key}: {e}")))?;
    store.put(key, &bytes)
}

fn int(v: &Value) -> u64 {
    v.as_i64().unwrap_or(0).max(0) as u64
}

impl Bolt for StageBolt {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let plan = self.plan.clone();
        let stage = &plan.stages[self.stage];
        self.task = ctx.this_task_id();
        self.task_index = ctx.this_task_index();
        self.num_tasks = ctx.component_tasks(&stage.component).len().max(1);
        self.message_timeout = Duration::from_secs(conf.message_timeout_secs()?);
        self.upstream = stage
            .in_edges
            .iter()
            .map(|&e| {
                ctx.component_tasks(&plan.stages[plan.edges[e].from_stage].component)
                    .to_vec()
            })
            .collect();
        self.downstream = stage
            .out_edges
            .iter()
            .map(|&e| {
                ctx.component_tasks(&plan.stages[plan.edges[e].to_stage].component)
                    .to_vec()
            })
            .collect();
        self.make_procs(conf, ctx)
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        if input.is_tick() {
            self.check_stuck(out);
            return;
        }
        let stream = input.source_stream();
        let v = input.values();
        if stream == BATCH_STREAM {
            // [txid, attempt, committed, reuse, payload]
            let group = match self.plan.stages[self.stage].spout {
                Some(n) => self.plan.nodes[n].group,
                None => return out.ack(&input),
            };
            let (txid, attempt, committed) = (int(&v[0]), int(&v[1]), int(&v[2]));
            let reuse = v[3].as_bool().unwrap_or(false);
            let c = self.committed.entry(group).or_insert(0);
            *c = (*c).max(committed);
            let bk = (group, txid);
            let payload = v[4].clone();
            match self.batch_for(bk, attempt) {
                Some(b) => b.anchors.push(input),
                None => {
                    tracing::debug!(
                        "{}: $batch {txid} attempt {attempt} refused",
                        self.component
                    );
                    return out.fail(&input);
                }
            }
            let tx = TransactionAttempt { txid, attempt };
            match self.run_spout(out, bk, tx, reuse, &payload) {
                Ok(()) => self.try_finish(out, bk),
                Err(e) => self.fail_batch(out, bk, e),
            }
            return;
        }
        if stream == COMMIT_STREAM {
            let (txid, attempt) = (int(&v[0]), int(&v[1]));
            let group = self
                .plan
                .groups
                .iter()
                .position(|g| g.coordinator == input.source_component())
                .unwrap_or(0);
            match self.commit(group, txid, attempt) {
                // The batch may still be replayed (another task's commit failed):
                // what is committed everywhere comes from the coordinator.
                Ok(()) => out.ack(&input),
                Err(e) => {
                    out.report_error(&format_args!("commit failed: {e}"));
                    self.batches.remove(&(group, txid));
                    out.fail(&input)
                }
            }
            return;
        }
        let Some(&(pos, coord)) = self.streams.get(stream) else {
            return out.ack(&input);
        };
        let plan = self.plan.clone();
        let e = plan.stages[self.stage].in_edges[pos];
        let edge = &plan.edges[e];
        let (txid, attempt) = (int(&v[0]), int(&v[1]));
        let bk = (edge.group, txid);
        if coord {
            // [txid, attempt, count, committed]
            let (count, committed) = (int(&v[2]), int(&v[3]));
            let c = self.committed.entry(edge.group).or_insert(0);
            *c = (*c).max(committed);
            let src = input.source_task();
            match self.batch_for(bk, attempt) {
                Some(b) => {
                    if let Some(i) = b.awaiting.iter().position(|&(p, t)| p == pos && t == src) {
                        b.awaiting.swap_remove(i);
                        b.announced += count;
                    }
                    b.anchors.push(input);
                }
                None => {
                    tracing::debug!("{}: coord {txid} attempt {attempt} refused", self.component);
                    return out.fail(&input);
                }
            }
            self.try_finish(out, bk);
            return;
        }
        if self.batch_for(bk, attempt).is_none() {
            return out.ack(&input);
        }
        self.batches.get_mut(&bk).expect("batch").received += 1;
        let node = edge.to;
        let result = match &plan.nodes[node].g.kind {
            NodeKind::Join { .. } | NodeKind::DrpcReturn => {
                let parents = plan.nodes[node].g.parents.len();
                let b = self.batches.get_mut(&bk).expect("batch");
                buffered(b, node, parents)[edge.to_parent].push(v[2..].iter().cloned().collect());
                Ok(())
            }
            _ => self.process(out, bk, attempt, node, &[&v[2..]]),
        };
        match result {
            Ok(()) => {
                let done = self.batches.get(&bk).is_some_and(|b| b.awaiting.is_empty());
                if done {
                    self.try_finish(out, bk);
                }
            }
            Err(e) => self.fail_batch(out, bk, e),
        }
        out.ack(&input);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        let plan = &self.plan;
        for &e in &plan.stages[self.stage].out_edges {
            let edge = &plan.edges[e];
            let mut fields = vec![TXID.to_owned(), ATTEMPT.to_owned()];
            fields.extend(plan.nodes[edge.from].g.fields.names().iter().cloned());
            d.declare_stream(edge.stream.as_str(), fields);
            d.declare_direct_stream(
                edge.coord_stream.as_str(),
                [TXID, ATTEMPT, "$count", "$committed"],
            );
        }
    }

    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set_tick_tuple_freq_secs(1);
        c
    }
}
