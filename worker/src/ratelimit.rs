//! Rate-limited logging for messages that can repeat once per tuple.
//!
//! A warning written for every bad tuple floods a worker's log at millions of tuples per
//! second. A [`LogLimiter`] lets through at most `burst` lines per `interval` and counts
//! the rest, so the next line that gets through can say how many were suppressed:
//!
//! ```
//! use std::time::Duration;
//! use squall_worker::ratelimit::LogLimiter;
//!
//! static UNKNOWN_TASK: LogLimiter = LogLimiter::new(Duration::from_secs(5), 1);
//!
//! fn on_bad_message(task: u32) {
//!     if let Some(suppressed) = UNKNOWN_TASK.allow() {
//!         tracing::warn!(suppressed, "dropping a message for unknown task {task}");
//!     }
//! }
//! # on_bad_message(7);
//! ```
//!
//! One limiter per kind of message: a `static` for messages of the whole process, or a
//! field of the thread that logs them. It is thread-safe (a tiny mutex, taken only on
//! the error paths that log).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the runtime's per-tuple warnings may be written: one line per this interval
/// per kind.
pub const WARN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Window {
    /// Start of the current window (`None` before the first call).
    start: Option<Instant>,
    /// Lines let through in the current window.
    passed: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

/// Lets through at most `burst` log lines per `interval`; counts the others.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    burst: u32,
    window: Mutex<Window>,
}

impl LogLimiter {
    /// A limiter for `burst` lines (at least 1) per `interval`. `const`, so it can be a
    /// `static`.
    pub const fn new(interval: Duration, burst: u32) -> Self {
        LogLimiter {
            interval,
            burst: if burst == 0 { 1 } else { burst },
            window: Mutex::new(Window {
                start: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// One line per [`WARN_INTERVAL`]: the runtime's setting for per-tuple warnings.
    pub const fn per_tuple_warnings() -> Self {
        Self::new(WARN_INTERVAL, 1)
    }

    /// Whether a line may be written now: `Some(n)` with the number of lines suppressed
    /// since the last one written, or `None` when this one is suppressed (and counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`allow`](Self::allow) at time `now` (for tests and callers that have the time).
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let expired = match w.start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.interval,
        };
        if expired {
            w.start = Some(now);
            w.passed = 0;
        }
        if w.passed < self.burst {
            w.passed += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }

    /// A suffix for the line that got through, saying how many were held back before it
    /// (empty when none were).
    pub fn suffix(suppressed: u64) -> String {
        if suppressed == 0 {
            String::new()
        } else {
            format!(" ({suppressed} more like this since the last report)")
        }
    }

    /// Lines suppressed since the last one let through.
    pub fn suppressed(&self) -> u64 {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_suppressed_ones() {
        let l = LogLimiter::new(Duration::from_secs(5), 1);
        let t0 = Instant::now();
        assert_eq!(l.allow_at(t0), Some(0));
        for i in 1..=99 {
            assert_eq!(l.allow_at(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(l.suppressed(), 99);
        assert_eq!(l.allow_at(t0 + Duration::from_millis(4999)), None);
        // The next window lets one through and reports the 100 held back.
        assert_eq!(l.allow_at(t0 + Duration::from_secs(5)), Some(100));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(6)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(60)), Some(1));
        assert_eq!(l.suppressed(), 0);
        assert_eq!(LogLimiter::suffix(0), "");
        assert!(LogLimiter::suffix(3).contains('3'));
    }

    #[test]
    fn a_burst_passes_before_lines_are_held_back() {
        let l = LogLimiter::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let passed: Vec<Option<u64>> = (0..5)
            .map(|i| l.allow_at(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(passed, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn a_zero_burst_still_lets_one_line_through() {
        static L: LogLimiter = LogLimiter::new(Duration::from_secs(1), 0);
        let t0 = Instant::now();
        assert_eq!(L.allow_at(t0), Some(0));
        assert_eq!(L.allow_at(t0), None);
    }
}
