//! `POST /v5/ad_accounts/{ad_account_id}/events` (operation `events/create`): faults, the
//! rate limit, validation, recording and the 200 / 422 answers.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::api::{self, ApiError};
use super::json::JsonRef;
use super::validate::{self, TimeWindow};
use super::{FaultStep, RecordedEvent, Sandbox};

/// `code` and `message` of the 422 body observed from Pinterest
/// (`testdata/pinterest/events-response.422-observed.json`).
const PARTIAL_FAILURE: (i64, &str) = (
    953,
    "The action could not be processed properly due to some or all data provided being invalid.",
);

/// `components/schemas/ConversionApiResponse`.
#[derive(Debug, Serialize)]
struct ConversionApiResponse {
    num_events_received: usize,
    num_events_processed: usize,
    events: Vec<EventResult>,
}

/// One entry of `ConversionApiResponse.events`.
#[derive(Debug, Serialize)]
struct EventResult {
    status: &'static str,
    error_message: Option<String>,
    warning_message: Option<String>,
}

/// `components/schemas/DetailedError`, with `details` shaped like the 200 body as observed.
#[derive(Debug, Serialize)]
struct DetailedError<'a> {
    code: i64,
    message: &'a str,
    details: ConversionApiResponse,
}

impl ConversionApiResponse {
    /// 200 when every event was processed, else 422 with the results in `details`.
    fn into_response(self) -> Response {
        if self.num_events_processed == self.num_events_received {
            return (StatusCode::OK, axum::Json(self)).into_response();
        }
        partial_failure(PARTIAL_FAILURE.1, self)
    }
}

fn partial_failure(message: &str, details: ConversionApiResponse) -> Response {
    let body = DetailedError {
        code: PARTIAL_FAILURE.0,
        message,
        details,
    };
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// The handler. Order: (auth, done by the route layer) → path and query parameters →
/// faults → rate limit → body shape (400) → per-event validation (200 / 422).
pub(super) async fn create(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Counted until answered; dropped unfinished if the client goes away during a delay.
    let _in_flight = sandbox.enter_request(api::bearer_token(&headers).unwrap_or_default());
    let ad_account_id = match api::ad_account_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let test = match api::bool_query(query.as_deref(), "test") {
        Ok(test) => test,
        Err(e) => return e.into_response(),
    };

    // The guard is a temporary: the lock is released before sleeping.
    let faults = sandbox.faults_state().next_request();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if let Some(step) = faults.answer {
        return fault_answer(step, &body);
    }

    if let Err(retry_after) = sandbox.rate_limiter().check(&ad_account_id) {
        return ApiError::rate_limited(retry_after).into_response();
    }

    let tape = match validate::parse(&body) {
        Ok(tape) => tape,
        Err(message) => return ApiError::bad_request(message).into_response(),
    };
    let events = match validate::events(&tape) {
        Ok(events) => events,
        Err(message) => return ApiError::bad_request(message).into_response(),
    };

    let options = sandbox.options();
    let window = TimeWindow {
        now: unix_now(),
        max_age_secs: options.max_event_age_secs,
        max_future_skew_secs: options.max_future_skew_secs,
    };
    let results: Vec<EventResult> = events
        .iter()
        .map(|event| {
            let verdict = validate::validate_event(*event, &window).and_then(|warning| {
                reject_if_listed(*event, &faults.reject_event_ids)?;
                Ok(warning)
            });
            match verdict {
                Ok(warning) => EventResult {
                    status: "processed",
                    error_message: None,
                    warning_message: warning,
                },
                Err(error) => EventResult {
                    status: "failed",
                    error_message: Some(error),
                    warning_message: None,
                },
            }
        })
        .collect();
    let processed = results.iter().filter(|r| r.status == "processed").count();
    sandbox.count_events(events.len() as u64, processed as u64);

    if sandbox.record_requests_enabled() {
        let recorded = events
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.status == "processed")
            .map(|(event, _)| RecordedEvent {
                ad_account_id: ad_account_id.clone(),
                test,
                event: event.to_value(),
            });
        sandbox.record_events(recorded);
    }

    ConversionApiResponse {
        num_events_received: results.len(),
        num_events_processed: processed,
        events: results,
    }
    .into_response()
}

fn reject_if_listed(event: JsonRef<'_, '_>, reject: &super::RejectSet) -> Result<(), String> {
    if reject.is_empty() {
        return Ok(());
    }
    match event.get("event_id").and_then(JsonRef::as_str) {
        Some(id) if reject.contains(id) => Err(format!(
            "Event {:?} rejected by the sandbox (listed in faults.reject_event_ids).",
            api::truncate(id, 64)
        )),
        _ => Ok(()),
    }
}

/// The answer a fault step asks for. A 422 gets a `DetailedError` whose `details` fail every
/// event of the request (so clients exercise their per-event handling); anything else gets
/// the spec's `Error` body for that status.
fn fault_answer(step: FaultStep, body: &[u8]) -> Response {
    if let Some(raw) = step.body {
        let status = StatusCode::from_u16(step.status).unwrap_or(StatusCode::OK);
        let kind = if raw.trim_start().starts_with('<') {
            "text/html; charset=utf-8"
        } else {
            "application/json"
        };
        let mut response = (status, [(header::CONTENT_TYPE, kind)], raw).into_response();
        if let Some(location) = step
            .location
            .and_then(|l| header::HeaderValue::from_str(&l).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    if step.status == 422 {
        let count = validate::parse(body)
            .ok()
            .and_then(|tape| validate::events(&tape).ok().map(|events| events.len()))
            .unwrap_or(0);
        let error = step
            .message
            .clone()
            .unwrap_or_else(|| "Event rejected by the sandbox (scripted 422 fault).".to_owned());
        let details = ConversionApiResponse {
            num_events_received: count,
            num_events_processed: 0,
            events: (0..count)
                .map(|_| EventResult {
                    status: "failed",
                    error_message: Some(error.clone()),
                    warning_message: None,
                })
                .collect(),
        };
        let mut response = partial_failure(
            step.message.as_deref().unwrap_or(PARTIAL_FAILURE.1),
            details,
        );
        if let Some(secs) = step.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        return response;
    }
    ApiError::for_status(step.status, step.message)
        .with_retry_after(step.retry_after)
        .into_response()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
