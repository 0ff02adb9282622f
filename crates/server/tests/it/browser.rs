//! The browser side end to end: `/tag.js`, the collector, the merge of a browser purchase with
//! its webhook, `pincapi tag check`, and real visits to the demo storefront in headless
//! Chromium with Pinterest's core.js replaced by the recording stub.
//!
//! The Chromium tests need Debian's `chromium` and `chromium-driver` (CI installs them); set
//! `PINCAPI_SKIP_BROWSER_TESTS=1` to skip them on a machine without.

use std::path::Path;
use std::time::Duration;

use pincapi::browser::storefront::CORE_STUB_PATH;
use pincapi::commands::webdriver::{BrowserOptions, Chromedriver, Session};
use pincapi::config::browser::BrowserConfig;
use pincapi::config::{Config, Synchronous};
use pincapi::sandbox::SandboxOptions;
use pincapi::store::sqlite::SqliteStore;
use pincapi::store::{Enqueued, NewEvent, Queue, Source};
use pincapi_core::ingest::{IngestEvent, TimeWindow};
use serde_json::{Value, json};

use crate::helpers::*;

const TAG_ID: &str = "2612345678901";
const EPIK: &str = "dj0yJnU9e2eClickId";
const EMAIL_HASH: &str = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d";
const UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15";
/// Long enough for the second copy of a purchase to arrive on a loaded CI machine; every
/// test that relies on it sends the second copy as soon as the first is stored.
const MERGE_WINDOW_SECS: u64 = 5;

fn browser_config(c: &mut Config) {
    c.tag_id = Some(TAG_ID.into());
    c.browser = BrowserConfig {
        demo_storefront: true,
        tag_script_url: CORE_STUB_PATH.into(),
        ..BrowserConfig::default()
    };
    c.ingest.merge_window_secs = MERGE_WINDOW_SECS;
}

async fn spawn_shop() -> TestApp {
    spawn_app_with(SandboxOptions::default(), browser_config).await
}

/// POSTs a collector body as sendBeacon does (text/plain) with extra headers; from a page of
/// the gateway's own origin unless `headers` names another.
async fn collect(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = app.http.post(app.url("/collect"));
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("origin"))
    {
        req = req.header("origin", format!("http://{}", app.addr));
    }
    let mut req = req
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", UA)
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The event Pinterest received with this event_id (waits for it).
async fn delivered(app: &TestApp, event_id: &str) -> Value {
    let sb = &app.sandbox;
    wait_for(&format!("{event_id} at the sandbox"), || async {
        sb.count_of(event_id) > 0
    })
    .await;
    sb.events()
        .into_iter()
        .find(|e| e.event["event_id"] == event_id)
        .unwrap()
        .event
}

/// (event_id, event_name, sources) of every stored event.
fn stored(db: &Path) -> Vec<(String, String, Vec<Source>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT event_id, event_name, sources FROM events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            Source::from_bits(r.get(2)?),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// What a Shopify order webhook contributes to `order-<id>`: the buyer's email, phone and
/// address, and no browser keys. Stored as the webhook path stores it (source `webhook`, held
/// for the merge window), through a second handle on the gateway's store.
async fn webhook_purchase(db: &Path, order_id: &str) -> Enqueued {
    let mut ev = checkout(&format!("order-{order_id}"));
    let ud = ev["user_data"].as_object_mut().unwrap();
    for browser_key in ["client_ip_address", "client_user_agent", "click_id"] {
        ud.remove(browser_key);
    }
    ev["custom_data"]["order_id"] = json!(order_id);
    let ingest: IngestEvent = serde_json::from_value(ev).unwrap();
    let event = ingest
        .into_event(&TimeWindow::around(now()), None)
        .unwrap()
        .event;
    let now_ms = now() * 1000;
    let store = SqliteStore::open(db, Synchronous::Full).unwrap();
    store
        .enqueue(vec![NewEvent {
            ad_account_id: ACCOUNT.into(),
            event_id: event.event_id.as_str().to_owned(),
            event_name: event.event_name,
            event_time: event.event_time.secs(),
            received_at_ms: now_ms,
            source: Source::Webhook,
            match_keys: event.user_data.match_keys().0,
            test: false,
            hold_ms: (MERGE_WINDOW_SECS * 1000) as i64,
            payload: event.to_json(),
        }])
        .await
        .unwrap()[0]
}

/// The browser's report of the same purchase.
fn browser_purchase(order_id: &str) -> Value {
    json!({
        "event_name": "checkout",
        "event_id": format!("order-{order_id}"),
        "event_source_url": "https://shop.example/checkouts/thank-you",
        "data": {"value": 72.39, "currency": "USD", "order_quantity": 3, "order_id": order_id,
                 "line_items": [{"product_id": "sku-1", "product_price": 12.13, "product_quantity": 2},
                                {"product_id": "sku-2", "product_price": 48.13, "product_quantity": 1}]},
        "epik": EPIK,
        "source": "tag_mirror"
    })
}

/// The merged purchase carries the webhook's email, phone and address and the browser's
/// click id, IP and user agent.
fn assert_both_sides(ev: &Value) {
    let ud = &ev["user_data"];
    assert_eq!(ud["em"], json!([EMAIL_HASH]), "{ev}");
    assert!(
        ud["ph"].is_array() && ud["zp"].is_array(),
        "webhook keys: {ev}"
    );
    assert_eq!(ud["click_id"], EPIK, "{ev}");
    assert_eq!(ud["client_ip_address"], "127.0.0.1", "{ev}");
    assert!(ud["client_user_agent"].is_string(), "{ev}");
}

#[tokio::test]
async fn the_collector_maps_tag_data_and_adds_the_ip_user_agent_and_click_id() {
    let app = spawn_shop().await;
    // Raw text: the money must arrive as the page wrote it (`24.00`), not as a float would.
    let body = r#"{"event_name": "add_to_cart", "event_id": "atc-1",
        "event_source_url": "https://shop.example/products/rose",
        "data": {"value": 24.00, "currency": "usd", "order_quantity": 1, "promo_code": "X",
                 "line_items": [{"product_id": 8001, "product_name": "Rose Glow Serum",
                                 "product_price": 24.00, "product_quantity": 1,
                                 "product_variant_id": "44"}]}}"#;
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", UA)
        .header("cookie", format!("_epik={EPIK}; other=1"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["warnings"], json!([]));
    let ev = delivered(&app, "atc-1").await;
    assert_eq!(ev["event_name"], "add_to_cart");
    assert_eq!(ev["action_source"], "web");
    assert_eq!(ev["user_data"]["click_id"], EPIK);
    assert_eq!(ev["user_data"]["client_ip_address"], "127.0.0.1");
    assert_eq!(ev["user_data"]["client_user_agent"], UA);
    assert_eq!(ev["event_source_url"], "https://shop.example/products/rose");
    // The exact digits the page wrote, as a string; Tag keys renamed, Tag-only keys gone.
    assert_eq!(
        ev["custom_data"],
        json!({"currency": "USD", "value": "24.00", "num_items": 1, "content_ids": ["8001"],
               "contents": [{"id": "8001", "item_price": "24.00", "quantity": 1,
                             "item_name": "Rose Glow Serum"}]})
    );
    let schema = strict_schema();
    for r in app.sandbox.sandbox.requests() {
        assert!(schema.is_valid(&r.body), "strict schema: {}", r.body);
    }
    assert_eq!(
        stored(&app.db)[0].2,
        vec![Source::Collector],
        "no source given: the collector"
    );
}

#[tokio::test]
async fn a_browser_purchase_then_its_webhook_become_one_checkout_with_both_sides_keys() {
    let app = spawn_shop().await;
    let order = "5550123";
    let (status, body) = collect(&app, &browser_purchase(order), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    assert_eq!(webhook_purchase(&app.db, order).await, Enqueued::Merged);
    let ev = delivered(&app, &format!("order-{order}")).await;
    assert_both_sides(&ev);
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of(&format!("order-{order}")), 1);
    assert_eq!(sandbox.events().len(), 1);
}

/// A purchase report forged in the name of a real order: value, items and another email. The
/// shop's record keeps its value, items and identities whichever arrives first; the forgery
/// adds at most a browser's own keys where the shop's record has none.
fn forged_purchase(order_id: &str) -> Value {
    let mut f = browser_purchase(order_id);
    f["data"]["value"] = json!(9999.00);
    f["data"]["line_items"] = json!([{"product_id": "sku-forged", "product_price": 9999.00,
                                      "product_quantity": 1}]);
    f["em"] = json!("attacker@evil.example");
    f
}

fn assert_the_shops_order(ev: &Value) {
    assert_eq!(ev["custom_data"]["value"], "72.39", "{ev}");
    assert_eq!(ev["user_data"]["em"], json!([EMAIL_HASH]), "{ev}");
    assert!(!ev.to_string().contains("sku-forged"), "{ev}");
}

#[tokio::test]
async fn a_forged_browser_purchase_cannot_rewrite_the_real_order_before_or_after_its_webhook() {
    let app = spawn_shop().await;
    // After the webhook.
    assert_eq!(
        webhook_purchase(&app.db, "5550201").await,
        Enqueued::Accepted
    );
    let (status, body) = collect(&app, &forged_purchase("5550201"), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("merged")),
        "{body}"
    );
    assert_the_shops_order(&delivered(&app, "order-5550201").await);
    // Before it: the shop's record replaces what the forgery said.
    let (status, body) = collect(&app, &forged_purchase("5550202"), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    assert_eq!(webhook_purchase(&app.db, "5550202").await, Enqueued::Merged);
    assert_the_shops_order(&delivered(&app, "order-5550202").await);
    // And without an Origin (not a page's request) nothing is taken at all.
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(forged_purchase("5550203").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of("order-5550203"), 0);
    assert_eq!(sandbox.events().len(), 2);
}

#[tokio::test]
async fn a_webhook_then_the_browser_purchase_become_one_checkout_with_both_sides_keys() {
    let app = spawn_shop().await;
    let order = "5550124";
    assert_eq!(webhook_purchase(&app.db, order).await, Enqueued::Accepted);
    let (status, body) = collect(&app, &browser_purchase(order), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("merged")),
        "{body}"
    );
    let ev = delivered(&app, &format!("order-{order}")).await;
    assert_both_sides(&ev);
    assert_eq!(
        stored(&app.db)[0].2,
        vec![Source::Webhook, Source::TagMirror],
        "the event remembers every source that saw it"
    );
    let sandbox = app.stop().await;
    assert_eq!(sandbox.events().len(), 1);
}

#[tokio::test]
async fn the_same_event_from_the_browser_twice_is_sent_once() {
    let app = spawn_shop().await;
    let pv = json!({"event_name": "page_visit", "event_id": "pv-twice"});
    assert_eq!(collect(&app, &pv, &[]).await.0, 202);
    delivered(&app, "pv-twice").await;
    let (status, body) = collect(&app, &pv, &[]).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("duplicate")));
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of("pv-twice"), 1);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_configured_proxies() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        browser_config(c);
        c.browser.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let pv = json!({"event_name": "page_visit", "event_id": "pv-proxied"});
    collect(&app, &pv, &[("x-forwarded-for", "6.6.6.6, 203.0.113.50")]).await;
    let ev = delivered(&app, "pv-proxied").await;
    assert_eq!(ev["user_data"]["client_ip_address"], "203.0.113.50");

    let direct = spawn_shop().await;
    let pv = json!({"event_name": "page_visit", "event_id": "pv-direct"});
    collect(&direct, &pv, &[("x-forwarded-for", "203.0.113.50")]).await;
    let ev = delivered(&direct, "pv-direct").await;
    assert_eq!(ev["user_data"]["client_ip_address"], "127.0.0.1");
}

#[tokio::test]
async fn only_configured_origins_may_send_and_the_preflight_says_so() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        browser_config(c);
        c.allowed_origins = Some("https://shop.example, https://www.shop.example".into());
    })
    .await;
    let pv = json!({"event_name": "page_visit", "event_id": "pv-origin"});
    let (status, body) = collect(&app, &pv, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");

    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", "https://www.shop.example")
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(pv.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://www.shop.example"
    );

    let pre = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/collect"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("content-type")
    );
    let refused = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/collect"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_limits_hold() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        browser_config(c);
        c.browser.rate_limit_per_minute = 4;
        c.browser.max_body_bytes = 2048;
    })
    .await;
    let (s, b) = collect(&app, &json!({"event_name": "purchase", "data": {}}), &[]).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "invalid_event");
    let fields: Vec<&str> = b["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["event_name", "event_id"]);

    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );

    let big =
        json!({"event_name": "page_visit", "event_id": "big", "data": {"x": "y".repeat(4096)}});
    let (s, b) = collect(&app, &big, &[]).await;
    assert_eq!(s, 413);
    assert_eq!(b["error"]["code"], "too_large");

    // Three requests so far from 127.0.0.1: the fourth is the last the limit allows.
    let (s, _) = collect(&app, &json!({"event_name": "lead", "event_id": "l1"}), &[]).await;
    assert_eq!(s, 202);
    let (s, b) = collect(&app, &json!({"event_name": "lead", "event_id": "l2"}), &[]).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "rate_limited");
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics.contains("pincapi_collector_refused_total{reason=\"rate_limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tag_js_is_cacheable_and_carries_this_gateways_tag_id() {
    let app = spawn_shop().await;
    let resp = app.http.get(app.url("/tag.js")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = resp.headers()["etag"].clone();
    let text = resp.text().await.unwrap();
    assert!(text.contains(&format!("\"tag_id\":\"{TAG_ID}\"")));
    let again = app
        .http
        .get(app.url("/tag.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn the_storefront_is_served_only_when_turned_on() {
    let off = spawn_app().await;
    assert_eq!(off.get("/demo/shop", None).await.0, 404);
    assert_eq!(off.get(CORE_STUB_PATH, None).await.0, 404);
    let on = spawn_shop().await;
    let (status, html) = on.get("/demo/shop/products/8001", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("<script async src=\"/tag.js\"></script>"));
}

/// Runs tag.js as `app` serves it in node (tests/node/tag_harness.js) with `scenario`.
async fn run_tag_js(app: &TestApp, scenario: &Value) -> Value {
    let (status, js) = app.get("/tag.js", None).await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tag.js");
    let scenario_path = dir.path().join("scenario.json");
    std::fs::write(&script, js).unwrap();
    std::fs::write(&scenario_path, scenario.to_string()).unwrap();
    let harness = format!("{}/tests/node/tag_harness.js", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(harness)
            .arg(&script)
            .arg(&scenario_path)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn tag_js_keeps_different_orders_apart_and_the_collector_agrees_with_its_ids() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        browser_config(c);
        c.public_url = Some("https://t.shop.example".into());
    })
    .await;
    let orders = [
        ("US-1001", "order-US-1001"),
        ("CA-1001", "order-CA-1001"),
        ("1001-R2", "order-1001-R2"),
        (" 5550777 ", "order-5550777"),
        ("gid://shopify/Order/5550778", "order-5550778"),
    ];
    let calls: Vec<Value> = orders
        .iter()
        .map(|(id, _)| json!(["track", "checkout", {"order_id": id, "value": "10.00", "currency": "USD"}]))
        .collect();
    let out = run_tag_js(
        &app,
        &json!({"href": "https://shop.example/thank-you", "calls": calls}),
    )
    .await;
    let expected: Vec<&str> = orders.iter().map(|(_, e)| *e).collect();
    assert_eq!(out["returned"], json!(expected), "{out}");
    let beacons = out["beacons"].as_array().unwrap();
    assert_eq!(beacons.len(), orders.len(), "{out}");
    // The collector derives the same ids from the order ids: no warning, one event each.
    for (b, want) in beacons.iter().zip(&expected) {
        assert_eq!(b["body"]["event_id"], *want);
        let (status, answer) = collect(&app, &b["body"], &[]).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            (answer["status"].as_str(), answer["warnings"].clone()),
            (Some("accepted"), json!([])),
            "{want}: {answer}"
        );
    }
    assert_eq!(stored(&app.db).len(), orders.len());
}

/// Personal data, credentials and one-time tokens never leave in a page URL: named form
/// fields, OAuth and reset tokens, a user and password in the authority.
#[tokio::test]
async fn page_urls_lose_personal_data_credentials_and_account_tokens() {
    let app = spawn_shop().await;
    for (id, url, want) in [
        (
            "pv-pii",
            "https://shop.example/pages/contact?phone=4155550123&first_name=Jane&last_name=Doe\
             &zip=94110&customer%5Bemail%5D=x&utm_source=pinterest",
            "https://shop.example/pages/contact?utm_source=pinterest",
        ),
        (
            "pv-creds",
            "https://buyer:s3cret@shop.example/collections/all?token=t0k&access_token=a1\
             &password=p4ss&page=2",
            "https://shop.example/collections/all?page=2",
        ),
        (
            "pv-reset",
            "https://shop.example/account/reset/7112345/9f8e7d6c5b4a-1700000000",
            "https://shop.example/account/reset/",
        ),
    ] {
        let body = json!({"event_name": "page_visit", "event_id": id, "event_source_url": url});
        let (status, answer) = collect(&app, &body, &[]).await;
        assert_eq!(status, 202, "{answer}");
        let ev = delivered(&app, id).await;
        assert_eq!(ev["event_source_url"], want, "{url}");
    }
    let db = std::fs::read(&app.db).unwrap();
    let wal = std::fs::read(app.db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        for secret in ["4155550123", "s3cret", "p4ss", "9f8e7d6c5b4a", "t0k"] {
            assert!(!text.contains(secret), "{secret} at rest");
        }
    }
}

#[tokio::test]
async fn page_urls_are_stored_without_access_keys_or_email_addresses() {
    let app = spawn_shop().await;
    let body = json!({
        "event_name": "page_visit",
        "event_id": "pv-scrubbed",
        "event_source_url":
            "https://shop.example/12345/orders/abc?key=0f9e8d&email=jane%40example.com&utm_source=pinterest"
    });
    let (status, answer) = collect(&app, &body, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let ev = delivered(&app, "pv-scrubbed").await;
    assert_eq!(
        ev["event_source_url"],
        "https://shop.example/12345/orders/abc?utm_source=pinterest"
    );
    // From the Referer too, and nothing of it at rest.
    let (status, _) = collect(
        &app,
        &json!({"event_name": "page_visit", "event_id": "pv-referer"}),
        &[(
            "referer",
            "https://shop.example/?subscriber=jane@example.com",
        )],
    )
    .await;
    assert_eq!(status, 202);
    let ev = delivered(&app, "pv-referer").await;
    assert_eq!(ev["event_source_url"], "https://shop.example/");
    let conn =
        rusqlite::Connection::open_with_flags(&app.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let bodies: Vec<String> = conn
        .prepare("SELECT body FROM payloads")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bodies.len(), 2);
    for b in &bodies {
        assert!(!b.contains("jane") && !b.contains("0f9e8d"), "{b}");
    }
    app.stop().await;
}

// --- pincapi tag check ---

fn report_for<'a>(reports: &'a Value, url: &str) -> &'a Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"] == url)
        .unwrap_or_else(|| panic!("no report for {url}: {reports}"))
}

fn errors(report: &Value) -> String {
    report["errors"].to_string()
}

#[tokio::test]
async fn tag_check_finds_missing_duplicate_and_wrong_tags_and_passes_the_right_one() {
    let app = spawn_shop().await;
    let page = app.url("/demo/shop/products/8001");
    let urls: Vec<String> = ["pincapi", "duplicate", "wrong-id", "missing"]
        .iter()
        .map(|v| format!("{page}?tag={v}"))
        .collect();
    let mut args = vec![
        "--allow-private".to_owned(),
        "--tag-id".to_owned(),
        TAG_ID.to_owned(),
    ];
    args.extend(urls.iter().cloned());
    let (out, reports) = tag_check(args).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ok = report_for(&reports, &urls[0]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["installs"][0]["kind"], "pincapi");
    assert_eq!(ok["installs"][0]["tag_id"], TAG_ID);
    assert_eq!(ok["events"][0]["event"], "page_visit");

    let dup = report_for(&reports, &urls[1]);
    assert_eq!(dup["ok"], false);
    assert!(errors(dup).contains("2 times"), "{dup}");

    let wrong = report_for(&reports, &urls[2]);
    assert_eq!(wrong["ok"], false);
    assert!(errors(wrong).contains("wrong tag id"), "{wrong}");

    let missing = report_for(&reports, &urls[3]);
    assert_eq!(missing["ok"], false);
    assert!(errors(missing).contains("no Pinterest Tag"), "{missing}");

    // The thank-you page passes the buyer's email: enhanced match.
    let (out, reports) = tag_check(vec![
        "--allow-private".into(),
        "--tag-id".into(),
        TAG_ID.into(),
        app.url("/demo/shop/thank-you"),
    ])
    .await;
    assert!(out.status.success(), "{reports}");
    assert_eq!(reports[0]["enhanced_match"], true);
}

#[tokio::test]
async fn tag_check_refuses_private_addresses_unless_allowed() {
    let app = spawn_shop().await;
    let url = app.url("/demo/shop");
    let (out, reports) = tag_check(vec!["--tag-id".into(), TAG_ID.into(), url.clone()]).await;
    assert_eq!(out.status.code(), Some(1));
    let r = report_for(&reports, &url);
    assert!(errors(r).contains("--allow-private"), "{r}");
    assert!(app.sandbox.sandbox.requests().is_empty());
    // A link-local address (cloud metadata) the same.
    let (_, reports) = tag_check(vec!["http://169.254.169.254/latest/meta-data/".into()]).await;
    assert!(errors(&reports[0]).contains("refused"), "{reports}");
    // And the IPv6 spellings of loopback and private hosts: IPv4-compatible, NAT64, 6to4,
    // site-local. None is fetched.
    let port = app.addr.port();
    for host in [
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[fec0::1]",
    ] {
        let url = format!("http://{host}:{port}/demo/shop");
        let (out, reports) = tag_check(vec![url.clone()]).await;
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(
            errors(&reports[0]).contains("--allow-private"),
            "{url}: {reports}"
        );
    }
    assert!(app.sandbox.sandbox.requests().is_empty());
}

// --- In Chromium ---

/// Whether to run the Chromium tests (CI always does).
fn chromium_wanted() -> bool {
    if std::env::var_os("PINCAPI_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("PINCAPI_SKIP_BROWSER_TESTS is set: skipping a Chromium test");
        return false;
    }
    true
}

async fn open_browser() -> (Chromedriver, Session) {
    let driver = Chromedriver::start(&BrowserOptions::default())
        .await
        .expect("chromium and chromedriver (apt-get install chromium chromium-driver)");
    let session = driver.session().await.expect("a Chromium session");
    (driver, session)
}

const STEP: Duration = Duration::from_secs(30);

/// A shopper's visit: lands on a product from a Pinterest ad (epik on the URL), adds it to the
/// cart, checks out; Shopify's order webhook arrives as soon as the browser's purchase is
/// stored. Returns the order id. Every wait is for a state: the stub's record, a stored
/// event, a URL.
async fn shop_visit(app: &TestApp, s: &Session) -> String {
    let db = app.db.clone();
    let stored_count = |name: &'static str, n: usize| {
        let db = db.clone();
        async move {
            wait_for(&format!("{n} stored {name}"), || {
                let db = db.clone();
                async move { stored(&db).iter().filter(|e| e.1 == name).count() >= n }
            })
            .await;
        }
    };
    s.goto(&app.url(&format!("/demo/shop/products/8001?epik={EPIK}")))
        .await
        .unwrap();
    stored_count("page_visit", 1).await;
    s.click("#add-to-cart").await.unwrap();
    stored_count("add_to_cart", 1).await;
    s.goto(&app.url("/demo/shop/cart")).await.unwrap();
    stored_count("page_visit", 2).await;
    s.fill("#email", "  Jane.Doe@Example.COM ").await.unwrap();
    s.click("#place-order").await.unwrap();
    let order = s
        .wait_for(
            "the thank-you page",
            "location.pathname.endsWith('/thank-you') && shop.order() && shop.order().id",
            STEP,
        )
        .await
        .unwrap();
    let order = order.as_str().unwrap().to_owned();
    stored_count("checkout", 1).await;
    assert_eq!(webhook_purchase(&app.db, &order).await, Enqueued::Merged);
    order
}

/// The Tag calls the stub recorded over the visit (it keeps them in sessionStorage).
async fn stub_calls(s: &Session) -> Vec<Value> {
    s.execute(
        "return JSON.parse(sessionStorage.getItem('pincapi_stub_calls') || '[]');",
        vec![],
    )
    .await
    .unwrap()
    .as_array()
    .cloned()
    .unwrap()
}

#[tokio::test]
async fn a_shop_visit_reaches_the_tag_the_collector_and_pinterest_once_each() {
    if !chromium_wanted() {
        return;
    }
    let app = spawn_shop().await;
    let (driver, s) = open_browser().await;
    let order = shop_visit(&app, &s).await;
    let purchase_id = format!("order-{order}");
    s.wait_for(
        "the Tag stub to record the purchase",
        &format!(
            "JSON.parse(sessionStorage.getItem('pincapi_stub_calls') || '[]')\
             .some(c => c.method === 'track' && c.args[1].event_id === '{purchase_id}')"
        ),
        STEP,
    )
    .await
    .unwrap();
    let calls = stub_calls(&s).await;
    s.quit().await;
    driver.stop().await;

    // The Tag: loaded once per page with our id (with the email on the thank-you page), and
    // every event with an event_id.
    let loads: Vec<&Value> = calls.iter().filter(|c| c["method"] == "load").collect();
    assert_eq!(loads.len(), 3, "one load per page: {calls:?}");
    assert!(loads.iter().all(|c| c["args"][0] == TAG_ID));
    assert_eq!(loads[2]["args"][1]["em"], "Jane.Doe@Example.COM");
    let tracked: Vec<(String, String)> = calls
        .iter()
        .filter(|c| c["method"] == "track")
        .map(|c| {
            (
                c["args"][0].as_str().unwrap().to_owned(),
                c["args"][1]["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = tracked.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        vec!["pagevisit", "addtocart", "pagevisit", "checkout"]
    );
    assert_eq!(tracked[3].1, purchase_id);
    let checkout_call = calls.iter().find(|c| c["args"][0] == "checkout").unwrap();
    assert_eq!(checkout_call["args"][1]["order_id"], order);
    assert_eq!(
        checkout_call["args"][1]["line_items"][0]["product_id"],
        "8001"
    );

    // The collector: the same ids, mirrored from the Tag; the purchase also saw the webhook.
    app.wait_delivered(4).await;
    let rows = stored(&app.db);
    let sandbox = app.stop().await;
    let mut stored_ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut tag_ids: Vec<&str> = tracked.iter().map(|t| t.1.as_str()).collect();
    stored_ids.sort_unstable();
    tag_ids.sort_unstable();
    assert_eq!(stored_ids, tag_ids);
    for (id, _, sources) in &rows {
        assert!(sources.contains(&Source::TagMirror), "{id}: {sources:?}");
    }
    let purchase_row = rows.iter().find(|r| r.0 == purchase_id).unwrap();
    assert_eq!(purchase_row.2, vec![Source::Webhook, Source::TagMirror]);

    // Pinterest: each event exactly once; the purchase with both sides' keys.
    assert_eq!(sandbox.events().len(), 4);
    for (_, id) in &tracked {
        assert_eq!(sandbox.count_of(id), 1, "{id}");
    }
    let purchase = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == purchase_id.as_str())
        .unwrap()
        .event;
    assert_both_sides(&purchase);
    assert!(
        purchase["user_data"]["client_user_agent"]
            .as_str()
            .unwrap()
            .contains("HeadlessChrome")
    );
    assert_eq!(purchase["custom_data"]["order_id"], order);
    for e in sandbox.events() {
        assert_eq!(e.event["user_data"]["click_id"], EPIK, "{}", e.event);
    }
}

#[tokio::test]
async fn with_the_tag_blocked_every_event_still_reaches_pinterest_through_the_collector() {
    if !chromium_wanted() {
        return;
    }
    let app = spawn_shop().await;
    let (driver, s) = open_browser().await;
    // What an ad blocker does to Pinterest's script.
    s.block_urls(&["*core-stub.js*"]).await.unwrap();
    let order = shop_visit(&app, &s).await;
    let stub_ran = s
        .execute("return !!window.__pintrkStub;", vec![])
        .await
        .unwrap();
    let queued_for_the_tag = s
        .execute("return window.pintrk.queue.length;", vec![])
        .await
        .unwrap();
    s.quit().await;
    driver.stop().await;
    assert_eq!(stub_ran, false, "the Tag must not have run");
    assert!(queued_for_the_tag.as_u64().unwrap() > 0);

    app.wait_delivered(4).await;
    let sandbox = app.stop().await;
    let names: Vec<String> = sandbox
        .events()
        .iter()
        .map(|e| e.event["event_name"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec!["add_to_cart", "checkout", "page_visit", "page_visit"]
    );
    let purchase = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == format!("order-{order}").as_str())
        .unwrap()
        .event;
    assert_both_sides(&purchase);
}

#[tokio::test]
async fn tag_check_in_a_browser_reports_the_calls_and_beacons_that_happened() {
    if !chromium_wanted() {
        return;
    }
    let app = spawn_shop().await;
    let good = app.url("/demo/shop/products/8001");
    let dup = format!("{good}?tag=duplicate");
    let (out, reports) = tag_check(vec![
        "--browser".into(),
        "--allow-private".into(),
        "--tag-id".into(),
        TAG_ID.into(),
        good.clone(),
        dup.clone(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = report_for(&reports, &good);
    assert_eq!(ok["ok"], true, "{ok}");
    let calls = ok["browser"]["pintrk_calls"].as_array().unwrap();
    assert_eq!(calls[0], json!(["load", TAG_ID]));
    let track = calls.iter().find(|c| c[0] == "track").unwrap();
    assert_eq!(track[1], "pagevisit");
    let event_id = track[2]["event_id"].as_str().unwrap();
    let beacons = ok["browser"]["beacons"].as_array().unwrap();
    assert_eq!(beacons.len(), 1, "{ok}");
    assert_eq!(beacons[0]["event_id"], event_id);
    assert_eq!(beacons[0]["event_name"], "page_visit");

    let bad = report_for(&reports, &dup);
    assert!(errors(bad).contains("pagevisit fired 2 times"), "{bad}");
}

/// Waits until `n` events named `name` are stored.
async fn stored_count(db: &Path, name: &str, n: usize) {
    wait_for(&format!("{n} stored {name}"), || async {
        stored(db).iter().filter(|e| e.1 == name).count() >= n
    })
    .await;
}

#[tokio::test]
async fn a_refused_consent_loads_no_tag_and_sends_opt_out_events_without_identifiers() {
    if !chromium_wanted() {
        return;
    }
    let app = spawn_shop().await;
    let (driver, s) = open_browser().await;
    s.goto(&app.url(&format!(
        "/demo/shop/products/8001?consent=denied&epik={EPIK}"
    )))
    .await
    .unwrap();
    stored_count(&app.db, "page_visit", 1).await;
    let page = s
        .execute(
            "return {tag: typeof window.pintrk, cookie: document.cookie, loaded: pincapi.loaded};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page["loaded"], true);
    assert_eq!(page["tag"], "undefined", "no Tag without consent");
    assert!(!page["cookie"].as_str().unwrap().contains("_epik"));
    // Whatever a page hands it, tag.js never throws into the page.
    let calm = s
        .execute(
            "var a = {}; a.self = a;\
             pincapi('track', 'nonsense'); pincapi('track'); pincapi(); pincapi('track', 'lead', a);\
             pincapi('load', null); pincapi('track', 'checkout', {order_id: {}});\
             return 'no exception';",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(calm, "no exception");
    s.quit().await;
    driver.stop().await;
    let sb = &app.sandbox;
    wait_for("the page visit at the sandbox", || async {
        sb.events()
            .iter()
            .any(|e| e.event["event_name"] == "page_visit")
    })
    .await;
    let ev = sb
        .events()
        .into_iter()
        .find(|e| e.event["event_name"] == "page_visit")
        .unwrap()
        .event;
    assert_eq!(ev["opt_out"], true, "{ev}");
    assert!(ev["user_data"].get("click_id").is_none(), "{ev}");
    assert!(ev["user_data"]["client_user_agent"].is_string());
}

#[tokio::test]
async fn with_consent_required_nothing_is_sent_until_the_visitor_agrees() {
    if !chromium_wanted() {
        return;
    }
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        browser_config(c);
        c.browser.require_consent = true;
    })
    .await;
    let (driver, s) = open_browser().await;
    s.goto(&app.url(&format!("/demo/shop/products/8001?epik={EPIK}")))
        .await
        .unwrap();
    s.wait_for("tag.js", "window.pincapi && window.pincapi.loaded", STEP)
        .await
        .unwrap();
    // tag.js has started and decided to wait: no Tag, no cookie, nothing sent.
    let before = s
        .execute(
            "return {tag: typeof window.pintrk, cookie: document.cookie};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(before["tag"], "undefined");
    assert!(!before["cookie"].as_str().unwrap().contains("_epik"));
    assert!(stored(&app.db).is_empty());

    s.execute("pincapi('consent', true);", vec![])
        .await
        .unwrap();
    s.wait_for(
        "the Tag stub to record the waiting page visit",
        "window.__pintrkStub && __pintrkStub.calls.some(c => c.method === 'track')",
        STEP,
    )
    .await
    .unwrap();
    let cookie = s.execute("return document.cookie;", vec![]).await.unwrap();
    s.quit().await;
    driver.stop().await;
    assert!(cookie.as_str().unwrap().contains(&format!("_epik={EPIK}")));
    stored_count(&app.db, "page_visit", 1).await;
    app.wait_delivered(1).await;
    let ev = app.sandbox.events()[0].event.clone();
    assert_eq!(ev["user_data"]["click_id"], EPIK);
    assert!(ev.get("opt_out").is_none(), "{ev}");
}
