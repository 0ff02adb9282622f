//! `POST /collect`: the browser collector. Tag-shaped data in (from tag.js or the Shopify
//! custom pixel), a CAPI event out, stored in the same store as every other source.
//!
//! Accepts `application/json` (after a CORS preflight) and `text/plain` (what
//! `navigator.sendBeacon` sends, no preflight). The body's mapping is
//! `pincapi_core::tag::collect`; this module adds what only the server knows: the client's
//! IP (`X-Forwarded-For` is believed only from `browser.trusted_proxies`), its user agent and
//! `_epik` cookie. Guards, in order: the origin (`allowed_origins`; unset: same origin only),
//! the per-IP rate limit, the body size, the content type.
//!
//! Purchases (`checkout`) wait before their first send, so that the Shopify webhook's copy of
//! the same order (event_id `order-<id>`) merges into this one (or this one into it): one
//! event at Pinterest with the webhook's email and address and the browser's click id, IP and
//! user agent. The wait is `ingest.browser_purchase_hold_secs` (10 minutes) when a Shopify
//! shop sends to the same ad account, since its webhook can be minutes late and the shop's
//! copy makes the merged event due at once; otherwise `ingest.merge_window_secs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pincapi_core::event::EventName;
use pincapi_core::ingest::{FieldIssue, TimeWindow};
use pincapi_core::tag::{self, BrowserContext, CollectSource};
use serde::Serialize;
use serde_json::json;

use crate::api_error::declared_length;
use crate::backpressure::Shed;
use crate::config::browser::{BrowserConfig, canonical};
use crate::state::AppState;
use crate::store::{Enqueued, NewEvent, Source};

/// What the collector answers for a stored event.
#[derive(Debug, Serialize)]
pub struct CollectResponse {
    /// `accepted` (new), `merged` (folded into the unsent event with the same event_id) or
    /// `duplicate` (that event was already sent).
    pub status: Enqueued,
    pub event_id: String,
    /// Values dropped from the event, by field.
    pub warnings: Vec<FieldIssue>,
}

/// Per-client-IP token buckets. IPv6 clients are keyed by their /64, which one household or
/// phone usually holds whole.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Most clients remembered; past it, clients with a full bucket are forgotten.
    const MAX_CLIENTS: usize = 100_000;

    /// Takes one request from `ip`'s bucket (refilled at `per_minute`/60 per second, holding
    /// at most `per_minute`). `Err` carries the seconds until a request is allowed again.
    pub fn check(&self, ip: IpAddr, per_minute: u32, now: Instant) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let rate = capacity / 60.0;
        let key = match canonical(ip) {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            v4 => v4,
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= Self::MAX_CLIENTS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < capacity
            });
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * rate).min(capacity);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil() as u64)
        }
    }
}

/// `POST /collect`.
pub async fn collect(
    State(state): State<AppState>,
    axum::Extension(limiter): axum::Extension<std::sync::Arc<RateLimiter>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cors = match check_origin(&headers, state.config.allowed_origins.as_deref()) {
        Ok(cors) => cors,
        Err(origin) => {
            // Origins are public page addresses, not personal data.
            tracing::debug!(%origin, "Refused a collector request from an origin not allowed");
            refuse(&state, "origin");
            return CollectError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin may not send events here (a request without Origin never may); \
                 add the page's origin, or null for Shopify's custom pixel, to \
                 PINCAPI_ALLOWED_ORIGINS",
            )
            .into_response_with(None);
        }
    };
    let browser = &state.config.browser;
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client_ip = peer.map(|p| client_ip(p, &headers, browser));
    let limit_key = client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Err(retry_after) =
        limiter.check(limit_key, browser.rate_limit_per_minute, Instant::now())
    {
        refuse(&state, "rate_limited");
        let mut resp = CollectError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} events a minute from this address",
                browser.rate_limit_per_minute
            ),
        )
        .into_response_with(cors.as_ref());
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        return resp;
    }
    if !acceptable_content_type(&headers) {
        refuse(&state, "content_type");
        return CollectError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the event as application/json or text/plain (sendBeacon)",
        )
        .into_response_with(cors.as_ref());
    }
    // A declared length over the limit is refused at once, instead of waiting for the body.
    let body_timeout = std::time::Duration::from_secs(state.config.server.body_timeout_secs);
    let read = if declared_length(&headers).is_some_and(|n| n > browser.max_body_bytes as u64) {
        Err(())
    } else {
        // A body slower than the timeout is refused like one too large: a beacon is small.
        match tokio::time::timeout(
            body_timeout,
            axum::body::to_bytes(body, browser.max_body_bytes),
        )
        .await
        {
            Ok(read) => read.map_err(|_| ()),
            Err(_) => Err(()),
        }
    };
    let bytes = match read {
        Ok(b) => b,
        Err(()) => {
            refuse(&state, "too_large");
            return CollectError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body is larger than browser.max_body_bytes ({} bytes)",
                    browser.max_body_bytes
                ),
            )
            .into_response_with(cors.as_ref());
        }
    };
    match store(&state, &headers, client_ip, &bytes).await {
        Ok(resp) => with_cors(
            (StatusCode::ACCEPTED, Json(resp)).into_response(),
            cors.as_ref(),
        ),
        Err(e) => {
            let shed = e.code == Shed::CODE;
            let resp = e.into_response_with(cors.as_ref());
            if shed {
                let mut resp = resp;
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(state.backpressure.retry_after_secs()),
                );
                resp
            } else {
                resp
            }
        }
    }
}

/// `OPTIONS /collect`: the CORS preflight of a JSON `fetch`.
pub async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match check_origin(&headers, state.config.allowed_origins.as_deref()) {
        Ok(cors) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            with_cors(resp, cors.as_ref())
        }
        Err(_) => {
            refuse(&state, "origin");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

/// Maps, stores and counts one request body.
async fn store(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
    body: &[u8],
) -> Result<CollectResponse, CollectError> {
    let Some(account) = state.default_account.clone() else {
        return Err(CollectError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_account",
            "no Pinterest ad account is configured",
        ));
    };
    let text = std::str::from_utf8(body).map_err(|_| {
        CollectError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not UTF-8 text",
        )
    })?;
    let ip = client_ip.map(|ip| canonical(ip).to_string());
    let epik = cookie(headers, "_epik");
    let ctx = BrowserContext {
        client_ip: ip.as_deref(),
        user_agent: header_str(headers, header::USER_AGENT),
        epik_cookie: epik.as_deref(),
        referer: header_str(headers, header::REFERER),
    };
    let window = TimeWindow {
        now: state.clock.now_ms() / 1000,
        max_age: state.config.ingest.max_event_age_secs,
        max_future_skew: TimeWindow::DEFAULT_MAX_FUTURE_SKEW,
    };
    let collected = tag::collect(text, &ctx, &window).map_err(|fields| {
        state.metrics.inc(
            "pincapi_events_rejected_total",
            &[("source", Source::Collector.as_str())],
            1,
        );
        tracing::debug!(
            fields = ?fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
            "Refused a collector event"
        );
        let code = if fields.iter().any(|f| f.field == "body") {
            "invalid_json"
        } else {
            "invalid_event"
        };
        CollectError {
            fields,
            ..CollectError::new(StatusCode::BAD_REQUEST, code, "the event was not stored")
        }
    })?;
    let source = match collected.source {
        CollectSource::Collector => Source::Collector,
        CollectSource::TagMirror => Source::TagMirror,
    };
    let event = collected.event;
    // Over ingest.max_queue_depth only purchases are stored: a beacon is never retried, and a
    // purchase is the costliest event to lose (see `crate::backpressure`).
    if event.event_name != EventName::Checkout
        && let Err(shed) = state.backpressure.admit(&state.metrics, "/collect")
    {
        return Err(CollectError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Shed::CODE,
            shed.message(),
        ));
    }
    // Only purchases have a server-side twin (the Shopify order webhook) worth waiting for;
    // Shopify's carts/* webhooks carry no buyer, so other browser events go out at once.
    let ingest = &state.config.ingest;
    let hold_secs = if event.event_name != EventName::Checkout {
        0
    } else if crate::config::shopify::has_shop_for(&state.config, &account) {
        ingest.browser_purchase_hold_secs
    } else {
        ingest.merge_window_secs
    };
    let hold_ms = i64::try_from(hold_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let event_id = event.event_id.as_str().to_owned();
    let name = event.event_name.as_str();
    let new = NewEvent::from_event(&account, &event, source, state.clock.now_ms()).held(hold_ms);
    let outcome = state
        .store
        .enqueue(vec![new])
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Could not store a collector event");
            CollectError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event store is unavailable; the event was not stored",
            )
        })?
        .first()
        .copied()
        .unwrap_or(Enqueued::Duplicate);
    let metric = match outcome {
        Enqueued::Accepted => {
            state.delivery.wake(&account);
            "pincapi_events_ingested_total"
        }
        Enqueued::Merged | Enqueued::Duplicate => "pincapi_events_duplicate_total",
    };
    state.metrics.inc(
        metric,
        &[
            ("ad_account_id", account.as_str()),
            ("event_name", name),
            ("source", source.as_str()),
        ],
        1,
    );
    tracing::debug!(
        event_name = name,
        source = source.as_str(),
        outcome = ?outcome,
        hold_ms,
        "Stored a collector event"
    );
    Ok(CollectResponse {
        status: outcome,
        event_id,
        warnings: collected.warnings,
    })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of the first
/// untrusted one could be written by the client and are never believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, config: &BrowserConfig) -> IpAddr {
    let mut ip = canonical(peer);
    if !config.is_trusted_proxy(ip) {
        return ip;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(addr) = hop.trim().parse::<IpAddr>() else {
            // A garbled hop: stop at the last address we could read.
            break;
        };
        ip = canonical(addr);
        if !config.is_trusted_proxy(ip) {
            break;
        }
    }
    ip
}

/// `Ok(Some(origin))` for an allowed cross-origin or same-origin request (echoed in CORS
/// headers), `Err(origin)` when the origin is not allowed, and `Err("(none)")` without an
/// `Origin`: every browser sends one with a POST, so a request without it is not a page's
/// (a script forging reports). With `allowed_origins` unset only the gateway's own origin is
/// allowed. A listed `null` allows sandboxed frames, which send `Origin: null`: Shopify's
/// custom pixels run in one.
fn check_origin(headers: &HeaderMap, allowed: Option<&str>) -> Result<Option<String>, String> {
    let Some(origin) = header_str(headers, header::ORIGIN) else {
        return Err("(none)".to_owned());
    };
    let wanted = normalise_origin(origin);
    let ok = match allowed {
        Some(list) => list
            .split(',')
            .map(normalise_origin)
            .any(|a| !a.is_empty() && a == wanted),
        None => header_str(headers, header::HOST).is_some_and(|host| {
            wanted
                .split_once("://")
                .is_some_and(|(_, h)| h == host.to_ascii_lowercase())
        }),
    };
    if ok {
        Ok(Some(origin.to_owned()))
    } else {
        Err(origin.to_owned())
    }
}

fn normalise_origin(o: &str) -> String {
    o.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn acceptable_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(essence.as_str(), "application/json" | "text/plain" | "")
}

fn with_cors(mut resp: Response, origin: Option<&String>) -> Response {
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    resp
}

fn refuse(state: &AppState, reason: &'static str) {
    state
        .metrics
        .inc("pincapi_collector_refused_total", &[("reason", reason)], 1);
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// One cookie's value from the `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// A collector error: `{"error": {"code", "message", "fields": [{field, reason}]}}`, the
/// shape of [`crate::api_error::ApiError`] plus the fields at fault.
#[derive(Debug)]
struct CollectError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldIssue>,
}

impl CollectError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> CollectError {
        CollectError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    fn into_response_with(self, origin: Option<&String>) -> Response {
        let body = json!({"error": {
            "code": self.code, "message": self.message, "fields": self.fields,
        }});
        with_cors((self.status, Json(body)).into_response(), origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn proxies(list: &str) -> BrowserConfig {
        BrowserConfig {
            trusted_proxies: list.split(',').map(|s| s.parse().unwrap()).collect(),
            ..BrowserConfig::default()
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(client_ip(peer, &xff, &BrowserConfig::default()), peer);
        // Trusted: walk from the right past our proxies; the spoofable left part is ignored.
        let c = proxies("10.0.0.0/8");
        assert_eq!(
            client_ip(peer, &xff, &c),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Several headers are one list.
        let two = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        assert_eq!(
            client_ip(peer, &two, &c),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself is all we know.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &c), peer);
    }

    #[test]
    fn origins_are_checked_against_the_list_or_the_gateway_itself() {
        let h = headers(&[("origin", "https://Shop.example"), ("host", "t.example")]);
        assert!(check_origin(&h, Some("https://shop.example/, https://b.example")).is_ok());
        assert!(check_origin(&h, Some("https://b.example")).is_err());
        assert!(check_origin(&h, None).is_err());
        let same = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert_eq!(
            check_origin(&same, None).unwrap().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        // No Origin: not a page's request, whatever is allowed.
        let none = headers(&[("host", "t.example")]);
        assert!(check_origin(&none, None).is_err());
        assert!(check_origin(&none, Some("https://t.example, null")).is_err());
        let sandboxed = headers(&[("origin", "null")]);
        assert!(check_origin(&sandboxed, Some("null")).is_ok());
        assert!(check_origin(&sandboxed, None).is_err());
    }

    #[test]
    fn the_rate_limit_refills_over_time_and_keys_ipv6_by_its_64() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(l.check(a, 2, t0).is_ok());
        assert!(l.check(a, 2, t0).is_ok());
        assert_eq!(l.check(a, 2, t0), Err(30));
        assert!(
            l.check(a, 2, t0 + std::time::Duration::from_secs(30))
                .is_ok()
        );
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(l.check(b, 1, t0).is_ok());
        assert!(l.check(b2, 1, t0).is_err());
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = headers(&[("cookie", "a=1; _epik=dj0yJnU9abc; b=2")]);
        assert_eq!(cookie(&h, "_epik").as_deref(), Some("dj0yJnU9abc"));
        assert_eq!(cookie(&h, "epik"), None);
    }
}
