//! Topology configuration, keyed by Storm's dotted key names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Storm's configuration key names, for the keys Squall reads.
pub mod keys {
    /// Number of worker processes for the topology (default 1).
    pub const TOPOLOGY_WORKERS: &str = "topology.workers";
    /// Number of acker executors; 0 turns acking off (default: one per worker).
    pub const TOPOLOGY_ACKER_EXECUTORS: &str = "topology.acker.executors";
    /// Maximum un-acked message ids per spout task (default: unbounded).
    pub const TOPOLOGY_MAX_SPOUT_PENDING: &str = "topology.max.spout.pending";
    /// Seconds after which an un-acked tuple tree fails (default 30).
    pub const TOPOLOGY_MESSAGE_TIMEOUT_SECS: &str = "topology.message.timeout.secs";
    /// Whether tuple trees time out at all (default true).
    pub const TOPOLOGY_ENABLE_MESSAGE_TIMEOUTS: &str = "topology.enable.message.timeouts";
    /// Log every emitted tuple (default false).
    pub const TOPOLOGY_DEBUG: &str = "topology.debug";
    /// Send a tick tuple to bolts every this many seconds (default: no ticks).
    pub const TOPOLOGY_TICK_TUPLE_FREQ_SECS: &str = "topology.tick.tuple.freq.secs";
    /// Capacity of an executor's receive queue, in tuples (default 32768).
    pub const TOPOLOGY_EXECUTOR_RECEIVE_BUFFER_SIZE: &str = "topology.executor.receive.buffer.size";
    /// Tuples per batch handed from one executor to another (Squall default 256; see
    /// ARCHITECTURE.md for why it differs from Storm's 1).
    pub const TOPOLOGY_PRODUCER_BATCH_SIZE: &str = "topology.producer.batch.size";
    /// Longest a partial batch waits before it is sent, in ms (default 1).
    pub const TOPOLOGY_BATCH_FLUSH_INTERVAL_MILLIS: &str = "topology.batch.flush.interval.millis";
    /// Milliseconds a spout sleeps when `next_tuple` emitted nothing (default 1).
    pub const TOPOLOGY_SLEEP_SPOUT_WAIT_STRATEGY_TIME_MS: &str =
        "topology.sleep.spout.wait.strategy.time.ms";
    /// The topology's name, set by the runtime.
    pub const TOPOLOGY_NAME: &str = "topology.name";
    /// Errors an executor reports (and logs) at most per throttle interval (default 5).
    pub const TOPOLOGY_MAX_ERROR_REPORT_PER_INTERVAL: &str =
        "topology.max.error.report.per.interval";
    /// The interval of `topology.max.error.report.per.interval`, in seconds (default 10).
    pub const TOPOLOGY_ERROR_THROTTLE_INTERVAL_SECS: &str = "topology.error.throttle.interval.secs";
    /// Squall: send a tick tuple to bolts every this many milliseconds (default: no
    /// ticks). Storm's `topology.tick.tuple.freq.secs` counts whole seconds, too coarse
    /// for the triggers and watermarks of windowed bolts, which set this key themselves;
    /// when both are set this one wins.
    pub const SQUALL_TICK_TUPLE_FREQ_MS: &str = "squall.tick.tuple.freq.ms";
    /// Squall: automatic flow control of spouts (default true). When
    /// `topology.max.spout.pending` is not set, each spout task adapts how many tuple
    /// trees it keeps in flight so that complete latency stays near its value with
    /// empty queues while throughput stays at what the topology can do (see
    /// ARCHITECTURE.md, "Flow control"). `false` lets spouts emit without limit, as
    /// Storm does without max pending. A set `topology.max.spout.pending` always wins.
    pub const SQUALL_SPOUT_FLOW_CONTROL: &str = "squall.spout.flow.control";
    /// Windowed bolts: the window length as a number of tuples.
    pub const TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT: &str = "topology.bolts.window.length.count";
    /// Windowed bolts: the window length in milliseconds.
    pub const TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS: &str =
        "topology.bolts.window.length.duration.ms";
    /// Windowed bolts: the sliding interval as a number of tuples (default 1).
    pub const TOPOLOGY_BOLTS_SLIDING_INTERVAL_COUNT: &str = "topology.bolts.sliding.interval.count";
    /// Windowed bolts: the sliding interval in milliseconds.
    pub const TOPOLOGY_BOLTS_SLIDING_INTERVAL_DURATION_MS: &str =
        "topology.bolts.sliding.interval.duration.ms";
    /// Windowed bolts: the field holding each tuple's event time (ms); sets event time.
    pub const TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME: &str =
        "topology.bolts.window.timestamp.field.name";
    /// Windowed bolts: how far (ms) event times may lag behind the latest one (default 0).
    pub const TOPOLOGY_BOLTS_TUPLE_TIMESTAMP_MAX_LAG_MS: &str =
        "topology.bolts.tuple.timestamp.max.lag.ms";
    /// Windowed bolts: milliseconds between two watermarks (default 1000).
    pub const TOPOLOGY_BOLTS_WATERMARK_EVENT_INTERVAL_MS: &str =
        "topology.bolts.watermark.event.interval.ms";
    /// Windowed bolts: the stream late tuples are emitted on (default: none, dropped).
    pub const TOPOLOGY_BOLTS_LATE_TUPLE_STREAM: &str = "topology.bolts.late.tuple.stream";
    /// Squall: set (to a description) when a windowed bolt takes event times from a
    /// timestamp extractor (code) rather than a field.
    pub const SQUALL_BOLTS_WINDOW_TIMESTAMP_EXTRACTOR: &str =
        "squall.bolts.window.timestamp.extractor";
    /// Trident: milliseconds between the starts of two batches (default 500).
    pub const TOPOLOGY_TRIDENT_BATCH_EMIT_INTERVAL_MILLIS: &str =
        "topology.trident.batch.emit.interval.millis";
}

/// Why a configuration value could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The value has the wrong type or range.
    #[error("config key '{key}' must be {expected}, found {found}")]
    Invalid {
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
}

impl ConfigError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } => key,
        }
    }
}

/// A topology's configuration: Storm's dotted keys plus any user keys, all handed to
/// every component in `open` / `prepare`.
///
/// ```
/// use squall_api::Config;
/// let mut conf = Config::new();
/// conf.set_num_workers(2).set_max_spout_pending(1000).set("my.app.key", "x");
/// assert_eq!(conf.num_workers().unwrap(), 2);
/// assert_eq!(conf.get_str("my.app.key").unwrap(), Some("x"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Config(BTreeMap<String, Value>);

impl Config {
    /// An empty configuration (every key at its default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// All keys and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Copies every key of `other` into this configuration, replacing existing values.
    pub fn merge(&mut self, other: &Config) -> &mut Self {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
        self
    }

    fn invalid(key: &str, expected: &'static str, found: &Value) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            expected,
            found: match found {
                Value::Str(s) => format!("\"{s}\""),
                other => other.to_string(),
            },
        }
    }

    /// `key` as a non-negative integer. Numeric strings are accepted, as YAML and `-c`
    /// flags produce them.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(v @ Value::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Self::invalid(key, "a non-negative integer", v)),
            Some(v) => Err(Self::invalid(key, "a non-negative integer", v)),
        }
    }

    /// `key` as a boolean (`true`/`false`, also as strings).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v @ Value::Str(s)) => match s.trim() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(Self::invalid(key, "true or false", v)),
            },
            Some(v) => Err(Self::invalid(key, "true or false", v)),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(Self::invalid(key, "a string", v)),
        }
    }

    fn u64_or(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        Ok(self.get_u64(key)?.unwrap_or(default))
    }

    fn positive(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        match self.u64_or(key, default)? {
            0 => Err(Self::invalid(key, "a positive integer", &Value::Int(0))),
            n => Ok(n),
        }
    }

    /// Sets `topology.workers`.
    pub fn set_num_workers(&mut self, n: u32) -> &mut Self {
        self.set(keys::TOPOLOGY_WORKERS, n)
    }

    /// Sets `topology.acker.executors` (0 turns acking off).
    pub fn set_num_ackers(&mut self, n: u32) -> &mut Self {
        self.set(keys::TOPOLOGY_ACKER_EXECUTORS, n)
    }

    /// Sets `topology.max.spout.pending`.
    pub fn set_max_spout_pending(&mut self, n: u32) -> &mut Self {
        self.set(keys::TOPOLOGY_MAX_SPOUT_PENDING, n)
    }

    /// Sets `topology.message.timeout.secs`.
    pub fn set_message_timeout_secs(&mut self, secs: u32) -> &mut Self {
        self.set(keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS, secs)
    }

    /// Sets `topology.debug`.
    pub fn set_debug(&mut self, debug: bool) -> &mut Self {
        self.set(keys::TOPOLOGY_DEBUG, debug)
    }

    /// Sets `topology.tick.tuple.freq.secs`.
    pub fn set_tick_tuple_freq_secs(&mut self, secs: u32) -> &mut Self {
        self.set(keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS, secs)
    }

    /// `topology.workers` (default 1, at least 1).
    pub fn num_workers(&self) -> Result<u32, ConfigError> {
        Ok(self
            .positive(keys::TOPOLOGY_WORKERS, 1)?
            .min(u32::MAX as u64) as u32)
    }

    /// `topology.acker.executors`, defaulting to one acker per worker.
    pub fn num_ackers(&self) -> Result<u32, ConfigError> {
        match self.get_u64(keys::TOPOLOGY_ACKER_EXECUTORS)? {
            Some(n) => Ok(n.min(u32::MAX as u64) as u32),
            None => self.num_workers(),
        }
    }

    /// `topology.max.spout.pending`, `None` when unbounded.
    pub fn max_spout_pending(&self) -> Result<Option<u64>, ConfigError> {
        Ok(self
            .get_u64(keys::TOPOLOGY_MAX_SPOUT_PENDING)?
            .filter(|&n| n > 0))
    }

    /// `topology.message.timeout.secs` (default 30).
    pub fn message_timeout_secs(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS, 30)
    }

    /// `topology.enable.message.timeouts` (default true).
    pub fn message_timeouts_enabled(&self) -> Result<bool, ConfigError> {
        Ok(self
            .get_bool(keys::TOPOLOGY_ENABLE_MESSAGE_TIMEOUTS)?
            .unwrap_or(true))
    }

    /// `topology.debug` (default false).
    pub fn debug(&self) -> Result<bool, ConfigError> {
        Ok(self.get_bool(keys::TOPOLOGY_DEBUG)?.unwrap_or(false))
    }

    /// `squall.spout.flow.control` (default true): whether spouts without
    /// `topology.max.spout.pending` limit their trees in flight by themselves.
    pub fn spout_flow_control(&self) -> Result<bool, ConfigError> {
        Ok(self
            .get_bool(keys::SQUALL_SPOUT_FLOW_CONTROL)?
            .unwrap_or(true))
    }

    /// `topology.tick.tuple.freq.secs`, `None` when no ticks are wanted.
    pub fn tick_tuple_freq_secs(&self) -> Result<Option<u64>, ConfigError> {
        Ok(self
            .get_u64(keys::TOPOLOGY_TICK_TUPLE_FREQ_SECS)?
            .filter(|&n| n > 0))
    }

    /// Sets `squall.tick.tuple.freq.ms`: tick tuples every `ms` milliseconds.
    pub fn set_tick_tuple_freq_ms(&mut self, ms: u64) -> &mut Self {
        self.set(keys::SQUALL_TICK_TUPLE_FREQ_MS, ms as i64)
    }

    /// `squall.tick.tuple.freq.ms`, `None` when not set (or 0).
    pub fn tick_tuple_freq_ms(&self) -> Result<Option<u64>, ConfigError> {
        Ok(self
            .get_u64(keys::SQUALL_TICK_TUPLE_FREQ_MS)?
            .filter(|&n| n > 0))
    }

    /// How often a bolt gets tick tuples: `squall.tick.tuple.freq.ms` when set, else
    /// `topology.tick.tuple.freq.secs`; `None` for no ticks.
    pub fn tick_interval(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        if let Some(ms) = self.tick_tuple_freq_ms()? {
            return Ok(Some(std::time::Duration::from_millis(ms)));
        }
        Ok(self
            .tick_tuple_freq_secs()?
            .map(std::time::Duration::from_secs))
    }

    /// `topology.executor.receive.buffer.size` (default 32768 tuples).
    pub fn receive_buffer_size(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_EXECUTOR_RECEIVE_BUFFER_SIZE, 32768)
    }

    /// `topology.producer.batch.size` (default 256 tuples).
    pub fn producer_batch_size(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_PRODUCER_BATCH_SIZE, 256)
    }

    /// `topology.batch.flush.interval.millis` (default 1).
    pub fn batch_flush_interval_millis(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_BATCH_FLUSH_INTERVAL_MILLIS, 1)
    }

    /// `topology.sleep.spout.wait.strategy.time.ms` (default 1).
    pub fn spout_wait_millis(&self) -> Result<u64, ConfigError> {
        self.u64_or(keys::TOPOLOGY_SLEEP_SPOUT_WAIT_STRATEGY_TIME_MS, 1)
    }

    /// `topology.max.error.report.per.interval` (default 5, as Storm): errors an executor
    /// reports and logs per `topology.error.throttle.interval.secs`; the rest are counted
    /// in the next line logged.
    pub fn max_error_report_per_interval(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_MAX_ERROR_REPORT_PER_INTERVAL, 5)
    }

    /// `topology.error.throttle.interval.secs` (default 10, as Storm).
    pub fn error_throttle_interval_secs(&self) -> Result<u64, ConfigError> {
        self.positive(keys::TOPOLOGY_ERROR_THROTTLE_INTERVAL_SECS, 10)
    }

    /// `topology.trident.batch.emit.interval.millis` (default 500, as Storm).
    pub fn trident_batch_emit_interval_millis(&self) -> Result<u64, ConfigError> {
        self.u64_or(keys::TOPOLOGY_TRIDENT_BATCH_EMIT_INTERVAL_MILLIS, 500)
    }

    /// Reads every key the runtime uses, so a bad value is reported at submission time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.trident_batch_emit_interval_millis()?;
        self.max_error_report_per_interval()?;
        self.error_throttle_interval_secs()?;
        self.num_workers()?;
        self.num_ackers()?;
        self.max_spout_pending()?;
        self.spout_flow_control()?;
        self.message_timeout_secs()?;
        self.message_timeouts_enabled()?;
        self.debug()?;
        self.tick_tuple_freq_secs()?;
        self.tick_tuple_freq_ms()?;
        self.receive_buffer_size()?;
        self.producer_batch_size()?;
        self.batch_flush_interval_millis()?;
        self.spout_wait_millis()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_storm() {
        let c = Config::new();
        assert_eq!(c.num_workers().unwrap(), 1);
        assert_eq!(c.num_ackers().unwrap(), 1);
        assert_eq!(c.max_spout_pending().unwrap(), None);
        assert!(c.spout_flow_control().unwrap());
        assert_eq!(c.message_timeout_secs().unwrap(), 30);
        assert!(!c.debug().unwrap());
        assert!(c.message_timeouts_enabled().unwrap());
    }

    #[test]
    fn ackers_follow_workers_unless_set() {
        let mut c = Config::new();
        c.set_num_workers(3);
        assert_eq!(c.num_ackers().unwrap(), 3);
        c.set_num_ackers(0);
        assert_eq!(c.num_ackers().unwrap(), 0);
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config::new();
        c.set(keys::TOPOLOGY_WORKERS, "three");
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "config key 'topology.workers' must be a non-negative integer, found \"three\""
        );
        c.set(keys::TOPOLOGY_WORKERS, 0);
        assert!(c.num_workers().is_err());
        c.set(keys::TOPOLOGY_WORKERS, "4");
        assert_eq!(c.num_workers().unwrap(), 4);
        c.set(keys::TOPOLOGY_DEBUG, 1);
        assert!(c.debug().is_err());
    }

    #[test]
    fn millisecond_ticks_win_over_seconds() {
        let mut c = Config::new();
        assert_eq!(c.tick_interval().unwrap(), None);
        c.set_tick_tuple_freq_secs(2);
        assert_eq!(
            c.tick_interval().unwrap(),
            Some(std::time::Duration::from_secs(2))
        );
        c.set_tick_tuple_freq_ms(50);
        assert_eq!(
            c.tick_interval().unwrap(),
            Some(std::time::Duration::from_millis(50))
        );
        c.set(keys::SQUALL_TICK_TUPLE_FREQ_MS, "fast");
        assert_eq!(
            c.validate().unwrap_err().key(),
            keys::SQUALL_TICK_TUPLE_FREQ_MS
        );
    }
}
