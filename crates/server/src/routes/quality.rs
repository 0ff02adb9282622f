//! `GET /api/quality`: the quality report as JSON (admin key as a bearer token, or the
//! dashboard's session cookie). `?since=` takes a date, an RFC 3339 time or a span (`7d`).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use crate::api_error::ApiError;
use crate::quality::report::{self, Report};
use crate::state::AppState;

/// How far back a report looks by default.
pub const DEFAULT_SINCE: &str = "7d";

/// `?since=`.
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    pub since: Option<String>,
}

/// `GET /api/quality`.
pub async fn get_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Report>, ApiError> {
    if !super::session::authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    let report = build(&state, q.since.as_deref()).await?;
    Ok(Json(report))
}

/// `GET /api/status`: the go-live checks (`pincapi status`), kept five minutes.
pub async fn get_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::setup::Check>>, ApiError> {
    if !super::session::authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    Ok(Json(
        state
            .setup
            .get(&state.config, &state.store, state.clock.now_ms())
            .await,
    ))
}

/// The report from `since` (default [`DEFAULT_SINCE`]).
pub async fn build(state: &AppState, since: Option<&str>) -> Result<Report, ApiError> {
    let now = state.clock.now_ms();
    let since = report::parse_since(since.unwrap_or(DEFAULT_SINCE), now / 1000)
        .map_err(|e| ApiError::bad_request("invalid_since", e))?;
    let since = report::day_start(since);
    // The order census, kept a few minutes so views do not call the Admin API each time.
    let census = state.census.get(since, now).await;
    report::build_with_census(
        state.store.as_ref(),
        since,
        now,
        crate::quality::eqs_enabled(state),
        census.as_ref().map(|census| report::CensusInput {
            census,
            max_event_age_secs: state.config.ingest.max_event_age_secs,
        }),
    )
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))
}
