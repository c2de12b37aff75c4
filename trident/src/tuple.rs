//! [`TridentTuple`]: what an operation sees, and [`TridentCollector`]: how it emits.

use std::fmt;

use squall_api::{Fields, Value, Values};

/// Where one field of a tuple lives: segment and offset. A tuple inside a bolt is a
/// stack of segments (the input, then what each `each` appended), so appending fields
/// never copies the ones before.
pub(crate) type Slot = (u8, u16);

/// One tuple as an operation sees it: the fields it asked for (its *input fields*),
/// in that order (Storm's `TridentTuple`). Cheap to make: it borrows the values.
#[derive(Clone, Copy)]
pub struct TridentTuple<'a> {
    segs: &'a [&'a [Value]],
    slots: &'a [Slot],
    fields: &'a Fields,
}

impl<'a> TridentTuple<'a> {
    pub(crate) fn new(segs: &'a [&'a [Value]], slots: &'a [Slot], fields: &'a Fields) -> Self {
        debug_assert_eq!(slots.len(), fields.len());
        TridentTuple {
            segs,
            slots,
            fields,
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the tuple has no fields.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The field names, in order.
    pub fn fields(&self) -> &Fields {
        self.fields
    }

    /// The value at `index`.
    ///
    /// # Panics
    /// When `index >= len()`.
    pub fn get(&self, index: usize) -> &'a Value {
        let (seg, off) = self.slots[index];
        &self.segs[seg as usize][off as usize]
    }

    /// The value of field `name`, if the tuple has it.
    pub fn get_by_field(&self, name: &str) -> Option<&'a Value> {
        self.fields.index_of(name).map(|i| self.get(i))
    }

    /// The string at `index`, or an error naming the field and the value's type.
    pub fn get_string(&self, index: usize) -> Result<&'a str, TypeError> {
        let v = self.get(index);
        v.as_str()
            .ok_or_else(|| self.type_error(index, "string", v))
    }

    /// The integer at `index`, or an error naming the field and the value's type.
    pub fn get_i64(&self, index: usize) -> Result<i64, TypeError> {
        let v = self.get(index);
        v.as_i64()
            .ok_or_else(|| self.type_error(index, "integer", v))
    }

    /// The number at `index` as a float (integers convert), or an error.
    pub fn get_f64(&self, index: usize) -> Result<f64, TypeError> {
        let v = self.get(index);
        v.as_f64()
            .ok_or_else(|| self.type_error(index, "number", v))
    }

    /// The values, in field order.
    pub fn values(&self) -> impl Iterator<Item = &'a Value> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The values, copied.
    pub fn to_values(&self) -> Values {
        self.values().cloned().collect()
    }

    fn type_error(&self, index: usize, wanted: &'static str, v: &Value) -> TypeError {
        TypeError {
            field: self.fields.get(index).unwrap_or("?").to_owned(),
            wanted,
            found: v.type_name(),
        }
    }
}

impl fmt::Debug for TridentTuple<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for i in 0..self.len() {
            m.entry(&self.fields.get(i).unwrap_or("?"), self.get(i));
        }
        m.finish()
    }
}

/// A field did not hold the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}' is a {found}, not a {wanted}")]
pub struct TypeError {
    /// The field.
    pub field: String,
    /// The type asked for.
    pub wanted: &'static str,
    /// The type found.
    pub found: &'static str,
}

/// Collects what an operation emits (Storm's `TridentCollector`). What `each` emits is
/// appended to the input tuple; what `map`, `flat_map` and aggregators emit replaces it.
#[derive(Default)]
pub struct TridentCollector {
    pub(crate) out: Vec<Values>,
}

impl TridentCollector {
    /// Emits one tuple (the operation's output fields, in order).
    pub fn emit(&mut self, values: Values) {
        self.out.push(values);
    }
}
