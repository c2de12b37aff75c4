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

/// An error a task reported (a bolt panic, an `Err` from a basic bolt, `report_error`).
#[derive(Clone, Debug, Serialize)]
pub struct ReportedError {
    /// The component.
    pub component: ComponentId,
    /// The task.
    pub task: TaskId,
    /// When, as seconds since the Unix epoch.
    pub time_secs: u64,
    /// What went wrong.
    pub error: String,
    /// Strictly increasing per runtime, in the order errors were reported (1, 2, ...),
    /// so a reader can ask for the errors after the last one it saw.
    pub seq: u64,
}

impl ReportedError {
    pub(crate) fn now(component: ComponentId, task: TaskId, error: String) -> Self {
        let time_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ReportedError {
            component,
            task,
            time_secs,
            error,
            seq: 0,
        }
    }
}

/// The last errors of a topology, at most [`ErrorLog::PER_COMPONENT`] per component.
#[derive(Default, Debug)]
pub struct ErrorLog {
    errors: Mutex<Vec<ReportedError>>,
    last_seq: std::sync::atomic::AtomicU64,
}

impl ErrorLog {
    /// Errors kept per component, as in Storm.
    pub const PER_COMPONENT: usize = 10;

    pub(crate) fn push(&self, mut e: ReportedError) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        e.seq = self.last_seq.fetch_add(1, Relaxed) + 1;
        let same = errors.iter().filter(|x| x.component == e.component).count();
        if same >= Self::PER_COMPONENT {
            if let Some(pos) = errors.iter().position(|x| x.component == e.component) {
                errors.remove(pos);
            }
        }
        errors.push(e);
    }

    /// A copy of the kept errors, oldest first.
    pub fn snapshot(&self) -> Vec<ReportedError> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
