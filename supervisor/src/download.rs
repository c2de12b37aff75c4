//! Downloading a topology binary from Nimbus, bounded in time: an overall limit, and a
//! stall limit (no byte received for that long), so a Nimbus that accepts and never
//! answers cannot hold a slot forever. The supervisor runs each download in a task of
//! its own, so the other slots and the heartbeats carry on meanwhile.

use std::path::Path;
use std::time::Duration;

use squall_cluster::rpc::NimbusClient;
use squall_cluster::secret::Secret;
use tokio::time::Instant;

use crate::SupervisorError;

/// Time limits of a download.
#[derive(Clone, Copy, Debug)]
pub struct DownloadLimits {
    /// The whole download, per Nimbus address tried.
    pub overall: Duration,
    /// No progress (no answer, no new byte) for this long aborts it.
    pub stall: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            overall: Duration::from_secs(120),
            stall: Duration::from_secs(30),
        }
    }
}

/// Downloads binary `sha` to `dest` from the first of `nimbus` that delivers it (checked
/// by SHA-256, written through `dest.part`), within `limits` per address.
pub async fn download(
    nimbus: &[String],
    secret: Option<&Secret>,
    sha: &str,
    dest: &Path,
    limits: DownloadLimits,
) -> Result<(), SupervisorError> {
    let mut reasons = Vec::new();
    for addr in nimbus {
        match download_from(addr, secret, sha, dest, limits).await {
            Ok(()) => return Ok(()),
            Err(reason) => reasons.push(reason),
        }
    }
    if reasons.is_empty() {
        reasons.push("no nimbus.seeds configured".into());
    }
    Err(SupervisorError::Download {
        sha: sha.to_owned(),
        reason: reasons.join("; "),
    })
}

async fn download_from(
    addr: &str,
    secret: Option<&Secret>,
    sha: &str,
    dest: &Path,
    limits: DownloadLimits,
) -> Result<(), String> {
    let part = dest.with_extension("part");
    let client = NimbusClient::new(addr)
        .with_secret(secret.cloned())
        .with_timeout(limits.overall);
    let fetch = client.download_binary(sha, dest);
    tokio::pin!(fetch);
    let start = Instant::now();
    let tick = (limits.stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut size = None;
    let mut progress = start;
    let outcome = loop {
        tokio::select! {
            r = &mut fetch => break r.map_err(|e| e.to_string()),
            _ = tokio::time::sleep(tick) => {
                let now = Instant::now();
                let s = std::fs::metadata(&part).map(|m| m.len()).ok();
                if s != size {
                    size = s;
                    progress = now;
                }
                if now - progress >= limits.stall {
                    break Err(format!(
                        "download from Nimbus at {addr} stalled: nothing received for {:?} \
                         ({} bytes so far)",
                        limits.stall,
                        size.unwrap_or(0)
                    ));
                }
                if now - start >= limits.overall {
                    break Err(format!(
                        "download from Nimbus at {addr} not done within {:?}",
                        limits.overall
                    ));
                }
            }
        }
    };
    if outcome.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on_after_the_stall_limit() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("abc");
        let limits = DownloadLimits {
            overall: Duration::from_secs(600),
            stall: Duration::from_millis(300),
        };
        let e = download(std::slice::from_ref(&addr), None, "abc", &dest, limits)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("stalled"), "{msg}");
        assert!(msg.contains(&addr), "{msg}");
        assert!(!dest.exists());
        assert!(!dest.with_extension("part").exists());
        drop(silent);
    }

    #[tokio::test]
    async fn every_address_is_tried_and_each_failure_named() {
        let dir = tempfile::tempdir().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = download(
            &[closed.clone(), closed.clone()],
            None,
            "abc",
            &dir.path().join("abc"),
            DownloadLimits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string().matches(&closed).count(), 2, "{e}");
        let e = download(
            &[],
            None,
            "abc",
            &dir.path().join("abc"),
            Default::default(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("nimbus.seeds"), "{e}");
    }
}
