//! Where a batch group's coordinator and emitters keep their metadata (current txid,
//! the last committed txid, per-partition batch metadata), so that a restarted
//! coordinator or emitter carries on: ZooKeeper in cluster mode, memory in local mode.
//!
//! Keys are `/`-separated relative paths (e.g. `words/coordinator`,
//! `words/emitter/spout/p0`); values are small byte strings (JSON).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use squall_api::Config;

/// Why the store could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("transactional state: {0}")]
pub struct StoreError(pub String);

/// A small key-value store for coordinator metadata (Storm's `TransactionalState`).
/// Calls block; each write is durable when it returns.
pub trait CoordinatorStore: Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` (creating parents as needed).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` and everything under it; absent is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// The in-memory store of local mode: one map per process, shared by every task.
#[derive(Clone, Default)]
pub struct MemoryStore {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// The process-wide store.
    pub fn global() -> Self {
        static GLOBAL: std::sync::OnceLock<MemoryStore> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(MemoryStore::default).clone()
    }
}

impl CoordinatorStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = format!("{key}/");
        map.retain(|k, _| k != key && !k.starts_with(&prefix));
        Ok(())
    }
}

mod zk;
pub use zk::ZkStore;

/// The store for a task: [`ZkStore`] when this process is a cluster worker (the
/// configuration then carries `storm.zookeeper.*`, see [`ZkStore::from_conf`]),
/// [`MemoryStore::global`] otherwise.
pub fn open_store(conf: &Config) -> Result<Arc<dyn CoordinatorStore>, StoreError> {
    if squall_worker::submitter::launch_mode() == squall_worker::submitter::LaunchMode::Worker {
        Ok(Arc::new(ZkStore::from_conf(conf)?))
    } else {
        Ok(Arc::new(MemoryStore::global()))
    }
}
