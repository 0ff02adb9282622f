//! `GET /healthz`, `GET /readyz` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api_error::{ApiError, bearer_matches};
use crate::state::AppState;

/// The process is up. `ingest` says whether it accepts events or sheds load; `version` and
/// `schema_version` which build runs on which store schema.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "ingest": ingest_state(&state),
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": state.schema_version,
    }))
}

/// `accepting`, or `shedding` while the queue is at `ingest.max_queue_depth` (new events are
/// answered 503 with `Retry-After`; delivery goes on). The instance stays ready: every
/// instance on the same store sheds alike, and a load balancer should pass the 503s on.
fn ingest_state(state: &AppState) -> &'static str {
    if state.backpressure.shedding() {
        "shedding"
    } else {
        "accepting"
    }
}

/// The process can do its work: the store answers. Lists ad accounts whose delivery is
/// stopped (a 401/403, or requests Pinterest refuses as such) with the reason.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let blocked: Vec<serde_json::Value> = state
        .delivery
        .account_ids()
        .iter()
        .filter_map(|a| {
            state
                .delivery
                .blocked_reason(a)
                .map(|reason| json!({"ad_account_id": a, "reason": reason}))
        })
        .collect();
    match state.store.ping().await {
        // What is stored is delivered, but nothing new can be taken: not ready for traffic.
        Ok(()) if state.store.is_full() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "store": "full",
                "blocked_accounts": blocked,
                "queue_depth": state.backpressure.depth(),
            })),
        ),
        Ok(()) => (
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "store": "ok",
                "blocked_accounts": blocked,
                "ingest": ingest_state(&state),
                "queue_depth": state.backpressure.depth(),
                "max_queue_depth": state.backpressure.limit(),
            })),
        ),
        Err(e) => {
            tracing::error!(error = %e, "Readiness check failed: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "store": "unavailable"})),
            )
        }
    }
}

/// Prometheus text, from counters in memory: a scrape reads nothing from the store (the
/// gauges taken from it are refreshed in the background, see [`refresh`]). With
/// `metrics_key` set it needs `Authorization: Bearer <metrics_key>`.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.config.metrics_key.is_empty() && !bearer_matches(&headers, &state.config.metrics_key)
    {
        return ApiError::unauthorized().into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Sets the gauges `/metrics` takes from the store (queue depth, dead letters, the quality
/// figures): `serve` calls it at start and every `metrics_refresh_secs`.
pub async fn refresh(state: &AppState) {
    if let Ok(depth) = state.store.depth().await {
        let series = |f: fn(&crate::store::Depth) -> u64| {
            depth
                .iter()
                .map(|d| {
                    (
                        vec![
                            ("ad_account_id", d.ad_account_id.clone()),
                            ("event_name", d.event_name.clone()),
                        ],
                        f(d) as f64,
                    )
                })
                .collect()
        };
        state
            .metrics
            .replace_gauge("pincapi_queue_depth", series(|d| d.pending));
        state
            .metrics
            .replace_gauge("pincapi_dead_letters", series(|d| d.dead));
    }
    if let Err(e) = crate::quality::update_metrics(state).await {
        tracing::warn!(error = %e, "Could not read the quality figures for /metrics");
    }
}

/// The refresh task of `serve`.
pub async fn run_refresh(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(state.config.metrics_refresh_secs);
    loop {
        refresh(&state).await;
        tokio::select! {
            _ = stop.changed() => return,
            () = state.clock.sleep(every) => {}
        }
    }
}
