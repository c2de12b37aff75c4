//! `ShellSpout`: a spout whose `nextTuple` runs in a subprocess (Storm's `ShellSpout`).

use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use serde_json::{json, Value as Json};
use squall_api::{
    BoxError, Config, Fields, OutputFieldsDeclarer, Spout, SpoutOutputCollector, TaskId,
    TopologyContext, Value, DEFAULT_STREAM,
};

use crate::process::Event;
use crate::protocol::{self, EmitMsg, ShellMsg};
use crate::shell::{Shell, ShellSpec};
use crate::Resources;

/// A spout run by a subprocess that speaks Storm's multilang protocol (pystorm,
/// streamparse, Storm's `storm.py`, ...).
///
/// `next_tuple` sends `{"command":"next"}` and applies the subprocess's emits until it
/// answers `sync`, waiting at most `topology.subprocess.timeout.secs`. `ack`, `fail`,
/// `activate` and `deactivate` are sent at once and their answers applied by the next
/// `next_tuple` (a spout's `ack` has no collector to emit with).
///
/// A subprocess that exits, hangs or writes garbage is killed, reported (component,
/// task, exit status, last stderr lines) and started again after a back-off, as for
/// [`ShellBolt`](crate::ShellBolt). The tuples it emitted and had not seen acked are
/// lost with it (their ids lived in its memory): acks and fails of a previous
/// subprocess's tuples are dropped, never sent to the new one.
///
/// ```no_run
/// use squall_api::TopologyBuilder;
/// use squall_multilang::ShellSpout;
/// let mut b = TopologyBuilder::new();
/// b.set_spout("sentences", ShellSpout::new(["python3", "sentences.py"]).output_fields(["sentence"]), 1);
/// ```
#[derive(Debug)]
pub struct ShellSpout {
    spec: ShellSpec,
    rt: Option<Box<Runtime>>,
}

impl Clone for ShellSpout {
    /// Copies the declaration; the copy has no subprocess (it starts one in `open`).
    fn clone(&self) -> Self {
        ShellSpout {
            spec: self.spec.clone(),
            rt: None,
        }
    }
}

impl ShellSpout {
    /// A spout run by `command` (program and arguments), declaring no streams yet.
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ShellSpout {
            spec: ShellSpec::new(command),
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

    /// Declares direct stream `stream`.
    pub fn output_direct_stream(mut self, stream: &str, fields: impl Into<Fields>) -> Self {
        self.spec.declare(stream.to_owned(), fields.into(), true);
        self
    }

    /// Sets an environment variable of the subprocess.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.spec.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Files (and Python requirements) the subprocess needs, carried in the binary.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.spec.resources = Some(resources);
        self
    }
}

#[derive(Debug)]
struct Runtime {
    shell: Shell,
    /// Commands sent whose `sync` has not arrived.
    outstanding: usize,
    /// The subprocess generation `outstanding` counts for.
    counted_for: u64,
    active: bool,
    /// Acks and fails of an earlier subprocess's tuples, dropped.
    dropped: u64,
}

impl Runtime {
    fn command(&mut self, command: &str, id: &Json) {
        if let Some(p) = &self.shell.process {
            let mut buf = Vec::with_capacity(48);
            protocol::write_spout_command(&mut buf, command, id);
            p.send(buf);
            self.outstanding += 1;
        }
    }

    /// A message id as the runtime tracks it: `[generation, id]`.
    fn wrap(&self, id: Json) -> Value {
        let id = serde_json::from_value(id).unwrap_or(Value::Null);
        Value::List(vec![Value::Int(self.shell.generation as i64), id])
    }

    fn unwrap(&mut self, msg_id: Value) -> Option<Json> {
        match msg_id {
            Value::List(mut v)
                if v.len() == 2 && v[0].as_i64() == Some(self.shell.generation as i64) =>
            {
                serde_json::to_value(v.pop()).ok()
            }
            _ => {
                self.dropped += 1;
                tracing::debug!(
                    "{}: dropping an ack/fail of a tuple of an earlier subprocess ({} so far)",
                    self.shell.label,
                    self.dropped
                );
                None
            }
        }
    }

    fn ensure(&mut self, out: &mut SpoutOutputCollector<'_>) -> bool {
        if !self.shell.ensure_running(out) {
            return false;
        }
        if self.counted_for != self.shell.generation {
            // A new subprocess: nothing outstanding; tell it the topology is active.
            self.counted_for = self.shell.generation;
            self.outstanding = 0;
            if self.active {
                self.command("activate", &json!(""));
            }
        }
        true
    }

    fn failed(&mut self, out: &mut SpoutOutputCollector<'_>, why: &str) {
        self.outstanding = 0;
        self.shell.process_failed(
            out,
            why,
            "the tuples it emitted and had not seen acked are lost with it (their ids lived in it)",
        );
    }

    /// Applies the subprocess's messages until every command sent has its `sync`.
    fn sync(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let Some(events) = self.shell.process.as_ref().map(|p| p.events.clone()) else {
            return;
        };
        while self.outstanding > 0 {
            let ev = match events.recv_timeout(Duration::from_millis(100)) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    if self.shell.hung() {
                        let why = format!(
                            "did not answer within {} s (topology.subprocess.timeout.secs)",
                            self.shell.timeout.as_secs()
                        );
                        return self.failed(out, &why);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return self.failed(out, "exited"),
            };
            let msg = match ev {
                Event::Msg(m) => m,
                Event::Garbage(g) => return self.failed(out, &format!("wrote garbage: {g}")),
                Event::Closed => return self.failed(out, "exited"),
            };
            match self.shell.handle_common(out, msg) {
                Some(ShellMsg::Sync) => self.outstanding -= 1,
                Some(ShellMsg::Emit(e)) => self.emit(e, out),
                Some(other) => out.report_error(&format!(
                    "{}: a spout cannot send {other:?}; ignored",
                    self.shell.label
                )),
                None => {}
            }
        }
    }

    fn emit(&mut self, e: EmitMsg, out: &mut SpoutOutputCollector<'_>) {
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
                return;
            }
        };
        let msg_id = e.id.map(|id| self.wrap(id));
        let values = e.tuple.into_iter().collect();
        match direct {
            Some(task) => out.emit_direct(task, &e.stream, values, msg_id),
            None if answer => {
                let tasks: Vec<TaskId> = out.emit_with_task_ids(&e.stream, values, msg_id);
                self.shell.send_task_ids(&tasks);
            }
            None => out.emit_stream(&e.stream, values, msg_id),
        }
    }
}

impl Spout for ShellSpout {
    fn open(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        let shell = Shell::prepare("spout", &self.spec, conf, ctx, None)?;
        self.rt = Some(Box::new(Runtime {
            counted_for: shell.generation,
            shell,
            outstanding: 0,
            active: false,
            dropped: 0,
        }));
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
        let Some(rt) = self.rt.as_deref_mut() else {
            return;
        };
        if !rt.ensure(out) {
            return;
        }
        rt.command("next", &json!(""));
        rt.sync(out);
    }

    fn ack(&mut self, msg_id: Value) {
        let Some(rt) = self.rt.as_deref_mut() else {
            return;
        };
        if let Some(id) = rt.unwrap(msg_id) {
            rt.command("ack", &id);
        }
    }

    fn fail(&mut self, msg_id: Value) {
        let Some(rt) = self.rt.as_deref_mut() else {
            return;
        };
        if let Some(id) = rt.unwrap(msg_id) {
            rt.command("fail", &id);
        }
    }

    fn activate(&mut self) {
        let Some(rt) = self.rt.as_deref_mut() else {
            return;
        };
        rt.active = true;
        rt.command("activate", &json!(""));
    }

    fn deactivate(&mut self) {
        let Some(rt) = self.rt.as_deref_mut() else {
            return;
        };
        rt.active = false;
        rt.command("deactivate", &json!(""));
    }

    fn close(&mut self) {
        self.rt = None;
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        self.spec.declare_outputs(declarer)
    }
}
