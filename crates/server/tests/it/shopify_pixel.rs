//! The Shopify custom pixel, rendered by `pincapi shopify pixel` and run for real with node:
//! the purchase event_id it shares with the webhook path, page visits and cart additions,
//! Shopify's amounts digit for digit, and consent.

use std::path::Path;
use std::process::Command;

use pincapi_core::shopify::purchase_event_id;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::shopify::*;

/// Renders the pixel with `pincapi shopify pixel`.
async fn rendered_pixel(dir: &Path) -> std::path::PathBuf {
    let out = run_cli(vec![
        "shopify".into(),
        "pixel".into(),
        "--tag-id".into(),
        TAG_ID.into(),
        "--public-url".into(),
        "https://t.shop.example/".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = dir.join("pixel.js");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Runs the pixel in node with `scenario`; returns what it did.
async fn run_pixel(pixel: &Path, scenario: &Value) -> Value {
    let scenario_path = pixel.with_file_name(format!("scenario-{}.json", rand_suffix()));
    std::fs::write(&scenario_path, serde_json::to_vec(scenario).unwrap()).unwrap();
    let harness = format!("{}/tests/node/pixel_harness.js", env!("CARGO_MANIFEST_DIR"));
    let pixel = pixel.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(harness)
            .arg(pixel)
            .arg(scenario_path)
            .output()
            .expect("node runs (node 20 is at /usr/bin/node)")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "node: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A `checkout_completed` customer event for the fixture order, as the Web Pixels API sends
/// it, with `checkout.order.id` as given.
fn checkout_completed(order: &Value, order_id: Value) -> Value {
    let money = |v: &Value| json!({"amount": v.as_str().unwrap().parse::<f64>().unwrap(), "currencyCode": order["presentment_currency"]});
    let lines: Vec<Value> = order["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|li| {
            json!({
                "quantity": li["quantity"],
                "title": li["title"],
                "variant": {
                    "id": li["variant_id"],
                    "sku": li["sku"],
                    "price": money(&li["price"]),
                    "product": {"id": li["product_id"], "title": li["title"], "vendor": li["vendor"], "type": ""}
                }
            })
        })
        .collect();
    json!({
        "id": "sh-evt-1",
        "name": "checkout_completed",
        "type": "standard",
        "clientId": "client-1",
        "timestamp": rfc3339(now() - 2),
        "context": {"document": {"location": {"href": "https://shop.example/checkouts/c/abc/thank-you"}}},
        "data": {"checkout": {
            "token": "abc",
            "order": {"id": order_id, "customer": {"id": "115310627314723954"}},
            "email": order["email"],
            "currencyCode": order["presentment_currency"],
            "subtotalPrice": money(&order["subtotal_price"]),
            "totalPrice": money(&order["total_price"]),
            "lineItems": lines
        }}
    })
}

fn tag_calls<'a>(out: &'a Value, name: &str) -> Vec<&'a Value> {
    out["pintrk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[0] == "track" && c[1] == name)
        .collect()
}

#[tokio::test]
async fn the_pixel_names_a_purchase_with_the_same_event_id_as_the_webhook_path() {
    // The server side: the fixture order, made a real sale, through the signed webhook.
    let app = shopify_app(None, |_| {}).await;
    let order = sale(DOCS_ORDER_ID);
    let (status, body) = Webhook::new("orders/create", &order, "px-1")
        .send(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_delivered(1).await;
    let server_event_id = app.sandbox.events()[0].event["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let core_event_id = purchase_event_id(&DOCS_ORDER_ID.to_string()).unwrap();
    assert_eq!(server_event_id, core_event_id.as_str());

    // The browser side: the pixel, run for real, fed checkout_completed for the same order.
    let dir = tempfile::tempdir().unwrap();
    let pixel = rendered_pixel(dir.path()).await;
    let fixture: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    for order_id in [
        json!(format!("gid://shopify/OrderIdentity/{DOCS_ORDER_ID}")),
        json!(DOCS_ORDER_ID.to_string()),
    ] {
        let scenario = json!({
            "init": {"data": {"customer": null}, "context": {"document": {"location": {"href": "https://shop.example/"}}}},
            "cookies": {"_epik": "dj0yJnU9pin"},
            "events": [{"name": "checkout_completed", "event": checkout_completed(&fixture, order_id.clone())}]
        });
        let out = run_pixel(&pixel, &scenario).await;
        assert_eq!(out["errors"], json!([]), "{out}");
        assert_eq!(
            out["scripts"],
            json!(["https://s.pinimg.com/ct/core.js"]),
            "{out}"
        );
        let calls = out["pintrk"].as_array().unwrap();
        assert_eq!(calls[0], json!(["load", TAG_ID, {}]));
        assert_eq!(calls[1], json!(["page"]));
        // The guest's email is known only at checkout: enhanced match is added then.
        assert!(
            calls.contains(&json!(["set", {"em": "jon@example.com"}])),
            "{out}"
        );
        let checkouts = tag_calls(&out, "checkout");
        assert_eq!(checkouts.len(), 1, "{out}");
        let data = &checkouts[0][2];
        assert_eq!(data["event_id"], server_event_id.as_str(), "{order_id}");
        assert_eq!(data["order_id"], DOCS_ORDER_ID.to_string());
        assert_eq!(data["value"], json!(404.95));
        assert_eq!(data["currency"], "USD");
        let quantity: i64 = fixture["line_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|li| li["quantity"].as_i64().unwrap())
            .sum();
        assert_eq!(data["order_quantity"], json!(quantity));
        assert_eq!(data["line_items"].as_array().unwrap().len(), 5);

        let beacons = out["beacons"].as_array().unwrap();
        assert_eq!(beacons.len(), 1, "{out}");
        assert_eq!(beacons[0]["url"], "https://t.shop.example/collect");
        let mirror = &beacons[0]["body"];
        assert_eq!(mirror["event_name"], "checkout");
        assert_eq!(mirror["event_id"], server_event_id.as_str());
        assert_eq!(mirror["data"]["value"], "404.95");
        assert_eq!(mirror["data"]["order_id"], DOCS_ORDER_ID.to_string());
        assert!(mirror["data"].get("event_id").is_none());
        assert_eq!(mirror["em"], "jon@example.com");
        assert_eq!(mirror["epik"], "dj0yJnU9pin");
        assert_eq!(
            mirror["event_source_url"],
            "https://shop.example/checkouts/c/abc/thank-you"
        );
        assert!((mirror["event_time"].as_i64().unwrap() - now()).abs() < 60);
    }
}

#[tokio::test]
async fn the_pixel_reports_page_visits_and_cart_additions_and_never_throws_into_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let pixel = rendered_pixel(dir.path()).await;
    let fixture: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let mut broken_lines = checkout_completed(&fixture, json!("5"));
    broken_lines["data"]["checkout"]["lineItems"] = json!(5);
    let no_order_id = checkout_completed(&fixture, Value::Null);
    let scenario = json!({
        "init": {"data": {"customer": {"email": "Jane@Example.com"}}},
        // No crypto.randomUUID and no sendBeacon: the fallbacks.
        "crypto": false,
        "beacon": false,
        "events": [
            {"name": "page_viewed", "event": {"timestamp": rfc3339(now()), "context": {"document": {"location": {"href": "https://shop.example/products/x"}}}}},
            {"name": "product_added_to_cart", "event": {"data": {"cartLine": {
                "quantity": 2,
                "cost": {"totalAmount": {"amount": 179.98, "currencyCode": "USD"}},
                "merchandise": {"id": "gid://shopify/ProductVariant/40000000001", "sku": "AV-1",
                    "price": {"amount": 89.99, "currencyCode": "USD"},
                    "product": {"id": "788032119674292922", "title": "Aviator sunglasses", "vendor": "Shades", "type": "Glasses"}}
            }}}},
            {"name": "product_added_to_cart", "event": {"data": null}},
            {"name": "checkout_completed", "event": broken_lines},
            {"name": "checkout_completed", "event": no_order_id},
            {"name": "checkout_completed", "event": null}
        ]
    });
    let out = run_pixel(&pixel, &scenario).await;
    assert_eq!(out["errors"], json!([]), "{out}");
    assert_eq!(
        out["subscribed"],
        json!(["page_viewed", "product_added_to_cart", "checkout_completed"])
    );
    let calls = out["pintrk"].as_array().unwrap();
    assert_eq!(
        calls[0],
        json!(["load", TAG_ID, {"em": "Jane@Example.com"}])
    );
    assert!(tag_calls(&out, "checkout").is_empty(), "{out}");

    let uuid = |v: &Value| {
        let s = v.as_str().unwrap();
        s.len() == 36 && s.chars().nth(14) == Some('4')
    };
    let visits = tag_calls(&out, "pagevisit");
    assert_eq!(visits.len(), 1);
    let carts = tag_calls(&out, "addtocart");
    assert_eq!(carts.len(), 1);
    let cart = &carts[0][2];
    assert!(uuid(&cart["event_id"]) && uuid(&visits[0][2]["event_id"]));
    assert_ne!(cart["event_id"], visits[0][2]["event_id"]);
    assert_eq!(cart["value"], json!(179.98));
    assert_eq!(
        cart["line_items"],
        json!([{"product_id": "40000000001", "product_name": "Aviator sunglasses",
                "product_price": 89.99, "product_quantity": 2, "product_brand": "Shades",
                "product_category": "Glasses"}])
    );

    // Mirrored with fetch (keepalive) when sendBeacon is missing, under the Tag's event ids.
    let fetches = out["fetches"].as_array().unwrap();
    assert_eq!(fetches.len(), 2, "{out}");
    assert!(fetches.iter().all(|f| f["keepalive"] == true));
    assert_eq!(fetches[0]["body"]["event_name"], "page_visit");
    assert_eq!(fetches[0]["body"]["event_id"], visits[0][2]["event_id"]);
    assert_eq!(
        fetches[0]["body"]["event_source_url"],
        "https://shop.example/products/x"
    );
    assert_eq!(fetches[1]["body"]["event_name"], "add_to_cart");
    assert_eq!(fetches[1]["body"]["event_id"], cart["event_id"]);
    assert_eq!(fetches[1]["body"]["data"]["value"], "179.98");
    assert_eq!(
        fetches[1]["body"]["data"]["line_items"][0]["product_price"],
        "89.99"
    );
    assert_eq!(fetches[1]["body"]["em"], "Jane@Example.com");
    assert!(fetches[1]["body"].get("epik").is_none());
}

#[tokio::test]
async fn the_pixel_sends_shopifys_amounts_to_the_collector_digit_for_digit() {
    let dir = tempfile::tempdir().unwrap();
    let pixel = rendered_pixel(dir.path()).await;
    let fixture: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let mut checkout = checkout_completed(&fixture, json!("5980000000001"));
    // Amounts a float would change: far too large, far too small (exponents in JavaScript).
    checkout["data"]["checkout"]["subtotalPrice"]["amount"] = json!(1e21);
    checkout["data"]["checkout"]["lineItems"][0]["variant"]["price"]["amount"] = json!(1.5e-7);
    let scenario = json!({
        "events": [
            {"name": "product_added_to_cart", "event": {"data": {"cartLine": {
                "quantity": 2,
                // Decimal strings, as the Storefront API gives them: trailing zero included.
                "cost": {"totalAmount": {"amount": "19.90", "currencyCode": "USD"}},
                "merchandise": {"id": "gid://shopify/ProductVariant/40000000001",
                    "price": {"amount": "9.950", "currencyCode": "USD"},
                    "product": {"id": "788032119674292922", "title": "Aviator sunglasses"}}
            }}}},
            {"name": "checkout_completed", "event": checkout}
        ]
    });
    let out = run_pixel(&pixel, &scenario).await;
    assert_eq!(out["errors"], json!([]), "{out}");

    // The Tag takes numbers.
    let cart = &tag_calls(&out, "addtocart")[0][2];
    assert_eq!(cart["value"], json!(19.9));
    assert_eq!(cart["line_items"][0]["product_price"], json!(9.95));
    // The collector gets Shopify's text, digit for digit.
    let beacons = out["beacons"].as_array().unwrap();
    let raw = beacons[0]["raw"].as_str().unwrap();
    assert!(raw.contains(r#""value":"19.90""#), "{raw}");
    assert!(raw.contains(r#""product_price":"9.950""#), "{raw}");
    let purchase = &beacons[1]["body"]["data"];
    assert_eq!(purchase["value"], "1000000000000000000000", "{purchase}");
    assert_eq!(
        purchase["line_items"][0]["product_price"], "0.00000015",
        "{purchase}"
    );

    // And Pinterest receives them as they were written.
    let app = spawn_app().await;
    let mut cart_body = beacons[0]["body"].clone();
    cart_body["event_source_url"] = json!("https://shop.example/products/aviator");
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", BROWSER_UA)
        .body(cart_body.to_string())
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["warnings"], json!([]), "{answer}");
    app.wait_delivered(1).await;
    let sandbox = app.stop().await;
    let cd = &sandbox.events()[0].event["custom_data"];
    assert_eq!(cd["value"], "19.90", "{cd}");
    assert_eq!(cd["contents"][0]["item_price"], "9.950", "{cd}");
}

/// Shopify signs the body, not the topic header: a signed order replayed under
/// `orders/cancelled` is refused, naming the field, and cancels nothing.
#[tokio::test]
async fn the_pixel_follows_the_visitors_consent_and_records_it_on_the_cart() {
    let dir = tempfile::tempdir().unwrap();
    let pixel = rendered_pixel(dir.path()).await;
    let fixture: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let page = json!({"timestamp": rfc3339(now()),
        "context": {"document": {"location": {"href": "https://shop.example/"}}}});
    let init = |marketing: bool, sale: bool| {
        json!({"data": {},
               "context": {"document": {"location": {"origin": "https://shop.example",
                                                     "href": "https://shop.example/"}}},
               "customerPrivacy": {"analyticsProcessingAllowed": true, "marketingAllowed": marketing,
                                   "preferencesProcessingAllowed": true, "saleOfDataAllowed": sale}})
    };
    // Marketing not allowed: no Tag, nothing mirrored; the choice is written on the cart.
    let out = run_pixel(
        &pixel,
        &json!({"init": init(false, true), "events": [
            {"name": "page_viewed", "event": page},
            {"name": "checkout_completed", "event": checkout_completed(&fixture, json!("11"))}]}),
    )
    .await;
    assert_eq!(out["errors"], json!([]), "{out}");
    assert!(out["scripts"].as_array().unwrap().is_empty(), "{out}");
    assert!(out["beacons"].as_array().unwrap().is_empty(), "{out}");
    let cart: Vec<&Value> = out["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["url"] == "https://shop.example/cart/update.js")
        .collect();
    assert_eq!(cart.len(), 1, "{out}");
    assert_eq!(
        cart[0]["body"]["attributes"]["_pincapi_consent"],
        "marketing=no;sale_of_data=yes"
    );
    assert_eq!(
        out["cookies"]["_pincapi_consent"],
        "marketing=no;sale_of_data=yes"
    );

    // The visitor agrees later: the Tag loads then, and events flow; sale of data still
    // refused, so they carry Pinterest's limited data processing flag.
    let out = run_pixel(
        &pixel,
        &json!({"init": init(false, false), "events": [
            {"name": "page_viewed", "event": page},
            {"name": "visitorConsentCollected", "event": {"customerPrivacy": {
                "marketingAllowed": true, "saleOfDataAllowed": false}}},
            {"name": "checkout_completed", "event": checkout_completed(&fixture, json!("12"))}]}),
    )
    .await;
    assert_eq!(out["errors"], json!([]), "{out}");
    assert_eq!(out["scripts"].as_array().unwrap().len(), 1, "{out}");
    let checkouts = tag_calls(&out, "checkout");
    assert_eq!(checkouts.len(), 1, "{out}");
    assert_eq!(checkouts[0][2]["opt_out_type"], "LDP");
    assert!(
        tag_calls(&out, "pagevisit").is_empty(),
        "the visit came before consent"
    );
    let beacon = &out["beacons"].as_array().unwrap()[0];
    assert_eq!(beacon["body"]["event_id"], "order-12");
    assert_eq!(beacon["body"]["data"]["opt_out_type"], "LDP");
    let cart: Vec<&Value> = out["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["url"] == "https://shop.example/cart/update.js")
        .collect();
    assert_eq!(
        cart.last().unwrap()["body"]["attributes"]["_pincapi_consent"],
        "marketing=yes;sale_of_data=no"
    );
}
