//! [`ZkStore`]: coordinator metadata in ZooKeeper.
//!
//! A key `words/coordinator` is the znode `<storm.zookeeper.root>/transactional/words/coordinator`
//! (`/squall/transactional/words/coordinator` by default; Storm keeps the same
//! `/transactional` directory), holding the value's bytes as they are (JSON), so
//! `zkCli.sh get` shows them.
//!
//! Calls block the calling thread (an executor thread) while the work runs on a small
//! process-wide runtime (one thread, `squall-zkstore`) that also keeps the sessions
//! alive. Each call has [`ZkStore::call_timeout`] (the session timeout) to get through:
//! when the connection drops, or the session is found disconnected, expired or closed,
//! the call starts a new session and tries again (every operation is idempotent), so a
//! ZooKeeper restart costs the calls made meanwhile an error, never a wedged
//! coordinator. A store holds no ephemeral nodes or watches, so nothing is lost with an
//! old session.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use squall_api::Config;
use squall_cluster::config::ClusterConfig;
use tokio::time::Instant;
use zookeeper_client as zk;

use super::{CoordinatorStore, StoreError};

/// The directory under `storm.zookeeper.root` that holds every key (Storm's
/// `/transactional`).
pub const TRANSACTIONAL_DIR: &str = "transactional";

/// The largest value [`ZkStore::put`](CoordinatorStore::put) accepts, in bytes
/// (ZooKeeper refuses packets over 1 MiB, `jute.maxbuffer`, by dropping the connection).
pub const MAX_VALUE_BYTES: usize = 1_000_000;

/// Pause before the second attempt of a call; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts of a call.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The shortest time a call gets, whatever the session timeout.
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Coordinator metadata under `<storm.zookeeper.root>/transactional/` in ZooKeeper.
///
/// Keys are relative paths (`words/coordinator`); their parents are created as needed,
/// empty. A node without data reads as absent, so a key that only has keys under it
/// (`words`) is absent as in [`MemoryStore`](super::MemoryStore); an empty value
/// therefore reads back as absent too.
pub struct ZkStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connect string, `zk1:2181,zk2:2181`.
    servers: String,
    /// `<root>/transactional`.
    base: String,
    session_timeout: Duration,
    call_timeout: Duration,
    /// The current session, replaced when it is lost.
    session: tokio::sync::Mutex<Option<zk::Client>>,
}

/// One operation on one node.
enum Op {
    Get,
    Put(Vec<u8>),
    Delete,
}

impl Op {
    fn verb(&self) -> &'static str {
        match self {
            Op::Get => "read",
            Op::Put(_) => "write",
            Op::Delete => "delete",
        }
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Errors after which the same call may succeed with a new session or a little later.
fn transient(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::Timeout
            | zk::Error::NoHosts
            | zk::Error::ClientClosed
            | zk::Error::Throttled
            | zk::Error::NotReadOnly
            | zk::Error::UnexpectedError(_)
            | zk::Error::Custom(_)
    )
}

/// The process-wide runtime the stores' sessions and calls run on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("squall-zkstore")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError(format!("cannot start the ZooKeeper client's thread: {e}")))
}

/// Runs `fut` on the store's runtime and waits for it (from any thread, also one inside
/// another runtime).
fn block_on<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| StoreError("the ZooKeeper call was cancelled".to_owned()))?
}

/// Why `key` cannot name a node, if it cannot.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("it is empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Some("it starts or ends with '/'");
    }
    if key.split('/').any(str::is_empty) {
        return Some("it has an empty part ('//')");
    }
    if key.split('/').any(|part| part == "." || part == "..") {
        return Some("it has a '.' or '..' part");
    }
    // What ZooKeeper refuses in a path (PathUtils.validatePath; Rust strings hold no
    // surrogates).
    if key.chars().any(|c| {
        matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}')
    }) {
        return Some("it has a character ZooKeeper does not allow in a path (a control or private-use character)");
    }
    None
}

impl ZkStore {
    /// Connects with the configuration a cluster worker hands its components
    /// (`storm.zookeeper.servers`, `storm.zookeeper.port`, `storm.zookeeper.root`,
    /// `storm.zookeeper.session.timeout`; Squall's defaults for those not set) and
    /// creates `<root>/transactional`. Fails when a key has a bad value or ZooKeeper
    /// cannot be reached within the session timeout.
    pub fn from_conf(conf: &Config) -> Result<Self, StoreError> {
        let bad = |e: squall_api::ConfigError| StoreError(e.to_string());
        let servers = conf.zookeeper_connect_string().map_err(bad)?;
        let root = conf.zookeeper_root().map_err(bad)?;
        let session_timeout = conf.zookeeper_session_timeout().map_err(bad)?;
        let base = format!("{}/{TRANSACTIONAL_DIR}", root.trim_end_matches('/'));
        let inner = Arc::new(Inner {
            servers,
            base,
            session_timeout,
            call_timeout: session_timeout.max(MIN_CALL_TIMEOUT),
            session: tokio::sync::Mutex::new(None),
        });
        let store = ZkStore { inner };
        let inner = store.inner.clone();
        block_on(async move { inner.ensure_base().await })?;
        Ok(store)
    }

    /// The ZooKeeper connect string (`zk1:2181,zk2:2181`).
    pub fn servers(&self) -> &str {
        &self.inner.servers
    }

    /// The absolute znode path of `key` (`/squall/transactional/words/coordinator`).
    pub fn path(&self, key: &str) -> Result<String, StoreError> {
        self.inner.path(key)
    }

    /// How long one call may take before it fails (the session timeout, at least 2 s),
    /// reconnecting as needed meanwhile.
    pub fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    fn call(&self, key: &str, op: Op) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.inner.path(key)?;
        if let Op::Put(value) = &op {
            if value.len() > MAX_VALUE_BYTES {
                return Err(StoreError(format!(
                    "the value for {path} is {} bytes; ZooKeeper nodes hold at most \
                     {MAX_VALUE_BYTES} bytes",
                    value.len()
                )));
            }
        }
        let inner = self.inner.clone();
        block_on(async move { inner.run(&path, &op).await })
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<String, StoreError> {
        match key_problem(key) {
            None => Ok(format!("{}/{key}", self.base)),
            Some(why) => Err(StoreError(format!(
                "invalid key {key:?}: {why}; keys are relative paths such as \
                 'words/coordinator'"
            ))),
        }
    }

    fn failed(&self, verb: &str, path: &str, e: &zk::Error) -> StoreError {
        StoreError(format!(
            "ZooKeeper at {}: cannot {verb} {path}: {e}",
            self.servers
        ))
    }

    fn timed_out(&self, verb: &str, path: &str, last: Option<&zk::Error>) -> StoreError {
        let last = match last {
            Some(zk::Error::NoHosts) => " (no server could be reached)".to_owned(),
            Some(e) => format!(" (last error: {e})"),
            None => String::new(),
        };
        StoreError(format!(
            "ZooKeeper at {}: cannot {verb} {path}: no answer within {:?}{last}; is ZooKeeper \
             running and reachable?",
            self.servers, self.call_timeout
        ))
    }

    /// Creates `<root>/transactional` (once per store, at the start).
    async fn ensure_base(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.call_timeout;
        let mut last = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let attempt = async {
                let client = self.client(deadline).await?;
                let made = client.mkdir(&self.base, &persistent()).await;
                if made.as_ref().is_err_and(transient) {
                    self.forget(&client).await;
                }
                made
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if transient(&e) => last = Some(e),
                Ok(Err(e)) => return Err(self.failed("create", &self.base, &e)),
                Err(_) => return Err(self.timed_out("create", &self.base, last.as_ref())),
            }
            if !pause_until(&mut pause, deadline).await {
                return Err(self.timed_out("create", &self.base, last.as_ref()));
            }
        }
    }

    /// Runs `op` on `path`, with a new session and again after a transient failure,
    /// until the call timeout.
    async fn run(&self, path: &str, op: &Op) -> Result<Option<Vec<u8>>, StoreError> {
        let deadline = Instant::now() + self.call_timeout;
        let mut last = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let attempt = async {
                let client = self.client(deadline).await?;
                let done = match op {
                    Op::Get => get(&client, path).await,
                    Op::Put(value) => put(&client, path, value).await.map(|()| None),
                    Op::Delete => delete_tree(&client, path).await.map(|()| None),
                };
                if done.as_ref().is_err_and(transient) {
                    self.forget(&client).await;
                }
                done
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if transient(&e) => last = Some(e),
                Ok(Err(e)) => return Err(self.failed(op.verb(), path, &e)),
                Err(_) => return Err(self.timed_out(op.verb(), path, last.as_ref())),
            }
            if !pause_until(&mut pause, deadline).await {
                return Err(self.timed_out(op.verb(), path, last.as_ref()));
            }
        }
    }

    /// The current session when it is connected; otherwise a new one.
    async fn client(&self, deadline: Instant) -> Result<zk::Client, zk::Error> {
        let mut slot = self.session.lock().await;
        if let Some(client) = slot.as_ref() {
            if matches!(client.state(), zk::SessionState::SyncConnected) {
                return Ok(client.clone());
            }
            // Disconnected (the server went away: its own reconnection backs off for
            // longer and longer), expired or closed. No ephemeral node or watch to keep.
            tracing::info!(
                servers = %self.servers,
                "ZooKeeper session {} is {}; connecting again",
                client.session_id(),
                client.state()
            );
            *slot = None;
        }
        let client = self.connect(deadline).await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops `client` as the current session, after a transient failure.
    async fn forget(&self, client: &zk::Client) {
        let mut slot = self.session.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| c.session_id() == client.session_id())
        {
            *slot = None;
        }
    }

    /// A new session: each attempt tries every server once; attempts repeat (pausing
    /// 100 ms, doubling up to 1 s) until `deadline`.
    async fn connect(&self, deadline: Instant) -> Result<zk::Client, zk::Error> {
        let mut pause = FIRST_PAUSE;
        loop {
            let attempt = zk::Client::connector()
                .with_session_timeout(self.session_timeout)
                .with_fail_eagerly()
                .connect(&self.servers);
            let e = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) if transient(&e) => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(zk::Error::Timeout),
            };
            tracing::debug!(servers = %self.servers, "cannot connect to ZooKeeper: {e}");
            if !pause_until(&mut pause, deadline).await {
                return Err(e);
            }
        }
    }
}

/// Sleeps `pause` (doubling it for next time, up to [`MAX_PAUSE`]) unless that ends
/// after `deadline`; says whether there is time for another attempt.
async fn pause_until(pause: &mut Duration, deadline: Instant) -> bool {
    let wake = Instant::now() + *pause;
    if wake >= deadline {
        return false;
    }
    tokio::time::sleep_until(wake).await;
    *pause = (*pause * 2).min(MAX_PAUSE);
    true
}

async fn get(client: &zk::Client, path: &str) -> Result<Option<Vec<u8>>, zk::Error> {
    match client.get_data(path).await {
        // A parent created for the keys under it holds no value.
        Ok((data, _)) if data.is_empty() => Ok(None),
        Ok((data, _)) => Ok(Some(data)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets `path` to `data`, creating it and its parents when missing.
async fn put(client: &zk::Client, path: &str, data: &[u8]) -> Result<(), zk::Error> {
    // Each round fails only when another writer deletes or creates the node meanwhile.
    for _ in 0..10 {
        match client.set_data(path, data, None).await {
            Ok(_) => return Ok(()),
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        match client.create(path, data, &persistent()).await {
            Ok(_) => return Ok(()),
            // Created by another writer meanwhile: overwrite it.
            Err(zk::Error::NodeExists) => {}
            Err(zk::Error::NoNode) => {
                let parent = &path[..path.rfind('/').unwrap_or(0)];
                if !parent.is_empty() {
                    client.mkdir(parent, &persistent()).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(zk::Error::UnexpectedError(format!(
        "{path} kept being created and deleted by other writers"
    )))
}

/// Deletes `path` and everything under it; absent is fine.
async fn delete_tree(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    // (node, whether its children are already on the stack above it)
    let mut stack = vec![(path.to_owned(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            match client.delete(&node, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                // A child was added meanwhile: list again.
                Err(zk::Error::NotEmpty) => stack.push((node, false)),
                Err(e) => return Err(e),
            }
        } else {
            match client.list_children(&node).await {
                Ok(children) => {
                    stack.push((node.clone(), true));
                    stack.extend(children.into_iter().map(|c| (format!("{node}/{c}"), false)));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl CoordinatorStore for ZkStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(key, Op::Get)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.call(key, Op::Put(value.to_vec())).map(drop)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call(key, Op::Delete).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_cannot_name_a_node_are_refused_with_the_reason() {
        for ok in ["words/coordinator", "w/emitter/spout/p0", "ü-ñ", "a.b/..c"] {
            assert_eq!(key_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/words", "starts or ends"),
            ("words/", "starts or ends"),
            ("a//b", "empty part"),
            ("a/../b", "'..'"),
            (".", "'.'"),
            ("a\u{0}b", "does not allow"),
            ("a\nb", "does not allow"),
            ("a\u{e000}", "does not allow"),
        ] {
            let problem = key_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
    }

    #[test]
    fn a_bad_zookeeper_setting_is_an_error_naming_the_key() {
        let mut conf = Config::new();
        conf.set("storm.zookeeper.root", "relative");
        let e = ZkStore::from_conf(&conf).err().expect("refused");
        assert!(e.to_string().contains("storm.zookeeper.root"), "{e}");
        let mut conf = Config::new();
        conf.set("storm.zookeeper.port", 0);
        let e = ZkStore::from_conf(&conf).err().expect("refused");
        assert!(e.to_string().contains("storm.zookeeper.port"), "{e}");
    }
}
