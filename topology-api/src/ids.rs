//! Newtype identifiers: tasks, components and streams.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A task: one instance of a spout or bolt. Task ids are small integers, unique within a
/// topology and contiguous per component, starting at 1 (as in Storm).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TaskId(pub u32);

impl TaskId {
    /// The pseudo task that sends system tuples such as ticks (Storm uses -1).
    pub const SYSTEM: TaskId = TaskId(0);

    /// The id as a plain integer.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name.
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// The id of a spout or bolt within a topology, e.g. `"split"`.
    ComponentId
);
string_id!(
    /// The id of a stream within a component's outputs, e.g. `"default"`.
    StreamId
);

/// The name of the stream a component emits to when it names none.
pub const DEFAULT_STREAM: &str = "default";
/// The component that sends system tuples (ticks).
pub const SYSTEM_COMPONENT: &str = "__system";
/// The stream tick tuples arrive on.
pub const TICK_STREAM: &str = "__tick";
/// The component id of the ackers.
pub const ACKER_COMPONENT: &str = "__acker";

/// A stream as seen by a subscriber: the component that emits it and the stream id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GlobalStreamId {
    /// The emitting component.
    pub component: ComponentId,
    /// The stream of that component.
    pub stream: StreamId,
}

impl GlobalStreamId {
    /// The stream `stream` of `component`.
    pub fn new(component: impl Into<ComponentId>, stream: impl Into<StreamId>) -> Self {
        Self {
            component: component.into(),
            stream: stream.into(),
        }
    }
}

impl fmt::Display for GlobalStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.component, self.stream)
    }
}

/// `"split"` names the default stream of component `split`.
impl From<&str> for GlobalStreamId {
    fn from(component: &str) -> Self {
        Self::new(component, DEFAULT_STREAM)
    }
}

/// `("split", "words")` names stream `words` of component `split`.
impl From<(&str, &str)> for GlobalStreamId {
    fn from((component, stream): (&str, &str)) -> Self {
        Self::new(component, stream)
    }
}
