//! The Shopify Admin GraphQL API (`POST {admin_api_base}/graphql.json`): one client per shop,
//! shared by the poller, the backfill, the census and `shopify connect`, with the shop's
//! [`AdminTokens`].
//!
//! Every document it sends is a file in `graphql/`, validated against Shopify's 2026-04 schema
//! in a test. Throttling is cost-based: every answer carries `extensions.cost.throttleStatus`
//! (`maximumAvailable`, `currentlyAvailable`, `restoreRate` points per second), so the client
//! keeps the bucket's level, and before a query whose requested cost is more than the bucket
//! holds now it waits for the bucket to refill that far. A throttled answer (HTTP 200 with
//! `errors[].extensions.code = "THROTTLED"`, or a 429) waits the same way and asks again. A
//! 401 renews the token once and asks again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::token::{AdminTokens, TokenError};
use crate::config::shopify::Shop;
use crate::store::StoreError;

/// One GraphQL document pincapi sends, with the name of its operation.
#[derive(Debug, Clone, Copy)]
pub struct Document {
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! document {
    ($name:literal, $file:literal) => {
        Document {
            name: $name,
            text: include_str!(concat!("graphql/", $file)),
        }
    };
}

pub const ORDERS_PAGE: Document = document!("OrdersPage", "orders_page.graphql");
pub const ORDER_LINE_ITEMS: Document = document!("OrderLineItems", "order_line_items.graphql");
pub const CENSUS_PAGE: Document = document!("CensusPage", "census_page.graphql");
pub const BULK_ORDERS: Document = document!("BulkOrders", "bulk_orders.graphql");
/// Not an operation of its own: the query text a bulk operation runs.
pub const BULK_ORDERS_INNER: Document = document!("", "bulk_orders_inner.graphql");
pub const BULK_STATUS: Document = document!("BulkStatus", "bulk_status.graphql");
pub const WEBHOOK_SUBSCRIPTIONS: Document =
    document!("WebhookSubscriptions", "webhook_subscriptions.graphql");
pub const WEBHOOK_CREATE: Document = document!("WebhookCreate", "webhook_create.graphql");
pub const WEBHOOK_UPDATE: Document = document!("WebhookUpdate", "webhook_update.graphql");
pub const WEBHOOK_DELETE: Document = document!("WebhookDelete", "webhook_delete.graphql");
pub const ACCESS_SCOPES: Document = document!("AccessScopes", "access_scopes.graphql");
pub const SHOP: Document = document!("Shop", "shop.graphql");

/// Every document, for the schema test.
pub const DOCUMENTS: [Document; 12] = [
    ORDERS_PAGE,
    ORDER_LINE_ITEMS,
    CENSUS_PAGE,
    BULK_ORDERS,
    BULK_ORDERS_INNER,
    BULK_STATUS,
    WEBHOOK_SUBSCRIPTIONS,
    WEBHOOK_CREATE,
    WEBHOOK_UPDATE,
    WEBHOOK_DELETE,
    ACCESS_SCOPES,
    SHOP,
];

/// Shopify's limit on one query's requested cost.
pub const MAX_QUERY_COST: u32 = 1000;
/// Attempts of one query that Shopify throttles.
const MAX_THROTTLED: u32 = 10;
/// The longest wait for the bucket before one query.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What can go wrong talking to a shop's Admin API.
#[derive(Debug, thiserror::Error)]
pub enum ShopifyError {
    #[error("while building the Shopify Admin API client: {0}")]
    Client(reqwest::Error),
    #[error("while calling the Admin API of {shop}: {source}")]
    Http {
        shop: String,
        source: reqwest::Error,
    },
    #[error("the Admin API of {shop} answered {status}{hint}: {body}")]
    Status {
        shop: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("the Admin API of {shop} refused {operation}: {messages}{hint}")]
    Graphql {
        shop: String,
        operation: &'static str,
        messages: String,
        hint: &'static str,
    },
    #[error("the Admin API of {shop} kept throttling {operation} after {attempts} attempts")]
    Throttled {
        shop: String,
        operation: &'static str,
        attempts: u32,
    },
    #[error("the Admin API of {shop} answered {operation} with a body of another shape: {reason}")]
    Shape {
        shop: String,
        operation: &'static str,
        reason: String,
    },
    #[error("since: {0} is not a valid time")]
    BadTime(i64),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `extensions.cost` of an answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cost {
    pub requested_query_cost: Option<f64>,
    pub actual_query_cost: Option<f64>,
    pub throttle_status: Option<ThrottleStatus>,
}

/// The bucket, as Shopify reports it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ThrottleStatus {
    pub maximum_available: f64,
    pub currently_available: f64,
    /// Points per second.
    pub restore_rate: f64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Value>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Extensions {
    cost: Option<Cost>,
}

/// The bucket's level when last reported.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    status: ThrottleStatus,
    at: Instant,
}

impl Bucket {
    /// How long until the bucket holds `cost` points.
    fn wait_for(&self, cost: f64) -> Duration {
        let s = self.status;
        if s.restore_rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = (s.currently_available + self.at.elapsed().as_secs_f64() * s.restore_rate)
            .min(s.maximum_available.max(s.currently_available));
        let need = cost.min(s.maximum_available.max(1.0)) - now;
        let secs = need / s.restore_rate;
        if secs.is_nan() || secs <= 0.0 {
            // Nothing to wait for (or numbers Shopify would not send: NaN).
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())).unwrap_or(MAX_WAIT)
        }
    }
}

/// One shop's Admin GraphQL API.
#[derive(Debug)]
pub struct AdminApi {
    tokens: Arc<AdminTokens>,
    http: reqwest::Client,
    url: String,
    bucket: Mutex<Option<Bucket>>,
}

impl AdminApi {
    /// A client for the shop of `tokens`; `timeout` bounds each request.
    pub fn new(tokens: Arc<AdminTokens>, timeout: Duration) -> Result<Arc<AdminApi>, ShopifyError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("pincapi/", env!("CARGO_PKG_VERSION")))
            // The token never follows a redirect away from the shop's Admin API.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ShopifyError::Client)?;
        let url = tokens.shop().graphql_url();
        Ok(Arc::new(AdminApi {
            tokens,
            http,
            url,
            bucket: Mutex::new(None),
        }))
    }

    /// The shop.
    pub fn shop(&self) -> &Shop {
        self.tokens.shop()
    }

    /// The shop's tokens.
    pub fn tokens(&self) -> &Arc<AdminTokens> {
        &self.tokens
    }

    /// Runs `document` with `variables` and reads its `data` as `T`. `cost` is the
    /// document's requested cost as estimated, for waiting on the bucket before sending.
    pub async fn run<T: DeserializeOwned>(
        &self,
        document: Document,
        variables: Value,
        cost: u32,
    ) -> Result<T, ShopifyError> {
        let data = self.run_raw(document, variables, cost).await?;
        serde_json::from_value(data).map_err(|e| self.shape(document, e.to_string()))
    }

    async fn run_raw(
        &self,
        document: Document,
        variables: Value,
        cost: u32,
    ) -> Result<Value, ShopifyError> {
        let domain = &self.shop().domain;
        let body = json!({
            "query": document.text,
            "operationName": document.name,
            "variables": variables,
        });
        let mut token = self.tokens.token().await?;
        let mut renewed = false;
        let mut throttled = 0;
        loop {
            let wait = self.bucket_wait(f64::from(cost));
            if !wait.is_zero() {
                tracing::debug!(shop = %domain, wait_ms = wait.as_millis() as u64, operation = document.name, "Waiting for the Admin API's cost bucket to refill");
                tokio::time::sleep(wait).await;
            }
            let resp = self
                .http
                .post(&self.url)
                .header("X-Shopify-Access-Token", token.expose())
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| ShopifyError::Http {
                    shop: domain.clone(),
                    source: e.without_url(),
                })?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| ShopifyError::Http {
                shop: domain.clone(),
                source: e.without_url(),
            })?;
            if status == 401 && !renewed {
                renewed = true;
                token = self.tokens.after_rejection(&token).await?;
                continue;
            }
            if status == 429 || status == 503 {
                throttled += 1;
                if throttled >= MAX_THROTTLED {
                    return Err(self.throttled(document, throttled));
                }
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_WAIT))
                    .await;
                continue;
            }
            if !(200..300).contains(&status) {
                let hint = match status {
                    401 | 403 => {
                        "; check the shop's credentials and that the app is installed with the \
                         read_orders scope"
                    }
                    404 => "; check admin_api_base (…/admin/api/<version>)",
                    _ => "",
                };
                return Err(ShopifyError::Status {
                    shop: domain.clone(),
                    status,
                    hint,
                    body: snippet(&bytes),
                });
            }
            let answer: Answer = serde_json::from_slice(&bytes)
                .map_err(|e| self.shape(document, format!("not GraphQL JSON: {e}")))?;
            if let Some(cost) = answer.extensions.as_ref().and_then(|e| e.cost.as_ref())
                && let Some(status) = cost.throttle_status
            {
                *self.bucket.lock().unwrap_or_else(|p| p.into_inner()) = Some(Bucket {
                    status,
                    at: Instant::now(),
                });
            }
            if let Some(errors) = answer.errors.as_ref().filter(|e| !is_empty(e)) {
                if has_code(errors, "THROTTLED") {
                    throttled += 1;
                    if throttled >= MAX_THROTTLED {
                        return Err(self.throttled(document, throttled));
                    }
                    // The bucket was just read: the wait at the top of the loop covers it.
                    if self.bucket_wait(f64::from(cost)).is_zero() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                let hint = if has_code(errors, "ACCESS_DENIED") {
                    "; the app lacks a scope it needs (read_orders; read_all_orders for orders \
                     older than 60 days): add it to the app's configuration and approve it on \
                     the shop"
                } else if has_code(errors, "MAX_COST_EXCEEDED") {
                    "; the query asks for more than 1000 points"
                } else {
                    ""
                };
                return Err(ShopifyError::Graphql {
                    shop: domain.clone(),
                    operation: document.name,
                    messages: messages(errors),
                    hint,
                });
            }
            return answer
                .data
                .ok_or_else(|| self.shape(document, "no data".to_owned()));
        }
    }

    /// How long to wait before a query of `cost` points.
    fn bucket_wait(&self, cost: f64) -> Duration {
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |b| b.wait_for(cost))
    }

    fn shape(&self, document: Document, reason: String) -> ShopifyError {
        ShopifyError::Shape {
            shop: self.shop().domain.clone(),
            operation: document.name,
            reason,
        }
    }

    fn throttled(&self, document: Document, attempts: u32) -> ShopifyError {
        ShopifyError::Throttled {
            shop: self.shop().domain.clone(),
            operation: document.name,
            attempts,
        }
    }

    /// A plain GET of a file Shopify links to (a bulk operation's JSONL), without the token:
    /// those URLs are signed. Read line by line with `on_line`.
    pub async fn download_lines(
        &self,
        url: &str,
        mut on_line: impl FnMut(&[u8]) -> Result<(), ShopifyError>,
    ) -> Result<(), ShopifyError> {
        let domain = self.shop().domain.clone();
        let http_err = |e: reqwest::Error| ShopifyError::Http {
            shop: domain.clone(),
            source: e.without_url(),
        };
        let mut resp = self
            .http
            .get(url)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(ShopifyError::Status {
                shop: domain.clone(),
                status: resp.status().as_u16(),
                hint: "; the bulk operation's result file",
                body: String::new(),
            });
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + end];
                if !line.iter().all(u8::is_ascii_whitespace) {
                    on_line(line)?;
                }
                start += end + 1;
            }
            pending.drain(..start);
        }
        if !pending.iter().all(u8::is_ascii_whitespace) {
            on_line(&pending)?;
        }
        Ok(())
    }
}

fn is_empty(errors: &Value) -> bool {
    match errors {
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn has_code(errors: &Value, code: &str) -> bool {
    errors.as_array().is_some_and(|a| {
        a.iter().any(|e| {
            e.pointer("/extensions/code").and_then(Value::as_str) == Some(code)
                || (code == "THROTTLED"
                    && e.get("message").and_then(Value::as_str) == Some("Throttled"))
        })
    })
}

fn messages(errors: &Value) -> String {
    match errors {
        Value::Array(a) => a
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| e.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::try_from_secs_f64(s.min(MAX_WAIT.as_secs_f64())).unwrap_or(MAX_WAIT))
}

/// The start of an error body, for messages (Admin API errors never echo the token).
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

/// `since` (Unix seconds) as the Admin API's RFC 3339 time.
pub fn rfc3339(since: i64) -> Result<String, ShopifyError> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(since)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(ShopifyError::BadTime(since))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_restore_rate() {
        let b = Bucket {
            status: ThrottleStatus {
                maximum_available: 1000.0,
                currently_available: 100.0,
                restore_rate: 50.0,
            },
            at: Instant::now(),
        };
        assert_eq!(b.wait_for(50.0), Duration::ZERO);
        let w = b.wait_for(600.0).as_secs_f64();
        assert!((9.9..=10.0).contains(&w), "{w}");
        // A query larger than the bucket waits for a full bucket, not forever.
        assert!(b.wait_for(5000.0) <= Duration::from_secs(18));
        // Numbers Shopify would never send do not panic.
        for (max, now, rate) in [
            (1e300, 0.0, 1e-300),
            (f64::NAN, 0.0, 1.0),
            (10.0, 0.0, f64::INFINITY),
        ] {
            let odd = Bucket {
                status: ThrottleStatus {
                    maximum_available: max,
                    currently_available: now,
                    restore_rate: rate,
                },
                at: Instant::now(),
            };
            assert!(odd.wait_for(1e300) <= MAX_WAIT);
        }
    }

    #[test]
    fn throttled_and_denied_answers_are_told_apart() {
        let throttled = json!([{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]);
        assert!(has_code(&throttled, "THROTTLED"));
        let denied = json!([{"message": "Access denied for orders field.", "extensions": {"code": "ACCESS_DENIED"}}]);
        assert!(!has_code(&denied, "THROTTLED"));
        assert_eq!(messages(&denied), "Access denied for orders field.");
    }
}
