//! The three flavours of map state and the cache in front of them.

/// Transactional flavour (H1).
pub struct TransactionalMap;
/// Opaque flavour (H1).
pub struct OpaqueMap;
/// Non-transactional flavour (H1).
pub struct NonTransactionalMap;
/// Cache (H1).
pub struct CachedMap;
/// What a transactional map stores (H1).
pub struct TransactionalValue;
/// What an opaque map stores (H1).
pub struct OpaqueValue;
