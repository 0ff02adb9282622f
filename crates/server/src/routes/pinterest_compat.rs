//! `POST /v5/ad_accounts/{id}/events`: Pinterest's own events endpoint, on the gateway.
//!
//! Every existing Pinterest integration (Pinterest's SDKs, RudderStack, Segment, Stape, custom
//! code) speaks this endpoint; pointed at `{public_url}/v5` instead of
//! `https://api.pinterest.com/v5`, it gains the gateway's durability, normalisation, batching
//! and monitoring without another change. The request is Pinterest's (`{"data": [...]}`,
//! `?test=true`, explicit `null`s, user data raw or hashed); the bearer token is the gateway's
//! API key. The answer is Pinterest's shape: 200 with `num_events_received`,
//! `num_events_processed` and one `events[i]` per event (`status` `processed` or `failed`,
//! `error_message`, `warning_message`) when every event was taken, else 422 with the same in
//! `details`, as Pinterest answers a partial failure. `processed` here means stored durably on
//! its way to Pinterest (a repeat of a stored event_id is processed too: Pinterest counts it
//! once).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pincapi_core::ingest::FieldIssue;
use pincapi_core::pinterest::{ApiResponse, EventResult, EventStatus};
use serde::Serialize;

use super::ingest::{Verdict, authenticated_body, process};
use crate::api_error::ApiError;
use crate::state::AppState;

/// The code and message of Pinterest's answer to a partial failure (observed).
const PARTIAL_FAILURE: (i64, &str) = (
    953,
    "The action could not be processed properly due to some or all data provided being invalid.",
);

#[derive(Debug, Serialize)]
struct DetailedError {
    code: i64,
    message: &'static str,
    details: ApiResponse,
}

/// Pinterest's `Error`: `{code, message}`.
fn pinterest_error(e: ApiError) -> Response {
    let status = e.status;
    let code = match status.as_u16() {
        401 => 2,
        _ => i64::from(status.as_u16()),
    };
    let message = e.message;
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn words(issues: &[FieldIssue]) -> Option<String> {
    (!issues.is_empty()).then(|| {
        issues
            .iter()
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `?test=true` (also `True`, `1`, as SDKs write it); anything else is off.
fn test_flag(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k == "test" && matches!(v.to_ascii_lowercase().as_str(), "true" | "1")
    })
}

/// `POST /v5/ad_accounts/{ad_account_id}/events`.
pub async fn post_events(
    State(state): State<AppState>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &account, query.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => pinterest_error(e),
    }
}

async fn handle(
    state: &AppState,
    account: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = authenticated_body(state, headers, body).await?;
    if !state.delivery.has_account(account) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_ad_account",
            "this ad account is not configured in the gateway",
        ));
    }
    let verdicts = match process(
        state,
        headers,
        account,
        &body,
        "/v5/ad_accounts/{ad_account_id}/events",
        test_flag(query),
    )
    .await?
    {
        Ok(v) => v,
        Err(shed) => return Ok(shed),
    };
    let events: Vec<EventResult> = verdicts
        .iter()
        .map(|v| match v {
            Verdict::Accepted(w) | Verdict::Duplicate(w) => EventResult {
                status: EventStatus::Processed,
                error_message: None,
                warning_message: words(w),
            },
            Verdict::Rejected(e) => EventResult {
                status: EventStatus::Failed,
                error_message: words(e),
                warning_message: None,
            },
        })
        .collect();
    let processed = events
        .iter()
        .filter(|e| e.status == EventStatus::Processed)
        .count();
    let answer = ApiResponse {
        num_events_received: events.len() as i64,
        num_events_processed: processed as i64,
        events,
    };
    if answer.num_events_processed == answer.num_events_received {
        return Ok((StatusCode::OK, Json(answer)).into_response());
    }
    let body = DetailedError {
        code: PARTIAL_FAILURE.0,
        message: PARTIAL_FAILURE.1,
        details: answer,
    };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_flag_is_read_as_sdks_write_it() {
        assert!(test_flag(Some("test=True")));
        assert!(test_flag(Some("a=1&test=true")));
        assert!(!test_flag(Some("test=False")));
        assert!(!test_flag(None));
    }
}
