//! `/metrics` in the Prometheus text format.

use std::sync::Arc;

use axum::Router;

use crate::Ui;

/// The `/metrics` route.
pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
}
