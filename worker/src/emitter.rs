//! The runtime side of the collectors: routing, acking and batching of one executor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use foldhash::fast::RandomState;
use squall_api::{
    validate_gauge_name, Anchors, ComponentId, Emit, Emitter, TaskId, Tuple, Value,
    MAX_GAUGES_PER_TASK,
};

use crate::message::{Envelope, Msg};
use crate::ratelimit::LogLimiter;
use crate::rotating::RotatingMap;
use crate::routing::StreamRoute;
use crate::stats::{ErrorLog, InputRows, LocalStats};
use crate::transfer::Transfer;

/// Above this many anchors an emit merges their roots in a hash map.
const MANY_ANCHORS: usize = 16;

/// A tracked spout tuple tree awaiting its acker verdict.
pub(crate) struct Pending {
    pub msg_id: Value,
    /// The task's index in its executor (`u32` keeps the entry within 56 bytes).
    pub task_index: u32,
    /// The route (output stream) the tree's root tuple was emitted on.
    pub stream: u32,
    pub start: Instant,
}

/// Spout-only state: the message ids in flight.
pub(crate) struct SpoutTracking {
    pub pending: RotatingMap<u64, Pending>,
    pub pending_per_task: Vec<usize>,
    /// Message ids to ack right away (no ackers, or no receiving task), with their task
    /// index and route: handled by the executor after `next_tuple` returns.
    pub immediate_acks: Vec<(usize, u32, Value)>,
}

impl SpoutTracking {
    pub fn new(tasks: usize) -> Self {
        SpoutTracking {
            pending: RotatingMap::new(2),
            pending_per_task: vec![0; tasks],
            immediate_acks: Vec::new(),
        }
    }
}

/// Refused gauge names remembered per executor, so that each is reported once; past
/// this many, refusals are reported every time (throttled like every report).
const REFUSED_NAMES_KEPT: usize = 64;

/// The custom gauges of an executor's tasks (`set_gauge`): executor-local, published to
/// [`crate::stats::ExecutorStats::gauges`] when the executor flushes and something changed.
pub(crate) struct Gauges {
    /// Per task index: name → the last value set.
    per_task: Vec<HashMap<Box<str>, i64, RandomState>>,
    /// A value changed since the last publish.
    changed: bool,
    /// Names already refused (and reported).
    refused: HashSet<Box<str>, RandomState>,
}

impl Gauges {
    pub fn new(tasks: usize) -> Self {
        Gauges {
            per_task: (0..tasks).map(|_| HashMap::default()).collect(),
            changed: false,
            refused: HashSet::default(),
        }
    }

    /// Sets `name` of task `index` to `value`. `Err` names why a new name is refused
    /// (`None`: refused and reported before, stay quiet).
    fn set(&mut self, index: usize, name: &str, value: i64) -> Result<(), Option<String>> {
        let Some(task) = self.per_task.get_mut(index) else {
            return Ok(());
        };
        // The hot path: a known name, no allocation.
        if let Some(v) = task.get_mut(name) {
            if *v != value {
                *v = value;
                self.changed = true;
            }
            return Ok(());
        }
        let why = match validate_gauge_name(name) {
            Err(e) => e.to_string(),
            Ok(()) if task.len() >= MAX_GAUGES_PER_TASK => format!(
                "gauge {name:?} is one name too many: a task may set at most \
                 {MAX_GAUGES_PER_TASK} gauges"
            ),
            Ok(()) => {
                task.insert(name.into(), value);
                self.changed = true;
                return Ok(());
            }
        };
        if self.refused.contains(name) {
            return Err(None);
        }
        if self.refused.len() < REFUSED_NAMES_KEPT {
            self.refused.insert(name.into());
        }
        Err(Some(why))
    }

    /// Writes the executor's gauges (each name summed over the tasks that set it) to
    /// `to`, when a value changed since the last time. Names are never removed, so
    /// once every name is there this allocates nothing.
    pub fn publish(&mut self, to: &Mutex<BTreeMap<String, i64>>) {
        if !self.changed {
            return;
        }
        self.changed = false;
        let mut shared = to.lock().unwrap_or_else(|p| p.into_inner());
        shared.values_mut().for_each(|v| *v = 0);
        for (name, &value) in self.per_task.iter().flatten() {
            match shared.get_mut(&**name) {
                Some(sum) => *sum = sum.saturating_add(value),
                None => {
                    shared.insert(name.to_string(), value);
                }
            }
        }
    }
}

/// Everything an executor needs to emit, ack and fail.
pub(crate) struct RuntimeEmitter {
    pub component: ComponentId,
    /// The task whose component method is running.
    pub task: TaskId,
    pub task_index: usize,
    routes: Vec<StreamRoute>,
    /// The route the last emit used.
    last_route: usize,
    pub transfer: Transfer,
    ackers: Vec<TaskId>,
    rng: fastrand::Rng,
    scratch: Vec<TaskId>,
    pub stats: LocalStats,
    /// Which input row each received stream counts in.
    pub input_rows: InputRows,
    /// What the sample stamps of tuples count from.
    epoch: Instant,
    errors: Arc<ErrorLog>,
    error_lines: LogLimiter,
    debug: bool,
    pub spout: Option<SpoutTracking>,
    /// The tasks' custom gauges.
    pub gauges: Gauges,
}

impl RuntimeEmitter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        component: ComponentId,
        first_task: TaskId,
        routes: Vec<StreamRoute>,
        transfer: Transfer,
        ackers: Vec<TaskId>,
        errors: Arc<ErrorLog>,
        error_lines: LogLimiter,
        debug: bool,
        spout: Option<SpoutTracking>,
        input_rows: InputRows,
        tasks: usize,
    ) -> Self {
        RuntimeEmitter {
            gauges: Gauges::new(tasks),
            stats: LocalStats::new(routes.len(), &input_rows),
            input_rows,
            epoch: Instant::now(),
            component,
            task: first_task,
            task_index: 0,
            routes,
            last_route: 0,
            transfer,
            ackers,
            rng: fastrand::Rng::new(),
            scratch: Vec::with_capacity(8),
            errors,
            error_lines,
            debug,
            spout,
        }
    }

    /// The acker task responsible for tree `root`.
    #[inline]
    pub fn acker_for(&self, root: u64) -> TaskId {
        let n = self.ackers.len() as u128;
        self.ackers[((root as u128 * n) >> 64) as usize]
    }

    pub fn acking(&self) -> bool {
        !self.ackers.is_empty()
    }

    /// Sends a message to a task (acker verdicts, system messages).
    #[inline]
    pub fn send(&mut self, task: TaskId, msg: Msg) {
        self.transfer.push(Envelope { task, msg });
    }

    #[inline]
    fn route_index(&mut self, stream: &str) -> usize {
        // Nearly every emit names the stream the one before it did.
        if self
            .routes
            .get(self.last_route)
            .is_some_and(|r| r.name == stream)
        {
            return self.last_route;
        }
        self.last_route = self.find_route(stream);
        self.last_route
    }

    #[inline(never)]
    fn find_route(&self, stream: &str) -> usize {
        match self.routes.iter().position(|r| r.name == stream) {
            Some(i) => i,
            None => {
                panic!(
                "component '{}' emitted on stream '{}', which it did not declare (declared: {:?})",
                self.component,
                stream,
                self.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()
            )
            }
        }
    }

    /// Counts a failed input tuple (an explicit fail, or a panic in `execute`).
    pub fn count_failed(&mut self, stream: u32) {
        self.stats.inputs[self.input_rows.row(stream)].failed += 1;
    }

    /// The sample stamp of a tuple taken in at `at`: microseconds since the executor
    /// started, wrapping (process latencies up to 71 minutes come out right), made odd
    /// so that it is never 0 (1 µs error at most).
    #[inline]
    pub fn stamp(&self, at: Instant) -> u32 {
        (at.saturating_duration_since(self.epoch).as_micros() as u32) | 1
    }

    /// Fails every tree `input` belongs to (used when a bolt panics).
    pub fn fail_roots(&mut self, anchors: &Anchors) {
        if !self.acking() {
            return;
        }
        for &(root, _) in anchors.pairs() {
            let acker = self.acker_for(root);
            self.send(acker, Msg::Fail { root });
        }
    }

    /// Records an error of the current task and writes it to the log as one line with
    /// its text verbatim (see [`crate::logging`]), unless this executor already
    /// reported `topology.max.error.report.per.interval` errors in the last
    /// `topology.error.throttle.interval.secs` (as Storm throttles reports): then it is
    /// only counted, in the next line written. Reports and log lines are throttled
    /// together, so every error the UI shows has its line in the worker log.
    pub fn report(&mut self, error: String) {
        if let Some(suppressed) = self.error_lines.allow() {
            crate::logging::log_reported_error(&self.component, self.task, &error, suppressed);
            self.errors.push(self.component.clone(), self.task, error);
        }
    }
}

impl Emitter for RuntimeEmitter {
    fn emit(&mut self, emit: Emit<'_>, task_ids: Option<&mut Vec<TaskId>>) {
        let route_idx = self.route_index(emit.stream);
        let RuntimeEmitter {
            component,
            task,
            task_index,
            routes,
            transfer,
            ackers,
            rng,
            scratch,
            stats,
            debug,
            spout,
            ..
        } = self;
        let route = &mut routes[route_idx];
        if emit.values.len() != route.num_fields {
            panic!(
                "component '{component}' emitted {} values on stream '{}', which declares {} fields",
                emit.values.len(),
                route.name,
                route.num_fields
            );
        }
        scratch.clear();
        match (route.direct, emit.direct_task) {
            (true, Some(t)) => {
                if !route.targets.iter().any(|tg| tg.tasks.contains(&t)) {
                    panic!(
                        "component '{component}' emitted directly to task {t} on stream '{}', but that task does not subscribe to it",
                        route.name
                    );
                }
                scratch.push(t);
            }
            (true, None) => panic!(
                "component '{component}' must use emit_direct on direct stream '{}'",
                route.name
            ),
            (false, Some(_)) => panic!(
                "component '{component}' used emit_direct on stream '{}', which is not declared direct",
                route.name
            ),
            (false, None) => {
                for target in &mut route.targets {
                    target.choose(*task, &emit.values, scratch);
                }
            }
        }
        if *debug {
            tracing::info!(
                component = %component, task = %task, stream = %route.name,
                "Emitting: {:?} to tasks {:?}", emit.values.as_slice(), scratch
            );
        }
        stats.emitted += 1;
        let row = &mut stats.outputs[route_idx];
        row.emitted += 1;
        row.transferred += scratch.len() as u64;
        if let Some(ids) = task_ids {
            ids.extend_from_slice(scratch);
        }

        // Tuple-tree tracking: a spout message id starts a tree; a bolt's anchors extend
        // the trees of its inputs.
        let mut root = None;
        if let Some(msg_id) = emit.message_id {
            let tracking = spout.as_mut().expect("only spouts emit with a message id");
            if ackers.is_empty() || scratch.is_empty() {
                tracking
                    .immediate_acks
                    .push((*task_index, route_idx as u32, msg_id));
            } else {
                let r = rng.u64(..);
                tracking.pending.insert(
                    r,
                    Pending {
                        msg_id,
                        task_index: *task_index as u32,
                        stream: route_idx as u32,
                        start: Instant::now(),
                    },
                );
                tracking.pending_per_task[*task_index] += 1;
                root = Some(r);
            }
        }
        let anchored = !ackers.is_empty() && emit.anchors.iter().any(|a| !a.anchors().is_empty());

        let stream = route.index;
        let n = scratch.len();
        let mut values = Some(emit.values);
        let mut init_val = 0u64;
        for (i, &to) in scratch.iter().enumerate() {
            let anchors = if let Some(r) = root {
                let edge = rng.u64(..);
                init_val ^= edge;
                Anchors::single(r, edge)
            } else if anchored && emit.anchors.len() <= MANY_ANCHORS {
                let mut child = Anchors::none();
                for a in emit.anchors {
                    if a.anchors().is_empty() {
                        continue;
                    }
                    let edge = rng.u64(..);
                    a.xor_ack_val(edge);
                    for &(r, _) in a.anchors().pairs() {
                        child.xor_edge(r, edge);
                    }
                }
                child
            } else if anchored {
                // Many anchors (a windowed bolt anchors to its whole window): merge the
                // roots in a map, not by a linear search per root.
                let mut merged: HashMap<u64, u64, RandomState> =
                    HashMap::with_capacity_and_hasher(emit.anchors.len(), RandomState::default());
                for a in emit.anchors {
                    if a.anchors().is_empty() {
                        continue;
                    }
                    let edge = rng.u64(..);
                    a.xor_ack_val(edge);
                    for &(r, _) in a.anchors().pairs() {
                        *merged.entry(r).or_default() ^= edge;
                    }
                }
                Anchors::from_distinct_pairs(merged)
            } else {
                Anchors::none()
            };
            let values = if i + 1 == n {
                values.take().expect("values moved once")
            } else {
                values.as_ref().expect("values present").clone()
            };
            transfer.push(Envelope {
                task: to,
                msg: Msg::Tuple {
                    stream,
                    source: *task,
                    values,
                    anchors,
                },
            });
        }
        if let Some(r) = root {
            let acker = self.acker_for(r);
            let spout_task = self.task;
            self.send(
                acker,
                Msg::AckInit {
                    root: r,
                    val: init_val,
                    spout_task,
                },
            );
        }
    }

    fn ack(&mut self, input: &Tuple) {
        let stamp = input.sample_stamp();
        let now = (stamp != 0).then(|| self.stamp(Instant::now()));
        let row = &mut self.stats.inputs[self.input_rows.row(input.schema().index)];
        row.acked += 1;
        if let Some(now) = now {
            row.process_ns += u64::from(now.wrapping_sub(stamp)) * 1000;
            row.process_samples += 1;
        }
        if !self.acking() {
            return;
        }
        let ack_val = input.ack_val();
        for &(root, edge) in input.anchors().pairs() {
            let acker = self.acker_for(root);
            self.transfer.push_ack(acker, root, edge ^ ack_val);
        }
    }

    fn fail(&mut self, input: &Tuple) {
        self.count_failed(input.schema().index);
        self.fail_roots(input.anchors());
    }

    fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.report(error.to_string());
    }

    fn pending_count(&self) -> usize {
        self.spout
            .as_ref()
            .map_or(0, |s| s.pending_per_task[self.task_index])
    }

    fn set_gauge(&mut self, name: &str, value: i64) {
        if let Err(Some(why)) = self.gauges.set(self.task_index, name, value) {
            let kind = if self.spout.is_some() {
                "spout"
            } else {
                "bolt"
            };
            self.report(format!(
                "{kind} '{}' task {}: set_gauge refused: {why}",
                self.component, self.task
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(g: &mut Gauges) -> BTreeMap<String, i64> {
        let shared = Mutex::new(BTreeMap::new());
        g.publish(&shared);
        shared.into_inner().unwrap()
    }

    #[test]
    fn gauges_keep_the_last_value_and_sum_the_tasks_of_an_executor() {
        let mut g = Gauges::new(2);
        let shared = Mutex::new(BTreeMap::new());
        g.set(0, "in.flight", 3).unwrap();
        g.set(0, "in.flight", 5).unwrap();
        g.set(1, "in.flight", 2).unwrap();
        g.set(1, "only.one", -7).unwrap();
        g.publish(&shared);
        let want = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(
            *shared.lock().unwrap(),
            want(&[("in.flight", 7), ("only.one", -7)])
        );
        // Nothing changed: nothing published (the shared map is left alone).
        shared.lock().unwrap().insert("marker".into(), 1);
        g.set(0, "in.flight", 5).unwrap();
        g.publish(&shared);
        assert_eq!(shared.lock().unwrap().get("marker"), Some(&1));
        // A change recomputes every sum.
        shared.lock().unwrap().remove("marker");
        g.set(1, "in.flight", 0).unwrap();
        g.publish(&shared);
        assert_eq!(
            *shared.lock().unwrap(),
            want(&[("in.flight", 5), ("only.one", -7)])
        );
        // Sums saturate instead of overflowing.
        g.set(0, "big", i64::MAX).unwrap();
        g.set(1, "big", 1).unwrap();
        assert_eq!(published(&mut g)["big"], i64::MAX);
    }

    #[test]
    fn bad_names_are_refused_once_each_and_change_nothing() {
        let mut g = Gauges::new(1);
        let why = g.set(0, "in flight", 1).unwrap_err().expect("a reason");
        assert!(why.contains("\"in flight\" has ' ' at byte 2"), "{why}");
        // The same bad name again: refused quietly.
        assert_eq!(g.set(0, "in flight", 2), Err(None));
        assert!(g.set(0, "", 1).unwrap_err().is_some());
        assert!(published(&mut g).is_empty());
        // Too many names: the extra one is refused, the others kept.
        for i in 0..MAX_GAUGES_PER_TASK {
            g.set(0, &format!("g{i}"), i as i64).unwrap();
        }
        let why = g.set(0, "one.more", 1).unwrap_err().expect("a reason");
        assert!(why.contains("at most 100 gauges"), "{why}");
        g.set(0, "g0", 42).unwrap();
        let all = published(&mut g);
        assert_eq!(all.len(), MAX_GAUGES_PER_TASK);
        assert_eq!(all["g0"], 42);
    }
}
