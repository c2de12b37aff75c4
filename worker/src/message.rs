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
///
/// On the wire a message is an array whose first element is a small integer tag
/// (0 tuple, 1 ack-init, 2 ack, 3 fail, 4 tree-acked, 5 tree-failed) followed by the
/// variant's fields in order: `[0, stream, source, values, anchors]`.
#[derive(Clone, Debug, PartialEq)]
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

const TUPLE: u8 = 0;
const ACK_INIT: u8 = 1;
const ACK: u8 = 2;
const FAIL: u8 = 3;
const TREE_ACKED: u8 = 4;
const TREE_FAILED: u8 = 5;

impl Serialize for Msg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        match self {
            Msg::Tuple {
                stream,
                source,
                values,
                anchors,
            } => {
                let mut t = s.serialize_tuple(5)?;
                t.serialize_element(&TUPLE)?;
                t.serialize_element(stream)?;
                t.serialize_element(source)?;
                t.serialize_element(values)?;
                t.serialize_element(anchors)?;
                t.end()
            }
            Msg::AckInit {
                root,
                val,
                spout_task,
            } => {
                let mut t = s.serialize_tuple(4)?;
                t.serialize_element(&ACK_INIT)?;
                t.serialize_element(root)?;
                t.serialize_element(val)?;
                t.serialize_element(spout_task)?;
                t.end()
            }
            Msg::Ack { root, val } => {
                let mut t = s.serialize_tuple(3)?;
                t.serialize_element(&ACK)?;
                t.serialize_element(root)?;
                t.serialize_element(val)?;
                t.end()
            }
            Msg::Fail { root } | Msg::TreeAcked { root } | Msg::TreeFailed { root } => {
                let tag = match self {
                    Msg::Fail { .. } => FAIL,
                    Msg::TreeAcked { .. } => TREE_ACKED,
                    _ => TREE_FAILED,
                };
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&tag)?;
                t.serialize_element(root)?;
                t.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Msg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Msg;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message: [tag, fields...]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Msg, A::Error> {
                use serde::de::Error;
                fn next<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
                    a: &mut A,
                    i: usize,
                ) -> Result<T, A::Error> {
                    a.next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &"more message fields"))
                }
                let tag: u8 = next(&mut a, 0)?;
                Ok(match tag {
                    TUPLE => Msg::Tuple {
                        stream: next(&mut a, 1)?,
                        source: next(&mut a, 2)?,
                        values: next(&mut a, 3)?,
                        anchors: next(&mut a, 4)?,
                    },
                    ACK_INIT => Msg::AckInit {
                        root: next(&mut a, 1)?,
                        val: next(&mut a, 2)?,
                        spout_task: next(&mut a, 3)?,
                    },
                    ACK => Msg::Ack {
                        root: next(&mut a, 1)?,
                        val: next(&mut a, 2)?,
                    },
                    FAIL => Msg::Fail {
                        root: next(&mut a, 1)?,
                    },
                    TREE_ACKED => Msg::TreeAcked {
                        root: next(&mut a, 1)?,
                    },
                    TREE_FAILED => Msg::TreeFailed {
                        root: next(&mut a, 1)?,
                    },
                    other => return Err(A::Error::custom(format!("unknown message tag {other}"))),
                })
            }
        }
        d.deserialize_tuple(5, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::values;

    #[test]
    fn every_message_round_trips_through_messagepack() {
        let msgs = vec![
            Msg::Tuple {
                stream: 3,
                source: TaskId(9),
                values: values!["word", 7, 1.5],
                anchors: Anchors::single(11, 12),
            },
            Msg::AckInit {
                root: 1,
                val: 2,
                spout_task: TaskId(3),
            },
            Msg::Ack {
                root: u64::MAX,
                val: 5,
            },
            Msg::Fail { root: 6 },
            Msg::TreeAcked { root: 7 },
            Msg::TreeFailed { root: 8 },
        ];
        for m in msgs {
            let env = Envelope {
                task: TaskId(4),
                msg: m,
            };
            let bytes = rmp_serde::to_vec(&env).unwrap();
            let back: Envelope = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, env);
        }
        let bad = rmp_serde::to_vec(&(4u32, (9u8, 1u64))).unwrap();
        assert!(rmp_serde::from_slice::<Envelope>(&bad).is_err());
    }
}
