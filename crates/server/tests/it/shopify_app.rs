//! Shopify as it is in 2026, end to end against the stand-in over HTTP: an app's client
//! credentials and nothing else, `pincapi shopify connect`, webhooks the stand-in delivers to
//! the subscriptions it holds, the GraphQL poller, token renewals, the webhook check, bulk
//! backfills, compliance webhooks, consent and the install flow.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use pincapi::clock::{ManualClock, SharedClock, SystemClock};
use pincapi::config::Synchronous;
use pincapi::config::shopify::ShopConfig;
use pincapi::config::{Config, Secret};
use pincapi::sandbox::SandboxOptions;
use pincapi::shopify::standin::StandinOptions;
use pincapi::store::QualityStore;
use pincapi::store::sqlite::SqliteStore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

const SHOP: &str = "app-test.myshopify.com";
const CLIENT_ID: &str = "app-client-id";
const CLIENT_SECRET: &str = "app-client-secret-0123";
const KEY: &str = "8f2c6a1d4b7e9f0a3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b";

fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// A small paid web order in the webhook's shape, created a few minutes ago.
fn order(id: u64) -> Value {
    let t = rfc3339(now() - 240);
    json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "email": format!("buyer{id}@example.com"),
        "created_at": t, "processed_at": t, "updated_at": t,
        "currency": "USD", "presentment_currency": "USD",
        "subtotal_price": "24.00", "total_price": "27.50",
        "financial_status": "paid", "test": false, "source_name": "web",
        "line_items": [{"id": id + 1, "product_id": 7001, "variant_id": 8001, "quantity": 2,
                        "price": "12.00", "title": "Linen pillow", "sku": "LP-1"}],
        "browser_ip": "203.0.113.7",
        "client_details": {"browser_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (iPhone)"},
        "note_attributes": [],
    })
}

fn standin_options(clock: SharedClock) -> StandinOptions {
    StandinOptions {
        shop_domain: SHOP.into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        static_token: None,
        token_lifetime_secs: 3600,
        clock,
        ..StandinOptions::default()
    }
}

/// The shop as configured: the app's client id and secret, nothing else.
fn shop(standin: &Standin) -> ShopConfig {
    let mut s = ShopConfig::new(SHOP);
    s.client_id = Some(CLIENT_ID.into());
    s.client_secret = Secret::new(CLIENT_SECRET);
    s.admin_api_base = Some(standin.base());
    s
}

fn shop_settings(c: &mut Config, standin: &Standin, public: &str) {
    c.public_url = Some(public.to_owned());
    c.secret_key = Secret::new(KEY);
    c.shopify.shops = vec![shop(standin)];
    c.shopify.poll_interval_ms = 50;
    c.shopify.webhook_check_interval_secs = 3600;
    c.ingest.merge_window_secs = 0;
    // The gateway runs on a manual clock in some tests: nothing may wait on it.
    c.delivery.linger_ms = 0;
}

/// The configuration file `pincapi shopify ...` reads for the gateway's store.
fn config_file(dir: &Path, db: &Path, standin: &Standin, public: &str) -> std::path::PathBuf {
    let text = format!(
        "store = \"sqlite://{}\"\npublic_url = \"{public}\"\nsecret_key = \"{KEY}\"\n\
         ad_account_id = \"{ACCOUNT}\"\npinterest_token = \"{TOKEN}\"\n\
         [[shopify.shops]]\ndomain = \"{SHOP}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret = \"{CLIENT_SECRET}\"\nadmin_api_base = \"{}\"\n",
        db.display(),
        standin.base()
    );
    assert!(
        !text.contains("access_token") && !text.contains("shpat_"),
        "no static token in the configuration"
    );
    let path = dir.join("pincapi.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn pincapi(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(&args)
            .env_clear()
            .output()
            .expect("pincapi runs")
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every byte of the store's files (database, WAL, shared memory).
fn store_bytes(db: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(Path::new(&p)) {
            out.extend(b);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn from_client_credentials_alone_connect_sets_up_webhooks_the_poller_recovers_and_tokens_renew()
 {
    let clock = ManualClock::starting_now();
    let standin = Standin::start_with(standin_options(clock.clone())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let file = config_file(dir.path(), &db, &standin, &public);
    let file_arg = file.display().to_string();

    // Before `serve` has ever run: connect registers one subscription per needed topic.
    let out = pincapi(vec![
        "shopify".into(),
        "connect".into(),
        "--config".into(),
        file_arg.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    assert!(said.contains("orders/create: created"), "{said}");
    let uri = format!("{public}/webhooks/shopify");
    let subs = standin.standin.subscriptions();
    let mut topics: Vec<&str> = subs.iter().map(|s| s.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            "CHECKOUTS_CREATE",
            "CHECKOUTS_UPDATE",
            "CUSTOMERS_CREATE",
            "ORDERS_CANCELLED",
            "ORDERS_CREATE",
            "REFUNDS_CREATE"
        ]
    );
    assert!(subs.iter().all(|s| s.uri == uri), "{subs:?}");
    // A second run finds everything in place and changes nothing.
    let out = pincapi(vec![
        "shopify".into(),
        "connect".into(),
        "--config".into(),
        file_arg,
    ])
    .await;
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("created"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(standin.standin.subscriptions().len(), 6);
    assert_eq!(standin.standin.grants("client_credentials"), 1);

    let app = spawn_app_at(
        clock.clone(),
        SandboxOptions::default(),
        listener,
        dir,
        |c| shop_settings(c, &standin, &public),
    )
    .await;

    // Webhooks the stand-in delivers to the registered uri, each reaching Pinterest once; the
    // poller lists the same orders too.
    let delivered: Vec<u64> = (1..=3).map(|i| 7_100_000_000_000 + i * 10).collect();
    for id in &delivered {
        standin.add(&order(*id));
        let d = standin.standin.deliver("orders/create", &order(*id)).await;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].status, 200, "{d:?}");
    }
    // Orders whose webhooks were dropped: only the poller (GraphQL) can find them.
    let dropped: Vec<u64> = (1..=2).map(|i| 7_100_000_000_500 + i * 10).collect();
    for id in &dropped {
        standin.add(&order(*id));
    }
    app.wait_delivered(5).await;
    // The token connect obtained, sealed in the store, served the gateway too.
    assert_eq!(standin.standin.grants("client_credentials"), 1);

    // Three renewals at 80 % of the token's life, and one after a 401; the Admin API keeps
    // answering the poller through all of them.
    let mut sent = 5;
    for round in 1..=4u64 {
        if round < 4 {
            // Nothing in flight when the clock jumps 48 minutes: a lease that ended under a
            // request would have its batch sent again (Pinterest would count it once; the
            // sandbox counts what it received).
            let db = app.db.clone();
            wait_for("every event settled", || {
                let db = db.clone();
                async move {
                    pincapi::store::sqlite::count_states(&db)
                        .unwrap()
                        .iter()
                        .all(|(state, _)| state == "delivered")
                }
            })
            .await;
            clock.advance(Duration::from_secs(2900));
        } else {
            standin.standin.revoke_tokens();
        }
        let id = 7_100_000_001_000 + round * 10;
        standin.add(&order(id));
        sent += 1;
        app.wait_delivered(sent).await;
        // A poll already under way when the clock moved may have found the order with the
        // old token; the next one renews.
        let st = &standin.standin;
        wait_for(&format!("round {round}: the renewal"), || async {
            st.grants("client_credentials") as u64 > round
        })
        .await;
        assert_eq!(
            st.grants("client_credentials") as u64,
            1 + round,
            "round {round}"
        );
    }
    let unauthorized = standin.standin.requests_of("unauthorized").len();
    assert!(unauthorized >= 1, "the revoked token was refused once");
    let tokens = standin.standin.issued_tokens();

    let db = app.db.clone();
    let sandbox = app.stop().await;
    for id in delivered.iter().chain(&dropped) {
        assert_eq!(sandbox.count_of(&format!("order-{id}")), 1, "order {id}");
    }
    assert_eq!(sandbox.events().len(), sent);
    // Tokens are sealed at rest: none is in the store's files.
    let bytes = store_bytes(&db);
    for t in tokens {
        assert!(!contains(&bytes, &t), "a token in the clear in the store");
    }
}

#[tokio::test]
async fn a_subscription_deleted_at_shopify_is_back_within_one_check_and_the_alert_fired_and_cleared()
 {
    let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_at(
        SystemClock::shared(),
        SandboxOptions::default(),
        listener,
        dir,
        |c| {
            shop_settings(c, &standin, &public);
            c.shopify.webhook_check_interval_secs = 1;
        },
    )
    .await;
    // The check at start sets everything up.
    let st = &standin.standin;
    wait_for("the subscriptions", || async {
        st.subscriptions().len() == 6
    })
    .await;
    let gone = st
        .subscriptions()
        .into_iter()
        .find(|s| s.topic == "ORDERS_CREATE")
        .unwrap();
    let checks_before = st.requests_of("WebhookSubscriptions").len();
    assert!(st.delete_subscription(&gone.id));
    wait_for("the purchase topic's subscription again", || async {
        st.subscriptions()
            .iter()
            .any(|s| s.topic == "ORDERS_CREATE")
    })
    .await;
    // Put back by the next check: one more listing, not several.
    assert!(st.requests_of("WebhookSubscriptions").len() <= checks_before + 2);
    let back = st
        .subscriptions()
        .into_iter()
        .find(|s| s.topic == "ORDERS_CREATE")
        .unwrap();
    assert_eq!(back.uri, format!("{public}/webhooks/shopify"));
    assert_ne!(back.id, gone.id);

    let store = SqliteStore::open(&app.db, Synchronous::Normal).unwrap();
    let db_store = Arc::new(store);
    wait_for("the alert to clear", || async {
        db_store
            .alert_states()
            .await
            .unwrap()
            .iter()
            .any(|a| a.rule == "webhooks_missing" && !a.active && a.cleared_at_ms.is_some())
    })
    .await;
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pincapi_alert_transitions_total")
                && l.contains("webhooks_missing")
                && l.contains("fired")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            // Six set up at start, and the one deleted.
            .any(
                |l| l.starts_with("pincapi_shopify_webhooks_recreated_total") && l.ends_with(" 7")
            ),
        "{metrics}"
    );
    drop(db_store);

    // Shopify's side of it: 8 failed deliveries in a row and the subscription is deleted.
    let _ = app.stop().await;
    for _ in 0..8 {
        let d = st.deliver("orders/create", &order(7_200_000_000_001)).await;
        assert_eq!(d.len(), 1);
        assert_ne!(d[0].status / 100, 2);
    }
    assert!(
        !st.subscriptions()
            .iter()
            .any(|s| s.topic == "ORDERS_CREATE"),
        "deleted after 8 failures"
    );
}

#[tokio::test]
async fn a_30000_order_backfill_runs_through_a_bulk_operation_and_stores_each_order_once() {
    let standin = Standin::start_with(StandinOptions {
        bulk_running_looks: 2,
        ..standin_options(SystemClock::shared())
    })
    .await;
    let orders: Vec<Value> = (0..30_000u64)
        .map(|i| order(7_300_000_000_000 + i * 10))
        .collect();
    standin.standin.add(json!({ "orders": orders })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let file = config_file(dir.path(), &db, &standin, "https://t.shop.example");
    let since = rfc3339(now() - 86_400);
    let args = |json: bool| {
        let mut a: Vec<String> = ["shopify", "backfill", "--since", &since, "--config"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(file.display().to_string());
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = pincapi(args(true)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["bulk"], true, "{report}");
    assert_eq!(report[0]["orders"], 30_000);
    assert_eq!(report[0]["sent"], 30_000);
    let states = pincapi::store::sqlite::count_states(&db).unwrap();
    let total: i64 = states.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 30_000, "{states:?}");
    assert!(standin.standin.requests_of("OrdersPage").is_empty());
    assert!(
        standin.standin.requests_of("BulkStatus").len() >= 3,
        "it waited for the run"
    );

    // Run again: every order is stored already, none is queued twice.
    let out = pincapi(args(true)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["sent"], 0, "{report}");
    assert_eq!(report[0]["already_stored"], 30_000);
    let states = pincapi::store::sqlite::count_states(&db).unwrap();
    assert_eq!(states.iter().map(|(_, n)| n).sum::<i64>(), 30_000);
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn after_customers_redact_the_customers_email_hash_is_nowhere_in_the_stores_files() {
    let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        shop_settings(c, &standin, "https://t.shop.example");
        // The webhooks only: no poller listing the orders again.
        c.shopify.poller = false;
    })
    .await;
    let uri = app.url("/webhooks/shopify");
    let st = &standin.standin;
    let (kept, redacted) = (7_400_000_000_010u64, 7_400_000_000_020u64);
    let mut o = order(redacted);
    o["email"] = json!("Redact.Me@Example.com");
    o["phone"] = json!("+1 415 555 0100");
    for body in [order(kept), o] {
        let d = st.deliver_to("orders/create", &body, &uri).await;
        assert_eq!(d.status, 200);
    }
    app.wait_delivered(2).await;
    let hash = sha256_hex("redact.me@example.com");
    assert!(contains(&store_bytes(&app.db), &hash), "stored before");

    // A data request first: it says what is held, by hash and order.
    let d = st
        .deliver_to(
            "customers/data_request",
            &json!({"shop_id": 1, "shop_domain": SHOP,
                    "customer": {"id": 91, "email": "redact.me@example.com", "phone": "+14155550100"},
                    "orders_requested": [redacted], "data_request": {"id": 9999}}),
            &uri,
        )
        .await;
    assert_eq!(d.status, 200);
    let (status, body) = app
        .get("/admin/shopify/data-requests", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200);
    let requests: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(requests[0]["request_id"], "9999");
    assert_eq!(requests[0]["customer_id"], "91");
    let events = requests[0]["report"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{requests}");
    assert_eq!(events[0]["event_id"], format!("order-{redacted}"));
    assert_eq!(events[0]["state"], "delivered");
    assert_eq!(app.get("/admin/shopify/data-requests", None).await.0, 401);

    // A signed body about another shop is refused: the body, not the header, names the shop.
    let d = st
        .deliver_to(
            "customers/redact",
            &json!({"shop_id": 2, "shop_domain": "another-shop.myshopify.com",
                    "customer": {"id": 91, "email": "redact.me@example.com"},
                    "orders_to_redact": [redacted]}),
            &uri,
        )
        .await;
    assert_eq!(d.status, 400);
    assert!(contains(&store_bytes(&app.db), &hash), "nothing was erased");

    let d = st
        .deliver_to(
            "customers/redact",
            &json!({"shop_id": 1, "shop_domain": SHOP,
                    "customer": {"id": 91, "email": "redact.me@example.com", "phone": "+14155550100"},
                    "orders_to_redact": [redacted]}),
            &uri,
        )
        .await;
    assert_eq!(d.status, 200);
    let bytes = store_bytes(&app.db);
    assert!(
        !contains(&bytes, &hash),
        "the email hash is gone from every file"
    );
    assert!(
        !contains(&bytes, &sha256_hex("14155550100")),
        "so is the phone's"
    );
    // The other customer's event is untouched.
    assert!(contains(
        &bytes,
        &sha256_hex(&format!("buyer{kept}@example.com"))
    ));

    // shop/redact: everything held for the shop goes.
    let d = st
        .deliver_to(
            "shop/redact",
            &json!({"shop_id": 1, "shop_domain": SHOP}),
            &uri,
        )
        .await;
    assert_eq!(d.status, 200);
    let (_, ledger) = app.get("/admin/shopify/ledger", Some(ADMIN_KEY)).await;
    let ledger: Value = serde_json::from_str(&ledger).unwrap();
    assert_eq!(ledger["orders"], json!([]));
    let bytes = store_bytes(&app.db);
    assert!(!contains(
        &bytes,
        &sha256_hex(&format!("buyer{kept}@example.com"))
    ));
    // A forged compliance webhook does nothing.
    let forged = app
        .http
        .post(&uri)
        .header("X-Shopify-Topic", "shop/redact")
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Hmac-Sha256", "bm90IGEgc2lnbmF0dXJl")
        .body(json!({"shop_domain": SHOP}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
}

#[tokio::test]
async fn consent_decides_what_is_sent_for_an_order() {
    let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        shop_settings(c, &standin, "https://t.shop.example");
        c.shopify.poller = false;
    })
    .await;
    let uri = app.url("/webhooks/shopify");
    let with_consent = |id: u64, value: &str| {
        let mut o = order(id);
        o["note_attributes"] = json!([{"name": "_pincapi_consent", "value": value}]);
        o
    };
    let (denied, no_sale, allowed) = (7_500_000_000_010u64, 7_500_000_000_020, 7_500_000_000_030);
    for body in [
        with_consent(denied, "marketing=no;sale_of_data=yes"),
        with_consent(no_sale, "marketing=yes;sale_of_data=no"),
        with_consent(allowed, "marketing=yes;sale_of_data=yes"),
    ] {
        let d = standin
            .standin
            .deliver_to("orders/create", &body, &uri)
            .await;
        assert_eq!(d.status, 200);
    }
    app.wait_delivered(2).await;
    let (_, ledger) = app.get("/admin/shopify/ledger", Some(ADMIN_KEY)).await;
    let ledger: Value = serde_json::from_str(&ledger).unwrap();
    let row = |id: u64| {
        ledger["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["order_id"].as_str() == Some(id.to_string().as_str()))
            .cloned()
            .unwrap()
    };
    assert_eq!(row(denied)["outcome"], "skipped");
    assert!(
        row(denied)["reason"]
            .as_str()
            .unwrap()
            .starts_with("consent")
    );
    let (_, report) = app.get("/api/quality?since=1d", Some(ADMIN_KEY)).await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["shopify"]["consent_skipped"], 1,
        "{}",
        report["shopify"]
    );

    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of(&format!("order-{denied}")), 0);
    let ldp = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == format!("order-{no_sale}"))
        .unwrap();
    assert_eq!(ldp.event["custom_data"]["opt_out_type"], "LDP");
    let plain = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == format!("order-{allowed}"))
        .unwrap();
    assert!(plain.event["custom_data"].get("opt_out_type").is_none());
    assert!(plain.event.get("opt_out").is_none());
}

#[tokio::test]
async fn consent_denied_can_send_the_order_opted_out_and_ignore_sends_it_plain() {
    for (mode, denied, expect_opt_out) in [("opt_out", "opt_out", true), ("ignore", "skip", false)]
    {
        let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
        let app = spawn_app_with(SandboxOptions::default(), |c| {
            shop_settings(c, &standin, "https://t.shop.example");
            c.shopify.poller = false;
            c.shopify.consent = if mode == "ignore" {
                pincapi_core::shopify::Consent::Ignore
            } else {
                pincapi_core::shopify::Consent::Respect
            };
            c.shopify.consent_denied = if denied == "opt_out" {
                pincapi_core::shopify::ConsentDenied::OptOut
            } else {
                pincapi_core::shopify::ConsentDenied::Skip
            };
        })
        .await;
        let mut o = order(7_600_000_000_010);
        o["note_attributes"] = json!([{"name": "_pincapi_consent", "value": "marketing=no"}]);
        let d = standin
            .standin
            .deliver_to("orders/create", &o, &app.url("/webhooks/shopify"))
            .await;
        assert_eq!(d.status, 200);
        app.wait_delivered(1).await;
        let sandbox = app.stop().await;
        let e = &sandbox.events()[0].event;
        assert_eq!(
            e.get("opt_out") == Some(&json!(true)),
            expect_opt_out,
            "{mode}: {e}"
        );
    }
}

#[tokio::test]
async fn the_install_flow_refuses_a_forged_hmac_a_wrong_state_and_a_foreign_host_and_then_installs()
{
    let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_at(
        SystemClock::shared(),
        SandboxOptions::default(),
        listener,
        dir,
        |c| {
            shop_settings(c, &standin, &public);
            c.shopify.shops[0].install = true;
        },
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    // Before the install the shop has no token: the poller says so and sends nothing.
    assert_eq!(standin.standin.grants("client_credentials"), 0);

    // 1. Install: a redirect to Shopify's authorize page with a state.
    let resp = get(app.url(&format!("/shopify/install?shop={SHOP}"))).await;
    assert_eq!(resp.status().as_u16(), 302);
    let authorize = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(authorize.starts_with(&format!("http://{}/admin/oauth/authorize?", standin.addr)));
    assert!(authorize.contains(&format!("client_id={CLIENT_ID}")));
    assert!(authorize.contains("scope=read_orders%2Cread_customers"));
    // 2. The stand-in approves and redirects to the callback, signed.
    let resp = get(authorize.clone()).await;
    assert_eq!(resp.status().as_u16(), 302);
    let callback = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{public}/shopify/callback?")),
        "{callback}"
    );

    // Refused: a forged hmac, a wrong state, a shop outside myshopify.com.
    let forged = regex_replace(&callback, "hmac=", "hmac=00");
    let resp = get(forged).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.unwrap().contains("hmac"));
    let wrong_state = sign_again(&callback, "state", "not-the-state");
    let resp = get(wrong_state).await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("state"));
    let foreign = sign_again(&callback, "shop", "app-test.myshopify.com.evil.example");
    let resp = get(foreign).await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("myshopify.com"));
    let resp = get(app.url("/shopify/install?shop=evil.example")).await;
    assert_eq!(resp.status().as_u16(), 400);

    // The genuine callback installs the shop: an expiring token and a refresh token.
    let resp = get(callback.clone()).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    // The same callback again: its state is used up.
    assert_eq!(get(callback).await.status().as_u16(), 400);

    // The poller now reads orders with the installed token.
    standin.add(&order(7_700_000_000_010));
    app.wait_delivered(1).await;
    assert_eq!(standin.standin.grants("authorization_code"), 1);
    // After a 401 the refresh token is used (and rotated), not the client-credentials grant.
    standin.standin.revoke_tokens();
    standin.add(&order(7_700_000_000_020));
    app.wait_delivered(2).await;
    assert_eq!(standin.standin.grants("refresh_token"), 1);
    assert_eq!(standin.standin.grants("client_credentials"), 0);
    let _ = app.stop().await;
}

/// `url` with the first `marker` replaced by `replacement`.
fn regex_replace(url: &str, marker: &str, replacement: &str) -> String {
    url.replacen(marker, replacement, 1)
}

/// The callback `url` with `key` set to `value` and signed again with the app's secret, as
/// Shopify would sign it: only the state (or the shop) is wrong.
fn sign_again(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let mut pairs: Vec<(String, String)> = pincapi::shopify::install::form_pairs(query)
        .into_iter()
        .filter(|(k, _)| k != "hmac")
        .map(|(k, v)| {
            if k == key {
                (k, value.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    let message = pincapi::shopify::install::signed_message(&pairs);
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    let hmac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    pairs.push(("hmac".into(), hmac));
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", pincapi::shopify::install::percent_encode(v)))
        .collect();
    format!("{base}?{}", q.join("&"))
}

#[tokio::test]
async fn a_throttled_query_waits_for_the_bucket_and_is_asked_again() {
    let standin = Standin::start_with(StandinOptions {
        // A small, fast bucket: a page costs 952 points of 1,000.
        bucket_size: 1000.0,
        restore_rate: 20_000.0,
        ..standin_options(SystemClock::shared())
    })
    .await;
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        shop_settings(c, &standin, "https://t.shop.example");
    })
    .await;
    standin.standin.throttle_next(3);
    standin.add(&order(7_800_000_000_010));
    app.wait_delivered(1).await;
    // Every query is throttled until three were (the webhook check's at start among them),
    // and each was asked again.
    let requests = standin.standin.requests();
    let throttled = requests
        .iter()
        .filter(|r| r.error.as_deref() == Some("THROTTLED"))
        .count();
    assert_eq!(throttled, 3, "{requests:?}");
    let _ = app.stop().await;
}

#[tokio::test]
async fn the_gateway_refuses_to_start_without_the_key_its_sealed_credentials_need() {
    let standin = Standin::start_with(standin_options(SystemClock::shared())).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let file = config_file(dir.path(), &db, &standin, "https://t.shop.example");
    // connect stores a sealed token.
    let out = pincapi(vec![
        "shopify".into(),
        "connect".into(),
        "--config".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let without_key: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("secret_key"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, without_key).unwrap();
    let out = pincapi(vec![
        "shopify".into(),
        "connect".into(),
        "--config".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("secret_key") && err.contains("PINCAPI_SECRET_KEY"),
        "{err}"
    );
    // serve too.
    let mut c = test_config("http://127.0.0.1:9/v5", &db);
    c.shopify.shops = vec![shop(&standin)];
    let e = pincapi::app::App::build(c).await.unwrap_err().to_string();
    assert!(e.starts_with("secret_key:"), "{e}");
    // A malformed key is refused by name.
    let mut c = test_config("http://127.0.0.1:9/v5", &db);
    c.secret_key = Secret::new("abc");
    let e = c.validate(true).unwrap_err().to_string();
    assert!(
        e.starts_with("secret_key: must be 64 hex characters"),
        "{e}"
    );
}

#[tokio::test]
async fn a_backfill_from_before_60_days_without_read_all_orders_says_what_it_cannot_see() {
    let standin = Standin::start_with(StandinOptions {
        scopes: vec!["read_orders".into()],
        ..standin_options(SystemClock::shared())
    })
    .await;
    let mut old = order(7_900_000_000_010);
    let t = rfc3339(now() - 90 * 86_400);
    for k in ["created_at", "processed_at", "updated_at"] {
        old[k] = json!(t);
    }
    standin.add(&old);
    standin.add(&order(7_900_000_000_020));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let file = config_file(dir.path(), &db, &standin, "https://t.shop.example");
    let out = pincapi(vec![
        "shopify".into(),
        "backfill".into(),
        "--since".into(),
        rfc3339(now() - 100 * 86_400),
        "--config".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("read_all_orders"), "{said}");
    // Only the recent order is listed: the stand-in hides the old one, as Shopify does.
    assert!(said.contains(": 1 orders since"), "{said}");
}
