//! `ShellBolt`: a bolt whose `execute` runs in a subprocess (Storm's `ShellBolt`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use serde_json::Value as Json;
use squall_api::{
    Bolt, BoxError, Config, Fields, OutputCollector, OutputFieldsDeclarer, StreamSchema, TaskId,
    TopologyContext, Tuple, DEFAULT_STREAM,
};

use crate::process::{Event, QueueError};
use crate::protocol::{self, EmitMsg, ShellMsg, SYSTEM_TASK};
use crate::shell::{Shell, ShellSpec};
use crate::Resources;

/// How long `execute` keeps waiting for the subprocess's next message while it is
/// expected (see `Runtime::pump`).
const LINGER: Duration = Duration::from_millis(5);

/// How often the bolt's executor ticks it (`squall.tick.tuple.freq.ms`) to apply what
/// the subprocess sent while no tuple arrives: an idle subprocess's acks and emits wait
/// at most this long. Each tick costs a channel poll; 10 ms keeps an idle bolt's CPU
/// negligible (see BENCHMARKS.md).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// A bolt run by a subprocess that speaks Storm's multilang protocol: components
/// written with pystorm/streamparse or Storm's `storm.py` (or any other multilang
/// library) run unchanged.
///
/// Every task starts its own subprocess, in the directory of its [`Resources`] when it
/// has some. Tuples go to the subprocess as they arrive (at most
/// `topology.shellbolt.max.pending`, default 100, queued for its stdin; `execute`
/// waits beyond that); its acks, fails and emits are applied as they come while a
/// tuple waits for them, when the next tuple arrives, and otherwise within 10 ms (the
/// bolt asks its executor for a tick every 10 ms, `squall.tick.tuple.freq.ms`, so the
/// topology's `topology.tick.tuple.freq.secs` does not apply to it: the subprocess gets
/// tick tuples only with [`tick_tuple_freq_secs`](Self::tick_tuple_freq_secs)).
/// Heartbeats go to the subprocess every second whatever the ticks.
///
/// A subprocess that exits, writes something that is not the protocol, or sends nothing
/// for `topology.subprocess.timeout.secs` (it answers a heartbeat every second when
/// healthy) is killed; the error is reported with its component, task, exit status and
/// last stderr lines; the tuples it had not acked fail (their spouts replay them); and
/// it is started again after a back-off (0.25 s, doubling up to 30 s). The worker stays
/// up, unlike Storm's, which exits.
///
/// ```no_run
/// use squall_api::TopologyBuilder;
/// use squall_multilang::ShellBolt;
/// let mut b = TopologyBuilder::new();
/// b.set_bolt("split", ShellBolt::new(["python3", "splitsentence.py"]).output_fields(["word"]), 4)
///     .shuffle_grouping("spout");
/// ```
#[derive(Debug)]
pub struct ShellBolt {
    spec: ShellSpec,
    tick_secs: Option<u32>,
    rt: Option<Box<Runtime>>,
}

impl Clone for ShellBolt {
    /// Copies the declaration; the copy has no subprocess (it starts one in `prepare`).
    fn clone(&self) -> Self {
        ShellBolt {
            spec: self.spec.clone(),
            tick_secs: self.tick_secs,
            rt: None,
        }
    }
}

impl ShellBolt {
    /// A bolt run by `command` (program and arguments, e.g.
    /// `["python3", "splitsentence.py"]`), declaring no output streams yet.
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ShellBolt {
            spec: ShellSpec::new(command),
            tick_secs: None,
            rt: None,
        }
    }

    /// Declares the default stream's fields.
    pub fn output_fields(self, fields: impl Into<Fields>) -> Self {
        self.output_stream(DEFAULT_STREAM, fields)
    }

    /// Declares stream `stream`.
    pub fn output_stream(mut self, stream: &str, fields: impl Into<Fields>) -> Self {
        self.spec.declare(stream.to_owned(), fields.into(), false);
        self
    }

    /// Declares direct stream `stream` (the subprocess emits to it with `"task"`).
    pub fn output_direct_stream(mut self, stream: &str, fields: impl Into<Fields>) -> Self {
        self.spec.declare(stream.to_owned(), fields.into(), true);
        self
    }

    /// Sets an environment variable of the subprocess (Storm's `setEnv`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.spec.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Files (and Python requirements) the subprocess needs, carried in the binary.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.spec.resources = Some(resources);
        self
    }

    /// Sends the subprocess a tick tuple (`__system`/`__tick`) every `secs` seconds.
    pub fn tick_tuple_freq_secs(mut self, secs: u32) -> Self {
        self.tick_secs = Some(secs.max(1));
        self
    }
}

#[derive(Debug)]
struct Runtime {
    shell: Shell,
    /// Tuples sent to the current subprocess and not yet acked or failed by it.
    pending: HashMap<u64, Tuple>,
    next_id: u64,
    task_ids: Vec<TaskId>,
    tick_schema: Arc<StreamSchema>,
    last_tick: Instant,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A tuple id sent by the subprocess, back as the number it was.
fn tuple_key(id: &Json) -> Option<u64> {
    match id {
        Json::String(s) => s.parse().ok(),
        Json::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl Runtime {
    /// Applies what the subprocess sent; (re)starts it when it is down; kills it when
    /// it hangs. With `linger`, or after answering task ids (the subprocess is then
    /// blocked on us, as a `storm.py` component is after every emit), or while a single
    /// tuple is in flight (an idle topology), it keeps waiting for the next message as
    /// long as one follows within [`LINGER`]: so replies are applied as they come and
    /// not only with the next tuple or tick.
    fn pump(&mut self, out: &mut OutputCollector<'_>, mut linger: bool) {
        if !self.shell.ensure_running(out) {
            return;
        }
        let events = self.shell.process.as_ref().map(|p| p.events.clone());
        if let Some(events) = events {
            let generation = self.shell.generation;
            loop {
                let ev = if linger {
                    events.recv_timeout(LINGER).ok()
                } else {
                    events.try_recv().ok()
                };
                let Some(ev) = ev else { break };
                let replied = self.handle(ev, out);
                if self.shell.generation != generation || self.shell.process.is_none() {
                    return;
                }
                linger = replied || self.pending.len() == 1;
            }
        }
        self.check_hung(out);
    }

    fn check_hung(&mut self, out: &mut OutputCollector<'_>) {
        if self.shell.hung() {
            let why = format!(
                "sent nothing for {} s (topology.subprocess.timeout.secs; a healthy subprocess answers a heartbeat every second)",
                self.shell.timeout.as_secs()
            );
            self.failed(out, &why);
        }
    }

    fn failed(&mut self, out: &mut OutputCollector<'_>, why: &str) {
        let n = self.pending.len();
        for (_, t) in self.pending.drain() {
            out.fail(&t);
        }
        let consequence = format!("its {n} pending tuples failed (their spouts replay them)");
        self.shell.process_failed(out, why, &consequence);
    }

    /// Applies one event; returns whether it answered task ids.
    fn handle(&mut self, ev: Event, out: &mut OutputCollector<'_>) -> bool {
        let msg = match ev {
            Event::Msg(m) => m,
            Event::Garbage(g) => {
                self.failed(out, &format!("wrote garbage: {g}"));
                return false;
            }
            Event::Closed => {
                self.failed(out, "exited");
                return false;
            }
        };
        let Some(msg) = self.shell.handle_common(out, msg) else {
            return false;
        };
        match msg {
            ShellMsg::Ack(id) => match tuple_key(&id).and_then(|k| self.pending.remove(&k)) {
                Some(t) => out.ack(&t),
                None => out.report_error(&format!(
                    "{}: acked tuple id {id}, which is not pending (acked or failed already?)",
                    self.shell.label
                )),
            },
            ShellMsg::Fail(id) => match tuple_key(&id).and_then(|k| self.pending.remove(&k)) {
                Some(t) => out.fail(&t),
                None => out.report_error(&format!(
                    "{}: failed tuple id {id}, which is not pending (acked or failed already?)",
                    self.shell.label
                )),
            },
            ShellMsg::Emit(e) => return self.emit(e, out),
            // Heartbeat answers: hearing anything counts.
            _ => {}
        }
        false
    }

    /// Applies an emit; returns whether it answered task ids.
    fn emit(&mut self, e: EmitMsg, out: &mut OutputCollector<'_>) -> bool {
        let answer = e.task.is_none() && e.need_task_ids;
        let direct = match self.shell.check_emit(&e) {
            Ok(d) => d,
            Err(why) => {
                out.report_error(&format!(
                    "{}: {why}; the tuple is dropped",
                    self.shell.label
                ));
                if answer {
                    self.shell.send_task_ids(&[]);
                }
                return answer;
            }
        };
        let mut anchors = Vec::with_capacity(e.anchors.len());
        for a in &e.anchors {
            match tuple_key(a).and_then(|k| self.pending.get(&k)) {
                Some(t) => anchors.push(t),
                None => out.report_error(&format!(
                    "{}: emit anchored to tuple id {a}, which is not pending (acked or failed already?); emitted without that anchor",
                    self.shell.label
                )),
            }
        }
        let values = e.tuple.into_iter().collect();
        match direct {
            Some(task) => out.emit_direct(task, &e.stream, &anchors, values),
            None if answer => {
                self.task_ids.clear();
                out.emit_with_task_ids_into(&e.stream, &anchors, values, &mut self.task_ids);
                self.shell.send_task_ids(&self.task_ids);
            }
            None => out.emit_stream(&e.stream, &anchors, values),
        }
        answer
    }

    /// Sends `tuple` to the subprocess; fails it when there is none.
    fn send(&mut self, tuple: Tuple, out: &mut OutputCollector<'_>) {
        if self.shell.process.is_none() {
            out.fail(&tuple);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut buf = Vec::with_capacity(128);
        let task = if tuple.source_task() == TaskId::SYSTEM {
            SYSTEM_TASK
        } else {
            tuple.source_task().0 as i64
        };
        protocol::write_tuple(
            &mut buf,
            &id.to_string(),
            Some(tuple.source_component()),
            tuple.source_stream(),
            task,
            tuple.values(),
        );
        self.pending.insert(id, tuple);
        let generation = self.shell.generation;
        loop {
            let Some(p) = &self.shell.process else { return };
            match p.queue_tuple(buf) {
                Ok(()) => return,
                Err(QueueError::Full(b)) => {
                    // topology.shellbolt.max.pending reached: apply replies until the
                    // subprocess takes more (it may be waiting for task ids).
                    buf = b;
                    let events = p.events.clone();
                    match events.recv_timeout(Duration::from_millis(50)) {
                        Ok(ev) => {
                            self.handle(ev, out);
                        }
                        Err(RecvTimeoutError::Timeout) => self.check_hung(out),
                        Err(RecvTimeoutError::Disconnected) => self.failed(out, "exited"),
                    }
                }
                Err(QueueError::Gone(b)) => {
                    // The writer stopped: the reader's news says why.
                    buf = b;
                    let events = p.events.clone();
                    match events.recv_timeout(Duration::from_secs(1)) {
                        Ok(ev) => {
                            self.handle(ev, out);
                        }
                        Err(_) => self.failed(out, "closed its stdin"),
                    }
                }
            }
            if self.shell.generation != generation || self.shell.process.is_none() {
                // It died meanwhile: `tuple` failed with the other pending ones.
                return;
            }
        }
    }
}

impl Bolt for ShellBolt {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let shell = Shell::prepare("bolt", &self.spec, conf, ctx, Some(Duration::from_secs(1)))?;
        self.rt = Some(Box::new(Runtime {
            shell,
            pending: HashMap::new(),
            next_id: 0,
            task_ids: Vec::new(),
            tick_schema: Arc::new(StreamSchema::tick()),
            last_tick: Instant::now(),
        }));
        Ok(())
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let Some(rt) = self.rt.as_deref_mut() else {
            out.fail(&input);
            return;
        };
        rt.pump(out, false);
        if input.is_tick() {
            // Our own draining tick; forwarded as often as the user asked.
            if let Some(secs) = self.tick_secs {
                let every = Duration::from_secs(secs.into());
                if rt.last_tick.elapsed() + DRAIN_EVERY / 2 >= every {
                    rt.last_tick = Instant::now();
                    let tick = Tuple::tick(rt.tick_schema.clone(), secs.into());
                    rt.send(tick, out);
                }
            }
            return;
        }
        rt.send(input, out);
        // Apply whatever arrived meanwhile (cheap when nothing did); alone in flight,
        // the tuple is waited for (see `pump`).
        let alone = rt.pending.len() == 1;
        rt.pump(out, alone);
    }

    fn cleanup(&mut self) {
        // Storm's `destroy`: kill the subprocess; un-acked tuples time out and replay.
        self.rt = None;
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        self.spec.declare_outputs(declarer)
    }

    fn component_configuration(&self) -> Config {
        let mut c = Config::new();
        c.set_tick_tuple_freq_ms(DRAIN_EVERY.as_millis() as u64);
        c
    }
}
