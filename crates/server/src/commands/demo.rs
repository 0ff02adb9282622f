//! `pincapi demo`: the gateway on embedded defaults with the sandbox in-process, fed a
//! realistic stream of shop traffic, so a newcomer sees events reach "Pinterest" without any
//! credentials.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use serde_json::{Value, json};

use crate::app::App;
use crate::config::{Config, Secret};
use crate::sandbox::{Sandbox, SandboxOptions};

/// The ad account id the demo uses (any digits work with the sandbox).
pub const DEMO_AD_ACCOUNT: &str = "549755885175";
/// The ingest key the demo prints.
pub const DEMO_API_KEY: &str = "demo-ingest-key";
/// The admin key the demo prints.
pub const DEMO_ADMIN_KEY: &str = "demo-admin-key-0001";

/// Options of `pincapi demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address of the gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the in-process Pinterest sandbox (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sandbox_listen: SocketAddr,
    /// Store file.
    #[arg(long, default_value = "pincapi-demo.db")]
    pub store: PathBuf,
    /// Shoppers to simulate.
    #[arg(long, default_value_t = 40)]
    pub visitors: usize,
    /// Stop once every sample event has reached the sandbox (for scripts and tests).
    #[arg(long)]
    pub exit_when_delivered: bool,
}

/// Runs the demo until `shutdown` (or until delivered, with `--exit-when-delivered`).
pub async fn run(
    args: DemoArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxOptions {
        token: Some("demo-conversion-token".into()),
        ..SandboxOptions::default()
    });
    let sandbox_listener = tokio::net::TcpListener::bind(args.sandbox_listen)
        .await
        .with_context(|| format!("cannot bind the sandbox to {}", args.sandbox_listen))?;
    let sandbox_addr = sandbox_listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sandbox_task = {
        let sandbox = sandbox.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = sandbox
                .serve(sandbox_listener, async move {
                    let _ = rx.changed().await;
                })
                .await;
        })
    };

    let config = Config {
        listen: args.listen,
        store: format!("sqlite://{}", args.store.display()),
        api_key: Secret::new(DEMO_API_KEY),
        admin_key: Secret::new(DEMO_ADMIN_KEY),
        pinterest_api_base: format!("http://{sandbox_addr}/v5"),
        ad_account_id: Some(DEMO_AD_ACCOUNT.into()),
        pinterest_token: Secret::new("demo-conversion-token"),
        // The sandbox takes any other token for its Ads API (audiences, customer lists,
        // Event Quality Score), as an OAuth token with every scope.
        pinterest_oauth_token: Secret::new("demo-oauth-token"),
        log: "info".into(),
        tag_id: Some(crate::browser::storefront::DEMO_TAG_ID.into()),
        browser: crate::browser::storefront::demo_browser_config(),
        ..Config::default()
    };
    let mut config = config;
    // The demo's shop: its orders come by signed webhook. A browser report waits this long
    // for its order's webhook before it is sent alone (60 s in production).
    let mut shop = crate::config::shopify::ShopConfig::new(super::demo_shop::DEMO_SHOP);
    shop.secrets = vec![Secret::new(super::demo_shop::DEMO_WEBHOOK_SECRET)];
    config.shopify.shops = vec![shop];
    config.ingest.merge_window_secs = 5;
    config.validate(true)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "listen: cannot bind {} (try --listen 127.0.0.1:0)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let app = App::build(config).await?;
    let state = app.state().clone();
    let gateway = {
        let mut rx = stop_rx.clone();
        tokio::spawn(app.run(listener, async move {
            let _ = rx.changed().await;
        }))
    };

    println!("pincapi demo");
    println!(
        "  gateway   http://{addr}   (ingest key: {DEMO_API_KEY}, admin key: {DEMO_ADMIN_KEY})"
    );
    println!("  sandbox   http://{sandbox_addr}/v5   (stands in for api.pinterest.com)");
    println!("  store     {}", args.store.display());
    println!(
        "  shop      http://{addr}{}   (a storefront on /tag.js: click through and watch the sandbox)",
        crate::browser::storefront::SHOP_PATH
    );

    let now = now_secs();
    // Purchases come from the shop below (webhook and browser), not from the API.
    let mut events = sample_traffic(args.visitors, now);
    events.retain(|e| e["event_name"] != "checkout");
    let client = reqwest::Client::new();
    let mut accepted = 0usize;
    for chunk in events.chunks(100) {
        let resp = client
            .post(format!("http://{addr}/v1/events"))
            .bearer_auth(DEMO_API_KEY)
            .json(&json!({ "data": chunk }))
            .send()
            .await
            .context("while sending sample events to the gateway")?;
        let body: Value = resp
            .json()
            .await
            .context("while reading the gateway's answer")?;
        accepted += body["accepted"].as_u64().unwrap_or(0) as usize;
    }
    let orders = super::demo_shop::orders(args.visitors, now, rand::random());
    let (sent_orders, reported) =
        super::demo_shop::send(&client, &format!("http://{addr}"), &orders).await?;
    accepted += sent_orders;
    println!(
        "Sent {} sample events ({} accepted) and {sent_orders} Shopify orders by signed webhook; \
         the browser reported {reported} of them (the Tag was blocked for the others). Waiting \
         for delivery...",
        events.len(),
        accepted - sent_orders
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let processed = sandbox.stats().events_processed as usize;
        if processed >= accepted {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            println!(
                "Only {processed} of {accepted} events reached the sandbox after 60 s; see the log above."
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = sandbox.stats();
    println!(
        "Delivered: the sandbox processed {} events in {} request{} ({} failed).",
        stats.events_processed,
        stats.requests,
        if stats.requests == 1 { "" } else { "s" },
        stats.events_failed
    );
    // Pinterest's Event Quality Score of what was delivered, as `serve` polls it hourly.
    if let Ok(client) = crate::pinterest_client::PinterestClient::new(
        &state.config.pinterest_api_base,
        state.config.request_timeout(),
    ) {
        let poller = crate::quality::eqs::EqsPoller {
            store: state.store.clone(),
            client,
            oauth: state.pinterest.clone(),
            metrics: state.metrics.clone(),
            accounts: vec![DEMO_AD_ACCOUNT.to_owned()],
            interval: Duration::from_secs(3600),
        };
        poller.poll_once().await;
    }
    let since = now - 6 * 86_400;
    if let Ok(report) =
        crate::quality::report::build(state.store.as_ref(), since, now * 1000, true).await
    {
        let h = &report.headline;
        println!(
            "Orders {} → purchases delivered {}; the Tag alone lost {:.0} %, the server side \
             recovered {:.0} %.",
            h.orders, h.delivered_purchases, h.browser_loss_percent, h.recovered_percent
        );
    }
    // The tracking audit of the demo shop, as an agency would hand it to the merchant.
    let audit_args = super::audit::AuditArgs {
        site: format!("http://{addr}{}", crate::browser::storefront::SHOP_PATH),
        sitemap: None,
        pages: 20,
        shop: None,
        ad_account: Some(DEMO_AD_ACCOUNT.to_owned()),
        days: 7,
        out: args.store.with_file_name("pincapi-demo-audit.html"),
        json: Some(args.store.with_file_name("pincapi-demo-audit.json")),
        browser: false,
        addresses: super::egress::AddressArgs {
            allow_private: true,
            allow_address: Vec::new(),
        },
        tag_id: state.config.tag_id.clone(),
        pinterest_token: Some("demo-oauth-token".to_owned()),
        config: None,
    };
    match super::audit::build_with(&audit_args, &state.config).await {
        Ok(audit) => match super::audit::write(&audit_args, &audit) {
            Ok(()) => println!(
                "Audit: score {}/100, written to {}",
                audit.score,
                audit_args.out.display()
            ),
            Err(e) => println!("The audit could not be written: {e:#}"),
        },
        Err(e) => println!("The audit failed: {e:#}"),
    }
    // One audience sync over what was delivered, as `serve` runs on its schedule
    // (`audiences.enabled`): the default segments become customer lists at the sandbox.
    match crate::audiences::run_once(
        &state.config,
        &state.store,
        &state.metrics,
        &state.pinterest,
    )
    .await
    {
        Ok(report) => println!(
            "Audiences: {} segment list{} synced, {} hashed members added.",
            report.segments.len(),
            if report.segments.len() == 1 { "" } else { "s" },
            report.added()
        ),
        Err(e) => println!("Audience sync failed: {e:#}"),
    }
    println!("Look at:");
    for (url, what) in [
        (
            format!("http://{sandbox_addr}/sandbox/events"),
            "what Pinterest received (hashed match keys)",
        ),
        (
            format!("http://{sandbox_addr}/sandbox/requests"),
            "every request and answer",
        ),
        (
            format!("http://{addr}/dashboard"),
            "conversion quality (sign in with the admin key)",
        ),
        (
            format!("http://{sandbox_addr}/sandbox/customer_lists"),
            "the audiences' lists (hashed members)",
        ),
        (format!("http://{addr}/metrics"), "Prometheus metrics"),
        (format!("http://{addr}/readyz"), "readiness"),
    ] {
        println!("  {url:<50} {what}");
    }

    if !args.exit_when_delivered {
        println!("Press Ctrl-C to stop.");
        shutdown.await;
    }
    let _ = stop_tx.send(true);
    let _ = gateway.await;
    let _ = sandbox_task.await;
    Ok(())
}

/// A realistic mix of shop events in the ingest shape, with raw match keys: every visitor
/// views pages, some add to cart, some buy. Purchases carry email, phone and address; about
/// a third of visitors arrive from a Pinterest ad with a click id.
pub fn sample_traffic(visitors: usize, now: i64) -> Vec<Value> {
    const PRODUCTS: [(&str, &str, &str); 5] = [
        ("8001", "Rose Glow Serum", "24.00"),
        ("8002", "Linen Throw", "89.50"),
        ("8003", "Ceramic Vase", "42.00"),
        ("8004", "Silk Scarf", "55.00"),
        ("8005", "Clay Mask", "18.75"),
    ];
    const AGENTS: [&str; 3] = [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
        "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    ];
    let mut rng = rand::rng();
    let run: u32 = rng.random();
    let mut out = Vec::new();
    for v in 0..visitors {
        let ip = format!("198.51.100.{}", v % 250 + 1);
        let ua = AGENTS[v % AGENTS.len()];
        let click = (v % 3 == 0).then(|| format!("dj0yJnU9{run:08x}{v:04}"));
        let (pid, name, price) = PRODUCTS[v % PRODUCTS.len()];
        let t = now - 60 + (v as i64 % 50);
        let base_user = json!({
            "client_ip_address": ip, "client_user_agent": ua, "click_id": click,
        });
        let url = format!("https://demo-shop.example/products/{pid}");
        out.push(json!({
            "event_name": "page_visit", "action_source": "web", "event_time": t,
            "event_id": format!("pv-{run:08x}-{v}"), "event_source_url": url,
            "user_data": base_user,
            "custom_data": {"content_ids": [pid]},
        }));
        if v % 5 < 3 {
            out.push(json!({
                "event_name": "add_to_cart", "action_source": "web", "event_time": t + 5,
                "event_id": format!("atc-{run:08x}-{v}"), "event_source_url": url,
                "user_data": base_user,
                "custom_data": {"currency": "USD", "value": price, "content_ids": [pid],
                    "contents": [{"id": pid, "item_price": price, "quantity": 1, "item_name": name}],
                    "num_items": 1},
            }));
        }
        if v % 5 == 0 {
            let order_id = format!("{}", 5_550_000 + v);
            out.push(json!({
                "event_name": "checkout", "action_source": "web", "event_time": t + 9,
                "event_id": format!("order-{order_id}-{run:08x}"),
                "event_source_url": "https://demo-shop.example/checkout/thank-you",
                "user_data": {
                    "em": format!(" Shopper{v}@Example.com "), "ph": "(415) 555-01{v:02}",
                    "fn": "Avery", "ln": "Lee", "ct": "San Francisco", "st": "CA",
                    "zp": "94103-1234", "country": "US", "external_id": format!("cust-{v}"),
                    "client_ip_address": ip, "client_user_agent": ua, "click_id": click,
                },
                "custom_data": {"currency": "USD", "value": price, "order_id": order_id,
                    "content_ids": [pid], "num_items": 1,
                    "contents": [{"id": pid, "item_price": price, "quantity": 1, "item_name": name}]},
            }));
        }
    }
    out
}

fn now_secs() -> i64 {
    crate::clock::system_now_ms() / 1000
}
