//! The redirect of Pinterest's authorize page, `GET /pinterest/callback?code=…&state=…`: on
//! `serve` (`{public_url}/pinterest/callback`) and on the loopback listener of
//! `pincapi pinterest connect --listen` for a first setup. The `state` must be one
//! `pinterest connect` recorded in the store (one-time, 10 minutes); the code is then
//! exchanged and the tokens sealed into the store.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api_error::ApiError;
use crate::clock::SharedClock;
use crate::pinterest_oauth::OAuthTokens;
use crate::shopify::install::form_pairs;
use crate::state::AppState;
use crate::store::SharedStore;

/// The subject `pinterest connect` records its `state` under.
pub const STATE_SUBJECT: &str = "pinterest";

/// Checks the state and exchanges the code; `redirect_uri` is the one the authorize URL
/// named (Pinterest checks they match).
pub async fn finish(
    store: &SharedStore,
    oauth: &OAuthTokens,
    clock: &SharedClock,
    query: &str,
    redirect_uri: &str,
) -> Result<(), ApiError> {
    let params = form_pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(error) = get("error") {
        return Err(ApiError::bad_request(
            "oauth_refused",
            format!("Pinterest did not authorize the app: {error}"),
        ));
    }
    let owner = store
        .take_oauth_state(get("state").unwrap_or(""), clock.now_ms())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Could not read an OAuth state");
            ApiError::unavailable("the event store is unavailable")
        })?;
    if owner.as_deref() != Some(STATE_SUBJECT) {
        return Err(ApiError::bad_request(
            "invalid_state",
            "state: unknown, already used or expired: run `pincapi pinterest connect` again",
        ));
    }
    let code = get("code").unwrap_or("");
    oauth
        .exchange_code(code, redirect_uri)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "oauth_failed", e.to_string()))?;
    tracing::info!("Connected to Pinterest: OAuth tokens stored");
    Ok(())
}

/// The page the browser lands on.
pub fn connected_page() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "pincapi is connected to Pinterest. You can close this page.\n",
    )
        .into_response()
}

/// `GET /pinterest/callback` on `serve`.
pub async fn callback(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let Some(public) = state.config.public_base() else {
        return ApiError::unavailable("public_url is not set").into_response();
    };
    let redirect = format!("{public}/pinterest/callback");
    match finish(
        &state.store,
        &state.pinterest,
        &state.clock,
        query.as_deref().unwrap_or(""),
        &redirect,
    )
    .await
    {
        Ok(()) => connected_page(),
        Err(e) => e.into_response(),
    }
}
