//! Watermarks: how far event time has certainly progressed at a bolt task.

use std::collections::BTreeMap;

use crate::ids::TaskId;

/// Tracks the latest event time sent by each input task. The watermark is the minimum
/// over the input tasks of (latest time − lag), computed every watermark interval, and
/// only once every input task has sent a tuple: one slow upstream task holds the
/// watermark back, so no window closes before its tuples can arrive. A tuple whose
/// time is at or before the current watermark is late.
#[derive(Debug)]
pub(crate) struct WatermarkTracker {
    /// The input tasks the watermark waits for.
    inputs: Vec<TaskId>,
    pub(super) latest: BTreeMap<TaskId, i64>,
    lag_ms: i64,
    interval_ms: i64,
    pub(super) watermark: Option<i64>,
    next_at: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker over `inputs` (every task of every component the bolt subscribes to on
    /// a non-system stream).
    pub(crate) fn new(mut inputs: Vec<TaskId>, lag_ms: u64, interval_ms: u64) -> Self {
        inputs.sort();
        inputs.dedup();
        WatermarkTracker {
            inputs,
            latest: BTreeMap::new(),
            lag_ms: lag_ms.min(i64::MAX as u64) as i64,
            interval_ms: interval_ms.clamp(1, i64::MAX as u64) as i64,
            watermark: None,
            next_at: None,
        }
    }

    /// Records a tuple with event time `time` from `task`; `true` when it is late.
    pub(crate) fn track(&mut self, task: TaskId, time: i64) -> bool {
        let latest = self.latest.entry(task).or_insert(time);
        *latest = (*latest).max(time);
        self.watermark.is_some_and(|w| time <= w)
    }

    /// The current watermark.
    pub(crate) fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// At clock time `now`: when a watermark interval has passed, computes the
    /// watermark and returns it if it moved forward.
    pub(crate) fn tick(&mut self, now: i64) -> Option<i64> {
        match self.next_at {
            None => {
                self.next_at = Some(now.saturating_add(self.interval_ms));
                return None;
            }
            Some(at) if now < at => return None,
            Some(_) => self.next_at = Some(now.saturating_add(self.interval_ms)),
        }
        let candidate = if self.inputs.is_empty() {
            self.latest.values().copied().min()?
        } else {
            let mut min = i64::MAX;
            for task in &self.inputs {
                min = min.min(*self.latest.get(task)?);
            }
            min
        }
        .saturating_sub(self.lag_ms);
        if self.watermark.is_some_and(|w| candidate <= w) {
            return None;
        }
        self.watermark = Some(candidate);
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_input_tasks_minus_lag() {
        let mut w = WatermarkTracker::new(vec![TaskId(1), TaskId(2)], 100, 1000);
        assert_eq!(w.tick(0), None); // the first tick starts the interval
        assert!(!w.track(TaskId(1), 5000));
        assert_eq!(w.tick(1000), None, "task 2 has sent nothing yet");
        assert!(!w.track(TaskId(2), 3000));
        assert_eq!(w.tick(1500), None, "the interval has not passed");
        assert_eq!(w.tick(2000), Some(2900));
        assert!(w.track(TaskId(2), 2900), "at the watermark is late");
        assert!(!w.track(TaskId(2), 2901));
        assert_eq!(w.tick(3000), None, "task 2 is still at 3000");
        w.track(TaskId(2), 9000);
        assert_eq!(w.tick(4000), Some(4900), "task 1 now holds it back");
        assert_eq!(w.watermark(), Some(4900));
    }
}
