//! One partition's offsets as the spout sees them (Storm's `OffsetManager`): which
//! records wait to be emitted, which are in flight or waiting for a retry, and the offset
//! that may be committed.
//!
//! The commit rule: the offset committed is the partition's lowest offset that was
//! polled and is not done (acked, skipped by the translator, or given up on after its
//! retries), or, when every polled record is done, the offset after the last one polled.
//! So every offset below a committed one was processed: a crash never skips an un-acked
//! message. Offsets missing from the log (compaction, transaction markers) are never
//! polled and so never wait.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::KafkaSpoutRetryExponentialBackoff;
use crate::record::KafkaRecord;

/// Where one polled offset is.
#[derive(Debug)]
enum State {
    /// Polled, not emitted yet.
    Waiting(KafkaRecord),
    /// Emitted; `fails` earlier attempts failed.
    InFlight { record: KafkaRecord, fails: u32 },
    /// Failed `fails` times, to be emitted again after its back-off.
    Retry { record: KafkaRecord, fails: u32 },
    /// Acked, skipped or given up on.
    Done,
}

/// What became of a failed offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// It is retried at this time.
    Retry(Instant),
    /// It failed `fails` times, more than the retries allowed: it is done.
    Exhausted { fails: u32 },
    /// The offset is not in flight here (already acked, or from before a reassignment).
    Unknown,
}

/// One partition's offsets.
#[derive(Debug)]
pub(crate) struct PartitionOffsets {
    /// One past the highest offset polled (where the consumer reads next).
    fetched_to: i64,
    /// The offset last confirmed committed (or where reading started).
    committed: i64,
    /// Polled offsets from the first one not done on (done ones below it are dropped).
    offsets: BTreeMap<i64, State>,
}

impl PartitionOffsets {
    /// A partition read from `start`, with `start` as its committed offset.
    pub(crate) fn new(start: i64) -> Self {
        PartitionOffsets {
            fetched_to: start,
            committed: start,
            offsets: BTreeMap::new(),
        }
    }

    /// Where the consumer reads next.
    pub(crate) fn fetched_to(&self) -> i64 {
        self.fetched_to
    }

    /// The offset last confirmed committed.
    pub(crate) fn committed(&self) -> i64 {
        self.committed
    }

    /// Offsets past the first one not done (what `max_uncommitted_offsets` bounds).
    pub(crate) fn uncommitted(&self) -> usize {
        self.offsets.len()
    }

    /// Adds a polled record; `false` (and nothing changes) when its offset was polled
    /// already (a record the consumer had prefetched before a reassignment).
    pub(crate) fn polled(&mut self, record: KafkaRecord) -> bool {
        if record.offset < self.fetched_to {
            return false;
        }
        self.fetched_to = record.offset + 1;
        self.offsets.insert(record.offset, State::Waiting(record));
        true
    }

    /// The record at `offset` if it waits to be emitted or is due for a retry; it is
    /// then in flight. `None` when it is neither.
    pub(crate) fn take_for_emit(&mut self, offset: i64) -> Option<&KafkaRecord> {
        let state = self.offsets.get_mut(&offset)?;
        let next = match std::mem::replace(state, State::Done) {
            State::Waiting(record) => State::InFlight { record, fails: 0 },
            State::Retry { record, fails, .. } => State::InFlight { record, fails },
            other => {
                *state = other;
                return None;
            }
        };
        *state = next;
        match state {
            State::InFlight { record, .. } => Some(record),
            _ => None,
        }
    }

    /// The record at `offset` was acked (or must not be waited for); `false` when it
    /// was not known here.
    pub(crate) fn done(&mut self, offset: i64) -> bool {
        match self.offsets.get_mut(&offset) {
            Some(s) => {
                *s = State::Done;
                self.drop_done_prefix();
                true
            }
            None => false,
        }
    }

    /// The tuple of `offset` failed: schedule its retry, or give up on it.
    pub(crate) fn failed(
        &mut self,
        offset: i64,
        retry: &KafkaSpoutRetryExponentialBackoff,
        now: Instant,
    ) -> Failed {
        let Some(state) = self.offsets.get_mut(&offset) else {
            return Failed::Unknown;
        };
        let State::InFlight { .. } = state else {
            return Failed::Unknown;
        };
        let State::InFlight { record, fails } = std::mem::replace(state, State::Done) else {
            unreachable!("matched above")
        };
        let fails = fails + 1;
        match retry.delay(fails) {
            Some(delay) => {
                *state = State::Retry { record, fails };
                Failed::Retry(now + delay)
            }
            None => {
                self.drop_done_prefix();
                Failed::Exhausted { fails }
            }
        }
    }

    /// The offset to commit now: the first not done, or `fetched_to`.
    pub(crate) fn commit_point(&self) -> i64 {
        self.offsets
            .keys()
            .next()
            .copied()
            .unwrap_or(self.fetched_to)
    }

    /// Records that Kafka confirmed a commit of `offset`.
    pub(crate) fn confirm_commit(&mut self, offset: i64) {
        self.committed = offset;
    }

    /// The offsets that wait to be emitted, in order.
    #[cfg(test)]
    fn waiting(&self) -> impl Iterator<Item = i64> + '_ {
        self.offsets.iter().filter_map(|(&o, s)| match s {
            State::Waiting(_) => Some(o),
            _ => None,
        })
    }

    fn drop_done_prefix(&mut self) {
        while let Some(entry) = self.offsets.first_entry() {
            if matches!(entry.get(), State::Done) {
                entry.remove();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(offset: i64) -> KafkaRecord {
        KafkaRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            key: None,
            value: Some(offset.to_string().into_bytes()),
            timestamp: None,
        }
    }

    fn forever() -> KafkaSpoutRetryExponentialBackoff {
        KafkaSpoutRetryExponentialBackoff::default()
    }

    #[test]
    fn commits_only_up_to_the_first_unacked_offset() {
        let mut p = PartitionOffsets::new(10);
        for o in 10..15 {
            assert!(p.polled(rec(o)));
            assert!(p.take_for_emit(o).is_some());
        }
        assert_eq!(p.commit_point(), 10);
        assert!(p.done(11));
        assert!(p.done(12));
        assert_eq!(p.commit_point(), 10, "10 is not acked");
        assert!(p.done(10));
        assert_eq!(p.commit_point(), 13);
        assert!(p.done(14));
        assert_eq!(p.commit_point(), 13);
        assert!(p.done(13));
        assert_eq!(p.commit_point(), 15);
        assert_eq!(p.uncommitted(), 0);
    }

    #[test]
    fn gaps_in_the_log_do_not_block_commits() {
        let mut p = PartitionOffsets::new(0);
        for o in [0, 3, 7] {
            p.polled(rec(o));
            p.take_for_emit(o);
        }
        p.done(0);
        assert_eq!(p.commit_point(), 3);
        p.done(7);
        assert_eq!(p.commit_point(), 3);
        p.done(3);
        assert_eq!(p.commit_point(), 8);
    }

    #[test]
    fn records_polled_again_after_a_reassignment_are_ignored() {
        let mut p = PartitionOffsets::new(5);
        assert!(p.polled(rec(5)));
        assert!(!p.polled(rec(5)));
        assert!(!p.polled(rec(4)));
        assert_eq!(p.fetched_to(), 6);
        assert_eq!(p.waiting().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn a_failed_offset_blocks_commits_until_its_retry_is_acked() {
        let mut p = PartitionOffsets::new(0);
        let t0 = Instant::now();
        p.polled(rec(0));
        p.polled(rec(1));
        p.take_for_emit(0);
        p.take_for_emit(1);
        p.done(1);
        assert_eq!(p.failed(0, &forever(), t0), Failed::Retry(t0));
        assert_eq!(p.commit_point(), 0);
        assert_eq!(p.take_for_emit(0).map(|r| r.offset), Some(0));
        assert_eq!(
            p.failed(0, &forever(), t0),
            Failed::Retry(t0 + Duration::from_millis(4))
        );
        p.take_for_emit(0);
        // A late duplicate ack or fail of something unknown changes nothing.
        assert_eq!(p.failed(7, &forever(), t0), Failed::Unknown);
        assert!(!p.done(7));
        assert!(p.done(0));
        assert_eq!(p.commit_point(), 2);
    }

    #[test]
    fn a_message_past_its_retries_is_given_up_and_no_longer_blocks() {
        let once = KafkaSpoutRetryExponentialBackoff::new(
            Duration::ZERO,
            Duration::ZERO,
            Some(1),
            Duration::ZERO,
        );
        let t0 = Instant::now();
        let mut p = PartitionOffsets::new(0);
        p.polled(rec(0));
        p.take_for_emit(0);
        assert_eq!(p.failed(0, &once, t0), Failed::Retry(t0));
        p.take_for_emit(0);
        assert_eq!(p.failed(0, &once, t0), Failed::Exhausted { fails: 2 });
        assert_eq!(p.commit_point(), 1);
    }

    /// A model check: random acks and fails in random order; the commit point never
    /// passes an offset that was not acked, and reaches the end once all are acked.
    #[test]
    fn the_commit_point_never_passes_an_unacked_offset() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let t0 = Instant::now();
            let mut p = PartitionOffsets::new(100);
            let mut next = 100;
            let mut acked = std::collections::BTreeSet::new();
            let mut in_flight: Vec<i64> = Vec::new();
            for _ in 0..300 {
                match rng.u8(0..4) {
                    0 => {
                        next += rng.i64(1..3); // sometimes a gap
                        p.polled(rec(next - 1));
                        p.take_for_emit(next - 1);
                        in_flight.push(next - 1);
                    }
                    1 if !in_flight.is_empty() => {
                        let o = in_flight.swap_remove(rng.usize(..in_flight.len()));
                        assert!(p.done(o));
                        acked.insert(o);
                    }
                    2 if !in_flight.is_empty() => {
                        let o = in_flight[rng.usize(..in_flight.len())];
                        assert!(matches!(p.failed(o, &forever(), t0), Failed::Retry(_)));
                        assert!(p.take_for_emit(o).is_some());
                    }
                    _ => {}
                }
                let point = p.commit_point();
                for &o in &in_flight {
                    assert!(o >= point, "seed {seed}: commit point {point} passes {o}");
                }
            }
            for o in in_flight.drain(..) {
                p.done(o);
            }
            assert_eq!(p.commit_point(), p.fetched_to(), "seed {seed}");
        }
    }
}
