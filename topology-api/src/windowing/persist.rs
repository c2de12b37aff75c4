//! Persistent windows (Storm's `PersistentWindowedBoltExecutor`): what a stateful
//! windowed bolt's window holds, as writes to a state store and back.
//!
//! The stored form of a task's windows is one entry per tuple still needed — the
//! tuples evicted since the last window fired (its `get_expired()`) and the queue, keyed
//! `"q:<index>"`, and for event time the tuples waiting for the watermark, keyed
//! `"p:<arrival>"` — plus `"meta"`: the trigger position, the watermark and the latest
//! event time per input task. Indices only grow and tuples leave from the front, so a
//! checkpoint writes the tuples that came since the last one and deletes those that
//! left: its cost follows the traffic, not the window's size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::manager::WindowManager;
use super::{Windowed, WindowedBolt};
use crate::context::TopologyContext;
use crate::ids::TaskId;
use crate::state::StateError;
use crate::tuple::StreamSchema;
use crate::tuple::Tuple;
use crate::value::Value;

/// What the store holds, as far as this task wrote it.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Indices `lo..=hi` are stored (none when `lo > hi`).
    lo: u64,
    hi: u64,
    /// Arrival numbers of the stored pending tuples.
    pending: HashSet<u64>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    front: u64,
    last: u64,
    prev_p: u64,
    next_end: Option<i64>,
    origin: i64,
    /// Number of evicted tuples kept for the next window's `get_expired()`.
    expired: u64,
    seq: u64,
    late: u64,
    watermark: Option<i64>,
    latest: Vec<(TaskId, i64)>,
}

#[derive(Serialize, Deserialize)]
struct StoredTuple {
    component: String,
    stream: String,
    task: TaskId,
    time: i64,
    #[serde(default)]
    seq: u64,
    values: Vec<Value>,
}

impl StoredTuple {
    fn of(t: &Tuple, time: i64, seq: u64) -> Self {
        StoredTuple {
            component: t.source_component().to_owned(),
            stream: t.source_stream().to_owned(),
            task: t.source_task(),
            time,
            seq,
            values: t.values().to_vec(),
        }
    }
}

const META: &str = "meta";

fn key(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).expect("a string encodes")
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(v)
        .map_err(|e| StateError::new(format!("window {what} does not encode: {e}")))
}

pub(crate) type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl<B: WindowedBolt> Windowed<B> {
    /// Takes the live tuple the window's output is anchored to (to ack it at a
    /// checkpoint or drop it at a rollback).
    pub(crate) fn take_anchor(&mut self) -> Option<Tuple> {
        self.run.as_mut().and_then(|r| r.anchor.take())
    }

    /// The writes that bring the store from `stored` to the windows now, and what the
    /// store then holds.
    pub(crate) fn window_writes(&self, stored: &Stored) -> Result<(Writes, Stored), StateError> {
        let run = self
            .run
            .as_ref()
            .ok_or_else(|| StateError::new("the windows are not running".to_owned()))?;
        let m = &run.manager;
        let mut writes = Writes::new();
        let expired_from = m.front - m.expired.len() as u64;
        let (lo, hi) = (expired_from, m.last);
        // Gone: stored indices below the new low end.
        if stored.lo <= stored.hi {
            for i in stored.lo..=stored.hi.min(lo.saturating_sub(1)) {
                if i < lo {
                    writes.push((key(&format!("q:{i}")), None));
                }
            }
        }
        let first_new = if stored.lo <= stored.hi {
            (stored.hi + 1).max(lo)
        } else {
            lo
        };
        for i in first_new..=hi {
            let st = if i < m.front {
                StoredTuple::of(&m.expired[(i - expired_from) as usize], 0, 0)
            } else {
                let at = (i - m.front) as usize;
                StoredTuple::of(&m.queue[at], m.times[at], 0)
            };
            writes.push((key(&format!("q:{i}")), Some(encode("tuple", &st)?)));
        }
        let mut pending = HashSet::with_capacity(run.pending.len());
        for (time, seq, t) in &run.pending {
            pending.insert(*seq);
            if !stored.pending.contains(seq) {
                let st = StoredTuple::of(t, *time, *seq);
                writes.push((key(&format!("p:{seq}")), Some(encode("tuple", &st)?)));
            }
        }
        for seq in &stored.pending {
            if !pending.contains(seq) {
                writes.push((key(&format!("p:{seq}")), None));
            }
        }
        let tracker = run.watermark.as_ref();
        let meta = Meta {
            front: m.front,
            last: m.last,
            prev_p: m.prev_p,
            next_end: m.next_end,
            origin: m.origin,
            expired: m.expired.len() as u64,
            seq: run.seq,
            late: run.late,
            watermark: tracker.and_then(|t| t.watermark),
            latest: tracker.map_or_else(Vec::new, |t| {
                t.latest.iter().map(|(k, v)| (*k, *v)).collect()
            }),
        };
        writes.push((key(META), Some(encode("position", &meta)?)));
        Ok((writes, Stored { lo, hi, pending }))
    }

    /// Replaces the windows with the committed ones in `entries` (none: empty windows,
    /// as at the first start), returning what the store holds.
    pub(crate) fn restore_windows(
        &mut self,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &TopologyContext,
        namespace: &str,
    ) -> Result<Stored, StateError> {
        let bad = |what: String| StateError::new(format!("window state '{namespace}': {what}"));
        let mut meta: Option<Meta> = None;
        let mut tuples: BTreeMap<u64, StoredTuple> = BTreeMap::new();
        let mut pending: Vec<StoredTuple> = Vec::new();
        for (k, v) in entries {
            let k: String = serde_json::from_slice(&k).map_err(|e| {
                bad(format!(
                    "key {} does not decode: {e}",
                    String::from_utf8_lossy(&k)
                ))
            })?;
            let decode_err =
                |e: serde_json::Error| bad(format!("entry '{k}' does not decode: {e}"));
            if k == META {
                meta = Some(serde_json::from_slice(&v).map_err(decode_err)?);
            } else if let Some(i) = k.strip_prefix("q:").and_then(|i| i.parse().ok()) {
                tuples.insert(i, serde_json::from_slice(&v).map_err(decode_err)?);
            } else if k.starts_with("p:") {
                pending.push(serde_json::from_slice(&v).map_err(decode_err)?);
            } else {
                return Err(bad(format!("unknown entry '{k}'")));
            }
        }
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| StateError::new("the windows are not running".to_owned()))?;
        let mut schemas: HashMap<(String, String), Arc<StreamSchema>> = HashMap::new();
        let mut tuple_of = |st: StoredTuple| -> Result<(Tuple, i64, u64), StateError> {
            let schema = match schemas.get(&(st.component.clone(), st.stream.clone())) {
                Some(s) => s.clone(),
                None => {
                    let s = ctx
                        .layout()
                        .stream(&st.component, &st.stream)
                        .ok_or_else(|| {
                            bad(format!(
                                "holds a tuple of stream {}:{}, which the topology no longer has",
                                st.component, st.stream
                            ))
                        })?;
                    let s = Arc::new(s.clone());
                    schemas.insert((st.component.clone(), st.stream.clone()), s.clone());
                    s
                }
            };
            Ok((
                Tuple::new(schema, st.task, st.values.into_iter().collect()),
                st.time,
                st.seq,
            ))
        };
        let m = &mut run.manager;
        m.queue.clear();
        m.times.clear();
        m.expired.clear();
        run.pending.clear();
        let Some(meta) = meta else {
            // Nothing committed: the windows start afresh.
            *m = WindowManager::new(m.length, m.slide, m.origin, !run.settings.event_time());
            run.seq = 0;
            run.late = 0;
            if let Some(tracker) = run.watermark.as_mut() {
                tracker.watermark = None;
                tracker.latest.clear();
            }
            return Ok(Stored {
                lo: 1,
                hi: 0,
                pending: HashSet::new(),
            });
        };
        let lo = meta.front - meta.expired;
        for i in lo..=meta.last {
            let st = tuples
                .remove(&i)
                .ok_or_else(|| bad(format!("tuple {i} of the window is missing")))?;
            let (t, time, _) = tuple_of(st)?;
            if i < meta.front {
                m.expired.push(t);
            } else {
                m.queue.push_back(t);
                m.times.push_back(time);
            }
        }
        m.front = meta.front;
        m.last = meta.last;
        m.prev_p = meta.prev_p;
        m.next_end = meta.next_end;
        m.origin = meta.origin;
        let mut seqs = HashSet::with_capacity(pending.len());
        for st in pending {
            let (t, time, seq) = tuple_of(st)?;
            seqs.insert(seq);
            run.pending.push((time, seq, t));
        }
        run.seq = meta.seq;
        run.late = meta.late;
        if let Some(tracker) = run.watermark.as_mut() {
            tracker.watermark = meta.watermark;
            tracker.latest = meta.latest.into_iter().collect();
        }
        Ok(Stored {
            lo,
            hi: meta.last,
            pending: seqs,
        })
    }
}
