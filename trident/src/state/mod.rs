//! Trident state: maps from a group's key to its aggregate, updated once per batch in
//! txid order (Storm's `MapState`, `TransactionalMap`, `OpaqueMap`, `NonTransactionalMap`).
//!
//! A [`MapState`] is made per partition (task) by a [`StateFactory`]. The runtime calls,
//! for each batch that commits: [`MapState::begin_commit`], then
//! [`MapState::multi_update`] (or `multi_put`), then [`MapState::commit`]. A batch can
//! be committed again with the same txid after a failure; the flavour decides what a
//! repeated txid means:
//!
//! | flavour | stored per key | a repeated txid |
//! |---|---|---|
//! | transactional | `(txid, value)` | skipped: the batch is the same, its effect is there |
//! | opaque | `(txid, prev, curr)` | recomputed from `prev`: the batch may differ |
//! | non-transactional | `value` | applied again (at-least-once) |
//!
//! Storage is a [`MapBackend`], a small trait over bytes: in memory
//! ([`MemoryBackend`], made by [`MemoryMapState`]) or in Redis ([`RedisBackend`], made by
//! [`RedisMapState`]). The flavours encode what they store (JSON), and each partition
//! caches its [`DEFAULT_CACHE_SIZE`] most recent keys ([`CachedMap`]; a failed write
//! drops its keys from the cache). Every `multi_get` and `multi_put` is one round trip
//! to the store, whatever the number of keys.
//!
//! # What is stored
//! Keys are the JSON array of the key's values (`["the"]`, `["nl",2024]`); records are
//! JSON objects, so that `redis-cli GET` shows them as they are:
//!
//! | flavour | record | example |
//! |---|---|---|
//! | transactional | [`TransactionalValue`] | `{"txid":5,"val":12}` |
//! | opaque | [`OpaqueValue`] | `{"txid":5,"prev":7,"curr":12}` (`prev` left out when the key first appeared in batch 5) |
//! | non-transactional | the value | `12` |
//!
//! Values are written as plain JSON: [`Value::Bytes`] becomes an array of numbers and
//! reads back as a [`Value::List`], and a NaN float reads back as `null`. Keys that
//! differ only that way are the same key in the store.
//!
//! # Commit attempts
//! Between `begin_commit(txid)` and `commit(txid)` a flavour remembers the keys it wrote
//! (Storm's `CachedBatchReadsMap`): a key updated twice in the same attempt accumulates,
//! while a key that already carries `txid` from an earlier attempt is treated as the
//! flavour says (skipped, or recomputed from `prev`). After a failed write the attempt
//! is over: further updates and `commit` fail until `begin_commit` starts the next
//! attempt. An opaque map also puts back the keys that only an earlier attempt of the
//! txid touched (see [`OpaqueMap`]). During a commit, an opaque map reads a key that
//! carries the committing txid from an earlier attempt as its value before that batch,
//! as Storm's does; outside commits it reads the current value.

use std::fmt;

use squall_api::{Config, Value};

mod backend;
mod map;
mod memory;
mod redis;

pub use backend::{Entry, FlakyBackend, MapBackend};
pub use map::{
    CachedMap, NonTransactionalMap, OpaqueMap, OpaqueValue, Snapshot, TransactionalMap,
    TransactionalValue, DEFAULT_CACHE_SIZE,
};
pub use memory::{MemoryBackend, MemoryMapState};
pub use redis::{RedisBackend, RedisMapState, DEFAULT_REDIS_TIMEOUT};

/// A key: the values of the group-by fields, in order.
pub type Key = Vec<Value>;

/// Why a state operation failed. The batch fails and is replayed with the same txid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl StateError {
    /// An error with this message.
    pub fn new(msg: impl fmt::Display) -> Self {
        StateError(msg.to_string())
    }
}

/// Where a state partition lives, handed to [`StateFactory::make_state`].
#[derive(Clone, Debug)]
pub struct StateContext {
    /// The state's name (the `persistent_aggregate`'s operation name, unique in the
    /// topology), e.g. to prefix keys.
    pub name: String,
    /// The topology's name.
    pub topology: String,
    /// This partition's index, `0..num_partitions`.
    pub partition: usize,
    /// How many partitions (tasks) the state has.
    pub num_partitions: usize,
}

/// Makes one [`MapState`] per partition (Storm's `StateFactory`). Cloned into every task
/// that holds a partition.
pub trait StateFactory: Send + Sync + 'static {
    /// Opens the state of one partition; an error stops the task from starting (it is
    /// reported with the component and task).
    fn make_state(
        &self,
        conf: &Config,
        ctx: &StateContext,
    ) -> Result<Box<dyn MapState>, StateError>;
}

/// A map from keys to values, updated in txid order (Storm's `MapState`).
pub trait MapState: Send + 'static {
    /// A batch with this txid starts committing.
    fn begin_commit(&mut self, txid: u64) -> Result<(), StateError>;
    /// The batch with this txid finished committing.
    fn commit(&mut self, txid: u64) -> Result<(), StateError>;
    /// The current values of `keys` (`None`: absent), in order.
    fn multi_get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StateError>;
    /// For each key, replaces its value `v` with `update(i, v)` (`i` the key's index)
    /// and returns the new values. Only between `begin_commit` and `commit`.
    fn multi_update(
        &mut self,
        keys: &[Key],
        update: &mut dyn FnMut(usize, Option<Value>) -> Value,
    ) -> Result<Vec<Value>, StateError>;
    /// Sets `keys` to `values`. Only between `begin_commit` and `commit`.
    fn multi_put(&mut self, keys: &[Key], values: Vec<Value>) -> Result<(), StateError>;
}
