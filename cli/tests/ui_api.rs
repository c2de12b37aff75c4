//! Storm's REST API and Prometheus `/metrics` of `squall ui`, on a real cluster
//! (ZooKeeper, Nimbus, a supervisor, the UI daemon as separate processes) running
//! WordCount submitted with `squall jar` (with its custom gauges).

mod common;
use common::ui::{UiCluster, PATIENCE};
use common::{stdout, wait_until, word_count};

use std::time::Duration;

use serde_json::Value;

/// Asserts `v` has each field with the given type: `string`, `number`, `bool`, `array`,
/// `object`, `null`, `decimal` (Storm's three-place decimal string), `string?`
/// (string or null).
#[track_caller]
fn expect(v: &Value, fields: &[(&str, &str)]) {
    for (k, ty) in fields {
        let f = v.get(k).unwrap_or_else(|| panic!("missing '{k}' in {v}"));
        let ok = match *ty {
            "string" => f.is_string(),
            "string?" => f.is_string() || f.is_null(),
            "number" => f.is_number(),
            "number?" => f.is_number() || f.is_null(),
            "bool" => f.is_boolean(),
            "array" => f.is_array(),
            "object" => f.is_object(),
            "decimal" => f.as_str().is_some_and(|s| {
                s.split_once('.').is_some_and(|(i, d)| {
                    !i.is_empty()
                        && i.bytes().all(|b| b.is_ascii_digit())
                        && d.len() == 3
                        && d.bytes().all(|b| b.is_ascii_digit())
                })
            }),
            other => panic!("unknown type {other}"),
        };
        assert!(ok, "'{k}' should be {ty}, is {f} in {v}");
    }
}

fn error_json(status: u16, a: &common::ui::Answer) {
    assert_eq!(a.status, status, "{}", a.text());
    let v = a.json();
    expect(&v, &[("error", "string"), ("errorMessage", "string")]);
}

fn all_time(rows: &Value) -> &Value {
    let rows = rows.as_array().unwrap();
    let windows: Vec<&str> = rows.iter().map(|r| r["window"].as_str().unwrap()).collect();
    assert_eq!(windows, ["600", "10800", "86400", ":all-time"]);
    rows.last().unwrap()
}

fn row<'a>(rows: &'a Value, key: &str, id: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == id)
        .unwrap_or_else(|| panic!("no {key}={id} in {rows}"))
}

fn promtool() -> Option<String> {
    if let Ok(p) = std::env::var("SQUALL_PROMTOOL") {
        return Some(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-promtool.sh");
    let out = std::process::Command::new(script).output().unwrap();
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let why = stdout(&out);
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is needed under CI: {why}"
    );
    eprintln!("no promtool ({why}): /metrics is checked by parsing only");
    None
}

#[test]
fn storms_rest_api_and_metrics_on_a_real_cluster() {
    let c = UiCluster::start("");

    // The cluster, before any topology.
    let a = c.get("/api/v1/cluster/summary");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/json"));
    let s = a.json();
    expect(
        &s,
        &[
            ("stormVersion", "string"),
            ("supervisors", "number"),
            ("topologies", "number"),
            ("slotsTotal", "number"),
            ("slotsUsed", "number"),
            ("slotsFree", "number"),
            ("executorsTotal", "number"),
            ("tasksTotal", "number"),
            ("secretRequired", "bool"),
            ("leader", "string"),
        ],
    );
    assert_eq!(s["supervisors"], 1);
    assert_eq!(s["slotsTotal"], 2);
    assert_eq!(s["slotsUsed"], 0);
    assert_eq!(s["secretRequired"], false);
    assert_eq!(s["leader"], format!("127.0.0.1:{}", c.nimbus_port));

    let n = c.get("/api/v1/nimbus/summary").json();
    let nimbus = &n["nimbuses"][0];
    expect(
        nimbus,
        &[
            ("host", "string"),
            ("port", "number"),
            ("status", "string"),
            ("nimbusUpTime", "string"),
            ("nimbusUpTimeSeconds", "number"),
            ("version", "string"),
        ],
    );
    assert_eq!(nimbus["status"], "Leader");
    assert_eq!(nimbus["port"], c.nimbus_port);

    let sup = c.get("/api/v1/supervisor/summary").json();
    expect(
        &sup["supervisors"][0],
        &[
            ("id", "string"),
            ("host", "string"),
            ("uptime", "string"),
            ("uptimeSeconds", "number"),
            ("slotsTotal", "number"),
            ("slotsUsed", "number"),
            ("slotsFree", "number"),
            ("version", "string"),
        ],
    );
    let conf = c.get("/api/v1/cluster/configuration").json();
    assert_eq!(conf["nimbus.thrift.port"], c.nimbus_port);
    assert_eq!(conf["logviewer.port"], c.logviewer_port);
    assert_eq!(
        c.get("/api/v1/topology/summary").json()["topologies"],
        serde_json::json!([])
    );

    // Unknown ids and endpoints: 404 with a JSON error.
    error_json(404, &c.get("/api/v1/topology/nope"));
    error_json(404, &c.get("/api/v1/topology/nope/component/spout"));
    error_json(404, &c.get("/api/v1/topology-workers/nope"));
    error_json(404, &c.get("/api/v1/topology/nope/visualization"));
    error_json(404, &c.post("/api/v1/topology/nope/activate", &[], ""));
    error_json(404, &c.post("/api/v1/topology/nope/kill/0", &[], ""));
    error_json(404, &c.get("/api/v1/no/such/thing"));

    // WordCount, one worker.
    let wc = word_count();
    let out = c.squall(&[
        "jar",
        wc.to_str().unwrap(),
        "wc",
        "--workers",
        "1",
        "--rate",
        "500",
        "--gauges",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), c.logs());
    let list = c.get("/api/v1/topology/summary").json();
    let t = row(&list["topologies"], "name", "wc");
    expect(
        t,
        &[
            ("id", "string"),
            ("encodedId", "string"),
            ("name", "string"),
            ("status", "string"),
            ("uptime", "string"),
            ("uptimeSeconds", "number"),
            ("tasksTotal", "number"),
            ("workersTotal", "number"),
            ("executorsTotal", "number"),
            ("owner", "string"),
        ],
    );
    let id = t["id"].as_str().unwrap().to_owned();
    let emitted = |page: &Value| {
        all_time(&page["topologyStats"])["emitted"]
            .as_u64()
            .unwrap()
    };
    let mut page = Value::Null;
    let counting = wait_until(PATIENCE, || {
        let a = c.get("/api/v1/topology/wc");
        if a.status != 200 {
            return false;
        }
        page = a.json();
        page["bolts"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["boltId"] == "count" && b["executed"].as_u64() > Some(0))
        })
    });
    assert!(
        counting,
        "no counts on the topology page: {page}\n{}",
        c.logs()
    );

    // The topology page: Storm's fields and types, plus Squall's.
    expect(
        &page,
        &[
            ("id", "string"),
            ("encodedId", "string"),
            ("name", "string"),
            ("status", "string"),
            ("uptime", "string"),
            ("uptimeSeconds", "number"),
            ("tasksTotal", "number"),
            ("workersTotal", "number"),
            ("executorsTotal", "number"),
            ("msgTimeout", "number"),
            ("debug", "bool"),
            ("configuration", "object"),
            ("topologyStats", "array"),
            ("spouts", "array"),
            ("bolts", "array"),
            ("workers", "array"),
            ("window", "string"),
            ("executorPlacement", "array"),
            ("throttlingComponents", "array"),
            ("logLevels", "object"),
        ],
    );
    assert_eq!(page["id"], id.as_str());
    assert_eq!(page["status"], "ACTIVE");
    assert_eq!(page["window"], ":all-time");
    expect(
        all_time(&page["topologyStats"]),
        &[
            ("windowPretty", "string"),
            ("emitted", "number"),
            ("transferred", "number"),
            ("completeLatency", "decimal"),
            ("acked", "number"),
            ("failed", "number"),
            ("timedOut", "number"),
            ("failedExplicit", "number"),
        ],
    );
    let spout = row(&page["spouts"], "spoutId", "spout");
    expect(
        spout,
        &[
            ("encodedSpoutId", "string"),
            ("executors", "number"),
            ("tasks", "number"),
            ("emitted", "number"),
            ("transferred", "number"),
            ("completeLatency", "decimal"),
            ("acked", "number"),
            ("failed", "number"),
            ("lastError", "string"),
            ("timedOut", "number"),
            ("failedExplicit", "number"),
            ("throttling", "bool"),
            ("completeLatencyP50", "decimal"),
            ("completeLatencyP99", "decimal"),
            ("completeLatencyMax", "decimal"),
        ],
    );
    for bolt in ["split", "count"] {
        expect(
            row(&page["bolts"], "boltId", bolt),
            &[
                ("encodedBoltId", "string"),
                ("executors", "number"),
                ("tasks", "number"),
                ("emitted", "number"),
                ("transferred", "number"),
                ("acked", "number"),
                ("failed", "number"),
                ("executed", "number"),
                ("executeLatency", "decimal"),
                ("processLatency", "decimal"),
                ("capacity", "decimal"),
                ("lastError", "string"),
                ("timedOut", "number"),
                ("failedExplicit", "number"),
                ("queueDepth", "number"),
                ("queueCapacity", "number"),
                ("backpressure", "decimal"),
                ("throttling", "bool"),
            ],
        );
    }
    let worker = &page["workers"][0];
    expect(
        worker,
        &[
            ("supervisorId", "string"),
            ("host", "string"),
            ("port", "number"),
            ("topologyId", "string"),
            ("topologyName", "string"),
            ("executorsTotal", "number"),
            ("componentNumTasks", "object"),
            ("uptime", "string"),
            ("uptimeSeconds", "number"),
            ("workerLogLink", "string"),
            ("owner", "string"),
        ],
    );
    let port = worker["port"].as_u64().unwrap();
    assert_eq!(
        worker["workerLogLink"],
        format!(
            "http://127.0.0.1:{}/api/v1/log?file={id}%2F{port}%2Fworker.log",
            c.logviewer_port
        )
    );
    let placement = page["executorPlacement"].as_array().unwrap();
    assert!(
        placement.iter().any(|p| p["component"] == "__acker"),
        "{placement:?}"
    );
    for p in placement {
        expect(
            p,
            &[
                ("component", "string"),
                ("id", "string"),
                ("host", "string"),
                ("port", "number"),
                ("supervisorId", "string"),
                ("workerLogLink", "string"),
            ],
        );
        let eid = p["id"].as_str().unwrap();
        assert!(
            eid.starts_with('[') && eid.ends_with(']') && eid.contains('-'),
            "{eid}"
        );
    }

    // By id too; counts grow between two reads.
    let by_id = c.get(&format!("/api/v1/topology/{id}")).json();
    assert_eq!(by_id["name"], "wc");
    let before = emitted(&page);
    assert!(
        wait_until(PATIENCE, || emitted(&c.get("/api/v1/topology/wc").json())
            > before),
        "emitted did not grow past {before}"
    );
    let w600 = c.get("/api/v1/topology/wc?window=600").json();
    assert_eq!(w600["window"], "600");
    assert!(emitted(&w600) > 0);
    error_json(400, &c.get("/api/v1/topology/wc?window=42"));

    // Component pages.
    let s = c.get("/api/v1/topology/wc/component/spout").json();
    expect(
        &s,
        &[
            ("id", "string"),
            ("encodedId", "string"),
            ("name", "string"),
            ("topologyId", "string"),
            ("encodedTopologyId", "string"),
            ("componentType", "string"),
            ("executors", "number"),
            ("tasks", "number"),
            ("window", "string"),
            ("spoutSummary", "array"),
            ("outputStats", "array"),
            ("executorStats", "array"),
            ("componentErrors", "array"),
        ],
    );
    assert_eq!(s["componentType"], "spout");
    assert!(all_time(&s["spoutSummary"])["emitted"].as_u64() > Some(0));
    let e = &s["executorStats"][0];
    expect(
        e,
        &[
            ("id", "string"),
            ("encodedId", "string"),
            ("uptime", "string"),
            ("uptimeSeconds", "number"),
            ("host", "string"),
            ("port", "number"),
            ("emitted", "number"),
            ("transferred", "number"),
            ("completeLatency", "decimal"),
            ("acked", "number"),
            ("failed", "number"),
            ("workerLogLink", "string"),
        ],
    );
    expect(
        &s["outputStats"][0],
        &[
            ("stream", "string"),
            ("emitted", "number"),
            ("transferred", "number"),
            ("acked", "number"),
            ("failed", "number"),
        ],
    );
    let b = c
        .get(&format!("/api/v1/topology/{id}/component/count?window=600"))
        .json();
    assert_eq!(b["componentType"], "bolt");
    assert_eq!(b["window"], "600");
    all_time(&b["boltStats"]);
    let input = row(&b["inputStats"], "component", "split");
    expect(
        input,
        &[
            ("encodedComponentId", "string"),
            ("stream", "string"),
            ("executeLatency", "decimal"),
            ("processLatency", "decimal"),
            ("executed", "number"),
            ("acked", "number"),
            ("failed", "number"),
        ],
    );
    expect(
        &b["executorStats"][0],
        &[
            ("capacity", "decimal"),
            ("executeLatency", "decimal"),
            ("executed", "number"),
            ("queueDepth", "number"),
            ("backpressure", "decimal"),
        ],
    );
    // Custom gauges (`word-count --gauges`): per executor and summed per component.
    // The count bolts split the words by a fields grouping, so their `words.distinct`
    // add up to the distinct words of the spout's five sentences (Storm's).
    let distinct: std::collections::BTreeSet<&str> = [
        "the cow jumped over the moon",
        "an apple a day keeps the doctor away",
        "four score and seven years ago",
        "snow white and the seven dwarfs",
        "i am at two with nature",
    ]
    .iter()
    .flat_map(|s| s.split(' '))
    .collect();
    let mut b = Value::Null;
    let summed = wait_until(PATIENCE, || {
        b = c.get("/api/v1/topology/wc/component/count").json();
        b["gauges"]["words.distinct"].as_u64() == Some(distinct.len() as u64)
    });
    assert!(
        summed,
        "words.distinct never reached {}: {b}",
        distinct.len()
    );
    let per_executor: Vec<u64> = b["executorStats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            expect(e, &[("gauges", "object")]);
            e["gauges"]["words.distinct"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(per_executor.len(), 2);
    assert_eq!(per_executor.iter().sum::<u64>(), distinct.len() as u64);
    assert!(per_executor.iter().all(|&n| n > 0), "{per_executor:?}");
    let s = c.get("/api/v1/topology/wc/component/spout").json();
    expect(
        &s["gauges"],
        &[
            ("sentences.pending", "number"),
            ("sentences.replayed", "number"),
        ],
    );
    expect(
        &s["executorStats"][0]["gauges"],
        &[("sentences.pending", "number")],
    );
    assert_eq!(
        c.get("/api/v1/topology/wc/component/split").json()["gauges"],
        serde_json::json!({}),
        "split sets none"
    );

    error_json(404, &c.get("/api/v1/topology/wc/component/nope"));
    error_json(
        400,
        &c.get("/api/v1/topology/wc/component/count?sys=perhaps"),
    );

    // Workers and the graph.
    let w = c.get("/api/v1/topology-workers/wc").json();
    assert_eq!(w["logviewerPort"], c.logviewer_port);
    expect(
        &w["hostPortList"][0],
        &[("host", "string"), ("port", "number")],
    );
    let v = c.get("/api/v1/topology/wc/visualization").json();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    for k in ["spout", "split", "count"] {
        assert!(v.get(k).is_some(), "no {k} in the graph: {keys:?}");
    }
    assert!(keys.iter().all(|k| !k.starts_with("__")), "{keys:?}");
    expect(
        &v["count"],
        &[
            (":type", "string"),
            (":capacity", "number"),
            (":latency", "number"),
            (":transferred", "number"),
            (":stats", "array"),
            (":inputs", "array"),
            (":backpressure", "number"),
            (":throttling", "bool"),
        ],
    );
    assert_eq!(v["count"][":inputs"][0][":component"], "split");

    // Prometheus.
    let m = c.get("/metrics");
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = m.text();
    assert!(
        text.lines().any(|l| l.starts_with("squall_emitted_total{")
            && l.contains("topology=\"wc\"")
            && l.contains("component=\"spout\"")),
        "{text}"
    );
    // The gauges, one sample per executor and name.
    let words: Vec<u64> = text
        .lines()
        .filter(|l| {
            l.starts_with("squall_component_metric{")
                && l.contains("topology=\"wc\"")
                && l.contains("component=\"count\"")
                && l.contains("executor=\"[")
                && l.contains("name=\"words.distinct\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(words.len(), 2, "{text}");
    assert_eq!(words.iter().sum::<u64>(), distinct.len() as u64, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("squall_component_metric{")
                && l.contains("component=\"spout\"")
                && l.contains("name=\"sentences.pending\"")),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{line}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
    }
    if let Some(promtool) = promtool() {
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {}\n{text}", stdout(&out));
    }

    // Actions change the status shown.
    let status = || {
        let list = c.get("/api/v1/topology/summary").json();
        list["topologies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "wc")
            .map(|t| t["status"].as_str().unwrap().to_owned())
    };
    let a = c.post("/api/v1/topology/wc/deactivate", &[], "");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json(),
        serde_json::json!({"topologyOperation": "deactivate", "topologyId": id, "status": "success"})
    );
    assert_eq!(status().as_deref(), Some("INACTIVE"));
    assert_eq!(c.get("/api/v1/topology/wc").json()["status"], "INACTIVE");
    let a = c.post(&format!("/api/v1/topology/{id}/activate"), &[], "");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["topologyOperation"], "activate");
    assert_eq!(status().as_deref(), Some("ACTIVE"));

    // Bad bodies and wait times change nothing.
    error_json(
        400,
        &c.post(
            "/api/v1/topology/wc/rebalance/0",
            &[],
            "{\"rebalanceOptions\": [}",
        ),
    );
    error_json(
        400,
        &c.post(
            "/api/v1/topology/wc/rebalance/0",
            &[],
            "{\"rebalanceOptions\": {\"numWorkers\": 0}}",
        ),
    );
    error_json(400, &c.post("/api/v1/topology/wc/kill/later", &[], ""));
    assert_eq!(status().as_deref(), Some("ACTIVE"));

    // Rebalance, then kill.
    let a = c.post(
        "/api/v1/topology/wc/rebalance/0",
        &[],
        "{\"rebalanceOptions\": {\"numWorkers\": 1}}",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["topologyOperation"], "rebalance");
    assert!(
        wait_until(PATIENCE, || status().as_deref() == Some("ACTIVE")),
        "the rebalance did not finish: {:?}",
        status()
    );
    let a = c.post("/api/v1/topology/wc/kill/0", &[], "");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json(),
        serde_json::json!({"topologyOperation": "kill", "topologyId": id, "status": "success"})
    );
    assert!(
        wait_until(Duration::from_secs(30), || status().is_none()),
        "the topology was not killed: {:?}",
        status()
    );
    error_json(404, &c.get(&format!("/api/v1/topology/{id}")));
}

#[test]
fn actions_need_the_cluster_secret_when_it_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "ui-api-test-cluster-secret\n").unwrap();
    let c = UiCluster::start(&format!("squall.secret.file: {}\n", secret.display()));
    let s = c.get("/api/v1/cluster/summary").json();
    assert_eq!(s["secretRequired"], true);
    let wc = word_count();
    let out = c.squall(&[
        "jar",
        wc.to_str().unwrap(),
        "wc",
        "--workers",
        "1",
        "--rate",
        "100",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), c.logs());
    for auth in [None, Some("Bearer not-the-secret-at-all")] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let a = c.post("/api/v1/topology/wc/deactivate", &headers, "");
        error_json(401, &a);
    }
    let list = c.get("/api/v1/topology/summary").json();
    assert_eq!(row(&list["topologies"], "name", "wc")["status"], "ACTIVE");
    let a = c.post(
        "/api/v1/topology/wc/kill/0",
        &[("Authorization", "Bearer ui-api-test-cluster-secret")],
        "",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(wait_until(Duration::from_secs(30), || {
        c.get("/api/v1/topology/summary").json()["topologies"] == serde_json::json!([])
    }));
}
