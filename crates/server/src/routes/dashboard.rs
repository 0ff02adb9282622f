//! `GET /dashboard` (the quality dashboard) and `POST /dashboard/login` (its sign-in form).
//!
//! Signing in with the admin key sets an HttpOnly, SameSite=Strict session cookie whose value
//! is an HMAC-SHA256 of a fixed label under the admin key: it proves the key was known without
//! being the key, and changing the admin key ends every session. Scripts send the admin key
//! as `Authorization: Bearer` instead.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::quality::ReportQuery;
use super::session::{COOKIE, SESSION_SECS, authorized, session_value};
use crate::quality::dashboard;
use crate::state::AppState;

/// The sign-in form's body.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub key: String,
}

/// `GET /dashboard[?since=...]`: the page (the last 30 days by default), or the sign-in form
/// with 401.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, Html(dashboard::login_page(None))).into_response();
    }
    // A month by default: the charts are about trends.
    match super::quality::build(&state, Some(q.since.as_deref().unwrap_or("30d"))).await {
        Ok(report) => Html(dashboard::render(&report)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /dashboard/login`: sets the session cookie and goes to the dashboard.
pub async fn login(State(state): State<AppState>, Form(form): Form<Login>) -> Response {
    let key = &state.config.admin_key;
    let right = !key.is_empty() && bool::from(form.key.as_bytes().ct_eq(key.expose().as_bytes()));
    if !right {
        return (
            StatusCode::UNAUTHORIZED,
            Html(dashboard::login_page(Some("That is not the admin key."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}",
        session_value(key)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/dashboard".to_owned()),
        ],
    )
        .into_response()
}
