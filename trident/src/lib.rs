//! # squall-trident: micro-batches with exactly-once state, and DRPC
//!
//! Storm's Trident on Squall. (Documentation grows with the crate.)
#![deny(missing_docs)]

pub mod state;
pub mod store;
