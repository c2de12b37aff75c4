//! Stateful windowed bolts (Storm's `IStatefulWindowedBolt` with `withPersistence()`):
//! the user's [`KeyValueState`] and the windows themselves are checkpointed with the
//! same barriers.

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::bolt::{CheckpointBolt, Inner};
use super::provider::Store;
use super::{task_namespace, KeyValueState, StateError, StateProvider};
use crate::component::{BoxError, OutputCollector, OutputFieldsDeclarer};
use crate::config::Config;
use crate::context::TopologyContext;
use crate::ids::ComponentId;
use crate::topology::{BoltFactory, ComponentDeclarer, TopologyBuilder};
use crate::tuple::Tuple;
use crate::windowing::persist::Stored;
use crate::windowing::{TupleWindow, Windowed, WindowedBolt};
use crate::Bolt;

/// A windowed bolt with a [`KeyValueState`], whose windows and state survive failures
/// (Storm's `IStatefulWindowedBolt` with `BaseStatefulWindowedBolt.withPersistence()`).
///
/// Wrap it with [`Windowed::stateful`], set the window as for any windowed bolt, and
/// add it with [`TopologyBuilder::set_stateful_windowed_bolt`]:
///
/// ```
/// use std::time::Duration;
/// use squall_api::state::{KeyValueState, StatefulWindowedBolt};
/// use squall_api::windowing::{TupleWindow, Windowed};
/// use squall_api::{values, OutputCollector, OutputFieldsDeclarer, TopologyBuilder};
/// # use squall_api::{Spout, SpoutOutputCollector};
/// # #[derive(Clone)] struct Events;
/// # impl Spout for Events {
/// #     fn next_tuple(&mut self, out: &mut SpoutOutputCollector<'_>) {}
/// #     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) { d.declare(["ts"]); }
/// # }
///
/// /// Counts each window, and every event ever seen.
/// #[derive(Clone, Default)]
/// struct Tally;
/// impl StatefulWindowedBolt for Tally {
///     type Key = String;
///     type Value = u64;
///     fn execute(&mut self, window: &TupleWindow<'_>, state: &mut KeyValueState<String, u64>,
///                out: &mut OutputCollector<'_>) {
///         let total = state.get(&"total".to_owned()).copied().unwrap_or(0);
///         state.put("total".to_owned(), total + window.get_new().len() as u64);
///         out.emit(values![window.end_timestamp(), window.get().len() as i64]);
///     }
///     fn declare_output_fields(&self, d: &mut OutputFieldsDeclarer) {
///         d.declare(["end", "count"]);
///     }
/// }
///
/// let mut builder = TopologyBuilder::new();
/// builder.set_spout("events", Events, 1);
/// builder.set_stateful_windowed_bolt("tally", Windowed::stateful(Tally)
///         .with_tumbling_window(Duration::from_secs(10))
///         .with_timestamp_field("ts"), 1)
///     .shuffle_grouping("events");
/// builder.create_topology().unwrap();
/// ```
///
/// At every checkpoint the task stores its state and its windows: the tuples still in a
/// window (or waiting for the watermark), where the next window fires and the
/// watermark. A rollback or a restart brings both back to the last commit and the
/// spouts replay what came after, so every tuple lands in exactly the windows it
/// belongs to, once, and the state holds each window's effect once. Windows that fired
/// after the last commit fire again after a rollback: a stateful bolt downstream keeps
/// one result per window (the committed one); a plain bolt may see a window twice, the
/// first time possibly without tuples that were still to be replayed.
///
/// Window output is anchored to the latest input tuple of the current checkpoint
/// epoch (not to the window's tuples, which the wrapper acks as soon as they are
/// stored), so a failure downstream fails the checkpoint and rolls back; with no input
/// since the last checkpoint, ticks fire no window until a tuple arrives. Windows give
/// exact results across failures in event time, when no tuple is late; processing-time
/// windows are restored but replayed tuples get the replay's arrival time.
pub trait StatefulWindowedBolt: Send + 'static {
    /// The state's key type.
    type Key: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + 'static;
    /// The state's value type.
    type Value: Serialize + DeserializeOwned + Send + 'static;

    /// Called once when the task starts, before the state is loaded.
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once with the task's committed state, before any window (Storm's
    /// `initState`).
    fn init_state(&mut self, _state: &mut KeyValueState<Self::Key, Self::Value>) {}

    /// Processes one window with the state.
    fn execute(
        &mut self,
        window: &TupleWindow<'_>,
        state: &mut KeyValueState<Self::Key, Self::Value>,
        out: &mut OutputCollector<'_>,
    );

    /// Called when the task shuts down cleanly.
    fn cleanup(&mut self) {}

    /// Declares the bolt's output streams.
    fn declare_output_fields(&self, _declarer: &mut OutputFieldsDeclarer) {}

    /// Component-specific configuration; the window settings are merged over it.
    fn component_configuration(&self) -> Config {
        Config::new()
    }
}

/// A [`StatefulWindowedBolt`] with its state, as the [`WindowedBolt`] inside
/// [`StatefulWindowed`]. Made by [`Windowed::stateful`].
pub struct WithState<B: StatefulWindowedBolt> {
    bolt: B,
    state: Option<KeyValueState<B::Key, B::Value>>,
}

impl<B: StatefulWindowedBolt + Clone> Clone for WithState<B> {
    /// A copy of the bolt without state (each task loads its own).
    fn clone(&self) -> Self {
        WithState {
            bolt: self.bolt.clone(),
            state: None,
        }
    }
}

impl<B: StatefulWindowedBolt> WithState<B> {
    /// The wrapped bolt.
    pub fn bolt(&self) -> &B {
        &self.bolt
    }
}

impl<B: StatefulWindowedBolt> WindowedBolt for WithState<B> {
    fn prepare(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.bolt.prepare(conf, ctx)?;
        let mut state = KeyValueState::open(conf, &task_namespace(conf, ctx))?;
        self.bolt.init_state(&mut state);
        self.state = Some(state);
        Ok(())
    }

    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut OutputCollector<'_>) {
        let state = self.state.as_mut().expect("the state is loaded in prepare");
        self.bolt.execute(window, state, out)
    }

    fn cleanup(&mut self) {
        self.bolt.cleanup()
    }

    fn declare_output_fields(&self, declarer: &mut OutputFieldsDeclarer) {
        self.bolt.declare_output_fields(declarer)
    }

    fn component_configuration(&self) -> Config {
        self.bolt.component_configuration()
    }

    fn needs_persistence(&self) -> bool {
        true
    }
}

/// A stateful windowed bolt with its window settings: what
/// [`TopologyBuilder::set_stateful_windowed_bolt`] takes. Build one with
/// [`Windowed::stateful`] and the `with_*` methods of [`Windowed`].
pub type StatefulWindowed<B> = Windowed<WithState<B>>;

impl<B: StatefulWindowedBolt> Windowed<WithState<B>> {
    /// Wraps a stateful windowed bolt; set its window with the `with_*window*` methods
    /// and add it with [`TopologyBuilder::set_stateful_windowed_bolt`]. Its windows
    /// always persist (Storm's `withPersistence()`): in Squall's exactly-once
    /// checkpoints a window's tuples are acked before their window closes, so the
    /// windows must be part of the checkpoint.
    pub fn stateful(bolt: B) -> Self {
        Windowed::new(WithState { bolt, state: None })
    }

    /// The task's state, once the task is running.
    pub fn state(&self) -> Option<&KeyValueState<B::Key, B::Value>> {
        self.bolt().state.as_ref()
    }
}

/// The windows and the state of one task, inside the barrier alignment.
pub(crate) struct WindowedState<B: StatefulWindowedBolt> {
    windowed: StatefulWindowed<B>,
    store: Option<Box<dyn Store>>,
    stored: Stored,
    ctx: Option<TopologyContext>,
    namespace: String,
}

impl<B: StatefulWindowedBolt> WindowedState<B> {
    fn new(mut windowed: StatefulWindowed<B>) -> Self {
        windowed.persistent = true;
        WindowedState {
            windowed,
            store: None,
            stored: Stored::default(),
            ctx: None,
            namespace: String::new(),
        }
    }

    fn state(&mut self) -> &mut KeyValueState<B::Key, B::Value> {
        self.windowed
            .bolt_mut()
            .state
            .as_mut()
            .expect("the state is loaded in prepare")
    }

    fn store(&mut self) -> &mut Box<dyn Store> {
        self.store.as_mut().expect("the store is opened in prepare")
    }

    fn reload_windows(&mut self) -> Result<(), StateError> {
        let entries = self.store().load()?;
        let ctx = self.ctx.as_ref().expect("set in prepare");
        self.stored = self
            .windowed
            .restore_windows(entries, ctx, &self.namespace)?;
        Ok(())
    }
}

impl<B: StatefulWindowedBolt> Inner for WindowedState<B> {
    fn setup(&mut self, conf: &Config, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.windowed.prepare(conf, ctx)?;
        self.namespace = format!("{}$window", task_namespace(conf, ctx));
        self.store = Some(StateProvider::from_conf(conf)?.open(&self.namespace)?);
        self.ctx = Some(ctx.clone());
        self.reload_windows()?;
        Ok(())
    }

    fn execute(&mut self, input: Tuple, out: &mut OutputCollector<'_>) {
        self.windowed.execute(input, out)
    }

    fn release(&mut self, out: &mut OutputCollector<'_>) {
        if let Some(live) = self.windowed.take_anchor() {
            out.ack(&live);
        }
    }

    fn prepare_state(&mut self, txid: u64) -> Result<(), StateError> {
        let (writes, stored) = self.windowed.window_writes(&self.stored)?;
        self.state().prepare_commit(txid)?;
        self.store().prepare(txid, &writes)?;
        self.stored = stored;
        Ok(())
    }

    fn commit_state(&mut self, txid: u64) -> Result<(), StateError> {
        self.state().commit(txid)?;
        self.store().commit(txid).map(|_| ())
    }

    fn rollback_state(&mut self) -> Result<(), StateError> {
        self.state().rollback()?;
        self.store().rollback()?;
        self.reload_windows()
    }

    fn cleanup(&mut self) {
        self.windowed.cleanup()
    }
}

impl TopologyBuilder {
    /// Adds a stateful windowed bolt (Storm's `setBolt` with an
    /// `IStatefulWindowedBolt` and `withPersistence()`): its state and its windows are
    /// checkpointed together, and the topology gets checkpointing (see
    /// [`crate::state`]). Each task gets its own clone of `bolt`.
    pub fn set_stateful_windowed_bolt<B: StatefulWindowedBolt + Clone>(
        &mut self,
        id: &str,
        bolt: StatefulWindowed<B>,
        parallelism: u32,
    ) -> ComponentDeclarer<'_> {
        let mut declarer = OutputFieldsDeclarer::default();
        bolt.declare_output_fields(&mut declarer);
        let shape = (declarer, bolt.component_configuration());
        let factory: BoltFactory =
            Box::new(move || Box::new(CheckpointBolt::new(WindowedState::new(bolt.clone()))));
        self.stateful.insert(ComponentId::new(id));
        self.add_bolt(id, shape, factory, parallelism)
    }
}
