//! [`ZkStore`]: coordinator metadata in ZooKeeper.

use squall_api::Config;

use super::{CoordinatorStore, StoreError};

/// Coordinator metadata under `<storm.zookeeper.root>/transactional/` in ZooKeeper.
pub struct ZkStore {}

impl ZkStore {
    /// Connects with the configuration a cluster worker hands its components
    /// (`storm.zookeeper.servers`, `storm.zookeeper.port`, `storm.zookeeper.root`,
    /// `storm.zookeeper.session.timeout`).
    pub fn from_conf(conf: &Config) -> Result<Self, StoreError> {
        let _ = conf;
        todo!("H3")
    }
}

impl CoordinatorStore for ZkStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = key;
        todo!("H3")
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _ = (key, value);
        todo!("H3")
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        todo!("H3")
    }
}
