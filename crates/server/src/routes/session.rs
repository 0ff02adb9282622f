//! The admin's sign-in, shared by the dashboard and `/api/quality`: the admin key as a bearer
//! token, or the session cookie the dashboard's sign-in form sets (see [`crate::sign_in`]).

use crate::api_error::bearer_matches;
use crate::state::AppState;
use axum::http::{HeaderMap, header};

/// The session cookie's name.
pub const COOKIE: &str = "pincapi_dashboard";

/// How long a session lasts, seconds.
pub const SESSION_SECS: i64 = crate::sign_in::SESSION_MS / 1000;

/// Whether the request carries the admin key as a bearer token or a valid session cookie.
pub fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let key = &state.config.admin_key;
    if bearer_matches(headers, key) {
        return true;
    }
    let now = state.clock.now_ms();
    session_cookie(headers).is_some_and(|s| state.sign_ins.valid(key, s, now))
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// A `Set-Cookie` value carrying `session`: HTTP only, same site, and `Secure`, so a browser
/// sends it over HTTPS only (and to a loopback address, which browsers count as secure).
pub fn set_cookie(session: &str) -> String {
    format!("{COOKIE}={session}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}")
}

/// A `Set-Cookie` value that ends the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}
