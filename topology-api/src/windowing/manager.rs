//! The window manager: which tuples are in which window, when a window fires and when
//! a tuple has left its last window. Pure logic, driven by the wrapper with times in
//! milliseconds (so tests drive it with a fake clock).
//!
//! Tuples enter a *final sequence* once their position is certain: on arrival for
//! processing time, once the watermark passes them for event time (sorted by event
//! time, ties in arrival order). Each gets an index (1, 2, ...). A *trigger* is a point
//! `(p, r)`: index `p`, reference time `r`. Its window holds the final tuples with index
//! `≤ p` that the eviction policy keeps: the last `n` for a count length, those with
//! time in `(r − len, r]` for a duration. Count slides trigger at every `s`-th index
//! (`r`: the clock, or the tuple's event time); duration slides at `r = origin + k·s`
//! once `r` is past (the clock) or at the watermark, with `p` the last index whose time
//! is `≤ r`. Windows only slide forward, so a tuple a trigger leaves out never comes
//! back: it is evicted (acked) right there, and reported in the next window's
//! `expired`. Empty windows are not fired (Storm's rule).

use std::collections::VecDeque;

use super::settings::Span;

/// One window as handed to the bolt.
pub(crate) struct Activation<'a, T> {
    /// The window's tuples, oldest first.
    pub tuples: &'a [T],
    /// Where the tuples that were not in the previous window start.
    pub new_from: usize,
    /// The tuples evicted since the previous window fired.
    pub expired: &'a [T],
    /// Start of a duration window (exclusive), ms.
    pub start: Option<i64>,
    /// The trigger's reference time (end, inclusive), ms.
    pub end: i64,
}

/// What the manager does with tuples and windows.
pub(crate) trait Sink<T> {
    /// `item` left its last window.
    fn evicted(&mut self, item: &T);
    /// A window fires.
    fn fire(&mut self, window: Activation<'_, T>);
}

/// The window manager of one task.
pub(crate) struct WindowManager<T> {
    pub(super) length: Span,
    pub(super) slide: Span,
    /// Final tuples not yet evicted, by index; `times[i]` is `queue[i]`'s time.
    pub(super) queue: VecDeque<T>,
    pub(super) times: VecDeque<i64>,
    /// Index of `queue[0]` (the next index when empty).
    pub(super) front: u64,
    /// Index of the last final tuple.
    pub(super) last: u64,
    /// Index of the previous trigger (for the window's new tuples).
    pub(super) prev_p: u64,
    /// The next duration trigger's reference time; `None` until known.
    pub(super) next_end: Option<i64>,
    /// Alignment of duration triggers.
    pub(super) origin: i64,
    pub(super) expired: Vec<T>,
}

impl<T> WindowManager<T> {
    /// A manager whose duration triggers fall on `origin + k·slide`. Processing time
    /// (`started`) fires its first duration window one slide after `origin`; event
    /// time learns its first window from the first tuple.
    pub(crate) fn new(length: Span, slide: Span, origin: i64, started: bool) -> Self {
        let next_end = match slide {
            Span::Millis(s) if started => Some(origin.saturating_add(s as i64)),
            _ => None,
        };
        WindowManager {
            length,
            slide,
            queue: VecDeque::new(),
            times: VecDeque::new(),
            front: 1,
            last: 0,
            prev_p: 0,
            next_end,
            origin,
            expired: Vec::new(),
        }
    }

    /// Number of tuples held (not yet evicted).
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Appends a final tuple with time `time` (never below the previous one's) and
    /// fires a count trigger when it is due, with reference time `now` (processing
    /// time) or the tuple's own time (`now == None`, event time).
    pub(crate) fn push(&mut self, item: T, time: i64, now: Option<i64>, sink: &mut impl Sink<T>) {
        self.last += 1;
        self.queue.push_back(item);
        self.times.push_back(time);
        if let Span::Count(s) = self.slide {
            if self.last.is_multiple_of(s) {
                self.trigger(self.last, now.unwrap_or(time), sink);
            }
        }
    }

    /// Fires every duration trigger with reference time `≤ horizon` (the watermark, or
    /// the clock minus 1 ms); nothing for count slides.
    pub(crate) fn advance(&mut self, horizon: i64, sink: &mut impl Sink<T>) {
        let Span::Millis(s) = self.slide else {
            return;
        };
        let s = s as i64;
        loop {
            let Some(&front_time) = self.times.front() else {
                // Nothing held: every window up to the horizon is empty, and later
                // tuples come after it.
                if let Some(r) = self.next_end {
                    if r <= horizon {
                        self.next_end = Some(self.align_up(horizon.saturating_add(1), s));
                    }
                }
                return;
            };
            let r = match self.next_end {
                // Skip windows that end before the oldest tuple: empty, nothing to evict.
                Some(r) if r >= front_time => r,
                _ => self.align_up(front_time, s),
            };
            if r > horizon {
                self.next_end = Some(r);
                return;
            }
            // p: the last index whose time is ≤ r.
            let upto = self.times.partition_point(|&t| t <= r);
            let p = self.front + upto as u64 - 1;
            self.trigger(p, r, sink);
            self.next_end = Some(r.saturating_add(s));
        }
    }

    /// The first `origin + k·s` at or after `t`.
    fn align_up(&self, t: i64, s: i64) -> i64 {
        let off = t.saturating_sub(self.origin);
        let k = off.div_euclid(s) + i64::from(off.rem_euclid(s) != 0);
        self.origin.saturating_add(k.saturating_mul(s))
    }

    /// Whether the tuple with index `idx` and time `time` is out of window `(p, r)`.
    fn excluded(&self, idx: u64, time: i64, p: u64, r: i64) -> bool {
        match self.length {
            Span::Count(n) => idx.saturating_add(n) <= p,
            Span::Millis(l) => time <= r.saturating_sub(l as i64),
        }
    }

    fn trigger(&mut self, p: u64, r: i64, sink: &mut impl Sink<T>) {
        while let (Some(_), Some(&time)) = (self.queue.front(), self.times.front()) {
            if self.front > p || !self.excluded(self.front, time, p, r) {
                break;
            }
            let item = self.queue.pop_front().expect("front exists");
            self.times.pop_front();
            self.front += 1;
            sink.evicted(&item);
            self.expired.push(item);
        }
        let held = if p >= self.front {
            ((p - self.front + 1) as usize).min(self.queue.len())
        } else {
            0
        };
        if held > 0 {
            let new_from = if self.prev_p >= self.front {
                ((self.prev_p - self.front + 1) as usize).min(held)
            } else {
                0
            };
            let start = match self.length {
                Span::Millis(l) => Some(r.saturating_sub(l as i64)),
                Span::Count(_) => None,
            };
            let tuples = &self.queue.make_contiguous()[..held];
            sink.fire(Activation {
                tuples,
                new_from,
                expired: &self.expired,
                start,
                end: r,
            });
            self.expired.clear();
        }
        self.prev_p = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fired window: all, new, expired, start, end.
    type Fired = (Vec<u32>, Vec<u32>, Vec<u32>, Option<i64>, i64);

    #[derive(Default)]
    struct Rec {
        windows: Vec<Fired>,
        evicted: Vec<u32>,
    }

    impl Sink<u32> for Rec {
        fn evicted(&mut self, item: &u32) {
            self.evicted.push(*item);
        }
        fn fire(&mut self, w: Activation<'_, u32>) {
            self.windows.push((
                w.tuples.to_vec(),
                w.tuples[w.new_from..].to_vec(),
                w.expired.to_vec(),
                w.start,
                w.end,
            ));
        }
    }

    #[test]
    fn sliding_count_window() {
        let mut m = WindowManager::new(Span::Count(3), Span::Count(2), 0, true);
        let mut rec = Rec::default();
        for i in 1..=6 {
            m.push(i, 0, Some(100 + i as i64), &mut rec);
        }
        assert_eq!(
            rec.windows,
            vec![
                (vec![1, 2], vec![1, 2], vec![], None, 102),
                (vec![2, 3, 4], vec![3, 4], vec![1], None, 104),
                (vec![4, 5, 6], vec![5, 6], vec![2, 3], None, 106),
            ]
        );
        assert_eq!(rec.evicted, vec![1, 2, 3]);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn tumbling_duration_window_skips_empty_windows() {
        // Processing time from t=1000, windows (1000,1100], (1100,1200], ...
        let mut m = WindowManager::new(Span::Millis(100), Span::Millis(100), 1000, true);
        let mut rec = Rec::default();
        m.push(1, 1050, None, &mut rec);
        m.push(2, 1100, None, &mut rec);
        m.push(3, 1101, None, &mut rec);
        m.advance(1150, &mut rec);
        assert_eq!(
            rec.windows,
            vec![(vec![1, 2], vec![1, 2], vec![], Some(1000), 1100)]
        );
        m.push(4, 5000, None, &mut rec);
        m.advance(10_000, &mut rec);
        assert_eq!(rec.windows.len(), 3);
        assert_eq!(
            rec.windows[1],
            (vec![3], vec![3], vec![1, 2], Some(1100), 1200)
        );
        assert_eq!(
            rec.windows[2],
            (vec![4], vec![4], vec![3], Some(4900), 5000)
        );
        assert_eq!(rec.evicted, vec![1, 2, 3, 4]);
        assert_eq!(m.len(), 0);
    }
}
