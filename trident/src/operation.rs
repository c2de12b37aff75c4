//! Operations on Trident streams (Storm's `Function`, `Filter`, `MapFunction`,
//! `CombinerAggregator`, ...) and the built-in ones.
//!
//! Every operation gets its input fields as a [`TridentTuple`]. Each task of a stream's
//! bolt makes its own instance by cloning the one given to the stream (a `Clone` derive
//! is enough; put connections and other non-clonable things in `prepare`).
//!
//! An operation that returns an error fails its batch: the batch is replayed with the
//! same txid, and the error is reported with the operation's name.

use std::cmp::Ordering;

use squall_api::{values, BoxError, Config, TopologyContext, Value, Values};

use crate::state::{Key, MapState, StateError};
use crate::tuple::{TridentCollector, TridentTuple};

/// Adds fields to each tuple (Storm's `Function`): for every values emitted, the output
/// tuple is the input tuple plus those values; emitting nothing drops the tuple.
///
/// ```
/// use squall_api::{values, BoxError};
/// use squall_trident::{Function, TridentCollector, TridentTuple};
/// #[derive(Clone)]
/// struct Split;
/// impl Function for Split {
///     fn execute(&mut self, t: &TridentTuple<'_>, out: &mut TridentCollector) -> Result<(), BoxError> {
///         for word in t.get_string(0)?.split_whitespace() {
///             out.emit(values![word]);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Function: Send + 'static {
    /// Called once per task before any tuple.
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// Processes one tuple.
    fn execute(
        &mut self,
        input: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError>;
}

impl<F> Function for F
where
    F: FnMut(&TridentTuple<'_>, &mut TridentCollector) -> Result<(), BoxError> + Send + 'static,
{
    fn execute(
        &mut self,
        input: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        self(input, out)
    }
}

/// Keeps or drops tuples (Storm's `Filter`).
pub trait Filter: Send + 'static {
    /// Called once per task before any tuple.
    fn prepare(&mut self, _conf: &Config, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// Whether to keep the tuple.
    fn is_keep(&mut self, input: &TridentTuple<'_>) -> bool;
}

impl<F> Filter for F
where
    F: FnMut(&TridentTuple<'_>) -> bool + Send + 'static,
{
    fn is_keep(&mut self, input: &TridentTuple<'_>) -> bool {
        self(input)
    }
}

/// Replaces each tuple by one new tuple (Storm's `MapFunction`).
pub trait MapFunction: Send + 'static {
    /// The new tuple's values (the stream's new output fields, in order).
    fn execute(&mut self, input: &TridentTuple<'_>) -> Result<Values, BoxError>;
}

impl<F> MapFunction for F
where
    F: FnMut(&TridentTuple<'_>) -> Result<Values, BoxError> + Send + 'static,
{
    fn execute(&mut self, input: &TridentTuple<'_>) -> Result<Values, BoxError> {
        self(input)
    }
}

/// Replaces each tuple by zero or more new tuples (Storm's `FlatMapFunction`).
pub trait FlatMapFunction: Send + 'static {
    /// The new tuples.
    fn execute(&mut self, input: &TridentTuple<'_>) -> Result<Vec<Values>, BoxError>;
}

impl<F> FlatMapFunction for F
where
    F: FnMut(&TridentTuple<'_>) -> Result<Vec<Values>, BoxError> + Send + 'static,
{
    fn execute(&mut self, input: &TridentTuple<'_>) -> Result<Vec<Values>, BoxError> {
        self(input)
    }
}

/// Looks at each tuple without changing the stream (Storm's `Consumer` for `peek`).
pub trait Consumer: Send + 'static {
    /// Sees one tuple.
    fn accept(&mut self, input: &TridentTuple<'_>);
}

impl<F> Consumer for F
where
    F: FnMut(&TridentTuple<'_>) + Send + 'static,
{
    fn accept(&mut self, input: &TridentTuple<'_>) {
        self(input)
    }
}

/// An aggregation that can be computed in parts and combined (Storm's
/// `CombinerAggregator`). Trident combines within each task before tuples cross the
/// network, so these are the cheapest aggregations.
pub trait CombinerAggregator: Send + Sync + 'static {
    /// The value of one tuple.
    fn init(&self, input: &TridentTuple<'_>) -> Result<Value, BoxError>;
    /// Two partial values combined.
    fn combine(&self, a: Value, b: Value) -> Value;
    /// The value of no tuples.
    fn zero(&self) -> Value;
}

/// An aggregation that folds tuples one by one into a value (Storm's
/// `ReducerAggregator`).
pub trait ReducerAggregator: Send + Sync + 'static {
    /// The starting value.
    fn init(&self) -> Value;
    /// `acc` with one more tuple.
    fn reduce(&self, acc: Value, input: &TridentTuple<'_>) -> Result<Value, BoxError>;
}

/// A general aggregation over a batch (or one group of it) that emits any number of
/// tuples at the end (Storm's `Aggregator`).
pub trait Aggregator: Send + 'static {
    /// Per-batch (per-group) state.
    type State: Send + 'static;
    /// A new state at the start of a batch (or group).
    fn init(&mut self, txid: u64) -> Self::State;
    /// One more tuple.
    fn aggregate(
        &mut self,
        state: &mut Self::State,
        input: &TridentTuple<'_>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError>;
    /// The batch (group) is complete.
    fn complete(&mut self, state: Self::State, out: &mut TridentCollector) -> Result<(), BoxError>;
}

/// Reads a state for a batch of tuples, then emits per tuple (Storm's `QueryFunction`).
pub trait QueryFunction: Send + 'static {
    /// The results for `keys` (one per tuple of the batch, the query's input fields).
    fn batch_retrieve(
        &mut self,
        state: &mut dyn MapState,
        keys: &[Key],
    ) -> Result<Vec<Value>, StateError>;
    /// Emits for one tuple and its result; what is emitted is appended to the tuple.
    fn execute(
        &mut self,
        input: &TridentTuple<'_>,
        result: Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError>;
}

/// How an aggregation computes (made by [`Aggregation::kind`]; opaque).
pub struct AggregationKind(pub(crate) AggKind);

pub(crate) enum AggKind {
    Combiner(std::sync::Arc<dyn CombinerAggregator>),
    Reducer(std::sync::Arc<dyn ReducerAggregator>),
    General(crate::plan::AggFactory),
}

/// Anything `aggregate` and `persistent_aggregate` accept: the built-ins ([`Count`],
/// [`Sum`], [`Min`], [`Max`], [`First`]) and your own aggregators wrapped in
/// [`Combiner`], [`Reducer`] or [`Custom`].
pub trait Aggregation {
    /// What it is.
    fn kind(self) -> AggregationKind;
}

/// Wraps a [`CombinerAggregator`] of yours for `aggregate` / `persistent_aggregate`.
pub struct Combiner<A>(pub A);
/// Wraps a [`ReducerAggregator`] of yours for `aggregate` / `persistent_aggregate`.
pub struct Reducer<A>(pub A);
/// Wraps an [`Aggregator`] of yours (with `Clone`: each task makes its own) for
/// `aggregate` and `partition_aggregate`.
pub struct Custom<A>(pub A);

impl<A: CombinerAggregator> Aggregation for Combiner<A> {
    fn kind(self) -> AggregationKind {
        AggregationKind(AggKind::Combiner(std::sync::Arc::new(self.0)))
    }
}

impl<A: ReducerAggregator> Aggregation for Reducer<A> {
    fn kind(self) -> AggregationKind {
        AggregationKind(AggKind::Reducer(std::sync::Arc::new(self.0)))
    }
}

impl<A: Aggregator + Clone> Aggregation for Custom<A> {
    fn kind(self) -> AggregationKind {
        AggregationKind(AggKind::General(crate::plan::agg_factory(self.0)))
    }
}

macro_rules! builtin_combiner {
    ($($t:ident),*) => {$(
        impl Aggregation for $t {
            fn kind(self) -> AggregationKind {
                AggregationKind(AggKind::Combiner(std::sync::Arc::new(self)))
            }
        }
    )*};
}
builtin_combiner!(Count, Sum, Min, Max);

/// Counts tuples (Storm's `Count`); 0 for none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl CombinerAggregator for Count {
    fn init(&self, _input: &TridentTuple<'_>) -> Result<Value, BoxError> {
        Ok(Value::Int(1))
    }
    fn combine(&self, a: Value, b: Value) -> Value {
        add(a, b)
    }
    fn zero(&self) -> Value {
        Value::Int(0)
    }
}

/// Sums the first input field (Storm's `Sum`): integers stay integers, a float makes
/// the sum a float; null counts as nothing; 0 for none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum;

impl CombinerAggregator for Sum {
    fn init(&self, input: &TridentTuple<'_>) -> Result<Value, BoxError> {
        match input.get(0) {
            Value::Null => Ok(Value::Int(0)),
            v @ (Value::Int(_) | Value::Float(_)) => Ok(v.clone()),
            v => Err(format!(
                "Sum: field '{}' is a {}, not a number",
                input.fields().get(0).unwrap_or("?"),
                v.type_name()
            )
            .into()),
        }
    }
    fn combine(&self, a: Value, b: Value) -> Value {
        add(a, b)
    }
    fn zero(&self) -> Value {
        Value::Int(0)
    }
}

fn add(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(y)),
        (Value::Null, v) | (v, Value::Null) => v,
        (x, y) => Value::Float(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
    }
}

/// The smallest value of the first input field (nulls ignored; null for none).
#[derive(Clone, Copy, Debug, Default)]
pub struct Min;

/// The largest value of the first input field (nulls ignored; null for none).
#[derive(Clone, Copy, Debug, Default)]
pub struct Max;

/// Orders values: numbers by value, strings lexically, other types by type name.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (x, y) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => x.type_name().cmp(y.type_name()),
        },
    }
}

fn pick(a: Value, b: Value, keep: Ordering) -> Value {
    match (a, b) {
        (Value::Null, v) | (v, Value::Null) => v,
        (a, b) => {
            if compare_values(&b, &a) == keep {
                b
            } else {
                a
            }
        }
    }
}

impl CombinerAggregator for Min {
    fn init(&self, input: &TridentTuple<'_>) -> Result<Value, BoxError> {
        Ok(input.get(0).clone())
    }
    fn combine(&self, a: Value, b: Value) -> Value {
        pick(a, b, Ordering::Less)
    }
    fn zero(&self) -> Value {
        Value::Null
    }
}

impl CombinerAggregator for Max {
    fn init(&self, input: &TridentTuple<'_>) -> Result<Value, BoxError> {
        Ok(input.get(0).clone())
    }
    fn combine(&self, a: Value, b: Value) -> Value {
        pick(a, b, Ordering::Greater)
    }
    fn zero(&self) -> Value {
        Value::Null
    }
}

/// Emits the first tuple of the batch (or group) and nothing for an empty one (Storm's
/// `FirstN` with n = 1). Its output fields are the input fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct First;

impl Aggregator for First {
    type State = Option<Values>;
    fn init(&mut self, _txid: u64) -> Option<Values> {
        None
    }
    fn aggregate(
        &mut self,
        state: &mut Option<Values>,
        input: &TridentTuple<'_>,
        _out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        if state.is_none() {
            *state = Some(input.to_values());
        }
        Ok(())
    }
    fn complete(
        &mut self,
        state: Option<Values>,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        if let Some(v) = state {
            out.emit(v);
        }
        Ok(())
    }
}

impl Aggregation for First {
    fn kind(self) -> AggregationKind {
        AggregationKind(AggKind::General(crate::plan::agg_factory(self)))
    }
}

/// Drops tuples whose input fields hold a null (Storm's `FilterNull`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterNull;

impl Filter for FilterNull {
    fn is_keep(&mut self, input: &TridentTuple<'_>) -> bool {
        input.values().all(|v| !v.is_null())
    }
}

/// Looks keys up in a map state (Storm's `MapGet`): emits the value, or null when the
/// key is absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapGet;

impl QueryFunction for MapGet {
    fn batch_retrieve(
        &mut self,
        state: &mut dyn MapState,
        keys: &[Key],
    ) -> Result<Vec<Value>, StateError> {
        Ok(state
            .multi_get(keys)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }
    fn execute(
        &mut self,
        _input: &TridentTuple<'_>,
        result: Value,
        out: &mut TridentCollector,
    ) -> Result<(), BoxError> {
        out.emit(values![result]);
        Ok(())
    }
}
