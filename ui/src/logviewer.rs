//! The logviewer (`squall logviewer`): serves this machine's worker logs; and the UI's
//! search across the logs of all workers of a topology.
//!
//! Workers write `storm.local.dir/workers-artifacts/<topology-id>/<port>/worker.log`
//! (rotated into `worker.log.1`, `worker.log.2`, ...). The logviewer serves files under
//! that directory only, named relative to it (`file=<topology-id>/<port>/worker.log`):
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/log?file=F[&start=B][&length=N][&search=T][&offset=B]` | an HTML page of the file (its last 50 KiB by default) with paging; `search` opens the page at the **last** line containing `T` (in rotated files too when the live one lacks it), `offset` at the line holding byte `B`, and highlights that line |
//! | `GET /api/v1/download?file=F` | the file's bytes, as an attachment |
//! | `GET /api/v1/tail?file=F&bytes=N` | the last `N` bytes, `text/plain` |
//! | `GET /api/v1/search?file=F&search-string=T[&num-matches=N]` | JSON: the first `N` lines containing `T` |
//! | `GET /api/v1/deepSearch/<topology-id>?search-string=T[&num-matches=N]` | JSON: matches in every worker log of the topology on this machine, rotated ones included |
//! | `GET /api/v1/list[?topologyId=X]` | JSON: the log files |
//!
//! **Path safety**: a `file` must be relative, without `.`/`..` components or NUL, and its
//! canonical path must lie under the canonical `workers-artifacts` directory (a symlink
//! pointing out is refused). Files are read in bounded chunks (logs may be gigabytes),
//! and search strings are limited to [`MAX_SEARCH_LEN`] bytes. Errors answer
//! `{"error": "...", "errorMessage": "..."}` with 400 or 404.
//!
//! The UI daemon adds [`ui_routes`]: `GET /api/v1/topology/:id/logsearch?search=T` asks
//! the logviewer of every host running a worker of the topology and merges the answers.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use squall_api::Config;
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::{encode, RpcError};
use tokio_util::sync::CancellationToken;

use crate::{Ui, UiError};

/// The longest search string accepted, in bytes.
pub const MAX_SEARCH_LEN: usize = 1024;
/// What `/api/v1/log` shows without `length`: the last 50 KiB.
pub const DEFAULT_PAGE_BYTES: u64 = 50 * 1024;
/// The most `/api/v1/log` shows at once, and the most `/api/v1/tail` answers.
pub const MAX_PAGE_BYTES: u64 = 1024 * 1024;
/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;
/// Lines longer than this are searched in pieces of this size.
const MAX_LINE: usize = 256 * 1024;
/// A matched line's text is cut to this many bytes in JSON answers.
const MAX_MATCH_TEXT: usize = 1000;
/// Default and most matches a search answers per file.
const DEFAULT_MATCHES: usize = 10;
const MAX_MATCHES: usize = 1000;
/// Rotated files (`worker.log.N`) looked at, at most.
const MAX_ROTATED: u32 = 100;
/// Requests served at once; more wait.
const MAX_CONCURRENT: usize = 256;
/// How long open connections get to finish once the logviewer stops.
const DRAIN: Duration = Duration::from_secs(5);
/// How long the UI waits for one host's logviewer.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The directory of worker logs under `storm.local.dir`.
pub fn artifacts_dir(conf: &Config) -> Result<PathBuf, squall_api::ConfigError> {
    Ok(conf.local_dir()?.join("workers-artifacts"))
}

/// Runs the logviewer on `logviewer.host:logviewer.port` (port 0: any free port) until
/// `shutdown`; logs `logviewer listening on http://ADDR` once it accepts connections.
pub async fn start(conf: Config, shutdown: CancellationToken) -> Result<(), UiError> {
    let root = artifacts_dir(&conf)?;
    let addr = format!("{}:{}", conf.logviewer_host()?, conf.logviewer_port()?);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| UiError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| UiError::Bind {
        addr: addr.clone(),
        source,
    })?;
    tracing::info!(root = %root.display(), "logviewer listening on http://{local}");
    let app = routes(root).layer(tower::limit::GlobalConcurrencyLimitLayer::new(
        MAX_CONCURRENT,
    ));
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        r = server => r.map_err(|source| UiError::Bind { addr, source }),
        // Downloads still running after the drain are cut.
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        } => Ok(()),
    }
}

/// The logviewer's routes, serving the files under `root` (the `workers-artifacts`
/// directory; it may not exist yet).
pub fn routes(root: PathBuf) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/log", get(log_page))
        .route("/api/v1/download", get(download))
        .route("/api/v1/tail", get(tail))
        .route("/api/v1/search", get(search))
        .route("/api/v1/deepSearch/{topology}", get(deep_search))
        .route("/api/v1/list", get(list))
        .fallback(|| async { LogError::NotFound("no such logviewer endpoint".into()) })
        .with_state(Arc::new(Logs { root }))
}

struct Logs {
    root: PathBuf,
}

/// Why a logviewer request failed: answered as `{"error", "errorMessage"}`.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The request is malformed or refused (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such file here (404).
    #[error("{0}")]
    NotFound(String),
    /// Reading failed (500).
    #[error("{0}")]
    Io(String),
    /// A Nimbus or logviewer could not be reached (502).
    #[error("{0}")]
    Upstream(String),
}

impl IntoResponse for LogError {
    fn into_response(self) -> Response {
        let (status, short) = match &self {
            LogError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad request"),
            LogError::NotFound(_) => (StatusCode::NOT_FOUND, "not found"),
            LogError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the log"),
            LogError::Upstream(_) => (StatusCode::BAD_GATEWAY, "unreachable"),
        };
        let body = serde_json::json!({"error": short, "errorMessage": self.to_string()});
        (status, Json(body)).into_response()
    }
}

impl From<QueryRejection> for LogError {
    fn from(e: QueryRejection) -> Self {
        LogError::BadRequest(format!("bad query: {}", e.body_text()))
    }
}

type Result<T, E = LogError> = std::result::Result<T, E>;

/// Checks `file` (relative to the artifacts directory) and answers its canonical path,
/// which lies under the canonical `root`; refuses anything else.
pub fn resolve(root: &Path, file: &str) -> Result<PathBuf> {
    let rel = check_relative(file, "file")?;
    let root = canonical_root(root)?;
    let path = root.join(rel);
    let canonical = std::fs::canonicalize(&path)
        .map_err(|_| LogError::NotFound(format!("no log file '{file}' on this machine")))?;
    if !canonical.starts_with(&root) {
        return Err(LogError::NotFound(format!(
            "'{file}' is not a worker log file (it leads out of the worker log directory)"
        )));
    }
    if !canonical.is_file() {
        return Err(LogError::BadRequest(format!("'{file}' is not a file")));
    }
    Ok(canonical)
}

/// A relative path of plain components only.
fn check_relative<'a>(file: &'a str, what: &str) -> Result<&'a Path> {
    if file.is_empty() {
        return Err(LogError::BadRequest(format!("{what} is empty")));
    }
    if file.len() > 4096 || file.contains('\0') {
        return Err(LogError::BadRequest(format!(
            "{what} is not a usable path (too long, or holds NUL)"
        )));
    }
    let path = Path::new(file);
    if path.is_absolute() {
        return Err(LogError::BadRequest(format!(
            "{what} '{file}' is absolute: name it relative to the worker log directory (<topology-id>/<port>/worker.log)"
        )));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
        || file.split('/').any(|c| c == "." || c == "..")
    {
        return Err(LogError::BadRequest(format!(
            "{what} '{file}' may not contain '.' or '..' components"
        )));
    }
    Ok(path)
}

fn canonical_root(root: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(root).map_err(|_| {
        LogError::NotFound(format!(
            "no worker logs on this machine yet ({} does not exist)",
            root.display()
        ))
    })
}

fn check_search(text: Option<&str>, name: &str) -> Result<String> {
    let text = text.unwrap_or_default();
    if text.is_empty() {
        return Err(LogError::BadRequest(format!("{name} is missing or empty")));
    }
    if text.len() > MAX_SEARCH_LEN {
        return Err(LogError::BadRequest(format!(
            "{name} is {} bytes long; at most {MAX_SEARCH_LEN} are allowed",
            text.len()
        )));
    }
    Ok(text.to_owned())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Io(format!("log reader failed: {e}")))?
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |e| LogError::Io(format!("cannot read {}: {e}", path.display()))
}

/// Bytes `[start, start + len)` of `path` (fewer at its end).
fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut out = Vec::with_capacity(len.min(MAX_PAGE_BYTES) as usize);
    f.take(len).read_to_end(&mut out).map_err(io_err(path))?;
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One line holding the search text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineMatch {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's start.
    pub byte_offset: u64,
    /// The line (cut to 1000 bytes).
    pub text: String,
}

/// The first `max` lines of `path` containing `needle`, reading forward in chunks; and
/// whether more matches exist.
pub fn search_forward(
    path: &Path,
    needle: &[u8],
    max: usize,
) -> std::io::Result<(Vec<LineMatch>, bool)> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_start = 0u64; // offset of carry[0]
    let mut line_no = 1u64;
    let mut buf = vec![0u8; CHUNK];
    let mut eof = false;
    let mut matched_line = 0u64; // a long line cut in pieces matches once
    let mut push = |out: &mut Vec<LineMatch>, line: u64, start: u64, text: &[u8]| -> bool {
        if out.len() >= max {
            return false;
        }
        if matched_line == line {
            return true;
        }
        matched_line = line;
        let cut = &text[..text.len().min(MAX_MATCH_TEXT)];
        out.push(LineMatch {
            line,
            byte_offset: start,
            text: String::from_utf8_lossy(cut)
                .trim_end_matches('\r')
                .to_owned(),
        });
        true
    };
    while !eof {
        let n = f.read(&mut buf)?;
        if n == 0 {
            eof = true;
        } else {
            carry.extend_from_slice(&buf[..n]);
        }
        let mut from = 0;
        while let Some(i) = carry[from..].iter().position(|&b| b == b'\n') {
            let line = &carry[from..from + i];
            if find(line, needle) && !push(&mut out, line_no, carry_start + from as u64, line) {
                return Ok((out, true));
            }
            line_no += 1;
            from += i + 1;
        }
        carry.drain(..from);
        carry_start += from as u64;
        if carry.len() > MAX_LINE || (eof && !carry.is_empty()) {
            if find(&carry, needle) && !push(&mut out, line_no, carry_start, &carry) {
                return Ok((out, true));
            }
            // Keep the tail so that a match across the cut is still found.
            let keep = needle.len().saturating_sub(1).min(carry.len());
            let drop = carry.len() - keep;
            carry.drain(..drop);
            carry_start += drop as u64;
            if eof {
                break;
            }
        }
    }
    Ok((out, false))
}

/// The byte range `[start, end)` of the **last** line of `path` containing `needle`,
/// reading backward from the end in chunks.
pub fn search_last(path: &Path, needle: &[u8]) -> std::io::Result<Option<(u64, u64)>> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    // `pending` holds bytes [unread, unread + pending.len()): the head of a line that
    // began before `unread`, not yet searched.
    let mut pending: Vec<u8> = Vec::new();
    let mut unread = size;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let from = unread.saturating_sub(CHUNK as u64);
        let n = (unread - from) as usize;
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut buf[..n])?;
        let mut joined = Vec::with_capacity(n + pending.len());
        joined.extend_from_slice(&buf[..n]);
        joined.extend_from_slice(&pending);
        unread = from;
        // The complete lines of `joined` start after its first newline (or at its start
        // when it begins the file).
        let head_end = if from == 0 {
            0
        } else {
            match joined.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if joined.len() > MAX_LINE => 0,
                None => {
                    pending = joined;
                    continue;
                }
            }
        };
        let body = &joined[head_end..];
        // Lines from last to first; a trailing newline ends the last line.
        let mut end = body.len();
        if body.last() == Some(&b'\n') {
            end -= 1;
        }
        loop {
            let start = body[..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if find(&body[start..end], needle) {
                let base = from + head_end as u64;
                return Ok(Some((base + start as u64, base + end as u64)));
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        if from == 0 {
            return Ok(None);
        }
        pending = joined[..head_end].to_vec();
    }
}

/// The start of the line holding byte `offset` (at most [`MAX_LINE`] bytes back) and
/// the line's end.
fn line_around(path: &Path, offset: u64) -> std::io::Result<(u64, u64)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let offset = offset.min(size);
    let back = offset.saturating_sub(MAX_LINE as u64);
    f.seek(SeekFrom::Start(back))?;
    let mut before = vec![0u8; (offset - back) as usize];
    f.read_exact(&mut before)?;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(back, |i| back + i as u64 + 1);
    let mut after = Vec::new();
    (&mut f).take(MAX_LINE as u64).read_to_end(&mut after)?;
    let end = after
        .iter()
        .position(|&b| b == b'\n')
        .map_or(offset + after.len() as u64, |i| offset + i as u64);
    Ok((start, end))
}

// ---------------------------------------------------------------------------------
// Handlers

#[derive(Deserialize)]
struct FileQuery {
    file: Option<String>,
}

fn required_file(file: Option<&String>) -> Result<&str> {
    file.map(String::as_str)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            LogError::BadRequest("the query needs file=<topology-id>/<port>/worker.log".into())
        })
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Squall logviewer</title><h1>Squall logviewer</h1>\
         <p>Worker logs of this machine: <a href=\"/api/v1/list\">/api/v1/list</a>.</p>",
    )
}

#[derive(Deserialize)]
struct LogQuery {
    file: Option<String>,
    start: Option<u64>,
    length: Option<u64>,
    search: Option<String>,
    offset: Option<u64>,
}

/// What one log page shows.
struct PageView {
    /// The file as named in the request (relative).
    file: String,
    size: u64,
    start: u64,
    length: u64,
    bytes: Vec<u8>,
    /// The highlighted line's byte range.
    highlight: Option<(u64, u64)>,
    search: Option<String>,
    /// A note above the text (search not found, found in a rotated file).
    note: Option<String>,
}

async fn log_page(
    State(logs): State<Arc<Logs>>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(q) = query?;
    let file = required_file(q.file.as_ref())?.to_owned();
    let length = q
        .length
        .unwrap_or(DEFAULT_PAGE_BYTES)
        .clamp(1, MAX_PAGE_BYTES);
    let search = match q.search.as_deref() {
        None | Some("") => None,
        s => Some(check_search(s, "search")?),
    };
    let root = logs.root.clone();
    let view = blocking(move || {
        let path = resolve(&root, &file)?;
        let mut shown = (file.clone(), path.clone());
        let mut highlight = None;
        let mut note = None;
        if let Some(text) = &search {
            let mut candidates = vec![(file.clone(), path.clone())];
            // The live file first, then its rotated predecessors, newest first.
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if !name.contains(".log.") {
                    for i in 1..=MAX_ROTATED {
                        let rel = format!("{file}.{i}");
                        match resolve(&root, &rel) {
                            Ok(p) => candidates.push((rel, p)),
                            Err(_) => break,
                        }
                    }
                }
            }
            for (rel, p) in candidates {
                if let Some(range) = search_last(&p, text.as_bytes()).map_err(io_err(&p))? {
                    if rel != file {
                        note = Some(format!(
                            "'{text}' is not in {file}; its last occurrence is in {rel}"
                        ));
                    }
                    shown = (rel, p);
                    highlight = Some(range);
                    break;
                }
            }
            if highlight.is_none() {
                note = Some(format!(
                    "'{text}' does not occur in {file} or its rotated files"
                ));
            }
        } else if let Some(offset) = q.offset {
            highlight = Some(line_around(&path, offset).map_err(io_err(&path))?);
        }
        let (rel, p) = shown;
        let size = std::fs::metadata(&p).map_err(io_err(&p))?.len();
        let start = match (highlight, q.start) {
            (Some((s, _)), _) => s.saturating_sub(length / 2),
            (None, Some(s)) => s.min(size),
            (None, None) => size.saturating_sub(length),
        };
        let bytes = read_range(&p, start, length)?;
        Ok(PageView {
            file: rel,
            size,
            start,
            length,
            bytes,
            highlight,
            search,
            note,
        })
    })
    .await?;
    Ok(Html(render_page(&view)).into_response())
}

/// Escapes text for HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Drops terminal colour codes (`ESC [ ... letter`) a worker may have written.
fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\u{1b}') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Log bytes as HTML text: decoded, colour codes dropped, escaped.
fn log_html(bytes: &[u8]) -> String {
    escape_html(&strip_ansi(&String::from_utf8_lossy(bytes)))
}

fn render_page(v: &PageView) -> String {
    let f = encode(&v.file);
    let link = |start: u64| {
        format!(
            "/api/v1/log?file={f}&amp;start={start}&amp;length={}",
            v.length
        )
    };
    let end = v.start + v.bytes.len() as u64;
    let mut nav = String::new();
    nav.push_str(&format!("<a href=\"{}\">first</a>", link(0)));
    if v.start > 0 {
        nav.push_str(&format!(
            " | <a href=\"{}\">prev</a>",
            link(v.start.saturating_sub(v.length))
        ));
    } else {
        nav.push_str(" | prev");
    }
    if end < v.size {
        nav.push_str(&format!(" | <a href=\"{}\">next</a>", link(end)));
    } else {
        nav.push_str(" | next");
    }
    nav.push_str(&format!(
        " | <a href=\"/api/v1/log?file={f}&amp;length={}\">last</a> | <a href=\"/api/v1/download?file={f}\">download</a>",
        v.length
    ));
    let mut text = String::with_capacity(v.bytes.len() + 256);
    match v.highlight {
        Some((hs, he)) if hs < end && he >= v.start => {
            let a = (hs.max(v.start) - v.start) as usize;
            let b = (he.min(end) - v.start) as usize;
            text.push_str(&log_html(&v.bytes[..a]));
            text.push_str("<mark id=\"match\" class=\"match\">");
            text.push_str(&log_html(&v.bytes[a..b]));
            text.push_str("</mark>");
            text.push_str(&log_html(&v.bytes[b..]));
        }
        _ => text.push_str(&log_html(&v.bytes)),
    }
    let note = v
        .note
        .as_deref()
        .map(|n| format!("<p class=\"note\">{}</p>", escape_html(n)))
        .unwrap_or_default();
    let scroll = if v.highlight.is_some() {
        "<script>var m=document.getElementById('match');if(m)m.scrollIntoView({block:'center'});</script>"
    } else {
        "<script>window.scrollTo(0,document.body.scrollHeight);</script>"
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title} - Squall logviewer</title>\
<style>body{{font-family:system-ui,sans-serif;margin:0}}header{{position:sticky;top:0;background:#f4f6f8;padding:.5em 1em;border-bottom:1px solid #ccd}}\
pre{{margin:0;padding:1em;font-size:12px;white-space:pre-wrap;word-break:break-all}}mark.match{{background:#ffe066;outline:2px solid #e0a800}}.note{{color:#8a5a00;margin:.3em 0}}\
form{{display:inline;margin-left:1em}}</style></head><body><header><strong>{title}</strong> \
<span class=\"range\">bytes {start}-{end} of {size}</span> <nav>{nav}\
<form action=\"/api/v1/log\" method=\"get\"><input type=\"hidden\" name=\"file\" value=\"{file_attr}\">\
<input name=\"search\" placeholder=\"search\" value=\"{search}\"> <button>find last</button></form></nav>{note}</header>\
<pre id=\"log\">{text}</pre>{scroll}</body></html>\n",
        title = escape_html(&v.file),
        start = v.start,
        size = v.size,
        file_attr = escape_html(&v.file),
        search = escape_html(v.search.as_deref().unwrap_or("")),
    )
}

async fn download(
    State(logs): State<Arc<Logs>>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(q) = query?;
    let file = required_file(q.file.as_ref())?.to_owned();
    let root = logs.root.clone();
    let f2 = file.clone();
    let path = blocking(move || resolve(&root, &f2)).await?;
    let handle = tokio::fs::File::open(&path).await.map_err(io_err(&path))?;
    let name: String = file
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let body =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(handle, CHUNK));
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct TailQuery {
    file: Option<String>,
    bytes: Option<u64>,
}

async fn tail(
    State(logs): State<Arc<Logs>>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(q) = query?;
    let file = required_file(q.file.as_ref())?.to_owned();
    let want = q.bytes.unwrap_or(4096).min(MAX_PAGE_BYTES);
    let root = logs.root.clone();
    let bytes = blocking(move || {
        let path = resolve(&root, &file)?;
        let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        read_range(&path, size.saturating_sub(want), want)
    })
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Bytes::from(bytes),
    )
        .into_response())
}

#[derive(Deserialize)]
struct SearchQuery {
    file: Option<String>,
    #[serde(rename = "search-string")]
    search_string: Option<String>,
    #[serde(rename = "num-matches")]
    num_matches: Option<usize>,
}

/// The answer of `/api/v1/search`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchAnswer {
    /// The file searched.
    pub file: String,
    /// What was searched for.
    pub search_string: String,
    /// The first matching lines.
    pub matches: Vec<LineMatch>,
    /// Whether more matches exist than were asked for.
    pub more: bool,
}

fn num_matches(n: Option<usize>) -> usize {
    n.unwrap_or(DEFAULT_MATCHES).clamp(1, MAX_MATCHES)
}

async fn search(
    State(logs): State<Arc<Logs>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchAnswer>> {
    let Query(q) = query?;
    let file = required_file(q.file.as_ref())?.to_owned();
    let text = check_search(q.search_string.as_deref(), "search-string")?;
    let max = num_matches(q.num_matches);
    let root = logs.root.clone();
    let answer = blocking(move || {
        let path = resolve(&root, &file)?;
        let (matches, more) = search_forward(&path, text.as_bytes(), max).map_err(io_err(&path))?;
        Ok(SearchAnswer {
            file,
            search_string: text,
            matches,
            more,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// One match of `/api/v1/deepSearch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeepMatch {
    /// The file, relative to the worker log directory (`<topology-id>/<port>/worker.log`).
    pub file: String,
    /// The worker port.
    pub port: u16,
    /// The line.
    #[serde(flatten)]
    pub matched: LineMatch,
}

/// The answer of `/api/v1/deepSearch/<topology-id>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeepSearchAnswer {
    /// The topology.
    pub topology_id: String,
    /// What was searched for.
    pub search_string: String,
    /// Matches, by file (live file before its rotated ones), then by line.
    pub matches: Vec<DeepMatch>,
}

#[derive(Deserialize)]
struct DeepQuery {
    #[serde(rename = "search-string")]
    search_string: Option<String>,
    #[serde(rename = "num-matches")]
    num_matches: Option<usize>,
}

/// The worker log files (live and rotated) of one topology, relative to `root`,
/// ordered by port, then live file first.
fn topology_logs(root: &Path, topology: &str) -> Result<Vec<(String, u16, PathBuf)>> {
    let croot = canonical_root(root)?;
    let dir = croot.join(topology);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut ports: Vec<u16> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    ports.sort_unstable();
    let mut out = Vec::new();
    for port in ports {
        let mut names = vec!["worker.log".to_owned()];
        names.extend((1..=MAX_ROTATED).map(|i| format!("worker.log.{i}")));
        for name in names {
            let rel = format!("{topology}/{port}/{name}");
            match resolve(root, &rel) {
                Ok(p) => out.push((rel, port, p)),
                Err(_) if name == "worker.log" => continue,
                Err(_) => break,
            }
        }
    }
    Ok(out)
}

async fn deep_search(
    State(logs): State<Arc<Logs>>,
    UrlPath(topology): UrlPath<String>,
    query: Result<Query<DeepQuery>, QueryRejection>,
) -> Result<Json<DeepSearchAnswer>> {
    let Query(q) = query?;
    check_single(&topology, "topology id")?;
    let text = check_search(q.search_string.as_deref(), "search-string")?;
    let max = num_matches(q.num_matches);
    let root = logs.root.clone();
    let answer = blocking(move || {
        let mut matches = Vec::new();
        for (rel, port, path) in topology_logs(&root, &topology)? {
            if matches.len() >= MAX_MATCHES {
                break;
            }
            let (found, _) = search_forward(&path, text.as_bytes(), max).map_err(io_err(&path))?;
            matches.extend(found.into_iter().map(|m| DeepMatch {
                file: rel.clone(),
                port,
                matched: m,
            }));
        }
        matches.truncate(MAX_MATCHES);
        Ok(DeepSearchAnswer {
            topology_id: topology,
            search_string: text,
            matches,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// A single plain path component (a topology id).
fn check_single(s: &str, what: &str) -> Result<()> {
    let p = check_relative(s, what)?;
    if p.components().count() != 1 || s.contains('/') {
        return Err(LogError::BadRequest(format!(
            "{what} '{s}' may not contain '/'"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "topologyId")]
    topology_id: Option<String>,
}

async fn list(
    State(logs): State<Arc<Logs>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<String>>> {
    let Query(q) = query?;
    if let Some(t) = &q.topology_id {
        check_single(t, "topologyId")?;
    }
    let root = logs.root.clone();
    let files = blocking(move || {
        let topologies = match q.topology_id {
            Some(t) => vec![t],
            None => {
                let croot = match canonical_root(&root) {
                    Ok(r) => r,
                    Err(_) => return Ok(Vec::new()),
                };
                let mut ts: Vec<String> = std::fs::read_dir(&croot)
                    .map_err(io_err(&croot))?
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect();
                ts.sort();
                ts
            }
        };
        let mut out = Vec::new();
        for t in topologies {
            match topology_logs(&root, &t) {
                Ok(files) => out.extend(files.into_iter().map(|(rel, _, _)| rel)),
                Err(LogError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(files))
}

// ---------------------------------------------------------------------------------
// The UI's search across a topology's workers

/// Routes the UI daemon adds for searching a topology's logs across its workers.
pub fn ui_routes() -> Router<Arc<Ui>> {
    Router::new().route("/api/v1/topology/{id}/logsearch", get(ui_log_search))
}

#[derive(Deserialize)]
struct UiSearchQuery {
    search: Option<String>,
    #[serde(rename = "num-matches")]
    num_matches: Option<usize>,
}

/// A match of the UI's log search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UiMatch {
    /// The worker's host.
    pub host: String,
    /// The worker's port.
    pub port: u16,
    /// The file, relative to the worker log directory.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// The line.
    pub text: String,
    /// The logviewer page opened at this line.
    pub link: String,
}

/// A host whose logviewer did not answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostError {
    /// The host.
    pub host: String,
    /// What went wrong.
    pub error: String,
}

/// The answer of the UI's `/api/v1/topology/:id/logsearch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UiSearchAnswer {
    /// The topology id.
    pub topology_id: String,
    /// What was searched for.
    pub search: String,
    /// Matches of every host, by host then file and line.
    pub matches: Vec<UiMatch>,
    /// Hosts that could not be searched.
    pub errors: Vec<HostError>,
}

fn rpc_error(e: RpcError) -> LogError {
    match e {
        RpcError::Api {
            status: 404,
            message,
        } => LogError::NotFound(message),
        RpcError::Api { status, message } if (400..500).contains(&status) => {
            LogError::BadRequest(message)
        }
        e => LogError::Upstream(e.to_string()),
    }
}

async fn ui_log_search(
    State(ui): State<Arc<Ui>>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<UiSearchQuery>, QueryRejection>,
) -> Result<Json<UiSearchAnswer>> {
    let Query(q) = query?;
    let text = check_search(q.search.as_deref(), "search")?;
    let max = num_matches(q.num_matches);
    let page = topology_page(&ui, &id).await?;
    let topology_id = page.summary.id.clone();
    let lv_port = ui
        .conf
        .logviewer_port()
        .map_err(|e| LogError::BadRequest(e.to_string()))?;
    let hosts: BTreeSet<String> = page
        .workers
        .iter()
        .map(|w| w.host.clone())
        .chain(page.executors.iter().map(|e| e.host.clone()))
        .filter(|h| !h.is_empty())
        .collect();
    let client = http_client();
    let searches = hosts.into_iter().map(|host| {
        let client = client.clone();
        let url = format!(
            "http://{}:{lv_port}/api/v1/deepSearch/{}?search-string={}&num-matches={max}",
            bracket(&host),
            encode(&topology_id),
            encode(&text)
        );
        async move {
            let r = tokio::time::timeout(
                FAN_OUT_TIMEOUT,
                fetch_json::<DeepSearchAnswer>(&client, &url),
            )
            .await;
            let r = match r {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {FAN_OUT_TIMEOUT:?}")),
            };
            (host, r)
        }
    });
    let results = futures_join_all(searches).await;
    let mut matches = Vec::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok(answer) => matches.extend(answer.matches.into_iter().map(|m| UiMatch {
                link: format!(
                    "http://{}:{lv_port}/api/v1/log?file={}&offset={}",
                    bracket(&host),
                    encode(&m.file),
                    m.matched.byte_offset
                ),
                host: host.clone(),
                port: m.port,
                file: m.file,
                line: m.matched.line,
                text: m.matched.text,
            })),
            Err(error) => errors.push(HostError {
                host: host.clone(),
                error: format!("logviewer at {host}:{lv_port}: {error}"),
            }),
        }
    }
    Ok(Json(UiSearchAnswer {
        topology_id,
        search: text,
        matches,
        errors,
    }))
}

/// Nimbus's view of a topology, from the first Nimbus of `nimbus.seeds` that answers.
async fn topology_page(ui: &Ui, id: &str) -> Result<squall_cluster::rpc::TopologyPage> {
    ui.nimbus(|c| async move { c.with_timeout(FAN_OUT_TIMEOUT).page(id).await })
        .await
        .map_err(rpc_error)
}

/// A bare IPv6 address in brackets, for URLs.
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

fn http_client() -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// The most bytes read from a logviewer's answer.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
) -> std::result::Result<T, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
    let resp = client.get(uri).await.map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    })?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("{status}: {msg}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
}

/// Runs the futures concurrently; their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn paths_outside_the_log_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("workers-artifacts");
        write(&root, "t-1/6700/worker.log", "hello\n");
        write(tmp.path(), "secret.txt", "s3cret\n");
        std::os::unix::fs::symlink(
            tmp.path().join("secret.txt"),
            root.join("t-1/6700/link.log"),
        )
        .unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("t-1/up")).unwrap();
        assert!(resolve(&root, "t-1/6700/worker.log").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../secret.txt",
            "t-1/../../secret.txt",
            "t-1/./6700/worker.log",
            "a\0b",
        ] {
            assert!(
                matches!(resolve(&root, bad), Err(LogError::BadRequest(_))),
                "{bad:?}"
            );
        }
        for out in [
            "t-1/6700/link.log",
            "t-1/up/secret.txt",
            "t-1/6700/missing.log",
        ] {
            assert!(
                matches!(resolve(&root, out), Err(LogError::NotFound(_))),
                "{out}"
            );
        }
        assert!(matches!(
            resolve(&root, "t-1/6700"),
            Err(LogError::BadRequest(_))
        ));
    }

    #[test]
    fn forward_search_counts_lines_and_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        // Lines longer than a chunk, so matches straddle chunk boundaries.
        let mut text = String::new();
        let mut expect = Vec::new();
        for i in 0..200u64 {
            let line = if i % 7 == 3 {
                format!("{} needle {i}", "x".repeat(1000 + i as usize * 13))
            } else {
                format!("line {i} {}", "y".repeat(700))
            };
            if i % 7 == 3 {
                expect.push((i + 1, text.len() as u64));
            }
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("last needle without newline");
        expect.push((
            201,
            (text.len() - "last needle without newline".len()) as u64,
        ));
        let p = write(tmp.path(), "f.log", &text);
        let (all, more) = search_forward(&p, b"needle", 1000).unwrap();
        assert!(!more);
        let got: Vec<(u64, u64)> = all.iter().map(|m| (m.line, m.byte_offset)).collect();
        assert_eq!(got, expect);
        let (three, more) = search_forward(&p, b"needle", 3).unwrap();
        assert_eq!(three.len(), 3);
        assert!(more);
        // Long lines are cut in answers.
        assert_eq!(three[0].text.len(), MAX_MATCH_TEXT);
        let (short, _) = search_forward(&p, b"without", 5).unwrap();
        assert_eq!(short[0].text, "last needle without newline");
    }

    #[test]
    fn backward_search_finds_the_last_matching_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut last = None;
        for i in 0..3000 {
            let line = format!(
                "{i:05} {}",
                if i % 500 == 17 { "ERROR boom" } else { "fine" }
            );
            if i % 500 == 17 {
                last = Some((text.len() as u64, (text.len() + line.len()) as u64));
            }
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(&"z".repeat(200_000));
        text.push('\n');
        let p = write(tmp.path(), "f.log", &text);
        assert_eq!(search_last(&p, b"ERROR boom").unwrap(), last);
        assert_eq!(search_last(&p, b"absent").unwrap(), None);
        let first = search_last(&p, b"00000 fine").unwrap().unwrap();
        assert_eq!(first, (0, 10));
        let p2 = write(tmp.path(), "g.log", "only line");
        assert_eq!(search_last(&p2, b"line").unwrap(), Some((0, 9)));
        let (s, e) = line_around(&p, last.unwrap().0 + 4).unwrap();
        assert_eq!((s, e), last.unwrap());
    }

    #[test]
    fn colour_codes_are_dropped_from_pages() {
        let line = "\u{1b}[2m2024\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m boom <x>";
        assert_eq!(log_html(line.as_bytes()), "2024 ERROR boom &lt;x&gt;");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
