//! In-memory map state (Storm's `MemoryMapState`): for local mode, tests and examples.
//! It lives as long as the process does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use squall_api::Config;

use super::backend::{Entry, WriteFailures};
use super::map::{Flavour, Snapshot, DEFAULT_CACHE_SIZE};
use super::{MapBackend, MapState, StateContext, StateError, StateFactory};

/// A map in memory, shared by its clones.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryBackend {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-changed: every
        // change is one insert.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every stored key and value, sorted by key.
    pub fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_unstable();
        all
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("keys", &self.len())
            .finish()
    }
}

impl MapBackend for MemoryBackend {
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let map = self.lock();
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
        if keys.len() != values.len() {
            return Err(StateError::new(format!(
                "multi_put of {} keys with {} values",
                keys.len(),
                values.len()
            )));
        }
        let mut map = self.lock();
        for (k, v) in keys.iter().zip(values) {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

/// Map state in memory (Storm's `MemoryMapState.Factory`).
///
/// Every partition made by clones of one factory shares one map, so a test or an
/// example can read the final state with [`snapshot`](Self::snapshot); use one factory
/// per state. Each partition caches [`DEFAULT_CACHE_SIZE`] keys unless told otherwise.
///
/// ```
/// use squall_trident::state::{MapState, MemoryMapState, StateContext, StateFactory};
/// use squall_api::{Config, Value};
///
/// let counts = MemoryMapState::opaque();
/// let ctx = StateContext { name: "counts".into(), topology: "wc".into(), partition: 0, num_partitions: 1 };
/// let mut state = counts.make_state(&Config::default(), &ctx)?;
/// state.begin_commit(1)?;
/// state.multi_update(&[vec!["the".into()]], &mut |_, old| {
///     Value::Int(old.and_then(|v| v.as_i64()).unwrap_or(0) + 2)
/// })?;
/// state.commit(1)?;
/// assert_eq!(counts.snapshot().get(&["the".into()]), Some(&Value::Int(2)));
/// # Ok::<(), squall_trident::state::StateError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryMapState {
    flavour: Flavour,
    backend: MemoryBackend,
    cache_size: usize,
    write_failures: Option<WriteFailures>,
}

impl MemoryMapState {
    fn new(flavour: Flavour) -> Self {
        MemoryMapState {
            flavour,
            backend: MemoryBackend::new(),
            cache_size: DEFAULT_CACHE_SIZE,
            write_failures: None,
        }
    }

    /// Exactly-once state for transactional spouts (see
    /// [`TransactionalMap`](super::TransactionalMap)).
    pub fn transactional() -> Self {
        Self::new(Flavour::Transactional)
    }

    /// Exactly-once state for opaque transactional spouts (see
    /// [`OpaqueMap`](super::OpaqueMap)).
    pub fn opaque() -> Self {
        Self::new(Flavour::Opaque)
    }

    /// At-least-once state (see [`NonTransactionalMap`](super::NonTransactionalMap)).
    pub fn non_transactional() -> Self {
        Self::new(Flavour::NonTransactional)
    }

    /// Caches up to `keys` keys per partition (0: no cache).
    pub fn with_cache_size(mut self, keys: usize) -> Self {
        self.cache_size = keys;
        self
    }

    /// Makes writes fail with probability `p`, some after writing part of their keys
    /// (see [`FlakyBackend`](super::FlakyBackend)); partition `i` draws from a generator
    /// seeded from `seed` and `i`. For tests. A `p` outside `0..=1` makes
    /// [`make_state`](StateFactory::make_state) fail.
    pub fn with_write_failures(mut self, p: f64, seed: u64) -> Self {
        self.write_failures = Some(WriteFailures { p, seed });
        self
    }

    /// The current value of every key.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::decode(self.flavour, self.backend.entries())
            .expect("a memory state holds only records its own maps wrote")
    }
}

impl StateFactory for MemoryMapState {
    fn make_state(
        &self,
        _conf: &Config,
        ctx: &StateContext,
    ) -> Result<Box<dyn MapState>, StateError> {
        let backend = WriteFailures::wrap(
            self.write_failures,
            Box::new(self.backend.clone()),
            ctx.partition,
        )
        .map_err(|e| StateError::new(format!("state {}: {e}", ctx.name)))?;
        Ok(self.flavour.build(backend, self.cache_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::Value;

    fn ctx(partition: usize) -> StateContext {
        StateContext {
            name: "counts".into(),
            topology: "wc".into(),
            partition,
            num_partitions: 2,
        }
    }

    #[test]
    fn partitions_of_clones_share_one_map() {
        let factory = MemoryMapState::transactional();
        let clone = factory.clone();
        let mut p0 = factory.make_state(&Config::default(), &ctx(0)).unwrap();
        let mut p1 = clone.make_state(&Config::default(), &ctx(1)).unwrap();
        for (p, word) in [(&mut p0, "a"), (&mut p1, "b")] {
            p.begin_commit(1).unwrap();
            p.multi_put(&[vec![word.into()]], vec![Value::Int(1)])
                .unwrap();
            p.commit(1).unwrap();
        }
        let snap = factory.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.get(&["b".into()]), Some(&Value::Int(1)));
        // Another factory is another map.
        assert!(MemoryMapState::transactional().snapshot().is_empty());
    }

    #[test]
    fn a_bad_failure_probability_fails_make_state() {
        let err = MemoryMapState::opaque()
            .with_write_failures(2.0, 1)
            .make_state(&Config::default(), &ctx(0))
            .err()
            .unwrap();
        assert_eq!(
            err.0,
            "state counts: write failure probability must be between 0 and 1, got 2"
        );
    }
}
