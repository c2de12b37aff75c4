//! The operator's commands of Storm's `bin/storm`: `get-errors`, `monitor` and
//! `set_log_level`. Parsing and formatting live here; main.rs dispatches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use squall_cluster::rpc::{LogLevelSetting, LogLevels, TopologyPage};
use squall_cluster::state::{now_secs, ErrorInfo};

/// What `squall monitor -w` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Watch {
    /// Tuples emitted (once per emit).
    Emitted,
    /// Tuples sent to tasks (an emit to three tasks counts three).
    Transferred,
}

impl Watch {
    fn name(self) -> &'static str {
        match self {
            Watch::Emitted => "emitted",
            Watch::Transferred => "transferred",
        }
    }
}

/// Parses `-l LOGGER=LEVEL[:TIMEOUT_SECS]` (Storm's `-l ROOT=DEBUG:30`).
pub fn parse_log_setting(arg: &str) -> Result<(String, LogLevelSetting), String> {
    let usage = "expected LOGGER=LEVEL[:TIMEOUT_SECS], e.g. ROOT=DEBUG:30";
    let (logger, rest) = arg
        .split_once('=')
        .ok_or_else(|| format!("'{arg}': {usage}"))?;
    let logger = logger.trim();
    if logger.is_empty() {
        return Err(format!("'{arg}': no logger name; {usage}"));
    }
    let (level, timeout) = match rest.split_once(':') {
        Some((level, t)) => {
            let t: u64 = t.trim().parse().map_err(|_| {
                format!("'{arg}': the timeout '{t}' is not a whole number of seconds")
            })?;
            (level.trim(), Some(t))
        }
        None => (rest.trim(), None),
    };
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];
    let Some(level) = LEVELS.iter().find(|l| l.eq_ignore_ascii_case(level)) else {
        return Err(format!(
            "'{arg}': unknown level '{level}'; use one of {}",
            LEVELS.join(", ")
        ));
    };
    Ok((
        logger.to_owned(),
        LogLevelSetting {
            level: (*level).to_owned(),
            timeout_secs: timeout,
        },
    ))
}

/// `2024-05-01 12:34:56 UTC` for seconds since the epoch.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The last error of each component (errors are oldest first per component).
fn last_errors(errors: &[ErrorInfo]) -> BTreeMap<&str, &ErrorInfo> {
    let mut last = BTreeMap::new();
    for e in errors {
        last.insert(e.component.as_str(), e);
    }
    last
}

/// `squall get-errors`: one line per component with errors, or Storm's JSON
/// (`{"Topology Name": ..., "Comp-Errors": {component: error}}`).
pub fn format_errors(name: &str, errors: &[ErrorInfo], json: bool) -> String {
    let last = last_errors(errors);
    if json {
        let comp: serde_json::Map<String, serde_json::Value> = last
            .iter()
            .map(|(c, e)| ((*c).to_owned(), e.error.clone().into()))
            .collect();
        let out = serde_json::json!({ "Topology Name": name, "Comp-Errors": comp });
        return format!("{out}\n");
    }
    if last.is_empty() {
        return format!("no errors in topology '{name}'\n");
    }
    let mut out = String::new();
    for (component, e) in last {
        out.push_str(&format!(
            "{component}: {} ({}:{}, {})\n",
            e.error,
            e.host,
            e.port,
            utc(e.time_secs)
        ));
    }
    out
}

/// `squall set_log_level`: the levels in force.
pub fn format_levels(name: &str, levels: &LogLevels) -> String {
    if levels.levels.is_empty() {
        return format!("no log levels set for topology '{name}': workers use their defaults\n");
    }
    let now = now_secs();
    let mut out = format!("log levels of topology '{name}':\n");
    for (logger, e) in &levels.levels {
        let until = match e.expires_secs {
            Some(t) => format!("for {} s more, until {}", t.saturating_sub(now), utc(t)),
            None => "until reset".to_owned(),
        };
        out.push_str(&format!("  {logger:<30} {:<5}  ({until})\n", e.level));
    }
    out
}

/// One sample of `squall monitor`: the executors counted and their all-time count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Executors of the component(s).
    pub parallelism: usize,
    /// All-time emitted or transferred on the stream.
    pub count: u64,
}

/// The all-time count of `watch` on `stream` of `component` (or of every component
/// that is not a system one, `__acker` and the like) in `page`. An unknown component,
/// or a stream it does not declare, is an error naming the choices.
pub fn sample(
    page: &TopologyPage,
    component: Option<&str>,
    stream: &str,
    watch: Watch,
) -> anyhow::Result<Sample> {
    let declares = |c: &str| {
        page.spec
            .components
            .get(c)
            .is_some_and(|spec| spec.outputs.keys().any(|s| s.as_str() == stream))
    };
    let chosen: Vec<String> = match component {
        Some(c) => {
            if !page.spec.components.contains_key(c) {
                let known: Vec<&str> = page.spec.components.keys().map(|k| k.as_str()).collect();
                bail!(
                    "topology '{}' has no component '{c}'; its components: {}",
                    page.summary.name,
                    known.join(", ")
                );
            }
            if !declares(c) {
                let streams: Vec<&str> = page.spec.components[c]
                    .outputs
                    .keys()
                    .map(|s| s.as_str())
                    .collect();
                bail!(
                    "component '{c}' has no output stream '{stream}'; its streams: {}",
                    if streams.is_empty() {
                        "none".to_owned()
                    } else {
                        streams.join(", ")
                    }
                );
            }
            vec![c.to_owned()]
        }
        None => {
            let all: Vec<String> = page
                .spec
                .components
                .keys()
                .map(|k| k.as_str())
                .filter(|c| !c.starts_with("__") && declares(c))
                .map(str::to_owned)
                .collect();
            if all.is_empty() {
                bail!(
                    "no component of topology '{}' declares the stream '{stream}'",
                    page.summary.name
                );
            }
            all
        }
    };
    let mut s = Sample {
        parallelism: 0,
        count: 0,
    };
    for e in page
        .executors
        .iter()
        .filter(|e| chosen.contains(&e.component))
    {
        s.parallelism += 1;
        let all_time = e.windows.last().map(|w| &w.counters);
        for row in all_time
            .into_iter()
            .flat_map(|c| &c.outputs)
            .filter(|r| r.stream == stream)
        {
            s.count += match watch {
                Watch::Emitted => row.emitted,
                Watch::Transferred => row.transferred,
            };
        }
    }
    Ok(s)
}

/// What `squall monitor` shows.
pub struct MonitorArgs<'a> {
    /// Topology name or id.
    pub name: &'a str,
    /// Seconds between lines.
    pub interval: Duration,
    /// One component, or all.
    pub component: Option<&'a str>,
    /// The stream.
    pub stream: &'a str,
    /// What to count.
    pub watch: Watch,
    /// Stop after this many lines.
    pub count: Option<u64>,
}

/// Prints one line per interval with the throughput of the chosen component(s), from
/// the difference of the all-time counts between two polls of the topology's page.
pub fn monitor(
    args: &MonitorArgs<'_>,
    mut poll: impl FnMut() -> anyhow::Result<TopologyPage>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut prev: Option<(Instant, Sample)> = None;
    let mut printed = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let page = poll()?;
        let now = Instant::now();
        let s = sample(&page, args.component, args.stream, args.watch)?;
        match prev {
            None => {
                writeln!(
                    stdout,
                    "topology\tcomponent\tparallelism\tstream\ttime-diff ms\t{}\tthroughput (tuples/s)",
                    args.watch.name()
                )?;
            }
            Some((then, before)) => {
                let ms = now.duration_since(then).as_millis().max(1);
                let diff = s.count.saturating_sub(before.count);
                writeln!(
                    stdout,
                    "{}\t{}\t{}\t{}\t{ms}\t{diff}\t{:.1}",
                    page.summary.name,
                    args.component.unwrap_or("(all)"),
                    s.parallelism,
                    args.stream,
                    diff as f64 * 1000.0 / ms as f64
                )?;
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
        stdout.flush()?;
        prev = Some((now, s));
        std::thread::sleep(args.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_settings_parse_like_storms() {
        let (l, s) = parse_log_setting("ROOT=debug:30").unwrap();
        assert_eq!(
            (l.as_str(), s.level.as_str(), s.timeout_secs),
            ("ROOT", "DEBUG", Some(30))
        );
        let (l, s) = parse_log_setting("squall_worker::executor=WARN").unwrap();
        assert_eq!(
            (l.as_str(), s.level.as_str(), s.timeout_secs),
            ("squall_worker::executor", "WARN", None)
        );
        for bad in ["ROOT", "=DEBUG", "ROOT=LOUD", "ROOT=DEBUG:soon"] {
            let e = parse_log_setting(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn errors_print_the_last_per_component() {
        let e = |c: &str, msg: &str, t| ErrorInfo {
            component: c.into(),
            task: 1,
            host: "h".into(),
            port: 6700,
            time_secs: t,
            error: msg.into(),
        };
        let errors = [e("b", "old", 0), e("b", "new", 60), e("a", "boom", 0)];
        assert_eq!(
            format_errors("t", &errors, false),
            "a: boom (h:6700, 1970-01-01 00:00:00 UTC)\nb: new (h:6700, 1970-01-01 00:01:00 UTC)\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format_errors("t", &errors, true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Topology Name": "t", "Comp-Errors": {"a": "boom", "b": "new"}})
        );
        assert_eq!(
            format_errors("t", &[], false),
            "no errors in topology 't'\n"
        );
    }
}
