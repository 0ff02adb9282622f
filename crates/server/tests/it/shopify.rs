//! Shopify end to end: signed webhooks into the sandbox, the Admin API stand-in and the
//! reconciliation poller, the order ledger, `pincapi map shopify`, `pincapi shopify backfill`,
//! and the custom pixel run for real with node.

use std::path::Path;
use std::process::{Command, Output};

use std::sync::Arc;

use pincapi::clock::SystemClock;
use pincapi::config::shopify::ShopConfig;
use pincapi::config::{Config, Secret, Synchronous};
use pincapi::metrics::Metrics;
use pincapi::sandbox::SandboxOptions;
use pincapi::shopify::access::ShopAccess;
use pincapi::shopify::poller::Reconciler;
use pincapi::shopify::record::Recorder;
use pincapi::shopify::webhook::sign;
use pincapi::store::sqlite::{SqliteStore, count_states};
use pincapi::store::{OrderStatus, ShopifyStore};
use pincapi_core::shopify::TestOrders;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

pub(crate) const SHOP: &str = "pincapi-test.myshopify.com";
pub(crate) const SECRET: &str = "shpss_test_webhook_secret";
pub(crate) const TAG_ID: &str = "2612345678901";
/// The id of Shopify's sample order, which the pixel test also uses.
pub(crate) const DOCS_ORDER_ID: u64 = 820_982_911_946_154_508;

pub(crate) const DOCS_ORDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
));
const REST_REFUND: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/rest-refund.shopify-python-api.json"
));

pub(crate) fn testdata(name: &str) -> String {
    format!(
        "{}/../../testdata/shopify/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub(crate) fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// Shopify's sample order (a test order, cancelled and voided, from 2021) made into a real
/// sale: not a test, not cancelled, paid, created three minutes ago, with its own id.
pub(crate) fn sale(id: u64) -> Value {
    let mut o: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let created = rfc3339(now() - 180);
    o["id"] = json!(id);
    o["admin_graphql_api_id"] = json!(format!("gid://shopify/Order/{id}"));
    o["test"] = json!(false);
    o["cancelled_at"] = Value::Null;
    o["cancel_reason"] = Value::Null;
    o["closed_at"] = Value::Null;
    o["financial_status"] = json!("paid");
    o["created_at"] = json!(created);
    o["processed_at"] = json!(created);
    o["updated_at"] = json!(created);
    o
}

pub(crate) fn shop(standin: Option<&Standin>) -> ShopConfig {
    let mut s = ShopConfig::new(SHOP);
    s.secrets = vec![Secret::new(SECRET)];
    if let Some(st) = standin {
        s.access_token = Secret::new(SHOPIFY_ADMIN_TOKEN);
        s.admin_api_base = Some(st.base());
    }
    s
}

/// The gateway with one shop (polling `standin` when given), sending purchases at once and
/// polling every 50 ms, two orders a page.
pub(crate) async fn shopify_app(
    standin: Option<&Standin>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let shop = shop(standin);
    spawn_app_with(SandboxOptions::default(), move |c| {
        c.ingest.merge_window_secs = 0;
        c.shopify.shops = vec![shop];
        c.shopify.poll_interval_ms = 50;
        c.shopify.poll_page_size = 2;
        tweak(c);
        pincapi::config::shopify::ShopifyConfig::validate(c).expect("shopify config is valid");
    })
    .await
}

/// A delivery as Shopify sends it, signed with `secret`.
pub(crate) struct Webhook<'a> {
    topic: &'a str,
    body: Vec<u8>,
    secret: &'a str,
    shop: &'a str,
    webhook_id: String,
    /// The newer header names, without `X-`.
    unprefixed: bool,
}

impl<'a> Webhook<'a> {
    pub(crate) fn new(topic: &'a str, body: &Value, webhook_id: &str) -> Webhook<'a> {
        Webhook {
            topic,
            body: serde_json::to_vec(body).unwrap(),
            secret: SECRET,
            shop: SHOP,
            webhook_id: webhook_id.to_owned(),
            unprefixed: false,
        }
    }

    pub(crate) fn raw(topic: &'a str, body: &[u8], webhook_id: &str) -> Webhook<'a> {
        Webhook {
            body: body.to_vec(),
            ..Webhook::new(topic, &Value::Null, webhook_id)
        }
    }

    pub(crate) async fn send(&self, app: &TestApp) -> (u16, Value) {
        let p = if self.unprefixed { "" } else { "X-" };
        let resp = app
            .http
            .post(app.url("/webhooks/shopify"))
            .header("Content-Type", "application/json")
            .header(format!("{p}Shopify-Topic"), self.topic)
            .header(
                format!("{p}Shopify-Hmac-Sha256"),
                sign(&self.body, self.secret),
            )
            .header(format!("{p}Shopify-Shop-Domain"), self.shop)
            .header(format!("{p}Shopify-Webhook-Id"), &self.webhook_id)
            .header(format!("{p}Shopify-API-Version"), "2026-01")
            .body(self.body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

pub(crate) async fn ledger(app: &TestApp) -> Value {
    let (status, text) = app.get("/admin/shopify/ledger", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Rows in the store, by state.
fn event_rows(app: &TestApp) -> i64 {
    count_states(&app.db).unwrap().iter().map(|(_, n)| n).sum()
}

/// Waits until the poller has listed orders `n` more times.
async fn wait_for_polls(standin: &Standin, n: usize) {
    let target = standin.polls() + n;
    wait_for(&format!("{n} more polls"), || async {
        standin.polls() >= target
    })
    .await;
}

fn assert_valid_against_the_strict_schema(event: &Value) {
    let schema = strict_schema();
    let body = json!({ "data": [event] });
    let errors: Vec<String> = schema
        .iter_errors(&body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "strict schema: {errors:?}\n{event}");
}

#[tokio::test]
async fn the_same_webhook_twice_plus_the_poller_seeing_the_order_is_one_event_at_pinterest() {
    let standin = Standin::start().await;
    let order = sale(5_100_000_000_001);
    standin.add(&order);
    let app = shopify_app(Some(&standin), |_| {}).await;

    let webhook = Webhook::new("orders/create", &order, "wh-create-1");
    let (status, first) = webhook.send(&app).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["event_id"], "order-5100000000001");
    let (status, second) = webhook.send(&app).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "duplicate");

    app.wait_delivered(1).await;
    // Let the poller see the order again after the delivery, more than once.
    wait_for("the poller to have seen the order", || async {
        ledger(&app).await["orders"][0]["sources"] == json!(["webhook", "poller"])
    })
    .await;
    wait_for_polls(&standin, 3).await;

    let l = ledger(&app).await;
    assert_eq!(l["orders"].as_array().unwrap().len(), 1);
    assert_eq!(l["orders"][0]["outcome"], "sent");
    assert_eq!(l["orders"][0]["event_id"], "order-5100000000001");
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of("order-5100000000001"), 1);
    let event = &sandbox.events()[0];
    assert_eq!(event.ad_account_id, ACCOUNT);
    assert!(!event.test);
    assert_eq!(event.event["event_name"], "checkout");
    assert_eq!(event.event["custom_data"]["value"], "404.95");
    assert_valid_against_the_strict_schema(&event.event);
}

#[tokio::test]
async fn orders_whose_webhooks_were_dropped_are_sent_once_by_the_poller_across_pages() {
    let standin = Standin::start().await;
    let ids: Vec<u64> = (1..=5).map(|i| 5_200_000_000_000 + i).collect();
    for id in &ids {
        standin.add(&sale(*id));
    }
    // Not an order to send: it must be listed (status=any) and ignored, not sent.
    let mut cancelled = sale(5_200_000_000_099);
    cancelled["cancelled_at"] = cancelled["created_at"].clone();
    standin.add(&cancelled);
    let app = shopify_app(Some(&standin), |_| {}).await;

    app.wait_delivered(ids.len()).await;
    // A sixth order appears after the first runs: the next run finds it.
    let late = 5_200_000_000_006;
    standin.add(&sale(late));
    let sb = &app.sandbox;
    wait_for("the late order", || async {
        sb.count_of(&format!("order-{late}")) == 1
    })
    .await;
    wait_for_polls(&standin, 6).await;

    // Two orders a page: the poller followed the GraphQL cursor, oldest update first.
    let requests = standin.standin.requests_of("OrdersPage");
    assert!(
        requests.iter().any(|r| r.variables["after"].is_string()),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 && r.error.is_none()),
        "{requests:?}"
    );
    let first = requests[0].variables["query"].as_str().unwrap();
    assert!(
        first.starts_with("updated_at:>='") && first.contains("AND created_at:>='"),
        "{first}"
    );
    assert_eq!(requests[0].variables["first"], 2);

    let l = ledger(&app).await;
    let orders = l["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 7);
    for o in orders {
        assert_eq!(o["sources"], json!(["poller"]));
        let expected = if o["order_id"] == "5200000000099" {
            "ignored"
        } else {
            "sent"
        };
        assert_eq!(o["outcome"], expected, "{o}");
    }
    let sandbox = app.stop().await;
    for id in ids.iter().chain([&late]) {
        assert_eq!(sandbox.count_of(&format!("order-{id}")), 1, "order {id}");
    }
    assert_eq!(sandbox.count_of("order-5200000000099"), 0);
    assert_eq!(sandbox.events().len(), 6);
}

#[tokio::test]
async fn a_forged_or_missing_signature_and_an_unknown_shop_are_401_and_nothing_changes() {
    let app = shopify_app(None, |_| {}).await;
    let order = sale(5_300_000_000_001);

    let mut forged = Webhook::new("orders/create", &order, "wh-forged");
    forged.secret = "not-the-secret";
    let (status, body) = forged.send(&app).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Settings → Notifications → Webhooks"),
        "{message}"
    );
    assert!(message.contains(SHOP), "{message}");

    let mut unknown = Webhook::new("orders/create", &order, "wh-unknown");
    unknown.shop = "someone-else.myshopify.com";
    let (status, body) = unknown.send(&app).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unknown_shop");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("someone-else.myshopify.com is not configured")
    );

    // The body changed after signing: the signature covers the raw bytes.
    let mut tampered = Webhook::new("orders/create", &order, "wh-tampered");
    let signature = sign(&tampered.body, SECRET);
    tampered.body.extend_from_slice(b" ");
    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Shop-Domain", SHOP)
        .body(tampered.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Shop-Domain", SHOP)
        .body(serde_json::to_vec(&order).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Shopify-Hmac-Sha256")
    );

    assert_eq!(event_rows(&app), 0);
    assert_eq!(ledger(&app).await, json!({"orders": [], "adjustments": []}));
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics.contains(
            "pincapi_shopify_webhooks_total{topic=\"orders/create\",outcome=\"unauthorized\"} 4"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn orders_updated_before_orders_create_is_ignored_and_the_create_is_still_sent() {
    let app = shopify_app(None, |_| {}).await;
    let order = sale(5_400_000_000_001);
    let (status, body) = Webhook::new("orders/updated", &order, "wh-upd")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("orders/updated is not a conversion")
    );
    assert_eq!(event_rows(&app), 0);
    assert_eq!(ledger(&app).await["orders"], json!([]));

    let (status, body) = Webhook::new("orders/create", &order, "wh-create")
        .send(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["enqueued"], "accepted");
    app.wait_delivered(1).await;
    assert_eq!(app.sandbox.count_of("order-5400000000001"), 1);
}

#[tokio::test]
async fn a_1_mb_order_is_accepted_and_a_body_over_the_limit_is_413_with_nothing_stored() {
    let app = shopify_app(None, |_| {}).await;
    let mut order = sale(5_500_000_000_001);
    let item = order["line_items"][0].clone();
    let mut items = Vec::new();
    let mut i = 0u64;
    // The list's JSON length, counted item by item ("[", the items, a comma between, "]").
    let mut len = 2;
    while len < 1_050_000 {
        let mut li = item.clone();
        li["id"] = json!(900_000_000_000 + i);
        li["variant_id"] = json!(40_000_000_000 + i);
        len += serde_json::to_vec(&li).unwrap().len() + usize::from(i > 0);
        items.push(li);
        i += 1;
    }
    assert_eq!(serde_json::to_vec(&items).unwrap().len(), len);
    order["line_items"] = json!(items);
    let webhook = Webhook::new("orders/create", &order, "wh-big");
    assert!(webhook.body.len() > 1_000_000);
    let (status, body) = webhook.send(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    app.wait_delivered(1).await;
    let event = &app.sandbox.events()[0].event;
    assert_eq!(
        event["custom_data"]["contents"].as_array().unwrap().len(),
        items.len()
    );

    let huge = vec![b' '; 5 * 1024 * 1024];
    let (status, body) = Webhook::raw("orders/create", &huge, "wh-huge")
        .send(&app)
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shopify.max_body_bytes")
    );
    assert_eq!(event_rows(&app), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_or_not_the_topics_shape_is_400_and_nothing_is_stored() {
    let app = shopify_app(None, |_| {}).await;
    let (status, body) = Webhook::raw("orders/create", b"<html>not json</html>", "wh-html")
        .send(&app)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");

    let mut order = sale(5_600_000_000_001);
    order["line_items"][1]["quantity"] = json!("two");
    let (status, body) = Webhook::new("orders/create", &order, "wh-shape")
        .send(&app)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_shape");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line_items[1].quantity"), "{message}");

    let (status, body) = Webhook::new("refunds/create", &json!({"id": 1}), "wh-refund")
        .send(&app)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("order_id")
    );

    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("X-Shopify-Hmac-Sha256", sign(b"{}", SECRET))
        .header("X-Shopify-Shop-Domain", SHOP)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_topic");

    assert_eq!(event_rows(&app), 0);
    assert_eq!(ledger(&app).await, json!({"orders": [], "adjustments": []}));
}

#[tokio::test]
async fn an_unknown_topic_is_200_ignored_so_shopify_stops_retrying() {
    let app = shopify_app(None, |_| {}).await;
    let (status, body) = Webhook::new("products/update", &json!({"id": 1}), "wh-product")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("does not handle the topic")
    );
    assert_eq!(event_rows(&app), 0);
}

#[tokio::test]
async fn each_shop_is_routed_to_its_own_ad_account_with_its_own_secret() {
    const OTHER_ACCOUNT: &str = "549755885176";
    const OTHER_SHOP: &str = "second-shop.myshopify.com";
    let app = shopify_app(None, |c| {
        c.accounts = vec![second_account(OTHER_ACCOUNT, "second-token")];
        let mut other = ShopConfig::new(OTHER_SHOP);
        other.secrets = vec![Secret::new("second-secret")];
        other.ad_account_id = Some(OTHER_ACCOUNT.into());
        c.shopify.shops.push(other);
    })
    .await;
    let (status, _) = Webhook::new("orders/create", &sale(5_700_000_000_001), "a-1")
        .send(&app)
        .await;
    assert_eq!(status, 200);
    let mut second = Webhook::new("orders/create", &sale(5_700_000_000_002), "b-1");
    second.shop = OTHER_SHOP;
    second.secret = "second-secret";
    let (status, body) = second.send(&app).await;
    assert_eq!(status, 200, "{body}");
    // The first shop's secret does not open the second shop.
    second.secret = SECRET;
    second.webhook_id = "b-2".into();
    assert_eq!(second.send(&app).await.0, 401);

    app.wait_delivered(2).await;
    let events = app.sandbox.events();
    let account_of = |id: &str| {
        events
            .iter()
            .find(|e| e.event["event_id"] == id)
            .map(|e| e.ad_account_id.clone())
            .unwrap()
    };
    assert_eq!(account_of("order-5700000000001"), ACCOUNT);
    assert_eq!(account_of("order-5700000000002"), OTHER_ACCOUNT);
}

#[tokio::test]
async fn the_old_and_the_new_secret_both_verify_during_a_rotation() {
    let app = shopify_app(None, |c| {
        c.shopify.shops[0].secrets = vec![Secret::new("new-secret"), Secret::new(SECRET)];
    })
    .await;
    let old = Webhook::new("orders/create", &sale(5_800_000_000_001), "r-1");
    assert_eq!(old.send(&app).await.0, 200);
    let mut new = Webhook::new("orders/create", &sale(5_800_000_000_002), "r-2");
    new.secret = "new-secret";
    // Shopify's newer header names, without the X- prefix.
    new.unprefixed = true;
    let (status, body) = new.send(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    let mut neither = Webhook::new("orders/create", &sale(5_800_000_000_003), "r-3");
    neither.secret = "retired-secret";
    assert_eq!(neither.send(&app).await.0, 401);
    app.wait_delivered(2).await;
}

#[tokio::test]
async fn the_single_shop_shorthand_verifies_with_its_secret_and_sends_to_the_first_account() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.ingest.merge_window_secs = 0;
        c.shopify_webhook_secret = Secret::new(SECRET);
        c.shopify_shop_domain = Some(SHOP.to_uppercase());
    })
    .await;
    let (status, body) = Webhook::new("orders/create", &sale(5_850_000_000_001), "s-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_delivered(1).await;
    assert_eq!(app.sandbox.events()[0].ad_account_id, ACCOUNT);
}

#[tokio::test]
async fn test_orders_are_ignored_by_default_and_sent_with_the_test_flag_when_configured() {
    let mut order = sale(5_900_000_000_001);
    order["test"] = json!(true);

    let app = shopify_app(None, |_| {}).await;
    let (status, body) = Webhook::new("orders/create", &order, "t-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored");
    assert!(body["reason"].as_str().unwrap().contains("test order"));
    let l = ledger(&app).await;
    assert_eq!(l["orders"][0]["outcome"], "ignored");
    assert!(l["orders"][0]["test"].as_bool().unwrap());
    assert!(
        l["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("test order")
    );
    assert_eq!(event_rows(&app), 0);
    app.stop().await;

    let app = shopify_app(None, |c| {
        c.shopify.shops[0].test_orders = TestOrders::SendAsTest;
    })
    .await;
    let (status, body) = Webhook::new("orders/create", &order, "t-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    app.wait_delivered(1).await;
    let events = app.sandbox.events();
    assert!(events[0].test);
    let requests = app.sandbox.sandbox.requests();
    assert_eq!(requests[0].query.as_deref(), Some("test=true"));
}

const EPIK: &str = "dj0yJnU9lateWebhook";
pub(crate) const BROWSER_UA: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15";

/// The browser's report of an order's purchase (the custom pixel's beacon), posted to the
/// collector; returns the collector's answer.
async fn browser_purchase(app: &TestApp, order_id: u64) -> Value {
    let body = json!({
        "event_name": "checkout",
        "event_id": format!("order-{order_id}"),
        "event_source_url": "https://shop.example/checkouts/c/abc/thank-you",
        "data": {"value": "1.00", "currency": "USD", "order_id": order_id.to_string()},
        "epik": EPIK,
        "source": "tag_mirror"
    });
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", BROWSER_UA)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    resp.json().await.unwrap()
}

/// (state, test, last_error) of the stored event `event_id`.
fn event_row(db: &Path, event_id: &str) -> (String, bool, Option<String>) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT state, test, last_error FROM events WHERE event_id = ?1",
        [event_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

#[tokio::test]
async fn a_browser_purchase_held_for_a_late_webhook_goes_out_once_with_the_shops_data() {
    // A merge window of 0 s stands for a webhook later than the 60 s one: only the longer hold
    // of browser purchases, for an account that has a shop, keeps the browser's copy waiting.
    let app = shopify_app(None, |c| {
        c.ingest.merge_window_secs = 0;
        c.ingest.browser_purchase_hold_secs = 600;
    })
    .await;
    let id = 5_950_000_000_001;
    let answer = browser_purchase(&app, id).await;
    assert_eq!(answer["status"], "accepted", "{answer}");
    let (status, body) = Webhook::new("orders/create", &sale(id), "late-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");

    // The shop's copy merged into the waiting one makes it due at once.
    let event_id = format!("order-{id}");
    let sb = &app.sandbox;
    wait_for("the merged purchase at the sandbox", || async {
        sb.count_of(&event_id) > 0
    })
    .await;
    let sandbox = app.stop().await;
    assert_eq!(sandbox.events().len(), 1);
    let ev = &sandbox.events()[0].event;
    let ud = &ev["user_data"];
    // The webhook's side: the buyer's email and address, the order's value.
    assert!(ud["em"].as_array().is_some_and(|a| !a.is_empty()), "{ev}");
    assert!(ud["zp"].is_array() && ud["ct"].is_array(), "{ev}");
    assert_eq!(ev["custom_data"]["value"], "404.95", "{ev}");
    // The browser's side: click id, IP and user agent.
    assert_eq!(ud["click_id"], EPIK, "{ev}");
    assert_eq!(ud["client_ip_address"], "127.0.0.1", "{ev}");
    assert_eq!(ud["client_user_agent"], BROWSER_UA, "{ev}");
}

#[tokio::test]
async fn a_test_orders_browser_copy_is_dropped_or_sent_as_a_test_with_its_webhook() {
    let id = 5_960_000_000_001;
    let event_id = format!("order-{id}");
    let mut order = sale(id);
    order["test"] = json!(true);

    // test_orders = ignore (the default): the pixel's copy waiting for the webhook is dropped.
    let app = shopify_app(None, |_| {}).await;
    assert_eq!(browser_purchase(&app, id).await["status"], "accepted");
    let (status, body) = Webhook::new("orders/create", &order, "test-1")
        .send(&app)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    assert_eq!(
        event_row(&app.db, &event_id),
        (
            "dropped".to_owned(),
            false,
            Some("Shopify test order".to_owned())
        )
    );
    let sandbox = app.stop().await;
    assert_eq!(sandbox.events().len(), 0);

    // test_orders = send_as_test: the merged event carries Pinterest's test flag.
    let app = shopify_app(None, |c| {
        c.shopify.shops[0].test_orders = TestOrders::SendAsTest;
    })
    .await;
    assert_eq!(browser_purchase(&app, id).await["status"], "accepted");
    let (status, body) = Webhook::new("orders/create", &order, "test-2")
        .send(&app)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let (state, test, _) = event_row(&app.db, &event_id);
    assert!(
        test,
        "the browser's copy of a test order is flagged as a test ({state})"
    );
    let sandbox = app.stop().await;
    assert!(sandbox.events().iter().all(|e| e.test));
}

#[tokio::test]
async fn a_poll_cut_short_at_the_page_limit_goes_on_from_where_it_stopped() {
    let standin = Standin::start().await;
    // Five orders an hour old to a quarter of an hour old, read oldest update first.
    let ids: Vec<u64> = (0..5).map(|i| 5_970_000_000_000 + i).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut o = sale(*id);
        let created = rfc3339(now() - 3000 + 500 * i as i64);
        for k in ["created_at", "processed_at", "updated_at"] {
            o[k] = json!(created);
        }
        standin.add(&o);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let store = Arc::new(SqliteStore::open(&db, Synchronous::Normal).unwrap());
    let mut config = test_config("http://127.0.0.1:9/v5", &db);
    config.shopify.shops = vec![shop(Some(&standin))];
    config.shopify.poll_page_size = 2;
    config.shopify.poll_overlap_secs = 0;
    let recorder = Recorder {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
        delivery: None,
        max_event_age_secs: config.ingest.max_event_age_secs,
        merge_window_ms: 0,
        clock: SystemClock::shared(),
    };
    let access = ShopAccess::new(&config, None, SystemClock::shared()).unwrap();
    let api = access.apis().next().unwrap().clone();
    let mut poller = Reconciler::new(api, recorder, &config.shopify);

    // One page of two: the run stops with the three newest orders not listed, and the
    // checkpoint at the newest it listed.
    poller.max_pages = 1;
    let report = poller.backfill(now() - 3600).await.unwrap();
    assert!(report.cut_short, "{report:?}");
    assert_eq!((report.pages, report.orders), (1, 2), "{report:?}");
    let checkpoint = store.shopify_checkpoint(SHOP).await.unwrap().unwrap();
    assert_eq!(checkpoint, now_secs_of(&standin, ids[1]));

    // The next scheduled runs go on from there, and find the rest.
    poller.max_pages = 1;
    for _ in 0..3 {
        poller.poll().await.unwrap();
    }
    let ledger = store.shopify_ledger(None, 100).await.unwrap();
    let mut seen: Vec<u64> = ledger
        .orders
        .iter()
        .map(|o| {
            assert_eq!(o.order.outcome, OrderStatus::Sent, "{o:?}");
            o.order.order_id.parse().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ids);
}

/// The `updated_at` of order `id` at the stand-in, Unix seconds.
fn now_secs_of(standin: &Standin, id: u64) -> i64 {
    let o = standin
        .standin
        .orders()
        .into_iter()
        .find(|o| o["id"] == id)
        .unwrap();
    OffsetDateTime::parse(o["updated_at"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test]
async fn cancellations_refunds_and_unmatchable_orders_are_recorded_in_the_ledger() {
    let app = shopify_app(None, |_| {}).await;
    let mut cancelled = sale(6_000_000_000_001);
    cancelled["cancelled_at"] = json!(rfc3339(now() - 60));
    cancelled["cancel_reason"] = json!("customer");
    let (status, body) = Webhook::new("orders/cancelled", &cancelled, "c-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "recorded");

    let refund: Value = serde_json::from_str::<Value>(REST_REFUND).unwrap()["refund"].clone();
    let (status, body) = Webhook::new("refunds/create", &refund, "r-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "recorded");
    // A second subscription delivers the same refund under another webhook id.
    let (status, _) = Webhook::new("refunds/create", &refund, "r-2")
        .send(&app)
        .await;
    assert_eq!(status, 200);
    // And Shopify retries the first delivery.
    let (_, body) = Webhook::new("refunds/create", &refund, "r-1")
        .send(&app)
        .await;
    assert_eq!(body["status"], "duplicate");

    // No email, phone, IP or user agent: nothing Pinterest can match.
    let mut anonymous = sale(6_000_000_000_002);
    for key in [
        "email",
        "contact_email",
        "customer",
        "phone",
        "browser_ip",
        "client_details",
    ] {
        anonymous[key] = Value::Null;
    }
    let (status, body) = Webhook::new("orders/create", &anonymous, "a-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "skipped");

    let l = ledger(&app).await;
    let adjustments = l["adjustments"].as_array().unwrap();
    assert_eq!(adjustments.len(), 2, "{l}");
    let cancel = adjustments
        .iter()
        .find(|a| a["kind"] == "cancelled")
        .unwrap();
    assert_eq!(cancel["order_id"], "6000000000001");
    assert_eq!(cancel["amount"], "404.95");
    assert_eq!(cancel["currency"], "USD");
    assert_eq!(cancel["reason"], "customer");
    let refunded = adjustments
        .iter()
        .find(|a| a["kind"] == "refunded")
        .unwrap();
    assert_eq!(refunded["order_id"], "450789469");
    assert_eq!(refunded["shop"], SHOP);
    let orders = l["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], "6000000000002");
    assert_eq!(orders[0]["outcome"], "skipped");
    assert!(
        orders[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot match it to a person")
    );
    assert_eq!(event_rows(&app), 0);
}

fn pincapi(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pincapi"));
    cmd.args(args)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("pincapi runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn map_shopify_prints_the_event_or_exits_non_zero_with_the_reason_nothing_would_be_sent() {
    let out = pincapi(
        &[
            "map",
            "shopify",
            "orders/create",
            &testdata("rest-order.shopify-python-api.json"),
            "--any-age",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["event_id"], "order-450789469");
    assert_eq!(event["event_name"], "checkout");
    assert_eq!(event["user_data"]["em"].as_array().unwrap().len(), 1);
    assert!(!text(&out.stdout).contains("bob.norman"), "hashes only");
    assert_valid_against_the_strict_schema(&event);

    // The same order without --any-age: from 2008, outside Pinterest's window.
    let out = pincapi(
        &[
            "map",
            "shopify",
            "orders/create",
            &testdata("rest-order.shopify-python-api.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("too old"),
        "{}",
        text(&out.stderr)
    );

    // Shopify's sample is a test order (also cancelled and voided): nothing is sent.
    let out = pincapi(
        &[
            "map",
            "shopify",
            "orders/create",
            &testdata("orders-create.shopify-docs-2026-07.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.starts_with("not sent (ignored):"), "{err}");
    assert!(err.contains("test order"), "{err}");

    // A real sale on standard input.
    let body = serde_json::to_vec(&sale(6_100_000_000_001)).unwrap();
    let out = pincapi(&["map", "shopify", "orders/create", "-"], Some(&body));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["event_id"], "order-6100000000001");
    assert_valid_against_the_strict_schema(&event);

    let out = pincapi(&["map", "shopify", "orders/create", "-"], Some(b"nope"));
    assert_eq!(out.status.code(), Some(2));
    let out = pincapi(&["map", "shopify", "products/update", "-"], Some(b"{}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown topic"));
}

pub(crate) async fn run_cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pincapi(&args, None)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn backfill_queues_the_orders_the_webhooks_missed_and_reports_those_too_old_to_send() {
    let standin = Standin::start().await;
    let recent = [6_200_000_000_001u64, 6_200_000_000_002];
    for id in recent {
        standin.add(&sale(id));
    }
    let mut old = sale(6_200_000_000_003);
    let ten_days_ago = rfc3339(now() - 10 * 86400);
    old["created_at"] = json!(ten_days_ago);
    old["processed_at"] = json!(ten_days_ago);
    standin.add(&old);
    let mut test_order = sale(6_200_000_000_004);
    test_order["test"] = json!(true);
    standin.add(&test_order);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let config = dir.path().join("pincapi.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{}\"\nad_account_id = \"{ACCOUNT}\"\npinterest_token = \"t\"\n\
             [shopify]\npoll_page_size = 3\n\
             [[shopify.shops]]\ndomain = \"{SHOP}\"\nsecrets = [\"{SECRET}\"]\n\
             access_token = \"{SHOPIFY_ADMIN_TOKEN}\"\nadmin_api_base = \"{}\"\n",
            db.display(),
            standin.base()
        ),
    )
    .unwrap();
    let since = rfc3339(now() - 30 * 86400);
    let args = |json: bool| {
        let mut a = vec![
            "shopify".to_owned(),
            "backfill".into(),
            "--config".into(),
            config.display().to_string(),
            "--since".into(),
            since.clone(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = run_cli(args(false)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("4 orders since"), "{stdout}");
    assert!(stdout.contains("2 queued"), "{stdout}");
    assert!(stdout.contains("1 ignored"), "{stdout}");
    assert!(
        stdout.contains("order 6200000000003 created")
            && stdout.contains("too old, not sent (outside Pinterest's 7-day window)"),
        "{stdout}"
    );
    assert_eq!(count_states(&db).unwrap(), vec![("pending".to_owned(), 2)]);

    // Running it again stores nothing new.
    let out = run_cli(args(true)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["sent"], 0);
    assert_eq!(report[0]["already_stored"], 2);
    assert_eq!(report[0]["too_old"][0]["order_id"], "6200000000003");
    assert_eq!(count_states(&db).unwrap(), vec![("pending".to_owned(), 2)]);
}

#[tokio::test]
async fn the_standin_pages_graphql_orders_like_shopify_and_refuses_a_wrong_token() {
    let standin = Standin::start().await;
    for i in 1..=5 {
        standin.add(&sale(6_300_000_000_000 + i));
    }
    let http = reqwest::Client::new();
    let url = format!("{}/graphql.json", standin.base());
    let page = |after: Value| {
        json!({
            "query": include_str!("../../src/shopify/graphql/orders_page.graphql"),
            "operationName": "OrdersPage",
            "variables": {"first": 2, "after": after, "lines": 1,
                          "query": format!("updated_at:>='{}'", rfc3339(now() - 3600))},
        })
    };
    let resp = http
        .post(&url)
        .json(&page(Value::Null))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let mut ids = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let resp = http
            .post(&url)
            .header("X-Shopify-Access-Token", SHOPIFY_ADMIN_TOKEN)
            .json(&page(after.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        let cost = &body["extensions"]["cost"];
        assert_eq!(cost["requestedQueryCost"], 2 + 2 * (19 + 6));
        assert!(cost["throttleStatus"]["restoreRate"].as_f64().unwrap() > 0.0);
        let orders = &body["data"]["orders"];
        for o in orders["nodes"].as_array().unwrap() {
            ids.push(
                o["legacyResourceId"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            assert!(
                o["id"]
                    .as_str()
                    .unwrap()
                    .starts_with("gid://shopify/Order/")
            );
            assert!(o["lineItems"]["nodes"].as_array().unwrap().len() <= 1);
        }
        pages += 1;
        if orders["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = orders["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, 3);
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        sorted,
        (1..=5).map(|i| 6_300_000_000_000 + i).collect::<Vec<u64>>()
    );

    // A query over 1,000 points is refused, as at Shopify.
    let mut big = page(Value::Null);
    big["variables"]["first"] = json!(250);
    let body: Value = http
        .post(&url)
        .header("X-Shopify-Access-Token", SHOPIFY_ADMIN_TOKEN)
        .json(&big)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED");
}

#[tokio::test]
async fn a_signed_order_replayed_as_a_cancellation_cancels_nothing() {
    let app = shopify_app(None, |_| {}).await;
    let order = sale(6_100_000_000_001);
    let (status, body) = Webhook::new("orders/create", &order, "wh-real")
        .send(&app)
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    let (status, body) = Webhook::new("orders/cancelled", &order, "wh-replayed")
        .send(&app)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled_at"),
        "{body}"
    );
    app.wait_delivered(1).await;
    assert_eq!(ledger(&app).await["adjustments"], json!([]));
}
