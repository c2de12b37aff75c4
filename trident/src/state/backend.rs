//! [`MapBackend`]: the storage under a map state.

use super::StateError;

/// Raw storage of a map state (Storm's `IBackingMap`): keys and values are byte
/// strings (the flavours encode them). Implement it to add a store.
pub trait MapBackend: Send + 'static {
    /// The values at `keys`, in order (`None`: absent).
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Writes `values` at `keys` (same length).
    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError>;
}

/// A backend whose writes fail at random (for tests of exactly-once under failure).
pub struct FlakyBackend<B> {
    _inner: B,
}
