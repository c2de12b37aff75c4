//! The three flavours of map state and the cache in front of them.
//!
//! Each flavour is a [`MapState`] over any [`MapBackend`] (Storm's `TransactionalMap`,
//! `OpaqueMap`, `NonTransactionalMap` over an `IBackingMap`); the factories put a
//! [`CachedMap`] between the two, as Storm's do.
//!
//! See the [module above](super) for what is stored and how commit attempts behave.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use squall_api::Value;

use super::backend::Entry;
use super::{Key, MapBackend, MapState, StateError};

/// How many keys a partition caches unless told otherwise (Storm's
/// `localCacheSize` default).
pub const DEFAULT_CACHE_SIZE: usize = 1000;

/// What a transactional map stores for a key: the value and the txid of the batch that
/// last changed it, `{"txid":5,"val":12}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionalValue {
    /// The batch that last changed the value.
    pub txid: u64,
    /// The value.
    pub val: Value,
}

/// What an opaque map stores for a key: the value before and after the batch that last
/// changed it, `{"txid":5,"prev":7,"curr":12}`. A replay of batch `txid` recomputes
/// `curr` from `prev`.
///
/// `curr` is absent only when a replay of batch `txid` rolled back what a failed attempt
/// of it wrote to a key that had no value before it: `{"txid":5}` reads as absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaqueValue {
    /// The batch that last changed the value.
    pub txid: u64,
    /// The value before batch `txid`; `None` (left out of the JSON) when the key first
    /// appeared in that batch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub prev: Option<Value>,
    /// The value after batch `txid`: the current value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub curr: Option<Value>,
}

/// A field that is present is `Some`, even when it is `null` (a stored [`Value::Null`]).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

// ---------------------------------------------------------------------------------------
// Encoding

/// The stored form of a key: the JSON array of its values.
pub(crate) fn encode_key(key: &[Value]) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(key).map_err(|e| StateError::new(format!("cannot encode key: {e}")))
}

/// The key whose stored form is `bytes`.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<Key, StateError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StateError::new(format!(
            "stored key {} is not a JSON array of values: {e}",
            Shown(bytes)
        ))
    })
}

/// Encodes `keys`; for writes (`op` given) a key must not appear twice.
fn encode_keys(keys: &[Key], op: Option<&str>) -> Result<Vec<Vec<u8>>, StateError> {
    let encoded = keys
        .iter()
        .map(|k| encode_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(op) = op {
        let mut seen = HashSet::with_capacity(encoded.len());
        for k in &encoded {
            if !seen.insert(k.as_slice()) {
                return Err(StateError::new(format!(
                    "key {} appears twice in one {op}",
                    Shown(k)
                )));
            }
        }
    }
    Ok(encoded)
}

fn encode_record<T: Serialize>(record: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(record).map_err(|e| StateError::new(format!("cannot encode value: {e}")))
}

fn decode_record<T: DeserializeOwned>(key: &[u8], raw: &[u8], what: &str) -> Result<T, StateError> {
    serde_json::from_slice(raw).map_err(|e| {
        StateError::new(format!(
            "the value stored at key {} is not {what} ({e}): {}",
            Shown(key),
            Shown(raw)
        ))
    })
}

/// Stored bytes in an error message: as text, cut when long.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        let text = String::from_utf8_lossy(&self.0[..self.0.len().min(MAX)]);
        if self.0.len() > MAX {
            write!(f, "{text}...")
        } else {
            f.write_str(&text)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cache

/// A least-recently-used cache in front of a backend (Storm's `CachedMap`): reads of
/// cached keys skip the backend, the keys missing from the cache are read in one
/// backend call. A successful write updates the cache; a failed write removes its keys
/// from it (the backend may hold any of the old or new values), so the cache never holds
/// a value the backend does not.
///
/// The cache assumes it sees every write to its keys, which holds for a partition's
/// state: a key always reaches the same partition.
pub struct CachedMap<B> {
    inner: B,
    cache: Option<LruCache<Vec<u8>, Option<Vec<u8>>>>,
}

impl<B: MapBackend> CachedMap<B> {
    /// Caches up to `capacity` keys of `inner` (0: no cache).
    pub fn new(inner: B, capacity: usize) -> Self {
        CachedMap {
            inner,
            cache: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    /// The cached value at `key`, without touching its recency: `None` when the key is
    /// not cached, `Some(None)` when it is cached as absent.
    pub fn peek(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.cache
            .as_ref()?
            .peek(key)
            .map(|v| v.as_ref().map(Vec::as_slice))
    }

    /// How many keys are cached.
    pub fn cached_len(&self) -> usize {
        self.cache.as_ref().map_or(0, LruCache::len)
    }

    /// The backend behind the cache.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The backend behind the cache, mutably. Writing through it bypasses the cache.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: MapBackend> MapBackend for CachedMap<B> {
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let Some(cache) = &mut self.cache else {
            return self.inner.multi_get(keys);
        };
        let mut out: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|k| cache.get(k.as_slice()).cloned())
            .collect();
        let misses: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if !misses.is_empty() {
            let got = if misses.len() == keys.len() {
                self.inner.multi_get(keys)?
            } else {
                let miss_keys: Vec<Vec<u8>> = misses.iter().map(|&i| keys[i].clone()).collect();
                self.inner.multi_get(&miss_keys)?
            };
            if got.len() != misses.len() {
                return Err(StateError::new(format!(
                    "the backend returned {} values for {} keys",
                    got.len(),
                    misses.len()
                )));
            }
            for (i, v) in misses.into_iter().zip(got) {
                cache.put(keys[i].clone(), v.clone());
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
        let result = self.inner.multi_put(keys, values);
        if let Some(cache) = &mut self.cache {
            match &result {
                Ok(()) => {
                    for (k, v) in keys.iter().zip(values) {
                        cache.put(k.clone(), Some(v.clone()));
                    }
                }
                Err(_) => {
                    for k in keys {
                        cache.pop(k.as_slice());
                    }
                }
            }
        }
        result
    }
}

// ---------------------------------------------------------------------------------------
// The commit attempt in progress

/// The commit attempt in progress: its txid, the keys it wrote, whether a write failed,
/// and the keys that earlier attempts of the same txid may have written.
#[derive(Default)]
struct Attempt {
    txid: Option<u64>,
    written: HashSet<Vec<u8>>,
    failed: Option<String>,
    /// Keys that failed or abandoned attempts of `dirty_txid` wrote, or may have.
    dirty: HashSet<Vec<u8>>,
    dirty_txid: Option<u64>,
}

impl Attempt {
    fn begin(&mut self, txid: u64) {
        if self.txid == Some(txid) {
            // The previous attempt of this txid never committed: what it wrote counts
            // as written by a failed attempt.
            self.dirty.extend(self.written.drain());
        }
        if self.dirty_txid != Some(txid) {
            self.dirty.clear();
        }
        self.dirty_txid = Some(txid);
        self.txid = Some(txid);
        self.written.clear();
        self.failed = None;
    }

    /// Checks that `commit(txid)` may finish the attempt in progress.
    fn check_end(&self, txid: u64) -> Result<(), StateError> {
        match self.txid {
            None => Err(StateError::new(format!(
                "commit({txid}) without begin_commit({txid})"
            ))),
            Some(open) if open != txid => Err(StateError::new(format!(
                "commit({txid}) while the commit in progress is {open}"
            ))),
            Some(_) => match &self.failed {
                Some(why) => Err(StateError::new(format!(
                    "commit({txid}) after a failed write in the same attempt ({why}): \
                     begin_commit({txid}) again to retry"
                ))),
                None => Ok(()),
            },
        }
    }

    fn end(&mut self, txid: u64) -> Result<(), StateError> {
        self.check_end(txid)?;
        self.txid = None;
        // The batch may still fail elsewhere (another partition) and be replayed with
        // the same txid: until another txid begins, what it wrote counts as written by
        // an earlier attempt.
        self.dirty.clear();
        self.dirty.extend(self.written.drain());
        Ok(())
    }

    /// The txid of the attempt `op` belongs to.
    fn open(&self, op: &str) -> Result<u64, StateError> {
        let Some(txid) = self.txid else {
            return Err(StateError::new(format!(
                "{op} outside a commit: call begin_commit first"
            )));
        };
        if let Some(why) = &self.failed {
            return Err(StateError::new(format!(
                "{op} after a failed write in commit {txid} ({why}): \
                 begin_commit({txid}) again to retry"
            )));
        }
        Ok(txid)
    }

    /// Writes for this attempt, remembering what was written or that it failed.
    fn write<B: MapBackend>(
        &mut self,
        backend: &mut B,
        keys: Vec<Vec<u8>>,
        values: Vec<Vec<u8>>,
    ) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        match backend.multi_put(&keys, &values) {
            Ok(()) => {
                self.written.extend(keys);
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.0.clone());
                // Any of them may have been written.
                self.dirty.extend(keys);
                Err(e)
            }
        }
    }
}

fn check_lengths(keys: usize, values: usize) -> Result<(), StateError> {
    if keys == values {
        Ok(())
    } else {
        Err(StateError::new(format!(
            "multi_put of {keys} keys with {values} values"
        )))
    }
}

fn read_records<B: MapBackend, T: DeserializeOwned>(
    backend: &mut B,
    keys: &[Vec<u8>],
    what: &str,
) -> Result<Vec<Option<T>>, StateError> {
    let raw = backend.multi_get(keys)?;
    if raw.len() != keys.len() {
        return Err(StateError::new(format!(
            "the backend returned {} values for {} keys",
            raw.len(),
            keys.len()
        )));
    }
    keys.iter()
        .zip(raw)
        .map(|(k, r)| r.map(|r| decode_record(k, &r, what)).transpose())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Transactional

const TRANSACTIONAL: &str = r#"a transactional record {"txid":..,"val":..}"#;

/// Exactly-once state for transactional spouts (Storm's `TransactionalMap`): a key
/// remembers the txid that last changed it, and a batch whose txid it already carries
/// is not applied again (a replayed batch is the same batch).
pub struct TransactionalMap<B> {
    backend: B,
    attempt: Attempt,
}

impl<B: MapBackend> TransactionalMap<B> {
    /// A transactional map stored in `backend`.
    pub fn new(backend: B) -> Self {
        TransactionalMap {
            backend,
            attempt: Attempt::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn read(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<TransactionalValue>>, StateError> {
        read_records(&mut self.backend, keys, TRANSACTIONAL)
    }
}

impl<B: MapBackend> MapState for TransactionalMap<B> {
    fn begin_commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.attempt.begin(txid);
        Ok(())
    }

    fn commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.attempt.end(txid)
    }

    fn multi_get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StateError> {
        let keys = encode_keys(keys, None)?;
        Ok(self
            .read(&keys)?
            .into_iter()
            .map(|r| r.map(|r| r.val))
            .collect())
    }

    fn multi_update(
        &mut self,
        keys: &[Key],
        update: &mut dyn FnMut(usize, Option<Value>) -> Value,
    ) -> Result<Vec<Value>, StateError> {
        let txid = self.attempt.open("multi_update")?;
        let keys = encode_keys(keys, Some("multi_update"))?;
        let stored = self.read(&keys)?;
        let mut out = Vec::with_capacity(keys.len());
        let (mut put_keys, mut put_values) = (Vec::new(), Vec::new());
        for (i, (key, record)) in keys.into_iter().zip(stored).enumerate() {
            match record {
                // Batch `txid` was applied by an earlier attempt: it is the same batch.
                Some(r) if r.txid == txid && !self.attempt.written.contains(&key) => {
                    out.push(r.val);
                }
                record => {
                    let val = update(i, record.map(|r| r.val));
                    put_values.push(encode_record(&TransactionalValue {
                        txid,
                        val: val.clone(),
                    })?);
                    put_keys.push(key);
                    out.push(val);
                }
            }
        }
        self.attempt
            .write(&mut self.backend, put_keys, put_values)?;
        Ok(out)
    }

    fn multi_put(&mut self, keys: &[Key], values: Vec<Value>) -> Result<(), StateError> {
        check_lengths(keys.len(), values.len())?;
        let txid = self.attempt.open("multi_put")?;
        let keys = encode_keys(keys, Some("multi_put"))?;
        let values = values
            .into_iter()
            .map(|val| encode_record(&TransactionalValue { txid, val }))
            .collect::<Result<Vec<_>, _>>()?;
        self.attempt.write(&mut self.backend, keys, values)
    }
}

// ---------------------------------------------------------------------------------------
// Opaque

const OPAQUE: &str = r#"an opaque record {"txid":..,"prev":..,"curr":..}"#;

/// Exactly-once state for opaque transactional spouts (Storm's `OpaqueMap`): a key keeps
/// its value before and after the batch that last changed it, so a replay of that batch,
/// which may carry different tuples, is recomputed from the value before it.
///
/// A replay may also touch other keys than an earlier attempt did. Storm leaves a key
/// that only the earlier attempt touched with that attempt's value; here `commit` puts
/// such keys back to their value before the batch (absent if they had none), for every
/// earlier attempt of the txid this map saw: failed, abandoned (begun again without
/// `commit`) or committed here but failed elsewhere (begun again after `commit`). After
/// a crash, the new process does not know what the lost attempts touched: a key that
/// the replay leaves out then keeps their effect, as in Storm.
///
/// A stored txid other than the current one (normally older; newer only when the
/// topology's txids started over) counts as an earlier batch.
pub struct OpaqueMap<B> {
    backend: B,
    attempt: Attempt,
}

impl<B: MapBackend> OpaqueMap<B> {
    /// An opaque map stored in `backend`.
    pub fn new(backend: B) -> Self {
        OpaqueMap {
            backend,
            attempt: Attempt::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn read(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<OpaqueValue>>, StateError> {
        read_records(&mut self.backend, keys, OPAQUE)
    }

    /// The stored record of `key` updated to `curr = f(base)` for batch `txid`.
    fn next(
        &self,
        txid: u64,
        key: &[u8],
        record: Option<OpaqueValue>,
        f: impl FnOnce(Option<Value>) -> Value,
    ) -> OpaqueValue {
        let (prev, base) = match record {
            None => (None, None),
            // Updated earlier in this attempt: carry on from there.
            Some(r) if self.attempt.written.contains(key) => (r.prev, r.curr),
            // A replay of batch `txid`: start again from the value before it.
            Some(r) if r.txid == txid => (r.prev.clone(), r.prev),
            Some(r) => (r.curr.clone(), r.curr),
        };
        OpaqueValue {
            txid,
            prev,
            curr: Some(f(base)),
        }
    }

    /// Puts the keys that failed or abandoned attempts of `txid` wrote, and this
    /// attempt did not, back to their value before batch `txid`.
    fn roll_back_stale(&mut self, txid: u64) -> Result<(), StateError> {
        let mut stale: Vec<Vec<u8>> = self
            .attempt
            .dirty
            .iter()
            .filter(|k| !self.attempt.written.contains(*k))
            .cloned()
            .collect();
        // In a fixed order, so that a run (and its injected failures) can be replayed.
        stale.sort_unstable();
        if stale.is_empty() {
            return Ok(());
        }
        let records = self.read(&stale)?;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (key, record) in stale.into_iter().zip(records) {
            if let Some(r) = record.filter(|r| r.txid == txid && r.curr != r.prev) {
                values.push(encode_record(&OpaqueValue {
                    txid,
                    curr: r.prev.clone(),
                    prev: r.prev,
                })?);
                keys.push(key);
            }
        }
        self.attempt.write(&mut self.backend, keys, values)
    }
}

impl<B: MapBackend> MapState for OpaqueMap<B> {
    fn begin_commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.attempt.begin(txid);
        Ok(())
    }

    fn commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.attempt.check_end(txid)?;
        self.roll_back_stale(txid)?;
        self.attempt.end(txid)
    }

    /// The current values; during a commit, a key that carries the committing txid from
    /// an earlier attempt reads as its value before that batch (Storm's `OpaqueMap`).
    fn multi_get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StateError> {
        let keys = encode_keys(keys, None)?;
        let records = self.read(&keys)?;
        Ok(keys
            .iter()
            .zip(records)
            .map(|(k, r)| {
                let r = r?;
                if self.attempt.txid == Some(r.txid) && !self.attempt.written.contains(k) {
                    r.prev
                } else {
                    r.curr
                }
            })
            .collect())
    }

    fn multi_update(
        &mut self,
        keys: &[Key],
        update: &mut dyn FnMut(usize, Option<Value>) -> Value,
    ) -> Result<Vec<Value>, StateError> {
        let txid = self.attempt.open("multi_update")?;
        let keys = encode_keys(keys, Some("multi_update"))?;
        let stored = self.read(&keys)?;
        let mut out = Vec::with_capacity(keys.len());
        let mut values = Vec::with_capacity(keys.len());
        for (i, (key, record)) in keys.iter().zip(stored).enumerate() {
            let next = self.next(txid, key, record, |base| update(i, base));
            values.push(encode_record(&next)?);
            out.push(next.curr.unwrap_or_default());
        }
        self.attempt.write(&mut self.backend, keys, values)?;
        Ok(out)
    }

    fn multi_put(&mut self, keys: &[Key], values: Vec<Value>) -> Result<(), StateError> {
        check_lengths(keys.len(), values.len())?;
        let txid = self.attempt.open("multi_put")?;
        let keys = encode_keys(keys, Some("multi_put"))?;
        let stored = self.read(&keys)?;
        let mut encoded = Vec::with_capacity(keys.len());
        for ((key, record), val) in keys.iter().zip(stored).zip(values) {
            encoded.push(encode_record(&self.next(txid, key, record, |_| val))?);
        }
        self.attempt.write(&mut self.backend, keys, encoded)
    }
}

// ---------------------------------------------------------------------------------------
// Non-transactional

const PLAIN: &str = "a JSON value";

/// At-least-once state (Storm's `NonTransactionalMap`): updates always apply, so a
/// replayed batch counts twice. It needs no `begin_commit`.
pub struct NonTransactionalMap<B> {
    backend: B,
}

impl<B: MapBackend> NonTransactionalMap<B> {
    /// A non-transactional map stored in `backend`.
    pub fn new(backend: B) -> Self {
        NonTransactionalMap { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: MapBackend> MapState for NonTransactionalMap<B> {
    fn begin_commit(&mut self, _txid: u64) -> Result<(), StateError> {
        Ok(())
    }

    fn commit(&mut self, _txid: u64) -> Result<(), StateError> {
        Ok(())
    }

    fn multi_get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StateError> {
        let keys = encode_keys(keys, None)?;
        read_records(&mut self.backend, &keys, PLAIN)
    }

    fn multi_update(
        &mut self,
        keys: &[Key],
        update: &mut dyn FnMut(usize, Option<Value>) -> Value,
    ) -> Result<Vec<Value>, StateError> {
        let keys = encode_keys(keys, Some("multi_update"))?;
        let stored: Vec<Option<Value>> = read_records(&mut self.backend, &keys, PLAIN)?;
        let out: Vec<Value> = stored
            .into_iter()
            .enumerate()
            .map(|(i, v)| update(i, v))
            .collect();
        let values = out
            .iter()
            .map(encode_record)
            .collect::<Result<Vec<_>, _>>()?;
        if !keys.is_empty() {
            self.backend.multi_put(&keys, &values)?;
        }
        Ok(out)
    }

    fn multi_put(&mut self, keys: &[Key], values: Vec<Value>) -> Result<(), StateError> {
        check_lengths(keys.len(), values.len())?;
        let keys = encode_keys(keys, Some("multi_put"))?;
        let values = values
            .iter()
            .map(encode_record)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        self.backend.multi_put(&keys, &values)
    }
}

// ---------------------------------------------------------------------------------------
// Flavours, as the factories choose them

/// Which of the three flavours a factory makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    Transactional,
    Opaque,
    NonTransactional,
}

impl Flavour {
    /// The flavour over `backend`, behind a cache of `cache_size` keys.
    pub(crate) fn build(
        self,
        backend: Box<dyn MapBackend>,
        cache_size: usize,
    ) -> Box<dyn MapState> {
        let cached = CachedMap::new(backend, cache_size);
        match self {
            Flavour::Transactional => Box::new(TransactionalMap::new(cached)),
            Flavour::Opaque => Box::new(OpaqueMap::new(cached)),
            Flavour::NonTransactional => Box::new(NonTransactionalMap::new(cached)),
        }
    }

    /// The current value in the stored record `raw` of `key` (`None`: absent).
    pub(crate) fn current_value(self, key: &[u8], raw: &[u8]) -> Result<Option<Value>, StateError> {
        Ok(match self {
            Flavour::Transactional => {
                Some(decode_record::<TransactionalValue>(key, raw, TRANSACTIONAL)?.val)
            }
            Flavour::Opaque => decode_record::<OpaqueValue>(key, raw, OPAQUE)?.curr,
            Flavour::NonTransactional => Some(decode_record(key, raw, PLAIN)?),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots

/// The current values of a whole map state, read straight from its store (for tests and
/// examples; factories make them). Iterates in the order of the keys' JSON text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    entries: BTreeMap<Vec<u8>, (Key, Value)>,
}

impl Snapshot {
    /// Decodes stored `(key, record)` pairs of a `flavour` map.
    pub(crate) fn decode(
        flavour: Flavour,
        stored: impl IntoIterator<Item = Entry>,
    ) -> Result<Self, StateError> {
        let mut entries = BTreeMap::new();
        for (k, raw) in stored {
            if let Some(value) = flavour.current_value(&k, &raw)? {
                let key = decode_key(&k)?;
                entries.insert(k, (key, value));
            }
        }
        Ok(Snapshot { entries })
    }

    /// The value at `key`, if the state has one.
    pub fn get(&self, key: &[Value]) -> Option<&Value> {
        let k = encode_key(key).ok()?;
        self.entries.get(&k).map(|(_, v)| v)
    }

    /// How many keys have a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys and their values.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> + '_ {
        self.entries.values().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for Snapshot {
    type Item = (Key, Value);
    type IntoIter = std::collections::btree_map::IntoValues<Vec<u8>, (Key, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryBackend;

    /// A backend that counts its round trips, over memory, optionally failing writes.
    #[derive(Default)]
    struct Counting {
        mem: MemoryBackend,
        gets: usize,
        puts: usize,
        fail_next_put: Option<usize>,
    }

    impl MapBackend for Counting {
        fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
            self.gets += 1;
            self.mem.multi_get(keys)
        }
        fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
            self.puts += 1;
            if let Some(n) = self.fail_next_put.take() {
                self.mem.multi_put(&keys[..n], &values[..n])?;
                return Err(StateError::new("disk full"));
            }
            self.mem.multi_put(keys, values)
        }
    }

    /// A memory backend's records, as text.
    fn stored(b: &MemoryBackend) -> Vec<(String, String)> {
        b.entries()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn k(s: &str) -> Key {
        vec![Value::from(s)]
    }

    fn get(m: &mut dyn MapState, key: &str) -> Option<i64> {
        m.multi_get(&[k(key)]).unwrap()[0]
            .as_ref()
            .map(|v| v.as_i64().expect("an integer"))
    }

    /// Storm's `single-update` with a `Count` combiner: adds `amt`.
    fn add(m: &mut dyn MapState, key: &str, amt: i64) -> i64 {
        let out = m
            .multi_update(&[k(key)], &mut |_, v| {
                Value::Int(v.and_then(|v| v.as_i64()).unwrap_or(0) + amt)
            })
            .unwrap();
        out[0].as_i64().unwrap()
    }

    /// Every flavour over a plain and a cached backend.
    fn both<M: MapState>(
        make: impl Fn(Box<dyn MapBackend>) -> M,
        test: impl Fn(&mut dyn MapState),
    ) {
        test(&mut make(Box::new(MemoryBackend::new())));
        test(&mut make(Box::new(CachedMap::new(
            MemoryBackend::new(),
            10,
        ))));
    }

    // Storm's state_test.clj `test-transactional-map`.
    #[test]
    fn transactional_map_like_storm() {
        both(TransactionalMap::new, |m| {
            m.begin_commit(1).unwrap();
            assert_eq!(get(m, "a"), None);
            // Updates within one attempt accumulate.
            assert_eq!(add(m, "a", 1), 1);
            assert_eq!(add(m, "a", 2), 3);
            m.commit(1).unwrap();
            m.begin_commit(1).unwrap();
            assert_eq!(get(m, "a"), Some(3));
            // A replay of txid 1 is skipped.
            assert_eq!(add(m, "a", 1), 3);
            assert_eq!(add(m, "a", 2), 3);
            m.commit(1).unwrap();
            m.begin_commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(3));
            assert_eq!(add(m, "a", 3), 6);
            assert_eq!(add(m, "a", 1), 7);
            m.commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(7));
        });
    }

    // Storm's state_test.clj `test-opaque-map`.
    #[test]
    fn opaque_map_like_storm() {
        both(OpaqueMap::new, |m| {
            m.begin_commit(1).unwrap();
            assert_eq!(get(m, "a"), None);
            assert_eq!(add(m, "a", 1), 1);
            assert_eq!(get(m, "a"), Some(1));
            assert_eq!(add(m, "a", 2), 3);
            assert_eq!(get(m, "a"), Some(3));
            m.commit(1).unwrap();
            assert_eq!(get(m, "a"), Some(3));
            // A replay of txid 1 (a different batch) starts again from before it.
            m.begin_commit(1).unwrap();
            assert_eq!(get(m, "a"), None);
            assert_eq!(add(m, "a", 2), 2);
            m.commit(1).unwrap();
            m.begin_commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(2));
            assert_eq!(add(m, "a", 3), 5);
            assert_eq!(add(m, "a", 1), 6);
            m.commit(2).unwrap();
            // Replays of txid 2 with other batches: prev (2) + the new batch.
            m.begin_commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(2));
            assert_eq!(add(m, "a", 10), 12);
            m.commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(12));
        });
    }

    #[test]
    fn non_transactional_applies_replays_again() {
        both(NonTransactionalMap::new, |m| {
            for _ in 0..2 {
                m.begin_commit(1).unwrap();
                add(m, "a", 5);
                m.commit(1).unwrap();
            }
            assert_eq!(get(m, "a"), Some(10));
            // It needs no commit at all.
            add(m, "a", 1);
            assert_eq!(get(m, "a"), Some(11));
        });
    }

    #[test]
    fn multi_put_per_flavour() {
        let put = |m: &mut dyn MapState, txid, v: i64| {
            m.begin_commit(txid).unwrap();
            m.multi_put(&[k("a")], vec![Value::Int(v)]).unwrap();
            m.commit(txid).unwrap();
        };
        both(TransactionalMap::new, |m| {
            put(m, 1, 5);
            put(m, 2, 7);
            assert_eq!(get(m, "a"), Some(7));
        });
        both(OpaqueMap::new, |m| {
            put(m, 1, 5);
            put(m, 2, 7);
            // A replay of txid 2 sees the value before it, then puts again.
            m.begin_commit(2).unwrap();
            assert_eq!(get(m, "a"), Some(5));
            m.commit(2).unwrap();
            put(m, 2, 9);
            assert_eq!(get(m, "a"), Some(9));
            put(m, 3, 1);
            assert_eq!(get(m, "a"), Some(1));
        });
    }

    #[test]
    fn records_are_readable_json() {
        let mut t = TransactionalMap::new(MemoryBackend::new());
        t.begin_commit(5).unwrap();
        t.multi_put(&[vec!["the".into(), 3.into()]], vec![12.into()])
            .unwrap();
        assert_eq!(
            stored(t.backend()),
            vec![(r#"["the",3]"#.into(), r#"{"txid":5,"val":12}"#.into())]
        );

        let mut o = OpaqueMap::new(MemoryBackend::new());
        for (txid, v) in [(4, 7), (5, 12)] {
            o.begin_commit(txid).unwrap();
            o.multi_put(&[k("a"), k("b")], vec![v.into(), Value::Null])
                .unwrap();
            o.commit(txid).unwrap();
        }
        assert_eq!(
            stored(o.backend()),
            vec![
                (r#"["a"]"#.into(), r#"{"txid":5,"prev":7,"curr":12}"#.into()),
                (
                    r#"["b"]"#.into(),
                    r#"{"txid":5,"prev":null,"curr":null}"#.into()
                )
            ]
        );
        o.begin_commit(5).unwrap();
        o.multi_put(&[k("c")], vec![1.into()]).unwrap();
        assert_eq!(
            stored(o.backend())[2],
            (r#"["c"]"#.into(), r#"{"txid":5,"curr":1}"#.into())
        );
        // A stored null `prev` is a value (Null), an absent one is none.
        let rec: OpaqueValue = serde_json::from_str(r#"{"txid":5,"prev":null,"curr":1}"#).unwrap();
        assert_eq!(rec.prev, Some(Value::Null));
        let rec: OpaqueValue = serde_json::from_str(r#"{"txid":5,"curr":1}"#).unwrap();
        assert_eq!(rec.prev, None);

        let mut n = NonTransactionalMap::new(MemoryBackend::new());
        n.multi_put(&[k("x")], vec!["text".into()]).unwrap();
        assert_eq!(stored(n.backend())[0].1, r#""text""#);
    }

    #[test]
    fn misuse_is_a_clear_error() {
        let mut m = TransactionalMap::new(MemoryBackend::new());
        let mut noop = |_: usize, v: Option<Value>| v.unwrap_or_default();
        let err = m.multi_update(&[k("a")], &mut noop).unwrap_err();
        assert_eq!(
            err.0,
            "multi_update outside a commit: call begin_commit first"
        );
        assert_eq!(
            m.commit(3).unwrap_err().0,
            "commit(3) without begin_commit(3)"
        );
        m.begin_commit(4).unwrap();
        assert_eq!(
            m.commit(3).unwrap_err().0,
            "commit(3) while the commit in progress is 4"
        );
        let err = m
            .multi_update(&[k("a"), k("b"), k("a")], &mut noop)
            .unwrap_err();
        assert_eq!(err.0, r#"key ["a"] appears twice in one multi_update"#);
        let err = m.multi_put(&[k("a")], vec![]).unwrap_err();
        assert_eq!(err.0, "multi_put of 1 keys with 0 values");
        // Nothing was written by the refused calls.
        assert!(stored(m.backend()).is_empty());
        m.commit(4).unwrap();
    }

    #[test]
    fn a_foreign_record_is_a_clear_error() {
        let mut mem = MemoryBackend::new();
        mem.multi_put(&[br#"["a"]"#.to_vec()], &[b"12".to_vec()])
            .unwrap();
        let mut m = OpaqueMap::new(mem.clone());
        let err = m.multi_get(&[k("a")]).unwrap_err();
        assert!(
            err.0.starts_with(r#"the value stored at key ["a"] is not an opaque record {"txid":..,"prev":..,"curr":..} ("#),
            "{err}"
        );
        assert!(err.0.ends_with("): 12"), "{err}");
        // A transactional record read as opaque (a flavour switched on existing data).
        mem.multi_put(
            &[br#"["a"]"#.to_vec()],
            &[br#"{"txid":1,"val":3}"#.to_vec()],
        )
        .unwrap();
        assert!(m.multi_get(&[k("a")]).is_err());
    }

    #[test]
    fn a_failed_write_ends_the_attempt() {
        let mut m = TransactionalMap::new(Counting::default());
        m.begin_commit(1).unwrap();
        add(&mut m, "a", 1);
        m.commit(1).unwrap();

        m.begin_commit(2).unwrap();
        m.backend.fail_next_put = Some(1);
        let mut plus =
            |_: usize, v: Option<Value>| Value::Int(v.and_then(|v| v.as_i64()).unwrap_or(0) + 10);
        let err = m.multi_update(&[k("a"), k("b")], &mut plus).unwrap_err();
        assert_eq!(err.0, "disk full");
        // The attempt is over: neither more updates nor commit are accepted.
        let err = m.multi_update(&[k("c")], &mut plus).unwrap_err();
        assert_eq!(
            err.0,
            "multi_update after a failed write in commit 2 (disk full): begin_commit(2) again to retry"
        );
        assert!(m
            .commit(2)
            .unwrap_err()
            .0
            .starts_with("commit(2) after a failed write"));
        // The retry applies what the partial write missed, and only that.
        m.begin_commit(2).unwrap();
        assert_eq!(
            m.multi_update(&[k("a"), k("b")], &mut plus).unwrap(),
            vec![Value::Int(11), Value::Int(10)]
        );
        m.commit(2).unwrap();
        assert_eq!(get(&mut m, "a"), Some(11));
        assert_eq!(get(&mut m, "b"), Some(10));
    }

    #[test]
    fn an_opaque_replay_puts_back_keys_only_the_failed_attempt_touched() {
        let mut m = OpaqueMap::new(CachedMap::new(Counting::default(), 10));
        m.begin_commit(1).unwrap();
        add(&mut m, "a", 1);
        add(&mut m, "b", 1);
        m.commit(1).unwrap();

        // Attempt 1 of txid 2 writes a, b and a new key c, then is abandoned (begun
        // again without commit, e.g. another partition failed the batch).
        m.begin_commit(2).unwrap();
        let mut plus =
            |_: usize, v: Option<Value>| Value::Int(v.and_then(|v| v.as_i64()).unwrap_or(0) + 10);
        m.multi_update(&[k("a"), k("b"), k("c")], &mut plus)
            .unwrap();
        // Attempt 2 carries another batch: only a.
        m.begin_commit(2).unwrap();
        assert_eq!(
            get(&mut m, "b"),
            Some(1),
            "during the replay, b reads as before txid 2"
        );
        assert_eq!(add(&mut m, "a", 5), 6);
        m.commit(2).unwrap();
        assert_eq!(get(&mut m, "a"), Some(6));
        assert_eq!(get(&mut m, "b"), Some(1));
        assert_eq!(get(&mut m, "c"), None);
        let raw = m.backend.inner().mem.entries();
        assert_eq!(raw[2], (br#"["c"]"#.to_vec(), br#"{"txid":2}"#.to_vec()));
        let snap = Snapshot::decode(Flavour::Opaque, raw).unwrap();
        assert_eq!(snap.len(), 2, "a rolled-back new key is absent");

        // The next batch builds on the rolled-back values; c starts afresh.
        m.begin_commit(3).unwrap();
        assert_eq!(
            m.multi_update(&[k("b"), k("c")], &mut plus).unwrap(),
            vec![Value::Int(11), Value::Int(10)]
        );
        m.commit(3).unwrap();
    }

    #[test]
    fn an_opaque_replay_after_commit_puts_back_what_the_committed_attempt_touched() {
        // The batch committed on this partition but failed on another one: the replay
        // (same txid, another batch) must not keep this partition's first result.
        let mut m = OpaqueMap::new(MemoryBackend::new());
        m.begin_commit(1).unwrap();
        add(&mut m, "a", 1);
        add(&mut m, "b", 2);
        m.commit(1).unwrap();
        m.begin_commit(1).unwrap();
        add(&mut m, "a", 4);
        m.commit(1).unwrap();
        assert_eq!((get(&mut m, "a"), get(&mut m, "b")), (Some(4), None));
        // Once another txid begins, txid 1 is final.
        m.begin_commit(2).unwrap();
        add(&mut m, "b", 1);
        m.commit(2).unwrap();
        assert_eq!((get(&mut m, "a"), get(&mut m, "b")), (Some(4), Some(1)));
    }

    #[test]
    fn an_opaque_rollback_survives_failed_writes() {
        let mut m = OpaqueMap::new(CachedMap::new(Counting::default(), 10));
        m.begin_commit(1).unwrap();
        add(&mut m, "a", 1);
        add(&mut m, "b", 1);
        m.commit(1).unwrap();

        // Attempt 1 of txid 2: the write of a and b fails after writing a.
        m.begin_commit(2).unwrap();
        m.backend.inner_mut().fail_next_put = Some(1);
        let mut plus =
            |_: usize, v: Option<Value>| Value::Int(v.and_then(|v| v.as_i64()).unwrap_or(0) + 10);
        m.multi_update(&[k("a"), k("b")], &mut plus).unwrap_err();
        // Attempt 2: only b; its rollback of a fails in commit.
        m.begin_commit(2).unwrap();
        assert_eq!(add(&mut m, "b", 2), 3);
        m.backend.inner_mut().fail_next_put = Some(0);
        assert_eq!(m.commit(2).unwrap_err().0, "disk full");
        // Attempt 3: only c; a and b both need putting back.
        m.begin_commit(2).unwrap();
        assert_eq!(add(&mut m, "c", 7), 7);
        m.commit(2).unwrap();
        assert_eq!(
            (get(&mut m, "a"), get(&mut m, "b"), get(&mut m, "c")),
            (Some(1), Some(1), Some(7))
        );
    }

    #[test]
    fn one_round_trip_per_call_and_cache_hits_skip_the_backend() {
        let mut m = OpaqueMap::new(CachedMap::new(Counting::default(), 100));
        let keys: Vec<Key> = (0..50).map(|i| vec![Value::Int(i)]).collect();
        m.begin_commit(1).unwrap();
        m.multi_update(&keys, &mut |i, _| Value::Int(i as i64))
            .unwrap();
        m.commit(1).unwrap();
        assert_eq!((m.backend.inner().gets, m.backend.inner().puts), (1, 1));
        // Everything is cached now: reads do not reach the backend.
        let got = m.multi_get(&keys).unwrap();
        assert_eq!(got[49], Some(Value::Int(49)));
        assert_eq!(m.backend.inner().gets, 1);
        // A mix of cached and new keys: one read, of the new keys only.
        let mixed: Vec<Key> = (40..60).map(|i| vec![Value::Int(i)]).collect();
        let got = m.multi_get(&mixed).unwrap();
        assert_eq!(got[0], Some(Value::Int(40)));
        assert_eq!(got[19], None);
        assert_eq!(m.backend.inner().gets, 2);
        // Absent keys are cached as absent.
        m.multi_get(&mixed).unwrap();
        assert_eq!(m.backend.inner().gets, 2);
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_off() {
        let mut c = CachedMap::new(MemoryBackend::new(), 3);
        let keys: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
        c.multi_put(&keys, &keys).unwrap();
        assert_eq!(c.cached_len(), 3);
        assert_eq!(c.peek(&[9]), Some(Some(&[9u8][..])));
        assert_eq!(c.peek(&[0]), None);
        assert_eq!(c.multi_get(&keys[..1]).unwrap(), vec![Some(vec![0])]);

        let mut off = CachedMap::new(MemoryBackend::new(), 0);
        off.multi_put(&keys, &keys).unwrap();
        assert_eq!(off.cached_len(), 0);
        assert_eq!(off.multi_get(&keys).unwrap()[5], Some(vec![5]));
    }

    #[test]
    fn a_failed_write_leaves_no_cached_value() {
        let mut c = CachedMap::new(Counting::default(), 10);
        let keys: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i]).collect();
        let old: Vec<Vec<u8>> = vec![b"old".to_vec(); 4];
        let new: Vec<Vec<u8>> = vec![b"new".to_vec(); 4];
        c.multi_put(&keys, &old).unwrap();
        c.inner_mut().fail_next_put = Some(2);
        c.multi_put(&keys, &new).unwrap_err();
        for k in &keys {
            assert_eq!(c.peek(k), None, "key {k:?} was dropped from the cache");
        }
        // Reads now come from the backend: the new value where it was written.
        let got = c.multi_get(&keys).unwrap();
        assert_eq!(
            got,
            vec![
                Some(new[0].clone()),
                Some(new[1].clone()),
                Some(old[2].clone()),
                Some(old[3].clone())
            ]
        );
        assert_eq!(c.inner().gets, 1);
    }

    #[test]
    fn snapshot_decodes_per_flavour() {
        let stored = vec![
            (
                br#"["b"]"#.to_vec(),
                br#"{"txid":3,"prev":1,"curr":2}"#.to_vec(),
            ),
            (br#"["a",1]"#.to_vec(), br#"{"txid":3,"curr":5}"#.to_vec()),
        ];
        let snap = Snapshot::decode(Flavour::Opaque, stored.clone()).unwrap();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.get(&k("b")), Some(&Value::Int(2)));
        assert_eq!(snap.get(&["a".into(), 1.into()]), Some(&Value::Int(5)));
        assert_eq!(snap.get(&k("a")), None);
        let keys: Vec<Key> = snap.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![vec!["a".into(), 1.into()], k("b")]);
        assert!(Snapshot::decode(Flavour::Transactional, stored).is_err());
    }
}
