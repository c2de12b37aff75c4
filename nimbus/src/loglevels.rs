//! Log levels of running topologies (`squall set_log_level`), pure: checking a request,
//! applying it to the levels in force, and dropping expired entries.
//!
//! The leader stores a topology's levels in ZooKeeper (`<root>/logconfigs/<id>`), keeps
//! them in its heartbeat view and hands the unexpired ones to every worker in its
//! heartbeat answer.

use std::collections::BTreeMap;

use squall_cluster::rpc::{LogLevelEntry, LogLevelRequest, LogLevels};

/// The level names a request may use (any case).
pub(crate) const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];

/// `level` in upper case, when it is one of [`LEVELS`].
pub(crate) fn normalize_level(level: &str) -> Option<&'static str> {
    let level = level.trim();
    LEVELS
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(level))
}

/// A logger is `ROOT` or a `tracing` target (`squall_worker`, `my_topology::bolts`):
/// non-empty, without spaces or the separators of a filter directive.
fn check_logger(logger: &str) -> Result<(), String> {
    let bad = logger.is_empty()
        || logger.len() > 200
        || logger
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "=,[]{}\"".contains(c));
    if bad {
        Err(format!(
            "invalid logger name '{logger}': use ROOT or a tracing target such as squall_worker (no spaces, '=', ',', brackets or quotes)"
        ))
    } else {
        Ok(())
    }
}

/// Whether `e` has expired at `now_secs`.
pub(crate) fn expired(e: &LogLevelEntry, now_secs: u64) -> bool {
    e.expires_secs.is_some_and(|t| t <= now_secs)
}

/// `levels` without the entries expired at `now_secs`.
pub(crate) fn unexpired(levels: &LogLevels, now_secs: u64) -> LogLevels {
    LogLevels {
        levels: levels
            .levels
            .iter()
            .filter(|(_, e)| !expired(e, now_secs))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect(),
    }
}

/// Logger to level, as a worker's heartbeat answer carries them (expired ones left out).
pub(crate) fn in_force(levels: &LogLevels, now_secs: u64) -> BTreeMap<String, String> {
    levels
        .levels
        .iter()
        .filter(|(_, e)| !expired(e, now_secs))
        .map(|(k, e)| (k.clone(), e.level.clone()))
        .collect()
}

/// The levels after `req` at `now_secs`: expired entries dropped, `reset` loggers
/// removed, then `set` ones added (a timeout of 0 means none). An invalid level or
/// logger name refuses the whole request, naming it.
pub(crate) fn apply(
    current: &LogLevels,
    req: &LogLevelRequest,
    now_secs: u64,
) -> Result<LogLevels, String> {
    if req.set.is_empty() && req.reset.is_empty() {
        return Err("nothing to change: give loggers to set or to reset".to_owned());
    }
    let mut set = Vec::with_capacity(req.set.len());
    for (logger, setting) in &req.set {
        check_logger(logger)?;
        let level = normalize_level(&setting.level).ok_or_else(|| {
            format!(
                "invalid log level '{}' for logger '{logger}': use one of {}",
                setting.level,
                LEVELS.join(", ")
            )
        })?;
        let expires_secs = setting
            .timeout_secs
            .filter(|&t| t > 0)
            .map(|t| now_secs.saturating_add(t));
        set.push((
            logger.clone(),
            LogLevelEntry {
                level: level.to_owned(),
                expires_secs,
            },
        ));
    }
    for logger in &req.reset {
        check_logger(logger)?;
    }
    let mut next = unexpired(current, now_secs);
    for logger in &req.reset {
        next.levels.remove(logger);
    }
    next.levels.extend(set);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_cluster::rpc::LogLevelSetting;

    fn setting(level: &str, timeout: Option<u64>) -> LogLevelSetting {
        LogLevelSetting {
            level: level.into(),
            timeout_secs: timeout,
        }
    }

    #[test]
    fn levels_are_checked_any_case_and_stored_upper_case() {
        let req = LogLevelRequest {
            set: BTreeMap::from([
                ("ROOT".into(), setting("debug", Some(30))),
                ("squall_worker".into(), setting("Warn", None)),
                ("quiet".into(), setting("off", Some(0))),
            ]),
            reset: vec![],
        };
        let got = apply(&LogLevels::default(), &req, 1000).unwrap();
        assert_eq!(got.levels["ROOT"].level, "DEBUG");
        assert_eq!(got.levels["ROOT"].expires_secs, Some(1030));
        assert_eq!(got.levels["squall_worker"].level, "WARN");
        assert_eq!(got.levels["squall_worker"].expires_secs, None);
        assert_eq!(got.levels["quiet"].expires_secs, None, "0: no timeout");

        let bad = LogLevelRequest {
            set: BTreeMap::from([("ROOT".into(), setting("LOUD", None))]),
            reset: vec![],
        };
        let e = apply(&got, &bad, 1000).unwrap_err();
        assert!(e.contains("'LOUD'") && e.contains("'ROOT'"), "{e}");
        let bad_logger = LogLevelRequest {
            set: BTreeMap::from([("a b".into(), setting("INFO", None))]),
            reset: vec![],
        };
        assert!(apply(&got, &bad_logger, 1000)
            .unwrap_err()
            .contains("'a b'"));
        assert!(apply(&got, &LogLevelRequest::default(), 1000).is_err());
    }

    #[test]
    fn resets_remove_and_expired_entries_vanish() {
        let start = apply(
            &LogLevels::default(),
            &LogLevelRequest {
                set: BTreeMap::from([
                    ("ROOT".into(), setting("DEBUG", Some(10))),
                    ("a".into(), setting("TRACE", None)),
                    ("b".into(), setting("ERROR", None)),
                ]),
                reset: vec![],
            },
            100,
        )
        .unwrap();
        assert_eq!(in_force(&start, 109).len(), 3);
        assert_eq!(
            in_force(&start, 110),
            BTreeMap::from([("a".into(), "TRACE".into()), ("b".into(), "ERROR".into())])
        );
        let after = apply(
            &start,
            &LogLevelRequest {
                set: BTreeMap::new(),
                reset: vec!["a".into(), "never-set".into()],
            },
            120,
        )
        .unwrap();
        assert_eq!(after.levels.keys().collect::<Vec<_>>(), ["b"]);
    }
}
