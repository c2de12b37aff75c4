//! What a task knows about itself and its topology (Storm's `TopologyContext`).

use std::sync::Arc;

use crate::fields::Fields;
use crate::grouping::Grouping;
use crate::ids::{ComponentId, GlobalStreamId, TaskId};
use crate::topology::{TaskLayout, TopologySpec};

/// A task's view of the topology, handed to `open` / `prepare`.
///
/// Storm's `registerGauge` has no counterpart here: a task sets its gauges with
/// `set_gauge` on its collector ([`crate::SpoutOutputCollector::set_gauge`],
/// [`crate::OutputCollector::set_gauge`]).
#[derive(Clone, Debug)]
pub struct TopologyContext {
    topology_id: Arc<str>,
    spec: Arc<TopologySpec>,
    layout: Arc<TaskLayout>,
    task: TaskId,
    component: ComponentId,
    worker_tasks: Arc<[TaskId]>,
    worker_port: Option<u16>,
}

impl TopologyContext {
    /// A context for `task` (built by the runtime; handy in bolt unit tests).
    pub fn new(
        topology_id: Arc<str>,
        spec: Arc<TopologySpec>,
        layout: Arc<TaskLayout>,
        task: TaskId,
        worker_tasks: Arc<[TaskId]>,
        worker_port: Option<u16>,
    ) -> Self {
        let component = layout
            .task_component(task)
            .cloned()
            .unwrap_or_else(|| ComponentId::new("__system"));
        TopologyContext {
            topology_id,
            spec,
            layout,
            task,
            component,
            worker_tasks,
            worker_port,
        }
    }

    /// The running topology's id.
    pub fn topology_id(&self) -> &str {
        &self.topology_id
    }

    /// This task's id.
    pub fn this_task_id(&self) -> TaskId {
        self.task
    }

    /// This task's component.
    pub fn this_component_id(&self) -> &ComponentId {
        &self.component
    }

    /// This task's position among its component's tasks (0-based).
    pub fn this_task_index(&self) -> usize {
        self.component_tasks(self.component.as_str())
            .iter()
            .position(|&t| t == self.task)
            .unwrap_or(0)
    }

    /// The tasks of `component`, ascending.
    pub fn component_tasks(&self, component: &str) -> &[TaskId] {
        self.layout.component_tasks(component)
    }

    /// The component of `task`.
    pub fn component_id(&self, task: TaskId) -> Option<&ComponentId> {
        self.layout.task_component(task)
    }

    /// The fields this component declared for `stream`.
    pub fn this_output_fields(&self, stream: &str) -> Option<&Fields> {
        self.component_output_fields(self.component.as_str(), stream)
    }

    /// The fields `component` declared for `stream`.
    pub fn component_output_fields(&self, component: &str, stream: &str) -> Option<&Fields> {
        self.layout.stream(component, stream).map(|s| &s.fields)
    }

    /// The streams this component subscribes to, with their groupings.
    pub fn this_sources(&self) -> Vec<(GlobalStreamId, Grouping)> {
        self.spec
            .components
            .get(&self.component)
            .map(|c| {
                c.inputs
                    .iter()
                    .map(|s| (s.source.clone(), s.grouping.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tasks that run in this worker process.
    pub fn this_worker_tasks(&self) -> &[TaskId] {
        &self.worker_tasks
    }

    /// The port of this worker (`None` in local mode).
    pub fn this_worker_port(&self) -> Option<u16> {
        self.worker_port
    }

    /// The topology as data.
    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The topology's task layout.
    pub fn layout(&self) -> &TaskLayout {
        &self.layout
    }
}
