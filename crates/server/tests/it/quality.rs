//! Conversion-quality monitoring, black-box: the report and the dashboard against figures the
//! tests compute themselves from what they sent and what the sandbox received; alerts through
//! a real webhook receiver; Pinterest's EQS through the sandbox.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::post;
use pincapi::clock::SystemClock;
use pincapi::config::shopify::ShopConfig;
use pincapi::config::{Secret, Synchronous};
use pincapi::metrics::Metrics;
use pincapi::pinterest_client::PinterestClient;
use pincapi::quality::eqs::EqsPoller;
use pincapi::sandbox::{FaultStep, Faults, OAuthToken, SandboxOptions};
use pincapi::shopify::webhook::sign;
use pincapi::store::sqlite::SqliteStore;
use pincapi::store::{DeadReason, Queue, ShopifyStore, Store};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::helpers::*;

const SHOP: &str = "quality-test.myshopify.com";
const SECRET: &str = "shpss_quality_webhook_secret";
const EPIK: &str = "dj0yJnU9qualityEpik";
const DOCS_ORDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
));

/// Shopify's sample order made into a real sale created two minutes ago, with its own id.
fn sale(id: u64) -> Value {
    let mut o: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let created = OffsetDateTime::from_unix_timestamp(now() - 120)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
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

/// The gateway with one shop and no Admin API token: the reconciliation poller is off.
async fn shop_app(tweak: impl FnOnce(&mut pincapi::config::Config)) -> TestApp {
    spawn_app_with(SandboxOptions::default(), move |c| {
        let mut shop = ShopConfig::new(SHOP);
        shop.secrets = vec![Secret::new(SECRET)];
        c.shopify.shops = vec![shop];
        c.ingest.merge_window_secs = 0;
        c.ingest.browser_purchase_hold_secs = 0;
        tweak(c);
    })
    .await
}

/// Shopify's `orders/create` webhook for `order`, signed.
async fn webhook(app: &TestApp, order: &Value, webhook_id: &str) {
    let body = serde_json::to_vec(order).unwrap();
    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("content-type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", sign(&body, SECRET))
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", webhook_id)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// A browser event mirrored to the collector (as tag.js or the custom pixel does).
async fn collect(app: &TestApp, body: Value) {
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
}

fn browser_purchase(order_id: u64) -> Value {
    json!({
        "event_name": "checkout",
        "event_id": format!("order-{order_id}"),
        "event_source_url": "https://shop.example/checkouts/c/abc/thank-you",
        "data": {"value": "10.00", "currency": "USD", "order_id": order_id.to_string()},
        "epik": EPIK,
        "source": "tag_mirror"
    })
}

async fn report(app: &TestApp) -> Value {
    let (status, text) = app.get("/api/quality?since=1d", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn total<'a>(report: &'a Value, event_name: &str) -> &'a Value {
    report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event_name"] == event_name)
        .unwrap_or_else(|| panic!("no {event_name} totals in {report}"))
}

/// The report's rounding: a percentage with one decimal.
fn pct(part: usize, whole: usize) -> f64 {
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

#[tokio::test]
async fn the_report_and_the_dashboard_show_browser_loss_recovered_purchases_coverage_and_missing_orders()
 {
    // Ten orders. The Tag is blocked for the visitors of orders 6..9 (ad blockers, ITP), so the
    // browser reports only 0..5; the webhooks of orders 4, 5, 8 and 9 are dropped and the
    // poller is off; Pinterest refuses order 7's event.
    let ids: Vec<u64> = (0..10).map(|i| 5_300_000_000_000 + i).collect();
    let browser: BTreeSet<u64> = ids[0..6].iter().copied().collect();
    let webhooks: BTreeSet<u64> = [0, 1, 2, 3, 6, 7].iter().map(|i| ids[*i]).collect();
    let refused = ids[7];
    let app = shop_app(|_| {}).await;
    app.sandbox.fault(Faults {
        reject_event_ids: vec![format!("order-{refused}")],
        ..Faults::default()
    });
    for id in &ids {
        // The webhook first, so the browser's copy merges into the shop's or is a duplicate.
        if webhooks.contains(id) {
            webhook(&app, &sale(*id), &format!("wh-{id}")).await;
        }
        if browser.contains(id) {
            collect(&app, browser_purchase(*id)).await;
        }
    }
    // Page visits: four from the browser, two from the shop's own API.
    for i in 0..4 {
        collect(
            &app,
            json!({"event_name": "page_visit", "event_id": format!("pv-{i}"),
                   "event_source_url": "https://shop.example/", "data": {}, "epik": EPIK}),
        )
        .await;
    }
    for i in 0..2 {
        assert_eq!(
            app.post_events(&page_visit(&format!("api-pv-{i}"))).await.0,
            202
        );
    }

    // What the gateway can know: orders reported by a webhook (nothing told it of 8 and 9).
    let orders: Vec<u64> = webhooks.iter().copied().collect();
    let seen = orders.iter().filter(|o| browser.contains(o)).count();
    let delivered: Vec<u64> = orders.iter().copied().filter(|o| *o != refused).collect();
    let recovered = delivered.iter().filter(|o| !browser.contains(o)).count();
    let expected_loss = pct(orders.len() - seen, orders.len());
    let expected_recovered = pct(recovered, orders.len());
    assert_eq!((expected_loss, expected_recovered), (33.3, 16.7));

    wait_for("every event settled in the report", || async {
        let r = report(&app).await;
        r["headline"]["delivered_purchases"] == json!(delivered.len())
            && total(&r, "checkout")["volume"]["dead_lettered"] == json!(1)
            && r["totals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["event_name"] == "page_visit" && t["volume"]["delivered"] == json!(6))
    })
    .await;
    let r = report(&app).await;

    let h = &r["headline"];
    assert_eq!(h["orders"], json!(orders.len()), "{r}");
    assert_eq!(h["browser_loss_percent"], json!(expected_loss));
    assert_eq!(h["recovered_percent"], json!(expected_recovered));
    let s = &r["shopify"]["total"];
    assert_eq!(s["browser_seen"], json!(seen));
    assert_eq!(s["recovered"], json!(recovered));
    let missing: Vec<&str> = r["shopify"]["missing_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(missing, [refused.to_string()]);

    // Coverage per key, computed from what Pinterest was sent: every checkout event_id once
    // (the refused one included), with the keys of the copy that was sent.
    let mut sent: HashMap<String, Value> = HashMap::new();
    for req in app.sandbox.sandbox.requests() {
        for e in req.body["data"].as_array().into_iter().flatten() {
            if e["event_name"] == "checkout" {
                sent.insert(e["event_id"].as_str().unwrap().to_owned(), e.clone());
            }
        }
    }
    // Orders 0..7 reached the gateway one way or another.
    assert_eq!(sent.len(), 8);
    let has = |e: &Value, keys: &[&str], all: bool| {
        let present = |k: &&str| {
            let v = &e["user_data"][*k];
            v.as_array().is_some_and(|a| !a.is_empty()) || v.is_string()
        };
        if all {
            keys.iter().all(present)
        } else {
            keys.iter().any(present)
        }
    };
    let expect = [
        ("em", vec!["em"], false),
        ("ph", vec!["ph"], false),
        ("external_id", vec!["external_id"], false),
        ("click_id", vec!["click_id"], false),
        (
            "ip_ua",
            vec!["client_ip_address", "client_user_agent"],
            true,
        ),
        ("name", vec!["fn", "ln"], false),
        ("address", vec!["ct", "st", "zp"], false),
    ];
    let coverage = &total(&r, "checkout")["match_quality"]["coverage"];
    for (key, fields, all) in &expect {
        let n = sent.values().filter(|e| has(e, fields, *all)).count();
        assert_eq!(
            coverage[*key],
            json!(pct(n, sent.len())),
            "{key}: {coverage}"
        );
    }
    assert!(coverage["em"].as_f64().unwrap() > 0.0 && coverage["click_id"].as_f64().unwrap() > 0.0);

    // Volume by source and de-duplication.
    let pv = &total(&r, "page_visit")["volume"];
    assert_eq!(pv["by_source"]["collector"], json!(4));
    assert_eq!(pv["by_source"]["api"], json!(2));
    let co = &total(&r, "checkout")["volume"];
    assert_eq!(co["received"], json!(8));
    assert_eq!(co["failed"], json!(1));
    assert_eq!(co["duplicates"], json!(4), "browser copies of orders 0..3");
    assert_eq!(co["by_source"]["tag_mirror"], json!(6));
    assert_eq!(co["by_source"]["webhook"], json!(6));
    // Everything was sent within seconds.
    assert!(h["p95_lag_secs"].as_i64().unwrap() <= 300, "{h}");
    assert_eq!(
        total(&r, "checkout")["freshness"]["late_percent"],
        json!(0.0)
    );
    // Without an OAuth token the report says plainly that EQS is off.
    assert_eq!(r["eqs"]["enabled"], json!(false));
    assert!(
        r["eqs"]["note"]
            .as_str()
            .unwrap()
            .contains("pinterest_oauth_token")
    );

    // The dashboard shows the same numbers.
    let (status, html) = app.get("/dashboard?since=1d", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!(
            "id=\"tile-recovered\" data-value=\"{expected_recovered}\""
        )),
        "{html}"
    );
    assert!(html.contains(&format!(
        "id=\"tile-orders\" data-value=\"{}/{}\"",
        orders.len(),
        delivered.len()
    )));
    assert!(html.contains(&format!("<span id=\"missing-orders\">{refused}</span>")));
    assert!(
        !html.contains("<script"),
        "no script needed for the numbers"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing loaded from elsewhere"
    );

    // `pincapi report` reads the same store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(["report", "--since", "1d", "--format", "json"])
        .env("PINCAPI_STORE", format!("sqlite://{}", app.db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cli["headline"]["recovered_percent"],
        json!(expected_recovered)
    );
    assert_eq!(
        cli["shopify"]["missing_orders"][0]["order_id"],
        json!(refused.to_string())
    );

    // /metrics has the figures too, once its background refresh has run.
    let recovered = format!("pincapi_shopify_recovered_percent {expected_recovered}");
    wait_for("the quality figures in /metrics", || async {
        let metrics = app.get("/metrics", None).await.1;
        metrics.contains(&recovered)
            && metrics
                .contains("pincapi_quality_coverage_percent{event_name=\"checkout\",key=\"em\"}")
    })
    .await;
}

/// The same report on a PostgreSQL store, which keeps the aggregates and the order ledger's
/// flags in its own transactions: the figures are those the test computes from what it sent.
#[tokio::test]
async fn the_report_on_a_postgres_store_shows_browser_loss_recovered_purchases_and_missing_orders()
{
    let schema = crate::pg::TestSchema::create().await;
    // Four orders, each with its webhook; the browser reports orders 0 and 1 (after the
    // webhook: duplicates of the shop's copy); Pinterest refuses order 3's event.
    let ids: Vec<u64> = (0..4).map(|i| 5_400_000_000_000 + i).collect();
    let refused = ids[3];
    let url = schema.url.clone();
    let app = shop_app(move |c| c.store = url).await;
    app.sandbox.fault(Faults {
        reject_event_ids: vec![format!("order-{refused}")],
        ..Faults::default()
    });
    for (i, id) in ids.iter().enumerate() {
        webhook(&app, &sale(*id), &format!("wh-{id}")).await;
        if i < 2 {
            collect(&app, browser_purchase(*id)).await;
        }
    }
    wait_for("every purchase settled in the report", || async {
        let r = report(&app).await;
        r["headline"]["delivered_purchases"] == json!(3)
            && total(&r, "checkout")["volume"]["dead_lettered"] == json!(1)
    })
    .await;
    let r = report(&app).await;
    let h = &r["headline"];
    assert_eq!(h["orders"], json!(4), "{r}");
    // Orders 2 and 3 were never seen by the browser; order 2 was delivered all the same.
    assert_eq!(h["browser_loss_percent"], json!(pct(2, 4)));
    assert_eq!(h["recovered_percent"], json!(pct(1, 4)));
    let s = &r["shopify"]["total"];
    assert_eq!(
        (&s["browser_seen"], &s["recovered"]),
        (&json!(2), &json!(1))
    );
    let missing: Vec<&str> = r["shopify"]["missing_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(missing, [refused.to_string()]);
    let co = &total(&r, "checkout")["volume"];
    assert_eq!(co["received"], json!(4), "{co}");
    assert_eq!(co["duplicates"], json!(2));
    assert_eq!(co["failed"], json!(1));
    assert_eq!(co["by_source"]["webhook"], json!(4));
    assert_eq!(co["by_source"]["tag_mirror"], json!(2));

    // `pincapi report` reads the same figures from PostgreSQL.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(["report", "--since", "1d", "--format", "json"])
        .env("PINCAPI_STORE", &schema.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["headline"], r["headline"]);
    app.stop().await;
}

#[tokio::test]
async fn the_report_needs_the_admin_key_and_names_a_bad_since() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/quality", None).await.0, 401);
    assert_eq!(app.get("/api/quality", Some(API_KEY)).await.0, 401);
    let (status, body) = app
        .get("/api/quality?since=yesterday", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("since"), "{body}");
    let (status, body) = app
        .get("/api/quality?since=2026-11-01", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_dashboard_signs_in_with_the_admin_key_into_a_cookie_that_is_not_the_key() {
    let app = spawn_app().await;
    let (status, html) = app.get("/dashboard", None).await;
    assert_eq!(status, 401);
    assert!(html.contains("<form method=\"post\" action=\"/dashboard/login\""));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = http
        .post(app.url("/dashboard/login"))
        .form(&[("key", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = http
        .post(app.url("/dashboard/login"))
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(ADMIN_KEY));
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(app.url("/dashboard"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("id=\"tile-score\""));
    let forged = http
        .get(app.url("/dashboard"))
        .header("cookie", "pincapi_dashboard=00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
}

/// A local HTTP receiver standing in for a Slack incoming webhook.
struct Receiver {
    url: String,
    texts: Arc<Mutex<Vec<String>>>,
    _stop: watch::Sender<bool>,
}

impl Receiver {
    async fn start() -> Receiver {
        let texts = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&texts);
        let router = axum::Router::new().route(
            "/hook",
            post(move |Json(body): Json<Value>| {
                let t = Arc::clone(&t);
                async move {
                    t.lock()
                        .unwrap()
                        .push(body["text"].as_str().unwrap_or_default().to_owned());
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            texts,
            _stop: stop,
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.texts
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.contains(needle))
            .count()
    }
}

fn report_check(app: &TestApp) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(["report", "--check"])
        .env("PINCAPI_STORE", format!("sqlite://{}", app.db.display()))
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_401_from_pinterest_fires_the_auth_alert_once_and_it_clears_when_fixed() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let app = spawn_app_with(SandboxOptions::default(), move |c| {
        c.quality.alert_interval_secs = 1;
        c.quality.webhook_url = Some(url);
    })
    .await;
    app.sandbox.fault(Faults {
        fail_all: Some(FaultStep {
            status: 401,
            ..FaultStep::default()
        }),
        ..Faults::default()
    });
    assert_eq!(app.post_events(&checkout("order-401")).await.0, 202);
    wait_for("the auth alert at the webhook", || async {
        receiver.count("FIRED: auth_failure") == 1
    })
    .await;
    assert!(receiver.count(ACCOUNT) >= 1);
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics.contains(&format!(
            "pincapi_alert_active{{rule=\"auth_failure\",ad_account_id=\"{ACCOUNT}\"}} 1"
        )),
        "{metrics}"
    );
    let r = report(&app).await;
    assert_eq!(r["headline"]["open_problems"], json!(1));
    assert_eq!(r["alerts"][0]["rule"], json!("auth_failure"));
    assert_eq!(report_check(&app).status.code(), Some(1));

    // Fixed: the account's next try is delivered and the alert clears, having fired once.
    app.sandbox.fault(Faults::default());
    app.wait_delivered(1).await;
    wait_for("the alert to clear", || async {
        receiver.count("CLEARED: auth_failure") == 1
    })
    .await;
    assert_eq!(receiver.count("FIRED: auth_failure"), 1);
    assert!(report_check(&app).status.success());
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(metrics.contains(&format!(
        "pincapi_alert_transitions_total{{rule=\"auth_failure\",ad_account_id=\"{ACCOUNT}\",transition=\"cleared\"}} 1"
    )));
}

const OAUTH: &str = "pina_oauth_ads_read";

#[tokio::test]
async fn the_sandboxs_event_quality_score_follows_the_spec_and_the_poller_stores_it() {
    let app = spawn_app_with(
        SandboxOptions {
            oauth_tokens: vec![
                OAuthToken::new(OAUTH, &["ads:read"]),
                OAuthToken::new("pina_no_read", &["ads:write"]),
            ],
            ..SandboxOptions::default()
        },
        |_| {},
    )
    .await;
    for i in 0..3 {
        app.post_events(&checkout(&format!("order-eqs-{i}"))).await;
    }
    app.post_events(&page_visit("pv-eqs")).await;
    app.wait_delivered(4).await;

    let http = reqwest::Client::new();
    let get = |token: &'static str, query: &'static str| {
        let url = format!(
            "{}/ad_accounts/{ACCOUNT}/conversion_eqs{query}",
            app.sandbox.base()
        );
        let http = http.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        get(TOKEN, "?lookback_period=1d").await.0,
        401,
        "not the conversion token"
    );
    assert_eq!(get("pina_no_read", "?lookback_period=1d").await.0, 403);
    assert_eq!(get(OAUTH, "").await.0, 400, "lookback_period is required");
    assert_eq!(get(OAUTH, "?lookback_period=7d").await.0, 400);
    let (status, body) = get(
        OAUTH,
        "?lookback_period=1d&ingestion_source=CONVERSIONS_API",
    )
    .await;
    assert_eq!(status, 200);
    let schema = eqs_schema();
    let errors: Vec<String> = schema.iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{body}");
    let web = &body[0];
    assert_eq!(web["source_platform"], "WEB");
    // Every checkout carried an email and a click id; the page visit neither.
    assert_eq!(
        web["quality_components"]["hashed_email"]["checkout"]["coverage"],
        json!(100.0)
    );
    assert_eq!(
        web["quality_components"]["hashed_email"]["page_visit"]["coverage"],
        json!(0.0)
    );
    assert_eq!(
        web["quality_components"]["order_id"]["checkout"]["coverage"],
        json!(100.0)
    );
    assert_eq!(
        get(OAUTH, "?lookback_period=14d&ingestion_source=TAG")
            .await
            .1,
        json!([])
    );

    // The poller stores what Pinterest answers; the report shows it.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("eqs.db"), Synchronous::Normal).unwrap());
    let poller = EqsPoller {
        store: Arc::clone(&store),
        client: PinterestClient::new(&app.sandbox.base(), std::time::Duration::from_secs(5))
            .unwrap(),
        oauth: {
            let c = pincapi::config::Config {
                pinterest_api_base: app.sandbox.base(),
                pinterest_oauth_token: Secret::new(OAUTH),
                ..Default::default()
            };
            pincapi::pinterest_oauth::OAuthTokens::new(
                &c,
                None,
                pincapi::clock::SystemClock::shared(),
                None,
            )
        },
        metrics: Arc::new(Metrics::default()),
        accounts: vec![ACCOUNT.to_owned()],
        interval: std::time::Duration::from_secs(3600),
    };
    // 1d and 14d of CAPI (one WEB score each); TAG has none.
    assert_eq!(poller.poll_once().await, 2);
    let r = pincapi::quality::report::build(store.as_ref(), 0, 0, true)
        .await
        .unwrap();
    assert_eq!(r.eqs.scores.len(), 2);
    assert!(r.eqs.enabled);
    assert_eq!(r.eqs.scores[0].ingestion_source, "CONVERSIONS_API");
    let polls = poller.metrics.render();
    assert!(
        polls.contains("pincapi_eqs_polls_total{ad_account_id=\"549755885175\",result=\"ok\"} 4"),
        "{polls}"
    );
}

/// The spec's response schema of `conversion_eqs/list`, with its `$ref`s resolved against the
/// spec's components.
fn eqs_schema() -> jsonschema::Validator {
    let spec: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pinterest/pinterest-openapi-v5.json"
    )))
    .unwrap_or_else(|_| panic!("the OpenAPI description"));
    let mut schema = spec["paths"]["/ad_accounts/{ad_account_id}/conversion_eqs"]["get"]
        ["responses"]["200"]["content"]["application/json"]["schema"]
        .clone();
    schema["components"] = spec["components"].clone();
    jsonschema::validator_for(&schema).unwrap()
}

#[tokio::test]
async fn the_dashboard_in_chromium_shows_the_numbers_of_the_api() {
    if std::env::var_os("PINCAPI_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("PINCAPI_SKIP_BROWSER_TESTS is set: skipping a Chromium test");
        return;
    }
    use pincapi::commands::webdriver::{BrowserOptions, Chromedriver};
    let app = shop_app(|_| {}).await;
    for (i, id) in [5_400_000_000_001u64, 5_400_000_000_002, 5_400_000_000_003]
        .iter()
        .enumerate()
    {
        webhook(&app, &sale(*id), &format!("wh-c-{id}")).await;
        if i == 0 {
            collect(&app, browser_purchase(*id)).await;
        }
    }
    app.post_events(&page_visit("pv-chromium")).await;
    wait_for("three delivered purchases", || async {
        report(&app).await["headline"]["delivered_purchases"] == json!(3)
    })
    .await;
    let r = report(&app).await;

    let driver = Chromedriver::start(&BrowserOptions::default())
        .await
        .expect("chromium and chromedriver (apt-get install chromium chromium-driver)");
    let s = driver.session().await.expect("a Chromium session");
    s.goto(&app.url("/dashboard?since=1d")).await.unwrap();
    s.fill("#key", ADMIN_KEY).await.unwrap();
    s.click("#sign-in").await.unwrap();
    let step = std::time::Duration::from_secs(30);
    s.wait_for(
        "the dashboard",
        "document.getElementById('tile-score')",
        step,
    )
    .await
    .unwrap();
    let shown = s
        .execute(
            "const v = id => document.getElementById(id).dataset.value; \
             return {orders: v('tile-orders'), recovered: v('tile-recovered'), \
                     score: v('tile-score'), p95: v('tile-p95'), problems: v('tile-problems')};",
            vec![],
        )
        .await
        .unwrap();
    let h = &r["headline"];
    assert_eq!(
        shown["orders"],
        json!(format!("{}/{}", h["orders"], h["delivered_purchases"]))
    );
    let num = |v: &Value| -> f64 { v.as_str().unwrap().parse().unwrap() };
    assert_eq!(
        num(&shown["recovered"]),
        h["recovered_percent"].as_f64().unwrap()
    );
    assert_eq!(num(&shown["score"]), h["match_score"].as_f64().unwrap());
    assert_eq!(num(&shown["p95"]), h["p95_lag_secs"].as_f64().unwrap());
    assert_eq!(
        num(&shown["problems"]),
        h["open_problems"].as_f64().unwrap()
    );
    // Two of three purchases were recovered by the server.
    assert_eq!(num(&shown["recovered"]), 66.7);

    let png = s.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), png).unwrap();
    s.quit().await;
    driver.stop().await;
}

#[tokio::test]
async fn an_alert_fires_once_per_incident_even_across_a_restart_and_clears_when_fixed() {
    use pincapi::config::DeliveryConfig;
    use pincapi::config::quality::QualityConfig;
    use pincapi::delivery::Delivery;
    use pincapi::quality::alerts::{Alerter, Transition};
    use pincapi::store::{NewEvent, Selection, Settlement, Source};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("a.db"), Synchronous::Normal).unwrap());
    let alerter = || {
        let metrics = Arc::new(Metrics::default());
        let client =
            PinterestClient::new("http://127.0.0.1:9/v5", std::time::Duration::from_secs(1))
                .unwrap();
        let delivery = Arc::new(Delivery::new(
            store.clone() as Arc<dyn Queue>,
            SystemClock::shared(),
            client,
            Arc::clone(&metrics),
            DeliveryConfig::default(),
            7 * 86_400,
            &[second_account(ACCOUNT, TOKEN)],
        ));
        Alerter::new(
            Arc::clone(&store),
            delivery,
            metrics,
            QualityConfig::default(),
            vec![ACCOUNT.to_owned()],
        )
    };
    let first = alerter();
    assert!(first.evaluate_once(1000).await.unwrap().is_empty());
    store
        .enqueue(vec![NewEvent {
            ad_account_id: ACCOUNT.into(),
            event_id: "dead-1".into(),
            event_name: pincapi_core::event::EventName::PageVisit,
            event_time: now(),
            received_at_ms: now() * 1000,
            source: Source::Api,
            match_keys: 16,
            test: false,
            hold_ms: 0,
            payload: "{}".into(),
        }])
        .await
        .unwrap();
    let c = store
        .claim(ACCOUNT, 10, now() * 1000, 60_000)
        .await
        .unwrap();
    store
        .settle(
            c[0].lease_until,
            vec![Settlement::Dead {
                id: c[0].id,
                reason: DeadReason::Refused("bad".into()),
            }],
        )
        .await
        .unwrap();
    let fired = first.evaluate_once(2000).await.unwrap();
    assert!(
        matches!(&fired[..], [Transition::Fired(s)] if s.rule == "dead_letter"),
        "{fired:?}"
    );
    assert!(first.evaluate_once(3000).await.unwrap().is_empty());
    // A new process (a restart) finds the alert already fired.
    let second = alerter();
    assert!(second.evaluate_once(4000).await.unwrap().is_empty());
    store.drop_dead(Selection::All).await.unwrap();
    let cleared = second.evaluate_once(5000).await.unwrap();
    assert!(
        matches!(&cleared[..], [Transition::Cleared(s)] if s.cleared_at_ms == Some(5000) && s.fired_at_ms == 2000),
        "{cleared:?}"
    );
    assert!(second.evaluate_once(6000).await.unwrap().is_empty());
}

// --- The order census ---

/// The gateway with one shop that has Admin API access to `standin` but the poller off,
/// listing two orders a page.
async fn census_app(
    standin: &Standin,
    tweak: impl FnOnce(&mut pincapi::config::Config),
) -> TestApp {
    let base = standin.base();
    shop_app(move |c| {
        c.shopify.shops[0].access_token = Secret::new(SHOPIFY_ADMIN_TOKEN);
        c.shopify.shops[0].admin_api_base = Some(base);
        c.shopify.poller = false;
        c.shopify.poll_page_size = 2;
        tweak(c);
    })
    .await
}

/// A config file for `pincapi report` naming the same shop and Admin API.
fn census_config(dir: &std::path::Path, standin: &Standin) -> std::path::PathBuf {
    let path = dir.join("pincapi.toml");
    std::fs::write(
        &path,
        format!(
            "ad_account_id = \"{ACCOUNT}\"\npinterest_token = \"{TOKEN}\"\n\
             [shopify]\npoller = false\npoll_page_size = 2\n\
             [[shopify.shops]]\ndomain = \"{SHOP}\"\nsecrets = [\"{SECRET}\"]\n\
             access_token = \"{SHOPIFY_ADMIN_TOKEN}\"\nadmin_api_base = \"{}\"\n",
            standin.base()
        ),
    )
    .unwrap();
    path
}

fn missing_ids(report: &Value) -> BTreeSet<String> {
    report["shopify"]["missing_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["order_id"].as_str().unwrap().to_owned())
        .collect()
}

fn outcome_of(report: &Value, order_id: u64) -> &Value {
    let id = order_id.to_string();
    report["shopify"]["missing_orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["order_id"].as_str() == Some(id.as_str()))
        .map_or(&Value::Null, |m| &m["outcome"])
}

#[tokio::test]
async fn with_webhooks_dropped_and_the_poller_off_the_census_lists_every_order_pinterest_never_got()
{
    // Twelve orders in the shop, plus a test order and one cancelled at once (not
    // conversions). The browser reports 0..5; the webhooks of 0..3 and 6..8 arrive, those of
    // 4, 5 and 9..11 are dropped; the poller is off. Pinterest refuses 5 and 7.
    let ids: Vec<u64> = (0..12).map(|i| 5_500_000_000_000 + i).collect();
    let browser: BTreeSet<u64> = ids[0..6].iter().copied().collect();
    let webhooks: BTreeSet<u64> = [0, 1, 2, 3, 6, 7, 8].iter().map(|i| ids[*i]).collect();
    let refused: BTreeSet<u64> = [ids[5], ids[7]].into_iter().collect();
    let mut shop_orders: Vec<Value> = ids.iter().map(|id| sale(*id)).collect();
    let mut test_order = sale(5_500_000_000_098);
    test_order["test"] = json!(true);
    let mut cancelled = sale(5_500_000_000_099);
    cancelled["cancelled_at"] = test_order["created_at"].clone();
    shop_orders.extend([test_order, cancelled]);
    let standin = Standin::start().await;
    for o in &shop_orders {
        standin.add(o);
    }
    let app = census_app(&standin, |_| {}).await;
    app.sandbox.fault(Faults {
        reject_event_ids: refused.iter().map(|id| format!("order-{id}")).collect(),
        ..Faults::default()
    });
    for id in &ids {
        if webhooks.contains(id) {
            webhook(&app, &sale(*id), &format!("wh-{id}")).await;
        }
        if browser.contains(id) {
            collect(&app, browser_purchase(*id)).await;
        }
    }

    // What Pinterest got, from the test's own sets: a purchase reported by someone and not
    // refused.
    let reported: BTreeSet<u64> = webhooks.union(&browser).copied().collect();
    let delivered: BTreeSet<u64> = reported.difference(&refused).copied().collect();
    let never_got: BTreeSet<String> = ids
        .iter()
        .filter(|id| !delivered.contains(id))
        .map(|id| id.to_string())
        .collect();
    let seen = ids.iter().filter(|id| browser.contains(id)).count();
    let recovered = delivered.iter().filter(|id| !browser.contains(id)).count();
    let expected_loss = pct(ids.len() - seen, ids.len());
    let expected_recovered = pct(recovered, ids.len());
    assert_eq!(never_got.len(), 5);
    assert_eq!((expected_loss, expected_recovered), (50.0, 16.7));

    wait_for("every purchase settled", || async {
        let r = report(&app).await;
        r["headline"]["delivered_purchases"] == json!(delivered.len())
            && total(&r, "checkout")["volume"]["dead_lettered"] == json!(refused.len())
    })
    .await;
    // The sandbox agrees with the sets.
    for id in &ids {
        let n = app.sandbox.count_of(&format!("order-{id}"));
        assert_eq!(n, usize::from(delivered.contains(id)), "order {id}");
    }

    let r = report(&app).await;
    let h = &r["headline"];
    assert_eq!(h["orders"], json!(ids.len()), "{r}");
    assert_eq!(h["orders_source"], json!("census"));
    assert_eq!(r["shopify"]["orders_source"], json!("census"));
    assert_eq!(h["browser_loss_percent"], json!(expected_loss));
    assert_eq!(h["recovered_percent"], json!(expected_recovered));
    let s = &r["shopify"]["total"];
    assert_eq!(s["missing"], json!(never_got.len()));
    assert_eq!(s["browser_seen"], json!(seen));
    assert_eq!(missing_ids(&r), never_got);
    for i in [9, 10, 11] {
        assert_eq!(outcome_of(&r, ids[i]), "never_received");
    }
    assert_eq!(outcome_of(&r, ids[5]), "browser_only");
    assert_eq!(outcome_of(&r, ids[7]), "sent");
    let never: &Value = r["shopify"]["missing_orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["outcome"] == "never_received")
        .unwrap();
    assert!(
        never["reason"]
            .as_str()
            .unwrap()
            .contains("pincapi shopify backfill --since"),
        "{never}"
    );
    let census = &r["shopify"]["census"]["shops"][0];
    assert_eq!(census["listed"], json!(shop_orders.len()));
    assert_eq!(census["orders"], json!(ids.len()));
    assert_eq!(census["not_in_ledger"], json!(5), "4, 5, 9, 10, 11");
    assert_eq!(census["never_received"], json!(3));
    assert_eq!(census["truncated"], json!(false));
    assert_eq!(census["pages"], json!(7), "14 orders, two a page");

    // The dashboard shows the same orders and figures.
    let (status, html) = app.get("/dashboard?since=1d", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!(
        "id=\"tile-orders\" data-value=\"{}/{}\"",
        ids.len(),
        delivered.len()
    )));
    assert!(html.contains(&format!(
        "id=\"tile-recovered\" data-value=\"{expected_recovered}\""
    )));
    assert!(html.contains("id=\"orders-source\" data-value=\"census\""));
    let shown = html
        .split("<span id=\"missing-orders\">")
        .nth(1)
        .and_then(|s| s.split("</span>").next())
        .unwrap_or_else(|| panic!("{html}"));
    let shown: BTreeSet<String> = shown.split(", ").map(str::to_owned).collect();
    assert_eq!(shown, never_got);
    for i in [9, 10, 11] {
        assert!(html.contains(&format!(
            "data-order-id=\"{}\" data-outcome=\"never_received\"",
            ids[i]
        )));
    }

    // `pincapi report` runs its own census and lists the same orders (off the runtime's
    // thread, which serves the stand-in).
    let dir = tempfile::tempdir().unwrap();
    let config = census_config(dir.path(), &standin);
    let db = app.db.clone();
    let cli_report = move |args: &'static [&'static str]| {
        let (config, db) = (config.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
                .arg("report")
                .args(args)
                .arg("--config")
                .arg(config)
                .env("PINCAPI_STORE", format!("sqlite://{}", db.display()))
                .output()
                .unwrap()
        })
    };
    let out = cli_report(&["--since", "1d", "--format", "json"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(missing_ids(&cli), never_got, "{cli}");
    assert_eq!(cli["headline"]["orders"], json!(ids.len()));
    assert_eq!(cli["headline"]["orders_source"], json!("census"));
    assert_eq!(
        cli["headline"]["browser_loss_percent"],
        json!(expected_loss)
    );
    assert_eq!(
        cli["headline"]["recovered_percent"],
        json!(expected_recovered)
    );
    let out = cli_report(&["--since", "1d"]).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("orders counted from the census"), "{table}");
    assert!(
        table.contains(&format!("{}: never received", ids[9])),
        "{table}"
    );
}

#[tokio::test]
async fn the_census_only_reads_sends_nothing_is_kept_a_while_and_reports_an_admin_api_error() {
    let ids: Vec<u64> = (0..3).map(|i| 5_600_000_000_000 + i).collect();
    let orders: Vec<Value> = ids.iter().map(|id| sale(*id)).collect();
    let standin = Standin::start().await;
    for o in &orders {
        standin.add(o);
    }
    // A second shop whose token the Admin API refuses.
    let base = standin.base();
    let app = census_app(&standin, move |c| {
        let mut other = ShopConfig::new("refused-census.myshopify.com");
        other.secrets = vec![Secret::new(SECRET)];
        other.access_token = Secret::new("shpat_wrong");
        other.admin_api_base = Some(base);
        c.shopify.shops.push(other);
    })
    .await;

    let r = report(&app).await;
    let expected: BTreeSet<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(missing_ids(&r), expected, "{r}");
    assert_eq!(r["headline"]["orders"], json!(3));
    // The refused shop is a problem in the report, which still answers.
    let problems = r["shopify"]["census"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{r}");
    assert!(
        problems[0]
            .as_str()
            .unwrap()
            .contains("refused-census.myshopify.com")
            && problems[0].as_str().unwrap().contains("401"),
        "{problems:?}"
    );
    assert_eq!(r["headline"]["open_problems"], json!(1));
    let (_, html) = app.get("/dashboard?since=1d", Some(ADMIN_KEY)).await;
    assert!(html.contains("<b>order census</b>"), "{html}");

    // Only the census's listing was asked for (no personal data in it), nothing else.
    let requests = standin.standin.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r.operation == "CensusPage" || r.operation == "unauthorized",
            "{r:?}"
        );
    }
    // Kept: another view within five minutes does not ask the Admin API again.
    let before = standin.standin.requests().len();
    let again = report(&app).await;
    assert_eq!(missing_ids(&again), expected);
    assert_eq!(standin.standin.requests().len(), before);

    // Nothing was stored, sent or moved: no event, no ledger row, no poller checkpoint.
    let rows: i64 = pincapi::store::sqlite::count_states(&app.db)
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rows, 0);
    let (_, ledger) = app.get("/admin/shopify/ledger", Some(ADMIN_KEY)).await;
    let ledger: Value = serde_json::from_str(&ledger).unwrap();
    assert_eq!(ledger["orders"], json!([]));
    let store = SqliteStore::open(&app.db, Synchronous::Normal).unwrap();
    assert_eq!(store.shopify_checkpoint(SHOP).await.unwrap(), None);
    // Pinterest saw only the Setup panel's check of the token: a test call, recorded nowhere.
    let sandbox = app.stop().await;
    assert!(
        sandbox
            .sandbox
            .requests()
            .iter()
            .all(|r| r.query.as_deref() == Some("test=true")),
        "{:?}",
        sandbox.sandbox.requests()
    );
    assert!(sandbox.events().iter().all(|e| e.test));
}
