//! The worker-to-worker data plane: batches of [`Envelope`]s over TCP, one *lane* per
//! remote executor.
//!
//! Every worker process runs one [`TransportServer`] and, per executor of another worker
//! that it sends to, one [`Lane`] ([`connect_lane`]): a send queue, a writer thread and
//! a TCP connection of its own. Both ends are plain threads over blocking sockets:
//!
//! ```text
//!  worker A                                                  worker B
//!  executors ─ Transfer ─▶ lane queue ─▶ writer ══TCP══▶ reader ─▶ queue of executor X
//!                       └▶ lane queue ─▶ writer ══TCP══▶ reader ─▶ queue of executor Y
//! ```
//!
//! # Plugging into `Transfer`
//!
//! The sender returned by [`connect_lane`] is a `Sender<Packet>` like an executor's
//! receive queue, so a remote executor is one more destination of
//! [`Transfer`](crate::transfer): append its lane to the `queues` and map the executor's
//! tasks to its index in `dest_of_task`. `Transfer` batches per remote executor exactly
//! as it does per local one.
//!
//! # Why lanes cannot deadlock
//!
//! Locally, an executor blocks only when it hands a batch to a full *bounded* queue: the
//! queue of a bolt it emits to (bolts receive only tuples), or of an acker. Spout queues
//! are unbounded and ackers send only to spouts, so ackers never block and every wait
//! follows an edge of the topology towards a consumer that is not itself waiting on the
//! producer (the same DAG as the topology's streams).
//!
//! Lanes keep exactly that waits-for graph across processes:
//!
//! - a lane leads to **one** remote executor. A lane to a bolt is bounded like the bolt's
//!   own queue; a lane to a spout or an acker carries only control messages (ack-init,
//!   ack, fail, tree-acked, tree-failed) and is **unbounded**, so an acker never blocks and
//!   control never waits behind data;
//! - the server's reader for a lane blocks only on that one executor's queue; its writer
//!   blocks only on that reader (TCP's window); producers block only on the lane's queue.
//!
//! So "producer waits for the lane" means "producer waits for that executor", an edge of
//! the local waits-for graph, and no wait is shared between two executors: there is no
//! connection on which data for X can sit in front of data for Y (head-of-line blocking,
//! which with one connection per worker pair lets W→X→Z→Y placed as W,Z | X,Y deadlock).
//!
//! # Wire format
//!
//! A connection starts with the 4 bytes [`MAGIC`] (`SQL3`) and one hello frame; then
//! every frame carries one batch. A frame is a big-endian `u32` length and that many
//! bytes of MessagePack (structs as arrays):
//!
//! - hello: `{ topology_id, epoch, from_worker, to_task }`, at most 64 KiB. `to_task` is
//!   the first task of the receiving executor;
//! - the server answers a valid hello with a random 16-byte nonce; the client answers
//!   with a 32-byte tag, `HMAC-SHA256(secret, nonce ++ hello frame)` when the cluster has a
//!   secret ([`squall_cluster::secret`]), zeros when not; the server answers one byte
//!   `1` when it accepts;
//! - data: one batch in the [`wire`](crate::wire) format (tuples grouped by task, stream,
//!   source and tree), at most [`MAX_FRAME_BYTES`].
//!
//! The server **refuses** (closes, logs naming the peer, counts in
//! [`TransportStats::connections_refused`]) a hello of another topology or another
//! epoch (old and new workers of a rebalance never exchange tuples), for an executor
//! that does not run here, or a wrong or missing tag when it has a secret. It closes as a
//! **protocol error** a wrong magic, an oversized, truncated or undecodable frame, and a
//! batch with an envelope the executor cannot take: a task outside the executor, a
//! stream or source task outside the layout, a tuple for a spout or acker, a control
//! message for the wrong kind of executor. Nothing a peer sends can panic the worker or
//! reach an executor unchecked.
//!
//! # Backpressure and liveness
//!
//! A reader hands each batch to its executor's queue with a blocking send. While the
//! queue is full it stops reading, TCP's window fills, the remote writer blocks in
//! `write`, the lane's bounded queue fills, and the producers block in `Transfer` just as
//! on a full local queue. While a peer is unreachable the writer keeps retrying.
//!
//! No call blocks forever, and a slow peer is not a dead one:
//!
//! - the server writes one byte to every accepted connection every 5 s ("alive"); a lane
//!   that hears nothing from its peer for 30 s (neither such a byte nor progress of its
//!   writes) drops the connection and reconnects. A lane blocked in `write` on a peer
//!   that does not read (backpressure: a zero TCP window) keeps hearing those bytes, so
//!   a consumer may be as slow as it likes;
//! - a writer blocked in `write` wakes every 100 ms (`SO_SNDTIMEO`) to notice a shutdown,
//!   a re-pointed lane or the silence above;
//! - sockets have TCP keepalive; the server's also `TCP_USER_TIMEOUT` (30 s), so its
//!   "alive" bytes to a vanished client break the connection and free the reader.
//!   Lanes do not set `TCP_USER_TIMEOUT`: Linux aborts a connection whose window stays
//!   zero that long even when the peer answers every probe (measured on kernel 6.x),
//!   which would break the lanes of a slow consumer.
//!
//! # Delivery
//!
//! At most once. When a connection breaks, the batches that could not be written are
//! dropped and counted in [`TransportStats::batches_dropped`]; batches the kernel had
//! accepted but the peer never read are lost without being counted (TCP gives no
//! receipt). Tracked tuples are not lost for good: their trees time out and the spouts
//! replay them, as in Storm.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Add;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use squall_api::{ComponentKind, TaskId, TaskLayout, ACKER_COMPONENT};
use squall_cluster::secret::{Secret, TAG_LEN};

use crate::message::{Envelope, Msg, Packet};
use crate::ratelimit::LogLimiter;

/// The first 4 bytes of every connection.
pub const MAGIC: [u8; 4] = *b"SQL3";
/// The largest data frame (length prefix excluded) a server accepts and a client sends.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The largest hello frame a server accepts.
const MAX_HELLO_BYTES: usize = 64 << 10;
/// Length of the server's challenge.
const NONCE_LEN: usize = 16;
/// The server's last handshake byte: accepted.
const ACCEPTED: u8 = 1;
/// What the server writes to every connection now and then: alive.
const PONG: u8 = 0;
/// Socket buffer size on either side; a client writes when this much is pending.
const IO_BUFFER: usize = 256 << 10;
/// How long either side waits for the other's part of the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often blocked threads look at their shutdown flag.
const POLL: Duration = Duration::from_millis(100);
/// Reconnect backoff bounds. The first retries come quickly: workers of a topology start
/// at about the same time, and a lane that tried before its peer listened would hold
/// its tuples for the whole first backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader threads decode nested values recursively; give them room for rmp-serde's
/// nesting limit (1024) even in debug builds.
const READER_STACK: usize = 8 << 20;
/// At most one warning of a kind per this period; the others are counted.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How fast silence means death (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    /// The server writes a byte to every connection this often.
    pub ping_every: Duration,
    /// A lane gives up after this long without a sign of life; also the server sockets'
    /// `TCP_USER_TIMEOUT`.
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            ping_every: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
        }
    }
}

/// Keepalive and user timeout for a transport socket.
fn tune_socket(stream: &TcpStream, live: Liveness, user_timeout: bool) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!("transport: cannot enable TCP keepalive: {e}");
    }
    if user_timeout {
        if let Err(e) = sock.set_tcp_user_timeout(Some(live.dead_after)) {
            tracing::debug!("transport: cannot set TCP_USER_TIMEOUT: {e}");
        }
    }
}

/// Who a transport endpoint speaks for: stamped into every hello a lane sends and
/// checked against every hello a server receives.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The topology id.
    pub topology_id: String,
    /// The layout epoch ([`Assignment::epoch`](squall_cluster::state::Assignment::epoch)).
    pub epoch: u64,
    /// This worker's name, for the peer's logs (e.g. `supervisor:port`).
    pub worker: String,
    /// The cluster secret: lanes prove knowledge of it, servers demand it.
    pub secret: Option<Secret>,
}

impl Identity {
    /// An identity without a secret (an open cluster).
    pub fn new(topology_id: impl Into<String>, epoch: u64, worker: impl Into<String>) -> Self {
        Identity {
            topology_id: topology_id.into(),
            epoch,
            worker: worker.into(),
            secret: None,
        }
    }

    /// The same identity with the cluster secret `secret`.
    pub fn with_secret(mut self, secret: Option<Secret>) -> Self {
        self.secret = secret;
        self
    }
}

/// The payload of the hello frame.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    topology_id: String,
    epoch: u64,
    from_worker: String,
    /// The first task of the receiving executor.
    to_task: u32,
}

/// Counters of a transport endpoint; see [`TransportStats`] for their meaning.
#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    envelopes_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    envelopes_received: AtomicU64,
    batches_dropped: AtomicU64,
    reconnects: AtomicU64,
    protocol_errors: AtomicU64,
    connections_refused: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> TransportStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            frames_sent: load(&self.frames_sent),
            bytes_sent: load(&self.bytes_sent),
            envelopes_sent: load(&self.envelopes_sent),
            frames_received: load(&self.frames_received),
            bytes_received: load(&self.bytes_received),
            envelopes_received: load(&self.envelopes_received),
            batches_dropped: load(&self.batches_dropped),
            reconnects: load(&self.reconnects),
            protocol_errors: load(&self.protocol_errors),
            connections_refused: load(&self.connections_refused),
        }
    }
}

/// A snapshot of a [`TransportServer`]'s or [`Lane`]'s counters. Fields that do not
/// apply to an endpoint stay 0; snapshots add up with `+`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Data frames (batches) written to a socket.
    pub frames_sent: u64,
    /// Bytes written: data frames with their length prefixes, and each connection's
    /// magic, hello and tag.
    pub bytes_sent: u64,
    /// Envelopes in the frames written.
    pub envelopes_sent: u64,
    /// Data frames read, decoded and delivered.
    pub frames_received: u64,
    /// Bytes of data frames read, length prefixes included.
    pub bytes_received: u64,
    /// Envelopes in the frames delivered.
    pub envelopes_received: u64,
    /// Batches a client dropped: not written because the connection broke, or too large
    /// to encode in one frame.
    pub batches_dropped: u64,
    /// Times a client connected again after losing its connection.
    pub reconnects: u64,
    /// Connections a server closed for a malformed hello, frame or envelope.
    pub protocol_errors: u64,
    /// Server: connections refused (other topology or epoch, no such executor here,
    /// wrong or missing secret). Client: handshakes the server refused.
    pub connections_refused: u64,
}

impl Add for TransportStats {
    type Output = TransportStats;

    fn add(self, o: TransportStats) -> TransportStats {
        TransportStats {
            frames_sent: self.frames_sent + o.frames_sent,
            bytes_sent: self.bytes_sent + o.bytes_sent,
            envelopes_sent: self.envelopes_sent + o.envelopes_sent,
            frames_received: self.frames_received + o.frames_received,
            bytes_received: self.bytes_received + o.bytes_received,
            envelopes_received: self.envelopes_received + o.envelopes_received,
            batches_dropped: self.batches_dropped + o.batches_dropped,
            reconnects: self.reconnects + o.reconnects,
            protocol_errors: self.protocol_errors + o.protocol_errors,
            connections_refused: self.connections_refused + o.connections_refused,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------

/// What a local executor takes from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A bolt: tuples only.
    Bolt,
    /// A spout: tree verdicts (`TreeAcked`, `TreeFailed`) only.
    Spout,
    /// An acker: `AckInit`, `Ack`, `Fail` only.
    Acker,
}

impl Role {
    /// The role of the executor whose first task is `first` in `layout`.
    pub fn of(layout: &TaskLayout, first: TaskId) -> Role {
        match layout.task_component(first) {
            Some(c) if c.as_str() == ACKER_COMPONENT => Role::Acker,
            Some(c) => match layout.components().get(c).map(|t| t.kind) {
                Some(ComponentKind::Spout) => Role::Spout,
                _ => Role::Bolt,
            },
            None => Role::Bolt,
        }
    }

    /// Whether a lane to an executor of this role is unbounded (it carries only control
    /// messages; see the [module docs](self)).
    pub fn unbounded_lane(self) -> bool {
        self != Role::Bolt
    }
}

/// One executor of this worker, as the server delivers to it.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    /// Its first task (lanes name it in their hello).
    pub first: TaskId,
    /// Its last task.
    pub last: TaskId,
    /// What it takes.
    pub role: Role,
    /// Its receive queue.
    pub queue: Sender<Packet>,
    /// Its blocked-time counter: the server adds the time a connection's reader waited
    /// on the full queue (backpressure, see [`crate::stats::ExecutorStats::blocked_ns`]).
    pub blocked_ns: Arc<AtomicU64>,
}

/// Delivers received batches to this worker's executors, each connection to the one
/// executor its hello names, after checking every envelope against the layout.
#[derive(Debug)]
pub struct LocalRouter {
    executors: Vec<LocalExecutor>,
    num_streams: u32,
    max_task: u32,
}

impl LocalRouter {
    /// Delivers to `executors`; envelopes are checked against a layout of `num_streams`
    /// streams and tasks up to `max_task`.
    pub fn new(executors: Vec<LocalExecutor>, num_streams: usize, max_task: TaskId) -> Self {
        LocalRouter {
            executors,
            num_streams: u32::try_from(num_streams).unwrap_or(u32::MAX),
            max_task: max_task.0,
        }
    }

    /// Delivers to the local executors of `runtime`.
    pub fn for_runtime(runtime: &crate::runtime::TopologyRuntime) -> Self {
        let layout = runtime.layout();
        let (queues, dest) = runtime.local_queues();
        let blocked = runtime.local_blocked();
        let mut executors: Vec<LocalExecutor> = Vec::new();
        for (task, d) in dest.iter().enumerate() {
            let Some(d) = *d else { continue };
            let task = TaskId(task as u32);
            match executors
                .iter_mut()
                .find(|e| e.queue.same_channel(&queues[d]))
            {
                Some(e) => e.last = e.last.max(task),
                None => executors.push(LocalExecutor {
                    first: task,
                    last: task,
                    role: Role::of(layout, task),
                    queue: queues[d].clone(),
                    blocked_ns: blocked.get(d).cloned().unwrap_or_default(),
                }),
            }
        }
        LocalRouter::new(executors, layout.streams().len(), layout.max_task())
    }

    fn executor(&self, first: u32) -> Option<&LocalExecutor> {
        self.executors.iter().find(|e| e.first.0 == first)
    }

    /// Why `env` cannot go to `exec`, if it cannot.
    fn check(&self, exec: &LocalExecutor, env: &Envelope) -> Result<(), String> {
        let task = env.task.0;
        if task < exec.first.0 || task > exec.last.0 {
            return Err(format!(
                "an envelope for task {task} arrived on the lane of executor [{}-{}]",
                exec.first, exec.last
            ));
        }
        let task_ok = |t: TaskId| t.0 >= 1 && t.0 <= self.max_task;
        let fits = match (&env.msg, exec.role) {
            // Spouts take tuples too: the checkpoint barriers of a stateful topology.
            (Msg::Tuple { stream, source, .. }, Role::Bolt | Role::Spout) => {
                if *stream >= self.num_streams {
                    return Err(format!(
                        "a tuple for task {task} names stream {stream}; the layout has {}",
                        self.num_streams
                    ));
                }
                if !task_ok(*source) {
                    return Err(format!(
                        "a tuple for task {task} comes from task {source}; tasks are 1..={}",
                        self.max_task
                    ));
                }
                true
            }
            (Msg::AckInit { spout_task, .. }, Role::Acker) => {
                if !task_ok(*spout_task) {
                    return Err(format!(
                        "an ack-init for task {task} names spout task {spout_task}; tasks are 1..={}",
                        self.max_task
                    ));
                }
                true
            }
            (Msg::Ack { .. } | Msg::Fail { .. }, Role::Acker) => true,
            (Msg::TreeAcked { .. } | Msg::TreeFailed { .. }, Role::Spout) => true,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(format!(
                "{} for task {task}, which is a {:?} executor",
                msg_kind(&env.msg),
                exec.role
            ))
        }
    }
}

fn msg_kind(msg: &Msg) -> &'static str {
    match msg {
        Msg::Tuple { .. } => "a tuple",
        Msg::AckInit { .. } => "an ack-init",
        Msg::Ack { .. } => "an ack",
        Msg::Fail { .. } => "a fail",
        Msg::TreeAcked { .. } => "a tree-acked",
        Msg::TreeFailed { .. } => "a tree-failed",
    }
}

/// Sends `batch` to `exec`'s queue, waiting while it is full (the wait is added to
/// the executor's blocked time). False when `stop` was raised. A queue whose executor
/// has gone counts as delivered (shutting down).
fn deliver(exec: &LocalExecutor, batch: Vec<Envelope>, stop: &AtomicBool) -> bool {
    let queue = &exec.queue;
    let mut packet = match queue.try_send(Packet::Batch(batch)) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => return true,
        Err(TrySendError::Full(p)) => p,
    };
    let start = Instant::now();
    let delivered = loop {
        match queue.send_timeout(packet, POLL) {
            Ok(()) | Err(SendTimeoutError::Disconnected(_)) => break true,
            Err(SendTimeoutError::Timeout(p)) if !stop.load(Ordering::Relaxed) => packet = p,
            Err(SendTimeoutError::Timeout(_)) => break false,
        }
    };
    exec.blocked_ns
        .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    delivered
}

/// Why a server closed a connection.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("it did not start with the magic \"SQL3\" but with \"{}\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("it closed the connection before its hello")]
    NoHello,
    #[error("its hello frame is invalid: {0}")]
    BadHello(String),
    #[error("it belongs to topology '{got}', not '{expected}'")]
    WrongTopology { got: String, expected: String },
    #[error("it runs epoch {got} of the topology, this worker epoch {expected}")]
    WrongEpoch { got: u64, expected: u64 },
    #[error("it sends to the executor starting at task {0}, which does not run here")]
    NoSuchExecutor(u32),
    #[error("it did not prove knowledge of the cluster secret (wrong or missing secret)")]
    BadTag,
    #[error("it announced a frame of {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("it closed the connection in the middle of a frame")]
    Truncated,
    #[error("a frame of {len} bytes does not decode as a batch: {error}")]
    Undecodable { len: usize, error: String },
    #[error("its batch is invalid: {0}")]
    BadEnvelope(String),
    #[error("reading failed: {0}")]
    Io(io::Error),
}

impl ConnError {
    /// A well-formed peer this server does not talk to (as opposed to a broken one).
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConnError::WrongTopology { .. }
                | ConnError::WrongEpoch { .. }
                | ConnError::NoSuchExecutor(_)
                | ConnError::BadTag
        )
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ConnError::Truncated
        } else {
            ConnError::Io(e)
        }
    }
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
fn read_full(rd: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match rd.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one frame into `frame` (its length is the payload's). `Ok(false)` at a clean end
/// of stream between frames.
fn read_frame(rd: &mut impl Read, frame: &mut Vec<u8>, max: usize) -> Result<bool, ConnError> {
    let mut len = [0u8; 4];
    match read_full(rd, &mut len)? {
        0 => return Ok(false),
        4 => {}
        _ => return Err(ConnError::Truncated),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ConnError::TooLarge { len, max });
    }
    // Do not keep a huge buffer around after a rare huge frame.
    if frame.capacity() > 4 * IO_BUFFER && len <= IO_BUFFER {
        *frame = Vec::new();
    }
    frame.clear();
    // The buffer grows as bytes arrive, not as announced: announcing a big frame and
    // sending nothing costs the server nothing.
    frame.reserve(len.min(IO_BUFFER));
    if rd.take(len as u64).read_to_end(frame)? < len {
        return Err(ConnError::Truncated);
    }
    Ok(true)
}

/// Decodes a data frame, which must hold exactly one batch.
fn decode_batch(frame: &[u8]) -> Result<Vec<Envelope>, ConnError> {
    crate::wire::decode_batch(frame).map_err(|error| ConnError::Undecodable {
        len: frame.len(),
        error,
    })
}

/// A fresh nonce from the operating system's cryptographic random source.
fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut out = [0u8; NONCE_LEN];
    getrandom::fill(&mut out).map_err(|e| io::Error::other(format!("no random bytes: {e}")))?;
    Ok(out)
}

struct ServerShared {
    identity: Identity,
    router: LocalRouter,
    stop: AtomicBool,
    counters: Counters,
    liveness: Liveness,
    /// Rate limits for the warnings about refused and broken connections.
    refused_log: LogLimiter,
    broken_log: LogLimiter,
    /// Connections past their handshake, by id, for the pinger.
    accepted: Mutex<BTreeMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

/// A connection that passed the handshake.
struct Accepted<'a> {
    from_worker: String,
    exec: &'a LocalExecutor,
}

impl ServerShared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Magic, hello, challenge. Returns the peer's name and the executor it sends to.
    fn handshake(
        &self,
        rd: &mut impl Read,
        mut wr: &TcpStream,
        from_worker: &mut String,
    ) -> Result<Accepted<'_>, ConnError> {
        let mut magic = [0u8; 4];
        if read_full(rd, &mut magic)? == 0 {
            return Err(ConnError::NoHello);
        }
        if magic != MAGIC {
            return Err(ConnError::BadMagic(magic));
        }
        let mut frame = Vec::new();
        if !read_frame(rd, &mut frame, MAX_HELLO_BYTES)? {
            return Err(ConnError::NoHello);
        }
        let hello: Hello =
            rmp_serde::from_slice(&frame).map_err(|e| ConnError::BadHello(e.to_string()))?;
        from_worker.clone_from(&hello.from_worker);
        let me = &self.identity;
        if hello.topology_id != me.topology_id {
            return Err(ConnError::WrongTopology {
                got: hello.topology_id,
                expected: me.topology_id.clone(),
            });
        }
        if hello.epoch != me.epoch {
            return Err(ConnError::WrongEpoch {
                got: hello.epoch,
                expected: me.epoch,
            });
        }
        let exec = self
            .router
            .executor(hello.to_task)
            .ok_or(ConnError::NoSuchExecutor(hello.to_task))?;
        let nonce = nonce()?;
        wr.write_all(&nonce)?;
        let mut tag = [0u8; TAG_LEN];
        if read_full(rd, &mut tag)? < TAG_LEN {
            return Err(match &me.secret {
                Some(_) => ConnError::BadTag,
                None => ConnError::Truncated,
            });
        }
        if let Some(secret) = &me.secret {
            let mut signed = nonce.to_vec();
            signed.extend_from_slice(&frame);
            if !secret.verify(&signed, &tag) {
                return Err(ConnError::BadTag);
            }
        }
        wr.write_all(&[ACCEPTED])?;
        Ok(Accepted {
            from_worker: hello.from_worker,
            exec,
        })
    }

    /// Serves one connection until it ends, is rejected or the server stops.
    fn serve(&self, stream: &TcpStream, peer: SocketAddr) {
        tune_socket(stream, self.liveness, true);
        let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(HELLO_TIMEOUT));
        let mut rd = BufReader::with_capacity(IO_BUFFER, stream);
        let mut from_worker = String::new();
        let Accepted { from_worker, exec } = match self.handshake(&mut rd, stream, &mut from_worker)
        {
            Ok(a) => a,
            Err(e) => return self.reject(peer, &from_worker, e),
        };
        let _ = stream.set_read_timeout(None);
        let _ = stream.set_write_timeout(Some(POLL));
        tracing::info!(
            %peer,
            from_worker,
            "transport: accepted a lane to executor [{}-{}]",
            exec.first,
            exec.last
        );
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.accepted).insert(id, clone);
        }
        self.read_batches(&mut rd, peer, &from_worker, exec);
        lock(&self.accepted).remove(&id);
    }

    /// Reads, checks and delivers batches until the connection ends.
    fn read_batches(
        &self,
        rd: &mut impl Read,
        peer: SocketAddr,
        from_worker: &str,
        exec: &LocalExecutor,
    ) {
        let mut frame = Vec::new();
        loop {
            match read_frame(rd, &mut frame, MAX_FRAME_BYTES) {
                Ok(true) => {}
                Ok(false) => {
                    if !self.stopping() {
                        tracing::info!(%peer, from_worker, "transport: peer closed the connection");
                    }
                    return;
                }
                Err(e) => return self.reject(peer, from_worker, e),
            }
            let batch = match decode_batch(&frame) {
                Ok(b) => b,
                Err(e) => return self.reject(peer, from_worker, e),
            };
            if let Some(e) = batch
                .iter()
                .find_map(|env| self.router.check(exec, env).err())
            {
                return self.reject(peer, from_worker, ConnError::BadEnvelope(e));
            }
            let c = &self.counters;
            bump(&c.frames_received, 1);
            bump(&c.bytes_received, frame.len() as u64 + 4);
            bump(&c.envelopes_received, batch.len() as u64);
            if !deliver(exec, batch, &self.stop) {
                return;
            }
        }
    }

    fn reject(&self, peer: SocketAddr, from_worker: &str, e: ConnError) {
        if self.stopping() {
            return;
        }
        let (counter, limiter, what) = if e.is_refusal() {
            (
                &self.counters.connections_refused,
                &self.refused_log,
                "refused",
            )
        } else {
            (&self.counters.protocol_errors, &self.broken_log, "closed")
        };
        bump(counter, 1);
        if let Some(suppressed) = limiter.allow() {
            let from = if from_worker.is_empty() {
                String::new()
            } else {
                format!(" (worker {from_worker})")
            };
            tracing::warn!(
                %peer,
                "transport: {what} the connection from {peer}{from}: {e}{}",
                LogLimiter::suffix(suppressed)
            );
        }
    }
}

struct Connection {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// Receives batches from other workers' lanes and hands them to this worker's executors:
/// one accept thread plus one reader thread per connection. Stops when shut down or
/// dropped.
pub struct TransportServer {
    addr: SocketAddr,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
    pinger: Option<JoinHandle<()>>,
}

impl TransportServer {
    /// Serves `listener` for the topology and epoch of `identity` (and demands its secret,
    /// if any), delivering through `router`.
    pub fn start(
        listener: TcpListener,
        identity: Identity,
        router: LocalRouter,
    ) -> io::Result<Self> {
        Self::start_with(listener, identity, router, Liveness::default())
    }

    pub(crate) fn start_with(
        listener: TcpListener,
        identity: Identity,
        router: LocalRouter,
        liveness: Liveness,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(ServerShared {
            identity,
            router,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            liveness,
            refused_log: LogLimiter::new(LOG_EVERY, 1),
            broken_log: LogLimiter::new(LOG_EVERY, 1),
            accepted: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        });
        let s = shared.clone();
        let pinger = std::thread::Builder::new()
            .name(format!("squall-transport-ping-{}", addr.port()))
            .spawn(move || ping_loop(&s))?;
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("squall-transport-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(TransportServer {
            addr,
            shared,
            accept: Some(accept),
            pinger: Some(pinger),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, closes every connection and waits for the threads. Batches not
    /// yet handed to an executor are dropped. Idempotent.
    pub fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pinger.take() {
            let _ = p.join();
        }
        // Wake the blocked `accept` by connecting to ourselves.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        match TcpStream::connect_timeout(&wake, CONNECT_TIMEOUT) {
            Ok(_) => {
                let _ = accept.join();
            }
            Err(e) => tracing::warn!(
                addr = %self.addr,
                "transport: could not wake the accept thread ({e}); leaving it behind"
            ),
        }
    }
}

impl Drop for TransportServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes a byte to every accepted connection every [`Liveness::ping_every`], so that
/// lanes can tell a peer that does not read from a dead one.
fn ping_loop(shared: &ServerShared) {
    let mut last = Instant::now();
    while !shared.stopping() {
        std::thread::sleep(POLL.min(shared.liveness.ping_every));
        if last.elapsed() < shared.liveness.ping_every {
            continue;
        }
        last = Instant::now();
        for mut s in lock(&shared.accepted).values() {
            // The socket's write timeout is short; a failure shows in the reader.
            let _ = s.write(&[PONG]);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ServerShared>) {
    let mut conns: Vec<Connection> = Vec::new();
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. out of file descriptors: do not spin.
                tracing::warn!("transport: accept failed: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("squall-transport-rx-{peer}"))
            .stack_size(READER_STACK)
            .spawn(move || {
                s.serve(&stream, peer);
                let _ = stream.shutdown(Shutdown::Both);
            });
        match spawned {
            Ok(thread) => conns.push(Connection {
                stream: clone,
                thread,
            }),
            Err(e) => tracing::warn!(%peer, "transport: could not start a reader thread: {e}"),
        }
        // Forget connections that have ended.
        let (done, live): (Vec<_>, Vec<_>) =
            conns.into_iter().partition(|c| c.thread.is_finished());
        for c in done {
            let _ = c.thread.join();
        }
        conns = live;
    }
    for c in &conns {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
    for c in conns {
        let _ = c.thread.join();
    }
}

// ---------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------

/// Where a lane connects, and its current connection.
struct Link {
    addr: SocketAddr,
    /// A clone of the current connection, for `shutdown` and `set_addr` to break it.
    live: Option<TcpStream>,
}

/// The sending side of the connection to one remote executor: a writer thread draining
/// the queue returned by [`connect_lane`]. Stops when every sender is dropped (after
/// writing what was queued), when shut down, or when dropped.
pub struct Lane {
    to_task: TaskId,
    stop: Arc<AtomicBool>,
    link: Arc<Mutex<Link>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the lane to the executor whose first task is `to_task`, at the worker
/// listening on `addr`, and returns its queue: bounded to `capacity` batches (at least
/// 1), or unbounded when `None` (lanes to spouts and ackers; see the
/// [module docs](self)). Only [`Packet::Batch`]es travel; other packets are ignored. The
/// thread connects in the background, retrying every 5 ms .. 1 s until the peer is up
/// and accepts, and reconnects the same way when the connection breaks.
pub fn connect_lane(
    addr: SocketAddr,
    identity: &Identity,
    to_task: TaskId,
    capacity: Option<usize>,
) -> io::Result<(Sender<Packet>, Lane)> {
    connect_lane_with(addr, identity, to_task, capacity, Liveness::default())
}

pub(crate) fn connect_lane_with(
    addr: SocketAddr,
    identity: &Identity,
    to_task: TaskId,
    capacity: Option<usize>,
    liveness: Liveness,
) -> io::Result<(Sender<Packet>, Lane)> {
    let (tx, rx) = match capacity {
        Some(c) => crossbeam_channel::bounded(c.max(1)),
        None => crossbeam_channel::unbounded(),
    };
    let hello = Hello {
        topology_id: identity.topology_id.clone(),
        epoch: identity.epoch,
        from_worker: identity.worker.clone(),
        to_task: to_task.0,
    };
    let hello = rmp_serde::to_vec(&hello).map_err(io::Error::other)?;
    let stop = Arc::new(AtomicBool::new(false));
    let link = Arc::new(Mutex::new(Link { addr, live: None }));
    let counters = Arc::new(Counters::default());
    let writer = Writer {
        to_task,
        hello,
        secret: identity.secret.clone(),
        rx,
        stop: stop.clone(),
        link: link.clone(),
        counters: counters.clone(),
        liveness,
        out: Vec::with_capacity(IO_BUFFER),
        pending_frames: 0,
        pending_envelopes: 0,
        last_heard: Instant::now(),
        last_drain: Instant::now(),
        refused_log: LogLimiter::new(LOG_EVERY, 1),
    };
    let thread = std::thread::Builder::new()
        .name(format!("squall-transport-tx-{to_task}@{addr}"))
        .spawn(move || writer.run())?;
    Ok((
        tx,
        Lane {
            to_task,
            stop,
            link,
            counters,
            thread: Some(thread),
        },
    ))
}

impl Lane {
    /// The address the lane connects to.
    pub fn addr(&self) -> SocketAddr {
        lock(&self.link).addr
    }

    /// The first task of the executor the lane leads to.
    pub fn to_task(&self) -> TaskId {
        self.to_task
    }

    /// Re-points the lane to `addr` (its executor moved to another worker): the current
    /// connection is closed and the lane connects to `addr`. Batches queued meanwhile wait;
    /// those in the broken connection's buffers are lost (and replayed by the spouts).
    pub fn set_addr(&self, addr: SocketAddr) {
        let mut link = lock(&self.link);
        if link.addr == addr {
            return;
        }
        tracing::info!(
            "transport: the executor at task {} moved from {} to {addr}",
            self.to_task,
            link.addr
        );
        link.addr = addr;
        if let Some(s) = link.live.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// A snapshot of this lane's counters.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }

    /// Stops the writer thread at once and waits for it; queued batches are dropped.
    /// Idempotent.
    pub fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Unblock a write stuck on a peer that does not read.
        if let Some(s) = &lock(&self.link).live {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = thread.join();
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why the writer stopped writing to a connection.
enum Broken {
    /// Shutting down, or every sender is gone.
    Exit,
    /// The connection failed; reconnect.
    Io(io::Error),
}

/// Why a connection attempt failed.
enum ConnectError {
    /// Not reachable: connect or I/O failed.
    Io(io::Error),
    /// The server closed during the handshake: it refused us.
    Refused,
}

struct Writer {
    to_task: TaskId,
    /// The hello frame's payload.
    hello: Vec<u8>,
    secret: Option<Secret>,
    rx: Receiver<Packet>,
    stop: Arc<AtomicBool>,
    link: Arc<Mutex<Link>>,
    counters: Arc<Counters>,
    liveness: Liveness,
    /// Encoded frames not yet written: the write buffer.
    out: Vec<u8>,
    pending_frames: u64,
    pending_envelopes: u64,
    /// When the peer last showed it is alive (handshake, a byte from it, a write that
    /// progressed).
    last_heard: Instant,
    /// When the pongs were last read.
    last_drain: Instant,
    refused_log: LogLimiter,
}

impl Writer {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn addr(&self) -> SocketAddr {
        lock(&self.link).addr
    }

    fn run(mut self) {
        let mut connected_before = false;
        while let Some(mut stream) = self.connect(connected_before) {
            if connected_before {
                bump(&self.counters.reconnects, 1);
            }
            connected_before = true;
            let broken = self.pump(&mut stream);
            match broken {
                Broken::Exit => self.close_gracefully(&mut stream),
                Broken::Io(_) => {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            let addr = {
                let mut link = lock(&self.link);
                link.live = None;
                link.addr
            };
            match broken {
                Broken::Exit => break,
                Broken::Io(_) if self.stopping() => break,
                Broken::Io(e) => {
                    let lost = self.pending_frames;
                    bump(&self.counters.batches_dropped, lost);
                    self.clear_pending();
                    let peer = stream.peer_addr().ok();
                    if peer.is_some_and(|p| p != addr) {
                        tracing::info!(
                            "transport: lane to task {} re-pointed to {addr}; {lost} batches dropped",
                            self.to_task
                        );
                    } else {
                        tracing::warn!(
                            %addr,
                            "transport: lane to task {} at {addr} broke ({e}); reconnecting, {lost} batches dropped",
                            self.to_task
                        );
                    }
                }
            }
        }
        // Shut down: whatever is still queued is dropped.
        let left = self.pending_frames
            + self
                .rx
                .try_iter()
                .filter(|p| matches!(p, Packet::Batch(b) if !b.is_empty()))
                .count() as u64;
        bump(&self.counters.batches_dropped, left);
    }

    /// Connects and shakes hands; publishes the connection in the link. `None` when
    /// stopping.
    fn connect(&mut self, reconnect: bool) -> Option<TcpStream> {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return None;
            }
            let addr = self.addr();
            match self.try_connect(addr) {
                Ok(stream) => {
                    {
                        let mut link = lock(&self.link);
                        if link.addr != addr {
                            // Re-pointed meanwhile: start over at the new address.
                            continue;
                        }
                        link.live = stream.try_clone().ok();
                    }
                    // `shutdown` may have looked at the link before we filled it.
                    if self.stopping() {
                        return None;
                    }
                    if reconnect || failures > 0 {
                        tracing::info!(%addr, "transport: lane to task {} connected to {addr}", self.to_task);
                    }
                    return Some(stream);
                }
                Err(ConnectError::Refused) => {
                    bump(&self.counters.connections_refused, 1);
                    if let Some(suppressed) = self.refused_log.allow() {
                        tracing::warn!(
                            %addr,
                            "transport: the worker at {addr} refused the lane to task {}: it runs another topology or epoch, not that executor, or another cluster secret (see its log); retrying{}",
                            self.to_task,
                            LogLimiter::suffix(suppressed)
                        );
                    }
                }
                Err(ConnectError::Io(e)) => {
                    if failures == 0 {
                        tracing::warn!(
                            %addr,
                            "transport: worker at {addr} is not reachable ({e}); retrying every {} ms to {} s",
                            BACKOFF_MIN.as_millis(),
                            BACKOFF_MAX.as_secs()
                        );
                    } else {
                        tracing::debug!(%addr, "transport: connecting failed again: {e}");
                    }
                }
            }
            failures += 1;
            // Sleep in slices so that a shutdown or a new address is noticed quickly.
            let mut slept = Duration::ZERO;
            while slept < backoff && !self.stopping() && self.addr() == addr {
                let step = Duration::from_millis(50).min(backoff - slept);
                std::thread::sleep(step);
                slept += step;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn try_connect(&mut self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let mut stream =
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(ConnectError::Io)?;
        tune_socket(&stream, self.liveness, false);
        let io = ConnectError::Io;
        stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
        let mut preamble = MAGIC.to_vec();
        preamble.extend_from_slice(&(self.hello.len() as u32).to_be_bytes());
        preamble.extend_from_slice(&self.hello);
        stream.write_all(&preamble).map_err(io)?;
        let mut nonce = [0u8; NONCE_LEN];
        match read_full(&mut stream, &mut nonce) {
            Ok(NONCE_LEN) => {}
            Ok(_) => return Err(ConnectError::Refused),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ConnectError::Refused)
            }
            Err(e) => return Err(io(e)),
        }
        let tag = match &self.secret {
            Some(s) => {
                let mut signed = nonce.to_vec();
                signed.extend_from_slice(&self.hello);
                s.sign(&signed)
            }
            None => [0u8; TAG_LEN],
        };
        stream.write_all(&tag).map_err(io)?;
        let mut answer = [0u8; 1];
        match read_full(&mut stream, &mut answer) {
            Ok(1) if answer[0] == ACCEPTED => {}
            Ok(_) => return Err(ConnectError::Refused),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ConnectError::Refused)
            }
            Err(e) => return Err(io(e)),
        }
        stream.set_read_timeout(None).map_err(io)?;
        // Writes wake up every POLL to look at the shutdown flag and the peer.
        stream.set_write_timeout(Some(POLL)).map_err(io)?;
        bump(&self.counters.bytes_sent, (preamble.len() + TAG_LEN) as u64);
        self.last_heard = Instant::now();
        Ok(stream)
    }

    /// Ends a connection whose lane is done (its queue closed, everything written): a
    /// FIN after the last byte, then the server's alive bytes are read and ignored
    /// until it has read everything and closes its side (for at most
    /// [`Liveness::dead_after`], 10 s at most, and not at all when shutting down).
    /// Closing a socket with unread bytes in its receive buffer (those alive bytes)
    /// sends a reset instead of a FIN, and a reset makes the server's kernel discard
    /// the batches it had not handed to the reader yet.
    fn close_gracefully(&self, stream: &mut TcpStream) {
        if stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let _ = stream.set_read_timeout(Some(POLL));
        let deadline = Instant::now() + self.liveness.dead_after.min(Duration::from_secs(10));
        let mut buf = [0u8; 64];
        while Instant::now() < deadline && !self.stopping() {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
    }

    /// Writes queued batches to `stream` until it breaks or the writer should exit.
    fn pump(&mut self, stream: &mut TcpStream) -> Broken {
        loop {
            let packet = match self.rx.try_recv() {
                Ok(p) => p,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return match self.flush(stream) {
                        Ok(()) => Broken::Exit,
                        Err(e) => Broken::Io(e),
                    };
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    // Momentarily idle: send what is buffered (low latency at low load;
                    // at high load the queue is rarely empty and frames coalesce).
                    if let Err(e) = self.flush(stream) {
                        return Broken::Io(e);
                    }
                    match self.rx.recv_timeout(POLL) {
                        Ok(p) => p,
                        Err(RecvTimeoutError::Disconnected) => return Broken::Exit,
                        Err(RecvTimeoutError::Timeout) => {
                            if self.stopping() {
                                return Broken::Exit;
                            }
                            if let Err(e) = self.drain_pongs(stream) {
                                return Broken::Io(e);
                            }
                            continue;
                        }
                    }
                }
            };
            if self.stopping() {
                return Broken::Exit;
            }
            let Packet::Batch(batch) = packet else {
                continue;
            };
            if batch.is_empty() {
                continue;
            }
            self.encode(&batch);
            drop(batch);
            if self.out.len() >= IO_BUFFER {
                if let Err(e) = self.flush(stream) {
                    return Broken::Io(e);
                }
            }
        }
    }

    /// Appends `batch` to the write buffer as one frame.
    fn encode(&mut self, batch: &[Envelope]) {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        let result = crate::wire::encode_batch(&mut self.out, batch);
        let len = self.out.len() - start - 4;
        let problem = match result {
            Err(e) => format!("could not be encoded ({e})"),
            Ok(()) if len > MAX_FRAME_BYTES => {
                format!("encodes to {len} bytes, over the {MAX_FRAME_BYTES}-byte frame limit")
            }
            Ok(()) => {
                self.out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
                self.pending_frames += 1;
                self.pending_envelopes += batch.len() as u64;
                return;
            }
        };
        self.out.truncate(start);
        bump(&self.counters.batches_dropped, 1);
        tracing::error!(
            "transport: dropping a batch of {} envelopes for task {} that {problem}",
            batch.len(),
            self.to_task
        );
    }

    /// Writes the buffer out. Blocked, it wakes every [`POLL`]: it stops when shutting
    /// down or re-pointed, and gives up when the peer shows no sign of life for
    /// [`Liveness::dead_after`].
    fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.last_heard = Instant::now();
                }
                // SO_SNDTIMEO: nothing could be written for a while.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stopping() {
                        return Err(io::Error::other("shutting down"));
                    }
                    if lock(&self.link).live.is_none() {
                        return Err(io::Error::other("re-pointed"));
                    }
                    self.drain_pongs(stream)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let c = &self.counters;
        bump(&c.frames_sent, self.pending_frames);
        bump(&c.envelopes_sent, self.pending_envelopes);
        bump(&c.bytes_sent, self.out.len() as u64);
        self.clear_pending();
        if self.last_drain.elapsed() >= Duration::from_secs(1) {
            self.drain_pongs(stream)?;
        }
        Ok(())
    }

    /// Reads what the server wrote since (its "alive" bytes), without blocking; an error
    /// when it closed the connection or was silent for [`Liveness::dead_after`].
    fn drain_pongs(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        self.last_drain = Instant::now();
        stream.set_nonblocking(true)?;
        let mut buf = [0u8; 64];
        let r = loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer closed the connection",
                    ))
                }
                Ok(_) => self.last_heard = Instant::now(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        r?;
        let silent = self.last_heard.elapsed();
        if silent >= self.liveness.dead_after {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer showed no sign of life for {} s", silent.as_secs()),
            ));
        }
        Ok(())
    }

    fn clear_pending(&mut self) {
        self.out.clear();
        if self.out.capacity() > 4 * IO_BUFFER {
            self.out = Vec::with_capacity(IO_BUFFER);
        }
        self.pending_frames = 0;
        self.pending_envelopes = 0;
    }
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use squall_api::{values, Anchors, TaskId, Value};

    use super::*;
    use crate::message::Msg;
    use crate::transfer::Transfer;

    const TOPO: &str = "topo-1";
    const EPOCH: u64 = 3;
    const WAIT: Duration = Duration::from_secs(10);
    /// Streams and tasks of the layout the test servers check against.
    const STREAMS: usize = 4;
    const MAX_TASK: u32 = 9;

    fn ident(worker: &str) -> Identity {
        Identity::new(TOPO, EPOCH, worker)
    }

    fn exec(first: u32, last: u32, role: Role, queue: &Sender<Packet>) -> LocalExecutor {
        LocalExecutor {
            first: TaskId(first),
            last: TaskId(last),
            role,
            queue: queue.clone(),
            blocked_ns: Arc::default(),
        }
    }

    fn start_server(listener: TcpListener, executors: Vec<LocalExecutor>) -> TransportServer {
        start_server_as(listener, executors, ident("server"), Liveness::default())
    }

    fn start_server_as(
        listener: TcpListener,
        executors: Vec<LocalExecutor>,
        identity: Identity,
        liveness: Liveness,
    ) -> TransportServer {
        // Logs show up with a failing test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let router = LocalRouter::new(executors, STREAMS, TaskId(MAX_TASK));
        TransportServer::start_with(listener, identity, router, liveness).unwrap()
    }

    fn lane(addr: SocketAddr, to: u32, capacity: usize) -> (Sender<Packet>, Lane) {
        connect_lane(addr, &ident("w1"), TaskId(to), Some(capacity)).unwrap()
    }

    fn local() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    /// The n-th tuple of `sender` to `task`, cycling through kinds of values.
    /// The sender and sequence number can be read back with [`origin`].
    fn tuple(sender: u32, seq: u32, task: u32) -> Envelope {
        let root = (u64::from(sender) << 32) | u64::from(seq);
        let msg = if seq.is_multiple_of(2) {
            let mut map = BTreeMap::new();
            map.insert("k".to_owned(), Value::from(-1.25));
            map.insert("nested".to_owned(), Value::List(vec![Value::Null]));
            let mut anchors = Anchors::single(root, u64::MAX);
            anchors.xor_edge(7, 0x0123_4567_89ab_cdef);
            Msg::Tuple {
                stream: 3,
                source: TaskId(sender),
                values: values![
                    i64::from(seq),
                    Value::Null,
                    true,
                    i64::MIN,
                    2.5,
                    "word",
                    "a string longer than twenty-four bytes, stored on the heap",
                    vec![0u8, 255, 7],
                    Value::List(vec![1.into(), "x".into(), Value::List(vec![])]),
                    Value::Map(map),
                ],
                anchors,
            }
        } else {
            Msg::Tuple {
                stream: 0,
                source: TaskId(sender),
                values: values![i64::from(seq)],
                anchors: Anchors::none(),
            }
        };
        Envelope {
            task: TaskId(task),
            msg,
        }
    }

    /// The n-th control message of `sender` for an acker task.
    fn to_acker(sender: u32, seq: u32, task: u32) -> Envelope {
        let root = (u64::from(sender) << 32) | u64::from(seq);
        let msg = match seq % 3 {
            0 => Msg::AckInit {
                root,
                val: u64::MAX - 1,
                spout_task: TaskId(9),
            },
            1 => Msg::Ack { root, val: 42 },
            _ => Msg::Fail { root },
        };
        Envelope {
            task: TaskId(task),
            msg,
        }
    }

    fn origin(env: &Envelope) -> (u32, u32) {
        match &env.msg {
            Msg::Tuple { source, values, .. } => (source.0, values[0].as_i64().unwrap() as u32),
            Msg::AckInit { root, .. }
            | Msg::Ack { root, .. }
            | Msg::Fail { root }
            | Msg::TreeAcked { root }
            | Msg::TreeFailed { root } => ((root >> 32) as u32, *root as u32),
        }
    }

    /// Receives from `rx` until `n` envelopes arrived; panics after [`WAIT`].
    fn collect(rx: &Receiver<Packet>, n: usize) -> Vec<Envelope> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Packet::Batch(b)) => got.extend(b),
                Ok(other) => panic!("unexpected packet {other:?}"),
                Err(e) => panic!("only {} of {n} envelopes arrived: {e}", got.len()),
            }
        }
        assert_eq!(got.len(), n, "more envelopes than expected");
        got
    }

    /// Waits until `cond` holds; panics after [`WAIT`].
    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn batches_arrive_intact_in_order_at_their_executor() {
        // A bolt executor with tasks 1-2, another with 3-4, an acker with task 5.
        let (q0, r0) = crossbeam_channel::bounded(4);
        let (q1, r1) = crossbeam_channel::bounded(4);
        let (qa, ra) = crossbeam_channel::bounded(4);
        let server = start_server(
            local(),
            vec![
                exec(1, 2, Role::Bolt, &q0),
                exec(3, 4, Role::Bolt, &q1),
                exec(5, 5, Role::Acker, &qa),
            ],
        );
        let addr = server.local_addr();

        const BATCHES: u32 = 40;
        const PER_BATCH: u32 = 25;
        let mut lanes = Vec::new();
        let mut senders = Vec::new();
        let mut expected: BTreeMap<u32, Vec<Envelope>> = BTreeMap::new();
        for sender in [1u32, 2] {
            for (to, capacity) in [(1, Some(8)), (3, Some(8)), (5, None)] {
                let (tx, lane) =
                    connect_lane(addr, &ident(&format!("w{sender}")), TaskId(to), capacity)
                        .unwrap();
                let batches: Vec<Vec<Envelope>> = (0..BATCHES)
                    .map(|b| {
                        (0..PER_BATCH)
                            .map(|i| {
                                let seq = b * PER_BATCH + i;
                                match to {
                                    5 => to_acker(sender, seq, 5),
                                    _ => tuple(sender, seq, to + seq % 2),
                                }
                            })
                            .collect()
                    })
                    .collect();
                expected
                    .entry(to)
                    .or_default()
                    .extend(batches.iter().flatten().cloned());
                senders.push(std::thread::spawn(move || {
                    for (i, batch) in batches.into_iter().enumerate() {
                        tx.send(Packet::Batch(batch)).unwrap();
                        if i == 3 {
                            // Control packets are not for the wire; empty batches are skipped.
                            tx.send(Packet::Wake).unwrap();
                            tx.send(Packet::Batch(Vec::new())).unwrap();
                        }
                    }
                }));
                lanes.push(lane);
            }
        }
        let n = (2 * BATCHES * PER_BATCH) as usize;
        let got1 = std::thread::spawn(move || collect(&r1, n));
        let gota = std::thread::spawn(move || collect(&ra, n));
        let got = BTreeMap::from([
            (1, collect(&r0, n)),
            (3, got1.join().unwrap()),
            (5, gota.join().unwrap()),
        ]);
        for s in senders {
            s.join().unwrap();
        }
        // Per sender, each executor sees exactly its envelopes, intact and in order.
        for (to, want) in &expected {
            for sender in [1, 2] {
                let of = |v: &Vec<Envelope>| -> Vec<Envelope> {
                    v.iter()
                        .filter(|e| origin(e).0 == sender)
                        .cloned()
                        .collect()
                };
                assert_eq!(of(&got[to]), of(want), "executor {to}, sender {sender}");
            }
        }
        let sent = lanes
            .iter()
            .fold(TransportStats::default(), |s, l| s + l.stats());
        let received = server.stats();
        assert_eq!(sent.frames_sent, 6 * u64::from(BATCHES));
        assert_eq!(sent.envelopes_sent, 6 * u64::from(BATCHES * PER_BATCH));
        assert_eq!(sent.batches_dropped, 0);
        assert_eq!(received.frames_received, sent.frames_sent);
        assert_eq!(received.envelopes_received, sent.envelopes_sent);
        assert_eq!(received.protocol_errors + received.connections_refused, 0);
        assert!(received.bytes_received > 0 && received.bytes_received < sent.bytes_sent);
    }

    #[test]
    fn a_reader_waiting_on_a_full_queue_charges_the_executor_with_the_wait() {
        let (q, r) = crossbeam_channel::bounded(1);
        let e = exec(1, 1, Role::Bolt, &q);
        let stop = AtomicBool::new(false);
        assert!(deliver(&e, vec![tuple(1, 1, 1)], &stop));
        assert_eq!(e.blocked_ns.load(Ordering::Relaxed), 0, "room: no wait");
        let drain = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let first = r.recv().unwrap();
            (first, r)
        });
        assert!(deliver(&e, vec![tuple(1, 2, 1)], &stop));
        let blocked = e.blocked_ns.load(Ordering::Relaxed);
        assert!(
            (150_000_000..5_000_000_000).contains(&blocked),
            "blocked {blocked} ns"
        );
        let (_, r) = drain.join().unwrap();
        assert!(matches!(r.try_recv(), Ok(Packet::Batch(b)) if b == vec![tuple(1, 2, 1)]));
    }

    #[test]
    fn remote_executors_are_more_transfer_destinations() {
        let (q, r) = crossbeam_channel::bounded(4);
        let server = start_server(local(), vec![exec(1, 2, Role::Bolt, &q)]);
        let (remote, _lane) = lane(server.local_addr(), 1, 4);
        // In the sending worker, tasks 1 and 2 live behind the lane.
        let mut transfer = Transfer::new(&[remote], &[], &[], &[None, Some(0), Some(0)], 8);
        let sent: Vec<Envelope> = (0..20).map(|i| tuple(1, i, 1 + i % 2)).collect();
        for env in sent.iter().cloned() {
            transfer.push(env);
        }
        transfer.flush();
        assert_eq!(collect(&r, sent.len()), sent);
    }

    fn big_batch(b: u32, per_batch: u32) -> Vec<Envelope> {
        (0..per_batch)
            .map(|i| Envelope {
                task: TaskId(1),
                msg: Msg::Tuple {
                    stream: 0,
                    source: TaskId(1),
                    values: values![i64::from(b * per_batch + i), vec![7u8; 1024]],
                    anchors: Anchors::none(),
                },
            })
            .collect()
    }

    #[test]
    fn a_full_executor_queue_holds_the_sender_back_without_breaking_the_lane() {
        // One batch of room at the executor, and nobody drains it for a while: longer
        // than a silent peer is given, but this one is alive and says so.
        let liveness = Liveness {
            ping_every: Duration::from_millis(100),
            dead_after: Duration::from_millis(800),
        };
        let (q, r) = crossbeam_channel::bounded(1);
        let server = start_server_as(
            local(),
            vec![exec(1, 1, Role::Bolt, &q)],
            ident("server"),
            liveness,
        );
        let (tx, lane) = connect_lane_with(
            server.local_addr(),
            &ident("w1"),
            TaskId(1),
            Some(2),
            liveness,
        )
        .unwrap();
        const PER_BATCH: u32 = 64;
        const LIMIT: u32 = 5_000;
        // Send until the queue stays full for a while: the writer is blocked on the socket.
        let mut sent = 0;
        let mut full_since: Option<Instant> = None;
        let held = loop {
            assert!(
                sent < LIMIT,
                "{LIMIT} batches of 64 KiB went out without blocking"
            );
            match tx.try_send(Packet::Batch(big_batch(sent, PER_BATCH))) {
                Ok(()) => {
                    sent += 1;
                    full_since = None;
                }
                Err(TrySendError::Full(p)) => {
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(2500) {
                        break p;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => panic!("writer thread gone"),
            }
        };
        let stats = server.stats();
        assert!(
            stats.frames_received < u64::from(sent),
            "the server read all {sent} batches although its queue is full: {stats:?}"
        );
        // Draining lets everything through, in order: nothing was lost to a reconnect.
        let rest = std::thread::spawn(move || tx.send(held).unwrap());
        let got = collect(&r, ((sent + 1) * PER_BATCH) as usize);
        rest.join().unwrap();
        for (i, env) in got.iter().enumerate() {
            assert_eq!(origin(env), (1, i as u32));
        }
        assert_eq!(lane.stats().batches_dropped, 0);
        assert_eq!(lane.stats().reconnects, 0);
    }

    /// Completes a handshake as an open server would, on `s`.
    fn accept_handshake(s: &mut TcpStream) {
        let mut rd = BufReader::new(s.try_clone().unwrap());
        let mut magic = [0u8; 4];
        rd.read_exact(&mut magic).unwrap();
        let mut frame = Vec::new();
        assert!(read_frame(&mut rd, &mut frame, MAX_HELLO_BYTES).unwrap());
        s.write_all(&[9u8; NONCE_LEN]).unwrap();
        let mut tag = [0u8; TAG_LEN];
        rd.read_exact(&mut tag).unwrap();
        s.write_all(&[ACCEPTED]).unwrap();
    }

    #[test]
    fn a_peer_that_neither_reads_nor_answers_is_given_up() {
        let liveness = Liveness {
            ping_every: Duration::from_millis(100),
            dead_after: Duration::from_millis(800),
        };
        let listener = local();
        let addr = listener.local_addr().unwrap();
        let (tx, lane) =
            connect_lane_with(addr, &ident("w1"), TaskId(1), Some(2), liveness).unwrap();
        // A "server" that shakes hands and then goes silent, and never reads.
        let (mut first, _) = listener.accept().unwrap();
        accept_handshake(&mut first);
        let filler = std::thread::spawn(move || {
            let mut b = 0;
            while tx.send(Packet::Batch(big_batch(b, 64))).is_ok() {
                b += 1;
            }
        });
        // The lane gives up on it and connects again.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "the lane never gave up");
            if listener.accept().is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eventually("the dropped batches counted", || {
            lane.stats().batches_dropped > 0
        });
        drop(first);
        drop(lane);
        filler.join().unwrap();
    }

    /// Writes `bytes` on a fresh connection and expects the server to close it, having
    /// written at most a handshake.
    fn expect_rejected(addr: SocketAddr, what: &str, bytes: &[u8], close_write: bool) {
        let mut s = TcpStream::connect(addr).unwrap();
        // The server may close before reading everything; a failed write is fine.
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(Shutdown::Write);
        }
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: the server did not close the connection")
            }
            Err(_) => {} // reset: closed with our bytes unread
        }
        assert!(
            got.len() <= NONCE_LEN + 1,
            "{what}: the server wrote {} bytes",
            got.len()
        );
    }

    /// Magic, a hello and an all-zero tag (what a client without a secret sends).
    fn hello_as(topology_id: &str, epoch: u64, to_task: u32) -> Vec<u8> {
        let body = rmp_serde::to_vec(&Hello {
            topology_id: topology_id.to_owned(),
            epoch,
            from_worker: "intruder".to_owned(),
            to_task,
        })
        .unwrap();
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(&[0u8; TAG_LEN]);
        v
    }

    fn hello(to_task: u32) -> Vec<u8> {
        hello_as(TOPO, EPOCH, to_task)
    }

    fn framed(mut v: Vec<u8>, payload: &[u8]) -> Vec<u8> {
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn frame_of(to_task: u32, batch: &[Envelope]) -> Vec<u8> {
        framed(hello(to_task), &crate::wire::to_vec(batch).unwrap())
    }

    #[test]
    fn bad_input_closes_the_connection_and_nothing_else() {
        let (q, r) = crossbeam_channel::bounded(64);
        let (qa, ra) = crossbeam_channel::bounded(64);
        let (qs, rs) = crossbeam_channel::unbounded();
        let server = start_server(
            local(),
            vec![
                exec(1, 2, Role::Bolt, &q),
                exec(5, 5, Role::Acker, &qa),
                exec(6, 6, Role::Spout, &qs),
            ],
        );
        let addr = server.local_addr();
        let mut rng = fastrand::Rng::with_seed(7);
        let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        // A tuple whose values claim 4 G elements, then ends: one group
        // [0, task 1, stream 0, source 1, [values]] (see `wire`).
        let mut alloc_bomb = vec![0x91, 0x95, 0x00, 0x01, 0x00, 0x01, 0x91];
        alloc_bomb.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // A value nested 200 000 lists deep.
        let mut depth_bomb = alloc_bomb[..alloc_bomb.len() - 6].to_vec();
        depth_bomb.push(0x91);
        depth_bomb.extend(std::iter::repeat_n(0x91u8, 200_000));
        let good_frame = crate::wire::to_vec(&[tuple(1, 1, 1)]).unwrap();
        let mut trailing_garbage = good_frame.clone();
        trailing_garbage.extend_from_slice(&garbage[..8]);
        let mut truncated = hello(1);
        truncated.extend_from_slice(&1000u32.to_be_bytes());
        truncated.extend_from_slice(&[0x91; 10]);
        let mut over_limit = hello(1);
        over_limit.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        let with_tuple = |task: u32, stream: u32, source: u32| Envelope {
            task: TaskId(task),
            msg: Msg::Tuple {
                stream,
                source: TaskId(source),
                values: values![1],
                anchors: Anchors::none(),
            },
        };
        // Each refused for who it is; each closed for what it sent.
        let refused: Vec<(&str, Vec<u8>)> = vec![
            ("the wrong topology", hello_as("other-topology", EPOCH, 1)),
            ("the wrong epoch", hello_as(TOPO, EPOCH + 1, 1)),
            ("an executor that does not run here", hello(3)),
            ("a task inside an executor, not its first", hello(2)),
        ];
        let broken: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                false,
            ),
            ("random bytes", garbage.clone(), false),
            ("nothing at all", Vec::new(), true),
            (
                "a huge hello",
                [&MAGIC[..], &[0, 0x10, 0, 0]].concat(),
                false,
            ),
            (
                "a garbage hello",
                framed(MAGIC.to_vec(), &garbage[..100]),
                false,
            ),
            (
                "a huge length prefix",
                [hello(1), vec![0xff; 4]].concat(),
                false,
            ),
            ("a frame over the limit", over_limit, false),
            ("a truncated frame", truncated, true),
            ("a garbage frame", framed(hello(1), &garbage), false),
            (
                "a frame with trailing garbage",
                framed(hello(1), &trailing_garbage),
                false,
            ),
            ("an allocation bomb", framed(hello(1), &alloc_bomb), false),
            ("a nesting bomb", framed(hello(1), &depth_bomb), false),
            // Frames that decode but name what does not exist or does not fit.
            (
                "a stream out of range",
                frame_of(1, &[with_tuple(1, STREAMS as u32, 1)]),
                false,
            ),
            (
                "a source task 0",
                frame_of(1, &[with_tuple(1, 0, 0)]),
                false,
            ),
            (
                "a source task out of range",
                frame_of(1, &[with_tuple(1, 0, MAX_TASK + 1)]),
                false,
            ),
            (
                "a task of another executor, after a good one",
                frame_of(1, &[with_tuple(1, 0, 1), with_tuple(3, 0, 1)]),
                false,
            ),
            (
                "a tuple for an acker",
                frame_of(5, &[with_tuple(5, 0, 1)]),
                false,
            ),
            (
                // (Spouts take tuples: the checkpoint barriers of stateful topologies.)
                "a tuple for a spout on a stream the layout lacks",
                frame_of(6, &[with_tuple(6, STREAMS as u32, 1)]),
                false,
            ),
            (
                "an ack for a bolt",
                frame_of(1, &[to_acker(1, 1, 1)]),
                false,
            ),
            (
                "an ack for a spout",
                frame_of(6, &[to_acker(1, 1, 6)]),
                false,
            ),
            (
                "a verdict for an acker",
                frame_of(
                    5,
                    &[Envelope {
                        task: TaskId(5),
                        msg: Msg::TreeAcked { root: 1 },
                    }],
                ),
                false,
            ),
            (
                "an ack-init naming a task out of range",
                frame_of(
                    5,
                    &[Envelope {
                        task: TaskId(5),
                        msg: Msg::AckInit {
                            root: 1,
                            val: 2,
                            spout_task: TaskId(MAX_TASK + 1),
                        },
                    }],
                ),
                false,
            ),
        ];
        for (what, bytes) in &refused {
            expect_rejected(addr, what, bytes, false);
        }
        for (what, bytes, close_write) in &broken {
            expect_rejected(addr, what, bytes, *close_write);
        }
        eventually("every bad connection counted", || {
            let s = server.stats();
            s.protocol_errors == broken.len() as u64
                && s.connections_refused == refused.len() as u64
        });
        assert!(
            r.is_empty() && ra.is_empty() && rs.is_empty(),
            "something from a bad connection was delivered"
        );

        // The server still serves proper clients, with the same envelopes done right.
        let (tx, _lane) = lane(addr, 1, 4);
        tx.send(Packet::Batch(vec![tuple(1, 1, 1), with_tuple(2, 1, 9)]))
            .unwrap();
        assert_eq!(collect(&r, 2), vec![tuple(1, 1, 1), with_tuple(2, 1, 9)]);
        let (tx, _lane) = connect_lane(addr, &ident("w1"), TaskId(6), None).unwrap();
        let verdict = Envelope {
            task: TaskId(6),
            msg: Msg::TreeFailed { root: 7 },
        };
        tx.send(Packet::Batch(vec![verdict.clone()])).unwrap();
        assert_eq!(collect(&rs, 1), vec![verdict]);
    }

    fn secret(s: &str) -> Option<Secret> {
        Some(Secret::new(s.as_bytes()).unwrap())
    }

    #[test]
    fn with_a_cluster_secret_only_lanes_that_know_it_get_through() {
        let (q, r) = crossbeam_channel::bounded(64);
        let server = start_server_as(
            local(),
            vec![exec(1, 1, Role::Bolt, &q)],
            ident("server").with_secret(secret("the-cluster-secret-1")),
            Liveness::default(),
        );
        let addr = server.local_addr();
        let send_as = |who: &str, secret: Option<Secret>| {
            let (tx, lane) =
                connect_lane(addr, &ident(who).with_secret(secret), TaskId(1), Some(4)).unwrap();
            tx.send(Packet::Batch(vec![tuple(1, 0, 1)])).unwrap();
            lane
        };
        let wrong = send_as("wrong", secret("not-the-cluster-secret"));
        let none = send_as("none", None);
        eventually("both refused, twice", || {
            wrong.stats().connections_refused >= 2 && none.stats().connections_refused >= 2
        });
        assert!(r.is_empty(), "a lane without the secret delivered");
        assert_eq!(wrong.stats().frames_sent + none.stats().frames_sent, 0);
        assert!(server.stats().connections_refused >= 4);

        let right = send_as("right", secret("the-cluster-secret-1"));
        assert_eq!(collect(&r, 1), vec![tuple(1, 0, 1)]);
        assert_eq!(right.stats().connections_refused, 0);
        assert!(r.is_empty());
    }

    #[test]
    fn lanes_of_another_epoch_are_refused() {
        let (q, r) = crossbeam_channel::bounded(64);
        let server = start_server(local(), vec![exec(1, 1, Role::Bolt, &q)]);
        let old = Identity::new(TOPO, EPOCH - 1, "old-worker");
        let (tx, lane) = connect_lane(server.local_addr(), &old, TaskId(1), Some(4)).unwrap();
        tx.send(Packet::Batch(vec![tuple(1, 0, 1)])).unwrap();
        eventually("the old lane refused", || {
            lane.stats().connections_refused >= 1 && server.stats().connections_refused >= 1
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(r.is_empty(), "a lane of another epoch delivered");
        assert_eq!(lane.stats().frames_sent, 0);
    }

    fn bind(addr: SocketAddr) -> TcpListener {
        let mut tries = 0;
        loop {
            match TcpListener::bind(addr) {
                Ok(l) => return l,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        }
    }

    /// Sends batches of one tuple on `tx` until one arrives on `r`; returns its number.
    fn first_through(tx: &Sender<Packet>, r: &Receiver<Packet>, seq: &mut u32) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "nothing arrived");
            tx.send(Packet::Batch(vec![tuple(1, *seq, 1)])).unwrap();
            *seq += 1;
            if let Ok(Packet::Batch(b)) = r.recv_timeout(Duration::from_millis(50)) {
                break origin(&b[0]).1;
            }
        }
    }

    #[test]
    fn the_lane_waits_for_the_server_and_reconnects_after_a_restart() {
        let addr = local().local_addr().unwrap(); // a port nobody listens on
        let (tx, lane) = lane(addr, 1, 16);
        tx.send(Packet::Batch(vec![tuple(1, 0, 1)])).unwrap();
        std::thread::sleep(Duration::from_millis(300)); // the lane retries meanwhile

        let (q, r) = crossbeam_channel::bounded(16);
        let mut server = start_server(bind(addr), vec![exec(1, 1, Role::Bolt, &q)]);
        assert_eq!(collect(&r, 1), vec![tuple(1, 0, 1)]);
        server.shutdown();
        drop(server);

        let server = start_server(bind(addr), vec![exec(1, 1, Role::Bolt, &q)]);
        // Keep sending until batches arrive again; one written into the dead connection
        // may be lost.
        let mut seq = 1;
        let first = first_through(&tx, &r, &mut seq);
        // From then on nothing is lost and the order holds.
        for _ in 0..20 {
            tx.send(Packet::Batch(vec![tuple(1, seq, 1)])).unwrap();
            seq += 1;
        }
        let rest: Vec<u32> = collect(&r, (seq - 1 - first) as usize)
            .iter()
            .map(|e| origin(e).1)
            .collect();
        assert_eq!(rest, (first + 1..seq).collect::<Vec<_>>());
        assert_eq!(lane.stats().reconnects, 1);
        assert_eq!(server.stats().protocol_errors, 0);
    }

    #[test]
    fn a_lane_follows_its_executor_to_another_worker() {
        let (q1, r1) = crossbeam_channel::bounded(16);
        let (q2, r2) = crossbeam_channel::bounded(16);
        let one = start_server(local(), vec![exec(1, 1, Role::Bolt, &q1)]);
        let two = start_server(local(), vec![exec(1, 1, Role::Bolt, &q2)]);
        let (tx, lane) = lane(one.local_addr(), 1, 16);
        let mut seq = 0;
        first_through(&tx, &r1, &mut seq);
        lane.set_addr(two.local_addr());
        assert_eq!(lane.addr(), two.local_addr());
        let first = first_through(&tx, &r2, &mut seq);
        for _ in 0..10 {
            tx.send(Packet::Batch(vec![tuple(1, seq, 1)])).unwrap();
            seq += 1;
        }
        let rest: Vec<u32> = collect(&r2, (seq - 1 - first) as usize)
            .iter()
            .map(|e| origin(e).1)
            .collect();
        assert_eq!(rest, (first + 1..seq).collect::<Vec<_>>());
        // Nothing more went to the old place.
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(Packet::Batch(b)) = r1.try_recv() {
            assert!(b.iter().all(|e| origin(e).1 < first));
        }
    }

    #[test]
    fn shutdown_does_not_hang_on_a_stalled_peer() {
        // The executor never drains: the reader, the socket and the writer all block.
        let (q, _r) = crossbeam_channel::bounded(1);
        let mut server = start_server(local(), vec![exec(1, 1, Role::Bolt, &q)]);
        let (tx, mut lane) = lane(server.local_addr(), 1, 1);
        let filler = std::thread::spawn(move || {
            let batch = || {
                let big = Envelope {
                    task: TaskId(1),
                    msg: Msg::Tuple {
                        stream: 0,
                        source: TaskId(1),
                        values: values![vec![0u8; 64 << 10]],
                        anchors: Anchors::none(),
                    },
                };
                Packet::Batch(vec![big; 16])
            };
            // Ends when the writer has gone and the queue is disconnected.
            while tx.send(batch()).is_ok() {}
        });
        eventually("the first frame", || server.stats().frames_received > 0);
        std::thread::sleep(Duration::from_millis(300));

        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            lane.shutdown();
            server.shutdown();
            let _ = done_tx.send((lane.stats(), server.stats()));
        });
        let (sent, received) = done_rx.recv_timeout(WAIT).expect("shutdown hung");
        filler.join().unwrap();
        assert!(sent.batches_dropped > 0, "{sent:?}");
        assert_eq!(received.protocol_errors, 0);
    }
}
