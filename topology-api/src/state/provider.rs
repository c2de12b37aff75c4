//! State providers: where the committed copy of a state lives.
//!
//! A store holds one namespace: its committed entries (key and value as JSON bytes),
//! at most one prepared transaction (its writes, with `None` deleting a key) and the
//! last committed transaction id. Storm's two-phase protocol on top:
//! `prepare(txid, writes)` records the writes durably without applying them (replacing
//! any earlier prepared ones), `commit(txid)` applies the prepared writes of `txid` and
//! is idempotent (a commit of a txid not prepared, or already committed, changes
//! nothing), `rollback` drops the prepared writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{keys, StateError};
use crate::config::Config;
use crate::value::Value;

/// The writes of one transaction: key → new value, or `None` to delete.
pub(crate) type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;
/// Committed entries.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One namespace of a provider.
pub(crate) trait Store: Send {
    /// Every committed entry.
    fn load(&mut self) -> Result<Entries, StateError>;
    /// Records `writes` as transaction `txid`, durably, without applying them.
    fn prepare(&mut self, txid: u64, writes: &Writes) -> Result<(), StateError>;
    /// Applies the prepared writes of `txid`; `Ok(false)` when nothing was prepared
    /// under `txid` (e.g. it was committed already).
    fn commit(&mut self, txid: u64) -> Result<bool, StateError>;
    /// Drops the prepared writes.
    fn rollback(&mut self) -> Result<(), StateError>;
    /// Applies `writes` at once (no transaction).
    fn write_now(&mut self, writes: &Writes) -> Result<(), StateError>;
    /// The last committed and the prepared transaction ids.
    fn txids(&mut self) -> Result<(Option<u64>, Option<u64>), StateError>;
}

/// Where states are kept, from `topology.state.provider`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateProvider {
    /// In the worker's memory (Storm's `InMemoryKeyValueStateProvider`): lost with the
    /// worker process; for local mode and tests.
    Memory,
    /// In Redis (Storm's `RedisKeyValueStateProvider`).
    Redis(RedisConfig),
}

/// How to reach Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/database]`.
    pub url: String,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

/// The names `topology.state.provider` accepts, as shown in errors.
const KNOWN: &str = "'memory' (org.apache.storm.state.InMemoryKeyValueStateProvider, the \
                     default) and 'redis' (org.apache.storm.redis.state.RedisKeyValueStateProvider)";

impl StateProvider {
    /// The provider `conf` names, with its configuration.
    ///
    /// # Errors
    /// An unknown provider (the message lists the known ones), Redis in a binary built
    /// without squall-api's `redis` feature, or a provider configuration that does not
    /// parse.
    pub fn from_conf(conf: &Config) -> Result<StateProvider, StateError> {
        let name = match conf.get(keys::TOPOLOGY_STATE_PROVIDER) {
            None | Some(Value::Null) => "memory".to_owned(),
            Some(Value::Str(s)) => s.trim().to_owned(),
            Some(other) => {
                return Err(StateError::new(format!(
                    "config key '{}' must be a provider name, found {other:?}; known \
                     providers: {KNOWN}",
                    keys::TOPOLOGY_STATE_PROVIDER
                )))
            }
        };
        match name.as_str() {
            "memory"
            | "in-memory"
            | "inmemory"
            | "org.apache.storm.state.InMemoryKeyValueStateProvider" => Ok(StateProvider::Memory),
            "redis" | "org.apache.storm.redis.state.RedisKeyValueStateProvider" => {
                if cfg!(feature = "redis") {
                    Ok(StateProvider::Redis(redis_config(conf)?))
                } else {
                    Err(StateError::new(format!(
                        "state provider '{name}' (config key '{}') needs Redis support, which \
                         this binary was built without: enable squall-api's cargo feature \
                         `redis`",
                        keys::TOPOLOGY_STATE_PROVIDER
                    )))
                }
            }
            _ => Err(StateError::new(format!(
                "unknown state provider '{name}' (config key '{}'); known providers: {KNOWN}",
                keys::TOPOLOGY_STATE_PROVIDER
            ))),
        }
    }

    /// Opens namespace `namespace` of this provider.
    pub(crate) fn open(&self, namespace: &str) -> Result<Box<dyn Store>, StateError> {
        match self {
            StateProvider::Memory => Ok(Box::new(MemoryStore::open(namespace))),
            #[cfg(feature = "redis")]
            StateProvider::Redis(c) => {
                Ok(Box::new(super::redis::RedisStore::connect(c, namespace)?))
            }
            #[cfg(not(feature = "redis"))]
            StateProvider::Redis(_) => Err(StateError::new(
                "the Redis state provider needs squall-api's cargo feature `redis`",
            )),
        }
    }
}

/// Parses `topology.state.provider.config` for Redis.
fn redis_config(conf: &Config) -> Result<RedisConfig, StateError> {
    let key = keys::TOPOLOGY_STATE_PROVIDER_CONFIG;
    let bad = |why: String| StateError::new(format!("config key '{key}' {why}"));
    let json: serde_json::Value = match conf.get(key) {
        None | Some(Value::Null) => serde_json::Value::Object(Default::default()),
        Some(Value::Str(text)) => serde_json::from_str(text)
            .map_err(|e| bad(format!("is not valid JSON ({e}): {text}")))?,
        Some(v @ Value::Map(_)) => {
            serde_json::to_value(v).map_err(|e| bad(format!("cannot be read: {e}")))?
        }
        Some(other) => return Err(bad(format!("must be JSON text or a map, found {other:?}"))),
    };
    let serde_json::Value::Object(top) = json else {
        return Err(bad("must be a JSON object".into()));
    };
    let mut timeout = Duration::from_secs(5);
    let mut ms = |v: Option<&serde_json::Value>| -> Result<(), StateError> {
        match v {
            None => Ok(()),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => {
                    timeout = Duration::from_millis(n);
                    Ok(())
                }
                _ => Err(bad(format!(
                    "has a timeout that is not a positive number of ms: {v}"
                ))),
            },
        }
    };
    if let Some(url) = top.get("url") {
        let url = url
            .as_str()
            .filter(|u| u.starts_with("redis://") || u.starts_with("rediss://"))
            .ok_or_else(|| bad(format!("has a url that is not redis://host:port: {url}")))?;
        ms(top.get("timeout"))?;
        return Ok(RedisConfig {
            url: url.to_owned(),
            timeout,
        });
    }
    let empty = serde_json::Map::new();
    let pool = match top.get("jedisPoolConfig") {
        None => &empty,
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            return Err(bad(format!(
                "has a jedisPoolConfig that is not an object: {other}"
            )))
        }
    };
    let host = match pool.get("host") {
        None => "localhost",
        Some(v) => v.as_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            bad(format!(
                "has a jedisPoolConfig.host that is not a host name: {v}"
            ))
        })?,
    };
    let num = |field: &str, default: u64, max: u64| -> Result<u64, StateError> {
        match pool.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    bad(format!(
                        "has a jedisPoolConfig.{field} that is not a number up to {max}: {v}"
                    ))
                }),
        }
    };
    let port = num("port", 6379, 65535)?;
    let database = num("database", 0, 1 << 20)?;
    ms(pool.get("timeout"))?;
    let auth = match pool.get("password") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(p)) => format!(":{}@", percent_encode(p)),
        Some(other) => {
            return Err(bad(format!(
                "has a jedisPoolConfig.password that is not a string: {other}"
            )))
        }
    };
    Ok(RedisConfig {
        url: format!("redis://{auth}{host}:{port}/{database}"),
        timeout,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The data of one in-memory namespace.
#[derive(Default)]
struct MemoryData {
    committed: BTreeMap<Vec<u8>, Vec<u8>>,
    committed_txid: Option<u64>,
    prepared: Option<(u64, Writes)>,
}

/// Every in-memory namespace of this process.
fn memory() -> &'static Mutex<HashMap<String, Arc<Mutex<MemoryData>>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<Mutex<MemoryData>>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// A namespace in this process's memory: shared by every state opened on it here.
pub(crate) struct MemoryStore {
    data: Arc<Mutex<MemoryData>>,
}

impl MemoryStore {
    pub(crate) fn open(namespace: &str) -> Self {
        let mut all = memory().lock().unwrap_or_else(|p| p.into_inner());
        MemoryStore {
            data: all.entry(namespace.to_owned()).or_default().clone(),
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, MemoryData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: &Writes) {
    for (k, v) in writes {
        match v {
            Some(v) => {
                map.insert(k.clone(), v.clone());
            }
            None => {
                map.remove(k);
            }
        }
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Entries, StateError> {
        Ok(self
            .data()
            .committed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn prepare(&mut self, txid: u64, writes: &Writes) -> Result<(), StateError> {
        self.data().prepared = Some((txid, writes.clone()));
        Ok(())
    }

    fn commit(&mut self, txid: u64) -> Result<bool, StateError> {
        let mut d = self.data();
        match d.prepared.take() {
            Some((t, writes)) if t == txid => {
                apply(&mut d.committed, &writes);
                d.committed_txid = Some(txid);
                Ok(true)
            }
            other => {
                d.prepared = other;
                Ok(false)
            }
        }
    }

    fn rollback(&mut self) -> Result<(), StateError> {
        self.data().prepared = None;
        Ok(())
    }

    fn write_now(&mut self, writes: &Writes) -> Result<(), StateError> {
        apply(&mut self.data().committed, writes);
        Ok(())
    }

    fn txids(&mut self) -> Result<(Option<u64>, Option<u64>), StateError> {
        let d = self.data();
        Ok((d.committed_txid, d.prepared.as_ref().map(|p| p.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(pairs: &[(&str, &str)]) -> Config {
        let mut c = Config::new();
        for (k, v) in pairs {
            c.set(*k, *v);
        }
        c
    }

    #[test]
    fn providers_by_name_and_storm_class() {
        assert_eq!(
            StateProvider::from_conf(&Config::new()),
            Ok(StateProvider::Memory)
        );
        let storm = conf(&[(
            keys::TOPOLOGY_STATE_PROVIDER,
            "org.apache.storm.state.InMemoryKeyValueStateProvider",
        )]);
        assert_eq!(StateProvider::from_conf(&storm), Ok(StateProvider::Memory));
        let e = StateProvider::from_conf(&conf(&[(keys::TOPOLOGY_STATE_PROVIDER, "hbase")]))
            .unwrap_err();
        assert!(e.0.contains("unknown state provider 'hbase'"), "{e}");
        assert!(e.0.contains("'memory'") && e.0.contains("'redis'"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_config_in_storm_shape_or_as_url() {
        let c = conf(&[
            (
                keys::TOPOLOGY_STATE_PROVIDER,
                "org.apache.storm.redis.state.RedisKeyValueStateProvider",
            ),
            (
                keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
                r#"{"keyClass":"x","jedisPoolConfig":{"host":"10.0.0.1","port":6380,"database":2,"password":"p@ss","timeout":2000}}"#,
            ),
        ]);
        assert_eq!(
            StateProvider::from_conf(&c),
            Ok(StateProvider::Redis(RedisConfig {
                url: "redis://:p%40ss@10.0.0.1:6380/2".into(),
                timeout: Duration::from_millis(2000),
            }))
        );
        let c = conf(&[
            (keys::TOPOLOGY_STATE_PROVIDER, "redis"),
            (
                keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
                r#"{"url":"redis://127.0.0.1:7000"}"#,
            ),
        ]);
        assert!(
            matches!(StateProvider::from_conf(&c), Ok(StateProvider::Redis(r)) if r.url == "redis://127.0.0.1:7000")
        );
        let c = conf(&[
            (keys::TOPOLOGY_STATE_PROVIDER, "redis"),
            (
                keys::TOPOLOGY_STATE_PROVIDER_CONFIG,
                r#"{"jedisPoolConfig":{"port":"x"}}"#,
            ),
        ]);
        let e = StateProvider::from_conf(&c).unwrap_err();
        assert!(e.0.contains("jedisPoolConfig.port"), "{e}");
        let c = conf(&[
            (keys::TOPOLOGY_STATE_PROVIDER, "redis"),
            (keys::TOPOLOGY_STATE_PROVIDER_CONFIG, "{not json"),
        ]);
        assert!(StateProvider::from_conf(&c)
            .unwrap_err()
            .0
            .contains("not valid JSON"));
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn redis_without_the_feature_is_refused() {
        let e = StateProvider::from_conf(&conf(&[(keys::TOPOLOGY_STATE_PROVIDER, "redis")]))
            .unwrap_err();
        assert!(e.0.contains("feature `redis`"), "{e}");
    }

    #[test]
    fn memory_store_prepare_commit_rollback() {
        let mut s = MemoryStore::open("provider-unit-test:c-1");
        let w =
            |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        s.prepare(1, &vec![w("a", Some("1")), w("b", Some("2"))])
            .unwrap();
        assert!(
            s.load().unwrap().is_empty(),
            "prepared writes are not visible"
        );
        assert!(s.commit(1).unwrap());
        assert!(!s.commit(1).unwrap(), "a second commit changes nothing");
        assert_eq!(s.txids().unwrap(), (Some(1), None));
        s.prepare(2, &vec![w("a", None), w("c", Some("3"))])
            .unwrap();
        s.rollback().unwrap();
        assert!(!s.commit(2).unwrap());
        assert_eq!(s.load().unwrap().len(), 2);
        s.prepare(2, &vec![w("a", None)]).unwrap();
        assert!(s.commit(2).unwrap());
        assert_eq!(s.load().unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
    }
}
