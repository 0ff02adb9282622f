//! The stand-in's OAuth: `POST /admin/oauth/access_token` and the install page.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Issued, Refresh, ShopifyStandin, StandinRequest, random_token};
use crate::shopify::install::{form_pairs, percent_encode};

/// Refresh tokens live 90 days at Shopify.
const REFRESH_LIFETIME_SECS: i64 = 90 * 86_400;

impl ShopifyStandin {
    /// Whether the Admin API takes `token` now: the static token, or one issued and not yet
    /// expired on the stand-in's clock.
    pub(super) fn accepts(&self, token: Option<&str>) -> bool {
        let Some(token) = token else { return false };
        if self.options.static_token.as_deref() == Some(token) {
            return true;
        }
        let now = self.options.clock.now_ms();
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|t| t.expires_at_ms.is_none_or(|e| now < e))
    }

    /// How many tokens each grant has issued.
    pub fn grants(&self, grant: &str) -> usize {
        self.requests_of(&format!("grant:{grant}"))
            .iter()
            .filter(|r| r.status == 200)
            .count()
    }

    fn issue(&self, lifetime_secs: Option<i64>) -> (String, Option<i64>) {
        let token = random_token("shpat_");
        let now = self.options.clock.now_ms();
        self.lock().tokens.insert(
            token.clone(),
            Issued {
                expires_at_ms: lifetime_secs.map(|s| now + s * 1000),
            },
        );
        (token, lifetime_secs)
    }

    fn issue_refresh(&self) -> String {
        let refresh = random_token("shprt_");
        self.lock().refresh.insert(
            refresh.clone(),
            Refresh {
                replaced_by: None,
                used_up: false,
            },
        );
        refresh
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /admin/oauth/access_token`.
pub(super) async fn access_token(
    State(standin): State<ShopifyStandin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields: Vec<(String, String)> = if is_json {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
            _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "not JSON"),
        }
    } else {
        form_pairs(&String::from_utf8_lossy(&body))
    };
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let grant = get("grant_type").unwrap_or("authorization_code").to_owned();
    let (status, answer) = token_answer(&standin, &grant, &get);
    standin.record(StandinRequest {
        operation: format!("grant:{grant}"),
        variables: Value::Null,
        status: status.as_u16(),
        error: answer
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned),
        orders: 0,
    });
    (status, Json(answer)).into_response()
}

fn token_answer<'a>(
    standin: &ShopifyStandin,
    grant: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> (StatusCode, Value) {
    let o = &standin.options;
    {
        let mut shop = standin.lock();
        if shop.fail_token_requests > 0 {
            shop.fail_token_requests -= 1;
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": "try again"}),
            );
        }
    }
    let bad_client = (
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
    );
    if get("client_id") != Some(o.client_id.as_str())
        || get("client_secret") != Some(o.client_secret.as_str())
    {
        return bad_client;
    }
    let scope = o.scopes.join(",");
    match grant {
        "client_credentials" => {
            let (token, life) = standin.issue(Some(o.token_lifetime_secs));
            (
                StatusCode::OK,
                json!({"access_token": token, "scope": scope, "expires_in": life}),
            )
        }
        "authorization_code" => {
            let Some(code) = get("code") else {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_request", "error_description": "code is missing"}),
                );
            };
            let known = {
                let mut shop = standin.lock();
                let before = shop.codes.len();
                shop.codes.retain(|c| c != code);
                shop.codes.len() < before
            };
            if !known {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_grant", "error_description": "authorization code was not found or was already used"}),
                );
            }
            if get("expiring") == Some("1") {
                let (token, life) = standin.issue(Some(o.offline_token_lifetime_secs));
                let refresh = standin.issue_refresh();
                (
                    StatusCode::OK,
                    json!({"access_token": token, "scope": scope, "expires_in": life,
                           "refresh_token": refresh,
                           "refresh_token_expires_in": REFRESH_LIFETIME_SECS}),
                )
            } else {
                let (token, _) = standin.issue(None);
                (
                    StatusCode::OK,
                    json!({"access_token": token, "scope": scope}),
                )
            }
        }
        "refresh_token" => {
            let given = get("refresh_token").unwrap_or("");
            let usable = {
                let mut shop = standin.lock();
                let state = shop.refresh.get(given).cloned();
                match state {
                    Some(r) if !r.used_up => {
                        // Using a token ends the one it replaced.
                        let replaced: Vec<String> = shop
                            .refresh
                            .iter()
                            .filter(|(_, v)| v.replaced_by.as_deref() == Some(given))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in replaced {
                            if let Some(v) = shop.refresh.get_mut(&k) {
                                v.used_up = true;
                            }
                        }
                        true
                    }
                    _ => false,
                }
            };
            if !usable {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_grant", "error_description": "refresh token is invalid or expired"}),
                );
            }
            let (token, life) = standin.issue(Some(o.offline_token_lifetime_secs));
            let refresh = standin.issue_refresh();
            if let Some(r) = standin.lock().refresh.get_mut(given) {
                r.replaced_by = Some(refresh.clone());
            }
            (
                StatusCode::OK,
                json!({"access_token": token, "scope": scope, "expires_in": life,
                       "refresh_token": refresh,
                       "refresh_token_expires_in": REFRESH_LIFETIME_SECS}),
            )
        }
        other => (
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": format!("{other} is not supported")}),
        ),
    }
}

/// `GET /admin/oauth/authorize`: approves at once.
pub(super) async fn authorize(
    State(standin): State<ShopifyStandin>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form_pairs(query.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let o = &standin.options;
    if get("client_id") != Some(o.client_id.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            "Oauth error invalid_request: The client_id is invalid",
        )
            .into_response();
    }
    let Some(redirect) = get("redirect_uri").filter(|r| r.starts_with("http")) else {
        return (
            StatusCode::BAD_REQUEST,
            "Oauth error invalid_request: The redirect_uri is missing or not allowed",
        )
            .into_response();
    };
    let code = random_token("");
    standin.lock().codes.push(code.clone());
    let timestamp = (o.clock.now_ms() / 1000).to_string();
    let mut fields = vec![
        ("code", code.as_str()),
        ("host", "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvc3RhbmRpbg=="),
        ("shop", o.shop_domain.as_str()),
        ("state", get("state").unwrap_or("")),
        ("timestamp", timestamp.as_str()),
    ];
    let hmac = sign_query(&o.client_secret, &fields);
    fields.push(("hmac", hmac.as_str()));
    let query: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = format!("{redirect}{sep}{}", query.join("&"));
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// Shopify's signature of a callback: HMAC-SHA256 (hex), with the client secret, of the
/// sorted pairs as `URLSearchParams` writes them (spaces as `%20`).
pub fn sign_query(secret: &str, fields: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = fields.to_vec();
    sorted.sort();
    let enc = |s: &str| -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let message: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message.join("&").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
