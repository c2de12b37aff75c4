//! Stateful bolts and the barrier alignment every bolt of a stateful topology runs.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{task_namespace, Action, Barrier, KeyValueState, StateError, CHECKPOINT_STREAM};
use crate::component::{Bolt, BoxError, OutputCollector, OutputFieldsDeclarer};
use crate::config::Config;
use crate::context::TopologyContext;
use crate::ids::{ComponentId, TaskId};
use crate::topology::{BoltFactory, ComponentDeclarer, TopologyBuilder};
use crate::tuple::Tuple;

/// A bolt with a [`KeyValueState`] that survives failures (Storm's `IStatefulBolt`).
///
/// The runtime loads the task's last committed state before the first tuple, hands it
/// to [`init_state`](Self::init_state) and then to every
/// [`execute`](Self::execute); checkpoints commit it; after a failure it is rolled back
/// to the last commit and the tuples since are replayed. Each input tuple must be acked
/// (or failed) as in any bolt, and emits that lead to other state must be anchored:
/// then every tuple a reliable spout emits affects every state exactly once.
///
/// Add it with [`TopologyBuilder::set_stateful_bolt`].
pub trait StatefulBolt: Send + 'static {
    /// The state's key type.
    type Key: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + 'static;
    /// The state's value type.
    type Value: Serialize + DeserializeOwned + Send + 'static;

    /// Called once when the task starts, before the state is loaded.
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once with the task's committed state, before any tuple (Storm's
    /// `initState`).
    fn init_state(&mut self, _state: &mut KeyValueState<Self::Key, Self::Value>) {}

    /// Processes one input tuple with the state.
    fn execute(
        &mut self,
        input: Tuple,
        state: &mut KeyValueState<Self::Key, Self::Value>,
        out: &mut OutputCollector<'_>,
    );

    /// Called before the state is prepared for checkpoint `txid`.
    fn pre_prepare(&mut self, _txid: u64, _state: &mut KeyValueState<Self::Key, Self::Value>) {}

    /// Called before the state of checkpoint `txid` is committed.
    fn pre_commit(&mut self, _txid: u64, _state: &mut KeyValueState<Self::Key, Self::Value>) {}

    /// Called before the state is rolled back to the last commit.
    fn pre_rollback(&mut self, _state: &mut KeyValueState<Self::Key, Self::Value>) {}

    /// Called when the task shuts down cleanly.
    fn cleanup(&mut self) {}

    /// Declares the bolt's output streams.
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration, merged over the topology's.
    fn component_configuration(&self) -> Config {
        Config::new()
    }
}

impl TopologyBuilder {
    /// Adds a stateful bolt (Storm's `setBolt` with an `IStatefulBolt`): the topology
    /// gets checkpointing (see [`crate::state`]). Each task gets its own clone of
    /// `bolt`.
    pub fn set_stateful_bolt<B: StatefulBolt + Clone>(
        &mut self,
        id: &str,
        bolt: B,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let shape = shape(&bolt);
        let factory: BoltFactory =
            Box::new(move || Box::new(CheckpointBolt::new(Stateful::new(bolt.clone()))));
        self.stateful.insert(ComponentId::new(id));
        self.add_bolt(id, shape, factory, parallelism)
    }

    /// Adds a stateful bolt whose instances `make` creates (no `Clone` needed), as
    /// [`set_bolt_with`](Self::set_bolt_with) does for bolts.
    pub fn set_stateful_bolt_with<B, F>(
        &mut self,
        id: &str,
        make: F,
        parallelism: u32,
    ) -> ComponentDeclarer<'_>
    where
        B: StatefulBolt,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let shape = shape(&make());
        let factory: BoltFactory =
            Box::new(move || Box::new(CheckpointBolt::new(Stateful::new(make()))));
        self.stateful.insert(ComponentId::new(id));
        self.add_bolt(id, shape, factory, parallelism)
    }
}

fn shape<B: StatefulBolt>(bolt: &B) -> (OutputFieldsDeclarer, Config) {
    let mut declarer = OutputFieldsDeclarer::default();
    bolt.declare_output_fields(&mut declarer);
    (declarer, bolt.component_configuration())
}

/// What runs inside the alignment: a stateful bolt with its state, or a plain bolt.
pub(crate) trait Inner: Send + 'static {
    fn setup(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError>;
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>);
    fn prepare_state(&mut self, txid: u64) -> Result<(), StateError>;
    fn commit_state(&mut self, txid: u64) -> Result<(), StateError>;
    fn rollback_state(&mut self) -> Result<(), StateError>;
    /// Acks (or drops) what it holds of the current epoch: called when a `PREPARE` is
    /// aligned, before `prepare_state`, and at a rollback, before `rollback_state`.
    fn release(&mut self, _out: &mut OutputCollector<'_>) {}
    fn cleanup(&mut self);
}

/// A stateful bolt and its state.
pub(crate) struct Stateful<B: StatefulBolt> {
    bolt: B,
    state: Option<KeyValueState<B::Key, B::Value>>,
}

impl<B: StatefulBolt> Stateful<B> {
    fn new(bolt: B) -> Self {
        Stateful { bolt, state: None }
    }

    fn state(&mut self) -> &mut KeyValueState<B::Key, B::Value> {
        self.state.as_mut().expect("the state is loaded in prepare")
    }
}

impl<B: StatefulBolt> Inner for Stateful<B> {
    fn setup(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.bolt.prepare(conf, ctx)?;
        let mut state = KeyValueState::open(conf, &task_namespace(conf, ctx))?;
        self.bolt.init_state(&mut state);
        self.state = Some(state);
        Ok(())
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let state = self.state.as_mut().expect("the state is loaded in prepare");
        self.bolt.execute(input, state, out)
    }

    fn prepare_state(&mut self, txid: u64) -> Result<(), StateError> {
        let state = self.state.as_mut().expect("the state is loaded in prepare");
        self.bolt.pre_prepare(txid, state);
        self.state().prepare_commit(txid)
    }

    fn commit_state(&mut self, txid: u64) -> Result<(), StateError> {
        let state = self.state.as_mut().expect("the state is loaded in prepare");
        self.bolt.pre_commit(txid, state);
        self.state().commit(txid)
    }

    fn rollback_state(&mut self) -> Result<(), StateError> {
        let state = self.state.as_mut().expect("the state is loaded in prepare");
        self.bolt.pre_rollback(state);
        self.state().rollback()
    }

    fn cleanup(&mut self) {
        self.bolt.cleanup()
    }
}

/// A bolt without state: it only forwards and aligns barriers (Storm's
/// `CheckpointTupleForwarder`).
pub(crate) struct Plain(Box<dyn Bolt>);

impl Inner for Plain {
    fn setup(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.0.prepare(conf, ctx)
    }
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        self.0.execute(input, out)
    }
    fn prepare_state(&mut self, _txid: u64) -> Result<(), StateError> {
        Ok(())
    }
    fn commit_state(&mut self, _txid: u64) -> Result<(), StateError> {
        Ok(())
    }
    fn rollback_state(&mut self) -> Result<(), StateError> {
        Ok(())
    }
    fn cleanup(&mut self) {
        self.0.cleanup()
    }
}

/// Wraps a plain bolt of a stateful topology.
pub(crate) fn forwarding(bolt: Box<dyn Bolt>) -> CheckpointBolt<Plain> {
    CheckpointBolt::new(Plain(bolt))
}

/// Where one input task is in the protocol.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Lane {
    /// Its tuples are processed.
    #[default]
    Open,
    /// Its barrier of the checkpoint being aligned arrived: its tuples wait.
    Blocked,
    /// A rollback started and its `ROLLBACK` has not arrived: its tuples are from
    /// before the rollback (the spouts replay them) and are dropped.
    Dropping,
}

/// Barrier alignment around a bolt (see ARCHITECTURE.md, "Stateful bolts").
pub(crate) struct CheckpointBolt<I: Inner> {
    /// The bolt inside.
    inner: I,
    /// Input task → its lane index.
    lanes_of: HashMap<TaskId, usize>,
    lanes: Vec<Lane>,
    /// Whether a stream index is a `$checkpoint` stream.
    barrier_streams: Vec<bool>,
    /// An `INITSTATE` or `ROLLBACK` was handled since the task started (a task that
    /// restarted refuses to prepare until then: its lost effects must be replayed).
    initialized: bool,
    /// The attempt of the last rollback: barriers of older attempts are stale.
    generation: i64,
    /// The `PREPARE` being aligned: its attempt, txid and the copies received.
    aligning: Option<(i64, u64, Vec<Tuple>)>,
    /// Tuples of blocked lanes, in arrival order.
    buffer: VecDeque<Tuple>,
    /// The attempt of the last `COMMIT` acted on.
    last_commit: i64,
    /// Number of lanes not open (the fast path checks it is 0).
    closed: usize,
    name: String,
}

impl<I: Inner> CheckpointBolt<I> {
    pub(crate) fn new(inner: I) -> Self {
        CheckpointBolt {
            inner,
            lanes_of: HashMap::new(),
            lanes: Vec::new(),
            barrier_streams: Vec::new(),
            initialized: false,
            generation: i64::MIN,
            aligning: None,
            buffer: VecDeque::new(),
            last_commit: i64::MIN,
            closed: 0,
            name: String::new(),
        }
    }

    fn set_lane(&mut self, lane: usize, to: Lane) {
        let from = std::mem::replace(&mut self.lanes[lane], to);
        match (from == Lane::Open, to == Lane::Open) {
            (true, false) => self.closed += 1,
            (false, true) => self.closed -= 1,
            _ => {}
        }
    }

    fn forward(&mut self, barrier: &Barrier, anchors: &[&Tuple], out: &mut OutputCollector<'_>) {
        out.emit_stream(CHECKPOINT_STREAM, anchors, barrier.values());
    }

    fn on_barrier(&mut self, input: Tuple, lane: usize, out: &mut OutputCollector<'_>) {
        let Some(b) = Barrier::read(&input) else {
            out.report_error(&format!(
                "{}: malformed checkpoint tuple {:?}",
                self.name,
                input.values()
            ));
            return out.fail(&input);
        };
        if b.attempt < self.generation {
            // From before the last rollback: its checkpoint failed already.
            return out.ack(&input);
        }
        match b.action {
            Action::Rollback | Action::InitState => self.on_rollback(b, input, lane, out),
            Action::Commit => {
                if b.attempt > self.last_commit {
                    self.last_commit = b.attempt;
                    // Committing needs no alignment: every task prepared this txid.
                    match self.inner.commit_state(b.txid) {
                        Ok(()) => {
                            self.forward(&b, &[&input], out);
                            out.ack(&input);
                        }
                        Err(e) => {
                            out.report_error(&format!(
                                "{}: commit of checkpoint {} failed (it is retried): {e}",
                                self.name, b.txid
                            ));
                            out.fail(&input);
                        }
                    }
                } else {
                    out.ack(&input);
                }
            }
            Action::Prepare => {
                match &self.aligning {
                    Some((attempt, _, _)) if *attempt == b.attempt => {}
                    Some(_) => {
                        // A newer prepare without a rollback in between: give up the
                        // old one (never sent by the checkpoint spout).
                        self.abandon_alignment(out);
                        self.aligning = Some((b.attempt, b.txid, Vec::new()));
                    }
                    None => self.aligning = Some((b.attempt, b.txid, Vec::new())),
                }
                if self.lanes[lane] == Lane::Blocked {
                    // A second copy from the same task: not the protocol.
                    return out.fail(&input);
                }
                self.set_lane(lane, Lane::Blocked);
                self.aligning.as_mut().expect("set above").2.push(input);
                if self.lanes.iter().all(|l| *l == Lane::Blocked) {
                    self.complete_alignment(out);
                }
            }
        }
    }

    /// Every input task sent its `PREPARE`: prepare, forward, then go on with the
    /// tuples that waited.
    fn complete_alignment(&mut self, out: &mut OutputCollector<'_>) {
        let (attempt, txid, copies) = self.aligning.take().expect("aligning");
        let b = Barrier {
            txid,
            action: Action::Prepare,
            attempt,
        };
        self.inner.release(out);
        let result = if self.initialized {
            self.inner.prepare_state(txid)
        } else {
            Err(StateError::new(
                "the task restarted and has not rolled back yet".to_owned(),
            ))
        };
        match result {
            Ok(()) => {
                let anchors: Vec<&Tuple> = copies.iter().collect();
                self.forward(&b, &anchors, out);
                for c in &copies {
                    out.ack(c);
                }
            }
            Err(e) => {
                if self.initialized {
                    out.report_error(&format!(
                        "{}: prepare of checkpoint {txid} failed (the topology rolls back): {e}",
                        self.name
                    ));
                }
                for c in &copies {
                    out.fail(c);
                }
            }
        }
        self.release(out);
    }

    /// Opens every blocked lane and processes the tuples that waited.
    fn release(&mut self, out: &mut OutputCollector<'_>) {
        for lane in 0..self.lanes.len() {
            if self.lanes[lane] == Lane::Blocked {
                self.set_lane(lane, Lane::Open);
            }
        }
        while let Some(t) = self.buffer.pop_front() {
            self.execute(t, out);
            if self.aligning.is_some() {
                // A barrier in the buffer started the next alignment: the rest waits
                // behind it, in order.
                break;
            }
        }
    }

    fn abandon_alignment(&mut self, out: &mut OutputCollector<'_>) {
        if let Some((_, _, copies)) = self.aligning.take() {
            for c in &copies {
                out.fail(c);
            }
        }
        self.release(out);
    }

    fn on_rollback(
        &mut self,
        b: Barrier,
        input: Tuple,
        lane: usize,
        out: &mut OutputCollector<'_>,
    ) {
        if b.attempt == self.generation {
            // The rollback reached us already; this input task has caught up.
            if self.lanes[lane] == Lane::Dropping {
                self.set_lane(lane, Lane::Open);
            }
            return out.ack(&input);
        }
        // A new rollback: everything waiting is from before it.
        self.generation = b.attempt;
        if let Some((_, _, copies)) = self.aligning.take() {
            for c in &copies {
                out.ack(c);
            }
        }
        for t in std::mem::take(&mut self.buffer) {
            out.ack(&t);
        }
        self.inner.release(out);
        match self.inner.rollback_state() {
            Ok(()) => self.initialized = true,
            Err(e) => {
                self.initialized = false;
                out.report_error(&format!(
                    "{}: rollback failed (retried with the next rollback): {e}",
                    self.name
                ));
                out.fail(&input);
            }
        }
        for l in 0..self.lanes.len() {
            self.set_lane(
                l,
                if l == lane {
                    Lane::Open
                } else {
                    Lane::Dropping
                },
            );
        }
        if self.initialized {
            self.forward(&b, &[&input], out);
            out.ack(&input);
        }
    }
}

impl<I: Inner> Bolt for CheckpointBolt<I> {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let mut tasks: Vec<TaskId> = Vec::new();
        for (source, _) in ctx.this_sources() {
            if source.stream == CHECKPOINT_STREAM {
                tasks.extend_from_slice(ctx.component_tasks(source.component.as_str()));
            }
        }
        tasks.sort_unstable();
        tasks.dedup();
        self.lanes = vec![Lane::Open; tasks.len()];
        self.lanes_of = tasks.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        self.barrier_streams = vec![false; ctx.layout().streams().len()];
        for s in ctx.layout().streams() {
            if s.stream == CHECKPOINT_STREAM {
                self.barrier_streams[s.index as usize] = true;
            }
        }
        self.name = format!(
            "bolt '{}' task {}",
            ctx.this_component_id(),
            ctx.this_task_id()
        );
        self.inner.setup(conf, ctx)
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let is_barrier = self
            .barrier_streams
            .get(input.schema().index as usize)
            .copied()
            .unwrap_or(false);
        if self.closed == 0 && !is_barrier {
            return self.inner.execute(input, out);
        }
        let Some(&lane) = self.lanes_of.get(&input.source_task()) else {
            // Ticks and tuples of tasks that are no input (cannot be aligned).
            return self.inner.execute(input, out);
        };
        if is_barrier {
            return self.on_barrier(input, lane, out);
        }
        match self.lanes[lane] {
            Lane::Open => self.inner.execute(input, out),
            Lane::Blocked => self.buffer.push_back(input),
            Lane::Dropping => out.ack(&input),
        }
    }

    fn cleanup(&mut self) {
        self.inner.cleanup()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::component::{Emit, Emitter, Spout, SpoutOutputCollector};
    use crate::topology::TaskLayout;
    use crate::{values, Values};

    #[derive(Clone)]
    struct Src;
    impl Spout for Src {
        fn next_tuple(&mut self, _: &mut SpoutOutputCollector<'_>) {}
        fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
            d.declare(["x"]);
        }
    }

    /// Records what it sees and acks.
    #[derive(Clone)]
    struct Rec(Arc<Mutex<Vec<i64>>>);
    impl Bolt for Rec {
        fn execute(&mut self, t: Tuple, out: &mut OutputCollector<'_>) {
            self.0.lock().unwrap().push(t.get_long(0).unwrap());
            out.ack(&t);
        }
    }

    #[derive(Clone, Default)]
    struct Count;
    impl StatefulBolt for Count {
        type Key = String;
        type Value = u64;
        fn execute(
            &mut self,
            t: Tuple,
            _: &mut KeyValueState<String, u64>,
            out: &mut OutputCollector<'_>,
        ) {
            out.ack(&t)
        }
    }

    #[derive(Default)]
    struct Log(Vec<String>);
    impl Emitter for Log {
        fn emit(&mut self, e: Emit<'_>, _: Option<&mut Vec<TaskId>>) {
            self.0
                .push(format!("emit {} {:?}", e.stream, e.values.as_slice()));
        }
        fn ack(&mut self, t: &Tuple) {
            self.0.push(format!("ack {:?}", t.values()));
        }
        fn fail(&mut self, t: &Tuple) {
            self.0.push(format!("fail {:?}", t.values()));
        }
        fn report_error(&mut self, _: &dyn std::fmt::Display) {}
    }

    #[test]
    fn alignment_buffers_blocked_lanes_and_rollbacks_drop_until_each_lane_caught_up() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut b = TopologyBuilder::new();
        b.set_spout("s", Src, 2);
        b.set_bolt("b", Rec(seen.clone()), 1).shuffle_grouping("s");
        b.set_stateful_bolt("c", Count, 1).shuffle_grouping("s");
        let topology = b.create_topology().unwrap();
        let spec = Arc::new(topology.spec().clone());
        let layout = Arc::new(TaskLayout::new(&spec, 1));
        let task = layout.component_tasks("b")[0];
        let [x, y] = [
            layout.component_tasks("s")[0],
            layout.component_tasks("s")[1],
        ];
        let ctx = TopologyContext::new("t".into(), spec, layout.clone(), task, Arc::from([]), None);
        let schema = |stream: &str| Arc::new(layout.stream("s", stream).unwrap().clone());
        let data = |from: TaskId, v: i64| Tuple::new(schema("default"), from, values![v]);
        let barrier = |from: TaskId, txid: u64, action: Action, attempt: i64| {
            let v: Values = Barrier {
                txid,
                action,
                attempt,
            }
            .values();
            Tuple::new(schema(CHECKPOINT_STREAM), from, v)
        };
        let mut bolt = forwarding(Box::new(Rec(seen.clone())));
        bolt.prepare(&Config::new(), &ctx).unwrap();
        let mut log = Log::default();
        let run = |bolt: &mut CheckpointBolt<Plain>, log: &mut Log, t: Tuple| {
            bolt.execute(t, &mut OutputCollector::new(log));
        };

        // Not initialized yet: a PREPARE is refused (failed) once aligned.
        run(&mut bolt, &mut log, barrier(x, 1, Action::Prepare, 10));
        run(&mut bolt, &mut log, barrier(y, 1, Action::Prepare, 10));
        assert_eq!(log.0.iter().filter(|l| l.starts_with("fail")).count(), 2);
        log.0.clear();

        run(&mut bolt, &mut log, barrier(x, 0, Action::InitState, 11));
        run(&mut bolt, &mut log, data(x, 1));
        run(&mut bolt, &mut log, data(y, 2)); // y's INITSTATE not here yet: from before, dropped
        run(&mut bolt, &mut log, barrier(y, 0, Action::InitState, 11));
        run(&mut bolt, &mut log, data(y, 3));
        assert_eq!(*seen.lock().unwrap(), vec![1, 3]);

        // PREPARE from x: x's tuples wait until y's PREPARE.
        run(&mut bolt, &mut log, barrier(x, 1, Action::Prepare, 12));
        run(&mut bolt, &mut log, data(x, 4));
        run(&mut bolt, &mut log, data(y, 5));
        assert_eq!(*seen.lock().unwrap(), vec![1, 3, 5]);
        run(&mut bolt, &mut log, barrier(y, 1, Action::Prepare, 12));
        assert_eq!(*seen.lock().unwrap(), vec![1, 3, 5, 4]);
        let forwarded: Vec<&String> = log.0.iter().filter(|l| l.starts_with("emit")).collect();
        // Forwarded: the INITSTATE (once) and the PREPARE (once, after alignment).
        assert_eq!(forwarded.len(), 2, "{:?}", log.0);
        assert!(forwarded[0].contains("INITSTATE"), "{forwarded:?}");
        assert!(forwarded[1].contains("PREPARE"), "{forwarded:?}");

        // A rollback from y while x's PREPARE waits: x's waiting tuples are dropped,
        // as is x's data until x's ROLLBACK; a stale PREPARE is acked and ignored.
        run(&mut bolt, &mut log, barrier(x, 2, Action::Prepare, 13));
        run(&mut bolt, &mut log, data(x, 6));
        run(&mut bolt, &mut log, barrier(y, 1, Action::Rollback, 14));
        run(&mut bolt, &mut log, data(x, 7));
        run(&mut bolt, &mut log, barrier(x, 2, Action::Prepare, 13));
        run(&mut bolt, &mut log, data(y, 8));
        run(&mut bolt, &mut log, barrier(x, 1, Action::Rollback, 14));
        run(&mut bolt, &mut log, data(x, 9));
        assert_eq!(*seen.lock().unwrap(), vec![1, 3, 5, 4, 8, 9]);
    }
}
