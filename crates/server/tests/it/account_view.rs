//! `/api/quality?account=`: one ad account's figures, its events and the orders of the shops
//! that send to it, and nothing of another account's (on SQLite here; the store contract's
//! `shopify_truth` filter is the same SQL shape on PostgreSQL).

use pincapi::config::Secret;
use pincapi::config::shopify::ShopConfig;
use pincapi::sandbox::SandboxOptions;
use serde_json::{Value, json};

use crate::helpers::*;

const OTHER: &str = "549755885999";
const SHOP: &str = "view-test.myshopify.com";
const SECRET: &str = "shpss_view_secret";

async fn quality(app: &TestApp, query: &str) -> Value {
    let (status, text) = app
        .get(&format!("/api/quality{query}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn received(report: &Value, name: &str) -> i64 {
    report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event_name"] == name)
        .map_or(0, |t| t["volume"]["received"].as_i64().unwrap())
}

#[tokio::test]
async fn one_accounts_view_holds_its_events_and_its_shops_orders_only() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.accounts = vec![second_account(OTHER, "other-token")];
        let mut shop = ShopConfig::new(SHOP);
        shop.secrets = vec![Secret::new(SECRET)];
        shop.ad_account_id = Some(OTHER.into());
        c.shopify.shops = vec![shop];
        c.ingest.merge_window_secs = 0;
    })
    .await;
    // Two page visits to the first account, three to the other, and one order of the shop,
    // which sends to the other.
    for i in 0..2 {
        app.post_events(&page_visit(&format!("pv-a-{i}"))).await;
    }
    for i in 0..3 {
        let (s, b) = app
            .post_raw(
                &format!("/v1/ad_accounts/{OTHER}/events"),
                API_KEY,
                page_visit(&format!("pv-b-{i}")).to_string().into_bytes(),
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    let order: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
    )))
    .unwrap();
    let mut order = order;
    order["id"] = json!(8_800_000_000_001u64);
    order["test"] = json!(false);
    for k in ["cancelled_at", "cancel_reason", "closed_at"] {
        order[k] = Value::Null;
    }
    order["financial_status"] = json!("paid");
    let created = time::OffsetDateTime::from_unix_timestamp(now() - 60)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for k in ["created_at", "processed_at", "updated_at"] {
        order[k] = json!(created);
    }
    let body = serde_json::to_vec(&order).unwrap();
    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("content-type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header(
            "X-Shopify-Hmac-Sha256",
            pincapi::shopify::webhook::sign(&body, SECRET),
        )
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", "wh-view-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    app.wait_delivered(6).await;

    let all = quality(&app, "?since=1d").await;
    assert_eq!(received(&all, "page_visit"), 5);
    assert_eq!(all["shopify"]["total"]["orders"], 1);
    let mut accounts: Vec<&str> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    accounts.sort();
    assert_eq!(accounts, vec![ACCOUNT, OTHER]);

    let first = quality(&app, &format!("?since=1d&account={ACCOUNT}")).await;
    assert_eq!(first["ad_account_id"], ACCOUNT);
    assert_eq!(received(&first, "page_visit"), 2);
    assert_eq!(received(&first, "checkout"), 0);
    assert_eq!(first["shopify"]["total"]["orders"], 0);

    let other = quality(&app, &format!("?since=1d&account={OTHER}")).await;
    assert_eq!(received(&other, "page_visit"), 3);
    assert_eq!(received(&other, "checkout"), 1);
    assert_eq!(other["shopify"]["total"]["orders"], 1);
    assert_eq!(other["headline"]["delivered_purchases"], 1);
    app.stop().await;
}
