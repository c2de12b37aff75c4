//! Executor statistics, written by executors and read by reports and the UI.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::Serialize;
use squall_api::{ComponentId, TaskId};
use squall_cluster::metrics::StreamStats;

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
    /// Spouts under automatic flow control: the sum of their tasks' current limits on
    /// trees in flight (0 otherwise).
    pub pending_limit: AtomicU64,
    /// Spouts: deactivation requests the executor has handled. Stored (with release
    /// ordering) after `pending`, so a reader that sees its request handled also sees a
    /// pending count that can only go down from then on.
    pub deactivations: AtomicU64,
    /// Per output stream, in the order of the executor's routes (its declared streams,
    /// sorted by name).
    pub outputs: Box<[SharedRow]>,
    /// Per input row (see [`InputRows`]).
    pub inputs: Box<[SharedRow]>,
    /// Nanoseconds producers spent blocked on this executor's full receive queue, added
    /// by the producers themselves (only when a send found the queue full).
    pub blocked_ns: Arc<AtomicU64>,
    /// Custom gauges of the executor's tasks (`set_gauge`): name → the last value set,
    /// summed over the tasks that set it. Written when the executor flushes after a
    /// change.
    pub gauges: Mutex<BTreeMap<String, i64>>,
}

impl Default for ExecutorStats {
    fn default() -> Self {
        ExecutorStats::new(0, 0, Arc::default())
    }
}

impl ExecutorStats {
    /// Stats with `outputs` output rows and `inputs` input rows; producers blocked on
    /// the executor's queue add to `blocked_ns`.
    pub fn new(outputs: usize, inputs: usize, blocked_ns: Arc<AtomicU64>) -> Self {
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
            pending_limit: AtomicU64::new(0),
            deactivations: AtomicU64::new(0),
            outputs: (0..outputs).map(|_| SharedRow::default()).collect(),
            inputs: (0..inputs).map(|_| SharedRow::default()).collect(),
            blocked_ns,
            gauges: Mutex::default(),
        }
    }
}

/// A latency histogram from 1 µs to 1 hour at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The counters of one stream of one executor, executor-local (plain integers, bumped
/// on the tuple path). The fields mean what [`StreamStats`]'s do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Emits on the stream.
    pub emitted: u64,
    /// Tuples sent to tasks.
    pub transferred: u64,
    /// Trees (spout outputs) or tuples (bolt inputs) acked.
    pub acked: u64,
    /// Explicit fails.
    pub failed: u64,
    /// Spout trees timed out.
    pub timed_out: u64,
    /// Tuples executed.
    pub executed: u64,
    /// Sampled execute time, ns.
    pub execute_ns: u64,
    /// Execute-time samples.
    pub execute_samples: u64,
    /// Sampled process latency (receipt to ack), ns.
    pub process_ns: u64,
    /// Process-latency samples.
    pub process_samples: u64,
    /// Complete latency (spout emit to tree acked), µs.
    pub complete_us: u64,
    /// Complete-latency samples.
    pub complete_samples: u64,
}

const ROW_FIELDS: usize = StreamStats::COUNTERS;

impl Row {
    fn fields_mut(&mut self) -> [&mut u64; ROW_FIELDS] {
        [
            &mut self.emitted,
            &mut self.transferred,
            &mut self.acked,
            &mut self.failed,
            &mut self.timed_out,
            &mut self.executed,
            &mut self.execute_ns,
            &mut self.execute_samples,
            &mut self.process_ns,
            &mut self.process_samples,
            &mut self.complete_us,
            &mut self.complete_samples,
        ]
    }

    /// Adds the counts to `total`, then to `to` (when given), and zeroes them.
    fn publish(&mut self, to: Option<&SharedRow>, total: &mut Row) {
        if *self == Row::default() {
            return;
        }
        for (t, v) in total.fields_mut().into_iter().zip(self.fields_mut()) {
            *t += *v;
        }
        match to {
            Some(to) => {
                for (local, shared) in self.fields_mut().into_iter().zip(&to.0) {
                    if *local != 0 {
                        shared.fetch_add(std::mem::take(local), Relaxed);
                    }
                }
            }
            None => *self = Row::default(),
        }
    }
}

/// The shared side of a [`Row`]: what readers (heartbeats, the UI) see.
#[derive(Debug, Default)]
pub struct SharedRow([AtomicU64; ROW_FIELDS]);

impl SharedRow {
    /// The counts, as a [`StreamStats`] row named `component` (inputs) and `stream`.
    pub fn load(&self, component: Option<&str>, stream: &str) -> StreamStats {
        // `Row::fields_mut` and `StreamStats::from_counts` share the counters' order.
        StreamStats::from_counts(
            component,
            stream,
            std::array::from_fn(|i| self.0[i].load(Relaxed)),
        )
    }
}

/// The stream rows of tick tuples and of the acker's three message kinds: component
/// [`SYSTEM`], streams named as Storm names them.
pub const SYSTEM: &str = "__system";
/// Tick tuples (`topology.tick.tuple.freq.secs`).
pub const TICK_STREAM: &str = "__tick";
/// Acker input: a spout's ack-init.
pub const ACK_INIT_STREAM: &str = "__ack_init";
/// Acker input: a bolt's ack.
pub const ACK_ACK_STREAM: &str = "__ack_ack";
/// Acker input: a bolt's fail.
pub const ACK_FAIL_STREAM: &str = "__ack_fail";

/// Which input row a received tuple counts in, by the tuple's stream index.
///
/// Bolts have one row per subscribed (source component, stream), in subscription order,
/// and one more, `__system:__tick`, when tick tuples are configured. Ackers have three
/// rows, `__system:__ack_init`, `__system:__ack_ack` and `__system:__ack_fail`, by
/// message kind (acks and fails do not name their source, so ackers cannot count per
/// source component); a row's `acked`/`failed` count the tree verdicts that messages of
/// that kind completed. Spouts have none.
///
/// Executor-local counters have one more row after these, for tuples on a stream
/// without a row of its own: counted in the executor's totals, not reported as a row.
#[derive(Clone, Debug, Default)]
pub struct InputRows {
    /// Row names: source component and stream.
    pub names: Vec<(String, String)>,
    /// Row of each stream of the topology's stream table.
    by_stream: Vec<u32>,
    /// Row of tick tuples.
    tick: u32,
}

impl InputRows {
    /// The rows of a bolt subscribed to `inputs` (global stream indices with their
    /// source component and stream name) of a topology with `num_streams` streams,
    /// plus a tick row when `ticks`.
    pub fn bolt(
        num_streams: usize,
        inputs: impl IntoIterator<Item = (u32, String, String)>,
        ticks: bool,
    ) -> Self {
        const UNSET: u32 = u32::MAX;
        let mut names: Vec<(String, String)> = Vec::new();
        let mut by_stream = vec![UNSET; num_streams];
        for (index, component, stream) in inputs {
            if let Some(slot) = by_stream.get_mut(index as usize) {
                if *slot == UNSET {
                    *slot = names.len() as u32;
                    names.push((component, stream));
                }
            }
        }
        let mut tick = UNSET;
        if ticks {
            tick = names.len() as u32;
            names.push((SYSTEM.to_owned(), TICK_STREAM.to_owned()));
        }
        let other = names.len() as u32;
        for slot in by_stream.iter_mut().chain([&mut tick]) {
            if *slot == UNSET {
                *slot = other;
            }
        }
        InputRows {
            names,
            by_stream,
            tick,
        }
    }

    /// The three rows of an acker (see the type's docs): 0 ack-init, 1 ack, 2 fail.
    pub fn acker() -> Self {
        InputRows {
            names: [ACK_INIT_STREAM, ACK_ACK_STREAM, ACK_FAIL_STREAM]
                .into_iter()
                .map(|s| (SYSTEM.to_owned(), s.to_owned()))
                .collect(),
            by_stream: Vec::new(),
            tick: 3,
        }
    }

    /// The local row of a tuple on stream `index` ([`u32::MAX`] for ticks): one of the
    /// named rows, or [`len`](Self::len) for the row of streams without one.
    #[inline]
    pub fn row(&self, index: u32) -> usize {
        match self.by_stream.get(index as usize) {
            Some(&r) => r as usize,
            None => self.tick as usize,
        }
    }

    /// Number of named rows.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no named rows.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The executor-local side of [`ExecutorStats`]: per-stream rows only; the totals are
/// their sums, added up when the rows are published.
#[derive(Default)]
pub(crate) struct LocalStats {
    /// Emits so far, never published (a spout's loop watches it to see whether
    /// `next_tuple` emitted; the published count comes from the rows).
    pub emitted: u64,
    /// Per output stream (route index).
    pub outputs: Vec<Row>,
    /// Per input row ([`InputRows`]), plus the row of streams without one.
    pub inputs: Vec<Row>,
}

impl LocalStats {
    /// Zeroed counters for `outputs` output rows and the input rows of `inputs`.
    pub fn new(outputs: usize, inputs: &InputRows) -> Self {
        LocalStats {
            emitted: 0,
            outputs: vec![Row::default(); outputs],
            inputs: vec![Row::default(); inputs.len() + 1],
        }
    }

    /// Adds the counts to the shared rows and totals of `to`, and zeroes them.
    pub fn publish(&mut self, to: &ExecutorStats) {
        let mut total = Row::default();
        for (row, shared) in self.outputs.iter_mut().zip(to.outputs.iter()) {
            row.publish(Some(shared), &mut total);
        }
        for (i, row) in self.inputs.iter_mut().enumerate() {
            row.publish(to.inputs.get(i), &mut total);
        }
        if total == Row::default() {
            return;
        }
        // Storm counts a spout's timed-out trees as failed too; the rows do not.
        let pairs = [
            (total.emitted, &to.emitted),
            (total.transferred, &to.transferred),
            (total.acked, &to.acked),
            (total.failed + total.timed_out, &to.failed),
            (total.timed_out, &to.timed_out),
            (total.executed, &to.executed),
            (total.execute_ns, &to.execute_ns),
            (total.execute_samples, &to.execute_samples),
        ];
        for (n, shared) in pairs {
            if n != 0 {
                shared.fetch_add(n, Relaxed);
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
