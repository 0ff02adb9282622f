//! `GET /dashboard` (the quality dashboard) and `POST /dashboard/login` (its sign-in form).
//!
//! Signing in with the admin key sets an HttpOnly, SameSite=Strict session cookie whose value
//! is an HMAC-SHA256 of a fixed label under the admin key: it proves the key was known without
//! being the key, and changing the admin key ends every session. Scripts send the admin key
//! as `Authorization: Bearer` instead.

use axum::Form;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::quality::ReportQuery;
use super::session::{authorized, clear_cookie, session_cookie, set_cookie};
use crate::browser::collector::client_ip;
use crate::config::browser::canonical;
use crate::quality::dashboard;
use crate::state::AppState;

/// What every answer of the dashboard and `/api/quality` carries: the page is never framed
/// (clickjacking), runs no script and loads nothing from elsewhere (the charts are inline
/// SVG, the style inline), and neither the page nor the figures are kept in a cache.
pub async fn protect(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The sign-in form's body.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub key: String,
}

/// `GET /dashboard[?since=...][&account=...]`: the page (the last 7 days by default, as
/// `/api/quality`), or the sign-in form with 401.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, Html(dashboard::login_page(None))).into_response();
    }
    // The same default period as `/api/quality` and `pincapi report`, so the figures agree.
    match super::quality::build(&state, q.since.as_deref(), q.account.as_deref()).await {
        Ok(report) => {
            let setup = state
                .setup
                .get(&state.config, &state.store, state.clock.now_ms())
                .await;
            Html(dashboard::render(&report, &setup)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /dashboard/login`: sets a new session cookie and goes to the dashboard. Wrong keys
/// are counted per client address; past the limit the answer is 429 until the minute is over.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let now = state.clock.now_ms();
    let address = canonical(client_ip(peer.ip(), &headers, &state.config.browser));
    if let Err(t) = state.sign_ins.admit(address, now) {
        // Without the address: an IP address is personal data.
        tracing::warn!(
            "Dashboard sign-ins refused for the rest of the minute: too many wrong keys"
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, t.retry_after_secs.to_string())],
            Html(dashboard::login_page(Some(
                "Too many wrong keys: try again in a minute.",
            ))),
        )
            .into_response();
    }
    let key = &state.config.admin_key;
    let right = !key.is_empty() && bool::from(form.key.as_bytes().ct_eq(key.expose().as_bytes()));
    if !right {
        state.sign_ins.failed(address, now);
        return (
            StatusCode::UNAUTHORIZED,
            Html(dashboard::login_page(Some("That is not the admin key."))),
        )
            .into_response();
    }
    let nonce: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let session = state.sign_ins.open(key, &nonce, now);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, set_cookie(&session)),
            (header::LOCATION, "/dashboard".to_owned()),
        ],
    )
        .into_response()
}

/// `POST /dashboard/logout`: ends this session (in this process) and clears its cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(session) = session_cookie(&headers) {
        state.sign_ins.close(session, state.clock.now_ms());
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, clear_cookie()),
            (header::LOCATION, "/dashboard".to_owned()),
        ],
    )
        .into_response()
}
