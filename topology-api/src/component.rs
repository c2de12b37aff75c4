//! Spouts, bolts and the collectors they emit through.

use std::collections::BTreeMap;
use std::error::Error;

use crate::config::Config;
use crate::context::TopologyContext;
use crate::fields::Fields;
use crate::ids::{StreamId, TaskId, DEFAULT_STREAM};
use crate::tuple::Tuple;
use crate::value::{Value, Values};

/// A source of tuples (Storm's `ISpout`). Only `next_tuple` is required.
///
/// The runtime calls every method from one thread. `next_tuple` should return quickly
/// and emit nothing when it has nothing to emit: the runtime then waits a little
/// (`topology.sleep.spout.wait.strategy.time.ms`) before it asks again.
///
/// ```
/// use squall_api::{values, BoxError, Config, OutputFieldsDeclarer, Spout,
///     SpoutOutputCollector, TopologyContext};
/// struct Lines { lines: Vec<String> }
/// impl Spout for Lines {
///     fn open(&mut self, conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
///         // An `Err` stops the topology from starting, naming this component and task.
///         let path = conf.get_str("lines.path")?.ok_or("lines.path is not set")?;
///         self.lines = vec![format!("read from {path}")];
///         Ok(())
///     }
///     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
///         if let Some(line) = self.lines.pop() {
///             out.emit(values![line]);
///         }
///     }
///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
///         d.declare(["line"]);
///     }
/// }
/// ```
pub trait Spout: Send + 'static {
    /// Called once when the task starts, before any other method but
    /// `declare_output_fields` / `component_configuration`.
    ///
    /// An `Err` (or a panic) is reported as an error of this component and task (with
    /// the worker's host and port) and the spout never gets `next_tuple`: in local mode
    /// `LocalCluster::submit_topology` fails with that error and nothing of the
    /// topology keeps running; a worker process exits and its supervisor restarts it.
    fn open(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Emits zero or more tuples.
    fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>);

    /// The tuple tree of message `msg_id` was fully processed.
    fn ack(&mut self, _msg_id: Value) {}

    /// The tuple tree of message `msg_id` failed or timed out; replay it if it matters.
    fn fail(&mut self, _msg_id: Value) {}

    /// The topology was activated (also called after `open` when it starts active).
    fn activate(&mut self) {}

    /// The topology was deactivated: `next_tuple` is not called until `activate`.
    fn deactivate(&mut self) {}

    /// Called when the task shuts down cleanly (not guaranteed on a crash).
    fn close(&mut self) {}

    /// Declares the spout's output streams.
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration, merged over the topology's.
    fn component_configuration(&self) -> Config {
        Config::new()
    }

    /// A tuple sent to this spout (only the runtime's checkpoint wrapper subscribes a
    /// spout to a stream). Not part of the user API.
    #[doc(hidden)]
    fn receive_tuple(&mut self, input: Tuple, out: &mut SpoutOutputCollector<'_>) {
        out.emitter_mut().ack(&input);
    }

    /// `ack` with a collector: what the runtime calls. Not part of the user API.
    #[doc(hidden)]
    fn ack_with_collector(&mut self, msg_id: Value, _out: &mut SpoutOutputCollector<'_>) {
        self.ack(msg_id)
    }

    /// `fail` with a collector: what the runtime calls. Not part of the user API.
    #[doc(hidden)]
    fn fail_with_collector(&mut self, msg_id: Value, _out: &mut SpoutOutputCollector<'_>) {
        self.fail(msg_id)
    }
}

/// A processor of tuples (Storm's `IRichBolt`). Only `execute` is required.
///
/// The bolt must `ack` or `fail` every input tuple (see [`BasicBolt`] for a bolt that
/// does so automatically).
pub trait Bolt: Send + 'static {
    /// Called once when the task starts, before any tuple arrives.
    ///
    /// An `Err` (or a panic) is reported as an error of this component and task (with
    /// the worker's host and port): in local mode `LocalCluster::submit_topology` fails
    /// with that error and nothing of the topology keeps running; a worker process exits
    /// and its supervisor restarts it.
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one input tuple.
    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>);

    /// Called when the task shuts down cleanly (not guaranteed on a crash).
    fn cleanup(&mut self) {}

    /// Declares the bolt's output streams.
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration, merged over the topology's.
    fn component_configuration(&self) -> Config {
        Config::new()
    }
}

/// The error type a [`BasicBolt`] may return: any error. The input tuple then fails
/// (and replays) and the error is reported.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// A bolt whose emits are anchored to the input and whose input is acked when `execute`
/// returns `Ok` and failed when it returns `Err` (Storm's `IBasicBolt`).
///
/// ```
/// use squall_api::{values, BasicBolt, BasicOutputCollector, BoxError, OutputFieldsDeclarer, Tuple};
/// #[derive(Clone)]
/// struct Split;
/// impl BasicBolt for Split {
///     fn execute(&mut self, input: &Tuple, out: &mut BasicOutputCollector<'_, '_>) -> Result<(), BoxError> {
///         for word in input.get_string(0)?.split(' ') {
///             out.emit(values![word]);
///         }
///         Ok(())
///     }
///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
///         d.declare(["word"]);
///     }
/// }
/// ```
pub trait BasicBolt: Send + 'static {
    /// Called once when the task starts; an `Err` is handled as for [`Bolt::prepare`].
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one input tuple; `Err` fails it.
    fn execute(
        &mut self,
        input: &Tuple,
        out: &mut BasicOutputCollector<'_, '_>,
    ) -> Result<(), BoxError>;

    /// Called when the task shuts down cleanly.
    fn cleanup(&mut self) {}

    /// Declares the bolt's output streams.
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration, merged over the topology's.
    fn component_configuration(&self) -> Config {
        Config::new()
    }
}

impl<B: BasicBolt> Bolt for B {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        BasicBolt::prepare(self, conf, ctx)
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        let result = {
            let mut basic = BasicOutputCollector {
                out: &mut *out,
                input: &input,
            };
            BasicBolt::execute(self, &input, &mut basic)
        };
        match result {
            Ok(()) => out.ack(&input),
            Err(e) => {
                out.report_error(&*e);
                out.fail(&input);
            }
        }
    }

    fn cleanup(&mut self) {
        BasicBolt::cleanup(self)
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        BasicBolt::declare_output_fields(self, declarer)
    }

    fn component_configuration(&self) -> Config {
        BasicBolt::component_configuration(self)
    }
}

/// One output stream's declaration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamDecl {
    /// The stream's fields.
    pub fields: Fields,
    /// Whether only direct grouping may subscribe (tuples are sent with `emit_direct`).
    pub direct: bool,
}

/// Collects a component's output stream declarations (Storm's `OutputFieldsDeclarer`).
#[derive(Debug, Default)]
pub struct OutputFieldsDeclarer {
    pub(crate) streams: BTreeMap<StreamId, StreamDecl>,
    pub(crate) duplicates: Vec<StreamId>,
}

impl OutputFieldsDeclarer {
    /// Declares the default stream.
    pub fn declare(&mut self, fields: impl Into<Fields>) {
        self.declare_stream(DEFAULT_STREAM, fields)
    }

    /// Declares a named stream.
    pub fn declare_stream(&mut self, stream: impl Into<StreamId>, fields: impl Into<Fields>) {
        self.insert(stream.into(), fields.into(), false)
    }

    /// Declares a direct stream: its tuples go to the task the emitter names.
    pub fn declare_direct_stream(
        &mut self,
        stream: impl Into<StreamId>,
        fields: impl Into<Fields>,
    ) {
        self.insert(stream.into(), fields.into(), true)
    }

    fn insert(&mut self, stream: StreamId, fields: Fields, direct: bool) {
        if self.streams.contains_key(&stream) {
            self.duplicates.push(stream.clone());
        }
        self.streams.insert(stream, StreamDecl { fields, direct });
    }

    /// The declared streams.
    pub fn streams(&self) -> &BTreeMap<StreamId, StreamDecl> {
        &self.streams
    }
}

/// What the runtime does with a component's emits, acks and fails. Topology code uses
/// the collectors, which wrap this.
pub trait Emitter {
    /// Sends `values` on `stream`, anchored to `anchors` (bolts) or tracked under
    /// `message_id` (spouts), to `direct_task` for direct streams. When `task_ids` is
    /// given, the receiving task ids are pushed onto it.
    ///
    /// # Panics
    /// When the stream was not declared, or `direct_task` does not match the stream.
    fn emit(&mut self, emit: Emit<'_>, task_ids: Option<&mut Vec<TaskId>>);

    /// Acknowledges an input tuple.
    fn ack(&mut self, input: &Tuple);

    /// Fails an input tuple (its tree fails and the spout replays it).
    fn fail(&mut self, input: &Tuple);

    /// Reports an error for this task (shown with the component and task, kept as the
    /// component's last errors).
    fn report_error(&mut self, error: &dyn std::fmt::Display);

    /// Number of un-acked message ids of this spout task (0 for bolts).
    fn pending_count(&self) -> usize {
        0
    }

    /// Sets gauge `name` of the current task to `value`; the last value set wins. The
    /// runtime refuses a name [`validate_gauge_name`](crate::validate_gauge_name)
    /// refuses by reporting an error, never by panicking. The default keeps nothing
    /// (an emitter without metrics, e.g. in a bolt's unit test).
    fn set_gauge(&mut self, _name: &str, _value: i64) {}
}

/// One emit, as handed to an [`Emitter`].
pub struct Emit<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The input tuples this one is anchored to (bolts).
    pub anchors: &'a [&'a Tuple],
    /// The values.
    pub values: Values,
    /// The receiving task, for direct streams.
    pub direct_task: Option<TaskId>,
    /// The message id that makes a spout tuple tracked.
    pub message_id: Option<Value>,
}

/// How a bolt emits, acks and fails (Storm's `OutputCollector`).
pub struct OutputCollector<'a> {
    emitter: &'a mut dyn Emitter,
}

impl<'a> OutputCollector<'a> {
    /// Wraps the runtime's emitter.
    pub fn new(emitter: &'a mut dyn Emitter) -> Self {
        OutputCollector { emitter }
    }

    /// Emits an unanchored tuple on the default stream (not tracked by the acker).
    pub fn emit(&mut self, values: Values) {
        self.emit_stream(DEFAULT_STREAM, &[], values)
    }

    /// Emits a tuple on the default stream anchored to `anchor`: its processing becomes
    /// part of `anchor`'s tuple trees.
    pub fn emit_anchored(&mut self, anchor: &Tuple, values: Values) {
        self.emit_stream(DEFAULT_STREAM, &[anchor], values)
    }

    /// Emits a tuple on `stream` anchored to every tuple in `anchors`.
    pub fn emit_stream(&mut self, stream: &str, anchors: &[&Tuple], values: Values) {
        self.emitter.emit(
            Emit {
                stream,
                anchors,
                values,
                direct_task: None,
                message_id: None,
            },
            None,
        )
    }

    /// Emits on `stream` and returns the tasks that receive the tuple.
    pub fn emit_with_task_ids(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
    ) -> Vec<TaskId> {
        let mut tasks = Vec::new();
        self.emitter.emit(
            Emit {
                stream,
                anchors,
                values,
                direct_task: None,
                message_id: None,
            },
            Some(&mut tasks),
        );
        tasks
    }

    /// Emits on `stream` and pushes the tasks that receive the tuple onto `tasks` (which
    /// is not cleared first): [`emit_with_task_ids`](Self::emit_with_task_ids) without
    /// allocating.
    pub fn emit_with_task_ids_into(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
        tasks: &mut Vec<TaskId>,
    ) {
        self.emitter.emit(
            Emit {
                stream,
                anchors,
                values,
                direct_task: None,
                message_id: None,
            },
            Some(tasks),
        );
    }

    /// Emits on direct stream `stream` to `task`.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, anchors: &[&Tuple], values: Values) {
        self.emitter.emit(
            Emit {
                stream,
                anchors,
                values,
                direct_task: Some(task),
                message_id: None,
            },
            None,
        )
    }

    /// Acknowledges `input`.
    pub fn ack(&mut self, input: &Tuple) {
        self.emitter.ack(input)
    }

    /// Fails `input`: its spout tuple fails and is replayed by a reliable spout.
    pub fn fail(&mut self, input: &Tuple) {
        self.emitter.fail(input)
    }

    /// Reports an error for this task.
    pub fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.emitter.report_error(error)
    }

    /// Sets this task's gauge `name` to `value` (the last value set wins), shown per
    /// executor and summed over the component in the UI and in Prometheus's
    /// `squall_component_gauge`. Cheap: a hash-map update, no allocation once the name
    /// was set before. A name that [`validate_gauge_name`](crate::validate_gauge_name)
    /// refuses, or a task's name beyond [`MAX_GAUGES_PER_TASK`](crate::MAX_GAUGES_PER_TASK),
    /// is reported as an error of this task (once per name) and ignored.
    ///
    /// ```
    /// use squall_api::{Bolt, OutputCollector, Tuple};
    /// #[derive(Default)]
    /// struct Dedup { seen: std::collections::HashSet<i64> }
    /// impl Bolt for Dedup {
    ///     fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
    ///         if let Ok(id) = input.get_long(0) {
    ///             self.seen.insert(id);
    ///         }
    ///         out.set_gauge("dedup.ids", self.seen.len() as i64);
    ///         out.ack(&input);
    ///     }
    /// }
    /// ```
    pub fn set_gauge(&mut self, name: &str, value: i64) {
        self.emitter.set_gauge(name, value)
    }
}

/// How a spout emits (Storm's `SpoutOutputCollector`).
pub struct SpoutOutputCollector<'a> {
    emitter: &'a mut dyn Emitter,
}

impl<'a> SpoutOutputCollector<'a> {
    /// Wraps the runtime's emitter.
    pub fn new(emitter: &'a mut dyn Emitter) -> Self {
        SpoutOutputCollector { emitter }
    }

    /// Emits an untracked tuple on the default stream.
    pub fn emit(&mut self, values: Values) {
        self.emit_stream(DEFAULT_STREAM, values, None)
    }

    /// Emits a tuple on the default stream tracked under `msg_id`: `ack` or `fail` is
    /// called with it once the tuple tree completes, fails or times out.
    pub fn emit_with_id(&mut self, values: Values, msg_id: impl Into<Value>) {
        self.emit_stream(DEFAULT_STREAM, values, Some(msg_id.into()))
    }

    /// Emits on `stream`, tracked when `msg_id` is given.
    pub fn emit_stream(&mut self, stream: &str, values: Values, msg_id: Option<Value>) {
        self.emitter.emit(
            Emit {
                stream,
                anchors: &[],
                values,
                direct_task: None,
                message_id: msg_id,
            },
            None,
        )
    }

    /// Emits on `stream` and returns the tasks that receive the tuple.
    pub fn emit_with_task_ids(
        &mut self,
        stream: &str,
        values: Values,
        msg_id: Option<Value>,
    ) -> Vec<TaskId> {
        let mut tasks = Vec::new();
        self.emitter.emit(
            Emit {
                stream,
                anchors: &[],
                values,
                direct_task: None,
                message_id: msg_id,
            },
            Some(&mut tasks),
        );
        tasks
    }

    /// Emits on direct stream `stream` to `task`.
    pub fn emit_direct(
        &mut self,
        task: TaskId,
        stream: &str,
        values: Values,
        msg_id: Option<Value>,
    ) {
        self.emitter.emit(
            Emit {
                stream,
                anchors: &[],
                values,
                direct_task: Some(task),
                message_id: msg_id,
            },
            None,
        )
    }

    /// Number of this task's message ids not yet acked or failed.
    pub fn pending_count(&self) -> usize {
        self.emitter.pending_count()
    }

    /// The runtime's emitter (for the runtime's own spout wrappers). Not part of the
    /// user API.
    #[doc(hidden)]
    pub fn emitter_mut(&mut self) -> &mut dyn Emitter {
        &mut *self.emitter
    }

    /// Reports an error for this task.
    pub fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.emitter.report_error(error)
    }

    /// Sets this task's gauge `name` to `value`, as [`OutputCollector::set_gauge`]
    /// does. A spout's `ack` and `fail` get no collector: keep the number in the spout
    /// and set it from the next `next_tuple`, as here.
    ///
    /// ```
    /// use squall_api::{values, OutputFieldsDeclarer, Spout, SpoutOutputCollector, Value};
    /// struct Queue { backlog: Vec<String>, acked: i64 }
    /// impl Spout for Queue {
    ///     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
    ///         out.set_gauge("queue.backlog", self.backlog.len() as i64);
    ///         out.set_gauge("queue.acked", self.acked); // counted in `ack`
    ///         out.set_gauge("queue.pending", out.pending_count() as i64);
    ///         if let Some(line) = self.backlog.pop() {
    ///             out.emit_with_id(values![line.clone()], line);
    ///         }
    ///     }
    ///     fn ack(&mut self, _msg_id: Value) {
    ///         self.acked += 1;
    ///     }
    ///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
    ///         d.declare(["line"]);
    ///     }
    /// }
    /// ```
    pub fn set_gauge(&mut self, name: &str, value: i64) {
        self.emitter.set_gauge(name, value)
    }
}

/// The collector of a [`BasicBolt`]: every emit is anchored to the input tuple.
pub struct BasicOutputCollector<'c, 'a> {
    out: &'c mut OutputCollector<'a>,
    input: &'c Tuple,
}

impl BasicOutputCollector<'_, '_> {
    /// Emits on the default stream, anchored to the input.
    pub fn emit(&mut self, values: Values) {
        self.out.emit_stream(DEFAULT_STREAM, &[self.input], values)
    }

    /// Emits on `stream`, anchored to the input.
    pub fn emit_stream(&mut self, stream: &str, values: Values) {
        self.out.emit_stream(stream, &[self.input], values)
    }

    /// Emits on direct stream `stream` to `task`, anchored to the input.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, values: Values) {
        self.out.emit_direct(task, stream, &[self.input], values)
    }

    /// Reports an error without failing the input.
    pub fn report_error(&mut self, error: &dyn std::fmt::Display) {
        self.out.report_error(error)
    }

    /// Sets this task's gauge `name` to `value`, as [`OutputCollector::set_gauge`] does.
    pub fn set_gauge(&mut self, name: &str, value: i64) {
        self.out.set_gauge(name, value)
    }
}
