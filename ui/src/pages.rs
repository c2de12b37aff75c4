//! The UI's HTML pages and their assets, embedded in the binary.

use std::sync::Arc;

use axum::Router;

use crate::Ui;

/// Routes serving the pages (`/`, `/topology.html`, ...) and their assets.
pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
}
