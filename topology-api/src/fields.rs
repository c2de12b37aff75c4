//! Field names of a stream.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The ordered field names of a stream, e.g. `["word", "count"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fields(Vec<String>);

impl Fields {
    /// Fields with these names, in order.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Fields(names.into_iter().map(Into::into).collect())
    }

    /// The position of field `name`, if the stream has it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|f| f == name)
    }

    /// Whether the stream has field `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The field names in order.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The field name at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(String::as_str)
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for Fields {
    fn from(names: [S; N]) -> Self {
        Fields::new(names)
    }
}

impl<S: Into<String>> From<Vec<S>> for Fields {
    fn from(names: Vec<S>) -> Self {
        Fields::new(names)
    }
}

impl From<&[&str]> for Fields {
    fn from(names: &[&str]) -> Self {
        Fields::new(names.iter().copied())
    }
}
