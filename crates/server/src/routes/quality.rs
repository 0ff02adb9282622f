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

/// `?since=` and `?account=` (one ad account's figures).
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    pub since: Option<String>,
    pub account: Option<String>,
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
    let report = build(&state, q.since.as_deref(), q.account.as_deref()).await?;
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

/// The report from `since` (default [`DEFAULT_SINCE`]), for `account` or every account, with
/// Pinterest's reported results.
pub async fn build(
    state: &AppState,
    since: Option<&str>,
    account: Option<&str>,
) -> Result<Report, ApiError> {
    let account = account.filter(|a| !a.is_empty());
    if let Some(a) = account
        && !state.config.all_accounts().iter().any(|c| c.id == a)
    {
        return Err(ApiError::bad_request(
            "invalid_account",
            format!("account: {a} is not a configured ad account"),
        ));
    }
    let now = state.clock.now_ms();
    let since = report::parse_since(since.unwrap_or(DEFAULT_SINCE), now / 1000)
        .map_err(|e| ApiError::bad_request("invalid_since", e))?;
    let since = report::day_start(since);
    // The order census, kept a few minutes so views do not call the Admin API each time.
    let census = state.census.get(since, now).await;
    let mut built = report::build_with_census(
        state.store.as_ref(),
        since,
        now,
        crate::quality::eqs_enabled(state),
        census.as_ref().map(|census| report::CensusInput {
            census,
            max_event_age_secs: state.config.ingest.max_event_age_secs,
        }),
        account,
    )
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let configured: Vec<String> = state
        .config
        .all_accounts()
        .into_iter()
        .map(|a| a.id)
        .collect();
    crate::quality::results::fill(
        &mut built,
        state.store.as_ref(),
        &state.results,
        &configured,
        now,
    )
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(built)
}
