//! What the supervisor removes from `storm.local.dir` once nothing here needs it:
//!
//! - `workers/<topology>-<port>`: the launch and heartbeat files of a worker that no
//!   longer runs;
//! - `supervisor/binaries/<sha256>`: a binary no topology assigned here uses, once unused
//!   for a grace (so a quick relaunch does not download it again);
//! - `workers-artifacts/<topology>`: the logs of a topology no longer assigned here, once
//!   nothing was written there for `logviewer.cleanup.age.mins`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Subdirectories of `dir` (by name) not in `keep`.
pub fn stale_dirs(dir: &Path, keep: &BTreeSet<String>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !keep.contains(&*e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Artifact directories (`workers-artifacts/<topology>`) of topologies not in `keep`
/// where nothing was modified for `retention`.
pub fn stale_artifacts(
    dir: &Path,
    keep: &BTreeSet<String>,
    retention: Duration,
    now: SystemTime,
) -> Vec<PathBuf> {
    stale_dirs(dir, keep)
        .into_iter()
        .filter(|d| {
            newest_mtime(d).is_none_or(|t| now.duration_since(t).unwrap_or_default() >= retention)
        })
        .collect()
}

/// The latest modification time of `dir` and everything below it.
pub fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            }
            if let Ok(t) = meta.modified() {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    newest
}

/// When each cached binary was last needed, to drop the ones unused for a grace.
#[derive(Debug, Default)]
pub struct BinaryUse {
    last_used: BTreeMap<String, Instant>,
}

impl BinaryUse {
    /// The binaries of `present` to delete at `now`: not in `in_use`, and not needed for
    /// `grace` (a binary first seen now, e.g. after a restart, gets the full grace).
    pub fn stale(
        &mut self,
        present: &[String],
        in_use: &BTreeSet<String>,
        now: Instant,
        grace: Duration,
    ) -> Vec<String> {
        for sha in in_use {
            self.last_used.insert(sha.clone(), now);
        }
        let mut out = Vec::new();
        for sha in present {
            let last = *self.last_used.entry(sha.clone()).or_insert(now);
            if now.duration_since(last) >= grace {
                out.push(sha.clone());
            }
        }
        self.last_used
            .retain(|sha, _| present.contains(sha) && !out.contains(sha));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn binaries_go_after_a_grace_unused() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(600);
        let mut u = BinaryUse::default();
        let present = vec!["a".to_string(), "b".to_string()];
        // "a" is used; "b" was found on disk (e.g. after a restart): both kept for now.
        assert!(u.stale(&present, &set(&["a"]), t0, grace).is_empty());
        let t1 = t0 + Duration::from_secs(300);
        // "a" is no longer used: it has its own grace from its last use.
        assert!(u.stale(&present, &set(&[]), t1, grace).is_empty());
        let t2 = t0 + Duration::from_secs(600);
        assert_eq!(u.stale(&present, &set(&[]), t2, grace), vec!["a", "b"]);
        // Used again before its grace ended: kept.
        let present = vec!["b".to_string()];
        let t3 = t0 + Duration::from_secs(599);
        let mut v = BinaryUse::default();
        assert!(v.stale(&present, &set(&[]), t0, grace).is_empty());
        assert!(v.stale(&present, &set(&["b"]), t3, grace).is_empty());
        assert!(v
            .stale(&present, &set(&[]), t3 + Duration::from_secs(599), grace)
            .is_empty());
        assert_eq!(v.stale(&present, &set(&[]), t3 + grace, grace), vec!["b"]);
    }

    #[test]
    fn artifacts_of_gone_topologies_go_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        for (topology, age) in [("running", 10), ("old", 10), ("recent", 0)] {
            let d = dir.path().join(topology).join("6700");
            std::fs::create_dir_all(&d).unwrap();
            let f = std::fs::File::create(d.join("worker.log")).unwrap();
            let t = now - hour * age;
            f.set_modified(t).unwrap();
            for d in [d.as_path(), d.parent().unwrap()] {
                std::fs::File::open(d).unwrap().set_modified(t).unwrap();
            }
        }
        let stale = stale_artifacts(dir.path(), &set(&["running"]), hour * 5, now);
        assert_eq!(stale, vec![dir.path().join("old")]);
        assert!(stale_artifacts(dir.path(), &set(&[]), hour * 11, now).is_empty());
        assert_eq!(
            stale_dirs(dir.path(), &set(&["old"])),
            vec![dir.path().join("recent"), dir.path().join("running")]
        );
    }
}
