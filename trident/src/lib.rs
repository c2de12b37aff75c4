//! # squall-trident: micro-batches with exactly-once state, and DRPC
//!
//! Storm's Trident on Squall. A [`TridentTopology`] describes streams of *batches*:
//! spouts emit batches with increasing transaction ids (txids), operations
//! ([`Stream::each`], [`Stream::filter`], [`GroupedStream::aggregate`], joins, merges)
//! process them, and [`GroupedStream::persistent_aggregate`] folds each batch into a
//! [`state::MapState`] exactly once, in txid order, even when batches fail and replay.
//! DRPC streams ([`TridentTopology::new_drpc_stream`]) answer queries from that state.
//!
//! It compiles to ordinary Squall spouts and bolts: one master batch coordinator per
//! batch group and one bolt per stretch of operations between repartitionings.
//! ARCHITECTURE.md describes the protocol.
//!
//! | Storm | Squall |
//! |---|---|
//! | `TridentTopology`, `Stream`, `GroupedStream`, `TridentState` | [`TridentTopology`], [`Stream`], [`GroupedStream`], [`TridentState`] |
//! | `Function`, `Filter`, `MapFunction`, `FlatMapFunction` | [`Function`], [`Filter`], [`MapFunction`], [`FlatMapFunction`] |
//! | `CombinerAggregator`, `ReducerAggregator`, `Aggregator` | [`CombinerAggregator`], [`ReducerAggregator`], [`Aggregator`] |
//! | `Count`, `Sum`, `FirstN`, `MapGet`, `FilterNull` | [`Count`], [`Sum`], [`Min`], [`Max`], [`First`], [`MapGet`], [`FilterNull`] |
//! | `MemoryMapState.Factory`, storm-redis `RedisMapState` | [`MemoryMapState`], [`RedisMapState`] |
//! | `FixedBatchSpout`, `FeederBatchSpout` | [`FixedBatchSpout`], [`FeederSpout`] |
//! | `LocalDRPC`, `DRPCClient` | [`LocalDrpc`], [`DrpcClient`] |
#![deny(missing_docs)]

mod coordinator;
pub mod metrics;
pub mod operation;
mod plan;
pub mod spout;
mod stage;
pub mod state;
pub mod store;
mod topology;
mod tuple;

pub use operation::{
    Aggregation, AggregationKind, Aggregator, Combiner, CombinerAggregator, Consumer, Count,
    Custom, Filter, FilterNull, First, FlatMapFunction, Function, MapFunction, MapGet, Max, Min,
    QueryFunction, Reducer, ReducerAggregator, Sum,
};
pub use spout::{
    BatchSpout, FeederSpout, FixedBatchSpout, NonTransactional, Opaque, PartitionedEmitter,
    PartitionedSpout, TransactionAttempt, Transactional, TridentSpout,
};
pub use squall_drpc::{DrpcClient, DrpcError, LocalDrpc};
pub use state::{MapState, MemoryMapState, RedisMapState, StateFactory};
pub use topology::{GroupedStream, Stream, TridentError, TridentState, TridentTopology};
pub use tuple::{TridentCollector, TridentTuple, TypeError};
