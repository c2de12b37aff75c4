//! `KeyValueState`: a typed map whose committed copy lives in a state provider.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use foldhash::fast::RandomState;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::provider::{Store, Writes};
use super::{StateError, StateProvider};
use crate::config::Config;

/// A key-value state (Storm's `KeyValueState<K, V>`): a map held in memory, whose
/// committed copy lives in the state provider (`topology.state.provider`).
///
/// Keys and values are any serde types (derive `Serialize`, `Deserialize`; keys also
/// `Hash`, `Eq`, `Clone`); they are stored as JSON, so a Redis state reads plainly in
/// `redis-cli HGETALL`. Reads never touch the provider: the whole committed state of
/// the task is loaded when it starts and after a rollback. Writes are remembered and
/// sent with the next checkpoint's prepare.
///
/// In a stateful bolt the runtime calls [`prepare_commit`](Self::prepare_commit),
/// [`commit`](Self::commit) and [`rollback`](Self::rollback) as the checkpoints go;
/// a bolt only reads and writes. Outside a topology (tools, tests) open one with
/// [`open`](Self::open).
///
/// ```
/// use squall_api::state::KeyValueState;
/// use squall_api::Config;
///
/// let mut s: KeyValueState<String, u64> = KeyValueState::open(&Config::new(), "doc:counts").unwrap();
/// s.put("the".to_owned(), 2);
/// s.prepare_commit(1).unwrap();
/// s.put("the".to_owned(), 3);      // after the checkpoint: not in txid 1
/// s.commit(1).unwrap();
/// s.rollback().unwrap();           // back to what txid 1 committed
/// assert_eq!(s.get(&"the".to_owned()), Some(&2));
/// ```
pub struct KeyValueState<K, V> {
    map: HashMap<K, V, RandomState>,
    /// Keys written since the last prepare.
    dirty: HashSet<K, RandomState>,
    store: Box<dyn Store>,
    namespace: String,
}

impl<K, V> fmt::Debug for KeyValueState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValueState")
            .field("namespace", &self.namespace)
            .field("len", &self.map.len())
            .field("dirty", &self.dirty.len())
            .finish()
    }
}

impl<K, V> KeyValueState<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone,
    V: Serialize + DeserializeOwned,
{
    /// Opens namespace `namespace` of the provider `conf` names, and loads its
    /// committed state.
    ///
    /// # Errors
    /// A bad provider configuration, an unreachable provider, or stored data that does
    /// not decode as `K` / `V` (the message names the namespace).
    pub fn open(conf: &Config, namespace: &str) -> Result<Self, StateError> {
        let store = StateProvider::from_conf(conf)?.open(namespace)?;
        let mut state = KeyValueState {
            map: HashMap::default(),
            dirty: HashSet::default(),
            store,
            namespace: namespace.to_owned(),
        };
        state.reload()?;
        Ok(state)
    }

    fn reload(&mut self) -> Result<(), StateError> {
        let entries = self.store.load()?;
        let mut map = HashMap::with_capacity_and_hasher(entries.len(), RandomState::default());
        for (k, v) in entries {
            let decode_err = |what: &str, bytes: &[u8], e: serde_json::Error| {
                StateError::new(format!(
                    "state '{}' holds a {what} that does not decode ({e}): {}",
                    self.namespace,
                    String::from_utf8_lossy(bytes)
                ))
            };
            let key: K = serde_json::from_slice(&k).map_err(|e| decode_err("key", &k, e))?;
            let value: V = serde_json::from_slice(&v).map_err(|e| decode_err("value", &v, e))?;
            map.insert(key, value);
        }
        self.map = map;
        self.dirty.clear();
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The value of `key`, to change in place (the key counts as written).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        Some(v)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: K, value: V) {
        if !self.dirty.contains(&key) {
            self.dirty.insert(key.clone());
        }
        self.map.insert(key, value);
    }

    /// Removes `key`, returning its value.
    pub fn delete(&mut self, key: &K) -> Option<V> {
        let old = self.map.remove(key);
        if old.is_some() && !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        old
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.map.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The namespace the state is stored under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn writes(&self) -> Result<Writes, StateError> {
        let enc = |what: &str, e: serde_json::Error| {
            StateError::new(format!(
                "state '{}': a {what} does not encode as JSON: {e}",
                self.namespace
            ))
        };
        self.dirty
            .iter()
            .map(|k| {
                let key = serde_json::to_vec(k).map_err(|e| enc("key", e))?;
                let value = match self.map.get(k) {
                    Some(v) => Some(serde_json::to_vec(v).map_err(|e| enc("value", e))?),
                    None => None,
                };
                Ok((key, value))
            })
            .collect()
    }

    /// Storm's `prepareCommit(txid)`: stores every write since the last prepare
    /// durably as transaction `txid`, without committing it. Later writes belong to the
    /// next transaction.
    ///
    /// # Errors
    /// The provider failed: nothing is prepared, and the writes stay for the next try.
    pub fn prepare_commit(&mut self, txid: u64) -> Result<(), StateError> {
        let writes = self.writes()?;
        self.store.prepare(txid, &writes)?;
        self.dirty.clear();
        Ok(())
    }

    /// Storm's `commit(txid)`: makes the writes prepared under `txid` the committed
    /// state. Idempotent: a txid already committed (or never prepared) changes
    /// nothing.
    ///
    /// # Errors
    /// The provider failed; retry with the same txid.
    pub fn commit(&mut self, txid: u64) -> Result<(), StateError> {
        self.store.commit(txid).map(|_| ())
    }

    /// Storm's `commit()`: writes every change since the last prepare as committed
    /// state at once, outside any transaction.
    ///
    /// # Errors
    /// The provider failed; the writes stay for the next try.
    pub fn commit_now(&mut self) -> Result<(), StateError> {
        let writes = self.writes()?;
        self.store.write_now(&writes)?;
        self.dirty.clear();
        Ok(())
    }

    /// Storm's `rollback()`: drops what is prepared and every write since, and loads
    /// the committed state again.
    ///
    /// # Errors
    /// The provider failed; the state is then unusable until a rollback succeeds.
    pub fn rollback(&mut self) -> Result<(), StateError> {
        self.store.rollback()?;
        self.reload()
    }

    /// The last committed transaction id (`None`: nothing committed yet).
    ///
    /// # Errors
    /// The provider failed.
    pub fn committed_txid(&mut self) -> Result<Option<u64>, StateError> {
        Ok(self.store.txids()?.0)
    }

    /// The prepared transaction id, if a prepare waits for its commit.
    ///
    /// # Errors
    /// The provider failed.
    pub fn prepared_txid(&mut self) -> Result<Option<u64>, StateError> {
        Ok(self.store.txids()?.1)
    }
}
