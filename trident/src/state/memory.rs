//! In-memory map state (H1).

/// In-memory backend (H1).
pub struct MemoryBackend;
/// In-memory state factory (H1).
#[derive(Clone)]
pub struct MemoryMapState;
