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

/// A batch as it travels between workers: consecutive tuples for the same task from the
/// same stream and source are grouped, so their shared fields are sent (and decoded)
/// once per group instead of once per tuple.
///
/// Frame layout (MessagePack): an array of groups, each one of
/// - `[0, task, stream, source, [values, ...]]`: untracked tuples,
/// - `[1, task, stream, source, [[values, anchors], ...]]`: tracked tuples,
/// - `[2, task, message]`: any other message.
pub struct WireBatch<'a>(pub &'a [Envelope]);

const GROUP_PLAIN: u8 = 0;
const GROUP_ANCHORED: u8 = 1;
const GROUP_OTHER: u8 = 2;

/// The group key of an envelope: tuples group by (task, stream, source, tracked).
fn group_key(e: &Envelope) -> Option<(TaskId, u32, TaskId, bool)> {
    match &e.msg {
        Msg::Tuple {
            stream,
            source,
            anchors,
            ..
        } => Some((e.task, *stream, *source, !anchors.is_empty())),
        _ => None,
    }
}

/// Lengths of the runs of envelopes that share a group.
fn runs(batch: &[Envelope]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let key = group_key(&batch[i]);
        let mut j = i + 1;
        if key.is_some() {
            while j < batch.len() && group_key(&batch[j]) == key {
                j += 1;
            }
        }
        out.push(j - i);
        i = j;
    }
    out
}

struct Items<'a>(&'a [Envelope], bool);

impl Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            if let Msg::Tuple {
                values, anchors, ..
            } = &e.msg
            {
                if self.1 {
                    seq.serialize_element(&(values, anchors))?;
                } else {
                    seq.serialize_element(values)?;
                }
            }
        }
        seq.end()
    }
}

impl Serialize for WireBatch<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeTuple};
        let runs = runs(self.0);
        let mut seq = s.serialize_seq(Some(runs.len()))?;
        let mut i = 0;
        for n in runs {
            let group = &self.0[i..i + n];
            i += n;
            let first = &group[0];
            match group_key(first) {
                Some((task, stream, source, anchored)) => {
                    struct Group<'a>(TaskId, u32, TaskId, bool, &'a [Envelope]);
                    impl Serialize for Group<'_> {
                        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                            let mut t = s.serialize_tuple(5)?;
                            t.serialize_element(&if self.3 {
                                GROUP_ANCHORED
                            } else {
                                GROUP_PLAIN
                            })?;
                            t.serialize_element(&self.0)?;
                            t.serialize_element(&self.1)?;
                            t.serialize_element(&self.2)?;
                            t.serialize_element(&Items(self.4, self.3))?;
                            t.end()
                        }
                    }
                    seq.serialize_element(&Group(task, stream, source, anchored, group))?;
                }
                None => seq.serialize_element(&(GROUP_OTHER, first.task, &first.msg))?,
            }
        }
        seq.end()
    }
}

/// The receiving side of [`WireBatch`]: decodes a frame into envelopes.
pub struct DecodedBatch(pub Vec<Envelope>);

impl<'de> Deserialize<'de> for DecodedBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};
        use std::fmt;

        struct Tuples<'a> {
            out: &'a mut Vec<Envelope>,
            task: TaskId,
            stream: u32,
            source: TaskId,
            anchored: bool,
        }
        impl<'de> DeserializeSeed<'de> for Tuples<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_seq(self)
            }
        }
        impl<'de> Visitor<'de> for Tuples<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tuples")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
                self.out.reserve(a.size_hint().unwrap_or(0).min(4096));
                loop {
                    let (values, anchors) = if self.anchored {
                        match a.next_element::<(Values, Anchors)>()? {
                            Some(v) => v,
                            None => break,
                        }
                    } else {
                        match a.next_element::<Values>()? {
                            Some(v) => (v, Anchors::none()),
                            None => break,
                        }
                    };
                    self.out.push(Envelope {
                        task: self.task,
                        msg: Msg::Tuple {
                            stream: self.stream,
                            source: self.source,
                            values,
                            anchors,
                        },
                    });
                }
                Ok(())
            }
        }

        struct Group<'a>(&'a mut Vec<Envelope>);
        impl<'de> DeserializeSeed<'de> for Group<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_tuple(5, self)
            }
        }
        impl<'de> Visitor<'de> for Group<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a group: [kind, task, ...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
                let missing = || A::Error::custom("a group is missing fields");
                let kind: u8 = a.next_element()?.ok_or_else(missing)?;
                let task: TaskId = a.next_element()?.ok_or_else(missing)?;
                match kind {
                    GROUP_PLAIN | GROUP_ANCHORED => {
                        let stream: u32 = a.next_element()?.ok_or_else(missing)?;
                        let source: TaskId = a.next_element()?.ok_or_else(missing)?;
                        a.next_element_seed(Tuples {
                            out: self.0,
                            task,
                            stream,
                            source,
                            anchored: kind == GROUP_ANCHORED,
                        })?
                        .ok_or_else(missing)?;
                    }
                    GROUP_OTHER => {
                        let msg: Msg = a.next_element()?.ok_or_else(missing)?;
                        self.0.push(Envelope { task, msg });
                    }
                    other => return Err(A::Error::custom(format!("unknown group kind {other}"))),
                }
                Ok(())
            }
        }

        struct Groups;
        impl<'de> Visitor<'de> for Groups {
            type Value = Vec<Envelope>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch: a list of groups")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<Envelope>, A::Error> {
                let mut out = Vec::new();
                while a.next_element_seed(Group(&mut out))?.is_some() {}
                Ok(out)
            }
        }
        d.deserialize_seq(Groups).map(DecodedBatch)
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use squall_api::values;

    #[test]
    fn grouped_batches_round_trip_in_order() {
        let t = |task, stream, source, anchored: bool, v: i64| Envelope {
            task: TaskId(task),
            msg: Msg::Tuple {
                stream,
                source: TaskId(source),
                values: values!["w", v],
                anchors: if anchored {
                    Anchors::single(v as u64, 1)
                } else {
                    Anchors::none()
                },
            },
        };
        let batch = vec![
            t(1, 0, 9, false, 1),
            t(1, 0, 9, false, 2),
            t(1, 0, 9, true, 3),
            Envelope {
                task: TaskId(2),
                msg: Msg::Ack { root: 4, val: 5 },
            },
            t(1, 0, 9, true, 6),
            t(3, 0, 9, true, 7),
            t(3, 1, 9, true, 8),
        ];
        let bytes = rmp_serde::to_vec(&WireBatch(&batch)).unwrap();
        let back: DecodedBatch = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.0, batch);
        let empty: DecodedBatch =
            rmp_serde::from_slice(&rmp_serde::to_vec(&WireBatch(&[])).unwrap()).unwrap();
        assert!(empty.0.is_empty());
        // Garbage is an error, not a panic.
        assert!(rmp_serde::from_slice::<DecodedBatch>(&[0x91, 0x93, 0x07, 0x01, 0x02]).is_err());
    }
}
