//! The stand-in's webhook subscriptions: the GraphQL operations on them, and deliveries,
//! signed as Shopify signs them (`X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body with
//! the app's client secret). A subscription whose deliveries fail 8 times in a row is
//! deleted, as Shopify deletes a shop-specific subscription after 8 failed deliveries.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{ShopifyStandin, Subscription, random_token};

/// Failed deliveries in a row after which a subscription is deleted.
pub const MAX_FAILURES: u32 = 8;

/// Topics a subscription can be made for, as GraphQL names them.
const TOPICS: [&str; 11] = [
    "ORDERS_CREATE",
    "ORDERS_PAID",
    "ORDERS_UPDATED",
    "ORDERS_CANCELLED",
    "REFUNDS_CREATE",
    "CHECKOUTS_CREATE",
    "CHECKOUTS_UPDATE",
    "CARTS_CREATE",
    "CARTS_UPDATE",
    "CUSTOMERS_CREATE",
    "APP_UNINSTALLED",
];

/// One delivery the stand-in made.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `orders/create`, ...
    pub topic: String,
    pub uri: String,
    /// The status the endpoint answered; 0 when it did not answer.
    pub status: u16,
    pub webhook_id: String,
}

/// `orders/create` → `ORDERS_CREATE`.
pub fn graphql_topic(topic: &str) -> String {
    topic.replace('/', "_").to_ascii_uppercase()
}

fn user_error(field: &str, message: &str) -> Value {
    json!([{"field": [field], "message": message}])
}

fn sub_json(s: &Subscription) -> Value {
    json!({"id": s.id, "topic": s.topic, "uri": s.uri, "format": "JSON"})
}

impl ShopifyStandin {
    /// The webhook operations; the data and the actual cost.
    pub(super) fn webhook_operation(&self, op: &str, v: &Value) -> (Value, u32) {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        match op {
            "WebhookSubscriptions" => {
                let subs = self.subscriptions();
                let nodes: Vec<Value> = subs.iter().map(sub_json).collect();
                (
                    json!({"webhookSubscriptions": {
                        "pageInfo": {"hasNextPage": false, "endCursor": null},
                        "nodes": nodes}}),
                    2 + subs.len() as u32,
                )
            }
            "WebhookCreate" => {
                let (topic, uri) = (text("topic"), text("uri"));
                let key = "webhookSubscriptionCreate";
                let fail = |f: &str, m: &str| {
                    (
                        json!({ key: {"webhookSubscription": null, "userErrors": user_error(f, m)} }),
                        10,
                    )
                };
                if !TOPICS.contains(&topic.as_str()) {
                    return fail("topic", "Topic is not a valid webhook topic");
                }
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    return fail("webhookSubscription.uri", "Address is invalid");
                }
                if topic == "CUSTOMERS_CREATE"
                    && !self.options.scopes.iter().any(|s| s == "read_customers")
                {
                    return fail(
                        "topic",
                        "You do not have permission to create or update webhooks with customers/create topic. This topic requires the read_customers scope.",
                    );
                }
                if self
                    .subscriptions()
                    .iter()
                    .any(|s| s.topic == topic && s.uri == uri)
                {
                    return fail("address", "Address for this topic has already been taken");
                }
                let sub = Subscription {
                    id: format!("gid://shopify/WebhookSubscription/{}", self.next_id()),
                    topic,
                    uri,
                    failures: 0,
                };
                let answer = sub_json(&sub);
                self.lock().subscriptions.push(sub);
                (
                    json!({ key: {"webhookSubscription": answer, "userErrors": []} }),
                    10,
                )
            }
            "WebhookUpdate" => {
                let (id, uri) = (text("id"), text("uri"));
                let key = "webhookSubscriptionUpdate";
                let mut shop = self.lock();
                match shop.subscriptions.iter_mut().find(|s| s.id == id) {
                    Some(s) => {
                        s.uri = uri;
                        s.failures = 0;
                        let answer = sub_json(s);
                        (
                            json!({ key: {"webhookSubscription": answer, "userErrors": []} }),
                            10,
                        )
                    }
                    None => (
                        json!({ key: {"webhookSubscription": null,
                            "userErrors": user_error("id", "Webhook subscription does not exist")} }),
                        10,
                    ),
                }
            }
            _ => {
                let id = text("id");
                let key = "webhookSubscriptionDelete";
                if self.delete_subscription(&id) {
                    (
                        json!({ key: {"deletedWebhookSubscriptionId": id, "userErrors": []} }),
                        10,
                    )
                } else {
                    (
                        json!({ key: {"deletedWebhookSubscriptionId": null,
                            "userErrors": user_error("id", "Webhook subscription does not exist")} }),
                        10,
                    )
                }
            }
        }
    }

    /// Delivers `payload` on `topic` (`orders/create`) to every subscription of the topic,
    /// signed; counts failures and deletes a subscription at [`MAX_FAILURES`] in a row.
    pub async fn deliver(&self, topic: &str, payload: &Value) -> Vec<Delivery> {
        let wanted = graphql_topic(topic);
        let subs: Vec<Subscription> = self
            .subscriptions()
            .into_iter()
            .filter(|s| s.topic == wanted)
            .collect();
        let mut out = Vec::new();
        for sub in subs {
            let d = self.deliver_to(topic, payload, &sub.uri).await;
            let ok = (200..300).contains(&d.status);
            let mut shop = self.lock();
            if let Some(s) = shop.subscriptions.iter_mut().find(|s| s.id == sub.id) {
                s.failures = if ok { 0 } else { s.failures + 1 };
                if s.failures >= MAX_FAILURES {
                    let id = s.id.clone();
                    shop.subscriptions.retain(|s| s.id != id);
                }
            }
            out.push(d);
        }
        out
    }

    /// Delivers one signed webhook to `uri`, whatever the subscriptions say: how the
    /// compliance topics (configured in the app, not through the API) arrive.
    pub async fn deliver_to(&self, topic: &str, payload: &Value, uri: &str) -> Delivery {
        let body = payload.to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.options.client_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let webhook_id = random_token("");
        let now = time::OffsetDateTime::from_unix_timestamp(self.options.clock.now_ms() / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let status = self
            .http
            .post(uri)
            .header("Content-Type", "application/json")
            .header("X-Shopify-Topic", topic)
            .header("X-Shopify-Hmac-Sha256", signature)
            .header("X-Shopify-Shop-Domain", &self.options.shop_domain)
            .header("X-Shopify-Webhook-Id", &webhook_id)
            .header("X-Shopify-Event-Id", random_token(""))
            .header("X-Shopify-Triggered-At", now)
            .header("X-Shopify-API-Version", "2026-04")
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        let d = Delivery {
            topic: topic.to_owned(),
            uri: uri.to_owned(),
            status,
            webhook_id,
        };
        self.lock().deliveries.push(d.clone());
        d
    }
}

/// `POST /standin/deliver` `{"topic": "orders/create", "payload": {...}}`.
pub(super) async fn deliver_route(State(standin): State<ShopifyStandin>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"errors": "not JSON"}))).into_response();
    };
    let (Some(topic), Some(payload)) = (v.get("topic").and_then(Value::as_str), v.get("payload"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": "give topic and payload"})),
        )
            .into_response();
    };
    let delivered = standin.deliver(topic, payload).await;
    Json(json!({ "deliveries": delivered })).into_response()
}
