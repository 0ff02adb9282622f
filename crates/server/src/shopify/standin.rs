//! A local stand-in for one shop's Shopify Admin REST API, enough for the reconciliation
//! poller: orders served from memory with Shopify's filters, cursor pagination and auth, so
//! tests can drop webhooks on purpose and watch the poller close the gap.
//!
//! Routes:
//! - `GET /admin/api/{version}/orders.json`: `status` (`open` by default, `closed`,
//!   `cancelled`, `any`), `created_at_min|max`, `updated_at_min|max`, `limit` (1..=250,
//!   default 50), `fields` (a comma-separated list: each order holds only those fields), newest
//!   id first. More pages are announced in `Link: <…?limit=N&page_info=…>; rel="next"` (and
//!   `rel="previous"`), with the `fields` of the request; a request with `page_info` may carry
//!   only `limit` and `fields` besides, as at Shopify. Every request needs
//!   `X-Shopify-Access-Token`; a wrong or missing one is answered 401.
//! - `POST /standin/orders`: add an order (`{...}`, `{"order": {...}}` or `{"orders": [...]}`);
//!   `GET /standin/requests`: what the Admin API routes answered; `POST /standin/reset`.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pincapi_core::shopify::wire::parse_time;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Shopify's page size limits.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;

/// One request the Admin API routes answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandinRequest {
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    /// Orders in the answer.
    pub orders: usize,
}

/// A running stand-in's shared state. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct ShopifyStandin {
    inner: Arc<Inner>,
}

struct Inner {
    access_token: String,
    orders: Mutex<Vec<Value>>,
    requests: Mutex<Vec<StandinRequest>>,
}

impl std::fmt::Debug for ShopifyStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifyStandin").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ShopifyStandin {
    /// A stand-in with no orders that accepts only `access_token`.
    pub fn new(access_token: impl Into<String>) -> ShopifyStandin {
        ShopifyStandin {
            inner: Arc::new(Inner {
                access_token: access_token.into(),
                orders: Mutex::new(Vec::new()),
                requests: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Adds orders: an order object, `{"order": {...}}` or `{"orders": [...]}`. Each needs an
    /// integer `id`. Returns how many were added.
    pub fn add(&self, value: Value) -> Result<usize, String> {
        let orders = match value {
            Value::Object(mut m) if m.contains_key("orders") => match m.remove("orders") {
                Some(Value::Array(a)) => a,
                _ => return Err("orders: must be an array".into()),
            },
            Value::Object(mut m) if m.len() == 1 && m.contains_key("order") => {
                vec![m.remove("order").unwrap_or(Value::Null)]
            }
            other => vec![other],
        };
        for o in &orders {
            if order_id(o).is_none() {
                return Err("every order needs an integer id".into());
            }
        }
        let n = orders.len();
        let mut all = lock(&self.inner.orders);
        for o in orders {
            // Same id: the order was updated; replace it.
            let id = order_id(&o);
            all.retain(|x| order_id(x) != id);
            all.push(o);
        }
        Ok(n)
    }

    /// Every order held.
    pub fn orders(&self) -> Vec<Value> {
        lock(&self.inner.orders).clone()
    }

    /// Requests the Admin API routes answered, in order.
    pub fn requests(&self) -> Vec<StandinRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Forgets orders and requests.
    pub fn reset(&self) {
        lock(&self.inner.orders).clear();
        lock(&self.inner.requests).clear();
    }

    /// Every route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/admin/api/{version}/orders.json", get(list_orders))
            .route("/standin/orders", post(add_orders))
            .route("/standin/requests", get(list_requests))
            .route("/standin/reset", post(reset))
            .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"errors": "Not Found"}))) })
            .with_state(self.clone())
    }

    /// Serves [`ShopifyStandin::router`] on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn record(&self, request: StandinRequest) {
        lock(&self.inner.requests).push(request);
    }
}

/// The filters of a listing; a cursor carries them to the next page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Filters {
    status: String,
    created_at_min: Option<i64>,
    created_at_max: Option<i64>,
    updated_at_min: Option<i64>,
    updated_at_max: Option<i64>,
}

/// The opaque `page_info`: the filters and where the page starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    filters: Filters,
    /// `next`: ids below `id`; `previous`: ids above it.
    direction: String,
    id: u64,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(s: &str) -> Option<Cursor> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
    }
}

async fn list_orders(
    State(standin): State<ShopifyStandin>,
    Path(version): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/admin/api/{version}/orders.json");
    let (status, body, link, count) = answer(&standin, &version, query.as_deref(), &headers);
    standin.record(StandinRequest {
        path,
        query,
        status: status.as_u16(),
        orders: count,
    });
    let mut resp = (status, Json(body)).into_response();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, link);
    }
    resp
}

fn answer(
    standin: &ShopifyStandin,
    version: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> (StatusCode, Value, Option<String>, usize) {
    let error = |status: StatusCode, errors: Value| (status, json!({ "errors": errors }), None, 0);
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(standin.inner.access_token.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!("[API] Invalid API key or access token (unrecognized login or wrong password)"),
        );
    }
    let params: Vec<(String, String)> = query
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"limit": ["must be between 1 and 250"]}),
            );
        }
    };
    let cursor = match get("page_info") {
        Some(p) => {
            if let Some((k, _)) = params
                .iter()
                .find(|(k, _)| !matches!(k.as_str(), "page_info" | "limit" | "fields"))
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    json!({ k.clone(): ["cannot be passed when page_info is present"] }),
                );
            }
            match Cursor::decode(p) {
                Some(c) => Some(c),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        json!({"page_info": ["Invalid value"]}),
                    );
                }
            }
        }
        None => None,
    };
    let filters = match &cursor {
        Some(c) => c.filters.clone(),
        None => {
            let time = |k: &str| -> Result<Option<i64>, String> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => parse_time(v).map(Some).ok_or_else(|| k.to_owned()),
                }
            };
            let mut f = Filters {
                status: get("status").unwrap_or("open").to_owned(),
                ..Filters::default()
            };
            for (k, slot) in [
                ("created_at_min", &mut f.created_at_min),
                ("created_at_max", &mut f.created_at_max),
                ("updated_at_min", &mut f.updated_at_min),
                ("updated_at_max", &mut f.updated_at_max),
            ] {
                match time(k) {
                    Ok(v) => *slot = v,
                    Err(k) => {
                        return error(StatusCode::BAD_REQUEST, json!({ k: ["is not a date"] }));
                    }
                }
            }
            if !matches!(f.status.as_str(), "open" | "closed" | "cancelled" | "any") {
                return error(
                    StatusCode::BAD_REQUEST,
                    json!({"status": ["Invalid value"]}),
                );
            }
            f
        }
    };

    // Newest id first, as Shopify lists orders.
    let mut matching: Vec<Value> = lock(&standin.inner.orders)
        .iter()
        .filter(|o| matches_filters(o, &filters))
        .cloned()
        .collect();
    matching.sort_by_key(|o| std::cmp::Reverse(order_id(o)));
    let (page, has_before, has_after): (Vec<Value>, bool, bool) = match &cursor {
        None => {
            let page: Vec<Value> = matching.iter().take(limit).cloned().collect();
            (page, false, matching.len() > limit)
        }
        Some(c) if c.direction == "previous" => {
            let above: Vec<&Value> = matching
                .iter()
                .filter(|o| order_id(o).is_some_and(|id| id > c.id))
                .collect();
            let start = above.len().saturating_sub(limit);
            let page = above[start..].iter().map(|v| (*v).clone()).collect();
            (page, start > 0, true)
        }
        Some(c) => {
            let below: Vec<&Value> = matching
                .iter()
                .filter(|o| order_id(o).is_some_and(|id| id < c.id))
                .collect();
            let page = below.iter().take(limit).map(|v| (*v).clone()).collect();
            (page, true, below.len() > limit)
        }
    };
    // The cursor ids, before `fields` may leave the id out.
    let (first_id, last_id) = (
        page.first().and_then(order_id),
        page.last().and_then(order_id),
    );
    // `fields`: only those fields of each order.
    let fields: Option<Vec<&str>> = get("fields").map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect()
    });
    let page: Vec<Value> = match &fields {
        None => page,
        Some(fields) => page
            .into_iter()
            .map(|o| match o {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .filter(|(k, _)| fields.contains(&k.as_str()))
                        .collect(),
                ),
                other => other,
            })
            .collect(),
    };
    let fields_param = fields
        .as_ref()
        .map(|f| format!("&fields={}", f.join("%2C")))
        .unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link_to = |direction: &str, id: u64| {
        let cursor = Cursor {
            filters: filters.clone(),
            direction: direction.to_owned(),
            id,
        };
        format!(
            "<http://{host}/admin/api/{version}/orders.json?limit={limit}{fields_param}&page_info={}>; rel=\"{direction}\"",
            cursor.encode()
        )
    };
    let mut links = Vec::new();
    if has_before && let Some(id) = first_id {
        links.push(link_to("previous", id));
    }
    if has_after && let Some(id) = last_id {
        links.push(link_to("next", id));
    }
    let count = page.len();
    (
        StatusCode::OK,
        json!({ "orders": page }),
        (!links.is_empty()).then(|| links.join(", ")),
        count,
    )
}

fn matches_filters(o: &Value, f: &Filters) -> bool {
    let time = |k: &str| o.get(k).and_then(Value::as_str).and_then(parse_time);
    let set = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
    let status_ok = match f.status.as_str() {
        "open" => !set("closed_at") && !set("cancelled_at"),
        "closed" => set("closed_at"),
        "cancelled" => set("cancelled_at"),
        _ => true,
    };
    let within = |t: Option<i64>, min: Option<i64>, max: Option<i64>| {
        min.is_none_or(|m| t.is_some_and(|t| t >= m))
            && max.is_none_or(|m| t.is_some_and(|t| t <= m))
    };
    status_ok
        && within(time("created_at"), f.created_at_min, f.created_at_max)
        && within(time("updated_at"), f.updated_at_min, f.updated_at_max)
}

fn order_id(o: &Value) -> Option<u64> {
    o.get("id").and_then(Value::as_u64)
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn add_orders(State(standin): State<ShopifyStandin>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| standin.add(v))
    {
        Ok(n) => (StatusCode::CREATED, Json(json!({ "added": n }))).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "errors": e }))).into_response(),
    }
}

async fn list_requests(State(standin): State<ShopifyStandin>) -> Response {
    Json(standin.requests()).into_response()
}

async fn reset(State(standin): State<ShopifyStandin>) -> StatusCode {
    standin.reset();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(
            decode("2026-01-01T00%3A00%3A00%2B00%3A00"),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("100%"), "100%");
    }

    #[test]
    fn fields_leave_only_those_fields_and_the_next_page_keeps_them() {
        let standin = ShopifyStandin::new("t");
        for id in [1, 2] {
            standin
                .add(json!({"id": id, "email": "a@example.com", "test": false}))
                .unwrap();
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-shopify-access-token", HeaderValue::from_static("t"));
        let (status, body, link, n) = answer(
            &standin,
            "2026-01",
            Some("status=any&limit=1&fields=id%2Ctest"),
            &headers,
        );
        assert_eq!((status, n), (StatusCode::OK, 1));
        assert_eq!(body, json!({"orders": [{"id": 2, "test": false}]}));
        let link = link.unwrap();
        assert!(link.contains("fields=id%2Ctest&page_info="), "{link}");
        let next = link.split_once("orders.json?").unwrap().1;
        let next = next.split_once('>').unwrap().0;
        let (_, body, _, _) = answer(&standin, "2026-01", Some(next), &headers);
        assert_eq!(body, json!({"orders": [{"id": 1, "test": false}]}));
    }

    #[test]
    fn filters_select_by_status_and_time() {
        let o = json!({"id": 1, "created_at": "2026-01-01T00:00:00Z", "cancelled_at": null});
        let f = Filters {
            status: "open".into(),
            created_at_min: parse_time("2025-12-31T00:00:00Z"),
            ..Filters::default()
        };
        assert!(matches_filters(&o, &f));
        let f = Filters {
            status: "cancelled".into(),
            ..Filters::default()
        };
        assert!(!matches_filters(&o, &f));
    }
}
