//! Pinterest's OAuth, as the sandbox plays it when [`SandboxOptions::oauth_app`] is set:
//!
//! - `GET /oauth/` (Pinterest's authorize page, `https://www.pinterest.com/oauth/`): approves
//!   at once and redirects to `redirect_uri` with `code` and `state`;
//! - `POST /v5/oauth/token` (HTTP Basic with the app id and secret, form-encoded):
//!   `authorization_code` and `refresh_token` grants; access tokens expire after
//!   `token_lifetime_secs`, and every refresh hands out a new refresh token (continuous
//!   refresh); the one it replaced stays usable until the new one is used;
//! - `POST /v5/oauth/conversion_token` (an access token with `ads:write`): a conversion token
//!   the events endpoint then accepts;
//! - `GET /v5/ad_accounts` (`ads:read`): the accounts of [`OAuthApp::ad_accounts`].
//!
//! In this mode the Ads API routes accept only access tokens it issued and that have not
//! expired, and the events endpoint only conversion tokens it minted (or the configured
//! `token`).
//!
//! [`SandboxOptions::oauth_app`]: super::SandboxOptions::oauth_app

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::Sandbox;
use super::api::{ApiError, bearer_token};

/// The Pinterest app the sandbox knows.
#[derive(Clone)]
pub struct OAuthApp {
    pub app_id: String,
    pub app_secret: String,
    /// Access tokens expire after this long (Pinterest: 30 days).
    pub token_lifetime_secs: i64,
    /// The ad accounts the app's user reaches.
    pub ad_accounts: Vec<String>,
}

/// Tokens the sandbox issued.
#[derive(Debug, Default)]
pub(super) struct OAuthState {
    /// Authorization codes not yet exchanged, with the scopes asked for.
    codes: HashMap<String, String>,
    /// Access token → (expiry in Unix ms, scopes).
    access: HashMap<String, (i64, String)>,
    /// Refresh token → (scopes, replaced by, used up).
    refresh: HashMap<String, (String, Option<String>, bool)>,
    conversion: Vec<String>,
    /// Grants answered 200, by grant type.
    pub(super) grants: HashMap<String, usize>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn random(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn form(text: &str) -> HashMap<String, String> {
    crate::shopify::install::form_pairs(text)
        .into_iter()
        .collect()
}

impl Sandbox {
    /// How many tokens a grant (`authorization_code`, `refresh_token`) has issued.
    pub fn oauth_grants(&self, grant: &str) -> usize {
        super::lock(&self.inner.oauth)
            .grants
            .get(grant)
            .copied()
            .unwrap_or(0)
    }

    /// Token requests refused so far: a grant with an unknown or used code, or an unknown
    /// or replaced refresh token.
    pub fn refused_token_requests(&self) -> usize {
        self.oauth_grants("refused")
    }

    /// Ends every access token issued so far (the next Ads API call with one is a 401).
    pub fn revoke_access_tokens(&self) {
        super::lock(&self.inner.oauth).access.clear();
    }

    /// The scopes of an access token the sandbox issued and that has not expired.
    pub(super) fn issued_scopes(&self, token: &str) -> Option<String> {
        let state = super::lock(&self.inner.oauth);
        state
            .access
            .get(token)
            .filter(|(expires, _)| now_ms() < *expires)
            .map(|(_, scopes)| scopes.clone())
    }

    /// Whether `token` is a conversion token the sandbox minted.
    pub(super) fn minted(&self, token: &str) -> bool {
        super::lock(&self.inner.oauth)
            .conversion
            .iter()
            .any(|t| t == token)
    }

    fn issue(&self, app: &OAuthApp, scopes: &str) -> serde_json::Value {
        let access = random("pina_");
        let refresh = random("pinr_");
        let mut state = super::lock(&self.inner.oauth);
        state.access.insert(
            access.clone(),
            (now_ms() + app.token_lifetime_secs * 1000, scopes.to_owned()),
        );
        state
            .refresh
            .insert(refresh.clone(), (scopes.to_owned(), None, false));
        let refresh_life = 60 * 86_400;
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": app.token_lifetime_secs,
            "refresh_token_expires_in": refresh_life,
            "refresh_token_expires_at": now_ms() / 1000 + refresh_life,
            "scope": scopes,
        })
    }
}

/// `GET /oauth/`: approves at once.
pub(super) async fn authorize(
    State(sandbox): State<Sandbox>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = form(query.as_deref().unwrap_or(""));
    let Some(app) = sandbox.options().oauth_app.clone() else {
        return (StatusCode::NOT_FOUND, "this sandbox runs without --oauth").into_response();
    };
    if q.get("client_id") != Some(&app.app_id)
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (
            StatusCode::BAD_REQUEST,
            "client_id or response_type is wrong",
        )
            .into_response();
    }
    let Some(redirect) = q.get("redirect_uri").filter(|r| r.starts_with("http")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is missing").into_response();
    };
    let code = random("");
    let scopes = q.get("scope").cloned().unwrap_or_default();
    super::lock(&sandbox.inner.oauth)
        .codes
        .insert(code.clone(), scopes);
    let state = q.get("state").cloned().unwrap_or_default();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect}{sep}code={code}&state={}",
        crate::shopify::install::percent_encode(&state)
    );
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `POST /v5/oauth/token`.
pub(super) async fn token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(app) = sandbox.options().oauth_app.clone() else {
        return ApiError::unauthorized().into_response();
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if basic.as_deref() != Some(&format!("{}:{}", app.app_id, app.app_secret)) {
        return ApiError::unauthorized().into_response();
    }
    let f = form(&String::from_utf8_lossy(&body));
    let grant = f.get("grant_type").cloned().unwrap_or_default();
    let scopes = match grant.as_str() {
        "authorization_code" => {
            let code = f.get("code").cloned().unwrap_or_default();
            let known = super::lock(&sandbox.inner.oauth).codes.remove(&code);
            match known {
                Some(s) => s,
                None => return bad(&sandbox, "Invalid authorization code"),
            }
        }
        "refresh_token" => {
            let given = f.get("refresh_token").cloned().unwrap_or_default();
            let known = super::lock(&sandbox.inner.oauth)
                .refresh
                .get(&given)
                .cloned();
            let Some((scopes, _, used_up)) = known else {
                return bad(&sandbox, "Invalid refresh token");
            };
            if used_up {
                return bad(&sandbox, "Refresh token was replaced");
            }
            let mut state = super::lock(&sandbox.inner.oauth);
            // Using a token ends the one it replaced.
            let replaced: Vec<String> = state
                .refresh
                .iter()
                .filter(|(_, v)| v.1.as_deref() == Some(given.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in replaced {
                if let Some(v) = state.refresh.get_mut(&k) {
                    v.2 = true;
                }
            }
            scopes
        }
        _ => return bad(&sandbox, "Unsupported grant_type"),
    };
    let mut answer = sandbox.issue(&app, &scopes);
    answer["response_type"] = json!(grant);
    {
        let mut state = super::lock(&sandbox.inner.oauth);
        if grant == "refresh_token" {
            let given = f.get("refresh_token").cloned().unwrap_or_default();
            let new = answer["refresh_token"].as_str().unwrap_or("").to_owned();
            if let Some(v) = state.refresh.get_mut(&given) {
                v.1 = Some(new);
            }
        }
        *state.grants.entry(grant).or_default() += 1;
    }
    (StatusCode::OK, Json(answer)).into_response()
}

fn bad(sandbox: &Sandbox, message: &str) -> Response {
    // Counted, so a test can say no refresh was ever refused.
    *super::lock(&sandbox.inner.oauth)
        .grants
        .entry("refused".to_owned())
        .or_default() += 1;
    ApiError::new(StatusCode::BAD_REQUEST, 1, message.to_owned()).into_response()
}

/// The scopes of the request's access token, or the 401/403 to answer.
fn scoped(sandbox: &Sandbox, headers: &HeaderMap, scope: &str) -> Result<(), ApiError> {
    let given = bearer_token(headers).ok_or_else(ApiError::unauthorized)?;
    let scopes = sandbox
        .issued_scopes(given)
        .ok_or_else(ApiError::unauthorized)?;
    if scopes.split([',', ' ']).any(|s| s == scope) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            3,
            format!(
                "Not authorized to access the user associated with this token. Missing scope: \
                 {scope}."
            ),
        ))
    }
}

/// `POST /v5/oauth/conversion_token`.
pub(super) async fn conversion_token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = scoped(&sandbox, &headers, "ads:write") {
        return e.into_response();
    }
    let token = random("pina_conv_");
    super::lock(&sandbox.inner.oauth)
        .conversion
        .push(token.clone());
    Json(json!({"access_token": token, "token_type": "conversion"})).into_response()
}

/// `GET /v5/ad_accounts`.
pub(super) async fn ad_accounts(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    if let Err(e) = scoped(&sandbox, &headers, "ads:read") {
        return e.into_response();
    }
    let accounts = sandbox
        .options()
        .oauth_app
        .as_ref()
        .map(|a| a.ad_accounts.clone())
        .unwrap_or_default();
    let items: Vec<serde_json::Value> = accounts
        .iter()
        .map(|id| {
            json!({"id": id, "name": format!("Sandbox account {id}"), "country": "US",
                   "currency": "USD", "owner": {"username": "sandbox"},
                   "permissions": ["OWNER"], "created_time": 1_700_000_000})
        })
        .collect();
    Json(json!({"items": items, "bookmark": null})).into_response()
}
