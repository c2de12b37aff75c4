//! Executor metrics as they travel from workers to Nimbus and on to the UI, and the
//! rolling windows (10 min, 3 h, 1 day, all time) Nimbus keeps of them.
//!
//! Workers report **cumulative** counters ([`ExecutorCounters`]) in every heartbeat. Nimbus
//! feeds them to one [`Rolling`] per executor, which keeps a few snapshots at coarse
//! spacing per window (20 s for 10 min, 6 min for 3 h, 48 min for a day) and answers a
//! window as "now minus the newest snapshot at least that old". Counts are therefore
//! exact; only a window's edge is as coarse as its spacing (Storm's rolling windows
//! have the same granularity trade-off). A worker restart, or an executor moving to
//! another worker, starts its counters from zero again: [`Rolling`] notices and carries
//! on from the counts it had, so windows and all-time figures never go backwards.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A stats window: Storm's `600`, `10800`, `86400` and `:all-time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// The last `n` seconds.
    Secs(u64),
    /// Since the topology started.
    AllTime,
}

impl Window {
    /// Storm's four windows, `:all-time` last (tools read the last row as all-time).
    pub const ALL: [Window; 4] = [
        Window::Secs(600),
        Window::Secs(10800),
        Window::Secs(86400),
        Window::AllTime,
    ];

    /// Storm's name: `"600"`, `"10800"`, `"86400"`, `":all-time"`.
    pub fn name(self) -> String {
        match self {
            Window::Secs(s) => s.to_string(),
            Window::AllTime => ":all-time".to_owned(),
        }
    }

    /// Storm's `windowPretty`: `"10m 0s"`, `"3h 0m 0s"`, `"1d 0h 0m 0s"`, `"All time"`.
    pub fn pretty(self) -> String {
        match self {
            Window::AllTime => "All time".to_owned(),
            Window::Secs(s) => pretty_duration(s),
        }
    }

    /// Parses Storm's names (`600`, `:all-time`, also `all-time`); `None` for anything
    /// else (a bad `?window=` is a 400).
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            ":all-time" | "all-time" | "all" => Some(Window::AllTime),
            n => n.parse().ok().filter(|&n| n > 0).map(Window::Secs),
        }
    }

    /// The window's length in seconds (`None` for all time).
    pub fn secs(self) -> Option<u64> {
        match self {
            Window::Secs(s) => Some(s),
            Window::AllTime => None,
        }
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Window::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad window '{s}'")))
    }
}

/// Storm's uptime format: `"1d 2h 3m 4s"`, leading zero units left out (`"3m 4s"`).
pub fn pretty_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Counters of one stream of one executor.
///
/// For an **output** stream (`component` is `None`): `emitted` and `transferred`; for a
/// spout also the trees rooted on that stream: `acked`, `failed` (explicit fails only),
/// `timed_out`, and complete latency (`complete_us` over `complete_samples`).
///
/// For an **input** stream of a bolt (`component` is the source): `executed`, `acked`,
/// `failed`, execute latency (`execute_ns` over `execute_samples`) and process latency
/// (receipt to ack, `process_ns` over `process_samples`). Latencies are sampled;
/// counts are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Inputs: the source component. Outputs: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The stream id.
    pub stream: String,
    /// Tuples emitted (once per emit).
    #[serde(default)]
    pub emitted: u64,
    /// Tuples sent to tasks (an emit to three tasks counts three).
    #[serde(default)]
    pub transferred: u64,
    /// Acked: trees (spout outputs) or tuples (bolt inputs).
    #[serde(default)]
    pub acked: u64,
    /// Failed explicitly (a `fail` call, a panic, a failed child): never a timeout.
    #[serde(default)]
    pub failed: u64,
    /// Spout trees that timed out (`topology.message.timeout.secs`).
    #[serde(default)]
    pub timed_out: u64,
    /// Tuples executed.
    #[serde(default)]
    pub executed: u64,
    /// Sum of sampled execute times, ns.
    #[serde(default)]
    pub execute_ns: u64,
    /// Execute-time samples.
    #[serde(default)]
    pub execute_samples: u64,
    /// Sum of sampled process latencies (receipt to ack), ns.
    #[serde(default)]
    pub process_ns: u64,
    /// Process-latency samples.
    #[serde(default)]
    pub process_samples: u64,
    /// Sum of complete latencies (spout emit to tree acked), µs.
    #[serde(default)]
    pub complete_us: u64,
    /// Complete-latency samples.
    #[serde(default)]
    pub complete_samples: u64,
}

impl StreamStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &StreamStats) {
        for (a, b) in self.fields_mut().into_iter().zip(o.fields()) {
            *a = a.saturating_add(b);
        }
    }

    /// These counts minus `older`'s (never below zero).
    pub fn minus(&self, older: &StreamStats) -> StreamStats {
        let mut out = self.clone();
        for (a, b) in out.fields_mut().into_iter().zip(older.fields()) {
            *a = a.saturating_sub(b);
        }
        out
    }

    /// A row named `component` (inputs) and `stream` with the counts in this order:
    /// emitted, transferred, acked, failed, timed_out, executed, execute_ns,
    /// execute_samples, process_ns, process_samples, complete_us, complete_samples.
    pub fn from_counts(
        component: Option<&str>,
        stream: &str,
        counts: [u64; StreamStats::COUNTERS],
    ) -> StreamStats {
        let mut row = StreamStats {
            component: component.map(str::to_owned),
            stream: stream.to_owned(),
            ..StreamStats::default()
        };
        for (field, v) in row.fields_mut().into_iter().zip(counts) {
            *field = v;
        }
        row
    }

    /// How many counters a row has (see [`StreamStats::from_counts`]).
    pub const COUNTERS: usize = 12;

    /// Mean execute latency in ms (0 without samples).
    pub fn execute_latency_ms(&self) -> f64 {
        mean(self.execute_ns, self.execute_samples) / 1e6
    }

    /// Mean process latency in ms (0 without samples).
    pub fn process_latency_ms(&self) -> f64 {
        mean(self.process_ns, self.process_samples) / 1e6
    }

    /// Mean complete latency in ms (0 without samples).
    pub fn complete_latency_ms(&self) -> f64 {
        mean(self.complete_us, self.complete_samples) / 1e3
    }

    fn fields(&self) -> [u64; Self::COUNTERS] {
        [
            self.emitted,
            self.transferred,
            self.acked,
            self.failed,
            self.timed_out,
            self.executed,
            self.execute_ns,
            self.execute_samples,
            self.process_ns,
            self.process_samples,
            self.complete_us,
            self.complete_samples,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; Self::COUNTERS] {
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

    fn key(&self) -> (Option<&str>, &str) {
        (self.component.as_deref(), &self.stream)
    }

    fn total(&self) -> u128 {
        self.fields().iter().map(|&v| u128::from(v)).sum()
    }
}

fn mean(sum: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

/// All counters of one executor: per output stream, per input stream, and the time its
/// producers spent blocked on its full receive queue (backpressure).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorCounters {
    /// One row per declared output stream (spouts and bolts).
    #[serde(default)]
    pub outputs: Vec<StreamStats>,
    /// One row per subscribed (source component, stream) (bolts and ackers).
    #[serde(default)]
    pub inputs: Vec<StreamStats>,
    /// Nanoseconds producers (other executors, transport readers) spent blocked
    /// because this executor's receive queue was full. Divided by a window's length it
    /// is the share of time this executor throttled its producers.
    #[serde(default)]
    pub blocked_ns: u64,
}

impl ExecutorCounters {
    /// Adds `o` row by row (rows matched by component and stream; new rows appended).
    pub fn add(&mut self, o: &ExecutorCounters) {
        add_rows(&mut self.outputs, &o.outputs);
        add_rows(&mut self.inputs, &o.inputs);
        self.blocked_ns = self.blocked_ns.saturating_add(o.blocked_ns);
    }

    /// These counters minus `older`'s, row by row (rows `older` lacks are kept whole).
    pub fn minus(&self, older: &ExecutorCounters) -> ExecutorCounters {
        ExecutorCounters {
            outputs: minus_rows(&self.outputs, &older.outputs),
            inputs: minus_rows(&self.inputs, &older.inputs),
            blocked_ns: self.blocked_ns.saturating_sub(older.blocked_ns),
        }
    }

    /// The sum of the output rows.
    pub fn output_total(&self) -> StreamStats {
        sum_rows(&self.outputs)
    }

    /// The sum of the input rows.
    pub fn input_total(&self) -> StreamStats {
        sum_rows(&self.inputs)
    }

    /// Whether any counter is lower than in `older`: the counters started again (a
    /// restarted worker, an executor moved to another worker).
    pub fn went_back_from(&self, older: &ExecutorCounters) -> bool {
        let lower = |new: &[StreamStats], old: &[StreamStats]| {
            old.iter().any(|o| {
                let n = new.iter().find(|n| n.key() == o.key());
                n.is_none_or(|n| n.fields().iter().zip(o.fields()).any(|(a, b)| *a < b))
                    && o.total() > 0
            })
        };
        self.blocked_ns < older.blocked_ns
            || lower(&self.outputs, &older.outputs)
            || lower(&self.inputs, &older.inputs)
    }
}

fn add_rows(to: &mut Vec<StreamStats>, from: &[StreamStats]) {
    for row in from {
        match to.iter_mut().find(|r| r.key() == row.key()) {
            Some(r) => r.add(row),
            None => to.push(row.clone()),
        }
    }
}

fn minus_rows(new: &[StreamStats], old: &[StreamStats]) -> Vec<StreamStats> {
    new.iter()
        .map(|n| match old.iter().find(|o| o.key() == n.key()) {
            Some(o) => n.minus(o),
            None => n.clone(),
        })
        .collect()
}

fn sum_rows(rows: &[StreamStats]) -> StreamStats {
    let mut total = StreamStats::default();
    for r in rows {
        total.add(r);
    }
    total
}

/// Snapshot spacing and count per window: enough snapshots that one at least a
/// window old always exists once the executor is older than the window plus a spacing.
const LEVELS: [(u64, u64); 3] = [(600, 20), (10800, 360), (86400, 2880)];
const PER_LEVEL: usize = 32;

/// The rolling windows of one executor, fed with its cumulative counters.
#[derive(Clone, Debug, Default)]
pub struct Rolling {
    /// Counts of earlier incarnations (before the counters last started again).
    base: ExecutorCounters,
    /// The last reported counters of the current incarnation.
    last: ExecutorCounters,
    /// `base + last`: everything counted so far.
    total: ExecutorCounters,
    /// What the windows of a young executor are measured from: zero when it was first
    /// seen young, else the counters it had when Nimbus first saw it (counts from
    /// before that cannot be placed in time).
    origin: ExecutorCounters,
    first_secs: Option<u64>,
    source: String,
    levels: [VecDeque<(u64, ExecutorCounters)>; 3],
}

impl Rolling {
    /// A worker whose executor reports for the first time at an uptime below this many
    /// seconds is taken to have counted everything inside the current windows.
    const YOUNG_SECS: u64 = 30;

    /// Records the cumulative `counters` reported at `now_secs` by `source` (the
    /// worker's `host:port`) whose worker has been up for `uptime_secs`.
    pub fn record(
        &mut self,
        now_secs: u64,
        source: &str,
        uptime_secs: u64,
        counters: &ExecutorCounters,
    ) {
        if self.first_secs.is_none() {
            self.first_secs = Some(now_secs);
            if uptime_secs >= Self::YOUNG_SECS {
                self.origin = counters.clone();
            }
        } else if source != self.source || counters.went_back_from(&self.last) {
            // A new incarnation: its counters start from zero.
            self.base = self.total.clone();
        }
        self.source = source.to_owned();
        self.last = counters.clone();
        let mut total = self.base.clone();
        total.add(counters);
        self.total = total;
        for (i, (_, spacing)) in LEVELS.iter().enumerate() {
            let level = &mut self.levels[i];
            if level.back().is_none_or(|(t, _)| now_secs >= t + spacing) {
                level.push_back((now_secs, self.total.clone()));
                if level.len() > PER_LEVEL {
                    level.pop_front();
                }
            }
        }
    }

    /// Everything counted so far (all incarnations).
    pub fn all_time(&self) -> &ExecutorCounters {
        &self.total
    }

    /// The counts of `window` as of `now_secs`.
    pub fn window(&self, now_secs: u64, window: Window) -> ExecutorCounters {
        let Some(secs) = window.secs() else {
            return self.total.clone();
        };
        let level = LEVELS
            .iter()
            .position(|(w, _)| secs <= *w)
            .unwrap_or(LEVELS.len() - 1);
        let since = now_secs.saturating_sub(secs);
        let older = self.levels[level]
            .iter()
            .rev()
            .find(|(t, _)| *t <= since)
            .map(|(_, c)| c);
        match older {
            Some(c) => self.total.minus(c),
            // Younger than the window (as far as Nimbus knows).
            None if self.first_secs.is_some_and(|f| f > since) => self.total.minus(&self.origin),
            // Snapshots do not reach back far enough (cannot happen with LEVELS).
            None => match self.levels[level].front() {
                Some((_, c)) => self.total.minus(c),
                None => ExecutorCounters::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(emitted: u64, executed: u64) -> ExecutorCounters {
        ExecutorCounters {
            outputs: vec![StreamStats {
                stream: "default".into(),
                emitted,
                transferred: emitted * 2,
                ..Default::default()
            }],
            inputs: vec![StreamStats {
                component: Some("spout".into()),
                stream: "default".into(),
                executed,
                ..Default::default()
            }],
            blocked_ns: 0,
        }
    }

    #[test]
    fn windows_count_what_happened_inside_them() {
        let mut r = Rolling::default();
        // 10 emits per second for two hours, reported every second.
        for t in 0..=7200u64 {
            r.record(1000 + t, "h:1", t, &counters(10 * t, 5 * t));
        }
        let now = 1000 + 7200;
        let w10 = r.window(now, Window::Secs(600)).output_total().emitted;
        // Exact up to the 20 s spacing of the 10-minute level.
        assert!((6000..=6200).contains(&w10), "{w10}");
        let w3h = r.window(now, Window::Secs(10800)).output_total().emitted;
        assert_eq!(w3h, 72000, "younger than the window: everything");
        assert_eq!(r.window(now, Window::AllTime).input_total().executed, 36000);
    }

    #[test]
    fn a_restarted_worker_does_not_make_counts_go_back() {
        let mut r = Rolling::default();
        r.record(100, "h:1", 1, &counters(100, 50));
        r.record(101, "h:1", 2, &counters(200, 100));
        // Restart: counters from zero again.
        r.record(105, "h:1", 1, &counters(10, 5));
        assert_eq!(r.all_time().output_total().emitted, 210);
        assert_eq!(r.all_time().input_total().executed, 105);
        // Moved to another worker whose counters happen to be higher.
        r.record(106, "h:2", 500, &counters(300, 1));
        assert_eq!(r.all_time().output_total().emitted, 510);
        assert_eq!(r.window(106, Window::Secs(600)).output_total().emitted, 510);
    }

    #[test]
    fn an_old_executor_first_seen_by_a_new_nimbus_counts_from_then() {
        let mut r = Rolling::default();
        r.record(100, "h:1", 5000, &counters(1_000_000, 0));
        r.record(110, "h:1", 5010, &counters(1_000_100, 0));
        assert_eq!(r.window(110, Window::Secs(600)).output_total().emitted, 100);
        assert_eq!(r.all_time().output_total().emitted, 1_000_100);
    }

    #[test]
    fn window_names_are_storms() {
        let names: Vec<String> = Window::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names, ["600", "10800", "86400", ":all-time"]);
        assert_eq!(Window::parse(":all-time"), Some(Window::AllTime));
        assert_eq!(Window::parse("0"), None);
        assert_eq!(Window::parse("abc"), None);
        assert_eq!(Window::Secs(600).pretty(), "10m 0s");
        assert_eq!(Window::Secs(86400).pretty(), "1d 0h 0m 0s");
        assert_eq!(
            serde_json::to_string(&Window::AllTime).unwrap(),
            "\":all-time\""
        );
    }
}
