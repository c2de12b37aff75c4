//! Cluster state in ZooKeeper, under `storm.zookeeper.root` (default `/squall`):
//!
//! | path | holds |
//! |---|---|
//! | `/storms/<topology-id>` | [`StormBase`] |
//! | `/assignments/<topology-id>` | [`Assignment`] |
//! | `/supervisors/<supervisor-id>` | [`SupervisorInfo`], ephemeral |
//! | `/nimbuses/<host:port>` | [`NimbusSummary`], ephemeral |
//! | `/errors/<topology-id>/<component>/e<seq>` | [`ErrorInfo`], the last 10 per component |
//! | `/code/<topology-id>` | the topology's code: its spec and submitted configuration (Nimbus's `TopologyCode`), so any Nimbus can schedule it |
//! | `/logconfigs/<topology-id>` | the topology's log levels (`squall set_log_level`): [`LogLevels`](crate::rpc::LogLevels) |
//! | `/topology-counter` | the last topology number handed out (plain text), updated by compare-and-set on the node's version, so ids stay unique across Nimbus daemons and restarts |
//! | `/leader-lock/_c_<uuid>-latch-<seq>` | ephemeral-sequential, one per Nimbus candidate, holding its `host:port`; the lowest sequence leads, each other candidate watches its predecessor |
//!
//! Values are JSON (the leader-lock nodes hold plain `host:port` text). Worker heartbeats do not go through ZooKeeper (Storm 2's lesson):
//! workers report to their supervisor (a local file) and to Nimbus (RPC).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zookeeper_client as zk;

use crate::state::{Assignment, ErrorInfo, NimbusSummary, StormBase, SupervisorInfo};

/// The directory of Nimbus leader election, under the root.
pub const LEADER_LOCK: &str = "leader-lock";

/// The lock name of the election's nodes (Curator's `LeaderLatch` name).
pub const LEADER_LOCK_NAME: &str = "latch-";

/// Errors kept per component, as in Storm.
pub const ERRORS_PER_COMPONENT: usize = 10;

/// A ZooKeeper operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The server said no, or could not be reached.
    #[error("ZooKeeper {op} {path}: {source}")]
    Zk {
        /// What was attempted.
        op: &'static str,
        /// The node.
        path: String,
        /// The client's error.
        source: zk::Error,
    },
    /// Could not connect.
    #[error("cannot connect to ZooKeeper at {servers}: {source}")]
    Connect {
        /// The connect string.
        servers: String,
        /// The client's error.
        source: zk::Error,
    },
    /// A node held something that is not the expected JSON.
    #[error("ZooKeeper node {path} holds invalid data: {source}")]
    Decode {
        /// The node.
        path: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, StateError>;

/// A session with the cluster's ZooKeeper, rooted at `storm.zookeeper.root`.
#[derive(Clone)]
pub struct ClusterState {
    client: zk::Client,
    root: String,
    /// Since when the client has not been connected (shared by clones), and how long
    /// that may last before the session counts as lost.
    disconnected: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    give_up_after: Duration,
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

impl ClusterState {
    /// Connects and creates the layout's directories when missing.
    pub async fn connect(servers: &str, root: &str, session_timeout: Duration) -> Result<Self> {
        let client = zk::Client::connector()
            .with_session_timeout(session_timeout)
            .connect(servers)
            .await
            .map_err(|source| StateError::Connect {
                servers: servers.to_owned(),
                source,
            })?;
        let root = format!("/{}", root.trim_matches('/'));
        let state = ClusterState {
            client,
            root,
            disconnected: Default::default(),
            // Twice the session timeout: by then the server has expired the session, so
            // a client that still cannot get back in is stuck (e.g. a restarted server
            // that refuses its reconnection attempts) and a new session is the way out.
            give_up_after: session_timeout * 2,
        };
        for dir in [
            "storms",
            "assignments",
            "supervisors",
            "nimbuses",
            "errors",
            "code",
            "logconfigs",
            LEADER_LOCK,
        ] {
            let path = state.path(dir);
            state
                .client
                .mkdir(&path, &persistent())
                .await
                .map_err(|source| StateError::Zk {
                    op: "mkdir",
                    path,
                    source,
                })?;
        }
        Ok(state)
    }

    /// The underlying client (for watches).
    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    /// The absolute path of `rel` under the root.
    pub fn path(&self, rel: &str) -> String {
        format!("{}/{}", self.root, rel.trim_start_matches('/'))
    }

    /// Whether the session is still usable: not ended, and not disconnected for longer
    /// than twice the session timeout. Daemons call this periodically and replace a
    /// session that is not.
    pub fn is_alive(&self) -> bool {
        let state = self.client.state();
        if state.is_terminated() {
            return false;
        }
        let mut since = self
            .disconnected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(
            state,
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
        ) {
            *since = None;
            return true;
        }
        let t = *since.get_or_insert_with(std::time::Instant::now);
        t.elapsed() <= self.give_up_after
    }

    fn zk_err<'p>(op: &'static str, path: &'p str) -> impl FnOnce(zk::Error) -> StateError + 'p {
        move |source| StateError::Zk {
            op,
            path: path.to_owned(),
            source,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.client.get_data(path).await {
            Ok((data, _)) => {
                serde_json::from_slice(&data)
                    .map(Some)
                    .map_err(|source| StateError::Decode {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(Self::zk_err("get", path)(e)),
        }
    }

    async fn put<T: Serialize>(&self, path: &str, value: &T) -> Result<()> {
        let data = serde_json::to_vec(value).expect("cluster state serializes");
        match self.client.set_data(path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => match self.client.create(path, &data, &persistent()).await {
                Ok(_) => Ok(()),
                // Lost a race with another writer: overwrite.
                Err(zk::Error::NodeExists) => self
                    .client
                    .set_data(path, &data, None)
                    .await
                    .map(|_| ())
                    .map_err(Self::zk_err("set", path)),
                Err(e) => Err(Self::zk_err("create", path)(e)),
            },
            Err(e) => Err(Self::zk_err("set", path)(e)),
        }
    }

    async fn children(&self, path: &str) -> Result<Vec<String>> {
        match self.client.list_children(path).await {
            Ok(mut c) => {
                c.sort();
                Ok(c)
            }
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(Self::zk_err("list", path)(e)),
        }
    }

    /// Every child of `dir` that decodes; a node holding something else is skipped with
    /// a warning, so one bad node cannot stop a daemon from seeing the others.
    async fn all<T: DeserializeOwned>(&self, dir: &str) -> Result<Vec<T>> {
        let dir = self.path(dir);
        let mut out = Vec::new();
        for child in self.children(&dir).await? {
            match self.get(&format!("{dir}/{child}")).await {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {}
                Err(e @ StateError::Decode { .. }) => tracing::warn!("skipping: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes `path` and everything below it; absent is fine.
    pub async fn remove_recursive(&self, path: &str) -> Result<()> {
        let mut stack = vec![(path.to_owned(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if !expanded {
                stack.push((p.clone(), true));
                for c in self.children(&p).await? {
                    stack.push((format!("{p}/{c}"), false));
                }
            } else {
                match self.client.delete(&p, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(Self::zk_err("delete", &p)(e)),
                }
            }
        }
        Ok(())
    }

    /// Stores a topology base.
    pub async fn set_storm(&self, base: &StormBase) -> Result<()> {
        self.put(&self.path(&format!("storms/{}", base.topology_id)), base)
            .await
    }

    /// A topology base.
    pub async fn storm(&self, topology_id: &str) -> Result<Option<StormBase>> {
        self.get(&self.path(&format!("storms/{topology_id}"))).await
    }

    /// Every topology base.
    pub async fn storms(&self) -> Result<Vec<StormBase>> {
        self.all("storms").await
    }

    /// Removes a topology base.
    pub async fn remove_storm(&self, topology_id: &str) -> Result<()> {
        self.remove_recursive(&self.path(&format!("storms/{topology_id}")))
            .await
    }

    /// Stores an assignment.
    pub async fn set_assignment(&self, a: &Assignment) -> Result<()> {
        self.put(&self.path(&format!("assignments/{}", a.topology_id)), a)
            .await
    }

    /// An assignment.
    pub async fn assignment(&self, topology_id: &str) -> Result<Option<Assignment>> {
        self.get(&self.path(&format!("assignments/{topology_id}")))
            .await
    }

    /// Every assignment.
    pub async fn assignments(&self) -> Result<Vec<Assignment>> {
        self.all("assignments").await
    }

    /// Removes an assignment (its workers are then stopped by their supervisors).
    pub async fn remove_assignment(&self, topology_id: &str) -> Result<()> {
        self.remove_recursive(&self.path(&format!("assignments/{topology_id}")))
            .await
    }

    async fn register_ephemeral<T: Serialize>(&self, path: &str, value: &T) -> Result<()> {
        let data = serde_json::to_vec(value).expect("cluster state serializes");
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        loop {
            match self.client.create(path, &data, &ephemeral).await {
                Ok(_) => return Ok(()),
                // Left by an earlier session of the same daemon (a fast restart).
                Err(zk::Error::NodeExists) => match self.client.delete(path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => continue,
                    Err(e) => return Err(Self::zk_err("delete", path)(e)),
                },
                Err(e) => return Err(Self::zk_err("create", path)(e)),
            }
        }
    }

    /// Registers this supervisor (ephemeral: gone when the session ends).
    pub async fn register_supervisor(&self, info: &SupervisorInfo) -> Result<()> {
        self.register_ephemeral(&self.path(&format!("supervisors/{}", info.id)), info)
            .await
    }

    /// Rewrites this supervisor's node (its heartbeat): `Ok(false)` when the node is gone
    /// (the session lost it), so the caller registers again.
    pub async fn update_supervisor(&self, info: &SupervisorInfo) -> Result<bool> {
        let path = self.path(&format!("supervisors/{}", info.id));
        let data = serde_json::to_vec(info).expect("cluster state serializes");
        match self.client.set_data(&path, &data, None).await {
            Ok(_) => Ok(true),
            Err(zk::Error::NoNode) => Ok(false),
            Err(e) => Err(Self::zk_err("set", &path)(e)),
        }
    }

    /// The live supervisors.
    pub async fn supervisors(&self) -> Result<Vec<SupervisorInfo>> {
        self.all("supervisors").await
    }

    /// Registers this Nimbus (ephemeral).
    pub async fn register_nimbus(&self, n: &NimbusSummary) -> Result<()> {
        self.register_ephemeral(&self.path(&format!("nimbuses/{}:{}", n.host, n.port)), n)
            .await
    }

    /// The live Nimbus daemons.
    pub async fn nimbuses(&self) -> Result<Vec<NimbusSummary>> {
        self.all("nimbuses").await
    }

    /// Records an error, keeping the last [`ERRORS_PER_COMPONENT`] per component.
    pub async fn add_error(&self, topology_id: &str, e: &ErrorInfo) -> Result<()> {
        let component = e.component.replace('/', "_");
        let dir = self.path(&format!("errors/{topology_id}/{component}"));
        self.client
            .mkdir(&dir, &persistent())
            .await
            .map_err(Self::zk_err("mkdir", &dir))?;
        let data = serde_json::to_vec(e).expect("errors serialize");
        let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let node = format!("{dir}/e");
        self.client
            .create(&node, &data, &seq)
            .await
            .map_err(Self::zk_err("create", &node))?;
        let children = self.children(&dir).await?;
        if children.len() > ERRORS_PER_COMPONENT {
            for old in &children[..children.len() - ERRORS_PER_COMPONENT] {
                let _ = self.client.delete(&format!("{dir}/{old}"), None).await;
            }
        }
        Ok(())
    }

    /// The kept errors of a topology, oldest first per component.
    pub async fn errors(&self, topology_id: &str) -> Result<Vec<ErrorInfo>> {
        let dir = self.path(&format!("errors/{topology_id}"));
        let mut out = Vec::new();
        for component in self.children(&dir).await? {
            let cdir = format!("{dir}/{component}");
            for e in self.children(&cdir).await? {
                if let Some(v) = self.get(&format!("{cdir}/{e}")).await? {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// Removes a topology's errors.
    pub async fn remove_errors(&self, topology_id: &str) -> Result<()> {
        self.remove_recursive(&self.path(&format!("errors/{topology_id}")))
            .await
    }

    /// Stores a topology's code (spec and configuration), written once at submission.
    pub async fn set_code<T: Serialize>(&self, topology_id: &str, code: &T) -> Result<()> {
        self.put(&self.path(&format!("code/{topology_id}")), code)
            .await
    }

    /// A topology's code.
    pub async fn code<T: DeserializeOwned>(&self, topology_id: &str) -> Result<Option<T>> {
        self.get(&self.path(&format!("code/{topology_id}"))).await
    }

    /// Removes a topology's code.
    pub async fn remove_code(&self, topology_id: &str) -> Result<()> {
        self.remove_recursive(&self.path(&format!("code/{topology_id}")))
            .await
    }

    /// Stores a topology's log levels ([`LogLevels`](crate::rpc::LogLevels)).
    pub async fn set_log_config<T: Serialize>(&self, topology_id: &str, levels: &T) -> Result<()> {
        self.put(&self.path(&format!("logconfigs/{topology_id}")), levels)
            .await
    }

    /// A topology's log levels (`None`: never set).
    pub async fn log_config<T: DeserializeOwned>(&self, topology_id: &str) -> Result<Option<T>> {
        self.get(&self.path(&format!("logconfigs/{topology_id}")))
            .await
    }

    /// Removes a topology's log levels.
    pub async fn remove_log_config(&self, topology_id: &str) -> Result<()> {
        self.remove_recursive(&self.path(&format!("logconfigs/{topology_id}")))
            .await
    }

    /// The next topology number, from the versioned counter node `/topology-counter`
    /// (compare-and-set on its version), so numbers are never reused, whichever Nimbus
    /// asks.
    pub async fn next_topology_number(&self) -> Result<u64> {
        let path = self.path("topology-counter");
        loop {
            let (current, version) = match self.client.get_data(&path).await {
                Ok((data, stat)) => {
                    let n = std::str::from_utf8(&data)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    (n, Some(stat.version))
                }
                Err(zk::Error::NoNode) => (0, None),
                Err(e) => return Err(Self::zk_err("get", &path)(e)),
            };
            let next = current + 1;
            let data = next.to_string();
            let written = match version {
                Some(v) => self
                    .client
                    .set_data(&path, data.as_bytes(), Some(v))
                    .await
                    .map(drop),
                None => self
                    .client
                    .create(&path, data.as_bytes(), &persistent())
                    .await
                    .map(drop),
            };
            match written {
                Ok(()) => return Ok(next),
                // Another Nimbus took a number meanwhile: read again.
                Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
                Err(e) => return Err(Self::zk_err("set", &path)(e)),
            }
        }
    }

    /// The absolute path of the leader election's directory.
    pub fn leader_lock_dir(&self) -> String {
        self.path(LEADER_LOCK)
    }

    /// The election's candidates, lowest sequence (the leader) first: node name and the
    /// `host:port` it holds.
    pub async fn nimbus_candidates(&self) -> Result<Vec<(String, String)>> {
        let dir = self.leader_lock_dir();
        let mut children: Vec<(u64, String)> = self
            .children(&dir)
            .await?
            .into_iter()
            .filter_map(|c| Some((lock_sequence(&c)?, c)))
            .collect();
        children.sort();
        let mut out = Vec::with_capacity(children.len());
        for (_, child) in children {
            let path = format!("{dir}/{child}");
            match self.client.get_data(&path).await {
                Ok((data, _)) => out.push((child, String::from_utf8_lossy(&data).into_owned())),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(Self::zk_err("get", &path)(e)),
            }
        }
        Ok(out)
    }

    /// The leading Nimbus's `host:port`, when there is one.
    pub async fn leader(&self) -> Result<Option<String>> {
        Ok(self
            .nimbus_candidates()
            .await?
            .into_iter()
            .next()
            .map(|(_, addr)| addr))
    }

    /// The nodes that exist for this topology id (storms, assignments, errors, code,
    /// logconfigs).
    pub async fn topology_nodes(&self, topology_id: &str) -> Result<Vec<String>> {
        let mut present = Vec::new();
        for dir in ["storms", "assignments", "errors", "code", "logconfigs"] {
            let p = self.path(&format!("{dir}/{topology_id}"));
            match self.client.check_stat(&p).await {
                Ok(Some(_)) => present.push(p),
                Ok(None) => {}
                Err(e) => return Err(Self::zk_err("stat", &p)(e)),
            }
        }
        Ok(present)
    }
}

/// The sequence number at the end of an election node's name.
pub fn lock_sequence(name: &str) -> Option<u64> {
    let digits = name.len() - name.bytes().rev().take_while(u8::is_ascii_digit).count();
    name[digits..].parse().ok()
}
