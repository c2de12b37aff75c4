//! Tuples: the unit of data flowing through a topology.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::fields::Fields;
use crate::ids::{ComponentId, StreamId, TaskId, SYSTEM_COMPONENT, TICK_STREAM};
use crate::value::{Value, Values};

/// Where a tuple came from: the emitting component, its stream and that stream's fields.
/// The runtime shares one schema between all tuples of a stream that one executor sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamSchema {
    /// The emitting component.
    pub component: ComponentId,
    /// The stream.
    pub stream: StreamId,
    /// The stream's declared fields.
    pub fields: Fields,
    /// Whether the stream is a direct stream.
    pub direct: bool,
    /// The stream's index in its topology's stream table (see `Topology::streams`).
    pub index: u32,
}

impl StreamSchema {
    /// The schema of tick tuples.
    pub fn tick() -> Self {
        StreamSchema {
            component: SYSTEM_COMPONENT.into(),
            stream: TICK_STREAM.into(),
            fields: Fields::new(["rate_secs"]),
            direct: false,
            index: u32::MAX,
        }
    }
}

/// The tuple-tree membership of a tuple: for every spout tuple tree (root id) it belongs
/// to, the random edge id of this tuple in that tree. Empty for untracked tuples.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Anchors(SmallVec<[(u64, u64); 1]>);

impl Anchors {
    /// No anchors: an untracked tuple.
    pub fn none() -> Self {
        Anchors(SmallVec::new())
    }

    /// A tuple that is edge `edge` of tree `root`.
    pub fn single(root: u64, edge: u64) -> Self {
        let mut v = SmallVec::new();
        v.push((root, edge));
        Anchors(v)
    }

    /// Membership from `(root, edge)` pairs whose roots are distinct (not checked).
    pub fn from_distinct_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        Anchors(pairs.into_iter().collect())
    }

    /// Whether the tuple is tracked by no tree.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(root, edge)` pairs.
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// XORs `edge` into this tuple's edge for tree `root`, adding the root if new.
    pub fn xor_edge(&mut self, root: u64, edge: u64) {
        if let Some(p) = self.0.iter_mut().find(|(r, _)| *r == root) {
            p.1 ^= edge;
        } else {
            self.0.push((root, edge));
        }
    }
}

/// Why a typed getter of a [`Tuple`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    /// No value at that position.
    #[error("tuple from {component}:{stream} has {size} values, no index {index}")]
    IndexOutOfRange {
        /// Requested position.
        index: usize,
        /// Number of values.
        size: usize,
        /// Emitting component.
        component: String,
        /// Stream.
        stream: String,
    },
    /// The stream declares no such field.
    #[error("stream {component}:{stream} has no field '{field}' (its fields are {fields})")]
    UnknownField {
        /// Requested field.
        field: String,
        /// Emitting component.
        component: String,
        /// Stream.
        stream: String,
        /// The fields it has.
        fields: String,
    },
    /// The value has another type.
    #[error("value {position} of tuple from {component}:{stream} is {found}, not {expected}")]
    TypeMismatch {
        /// Index or field name.
        position: String,
        /// The type asked for.
        expected: &'static str,
        /// The type present.
        found: &'static str,
        /// Emitting component.
        component: String,
        /// Stream.
        stream: String,
    },
}

/// A tuple: a list of values on a stream, emitted by a task.
///
/// Values can be read by index or by field name, with typed getters that name the
/// offending field and types on a mismatch.
pub struct Tuple {
    values: Values,
    schema: Arc<StreamSchema>,
    source_task: TaskId,
    anchors: Anchors,
    ack_val: Cell<u64>,
    /// Non-zero for tuples the runtime sampled for process latency (see
    /// [`Tuple::set_sample_stamp`]). A `u32`, so the tuple stays as small as it was.
    sample_stamp: u32,
}

impl Tuple {
    /// A tuple with these values, as emitted by `source_task` on `schema`'s stream.
    /// Topologies rarely need this outside of unit tests of their bolts.
    pub fn new(schema: Arc<StreamSchema>, source_task: TaskId, values: Values) -> Self {
        Tuple {
            values,
            schema,
            source_task,
            anchors: Anchors::none(),
            ack_val: Cell::new(0),
            sample_stamp: 0,
        }
    }

    /// A tuple that belongs to the tuple trees in `anchors` (used by the runtime).
    pub fn with_anchors(mut self, anchors: Anchors) -> Self {
        self.anchors = anchors;
        self
    }

    /// A tick tuple, as the runtime sends every `topology.tick.tuple.freq.secs`.
    pub fn tick(schema: Arc<StreamSchema>, freq_secs: u64) -> Self {
        let mut values = Values::new();
        values.push(Value::Int(freq_secs as i64));
        Tuple::new(schema, TaskId::SYSTEM, values)
    }

    /// All values.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out of the tuple.
    pub fn into_values(self) -> Values {
        self.values
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the tuple has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The declared fields of the tuple's stream.
    pub fn fields(&self) -> &Fields {
        &self.schema.fields
    }

    /// The schema of the tuple's stream.
    pub fn schema(&self) -> &Arc<StreamSchema> {
        &self.schema
    }

    /// The component that emitted this tuple.
    pub fn source_component(&self) -> &str {
        self.schema.component.as_str()
    }

    /// The stream the tuple was emitted on.
    pub fn source_stream(&self) -> &str {
        self.schema.stream.as_str()
    }

    /// The task that emitted this tuple.
    pub fn source_task(&self) -> TaskId {
        self.source_task
    }

    /// The tuple trees this tuple belongs to (empty when untracked).
    pub fn anchors(&self) -> &Anchors {
        &self.anchors
    }

    /// Whether this is a tick tuple (Storm's `TupleUtils.isTick`).
    pub fn is_tick(&self) -> bool {
        self.schema.component == SYSTEM_COMPONENT && self.schema.stream == TICK_STREAM
    }

    /// Whether the stream declares field `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.schema.fields.contains(name)
    }

    /// The position of field `name`.
    pub fn field_index(&self, name: &str) -> Result<usize, TupleError> {
        self.schema
            .fields
            .index_of(name)
            .ok_or_else(|| TupleError::UnknownField {
                field: name.to_owned(),
                component: self.schema.component.to_string(),
                stream: self.schema.stream.to_string(),
                fields: self.schema.fields.to_string(),
            })
    }

    /// The value at `index`.
    pub fn get_value(&self, index: usize) -> Result<&Value, TupleError> {
        self.values
            .get(index)
            .ok_or_else(|| TupleError::IndexOutOfRange {
                index,
                size: self.values.len(),
                component: self.schema.component.to_string(),
                stream: self.schema.stream.to_string(),
            })
    }

    /// The value of field `name`.
    pub fn get_value_by_field(&self, name: &str) -> Result<&Value, TupleError> {
        self.get_value(self.field_index(name)?)
    }

    fn mismatch(&self, position: String, expected: &'static str, found: &Value) -> TupleError {
        TupleError::TypeMismatch {
            position,
            expected,
            found: found.type_name(),
            component: self.schema.component.to_string(),
            stream: self.schema.stream.to_string(),
        }
    }

    /// The ack value the runtime XORs child edge ids into (Storm's `ackVal`).
    pub fn ack_val(&self) -> u64 {
        self.ack_val.get()
    }

    /// XORs a child edge id into the ack value (used by the runtime when a bolt emits a
    /// tuple anchored to this one).
    pub fn xor_ack_val(&self, edge: u64) {
        self.ack_val.set(self.ack_val.get() ^ edge);
    }

    /// Marks the tuple as sampled for process latency with a non-zero `stamp` (used by
    /// the runtime, which stores the time it took the tuple in; the time from then to
    /// the tuple's ack is Storm's process latency).
    pub fn set_sample_stamp(&mut self, stamp: u32) {
        self.sample_stamp = stamp;
    }

    /// The stamp of a tuple sampled for process latency; 0 when it was not sampled.
    pub fn sample_stamp(&self) -> u32 {
        self.sample_stamp
    }
}

macro_rules! typed_getters {
    ($( $(#[$doc:meta])* $name:ident, $by_field:ident, $ty:ty, $expected:literal, $pat:pat => $out:expr; )*) => {
        impl Tuple {
            $(
                $(#[$doc])*
                pub fn $name(&self, index: usize) -> Result<$ty, TupleError> {
                    match self.get_value(index)? {
                        $pat => Ok($out),
                        other => Err(self.mismatch(format!("#{index}"), $expected, other)),
                    }
                }

                $(#[$doc])*
                ///
                /// By field name.
                pub fn $by_field(&self, name: &str) -> Result<$ty, TupleError> {
                    let index = self.field_index(name)?;
                    match self.get_value(index)? {
                        $pat => Ok($out),
                        other => Err(self.mismatch(format!("'{name}'"), $expected, other)),
                    }
                }
            )*
        }
    };
}

typed_getters! {
    /// The string value.
    get_string, get_string_by_field, &str, "string", Value::Str(s) => s.as_str();
    /// The integer value (Storm's `getLong`).
    get_long, get_long_by_field, i64, "integer", Value::Int(i) => *i;
    /// The float value (integers convert).
    get_double, get_double_by_field, f64, "float", Value::Float(f) => *f;
    /// The boolean value.
    get_boolean, get_boolean_by_field, bool, "bool", Value::Bool(b) => *b;
    /// The bytes value (Storm's `getBinary`).
    get_binary, get_binary_by_field, &[u8], "bytes", Value::Bytes(b) => b.as_slice();
    /// The list value.
    get_list, get_list_by_field, &[Value], "list", Value::List(l) => l.as_slice();
    /// The map value.
    get_map, get_map_by_field, &BTreeMap<String, Value>, "map", Value::Map(m) => m;
}

impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tuple")
            .field(
                "source",
                &format_args!("{}:{}", self.schema.component, self.source_task),
            )
            .field("stream", &self.schema.stream.as_str())
            .field("values", &self.values)
            .finish()
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "source: {}:{}, stream: {}, values: [",
            self.schema.component, self.source_task, self.schema.stream
        )?;
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;

    fn tuple() -> Tuple {
        let schema = Arc::new(StreamSchema {
            component: "split".into(),
            stream: "default".into(),
            fields: Fields::new(["word", "count"]),
            direct: false,
            index: 0,
        });
        Tuple::new(schema, TaskId(3), values!["cow", 2])
    }

    #[test]
    fn getters_by_index_and_field() {
        let t = tuple();
        assert_eq!(t.get_string(0).unwrap(), "cow");
        assert_eq!(t.get_long_by_field("count").unwrap(), 2);
        assert_eq!(t.get_value_by_field("word").unwrap(), &Value::from("cow"));
        assert_eq!(t.source_component(), "split");
        assert_eq!(t.source_task(), TaskId(3));
        assert!(!t.is_tick());
    }

    #[test]
    fn type_mismatch_names_field_and_types() {
        let t = tuple();
        let err = t.get_long_by_field("word").unwrap_err();
        assert_eq!(
            err.to_string(),
            "value 'word' of tuple from split:default is string, not integer"
        );
        let err = t.get_string(1).unwrap_err();
        assert!(err.to_string().contains("#1"), "{err}");
    }

    #[test]
    fn unknown_field_and_index_errors() {
        let t = tuple();
        let err = t.get_string_by_field("sentence").unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream split:default has no field 'sentence' (its fields are [word, count])"
        );
        assert!(matches!(
            t.get_value(5),
            Err(TupleError::IndexOutOfRange {
                index: 5,
                size: 2,
                ..
            })
        ));
    }

    #[test]
    fn anchors_xor_merge() {
        let mut a = Anchors::single(1, 0b1010);
        a.xor_edge(1, 0b0110);
        a.xor_edge(2, 5);
        assert_eq!(a.pairs(), &[(1, 0b1100), (2, 5)]);
    }
}
