//! Browser source: the first-party tag script, the collector, and the tag checker.

pub mod config;

use axum::Router;

use crate::app::AppState;

/// Routes this source adds to the gateway.
pub fn routes() -> Router<AppState> {
    Router::new()
}
