//! Tests of the REST API's JSON (from hand-made Nimbus answers) and of its HTTP layer
//! (routing, errors, auth) on a Nimbus that is not there.

use super::*;
use squall_api::{ComponentSpec, Grouping, StreamDecl, Subscription, TopologySpec};
use squall_cluster::metrics::ExecutorCounters;
use squall_cluster::rpc::{
    LogLevelEntry, LogLevels, SupervisorSummary, WindowCounters, WorkerSummary,
};
use squall_cluster::state::{NimbusSummary, SupervisorInfo, TopologyStatus};

fn stream(component: Option<&str>, stream: &str) -> StreamStats {
    StreamStats {
        component: component.map(str::to_owned),
        stream: stream.to_owned(),
        ..Default::default()
    }
}

/// An executor whose all-time counters are `all`; the 10-minute window holds a third
/// of every count (and `blocked_600` ns of blocking), 3 h and 1 day everything.
fn executor(
    component: &str,
    task: u32,
    host: &str,
    port: u16,
    all: ExecutorCounters,
    blocked_600: u64,
) -> ExecutorPage {
    let third = |c: &ExecutorCounters| {
        let mut c = c.clone();
        for r in c.outputs.iter_mut().chain(c.inputs.iter_mut()) {
            for v in [
                &mut r.emitted,
                &mut r.transferred,
                &mut r.acked,
                &mut r.failed,
                &mut r.timed_out,
                &mut r.executed,
                &mut r.execute_ns,
                &mut r.execute_samples,
                &mut r.process_ns,
                &mut r.process_samples,
                &mut r.complete_us,
                &mut r.complete_samples,
            ] {
                *v /= 3;
            }
        }
        c.blocked_ns = blocked_600;
        c
    };
    let windows = Window::ALL
        .iter()
        .map(|&window| WindowCounters {
            window,
            counters: if window == Window::Secs(600) {
                third(&all)
            } else {
                all.clone()
            },
        })
        .collect();
    ExecutorPage {
        component: component.to_owned(),
        first: task,
        last: task,
        host: host.to_owned(),
        port,
        supervisor_id: format!("sup-{host}"),
        uptime_secs: 7200,
        heartbeat_age_secs: Some(1),
        windows,
        queue_depth: 0,
        queue_capacity: 1024,
        complete_latency_p50_ms: 0.0,
        complete_latency_p99_ms: 0.0,
        complete_latency_max_ms: 0.0,
        gauges: BTreeMap::new(),
    }
}

fn spout_counters(emitted: u64, acked: u64, failed: u64, timed_out: u64) -> ExecutorCounters {
    ExecutorCounters {
        outputs: vec![
            StreamStats {
                emitted,
                transferred: emitted,
                acked,
                failed,
                timed_out,
                complete_us: acked * 2000,
                complete_samples: acked,
                ..stream(None, "default")
            },
            StreamStats {
                emitted,
                transferred: emitted,
                ..stream(None, "__ack_init")
            },
        ],
        inputs: vec![],
        blocked_ns: 0,
    }
}

fn bolt_counters(source: &str, executed: u64, execute_ns: u64, emitted: u64) -> ExecutorCounters {
    ExecutorCounters {
        outputs: vec![StreamStats {
            emitted,
            transferred: emitted,
            ..stream(None, "default")
        }],
        inputs: vec![
            StreamStats {
                executed,
                acked: executed,
                execute_ns: executed * execute_ns,
                execute_samples: executed,
                process_ns: executed * execute_ns * 2,
                process_samples: executed,
                ..stream(Some(source), "default")
            },
            StreamStats {
                executed: 12,
                ..stream(Some("__system"), "__tick")
            },
        ],
        blocked_ns: 100_000_000_000,
    }
}

fn component(kind: ComponentKind, parallelism: u32, inputs: Vec<Subscription>) -> ComponentSpec {
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "default".into(),
        StreamDecl {
            fields: ["word"].into(),
            direct: false,
        },
    );
    ComponentSpec {
        kind,
        parallelism,
        num_tasks: parallelism,
        inputs,
        outputs,
        conf: Config::new(),
    }
}

/// WordCount as Nimbus would describe it: spout [6-7], split [2-3], count [4-5] (two
/// executors each, on h1:6700 and h2:6701) and an acker [1-1]; the count bolt on h2 is
/// throttling in the 10-minute window (backpressure 0.1) and reported two errors; the
/// count bolts set gauges (`words.distinct` 40 and 60, `below.zero` -3 on h2).
pub(crate) fn sample_page() -> TopologyPage {
    let mut spec = TopologySpec::default();
    spec.components
        .insert("spout".into(), component(ComponentKind::Spout, 2, vec![]));
    spec.components.insert(
        "split".into(),
        component(
            ComponentKind::Bolt,
            2,
            vec![Subscription {
                source: "spout".into(),
                grouping: Grouping::Shuffle,
            }],
        ),
    );
    spec.components.insert(
        "count".into(),
        component(
            ComponentKind::Bolt,
            2,
            vec![Subscription {
                source: "split".into(),
                grouping: Grouping::Fields(["word"].into()),
            }],
        ),
    );
    let mut conf = Config::new();
    conf.set("topology.message.timeout.secs", 30i64);
    conf.set("topology.debug", false);
    let mut count_h2 = executor(
        "count",
        5,
        "h2",
        6701,
        bolt_counters("split", 4500, 200_000, 4500),
        60_000_000_000,
    );
    count_h2.queue_depth = 900;
    count_h2.gauges = BTreeMap::from([
        ("words.distinct".to_owned(), 60),
        ("below.zero".to_owned(), -3),
    ]);
    let mut count_h1 = executor(
        "count",
        4,
        "h1",
        6700,
        bolt_counters("split", 4500, 200_000, 4500),
        0,
    );
    count_h1.gauges = BTreeMap::from([("words.distinct".to_owned(), 40)]);
    let mut spout_h1 = executor("spout", 6, "h1", 6700, spout_counters(1500, 1450, 5, 3), 0);
    spout_h1.complete_latency_p50_ms = 1.5;
    spout_h1.complete_latency_p99_ms = 9.25;
    spout_h1.complete_latency_max_ms = 30.0;
    let mut log_levels = LogLevels::default();
    log_levels.levels.insert(
        "ROOT".into(),
        LogLevelEntry {
            level: "DEBUG".into(),
            expires_secs: Some(2000),
        },
    );
    TopologyPage {
        summary: TopologySummary {
            id: "wc-1-100".into(),
            name: "wc".into(),
            status: TopologyStatus::Active,
            uptime_secs: 7300,
            num_tasks: 7,
            num_workers: 2,
            num_executors: 7,
            owner: "alice".into(),
        },
        conf,
        spec,
        msg_timeout_secs: 30,
        workers: vec![
            WorkerSummary {
                supervisor_id: "sup-h1".into(),
                host: "h1".into(),
                port: 6700,
                num_executors: 4,
                heartbeat_age_secs: Some(1),
                uptime_secs: 7200,
            },
            WorkerSummary {
                supervisor_id: "sup-h2".into(),
                host: "h2".into(),
                port: 6701,
                num_executors: 3,
                heartbeat_age_secs: Some(1),
                uptime_secs: 7200,
            },
        ],
        executors: vec![
            executor(
                "__acker",
                1,
                "h1",
                6700,
                bolt_counters("spout", 3000, 1000, 0),
                0,
            ),
            executor(
                "split",
                2,
                "h1",
                6700,
                bolt_counters("spout", 1500, 100_000, 4500),
                0,
            ),
            executor(
                "split",
                3,
                "h2",
                6701,
                bolt_counters("spout", 1500, 100_000, 4500),
                0,
            ),
            count_h1,
            count_h2,
            spout_h1,
            executor("spout", 7, "h2", 6701, spout_counters(1500, 1460, 0, 4), 0),
        ],
        errors: vec![
            ErrorInfo {
                component: "count".into(),
                task: 4,
                host: "h1".into(),
                port: 6700,
                time_secs: 1000,
                error: "boom 1".into(),
            },
            ErrorInfo {
                component: "count".into(),
                task: 5,
                host: "h2".into(),
                port: 6701,
                time_secs: 1100,
                error: "boom 2: the word & the count\n   at count.rs:10".into(),
            },
        ],
        log_levels,
        time_secs: 1200,
    }
}

/// Two supervisors with two slots each, one used on each; one Nimbus.
pub(crate) fn sample_cluster() -> ClusterSummary {
    let sup = |id: &str, host: &str, used: u16| SupervisorSummary {
        info: SupervisorInfo {
            id: id.into(),
            hostname: host.into(),
            ports: vec![6700, 6701],
            start_time_secs: 100,
            version: "0.1.0".into(),
            heartbeat_secs: 1190,
        },
        used_ports: vec![used],
    };
    ClusterSummary {
        supervisors: vec![sup("sup-h1", "h1", 6700), sup("sup-h2", "h2", 6701)],
        nimbuses: vec![NimbusSummary {
            host: "n1".into(),
            port: 6627,
            start_time_secs: 200,
            version: "0.1.0".into(),
        }],
        topologies: 1,
        leader: None,
    }
}

fn links() -> Links {
    Links {
        logviewer_port: 8000,
    }
}

fn params(window: Window, sys: bool) -> Params {
    Params { window, sys }
}

fn is_decimal(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let (int, frac) = s.split_once('.').unwrap_or(("", ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 3
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

fn row<'a>(rows: &'a Value, key: &str, id: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == id)
        .unwrap_or_else(|| panic!("no row with {key}={id} in {rows}"))
}

fn assert_keys(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(k).is_some(), "missing '{k}' in {v}");
    }
}

#[test]
fn topology_page_has_storms_fields_and_types() {
    let t = topology_json(&sample_page(), Params::default(), &links());
    assert_keys(
        &t,
        &[
            "id",
            "encodedId",
            "name",
            "status",
            "uptime",
            "uptimeSeconds",
            "tasksTotal",
            "workersTotal",
            "executorsTotal",
            "msgTimeout",
            "debug",
            "configuration",
            "topologyStats",
            "spouts",
            "bolts",
            "workers",
            "owner",
            "window",
            "windowHint",
            "executorPlacement",
            "throttlingComponents",
            "logLevels",
        ],
    );
    assert_eq!(t["status"], "ACTIVE");
    assert_eq!(t["uptime"], "2h 1m 40s");
    assert_eq!(t["uptimeSeconds"], 7300);
    assert_eq!(t["msgTimeout"], 30);
    assert_eq!(t["debug"], false);
    assert_eq!(t["window"], ":all-time");
    assert_eq!(t["configuration"]["topology.message.timeout.secs"], 30);

    // Windows in Storm's order, :all-time last.
    let windows: Vec<&str> = t["topologyStats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["window"].as_str().unwrap())
        .collect();
    assert_eq!(windows, ["600", "10800", "86400", ":all-time"]);
    let all = &t["topologyStats"][3];
    assert_eq!(all["windowPretty"], "All time");
    // Spout 3000 + split 9000 + count 9000; the acker and __ack_init are system.
    assert_eq!(all["emitted"], 21000);
    assert_eq!(all["acked"], 2910);
    assert_eq!(all["failed"], 12, "Storm's failed includes timeouts");
    assert_eq!(all["timedOut"], 7);
    assert_eq!(all["failedExplicit"], 5);
    assert_eq!(all["completeLatency"], "2.000");
    assert_eq!(t["topologyStats"][0]["emitted"], 7000, "a third in 10 min");

    let spout = row(&t["spouts"], "spoutId", "spout");
    assert_keys(
        spout,
        &[
            "encodedSpoutId",
            "executors",
            "tasks",
            "emitted",
            "transferred",
            "completeLatency",
            "acked",
            "failed",
            "lastError",
            "errorHost",
            "errorPort",
            "errorTime",
            "errorLapsedSecs",
            "errorWorkerLogLink",
            "timedOut",
            "failedExplicit",
            "throttling",
            "completeLatencyP50",
            "completeLatencyP99",
            "completeLatencyMax",
        ],
    );
    assert_eq!(spout["executors"], 2);
    assert_eq!(spout["tasks"], 2);
    assert_eq!(spout["emitted"], 3000);
    assert_eq!(spout["failed"], 12);
    assert_eq!(spout["lastError"], "");
    assert!(spout["errorHost"].is_null());
    assert_eq!(spout["completeLatencyP99"], "9.250");
    assert_eq!(spout["throttling"], false);

    let count = row(&t["bolts"], "boltId", "count");
    for k in [
        "executeLatency",
        "processLatency",
        "capacity",
        "backpressure",
    ] {
        assert!(is_decimal(&count[k]), "{k}: {}", count[k]);
    }
    assert_eq!(count["executeLatency"], "0.200");
    assert_eq!(count["processLatency"], "0.400");
    assert_eq!(count["executed"], 9000, "ticks are a system stream");
    assert_eq!(count["acked"], 9000);
    assert_eq!(count["failed"], 0);
    assert_eq!(count["queueDepth"], 900);
    assert_eq!(count["queueCapacity"], 2048);
    // All time: 100 s blocked in 7200 s; 4500 x 0.2 ms busy in 7200 s.
    assert_eq!(count["backpressure"], "0.014");
    assert_eq!(count["capacity"], "0.000");
    assert_eq!(count["throttling"], false);
    assert_eq!(
        count["lastError"],
        "boom 2: the word & the count\n   at count.rs:10"
    );
    assert_eq!(count["errorHost"], "h2");
    assert_eq!(count["errorPort"], 6701);
    assert_eq!(count["errorTime"], 1100);
    assert_eq!(count["errorLapsedSecs"], 100);
    assert_eq!(
        count["errorWorkerLogLink"],
        "http://h2:8000/api/v1/log?file=wc-1-100%2F6701%2Fworker.log\
         &search=boom%202%3A%20the%20word%20%26%20the%20count"
    );
    assert!(t["bolts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["boltId"] != "__acker"));
    assert_eq!(t["throttlingComponents"], json!([]));

    let w = row(&t["workers"], "host", "h2");
    assert_keys(
        w,
        &[
            "supervisorId",
            "port",
            "topologyId",
            "topologyName",
            "executorsTotal",
            "componentNumTasks",
            "uptime",
            "uptimeSeconds",
            "workerLogLink",
            "owner",
        ],
    );
    assert_eq!(
        w["componentNumTasks"],
        json!({"count": 1, "split": 1, "spout": 1})
    );
    assert_eq!(
        w["workerLogLink"],
        "http://h2:8000/api/v1/log?file=wc-1-100%2F6701%2Fworker.log"
    );

    let placement = t["executorPlacement"].as_array().unwrap();
    assert_eq!(placement.len(), 7, "ackers too");
    let acker = placement
        .iter()
        .find(|p| p["component"] == "__acker")
        .unwrap();
    assert_eq!(acker["id"], "[1-1]");
    assert_eq!(acker["port"], 6700);
    assert_eq!(acker["supervisorId"], "sup-h1");
    assert_eq!(
        t["logLevels"],
        json!({"ROOT": {"level": "DEBUG", "expiresSecs": 2000}})
    );
}

#[test]
fn the_window_chooses_the_counts_and_who_throttles() {
    let page = sample_page();
    let t = topology_json(&page, params(Window::Secs(600), false), &links());
    assert_eq!(t["window"], "600");
    assert_eq!(t["windowHint"], "10m 0s");
    let count = row(&t["bolts"], "boltId", "count");
    assert_eq!(count["executed"], 3000);
    // 60 s blocked in 600 s on the h2 executor (max over executors).
    assert_eq!(count["backpressure"], "0.100");
    assert_eq!(count["throttling"], true);
    assert_eq!(t["throttlingComponents"], json!(["count"]));
    // 1500 x 0.2 ms = 0.3 s busy in 600 s.
    assert_eq!(count["capacity"], "0.001");
}

#[test]
fn sys_shows_the_ackers_and_system_streams() {
    let t = topology_json(&sample_page(), params(Window::AllTime, true), &links());
    let acker = row(&t["bolts"], "boltId", "__acker");
    assert_eq!(acker["executed"], 3012);
    assert_eq!(row(&t["spouts"], "spoutId", "spout")["emitted"], 6000);
    assert_eq!(row(&t["bolts"], "boltId", "count")["executed"], 9024);
}

#[test]
fn component_pages_of_a_spout_and_a_bolt() {
    let page = sample_page();
    let s = component_json(&page, "spout", Params::default(), &links()).unwrap();
    assert_keys(
        &s,
        &[
            "id",
            "encodedId",
            "name",
            "topologyId",
            "encodedTopologyId",
            "topologyStatus",
            "componentType",
            "executors",
            "tasks",
            "window",
            "windowHint",
            "spoutSummary",
            "outputStats",
            "executorStats",
            "componentErrors",
            "gauges",
        ],
    );
    assert_eq!(s["componentType"], "spout");
    assert_eq!(
        s["gauges"],
        serde_json::json!({}),
        "no gauges: an empty object"
    );
    assert_eq!(s["name"], "wc");
    let windows: Vec<&str> = s["spoutSummary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["window"].as_str().unwrap())
        .collect();
    assert_eq!(windows, ["600", "10800", "86400", ":all-time"]);
    assert_eq!(s["spoutSummary"][3]["acked"], 2910);
    assert_eq!(s["spoutSummary"][3]["timedOut"], 7);
    let outputs = s["outputStats"].as_array().unwrap();
    assert_eq!(
        outputs.len(),
        1,
        "__ack_init is a system stream: {outputs:?}"
    );
    assert_keys(
        &outputs[0],
        &[
            "stream",
            "emitted",
            "transferred",
            "completeLatency",
            "acked",
            "failed",
        ],
    );
    let e = row(&s["executorStats"], "id", "[6-6]");
    assert_keys(
        e,
        &[
            "encodedId",
            "uptime",
            "uptimeSeconds",
            "host",
            "port",
            "emitted",
            "transferred",
            "completeLatency",
            "acked",
            "failed",
            "timedOut",
            "failedExplicit",
            "workerLogLink",
            "throttling",
            "completeLatencyP50",
            "completeLatencyP99",
            "completeLatencyMax",
            "gauges",
        ],
    );
    assert_eq!(e["encodedId"], "%5B6-6%5D");
    let spout_exec = page
        .executors
        .iter()
        .find(|e| e.component == "spout")
        .unwrap();
    assert_eq!(
        executor_capacity(spout_exec, Window::AllTime).to_string(),
        "0",
        "no inputs: zero, not -0"
    );
    assert_eq!(e["failed"], 8);
    assert_eq!(e["completeLatencyP50"], "1.500");
    assert_eq!(e["uptime"], "2h 0m 0s");

    let b = component_json(&page, "count", params(Window::Secs(600), false), &links()).unwrap();
    assert_eq!(b["componentType"], "bolt");
    assert_eq!(b["window"], "600");
    assert_eq!(b["boltStats"].as_array().unwrap().len(), 4);
    assert_eq!(b["boltStats"][3]["window"], ":all-time");
    assert!(is_decimal(&b["boltStats"][0]["capacity"]));
    let inputs = b["inputStats"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "ticks are a system stream: {inputs:?}");
    assert_eq!(inputs[0]["component"], "split");
    assert_eq!(inputs[0]["encodedComponentId"], "split");
    assert_eq!(inputs[0]["executed"], 3000);
    assert_eq!(inputs[0]["executeLatency"], "0.200");
    let e = row(&b["executorStats"], "id", "[5-5]");
    assert_eq!(e["queueDepth"], 900);
    assert_eq!(e["backpressure"], "0.100");
    assert_eq!(e["throttling"], true);
    assert!(is_decimal(&e["capacity"]));
    assert_eq!(row(&b["executorStats"], "id", "[4-4]")["throttling"], false);
    // Gauges: per executor as its last heartbeat had them, summed for the component
    // (whatever the window).
    assert_eq!(
        e["gauges"],
        serde_json::json!({"below.zero": -3, "words.distinct": 60})
    );
    assert_eq!(
        row(&b["executorStats"], "id", "[4-4]")["gauges"],
        serde_json::json!({"words.distinct": 40})
    );
    assert_eq!(
        b["gauges"],
        serde_json::json!({"below.zero": -3, "words.distinct": 100})
    );
    let errors = b["componentErrors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0]["error"].as_str().unwrap().starts_with("boom 2"),
        "newest first"
    );
    assert_eq!(errors[1]["errorPort"], 6700);
    assert!(errors[1]["errorWorkerLogLink"]
        .as_str()
        .unwrap()
        .ends_with("&search=boom%201"));

    // The acker, asked for by name, with its inputs.
    let a = component_json(&page, "__acker", Params::default(), &links()).unwrap();
    assert_eq!(a["componentType"], "bolt");
    assert_eq!(a["inputStats"].as_array().unwrap().len(), 2);

    let e = component_json(&page, "nope", Params::default(), &links()).unwrap_err();
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert!(e.message.contains("no component 'nope'"), "{e}");
    assert_eq!(e.body()["error"], "Not Found");
}

#[test]
fn visualization_leaves_out_system_components() {
    let v = visualization_json(&sample_page(), Window::AllTime);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["count", "split", "spout"]);
    let count = &v["count"];
    assert_eq!(count[":type"], "bolt");
    assert!(count[":capacity"].is_number() && count[":latency"].is_number());
    assert_eq!(count[":latency"], 0.2);
    assert_eq!(count[":transferred"], 9000);
    assert_eq!(count[":executors"], 2);
    assert_eq!(count[":tasks"], 2);
    assert!(count[":backpressure"].is_number());
    assert_eq!(count[":throttling"], false);
    assert_eq!(count[":stats"].as_array().unwrap().len(), 2);
    let input = &count[":inputs"][0];
    assert_eq!(input[":component"], "split");
    assert_eq!(input[":stream"], "default");
    assert_eq!(input[":grouping"], "fields");
    let sani = input[":sani-stream"].as_str().unwrap();
    assert!(sani.starts_with("default_"), "{sani}");
    assert_eq!(v["spout"][":type"], "spout");
    assert_eq!(v["spout"][":latency"], 2.0);
    assert_eq!(v["spout"][":inputs"], json!([]));
    let v600 = visualization_json(&sample_page(), Window::Secs(600));
    assert_eq!(v600["count"][":throttling"], true);
    assert_eq!(v600["count"][":backpressure"], 0.1);
}

#[test]
fn sanitized_streams_are_safe_and_distinct() {
    let a = sanitize_stream("a b");
    let b = sanitize_stream("a_b");
    assert_ne!(a, b);
    for s in [&a, &b, &sanitize_stream("1x"), &sanitize_stream("\"<>")] {
        assert!(s.starts_with(|c: char| c.is_ascii_alphabetic()), "{s}");
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}

#[test]
fn workers_list_hosts_and_ports() {
    let w = topology_workers_json(&sample_page(), &links());
    assert_eq!(
        w,
        json!({
            "hostPortList": [{"host": "h1", "port": 6700}, {"host": "h2", "port": 6701}],
            "logviewerPort": 8000,
        })
    );
}

#[test]
fn cluster_nimbus_supervisor_and_topology_summaries() {
    let cluster = sample_cluster();
    let list = vec![sample_page().summary];
    let c = cluster_summary_json(&cluster, &list, true);
    assert_eq!(c["supervisors"], 2);
    assert_eq!(c["topologies"], 1);
    assert_eq!(c["slotsTotal"], 4);
    assert_eq!(c["slotsUsed"], 2);
    assert_eq!(c["slotsFree"], 2);
    assert_eq!(c["executorsTotal"], 7);
    assert_eq!(c["tasksTotal"], 7);
    assert_eq!(c["secretRequired"], true);
    assert_eq!(c["leader"], "n1:6627", "the only Nimbus leads");
    assert!(c["stormVersion"].is_string());

    let n = nimbus_summary_json(&cluster, 1200);
    let row = &n["nimbuses"][0];
    assert_eq!(row["status"], "Leader");
    assert_eq!(row["nimbusUpTimeSeconds"], 1000);
    assert_eq!(row["nimbusUpTime"], "16m 40s");
    assert_keys(row, &["host", "port", "nimbusLogLink", "version"]);
    let mut two = cluster.clone();
    two.nimbuses.push(NimbusSummary {
        host: "n2".into(),
        port: 6628,
        start_time_secs: 0,
        version: "0.1.0".into(),
    });
    two.leader = Some("n2:6628".into());
    let n = nimbus_summary_json(&two, 1200);
    assert_eq!(n["nimbuses"][0]["status"], "Not a Leader");
    assert_eq!(n["nimbuses"][1]["status"], "Leader");

    let s = supervisor_summary_json(&cluster, 1200);
    let row = &s["supervisors"][0];
    assert_keys(
        row,
        &[
            "id",
            "host",
            "uptime",
            "uptimeSeconds",
            "slotsTotal",
            "slotsUsed",
            "slotsFree",
            "version",
        ],
    );
    assert_eq!(row["uptimeSeconds"], 1100);
    assert_eq!(row["slotsFree"], 1);

    let t = topology_summary_json(&list);
    let row = &t["topologies"][0];
    assert_keys(
        row,
        &[
            "id",
            "encodedId",
            "name",
            "status",
            "uptime",
            "uptimeSeconds",
            "tasksTotal",
            "workersTotal",
            "executorsTotal",
            "owner",
        ],
    );
    assert_eq!(row["workersTotal"], 2);
}

#[test]
fn query_parameters_are_checked() {
    let p = |q: &[(&str, &str)]| {
        Params::parse(
            &q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(p(&[]).unwrap(), Params::default());
    assert_eq!(p(&[("window", "600")]).unwrap().window, Window::Secs(600));
    assert_eq!(
        p(&[("window", ":all-time")]).unwrap().window,
        Window::AllTime
    );
    assert_eq!(p(&[("window", "")]).unwrap().window, Window::AllTime);
    assert!(p(&[("sys", "true")]).unwrap().sys);
    assert!(p(&[("other", "x")]).is_ok());
    for bad in [
        &[("window", "60")][..],
        &[("window", "abc")],
        &[("window", "-600")],
        &[("sys", "maybe")],
    ] {
        let e = p(bad).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

#[test]
fn rebalance_bodies_and_wait_times_are_checked() {
    assert_eq!(rebalance_request(b"").unwrap(), RebalanceRequest::default());
    assert_eq!(
        rebalance_request(b"{}").unwrap(),
        RebalanceRequest::default()
    );
    let r =
        rebalance_request(br#"{"rebalanceOptions": {"numWorkers": 3, "executors": {"split": 4}}}"#)
            .unwrap();
    assert_eq!(r.num_workers, Some(3));
    assert_eq!(r.executors.get("split"), Some(&4));
    for bad in [
        &b"{not json"[..],
        br#"{"rebalanceOptions": {"numWorkers": "x"}}"#,
        br#"{"rebalanceOptions": {"numWorkers": -1}}"#,
        br#"{"rebalanceOptions": {"numWorkers": 0}}"#,
        br#"{"rebalanceOptions": {"executors": {"split": 0}}}"#,
        br#"{"rebalanceOptions": {"numWorker": 2}}"#,
        b"[1,2]",
    ] {
        let e = rebalance_request(bad).unwrap_err();
        assert_eq!(
            e.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(wait_secs("0").unwrap(), 0);
    assert_eq!(wait_secs("30").unwrap(), 30);
    for bad in ["-1", "x", "", "1.5", "99999999999999999999"] {
        assert_eq!(wait_secs(bad).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}

#[test]
fn nimbus_errors_map_to_statuses() {
    let e: ApiError = RpcError::Unreachable {
        addr: "n1:6627".into(),
        reason: "refused".into(),
    }
    .into();
    assert_eq!(e.status, StatusCode::BAD_GATEWAY);
    let e: ApiError = RpcError::Api {
        status: 404,
        message: "unknown topology 'x'".into(),
    }
    .into();
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert_eq!(e.body()["errorMessage"], "unknown topology 'x'");
    let e: ApiError = RpcError::Api {
        status: 401,
        message: "no".into(),
    }
    .into();
    assert_eq!(e.status, StatusCode::BAD_GATEWAY);
    let e: ApiError = RpcError::Api {
        status: 500,
        message: "oops".into(),
    }
    .into();
    assert_eq!(e.status, StatusCode::BAD_GATEWAY);
}

#[test]
fn decimals_have_three_places() {
    assert_eq!(dec(0.0484), "0.048");
    assert_eq!(dec(12.0), "12.000");
    assert_eq!(dec(f64::NAN), "0.000");
    assert_eq!(dec(-0.0), "0.000");
    assert_eq!(dec(f64::INFINITY), "0.000");
}

// ---------------------------------------------------------------------------------------
// The HTTP layer, on a Nimbus that is not there.

mod http {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn ui(secret: Option<&std::path::Path>) -> Arc<Ui> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = Config::new();
        conf.set(
            "nimbus.seeds",
            squall_api::Value::List(vec!["127.0.0.1".into()]),
        );
        conf.set("nimbus.thrift.port", i64::from(port));
        if let Some(p) = secret {
            conf.set("squall.secret.file", p.display().to_string());
        }
        Ui::new(conf).unwrap()
    }

    async fn call(
        ui: &Arc<Ui>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = crate::service(ui.clone())
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: not JSON ({e}): {status} {ct:?} {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(ct.as_deref(), Some("application/json"), "{method} {uri}");
        (status, v)
    }

    fn is_error(v: &Value) -> bool {
        v["error"].is_string() && v["errorMessage"].is_string()
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors_before_nimbus_is_asked() {
        let ui = ui(None);
        for (method, uri, status) in [
            ("GET", "/api/v1/topology/wc?window=60", 400),
            ("GET", "/api/v1/topology/wc?sys=maybe", 400),
            ("GET", "/api/v1/topology/wc/component/count?window=x", 400),
            (
                "GET",
                "/api/v1/topology/wc/visualization?window=%3Aall",
                400,
            ),
            ("GET", "/api/v1/topology/%FF%FE", 400),
            ("POST", "/api/v1/topology/wc/kill/soon", 400),
            ("POST", "/api/v1/topology/wc/rebalance/-5", 400),
            ("GET", "/api/v1/nope", 404),
            ("GET", "/api/v1/", 404),
            ("GET", "/api/v1/topology/wc/component/count/more", 404),
            ("DELETE", "/api/v1/topology/wc", 405),
            ("GET", "/api/v1/topology/wc/kill/0", 405),
            ("POST", "/api/v1/cluster/summary", 405),
        ] {
            let (got, v) = call(&ui, method, uri, &[], "").await;
            assert_eq!(got.as_u16(), status, "{method} {uri}: {v}");
            assert!(is_error(&v), "{method} {uri}: {v}");
        }
        let (got, v) = call(
            &ui,
            "POST",
            "/api/v1/topology/wc/rebalance/0",
            &[("content-type", "application/json")],
            "{\"rebalanceOptions\": ",
        )
        .await;
        assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("rebalance body"));
    }

    #[tokio::test]
    async fn an_unreachable_nimbus_is_a_502() {
        let ui = ui(None);
        for uri in [
            "/api/v1/cluster/summary",
            "/api/v1/nimbus/summary",
            "/api/v1/supervisor/summary",
            "/api/v1/topology/summary",
            "/api/v1/topology/wc",
            "/api/v1/topology/wc/component/spout",
            "/api/v1/topology-workers/wc",
            "/api/v1/topology/wc/visualization",
            "/metrics",
        ] {
            let (status, v) = call(&ui, "GET", uri, &[], "").await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{uri}: {v}");
            assert!(
                v["errorMessage"]
                    .as_str()
                    .unwrap()
                    .contains("Nimbus unreachable"),
                "{uri}: {v}"
            );
        }
        let (status, v) = call(&ui, "POST", "/api/v1/topology/wc/activate", &[], "").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
        // The configuration needs no Nimbus.
        let (status, v) = call(&ui, "GET", "/api/v1/cluster/configuration", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["nimbus.seeds"], json!(["127.0.0.1"]));
    }

    #[tokio::test]
    async fn actions_need_the_secret_when_the_cluster_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "a-long-enough-cluster-secret\n").unwrap();
        let ui = ui(Some(&file));
        for (method, uri) in [
            ("POST", "/api/v1/topology/wc/activate"),
            ("POST", "/api/v1/topology/wc/deactivate"),
            ("POST", "/api/v1/topology/wc/rebalance/0"),
            ("POST", "/api/v1/topology/wc/kill/0"),
        ] {
            for auth in [
                None,
                Some("Bearer wrong-secret-of-length"),
                Some("a-long-enough-cluster-secret"),
            ] {
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("authorization", *a)).collect();
                let (status, v) = call(&ui, method, uri, &headers, "").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}: {v}");
                assert!(is_error(&v));
            }
            // With it, the request gets as far as Nimbus (which is not there).
            let (status, v) = call(
                &ui,
                method,
                uri,
                &[("authorization", "Bearer a-long-enough-cluster-secret")],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{uri}: {v}");
        }
        // Reads stay open.
        let (status, _) = call(&ui, "GET", "/api/v1/cluster/configuration", &[], "").await;
        assert_eq!(status, StatusCode::OK);
    }
}
