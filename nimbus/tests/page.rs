//! The UI's view of a topology (`GET .../page`: rolling windows fed by heartbeats,
//! executors from the assignment, errors) and log levels (`set_log_level`), against a
//! real ZooKeeper and two real Nimbus daemons (a leader and a standby). Supervisors and
//! workers are played by the test: a registered supervisor node and heartbeats posted
//! with growing counters and custom gauges.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use squall_cluster::dev_zookeeper::ZooKeeperServer;
use squall_cluster::metrics::{ExecutorCounters, StreamStats, Window};
use squall_cluster::rpc::{
    LogLevelRequest, LogLevelSetting, NimbusClient, TopologyPage, LEADER_HEADER,
};
use squall_cluster::state::{
    now_secs, Assignment, ErrorInfo, ExecutorHeartbeat, HeartbeatResponse, SupervisorInfo,
    WorkerHeartbeat,
};

fn supervisor() -> SupervisorInfo {
    SupervisorInfo {
        id: "sup-a".into(),
        hostname: "127.0.0.1".into(),
        ports: vec![6700],
        start_time_secs: now_secs(),
        version: "test".into(),
        heartbeat_secs: now_secs(),
    }
}

/// The heartbeat of the one worker of `a`, its spouts having emitted `emitted` each.
fn heartbeat(a: &Assignment, emitted: u64, errors: Vec<ErrorInfo>) -> WorkerHeartbeat {
    let slot = &a.slots()[0];
    WorkerHeartbeat {
        topology_id: a.topology_id.clone(),
        supervisor_id: slot.node.clone(),
        host: "127.0.0.1".into(),
        port: slot.port,
        assignment_version: a.version,
        epoch: a.epoch,
        uptime_secs: 2,
        time_secs: now_secs(),
        executors: a
            .executors_of(slot)
            .into_iter()
            .map(|e| ExecutorHeartbeat {
                component: e.component.clone(),
                first: e.first,
                last: e.last,
                emitted,
                counters: ExecutorCounters {
                    outputs: vec![StreamStats {
                        stream: "default".into(),
                        emitted,
                        transferred: emitted,
                        ..Default::default()
                    }],
                    inputs: vec![],
                    blocked_ns: 0,
                },
                queue_depth: 7,
                queue_capacity: 1024,
                gauges: BTreeMap::from([
                    ("emitted.last".to_owned(), emitted as i64),
                    ("first.task".to_owned(), i64::from(e.first.0)),
                ]),
                ..Default::default()
            })
            .collect(),
        errors,
    }
}

/// Emitted on stream `default` by every executor of the page, per window.
fn emitted(page: &TopologyPage) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Window::ALL.iter().map(|w| (w.name(), 0)).collect();
    for e in &page.executors {
        for (i, w) in e.windows.iter().enumerate() {
            assert_eq!(w.window, Window::ALL[i], "windows in Window::ALL order");
            out[i].1 += w.counters.output_total().emitted;
        }
    }
    out
}

/// Sends one request and reads the answer: (status, headers and body as text).
fn raw_http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn levels(r: &HeartbeatResponse) -> BTreeMap<String, String> {
    match r {
        HeartbeatResponse::Assigned { log_levels, .. } => log_levels.clone(),
        other => panic!("not assigned: {other:?}"),
    }
}

#[test]
fn page_windows_grow_names_and_ids_work_and_log_levels_reach_workers() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let seeds = format!("nimbus.seeds: [\"{a1}\", \"{a2}\"]\n");
    let rt = rt();
    let state = rt.block_on(state(zk.port()));
    let _leader = spawn_nimbus(&rt, load(&nimbus_conf(dir.path(), zk.port(), p1, &seeds)));
    assert!(rt.block_on(wait_leader(&state, &a1, Duration::from_secs(30))));
    let _standby = spawn_nimbus(&rt, load(&nimbus_conf(dir.path(), zk.port(), p2, &seeds)));
    let (c, standby) = (client(&a1), client(&a2));
    assert!(rt.block_on(wait_until(Duration::from_secs(30), || async {
        standby.cluster().await.is_ok_and(|s| s.nimbuses.len() == 2)
    })));
    rt.block_on(state.register_supervisor(&supervisor()))
        .unwrap();
    let sha = rt
        .block_on(c.upload_binary(&binary(dir.path(), "page test")))
        .unwrap();
    let id = rt
        .block_on(c.submit(&request("pt", &sha, 2, 1)))
        .unwrap()
        .topology_id;
    let a = rt.block_on(state.assignment(&id)).unwrap().unwrap();

    // Before any heartbeat: the executors of the assignment, where they run, zeros.
    let page = rt.block_on(c.page("pt")).unwrap();
    assert_eq!(page.summary.id, id);
    assert_eq!(page.executors.len(), 2);
    for e in &page.executors {
        assert_eq!(e.component, "spout");
        assert_eq!(
            (e.host.as_str(), e.port, e.supervisor_id.as_str()),
            ("127.0.0.1", 6700, "sup-a")
        );
        assert_eq!(e.heartbeat_age_secs, None);
        assert!(e.gauges.is_empty());
        assert_eq!(e.windows.len(), 4);
        assert_eq!(e.windows[3].window, Window::AllTime, ":all-time last");
    }
    assert_eq!(emitted(&page).iter().map(|w| w.1).sum::<u64>(), 0);
    assert_eq!(page.msg_timeout_secs, 30);
    assert!(page.spec.components.contains_key("spout"));
    assert_eq!(page.workers.len(), 1);

    // Heartbeats with growing counters: every window grows.
    let assigned = |r: &HeartbeatResponse| matches!(r, HeartbeatResponse::Assigned { .. });
    assert!(rt.block_on(wait_until(Duration::from_secs(10), || async {
        c.heartbeat(&heartbeat(&a, 100, vec![]))
            .await
            .is_ok_and(|r| assigned(&r))
    })));
    let first = emitted(&rt.block_on(c.page("pt")).unwrap());
    assert_eq!(
        first,
        [
            ("600".to_owned(), 200),
            ("10800".to_owned(), 200),
            ("86400".to_owned(), 200),
            (":all-time".to_owned(), 200)
        ]
    );
    let error = ErrorInfo {
        component: "spout".into(),
        task: a.executors[0].first.0,
        host: "127.0.0.1".into(),
        port: 6700,
        time_secs: now_secs(),
        error: "the source went away".into(),
    };
    let r = rt
        .block_on(c.heartbeat(&heartbeat(&a, 350, vec![error.clone()])))
        .unwrap();
    assert!(assigned(&r));
    // By id as well as by name, and through the standby (which sends the client on).
    let page = rt.block_on(standby.page(&id)).unwrap();
    assert!(emitted(&page).iter().all(|(_, n)| *n == 700), "{page:?}");
    let e = &page.executors[0];
    assert_eq!(
        (e.queue_depth, e.queue_capacity, e.uptime_secs),
        (7, 1024, 2)
    );
    assert!(e.heartbeat_age_secs.is_some());
    // Custom gauges: the latest value of every executor, no windows.
    for e in &page.executors {
        assert_eq!(
            e.gauges,
            BTreeMap::from([
                ("emitted.last".to_owned(), 350),
                ("first.task".to_owned(), i64::from(e.first)),
            ])
        );
    }
    assert_eq!(rt.block_on(c.info(&id)).unwrap().summary.name, "pt");
    // The error, recorded in ZooKeeper off the heartbeat path.
    assert!(rt.block_on(wait_until(Duration::from_secs(10), || async {
        c.page("pt")
            .await
            .is_ok_and(|p| p.errors == [error.clone()])
    })));

    // A standby does not answer the page itself: 503 naming the leader.
    let (code, text) = raw_http(p2, "GET", &format!("/nimbus/v1/topologies/{id}/page"), "");
    assert_eq!(code, 503, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("{LEADER_HEADER}: {a1}")),
        "{text}"
    );

    // Unknown names and ids: 404 naming them; unknown endpoints and methods: JSON 404.
    for x in ["nope", "pt-1-1"] {
        let e = rt.block_on(c.page(x)).unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(
            e.to_string()
                .contains(&format!("no topology named or with id '{x}'")),
            "{e}"
        );
    }
    let e = rt.block_on(c.log_levels("nope")).unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let (code, text) = raw_http(p1, "GET", "/nimbus/v1/nothing-here", "");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains(r#""error":"no such endpoint: GET /nimbus/v1/nothing-here"#));
    let (code, text) = raw_http(p1, "DELETE", "/nimbus/v1/topologies/pt/page", "");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains(r#""error":"#), "{text}");
    let (code, text) = raw_http(p1, "GET", "/nimbus/v1/topologies/%FF%FE/page", "");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(r#""error":"invalid path"#), "{text}");

    // Log levels: a bad level or body is refused, naming it, and changes nothing.
    let set = |entries: &[(&str, &str, Option<u64>)]| LogLevelRequest {
        set: entries
            .iter()
            .map(|(l, v, t)| {
                (
                    l.to_string(),
                    LogLevelSetting {
                        level: v.to_string(),
                        timeout_secs: *t,
                    },
                )
            })
            .collect(),
        reset: vec![],
    };
    let e = rt
        .block_on(c.set_log_levels("pt", &set(&[("ROOT", "LOUD", None)])))
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("invalid log level 'LOUD'"), "{e}");
    let (code, text) = raw_http(
        p1,
        "POST",
        "/nimbus/v1/topologies/pt/log-levels",
        r#"{"set": 3}"#,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("invalid request body"), "{text}");
    assert!(rt.block_on(c.log_levels("pt")).unwrap().levels.is_empty());

    // Set through the standby (a write: it goes to the leader), by id.
    let now = now_secs();
    let got = rt
        .block_on(standby.set_log_levels(
            &id,
            &set(&[("ROOT", "debug", Some(3)), ("squall_worker", "Warn", None)]),
        ))
        .unwrap();
    assert_eq!(got.levels["ROOT"].level, "DEBUG");
    let expires = got.levels["ROOT"].expires_secs.unwrap();
    assert!((now + 3..=now + 5).contains(&expires), "{got:?}");
    assert_eq!(got.levels["squall_worker"].expires_secs, None);
    assert_eq!(rt.block_on(c.log_levels("pt")).unwrap(), got);
    assert_eq!(rt.block_on(c.page("pt")).unwrap().log_levels, got);
    let stored: squall_cluster::rpc::LogLevels =
        rt.block_on(state.log_config(&id)).unwrap().unwrap();
    assert_eq!(stored, got, "kept in ZooKeeper");
    // Workers get them with the heartbeat answer, until the timeout ends.
    let r = rt
        .block_on(c.heartbeat(&heartbeat(&a, 400, vec![])))
        .unwrap();
    assert_eq!(
        levels(&r),
        BTreeMap::from([
            ("ROOT".into(), "DEBUG".into()),
            ("squall_worker".into(), "WARN".into())
        ])
    );
    assert!(rt.block_on(wait_until(Duration::from_secs(10), || async {
        c.heartbeat(&heartbeat(&a, 400, vec![]))
            .await
            .is_ok_and(|r| levels(&r).len() == 1)
    })));
    assert!(!rt
        .block_on(c.log_levels("pt"))
        .unwrap()
        .levels
        .contains_key("ROOT"));
    // A reset removes a level.
    let reset = LogLevelRequest {
        set: BTreeMap::new(),
        reset: vec!["squall_worker".into()],
    };
    assert!(rt
        .block_on(c.set_log_levels("pt", &reset))
        .unwrap()
        .levels
        .is_empty());
    let r = rt
        .block_on(c.heartbeat(&heartbeat(&a, 450, vec![])))
        .unwrap();
    assert!(levels(&r).is_empty(), "{r:?}");

    rt.block_on(c.set_log_levels("pt", &set(&[("squall_worker", "TRACE", None)])))
        .unwrap();

    // A killed topology's windows, levels and errors go with it.
    rt.block_on(c.kill("pt", Some(0))).unwrap();
    assert!(rt.block_on(wait_until(Duration::from_secs(15), || async {
        state
            .topology_nodes(&id)
            .await
            .is_ok_and(|nodes| nodes.is_empty())
    })));
    let e = rt.block_on(c.page(&id)).unwrap_err();
    assert_eq!(e.status(), Some(404));
}

/// A new leader answers heartbeats with the levels stored by the one before.
#[test]
fn a_new_leader_hands_out_the_stored_levels() {
    let zk = ZooKeeperServer::start_temp().expect("ZooKeeper starts");
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let seeds = format!("nimbus.seeds: [\"{a1}\", \"{a2}\"]\n");
    let rt = rt();
    let state = rt.block_on(state(zk.port()));
    let first = spawn_nimbus(&rt, load(&nimbus_conf(dir.path(), zk.port(), p1, &seeds)));
    assert!(rt.block_on(wait_leader(&state, &a1, Duration::from_secs(30))));
    let _second = spawn_nimbus(&rt, load(&nimbus_conf(dir.path(), zk.port(), p2, &seeds)));
    rt.block_on(state.register_supervisor(&supervisor()))
        .unwrap();
    let c = client(&a1);
    let sha = rt
        .block_on(c.upload_binary(&binary(dir.path(), "levels")))
        .unwrap();
    let id = rt
        .block_on(c.submit(&request("lv", &sha, 1, 1)))
        .unwrap()
        .topology_id;
    let req = LogLevelRequest {
        set: BTreeMap::from([(
            "ROOT".into(),
            LogLevelSetting {
                level: "error".into(),
                timeout_secs: None,
            },
        )]),
        reset: vec![],
    };
    rt.block_on(c.set_log_levels("lv", &req)).unwrap();
    // Wait for the standby to hold the binary (it copies it) so it can lead.
    assert!(rt.block_on(wait_until(Duration::from_secs(30), || async {
        dir.path()
            .join(format!("nimbus-{p2}/local/nimbus/binaries/{sha}"))
            .is_file()
    })));
    first.cancel();
    assert!(rt.block_on(wait_leader(&state, &a2, Duration::from_secs(60))));
    let a = rt.block_on(state.assignment(&id)).unwrap().unwrap();
    let c2: NimbusClient = client(&a2);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        match rt.block_on(c2.heartbeat(&heartbeat(&a, 1, vec![]))) {
            Ok(r @ HeartbeatResponse::Assigned { .. }) => break levels(&r),
            other if std::time::Instant::now() > end => panic!("{other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(got, BTreeMap::from([("ROOT".into(), "ERROR".into())]));
}
