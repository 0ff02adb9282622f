//! The install flow, for stores of another organisation (the agency case): a shop configured
//! with `install = true` gets its tokens here rather than from the client-credentials grant.
//!
//! 1. `GET /shopify/install?shop=D` (the URL `pincapi shopify install-url --shop D` prints)
//!    records a one-time `state` for D in the store (10 minutes) and redirects to
//!    `{origin}/admin/oauth/authorize` with the app's client id, the scopes pincapi needs,
//!    `redirect_uri = {public_url}/shopify/callback` and the state;
//! 2. Shopify asks the merchant, then redirects to `GET /shopify/callback?code=…&hmac=…&shop=…
//!    &state=…&timestamp=…`. The callback takes the request apart in this order, each check
//!    with its own error: `shop` must be a `*.myshopify.com` host configured for installs;
//!    `hmac` must be Shopify's signature of the other parameters under the app's client
//!    secret (sorted `k=v` pairs joined by `&`, HMAC-SHA256, hex); `state` must be one this
//!    gateway handed out for that shop, unused and not expired. Then the code is exchanged
//!    (`POST {origin}/admin/oauth/access_token` with `expiring=1`: a 60-minute offline token
//!    and a rotating refresh token), and the tokens are sealed into the store, where
//!    [`super::token::AdminTokens`] finds and refreshes them.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::token::{Token, request_token};
use crate::api_error::ApiError;
use crate::config::shopify::{AdminAuth, normalize_domain};
use crate::state::AppState;

/// The scopes pincapi asks for: orders for the poller, the census and the order topics;
/// customers for `customers/create`.
pub const SCOPES: &str = "read_orders,read_customers";
/// How long a `state` is good for.
const STATE_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// Whether `host` is a shop's `*.myshopify.com` host, as Shopify recommends checking it:
/// a letter or digit, then letters, digits and hyphens, then `.myshopify.com`, nothing else.
pub fn is_shop_host(host: &str) -> bool {
    let Some(name) = host.strip_suffix(".myshopify.com") else {
        return false;
    };
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The message Shopify signs: every parameter but `hmac` (and the legacy `signature`),
/// sorted by name, as `k=v` joined by `&`, each part form-encoded as a browser's
/// `URLSearchParams` does, with spaces as `%20`.
pub fn signed_message(params: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .collect();
    kept.sort();
    kept.iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` encoding, `*-._` and alphanumerics kept, a space as
/// `%20`.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `hmac` (hex) signs `params` under `secret`; constant time.
pub fn hmac_matches(params: &[(String, String)], hmac: &str, secret: &str) -> bool {
    let Some(expected) = decode_hex(hmac.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(signed_message(params).as_bytes());
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The pairs of a query string or a form body, percent-decoded (`+` is a space).
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(h, 16).unwrap_or(0));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query component (unreserved characters stay).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL a merchant opens to install the app on `shop`: `{public_url}/shopify/install?shop=`.
pub fn install_url(public_base: &str, shop: &str) -> String {
    format!(
        "{public_base}/shopify/install?shop={}",
        percent_encode(&normalize_domain(shop))
    )
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_install",
        format!("{field}: {message}"),
    )
}

/// `GET /shopify/install?shop=D`.
pub async fn install(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match start(&state, query.as_deref().unwrap_or("")).await {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn start(state: &AppState, query: &str) -> Result<String, ApiError> {
    let params = form_pairs(query);
    let shop = params
        .iter()
        .find(|(k, _)| k == "shop")
        .map(|(_, v)| normalize_domain(v))
        .unwrap_or_default();
    let (domain, client_id, origin) = installable(state, &shop)?;
    let Some(public) = state.config.public_base() else {
        return Err(ApiError::unavailable(
            "public_url is not set: Shopify needs it for the install's redirect_uri",
        ));
    };
    let nonce: [u8; 16] = rand::random();
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    state
        .store
        .save_oauth_state(&nonce, &domain, state.clock.now_ms() + STATE_LIFETIME_MS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Could not record an install's state");
            ApiError::unavailable("the event store is unavailable")
        })?;
    let redirect = format!("{public}/shopify/callback");
    Ok(format!(
        "{origin}/admin/oauth/authorize?client_id={}&scope={}&redirect_uri={}&state={nonce}&grant_options%5B%5D=",
        percent_encode(&client_id),
        percent_encode(SCOPES),
        percent_encode(&redirect),
    ))
}

/// The configured shop `shop` if it installs through this flow: its domain, client id and
/// Admin API origin.
fn installable(state: &AppState, shop: &str) -> Result<(String, String, String), ApiError> {
    if !is_shop_host(shop) {
        return Err(bad(
            "shop",
            format!("{shop:?} is not a shop's *.myshopify.com host"),
        ));
    }
    let Some(configured) = state.shopify.shop(shop) else {
        return Err(bad(
            "shop",
            format!("{shop} is not configured in [[shopify.shops]] with install = true"),
        ));
    };
    let AdminAuth::Install { client_id, .. } = &configured.auth else {
        return Err(bad(
            "shop",
            format!(
                "{shop} is configured without install = true; its tokens come from its own credentials"
            ),
        ));
    };
    if state.shopify.key().is_none() {
        return Err(ApiError::unavailable(
            "PINCAPI_SECRET_KEY is not set: installed shops' tokens are kept sealed in the store",
        ));
    }
    Ok((
        configured.domain.clone(),
        client_id.clone(),
        configured.origin().to_owned(),
    ))
}

/// `GET /shopify/callback`.
pub async fn callback(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match finish(&state, query.as_deref().unwrap_or("")).await {
        Ok(shop) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "pincapi is connected to {shop}. Its orders are reconciled from now on; run \
                 `pincapi shopify connect --shop {shop}` to set up its webhooks.\n"
            ),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn finish(state: &AppState, query: &str) -> Result<String, ApiError> {
    let params = form_pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let shop = normalize_domain(get("shop").unwrap_or(""));
    let (domain, _, _) = installable(state, &shop)?;
    let api = state
        .shopify
        .api(&domain)
        .ok_or_else(|| bad("shop", format!("{domain} has no Admin API client")))?;
    let Some((client_id, client_secret)) = api.shop().app() else {
        return Err(bad("shop", format!("{domain} has no app credentials")));
    };
    let hmac = get("hmac").unwrap_or("");
    if !hmac_matches(&params, hmac, client_secret.expose()) {
        tracing::warn!(shop = %domain, "Refused an install callback with a wrong hmac");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_install",
            "hmac: the callback is not signed by Shopify with this app's client secret".to_owned(),
        ));
    }
    let given = get("state").unwrap_or("");
    let owner = state
        .store
        .take_oauth_state(given, state.clock.now_ms())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Could not read an install's state");
            ApiError::unavailable("the event store is unavailable")
        })?;
    if owner.as_deref() != Some(domain.as_str()) {
        tracing::warn!(shop = %domain, "Refused an install callback with an unknown state");
        return Err(bad(
            "state",
            "unknown, already used or expired: start again from /shopify/install".to_owned(),
        ));
    }
    let code = get("code").unwrap_or("");
    let http = reqwest::Client::builder()
        .timeout(state.config.request_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let answer = request_token(
        &http,
        api.shop(),
        &[
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("code", code),
            ("expiring", "1"),
        ],
    )
    .await
    .map_err(|e| {
        tracing::warn!(shop = %domain, error = %e, "The install's code exchange failed");
        ApiError::new(StatusCode::BAD_GATEWAY, "install_failed", e.to_string())
    })?;
    let token = Token::from_answer(answer, state.clock.now_ms());
    let missing: Vec<&str> = SCOPES
        .split(',')
        .filter(|s| !token.scope.split(',').any(|g| g.trim() == *s))
        .collect();
    api.tokens().install(token).await.map_err(|e| {
        tracing::error!(shop = %domain, error = %e, "Could not store an installed shop's tokens");
        ApiError::unavailable("the event store is unavailable")
    })?;
    tracing::info!(shop = %domain, missing_scopes = ?missing, "A shop installed the app");
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_myshopify_hosts_are_shops() {
        assert!(is_shop_host("my-shop.myshopify.com"));
        assert!(is_shop_host("a1.myshopify.com"));
        for not in [
            "-shop.myshopify.com",
            "shop.myshopify.com.evil.example",
            "evil.example/shop.myshopify.com",
            "shop.example.com",
            ".myshopify.com",
            "sh op.myshopify.com",
        ] {
            assert!(!is_shop_host(not), "{not}");
        }
    }

    #[test]
    fn the_signed_message_sorts_and_leaves_out_the_signature() {
        let p = form_pairs("shop=a.myshopify.com&hmac=zz&code=c%201&timestamp=1");
        assert_eq!(
            signed_message(&p),
            "code=c%201&shop=a.myshopify.com&timestamp=1"
        );
        assert!(!hmac_matches(&p, "zz", "s"));
    }
}
