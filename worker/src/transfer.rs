//! Outbound batching: messages are gathered per receiving executor and handed over a
//! batch at a time, so the queues see one operation per batch, not per tuple.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::message::{Envelope, Packet};
use crate::ratelimit::LogLimiter;

const NO_DEST: u32 = u32::MAX;

struct Dest {
    tx: Sender<Packet>,
    buf: Vec<Envelope>,
    dirty: bool,
    /// The receiving executor's blocked-time counter (local executors only).
    blocked_ns: Option<Arc<AtomicU64>>,
}

/// The sending side of one executor.
pub(crate) struct Transfer {
    dest_of_task: Vec<u32>,
    dests: Vec<Dest>,
    dirty: Vec<u32>,
    batch_size: usize,
    unknown_task_log: LogLimiter,
    /// Times a send found the receiving queue full and had to wait (backpressure).
    pub backpressure_waits: u64,
}

impl Transfer {
    /// `queues[i]` receives for executor `i`; `dest_of_task[task]` names that executor.
    /// Time spent blocked on a full `queues[i]` is added to `blocked_ns[i]`, where
    /// given (missing entries: not measured).
    pub fn new(
        queues: &[Sender<Packet>],
        blocked_ns: &[Arc<AtomicU64>],
        dest_of_task: &[Option<usize>],
        batch_size: usize,
    ) -> Self {
        Transfer {
            dest_of_task: dest_of_task
                .iter()
                .map(|d| d.map_or(NO_DEST, |d| d as u32))
                .collect(),
            dests: queues
                .iter()
                .enumerate()
                .map(|(i, tx)| Dest {
                    tx: tx.clone(),
                    buf: Vec::new(),
                    dirty: false,
                    blocked_ns: blocked_ns.get(i).cloned(),
                })
                .collect(),
            dirty: Vec::new(),
            batch_size: batch_size.max(1),
            unknown_task_log: LogLimiter::new(Duration::from_secs(5), 1),
            backpressure_waits: 0,
        }
    }

    /// Queues a message; sends the batch once it is full.
    #[inline]
    pub fn push(&mut self, env: Envelope) {
        let d = match self.dest_of_task.get(env.task.0 as usize) {
            Some(&d) if d != NO_DEST => d,
            _ => {
                if let Some(suppressed) = self.unknown_task_log.allow() {
                    tracing::warn!(
                        task = %env.task,
                        "dropping a message for task {}, which no executor runs{}",
                        env.task,
                        LogLimiter::suffix(suppressed)
                    );
                }
                return;
            }
        };
        let dest = &mut self.dests[d as usize];
        if dest.buf.capacity() == 0 {
            dest.buf.reserve_exact(self.batch_size);
        }
        dest.buf.push(env);
        if dest.buf.len() >= self.batch_size {
            Self::send(dest, self.batch_size, &mut self.backpressure_waits);
        } else if !dest.dirty {
            dest.dirty = true;
            self.dirty.push(d);
        }
    }

    fn send(dest: &mut Dest, batch_size: usize, waits: &mut u64) {
        let batch = std::mem::replace(&mut dest.buf, Vec::with_capacity(batch_size));
        match dest.tx.try_send(Packet::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => {
                *waits += 1;
                // Block: a full queue holds the producer back (backpressure). A receiver
                // that has gone away means the topology is shutting down. Only this
                // slow path is timed, and charged to the receiving executor.
                let start = Instant::now();
                let _ = dest.tx.send(p);
                if let Some(b) = &dest.blocked_ns {
                    b.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Sends every partial batch.
    pub fn flush(&mut self) {
        for d in self.dirty.drain(..) {
            let dest = &mut self.dests[d as usize];
            dest.dirty = false;
            if !dest.buf.is_empty() {
                Self::send(dest, self.batch_size, &mut self.backpressure_waits);
            }
        }
    }

    /// Whether partial batches wait to be flushed.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }
}
