//! What executors send each other: batches of addressed messages.

use serde::{Deserialize, Serialize};
use squall_api::{Anchors, TaskId, Values};

/// One message to one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The receiving task.
    pub task: TaskId,
    /// The message.
    pub msg: Msg,
}

/// A message to a task. Tuples carry their stream as an index into the topology's stream
/// table (the same in every process), so no names travel per tuple.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// A tuple.
    Tuple {
        /// Index into `TaskLayout::streams`.
        stream: u32,
        /// The emitting task.
        source: TaskId,
        /// The values.
        values: Values,
        /// Tuple-tree membership.
        anchors: Anchors,
    },
    /// Spout → acker: tree `root` was emitted with edges XORing to `val`.
    AckInit {
        /// Tree.
        root: u64,
        /// XOR of the spout's edge ids.
        val: u64,
        /// The emitting spout task.
        spout_task: TaskId,
    },
    /// Bolt → acker: a tuple of tree `root` was acked.
    Ack {
        /// Tree.
        root: u64,
        /// Input edge XOR the edges emitted anchored to it.
        val: u64,
    },
    /// Bolt → acker: a tuple of tree `root` failed.
    Fail {
        /// Tree.
        root: u64,
    },
    /// Acker → spout: tree `root` completed.
    TreeAcked {
        /// Tree.
        root: u64,
    },
    /// Acker → spout: tree `root` failed.
    TreeFailed {
        /// Tree.
        root: u64,
    },
}

/// What travels on an executor's receive queue.
#[derive(Debug)]
pub enum Packet {
    /// Messages for tasks of this executor.
    Batch(Vec<Envelope>),
    /// Start calling `next_tuple` (spouts).
    Activate,
    /// Stop calling `next_tuple` (spouts).
    Deactivate,
    /// Wakes the executor so it notices the shutdown flag.
    Wake,
}
