//! Tuple values: the dynamically typed cells a tuple is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher;

use compact_str::CompactString;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// One value in a tuple. Strings of up to 24 bytes are stored inline, so short words cost
/// no allocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// No value (Java's `null`).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer (Storm's `Long`; smaller integers convert into it).
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(CompactString),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A list of values.
    List(Vec<Value>),
    /// A map from string keys to values.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The name of this value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// A string value that borrows a `'static` string instead of copying it: emitting
    /// a constant (a fixed sentence, a status word) costs no allocation, however long
    /// it is, and neither does cloning the value for several receivers.
    ///
    /// ```
    /// use squall_api::Value;
    /// const GREETING: &str = "a sentence longer than twenty-four bytes";
    /// assert_eq!(Value::from_static(GREETING), Value::from(GREETING));
    /// ```
    pub const fn from_static(s: &'static str) -> Self {
        Value::Str(CompactString::const_new(s))
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Feeds a stable hash of this value into `h`: equal values hash equally in every
    /// process running the same binary, which is what fields grouping relies on.
    pub fn stable_hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Null => h.write_u8(0),
            Value::Bool(b) => {
                h.write_u8(1);
                h.write_u8(*b as u8);
            }
            Value::Int(i) => {
                h.write_u8(2);
                h.write_i64(*i);
            }
            Value::Float(f) => {
                h.write_u8(3);
                h.write_u64(f.to_bits());
            }
            Value::Str(s) => {
                h.write_u8(4);
                h.write(s.as_bytes());
                h.write_u8(0xff);
            }
            Value::Bytes(b) => {
                h.write_u8(5);
                h.write(b);
                h.write_usize(b.len());
            }
            Value::List(l) => {
                h.write_u8(6);
                h.write_usize(l.len());
                for v in l {
                    v.stable_hash(h);
                }
            }
            Value::Map(m) => {
                h.write_u8(7);
                h.write_usize(m.len());
                for (k, v) in m {
                    h.write(k.as_bytes());
                    h.write_u8(0xff);
                    v.stable_hash(h);
                }
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(v as i64)
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

/// Values above `i64::MAX` wrap, as Java's long does.
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}

/// Values above `i64::MAX` wrap, as Java's long does.
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as i64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v as f64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(CompactString::new(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(CompactString::from(v))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Str(CompactString::new(v))
    }
}

impl From<CompactString> for Value {
    fn from(v: CompactString) -> Self {
        Value::Str(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(v: BTreeMap<String, Value>) -> Self {
        Value::Map(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// The values of one tuple. Up to two values are stored inline, without allocation.
pub type Values = SmallVec<[Value; 2]>;

/// Builds [`Values`] from expressions that convert into [`Value`], like Storm's
/// `new Values(...)`.
///
/// ```
/// use squall_api::{values, Value};
/// let v = values!["cow", 3];
/// assert_eq!(v[0], Value::from("cow"));
/// assert_eq!(v[1], Value::Int(3));
/// ```
#[macro_export]
macro_rules! values {
    () => { $crate::Values::new() };
    ($($v:expr),+ $(,)?) => {{
        let mut values = $crate::Values::new();
        $( values.push($crate::Value::from($v)); )+
        values
    }};
}

// Values serialize as the natural self-describing types (nil, bool, int, float, str, bin,
// array, map), so MessagePack and JSON peers see plain data.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tuple value (null, bool, number, string, bytes, list or map)")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in a signed 64-bit value")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(CompactString::new(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(CompactString::from(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_type() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), Value::from(1.5));
        let v = Value::List(vec![
            Value::Null,
            true.into(),
            (-3).into(),
            "word".into(),
            Value::Map(m),
        ]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"[null,true,-3,"word",{"k":1.5}]"#);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn values_macro_converts() {
        let v = values!["a", 1u32, 2.0, false, Option::<i64>::None];
        assert_eq!(v.len(), 5);
        assert_eq!(v[4], Value::Null);
        assert!(!v.spilled() || v.len() > 2);
    }

    #[test]
    fn stable_hash_distinguishes_types_and_is_deterministic() {
        let h = |v: &Value| {
            let mut s = foldhash::fast::FixedState::with_seed(7).build_hasher();
            v.stable_hash(&mut s);
            s.finish()
        };
        use std::hash::BuildHasher;
        assert_eq!(h(&"1".into()), h(&"1".into()));
        assert_ne!(h(&"1".into()), h(&Value::Int(1)));
    }
}
