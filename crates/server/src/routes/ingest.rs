//! `POST /v1/events` and `POST /v1/ad_accounts/{id}/events`: the ingest API.
//!
//! One event, or `{"data": [...]}` with up to 1000, in Pinterest's shape with user_data raw or
//! pre-hashed. Each event is checked on its own: the good ones are stored durably before the
//! answer, the bad ones are listed by index with the field and the reason. Handlers never call
//! Pinterest.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pincapi_core::ingest::{FieldIssue, IngestEvent, TimeWindow};
use pincapi_core::pinterest;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::api_error::{ApiError, BodyLimit, bearer_matches, read_limited};
use crate::state::AppState;
use crate::store::{Enqueued, NewEvent, Source};

/// Most events in one ingest request, as at Pinterest.
pub const MAX_EVENTS: usize = pincapi_core::pinterest::MAX_BATCH;

/// One rejected or warned event.
#[derive(Debug, Serialize)]
pub struct IndexedIssue {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// The answer to an ingest request.
#[derive(Debug, Serialize, Default)]
pub struct IngestResponse {
    /// Events stored now.
    pub accepted: usize,
    /// Events already stored earlier (same ad account and event_id); not stored again. While
    /// the stored event is unsent, a repeat's extra match keys are merged into it.
    pub duplicates: usize,
    /// Events refused; see `errors`.
    pub rejected: usize,
    /// Per-index problems of refused events.
    pub errors: Vec<IndexedIssue>,
    /// Per-index problems with keys that were dropped from accepted events.
    pub warnings: Vec<IndexedIssue>,
}

/// `POST /v1/events`: to the default (first configured) ad account.
pub async fn post_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = authenticated_body(&state, &headers, body).await?;
    let Some(account) = state.default_account.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_account",
            "no Pinterest ad account is configured",
        ));
    };
    ingest(&state, &headers, &account, &body, "/v1/events").await
}

/// `POST /v1/ad_accounts/{id}/events`: to a named configured ad account.
pub async fn post_account(
    State(state): State<AppState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The key first, so an unknown account says nothing to a caller without it.
    let body = authenticated_body(&state, &headers, body).await?;
    if !state.delivery.has_account(&account) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_ad_account",
            "this ad account is not configured in the gateway",
        ));
    }
    ingest(
        &state,
        &headers,
        &account,
        &body,
        "/v1/ad_accounts/{ad_account_id}/events",
    )
    .await
}

/// The body of a request that carries the ingest key; a request without it is refused before
/// any of its body is read.
pub(crate) async fn authenticated_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
    if !bearer_matches(headers, &state.config.api_key) {
        return Err(ApiError::unauthorized());
    }
    let limit = BodyLimit {
        limit: state.config.ingest.max_body_bytes,
        key: "ingest.max_body_bytes",
        hint: "",
        timeout: std::time::Duration::from_secs(state.config.server.body_timeout_secs),
    };
    read_limited(headers, body, limit).await
}

async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    account: &str,
    body: &[u8],
    route: &'static str,
) -> Result<Response, ApiError> {
    let processed = match process(state, headers, account, body, route, false).await? {
        Ok(p) => p,
        Err(shed) => return Ok(shed),
    };
    let mut resp = IngestResponse::default();
    for (index, v) in processed.into_iter().enumerate() {
        match v {
            Verdict::Accepted(w) => {
                resp.accepted += 1;
                push_issues(&mut resp.warnings, index, w);
            }
            Verdict::Duplicate(w) => {
                resp.duplicates += 1;
                push_issues(&mut resp.warnings, index, w);
            }
            Verdict::Rejected(e) => {
                resp.rejected += 1;
                push_issues(&mut resp.errors, index, e);
            }
        }
    }
    let status = if resp.accepted + resp.duplicates > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(resp)).into_response())
}

/// What became of one event of a request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Stored now, with the keys dropped on the way.
    Accepted(Vec<FieldIssue>),
    /// Stored before (same ad account and event_id).
    Duplicate(Vec<FieldIssue>),
    /// Refused, with why.
    Rejected(Vec<FieldIssue>),
}

/// Checks, maps and stores the events of `body` for `account`, each on its own: one verdict
/// per event, in order. `Err(response)` when the gateway sheds load (nothing is stored);
/// `test` sends the stored events with Pinterest's test flag.
pub(crate) async fn process(
    state: &AppState,
    headers: &HeaderMap,
    account: &str,
    body: &[u8],
    route: &'static str,
    test: bool,
) -> Result<Result<Vec<Verdict>, Response>, ApiError> {
    if !bearer_matches(headers, &state.config.api_key) {
        return Err(ApiError::unauthorized());
    }
    // Over ingest.max_queue_depth: refuse before any work; nothing of the request is stored.
    if let Err(shed) = state.backpressure.admit(&state.metrics, route) {
        return Ok(Err(shed.into_response()));
    }
    let raw_events = split_events(body)?;
    let window = TimeWindow {
        now: state.clock.now_ms() / 1000,
        max_age: state.config.ingest.max_event_age_secs,
        max_future_skew: TimeWindow::DEFAULT_MAX_FUTURE_SKEW,
    };
    let country = state.config.ingest.default_country.as_deref();
    let received_at_ms = state.clock.now_ms();

    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(raw_events.len());
    let mut new_events = Vec::with_capacity(raw_events.len());
    // For each stored event: its index and its warnings.
    let mut stored_at: Vec<(usize, Vec<FieldIssue>)> = Vec::new();
    for (index, raw) in raw_events.iter().enumerate() {
        // Plain serde first; only a failing event is parsed again to learn the field path,
        // which costs a quarter of the parse when done for every event.
        let parsed = serde_json::from_str::<IngestEvent>(raw.get()).or_else(|_| {
            let de = &mut serde_json::Deserializer::from_str(raw.get());
            serde_path_to_error::deserialize::<_, IngestEvent>(de)
        });
        let ev = match parsed {
            Ok(ev) => ev,
            Err(e) => {
                verdicts.push(Some(Verdict::Rejected(vec![FieldIssue::new(
                    path_name(&e.path().to_string()),
                    serde_reason(e.inner()),
                )])));
                continue;
            }
        };
        match ev.into_event(&window, country) {
            Ok(accepted) => {
                let mut new =
                    NewEvent::from_event(account, &accepted.event, Source::Api, received_at_ms);
                new.test |= test;
                if new.payload.len() > pinterest::MAX_EVENT_BYTES {
                    verdicts.push(Some(Verdict::Rejected(vec![FieldIssue::new(
                        "event",
                        format!(
                            "is {} bytes as Pinterest would receive it; at most {} (long \
                             custom_data.contents or content names)",
                            new.payload.len(),
                            pinterest::MAX_EVENT_BYTES
                        ),
                    )])));
                    continue;
                }
                stored_at.push((index, accepted.warnings));
                verdicts.push(None);
                new_events.push(new);
            }
            Err(issues) => verdicts.push(Some(Verdict::Rejected(issues))),
        }
    }
    let rejected = raw_events.len() - new_events.len();
    state.metrics.inc(
        "pincapi_events_rejected_total",
        &[("source", Source::Api.as_str())],
        rejected as u64,
    );

    let mut counts: BTreeMap<(&'static str, Enqueued), u64> = BTreeMap::new();
    if !new_events.is_empty() {
        let names: Vec<&'static str> = new_events.iter().map(|e| e.event_name.as_str()).collect();
        let outcomes = state.store.enqueue(new_events).await.map_err(|e| {
            tracing::error!(error = %e, "Could not store events");
            ApiError::unavailable(
                "the event store is unavailable; nothing from this request was stored",
            )
        })?;
        let mut accepted = 0;
        for ((name, outcome), (index, warnings)) in names.into_iter().zip(outcomes).zip(stored_at) {
            verdicts[index] = Some(match outcome {
                Enqueued::Accepted => {
                    accepted += 1;
                    Verdict::Accepted(warnings)
                }
                Enqueued::Duplicate | Enqueued::Merged => Verdict::Duplicate(warnings),
            });
            *counts.entry((name, outcome)).or_default() += 1;
        }
        if accepted > 0 {
            state.delivery.wake(account);
        }
    }
    for ((name, outcome), n) in counts {
        let metric = match outcome {
            Enqueued::Accepted => "pincapi_events_ingested_total",
            Enqueued::Duplicate | Enqueued::Merged => "pincapi_events_duplicate_total",
        };
        state.metrics.inc(
            metric,
            &[
                ("ad_account_id", account),
                ("event_name", name),
                ("source", Source::Api.as_str()),
            ],
            n,
        );
    }
    Ok(Ok(verdicts
        .into_iter()
        .map(|v| {
            v.unwrap_or_else(|| {
                Verdict::Rejected(vec![FieldIssue::new(
                    "event",
                    "was not stored; send it again",
                )])
            })
        })
        .collect()))
}

/// Splits a body into its raw events: a single event object or `{"data": [...]}`. Events
/// stay raw here so each is parsed once, on its own, with its own errors.
/// A JSON object's top-level keys in order, repeats kept (a map would keep the last one and
/// hide that a key came twice).
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'a> TopLevel<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first key that appears twice.
    fn repeated(&self) -> Option<&str> {
        let mut seen = std::collections::HashSet::new();
        self.0
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !seen.insert(*k))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Keys<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut keys = Vec::new();
                while let Some(entry) = m.next_entry::<String, &'de RawValue>()? {
                    keys.push(entry);
                }
                Ok(TopLevel(keys))
            }
        }
        d.deserialize_map(Keys(std::marker::PhantomData))
    }
}

fn split_events(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_json", "the body is not UTF-8 text"))?;
    let top: TopLevel<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        } else {
            ApiError::bad_request(
                "invalid_shape",
                "the body must be one event object or {\"data\": [events]}",
            )
        }
    })?;
    if let Some(key) = top.repeated() {
        return Err(ApiError::bad_request(
            "invalid_shape",
            format!("{key}: the key appears more than once; send it once"),
        ));
    }
    let events = match top.get("data") {
        Some(data) => {
            if top.0.len() > 1 {
                return Err(ApiError::bad_request(
                    "invalid_shape",
                    "a batch must have only the key \"data\"",
                ));
            }
            serde_json::from_str::<Vec<&RawValue>>(data.get()).map_err(|_| {
                ApiError::bad_request("invalid_shape", "data: must be an array of event objects")
            })?
        }
        None => vec![serde_json::from_str::<&RawValue>(text).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        })?],
    };
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_shape",
            "data: must hold at least one event",
        ));
    }
    if events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "data: at most {MAX_EVENTS} events per request, got {}",
                events.len()
            ),
        ));
    }
    Ok(events)
}

fn push_issues(out: &mut Vec<IndexedIssue>, index: usize, issues: Vec<FieldIssue>) {
    out.extend(issues.into_iter().map(|i| IndexedIssue {
        index,
        field: i.field,
        reason: i.reason,
    }));
}

/// serde_path_to_error prints the root as `.`; say `event` instead.
fn path_name(p: &str) -> String {
    if p == "." || p.is_empty() {
        "event".to_owned()
    } else {
        p.to_owned()
    }
}

/// serde's message without the value it found (it may be personal data) and without its
/// "at line 1 column 57" suffix, which means nothing to a caller who sent a batch.
fn serde_reason(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" at line ") {
        Some(i) => &s[..i],
        None => &s,
    };
    pincapi_core::ingest::redact_serde_message(s)
}
