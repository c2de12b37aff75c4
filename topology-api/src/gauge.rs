//! Custom gauges: named `i64` values a task sets for the UI and Prometheus (Storm's
//! `TopologyContext.registerGauge` of metrics v2, as a value pushed by the component
//! instead of a callback polled by the runtime).
//!
//! A spout or bolt calls `set_gauge(name, value)` on its collector
//! ([`SpoutOutputCollector::set_gauge`](crate::SpoutOutputCollector::set_gauge),
//! [`OutputCollector::set_gauge`](crate::OutputCollector::set_gauge),
//! [`BasicOutputCollector::set_gauge`](crate::BasicOutputCollector::set_gauge)); the last
//! value set wins. The runtime keeps each task's gauges, adds up the tasks of an
//! executor in the executor's heartbeat, and Nimbus keeps the latest value per executor
//! (no windows). The UI's component page shows them per executor and summed over the
//! component; Prometheus's `/metrics` has them as `squall_component_gauge`.
//!
//! Names are what [`validate_gauge_name`] accepts; a refused name is reported as an
//! error of the task (shown in the UI, written to the log) and the call does nothing.

/// The longest gauge name, in bytes.
pub const GAUGE_NAME_MAX_LEN: usize = 128;

/// How many distinct gauge names one task may set; a task's further names are refused
/// (gauges are for a few numbers a person watches, not a per-key table).
pub const MAX_GAUGES_PER_TASK: usize = 100;

/// Why a gauge name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GaugeNameError {
    /// The name is empty.
    #[error("a gauge name must not be empty")]
    Empty,
    /// The name is longer than [`GAUGE_NAME_MAX_LEN`].
    #[error(
        "gauge name {start:?}... is {len} bytes long; at most {GAUGE_NAME_MAX_LEN} are allowed"
    )]
    TooLong {
        /// The name's first characters.
        start: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name has a character other than an ASCII letter, a digit, `_`, `.` or `-`.
    #[error(
        "gauge name {name:?} has {bad:?} at byte {at}: only ASCII letters, digits, '_', '.' and '-' are allowed"
    )]
    BadCharacter {
        /// The name (cut to [`GAUGE_NAME_MAX_LEN`] bytes).
        name: String,
        /// The first character refused.
        bad: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks a gauge name: 1 to [`GAUGE_NAME_MAX_LEN`] bytes of ASCII letters, digits,
/// `_`, `.` and `-` (so it reads the same in JSON, HTML and a Prometheus label).
///
/// ```
/// use squall_api::{validate_gauge_name, GaugeNameError};
/// assert!(validate_gauge_name("batches.in-flight_2").is_ok());
/// assert!(matches!(
///     validate_gauge_name("in flight"),
///     Err(GaugeNameError::BadCharacter { bad: ' ', at: 2, .. })
/// ));
/// ```
pub fn validate_gauge_name(name: &str) -> Result<(), GaugeNameError> {
    if name.is_empty() {
        return Err(GaugeNameError::Empty);
    }
    if let Some((at, bad)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(GaugeNameError::BadCharacter {
            name: cut(name, GAUGE_NAME_MAX_LEN),
            bad,
            at,
        });
    }
    if name.len() > GAUGE_NAME_MAX_LEN {
        return Err(GaugeNameError::TooLong {
            start: cut(name, 32),
            len: name.len(),
        });
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_letters_digits_dots_dashes_and_underscores_pass() {
        for ok in [
            "a",
            "Z9",
            "batches.in-flight",
            "last_committed_txid",
            "0",
            "-._",
        ] {
            assert_eq!(validate_gauge_name(ok), Ok(()), "{ok}");
        }
        assert!(validate_gauge_name(&"x".repeat(GAUGE_NAME_MAX_LEN)).is_ok());
    }

    #[test]
    fn other_names_are_refused_with_what_is_wrong() {
        assert_eq!(validate_gauge_name(""), Err(GaugeNameError::Empty));
        let long = "y".repeat(GAUGE_NAME_MAX_LEN + 1);
        let e = validate_gauge_name(&long).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "gauge name \"{}\"... is 129 bytes long; at most 128 are allowed",
                "y".repeat(32)
            )
        );
        for (name, bad, at) in [
            ("in flight", ' ', 2),
            ("txid{x}", '{', 4),
            ("a\"b", '"', 1),
            ("new\nline", '\n', 3),
            ("été", 'é', 0),
            ("a/b", '/', 1),
        ] {
            match validate_gauge_name(name) {
                Err(GaugeNameError::BadCharacter { bad: b, at: a, .. }) => {
                    assert_eq!((b, a), (bad, at), "{name:?}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        let e = validate_gauge_name("in flight").unwrap_err().to_string();
        assert_eq!(
            e,
            "gauge name \"in flight\" has ' ' at byte 2: only ASCII letters, digits, '_', '.' and '-' are allowed"
        );
        // A long bad name is cut on a character boundary.
        let long_bad = format!("{}é", "x".repeat(GAUGE_NAME_MAX_LEN - 1));
        match validate_gauge_name(&long_bad).unwrap_err() {
            GaugeNameError::BadCharacter { name, .. } => {
                assert_eq!(name, "x".repeat(GAUGE_NAME_MAX_LEN - 1))
            }
            other => panic!("{other:?}"),
        }
    }
}
