//! Storm's REST API (`/api/v1/...`) with Storm's JSON field names.

use std::sync::Arc;

use axum::Router;

use crate::Ui;

/// Routes of the REST API.
pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
}
