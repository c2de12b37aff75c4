//! The web UI in a real browser: Apache ZooKeeper, Nimbus, a supervisor, a logviewer
//! and `squall ui` as separate processes; WordCount and reliable-ids (whose relay bolt
//! fails every Nth id with a reported error) submitted with `squall jar`; headless
//! Chromium (Debian's, installed by `scripts/ensure-chromium.sh`) loads the cluster,
//! topology and component pages. The test checks what a person sees in the rendered
//! DOM — the topologies listed, non-zero counts, the graph drawn, WordCount's custom
//! gauges, an error with a link that opens the worker log at its line — and saves
//! screenshots under `target/ui-screenshots/`.

mod common;
use common::{example, free_port, spawn_daemon, stop_daemons, wait_until, word_count, SQUALL};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use squall_cluster::dev_zookeeper::ZooKeeperServer;

const PATIENCE: Duration = Duration::from_secs(120);

/// The Chromium binary, installed when missing.
fn chromium() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-chromium.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/ensure-chromium.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs headless Chromium on `url` with `extra` flags; its stdout.
fn browse(chrome: &str, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let done = wait_until(Duration::from_secs(90), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
    }
    let _ = child.wait();
    let out = reader.join().unwrap();
    assert!(done, "chromium did not finish loading {url}");
    out
}

fn dump_dom(chrome: &str, url: &str) -> String {
    browse(chrome, url, &["--dump-dom"])
}

fn screenshot(chrome: &str, url: &str, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    browse(
        chrome,
        url,
        &[
            &format!("--screenshot={}", file.display()),
            "--window-size=1400,900",
        ],
    );
    assert!(
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}",
        file.display()
    );
}

/// `GET http://addr/target`: (status, body).
fn get(addr: &str, target: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get_json(addr: &str, target: &str) -> Option<serde_json::Value> {
    match get(addr, target) {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The numbers in cells `data-f="FIELD"` of the table with id `table`.
fn cells(dom: &str, table: &str, field: &str) -> Vec<u64> {
    let Some(start) = dom.find(&format!("<table id=\"{table}\"")) else {
        return Vec::new();
    };
    let end = dom[start..]
        .find("</table>")
        .map_or(dom.len(), |e| start + e);
    let t = &dom[start..end];
    let key = format!("data-f=\"{field}\">");
    t.match_indices(&key)
        .filter_map(|(i, _)| {
            let rest = &t[i + key.len()..];
            let rest = rest
                .strip_prefix("<span class=\"timedout\">")
                .unwrap_or(rest);
            let rest = rest.strip_prefix("<span class=\"failed\">").unwrap_or(rest);
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Undoes the HTML escaping of an attribute value.
fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Reads `pattern` followed by an address from a child's stdout or stderr.
fn address_from(child: &mut Child, pattern: &'static str, log: PathBuf) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                if let Some(i) = line.find(pattern) {
                    let addr: String = line[i + pattern.len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    let _ = tx.send(addr);
                }
            }
        });
    }
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no '{pattern}ADDR' line"))
}

struct Cluster {
    _zk: ZooKeeperServer,
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_daemons(self.daemons.iter_mut().rev());
    }
}

impl Cluster {
    fn logs(&self) -> String {
        let mut out = String::new();
        for log in common::find_files(self.dir.path(), "daemon.log")
            .into_iter()
            .chain(common::find_files(self.dir.path(), "worker.log"))
        {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- {} ---\n", log.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

#[test]
fn the_ui_shows_a_running_cluster_in_a_real_browser() {
    let chrome = chromium();
    let zk = ZooKeeperServer::start_temp()
        .expect("ZooKeeper starts (scripts/ensure-zookeeper.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let lv_port = free_port();
    let base = format!(
        "storm.zookeeper.servers: [\"127.0.0.1\"]\n\
         storm.zookeeper.port: {}\n\
         storm.zookeeper.session.timeout: 6000\n\
         nimbus.seeds: [\"127.0.0.1\"]\n\
         nimbus.thrift.port: {}\n\
         storm.local.hostname: 127.0.0.1\n\
         supervisor.monitor.frequency.secs: 1\n\
         logviewer.port: {lv_port}\n\
         logviewer.host: 127.0.0.1\n\
         ui.host: 127.0.0.1\n",
        zk.port(),
        free_port()
    );
    let config = dir.path().join("storm.yaml");
    std::fs::write(&config, &base).unwrap();
    let mut c = Cluster {
        _zk: zk,
        dir,
        daemons: Vec::new(),
    };
    let local = |name: &str, extra: &str| {
        let d = c.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("storm.yaml");
        let text = format!(
            "{base}storm.local.dir: {}\n{extra}",
            d.join("local").display()
        );
        std::fs::write(&f, text).unwrap();
        f
    };
    let nimbus = local("nimbus", "");
    let ports = format!(
        "supervisor.slots.ports: [{}, {}, {}]\n",
        free_port(),
        free_port(),
        free_port()
    );
    let sup = local("sup", &ports);
    c.daemons.push(spawn_daemon(
        "nimbus",
        &nimbus,
        &nimbus.with_file_name("daemon.log"),
    ));
    c.daemons.push(spawn_daemon(
        "supervisor",
        &sup,
        &sup.with_file_name("daemon.log"),
    ));
    // The logviewer of the supervisor's machine: the same storm.local.dir.
    c.daemons.push(spawn_daemon(
        "logviewer",
        &sup,
        &sup.with_file_name("logviewer-daemon.log"),
    ));
    let ui_dir = c.dir.path().join("ui");
    std::fs::create_dir_all(&ui_dir).unwrap();
    let mut ui = Command::new(SQUALL)
        .args(["ui", "--config"])
        .arg(&config)
        .args(["-c", "ui.port=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ui_addr = address_from(&mut ui, "listening on http://", ui_dir.join("daemon.log"));
    c.daemons.push(ui);
    let a = ui_addr.as_str();

    let up = wait_until(PATIENCE, || {
        get_json(a, "/api/v1/cluster/summary").is_some_and(|s| s["supervisors"].as_u64() == Some(1))
    });
    assert!(up, "the UI never saw the supervisor:\n{}", c.logs());

    // WordCount, and reliable-ids whose relay fails every 25th id with an error.
    let jar = |args: &[&str]| {
        let out = Command::new(SQUALL)
            .arg("jar")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stdout(&out));
    };
    let wc = word_count();
    jar(&[
        wc.to_str().unwrap(),
        "wc",
        "--workers",
        "1",
        "--rate",
        "200",
        "--gauges",
    ]);
    let ids = example("reliable-ids");
    let ids_dir = c.dir.path().join("ids");
    jar(&[
        ids.to_str().unwrap(),
        "ids",
        "--dir",
        ids_dir.to_str().unwrap(),
        "--workers",
        "1",
        "--spouts",
        "1",
        "--bolts",
        "1",
        "--rate",
        "100",
        "--count",
        "1000000",
        "--reject-every",
        "25",
    ]);

    // Wait until the API shows counts and the relay's errors.
    let counting = wait_until(PATIENCE, || {
        get_json(a, "/api/v1/topology/wc?window=600").is_some_and(|t| {
            t["topologyStats"][0]["emitted"].as_u64().unwrap_or(0) > 0
                && t["bolts"]
                    .as_array()
                    .is_some_and(|b| b.iter().all(|b| b["executed"].as_u64().unwrap_or(0) > 0))
        })
    });
    assert!(counting, "WordCount never showed counts:\n{}", c.logs());
    let erring = wait_until(PATIENCE, || {
        get_json(a, "/api/v1/topology/ids/component/relay").is_some_and(|r| {
            r["componentErrors"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
    });
    assert!(
        erring,
        "the relay bolt never showed an error:\n{}",
        c.logs()
    );

    // The cluster page: both topologies, the leader, the supervisor.
    let url = |p: &str| format!("http://{a}{p}");
    let dom = dump_dom(&chrome, &url("/"));
    for shown in [">wc</a>", ">ids</a>", "Leader", "supervisors-table"] {
        assert!(dom.contains(shown), "cluster page lacks {shown}:\n{dom}");
    }
    assert_eq!(cells(&dom, "supervisors-table", "slotsTotal"), vec![3]);
    assert!(cells(&dom, "topologies-table", "workersTotal")
        .iter()
        .all(|&w| w == 1));
    screenshot(&chrome, &url("/"), "cluster");

    // The topology page: non-zero counts, the graph of spout -> split -> count.
    let dom = dump_dom(&chrome, &url("/topology.html?id=wc"));
    let emitted = cells(&dom, "topology-stats-table", "emitted");
    assert_eq!(emitted.len(), 4, "four windows:\n{dom}");
    assert!(emitted.iter().all(|&e| e > 0), "emitted {emitted:?}");
    assert!(cells(&dom, "bolts-table", "executed")
        .iter()
        .all(|&e| e > 0));
    assert!(
        dom.contains("<svg id=\"topology-graph\""),
        "no graph:\n{dom}"
    );
    for node in ["spout", "split", "count"] {
        assert!(
            dom.contains(&format!("data-component=\"{node}\"")),
            "graph lacks the node {node}:\n{dom}"
        );
    }
    assert!(dom.contains("data-from=\"spout\" data-to=\"split\""));
    assert!(dom.contains("data-from=\"split\" data-to=\"count\""));
    assert!(dom.contains("data-grouping=\"fields\""), "groupings shown");
    assert!(dom.contains("badge ACTIVE"));
    assert!(dom.contains("placement-table") && dom.contains("worker.log</a>"));
    screenshot(&chrome, &url("/topology.html?id=wc"), "topology");

    // The count bolt's custom gauges (`word-count --gauges`): the words it saw, summed
    // over its executors, in a Gauges table; a component without gauges has none.
    let distinct = wait_until(PATIENCE, || {
        get_json(a, "/api/v1/topology/wc/component/count")
            .is_some_and(|c| c["gauges"]["words.distinct"].as_u64() == Some(27))
    });
    assert!(distinct, "words.distinct never reached 27:\n{}", c.logs());
    let page = "/component.html?topology=wc&id=count";
    let dom = dump_dom(&chrome, &url(page));
    assert_eq!(cells(&dom, "gauges-table", "value"), vec![27], "{dom}");
    assert!(dom.contains(">words.distinct<"), "{dom}");
    assert!(!dom.contains("id=\"gauges-section\" hidden"), "{dom}");
    screenshot(&chrome, &url(page), "component-gauges");
    let dom = dump_dom(&chrome, &url("/component.html?topology=wc&id=split"));
    assert!(
        dom.contains("executor-stats-table"),
        "the page rendered:\n{dom}"
    );
    assert!(
        dom.contains("id=\"gauges-section\" hidden") && !dom.contains("gauges-table"),
        "{dom}"
    );

    // The component page of the relay: explicit fails apart from timeouts, the error
    // with a link to its line in the worker log.
    let page = "/component.html?topology=ids&id=relay&window=:all-time";
    let dom = dump_dom(&chrome, &url(page));
    assert!(dom.contains("relay rejected id"), "no error shown:\n{dom}");
    assert!(cells(&dom, "component-stats-table", "failedExplicit")
        .iter()
        .any(|&f| f > 0));
    assert!(cells(&dom, "executor-stats-table", "executed")
        .iter()
        .all(|&e| e > 0));
    let errors = &dom[dom
        .find("<table id=\"errors-table\"")
        .expect("errors table")..];
    let href = errors
        .split("href=\"")
        .nth(1)
        .and_then(|h| h.split('"').next())
        .map(unescape)
        .expect("the error has a log link");
    let prefix = format!("http://127.0.0.1:{lv_port}/api/v1/log?file=");
    assert!(
        href.starts_with(&prefix) && href.contains("&search="),
        "{href}"
    );
    screenshot(&chrome, &url(page), "component");
    // The link opens the worker log at the error's line, highlighted.
    let path = href
        .strip_prefix(&format!("http://127.0.0.1:{lv_port}"))
        .unwrap();
    let (status, log_page) = get(&format!("127.0.0.1:{lv_port}"), path);
    assert_eq!(status, 200, "{href}: {log_page}");
    let mark = log_page
        .split("<mark id=\"match\" class=\"match\">")
        .nth(1)
        .expect("the log page highlights the error's line");
    assert!(mark
        .split("</mark>")
        .next()
        .unwrap()
        .contains("relay rejected id"));
    screenshot(&chrome, &href, "worker-log");

    // The UI's search across the topology's workers finds the error lines too.
    let found = get_json(
        a,
        "/api/v1/topology/ids/logsearch?search=relay%20rejected%20id",
    )
    .expect("log search answers");
    let matches = found["matches"].as_array().unwrap();
    assert!(!matches.is_empty(), "{found}");
    assert_eq!(found["errors"].as_array().unwrap().len(), 0, "{found}");
    assert!(matches[0]["link"].as_str().unwrap().starts_with(&prefix));
    assert!(matches[0]["text"]
        .as_str()
        .unwrap()
        .contains("relay rejected id"));
    assert_eq!(
        get(a, "/api/v1/topology/no-such-topology/logsearch?search=x").0,
        404
    );
    assert_eq!(get(a, "/api/v1/topology/ids/logsearch").0, 400);
}
