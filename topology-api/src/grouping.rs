//! Stream groupings: how a stream's tuples are split among a bolt's tasks.

use serde::{Deserialize, Serialize};

use crate::fields::Fields;
use crate::ids::{GlobalStreamId, TaskId};
use crate::value::Value;

/// How the tuples of one stream are divided among the tasks of a subscribing bolt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// Evenly, in round-robin over a shuffled task order.
    Shuffle,
    /// By hash of the named fields: equal values always reach the same task.
    Fields(Fields),
    /// Every task gets a copy.
    All,
    /// Every tuple goes to the task with the lowest id.
    Global,
    /// No preference (behaves as shuffle).
    None,
    /// The emitter picks the task (`emit_direct`); the stream must be declared direct.
    Direct,
    /// Shuffle among the tasks in the emitter's own worker when there are any.
    LocalOrShuffle,
    /// Like fields grouping, but each key may go to either of two tasks, whichever has
    /// received fewer tuples from this emitter (load balancing for skewed keys).
    PartialKey(Fields),
    /// A user grouping, registered on the bolt under this name.
    Custom(String),
}

impl Grouping {
    /// A short name for messages and the UI (`shuffle`, `fields`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Grouping::Shuffle => "shuffle",
            Grouping::Fields(_) => "fields",
            Grouping::All => "all",
            Grouping::Global => "global",
            Grouping::None => "none",
            Grouping::Direct => "direct",
            Grouping::LocalOrShuffle => "local_or_shuffle",
            Grouping::PartialKey(_) => "partial_key",
            Grouping::Custom(_) => "custom",
        }
    }

    /// The grouping fields, for fields and partial-key groupings.
    pub fn fields(&self) -> Option<&Fields> {
        match self {
            Grouping::Fields(f) | Grouping::PartialKey(f) => Some(f),
            _ => None,
        }
    }
}

/// A grouping written by the topology author (Storm's `CustomStreamGrouping`). Each
/// emitting task gets its own clone, prepared once.
pub trait CustomStreamGrouping: Send + 'static {
    /// Called once per emitting task with the tasks of the subscribing bolt.
    fn prepare(&mut self, stream: &GlobalStreamId, target_tasks: &[TaskId]);

    /// Pushes onto `out` the tasks that receive a tuple with these values. Tasks not in
    /// `target_tasks` are ignored.
    fn choose_tasks(&mut self, source_task: TaskId, values: &[Value], out: &mut Vec<TaskId>);
}
