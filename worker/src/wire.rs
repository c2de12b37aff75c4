//! The wire format of a batch between workers, and its encoder and decoder.
//!
//! A frame holds one batch. Consecutive tuples for the same task from the same stream and
//! source are grouped, so their shared fields are sent (and decoded) once per group
//! instead of once per tuple. Frame layout (MessagePack): an array of groups, each one of
//! - `[0, task, stream, source, [values, ...]]`: untracked tuples;
//! - `[3, task, stream, source, root, [[values, edge], ...]]`: two or more tuples in a
//!   row that each belong to one tuple tree, the same one (a split bolt's words of one
//!   sentence): the root travels once per group;
//! - `[1, task, stream, source, [[values, anchors], ...]]`: other tracked tuples, with
//!   their `[[root, edge], ...]` lists;
//! - `[2, task, message]`: any other message ([`Msg`]'s own encoding).
//!
//! Values are plain MessagePack (nil, bool, int, float, str, bin, array, map), so a
//! frame is readable by any MessagePack tool. Tuples — nearly every envelope — are
//! written and read with `rmp`'s primitives straight to and from the bytes; lists, maps
//! and control messages go through serde (`rmp-serde`), which is general but costs
//! several times more per value.

use std::fmt::Display;

use rmp::encode as enc;
use serde::Deserialize;
use squall_api::{Anchors, TaskId, Value, Values};

use crate::message::{Envelope, Msg};

const GROUP_PLAIN: u8 = 0;
const GROUP_ANCHORED: u8 = 1;
const GROUP_OTHER: u8 = 2;
const GROUP_ONE_TREE: u8 = 3;

/// What decides a tuple's group: whom it is for, where from, and its trees.
#[derive(Clone, Copy, PartialEq)]
struct Head {
    task: TaskId,
    stream: u32,
    source: TaskId,
}

#[derive(Clone, Copy, PartialEq)]
enum Trees {
    None,
    One(u64),
    Many,
}

fn head(e: &Envelope) -> Option<(Head, Trees)> {
    match &e.msg {
        Msg::Tuple {
            stream,
            source,
            anchors,
            ..
        } => Some((
            Head {
                task: e.task,
                stream: *stream,
                source: *source,
            },
            match anchors.pairs() {
                [] => Trees::None,
                [(root, _)] => Trees::One(*root),
                _ => Trees::Many,
            },
        )),
        _ => None,
    }
}

/// The group that starts at `i`: its kind, the root of a one-tree group, and its end.
/// Two or more tuples of one tree in a row make a one-tree group; other tracked tuples
/// share an anchored group (a one-tree group of one tuple would cost more bytes).
fn run(batch: &[Envelope], i: usize) -> (u8, u64, usize) {
    let Some((h, trees)) = head(&batch[i]) else {
        return (GROUP_OTHER, 0, i + 1);
    };
    let in_tree =
        |j: usize, root: u64| j < batch.len() && head(&batch[j]) == Some((h, Trees::One(root)));
    let mut j = i + 1;
    match trees {
        Trees::None => {
            while j < batch.len() && head(&batch[j]) == Some((h, Trees::None)) {
                j += 1;
            }
            (GROUP_PLAIN, 0, j)
        }
        Trees::One(root) if in_tree(j, root) => {
            while in_tree(j, root) {
                j += 1;
            }
            (GROUP_ONE_TREE, root, j)
        }
        _ => {
            while let Some((hj, tj)) = batch.get(j).and_then(head) {
                let starts_tree = matches!(tj, Trees::One(r) if in_tree(j + 1, r));
                if hj != h || tj == Trees::None || starts_tree {
                    break;
                }
                j += 1;
            }
            (GROUP_ANCHORED, 0, j)
        }
    }
}

fn encode_error(e: impl Display) -> String {
    e.to_string()
}

fn len32(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} of {n} items is too long for MessagePack"))
}

/// Appends `batch` to `out` in the wire format. On an error (a value too large for
/// MessagePack) `out` may hold part of the frame: the caller truncates it.
pub fn encode_batch(out: &mut Vec<u8>, batch: &[Envelope]) -> Result<(), String> {
    // MessagePack arrays carry their length up front: the batch's is written as a 32-bit
    // length (any array marker decodes) and filled in at the end, so the groups are
    // found once.
    let count_at = out.len();
    out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
    let mut groups = 0u32;
    let mut i = 0;
    while i < batch.len() {
        groups += 1;
        let (kind, root, j) = run(batch, i);
        if kind == GROUP_OTHER {
            enc::write_array_len(out, 3).map_err(encode_error)?;
            enc::write_pfix(out, GROUP_OTHER).map_err(encode_error)?;
            enc::write_uint(out, batch[i].task.0.into()).map_err(encode_error)?;
            rmp_serde::encode::write(out, &batch[i].msg).map_err(encode_error)?;
            i = j;
            continue;
        }
        let Some((
            Head {
                task,
                stream,
                source,
            },
            _,
        )) = head(&batch[i])
        else {
            unreachable!("a tuple group starts with a tuple")
        };
        let one_tree = kind == GROUP_ONE_TREE;
        enc::write_array_len(out, if one_tree { 6 } else { 5 }).map_err(encode_error)?;
        enc::write_pfix(out, kind).map_err(encode_error)?;
        enc::write_uint(out, task.0.into()).map_err(encode_error)?;
        enc::write_uint(out, stream.into()).map_err(encode_error)?;
        enc::write_uint(out, source.0.into()).map_err(encode_error)?;
        if one_tree {
            enc::write_uint(out, root).map_err(encode_error)?;
        }
        enc::write_array_len(out, len32(j - i, "a group")?).map_err(encode_error)?;
        for e in &batch[i..j] {
            let Msg::Tuple {
                values, anchors, ..
            } = &e.msg
            else {
                unreachable!("a tuple group holds tuples")
            };
            match kind {
                GROUP_PLAIN => write_values(out, values)?,
                GROUP_ONE_TREE => {
                    enc::write_array_len(out, 2).map_err(encode_error)?;
                    write_values(out, values)?;
                    enc::write_uint(out, anchors.pairs()[0].1).map_err(encode_error)?;
                }
                _ => {
                    enc::write_array_len(out, 2).map_err(encode_error)?;
                    write_values(out, values)?;
                    let pairs = anchors.pairs();
                    enc::write_array_len(out, len32(pairs.len(), "an anchor list")?)
                        .map_err(encode_error)?;
                    for &(root, edge) in pairs {
                        enc::write_array_len(out, 2).map_err(encode_error)?;
                        enc::write_uint(out, root).map_err(encode_error)?;
                        enc::write_uint(out, edge).map_err(encode_error)?;
                    }
                }
            }
        }
        i = j;
    }
    out[count_at + 1..count_at + 5].copy_from_slice(&groups.to_be_bytes());
    Ok(())
}

fn write_values(out: &mut Vec<u8>, values: &Values) -> Result<(), String> {
    enc::write_array_len(out, len32(values.len(), "a tuple")?).map_err(encode_error)?;
    for v in values {
        match v {
            Value::Null => enc::write_nil(out).map_err(encode_error)?,
            Value::Bool(b) => enc::write_bool(out, *b).map_err(encode_error)?,
            Value::Int(i) => {
                enc::write_sint(out, *i).map_err(encode_error)?;
            }
            Value::Float(f) => enc::write_f64(out, *f).map_err(encode_error)?,
            Value::Str(s) => enc::write_str(out, s).map_err(encode_error)?,
            Value::Bytes(b) => enc::write_bin(out, b).map_err(encode_error)?,
            Value::List(_) | Value::Map(_) => {
                rmp_serde::encode::write(out, v).map_err(encode_error)?
            }
        }
    }
    Ok(())
}

/// Reads MessagePack from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array_len(&mut self, what: &str) -> Result<usize, String> {
        rmp::decode::read_array_len(&mut self.0)
            .map(|n| n as usize)
            .map_err(|e| format!("{what}: expected an array ({e})"))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        rmp::decode::read_int(&mut self.0)
            .map_err(|e| format!("{what}: expected an unsigned integer ({e})"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let n = self.u64(what)?;
        u32::try_from(n).map_err(|_| format!("{what}: {n} is out of range"))
    }

    /// One value through serde (the general path).
    fn serde<T: for<'de> Deserialize<'de>>(&mut self, what: &str) -> Result<T, String> {
        let mut de = rmp_serde::Deserializer::new(&mut self.0);
        T::deserialize(&mut de).map_err(|e| format!("{what}: {e}"))
    }

    fn string(&mut self, len: usize, at: &'a [u8]) -> Result<Value, String> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.into())),
            // Whatever serde makes of it (it is the reference for odd input).
            Err(_) => {
                self.0 = at;
                self.serde("a value")
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        use rmp::Marker;
        let at = self.0;
        let marker = rmp::decode::read_marker(&mut self.0)
            .map_err(|_| "truncated: a value is missing".to_owned())?;
        match marker {
            Marker::Null => Ok(Value::Null),
            Marker::True => Ok(Value::Bool(true)),
            Marker::False => Ok(Value::Bool(false)),
            Marker::FixPos(n) => Ok(Value::Int(n.into())),
            Marker::FixNeg(n) => Ok(Value::Int(n.into())),
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::I8 | Marker::I16 | Marker::I32 => {
                self.0 = at;
                rmp::decode::read_int(&mut self.0)
                    .map(Value::Int)
                    .map_err(|e| format!("a value: {e}"))
            }
            Marker::I64 => Ok(Value::Int(i64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))),
            Marker::F64 => Ok(Value::Float(f64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))),
            Marker::FixStr(n) => self.string(n.into(), at),
            Marker::Str8 => {
                let n = self.byte()?;
                self.string(n.into(), at)
            }
            Marker::Str16 => {
                let n = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
                self.string(n.into(), at)
            }
            // Larger strings, u64, f32, bytes, lists, maps, and anything invalid: serde.
            _ => {
                self.0 = at;
                self.serde("a value")
            }
        }
    }

    fn values(&mut self) -> Result<Values, String> {
        let n = self.array_len("a tuple's values")?;
        let mut values = Values::new();
        // Each value takes at least a byte: a bogus length cannot reserve much.
        values.reserve(n.min(self.0.len()));
        for _ in 0..n {
            values.push(self.value()?);
        }
        Ok(values)
    }

    fn anchors(&mut self) -> Result<Anchors, String> {
        let n = self.array_len("anchors")?;
        let mut pairs = Vec::with_capacity(n.min(self.0.len()));
        for _ in 0..n {
            if self.array_len("an anchor")? != 2 {
                return Err("an anchor is not a [root, edge] pair".to_owned());
            }
            pairs.push((self.u64("an anchor's root")?, self.u64("an anchor's edge")?));
        }
        Ok(Anchors::from_distinct_pairs(pairs))
    }
}

/// Decodes a frame written by [`encode_batch`]. Anything else is an error naming what is
/// wrong, never a panic.
pub fn decode_batch(frame: &[u8]) -> Result<Vec<Envelope>, String> {
    let mut rd = Reader(frame);
    let groups = rd.array_len("a batch")?;
    let mut out: Vec<Envelope> = Vec::new();
    for _ in 0..groups {
        let fields = rd.array_len("a group")?;
        let kind = rd.u64("a group's kind")?;
        let task = TaskId(rd.u32("a group's task")?);
        let expected = match kind {
            k if k == u64::from(GROUP_OTHER) => 3,
            k if k == u64::from(GROUP_ONE_TREE) => 6,
            k if k == u64::from(GROUP_PLAIN) || k == u64::from(GROUP_ANCHORED) => 5,
            other => return Err(format!("unknown group kind {other}")),
        };
        if fields != expected {
            return Err(format!(
                "a group of kind {kind} has {fields} fields, not {expected}"
            ));
        }
        if kind == u64::from(GROUP_OTHER) {
            let msg: Msg = rd.serde("a message")?;
            out.push(Envelope { task, msg });
            continue;
        }
        let stream = rd.u32("a group's stream")?;
        let source = TaskId(rd.u32("a group's source")?);
        let root = if kind == u64::from(GROUP_ONE_TREE) {
            rd.u64("a group's root")?
        } else {
            0
        };
        let n = rd.array_len("a group's tuples")?;
        out.reserve(n.min(rd.0.len()));
        for _ in 0..n {
            let (values, anchors) = match kind {
                k if k == u64::from(GROUP_PLAIN) => (rd.values()?, Anchors::none()),
                k if k == u64::from(GROUP_ONE_TREE) => {
                    if rd.array_len("a tuple")? != 2 {
                        return Err("a tuple of a tree is not a [values, edge] pair".to_owned());
                    }
                    let values = rd.values()?;
                    (values, Anchors::single(root, rd.u64("a tuple's edge")?))
                }
                _ => {
                    if rd.array_len("a tuple")? != 2 {
                        return Err("a tracked tuple is not a [values, anchors] pair".to_owned());
                    }
                    (rd.values()?, rd.anchors()?)
                }
            };
            out.push(Envelope {
                task,
                msg: Msg::Tuple {
                    stream,
                    source,
                    values,
                    anchors,
                },
            });
        }
    }
    if !rd.0.is_empty() {
        return Err(format!("{} bytes follow the batch", rd.0.len()));
    }
    Ok(out)
}

/// A batch encoded on its own (tests and tools; the transport appends to its buffer).
pub fn to_vec(batch: &[Envelope]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_batch(&mut out, batch)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use squall_api::values;

    fn tuple(task: u32, stream: u32, source: u32, values: Values, anchors: Anchors) -> Envelope {
        Envelope {
            task: TaskId(task),
            msg: Msg::Tuple {
                stream,
                source: TaskId(source),
                values,
                anchors,
            },
        }
    }

    /// Every kind of group and value, in an order that makes groups start and end.
    fn mixed_batch() -> Vec<Envelope> {
        let mut map = BTreeMap::new();
        map.insert("k".to_owned(), Value::List(vec![Value::Null, 2.into()]));
        let every_value: Values = values![
            Value::Null,
            true,
            false,
            0,
            127,
            128,
            -1,
            -33,
            i64::from(i16::MIN),
            i64::from(i32::MIN),
            i64::MIN,
            i64::MAX,
            1.5,
            f64::NEG_INFINITY,
            "",
            "word",
            "x".repeat(31),
            "y".repeat(300),
            "z".repeat(70_000),
            "naïve ☃",
            Value::Bytes(vec![0, 255]),
            Value::List(vec!["a".into(), 1.into()]),
            Value::Map(map)
        ];
        vec![
            tuple(1, 0, 9, values!["a"], Anchors::none()),
            tuple(1, 0, 9, every_value.clone(), Anchors::none()),
            tuple(1, 0, 9, values!["b"], Anchors::single(7, 70)),
            tuple(1, 0, 9, values!["c"], Anchors::single(7, 71)),
            tuple(1, 0, 9, values!["d"], Anchors::single(8, 80)),
            tuple(1, 0, 9, every_value, Anchors::single(8, u64::MAX)),
            Envelope {
                task: TaskId(2),
                msg: Msg::Ack { root: 4, val: 5 },
            },
            Envelope {
                task: TaskId(2),
                msg: Msg::Ack { root: 4, val: 6 },
            },
            tuple(
                1,
                0,
                9,
                values!["e"],
                Anchors::from_distinct_pairs([(1, 2), (3, u64::MAX)]),
            ),
            tuple(
                1,
                0,
                9,
                values![],
                Anchors::from_distinct_pairs([(5, 6), (7, 8)]),
            ),
            tuple(1, 0, 9, values!["j"], Anchors::single(20, 1)),
            tuple(1, 0, 9, values!["k"], Anchors::single(21, 2)),
            tuple(1, 0, 9, values!["l"], Anchors::single(22, 3)),
            tuple(1, 0, 9, values!["m"], Anchors::single(22, 4)),
            tuple(3, 0, 9, values!["f"], Anchors::single(8, 81)),
            tuple(3, 1, 9, values!["g"], Anchors::single(8, 82)),
            tuple(3, 1, 10, values!["h"], Anchors::single(8, 83)),
            tuple(3, 1, 10, values!["i"], Anchors::none()),
            Envelope {
                task: TaskId(6),
                msg: Msg::AckInit {
                    root: 1,
                    val: 2,
                    spout_task: TaskId(3),
                },
            },
            Envelope {
                task: TaskId(6),
                msg: Msg::TreeFailed { root: 1 },
            },
        ]
    }

    #[test]
    fn batches_round_trip_in_order() {
        let batch = mixed_batch();
        let bytes = to_vec(&batch).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), batch);
        assert!(decode_batch(&to_vec(&[]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn frames_are_plain_messagepack_that_serde_reads_the_same() {
        // Any MessagePack reader sees the documented layout; values decode as serde would.
        let batch: Vec<Envelope> = mixed_batch()
            .into_iter()
            .map(|mut e| {
                // serde_json's `Value` has no bytes.
                if let Msg::Tuple { values, .. } = &mut e.msg {
                    values.retain(|v| !matches!(v, Value::Bytes(_)));
                }
                e
            })
            .collect();
        let generic: rmpv_like::Any = rmp_serde::from_slice(&to_vec(&batch).unwrap()).unwrap();
        let groups = generic.0.as_array().unwrap();
        // [0,..] a, every; [3,..,7] b c; [3,..,8] d every; Ack; Ack; [1,..] e, [], j, k;
        // [3,..,22] l m; [1] f; [1] g; [1] h (a one-tree group of one would cost more);
        // [0] i; AckInit; TreeFailed.
        let kinds: Vec<u64> = groups
            .iter()
            .map(|g| g.as_array().unwrap()[0].as_u64().unwrap())
            .collect();
        assert_eq!(kinds, [0, 3, 3, 2, 2, 1, 3, 1, 1, 1, 0, 2, 2]);
        let tree = groups[1].as_array().unwrap();
        assert_eq!(tree.len(), 6);
        assert_eq!(tree[4].as_u64(), Some(7), "the root travels once per group");
    }

    /// A generic MessagePack document, read through serde (serde_json's `Value` reads any
    /// self-describing format).
    mod rmpv_like {
        #[derive(serde::Deserialize)]
        pub struct Any(pub serde_json::Value);
    }

    #[test]
    fn odd_but_valid_encodings_decode_as_serde_decodes_them() {
        // A u64 integer, a f32, a str32, invalid UTF-8 in a str: the general path.
        let frames: Vec<(Vec<u8>, Result<Value, ()>)> = vec![
            (vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5], Ok(Value::Int(5))),
            (vec![0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0], Err(())),
            (vec![0xca, 0x3f, 0xc0, 0, 0], Ok(Value::Float(1.5))),
            (vec![0xdb, 0, 0, 0, 2, b'h', b'i'], Ok(Value::from("hi"))),
            (vec![0xa2, 0xff, 0xfe], Ok(Value::Bytes(vec![0xff, 0xfe]))),
        ];
        for (value, expected) in frames {
            // [[0, task 1, stream 0, source 1, [[value]]]]
            let mut frame = vec![0x91, 0x95, 0x00, 0x01, 0x00, 0x01, 0x91, 0x91];
            frame.extend_from_slice(&value);
            let got = decode_batch(&frame).map(|b| match &b[0].msg {
                Msg::Tuple { values, .. } => values[0].clone(),
                _ => unreachable!(),
            });
            match expected {
                Ok(v) => assert_eq!(got.unwrap(), v, "{value:02x?}"),
                Err(()) => assert!(got.unwrap_err().contains("signed 64-bit"), "{value:02x?}"),
            }
        }
    }

    #[test]
    fn damaged_frames_are_errors_naming_the_damage_never_panics() {
        let good = to_vec(&mixed_batch()).unwrap();
        // Every truncation is an error.
        for n in 0..good.len() {
            assert!(
                decode_batch(&good[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0xc0);
        assert_eq!(
            decode_batch(&trailing).unwrap_err(),
            "1 bytes follow the batch"
        );
        let unknown_kind = [0x91, 0x95, 0x07, 0x01, 0x00, 0x01, 0x90];
        assert_eq!(
            decode_batch(&unknown_kind).unwrap_err(),
            "unknown group kind 7"
        );
        let short_tree_group = [0x91, 0x95, 0x03, 0x01, 0x00, 0x01, 0x90];
        assert!(decode_batch(&short_tree_group)
            .unwrap_err()
            .contains("kind 3 has 5 fields, not 6"));
        let big_task = [
            0x91, 0x95, 0x00, 0xcf, 1, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x90,
        ];
        assert!(decode_batch(&big_task)
            .unwrap_err()
            .contains("task: 72057594037927936 is out of range"));
        // Random bytes and random flips of a good frame: errors or batches, no panic.
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            let _ = decode_batch(&junk);
            let mut flipped = good.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..flipped.len());
                flipped[i] = rng.u8(..);
            }
            let _ = decode_batch(&flipped);
        }
    }
}
