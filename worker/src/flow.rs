//! Automatic flow control for spouts: how many tuple trees a spout task may have in
//! flight when `topology.max.spout.pending` is not set.
//!
//! Without a limit a fast spout fills every queue between itself and the slowest bolt,
//! and complete latency becomes queueing time (tens of ms locally, hundreds across
//! workers); Storm users hand-tune `topology.max.spout.pending` against that. This
//! controller tunes it by itself, as TCP Vegas tunes a congestion window:
//!
//! - The **base latency** is the lowest mean complete latency of a round seen in the
//!   last two windows of [`BASE_WINDOW`]: what a tree costs with empty queues. Every
//!   [`PROBE_EVERY`] (and first after [`FIRST_PROBE`]) the limit drops to [`MIN`], one
//!   tree, for a round once the queues drained, so the base is measured where nothing
//!   queues and follows the topology when it gets slower.
//! - A **round** is about one limit's worth of completed trees (one round trip). At its
//!   end the round's mean latency minus the base estimates the time trees spent queued.
//!   Below half the queueing budget the limit grows by a quarter (doubles at the start,
//!   until queueing is first seen), below the budget by 1/32; above twice the budget it
//!   shrinks in proportion, in between by 5 %. It only grows when the spout actually ran
//!   into it during the round (a spout that emits slowly keeps its limit).
//! - The **queueing budget** is [`QUEUE_BUDGET_US`] or half the base latency, whichever
//!   is larger: enough queueing to keep every executor busy with full batches (the
//!   throughput of an unlimited spout), little enough that latency stays near the base.
//! - A tree that fails counts as a sample like one that completes (a spout whose
//!   trees all fail still gets a limit that fits); one that times out halves the limit.

use std::time::{Duration, Instant};

/// The limit a task starts with: little queueing for fast trees, and slow ones (a bolt
/// waiting on a remote service) get going without waiting for many rounds.
const START: f64 = 64.0;
/// The limit never goes below this, and probes the base latency at it: one tree in
/// flight queues nowhere.
const MIN: f64 = 1.0;
/// Nor above this.
const MAX: f64 = 1_000_000.0;
/// A probe round ends after this many completed trees.
const PROBE_SAMPLES: u32 = 4;
/// Queueing time allowed on top of the base latency, in µs.
const QUEUE_BUDGET_US: f64 = 4_000.0;
/// The base latency is the minimum over the last two windows of this length.
const BASE_WINDOW: Duration = PROBE_EVERY;
/// How often the limit drops for a round to measure the base latency afresh.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// The first probe, soon after the start (which measures at [`START`] trees in flight,
/// where slow trees already queue).
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// A round ends after at least this many completed trees...
const ROUND_MIN_SAMPLES: u32 = 16;
/// ...or this long with at least one, whichever comes first once past the minimum.
const ROUND_MAX: Duration = Duration::from_millis(200);

/// What the controller is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Adjusting the limit round by round.
    Normal,
    /// Holding the limit low (the saved one restored afterwards) until the trees
    /// emitted under the old limit are out of the way, then measuring one round.
    Probe { saved: f64, drained: bool },
    /// Doubling the limit each round until queueing shows (the start).
    SlowStart,
}

/// The adaptive pending limit of one spout task.
#[derive(Debug, Clone)]
pub(crate) struct FlowControl {
    limit: f64,
    phase: Phase,
    /// The current round: start, completed trees, their latency sum, whether the spout
    /// hit the limit.
    round_start: Instant,
    samples: u32,
    sum_us: u64,
    hit_limit: bool,
    /// Minimum round means of the current and the previous base window.
    base_cur: f64,
    base_prev: f64,
    window_start: Instant,
    next_probe: Instant,
}

impl FlowControl {
    pub fn new(now: Instant) -> Self {
        FlowControl {
            limit: START,
            phase: Phase::SlowStart,
            round_start: now,
            samples: 0,
            sum_us: 0,
            hit_limit: false,
            base_cur: f64::INFINITY,
            base_prev: f64::INFINITY,
            window_start: now,
            next_probe: now + FIRST_PROBE,
        }
    }

    /// The current limit on trees in flight.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Whether a task with `pending` trees in flight may emit; notes when it may not.
    #[inline]
    pub fn has_room(&mut self, pending: usize) -> bool {
        if pending < self.limit as usize {
            return true;
        }
        self.hit_limit = true;
        false
    }

    /// The base latency estimate in µs (infinite before the first round).
    fn base(&self) -> f64 {
        self.base_cur.min(self.base_prev)
    }

    /// A tree of this task completed after `latency_us`; `pending` are still in flight.
    pub fn completed(&mut self, latency_us: u64, pending: usize, now: Instant) {
        if let Phase::Probe {
            saved,
            drained: false,
        } = self.phase
        {
            // Trees emitted under the old limit are still coming back: not a sample of
            // the low limit until they all are.
            if pending < self.limit as usize {
                self.phase = Phase::Probe {
                    saved,
                    drained: true,
                };
                self.start_round(now);
            }
            return;
        }
        self.samples += 1;
        self.sum_us += latency_us;
        let enough = if matches!(self.phase, Phase::Probe { .. }) {
            self.samples >= PROBE_SAMPLES
        } else {
            self.samples >= ROUND_MIN_SAMPLES.max(self.limit as u32)
        };
        if enough || now.duration_since(self.round_start) >= ROUND_MAX {
            let mean = self.sum_us as f64 / f64::from(self.samples);
            self.end_round(mean, now);
        }
    }

    /// Trees of this task timed out: halve the limit.
    pub fn timed_out(&mut self, now: Instant) {
        if let Phase::Probe { saved, .. } = self.phase {
            self.limit = saved;
        }
        self.phase = Phase::Normal;
        self.limit = (self.limit / 2.0).max(MIN);
        self.start_round(now);
    }

    fn start_round(&mut self, now: Instant) {
        self.round_start = now;
        self.samples = 0;
        self.sum_us = 0;
        self.hit_limit = false;
    }

    fn end_round(&mut self, mean: f64, now: Instant) {
        if now.duration_since(self.window_start) >= BASE_WINDOW {
            self.base_prev = self.base_cur;
            self.base_cur = f64::INFINITY;
            self.window_start = now;
        }
        self.base_cur = self.base_cur.min(mean);
        if let Phase::Probe { saved, .. } = self.phase {
            self.limit = saved;
            self.phase = Phase::Normal;
            self.start_round(now);
            return;
        }
        let base = self.base();
        let budget = QUEUE_BUDGET_US.max(base / 2.0);
        let queued = mean - base;
        if queued >= budget / 2.0 {
            // Queueing shows: the start is over.
            self.phase = Phase::Normal;
        }
        if queued < budget / 2.0 {
            if self.hit_limit {
                self.limit *= if self.phase == Phase::SlowStart {
                    2.0
                } else {
                    1.25
                };
            }
        } else if queued < budget {
            if self.hit_limit {
                self.limit += (self.limit / 32.0).max(1.0);
            }
        } else if queued < 2.0 * budget {
            self.limit *= 0.95;
        } else {
            self.limit *= ((base + budget) / mean).max(0.5);
        }
        self.limit = self.limit.clamp(MIN, MAX);
        if now >= self.next_probe {
            self.next_probe = now + PROBE_EVERY;
            self.phase = Phase::Probe {
                saved: self.limit,
                drained: false,
            };
            self.limit = MIN;
        }
        self.start_round(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline as the spout sees it: the slowest stage serves `rate` trees per µs;
    /// an empty pipeline takes `base_us` (batching, hops). A tree entering it with
    /// `queued` trees ahead waits `queued / rate` more.
    struct Pipeline {
        rate: f64,
        base_us: f64,
    }

    /// Runs a spout that always has a tuple to emit against `p` for `secs` seconds of
    /// simulated time; returns (throughput in trees/µs, mean latency µs) over the last
    /// second, and the controller.
    fn run(p: &Pipeline, fc: &mut FlowControl, start: Instant, secs: f64) -> (f64, f64) {
        // Time advances in steps of 50 µs; each step the spout fills up to its limit
        // and the pipeline completes what it served, in order.
        let step = 50.0;
        let mut in_flight: std::collections::VecDeque<f64> = Default::default();
        let mut t = 0.0;
        let mut served_credit = 0.0;
        let (mut done, mut lat_sum) = (0u64, 0.0);
        let end = secs * 1e6;
        while t < end {
            while fc.has_room(in_flight.len()) {
                in_flight.push_back(t);
            }
            served_credit += p.rate * step;
            t += step;
            let now = start + Duration::from_micros(t as u64);
            // The oldest trees finish once the base latency passed and the server
            // got to them.
            while served_credit >= 1.0 {
                match in_flight.front() {
                    Some(&sent) if t - sent >= p.base_us => {
                        in_flight.pop_front();
                        served_credit -= 1.0;
                        let lat = t - sent;
                        fc.completed(lat as u64, in_flight.len(), now);
                        if t >= end - 1e6 {
                            done += 1;
                            lat_sum += lat;
                        }
                    }
                    _ => {
                        served_credit = served_credit.min(1.0);
                        break;
                    }
                }
            }
        }
        (done as f64 / 1e6, lat_sum / done.max(1) as f64)
    }

    #[test]
    fn a_fast_pipeline_runs_at_full_speed_with_little_queueing() {
        let start = Instant::now();
        let mut fc = FlowControl::new(start);
        // 1 M trees/s, 300 µs when empty: 300 trees keep it busy.
        let p = Pipeline {
            rate: 1.0,
            base_us: 300.0,
        };
        let (throughput, latency) = run(&p, &mut fc, start, 20.0);
        assert!(throughput > 0.97, "throughput {throughput} trees/µs");
        // The queueing stays within twice the budget.
        assert!(
            latency < 300.0 + 2.0 * QUEUE_BUDGET_US,
            "latency {latency} µs"
        );
        assert!(fc.limit() < 20_000, "limit {}", fc.limit());
    }

    #[test]
    fn a_slow_pipeline_keeps_a_small_limit() {
        let start = Instant::now();
        let mut fc = FlowControl::new(start);
        // 1,000 trees/s and 2 ms when empty (a bolt calling a database).
        let p = Pipeline {
            rate: 0.001,
            base_us: 2_000.0,
        };
        let (throughput, latency) = run(&p, &mut fc, start, 30.0);
        assert!(throughput > 0.00095, "throughput {throughput}");
        assert!(
            latency < 2_000.0 + 2.0 * QUEUE_BUDGET_US,
            "latency {latency} µs"
        );
        // Unlimited, the spout would have had tens of thousands of trees queued.
        assert!(fc.limit() < 100, "limit {}", fc.limit());
    }

    #[test]
    fn a_slow_base_gets_a_proportional_budget() {
        let start = Instant::now();
        let mut fc = FlowControl::new(start);
        // 100 ms per tree, 10 served in parallel (100 trees/s): 10 in flight needed.
        let p = Pipeline {
            rate: 0.0001,
            base_us: 100_000.0,
        };
        let (throughput, latency) = run(&p, &mut fc, start, 60.0);
        assert!(throughput > 0.000095, "throughput {throughput}");
        assert!(latency < 100_000.0 * 2.0 + 1.0, "latency {latency} µs");
    }

    #[test]
    fn the_limit_follows_a_pipeline_that_gets_slower() {
        let start = Instant::now();
        let mut fc = FlowControl::new(start);
        let fast = Pipeline {
            rate: 1.0,
            base_us: 300.0,
        };
        run(&fast, &mut fc, start, 10.0);
        let high = fc.limit();
        // The same topology, now 20 times slower (a bolt's database got slow).
        let slow = Pipeline {
            rate: 0.05,
            base_us: 300.0,
        };
        let (throughput, latency) = run(&slow, &mut fc, start + Duration::from_secs(10), 20.0);
        assert!(throughput > 0.045, "throughput {throughput}");
        assert!(
            latency < 300.0 + 2.0 * QUEUE_BUDGET_US,
            "latency {latency} µs"
        );
        assert!(fc.limit() < high / 4, "limit {} (was {high})", fc.limit());
    }

    #[test]
    fn a_spout_below_its_limit_does_not_raise_it_and_timeouts_halve_it() {
        let now = Instant::now();
        let mut fc = FlowControl::new(now);
        for i in 0..10_000u64 {
            // Never at the limit; low latency.
            assert!(fc.has_room(0));
            fc.completed(100, 0, now + Duration::from_micros(i * 10));
        }
        assert_eq!(fc.limit(), START as usize);
        // Run into it at low latency: it grows.
        for i in 0..64u64 {
            assert!(!fc.has_room(fc.limit()));
            fc.completed(100, fc.limit(), now + Duration::from_micros(i * 10));
        }
        let grown = fc.limit();
        assert!(grown > START as usize, "limit {grown}");
        fc.timed_out(now + Duration::from_millis(200));
        assert_eq!(fc.limit(), grown / 2);
        for _ in 0..64 {
            fc.timed_out(now + Duration::from_millis(200));
        }
        assert_eq!(fc.limit(), MIN as usize);
    }
}
