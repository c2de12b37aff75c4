//! Executor statistics, written by executors and read by reports and the UI.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::Serialize;
use squall_api::{ComponentId, TaskId};

/// Counters of one executor. Executors add their local counts in bulk (once per batch),
/// so the tuple path touches no shared cache line.
#[derive(Debug)]
pub struct ExecutorStats {
    /// Tuples emitted (per stream emit, not per receiving task).
    pub emitted: AtomicU64,
    /// Tuples sent to tasks (an emit to three tasks counts three).
    pub transferred: AtomicU64,
    /// Spouts: trees acked. Bolts: tuples acked.
    pub acked: AtomicU64,
    /// Spouts: trees failed (including timeouts). Bolts: tuples failed.
    pub failed: AtomicU64,
    /// Spouts: trees that timed out.
    pub timed_out: AtomicU64,
    /// Bolts: tuples executed.
    pub executed: AtomicU64,
    /// Bolts: sampled execute time, nanoseconds, and the number of samples.
    pub execute_ns: AtomicU64,
    /// Number of execute-time samples.
    pub execute_samples: AtomicU64,
    /// Spouts: complete latency (emit to tree acked), microseconds.
    pub complete_latency_us: Mutex<Histogram<u64>>,
    /// Spouts: tuple trees in flight (message ids neither acked nor failed yet), over
    /// the executor's tasks. Published by the executor after every round of its loop.
    pub pending: AtomicU64,
    /// Spouts: deactivation requests the executor has handled. Stored (with release
    /// ordering) after `pending`, so a reader that sees its request handled also sees a
    /// pending count that can only go down from then on.
    pub deactivations: AtomicU64,
}

impl Default for ExecutorStats {
    fn default() -> Self {
        ExecutorStats {
            emitted: AtomicU64::new(0),
            transferred: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            executed: AtomicU64::new(0),
            execute_ns: AtomicU64::new(0),
            execute_samples: AtomicU64::new(0),
            complete_latency_us: Mutex::new(new_histogram()),
            pending: AtomicU64::new(0),
            deactivations: AtomicU64::new(0),
        }
    }
}

/// A latency histogram from 1 µs to 1 hour at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The executor-local side of [`ExecutorStats`].
#[derive(Default)]
pub(crate) struct LocalStats {
    pub emitted: u64,
    pub transferred: u64,
    pub acked: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub executed: u64,
    pub execute_ns: u64,
    pub execute_samples: u64,
}

impl LocalStats {
    pub fn publish(&mut self, to: &ExecutorStats) {
        let pairs = [
            (&mut self.emitted, &to.emitted),
            (&mut self.transferred, &to.transferred),
            (&mut self.acked, &to.acked),
            (&mut self.failed, &to.failed),
            (&mut self.timed_out, &to.timed_out),
            (&mut self.executed, &to.executed),
            (&mut self.execute_ns, &to.execute_ns),
            (&mut self.execute_samples, &to.execute_samples),
        ];
        for (local, shared) in pairs {
            if *local != 0 {
                shared.fetch_add(std::mem::take(local), Relaxed);
            }
        }
    }
}

/// An error a task reported (a failed `open`/`prepare`, a panic, an `Err` from a basic
/// bolt, `report_error`).
#[derive(Clone, Debug, Serialize)]
pub struct ReportedError {
    /// Position in the runtime's sequence of errors: 1 for the first, strictly
    /// increasing. Errors dropped from [`ErrorLog`] keep their numbers, so "errors since
    /// `seq` N" is exact forever (see [`ErrorLog::since`]).
    pub seq: u64,
    /// The component.
    pub component: ComponentId,
    /// The task.
    pub task: TaskId,
    /// The host of the worker that runs the task (cluster mode).
    pub host: Option<String>,
    /// The port of the worker that runs the task (cluster mode).
    pub port: Option<u16>,
    /// When, as seconds since the Unix epoch.
    pub time_secs: u64,
    /// What went wrong.
    pub error: String,
}

/// The last errors of a topology's tasks in this process, at most
/// [`ErrorLog::PER_COMPONENT`] per component, and how many there were in all.
#[derive(Default, Debug)]
pub struct ErrorLog {
    host: Option<String>,
    port: Option<u16>,
    inner: Mutex<Errors>,
}

#[derive(Default, Debug)]
struct Errors {
    kept: Vec<ReportedError>,
    /// Errors ever reported (the `seq` of the last one).
    total: u64,
}

impl ErrorLog {
    /// Errors kept per component, as in Storm.
    pub const PER_COMPONENT: usize = 10;

    /// An empty log whose errors are stamped with the worker's `host` and `port`.
    pub fn new(host: Option<String>, port: Option<u16>) -> Self {
        ErrorLog {
            host,
            port,
            inner: Mutex::default(),
        }
    }

    /// Records an error of `task` of `component`; returns its `seq`.
    pub fn push(&self, component: ComponentId, task: TaskId, error: String) -> u64 {
        let time_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.total += 1;
        let seq = inner.total;
        let same = inner
            .kept
            .iter()
            .filter(|x| x.component == component)
            .count();
        if same >= Self::PER_COMPONENT {
            if let Some(pos) = inner.kept.iter().position(|x| x.component == component) {
                inner.kept.remove(pos);
            }
        }
        inner.kept.push(ReportedError {
            seq,
            component,
            task,
            host: self.host.clone(),
            port: self.port,
            time_secs,
            error,
        });
        seq
    }

    /// A copy of the kept errors, oldest first.
    pub fn snapshot(&self) -> Vec<ReportedError> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept
            .clone()
    }

    /// The kept errors with a `seq` greater than `seq`, oldest first. A reader that
    /// remembers the last `seq` it saw gets every later error still kept, however many
    /// errors there are.
    pub fn since(&self, seq: u64) -> Vec<ReportedError> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    /// How many errors were ever reported (kept or not): the `seq` of the latest.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_counting_past_the_ten_kept_per_component() {
        let log = ErrorLog::new(Some("h1".into()), Some(6700));
        let (a, b) = (ComponentId::new("a"), ComponentId::new("b"));
        for i in 1..=25u64 {
            let seq = log.push(a.clone(), TaskId(1), format!("a{i}"));
            assert_eq!(seq, 2 * i - 1);
            assert_eq!(log.push(b.clone(), TaskId(2), format!("b{i}")), 2 * i);
        }
        assert_eq!(log.total(), 50);
        let kept = log.snapshot();
        assert_eq!(kept.len(), 2 * ErrorLog::PER_COMPONENT);
        // The newest ten of each, oldest first, numbers strictly increasing.
        assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
        let of_a: Vec<&str> = kept
            .iter()
            .filter(|e| e.component == a)
            .map(|e| e.error.as_str())
            .collect();
        assert_eq!(of_a.first(), Some(&"a16"));
        assert_eq!(of_a.last(), Some(&"a25"));
        assert!(kept
            .iter()
            .all(|e| e.host.as_deref() == Some("h1") && e.port == Some(6700)));

        // A reader that saw up to seq 45 gets exactly the five later ones.
        let newer = log.since(45);
        assert_eq!(
            newer.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [46, 47, 48, 49, 50]
        );
        assert!(log.since(50).is_empty());
        log.push(a.clone(), TaskId(1), "late".into());
        let newer = log.since(50);
        assert_eq!(newer.len(), 1);
        assert_eq!((newer[0].seq, newer[0].error.as_str()), (51, "late"));
    }
}
