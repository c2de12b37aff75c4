//! The master batch coordinator: one spout task per batch group that starts batches,
//! keeps at most `topology.max.spout.pending` of them in flight, commits them strictly
//! in txid order and replays failed ones (Storm's `MasterBatchCoordinator`).
//!
//! A batch goes through: emitted (`$batch` to the spout stages; its tuple tree
//! completes when every task finished the batch) → processed → committing (`$commit`
//! to the stages holding state, once every earlier batch committed) → committed. What
//! must survive a restart is stored in the group's [`CoordinatorStore`] before it
//! matters: the last committed txid, and the txid being committed (whose replay must
//! emit the same batch, for opaque spouts too), and a count of restarts that keeps
//! attempt numbers increasing.
//!
//! On a failed or timed-out batch, every in-flight batch that has not started
//! committing is emitted again, in txid order, with new attempts (a later batch of an
//! opaque spout follows the earlier one, so it cannot stand when that one changes). On
//! a failed commit, that batch alone is emitted again, marked to reuse its metadata.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use squall_api::{
    values, BoxError, Config, OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyContext,
    Value,
};
use squall_drpc::{DrpcInvocations, LocalDrpc, RemoteInvocations};

use crate::plan::{Plan, ATTEMPT, BATCH_STREAM, COMMIT_STREAM, TXID};
use crate::store::CoordinatorStore;

const KIND_BATCH: i64 = 0;
const KIND_COMMIT: i64 = 1;

/// The DRPC invocations a topology uses: the local server in local mode, else the
/// servers of `drpc.servers`.
pub(crate) fn invocations(
    conf: &Config,
    local: Option<LocalDrpc>,
) -> Result<Arc<dyn DrpcInvocations>, BoxError> {
    match local {
        Some(l) => Ok(Arc::new(l)),
        None => Ok(Arc::new(RemoteInvocations::from_conf(conf)?)),
    }
}

/// `(server, id)` from a request's return info.
pub(crate) fn return_info(v: &Value) -> (String, String) {
    match v {
        Value::Map(m) => (
            m.get("server")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            m.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
        ),
        _ => (String::new(), String::new()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// To be emitted (again) once `not_before` has passed.
    ToEmit,
    Processing,
    Processed,
    Committing,
}

struct Tx {
    attempt: u64,
    phase: Phase,
    reuse: bool,
    failures: u32,
    not_before: Instant,
    /// The DRPC request of the batch (DRPC groups), or null.
    payload: Value,
    /// When the batch was first emitted.
    started: Instant,
}

/// What the coordinator stores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Stored {
    committed: u64,
    #[serde(default)]
    committing: Option<u64>,
    #[serde(default)]
    incarnation: u64,
}

pub(crate) struct Coordinator {
    plan: Arc<Plan>,
    group: usize,
    store: Option<Arc<dyn CoordinatorStore>>,
    key: String,
    stored: Stored,
    max_pending: usize,
    interval: Duration,
    next_txid: u64,
    counter: u64,
    in_flight: BTreeMap<u64, Tx>,
    last_start: Option<Instant>,
    active: bool,
    committers: bool,
    drpc: Option<(String, Arc<dyn DrpcInvocations>)>,
    last_fetch: Instant,
    /// `topology.message.timeout.secs`, to tell a timeout from a failure.
    timeout: Duration,
    /// Errors to report at the next `next_tuple` (`fail` has no collector).
    errors: Vec<String>,
    /// When the attempt in flight of each txid was emitted.
    emitted: BTreeMap<u64, Instant>,
    /// Attempts emitted again, since this coordinator started.
    replays: u64,
    /// Start to commit of the last committed batch.
    last_latency_ms: u128,
}

impl Coordinator {
    pub(crate) fn new(plan: Arc<Plan>, group: usize) -> Self {
        let committers = !plan.groups[group].committer_stages.is_empty();
        Coordinator {
            key: format!("{}/coordinator", plan.groups[group].txstate),
            plan,
            group,
            store: None,
            stored: Stored::default(),
            max_pending: 1,
            interval: Duration::from_millis(500),
            next_txid: 1,
            counter: 0,
            in_flight: BTreeMap::new(),
            last_start: None,
            active: true,
            committers,
            drpc: None,
            last_fetch: Instant::now(),
            timeout: Duration::from_secs(30),
            errors: Vec::new(),
            emitted: BTreeMap::new(),
            replays: 0,
            last_latency_ms: 0,
        }
    }

    fn save(&self) -> Result<(), String> {
        if let Some(store) = &self.store {
            let bytes = serde_json::to_vec(&self.stored).map_err(|e| e.to_string())?;
            store.put(&self.key, &bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn new_attempt(&mut self) -> u64 {
        self.counter += 1;
        (self.stored.incarnation << 32) | (self.counter & 0xffff_ffff)
    }

    fn emit_batch(&mut self, out: &mut SpoutOutputCollector<'_>, txid: u64) {
        let attempt = self.new_attempt();
        let committed = self.stored.committed;
        self.emitted.insert(txid, Instant::now());
        let tx = self.in_flight.get_mut(&txid).expect("in flight");
        tx.attempt = attempt;
        tx.phase = Phase::Processing;
        out.emit_stream(
            BATCH_STREAM,
            values![
                txid as i64,
                attempt as i64,
                committed as i64,
                tx.reuse,
                tx.payload.clone()
            ],
            Some(msg_id(KIND_BATCH, txid, attempt)),
        );
    }

    /// Commits (or starts committing) processed batches in txid order.
    fn advance(&mut self, out: &mut SpoutOutputCollector<'_>) {
        loop {
            let Some((&txid, tx)) = self.in_flight.iter().next() else {
                return;
            };
            if tx.phase != Phase::Processed || txid != self.stored.committed + 1 {
                return;
            }
            if !self.committers {
                let tx = self.in_flight.remove(&txid).expect("in flight");
                self.emitted.remove(&txid);
                self.last_latency_ms = tx.started.elapsed().as_millis();
                crate::metrics::record_commit(
                    &self.plan.groups[self.group].txstate,
                    tx.started.elapsed(),
                );
                self.stored.committed = txid;
                if let Err(e) = self.save() {
                    tracing::warn!("Trident coordinator: cannot store committed txid {txid}: {e}");
                }
                continue;
            }
            self.stored.committing = Some(txid);
            if let Err(e) = self.save() {
                // Not durable: do not commit yet, try again on the next call.
                tracing::warn!("Trident coordinator: cannot store txid {txid} as committing: {e}");
                self.stored.committing = None;
                return;
            }
            let tx = self.in_flight.get_mut(&txid).expect("in flight");
            tx.phase = Phase::Committing;
            // The same batch from now on, whatever happens.
            tx.reuse = true;
            let attempt = tx.attempt;
            out.emit_stream(
                COMMIT_STREAM,
                values![txid as i64, attempt as i64],
                Some(msg_id(KIND_COMMIT, txid, attempt)),
            );
            return;
        }
    }

    fn replay_all(&mut self, why: &str) {
        let now = Instant::now();
        let group = &self.plan.groups[self.group].txstate;
        for (&txid, tx) in self.in_flight.iter_mut() {
            if tx.phase == Phase::Committing {
                continue;
            }
            crate::metrics::record_replays(group, 1);
            self.replays += 1;
            tx.failures += 1;
            let backoff = Duration::from_millis(50u64 << tx.failures.min(6));
            tx.phase = Phase::ToEmit;
            tx.not_before = now + backoff;
            tracing::debug!("Trident: replaying batch {txid}: {why}");
        }
    }
}

fn msg_id(kind: i64, txid: u64, attempt: u64) -> Value {
    Value::List(vec![
        Value::Int(kind),
        Value::Int(txid as i64),
        Value::Int(attempt as i64),
    ])
}

fn parse_msg_id(v: &Value) -> Option<(i64, u64, u64)> {
    match v {
        Value::List(l) if l.len() == 3 => {
            Some((l[0].as_i64()?, l[1].as_i64()? as u64, l[2].as_i64()? as u64))
        }
        _ => None,
    }
}

impl Spout for Coordinator {
    /// The coordinator keeps its own number of batches in flight
    /// (`topology.max.spout.pending`, Storm's default of one): no automatic flow control.
    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set(squall_api::config::keys::SQUALL_SPOUT_FLOW_CONTROL, false);
        c
    }

    fn open(&mut self, conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        if conf.num_ackers()? == 0 {
            return Err("Trident needs acking to know when a batch is done: \
                        topology.acker.executors must not be 0"
                .into());
        }
        let group = &self.plan.groups[self.group];
        self.interval = Duration::from_millis(conf.trident_batch_emit_interval_millis()?);
        self.timeout = Duration::from_secs(conf.message_timeout_secs()?);
        if let Some((function, local)) = group.drpc.clone() {
            // DRPC: one request per batch, started as soon as it is fetched.
            self.max_pending = conf.max_spout_pending()?.unwrap_or(16) as usize;
            self.interval = Duration::ZERO;
            self.stored.incarnation = squall_cluster::state::now_secs() & 0x7fff_ffff;
            self.drpc = Some((function.clone(), invocations(conf, local)?));
            return Ok(());
        }
        // Storm's coordinator keeps one batch in flight unless told otherwise.
        self.max_pending = conf.max_spout_pending()?.unwrap_or(1).max(1) as usize;
        let store = crate::store::open_store(conf)?;
        if let Some(bytes) = store.get(&self.key)? {
            self.stored = serde_json::from_slice(&bytes)
                .map_err(|e| format!("unreadable coordinator state at {}: {e}", self.key))?;
        }
        self.stored.incarnation += 1;
        self.store = Some(store);
        self.save()?;
        self.next_txid = self.stored.committed + 1;
        // A batch that was committing when the last coordinator stopped may be partly
        // committed: it must come back with the same metadata.
        if let Some(c) = self
            .stored
            .committing
            .filter(|&c| c > self.stored.committed)
        {
            self.in_flight.insert(
                c,
                Tx {
                    attempt: 0,
                    phase: Phase::ToEmit,
                    reuse: true,
                    failures: 0,
                    not_before: Instant::now(),
                    payload: Value::Null,
                    started: Instant::now(),
                },
            );
            self.next_txid = c + 1;
        }
        tracing::info!(
            "Trident coordinator for {}: last committed batch {}, up to {} in flight, a batch every {} ms",
            group.txstate,
            self.stored.committed,
            self.max_pending,
            self.interval.as_millis()
        );
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let now = Instant::now();
        for e in self.errors.drain(..) {
            out.report_error(&e);
        }
        // What the UI and /metrics show for the batch group.
        out.set_gauge("trident.batches.in-flight", self.in_flight.len() as i64);
        out.set_gauge("trident.txid.committed", self.stored.committed as i64);
        out.set_gauge("trident.replays", self.replays as i64);
        out.set_gauge("trident.batch.latency-ms", self.last_latency_ms as i64);
        // Replays first, in txid order.
        let due: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, tx)| tx.phase == Phase::ToEmit && tx.not_before <= now)
            .map(|(&t, _)| t)
            .collect();
        if let Some(&first) = due.first() {
            // Only emit a replay when every earlier to-emit batch goes too.
            let blocked = self
                .in_flight
                .range(..first)
                .any(|(_, tx)| tx.phase == Phase::ToEmit);
            if !blocked {
                for txid in due {
                    self.emit_batch(out, txid);
                }
            }
        }
        self.advance(out);
        // A new batch follows the ones before it: none starts while one waits for its
        // replay.
        let replaying = self.in_flight.values().any(|tx| tx.phase == Phase::ToEmit);
        if !self.active || replaying || self.in_flight.len() >= self.max_pending {
            // A DRPC server fails the requests of a function nobody fetches any more:
            // tell it this topology is still there while it is busy.
            if let Some((function, drpc)) = &self.drpc {
                if self.active && now.duration_since(self.last_fetch) > Duration::from_secs(2) {
                    self.last_fetch = now;
                    let _ = drpc.fetch(function, 0);
                }
            }
            return;
        }
        if self
            .last_start
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return;
        }
        let payload = match &self.drpc {
            Some((function, drpc)) => match drpc.fetch(function, 1) {
                Ok(mut reqs) if !reqs.is_empty() => {
                    let r = reqs.remove(0);
                    let mut m = BTreeMap::new();
                    m.insert("id".to_owned(), Value::from(r.id));
                    m.insert("args".to_owned(), Value::from(r.args));
                    m.insert("server".to_owned(), Value::from(r.server));
                    Value::Map(m)
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!("DRPC function '{function}': cannot fetch requests: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    return;
                }
            },
            None => Value::Null,
        };
        let txid = self.next_txid;
        self.next_txid += 1;
        self.last_start = Some(now);
        self.in_flight.insert(
            txid,
            Tx {
                attempt: 0,
                phase: Phase::ToEmit,
                reuse: false,
                failures: 0,
                not_before: now,
                payload,
                started: now,
            },
        );
        self.emit_batch(out, txid);
    }

    fn ack(&mut self, msg_id: Value) {
        let Some((kind, txid, attempt)) = parse_msg_id(&msg_id) else {
            return;
        };
        let Some(tx) = self.in_flight.get_mut(&txid) else {
            return;
        };
        if tx.attempt != attempt {
            return;
        }
        match (kind, tx.phase) {
            (KIND_BATCH, Phase::Processing) => {
                tx.phase = Phase::Processed;
                tx.failures = 0;
            }
            (KIND_COMMIT, Phase::Committing) => {
                let tx = self.in_flight.remove(&txid).expect("in flight");
                self.emitted.remove(&txid);
                self.last_latency_ms = tx.started.elapsed().as_millis();
                crate::metrics::record_commit(
                    &self.plan.groups[self.group].txstate,
                    tx.started.elapsed(),
                );
                self.stored.committed = txid;
                self.stored.committing = None;
                if let Err(e) = self.save() {
                    tracing::warn!("Trident coordinator: cannot store committed txid {txid}: {e}");
                }
            }
            _ => {}
        }
    }

    fn fail(&mut self, msg_id: Value) {
        let Some((kind, txid, attempt)) = parse_msg_id(&msg_id) else {
            return;
        };
        let Some(tx) = self.in_flight.get_mut(&txid) else {
            return;
        };
        if tx.attempt != attempt {
            return;
        }
        match (kind, tx.phase) {
            (KIND_BATCH, Phase::Processing) => {
                let age = self
                    .emitted
                    .get(&txid)
                    .map(Instant::elapsed)
                    .unwrap_or_default();
                if age + Duration::from_millis(500) >= self.timeout {
                    self.errors.push(format!(
                        "batch {txid} of {} timed out after {} s (attempt {attempt}): not every task finished it \
                         (the stages that waited for it report which operation did not); replaying it",
                        self.plan.groups[self.group].txstate,
                        age.as_secs()
                    ));
                }
                tracing::info!(
                    "Trident: batch {txid} of {} failed or timed out (attempt {attempt}); replaying it and the batches after it",
                    self.plan.groups[self.group].txstate
                );
                self.replay_all("an earlier batch failed");
            }
            (KIND_COMMIT, Phase::Committing) => {
                tracing::info!(
                    "Trident: the commit of batch {txid} of {} failed; replaying it with the same metadata",
                    self.plan.groups[self.group].txstate
                );
                tx.failures += 1;
                tx.phase = Phase::ToEmit;
                tx.not_before = Instant::now() + Duration::from_millis(50u64 << tx.failures.min(6));
                crate::metrics::record_replays(&self.plan.groups[self.group].txstate, 1);
                self.replays += 1;
            }
            _ => {}
        }
    }

    fn activate(&mut self) {
        self.active = true;
    }

    fn deactivate(&mut self) {
        self.active = false;
    }

    fn close(&mut self) {
        if let Some((function, drpc)) = &self.drpc {
            for tx in self.in_flight.values() {
                let (server, id) = return_info(&tx.payload);
                let _ = drpc.fail(
                    &server,
                    &id,
                    &format!("the topology serving DRPC function '{function}' stopped"),
                );
            }
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare_stream(
            BATCH_STREAM,
            [TXID, ATTEMPT, "$committed", "$reuse", "$payload"],
        );
        d.declare_stream(COMMIT_STREAM, [TXID, ATTEMPT]);
    }
}
