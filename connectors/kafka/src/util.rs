//! Small helpers: waiting for rdkafka's futures without an async runtime, gauge names,
//! errors collected off the executor thread, commit metadata.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use squall_api::{validate_gauge_name, GAUGE_NAME_MAX_LEN};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `f` to completion on this thread (rdkafka's admin futures complete from
/// librdkafka's own thread, so no runtime is needed).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// The gauge name `prefix.<topic>.<partition>`, made acceptable to
/// [`validate_gauge_name`]: characters it refuses become `_`, and a topic too long for
/// [`GAUGE_NAME_MAX_LEN`] is cut and marked with a hash of its whole name.
pub(crate) fn partition_gauge_name(prefix: &str, topic: &str, partition: i32) -> String {
    let clean: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{prefix}.{clean}.{partition}");
    if name.len() <= GAUGE_NAME_MAX_LEN {
        debug_assert!(validate_gauge_name(&name).is_ok());
        return name;
    }
    // FNV-1a: stable across processes, unlike the std hasher.
    let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let tail = format!("-{:08x}.{partition}", hash as u32);
    let room = GAUGE_NAME_MAX_LEN - prefix.len() - 1 - tail.len();
    format!("{prefix}.{}{tail}", &clean[..room.min(clean.len())])
}

/// Errors found off the executor thread (librdkafka's callbacks, the metadata thread),
/// reported by the executor through `report_error`. The same message is kept at most
/// once per `quiet` period, so a broker that is down does not flood the error log.
#[derive(Clone)]
pub(crate) struct ErrorSink {
    inner: Arc<Mutex<ErrorState>>,
    quiet: Duration,
}

struct ErrorState {
    pending: Vec<String>,
    last: HashMap<String, Instant>,
}

impl ErrorSink {
    pub(crate) fn new(quiet: Duration) -> Self {
        ErrorSink {
            inner: Arc::new(Mutex::new(ErrorState {
                pending: Vec::new(),
                last: HashMap::new(),
            })),
            quiet,
        }
    }

    /// Keeps `msg` for the next [`drain`](Self::drain), unless the same message was kept
    /// within the quiet period.
    pub(crate) fn push(&self, msg: String) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.last
            .get(&msg)
            .is_some_and(|&t| now.duration_since(t) < self.quiet)
        {
            return;
        }
        if s.last.len() > 1000 {
            s.last.clear();
        }
        s.last.insert(msg.clone(), now);
        if s.pending.len() < 100 {
            s.pending.push(msg);
        }
    }

    /// The messages kept since the last call.
    pub(crate) fn drain(&self) -> Vec<String> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut s.pending)
    }
}

/// The metadata stored with the spout's commits, as Storm's `KafkaSpout` stores it.
pub(crate) fn commit_metadata(topology_id: &str, task: u32) -> String {
    serde_json::json!({ "topologyId": topology_id, "threadName": format!("task-{task}") })
        .to_string()
}

/// The topology id in commit metadata written by [`commit_metadata`] (or by Storm).
pub(crate) fn committed_by(metadata: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(metadata).ok()?;
    v.get("topologyId")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_names_always_pass_validation() {
        assert_eq!(
            partition_gauge_name("kafka.lag", "orders", 3),
            "kafka.lag.orders.3"
        );
        let long = "x".repeat(249);
        let a = partition_gauge_name("kafka.lag", &long, 12);
        let b = partition_gauge_name("kafka.lag", &format!("{}y", "x".repeat(248)), 12);
        for n in [&a, &b] {
            assert!(validate_gauge_name(n).is_ok(), "{n}");
            assert!(n.ends_with(".12"), "{n}");
        }
        assert_ne!(a, b, "long names differing at the end stay apart");
        assert!(validate_gauge_name(&partition_gauge_name("kafka.lag", "a b/é", 0)).is_ok());
    }

    #[test]
    fn commit_metadata_round_trips() {
        let m = commit_metadata("wc-1-1700000000", 7);
        assert_eq!(committed_by(&m).as_deref(), Some("wc-1-1700000000"));
        assert_eq!(committed_by(""), None);
        assert_eq!(committed_by("{\"x\":1}"), None);
    }

    #[test]
    fn repeated_errors_are_kept_once_per_quiet_period() {
        let s = ErrorSink::new(Duration::from_secs(60));
        s.push("down".into());
        s.push("down".into());
        s.push("other".into());
        assert_eq!(s.drain(), vec!["down".to_owned(), "other".to_owned()]);
        s.push("down".into());
        assert!(s.drain().is_empty());
    }
}
