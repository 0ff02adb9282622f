//! Pinterest wire types, batch building and response classification.
//!
//! [`classify`] turns one HTTP answer to `POST /v5/ad_accounts/{id}/events` into a
//! [`BatchAnswer`], once, so the delivery worker only acts on data: per-event results (from a
//! 200 or from a 422's `details`), a retry with its delay, an authorisation failure that stops
//! the account, or an invalid request that must be split to find the bad event.
//! [`retry_delay`] is the retry schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most events Pinterest takes in one request.
pub const MAX_BATCH: usize = 1000;

/// The largest event the gateway takes through its API, as Pinterest would receive it. The
/// spec states no limit; a real purchase with a hundred items is about 20 KB.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The default of the largest request body the delivery worker sends
/// (`delivery.max_request_bytes`): a batch is cut into requests of at most this many bytes
/// (Pinterest's own request-size limits apply; one event larger than this goes alone).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Cuts `sizes` (each event's payload length, in order) into runs whose batch body stays
/// within `max_bytes`; returns the run lengths. An event too large on its own is a run of
/// one.
pub fn request_runs(sizes: &[usize], max_bytes: usize) -> Vec<usize> {
    // `{"data":[` + `]}` and a comma between events.
    const WRAPPER: usize = 11;
    let mut runs = Vec::new();
    let (mut n, mut bytes) = (0usize, WRAPPER);
    for &size in sizes {
        if n > 0 && bytes + 1 + size > max_bytes {
            runs.push(n);
            (n, bytes) = (0, WRAPPER);
        }
        bytes += size + usize::from(n > 0);
        n += 1;
    }
    if n > 0 {
        runs.push(n);
    }
    runs
}

/// `ConversionApiResponse`: the 200 body, and the `details` of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse {
    pub num_events_received: i64,
    pub num_events_processed: i64,
    pub events: Vec<EventResult>,
}

/// One entry of `events[]`, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    pub status: EventStatus,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub warning_message: Option<String>,
}

/// `processed` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Processed,
    Failed,
}

/// Pinterest's `Error` body (400, 401, 403, 429, 503, default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub message: String,
}

/// Pinterest's `DetailedError` body (422).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetailedError {
    pub code: i64,
    pub message: String,
    pub details: serde_json::Value,
}

/// Builds `{"data":[...]}` from events already serialised as JSON objects. The store keeps
/// each event as the exact JSON Pinterest receives, so a batch is a concatenation.
pub fn batch_body<'a>(events: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from("{\"data\":[");
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push_str("]}");
    body
}

/// What became of one event in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Pinterest processed it; a warning is kept for the operator.
    Delivered { warning: Option<String> },
    /// Pinterest refused it; re-sending the same bytes cannot help.
    Failed { message: String },
}

/// What to do after one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchAnswer {
    /// Per-event results, one per event sent, in order.
    PerEvent(Vec<EventOutcome>),
    /// Nothing was recorded; send the same events again later. `after` is Pinterest's
    /// `Retry-After` when it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
        rate_limited: bool,
    },
    /// The token or its rights are wrong (401/403): stop this ad account until an operator
    /// acts; retrying the same token will not help.
    AuthFailed { status: u16, message: String },
    /// The request itself is wrong for this account (404, 405, 415: a wrong ad account id or
    /// base URL): stop the account and keep the events; no event is at fault.
    Misconfigured { status: u16, message: String },
    /// The request as a whole was refused (400). With more than one event the worker splits
    /// the batch to isolate the offending event; a single event is failed with the message.
    Invalid { message: String },
    /// The answer is not Pinterest's: a 2xx whose body is not a `ConversionApiResponse` with
    /// exactly one result per event sent (garbage, empty, an HTML page, too few or too many
    /// results), or a redirect. Nothing is known to be recorded, so nothing counts as
    /// delivered: the events are tried again on the retry schedule. A wrong base URL, a
    /// captive proxy or an API change looks like this.
    Unreadable { status: u16, reason: String },
}

/// Classifies an answer. `sent` is how many events the request carried; `retry_after` is the
/// raw `Retry-After` header if any.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], sent: usize) -> BatchAnswer {
    let message = || error_message(body, status);
    match status {
        // Only Pinterest's own answer, one result per event, confirms a delivery.
        200..=299 => match serde_json::from_slice::<ApiResponse>(body) {
            Ok(r) if r.events.len() != sent => BatchAnswer::Unreadable {
                status,
                reason: format!(
                    "HTTP {status} with {} results for {sent} events sent",
                    r.events.len()
                ),
            },
            Ok(r) => per_event(r, sent).unwrap_or_else(|| unreadable(status, body)),
            Err(_) => unreadable(status, body),
        },
        300..=399 => BatchAnswer::Unreadable {
            status,
            reason: format!("HTTP {status}, a redirect (redirects are never followed)"),
        },
        422 => {
            let per = serde_json::from_slice::<DetailedError>(body)
                .ok()
                .and_then(|d| serde_json::from_value::<ApiResponse>(d.details).ok())
                .and_then(|r| per_event(r, sent));
            match per {
                Some(outcome) => outcome,
                None => {
                    let m = message();
                    BatchAnswer::PerEvent(vec![EventOutcome::Failed { message: m }; sent])
                }
            }
        }
        401 | 403 => BatchAnswer::AuthFailed {
            status,
            message: message(),
        },
        404 | 405 | 415 => BatchAnswer::Misconfigured {
            status,
            message: message(),
        },
        400 | 413 => BatchAnswer::Invalid { message: message() },
        429 => BatchAnswer::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("rate limited: {}", message()),
            rate_limited: true,
        },
        _ => BatchAnswer::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP {status}: {}", message()),
            rate_limited: false,
        },
    }
}

/// Parses `Retry-After` given in seconds. (The HTTP-date form is not used by Pinterest's
/// documented answers; it is ignored and the backoff schedule applies instead.)
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The retry schedule, front-loaded into the first hour: 11 tries within about 56 minutes
/// (the first send plus 10 retries), then 5 more spread over 6.5 hours, 16 in all (about 7.4
/// hours) before an event is dead-lettered. The
/// event's age bound (7 days) ends it earlier if it applies. `attempt` counts failed attempts
/// so far (1 after the first failure); `jitter` in `[0, 1)` spreads each delay by ±20 %.
/// Returns `None` when the event should not be tried again.
pub fn retry_delay(attempt: u32, jitter: f64) -> Option<Duration> {
    const SCHEDULE_SECS: [u64; 15] = [
        5, 15, 30, 60, 120, 240, 480, 600, 900, 900, 1800, 3600, 3600, 7200, 7200,
    ];
    let base = *SCHEDULE_SECS.get(attempt.checked_sub(1)? as usize)?;
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    Some(Duration::from_millis(
        (base as f64 * 1000.0 * factor) as u64,
    ))
}

/// The number of attempts after which an event is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 16;

fn per_event(r: ApiResponse, sent: usize) -> Option<BatchAnswer> {
    if r.events.len() != sent {
        return None;
    }
    Some(BatchAnswer::PerEvent(
        r.events
            .into_iter()
            .map(|e| match e.status {
                EventStatus::Processed => EventOutcome::Delivered {
                    warning: e.warning_message.filter(|w| !w.is_empty()),
                },
                EventStatus::Failed => EventOutcome::Failed {
                    message: e
                        .error_message
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "failed without a message".to_owned()),
                },
            })
            .collect(),
    ))
}

/// A 2xx whose body is not Pinterest's response, described without quoting more than its
/// start (it may be a whole HTML page).
fn unreadable(status: u16, body: &[u8]) -> BatchAnswer {
    let kind = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => "an empty body".to_owned(),
        Some(b'<') => "an HTML or XML page".to_owned(),
        Some(_) => {
            let start: String = String::from_utf8_lossy(&body[..body.len().min(60)])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            format!("a body that is not Pinterest's response ({start:?})")
        }
    };
    BatchAnswer::Unreadable {
        status,
        reason: format!("HTTP {status} with {kind}"),
    }
}

fn error_message(body: &[u8], status: u16) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => format!("{} (code {})", e.message, e.code),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                text.chars().take(300).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, retry_after: Option<&str>, body: &str, sent: usize, want: BatchAnswer) {
        assert_eq!(classify(status, retry_after, body.as_bytes(), sent), want);
    }

    #[test]
    fn a_200_yields_one_outcome_per_event_in_order() {
        check(
            200,
            None,
            r#"{"num_events_received":2,"num_events_processed":1,"events":[
                {"status":"processed","error_message":null,"warning_message":"odd field"},
                {"status":"failed","error_message":"bad hash","warning_message":null}]}"#,
            2,
            BatchAnswer::PerEvent(vec![
                EventOutcome::Delivered {
                    warning: Some("odd field".into()),
                },
                EventOutcome::Failed {
                    message: "bad hash".into(),
                },
            ]),
        );
    }

    #[test]
    fn requests_are_cut_by_bytes_and_a_large_event_goes_alone() {
        assert_eq!(request_runs(&[], 100), Vec::<usize>::new());
        assert_eq!(request_runs(&[10, 10, 10], 100), [3]);
        // 11 + 40 + 1 + 40 = 92 fits; a third would not.
        assert_eq!(request_runs(&[40, 40, 40], 100), [2, 1]);
        assert_eq!(request_runs(&[500, 10, 10], 100), [1, 2]);
        let body = batch_body(["{}", "{}"].iter().copied());
        assert_eq!(body.len(), 11 + 2 + 1 + 2);
    }

    #[test]
    fn a_2xx_that_is_not_one_result_per_event_confirms_nothing() {
        let one = r#"{"num_events_received":1,"num_events_processed":1,"events":[{"status":"processed"}]}"#;
        for (status, body, sent, words) in [
            (200, "", 1, "an empty body"),
            (200, "   \n", 1, "an empty body"),
            (
                200,
                "<html><body>Sign in to the Wi-Fi</body></html>",
                1,
                "HTML",
            ),
            (200, "garbage", 1, "not Pinterest's response"),
            (200, "{}", 1, "not Pinterest's response"),
            (200, one, 2, "1 results for 2 events"),
            (201, one, 0, "1 results for 0 events"),
            (302, "", 1, "redirect"),
            (307, one, 1, "redirect"),
        ] {
            match classify(status, None, body.as_bytes(), sent) {
                BatchAnswer::Unreadable { status: s, reason } => {
                    assert_eq!(s, status);
                    assert!(reason.contains(words), "{status} {body:?}: {reason}");
                }
                other => panic!("{status} {body:?}: {other:?}"),
            }
        }
        // A failed result is still a result: one per event is Pinterest's answer.
        let failed = r#"{"num_events_received":1,"num_events_processed":0,"events":[{"status":"failed","error_message":"bad"}]}"#;
        assert!(matches!(
            classify(200, None, failed.as_bytes(), 1),
            BatchAnswer::PerEvent(_)
        ));
    }

    #[test]
    fn a_422_is_read_from_its_details() {
        let body = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/pinterest/events-response.422-observed.json"
        ));
        let BatchAnswer::PerEvent(v) = classify(422, None, body.as_bytes(), 1) else {
            panic!("expected per-event outcome");
        };
        assert!(
            matches!(&v[0], EventOutcome::Failed { message } if message.contains("event_timestamp"))
        );
    }

    #[test]
    fn a_422_without_details_fails_every_event_with_the_message() {
        check(
            422,
            None,
            r#"{"code":1,"message":"nope"}"#,
            2,
            BatchAnswer::PerEvent(vec![
                EventOutcome::Failed {
                    message: "nope (code 1)".into()
                };
                2
            ]),
        );
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried() {
        check(
            429,
            Some("7"),
            r#"{"code":8,"message":"slow down"}"#,
            3,
            BatchAnswer::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "rate limited: slow down (code 8)".into(),
                rate_limited: true,
            },
        );
        assert!(matches!(
            classify(503, None, b"", 1),
            BatchAnswer::Retry {
                rate_limited: false,
                ..
            }
        ));
        assert!(matches!(
            classify(500, None, b"oops", 1),
            BatchAnswer::Retry { .. }
        ));
    }

    #[test]
    fn auth_failures_and_bad_requests_are_not_retried() {
        assert!(matches!(
            classify(
                401,
                None,
                br#"{"code":2,"message":"Authentication failed."}"#,
                1
            ),
            BatchAnswer::AuthFailed { status: 401, .. }
        ));
        assert!(matches!(
            classify(403, None, b"", 1),
            BatchAnswer::AuthFailed { status: 403, .. }
        ));
        assert!(matches!(
            classify(400, None, br#"{"code":1,"message":"bad"}"#, 5),
            BatchAnswer::Invalid { .. }
        ));
        assert!(matches!(
            classify(404, None, b"not found", 5),
            BatchAnswer::Misconfigured { status: 404, .. }
        ));
    }

    #[test]
    fn the_schedule_is_front_loaded_and_bounded() {
        let mid: Vec<u64> = (1..MAX_ATTEMPTS)
            .map(|a| retry_delay(a, 0.5).unwrap().as_secs())
            .collect();
        let first_hour: u64 = mid.iter().take(10).sum();
        assert!(first_hour < 3600, "{first_hour}");
        assert_eq!(retry_delay(MAX_ATTEMPTS, 0.5), None);
        assert_eq!(retry_delay(0, 0.5), None);
        assert_eq!(retry_delay(1, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(retry_delay(1, 1.0), Some(Duration::from_secs(6)));
    }

    #[test]
    fn batch_body_concatenates_events() {
        assert_eq!(batch_body(["{\"a\":1}", "{}"]), "{\"data\":[{\"a\":1},{}]}");
    }
}
