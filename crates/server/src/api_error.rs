//! The one error answer of the gateway's HTTP edge, and the constant-time bearer check every
//! authenticated route shares. Imports no feature.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// An error answer: `{"error": {"code": "...", "message": "..."}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong key: send Authorization: Bearer <key>",
        )
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        (self.status, body).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is larger than ingest.max_body_bytes",
            )
        } else {
            ApiError::new(r.status(), "bad_body", r.body_text())
        }
    }
}

/// The `Content-Length` a request declares, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// How a route reads its body: at most `limit` bytes (`key` names the setting, `hint` says
/// what a 413 means for the sender) within `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit<'a> {
    pub limit: usize,
    pub key: &'a str,
    pub hint: &'a str,
    pub timeout: std::time::Duration,
}

/// Reads a body within `l`. A declared `Content-Length` over the limit is refused before a
/// byte is read, nothing is reserved on its word (the buffer grows with what arrives), a body
/// that grows past the limit is a 413, one that breaks off a 400, one slower than the timeout
/// a 408.
pub async fn read_limited(
    headers: &HeaderMap,
    body: axum::body::Body,
    l: BodyLimit<'_>,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is larger than {} ({} bytes){}",
                l.key, l.limit, l.hint
            ),
        )
    };
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > l.limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = body;
        let mut buf =
            Vec::with_capacity(declared.map_or(8 * 1024, |n| n.min(INITIAL_BUFFER) as usize));
        while let Some(frame) = std::future::poll_fn(|cx| {
            axum::body::HttpBody::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await
        {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("bad_body", format!("the body could not be read: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > l.limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    match tokio::time::timeout(l.timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(body_timeout(l.timeout)),
    }
}

/// The most a body buffer reserves before its bytes arrive.
const INITIAL_BUFFER: u64 = 64 * 1024;

/// The answer to a body that did not arrive in time.
pub fn body_timeout(timeout: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the body did not arrive within server.body_timeout_secs ({} s); nothing was stored",
            timeout.as_secs()
        ),
    )
}

/// Whether the request carries `Authorization: Bearer <secret>`, compared in constant time.
/// An unset secret matches nothing.
pub fn bearer_matches(headers: &HeaderMap, secret: &Secret) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    token
        .trim()
        .as_bytes()
        .ct_eq(secret.expose().as_bytes())
        .into()
}
