//! Outbound batching: messages are gathered per receiving executor and handed over a
//! batch at a time, so the queues see one operation per batch, not per tuple.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use squall_api::TaskId;

use crate::message::{Envelope, Msg, Packet};
use crate::ratelimit::LogLimiter;

const NO_DEST: u32 = u32::MAX;

/// How many of the newest messages waiting for an executor [`Transfer::push_ack`]
/// searches for an ack of the same tree.
const ACK_MERGE_LOOKBACK: usize = 4;

/// Emptied batch buffers of one receiving executor, on their way back to its senders:
/// a batch is filled by one thread and emptied by another, so without the pool every
/// batch would be a fresh allocation freed on another thread.
#[derive(Clone)]
pub struct BatchPool {
    tx: Sender<Vec<Envelope>>,
    rx: Receiver<Vec<Envelope>>,
    batch_size: usize,
}

impl BatchPool {
    /// A pool keeping up to `buffers` buffers of `batch_size` envelopes.
    pub fn new(buffers: usize, batch_size: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(buffers.max(1));
        BatchPool {
            tx,
            rx,
            batch_size: batch_size.max(1),
        }
    }

    /// An empty buffer: a returned one, or a new one.
    pub fn take(&self) -> Vec<Envelope> {
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_size))
    }

    /// Hands back a buffer the receiver emptied (kept when the pool has room and the
    /// buffer is of a batch's size; a decoded remote batch may be any size).
    pub fn give(&self, mut buf: Vec<Envelope>) {
        let cap = buf.capacity();
        if cap >= self.batch_size && cap <= 4 * self.batch_size {
            buf.clear();
            let _ = self.tx.try_send(buf);
        }
    }
}

struct Dest {
    tx: Sender<Packet>,
    buf: Vec<Envelope>,
    /// Where the receiving executor returns emptied buffers (local executors only).
    pool: Option<BatchPool>,
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
    /// given (missing entries: not measured); buffers come from `pools[i]`, where given.
    pub fn new(
        queues: &[Sender<Packet>],
        blocked_ns: &[Arc<AtomicU64>],
        pools: &[BatchPool],
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
                    pool: pools.get(i).cloned(),
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
            _ => return self.unknown_task(env.task),
        };
        let dest = &mut self.dests[d as usize];
        if dest.buf.capacity() == 0 {
            dest.buf = match &dest.pool {
                Some(pool) => pool.take(),
                None => Vec::with_capacity(self.batch_size),
            };
        }
        dest.buf.push(env);
        if dest.buf.len() >= self.batch_size {
            Self::send(dest, &mut self.backpressure_waits);
        } else if !dest.dirty {
            dest.dirty = true;
            self.dirty.push(d);
        }
    }

    #[cold]
    #[inline(never)]
    fn unknown_task(&mut self, task: TaskId) {
        if let Some(suppressed) = self.unknown_task_log.allow() {
            tracing::warn!(
                %task,
                "dropping a message for task {task}, which no executor runs{}",
                LogLimiter::suffix(suppressed)
            );
        }
    }

    /// Queues an ack for tree `root` of acker task `task`, merged into an ack for the
    /// same tree among the last few messages waiting for that acker's executor when
    /// there is one: the acker only ever XORs the values of a tree's acks together, so
    /// one message carrying `a ^ b` has the effect of two carrying `a` and `b`. A bolt
    /// acking the tuples of one tree in a row (the words of one sentence) sends one
    /// message for them.
    #[inline]
    pub fn push_ack(&mut self, task: TaskId, root: u64, val: u64) {
        if let Some(&d) = self.dest_of_task.get(task.0 as usize) {
            if d != NO_DEST {
                let buf = &mut self.dests[d as usize].buf;
                for e in buf.iter_mut().rev().take(ACK_MERGE_LOOKBACK) {
                    if let Msg::Ack { root: r, val: v } = &mut e.msg {
                        if *r == root && e.task == task {
                            *v ^= val;
                            return;
                        }
                    }
                }
            }
        }
        self.push(Envelope {
            task,
            msg: Msg::Ack { root, val },
        });
    }

    #[inline(never)]
    fn send(dest: &mut Dest, waits: &mut u64) {
        // The next push takes a buffer (from the pool).
        let batch = std::mem::take(&mut dest.buf);
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
                Self::send(dest, &mut self.backpressure_waits);
            }
        }
    }

    /// Whether partial batches wait to be flushed.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::{values, Anchors};

    fn drain(rx: &crossbeam_channel::Receiver<Packet>) -> Vec<Envelope> {
        rx.try_iter()
            .flat_map(|p| match p {
                Packet::Batch(b) => b,
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn acks_of_one_tree_in_a_row_travel_as_one_message_with_their_xor() {
        let (tx, rx) = crossbeam_channel::unbounded();
        // Tasks 1 and 2 (two ackers) share executor 0.
        let mut t = Transfer::new(&[tx], &[], &[], &[None, Some(0), Some(0)], 256);
        let ack = |task, root, val| Envelope {
            task: TaskId(task),
            msg: Msg::Ack { root, val },
        };
        t.push_ack(TaskId(1), 7, 0b0001);
        t.push_ack(TaskId(1), 7, 0b0010);
        // Another tree in between: still merged (within the look-back).
        t.push_ack(TaskId(1), 8, 0b1000);
        t.push_ack(TaskId(1), 7, 0b0100);
        // The same root for another acker task is another message.
        t.push_ack(TaskId(2), 7, 1);
        // A tuple in between changes nothing: only acks are merged.
        t.push(Envelope {
            task: TaskId(1),
            msg: Msg::Tuple {
                stream: 0,
                source: TaskId(9),
                values: values!["x"],
                anchors: Anchors::none(),
            },
        });
        t.push_ack(TaskId(2), 7, 2);
        t.flush();
        let got = drain(&rx);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], ack(1, 7, 0b0111));
        assert_eq!(got[1], ack(1, 8, 0b1000));
        assert_eq!(got[2], ack(2, 7, 3));
        // Once a batch has left, acks start a new message.
        t.push_ack(TaskId(1), 7, 1);
        t.flush();
        assert_eq!(drain(&rx), vec![ack(1, 7, 1)]);
    }

    #[test]
    fn acks_are_not_merged_beyond_the_look_back() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut t = Transfer::new(&[tx], &[], &[], &[Some(0)], 256);
        t.push_ack(TaskId(0), 1, 1);
        for root in 2..2 + ACK_MERGE_LOOKBACK as u64 {
            t.push_ack(TaskId(0), root, 1);
        }
        t.push_ack(TaskId(0), 1, 2);
        t.flush();
        let got = drain(&rx);
        assert_eq!(got.len(), ACK_MERGE_LOOKBACK + 2);
        // The tree's value is the same either way: the acker XORs them.
        let xor = got
            .iter()
            .filter_map(|e| match e.msg {
                Msg::Ack { root: 1, val } => Some(val),
                _ => None,
            })
            .fold(0, |a, v| a ^ v);
        assert_eq!(xor, 3);
    }
}
