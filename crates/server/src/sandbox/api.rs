//! Pieces every `/v5` endpoint shares: Pinterest's `Error` body, bearer-token auth, the
//! request gate (body limit, counting, recording) and path/query parameter helpers.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::{RecordedRequest, Sandbox};

/// Largest request body the sandbox reads. Pinterest's real limit is unpublished; this is
/// generous so that 1000 rich events (~1.5 KB each) always fit.
pub(super) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Pinterest's `Error` body (`components/schemas/Error`) plus the HTTP status and the
/// optional `Retry-After` header it travels with.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    status: StatusCode,
    code: i64,
    message: String,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i64,
    message: &'a str,
}

/// Codes and messages of the spec's examples for `events/create`; the 429 message is the
/// spec's text with its line break (a YAML folding artefact) turned into a space.
const INVALID: (i64, &str) = (4196, "The request was invalid.");
const AUTH_FAILED: (i64, &str) = (2, "Authentication failed.");
const FORBIDDEN: (i64, &str) = (29, "You are not permitted to access that resource.");
const RATE_LIMITED: (i64, &str) = (
    8,
    "This request exceeded a rate limit. This can happen if the client exceeds one of the \
     published rate limits within a short time window.",
);
const RAMPED_DOWN: (i64, &str) = (
    4197,
    "The endpoint has been ramped down and is currently not accepting any traffic.",
);

impl ApiError {
    pub(super) fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with the spec's code and a message naming the problem.
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID.0, message)
    }

    /// 401 exactly as the spec's example.
    pub(super) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, AUTH_FAILED.0, AUTH_FAILED.1)
    }

    /// 429 from the real limiter; always carries `Retry-After`.
    pub(super) fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED.0,
            RATE_LIMITED.1,
        )
        .with_retry_after(Some(retry_after_secs))
    }

    pub(super) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 404, "Not found")
    }

    /// The body Pinterest documents for `status` (the spec's example code and message when it
    /// has one), for fault injection. `message` replaces the example message.
    pub(super) fn for_status(status: u16, message: Option<String>) -> Self {
        // A status hyper cannot send as a final answer (1xx or out of range) is a mistake in
        // the fault script; answer 500 and say so instead of panicking or hanging the client.
        let Some(status_code) = StatusCode::from_u16(status)
            .ok()
            .filter(|s| !s.is_informational())
        else {
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                500,
                format!("Sandbox fault script asked for an unusable HTTP status {status}."),
            );
        };
        let (code, default_message) = match status {
            400 => INVALID,
            401 => AUTH_FAILED,
            403 => FORBIDDEN,
            404 => (404, "Not found"),
            429 => RATE_LIMITED,
            503 => RAMPED_DOWN,
            // The spec gives no example for other statuses (5xx is its `default`): use the
            // status as the code and the standard reason phrase as the message.
            _ => (
                i64::from(status),
                status_code.canonical_reason().unwrap_or("Unexpected error"),
            ),
        };
        Self::new(
            status_code,
            code,
            message.unwrap_or_else(|| default_message.to_owned()),
        )
    }

    pub(super) fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// JSON 404 for unknown paths.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// JSON 405 for a known `/v5` path with the wrong method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 405, "Method not allowed")
}

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive, as HTTP
/// says), or `None` when the header is missing, malformed or the token is empty.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware for authenticated `/v5` routes: 401 with the spec's body unless the bearer
/// token is acceptable (any non-empty token, or exactly the configured one).
pub(super) async fn require_bearer(
    State(sandbox): State<Sandbox>,
    request: Request,
    next: Next,
) -> Response {
    let accepted = match (bearer_token(request.headers()), &sandbox.options().token) {
        (None, _) => false,
        (Some(given), expected) if sandbox.options().oauth_app.is_some() => {
            sandbox.minted(given) || expected.as_deref() == Some(given)
        }
        (Some(_), None) => true,
        (Some(given), Some(expected)) => given == expected,
    };
    if accepted {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Checks an Ads API call's OAuth token: 401 when it is missing, unknown or the conversion
/// token; 403 when it lacks `scope` (e.g. `ads:write`).
pub(super) fn require_scope(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(), ApiError> {
    let Some(given) = bearer_token(headers) else {
        return Err(ApiError::unauthorized());
    };
    let options = sandbox.options();
    if options.token.as_deref() == Some(given) {
        return Err(ApiError::unauthorized());
    }
    if options.oauth_app.is_some() {
        // Playing OAuth: only tokens issued here, unexpired (or the listed static ones).
        if let Some(scopes) = sandbox.issued_scopes(given) {
            return if scopes.split([',', ' ']).any(|s| s == scope) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    FORBIDDEN.0,
                    format!("{} Missing scope: {scope}.", FORBIDDEN.1),
                ))
            };
        }
        if !options.oauth_tokens.iter().any(|t| t.token == given) {
            return Err(ApiError::unauthorized());
        }
    }
    if options.oauth_tokens.is_empty() {
        return Ok(());
    }
    match options.oauth_tokens.iter().find(|t| t.token == given) {
        None => Err(ApiError::unauthorized()),
        Some(t) if t.scopes.iter().any(|s| s == scope) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN.0,
            format!("{} Missing scope: {scope}.", FORBIDDEN.1),
        )),
    }
}

/// Outermost middleware of `/v5`: buffers the request body (with a size limit), counts the
/// request and, when recording is on, records it with its answer.
///
/// Buffering here means handlers can take `Bytes` cheaply and new endpoints are recorded
/// without doing anything.
pub(super) async fn gate(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    // Taken on arrival so recordings are in arrival order, not completion order.
    let seq = sandbox.next_request_seq();
    let (parts, body) = request.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);

    let (body_bytes, response) = match read_body(&parts.headers, body).await {
        Ok(bytes) => {
            let request = Request::from_parts(parts, Body::from(bytes.clone()));
            (Some(bytes), next.run(request).await)
        }
        Err(error) => (None, error.into_response()),
    };
    sandbox.count_request();
    if !sandbox.record_requests_enabled() {
        return response;
    }

    let body = match &body_bytes {
        Some(bytes) => json_or_text(bytes),
        None => Value::String("<request body not read>".to_owned()),
    };
    let (response_parts, response_body) = response.into_parts();
    // Our own answers are small in-memory JSON, so reading them back cannot really fail;
    // if it somehow does, the client gets an empty body rather than a dropped connection.
    let response_bytes = axum::body::to_bytes(response_body, usize::MAX)
        .await
        .unwrap_or_default();
    sandbox.record_request(
        seq,
        RecordedRequest {
            method,
            path,
            query,
            body,
            status: response_parts.status.as_u16(),
            response: json_or_text(&response_bytes),
        },
    );
    Response::from_parts(response_parts, Body::from(response_bytes))
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        // Without a Content-Length (chunked) an over-long body only shows up while reading.
        .map_err(|e| ApiError::bad_request(format!("The request body could not be read: {e}.")))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        413,
        format!("The request body exceeds the sandbox limit of {MAX_BODY_BYTES} bytes."),
    )
}

/// Parsed JSON, `null` for an empty body, or a JSON string of the (lossy UTF-8) text.
fn json_or_text(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The `ad_account_id` path parameter: digits only, at most 18 characters
/// (`components/parameters/path_ad_account_id`).
pub(super) fn ad_account_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| {
        ApiError::bad_request(format!("Invalid ad_account_id path parameter: {e}."))
    })?;
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "Invalid ad_account_id {:?}: it must be 1 to 18 digits.",
            truncate(&id, 40)
        )));
    }
    Ok(id)
}

/// The boolean query parameter `name` (`true`/`false`, case-insensitive); absent is `false`.
pub(super) fn bool_query(query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    let Some(query) = query else {
        return Ok(false);
    };
    let mut result = false;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        result = if value.eq_ignore_ascii_case("true") {
            true
        } else if value.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err(ApiError::bad_request(format!(
                "Invalid query parameter {name}={:?}: expected true or false.",
                truncate(value, 40)
            )));
        };
    }
    Ok(result)
}

/// At most `max` characters of `s`, so error messages quoting client input stay short.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}
