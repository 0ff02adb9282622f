//! Browser source: the first-party tag script (`GET /tag.js`), the collector
//! (`POST /collect`), the demo storefront, and `pincapi tag check`.
//!
//! The path of a browser event: a page calls `pincapi('track', ...)`; tag.js gives it an
//! event_id, calls the Pinterest Tag with it and sends the same event to the collector, which
//! maps it (`pincapi_core::tag`), adds IP, user agent and click id, and stores it in the
//! store, where a server-side copy with the same event_id (a Shopify order webhook) merges
//! into it. Pinterest counts the Tag's copy and ours once.

pub mod collector;
pub mod scan;
pub mod script;
pub mod sitemap;
pub mod storefront;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::state::AppState;

/// Routes this source adds to the gateway.
pub fn routes() -> Router<AppState> {
    // One limiter per router, so each gateway (and each test's gateway) counts alone.
    let limiter = Arc::new(collector::RateLimiter::default());
    Router::new()
        .route("/tag.js", get(script::tag_js))
        .route(
            "/collect",
            post(collector::collect).options(collector::preflight),
        )
        .layer(Extension(limiter))
        .merge(storefront::routes())
}
