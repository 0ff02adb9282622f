//! The admin's sign-in, shared by the dashboard and `/api/quality`: the admin key as a bearer
//! token, or the session cookie the dashboard's sign-in form sets (an HMAC-SHA256 of a fixed
//! label under the admin key: it proves the key was known without being the key, and changing
//! the admin key ends every session).

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api_error::bearer_matches;
use crate::config::Secret;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "pincapi_dashboard";

/// How long a session lasts, seconds.
pub const SESSION_SECS: u64 = 12 * 3600;

/// Whether the request carries the admin key as a bearer token or a valid session cookie.
pub fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let key = &state.config.admin_key;
    if bearer_matches(headers, key) {
        return true;
    }
    if key.is_empty() {
        return false;
    }
    let expected = session_value(key);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|v| v.as_bytes().ct_eq(expected.as_bytes()).into())
}

/// The session cookie's value for `key`.
pub fn session_value(key: &Secret) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"pincapi dashboard session v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
