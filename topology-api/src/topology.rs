//! Topologies: the builder, the validated graph and its task layout.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::component::{Bolt, OutputFieldsDeclarer, Spout, StreamDecl};
use crate::config::Config;
use crate::fields::Fields;
use crate::grouping::{CustomStreamGrouping, Grouping};
use crate::ids::{ComponentId, GlobalStreamId, StreamId, TaskId, ACKER_COMPONENT};
use crate::tuple::StreamSchema;
use crate::value::Value;

/// Whether a component is a spout or a bolt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A source of tuples.
    Spout,
    /// A processor of tuples.
    Bolt,
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Spout => "spout",
            ComponentKind::Bolt => "bolt",
        })
    }
}

/// A bolt's subscription to a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The stream subscribed to.
    pub source: GlobalStreamId,
    /// How its tuples are split among the bolt's tasks.
    pub grouping: Grouping,
}

/// A component as data: everything about it except its code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Spout or bolt.
    pub kind: ComponentKind,
    /// Number of executors (threads) running the component's tasks.
    pub parallelism: u32,
    /// Number of tasks (instances); fixed for the topology's lifetime.
    pub num_tasks: u32,
    /// Streams the component subscribes to (bolts only).
    pub inputs: Vec<Subscription>,
    /// Streams the component declares.
    pub outputs: BTreeMap<StreamId, StreamDecl>,
    /// Component configuration, merged over the topology's.
    pub conf: Config,
}

/// A topology as data (Storm's `StormTopology`): what Nimbus stores and validates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologySpec {
    /// The components by id.
    pub components: BTreeMap<ComponentId, ComponentSpec>,
}

/// Why a topology was rejected. Nothing runs when a topology is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two components share an id.
    #[error("component id '{0}' is used twice")]
    DuplicateComponent(String),
    /// A component or stream id is empty or starts with `__` (reserved for the system).
    #[error(
        "{what} id '{id}' is reserved or empty: ids must be non-empty and not start with '__'"
    )]
    ReservedName {
        /// `component` or `stream`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// Parallelism or task count is zero.
    #[error("component '{component}' has {what} 0; it must be at least 1")]
    ZeroParallelism {
        /// The component.
        component: String,
        /// `parallelism` or `num_tasks`.
        what: &'static str,
    },
    /// A bolt subscribes to a component that does not exist.
    #[error("bolt '{component}' subscribes to unknown component '{source_component}'")]
    UnknownSource {
        /// The subscribing bolt.
        component: String,
        /// The missing component.
        source_component: String,
    },
    /// A bolt subscribes to a stream its source does not declare.
    #[error("bolt '{component}' subscribes to stream '{stream}' of '{source_component}', which declares only {declared:?}")]
    UndeclaredStream {
        /// The subscribing bolt.
        component: String,
        /// The source component.
        source_component: String,
        /// The missing stream.
        stream: String,
        /// The streams the source declares.
        declared: Vec<String>,
    },
    /// A fields or partial-key grouping names a field the stream does not have.
    #[error("bolt '{component}' groups stream {source_stream} by field '{field}', but that stream's fields are {fields}")]
    UnknownGroupingField {
        /// The subscribing bolt.
        component: String,
        /// The stream.
        source_stream: String,
        /// The missing field.
        field: String,
        /// The stream's fields.
        fields: String,
    },
    /// A fields or partial-key grouping with no fields.
    #[error("bolt '{component}' groups stream {source_stream} by an empty list of fields")]
    EmptyGroupingFields {
        /// The subscribing bolt.
        component: String,
        /// The stream.
        source_stream: String,
    },
    /// Direct grouping on a non-direct stream, or another grouping on a direct stream.
    #[error("bolt '{component}' uses {grouping} grouping on stream {source_stream}, which is {stream_kind}; direct streams take exactly direct grouping")]
    DirectMismatch {
        /// The subscribing bolt.
        component: String,
        /// The stream.
        source_stream: String,
        /// The grouping used.
        grouping: &'static str,
        /// `direct` or `not direct`.
        stream_kind: &'static str,
    },
    /// The same stream is subscribed twice by one bolt.
    #[error("bolt '{component}' subscribes to stream {source_stream} twice")]
    DuplicateSubscription {
        /// The bolt.
        component: String,
        /// The stream.
        source_stream: String,
    },
    /// A component declares the same stream twice.
    #[error("component '{component}' declares stream '{stream}' twice")]
    DuplicateStream {
        /// The component.
        component: String,
        /// The stream.
        stream: String,
    },
    /// A custom grouping without an implementation.
    #[error("bolt '{component}' uses custom grouping '{name}' on {source_stream}, but no implementation was given")]
    MissingCustomGrouping {
        /// The bolt.
        component: String,
        /// The stream.
        source_stream: String,
        /// The grouping's name.
        name: String,
    },
    /// A topology needs at least one spout.
    #[error("the topology has no spout")]
    NoSpout,
    /// A spout was given inputs.
    #[error("spout '{0}' cannot subscribe to streams")]
    SpoutWithInputs(String),
    /// A component of the spec has no code in this binary (submission mismatch).
    #[error("component '{0}' has no implementation in this binary")]
    MissingImplementation(String),
    /// A component's own configuration (or the topology's merged under it) has a bad
    /// value.
    #[error("component '{component}' has an invalid configuration: {error}")]
    InvalidComponentConfig {
        /// The component.
        component: String,
        /// The key with the bad value.
        key: String,
        /// What is wrong with it.
        error: String,
    },
    /// The topology's configuration has a bad value.
    #[error("invalid topology configuration: {error}")]
    InvalidConfig {
        /// The key with the bad value.
        key: String,
        /// What is wrong with it.
        error: String,
    },
}

fn check_id(what: &'static str, id: &str) -> Result<(), TopologyError> {
    if id.is_empty() || id.starts_with("__") {
        return Err(TopologyError::ReservedName {
            what,
            id: id.to_owned(),
        });
    }
    Ok(())
}

impl TopologySpec {
    /// Checks the whole graph: ids, parallelism, sources, streams, fields, groupings,
    /// and every component's own configuration (as [`Config::validate`] does, merged
    /// over nothing).
    pub fn validate(&self) -> Result<(), TopologyError> {
        if !self
            .components
            .values()
            .any(|c| c.kind == ComponentKind::Spout)
        {
            return Err(TopologyError::NoSpout);
        }
        for (id, c) in &self.components {
            check_id("component", id.as_str())?;
            if c.parallelism == 0 {
                return Err(TopologyError::ZeroParallelism {
                    component: id.to_string(),
                    what: "parallelism",
                });
            }
            if c.num_tasks == 0 {
                return Err(TopologyError::ZeroParallelism {
                    component: id.to_string(),
                    what: "num_tasks",
                });
            }
            for stream in c.outputs.keys() {
                check_id("stream", stream.as_str())?;
            }
            // A spout's only inputs are the checkpoint barriers of a stateful topology.
            if c.kind == ComponentKind::Spout && !crate::state::spout_inputs_allowed(&c.inputs) {
                return Err(TopologyError::SpoutWithInputs(id.to_string()));
            }
            c.conf
                .validate()
                .map_err(|e| TopologyError::InvalidComponentConfig {
                    component: id.to_string(),
                    key: e.key().to_owned(),
                    error: e.to_string(),
                })?;
            crate::windowing::check_component(id.as_str(), &c.conf, None)?;
            for (i, sub) in c.inputs.iter().enumerate() {
                if c.inputs[..i].iter().any(|s| s.source == sub.source) {
                    return Err(TopologyError::DuplicateSubscription {
                        component: id.to_string(),
                        source_stream: sub.source.to_string(),
                    });
                }
                self.check_subscription(id, sub)?;
            }
        }
        Ok(())
    }

    /// Checks the configuration each component runs with: `conf` (the topology's) with
    /// the component's own configuration merged over it. A bad value is blamed on the
    /// component when the component sets that key, else on the topology's
    /// configuration. Runtimes call this before they start any thread.
    pub fn validate_with_conf(&self, conf: &Config) -> Result<(), TopologyError> {
        let blame_topology = |e: crate::config::ConfigError| TopologyError::InvalidConfig {
            key: e.key().to_owned(),
            error: e.to_string(),
        };
        conf.validate().map_err(blame_topology)?;
        crate::state::validate_conf(self, conf)?;
        for (id, c) in &self.components {
            let mut merged = conf.clone();
            merged.merge(&c.conf);
            if let Err(e) = merged.validate() {
                if c.conf.get(e.key()).is_some() {
                    return Err(TopologyError::InvalidComponentConfig {
                        component: id.to_string(),
                        key: e.key().to_owned(),
                        error: e.to_string(),
                    });
                }
                return Err(blame_topology(e));
            }
            crate::windowing::check_component(id.as_str(), &c.conf, Some(&merged))?;
        }
        Ok(())
    }

    fn check_subscription(
        &self,
        id: &ComponentId,
        sub: &Subscription,
    ) -> Result<(), TopologyError> {
        let source = self.components.get(&sub.source.component).ok_or_else(|| {
            TopologyError::UnknownSource {
                component: id.to_string(),
                source_component: sub.source.component.to_string(),
            }
        })?;
        let decl = source.outputs.get(&sub.source.stream).ok_or_else(|| {
            TopologyError::UndeclaredStream {
                component: id.to_string(),
                source_component: sub.source.component.to_string(),
                stream: sub.source.stream.to_string(),
                declared: source.outputs.keys().map(|s| s.to_string()).collect(),
            }
        })?;
        let is_direct_grouping = sub.grouping == Grouping::Direct;
        if is_direct_grouping != decl.direct {
            return Err(TopologyError::DirectMismatch {
                component: id.to_string(),
                source_stream: sub.source.to_string(),
                grouping: sub.grouping.name(),
                stream_kind: if decl.direct { "direct" } else { "not direct" },
            });
        }
        if let Some(fields) = sub.grouping.fields() {
            if fields.is_empty() {
                return Err(TopologyError::EmptyGroupingFields {
                    component: id.to_string(),
                    source_stream: sub.source.to_string(),
                });
            }
            if let Some(missing) = fields.names().iter().find(|f| !decl.fields.contains(f)) {
                return Err(TopologyError::UnknownGroupingField {
                    component: id.to_string(),
                    source_stream: sub.source.to_string(),
                    field: missing.clone(),
                    fields: decl.fields.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The bolts subscribed to stream `stream` of `component`, with their groupings.
    pub fn subscribers<'a>(
        &'a self,
        component: &'a str,
        stream: &'a str,
    ) -> impl Iterator<Item = (&'a ComponentId, &'a Grouping)> + 'a {
        self.components.iter().flat_map(move |(id, c)| {
            c.inputs
                .iter()
                .filter(move |s| s.source.component == component && s.source.stream == stream)
                .map(move |s| (id, &s.grouping))
        })
    }
}

/// The tasks of one component and how they are split among its executors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentTasks {
    /// Spout or bolt (ackers count as bolts).
    pub kind: ComponentKind,
    /// The component's task ids, contiguous and ascending.
    pub tasks: Vec<TaskId>,
    /// Each executor's tasks as an inclusive `(first, last)` range.
    pub executors: Vec<(TaskId, TaskId)>,
}

/// Task ids and executors of a topology, derived the same way in every process: the
/// components in id order, each with contiguous task ids from 1, then the ackers
/// (component `__acker`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLayout {
    components: BTreeMap<ComponentId, ComponentTasks>,
    task_components: Vec<ComponentId>,
    streams: Vec<StreamSchema>,
}

/// Splits `tasks` into `executors` contiguous ranges whose sizes differ by at most one
/// (larger ranges first), as Storm does.
pub fn executor_ranges(tasks: &[TaskId], executors: u32) -> Vec<(TaskId, TaskId)> {
    let executors = (executors as usize).clamp(1, tasks.len().max(1));
    let base = tasks.len() / executors;
    let extra = tasks.len() % executors;
    let mut out = Vec::with_capacity(executors);
    let mut start = 0;
    for i in 0..executors {
        let n = base + usize::from(i < extra);
        if n == 0 {
            break;
        }
        out.push((tasks[start], tasks[start + n - 1]));
        start += n;
    }
    out
}

impl TaskLayout {
    /// The layout of `spec` with `num_ackers` acker tasks (one executor each).
    pub fn new(spec: &TopologySpec, num_ackers: u32) -> Self {
        let mut components = BTreeMap::new();
        let mut task_components = vec![ComponentId::new("__system")];
        let mut next = 1u32;
        let mut add = |id: &ComponentId, kind, num_tasks: u32, parallelism: u32| {
            let tasks: Vec<TaskId> = (next..next + num_tasks).map(TaskId).collect();
            next += num_tasks;
            task_components.extend(std::iter::repeat_n(id.clone(), num_tasks as usize));
            let executors = executor_ranges(&tasks, parallelism);
            components.insert(
                id.clone(),
                ComponentTasks {
                    kind,
                    tasks,
                    executors,
                },
            );
        };
        for (id, c) in &spec.components {
            add(id, c.kind, c.num_tasks, c.parallelism);
        }
        if num_ackers > 0 {
            add(
                &ComponentId::new(ACKER_COMPONENT),
                ComponentKind::Bolt,
                num_ackers,
                num_ackers,
            );
        }
        let mut streams = Vec::new();
        for (id, c) in &spec.components {
            for (stream, decl) in &c.outputs {
                streams.push(StreamSchema {
                    component: id.clone(),
                    stream: stream.clone(),
                    fields: decl.fields.clone(),
                    direct: decl.direct,
                    index: streams.len() as u32,
                });
            }
        }
        TaskLayout {
            components,
            task_components,
            streams,
        }
    }

    /// Every component's tasks, including `__acker`.
    pub fn components(&self) -> &BTreeMap<ComponentId, ComponentTasks> {
        &self.components
    }

    /// The tasks of `component` (empty when unknown).
    pub fn component_tasks(&self, component: &str) -> &[TaskId] {
        self.components
            .get(component)
            .map_or(&[], |c| c.tasks.as_slice())
    }

    /// The component that runs `task`.
    pub fn task_component(&self, task: TaskId) -> Option<&ComponentId> {
        if task == TaskId::SYSTEM {
            return None;
        }
        self.task_components.get(task.0 as usize)
    }

    /// The highest task id.
    pub fn max_task(&self) -> TaskId {
        TaskId(self.task_components.len() as u32 - 1)
    }

    /// The acker tasks (empty when acking is off).
    pub fn acker_tasks(&self) -> &[TaskId] {
        self.component_tasks(ACKER_COMPONENT)
    }

    /// Every declared stream, indexed by [`StreamSchema::index`].
    pub fn streams(&self) -> &[StreamSchema] {
        &self.streams
    }

    /// The schema of stream `stream` of `component`.
    pub fn stream(&self, component: &str, stream: &str) -> Option<&StreamSchema> {
        self.streams
            .iter()
            .find(|s| s.component == component && s.stream == stream)
    }

    /// All executors as `(component, first task, last task)`.
    pub fn executors(&self) -> impl Iterator<Item = (&ComponentId, TaskId, TaskId)> + '_ {
        self.components
            .iter()
            .flat_map(|(id, c)| c.executors.iter().map(move |&(a, b)| (id, a, b)))
    }
}

pub(crate) type SpoutFactory = Box<dyn Fn() -> Box<dyn Spout> + Send>;
pub(crate) type BoltFactory = Box<dyn Fn() -> Box<dyn Bolt> + Send>;
pub(crate) type GroupingFactory = Box<dyn Fn() -> Box<dyn CustomStreamGrouping> + Send>;

pub(crate) enum Factory {
    Spout(SpoutFactory),
    Bolt(BoltFactory),
}

/// A validated topology: its spec plus the code to make each task's instance.
pub struct Topology {
    spec: TopologySpec,
    factories: BTreeMap<ComponentId, Factory>,
    custom_groupings: BTreeMap<(ComponentId, GlobalStreamId), GroupingFactory>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Topology {
    /// The topology as data.
    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// A fresh spout instance for one task of `component`.
    pub fn new_spout(&self, component: &str) -> Option<Box<dyn Spout>> {
        match self.factories.get(component)? {
            Factory::Spout(f) => Some(f()),
            Factory::Bolt(_) => None,
        }
    }

    /// A fresh bolt instance for one task of `component`.
    pub fn new_bolt(&self, component: &str) -> Option<Box<dyn Bolt>> {
        match self.factories.get(component)? {
            Factory::Bolt(f) => Some(f()),
            Factory::Spout(_) => None,
        }
    }

    /// A fresh instance of the custom grouping `bolt` uses on `source`.
    pub fn new_custom_grouping(
        &self,
        bolt: &str,
        source: &GlobalStreamId,
    ) -> Option<Box<dyn CustomStreamGrouping>> {
        self.custom_groupings
            .get(&(ComponentId::new(bolt), source.clone()))
            .map(|f| f())
    }

    /// Replaces parallelism hints (Storm's rebalance `-e component=n`). Task counts stay.
    pub fn set_parallelism(
        &mut self,
        component: &str,
        parallelism: u32,
    ) -> Result<(), TopologyError> {
        let c = self
            .spec
            .components
            .get_mut(component)
            .ok_or_else(|| TopologyError::MissingImplementation(component.to_owned()))?;
        if parallelism == 0 {
            return Err(TopologyError::ZeroParallelism {
                component: component.to_owned(),
                what: "parallelism",
            });
        }
        c.parallelism = parallelism.min(c.num_tasks);
        Ok(())
    }
}

/// A spout's declared outputs and component configuration.
fn spout_shape(spout: &dyn Spout) -> (OutputFieldsDeclarer, Config) {
    let mut declarer = OutputFieldsDeclarer::default();
    spout.declare_output_fields(&mut declarer);
    (declarer, spout.component_configuration())
}

/// A bolt's declared outputs and component configuration.
fn bolt_shape(bolt: &dyn Bolt) -> (OutputFieldsDeclarer, Config) {
    let mut declarer = OutputFieldsDeclarer::default();
    bolt.declare_output_fields(&mut declarer);
    (declarer, bolt.component_configuration())
}

/// Builds a topology the way Storm's `TopologyBuilder` does.
///
/// ```
/// use squall_api::{values, BasicBolt, BasicOutputCollector, BoxError, OutputFieldsDeclarer,
///     Spout, SpoutOutputCollector, TopologyBuilder, Tuple};
/// #[derive(Clone)]
/// struct Sentences;
/// impl Spout for Sentences {
///     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
///         out.emit(values!["the cow jumped over the moon"]);
///     }
///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["sentence"]); }
/// }
/// #[derive(Clone)]
/// struct Split;
/// impl BasicBolt for Split {
///     fn execute(&mut self, t: &Tuple, out: &mut BasicOutputCollector<'_, '_>) -> Result<(), BoxError> {
///         for w in t.get_string(0)?.split(' ') { out.emit(values![w]); }
///         Ok(())
///     }
///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["word"]); }
/// }
///
/// let mut builder = TopologyBuilder::new();
/// builder.set_spout("spout", Sentences, 1);
/// builder.set_bolt("split", Split, 2).shuffle_grouping("spout");
/// let topology = builder.create_topology().unwrap();
/// assert_eq!(topology.spec().components.len(), 2);
///
/// let mut bad = TopologyBuilder::new();
/// bad.set_spout("spout", Sentences, 1);
/// bad.set_bolt("split", Split, 2).fields_grouping("spout", ["word"]);
/// assert_eq!(
///     bad.create_topology().unwrap_err().to_string(),
///     "bolt 'split' groups stream spout:default by field 'word', but that stream's fields are [sentence]"
/// );
/// ```
#[derive(Default)]
pub struct TopologyBuilder {
    spec: TopologySpec,
    factories: BTreeMap<ComponentId, Factory>,
    custom_groupings: BTreeMap<(ComponentId, GlobalStreamId), GroupingFactory>,
    errors: Vec<TopologyError>,
    /// The stateful bolts (`set_stateful_bolt`): their topology gets checkpointing.
    pub(crate) stateful: std::collections::BTreeSet<ComponentId>,
}

impl TopologyBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(
        &mut self,
        id: &str,
        kind: ComponentKind,
        parallelism: u32,
        declarer: OutputFieldsDeclarer,
        conf: Config,
        factory: Factory,
    ) -> ComponentId {
        let cid = ComponentId::new(id);
        if self.spec.components.contains_key(id) {
            self.errors
                .push(TopologyError::DuplicateComponent(id.to_owned()));
        }
        if let Some(stream) = declarer.duplicates.first() {
            self.errors.push(TopologyError::DuplicateStream {
                component: id.to_owned(),
                stream: stream.to_string(),
            });
        }
        self.spec.components.insert(
            cid.clone(),
            ComponentSpec {
                kind,
                parallelism,
                num_tasks: parallelism,
                inputs: Vec::new(),
                outputs: declarer.streams,
                conf,
            },
        );
        self.factories.insert(cid.clone(), factory);
        cid
    }

    /// Adds a spout whose outputs and component configuration are those of `template`.
    fn add_spout(
        &mut self,
        id: &str,
        (declarer, conf): (OutputFieldsDeclarer, Config),
        factory: SpoutFactory,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let id = self.add(
            id,
            ComponentKind::Spout,
            parallelism,
            declarer,
            conf,
            Factory::Spout(factory),
        );
        ComponentDeclarer { builder: self, id }
    }

    /// Adds a bolt whose outputs and component configuration are those of `template`.
    pub(crate) fn add_bolt(
        &mut self,
        id: &str,
        (declarer, conf): (OutputFieldsDeclarer, Config),
        factory: BoltFactory,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let id = self.add(
            id,
            ComponentKind::Bolt,
            parallelism,
            declarer,
            conf,
            Factory::Bolt(factory),
        );
        ComponentDeclarer { builder: self, id }
    }

    /// Adds a spout with `parallelism` executors (and as many tasks). Each task gets its
    /// own clone of `spout`; open connections in `open`, not before. For a spout that
    /// cannot (or should not) be cloned, use [`set_spout_with`](Self::set_spout_with).
    pub fn set_spout<S: Spout + Clone>(
        &mut self,
        id: &str,
        spout: S,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let shape = spout_shape(&spout);
        let factory: SpoutFactory = Box::new(move || Box::new(spout.clone()));
        self.add_spout(id, shape, factory, parallelism)
    }

    /// Adds a spout whose instances `make` creates: no `Clone` needed. `make` is called
    /// once per task in every process that runs the topology (the builder runs in each
    /// of them), and once here to read the spout's output fields and component
    /// configuration from an instance that is then dropped. Keep it cheap and free of
    /// side effects; open connections in `open`.
    ///
    /// ```
    /// use squall_api::{values, OutputFieldsDeclarer, Spout, SpoutOutputCollector,
    ///     TopologyBuilder};
    /// struct Counter { n: u64, buffer: Vec<u8> } // no Clone
    /// impl Spout for Counter {
    ///     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {
    ///         self.n += 1;
    ///         out.emit(values![self.n as i64]);
    ///     }
    ///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["n"]); }
    /// }
    /// let mut builder = TopologyBuilder::new();
    /// builder.set_spout_with("numbers", || Counter { n: 0, buffer: Vec::with_capacity(4096) }, 2);
    /// let topology = builder.create_topology().unwrap();
    /// assert!(topology.new_spout("numbers").is_some());
    /// ```
    pub fn set_spout_with<S, F>(
        &mut self,
        id: &str,
        make: F,
        parallelism: u32,
    ) -> ComponentDeclarer<'_>
    where
        S: Spout,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let shape = spout_shape(&make());
        let factory: SpoutFactory = Box::new(move || Box::new(make()));
        self.add_spout(id, shape, factory, parallelism)
    }

    /// Adds a bolt with `parallelism` executors (and as many tasks). Each task gets its
    /// own clone of `bolt`; open connections in `prepare`. For a bolt that cannot (or
    /// should not) be cloned, use [`set_bolt_with`](Self::set_bolt_with).
    pub fn set_bolt<B: Bolt + Clone>(
        &mut self,
        id: &str,
        bolt: B,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let shape = bolt_shape(&bolt);
        let factory: BoltFactory = Box::new(move || Box::new(bolt.clone()));
        self.add_bolt(id, shape, factory, parallelism)
    }

    /// Adds a bolt whose instances `make` creates: no `Clone` needed (state such as a
    /// `HashMap` of counts starts fresh in each task). `make` is called once per task
    /// in every process that runs the topology, and once here to read the bolt's output
    /// fields and component configuration from an instance that is then dropped.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use squall_api::{values, BasicBolt, BasicOutputCollector, BoxError,
    ///     OutputFieldsDeclarer, TopologyBuilder, Tuple};
    /// # use squall_api::{Spout, SpoutOutputCollector};
    /// # struct Words;
    /// # impl Spout for Words {
    /// #     fn next_tuple(&mut self, _out: &mut SpoutOutputCollector<'_>) {}
    /// #     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["word"]); }
    /// # }
    /// struct Count { counts: HashMap<String, u64> }
    /// impl BasicBolt for Count {
    ///     fn execute(&mut self, t: &Tuple, out: &mut BasicOutputCollector<'_, '_>) -> Result<(), BoxError> {
    ///         let word = t.get_string(0)?;
    ///         let n = self.counts.entry(word.to_owned()).or_default();
    ///         *n += 1;
    ///         out.emit(values![word, *n as i64]);
    ///         Ok(())
    ///     }
    ///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["word", "count"]); }
    /// }
    /// let mut builder = TopologyBuilder::new();
    /// builder.set_spout_with("words", || Words, 1);
    /// builder.set_bolt_with("count", || Count { counts: HashMap::new() }, 2)
    ///     .fields_grouping("words", ["word"]);
    /// builder.create_topology().unwrap();
    /// ```
    pub fn set_bolt_with<B, F>(
        &mut self,
        id: &str,
        make: F,
        parallelism: u32,
    ) -> ComponentDeclarer<'_>
    where
        B: Bolt,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let shape = bolt_shape(&make());
        let factory: BoltFactory = Box::new(move || Box::new(make()));
        self.add_bolt(id, shape, factory, parallelism)
    }

    /// Validates the graph (and every component's configuration) and returns the
    /// topology, or the first problem found.
    pub fn create_topology(mut self) -> Result<Topology, TopologyError> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        self.spec.validate()?;
        for (id, c) in &self.spec.components {
            for sub in &c.inputs {
                if let Grouping::Custom(name) = &sub.grouping {
                    if !self
                        .custom_groupings
                        .contains_key(&(id.clone(), sub.source.clone()))
                    {
                        return Err(TopologyError::MissingCustomGrouping {
                            component: id.to_string(),
                            source_stream: sub.source.to_string(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
        if !self.stateful.is_empty() {
            crate::state::wire(&mut self.spec, &mut self.factories, &self.stateful)?;
            self.spec.validate()?;
        }
        Ok(Topology {
            spec: self.spec,
            factories: self.factories,
            custom_groupings: self.custom_groupings,
        })
    }
}

/// Configures the component just added: groupings, task count, component config.
pub struct ComponentDeclarer<'a> {
    builder: &'a mut TopologyBuilder,
    id: ComponentId,
}

impl ComponentDeclarer<'_> {
    fn spec(&mut self) -> &mut ComponentSpec {
        self.builder
            .spec
            .components
            .get_mut(&self.id)
            .expect("component was just added")
    }

    /// Subscribes to `source` with `grouping`.
    pub fn grouping(&mut self, source: impl Into<GlobalStreamId>, grouping: Grouping) -> &mut Self {
        let source = source.into();
        self.spec().inputs.push(Subscription { source, grouping });
        self
    }

    /// Tuples are spread evenly over the tasks.
    pub fn shuffle_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::Shuffle)
    }

    /// Tuples with equal values in `fields` go to the same task.
    pub fn fields_grouping(
        &mut self,
        source: impl Into<GlobalStreamId>,
        fields: impl Into<Fields>,
    ) -> &mut Self {
        self.grouping(source, Grouping::Fields(fields.into()))
    }

    /// Every task gets every tuple.
    pub fn all_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::All)
    }

    /// Every tuple goes to the task with the lowest id.
    pub fn global_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::Global)
    }

    /// No preference (shuffle).
    pub fn none_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::None)
    }

    /// The emitter picks the task; `source` must be a direct stream.
    pub fn direct_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::Direct)
    }

    /// Shuffle, preferring tasks in the emitter's worker.
    pub fn local_or_shuffle_grouping(&mut self, source: impl Into<GlobalStreamId>) -> &mut Self {
        self.grouping(source, Grouping::LocalOrShuffle)
    }

    /// Fields grouping that splits each key over two tasks to balance skew.
    pub fn partial_key_grouping(
        &mut self,
        source: impl Into<GlobalStreamId>,
        fields: impl Into<Fields>,
    ) -> &mut Self {
        self.grouping(source, Grouping::PartialKey(fields.into()))
    }

    /// A user grouping; every emitting task gets its own clone of `grouping`.
    pub fn custom_grouping<G: CustomStreamGrouping + Clone>(
        &mut self,
        source: impl Into<GlobalStreamId>,
        grouping: G,
    ) -> &mut Self {
        let source = source.into();
        let name = std::any::type_name::<G>().to_owned();
        let factory: GroupingFactory = Box::new(move || Box::new(grouping.clone()));
        self.builder
            .custom_groupings
            .insert((self.id.clone(), source.clone()), factory);
        self.grouping(source, Grouping::Custom(name))
    }

    /// Sets the number of tasks (default: the parallelism). Tasks are fixed for the
    /// topology's life; executors can later be rebalanced up to this number.
    pub fn set_num_tasks(&mut self, num_tasks: u32) -> &mut Self {
        self.spec().num_tasks = num_tasks;
        self
    }

    /// Adds a component-specific configuration value (e.g. a tick frequency).
    pub fn add_configuration(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.spec().conf.set(key, value);
        self
    }

    /// Sets `topology.max.spout.pending` for this spout only.
    pub fn set_max_spout_pending(&mut self, n: u32) -> &mut Self {
        self.add_configuration(crate::config::keys::TOPOLOGY_MAX_SPOUT_PENDING, n)
    }

    /// Sets `topology.debug` for this component only.
    pub fn set_debug(&mut self, debug: bool) -> &mut Self {
        self.add_configuration(crate::config::keys::TOPOLOGY_DEBUG, debug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[u32]) -> Vec<TaskId> {
        ids.iter().copied().map(TaskId).collect()
    }

    #[test]
    fn executor_ranges_are_balanced_and_contiguous() {
        assert_eq!(
            executor_ranges(&t(&[1, 2, 3, 4, 5]), 2),
            vec![(TaskId(1), TaskId(3)), (TaskId(4), TaskId(5))]
        );
        assert_eq!(executor_ranges(&t(&[7, 8]), 5).len(), 2);
        assert_eq!(executor_ranges(&t(&[7]), 1), vec![(TaskId(7), TaskId(7))]);
    }
}
