//! The log subscriber Squall installs for topologies, and log levels changed at run time
//! (`squall set_log_level`).
//!
//! A worker started by a supervisor ([`init_worker_logging`]) writes every line with its
//! timestamp, level and target to stderr, which the supervisor sends to the worker's
//! `worker.log`; no colour codes. Local mode ([`init_default_logging`]) writes to
//! stderr at `warn`, in colour only when stderr is a terminal. `RUST_LOG` replaces the
//! default level in both.
//!
//! Both put the filter behind a [`reload`] layer, so [`apply_log_levels`] can change
//! it while the topology runs: Nimbus hands a worker the levels set with
//! `squall set_log_level` in every heartbeat answer, and the worker rebuilds its
//! filter whenever they differ from what it applied. A level map turns into filter
//! directives on top of the defaults ([`directives`]): `ROOT` replaces the default
//! level, every other key is a `tracing` target (such as `squall_worker` or
//! `my_topology::bolts`) set to its level. An empty map goes back to the defaults.
//!
//! When the topology's author installed a subscriber of their own before Squall could,
//! theirs stays and levels cannot be changed; the worker says so once in its log.
//!
//! Errors that tasks report are written as one line each containing the error's text
//! as reported, so the UI can find an error's line in the worker log by searching for
//! that text. Line breaks inside an error are written as
//! `\n`, so for a multi-line error search for its first line. At most 5 errors per
//! executor per 10 s are written (the rest are still reported to Nimbus and counted in
//! the next line written).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use squall_api::{ComponentId, TaskId};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The levels `squall set_log_level` accepts (case does not matter).
pub const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];

/// The logger name that sets the default level (Log4j's root logger).
pub const ROOT: &str = "ROOT";

/// The default level of a worker started by a supervisor.
pub const WORKER_DEFAULT: &str = "info";

/// The default level in local mode.
pub const LOCAL_DEFAULT: &str = "warn";

/// The installed filter and what is applied to it.
struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG`, or the default level.
    defaults: String,
    /// The levels currently applied.
    applied: Mutex<BTreeMap<String, String>>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();
/// Whether an installation was attempted and failed (another subscriber was first).
static FOREIGN: AtomicBool = AtomicBool::new(false);
/// Whether "levels cannot be changed" was logged already.
static TOLD_FOREIGN: AtomicBool = AtomicBool::new(false);

/// Installs Squall's subscriber for a worker process: stderr, timestamps, level and
/// target on every line, no colour; `info` unless `RUST_LOG` says otherwise. Does
/// nothing when a subscriber is installed already.
pub fn init_worker_logging() {
    install(WORKER_DEFAULT, false);
}

/// Installs Squall's subscriber for local mode: stderr at `warn` (or as `RUST_LOG`
/// says), in colour when stderr is a terminal. Does nothing when a subscriber is
/// installed already.
pub fn init_default_logging() {
    install(LOCAL_DEFAULT, std::io::stderr().is_terminal());
}

fn install(default_level: &str, ansi: bool) {
    if CONTROL.get().is_some() {
        return;
    }
    let defaults = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty() && EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| default_level.to_owned());
    let filter = EnvFilter::new(&defaults);
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(true);
    match tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
    {
        Ok(()) => {
            let _ = CONTROL.set(Control {
                handle,
                defaults,
                applied: Mutex::default(),
            });
        }
        Err(_) => FOREIGN.store(true, Ordering::Relaxed),
    }
}

/// Filter directives for `levels` on top of `defaults` (an `EnvFilter` string such as
/// `info` or `warn,my_topology=debug`), and a warning for every entry left out.
///
/// `ROOT` replaces the default level (the directives of `defaults` without a target);
/// any other key is a target, and replaces what `defaults` says about that target.
/// Entries with a level not in [`LEVELS`] or a name that is not a plain target (letters,
/// digits, `_`, `-`, `.`, `:`) are left out with a warning.
pub fn directives(defaults: &str, levels: &BTreeMap<String, String>) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let mut root = None;
    let mut targets: Vec<(&str, String)> = Vec::new();
    for (logger, level) in levels {
        let level_ok = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim()));
        if !level_ok {
            warnings.push(format!(
                "ignoring log level '{level}' for logger '{logger}': levels are {}",
                LEVELS.join(", ")
            ));
            continue;
        }
        let level = level.trim().to_ascii_lowercase();
        if logger.eq_ignore_ascii_case(ROOT) {
            root = Some(level);
        } else if is_target(logger) {
            targets.push((logger, level));
        } else {
            warnings.push(format!(
                "ignoring log level for logger '{logger}': a logger is a target such as my_topology::bolts (letters, digits, '_', '-', '.', ':')"
            ));
        }
    }
    let mut out: Vec<String> = Vec::new();
    if let Some(r) = &root {
        out.push(r.clone());
    }
    for d in defaults.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = d.split_once('=').map(|(t, _)| t);
        let replaced = match target {
            None => root.is_some() && !d.contains('['),
            Some(t) => targets.iter().any(|(name, _)| *name == t),
        };
        if !replaced {
            out.push(d.to_owned());
        }
    }
    out.extend(targets.iter().map(|(t, l)| format!("{t}={l}")));
    (out.join(","), warnings)
}

fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Applies `levels` (logger → level, as Nimbus hands them out) when they differ from the
/// levels applied last; an empty map restores the defaults. Logs one `info` line when
/// the levels change, a warning per entry left out ([`directives`]), and once that
/// levels cannot be changed when the topology installed its own subscriber. Returns
/// whether the filter changed.
pub fn apply_log_levels(levels: &BTreeMap<String, String>) -> bool {
    let Some(control) = CONTROL.get() else {
        if FOREIGN.load(Ordering::Relaxed)
            && !levels.is_empty()
            && !TOLD_FOREIGN.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "cannot change log levels: the topology installed its own log subscriber"
            );
        }
        return false;
    };
    let mut applied = control.applied.lock().unwrap_or_else(|p| p.into_inner());
    if *applied == *levels {
        return false;
    }
    let (spec, warnings) = directives(&control.defaults, levels);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let filter = match EnvFilter::try_new(&spec) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cannot apply log levels {levels:?} (filter '{spec}'): {e}");
            *applied = levels.clone();
            return false;
        }
    };
    let say = || {
        if levels.is_empty() {
            tracing::info!("log levels back to the defaults ({})", control.defaults);
        } else {
            tracing::info!("log levels changed to {levels:?} (filter: {spec})");
        }
    };
    // The line is written under the old filter, or else under the new one.
    let said = tracing::enabled!(tracing::Level::INFO);
    if said {
        say();
    }
    if let Err(e) = control.handle.reload(filter) {
        tracing::warn!("cannot apply log levels {levels:?}: {e}");
        return false;
    }
    *applied = levels.clone();
    drop(applied);
    if !said {
        say();
    }
    true
}

/// Writes an error a task reported as one `ERROR` line containing `error` verbatim
/// (line breaks written as `\n`), naming the component and task; `suppressed` errors
/// of the same executor that were throttled since the last line are counted after the
/// text.
pub(crate) fn log_reported_error(
    component: &ComponentId,
    task: TaskId,
    error: &str,
    suppressed: u64,
) {
    let text: std::borrow::Cow<'_, str> = if error.contains(['\n', '\r']) {
        error.replace('\r', "\\r").replace('\n', "\\n").into()
    } else {
        error.into()
    };
    if suppressed > 0 {
        tracing::error!(%component, %task,
            "{text} ({suppressed} more errors of this executor were neither logged nor reported)");
    } else {
        tracing::error!(%component, %task, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn levels_become_directives_over_the_defaults() {
        let none = map(&[]);
        assert_eq!(directives("info", &none), ("info".to_owned(), vec![]));
        let (d, w) = directives("info", &map(&[("my_topo::bolts", "DEBUG")]));
        assert_eq!(d, "info,my_topo::bolts=debug");
        assert!(w.is_empty());
        // ROOT replaces the default level, keeps the defaults' targets.
        let (d, _) = directives(
            "warn,squall_worker=info",
            &map(&[("ROOT", "error"), ("x", "Trace")]),
        );
        assert_eq!(d, "error,squall_worker=info,x=trace");
        // A target named in the defaults takes the new level only.
        let (d, _) = directives("warn,squall_worker=info", &map(&[("squall_worker", "OFF")]));
        assert_eq!(d, "warn,squall_worker=off");
        // Every level parses as a filter.
        for l in LEVELS {
            let (d, w) = directives("info", &map(&[("ROOT", l), ("a::b", l)]));
            assert!(w.is_empty());
            EnvFilter::try_new(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
        }
    }

    #[test]
    fn bad_levels_and_names_are_left_out_with_a_warning() {
        let (d, w) = directives(
            "info",
            &map(&[
                ("a", "LOUD"),
                ("b", "debug"),
                ("c=trace,d", "info"),
                ("", "info"),
                ("ROOT", "verbose"),
            ]),
        );
        assert_eq!(d, "info,b=debug");
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w.iter().any(|x| x.contains("'LOUD'")));
        assert!(w.iter().any(|x| x.contains("'verbose'")));
        assert!(w.iter().any(|x| x.contains("c=trace,d")));
        EnvFilter::try_new(&d).unwrap();
    }
}
