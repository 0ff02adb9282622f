//! Shopify source: signed webhooks in, reconciliation against the Admin API, the custom
//! pixel for the browser side.
//!
//! Every order becomes at most one Pinterest `checkout`, whichever path sees it first:
//!
//! - `webhook`: `POST /webhooks/shopify` verifies the HMAC, maps the payload with the core
//!   (`pincapi_core::shopify::map`), and stores the delivery, the event and the order's ledger
//!   row in one transaction before answering 200;
//! - `poller`: every few minutes, lists the shop's recent orders from the Admin API and stores
//!   those the webhooks missed through the same mapping and the same store call
//!   (`record::Recorder`); `pincapi shopify backfill --since` runs it from a date;
//! - `pixel`: the custom pixel that runs the Pinterest Tag in Shopify's checkout with the same
//!   purchase `event_id` as the server, `"order-<order id digits>"`.
//!
//! Besides, `census` lists the shop's orders through the Admin API for the quality report,
//! read only (it stores and sends nothing), so orders nothing reported can still be counted
//! and listed; `shopify.poller = false` keeps the poller off while the token serves it.
//!
//! The store holds one event per (ad account, event_id), so a retried webhook, a second
//! subscription, the poller and the browser can all report an order and Pinterest still gets
//! one event. `standin` is a local Admin API for tests and `pincapi shopify standin`.
//!
//! `GET /admin/shopify/ledger` (admin key) lists the order ledger: each order seen with its
//! outcome (`sent`, `skipped` or `ignored`, with the reason), and cancellations and refunds.
//!
//! Wiring still owned elsewhere: `Config::validate` should call
//! [`config::ShopifyConfig::validate`] so a bad `[shopify]` section stops `serve` at start; until
//! it does, `spawn_background` logs the problem and webhooks for an unusable shop answer 503.

pub mod access;
pub mod admin;
pub mod bulk;
pub mod compliance;
pub mod connect;
pub mod install;
pub mod orders;
pub mod pixel;
pub mod poller;
pub mod record;
pub mod standin;
pub mod token;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api_error::{ApiError, bearer_matches};
use crate::state::AppState;
use crate::store::ShopifyLedger;

/// How long webhook ids are kept to recognise Shopify's retries (which end after 4 hours).
const WEBHOOK_ID_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Routes this source adds to the gateway.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/shopify", post(webhook::receive))
        .route("/admin/shopify/ledger", get(ledger))
        .route(
            "/admin/shopify/data-requests",
            get(compliance::data_requests),
        )
        .route("/shopify/install", get(install::install))
        .route("/shopify/callback", get(install::callback))
}

/// Background tasks this source runs while the gateway serves: one reconciliation poller per
/// shop with an Admin API access token, and the pruning of old webhook ids.
pub fn spawn_background(state: &AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let shops = match crate::config::shopify::shops(&state.config) {
        Ok(shops) => shops,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "The Shopify configuration is unusable; no Shopify poller runs");
            return Vec::new();
        }
    };
    if shops.is_empty() {
        return Vec::new();
    }
    let mut tasks = Vec::new();
    let recorder = record::Recorder {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        delivery: Some(state.delivery.clone()),
        max_event_age_secs: state.config.ingest.max_event_age_secs,
        merge_window_ms: (state.config.ingest.merge_window_secs as i64).saturating_mul(1000),
        clock: state.clock.clone(),
    };
    let sc = &state.config.shopify;
    if !sc.poller && shops.iter().any(crate::config::shopify::Shop::polls) {
        tracing::info!(
            "The Shopify reconciliation poller is off (shopify.poller = false); the quality report lists orders the gateway never received"
        );
    }
    if sc.poller {
        for api in state.shopify.apis() {
            let r = poller::Reconciler::new(Arc::clone(api), recorder.clone(), sc);
            tasks.push(tokio::spawn(poller::run_loop(
                r,
                sc.poll_interval(),
                stop.clone(),
            )));
        }
    }
    match state.config.public_base() {
        Some(public) => {
            let apis: Vec<_> = state.shopify.apis().cloned().collect();
            if !apis.is_empty() {
                let checker = connect::Checker {
                    apis,
                    uri: connect::webhook_uri(public),
                    every: Duration::from_secs(sc.webhook_check_interval_secs),
                    store: state.store.clone(),
                    metrics: state.metrics.clone(),
                    alerter: crate::quality::alerts::Alerter::new(
                        state.store.clone(),
                        state.delivery.clone(),
                        state.metrics.clone(),
                        state.config.quality.clone(),
                        Vec::new(),
                    ),
                };
                tasks.push(tokio::spawn(checker.run(state.clock.clone(), stop.clone())));
            }
        }
        None => {
            if state.shopify.apis().next().is_some() {
                tracing::info!(
                    "public_url is not set: the gateway does not check the shops' webhook subscriptions"
                );
            }
        }
    }
    tasks.push(tokio::spawn(prune_webhook_receipts(state.clone(), stop)));
    tasks
}

/// Forgets webhook ids older than [`WEBHOOK_ID_MEMORY`], hourly.
async fn prune_webhook_receipts(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        let before = state.clock.now_ms() - WEBHOOK_ID_MEMORY.as_millis() as i64;
        match state.store.prune_webhook_receipts(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deliveries = n, "Forgot old Shopify webhook ids"),
            Err(e) => tracing::warn!(error = %e, "Could not prune old Shopify webhook ids"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `?shop=&limit=` of the ledger listing.
#[derive(Debug, Deserialize)]
pub struct LedgerQuery {
    pub shop: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /admin/shopify/ledger`: the order ledger, newest first (admin key).
async fn ledger(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<ShopifyLedger>, ApiError> {
    if !bearer_matches(&headers, &state.config.admin_key) {
        return Err(ApiError::unauthorized());
    }
    let shop = q
        .shop
        .as_deref()
        .map(crate::config::shopify::normalize_domain);
    let ledger = state
        .store
        .shopify_ledger(shop, q.limit.unwrap_or(100).min(10_000))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Could not read the Shopify order ledger");
            ApiError::unavailable("the event store is unavailable")
        })?;
    Ok(Json(ledger))
}
