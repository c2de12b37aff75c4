//! `/metrics` in the Prometheus text format (0.0.4), so an existing Prometheus and
//! Grafana read Squall without an exporter.
//!
//! Series are per topology (labels `topology` = name, `topology_id`), per component
//! (`component`) and per stream (`stream`; inputs of a bolt also `source_component`);
//! per-executor gauges add `executor` (`"[first-last]"`). Counts are all-time counters
//! (exact, and they never go back: Nimbus carries them over worker restarts); latencies,
//! capacity and backpressure are gauges over Storm's 10-minute window. Names follow
//! Prometheus's conventions: base units (`_seconds`, not Storm's milliseconds) and
//! `_total` on counters only. Custom gauges are one family, `squall_component_metric`
//! (not `..._gauge`: promtool's lint refuses a metric name that names its type), with
//! the gauge's name as a label (names are checked when set: letters, digits, `_`, `.`,
//! `-`), one sample per executor with the latest value of its last heartbeat (its
//! tasks summed); add them up with `sum by (component, name)`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `squall_emitted_total`, `squall_transferred_total` | counter | component, stream |
//! | `squall_acked_total`, `squall_failed_total` (explicit fails), `squall_timed_out_total` | counter | component, stream (+ source_component for bolts) |
//! | `squall_executed_total` | counter | component, source_component, stream |
//! | `squall_complete_latency_seconds` | gauge | component, stream |
//! | `squall_execute_latency_seconds`, `squall_process_latency_seconds` | gauge | component, source_component, stream |
//! | `squall_complete_latency_p50_seconds`, `_p99_`, `_max_` | gauge | component, executor |
//! | `squall_capacity`, `squall_backpressure_ratio`, `squall_queue_depth`, `squall_queue_capacity` | gauge | component, executor |
//! | `squall_component_metric` (custom gauges, `set_gauge`) | gauge | component, executor, name |
//! | `squall_topology_status` (1 for the current status) | gauge | status |
//! | `squall_topology_uptime_seconds`, `_workers`, `_executors`, `_tasks` | gauge | |
//! | `squall_cluster_supervisors`, `_slots`, `_slots_used`, `_topologies`, `_nimbuses` | gauge | (none) |
//! | `squall_nimbus_leader` (1 for the leader) | gauge | host, port |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use squall_cluster::metrics::{StreamStats, Window};
use squall_cluster::rpc::{ClusterSummary, RpcError, TopologyPage};
use squall_cluster::state::TopologyStatus;

use crate::api::{executor_backpressure, executor_capacity, executor_id, leader_of, ApiError};
use crate::Ui;

/// The content type of the text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The window of the gauges.
const GAUGE_WINDOW: Window = Window::Secs(600);

/// Every family: name, type, help. All are written (HELP and TYPE) even without samples.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("squall_emitted_total", "counter", "Tuples emitted (once per emit), all time, per output stream."),
    ("squall_transferred_total", "counter", "Tuples sent to tasks (an emit to three tasks counts three), all time, per output stream."),
    ("squall_acked_total", "counter", "Acked, all time: spouts count tuple trees per output stream, bolts count input tuples per source component and stream."),
    ("squall_failed_total", "counter", "Failed explicitly (a fail call, a panic, a failed child), all time; timeouts are counted apart in squall_timed_out_total."),
    ("squall_timed_out_total", "counter", "Spout tuple trees that timed out (topology.message.timeout.secs), all time."),
    ("squall_executed_total", "counter", "Tuples executed by bolts, all time, per source component and stream."),
    ("squall_complete_latency_seconds", "gauge", "Mean time from a spout's emit to its tuple tree being acked, over the last 10 minutes."),
    ("squall_execute_latency_seconds", "gauge", "Mean time a bolt's execute takes, over the last 10 minutes, per source component and stream."),
    ("squall_process_latency_seconds", "gauge", "Mean time from a bolt receiving a tuple to acking it, over the last 10 minutes, per source component and stream."),
    ("squall_complete_latency_p50_seconds", "gauge", "Median complete latency of a spout executor since its worker started."),
    ("squall_complete_latency_p99_seconds", "gauge", "99th percentile complete latency of a spout executor since its worker started."),
    ("squall_complete_latency_max_seconds", "gauge", "Maximum complete latency of a spout executor since its worker started."),
    ("squall_capacity", "gauge", "Share of the last 10 minutes an executor spent executing (Storm's capacity; near 1 means it cannot keep up)."),
    ("squall_backpressure_ratio", "gauge", "Share of the last 10 minutes producers spent blocked on the executor's full receive queue."),
    ("squall_queue_depth", "gauge", "Batches (of up to topology.producer.batch.size tuples) waiting in the executor's receive queue at its last heartbeat."),
    ("squall_queue_capacity", "gauge", "Capacity of the executor's receive queue, in batches (0: unbounded)."),
    ("squall_component_metric", "gauge", "A custom gauge a component sets (set_gauge), by name: the latest value of the executor's last heartbeat, summed over its tasks."),
    ("squall_topology_status", "gauge", "1 for the topology's current status (ACTIVE, INACTIVE, REBALANCING, KILLED), 0 for the others."),
    ("squall_topology_uptime_seconds", "gauge", "Seconds since the topology was submitted."),
    ("squall_topology_workers", "gauge", "Worker processes of the topology."),
    ("squall_topology_executors", "gauge", "Executors of the topology (ackers included)."),
    ("squall_topology_tasks", "gauge", "Tasks of the topology (ackers included)."),
    ("squall_cluster_supervisors", "gauge", "Live supervisors."),
    ("squall_cluster_slots", "gauge", "Worker slots of the live supervisors."),
    ("squall_cluster_slots_used", "gauge", "Worker slots in use."),
    ("squall_cluster_topologies", "gauge", "Topologies running."),
    ("squall_cluster_nimbuses", "gauge", "Live Nimbus daemons."),
    ("squall_nimbus_leader", "gauge", "1 for the leader Nimbus, 0 for a standby."),
];

/// The `/metrics` route.
pub fn routes() -> Router<Arc<Ui>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(ui): State<Arc<Ui>>) -> Response {
    let (cluster, list) = match ui
        .nimbus(|c| async move { Ok((c.cluster().await?, c.list().await?)) })
        .await
    {
        Ok(x) => x,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Every topology's page at once.
    let mut tasks = tokio::task::JoinSet::new();
    for t in list {
        let ui = ui.clone();
        tasks.spawn(async move {
            let name = t.name.as_str();
            let page = ui.nimbus(|c| async move { c.page(name).await }).await;
            (t.name, page)
        });
    }
    let mut pages = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, Ok(page))) => pages.push(page),
            // Killed meanwhile.
            Ok((_, Err(RpcError::Api { status: 404, .. }))) => {}
            Ok((name, Err(e))) => tracing::warn!("metrics: no page for topology '{name}': {e}"),
            Err(e) => tracing::warn!("metrics: {e}"),
        }
    }
    pages.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));
    (
        [(CONTENT_TYPE, CONTENT_TYPE_TEXT)],
        render(&cluster, &pages),
    )
        .into_response()
}

/// Samples of one family.
#[derive(Default)]
struct Family {
    lines: String,
}

/// The exposition being written: families by name.
struct Exposition {
    families: BTreeMap<&'static str, Family>,
}

impl Exposition {
    fn new() -> Exposition {
        Exposition {
            families: FAMILIES
                .iter()
                .map(|(name, _, _)| (*name, Family::default()))
                .collect(),
        }
    }

    fn sample(&mut self, name: &'static str, labels: &[(&str, &str)], value: Num) {
        let f = self
            .families
            .get_mut(name)
            .unwrap_or_else(|| panic!("family {name} is not declared in FAMILIES"));
        f.lines.push_str(name);
        if !labels.is_empty() {
            f.lines.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    f.lines.push(',');
                }
                let _ = write!(f.lines, "{k}=\"{}\"", escape_label(v));
            }
            f.lines.push('}');
        }
        f.lines.push(' ');
        match value {
            Num::Int(v) => {
                let _ = write!(f.lines, "{v}");
            }
            Num::Signed(v) => {
                let _ = write!(f.lines, "{v}");
            }
            Num::Float(v) => f.lines.push_str(&float(v)),
        }
        f.lines.push('\n');
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if let Some(f) = self.families.get(name) {
                out.push_str(&f.lines);
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(u64),
    Signed(i64),
    Float(f64),
}

/// A float as the text format writes it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v == 0.0 {
        // Also -0.0.
        "0".to_owned()
    } else {
        format!("{v}")
    }
}

/// A label value: `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text: `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The exposition of the cluster and of every topology page.
pub fn render(cluster: &ClusterSummary, pages: &[TopologyPage]) -> String {
    let mut x = Exposition::new();
    let slots: usize = cluster.supervisors.iter().map(|s| s.info.ports.len()).sum();
    let used: usize = cluster.supervisors.iter().map(|s| s.used_ports.len()).sum();
    x.sample(
        "squall_cluster_supervisors",
        &[],
        Num::Int(cluster.supervisors.len() as u64),
    );
    x.sample("squall_cluster_slots", &[], Num::Int(slots as u64));
    x.sample("squall_cluster_slots_used", &[], Num::Int(used as u64));
    x.sample(
        "squall_cluster_topologies",
        &[],
        Num::Int(cluster.topologies.max(pages.len()) as u64),
    );
    x.sample(
        "squall_cluster_nimbuses",
        &[],
        Num::Int(cluster.nimbuses.len() as u64),
    );
    let leader = leader_of(cluster);
    for n in &cluster.nimbuses {
        let port = n.port.to_string();
        let is_leader = leader.as_deref() == Some(format!("{}:{}", n.host, n.port).as_str());
        x.sample(
            "squall_nimbus_leader",
            &[("host", &n.host), ("port", &port)],
            Num::Int(u64::from(is_leader)),
        );
    }
    for page in pages {
        topology(&mut x, page);
    }
    x.render()
}

fn topology(x: &mut Exposition, page: &TopologyPage) {
    let s = &page.summary;
    let t: [(&str, &str); 2] = [("topology", &s.name), ("topology_id", &s.id)];
    for status in [
        TopologyStatus::Active,
        TopologyStatus::Inactive,
        TopologyStatus::Rebalancing,
        TopologyStatus::Killed,
    ] {
        let name = status.to_string();
        x.sample(
            "squall_topology_status",
            &[t[0], t[1], ("status", &name)],
            Num::Int(u64::from(status == s.status)),
        );
    }
    x.sample(
        "squall_topology_uptime_seconds",
        &t,
        Num::Int(s.uptime_secs),
    );
    x.sample(
        "squall_topology_workers",
        &t,
        Num::Int(u64::from(s.num_workers)),
    );
    x.sample(
        "squall_topology_executors",
        &t,
        Num::Int(u64::from(s.num_executors)),
    );
    x.sample(
        "squall_topology_tasks",
        &t,
        Num::Int(u64::from(s.num_tasks)),
    );

    // Per component and stream, summed over executors: all-time counts and 10-minute
    // latencies.
    type Key<'a> = (&'a str, Option<&'a str>, &'a str);
    let mut outputs: BTreeMap<Key<'_>, (StreamStats, StreamStats)> = BTreeMap::new();
    let mut inputs: BTreeMap<Key<'_>, (StreamStats, StreamStats)> = BTreeMap::new();
    for e in &page.executors {
        let window = |w: Window| {
            e.windows
                .iter()
                .find(|c| c.window == w)
                .map(|c| &c.counters)
        };
        let (Some(all), recent) = (window(Window::AllTime), window(GAUGE_WINDOW)) else {
            continue;
        };
        for r in &all.outputs {
            outputs
                .entry((&e.component, None, &r.stream))
                .or_default()
                .0
                .add(r);
        }
        for r in &all.inputs {
            inputs
                .entry((&e.component, r.component.as_deref(), &r.stream))
                .or_default()
                .0
                .add(r);
        }
        for r in recent.iter().flat_map(|c| &c.outputs) {
            outputs
                .entry((&e.component, None, &r.stream))
                .or_default()
                .1
                .add(r);
        }
        for r in recent.iter().flat_map(|c| &c.inputs) {
            inputs
                .entry((&e.component, r.component.as_deref(), &r.stream))
                .or_default()
                .1
                .add(r);
        }
    }
    let spout = |component: &str| {
        page.spec
            .components
            .iter()
            .any(|(id, c)| id.as_str() == component && c.kind == squall_api::ComponentKind::Spout)
    };
    for ((component, _, stream), (all, recent)) in &outputs {
        let l = [t[0], t[1], ("component", *component), ("stream", *stream)];
        x.sample("squall_emitted_total", &l, Num::Int(all.emitted));
        x.sample("squall_transferred_total", &l, Num::Int(all.transferred));
        if spout(component) {
            x.sample("squall_acked_total", &l, Num::Int(all.acked));
            x.sample("squall_failed_total", &l, Num::Int(all.failed));
            x.sample("squall_timed_out_total", &l, Num::Int(all.timed_out));
            x.sample(
                "squall_complete_latency_seconds",
                &l,
                Num::Float(recent.complete_latency_ms() / 1e3),
            );
        }
    }
    for ((component, source, stream), (all, recent)) in &inputs {
        let l = [
            t[0],
            t[1],
            ("component", *component),
            ("source_component", source.unwrap_or("")),
            ("stream", *stream),
        ];
        x.sample("squall_executed_total", &l, Num::Int(all.executed));
        x.sample("squall_acked_total", &l, Num::Int(all.acked));
        x.sample("squall_failed_total", &l, Num::Int(all.failed));
        x.sample(
            "squall_execute_latency_seconds",
            &l,
            Num::Float(recent.execute_latency_ms() / 1e3),
        );
        x.sample(
            "squall_process_latency_seconds",
            &l,
            Num::Float(recent.process_latency_ms() / 1e3),
        );
    }

    // Per executor.
    for e in &page.executors {
        let eid = executor_id(e);
        let l = [
            t[0],
            t[1],
            ("component", e.component.as_str()),
            ("executor", &eid),
        ];
        if spout(&e.component) {
            x.sample(
                "squall_complete_latency_p50_seconds",
                &l,
                Num::Float(e.complete_latency_p50_ms / 1e3),
            );
            x.sample(
                "squall_complete_latency_p99_seconds",
                &l,
                Num::Float(e.complete_latency_p99_ms / 1e3),
            );
            x.sample(
                "squall_complete_latency_max_seconds",
                &l,
                Num::Float(e.complete_latency_max_ms / 1e3),
            );
        }
        x.sample(
            "squall_capacity",
            &l,
            Num::Float(executor_capacity(e, GAUGE_WINDOW)),
        );
        x.sample(
            "squall_backpressure_ratio",
            &l,
            Num::Float(executor_backpressure(e, GAUGE_WINDOW)),
        );
        x.sample("squall_queue_depth", &l, Num::Int(e.queue_depth));
        x.sample("squall_queue_capacity", &l, Num::Int(e.queue_capacity));
        for (name, &value) in &e.gauges {
            let l = [l[0], l[1], l[2], l[3], ("name", name.as_str())];
            x.sample("squall_component_metric", &l, Num::Signed(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::{sample_cluster, sample_page};

    /// A sample: family, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A small parser of the text format: every sample belongs to a family declared
    /// with HELP and TYPE before it, names and labels are well formed, values parse.
    /// Returns (family, labels, value) per sample.
    fn parse(text: &str) -> Vec<Sample> {
        let mut helped = std::collections::HashSet::new();
        let mut typed = std::collections::HashMap::new();
        let mut samples = Vec::new();
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(valid_name(name) && !help.is_empty(), "{line}");
                assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            assert!(valid_name(name), "{line}");
            let kind = typed
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE for {line}"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                // label="value" pairs with escapes.
                let mut chars = r.char_indices().peekable();
                loop {
                    let start = chars.peek().unwrap().0;
                    let eq = r[start..].find('=').unwrap() + start;
                    let key = &r[start..eq];
                    assert!(valid_name(key) && !key.contains(':'), "{line}");
                    while chars.next().unwrap().0 < eq {}
                    assert_eq!(chars.next().unwrap().1, '"', "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap().1 {
                            '\\' => match chars.next().unwrap().1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            '"' => break,
                            '\n' => panic!("raw newline in {line}"),
                            c => value.push(c),
                        }
                    }
                    labels.push((key.to_owned(), value));
                    match chars.next().unwrap() {
                        (_, ',') => continue,
                        (i, '}') => {
                            rest = &r[i + 1..];
                            break;
                        }
                        (_, c) => panic!("unexpected {c} in {line}"),
                    }
                }
            }
            let value = rest.strip_prefix(' ').expect("a space before the value");
            let v: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            samples.push((name.to_owned(), labels, v));
        }
        assert_eq!(helped.len(), FAMILIES.len());
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
        samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .collect()
    }

    #[test]
    fn exposition_parses_back_with_help_and_type_for_every_family() {
        let text = render(&sample_cluster(), &[sample_page()]);
        let samples = parse(&text);
        // Every family has HELP and TYPE, once, in a block.
        for (name, kind, _) in FAMILIES {
            assert_eq!(text.matches(&format!("# TYPE {name} {kind}\n")).count(), 1);
        }
        // No two samples with the same name and labels.
        let mut seen = std::collections::HashSet::new();
        for (n, l, _) in &samples {
            let mut l = l.clone();
            l.sort();
            assert!(seen.insert((n.clone(), l.clone())), "duplicate {n} {l:?}");
        }
        let wc = [("topology", "wc"), ("topology_id", "wc-1-100")];
        let spout_default = [wc[0], wc[1], ("component", "spout"), ("stream", "default")];
        let emitted = find(&samples, "squall_emitted_total", &spout_default);
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].2, 3000.0, "all-time, over both spout executors");
        assert_eq!(
            find(&samples, "squall_timed_out_total", &spout_default)[0].2,
            7.0
        );
        assert_eq!(
            find(&samples, "squall_failed_total", &spout_default)[0].2,
            5.0,
            "explicit fails only"
        );
        let count_in = [
            wc[0],
            wc[1],
            ("component", "count"),
            ("source_component", "split"),
            ("stream", "default"),
        ];
        assert_eq!(
            find(&samples, "squall_executed_total", &count_in)[0].2,
            9000.0
        );
        let lat = find(&samples, "squall_execute_latency_seconds", &count_in)[0].2;
        assert!((lat - 0.0002).abs() < 1e-9, "{lat}");
        let status = find(&samples, "squall_topology_status", &[("status", "ACTIVE")]);
        assert_eq!(status[0].2, 1.0);
        assert_eq!(
            find(&samples, "squall_topology_status", &[("status", "KILLED")])[0].2,
            0.0
        );
        let depth = find(
            &samples,
            "squall_queue_depth",
            &[("component", "count"), ("executor", "[5-5]")],
        );
        assert_eq!(depth[0].2, 900.0);
        let bp = find(
            &samples,
            "squall_backpressure_ratio",
            &[("component", "count"), ("executor", "[5-5]")],
        );
        assert!((bp[0].2 - 0.1).abs() < 1e-9, "{}", bp[0].2);
        // Custom gauges: one sample per executor and name, negative values too.
        let gauges = find(&samples, "squall_component_metric", &wc);
        let mut got: Vec<(String, String, f64)> = gauges
            .iter()
            .map(|(_, l, v)| {
                let get = |k: &str| l.iter().find(|(lk, _)| lk == k).unwrap().1.clone();
                assert_eq!(get("component"), "count");
                (get("executor"), get("name"), *v)
            })
            .collect();
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(
            got,
            [
                ("[4-4]".into(), "words.distinct".into(), 40.0),
                ("[5-5]".into(), "below.zero".into(), -3.0),
                ("[5-5]".into(), "words.distinct".into(), 60.0),
            ]
        );
        assert_eq!(find(&samples, "squall_cluster_slots", &[])[0].2, 4.0);
        assert_eq!(find(&samples, "squall_cluster_slots_used", &[])[0].2, 2.0);
        assert_eq!(
            find(&samples, "squall_nimbus_leader", &[("port", "6627")])[0].2,
            1.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut page = sample_page();
        page.summary.name = "we\"ird\\name\nx".into();
        let text = render(&sample_cluster(), &[page]);
        assert!(text.contains(r#"topology="we\"ird\\name\nx""#), "{text}");
        let samples = parse(&text);
        assert!(samples.iter().any(|(_, l, _)| l
            .iter()
            .any(|(k, v)| k == "topology" && v == "we\"ird\\name\nx")));
    }

    #[test]
    fn an_empty_cluster_still_declares_every_family() {
        let cluster = ClusterSummary {
            supervisors: vec![],
            nimbuses: vec![],
            topologies: 0,
            leader: None,
        };
        let samples = parse(&render(&cluster, &[]));
        assert_eq!(find(&samples, "squall_cluster_supervisors", &[])[0].2, 0.0);
    }

    /// With `SQUALL_PROMTOOL` (scripts/ensure-promtool.sh prints it; scripts/test.sh
    /// sets it), Prometheus's own checker accepts the exposition, lint included.
    #[test]
    fn promtool_accepts_the_exposition() {
        let Some(promtool) = std::env::var_os("SQUALL_PROMTOOL") else {
            eprintln!(
                "SQUALL_PROMTOOL unset: promtool check skipped (cli/tests/ui_api.rs runs it)"
            );
            return;
        };
        let mut page = sample_page();
        page.summary.name = "odd \"name\"\n".into();
        let text = render(&sample_cluster(), &[sample_page(), page]);
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn floats_are_written_as_the_format_wants() {
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(-0.0), "0");
        assert_eq!(float(1e21), "1000000000000000000000");
    }
}
