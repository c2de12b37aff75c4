//! Stateful bolts with checkpointing (Storm's `IStatefulBolt`, `KeyValueState` and
//! `CheckpointSpout`), made exactly-once with aligned barriers.
//!
//! A bolt added with [`TopologyBuilder::set_stateful_bolt`](crate::TopologyBuilder::set_stateful_bolt)
//! keeps its state in a [`KeyValueState`]: a typed map held in memory whose committed
//! copy lives in the state provider (`topology.state.provider`: in-memory by default, or
//! Redis with squall-api's `redis` feature). Such a topology gets a checkpoint spout,
//! `$checkpointspout`, that sends `PREPARE n` then `COMMIT n` through the topology every
//! `topology.state.checkpoint.interval.ms` (1000), and `ROLLBACK` / `INITSTATE` after a
//! failure or a restart, on the stream `$checkpoint` (fields `txid`, `action`,
//! `attempt`), as Storm does.
//!
//! Unlike Storm's, Squall's checkpoints are exactly once: the barriers go through the
//! spouts and every bolt aligns them (Flink's aligned barriers), spouts hold their
//! users' acks until the checkpoint holding the tuple commits, and a rollback replays
//! everything not committed. Every tuple tree that a reliable spout emits (message id,
//! anchored emits) affects the committed state exactly once. ARCHITECTURE.md has the
//! protocol and its proof.
//!
//! ```
//! use squall_api::state::{KeyValueState, StatefulBolt};
//! use squall_api::{OutputCollector, OutputFieldsDeclarer, Tuple};
//!
//! #[derive(Clone, Default)]
//! struct WordCount;
//! impl StatefulBolt for WordCount {
//!     type Key = String;
//!     type Value = u64;
//!     fn execute(&mut self, input: Tuple, state: &mut KeyValueState<String, u64>,
//!                out: &mut OutputCollector<'_>) {
//!         let Ok(word) = input.get_string(0) else { return out.fail(&input) };
//!         let n = state.get(&word.to_owned()).copied().unwrap_or(0) + 1;
//!         state.put(word.to_owned(), n);
//!         out.emit_anchored(&input, squall_api::values![word, n as i64]);
//!         out.ack(&input);
//!     }
//!     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
//!         d.declare(["word", "count"]);
//!     }
//! }
//! ```

mod bolt;
mod kv;
mod provider;
#[cfg(feature = "redis")]
mod redis;
mod spout;
mod windowed;

use std::collections::{BTreeMap, BTreeSet};

pub use bolt::StatefulBolt;
pub use kv::KeyValueState;
pub use provider::{RedisConfig, StateProvider};
pub use spout::CheckpointSpout;
pub use windowed::{StatefulWindowed, StatefulWindowedBolt, WithState};

use crate::component::StreamDecl;
use crate::config::Config;
use crate::grouping::Grouping;
use crate::ids::{ComponentId, GlobalStreamId, StreamId};
use crate::topology::{ComponentKind, ComponentSpec, Factory, Subscription, TopologyError};
use crate::topology::{SpoutFactory, TopologySpec};
use crate::value::Value;

/// The checkpoint spout's component id (Storm's `CheckpointSpout.CHECKPOINT_COMPONENT_ID`).
pub const CHECKPOINT_COMPONENT: &str = "$checkpointspout";
/// The stream checkpoint barriers travel on (Storm's `CHECKPOINT_STREAM_ID`).
pub const CHECKPOINT_STREAM: &str = "$checkpoint";
/// The fields of the checkpoint stream: Storm's `txid` and `action`, plus `attempt`,
/// which is unique per barrier the checkpoint spout sends and grows over time (a
/// rollback's generation).
pub const CHECKPOINT_FIELDS: [&str; 3] = ["txid", "action", "attempt"];

/// Configuration keys of stateful topologies (Storm's names where Storm has them).
pub mod keys {
    /// The state provider: `memory` (default) or `redis`, or Storm's class names
    /// `org.apache.storm.state.InMemoryKeyValueStateProvider` and
    /// `org.apache.storm.redis.state.RedisKeyValueStateProvider`.
    pub const TOPOLOGY_STATE_PROVIDER: &str = "topology.state.provider";
    /// The provider's configuration, as JSON text or a map. Redis: Storm's
    /// `{"jedisPoolConfig":{"host":…,"port":…,"database":…,"password":…,"timeout":…}}`,
    /// or `{"url":"redis://host:port/db"}`.
    pub const TOPOLOGY_STATE_PROVIDER_CONFIG: &str = "topology.state.provider.config";
    /// Milliseconds between two checkpoints (default 1000).
    pub const TOPOLOGY_STATE_CHECKPOINT_INTERVAL: &str = "topology.state.checkpoint.interval.ms";
    /// Whether the spouts of a stateful topology record the message ids of every
    /// committed tuple in the state provider, so that a spout that emits an id again
    /// after a restart (a spout without durable progress of its own) has it acked
    /// instead of applied twice (default false; needs message ids that are the same
    /// across restarts; the ids are kept for the life of the state).
    pub const TOPOLOGY_STATE_SPOUT_DEDUP: &str = "topology.state.spout.dedup";
}

/// The checkpoint interval unless configured: Storm's default.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 1000;

/// Why a state operation failed: the message names the provider and what was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl StateError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        StateError(msg.into())
    }
}

/// A checkpoint action (Storm's `CheckPointState.Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Prepare,
    Commit,
    Rollback,
    InitState,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Prepare => "PREPARE",
            Action::Commit => "COMMIT",
            Action::Rollback => "ROLLBACK",
            Action::InitState => "INITSTATE",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "PREPARE" => Action::Prepare,
            "COMMIT" => Action::Commit,
            "ROLLBACK" => Action::Rollback,
            "INITSTATE" => Action::InitState,
            _ => return None,
        })
    }
}

/// One barrier as read from a `$checkpoint` tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Barrier {
    pub txid: u64,
    pub action: Action,
    pub attempt: i64,
}

impl Barrier {
    pub(crate) fn read(t: &crate::Tuple) -> Option<Barrier> {
        let v = t.values();
        match (v.first()?, v.get(1)?, v.get(2)?) {
            (Value::Int(txid), Value::Str(action), Value::Int(attempt)) => Some(Barrier {
                txid: u64::try_from(*txid).ok()?,
                action: Action::parse(action)?,
                attempt: *attempt,
            }),
            _ => None,
        }
    }

    pub(crate) fn values(&self) -> crate::Values {
        crate::values![self.txid as i64, self.action.name(), self.attempt]
    }
}

/// The checkpoint interval of `conf`.
pub(crate) fn checkpoint_interval_ms(conf: &Config) -> Result<u64, StateError> {
    match conf.get(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL) {
        None | Some(Value::Null) => Ok(DEFAULT_CHECKPOINT_INTERVAL_MS),
        Some(Value::Int(n)) if *n > 0 => Ok(*n as u64),
        Some(Value::Str(s)) if s.parse::<u64>().is_ok_and(|n| n > 0) => {
            Ok(s.parse().expect("checked"))
        }
        Some(other) => Err(StateError::new(format!(
            "config key '{}' must be a positive number of milliseconds, found {other:?}",
            keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL
        ))),
    }
}

/// Whether spouts record committed message ids (`topology.state.spout.dedup`).
pub(crate) fn spout_dedup(conf: &Config) -> Result<bool, StateError> {
    match conf.get(keys::TOPOLOGY_STATE_SPOUT_DEDUP) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Str(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(StateError::new(format!(
            "config key '{}' must be true or false, found {other:?}",
            keys::TOPOLOGY_STATE_SPOUT_DEDUP
        ))),
    }
}

/// Whether a topology has checkpointing (any stateful bolt).
pub fn is_stateful(spec: &TopologySpec) -> bool {
    spec.components.contains_key(CHECKPOINT_COMPONENT)
}

/// A spout may only subscribe to checkpoint barriers (added by the builder).
pub(crate) fn spout_inputs_allowed(inputs: &[Subscription]) -> bool {
    inputs
        .iter()
        .all(|s| s.source.stream == CHECKPOINT_STREAM && s.grouping == Grouping::All)
}

/// Checks the state configuration of a stateful topology: the provider is a known one
/// (and compiled in), its configuration parses, the checkpoint interval is a number,
/// and acking is on (checkpoints are tuple trees).
pub(crate) fn validate_conf(spec: &TopologySpec, conf: &Config) -> Result<(), TopologyError> {
    if !is_stateful(spec) {
        return Ok(());
    }
    let invalid = |key: &str, e: StateError| TopologyError::InvalidConfig {
        key: key.to_owned(),
        error: e.0,
    };
    for (id, c) in &spec.components {
        let mut merged = conf.clone();
        merged.merge(&c.conf);
        StateProvider::from_conf(&merged).map_err(|e| {
            let key = if merged.get(keys::TOPOLOGY_STATE_PROVIDER_CONFIG).is_some()
                && e.0.contains(keys::TOPOLOGY_STATE_PROVIDER_CONFIG)
            {
                keys::TOPOLOGY_STATE_PROVIDER_CONFIG
            } else {
                keys::TOPOLOGY_STATE_PROVIDER
            };
            invalid(key, e)
        })?;
        checkpoint_interval_ms(&merged)
            .map_err(|e| invalid(keys::TOPOLOGY_STATE_CHECKPOINT_INTERVAL, e))?;
        spout_dedup(&merged).map_err(|e| invalid(keys::TOPOLOGY_STATE_SPOUT_DEDUP, e))?;
        if merged.num_ackers().is_ok_and(|n| n == 0) {
            return Err(TopologyError::InvalidComponentConfig {
                component: id.to_string(),
                key: crate::config::keys::TOPOLOGY_ACKER_EXECUTORS.to_owned(),
                error: format!(
                    "the topology has stateful bolts, whose checkpoints are tuple trees: \
                     '{}' must not be 0",
                    crate::config::keys::TOPOLOGY_ACKER_EXECUTORS
                ),
            });
        }
    }
    Ok(())
}

/// Adds checkpointing to a validated topology with stateful bolts: the checkpoint
/// spout, a `$checkpoint` output stream on every component, every spout subscribed to
/// the checkpoint spout's barriers and every bolt to those of each of its input
/// components (all grouping), and the wrappers that forward and align barriers around
/// every spout and every bolt that is not stateful (stateful bolts are wrapped when
/// they are added).
pub(crate) fn wire(
    spec: &mut TopologySpec,
    factories: &mut BTreeMap<ComponentId, Factory>,
    stateful: &BTreeSet<ComponentId>,
) -> Result<(), TopologyError> {
    if spec.components.contains_key(CHECKPOINT_COMPONENT) {
        return Err(TopologyError::DuplicateComponent(
            CHECKPOINT_COMPONENT.to_owned(),
        ));
    }
    let decl = StreamDecl {
        fields: CHECKPOINT_FIELDS.into(),
        direct: false,
    };
    let barriers_of = |component: &ComponentId| Subscription {
        source: GlobalStreamId::new(component.clone(), CHECKPOINT_STREAM),
        grouping: Grouping::All,
    };
    let coordinator = ComponentId::new(CHECKPOINT_COMPONENT);
    for (id, c) in spec.components.iter_mut() {
        if c.outputs.contains_key(CHECKPOINT_STREAM) {
            return Err(TopologyError::DuplicateStream {
                component: id.to_string(),
                stream: CHECKPOINT_STREAM.to_owned(),
            });
        }
        c.outputs
            .insert(StreamId::new(CHECKPOINT_STREAM), decl.clone());
        match c.kind {
            ComponentKind::Spout => c.inputs.push(barriers_of(&coordinator)),
            ComponentKind::Bolt => {
                let sources: BTreeSet<ComponentId> = c
                    .inputs
                    .iter()
                    .map(|s| s.source.component.clone())
                    .collect();
                c.inputs.extend(sources.iter().map(barriers_of));
            }
        }
    }
    for (id, factory) in std::mem::take(factories) {
        let wrapped = match factory {
            Factory::Spout(f) => {
                let f: SpoutFactory =
                    Box::new(move || Box::new(spout::CheckpointedSpout::new(f())));
                Factory::Spout(f)
            }
            Factory::Bolt(f) if !stateful.contains(&id) => {
                Factory::Bolt(Box::new(move || Box::new(bolt::forwarding(f()))))
            }
            other => other,
        };
        factories.insert(id, wrapped);
    }
    let mut outputs = BTreeMap::new();
    outputs.insert(StreamId::new(CHECKPOINT_STREAM), decl);
    spec.components.insert(
        coordinator.clone(),
        ComponentSpec {
            kind: ComponentKind::Spout,
            parallelism: 1,
            num_tasks: 1,
            inputs: Vec::new(),
            outputs,
            conf: Config::new(),
        },
    );
    factories.insert(
        coordinator,
        Factory::Spout(Box::new(|| Box::new(CheckpointSpout::new()))),
    );
    Ok(())
}

/// The namespace of a task's state, `<topology name>:<component>-<task>` (Storm's
/// namespaces are `<component>-<task>`; the name keeps two topologies on one Redis
/// apart). A topology submitted again under the same name carries on with its state.
pub fn task_namespace(conf: &Config, ctx: &crate::TopologyContext) -> String {
    let prefix = match conf.get(crate::config::keys::TOPOLOGY_NAME) {
        Some(Value::Str(name)) => name.to_string(),
        _ => ctx.topology_id().to_owned(),
    };
    namespace(
        &prefix,
        ctx.this_component_id().as_str(),
        ctx.this_task_id(),
    )
}

/// The namespace of task `task` of `component` in topology `name`:
/// `<name>:<component>-<task>`.
pub fn namespace(name: &str, component: &str, task: crate::TaskId) -> String {
    format!("{name}:{component}-{task}")
}
