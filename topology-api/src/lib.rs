//! # squall-api: what a topology author uses
//!
//! Squall runs Apache Storm's model of realtime computation. A *topology* is a graph of
//! [`Spout`]s (sources of tuples) and [`Bolt`]s (processors), joined by *streams* that
//! are split among a bolt's tasks by a [`Grouping`]. This crate has everything needed to
//! describe one; the `squall-worker` crate runs it, in one process ([`LocalCluster`-style
//! local mode]) or on a cluster.
//!
//! | Storm | Squall |
//! |---|---|
//! | `ISpout`, `IRichBolt`, `IBasicBolt` | [`Spout`], [`Bolt`], [`BasicBolt`] |
//! | `Tuple`, `Values`, `Fields` | [`Tuple`], [`Values`] / [`values!`], [`Fields`] |
//! | `TopologyBuilder`, `StormTopology` | [`TopologyBuilder`], [`Topology`] / [`TopologySpec`] |
//! | `Config`, `TopologyContext` | [`Config`], [`TopologyContext`] |
//! | `OutputCollector`, `SpoutOutputCollector` | [`OutputCollector`], [`SpoutOutputCollector`] |
//! | `CustomStreamGrouping` | [`CustomStreamGrouping`] |
//! | `TopologyContext.registerGauge` (metrics v2) | `set_gauge` on the collectors ([`validate_gauge_name`]) |
//! | `IWindowedBolt`, `BaseWindowedBolt.withWindow`, `TupleWindow` | [`windowing::WindowedBolt`], [`windowing::Windowed`], [`windowing::TupleWindow`] |
//! | `IStatefulBolt`, `KeyValueState`, `CheckpointSpout` | [`state::StatefulBolt`], [`state::KeyValueState`], `TopologyBuilder::set_stateful_bolt` ([`state`]) |
//!
//! Components are plain structs that implement a trait. The builder makes one instance
//! per task, by cloning the one given to `set_spout` / `set_bolt`, or by calling the
//! closure given to `set_spout_with` / `set_bolt_with` (no `Clone` needed). A component
//! holds its configuration and opens connections in `open` / `prepare`, which may fail
//! with an error that names the component and task, as in Storm.
//!
//! [`LocalCluster`-style local mode]: https://storm.apache.org/releases/current/Local-mode.html
#![deny(missing_docs)]

mod component;
pub mod config;
mod context;
mod fields;
mod gauge;
mod grouping;
mod ids;
pub mod state;
mod topology;
mod tuple;
mod value;
pub mod windowing;

pub use component::{
    BasicBolt, BasicOutputCollector, Bolt, BoxError, Emit, Emitter, OutputCollector,
    OutputFieldsDeclarer, Spout, SpoutOutputCollector, StreamDecl,
};
pub use config::{Config, ConfigError};
pub use context::TopologyContext;
pub use fields::Fields;
pub use gauge::{validate_gauge_name, GaugeNameError, GAUGE_NAME_MAX_LEN, MAX_GAUGES_PER_TASK};
pub use grouping::{CustomStreamGrouping, Grouping};
pub use ids::{
    ComponentId, GlobalStreamId, StreamId, TaskId, ACKER_COMPONENT, DEFAULT_STREAM,
    SYSTEM_COMPONENT, TICK_STREAM,
};
pub use topology::{
    executor_ranges, ComponentDeclarer, ComponentKind, ComponentSpec, ComponentTasks, Subscription,
    TaskLayout, Topology, TopologyBuilder, TopologyError, TopologySpec,
};
pub use tuple::{Anchors, StreamSchema, Tuple, TupleError};
pub use value::{Value, Values};
