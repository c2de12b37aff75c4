//! Redis map state (H1).

/// Redis backend (H1).
pub struct RedisBackend;
/// Redis state factory (H1).
#[derive(Clone)]
pub struct RedisMapState;
