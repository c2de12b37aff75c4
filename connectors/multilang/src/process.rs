//! One running subprocess and the three threads that do its I/O: a writer (messages
//! to its stdin, heartbeats every second for bolts), a reader (messages from its
//! stdout, parsed) and a stderr reader (lines into the worker log and a tail kept for
//! error reports). The executor thread never touches a pipe: it exchanges with these
//! threads through channels, so a hung or flooding subprocess cannot block it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, unbounded, Receiver, RecvTimeoutError, Select, Sender};

use crate::protocol::{self, ShellMsg, HEARTBEAT_STREAM, SYSTEM_TASK};

/// How many stderr lines an error report quotes.
const STDERR_TAIL: usize = 20;
/// Parsed messages buffered between the reader thread and the executor; beyond this the
/// reader stops reading and the subprocess blocks on its stdout (backpressure).
const EVENT_BUFFER: usize = 16 * 1024;
/// A message larger than this without its `end` line is garbage.
const MAX_MESSAGE: usize = 64 << 20;

/// Everything needed to start (and restart) the subprocess.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory (the unpacked resources), or the worker's own.
    pub cwd: Option<PathBuf>,
    /// The handshake message, written first.
    pub handshake: Vec<u8>,
    /// Heartbeat period (bolts); `None` for spouts.
    pub heartbeat: Option<Duration>,
    /// Tuples queued for the subprocess's stdin at most (`topology.shellbolt.max.pending`).
    pub max_pending: usize,
    /// How long the handshake may take (`topology.subprocess.timeout.secs`).
    pub timeout: Duration,
    /// Component and task, for log lines.
    pub component: String,
    /// The task id.
    pub task: u32,
}

/// What the reader thread saw.
#[derive(Debug)]
pub(crate) enum Event {
    /// A well-formed message.
    Msg(ShellMsg),
    /// Something that is not a message of the protocol.
    Garbage(String),
    /// The subprocess closed its stdout (it exited, most likely).
    Closed,
}

/// A started subprocess that answered the handshake.
pub(crate) struct ShellProcess {
    child: Child,
    /// The pid the subprocess answered in the handshake.
    pub pid: u32,
    control: Option<Sender<Vec<u8>>>,
    tuples: Option<Sender<Vec<u8>>>,
    /// Messages from the subprocess.
    pub events: Receiver<Event>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    last_heard: Arc<AtomicU64>,
    epoch: Instant,
    /// When it was started.
    pub started: Instant,
}

/// Why a tuple could not be queued.
pub(crate) enum QueueError {
    /// `max_pending` tuples are queued already: the message is given back.
    Full(Vec<u8>),
    /// The writer is gone (the subprocess died): the message is given back.
    Gone(Vec<u8>),
}

impl ShellProcess {
    /// Starts the subprocess and does the handshake. The error says what went wrong,
    /// with the last lines the subprocess wrote to stderr.
    pub fn start(launch: &Launch) -> Result<ShellProcess, String> {
        let (program, args) = launch
            .command
            .split_first()
            .ok_or_else(|| "the command is empty".to_owned())?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &launch.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let cwd = launch
                .cwd
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default();
            format!("cannot start {:?}{cwd}: {e}", launch.command)
        })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let epoch = Instant::now();
        let last_heard = Arc::new(AtomicU64::new(0));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let name = format!("{}-{}", launch.component, launch.task);

        let stderr_thread = {
            let tail = stderr.clone();
            let (component, task, pid) = (launch.component.clone(), launch.task, child.id());
            std::thread::Builder::new()
                .name(format!("shell-err-{name}"))
                .spawn(move || read_stderr(stderr_pipe, tail, &component, task, pid))
                .map_err(|e| format!("cannot start a thread: {e}"))?
        };
        let (event_tx, events) = bounded(EVENT_BUFFER);
        {
            let heard = last_heard.clone();
            std::thread::Builder::new()
                .name(format!("shell-out-{name}"))
                .spawn(move || read_messages(stdout, event_tx, heard, epoch))
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        let (control, control_rx) = unbounded();
        let (tuples, tuples_rx) = bounded(launch.max_pending.max(1));
        {
            let heartbeat = launch.heartbeat;
            std::thread::Builder::new()
                .name(format!("shell-in-{name}"))
                .spawn(move || write_messages(stdin, control_rx, tuples_rx, heartbeat))
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        let mut process = ShellProcess {
            child,
            pid: 0,
            control: Some(control),
            tuples: Some(tuples),
            events,
            stderr,
            stderr_thread: Some(stderr_thread),
            last_heard,
            epoch,
            started: epoch,
        };
        process.send(launch.handshake.clone());
        match process.handshake(launch) {
            Ok(pid) => {
                process.pid = pid;
                Ok(process)
            }
            Err(why) => {
                let status = process.kill();
                Err(format!(
                    "{why}{}{}",
                    status.map(|s| format!(" ({s})")).unwrap_or_default(),
                    process.stderr_report()
                ))
            }
        }
    }

    fn handshake(&mut self, launch: &Launch) -> Result<u32, String> {
        let deadline = Instant::now() + launch.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Msg(ShellMsg::Pid(pid))) => return Ok(pid),
                // Tolerated before the answer: some libraries log while importing.
                Ok(Event::Msg(ShellMsg::Log { msg, level })) => {
                    crate::shell::log_line(&launch.component, launch.task, 0, level, &msg)
                }
                Ok(Event::Msg(other)) => {
                    return Err(format!(
                        "answered the handshake with {other:?} instead of {{\"pid\": N}}"
                    ))
                }
                Ok(Event::Garbage(g)) => return Err(format!("answered the handshake with {g}")),
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err("exited before answering the handshake".into())
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                    "did not answer the handshake within {} s (topology.subprocess.timeout.secs)",
                    launch.timeout.as_secs_f64()
                ))
                }
            }
        }
    }

    /// Queues a control message (task ids, spout commands): written before any queued
    /// tuple.
    pub fn send(&self, msg: Vec<u8>) {
        if let Some(c) = &self.control {
            let _ = c.send(msg);
        }
    }

    /// Queues a tuple for a bolt, unless `max_pending` are queued already.
    pub fn queue_tuple(&self, msg: Vec<u8>) -> Result<(), QueueError> {
        let Some(t) = &self.tuples else {
            return Err(QueueError::Gone(msg));
        };
        match t.try_send(msg) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(m)) => Err(QueueError::Full(m)),
            Err(crossbeam_channel::TrySendError::Disconnected(m)) => Err(QueueError::Gone(m)),
        }
    }

    /// Time since the subprocess last sent a message (or since it started).
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.last_heard.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(heard)
    }

    /// The exit status, if it has exited (waits up to `patience` for it).
    pub fn exit_status(&mut self, patience: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }

    /// Kills the subprocess (if still running), reaps it and stops the I/O threads.
    /// Returns its exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.control = None;
        self.tuples = None;
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        // Let the stderr thread read the last lines (a traceback, typically).
        if let Some(t) = self.stderr_thread.take() {
            let deadline = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        status
    }

    /// The last stderr lines, formatted for an error report (empty when there are none).
    pub fn stderr_report(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if tail.is_empty() {
            return "; it wrote nothing to stderr".to_owned();
        }
        let mut s = format!("; its last {} stderr lines:", tail.len());
        for line in tail.iter() {
            s.push_str("\n    ");
            s.push_str(line);
        }
        s
    }
}

impl Drop for ShellProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_stderr(
    pipe: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    component: &str,
    task: u32,
    pid: u32,
) {
    let mut r = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                tracing::info!(target: "squall_multilang::stderr", component, task, pid, "{text}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(text.to_owned());
            }
        }
    }
}

fn read_messages(
    stdout: ChildStdout,
    events: Sender<Event>,
    heard: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    let mut msg = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::Closed);
                return;
            }
            Ok(_) => {}
        }
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed != b"end" {
            msg.extend_from_slice(&line);
            if msg.len() > MAX_MESSAGE {
                let _ = events.send(Event::Garbage(format!(
                    "more than {} MiB of output without an `end` line, starting {}",
                    MAX_MESSAGE >> 20,
                    snippet(&msg)
                )));
                msg.clear();
            }
            continue;
        }
        let event = match protocol::parse(&msg) {
            Ok(m) => {
                heard.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                Event::Msg(m)
            }
            Err(why) => Event::Garbage(format!("{} ({why})", snippet(&msg))),
        };
        msg.clear();
        if events.send(event).is_err() {
            return;
        }
    }
}

/// The start of `bytes`, quoted, for an error message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    let more = if bytes.len() > 300 { "..." } else { "" };
    format!("{:?}{more}", text.trim_end())
}

fn write_messages(
    stdin: ChildStdin,
    control: Receiver<Vec<u8>>,
    tuples: Receiver<Vec<u8>>,
    heartbeat: Option<Duration>,
) {
    let mut w = BufWriter::with_capacity(64 * 1024, stdin);
    let mut next_heartbeat = heartbeat.map(|d| Instant::now() + d);
    let mut beats = 0u64;
    let mut buf = Vec::new();
    let no_tuples = never();
    let tuples = if heartbeat.is_some() {
        &tuples
    } else {
        &no_tuples
    };
    loop {
        if let (Some(due), Some(every)) = (next_heartbeat, heartbeat) {
            let now = Instant::now();
            if now >= due {
                beats += 1;
                buf.clear();
                protocol::write_tuple(
                    &mut buf,
                    &format!("-{beats}"),
                    None,
                    HEARTBEAT_STREAM,
                    SYSTEM_TASK,
                    &[],
                );
                if w.write_all(&buf).and_then(|()| w.flush()).is_err() {
                    return;
                }
                next_heartbeat = Some(now + every);
            }
        }
        // Control messages (task ids, commands) go before queued tuples, as in Storm.
        let next = match control.try_recv() {
            Ok(m) => Ok(m),
            Err(_) => tuples.try_recv(),
        };
        let msg = match next {
            Ok(m) => m,
            Err(_) => {
                // Nothing queued: everything written so far goes out now.
                if w.flush().is_err() {
                    return;
                }
                let wait = next_heartbeat
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(3600));
                let mut sel = Select::new();
                let c = sel.recv(&control);
                let t = sel.recv(tuples);
                match sel.select_timeout(wait) {
                    Ok(op) if op.index() == c => match op.recv(&control) {
                        Ok(m) => m,
                        Err(_) => return,
                    },
                    Ok(op) => {
                        debug_assert_eq!(op.index(), t);
                        match op.recv(tuples) {
                            Ok(m) => m,
                            Err(_) => return,
                        }
                    }
                    Err(_) => continue,
                }
            }
        };
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}
