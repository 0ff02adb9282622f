//! Shopify source: signed webhooks in, reconciliation against the Admin API, the custom
//! pixel for the browser side.

pub mod config;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;

/// Routes this source adds to the gateway.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// Background tasks this source runs while the gateway serves (the reconciliation poller).
pub fn spawn_background(_state: &AppState, _stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    Vec::new()
}
