//! Batch figures of the coordinators running in this process (local mode, benchmarks):
//! how many batches committed, how long a batch took from its start to its commit, and
//! how many attempts were replayed.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;

/// What a batch group's coordinator measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Batches committed.
    pub committed: u64,
    /// Batch attempts emitted again after a failure or a timeout.
    pub replays: u64,
    /// Start of a batch to its commit, median, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Maximum, ms.
    pub latency_max_ms: f64,
}

#[derive(Default)]
struct Entry {
    hist: Option<Histogram<u64>>,
    committed: u64,
    replays: u64,
}

fn registry() -> &'static Mutex<HashMap<String, Entry>> {
    static R: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

pub(crate) fn record_commit(group: &str, latency: Duration) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let e = r.entry(group.to_owned()).or_default();
    e.committed += 1;
    let h = e
        .hist
        .get_or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("bounds"));
    let _ = h.record((latency.as_micros() as u64).clamp(1, 3_600_000_000));
}

pub(crate) fn record_replays(group: &str, n: u64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.entry(group.to_owned()).or_default().replays += n;
}

/// The figures of the batch group whose first stream is `stream` (the name given to
/// `new_stream`, or `drpc-<function>`), since this process started; `None` when no
/// coordinator of that name ran here.
pub fn batch_stats(stream: &str) -> Option<BatchStats> {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let e = r
        .get(&format!("spout-{stream}"))
        .or_else(|| r.get(stream))?;
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, max) = match &e.hist {
        Some(h) => (
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        ),
        None => (0.0, 0.0, 0.0),
    };
    Some(BatchStats {
        committed: e.committed,
        replays: e.replays,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
    })
}
