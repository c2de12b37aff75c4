//! The worker-to-worker data plane: batches of [`Envelope`]s over TCP.
//!
//! Every worker process runs one [`TransportServer`] and, per other worker it sends to,
//! one [`RemoteWorker`] ([`connect_remote`]). Both are plain threads over blocking
//! sockets:
//!
//! ```text
//!  worker A                                             worker B
//!  executor ─ Transfer ─▶ queue ─▶ writer thread ══TCP══▶ reader thread ─ LocalRouter ─▶ executor queues
//! ```
//!
//! # Plugging into `Transfer`
//!
//! The sender returned by [`connect_remote`] is a `Sender<Packet>` like an executor's
//! receive queue, so a remote worker is one more destination of
//! [`Transfer`](crate::transfer): append it to the `queues` and map every task the remote
//! worker runs to its index in `dest_of_task`. `Transfer` then batches per remote worker
//! exactly as it does per local executor, and a full send queue blocks the producer.
//!
//! # Wire format
//!
//! A connection starts with the 4 bytes [`MAGIC`] (`SQL1`) followed by one hello frame;
//! then every frame carries one batch. A frame is a big-endian `u32` length and that many
//! bytes of MessagePack (`rmp-serde`'s default, compact encoding: structs as arrays):
//!
//! - hello: `{ topology_id: String, from_worker: String }`, at most 64 KiB;
//! - data: one batch as a [`WireBatch`](crate::message::WireBatch) (tuples grouped by
//!   task, stream and source), at most [`MAX_FRAME_BYTES`].
//!
//! Data flows one way; the server never writes. It closes a connection whose magic or
//! topology id does not match, and one that sends a frame over the limit, a truncated
//! frame or a payload that does not decode, logging a warning that names the peer and
//! the problem. Nothing a peer sends can panic the worker.
//!
//! # Backpressure
//!
//! The server's reader thread hands each batch to the local executor queues with a
//! blocking send. While a queue is full it stops reading the socket, TCP's window fills,
//! the remote writer thread blocks in `write`, its bounded queue fills, and the remote
//! producers block in `Transfer` just as they would on a full local queue. While a peer
//! is unreachable the writer keeps retrying, so its queue fills and producers wait too.
//!
//! # Delivery
//!
//! At most once. When a connection breaks, the batches that could not be written —
//! those being written and those still in the write buffer — are dropped and counted in
//! [`TransportStats::batches_dropped`]; batches the kernel had accepted but the peer never
//! read are lost without being counted (TCP gives no receipt). Tracked tuples are not
//! lost for good: their trees time out and the spouts replay them, as in Storm.

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Add;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};

use crate::message::{Envelope, Packet};

/// The first 4 bytes of every connection.
pub const MAGIC: [u8; 4] = *b"SQL1";
/// The largest data frame (length prefix excluded) a server accepts and a client sends.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The largest hello frame a server accepts.
const MAX_HELLO_BYTES: usize = 64 << 10;
/// Socket buffer size on either side; a client writes when this much is pending.
const IO_BUFFER: usize = 256 << 10;
/// How long a server waits for the magic and hello of a new connection.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often blocked threads look at their shutdown flag.
const POLL: Duration = Duration::from_millis(100);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader threads decode nested values recursively; give them room for rmp-serde's
/// nesting limit (1024) even in debug builds.
const READER_STACK: usize = 8 << 20;

/// The payload of the hello frame.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    topology_id: String,
    from_worker: String,
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
    envelopes_unroutable: AtomicU64,
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
            envelopes_unroutable: load(&self.envelopes_unroutable),
        }
    }
}

/// A snapshot of a [`TransportServer`]'s or [`RemoteWorker`]'s counters. Fields that do
/// not apply to an endpoint stay 0; snapshots add up with `+`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Data frames (batches) written to a socket.
    pub frames_sent: u64,
    /// Bytes written: data frames with their length prefixes, and each connection's
    /// magic and hello.
    pub bytes_sent: u64,
    /// Envelopes in the frames written.
    pub envelopes_sent: u64,
    /// Data frames read and decoded.
    pub frames_received: u64,
    /// Bytes of data frames read, length prefixes included.
    pub bytes_received: u64,
    /// Envelopes in the frames read.
    pub envelopes_received: u64,
    /// Batches a client dropped: not written because the connection broke, or too large
    /// to encode in one frame.
    pub batches_dropped: u64,
    /// Times a client connected again after losing its connection.
    pub reconnects: u64,
    /// Connections a server closed for a bad hello or a bad frame.
    pub protocol_errors: u64,
    /// Received envelopes dropped because no local executor runs their task.
    pub envelopes_unroutable: u64,
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
            envelopes_unroutable: self.envelopes_unroutable + o.envelopes_unroutable,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------

const NO_DEST: u32 = u32::MAX;

/// Delivers received batches to this worker's executors: splits each batch by receiving
/// executor and hands every part to that executor's queue with a blocking send, so a full
/// queue stops the connection's reader (backpressure across the wire).
#[derive(Debug)]
pub struct LocalRouter {
    dest_of_task: Vec<u32>,
    queues: Vec<Sender<Packet>>,
}

impl LocalRouter {
    /// `queues[i]` receives for local executor `i`; `dest_of_task[task]` names that
    /// executor, `None` for tasks this worker does not run (as for `Transfer`).
    ///
    /// # Panics
    ///
    /// If `dest_of_task` names an executor that `queues` lacks.
    pub fn new(queues: &[Sender<Packet>], dest_of_task: &[Option<usize>]) -> Self {
        let dest_of_task = dest_of_task
            .iter()
            .enumerate()
            .map(|(task, d)| match *d {
                None => NO_DEST,
                Some(d) => {
                    assert!(
                        d < queues.len(),
                        "task {task} maps to executor {d} but only {} queues were given",
                        queues.len()
                    );
                    d as u32
                }
            })
            .collect();
        LocalRouter {
            dest_of_task,
            queues: queues.to_vec(),
        }
    }

    #[inline]
    fn dest(&self, env: &Envelope) -> u32 {
        self.dest_of_task
            .get(env.task.0 as usize)
            .copied()
            .unwrap_or(NO_DEST)
    }

    /// Delivers `batch`; returns how many envelopes had no local task, or `None` when
    /// `stop` was raised while waiting on a full queue.
    fn route(&self, batch: Vec<Envelope>, stop: &AtomicBool) -> Option<usize> {
        let Some(first) = batch.first().map(|e| self.dest(e)) else {
            return Some(0);
        };
        // The common case: the whole batch is for one executor; hand it over as it is.
        if first != NO_DEST && batch.iter().all(|e| self.dest(e) == first) {
            return deliver(&self.queues[first as usize], batch, stop).then_some(0);
        }
        let mut parts: Vec<Vec<Envelope>> = (0..self.queues.len()).map(|_| Vec::new()).collect();
        let mut unroutable = 0;
        for env in batch {
            match self.dest(&env) {
                NO_DEST => unroutable += 1,
                d => parts[d as usize].push(env),
            }
        }
        for (queue, part) in self.queues.iter().zip(parts) {
            if !part.is_empty() && !deliver(queue, part, stop) {
                return None;
            }
        }
        Some(unroutable)
    }
}

/// Sends `batch` to `queue`, waiting while it is full. False when `stop` was raised
/// meanwhile. A queue whose executor has gone counts as delivered (shutting down).
fn deliver(queue: &Sender<Packet>, batch: Vec<Envelope>, stop: &AtomicBool) -> bool {
    let mut packet = match queue.try_send(Packet::Batch(batch)) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => return true,
        Err(TrySendError::Full(p)) => p,
    };
    loop {
        match queue.send_timeout(packet, POLL) {
            Ok(()) | Err(SendTimeoutError::Disconnected(_)) => return true,
            Err(SendTimeoutError::Timeout(p)) if !stop.load(Ordering::Relaxed) => packet = p,
            Err(SendTimeoutError::Timeout(_)) => return false,
        }
    }
}

/// Why a server closed a connection.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("it did not start with the magic \"SQL1\" but with \"{}\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("it closed the connection before its hello")]
    NoHello,
    #[error("its hello frame is invalid: {0}")]
    BadHello(String),
    #[error("worker '{from_worker}' belongs to topology '{got}', not '{expected}'")]
    WrongTopology {
        from_worker: String,
        got: String,
        expected: String,
    },
    #[error("it announced a frame of {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("it closed the connection in the middle of a frame")]
    Truncated,
    #[error("a frame of {len} bytes does not decode as a batch: {error}")]
    Undecodable { len: usize, error: String },
    #[error("reading failed: {0}")]
    Io(io::Error),
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
    let undecodable = |error: String| ConnError::Undecodable {
        len: frame.len(),
        error,
    };
    // Decoding from the slice (not through `Read`) lets strings be read in place.
    let mut de = rmp_serde::Deserializer::from_read_ref(frame);
    let batch = crate::message::DecodedBatch::deserialize(&mut de)
        .map_err(|e| undecodable(e.to_string()))?
        .0;
    // Whatever decodes after the batch is trailing garbage.
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == io::ErrorKind::UnexpectedEof =>
        {
            Ok(batch)
        }
        _ => Err(undecodable("bytes follow the batch".to_owned())),
    }
}

/// Checks the magic and the hello; returns the peer's worker name.
fn handshake(rd: &mut impl Read, topology_id: &str) -> Result<String, ConnError> {
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
    if hello.topology_id != topology_id {
        return Err(ConnError::WrongTopology {
            from_worker: hello.from_worker,
            got: hello.topology_id,
            expected: topology_id.to_owned(),
        });
    }
    Ok(hello.from_worker)
}

struct ServerShared {
    topology_id: String,
    router: LocalRouter,
    stop: AtomicBool,
    counters: Counters,
}

impl ServerShared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Serves one connection until it ends, is rejected or the server stops.
    fn serve(&self, stream: &TcpStream, peer: SocketAddr) {
        let mut rd = BufReader::with_capacity(IO_BUFFER, stream);
        let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let from_worker = match handshake(&mut rd, &self.topology_id) {
            Ok(w) => w,
            Err(e) => return self.reject(peer, "", e),
        };
        let _ = stream.set_read_timeout(None);
        tracing::info!(%peer, from_worker, "transport: accepted a connection");
        let mut frame = Vec::new();
        let mut warned_unroutable = false;
        loop {
            match read_frame(&mut rd, &mut frame, MAX_FRAME_BYTES) {
                Ok(true) => {}
                Ok(false) => {
                    if !self.stopping() {
                        tracing::info!(%peer, from_worker, "transport: peer closed the connection");
                    }
                    return;
                }
                Err(e) => return self.reject(peer, &from_worker, e),
            }
            let batch = match decode_batch(&frame) {
                Ok(b) => b,
                Err(e) => return self.reject(peer, &from_worker, e),
            };
            let c = &self.counters;
            bump(&c.frames_received, 1);
            bump(&c.bytes_received, frame.len() as u64 + 4);
            bump(&c.envelopes_received, batch.len() as u64);
            match self.router.route(batch, &self.stop) {
                None => return,
                Some(0) => {}
                Some(n) => {
                    bump(&c.envelopes_unroutable, n as u64);
                    if !warned_unroutable {
                        warned_unroutable = true;
                        tracing::warn!(
                            %peer,
                            from_worker,
                            "transport: dropped {n} envelopes for tasks this worker does not run; \
                             further ones from this connection are only counted"
                        );
                    }
                }
            }
        }
    }

    fn reject(&self, peer: SocketAddr, from_worker: &str, e: ConnError) {
        if self.stopping() {
            return;
        }
        bump(&self.counters.protocol_errors, 1);
        tracing::warn!(%peer, from_worker, "transport: closing the connection from {peer}: {e}");
    }
}

struct Connection {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// Receives batches from other workers and hands them to this worker's executors: one
/// accept thread plus one reader thread per connection. Stops when shut down or dropped.
pub struct TransportServer {
    addr: SocketAddr,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
}

impl TransportServer {
    /// Serves `listener` for topology `topology_id`, delivering through `router`.
    pub fn start(
        listener: TcpListener,
        topology_id: impl Into<String>,
        router: LocalRouter,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(ServerShared {
            topology_id: topology_id.into(),
            router,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("squall-transport-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(TransportServer {
            addr,
            shared,
            accept: Some(accept),
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
        let _ = stream.set_nodelay(true);
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

/// The sending side of the connection to one remote worker: a writer thread draining the
/// queue returned by [`connect_remote`]. Stops when every sender is dropped (after
/// writing what was queued), when shut down, or when dropped.
pub struct RemoteWorker {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Option<TcpStream>>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread for the worker listening at `addr` and returns its queue,
/// bounded to `capacity` batches (at least 1). Only [`Packet::Batch`]es travel; other
/// packets are ignored. The thread connects in the background, retrying every
/// 50 ms .. 1 s until the peer is up, and reconnects the same way when the connection
/// breaks (see the [module docs](self) for what is lost then).
pub fn connect_remote(
    addr: SocketAddr,
    topology_id: impl Into<String>,
    from_worker: impl Into<String>,
    capacity: usize,
) -> io::Result<(Sender<Packet>, RemoteWorker)> {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let hello = Hello {
        topology_id: topology_id.into(),
        from_worker: from_worker.into(),
    };
    let mut preamble = MAGIC.to_vec();
    let body = rmp_serde::to_vec(&hello).map_err(io::Error::other)?;
    preamble.extend_from_slice(&(body.len() as u32).to_be_bytes());
    preamble.extend_from_slice(&body);
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Mutex::new(None));
    let counters = Arc::new(Counters::default());
    let writer = Writer {
        addr,
        preamble,
        rx,
        stop: stop.clone(),
        live: live.clone(),
        counters: counters.clone(),
        out: Vec::with_capacity(IO_BUFFER),
        pending_frames: 0,
        pending_envelopes: 0,
    };
    let thread = std::thread::Builder::new()
        .name(format!("squall-transport-tx-{addr}"))
        .spawn(move || writer.run())?;
    Ok((
        tx,
        RemoteWorker {
            addr,
            stop,
            live,
            counters,
            thread: Some(thread),
        },
    ))
}

impl RemoteWorker {
    /// The remote worker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of this connection's counters.
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
        if let Some(s) = &*self.live.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = thread.join();
    }
}

impl Drop for RemoteWorker {
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

struct Writer {
    addr: SocketAddr,
    /// Magic and hello frame.
    preamble: Vec<u8>,
    rx: Receiver<Packet>,
    stop: Arc<AtomicBool>,
    /// A clone of the current connection, for `shutdown` to unblock a write.
    live: Arc<Mutex<Option<TcpStream>>>,
    counters: Arc<Counters>,
    /// Encoded frames not yet written: the write buffer.
    out: Vec<u8>,
    pending_frames: u64,
    pending_envelopes: u64,
}

impl Writer {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut connected_before = false;
        while let Some(mut stream) = self.connect(connected_before) {
            if connected_before {
                bump(&self.counters.reconnects, 1);
            }
            connected_before = true;
            self.out.clear();
            self.out.extend_from_slice(&self.preamble);
            let broken = self.pump(&mut stream);
            let _ = stream.shutdown(Shutdown::Both);
            *self.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
            match broken {
                Broken::Exit => break,
                Broken::Io(_) if self.stopping() => break,
                Broken::Io(e) => {
                    let lost = self.pending_frames;
                    bump(&self.counters.batches_dropped, lost);
                    self.clear_pending();
                    tracing::warn!(
                        peer = %self.addr,
                        "transport: connection to {} broke ({e}); reconnecting, {lost} batches dropped",
                        self.addr
                    );
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

    /// Connects and publishes the connection in `live`; `None` when stopping.
    fn connect(&self, reconnect: bool) -> Option<TcpStream> {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return None;
            }
            match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    if let Ok(clone) = stream.try_clone() {
                        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(clone);
                    }
                    // `shutdown` may have looked at `live` before we filled it.
                    if self.stopping() {
                        return None;
                    }
                    if reconnect || failures > 0 {
                        tracing::info!(peer = %self.addr, "transport: connected to {}", self.addr);
                    }
                    return Some(stream);
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(
                            peer = %self.addr,
                            "transport: worker at {} is not reachable ({e}); retrying every {} ms to {} s",
                            self.addr,
                            BACKOFF_MIN.as_millis(),
                            BACKOFF_MAX.as_secs()
                        );
                    } else {
                        tracing::debug!(peer = %self.addr, "transport: connecting failed again: {e}");
                    }
                    failures += 1;
                }
            }
            // Sleep in slices so that a shutdown is noticed quickly.
            let mut slept = Duration::ZERO;
            while slept < backoff && !self.stopping() {
                let step = BACKOFF_MIN.min(backoff - slept);
                std::thread::sleep(step);
                slept += step;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
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
                            if let Err(e) = peer_alive(stream) {
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
        let result = rmp_serde::encode::write(&mut self.out, &crate::message::WireBatch(batch));
        let len = self.out.len() - start - 4;
        let problem = match result {
            Err(e) => format!("could not be encoded: {e}"),
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
            peer = %self.addr,
            "transport: dropping a batch of {} envelopes that {problem}",
            batch.len()
        );
    }

    /// Writes the buffer out.
    fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        stream.write_all(&self.out)?;
        let c = &self.counters;
        bump(&c.frames_sent, self.pending_frames);
        bump(&c.envelopes_sent, self.pending_envelopes);
        bump(&c.bytes_sent, self.out.len() as u64);
        self.clear_pending();
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

/// Checks, without blocking, that the peer has not closed an idle connection (the server
/// never writes, so anything readable means end of stream or an error).
fn peer_alive(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let r = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false)?;
    match r {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the peer closed the connection",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use squall_api::{values, Anchors, TaskId, Value};

    use super::*;
    use crate::message::Msg;
    use crate::transfer::Transfer;

    const TOPO: &str = "topo-1";
    const WAIT: Duration = Duration::from_secs(10);

    fn start_server(
        listener: TcpListener,
        queues: &[Sender<Packet>],
        dest: &[Option<usize>],
    ) -> TransportServer {
        // Logs show up with a failing test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        TransportServer::start(listener, TOPO, LocalRouter::new(queues, dest)).unwrap()
    }

    fn local() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    /// The n-th message of `sender` to `task`, cycling through every kind of message.
    /// The sender and sequence number can be read back with [`origin`].
    fn message(sender: u32, seq: u32, task: u32) -> Envelope {
        let root = (u64::from(sender) << 32) | u64::from(seq);
        let msg = match seq % 6 {
            0 => {
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
            }
            1 => Msg::Tuple {
                stream: 0,
                source: TaskId(sender),
                values: values![i64::from(seq)],
                anchors: Anchors::none(),
            },
            2 => Msg::AckInit {
                root,
                val: u64::MAX - 1,
                spout_task: TaskId(9),
            },
            3 => Msg::Ack { root, val: 42 },
            4 => Msg::Fail { root },
            _ => Msg::TreeAcked { root },
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
    fn batches_arrive_intact_in_order_at_the_right_executor() {
        // Tasks 1 and 2 run on executor 0, tasks 3 and 4 on executor 1; task 5 elsewhere.
        let (q0, r0) = crossbeam_channel::bounded(4);
        let (q1, r1) = crossbeam_channel::bounded(4);
        let dest = [None, Some(0), Some(0), Some(1), Some(1)];
        let server = start_server(local(), &[q0, q1], &dest);
        let addr = server.local_addr();

        const BATCHES: u32 = 40;
        const PER_BATCH: u32 = 25;
        let mut expected = Vec::new();
        let mut clients = Vec::new();
        let mut senders = Vec::new();
        for sender in [1u32, 2] {
            let (tx, client) = connect_remote(addr, TOPO, format!("w{sender}"), 8).unwrap();
            let batches: Vec<Vec<Envelope>> = (0..BATCHES)
                .map(|b| {
                    (0..PER_BATCH)
                        .map(|i| {
                            let seq = b * PER_BATCH + i;
                            // Mostly mixed batches; every fourth is for executor 1 only.
                            let task = if b % 4 == 3 { 3 + seq % 2 } else { 1 + seq % 5 };
                            message(sender, seq, task)
                        })
                        .collect()
                })
                .collect();
            expected.extend(batches.iter().flatten().cloned());
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
            clients.push(client);
        }
        let unroutable = expected.iter().filter(|e| e.task.0 == 5).count();
        let want = |exec: usize| -> Vec<Envelope> {
            expected
                .iter()
                .filter(|e| dest.get(e.task.0 as usize).copied().flatten() == Some(exec))
                .cloned()
                .collect()
        };
        let (want0, want1) = (want(0), want(1));
        let n1 = want1.len();
        let got1 = std::thread::spawn(move || collect(&r1, n1));
        let got0 = collect(&r0, want0.len());
        let got1 = got1.join().unwrap();
        for s in senders {
            s.join().unwrap();
        }
        // Per sender, each executor sees exactly its envelopes, intact and in order.
        for (got, want) in [(&got0, &want0), (&got1, &want1)] {
            for sender in [1, 2] {
                let of = |v: &Vec<Envelope>| -> Vec<Envelope> {
                    v.iter()
                        .filter(|e| origin(e).0 == sender)
                        .cloned()
                        .collect()
                };
                assert_eq!(of(got), of(want));
            }
        }
        eventually("the unroutable count", || {
            server.stats().envelopes_unroutable == unroutable as u64
        });
        let sent = clients[0].stats() + clients[1].stats();
        let received = server.stats();
        assert_eq!(sent.frames_sent, 2 * u64::from(BATCHES));
        assert_eq!(sent.envelopes_sent, 2 * u64::from(BATCHES * PER_BATCH));
        assert_eq!(sent.batches_dropped, 0);
        assert_eq!(received.frames_received, sent.frames_sent);
        assert_eq!(received.envelopes_received, sent.envelopes_sent);
        assert_eq!(received.protocol_errors, 0);
        assert!(received.bytes_received > 0 && received.bytes_received < sent.bytes_sent);
    }

    #[test]
    fn a_remote_worker_is_one_more_transfer_destination() {
        let (q, r) = crossbeam_channel::bounded(4);
        let server = start_server(local(), &[q], &[None, Some(0), Some(0)]);
        let (remote, _client) = connect_remote(server.local_addr(), TOPO, "w1", 4).unwrap();
        // In the sending worker, tasks 1 and 2 live behind the remote worker's queue.
        let mut transfer = Transfer::new(&[remote], &[None, Some(0), Some(0)], 8);
        let sent: Vec<Envelope> = (0..20).map(|i| message(1, i, 1 + i % 2)).collect();
        for env in sent.iter().cloned() {
            transfer.push(env);
        }
        transfer.flush();
        assert_eq!(collect(&r, sent.len()), sent);
    }

    #[test]
    fn a_full_local_queue_holds_the_sender_back() {
        // One batch of room at the executor, and nobody drains it.
        let (q, r) = crossbeam_channel::bounded(1);
        let server = start_server(local(), &[q], &[None, Some(0)]);
        let (tx, client) = connect_remote(server.local_addr(), TOPO, "w1", 2).unwrap();
        const PER_BATCH: u32 = 64;
        const LIMIT: u32 = 5_000;
        let batch = |b: u32| -> Vec<Envelope> {
            (0..PER_BATCH)
                .map(|i| Envelope {
                    task: TaskId(1),
                    msg: Msg::Tuple {
                        stream: 0,
                        source: TaskId(1),
                        values: values![i64::from(b * PER_BATCH + i), vec![7u8; 1024]],
                        anchors: Anchors::none(),
                    },
                })
                .collect()
        };
        // Send until the queue stays full for a while: the writer is blocked on the socket.
        let mut sent = 0;
        let mut full_since: Option<Instant> = None;
        let held = loop {
            assert!(
                sent < LIMIT,
                "{LIMIT} batches of 64 KiB went out without blocking"
            );
            match tx.try_send(Packet::Batch(batch(sent))) {
                Ok(()) => {
                    sent += 1;
                    full_since = None;
                }
                Err(TrySendError::Full(p)) => {
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
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
        // Draining lets everything through, in order.
        let rest = std::thread::spawn(move || tx.send(held).unwrap());
        let got = collect(&r, ((sent + 1) * PER_BATCH) as usize);
        rest.join().unwrap();
        for (i, env) in got.iter().enumerate() {
            assert_eq!(origin(env), (1, i as u32));
        }
        assert_eq!(client.stats().batches_dropped, 0);
    }

    /// Writes `bytes` on a fresh connection and expects the server to close it.
    fn expect_rejected(addr: SocketAddr, what: &str, bytes: &[u8], close_write: bool) {
        let mut s = TcpStream::connect(addr).unwrap();
        // The server may close before reading everything; a failed write is fine.
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(Shutdown::Write);
        }
        s.set_read_timeout(Some(WAIT)).unwrap();
        match s.read(&mut [0u8; 16]) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: the server wrote {n} bytes"),
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
    }

    fn hello(topology_id: &str) -> Vec<u8> {
        let body = rmp_serde::to_vec(&Hello {
            topology_id: topology_id.to_owned(),
            from_worker: "intruder".to_owned(),
        })
        .unwrap();
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
        v
    }

    fn framed(mut v: Vec<u8>, payload: &[u8]) -> Vec<u8> {
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn bad_input_closes_the_connection_and_nothing_else() {
        let (q, r) = crossbeam_channel::bounded(64);
        let server = start_server(local(), &[q], &[None, Some(0)]);
        let addr = server.local_addr();
        let mut rng = fastrand::Rng::with_seed(7);
        let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        // A tuple whose values claim 4 G elements, then ends: one group
        // [0, task 1, stream 0, source 1, [values]] (see `message::WireBatch`).
        let mut alloc_bomb = vec![0x91, 0x95, 0x00, 0x01, 0x00, 0x01, 0x91];
        alloc_bomb.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // A value nested 200 000 lists deep.
        let mut depth_bomb = alloc_bomb[..alloc_bomb.len() - 6].to_vec();
        depth_bomb.push(0x91);
        depth_bomb.extend(std::iter::repeat_n(0x91u8, 200_000));
        let good_frame =
            rmp_serde::to_vec(&crate::message::WireBatch(&[message(1, 0, 1)])).unwrap();
        let mut trailing_garbage = good_frame.clone();
        trailing_garbage.extend_from_slice(&garbage[..8]);
        let mut truncated = hello(TOPO);
        truncated.extend_from_slice(&1000u32.to_be_bytes());
        truncated.extend_from_slice(&[0x91; 10]);

        let mut over_limit = hello(TOPO);
        over_limit.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                false,
            ),
            ("random bytes", garbage.clone(), false),
            ("nothing at all", Vec::new(), true),
            ("the wrong topology", hello("other-topology"), false),
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
                [hello(TOPO), vec![0xff; 4]].concat(),
                false,
            ),
            ("a frame over the limit", over_limit, false),
            ("a truncated frame", truncated, true),
            ("a garbage frame", framed(hello(TOPO), &garbage), false),
            (
                "a frame with trailing garbage",
                framed(hello(TOPO), &trailing_garbage),
                false,
            ),
            (
                "an allocation bomb",
                framed(hello(TOPO), &alloc_bomb),
                false,
            ),
            ("a nesting bomb", framed(hello(TOPO), &depth_bomb), false),
        ];
        for (what, bytes, close_write) in &cases {
            expect_rejected(addr, what, bytes, *close_write);
        }
        eventually("every bad connection counted", || {
            server.stats().protocol_errors == cases.len() as u64
        });
        assert!(
            r.is_empty(),
            "something from a bad connection was delivered"
        );

        // The server still serves a proper client.
        let (tx, _client) = connect_remote(addr, TOPO, "w1", 4).unwrap();
        tx.send(Packet::Batch(vec![message(1, 1, 1)])).unwrap();
        assert_eq!(collect(&r, 1), vec![message(1, 1, 1)]);
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

    #[test]
    fn the_client_waits_for_the_server_and_reconnects_after_a_restart() {
        let addr = local().local_addr().unwrap(); // a port nobody listens on
        let (tx, client) = connect_remote(addr, TOPO, "w1", 16).unwrap();
        tx.send(Packet::Batch(vec![message(1, 0, 1)])).unwrap();
        std::thread::sleep(Duration::from_millis(300)); // the client retries meanwhile

        let (q, r) = crossbeam_channel::bounded(16);
        let mut server = start_server(bind(addr), std::slice::from_ref(&q), &[None, Some(0)]);
        assert_eq!(collect(&r, 1), vec![message(1, 0, 1)]);
        server.shutdown();
        drop(server);

        let server = start_server(bind(addr), &[q], &[None, Some(0)]);
        // Keep sending until batches arrive again; one written into the dead connection
        // may be lost.
        let deadline = Instant::now() + WAIT;
        let mut seq = 1;
        let first = loop {
            assert!(
                Instant::now() < deadline,
                "nothing arrived after the restart"
            );
            tx.send(Packet::Batch(vec![message(1, seq, 1)])).unwrap();
            seq += 1;
            if let Ok(Packet::Batch(b)) = r.recv_timeout(Duration::from_millis(50)) {
                break origin(&b[0]).1;
            }
        };
        // From then on nothing is lost and the order holds.
        for _ in 0..20 {
            tx.send(Packet::Batch(vec![message(1, seq, 1)])).unwrap();
            seq += 1;
        }
        let rest: Vec<u32> = collect(&r, (seq - 1 - first) as usize)
            .iter()
            .map(|e| origin(e).1)
            .collect();
        assert_eq!(rest, (first + 1..seq).collect::<Vec<_>>());
        assert_eq!(client.stats().reconnects, 1);
        assert_eq!(server.stats().protocol_errors, 0);
    }

    #[test]
    fn shutdown_does_not_hang_on_a_stalled_peer() {
        // The executor never drains: the reader, the socket and the writer all block.
        let (q, _r) = crossbeam_channel::bounded(1);
        let mut server = start_server(local(), &[q], &[None, Some(0)]);
        let (tx, mut client) = connect_remote(server.local_addr(), TOPO, "w1", 1).unwrap();
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
            client.shutdown();
            server.shutdown();
            let _ = done_tx.send((client.stats(), server.stats()));
        });
        let (sent, received) = done_rx.recv_timeout(WAIT).expect("shutdown hung");
        filler.join().unwrap();
        assert!(sent.batches_dropped > 0, "{sent:?}");
        assert_eq!(received.protocol_errors, 0);
    }
}
