//! A local stand-in for one shop on Shopify, as the gateway meets it in 2026: the OAuth token
//! endpoint and install page (`oauth`), the Admin GraphQL API for every document pincapi sends
//! (`graphql`, `orders`), and webhook subscriptions that it delivers to, signed, and deletes
//! after 8 failed deliveries in a row (`webhooks`). Tests drop webhooks on purpose and watch
//! the poller close the gap; `pincapi shopify standin` serves one for trying things by hand.
//!
//! Routes:
//! - `POST /admin/oauth/access_token`: the client-credentials, authorization-code (with
//!   `expiring=1`: 60-minute tokens and a rotating refresh token) and refresh-token grants,
//!   form-encoded or JSON;
//! - `GET /admin/oauth/authorize`: approves at once and redirects to `redirect_uri` with
//!   `code`, `hmac`, `host`, `shop`, `state` and `timestamp`, signed as Shopify signs them;
//! - `POST /admin/api/{version}/graphql.json`: the operations of `graphql.rs`, with cost
//!   extensions and a leaky bucket that throttles;
//! - `GET /standin/bulk/{id}.jsonl`: a finished bulk operation's result;
//! - `POST /standin/orders` (add orders, REST/webhook shape), `POST /standin/deliver`
//!   (`{"topic", "payload"}`: deliver a webhook to the subscriptions of its topic),
//!   `GET /standin/requests`, `POST /standin/reset`.
//!
//! Tokens expire on the stand-in's clock, so a test on a `ManualClock` sees renewals without
//! waiting; the bucket refills in real time.

mod graphql;
mod oauth;
mod orders;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::{SharedClock, SystemClock};

pub use webhooks::Delivery;

/// One request the Admin API answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandinRequest {
    /// The GraphQL operation, or the OAuth grant (`grant:client_credentials`, ...).
    pub operation: String,
    /// The operation's variables (no tokens).
    pub variables: Value,
    /// HTTP status.
    pub status: u16,
    /// `THROTTLED`, `ACCESS_DENIED`, ... when the answer was an error.
    pub error: Option<String>,
    /// Orders in the answer.
    pub orders: usize,
}

/// How the stand-in's shop and app are set up.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// The shop's `*.myshopify.com` domain, sent in `X-Shopify-Shop-Domain`.
    pub shop_domain: String,
    /// The app's client id and secret.
    pub client_id: String,
    pub client_secret: String,
    /// A legacy custom app's static token the Admin API also accepts.
    pub static_token: Option<String>,
    /// The lifetime of a client-credentials token, seconds (Shopify: 86399).
    pub token_lifetime_secs: i64,
    /// The lifetime of an expiring offline token from the install flow, seconds (3600).
    pub offline_token_lifetime_secs: i64,
    /// The scopes the app is granted.
    pub scopes: Vec<String>,
    /// The bucket: size and restore rate in points per second (Standard plan: 2000, 100).
    pub bucket_size: f64,
    pub restore_rate: f64,
    /// How many status looks a bulk operation stays `RUNNING` for.
    pub bulk_running_looks: u32,
    /// The clock tokens expire on.
    pub clock: SharedClock,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions {
            shop_domain: "standin.myshopify.com".into(),
            client_id: "standin-client-id".into(),
            client_secret: "standin-client-secret".into(),
            static_token: None,
            token_lifetime_secs: 86_399,
            offline_token_lifetime_secs: 3600,
            scopes: [
                "read_orders",
                "read_all_orders",
                "read_customers",
                "read_checkouts",
            ]
            .map(String::from)
            .to_vec(),
            bucket_size: 2000.0,
            restore_rate: 100.0,
            bulk_running_looks: 1,
            clock: SystemClock::shared(),
        }
    }
}

/// A token the stand-in issued.
#[derive(Debug, Clone)]
struct Issued {
    /// Unix ms; `None`: it does not expire.
    expires_at_ms: Option<i64>,
}

/// A refresh token and what became of it.
#[derive(Debug, Clone)]
struct Refresh {
    /// The token that replaced this one; this one stays usable until that one is used.
    replaced_by: Option<String>,
    used_up: bool,
}

/// A webhook subscription.
#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    /// `gid://shopify/WebhookSubscription/<n>`.
    pub id: String,
    /// The GraphQL enum, e.g. `ORDERS_CREATE`.
    pub topic: String,
    pub uri: String,
    /// Failed deliveries in a row.
    pub failures: u32,
}

/// A bulk operation.
#[derive(Debug, Clone)]
struct BulkOp {
    looks: u32,
    /// The JSONL result.
    result: String,
    objects: usize,
}

#[derive(Debug, Default)]
struct Shop {
    orders: Vec<Value>,
    tokens: HashMap<String, Issued>,
    refresh: HashMap<String, Refresh>,
    /// Authorization codes not yet exchanged.
    codes: Vec<String>,
    subscriptions: Vec<Subscription>,
    next_id: u64,
    bulk: HashMap<String, BulkOp>,
    requests: Vec<StandinRequest>,
    deliveries: Vec<Delivery>,
    /// Points in the bucket, and when that was so.
    bucket: Option<(f64, Instant)>,
    /// Throttle every query until this many more have been throttled.
    throttle_next: u32,
    /// The next `n` token requests fail with a 500.
    fail_token_requests: u32,
}

/// A running stand-in's shared state. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct ShopifyStandin {
    options: Arc<StandinOptions>,
    shop: Arc<Mutex<Shop>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ShopifyStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifyStandin")
            .field("shop_domain", &self.options.shop_domain)
            .finish_non_exhaustive()
    }
}

impl ShopifyStandin {
    /// A stand-in with no orders that also accepts the static token `static_token`.
    pub fn new(static_token: impl Into<String>) -> ShopifyStandin {
        ShopifyStandin::with(StandinOptions {
            static_token: Some(static_token.into()),
            ..StandinOptions::default()
        })
    }

    /// A stand-in set up as `options` say.
    pub fn with(options: StandinOptions) -> ShopifyStandin {
        ShopifyStandin {
            options: Arc::new(options),
            shop: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shop> {
        self.shop.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The options it runs with.
    pub fn options(&self) -> &StandinOptions {
        &self.options
    }

    /// Adds orders in the webhook's (REST) shape: an order object, `{"order": {...}}` or
    /// `{"orders": [...]}`. Each needs an integer `id`; an order with an id held already
    /// replaces it (it was updated). Returns how many were added.
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
        if orders.iter().any(|o| orders::order_id(o).is_none()) {
            return Err("every order needs an integer id".into());
        }
        let n = orders.len();
        let ids: std::collections::HashSet<Option<u64>> =
            orders.iter().map(orders::order_id).collect();
        let mut shop = self.lock();
        shop.orders.retain(|x| !ids.contains(&orders::order_id(x)));
        shop.orders.extend(orders);
        Ok(n)
    }

    /// Every order held.
    pub fn orders(&self) -> Vec<Value> {
        self.lock().orders.clone()
    }

    /// Requests answered, in order.
    pub fn requests(&self) -> Vec<StandinRequest> {
        self.lock().requests.clone()
    }

    /// Requests of one GraphQL operation (or grant).
    pub fn requests_of(&self, operation: &str) -> Vec<StandinRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.operation == operation)
            .cloned()
            .collect()
    }

    /// The webhook subscriptions.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.lock().subscriptions.clone()
    }

    /// Deletes a subscription, as Shopify does after failed deliveries or an operator in the
    /// admin. Whether there was one.
    pub fn delete_subscription(&self, id: &str) -> bool {
        let mut shop = self.lock();
        let before = shop.subscriptions.len();
        shop.subscriptions.retain(|s| s.id != id);
        shop.subscriptions.len() < before
    }

    /// Deliveries made so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Ends every token issued so far, as an uninstall or a rotated secret does: the next
    /// Admin API call with one is answered 401.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Every token issued so far (for tests that look for them where they must not be).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// The next `n` GraphQL queries are answered `THROTTLED`, whatever the bucket holds.
    pub fn throttle_next(&self, n: u32) {
        self.lock().throttle_next = n;
    }

    /// The next `n` token requests are answered 500.
    pub fn fail_token_requests(&self, n: u32) {
        self.lock().fail_token_requests = n;
    }

    /// Forgets orders, requests and deliveries.
    pub fn reset(&self) {
        let mut shop = self.lock();
        shop.orders.clear();
        shop.requests.clear();
        shop.deliveries.clear();
    }

    fn record(&self, request: StandinRequest) {
        self.lock().requests.push(request);
    }

    fn next_id(&self) -> u64 {
        let mut shop = self.lock();
        shop.next_id += 1;
        shop.next_id
    }

    /// Every route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/admin/oauth/access_token", post(oauth::access_token))
            .route("/admin/oauth/authorize", get(oauth::authorize))
            .route("/admin/api/{version}/graphql.json", post(graphql::graphql))
            .route("/standin/bulk/{file}", get(orders::bulk_result))
            .route("/standin/orders", post(add_orders))
            .route("/standin/deliver", post(webhooks::deliver_route))
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
}

/// A random token-like string with `prefix`.
fn random_token(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
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
