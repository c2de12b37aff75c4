//! Components of the windowing examples: storm-starter's RollingTopWords
//! (`rolling-top-words`), event-time windows with late tuples (`event-time-windows`)
//! and the window benchmark (`window-perf`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use squall_api::windowing::{TupleWindow, WindowedBolt};
use squall_api::{
    values, BasicBolt, BasicOutputCollector, BoxError, Config, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, TopologyContext, Tuple, Value,
};

/// The words of storm-starter's `TestWordSpout`.
pub const TEST_WORDS: [&str; 5] = ["nathan", "mike", "jackson", "golda", "bertels"];

/// A small deterministic generator (SplitMix64), so a seed gives the same stream.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Emits random words from `words` (storm-starter's `TestWordSpout`), tracked when
/// `tracked`, at most `rate` per second per task when set.
#[derive(Clone)]
pub struct WordSpout {
    /// The vocabulary.
    pub words: Vec<String>,
    /// Emit with message ids (acked once the word left its windows).
    pub tracked: bool,
    /// Words per second per task.
    pub rate: Option<u64>,
    rng: SplitMix,
    next_id: i64,
    started: Option<Instant>,
}

impl WordSpout {
    /// A spout over `words`.
    pub fn new(words: Vec<String>, tracked: bool, rate: Option<u64>) -> Self {
        WordSpout {
            words,
            tracked,
            rate,
            rng: SplitMix::new(0),
            next_id: 0,
            started: None,
        }
    }
}

impl Spout for WordSpout {
    fn open(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        if self.words.is_empty() {
            return Err("WordSpout needs at least one word".into());
        }
        self.rng = SplitMix::new(ctx.this_task_id().0 as u64 ^ now_ms() as u64);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(rate) = self.rate {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as i64;
            if self.next_id >= due {
                std::thread::sleep(Duration::from_micros(200));
                return;
            }
        }
        for _ in 0..16 {
            let word = &self.words[self.rng.below(self.words.len() as u64) as usize];
            self.next_id += 1;
            if self.tracked {
                out.emit_with_id(values![word.as_str()], self.next_id);
            } else {
                out.emit(values![word.as_str()]);
            }
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["word"]);
    }
}

/// Counts words over a sliding window, incrementally from the window's new and expired
/// tuples (storm-starter's `RollingCountBolt`), and emits its top `top` words with the
/// window's end: `(end, rankings)`, rankings a list of `[word, count]`.
#[derive(Clone, Default)]
pub struct RollingCounts {
    /// How many words each task ranks.
    pub top: usize,
    counts: HashMap<String, u64>,
}

impl RollingCounts {
    /// Ranks the top `top` words.
    pub fn new(top: usize) -> Self {
        RollingCounts {
            top,
            counts: HashMap::new(),
        }
    }
}

/// Applies a window's new and expired words to `counts` (a word that reaches 0 is
/// removed).
pub fn slide_counts(counts: &mut HashMap<String, u64>, window: &TupleWindow<'_>) {
    for t in window.get_new() {
        if let Ok(w) = t.get_string(0) {
            *counts.entry(w.to_owned()).or_default() += 1;
        }
    }
    for t in window.get_expired() {
        if let Ok(w) = t.get_string(0) {
            if let Some(n) = counts.get_mut(w) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(w);
                }
            }
        }
    }
}

/// The `top` entries of `counts`, most frequent first (ties by word).
pub fn top_words(counts: &HashMap<String, u64>, top: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.iter().map(|(w, n)| (w.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(top);
    v
}

impl WindowedBolt for RollingCounts {
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        slide_counts(&mut self.counts, window);
        let rankings: Vec<Value> = top_words(&self.counts, self.top)
            .into_iter()
            .map(|(w, n)| Value::List(vec![Value::from(w), Value::Int(n as i64)]))
            .collect();
        out.emit(values![window.end_timestamp(), Value::List(rankings)]);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["end", "rankings"]);
    }
}

/// The latest total rankings, shared with the example's `main`.
pub type Rankings = Arc<Mutex<Vec<(String, u64)>>>;

/// Merges the intermediate rankings of every counter task (storm-starter's
/// `TotalRankingsBolt`); prints the total top words each time every counter task has
/// reported a new window.
#[derive(Clone)]
pub struct TotalRankings {
    /// How many words to print.
    pub top: usize,
    /// The latest total, for `main`.
    pub latest: Rankings,
    counters: usize,
    by_task: BTreeMap<u32, (i64, Vec<(String, u64)>)>,
    fresh: usize,
    started: Option<Instant>,
}

impl TotalRankings {
    /// Ranks the top `top` words, publishing them into `latest`.
    pub fn new(top: usize, latest: Rankings) -> Self {
        TotalRankings {
            top,
            latest,
            counters: 1,
            by_task: BTreeMap::new(),
            fresh: 0,
            started: None,
        }
    }
}

impl BasicBolt for TotalRankings {
    fn prepare(&mut self, _conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.counters = ctx
            .this_sources()
            .iter()
            .map(|(s, _)| ctx.component_tasks(s.component.as_str()).len())
            .sum::<usize>()
            .max(1);
        self.started = Some(Instant::now());
        Ok(())
    }

    fn execute(
        &mut self,
        t: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        let end = t.get_long(0)?;
        let rankings = t
            .get_list(1)?
            .iter()
            .filter_map(|r| match r {
                Value::List(p) if p.len() == 2 => {
                    Some((p[0].as_str()?.to_owned(), p[1].as_i64()? as u64))
                }
                _ => None,
            })
            .collect();
        self.by_task.insert(t.source_task().0, (end, rankings));
        self.fresh += 1;
        if self.fresh < self.counters || self.by_task.len() < self.counters {
            return Ok(());
        }
        self.fresh = 0;
        let mut total: Vec<(String, u64)> = self
            .by_task
            .values()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        total.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        total.truncate(self.top);
        let at = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let line: Vec<String> = total.iter().map(|(w, n)| format!("{w} {n}")).collect();
        println!("[{at:6.1} s] top {}: {}", self.top, line.join(", "));
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = total;
        Ok(())
    }
}

/// Event-time events, out of order, some late, all from a seed. Emits `batches` batches
/// of `per_batch` events, `pause` apart. Within a batch event times are shuffled by up
/// to `lag` (never late: each is above the batch's running maximum minus the lag); a
/// late event (one in `late_one_in`) is older than the previous batches' maximum minus
/// the lag, and comes after a pause longer than the watermark interval, so it is late
/// whatever the timing: the output is the same for a given seed.
#[derive(Clone, Debug)]
pub struct EventSpout {
    /// The seed.
    pub seed: u64,
    /// Number of batches.
    pub batches: u64,
    /// Events per batch.
    pub per_batch: u64,
    /// Event-time step between events (ms).
    pub step_ms: i64,
    /// The allowed disorder (ms), as the windowed bolt's lag.
    pub lag_ms: i64,
    /// One event in this many is late (0: none).
    pub late_one_in: u64,
    /// Wall-clock pause between batches.
    pub pause: Duration,
    /// Event time of the first event.
    pub base_ms: i64,
    /// After the last batch, one more event this far past the latest time moves the
    /// watermark past every window (0: none).
    pub flush_ms: i64,
    /// Set when every event was sent, with their number.
    pub sent: Arc<Mutex<Option<u64>>>,
    rng: SplitMix,
    batch: u64,
    last_batch_at: Option<Instant>,
    max_seen: i64,
    next_id: i64,
}

impl EventSpout {
    /// A spout of `batches` batches of `per_batch` events from `seed`.
    pub fn new(seed: u64, batches: u64, per_batch: u64, lag_ms: i64) -> Self {
        EventSpout {
            seed,
            batches,
            per_batch,
            step_ms: 10,
            lag_ms,
            late_one_in: 12,
            pause: Duration::from_millis(120),
            base_ms: 1_700_000_000_000,
            flush_ms: 0,
            sent: Arc::default(),
            rng: SplitMix::new(seed),
            batch: 0,
            last_batch_at: None,
            max_seen: i64::MIN,
            next_id: 0,
        }
    }
}

impl Spout for EventSpout {
    fn open(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        self.rng = SplitMix::new(self.seed);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        if self.batch >= self.batches {
            std::thread::sleep(Duration::from_millis(5));
            return;
        }
        if self
            .last_batch_at
            .is_some_and(|at| at.elapsed() < self.pause)
        {
            std::thread::sleep(Duration::from_millis(2));
            return;
        }
        let before = self.max_seen;
        for i in 0..self.per_batch {
            let n = (self.batch * self.per_batch + i) as i64;
            let on_time = self.base_ms + n * self.step_ms;
            let late =
                self.late_one_in > 0 && before != i64::MIN && self.rng.below(self.late_one_in) == 0;
            let ts = if late {
                // Older than the previous batches' maximum minus the lag.
                before - self.lag_ms - 1 - self.rng.below(500) as i64
            } else {
                // Shuffled by up to the lag, but above the running maximum − lag.
                let t = on_time - self.rng.below(self.lag_ms.max(1) as u64) as i64;
                let floor = self.max_seen.saturating_sub(self.lag_ms) + 1;
                t.max(floor)
            };
            if !late {
                self.max_seen = self.max_seen.max(ts);
            }
            self.next_id += 1;
            out.emit_with_id(values![self.next_id, ts], self.next_id);
        }
        self.batch += 1;
        self.last_batch_at = Some(Instant::now());
        if self.batch == self.batches {
            if self.flush_ms > 0 {
                self.next_id += 1;
                let ts = self.max_seen + self.flush_ms;
                out.emit_with_id(values![self.next_id, ts], self.next_id);
            }
            *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.next_id as u64);
        }
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["id", "ts"]);
    }
}

/// Counts the events of each window: emits `(start, end, count)`.
#[derive(Clone, Default)]
pub struct EventCounts;

impl WindowedBolt for EventCounts {
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        let start = window.start_timestamp().unwrap_or(window.end_timestamp());
        out.emit(values![
            start,
            window.end_timestamp(),
            window.get().len() as i64
        ]);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["start", "end", "count"]);
    }
}

/// What [`WindowReport`] saw: window lines in order, and the late tuples.
#[derive(Debug, Default)]
pub struct WindowLog {
    /// `(start, end, count)` per window, in arrival order.
    pub windows: Vec<(i64, i64, i64)>,
    /// Late tuples: `(id, event time)`.
    pub late: Vec<(i64, i64)>,
}

/// Prints each window's count as it arrives and records windows and late tuples.
#[derive(Clone, Default)]
pub struct WindowReport {
    /// Shared with `main`.
    pub log: Arc<Mutex<WindowLog>>,
    /// Event time shown as offsets from this.
    pub base_ms: i64,
    /// Print windows as they come.
    pub print: bool,
}

impl BasicBolt for WindowReport {
    fn execute(
        &mut self,
        t: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if t.source_stream() == "late" {
            let values = t.get_list(0)?;
            let id = values.first().and_then(Value::as_i64).unwrap_or(-1);
            log.late.push((id, t.get_long(1)?));
            return Ok(());
        }
        let (start, end, count) = (t.get_long(0)?, t.get_long(1)?, t.get_long(2)?);
        if self.print {
            println!(
                "window ({:>6}, {:>6}] ms: {count:>4} events",
                start - self.base_ms,
                end - self.base_ms
            );
        }
        log.windows.push((start, end, count));
        Ok(())
    }
}

/// Word count over a window, incrementally (new and expired words), emitting one
/// summary per window: `(end, words in window, distinct words)`.
#[derive(Clone, Default)]
pub struct WindowWordCount {
    counts: HashMap<String, u64>,
}

impl WindowedBolt for WindowWordCount {
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        slide_counts(&mut self.counts, window);
        out.emit(values![
            window.end_timestamp(),
            window.get().len() as i64,
            self.counts.len() as i64
        ]);
    }

    fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
        d.declare(["end", "words", "distinct"]);
    }
}

/// Records, per window result, the delay from the window's end to its arrival here (ms).
#[derive(Clone, Default)]
pub struct DelaySink {
    /// Delays in ms and window sizes, shared with `main`.
    pub delays: Arc<Mutex<Vec<(i64, i64)>>>,
}

impl BasicBolt for DelaySink {
    fn execute(
        &mut self,
        t: &Tuple,
        _out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError> {
        let delay = now_ms() - t.get_long(0)?;
        self.delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((delay, t.get_long(1)?));
        Ok(())
    }
}
