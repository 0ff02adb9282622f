//! The demo's shop: its orders arrive the way a real Shopify store's do, by signed
//! `orders/create` webhook, while the browser reports only some of them (the others are the
//! visitors whose Tag Safari ITP, a blocker or iOS stopped). The dashboard then shows orders
//! against deliveries, what the Tag lost and what the server side recovered.

use anyhow::Context;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::shopify::webhook::sign;

/// The demo's shop and the secret its webhooks are signed with.
pub const DEMO_SHOP: &str = "demo-shop.myshopify.com";
pub const DEMO_WEBHOOK_SECRET: &str = "shpss_demo_webhook_secret";
/// Every third buyer's browser never reports the purchase (the Tag is blocked).
pub const BLOCKED_EVERY: usize = 3;

/// One order of the demo.
#[derive(Debug, Clone)]
pub struct DemoOrder {
    pub id: u64,
    pub email: String,
    pub phone: String,
    pub ip: String,
    pub user_agent: String,
    pub click_id: Option<String>,
    pub product_id: String,
    pub title: String,
    pub price: String,
    pub created_at: i64,
    /// Whether the buyer's browser reports the purchase.
    pub browser_reports: bool,
}

impl DemoOrder {
    /// The order as Shopify's `orders/create` webhook carries it (REST shape).
    pub fn webhook_body(&self) -> Value {
        let at = OffsetDateTime::from_unix_timestamp(self.created_at)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let money = json!({"amount": self.price, "currency_code": "USD"});
        let landing = match &self.click_id {
            Some(c) => format!("/products/{}?epik={c}", self.product_id),
            None => format!("/products/{}", self.product_id),
        };
        let address = json!({
            "first_name": "Avery", "last_name": "Lee", "address1": "1 Market St",
            "city": "San Francisco", "province": "California", "province_code": "CA",
            "zip": "94103-1234", "country": "United States", "country_code": "US",
            "phone": self.phone,
        });
        json!({
            "id": self.id,
            "admin_graphql_api_id": format!("gid://shopify/Order/{}", self.id),
            "name": format!("#{}", self.id % 100_000),
            "email": self.email,
            "contact_email": self.email,
            "phone": self.phone,
            "created_at": at, "processed_at": at, "updated_at": at,
            "cancelled_at": null, "cancel_reason": null,
            "financial_status": "paid",
            "test": false,
            "source_name": "web",
            "currency": "USD", "presentment_currency": "USD",
            "subtotal_price": self.price, "total_price": self.price,
            "subtotal_price_set": {"shop_money": money, "presentment_money": money},
            "total_price_set": {"shop_money": money, "presentment_money": money},
            "landing_site": landing,
            "browser_ip": self.ip,
            "client_details": {"browser_ip": self.ip, "user_agent": self.user_agent},
            "billing_address": address,
            "shipping_address": address,
            "line_items": [{
                "id": self.id * 10, "product_id": self.product_id.parse::<u64>().unwrap_or(0),
                "variant_id": self.product_id.parse::<u64>().unwrap_or(0) * 10 + 1,
                "quantity": 1, "price": self.price, "title": self.title,
                "price_set": {"shop_money": money, "presentment_money": money},
            }],
        })
    }

    /// The browser's report of the purchase to `/collect`, as tag.js mirrors the Tag's.
    pub fn browser_body(&self) -> Value {
        json!({
            "event_name": "checkout",
            "event_id": pincapi_core::shopify::event_id_of_order(&self.id.to_string()),
            "event_time": self.created_at,
            "event_source_url": "https://demo-shop.example/checkouts/c/demo/thank-you",
            "data": {"value": self.price, "currency": "USD", "order_id": self.id.to_string()},
            "epik": self.click_id,
            "source": "tag_mirror",
        })
    }
}

/// The orders of `visitors` visitors: every fifth buys (as `sample_traffic` has them).
pub fn orders(visitors: usize, now: i64, run: u32) -> Vec<DemoOrder> {
    const PRODUCTS: [(&str, &str, &str); 5] = [
        ("8001", "Rose Glow Serum", "24.00"),
        ("8002", "Linen Throw", "89.50"),
        ("8003", "Ceramic Vase", "42.00"),
        ("8004", "Silk Scarf", "55.00"),
        ("8005", "Clay Mask", "18.75"),
    ];
    (0..visitors)
        .filter(|v| v % 5 == 0)
        .enumerate()
        .map(|(n, v)| {
            let (pid, title, price) = PRODUCTS[v % PRODUCTS.len()];
            DemoOrder {
                // Unique per run, so a second demo on the same store adds new orders.
                id: 5_000_000_000_000 + u64::from(run % 100_000) * 10_000 + v as u64,
                email: format!(" Shopper{v}@Example.com "),
                phone: format!("(415) 555-01{:02}", v % 100),
                ip: format!("198.51.100.{}", v % 250 + 1),
                user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) \
                             AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
                    .to_owned(),
                click_id: (v % 3 == 0).then(|| format!("dj0yJnU9{run:08x}{v:04}")),
                product_id: pid.to_owned(),
                title: title.to_owned(),
                price: price.to_owned(),
                created_at: now - 50 + (v as i64 % 40),
                browser_reports: n % BLOCKED_EVERY != BLOCKED_EVERY - 1,
            }
        })
        .collect()
}

/// Sends each order: the browser's report (where its Tag was not blocked), then Shopify's
/// signed webhook. Returns how many orders were sent and how many the browser reported.
pub async fn send(
    client: &reqwest::Client,
    gateway: &str,
    orders: &[DemoOrder],
) -> anyhow::Result<(usize, usize)> {
    let mut reported = 0;
    for o in orders {
        if o.browser_reports {
            let resp = client
                .post(format!("{gateway}/collect"))
                .header("origin", gateway)
                .header("content-type", "text/plain;charset=UTF-8")
                .header("user-agent", &o.user_agent)
                .body(o.browser_body().to_string())
                .send()
                .await
                .context("while sending a browser report to the gateway")?;
            anyhow::ensure!(
                resp.status().is_success(),
                "the collector refused the demo's purchase: HTTP {}",
                resp.status()
            );
            reported += 1;
        }
        let body = serde_json::to_vec(&o.webhook_body())?;
        let resp = client
            .post(format!("{gateway}/webhooks/shopify"))
            .header("content-type", "application/json")
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Hmac-Sha256", sign(&body, DEMO_WEBHOOK_SECRET))
            .header("X-Shopify-Shop-Domain", DEMO_SHOP)
            .header("X-Shopify-Webhook-Id", format!("demo-{}", o.id))
            .header("X-Shopify-Api-Version", "2026-04")
            .body(body)
            .send()
            .await
            .context("while sending a webhook to the gateway")?;
        anyhow::ensure!(
            resp.status().is_success(),
            "the gateway refused the demo's webhook: HTTP {}",
            resp.status()
        );
    }
    Ok((orders.len(), reported))
}
