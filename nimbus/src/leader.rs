//! Leader election and the standby's copy of the binaries.
//!
//! Every Nimbus is a candidate in `<root>/leader-lock` (the `zookeeper-client` crate's
//! lock recipe: an ephemeral-sequential node holding this Nimbus's `host:port`; the
//! lowest sequence holds the lock, each other candidate watches its predecessor). The
//! holder leads until its lock node or its ZooKeeper connection goes: on a disconnect it
//! stops leading at once, and leads again (fresh clocks) if the session survives.

use std::sync::Arc;
use std::time::Duration;

use squall_cluster::rpc::NimbusClient;
use squall_cluster::zk::LEADER_LOCK_NAME;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::Nimbus;

/// How often a winner that lacks binaries lets another candidate lead before leading
/// anyway (better a leader that cannot restart some workers than none).
const MAX_GIVE_UPS: u32 = 3;

/// Sleeps `d` unless shut down first; false when shut down.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Contends for leadership until shut down.
pub(crate) async fn elect(n: Arc<Nimbus>, shutdown: CancellationToken) {
    let mut give_ups = 0;
    while !shutdown.is_cancelled() {
        if let Err(e) = n.ensure_session().await {
            tracing::warn!("ZooKeeper: {e}");
            if !pause(Duration::from_secs(1), &shutdown).await {
                break;
            }
            continue;
        }
        let state = n.state();
        // Copy what the leader has before queueing up (best effort).
        fetch_missing(&n).await;
        let client = state.client().clone();
        let dir = state.leader_lock_dir();
        let prefix = match zk::LockPrefix::new_curator(&dir, LEADER_LOCK_NAME) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("invalid leader lock path {dir}: {e}");
                return;
            }
        };
        let lock = tokio::select! {
            _ = shutdown.cancelled() => break,
            l = client.lock(prefix, n.addr.as_bytes(), zk::Acls::anyone_all()) => l,
        };
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("leader election: {e}");
                if !pause(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        // Won: lead only with every live topology's binary, if another candidate may
        // have them.
        fetch_missing(&n).await;
        match n.missing_binaries().await {
            Ok(missing) if !missing.is_empty() => {
                let others = state
                    .nimbus_candidates()
                    .await
                    .map_or(0, |c| c.len().saturating_sub(1));
                if others > 0 && give_ups < MAX_GIVE_UPS {
                    give_ups += 1;
                    tracing::warn!(
                        "this Nimbus ({}) lacks the binaries {missing:?}; letting another Nimbus lead",
                        n.addr
                    );
                    let path = lock.lock_path().to_owned();
                    drop(lock);
                    let _ = client.delete(&path, None).await;
                    if !pause(Duration::from_secs(2), &shutdown).await {
                        break;
                    }
                    continue;
                }
                tracing::error!(
                    "this Nimbus ({}) leads without the binaries {missing:?}: workers of those topologies cannot start until they are uploaded again",
                    n.addr
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot check the binaries: {e}"),
        }
        give_ups = 0;
        let path = lock.lock_path().to_owned();
        lead(&n, &client, &path, &shutdown).await;
        drop(lock);
        if shutdown.is_cancelled() {
            // Hand over at once rather than after the session timeout.
            let _ = client.delete(&path, None).await;
        }
    }
    n.stop_leading("shutting down");
}

/// Leads while the lock node `path` exists and the connection holds; returns when the
/// lead is lost for good (node gone, session over) or on shutdown.
async fn lead(n: &Nimbus, client: &zk::Client, path: &str, shutdown: &CancellationToken) {
    let mut states = client.state_watcher();
    loop {
        let watcher = match client.check_and_watch_stat(path).await {
            Ok((Some(_), w)) => w,
            Ok((None, _)) => {
                n.stop_leading("the leader lock node is gone");
                return;
            }
            Err(e) => {
                n.stop_leading(&format!("cannot watch the leader lock: {e}"));
                return;
            }
        };
        n.begin_leading().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = watcher.changed() => {
                if event.event_type == zk::EventType::NodeDeleted {
                    n.stop_leading("the leader lock node was deleted");
                    return;
                }
                // A data change or a session event: look again.
                n.stop_leading(&format!("leader lock event {:?}", event.event_type));
                if !reconnected(&mut states, shutdown).await {
                    return;
                }
            }
            state = states.changed() => {
                n.stop_leading(&format!("ZooKeeper connection {state:?}"));
                if state != zk::SessionState::SyncConnected
                    && !reconnected(&mut states, shutdown).await
                {
                    return;
                }
            }
        }
    }
}

/// Waits for the session to be connected again: false when it ended instead.
async fn reconnected(states: &mut zk::StateWatcher, shutdown: &CancellationToken) -> bool {
    let mut state = states.state();
    loop {
        match state {
            zk::SessionState::SyncConnected => return true,
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                return false
            }
            _ => {}
        }
        state = tokio::select! {
            _ = shutdown.cancelled() => return false,
            s = states.changed() => s,
        };
    }
}

/// Copies the binaries of live topologies this Nimbus lacks from the leader.
async fn fetch_missing(n: &Nimbus) {
    let missing = match n.missing_binaries().await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("cannot list the binaries: {e}");
            return;
        }
    };
    if missing.is_empty() {
        return;
    }
    let Some(leader) = n.known_leader() else {
        return;
    };
    let client = NimbusClient::new(&leader).with_secret(n.secret.clone());
    for sha in missing {
        match client.download_binary(&sha, &n.binary_path(&sha)).await {
            Ok(()) => tracing::info!("copied binary {sha} from the leader at {leader}"),
            Err(e) => tracing::warn!("cannot copy binary {sha} from the leader at {leader}: {e}"),
        }
    }
}

/// While not leading: follows who leads and copies its binaries.
pub(crate) async fn sync_as_standby(n: Arc<Nimbus>, shutdown: CancellationToken) {
    while pause(Duration::from_secs(1), &shutdown).await {
        if n.is_leader() {
            continue;
        }
        match n.state().leader().await {
            Ok(leader) => n.set_known_leader(leader),
            Err(e) => {
                tracing::debug!("cannot read the leader: {e}");
                continue;
            }
        }
        fetch_missing(&n).await;
    }
}
