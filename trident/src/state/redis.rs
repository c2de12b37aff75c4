//! Map state in Redis (storm-redis's `RedisMapState`): survives the workers, and can be
//! read by anyone with `redis-cli`.
//!
//! A state's keys are `<prefix><key as JSON>`, e.g. `wordcount:counts:["the"]`, with the
//! records of its flavour as plain Redis strings (see [the state module](super) for
//! their JSON). The default prefix is `<topology name>:<state name>:`, so a topology
//! that is killed and submitted again carries on with its state. One partition reads
//! with one `MGET` and writes with one `MSET` (atomic in Redis), over its own
//! synchronous connection; after an error the connection is dropped and opened again
//! by the next call.

use std::fmt;
use std::time::Duration;

use squall_api::Config;

use super::backend::{Entry, WriteFailures};
use super::map::{Flavour, Snapshot, DEFAULT_CACHE_SIZE};
use super::{MapBackend, MapState, StateContext, StateError, StateFactory};

/// How long connecting, and each read or write, may take unless told otherwise.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// How many keys one `SCAN` step and one `MGET` of a snapshot cover.
const SCAN_BATCH: usize = 1000;

/// A Redis database as a [`MapBackend`]: every key is stored under a prefix.
pub struct RedisBackend {
    client: ::redis::Client,
    conn: Option<::redis::Connection>,
    /// The URL as shown in messages (no password).
    url: String,
    prefix: Vec<u8>,
    timeout: Duration,
}

impl RedisBackend {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`, with
    /// `redis://:password@...` or `redis://user:password@...` when Redis asks for one);
    /// keys are stored under `prefix`. Connecting, and each later read or write, may
    /// take up to `timeout`.
    ///
    /// # Errors
    /// When the URL is not one, or Redis cannot be reached: the message names the URL
    /// (without its password), e.g. `cannot connect to Redis at redis://127.0.0.1:6390:
    /// connection refused`.
    pub fn connect(
        url: &str,
        prefix: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let shown = redact(url);
        let client = ::redis::Client::open(url)
            .map_err(|e| StateError::new(format!("invalid Redis URL {shown}: {e}")))?;
        let mut backend = RedisBackend {
            client,
            conn: None,
            url: shown,
            prefix: prefix.into(),
            timeout: if timeout.is_zero() {
                DEFAULT_REDIS_TIMEOUT
            } else {
                timeout
            },
        };
        backend.connection()?;
        Ok(backend)
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn connection(&mut self) -> Result<&mut ::redis::Connection, StateError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .and_then(|c| {
                    c.set_read_timeout(Some(self.timeout))?;
                    c.set_write_timeout(Some(self.timeout))?;
                    Ok(c)
                })
                .map_err(|e| {
                    StateError::new(format!(
                        "cannot connect to Redis at {}: {}",
                        self.url,
                        describe(&e, self.timeout)
                    ))
                })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected just above"))
    }

    /// Runs `cmd`; on an error the connection is dropped (it may be out of step) and the
    /// next call opens a new one.
    fn query<T: ::redis::FromRedisValue>(
        &mut self,
        what: impl FnOnce() -> String,
        cmd: &::redis::Cmd,
    ) -> Result<T, StateError> {
        let result = cmd.query(self.connection()?);
        result.map_err(|e| {
            self.conn = None;
            StateError::new(format!(
                "Redis at {}: {} failed: {}",
                self.url,
                what(),
                describe(&e, self.timeout)
            ))
        })
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// Every key under the prefix (prefix removed) with its value, read with `SCAN` and
    /// `MGET`. Not atomic: for tests and examples, on a state at rest.
    pub fn scan(&mut self) -> Result<Vec<Entry>, StateError> {
        let pattern = [glob_escape(&self.prefix), b"*".to_vec()].concat();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, batch): (u64, Vec<Vec<u8>>) = self.query(|| "SCAN".into(), &cmd)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once.
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_BATCH) {
            let mut cmd = ::redis::cmd("MGET");
            cmd.arg(chunk);
            let values: Vec<Option<Vec<u8>>> =
                self.query(|| format!("MGET of {} keys", chunk.len()), &cmd)?;
            for (k, v) in chunk.iter().zip(values) {
                // A key removed since the SCAN is not part of the state any more.
                if let Some(v) = v {
                    out.push((k[self.prefix.len()..].to_vec(), v));
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl MapBackend for RedisBackend {
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.key(k));
        }
        let values: Vec<Option<Vec<u8>>> =
            self.query(|| format!("MGET of {} keys", keys.len()), &cmd)?;
        if values.len() != keys.len() {
            return Err(StateError::new(format!(
                "Redis at {}: MGET of {} keys answered {} values",
                self.url,
                keys.len(),
                values.len()
            )));
        }
        Ok(values)
    }

    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
        if keys.len() != values.len() {
            return Err(StateError::new(format!(
                "multi_put of {} keys with {} values",
                keys.len(),
                values.len()
            )));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = ::redis::cmd("MSET");
        for (k, v) in keys.iter().zip(values) {
            cmd.arg(self.key(k)).arg(v.as_slice());
        }
        self.query(|| format!("MSET of {} keys", keys.len()), &cmd)
    }
}

/// What went wrong, in words a user acts on.
fn describe(e: &::redis::RedisError, timeout: Duration) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else {
        e.to_string()
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => userinfo,
    };
    format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
}

/// `prefix` with Redis's glob characters escaped, for `SCAN MATCH`.
fn glob_escape(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len());
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Map state in Redis (storm-redis's `RedisMapState.Factory`).
///
/// ```no_run
/// use squall_trident::state::RedisMapState;
///
/// // Keys `wordcount:counts:["the"]` ... for a state named `counts` in topology `wordcount`.
/// let counts = RedisMapState::opaque("redis://127.0.0.1:6379");
/// // ... run the topology, then:
/// let snapshot = counts.snapshot_of("wordcount", "counts")?;
/// println!("{} words", snapshot.len());
/// # Ok::<(), squall_trident::state::StateError>(())
/// ```
#[derive(Clone)]
pub struct RedisMapState {
    flavour: Flavour,
    url: String,
    prefix: Option<String>,
    cache_size: usize,
    write_failures: Option<WriteFailures>,
    timeout: Duration,
}

impl RedisMapState {
    fn new(flavour: Flavour, url: String) -> Self {
        RedisMapState {
            flavour,
            url,
            prefix: None,
            cache_size: DEFAULT_CACHE_SIZE,
            write_failures: None,
            timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }

    /// Exactly-once state for transactional spouts, in the Redis at `url` (see
    /// [`RedisBackend::connect`] for the URL).
    pub fn transactional(url: impl Into<String>) -> Self {
        Self::new(Flavour::Transactional, url.into())
    }

    /// Exactly-once state for opaque transactional spouts, in the Redis at `url`.
    pub fn opaque(url: impl Into<String>) -> Self {
        Self::new(Flavour::Opaque, url.into())
    }

    /// At-least-once state, in the Redis at `url`.
    pub fn non_transactional(url: impl Into<String>) -> Self {
        Self::new(Flavour::NonTransactional, url.into())
    }

    /// Stores keys under `prefix` instead of `<topology>:<state name>:`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Caches up to `keys` keys per partition (0: no cache); [`DEFAULT_CACHE_SIZE`]
    /// unless told otherwise.
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

    /// How long connecting, and each read or write, may take ([`DEFAULT_REDIS_TIMEOUT`]
    /// unless told otherwise; zero means the default); a call that takes longer fails
    /// the batch.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The prefix of the keys of state `state` in topology `topology`.
    pub fn prefix_for(&self, topology: &str, state: &str) -> String {
        match &self.prefix {
            Some(p) => p.clone(),
            None => format!("{topology}:{state}:"),
        }
    }

    /// The current value of every key under the prefix set with
    /// [`with_prefix`](Self::with_prefix) (see [`snapshot_of`](Self::snapshot_of) for
    /// the default prefix).
    ///
    /// # Errors
    /// When no prefix was set, Redis cannot be read, or a key under the prefix does not
    /// hold a record of this flavour.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        let Some(prefix) = &self.prefix else {
            return Err(StateError::new(
                "RedisMapState::snapshot needs the key prefix: set it with with_prefix, \
                 or call snapshot_of(topology, state)",
            ));
        };
        self.snapshot_under(prefix)
    }

    /// The current value of every key of state `state` in topology `topology`.
    ///
    /// # Errors
    /// When Redis cannot be read, or a key under the prefix does not hold a record of
    /// this flavour.
    pub fn snapshot_of(&self, topology: &str, state: &str) -> Result<Snapshot, StateError> {
        self.snapshot_under(&self.prefix_for(topology, state))
    }

    fn snapshot_under(&self, prefix: &str) -> Result<Snapshot, StateError> {
        let mut backend = RedisBackend::connect(&self.url, prefix, self.timeout)?;
        let stored = backend.scan()?;
        Snapshot::decode(self.flavour, stored)
            .map_err(|e| StateError::new(format!("Redis at {}, prefix {prefix}: {e}", backend.url)))
    }
}

impl fmt::Debug for RedisMapState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMapState")
            .field("flavour", &self.flavour)
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("cache_size", &self.cache_size)
            .field("write_failures", &self.write_failures)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StateFactory for RedisMapState {
    fn make_state(
        &self,
        _conf: &Config,
        ctx: &StateContext,
    ) -> Result<Box<dyn MapState>, StateError> {
        let prefix = self.prefix_for(&ctx.topology, &ctx.name);
        let backend = RedisBackend::connect(&self.url, prefix, self.timeout)?;
        let backend = WriteFailures::wrap(self.write_failures, Box::new(backend), ctx.partition)
            .map_err(|e| StateError::new(format!("state {}: {e}", ctx.name)))?;
        Ok(self.flavour.build(backend, self.cache_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("rediss://bob:s3cret@h:1"), "rediss://bob:***@h:1");
        assert_eq!(redact("redis://bob@h:1"), "redis://bob:***@h:1");
        assert_eq!(redact("not a url"), "not a url");
        let f = RedisMapState::opaque("redis://:s3cret@h:1");
        assert!(!format!("{f:?}").contains("s3cret"));
        let err = RedisBackend::connect("redis://:s3cret@127.0.0.1:1", "p:", DEFAULT_REDIS_TIMEOUT)
            .unwrap_err();
        assert!(!err.0.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_bad_url_is_named() {
        let err = RedisBackend::connect("localhost:6379", "p:", DEFAULT_REDIS_TIMEOUT).unwrap_err();
        assert!(
            err.0.starts_with("invalid Redis URL localhost:6379: "),
            "{err}"
        );
    }

    #[test]
    fn prefixes() {
        let f = RedisMapState::transactional("redis://127.0.0.1:1");
        assert_eq!(f.prefix_for("wordcount", "counts"), "wordcount:counts:");
        let f = f.with_prefix("mine/");
        assert_eq!(f.prefix_for("wordcount", "counts"), "mine/");
        assert_eq!(glob_escape(b"a*b?[c]\\:"), b"a\\*b\\?\\[c\\]\\\\:".to_vec());
        let err = RedisMapState::opaque("redis://127.0.0.1:1")
            .snapshot()
            .unwrap_err();
        assert!(err.0.contains("with_prefix"), "{err}");
    }
}
