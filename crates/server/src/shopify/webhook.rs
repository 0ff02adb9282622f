//! `POST /webhooks/shopify`: signed Shopify webhooks in, one durable write, a fast answer.
//!
//! Order of checks, each answered as listed and with nothing stored before the last:
//!
//! | Check | Answer |
//! | --- | --- |
//! | body over `shopify.max_body_bytes` (4 MiB) | 413 `too_large` |
//! | no `X-Shopify-Shop-Domain` | 401 `unauthorized` |
//! | shop not configured | 401 `unknown_shop` |
//! | shop configured but unusable (e.g. its ad account is missing) | 503 `misconfigured` |
//! | no or wrong `X-Shopify-Hmac-Sha256` | 401 `unauthorized` |
//! | no `X-Shopify-Topic` | 400 `missing_topic` |
//! | a compliance topic (`customers/redact`, `shop/redact`, `customers/data_request`) | 200 `recorded` once done (`compliance.rs`) |
//! | a topic pincapi does not handle | 200 `ignored` (so Shopify stops retrying) |
//! | body not JSON / not the topic's shape | 400 `invalid_json` / `invalid_shape`, naming the field |
//! | the store is down | 503 `unavailable` (Shopify retries) |
//! | a webhook id seen before | 200 `duplicate` |
//! | otherwise | 200 `accepted`, `ignored`, `skipped` or `recorded` |
//!
//! The HMAC is verified on the raw bytes, in constant time, before anything is parsed. It
//! covers only the body: the headers (shop domain, topic, webhook id) are not authenticated,
//! so a shop's secret is looked up by the domain header but the domain is proof only when
//! each shop has its own secret. Headers are read in Shopify's newer form without the `X-`
//! prefix first, then in the classic form; header names are case-insensitive.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use pincapi_core::shopify::{self, MapError, Topic};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::record::{Recorder, Status, decide};
use crate::api_error::{ApiError, BodyLimit, read_limited};
use crate::config::Secret;
use crate::config::shopify::{Shop, find_shop, normalize_domain};
use crate::state::AppState;
use crate::store::{Enqueued, ShopifyStored, Source, WebhookReceipt};

/// The answer to an accepted (2xx) delivery.
#[derive(Debug, Serialize)]
pub struct WebhookAnswer {
    pub status: Status,
    pub topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// For `accepted`: `accepted` (new), `merged` (into the unsent event of the same id) or
    /// `duplicate` (the same event was stored before, e.g. by the poller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enqueued: Option<Enqueued>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /webhooks/shopify`.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // Over ingest.max_queue_depth: refuse before reading the body. Shopify retries a 503
    // delivery with the same body and webhook id, and the poller finds the order meanwhile.
    if let Err(shed) = state
        .backpressure
        .admit(&state.metrics, "/webhooks/shopify")
    {
        tracing::info!("Refused a Shopify webhook while shedding load; Shopify will retry");
        return shed.into_response();
    }
    let topic_label = header(&headers, "topic")
        .and_then(Topic::parse)
        .map_or("unknown", Topic::as_str);
    let answer = handle(&state, &headers, body).await;
    let outcome = match &answer {
        Ok(a) => a.status.as_str(),
        Err(e) => match e.status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::BAD_REQUEST => "invalid",
            _ => "unavailable",
        },
    };
    state.metrics.inc(
        "pincapi_shopify_webhooks_total",
        &[("topic", topic_label), ("outcome", outcome)],
        1,
    );
    match answer {
        Ok(a) => (StatusCode::OK, Json(a)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<WebhookAnswer, ApiError> {
    let limit = state.config.shopify.max_body_bytes;
    // The route has its own limit, `shopify.max_body_bytes`, rather than the gateway's
    // `ingest` one.
    let body_limit = BodyLimit {
        limit,
        key: "shopify.max_body_bytes",
        hint: "; nothing was stored, and the reconciliation poller still finds the order",
        timeout: std::time::Duration::from_secs(state.config.server.body_timeout_secs),
    };
    let body = read_limited(headers, body, body_limit)
        .await
        .inspect_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                tracing::warn!(
                    limit,
                    "Refused a Shopify webhook larger than the body limit"
                );
            }
        })?;
    let shop = authenticate(state, headers, &body)?;

    let Some(topic_text) = header(headers, "topic") else {
        return Err(ApiError::bad_request(
            "missing_topic",
            "no X-Shopify-Topic header: it names the payload's topic, e.g. orders/create",
        ));
    };
    if super::compliance::TOPICS.contains(&topic_text.trim().to_ascii_lowercase().as_str()) {
        let topic = topic_text.trim().to_ascii_lowercase();
        return super::compliance::handle(
            state,
            &shop,
            &topic,
            &body,
            header(headers, "webhook-id"),
        )
        .await;
    }
    let Some(topic) = Topic::parse(topic_text) else {
        tracing::info!(shop = %shop.domain, "Ignored a Shopify webhook of a topic pincapi does not handle");
        return Ok(WebhookAnswer {
            status: Status::Ignored,
            topic: topic_text.to_owned(),
            event_id: None,
            enqueued: None,
            reason: Some(format!(
                "pincapi does not handle the topic {topic_text:?}; nothing stored (you can \
                 remove this subscription)"
            )),
        });
    };

    let mapped =
        shopify::map(topic, &body, shop.purchase_topic, &shop.options).map_err(|e| {
            state.metrics.inc(
                "pincapi_events_rejected_total",
                &[("source", Source::Webhook.as_str())],
                1,
            );
            tracing::warn!(shop = %shop.domain, topic = %topic, error = %e, "Refused a Shopify webhook whose body is not the topic's shape");
            match e {
                MapError::Json(_) => ApiError::bad_request("invalid_json", e.to_string()),
                MapError::Field { .. } => ApiError::bad_request(
                    "invalid_shape",
                    format!("the body is not a {topic} payload: {e}"),
                ),
            }
        })?;

    let received_at_ms = state.clock.now_ms();
    let recorder = recorder(state);
    let decision = decide(
        &shop,
        topic,
        mapped,
        Source::Webhook,
        received_at_ms,
        recorder.max_event_age_secs,
        recorder.merge_window_ms,
    );
    let mut answer = WebhookAnswer {
        status: decision.status,
        topic: topic.as_str().to_owned(),
        event_id: decision.event_id().map(str::to_owned),
        enqueued: None,
        reason: decision.reason.clone(),
    };
    if !decision.stores_anything() {
        return Ok(answer);
    }
    let webhook_id = webhook_id(headers, topic, &body);
    let receipt = WebhookReceipt {
        webhook_id: webhook_id.clone(),
        topic: topic.as_str().to_owned(),
        answer: decision.status.as_str().to_owned(),
    };
    let stored = recorder
        .store(&shop, vec![(decision, Some(receipt))], received_at_ms)
        .await
        .map_err(|e| {
            tracing::error!(shop = %shop.domain, topic = %topic, error = %e, "Could not store a Shopify webhook");
            ApiError::unavailable(
                "the event store is unavailable; nothing from this delivery was stored \
                 (Shopify will retry)",
            )
        })?;
    match stored.first() {
        Some(ShopifyStored::DuplicateWebhook) => {
            answer.status = Status::Duplicate;
            answer.enqueued = None;
            answer.reason = Some("this delivery (webhook id) was processed before".to_owned());
        }
        Some(ShopifyStored::Stored(enqueued)) => answer.enqueued = *enqueued,
        None => {}
    }
    tracing::info!(
        shop = %shop.domain,
        topic = %topic,
        webhook_id = %webhook_id,
        status = answer.status.as_str(),
        event_id = answer.event_id.as_deref().unwrap_or(""),
        "Stored a Shopify webhook"
    );
    Ok(answer)
}

/// The shop this delivery is for, once its signature checks out.
fn authenticate(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Shop, ApiError> {
    let unauthorized = |code: &'static str, message: String| {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    };
    let Some(domain) = header(headers, "shop-domain") else {
        return Err(unauthorized(
            "unauthorized",
            "no X-Shopify-Shop-Domain header: pincapi looks up the shop's signing secret by it"
                .to_owned(),
        ));
    };
    let domain = normalize_domain(domain);
    let shop = match find_shop(&state.config, &domain) {
        Ok(Some(shop)) => shop,
        Ok(None) => {
            tracing::warn!(shop = %domain, "Refused a Shopify webhook from a shop that is not configured");
            return Err(unauthorized(
                "unknown_shop",
                format!(
                    "the shop {domain} is not configured in this gateway; add it to \
                     [[shopify.shops]] (or set PINCAPI_SHOPIFY_SHOP_DOMAIN) with its webhook \
                     signing secret"
                ),
            ));
        }
        Err(e) => {
            tracing::error!(shop = %domain, error = %e, "A Shopify webhook arrived for a shop whose configuration is unusable");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "misconfigured",
                format!("the shop {domain} is configured but unusable: {e}"),
            ));
        }
    };
    let Some(signature) = header(headers, "hmac-sha256") else {
        return Err(unauthorized(
            "unauthorized",
            "no X-Shopify-Hmac-Sha256 header: Shopify signs every HTTPS webhook delivery"
                .to_owned(),
        ));
    };
    if !signature_matches(body, signature, &shop.secrets) {
        tracing::warn!(shop = %shop.domain, "Refused a Shopify webhook with a wrong signature");
        return Err(unauthorized(
            "unauthorized",
            format!(
                "X-Shopify-Hmac-Sha256 does not match the body for the signing secret(s) \
                 configured for {}. Webhooks created by hand in the Shopify admin (Settings → \
                 Notifications → Webhooks) are signed with the key shown on that page, not \
                 with an app's client secret: configure that key. The signature covers the raw \
                 body, so a proxy that re-encodes it also breaks the check.",
                shop.domain
            ),
        ));
    }
    Ok(shop)
}

/// Whether `signature` (base64) is the HMAC-SHA256 of `body` under one of `secrets`. Each
/// comparison is constant time (`verify_slice`), and every secret is tried, so the time taken
/// does not say which one matched.
pub fn signature_matches(body: &[u8], signature: &str, secrets: &[Secret]) -> bool {
    let Ok(expected) = BASE64.decode(signature.trim()) else {
        return false;
    };
    let mut ok = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            continue;
        };
        mac.update(body);
        ok |= mac.verify_slice(&expected).is_ok();
    }
    ok
}

/// The base64 signature Shopify sends for `body` under `secret` (tests, tools). Never panics:
/// HMAC takes keys of any length.
pub fn sign(body: &[u8], secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// A Shopify header, `Shopify-<name>` (newer deliveries) or `X-Shopify-<name>`.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    [format!("shopify-{name}"), format!("x-shopify-{name}")]
        .iter()
        .find_map(|n| headers.get(n.as_str()))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What deliveries are deduplicated on: the webhook id (Shopify reuses it on retries), else
/// the event id of newer deliveries, else a digest of topic and body (a retry carries the
/// original payload, so it has the same digest).
fn webhook_id(headers: &HeaderMap, topic: Topic, body: &[u8]) -> String {
    if let Some(id) = header(headers, "webhook-id") {
        return id.to_owned();
    }
    if let Some(id) = header(headers, "event-id") {
        return format!("event:{id}");
    }
    let mut h = Sha256::new();
    h.update(topic.as_str().as_bytes());
    h.update([0]);
    h.update(body);
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn recorder(state: &AppState) -> Recorder {
    Recorder {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        delivery: Some(state.delivery.clone()),
        max_event_age_secs: state.config.ingest.max_event_age_secs,
        merge_window_ms: (state.config.ingest.merge_window_secs as i64).saturating_mul(1000),
        clock: state.clock.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_either_secret_and_only_on_the_exact_bytes() {
        let body = br#"{"id": 1}"#;
        let sig = sign(body, "old");
        let secrets = [Secret::new("new"), Secret::new("old")];
        assert!(signature_matches(body, &sig, &secrets));
        assert!(!signature_matches(br#"{"id":1}"#, &sig, &secrets));
        assert!(!signature_matches(body, &sig, &[Secret::new("new")]));
        assert!(!signature_matches(body, "not base64!", &secrets));
        assert!(!signature_matches(body, &sig, &[Secret::default()]));
    }

    #[test]
    fn headers_are_read_in_both_forms() {
        let mut h = HeaderMap::new();
        h.insert("X-Shopify-Topic", "orders/create".parse().unwrap());
        assert_eq!(header(&h, "topic"), Some("orders/create"));
        h.insert("shopify-topic", "orders/paid".parse().unwrap());
        assert_eq!(header(&h, "topic"), Some("orders/paid"));
        assert!(webhook_id(&h, Topic::OrdersCreate, b"{}").starts_with("sha256:"));
        h.insert("x-shopify-webhook-id", "abc".parse().unwrap());
        assert_eq!(webhook_id(&h, Topic::OrdersCreate, b"{}"), "abc");
    }
}
