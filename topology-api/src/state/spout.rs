//! The checkpoint spout (the coordinator) and the wrapper around every user spout of a
//! stateful topology.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    checkpoint_interval_ms, spout_dedup, task_namespace, Action, Barrier, KeyValueState,
    CHECKPOINT_FIELDS, CHECKPOINT_STREAM,
};
use crate::component::{
    BoxError, Emit, Emitter, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
};
use crate::config::Config;
use crate::context::TopologyContext;
use crate::ids::TaskId;
use crate::tuple::Tuple;
use crate::value::Value;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const COMMITTED: &str = "committed";
const COMMITTING: &str = "committing";
const ATTEMPT: &str = "attempt";

/// The checkpoint spout, `$checkpointspout` (Storm's `CheckpointSpout`): one task that
/// drives the checkpoints of a stateful topology. The builder adds it; it is public
/// for documentation and tests.
///
/// It sends one barrier at a time on `$checkpoint` and waits for its tuple tree:
/// `INITSTATE` when it starts, then every `topology.state.checkpoint.interval.ms`
/// `PREPARE n` and, once every task prepared, `COMMIT n` (retried until it succeeds).
/// A failed or timed-out `PREPARE` (or `ROLLBACK`) is followed by a `ROLLBACK`. Its
/// progress (last committed txid, the txid being committed) is kept in the state
/// provider, so a restarted checkpoint spout finishes a decided commit (roll forward)
/// or rolls back.
pub struct CheckpointSpout {
    interval: Duration,
    state: Option<KeyValueState<String, u64>>,
    committed: u64,
    /// What to send next (`None`: the next `PREPARE`), and from when.
    next: Option<(Action, u64)>,
    next_at: Instant,
    /// The barrier in flight: action, txid, attempt.
    inflight: Option<(Action, u64, i64)>,
    attempt: i64,
    last_prepare: Instant,
}

impl Default for CheckpointSpout {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckpointSpout {
    /// A checkpoint spout (configured in `open`).
    pub fn new() -> Self {
        CheckpointSpout {
            interval: Duration::from_millis(super::DEFAULT_CHECKPOINT_INTERVAL_MS),
            state: None,
            committed: 0,
            next: Some((Action::InitState, 0)),
            next_at: Instant::now(),
            inflight: None,
            attempt: 0,
            last_prepare: Instant::now(),
        }
    }

    fn state(&mut self) -> &mut KeyValueState<String, u64> {
        self.state.as_mut().expect("opened")
    }

    fn settle(&mut self, msg_id: &Value, ok: bool, out: &mut SpoutOutputCollector<'_>) {
        let Some((action, txid, attempt)) = self.inflight else {
            return;
        };
        if *msg_id != Value::Int(attempt) {
            return;
        }
        self.inflight = None;
        let now = Instant::now();
        self.next_at = now;
        match (action, ok) {
            (Action::InitState | Action::Rollback, true) => {
                self.next = None;
                self.next_at = now + self.interval;
            }
            (Action::Prepare, true) => {
                // The decision: once recorded, this checkpoint commits, even across a
                // restart of this spout.
                self.state().put(COMMITTING.to_owned(), txid);
                self.state().put(ATTEMPT.to_owned(), attempt as u64);
                match self.state().commit_now() {
                    Ok(()) => self.next = Some((Action::Commit, txid)),
                    Err(e) => {
                        out.report_error(&format!(
                            "checkpoint spout: cannot record the commit of checkpoint {txid}, \
                             rolling back: {e}"
                        ));
                        self.state().delete(&COMMITTING.to_owned());
                        self.next = Some((Action::Rollback, self.committed));
                    }
                }
            }
            (Action::Commit, true) => {
                self.committed = txid;
                self.state().put(COMMITTED.to_owned(), txid);
                self.state().delete(&COMMITTING.to_owned());
                if let Err(e) = self.state().commit_now() {
                    // Not fatal: a restarted checkpoint spout commits this txid again,
                    // which changes nothing.
                    out.report_error(&format!(
                        "checkpoint spout: cannot record that checkpoint {txid} committed: {e}"
                    ));
                }
                self.next = None;
                self.next_at = self.last_prepare + self.interval;
            }
            (Action::Prepare, false) => self.next = Some((Action::Rollback, self.committed)),
            (Action::Commit, false) => {
                self.next = Some((Action::Commit, txid));
                self.next_at = now + self.interval.min(Duration::from_secs(1));
            }
            (Action::InitState | Action::Rollback, false) => {
                self.next = Some((Action::Rollback, self.committed));
                self.next_at = now + self.interval.min(Duration::from_secs(1));
            }
        }
    }
}

impl Spout for CheckpointSpout {
    fn open(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.interval = Duration::from_millis(checkpoint_interval_ms(conf)?);
        let state = KeyValueState::open(conf, &task_namespace(conf, ctx))?;
        self.committed = state.get(&COMMITTED.to_owned()).copied().unwrap_or(0);
        self.attempt = state
            .get(&ATTEMPT.to_owned())
            .map_or(0, |a| *a as i64)
            .max(now_ms());
        self.next = match state.get(&COMMITTING.to_owned()) {
            // Decided before a restart: finish it.
            Some(&n) if n > self.committed => Some((Action::Commit, n)),
            _ => Some((Action::InitState, self.committed)),
        };
        self.state = Some(state);
        self.next_at = Instant::now();
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.inflight.is_some() {
            return;
        }
        let now = Instant::now();
        if now < self.next_at {
            return;
        }
        let (action, txid) = self
            .next
            .take()
            .unwrap_or((Action::Prepare, self.committed + 1));
        if action == Action::Prepare {
            self.last_prepare = now;
        }
        self.attempt = (self.attempt + 1).max(now_ms());
        let b = Barrier {
            txid,
            action,
            attempt: self.attempt,
        };
        self.inflight = Some((action, txid, self.attempt));
        out.emit_stream(
            CHECKPOINT_STREAM,
            b.values(),
            Some(Value::Int(self.attempt)),
        );
    }

    fn ack_with_collector(&mut self, msg_id: Value, out: &mut SpoutOutputCollector<'_>) {
        self.settle(&msg_id, true, out)
    }

    fn fail_with_collector(&mut self, msg_id: Value, out: &mut SpoutOutputCollector<'_>) {
        self.settle(&msg_id, false, out)
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare_stream(CHECKPOINT_STREAM, CHECKPOINT_FIELDS);
    }
}

/// The tuples a spout emitted between two `PREPARE`s.
struct Epoch {
    seq: u64,
    /// The `PREPARE` that closed it.
    txid: Option<u64>,
    /// Trees not complete yet.
    inflight: usize,
    /// A tree failed or timed out: the checkpoint that holds it must fail.
    failed: bool,
    /// User message ids whose trees completed (acked to the user at the commit).
    acked: Vec<Value>,
    /// User message ids whose trees failed (failed to the user at the rollback).
    failed_ids: Vec<Value>,
}

impl Epoch {
    fn new(seq: u64) -> Self {
        Epoch {
            seq,
            txid: None,
            inflight: 0,
            failed: false,
            acked: Vec::new(),
            failed_ids: Vec::new(),
        }
    }
}

/// The spout side of the protocol.
struct Tracking {
    initialized: bool,
    generation: i64,
    last_commit: i64,
    next_id: i64,
    /// Runtime message id → (epoch, user message id).
    inflight: HashMap<i64, (u64, Value)>,
    /// Oldest first; the last one is open (no txid).
    epochs: VecDeque<Epoch>,
    /// The `PREPARE` waiting for its epochs' trees: txid and the tuple.
    held: Option<(u64, Tuple)>,
    /// Committed user message ids (`topology.state.spout.dedup`).
    dedup: Option<KeyValueState<String, u64>>,
    /// Emits of committed ids, to ack to the user after `next_tuple`.
    suppressed: Vec<Value>,
}

fn id_key(id: &Value) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

impl Tracking {
    fn epoch(&mut self, seq: u64) -> Option<&mut Epoch> {
        let first = self.epochs.front()?.seq;
        self.epochs.get_mut(seq.checked_sub(first)? as usize)
    }

    fn settle(&mut self, msg_id: &Value, ok: bool) {
        let Value::Int(id) = msg_id else { return };
        // Unknown: from before a rollback.
        let Some((seq, user)) = self.inflight.remove(id) else {
            return;
        };
        if let Some(e) = self.epoch(seq) {
            e.inflight -= 1;
            if ok {
                e.acked.push(user);
            } else {
                e.failed = true;
                e.failed_ids.push(user);
            }
        }
    }
}

/// Wraps a user spout of a stateful topology (see ARCHITECTURE.md, "Stateful bolts"):
/// forwards barriers in band, tracks its user's tuples per epoch and holds their acks
/// until the commit.
pub(crate) struct CheckpointedSpout {
    inner: Box<dyn Spout>,
    t: Tracking,
    name: String,
}

impl CheckpointedSpout {
    pub(crate) fn new(inner: Box<dyn Spout>) -> Self {
        let mut epochs = VecDeque::new();
        epochs.push_back(Epoch::new(0));
        CheckpointedSpout {
            inner,
            t: Tracking {
                initialized: false,
                generation: i64::MIN,
                last_commit: i64::MIN,
                next_id: 0,
                inflight: HashMap::new(),
                epochs,
                held: None,
                dedup: None,
                suppressed: Vec::new(),
            },
            name: String::new(),
        }
    }

    /// Acks or fails the held `PREPARE` once its epochs are settled.
    fn check_held(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let Some((txid, _)) = &self.t.held else {
            return;
        };
        let txid = *txid;
        let closed = self.t.epochs.len() - 1;
        let closed_epochs = || self.t.epochs.iter().take(closed);
        if closed_epochs().any(|e| e.failed) {
            let (_, t) = self.t.held.take().expect("held");
            return out.emitter_mut().fail(&t);
        }
        if closed_epochs().any(|e| e.inflight > 0) {
            return;
        }
        if let Some(dedup) = &mut self.t.dedup {
            for e in self.t.epochs.iter().take(closed) {
                for id in &e.acked {
                    dedup.put(id_key(id), txid);
                }
            }
            if let Err(e) = dedup.prepare_commit(txid) {
                out.report_error(&format!(
                    "{}: cannot record the message ids of checkpoint {txid}: {e}",
                    self.name
                ));
                let (_, t) = self.t.held.take().expect("held");
                return out.emitter_mut().fail(&t);
            }
        }
        let (_, t) = self.t.held.take().expect("held");
        out.emitter_mut().ack(&t);
    }

    fn forward(out: &mut SpoutOutputCollector<'_>, b: &Barrier, anchor: &Tuple) {
        out.emitter_mut().emit(
            Emit {
                stream: CHECKPOINT_STREAM,
                anchors: &[anchor],
                values: b.values(),
                direct_task: None,
                message_id: None,
            },
            None,
        );
    }

    fn on_barrier(&mut self, b: Barrier, input: Tuple, out: &mut SpoutOutputCollector<'_>) {
        let t = &mut self.t;
        match b.action {
            Action::Prepare => {
                if b.attempt < t.generation {
                    return out.emitter_mut().ack(&input);
                }
                if !t.initialized {
                    // Restarted: what this task emitted before is lost; roll back.
                    return out.emitter_mut().fail(&input);
                }
                let open = t.epochs.back_mut().expect("an open epoch");
                open.txid = Some(b.txid);
                let seq = open.seq + 1;
                t.epochs.push_back(Epoch::new(seq));
                // Everything emitted from here on belongs to the next checkpoint.
                Self::forward(out, &b, &input);
                if let Some((_, old)) = t.held.replace((b.txid, input)) {
                    out.emitter_mut().fail(&old);
                }
                self.check_held(out);
            }
            Action::Commit => {
                if b.attempt < t.generation || b.attempt <= t.last_commit {
                    return out.emitter_mut().ack(&input);
                }
                t.last_commit = b.attempt;
                if let Some(dedup) = &mut t.dedup {
                    if let Err(e) = dedup.commit(b.txid) {
                        out.report_error(&format!(
                            "{}: cannot commit the message ids of checkpoint {}: {e}",
                            self.name, b.txid
                        ));
                        return out.emitter_mut().fail(&input);
                    }
                }
                Self::forward(out, &b, &input);
                let mut done = Vec::new();
                while let Some(e) = t.epochs.front() {
                    let committed = e.txid.is_some_and(|x| x <= b.txid);
                    if !committed || e.inflight > 0 || e.failed {
                        break;
                    }
                    done.extend(t.epochs.pop_front().expect("front").acked);
                }
                out.emitter_mut().ack(&input);
                for id in done {
                    self.inner.ack(id);
                }
            }
            Action::Rollback | Action::InitState => {
                if b.attempt <= t.generation {
                    return out.emitter_mut().ack(&input);
                }
                t.generation = b.attempt;
                // Forward first: the replays emitted from here on come after it.
                Self::forward(out, &b, &input);
                if let Some((_, old)) = t.held.take() {
                    out.emitter_mut().fail(&old);
                }
                let mut replay: Vec<Value> = Vec::new();
                for e in t.epochs.drain(..) {
                    replay.extend(e.acked);
                    replay.extend(e.failed_ids);
                }
                let mut inflight: Vec<(i64, (u64, Value))> = t.inflight.drain().collect();
                inflight.sort_by_key(|(id, _)| *id);
                replay.extend(inflight.into_iter().map(|(_, (_, v))| v));
                t.epochs.push_back(Epoch::new(0));
                let rolled = match &mut t.dedup {
                    Some(d) => d.rollback(),
                    None => Ok(()),
                };
                match rolled {
                    Ok(()) => {
                        t.initialized = true;
                        out.emitter_mut().ack(&input);
                    }
                    Err(e) => {
                        t.initialized = false;
                        out.report_error(&format!(
                            "{}: rollback of the message ids failed: {e}",
                            self.name
                        ));
                        out.emitter_mut().fail(&input);
                    }
                }
                for id in replay {
                    self.inner.fail(id);
                }
            }
        }
    }
}

/// The user spout's emitter during `next_tuple`: tracked emits get runtime message ids.
struct Intercept<'a, 'b> {
    out: &'a mut dyn Emitter,
    t: &'b mut Tracking,
}

impl Emitter for Intercept<'_, '_> {
    fn emit(&mut self, mut emit: Emit<'_>, task_ids: Option<&mut Vec<TaskId>>) {
        let Some(user) = emit.message_id.take() else {
            return self.out.emit(emit, task_ids);
        };
        if let Some(d) = &self.t.dedup {
            if d.get(&id_key(&user)).is_some() {
                // Committed before a restart: its effects are in the state already.
                self.t.suppressed.push(user);
                return;
            }
        }
        let id = self.t.next_id;
        emit.message_id = Some(Value::Int(id));
        self.out.emit(emit, task_ids);
        self.t.next_id += 1;
        let open = self.t.epochs.back_mut().expect("an open epoch");
        open.inflight += 1;
        self.t.inflight.insert(id, (open.seq, user));
    }

    fn ack(&mut self, input: &Tuple) {
        self.out.ack(input)
    }

    fn fail(&mut self, input: &Tuple) {
        self.out.fail(input)
    }

    fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.out.report_error(error)
    }

    fn pending_count(&self) -> usize {
        self.out.pending_count()
    }

    fn set_gauge(&mut self, name: &str, value: i64) {
        self.out.set_gauge(name, value)
    }
}

impl Spout for CheckpointedSpout {
    fn open(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.name = format!(
            "spout '{}' task {}",
            ctx.this_component_id(),
            ctx.this_task_id()
        );
        self.inner.open(conf, ctx)?;
        if spout_dedup(conf)? {
            self.t.dedup = Some(KeyValueState::open(conf, &task_namespace(conf, ctx))?);
        }
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let mut icpt = Intercept {
            out: out.emitter_mut(),
            t: &mut self.t,
        };
        self.inner
            .next_tuple(&mut SpoutOutputCollector::new(&mut icpt));
        for id in std::mem::take(&mut self.t.suppressed) {
            self.inner.ack(id);
        }
    }

    fn ack_with_collector(&mut self, msg_id: Value, out: &mut SpoutOutputCollector<'_>) {
        self.t.settle(&msg_id, true);
        self.check_held(out);
    }

    fn fail_with_collector(&mut self, msg_id: Value, out: &mut SpoutOutputCollector<'_>) {
        self.t.settle(&msg_id, false);
        self.check_held(out);
    }

    fn receive_tuple(&mut self, input: Tuple, out: &mut SpoutOutputCollector<'_>) {
        match Barrier::read(&input) {
            Some(b) if input.source_stream() == CHECKPOINT_STREAM => self.on_barrier(b, input, out),
            _ => {
                out.report_error(&format!(
                    "{}: unexpected tuple {:?}",
                    self.name,
                    input.values()
                ));
                out.emitter_mut().fail(&input)
            }
        }
    }

    fn activate(&mut self) {
        self.inner.activate()
    }

    fn deactivate(&mut self) {
        self.inner.deactivate()
    }

    fn close(&mut self) {
        self.inner.close()
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        self.inner.declare_output_fields(declarer)
    }

    fn component_configuration(&self) -> Config {
        self.inner.component_configuration()
    }
}
