//! A windowed bolt's settings as read from (and checked in) its configuration.

use std::time::Duration;

use crate::config::{keys, Config, ConfigError};
use crate::topology::TopologyError;

/// A window length or sliding interval: a number of tuples or a span of time (Storm's
/// `BaseWindowedBolt.Count` and `BaseWindowedBolt.Duration`). Build one from [`Count`]
/// or a [`std::time::Duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// So many tuples.
    Count(u64),
    /// So many milliseconds.
    Millis(u64),
}

/// A number of tuples, as a window length or sliding interval (Storm's `Count.of(n)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl From<Count> for Span {
    fn from(c: Count) -> Self {
        Span::Count(c.0)
    }
}

impl From<Duration> for Span {
    fn from(d: Duration) -> Self {
        Span::Millis(d.as_millis().min(i64::MAX as u128) as u64)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Span::Count(n) => write!(f, "{n} tuples"),
            Span::Millis(ms) => write!(f, "{ms} ms"),
        }
    }
}

/// Where event times come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimestampSource {
    /// Processing time: the moment the tuple reached the bolt.
    Arrival,
    /// The named field (an integer, milliseconds).
    Field(String),
    /// The bolt's extractor (code).
    Extractor,
}

/// Everything the window manager needs, read from a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub length: Span,
    pub slide: Span,
    pub timestamps: TimestampSource,
    pub lag_ms: u64,
    pub watermark_interval_ms: u64,
    pub late_stream: Option<String>,
}

/// Storm's default watermark interval.
pub(crate) const DEFAULT_WATERMARK_INTERVAL_MS: u64 = 1000;

/// The keys that make a component windowed (the wrapper always sets one).
const LENGTH_KEYS: [&str; 2] = [
    keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT,
    keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS,
];

/// Set in every windowed bolt's component configuration, so one without a window
/// length is refused when the topology is built.
pub(crate) const WINDOWED_MARKER: &str = "squall.bolts.windowed";

/// Whether a component's own configuration makes it a windowed bolt.
pub(crate) fn is_windowed(own: &Config) -> bool {
    own.get(WINDOWED_MARKER).is_some() || LENGTH_KEYS.iter().any(|k| own.get(k).is_some())
}

fn invalid(component: &str, key: &str, error: String) -> TopologyError {
    TopologyError::InvalidComponentConfig {
        component: component.to_owned(),
        key: key.to_owned(),
        error,
    }
}

fn conf_err(component: &str, e: ConfigError) -> TopologyError {
    invalid(component, e.key(), e.to_string())
}

/// Reads one of two exclusive keys (count, duration) as a span.
fn span(
    component: &str,
    conf: &Config,
    count_key: &str,
    ms_key: &str,
    what: &str,
) -> Result<Option<Span>, TopologyError> {
    let count = conf
        .get_u64(count_key)
        .map_err(|e| conf_err(component, e))?;
    let ms = conf.get_u64(ms_key).map_err(|e| conf_err(component, e))?;
    let span = match (count, ms) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                component,
                count_key,
                format!("the {what} is set both as a count ('{count_key}') and as a duration ('{ms_key}'); set only one"),
            ))
        }
        (Some(n), None) => Some((Span::Count(n), count_key)),
        (None, Some(ms)) => Some((Span::Millis(ms), ms_key)),
        (None, None) => None,
    };
    match span {
        Some((Span::Count(0) | Span::Millis(0), key)) => Err(invalid(
            component,
            key,
            format!("the {what} ('{key}') is 0; it must be at least 1"),
        )),
        Some((s, _)) => Ok(Some(s)),
        None => Ok(None),
    }
}

impl Settings {
    /// Reads the settings of windowed bolt `component` from `conf` (its configuration
    /// merged over the topology's), checking each value on its own.
    pub(crate) fn from_conf(component: &str, conf: &Config) -> Result<Settings, TopologyError> {
        let length = span(
            component,
            conf,
            keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT,
            keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS,
            "window length",
        )?
        .ok_or_else(|| {
            invalid(
                component,
                keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT,
                format!(
                    "the window length is not set: set '{}' or '{}' (Windowed::with_window)",
                    keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_COUNT,
                    keys::TOPOLOGY_BOLTS_WINDOW_LENGTH_DURATION_MS
                ),
            )
        })?;
        let slide = span(
            component,
            conf,
            keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_COUNT,
            keys::TOPOLOGY_BOLTS_SLIDING_INTERVAL_DURATION_MS,
            "sliding interval",
        )?
        .unwrap_or(Span::Count(1));
        let field = conf
            .get_str(keys::TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME)
            .map_err(|e| conf_err(component, e))?;
        let extractor = conf
            .get(keys::SQUALL_BOLTS_WINDOW_TIMESTAMP_EXTRACTOR)
            .is_some();
        let timestamps = match (field, extractor) {
            (Some(""), _) => {
                return Err(invalid(
                    component,
                    keys::TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME,
                    "the timestamp field name is empty".to_owned(),
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    component,
                    keys::TOPOLOGY_BOLTS_WINDOW_TIMESTAMP_FIELD_NAME,
                    "both a timestamp field and a timestamp extractor are set; use one".to_owned(),
                ))
            }
            (Some(f), false) => TimestampSource::Field(f.to_owned()),
            (None, true) => TimestampSource::Extractor,
            (None, false) => TimestampSource::Arrival,
        };
        let lag_ms = conf
            .get_u64(keys::TOPOLOGY_BOLTS_TUPLE_TIMESTAMP_MAX_LAG_MS)
            .map_err(|e| conf_err(component, e))?
            .unwrap_or(0);
        let watermark_interval_ms = conf
            .get_u64(keys::TOPOLOGY_BOLTS_WATERMARK_EVENT_INTERVAL_MS)
            .map_err(|e| conf_err(component, e))?
            .unwrap_or(DEFAULT_WATERMARK_INTERVAL_MS);
        if watermark_interval_ms == 0 {
            return Err(invalid(
                component,
                keys::TOPOLOGY_BOLTS_WATERMARK_EVENT_INTERVAL_MS,
                "the watermark interval is 0; it must be at least 1 ms".to_owned(),
            ));
        }
        let late_stream = conf
            .get_str(keys::TOPOLOGY_BOLTS_LATE_TUPLE_STREAM)
            .map_err(|e| conf_err(component, e))?
            .map(str::to_owned);
        if late_stream.is_some() && timestamps == TimestampSource::Arrival {
            return Err(invalid(
                component,
                keys::TOPOLOGY_BOLTS_LATE_TUPLE_STREAM,
                "a late tuple stream needs event time: set a timestamp field or extractor \
                 (with_timestamp_field / with_timestamp_extractor)"
                    .to_owned(),
            ));
        }
        Ok(Settings {
            length,
            slide,
            timestamps,
            lag_ms,
            watermark_interval_ms,
            late_stream,
        })
    }

    /// Whether the bolt windows by event time.
    pub(crate) fn event_time(&self) -> bool {
        self.timestamps != TimestampSource::Arrival
    }

    /// The tick interval the bolt needs (ms), if any: time triggers and watermarks.
    pub(crate) fn tick_ms(&self) -> Option<u64> {
        if self.event_time() {
            Some(self.watermark_interval_ms)
        } else {
            match self.slide {
                // A result at most ~2% of a slide (and 50 ms) after its window ends.
                Span::Millis(ms) => Some((ms / 50).clamp(1, 50)),
                Span::Count(_) => None,
            }
        }
    }

    /// Storm's checks against the topology: a window held longer than the message
    /// timeout would time its tuples out, a count window larger than the spout's
    /// pending cap would never fill.
    fn check_against_topology(&self, component: &str, conf: &Config) -> Result<(), TopologyError> {
        let timeouts = conf
            .message_timeouts_enabled()
            .map_err(|e| conf_err(component, e))?;
        let (len_ms, slide_ms) = (millis(self.length), millis(self.slide));
        let held_ms = match (len_ms, slide_ms) {
            (Some(l), Some(s)) => Some(l.saturating_add(s)),
            (l, s) => l.or(s),
        };
        if let (true, Some(held)) = (timeouts, held_ms) {
            let timeout = conf
                .message_timeout_secs()
                .map_err(|e| conf_err(component, e))?;
            if held >= timeout.saturating_mul(1000) {
                return Err(invalid(
                    component,
                    keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS,
                    format!(
                        "window length + sliding interval ({} + {}) is {held} ms, not below \
                         '{}' ({timeout} s): its tuples would time out before they leave the \
                         window; raise the timeout above {} s or shorten the window",
                        self.length,
                        self.slide,
                        keys::TOPOLOGY_MESSAGE_TIMEOUT_SECS,
                        held / 1000
                    ),
                ));
            }
        }
        let count = match (self.length, self.slide) {
            (Span::Count(l), Span::Count(s)) => Some(l.saturating_add(s)),
            (Span::Count(l), _) => Some(l),
            (_, Span::Count(s)) => Some(s),
            _ => None,
        };
        let pending = conf
            .max_spout_pending()
            .map_err(|e| conf_err(component, e))?;
        if let (Some(count), Some(pending)) = (count, pending) {
            if count > pending {
                return Err(invalid(
                    component,
                    keys::TOPOLOGY_MAX_SPOUT_PENDING,
                    format!(
                        "window count (length + sliding interval: {} + {}) is {count} tuples, \
                         more than '{}' ({pending}): the window could never fill; raise \
                         max spout pending or shrink the window",
                        self.length,
                        self.slide,
                        keys::TOPOLOGY_MAX_SPOUT_PENDING
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn millis(s: Span) -> Option<u64> {
    match s {
        Span::Millis(ms) => Some(ms),
        Span::Count(_) => None,
    }
}

/// The topology's check of one component (called by `TopologySpec::validate` with
/// `merged: None`, and by `validate_with_conf` with the component's configuration merged
/// over the topology's). A component is windowed when its own configuration sets a
/// window length; others are not looked at.
pub(crate) fn check_component(
    component: &str,
    own: &Config,
    merged: Option<&Config>,
) -> Result<(), TopologyError> {
    if !is_windowed(own) {
        return Ok(());
    }
    match merged {
        None => Settings::from_conf(component, own).map(|_| ()),
        Some(conf) => Settings::from_conf(component, conf)?.check_against_topology(component, conf),
    }
}
