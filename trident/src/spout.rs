//! Trident spouts: where batches come from.
//!
//! | kind | guarantee | use with |
//! |---|---|---|
//! | [`Transactional`] | a txid always yields the same batch | any state |
//! | [`Opaque`] | each tuple succeeds in exactly one batch; a replayed txid may differ | opaque state |
//! | [`NonTransactional`] | none: a replay emits whatever the spout gives | non-transactional state |
//!
//! Transactional and opaque spouts are *partitioned*: the spout names its partitions,
//! the runtime spreads them over the spout's tasks and, for every batch and partition,
//! asks the [`PartitionedEmitter`] to emit the batch that follows the previous one.
//! What the emitter returns describes the batch (its *metadata*, e.g. an offset range);
//! the runtime stores it (in ZooKeeper on a cluster) before the batch can commit, so
//! that a replay of the txid, even in another process after a crash, emits the same
//! batch again through [`PartitionedEmitter::emit_again`].

use std::sync::{Arc, Mutex};

use squall_api::{BoxError, Config, Fields, TopologyContext, Value, Values};

use crate::tuple::TridentCollector;

/// A batch being emitted: its txid and which attempt this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransactionAttempt {
    /// The batch's transaction id: 1, 2, 3, ... in commit order.
    pub txid: u64,
    /// Distinguishes the attempts of one txid (higher is newer).
    pub attempt: u64,
}

/// Emits the batches of a partitioned spout's partitions (Storm's
/// `IPartitionedTridentSpout.Emitter` / `IOpaquePartitionedTridentSpout.Emitter`).
pub trait PartitionedEmitter: Send + 'static {
    /// All partitions of the spout (every task gets the same answer; each task serves
    /// the partitions at positions `i` with `i % tasks == task_index`). Asked before each
    /// batch, so partitions can be added.
    fn partitions(&mut self) -> Result<Vec<String>, BoxError>;

    /// Emits a new batch of `partition` for `tx`: the one following the batch `prev`
    /// describes (`None`: the partition's first batch). Returns the metadata that
    /// describes the batch emitted.
    fn emit_new(
        &mut self,
        tx: &TransactionAttempt,
        partition: &str,
        prev: Option<&Value>,
        out: &mut TridentCollector,
    ) -> Result<Value, BoxError>;

    /// Emits again exactly the batch that `meta` describes (a replay of a txid).
    fn emit_again(
        &mut self,
        tx: &TransactionAttempt,
        partition: &str,
        meta: &Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError>;
}

/// A partitioned spout: its output fields and a factory of emitters (one per task).
pub trait PartitionedSpout: Send + Sync + 'static {
    /// The fields of the tuples it emits.
    fn output_fields(&self) -> Fields;
    /// A new emitter for one task.
    fn emitter(
        &self,
        conf: &Config,
        ctx: &TopologyContext,
    ) -> Result<Box<dyn PartitionedEmitter>, BoxError>;
}

/// A spout that emits whole batches with no replay guarantee (Storm's `IBatchSpout`
/// used without transactional guarantees). Each task gets its own clone.
pub trait BatchSpout: Send + 'static {
    /// The fields of the tuples it emits.
    fn output_fields(&self) -> Fields;
    /// Called once per task.
    fn open(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// Emits this task's part of batch `tx`.
    fn emit_batch(
        &mut self,
        tx: &TransactionAttempt,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError>;
}

/// What `TridentTopology::new_stream` accepts: [`Transactional`], [`Opaque`],
/// [`NonTransactional`], or a built-in test spout ([`FixedBatchSpout`] is transactional).
pub trait TridentSpout {
    /// How the runtime drives it.
    fn into_def(self) -> SpoutDef;
}

/// Marks a partitioned spout as transactional: a txid always yields the same batch.
pub struct Transactional<S>(pub S);
/// Marks a partitioned spout as opaque transactional: each tuple succeeds in exactly
/// one batch, but a replayed txid may emit a different batch.
pub struct Opaque<S>(pub S);
/// Marks a batch spout as non-transactional.
pub struct NonTransactional<S>(pub S);

/// How a spout is driven (built by [`TridentSpout::into_def`]).
#[derive(Clone)]
pub struct SpoutDef {
    pub(crate) fields: Fields,
    pub(crate) kind: SpoutKind,
}

#[derive(Clone)]
pub(crate) enum SpoutKind {
    Partitioned {
        spout: Arc<dyn PartitionedSpout>,
        transactional: bool,
    },
    Batch(Arc<dyn Fn() -> Box<dyn BatchSpout> + Send + Sync>),
    Drpc {
        function: String,
        local: Option<squall_drpc::LocalDrpc>,
    },
}

impl<S: PartitionedSpout> TridentSpout for Transactional<S> {
    fn into_def(self) -> SpoutDef {
        SpoutDef {
            fields: self.0.output_fields(),
            kind: SpoutKind::Partitioned {
                spout: Arc::new(self.0),
                transactional: true,
            },
        }
    }
}

impl<S: PartitionedSpout> TridentSpout for Opaque<S> {
    fn into_def(self) -> SpoutDef {
        SpoutDef {
            fields: self.0.output_fields(),
            kind: SpoutKind::Partitioned {
                spout: Arc::new(self.0),
                transactional: false,
            },
        }
    }
}

impl<S: BatchSpout + Clone> TridentSpout for NonTransactional<S> {
    fn into_def(self) -> SpoutDef {
        let fields = self.0.output_fields();
        let proto = Mutex::new(self.0);
        SpoutDef {
            fields,
            kind: SpoutKind::Batch(Arc::new(move || {
                Box::new(proto.lock().unwrap_or_else(|p| p.into_inner()).clone())
            })),
        }
    }
}

/// Reads batch metadata made by [`range_meta`]: `[start, end]`, for spouts whose
/// batches are offset ranges.
pub fn parse_range(meta: &Value) -> Result<(u64, u64), BoxError> {
    match meta {
        Value::List(l) if l.len() == 2 => match (l[0].as_i64(), l[1].as_i64()) {
            (Some(s), Some(e)) if 0 <= s && s <= e => Ok((s as u64, e as u64)),
            _ => Err(format!("bad batch metadata {meta:?}: expected [start, end]").into()),
        },
        _ => Err(format!("bad batch metadata {meta:?}: expected [start, end]").into()),
    }
}

/// Batch metadata for the offsets `start..end` (see [`parse_range`]).
pub fn range_meta(start: u64, end: u64) -> Value {
    Value::List(vec![Value::Int(start as i64), Value::Int(end as i64)])
}

/// A transactional spout over a fixed list of tuples, emitted in batches of at most
/// `max_batch_size`, optionally cycling forever (Storm's `FixedBatchSpout`). One
/// partition; batch `n` always holds the same tuples.
///
/// ```
/// use squall_api::values;
/// use squall_trident::FixedBatchSpout;
/// let spout = FixedBatchSpout::new(["sentence"], 3, vec![
///     values!["the cow jumped over the moon"],
///     values!["four score and seven years ago"],
/// ]).cycle(true);
/// # let _ = spout;
/// ```
#[derive(Clone)]
pub struct FixedBatchSpout {
    fields: Fields,
    max_batch_size: usize,
    tuples: Arc<Vec<Values>>,
    cycle: bool,
}

impl FixedBatchSpout {
    /// A spout emitting `tuples` (each with `fields`) in batches of at most
    /// `max_batch_size`.
    pub fn new(fields: impl Into<Fields>, max_batch_size: usize, tuples: Vec<Values>) -> Self {
        FixedBatchSpout {
            fields: fields.into(),
            max_batch_size: max_batch_size.max(1),
            tuples: Arc::new(tuples),
            cycle: false,
        }
    }

    /// Whether to start over after the last tuple (default: stop).
    pub fn cycle(mut self, cycle: bool) -> Self {
        self.cycle = cycle;
        self
    }

    fn emit_range(&self, start: u64, end: u64, out: &mut TridentCollector) {
        let n = self.tuples.len() as u64;
        for i in start..end {
            out.emit(self.tuples[(i % n) as usize].clone());
        }
    }
}

impl PartitionedSpout for FixedBatchSpout {
    fn output_fields(&self) -> Fields {
        self.fields.clone()
    }
    fn emitter(
        &self,
        _conf: &Config,
        _ctx: &TopologyContext,
    ) -> Result<Box<dyn PartitionedEmitter>, BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl PartitionedEmitter for FixedBatchSpout {
    fn partitions(&mut self) -> Result<Vec<String>, BoxError> {
        Ok(vec!["0".to_owned()])
    }
    fn emit_new(
        &mut self,
        _tx: &TransactionAttempt,
        _partition: &str,
        prev: Option<&Value>,
        out: &mut TridentCollector,
    ) -> Result<Value, BoxError> {
        let start = prev.map(parse_range).transpose()?.map_or(0, |(_, e)| e);
        let n = self.tuples.len() as u64;
        let limit = if self.cycle && n > 0 { u64::MAX } else { n };
        let end = (start + self.max_batch_size as u64).min(limit).max(start);
        self.emit_range(start, end, out);
        Ok(range_meta(start, end))
    }
    fn emit_again(
        &mut self,
        _tx: &TransactionAttempt,
        _partition: &str,
        meta: &Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        let (start, end) = parse_range(meta)?;
        if end > start && self.tuples.is_empty() {
            return Err("FixedBatchSpout has no tuples".into());
        }
        self.emit_range(start, end, out);
        Ok(())
    }
}

impl TridentSpout for FixedBatchSpout {
    fn into_def(self) -> SpoutDef {
        Transactional(self).into_def()
    }
}

/// A finite spout fed by the test or program that holds it (Storm's
/// `FeederBatchSpout`): tuples given to [`feed`](Self::feed) are spread over its
/// partitions and emitted in batches of at most `max_batch_size` per partition. It is
/// transactional or opaque as you wrap it ([`Transactional`] / [`Opaque`]); with
/// [`vary_batches`](Self::vary_batches) a new batch takes a random size, so an opaque
/// replay really differs. It lives in one process (local mode).
#[derive(Clone)]
pub struct FeederSpout {
    fields: Fields,
    partitions: Arc<Mutex<Vec<Vec<Values>>>>,
    next: Arc<Mutex<usize>>,
    max_batch_size: usize,
    vary: Option<u64>,
}

impl FeederSpout {
    /// A feeder of tuples with `fields`, with `partitions` partitions.
    pub fn new(fields: impl Into<Fields>, partitions: usize) -> Self {
        FeederSpout {
            fields: fields.into(),
            partitions: Arc::new(Mutex::new(vec![Vec::new(); partitions.max(1)])),
            next: Arc::new(Mutex::new(0)),
            max_batch_size: 100,
            vary: None,
        }
    }

    /// At most this many tuples per partition per batch (default 100).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = n.max(1);
        self
    }

    /// New batches take a random size in `1..=max_batch_size` (seeded).
    pub fn vary_batches(mut self, seed: u64) -> Self {
        self.vary = Some(seed);
        self
    }

    /// Adds tuples, round-robin over the partitions.
    pub fn feed(&self, tuples: impl IntoIterator<Item = Values>) {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let n = parts.len();
        for t in tuples {
            parts[*next % n].push(t);
            *next += 1;
        }
    }

    /// How many tuples were fed in all.
    pub fn fed(&self) -> usize {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_index(partition: &str) -> Result<usize, BoxError> {
        partition
            .parse()
            .map_err(|_| format!("unknown feeder partition '{partition}'").into())
    }

    fn emit_range(
        &self,
        p: usize,
        start: u64,
        end: u64,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let part = parts
            .get(p)
            .ok_or_else(|| format!("unknown feeder partition {p}"))?;
        if end as usize > part.len() {
            return Err(format!("feeder partition {p} has no tuples {start}..{end}").into());
        }
        for t in &part[start as usize..end as usize] {
            out.emit(t.clone());
        }
        Ok(())
    }
}

impl PartitionedSpout for FeederSpout {
    fn output_fields(&self) -> Fields {
        self.fields.clone()
    }
    fn emitter(
        &self,
        _conf: &Config,
        ctx: &TopologyContext,
    ) -> Result<Box<dyn PartitionedEmitter>, BoxError> {
        let rng = self
            .vary
            .map(|seed| fastrand::Rng::with_seed(seed ^ u64::from(ctx.this_task_id().0)));
        Ok(Box::new(FeederEmitter {
            feeder: self.clone(),
            rng,
        }))
    }
}

struct FeederEmitter {
    feeder: FeederSpout,
    rng: Option<fastrand::Rng>,
}

impl PartitionedEmitter for FeederEmitter {
    fn partitions(&mut self) -> Result<Vec<String>, BoxError> {
        let n = self
            .feeder
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        Ok((0..n).map(|i| i.to_string()).collect())
    }
    fn emit_new(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        prev: Option<&Value>,
        out: &mut TridentCollector,
    ) -> Result<Value, BoxError> {
        let p = FeederSpout::partition_index(partition)?;
        let start = prev.map(parse_range).transpose()?.map_or(0, |(_, e)| e);
        let available = self
            .feeder
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(p)
            .map_or(0, Vec::len) as u64;
        let size = match &mut self.rng {
            Some(rng) => rng.u64(1..=self.feeder.max_batch_size as u64),
            None => self.feeder.max_batch_size as u64,
        };
        let end = (start + size).min(available).max(start);
        self.feeder.emit_range(p, start, end, out)?;
        Ok(range_meta(start, end))
    }
    fn emit_again(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        meta: &Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        let p = FeederSpout::partition_index(partition)?;
        let (start, end) = parse_range(meta)?;
        self.feeder.emit_range(p, start, end, out)
    }
}
