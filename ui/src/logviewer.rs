//! The logviewer (`squall logviewer`): serves this machine's worker logs; and the UI's
//! search across the logs of all workers of a topology.

use std::sync::Arc;

use axum::Router;

use crate::Ui;

/// Routes the UI daemon adds for searching a topology's logs across its workers.
pub fn ui_routes() -> Router<Arc<Ui>> {
    Router::new()
}
