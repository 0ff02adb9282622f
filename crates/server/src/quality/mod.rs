//! Conversion-quality monitoring (issue #5): the report (`report`), alerts (`alerts`),
//! Pinterest's Event Quality Score (`eqs`) and the dashboard page (`dashboard`). The numbers
//! come from aggregates the store keeps in the same transactions as the writes they count
//! (`Store::quality_hours` and friends); the arithmetic is in `pincapi_core::quality`.

pub mod alerts;
pub mod census;
pub mod dashboard;
pub mod dashboard_results;
pub mod eqs;
pub mod report;
pub mod results;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pinterest_client::PinterestClient;
use crate::state::AppState;

/// Whether Pinterest's Event Quality Score is polled (an OAuth token is configured, or
/// Pinterest's app is there to be connected).
pub fn eqs_enabled(state: &AppState) -> bool {
    !state.config.pinterest_oauth_token.is_empty() || state.config.pinterest_app_id.is_some()
}

/// The background tasks: the alert loop, and the EQS poller when an OAuth token is set.
pub fn spawn_background(state: &AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    let accounts: Vec<String> = state
        .config
        .all_accounts()
        .into_iter()
        .map(|a| a.id)
        .collect();
    let mut alerter = alerts::Alerter::new(
        Arc::clone(&state.store),
        Arc::clone(&state.delivery),
        Arc::clone(&state.metrics),
        state.config.quality.clone(),
        accounts.clone(),
    )
    .with_oauth(Arc::clone(&state.pinterest));
    // With the poller off the ledger cannot know every order: the alert counts with the
    // census. With it on, the poller files every order the census would list.
    if !state.config.shopify.poller && state.census.enabled() {
        alerter = alerter.with_census(
            Arc::clone(&state.census),
            state.config.ingest.max_event_age_secs,
        );
    }
    handles.push(tokio::spawn(alerter.run(stop.clone())));
    if eqs_enabled(state) {
        match PinterestClient::new(
            &state.config.pinterest_api_base,
            state.config.request_timeout(),
        ) {
            Ok(client) => {
                let poller = eqs::EqsPoller {
                    store: Arc::clone(&state.store),
                    client,
                    oauth: Arc::clone(&state.pinterest),
                    metrics: Arc::clone(&state.metrics),
                    accounts,
                    interval: Duration::from_secs(state.config.quality.eqs_interval_secs),
                };
                handles.push(tokio::spawn(poller.run(stop)));
            }
            Err(e) => tracing::error!(error = %e, "Cannot start the Event Quality Score poller"),
        }
    } else {
        tracing::info!(
            "Pinterest's Event Quality Score is not polled: pinterest_oauth_token is not set"
        );
    }
    handles
}

/// Sets the quality gauges of `/metrics` from the store: the last 24 hours of aggregates and
/// the Shopify orders created in the last 24 hours. Called at scrape time, like queue depth.
pub async fn update_metrics(state: &AppState) -> Result<(), crate::store::StoreError> {
    use crate::metrics::Labels;
    use crate::store::QualityCounts;
    use pincapi_core::quality::{lag_percentile, percent};
    use std::collections::BTreeMap;

    let now = state.clock.now_ms() / 1000;
    let hours = state
        .store
        .quality_hours(now.div_euclid(3600) * 3600 - 23 * 3600)
        .await?;
    let mut by_name: BTreeMap<String, QualityCounts> = BTreeMap::new();
    for h in &hours {
        by_name
            .entry(h.event_name.clone())
            .or_default()
            .add(&h.counts);
    }
    let m = &state.metrics;
    let name = |n: &str| -> Labels { vec![("event_name", n.to_owned())] };
    let mut coverage = Vec::new();
    let (mut scores, mut p95s, mut lates) = (Vec::new(), Vec::new(), Vec::new());
    for (n, c) in &by_name {
        for (key, pct) in report::coverage(c) {
            coverage.push((
                vec![("event_name", n.clone()), ("key", key.to_owned())],
                pct,
            ));
        }
        scores.push((name(n), report::score(c)));
        if let Some(p) = lag_percentile(&c.lag, 0.95, c.lag_max) {
            p95s.push((name(n), p as f64));
        }
        lates.push((name(n), percent(c.late, c.delivered)));
    }
    m.replace_gauge("pincapi_quality_coverage_percent", coverage);
    m.replace_gauge("pincapi_quality_match_score", scores);
    m.replace_gauge("pincapi_quality_send_lag_p95_seconds", p95s);
    m.replace_gauge("pincapi_quality_late_percent", lates);

    let truth = state
        .store
        .shopify_truth(now - 86_400, i64::MAX, 0, None)
        .await?;
    let (mut o, mut d, mut b, mut r) = (0, 0, 0, 0);
    for t in &truth.days {
        (o, d, b, r) = (
            o + t.orders,
            d + t.delivered,
            b + t.browser_seen,
            r + t.recovered,
        );
    }
    let state_label = |s: &str| -> Labels { vec![("state", s.to_owned())] };
    m.replace_gauge(
        "pincapi_shopify_orders_recent",
        vec![
            (state_label("orders"), o as f64),
            (state_label("delivered"), d as f64),
            (state_label("browser_seen"), b as f64),
            (state_label("recovered"), r as f64),
            (state_label("missing"), (o - d) as f64),
        ],
    );
    m.set(
        "pincapi_shopify_browser_loss_percent",
        &[],
        percent(o - b, o),
    );
    m.set("pincapi_shopify_recovered_percent", &[], percent(r, o));
    Ok(())
}
