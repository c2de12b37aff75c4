//! `squall logviewer` as a real process over a temporary `storm.local.dir` holding
//! worker logs: paging, search, tail, download, deep search and listing work, and
//! nothing outside `workers-artifacts` can be read (traversal, absolute paths, symlinks).

mod common;
use common::{stop_daemons, SQUALL};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "TOPSECRET-CONTENTS-4711";
const TOPO: &str = "wc-3-1700000000";

/// A logviewer process and its address.
struct Logviewer {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Drop for Logviewer {
    fn drop(&mut self) {
        stop_daemons([&mut self.child]);
    }
}

/// An HTTP answer.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET target` exactly as given (no normalisation of `..` or `%2e`), HTTP/1.0.
fn get(addr: &str, target: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: raw[split + 4..].to_vec(),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The live log of port 6700: 3000 numbered lines (about 150 KiB), every 250th an
/// error naming its line.
fn live_log() -> String {
    let mut s = String::new();
    for i in 1..=3000 {
        if i % 250 == 0 {
            s.push_str(&format!(
                "2024-01-01 ERROR relay rejected id {i} <b>bold</b>\n"
            ));
        } else {
            s.push_str(&format!("2024-01-01 INFO line {i:05} all fine here\n"));
        }
    }
    s
}

fn start() -> Logviewer {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let local = dir.join("local");
    let art = local.join("workers-artifacts");
    write(&art.join(TOPO).join("6700/worker.log"), &live_log());
    write(
        &art.join(TOPO).join("6700/worker.log.1"),
        "old line\nOLDONLY marker in a rotated file\nolder still\n",
    );
    write(
        &art.join(TOPO).join("6701/worker.log"),
        "INFO other worker\nERROR relay rejected id 9999\n",
    );
    write(&art.join("other-1-1/6700/worker.log"), "another topology\n");
    write(&dir.join("secret.txt"), &format!("{SECRET}\n"));
    std::os::unix::fs::symlink(dir.join("secret.txt"), art.join(TOPO).join("6700/evil.log"))
        .unwrap();
    std::os::unix::fs::symlink(&dir, art.join(TOPO).join("6702")).unwrap();
    std::os::unix::fs::symlink(&dir, art.join("escape")).unwrap();
    let conf = dir.join("storm.yaml");
    std::fs::write(
        &conf,
        format!(
            "storm.local.dir: {}\nlogviewer.port: 0\nlogviewer.host: 127.0.0.1\n",
            local.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(SQUALL)
        .arg("logviewer")
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let addr: String = line[i + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("logviewer logs 'logviewer listening on http://ADDR'");
    Logviewer {
        child,
        addr,
        _dir: tmp,
        dir,
    }
}

fn enc(s: &str) -> String {
    squall_cluster::rpc::encode(s)
}

#[test]
fn logviewer_pages_searches_and_serves_worker_logs() {
    let lv = start();
    let a = lv.addr.as_str();
    let file = format!("{TOPO}/6700/worker.log");
    let live = live_log();

    // The page: the last 50 KiB by default, with paging and a download link.
    let page = get(a, &format!("/api/v1/log?file={}", enc(&file)));
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.headers.contains("content-type: text/html"));
    let html = page.text();
    assert!(
        html.contains("line 02999 all fine here") && html.contains("rejected id 3000 "),
        "last line shown"
    );
    assert!(
        !html.contains("line 00001 "),
        "the first line is not in the last 50 KiB"
    );
    assert!(html.contains("prev</a>") && html.contains("/api/v1/download?file="));
    // Log text is escaped, never markup.
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;") && !html.contains("<b>bold</b>"));

    // Paging from the start.
    let first = get(
        a,
        &format!("/api/v1/log?file={}&start=0&length=200", enc(&file)),
    )
    .text();
    assert!(first.contains("line 00001 all fine here"));
    assert!(!first.contains("line 00010 "), "length limits the page");
    assert!(first.contains("next</a>"));

    // search: the page opens at the LAST line holding the text, highlighted.
    let found = get(
        a,
        &format!(
            "/api/v1/log?file={}&search={}",
            enc(&file),
            enc("relay rejected id")
        ),
    )
    .text();
    assert!(
        found.contains(
            "<mark id=\"match\" class=\"match\">2024-01-01 ERROR relay rejected id 3000 "
        ),
        "{}",
        &found[..found.len().min(3000)]
    );
    assert!(found.contains("scrollIntoView"));
    // An earlier occurrence, found by a more precise text.
    let early = get(
        a,
        &format!(
            "/api/v1/log?file={}&search={}",
            enc(&file),
            enc("rejected id 250 ")
        ),
    )
    .text();
    assert!(early
        .contains("<mark id=\"match\" class=\"match\">2024-01-01 ERROR relay rejected id 250 "));
    assert!(
        early.contains("line 00249 "),
        "context around the match is shown"
    );
    // Not in the live file: the rotated one is searched.
    let rotated = get(
        a,
        &format!("/api/v1/log?file={}&search=OLDONLY", enc(&file)),
    )
    .text();
    assert!(rotated
        .contains("<mark id=\"match\" class=\"match\">OLDONLY marker in a rotated file</mark>"));
    assert!(rotated.contains("worker.log.1"));
    let missing = get(
        a,
        &format!("/api/v1/log?file={}&search=NOWHERE-TEXT", enc(&file)),
    )
    .text();
    assert!(missing.contains("does not occur"));
    // offset: the line holding that byte, highlighted.
    let off = live.find("line 01234 ").unwrap() + 3;
    let at = get(a, &format!("/api/v1/log?file={}&offset={off}", enc(&file))).text();
    assert!(at.contains(
        "<mark id=\"match\" class=\"match\">2024-01-01 INFO line 01234 all fine here</mark>"
    ));

    // tail
    let t = get(a, &format!("/api/v1/tail?file={}&bytes=30", enc(&file)));
    assert_eq!(t.status, 200);
    assert!(t.headers.contains("content-type: text/plain"));
    assert_eq!(t.body, live.as_bytes()[live.len() - 30..]);

    // download: the whole file, as an attachment.
    let d = get(a, &format!("/api/v1/download?file={}", enc(&file)));
    assert_eq!(d.status, 200);
    assert!(
        d.headers.contains("content-disposition: attachment"),
        "{}",
        d.headers
    );
    assert_eq!(d.body, live.as_bytes());

    // search: JSON, 1-based line numbers, byte offsets.
    let s = get(
        a,
        &format!(
            "/api/v1/search?file={}&search-string={}&num-matches=3",
            enc(&file),
            enc("rejected id")
        ),
    )
    .json();
    let m = s["matches"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0]["line"], 250);
    let offset = m[0]["byteOffset"].as_u64().unwrap() as usize;
    assert!(live[offset..].starts_with("2024-01-01 ERROR relay rejected id 250 "));
    assert_eq!(m[2]["line"], 750);
    assert_eq!(s["more"], true);

    // deepSearch: every worker log of the topology here, rotated ones too.
    let deep = get(
        a,
        &format!(
            "/api/v1/deepSearch/{TOPO}?search-string={}",
            enc("rejected id 9999")
        ),
    )
    .json();
    let dm = deep["matches"].as_array().unwrap();
    assert_eq!(dm.len(), 1, "{deep}");
    assert_eq!(dm[0]["file"], format!("{TOPO}/6701/worker.log"));
    assert_eq!(dm[0]["port"], 6701);
    assert_eq!(dm[0]["line"], 2);
    let deep_old = get(
        a,
        &format!("/api/v1/deepSearch/{TOPO}?search-string=OLDONLY"),
    )
    .json();
    assert_eq!(
        deep_old["matches"][0]["file"],
        format!("{TOPO}/6700/worker.log.1")
    );

    // list
    let l = get(a, &format!("/api/v1/list?topologyId={TOPO}")).json();
    let files: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        vec![
            format!("{TOPO}/6700/worker.log"),
            format!("{TOPO}/6700/worker.log.1"),
            format!("{TOPO}/6701/worker.log"),
        ]
    );
    let all = get(a, "/api/v1/list").json();
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "other-1-1/6700/worker.log"));

    // Bad requests are clear JSON errors.
    let none = get(a, "/api/v1/log");
    assert_eq!(none.status, 400);
    assert!(none.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("file="));
    let gone = get(
        a,
        &format!(
            "/api/v1/tail?file={}",
            enc(&format!("{TOPO}/6799/worker.log"))
        ),
    );
    assert_eq!(gone.status, 404);
    assert_eq!(
        get(a, &format!("/api/v1/log?file={}&start=abc", enc(&file))).status,
        400
    );
    let long = "x".repeat(2000);
    assert_eq!(
        get(
            a,
            &format!("/api/v1/search?file={}&search-string={long}", enc(&file))
        )
        .status,
        400
    );
    assert_eq!(
        get(a, &format!("/api/v1/search?file={}", enc(&file))).status,
        400
    );
}

#[test]
fn logviewer_refuses_everything_outside_the_worker_log_directory() {
    let lv = start();
    let a = lv.addr.as_str();
    let secret_abs = lv.dir.join("secret.txt").display().to_string();
    // (query value as sent, expected status)
    let refused: Vec<(String, u16)> = vec![
        ("../secret.txt".into(), 400),
        ("..%2Fsecret.txt".into(), 400),
        ("%2e%2e/secret.txt".into(), 400),
        ("%2e%2e%2f%2e%2e%2fsecret.txt".into(), 400),
        (format!("{TOPO}/../../secret.txt"), 400),
        (format!("{TOPO}/6700/../../../secret.txt"), 400),
        (format!("./{TOPO}/6700/worker.log"), 400),
        (enc(&secret_abs), 400),
        ("/etc/passwd".into(), 400),
        ("%2Fetc%2Fpasswd".into(), 400),
        ("a%00b".into(), 400),
        (format!("{TOPO}/6700/evil.log"), 404),
        (format!("{TOPO}/6702/secret.txt"), 404),
        ("escape/secret.txt".into(), 404),
        (format!("{TOPO}/6700"), 400),
    ];
    for (file, want) in &refused {
        for endpoint in ["log", "download", "tail", "search"] {
            let target = format!("/api/v1/{endpoint}?file={file}&search-string=TOP&bytes=100");
            let r = get(a, &target);
            assert_eq!(r.status, *want, "{target}: {}", r.text());
            assert!(
                r.headers.contains("application/json"),
                "{target}: JSON error"
            );
            let body = r.json();
            assert!(
                body["error"].is_string() && body["errorMessage"].is_string(),
                "{body}"
            );
            assert!(!r.text().contains(SECRET), "{target} leaked the secret");
        }
        // Through the log page's search of rotated files too.
        let r = get(a, &format!("/api/v1/log?file={file}&search=TOPSECRET"));
        assert!(!r.text().contains(SECRET));
    }
    // Traversal in the path of deepSearch and list.
    for target in [
        "/api/v1/deepSearch/..?search-string=TOPSECRET".to_owned(),
        "/api/v1/deepSearch/%2e%2e?search-string=TOPSECRET".to_owned(),
        "/api/v1/deepSearch/..%2F..?search-string=TOPSECRET".to_owned(),
        "/api/v1/list?topologyId=..".to_owned(),
        "/api/v1/list?topologyId=..%2F..".to_owned(),
    ] {
        let r = get(a, &target);
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert!(!r.text().contains(SECRET), "{target} leaked the secret");
    }
    // A symlinked directory is not searched or listed through.
    let r = get(a, "/api/v1/deepSearch/escape?search-string=TOPSECRET");
    assert!(
        !r.text().contains(SECRET),
        "deepSearch leaked through a symlink"
    );
    let r = get(
        a,
        &format!("/api/v1/deepSearch/{TOPO}?search-string=TOPSECRET"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["matches"].as_array().unwrap().len(), 0);
    let r = get(a, "/api/v1/list");
    assert!(
        !r.text().contains("secret") && !r.text().contains("evil"),
        "{}",
        r.text()
    );
    // Raw traversal in the URL path reaches no file.
    for target in [
        "/../secret.txt",
        "/api/v1/../../secret.txt",
        "/%2e%2e/secret.txt",
    ] {
        let r = get(a, target);
        assert!(r.status == 404 || r.status == 400, "{target}: {}", r.status);
        assert!(!r.text().contains(SECRET));
    }
    let started = Instant::now();
    // And the daemon is still serving after all that.
    assert_eq!(
        get(
            a,
            &format!("/api/v1/tail?file={TOPO}/6701/worker.log&bytes=5")
        )
        .status,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
