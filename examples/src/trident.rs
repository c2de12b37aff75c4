//! Storm's TridentWordCount on Squall: the topology, and a sentence spout whose batches
//! are known in advance, so final counts can be checked.

use squall_api::{values, BoxError, Config, Fields, Topology, TopologyContext, Value};
use squall_trident::spout::{parse_range, range_meta};
use squall_trident::{
    Count, FilterNull, MapGet, MemoryMapState, PartitionedEmitter, PartitionedSpout, RedisMapState,
    Sum, TransactionAttempt, Transactional, TridentCollector, TridentError, TridentTopology,
    TridentTuple,
};

use crate::SENTENCES;

/// A transactional spout of Storm's five RandomSentenceSpout sentences, in order:
/// sentence `i` (from 0) is `SENTENCES[i % 5]` and lives in partition `i % partitions`.
/// With a limit it emits exactly that many sentences, then empty batches.
#[derive(Clone, Debug)]
pub struct SentenceSpout {
    /// How many partitions.
    pub partitions: u32,
    /// Sentences per partition per batch.
    pub batch_size: u64,
    /// Stop after this many sentences in all.
    pub limit: Option<u64>,
}

impl SentenceSpout {
    fn partition_len(&self, p: u64) -> u64 {
        let n = u64::from(self.partitions.max(1));
        match self.limit {
            Some(limit) if limit > p => (limit - p).div_ceil(n),
            Some(_) => 0,
            None => u64::MAX,
        }
    }

    fn emit(&self, p: u64, start: u64, end: u64, out: &mut TridentCollector) {
        let n = u64::from(self.partitions.max(1));
        for k in start..end {
            out.emit(values![SENTENCES[((k * n + p) % 5) as usize]]);
        }
    }
}

impl PartitionedSpout for SentenceSpout {
    fn output_fields(&self) -> Fields {
        Fields::new(["sentence"])
    }
    fn emitter(
        &self,
        _conf: &Config,
        _ctx: &TopologyContext,
    ) -> Result<Box<dyn PartitionedEmitter>, BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl PartitionedEmitter for SentenceSpout {
    fn partitions(&mut self) -> Result<Vec<String>, BoxError> {
        Ok((0..self.partitions.max(1)).map(|p| p.to_string()).collect())
    }
    fn emit_new(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        prev: Option<&Value>,
        out: &mut TridentCollector,
    ) -> Result<Value, BoxError> {
        let p: u64 = partition.parse()?;
        let start = prev.map(parse_range).transpose()?.map_or(0, |(_, e)| e);
        let end = start
            .saturating_add(self.batch_size)
            .min(self.partition_len(p))
            .max(start);
        self.emit(p, start, end, out);
        Ok(range_meta(start, end))
    }
    fn emit_again(
        &mut self,
        _tx: &TransactionAttempt,
        partition: &str,
        meta: &Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        let (start, end) = parse_range(meta)?;
        self.emit(partition.parse()?, start, end, out);
        Ok(())
    }
}

/// Splits the first input field on spaces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Split;

impl squall_trident::Function for Split {
    fn execute(
        &mut self,
        t: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        for word in t.get_string(0)?.split(' ').filter(|w| !w.is_empty()) {
            out.emit(values![word]);
        }
        Ok(())
    }
}

/// How to build TridentWordCount.
#[derive(Clone, Debug)]
pub struct TridentWordCountOptions {
    /// The spout.
    pub spout: SentenceSpout,
    /// Tasks of the spout and of the count state.
    pub parallelism: u32,
    /// Keep the counts in this Redis (`redis://host:port`) instead of memory.
    pub redis: Option<String>,
    /// Serve DRPC from this local server (local mode) instead of `drpc.servers`.
    pub local_drpc: Option<squall_trident::LocalDrpc>,
}

/// TridentWordCount: sentences → split → group by word → count (persistent); DRPC
/// function `words` → split its argument → the count of each word → sum.
pub fn trident_word_count(o: &TridentWordCountOptions) -> Result<Topology, TridentError> {
    let mut topology = TridentTopology::new();
    let sentences = topology
        .new_stream("sentences", Transactional(o.spout.clone()))
        .parallelism_hint(o.parallelism)
        .each(["sentence"], Split, ["word"])
        .group_by(["word"]);
    let counts = match &o.redis {
        Some(url) => {
            sentences.persistent_aggregate(RedisMapState::transactional(url), Count, ["count"])
        }
        None => sentences.persistent_aggregate(MemoryMapState::transactional(), Count, ["count"]),
    }
    .parallelism_hint(o.parallelism);
    let requests = match &o.local_drpc {
        Some(drpc) => topology.new_local_drpc_stream("words", drpc),
        None => topology.new_drpc_stream("words"),
    };
    requests
        .each(["args"], Split, ["word"])
        .group_by(["word"])
        .state_query(&counts, ["word"], MapGet, ["count"])
        .filter(["count"], FilterNull)
        .aggregate(["count"], Sum, ["sum"]);
    topology.build()
}

/// The count of each word after `n` sentences of [`SentenceSpout`].
pub fn expected_counts(n: u64) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..n {
        for w in SENTENCES[(i % 5) as usize].split(' ') {
            *m.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    m
}
