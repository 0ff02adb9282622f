//! Back-pressure and retention over real HTTP and the real command line: a full queue is
//! answered 503 with `Retry-After` on every source and nothing accepted is lost; old delivered
//! events are purged.

use std::process::Command;

use pincapi::config::shopify::ShopConfig;
use pincapi::config::{Secret, Synchronous};
use pincapi::sandbox::{FaultStep, Faults, SandboxOptions};
use pincapi::shopify::webhook::sign;
use pincapi::store::sqlite::{SqliteStore, count_states};
use pincapi::store::{NewEvent, Queue, Settlement, Source};
use pincapi_core::event::EventName;
use serde_json::{Value, json};

use crate::helpers::*;

const SHOP: &str = "pincapi-load.myshopify.com";
const SECRET: &str = "shpss_load_webhook_secret";
const DOCS_ORDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
));

/// Shopify's sample order made into a real sale created a minute ago.
fn order(id: u64) -> Vec<u8> {
    let mut o: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let created = time::OffsetDateTime::from_unix_timestamp(now() - 60)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    o["id"] = json!(id);
    o["test"] = json!(false);
    o["cancelled_at"] = Value::Null;
    o["cancel_reason"] = Value::Null;
    o["financial_status"] = json!("paid");
    o["created_at"] = json!(created);
    o["processed_at"] = json!(created);
    serde_json::to_vec(&o).unwrap()
}

/// Sends a signed `orders/create` delivery; returns status, `Retry-After` and body.
async fn webhook(app: &TestApp, body: &[u8], webhook_id: &str) -> (u16, Option<String>, Value) {
    let resp = app
        .http
        .post(app.url("/webhooks/shopify"))
        .header("content-type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", sign(body, SECRET))
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", webhook_id)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

/// A beacon to the collector as tag.js sends it.
async fn beacon(app: &TestApp, event_name: &str, event_id: &str) -> (u16, Option<String>, Value) {
    let body = json!({
        "event_name": event_name,
        "event_id": event_id,
        "event_source_url": "https://shop.example/p/1",
        "data": {"value": "12.00", "currency": "USD", "order_id": "77"},
        "source": "collector"
    });
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

/// `POST /v1/events` (or another ingest path); returns status, `Retry-After` and body.
async fn ingest(app: &TestApp, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let resp = app
        .http
        .post(app.url(path))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

async fn answer(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

async fn ingest_state(app: &TestApp) -> String {
    let (_, ready) = app.get("/readyz", None).await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    ready["ingest"].as_str().unwrap_or_default().to_owned()
}

fn stored(app: &TestApp) -> i64 {
    count_states(&app.db).unwrap().iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn a_full_queue_is_answered_503_with_retry_after_and_ingest_resumes_once_it_drains() {
    let mut shop = ShopConfig::new(SHOP);
    shop.secrets = vec![Secret::new(SECRET)];
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.ingest.max_queue_depth = 3;
        c.ingest.merge_window_secs = 0;
        c.ingest.browser_purchase_hold_secs = 0;
        c.shopify.shops = vec![shop];
    })
    .await;
    // Pinterest throttles every request: nothing is delivered, and nothing is given up on
    // (a 429 does not use up attempts), so the queue only grows.
    app.sandbox.fault(Faults {
        fail_all: Some(FaultStep {
            status: 429,
            retry_after: Some(1),
            ..FaultStep::default()
        }),
        ..Faults::default()
    });
    let visits: Vec<Value> = (0..3).map(|i| page_visit(&format!("pv-{i}"))).collect();
    let (s, _, body) = ingest(&app, "/v1/events", &json!({ "data": visits })).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["accepted"], 3);
    wait_for("the gateway to shed load", || async {
        ingest_state(&app).await == "shedding"
    })
    .await;

    // Every source is refused, with the reason and when to come back.
    let (s, retry, body) = ingest(&app, "/v1/events", &checkout("o-shed")).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("30"));
    assert_eq!(body["error"]["code"], "shedding");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ingest.max_queue_depth (3)"), "{message}");
    let path = format!("/v1/ad_accounts/{ACCOUNT}/events");
    let (s, retry, _) = ingest(&app, &path, &checkout("o-shed-2")).await;
    assert_eq!((s, retry.as_deref()), (503, Some("30")));
    let order_body = order(6_100_000_000_001);
    let (s, retry, body) = webhook(&app, &order_body, "wh-shed-1").await;
    assert_eq!((s, retry.as_deref()), (503, Some("30")), "{body}");
    assert_eq!(body["error"]["code"], "shedding");
    // The collector refuses what the page's Tag also reports, but keeps purchases.
    let (s, retry, body) = beacon(&app, "page_visit", "pv-browser").await;
    assert_eq!((s, retry.as_deref()), (503, Some("30")), "{body}");
    let (s, _, body) = beacon(&app, "checkout", "order-77").await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(stored(&app), 4);

    let (_, health) = app.get("/healthz", None).await;
    assert!(health.contains("\"ingest\":\"shedding\""), "{health}");
    let (_, metrics) = app.get("/metrics", None).await;
    for series in [
        "pincapi_ingest_shed_total{route=\"/v1/events\"} 1",
        "pincapi_ingest_shed_total{route=\"/v1/ad_accounts/{ad_account_id}/events\"} 1",
        "pincapi_ingest_shed_total{route=\"/webhooks/shopify\"} 1",
        "pincapi_ingest_shed_total{route=\"/collect\"} 1",
        "pincapi_queue_limit 3",
        "pincapi_ingest_shedding 1",
    ] {
        assert!(metrics.contains(series), "missing {series}\n{metrics}");
    }

    // Pinterest recovers: the queue drains and the same requests are taken.
    app.sandbox.fault(Faults::default());
    app.wait_delivered(4).await;
    wait_for("the gateway to accept again", || async {
        ingest_state(&app).await == "accepting"
    })
    .await;
    let (s, _, body) = ingest(&app, "/v1/events", &checkout("o-shed")).await;
    assert_eq!(s, 202, "{body}");
    // Shopify's retry of the refused delivery: same body, same webhook id.
    let (s, _, body) = webhook(&app, &order_body, "wh-shed-1").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    app.wait_delivered(6).await;
    for id in [
        "pv-0",
        "pv-1",
        "pv-2",
        "order-77",
        "o-shed",
        "order-6100000000001",
    ] {
        assert_eq!(app.sandbox.count_of(id), 1, "{id}");
    }
    assert_eq!(app.sandbox.count_of("pv-browser"), 0);
}

fn stored_event(id: &str) -> NewEvent {
    NewEvent {
        ad_account_id: ACCOUNT.into(),
        event_id: id.into(),
        event_name: EventName::PageVisit,
        event_time: 1_700_000_000,
        received_at_ms: 1_700_000_000_000,
        source: Source::Api,
        match_keys: 0,
        test: false,
        hold_ms: 0,
        payload: format!(r#"{{"event_id":"{id}"}}"#),
    }
}

#[tokio::test]
async fn pincapi_purge_deletes_delivered_events_past_retention_and_dry_run_only_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    {
        let o = SqliteStore::open(&db, Synchronous::Normal).unwrap();
        o.enqueue(vec![stored_event("old"), stored_event("waiting")])
            .await
            .unwrap();
        let c = o.claim(ACCOUNT, 1, 1_700_000_000_000, 1000).await.unwrap();
        o.settle(
            c[0].lease_until,
            vec![Settlement::Delivered {
                id: c[0].id,
                sent_at_ms: 1_700_000_000_500,
                warning: None,
            }],
        )
        .await
        .unwrap();
    }
    let store = format!("sqlite://{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(args)
            .env_clear()
            .env("PINCAPI_STORE", &store)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = run(&["purge", "--dry-run"]);
    assert!(dry.starts_with("1 delivered or dropped events"), "{dry}");
    assert_eq!(
        count_states(&db).unwrap(),
        [("delivered".to_owned(), 1), ("pending".to_owned(), 1)]
    );
    let done = run(&["purge"]);
    assert!(done.starts_with("1 delivered or dropped events"), "{done}");
    assert!(done.contains("deleted"), "{done}");
    assert_eq!(count_states(&db).unwrap(), [("pending".to_owned(), 1)]);
}

#[test]
fn the_sustained_bench_reports_the_floor_and_each_store_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("sizing.md");
    let store = format!("sqlite://{}", dir.path().join("bench.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(["bench", "--duration", "2s", "--concurrency", "4"])
        .args(["--store", &store, "--store", "mysql://localhost/pincapi"])
        .arg("--output")
        .arg(&table)
        .env_clear()
        .output()
        .unwrap();
    // A store that cannot be opened is reported in the table and fails the run.
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("legs not measured"), "{stderr}");
    let text = std::fs::read_to_string(&table).unwrap();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let floor = row("floor: minimal axum server");
    let sqlite = row("gateway on SQLite");
    assert_eq!(floor.len(), 13, "{text}");
    assert_eq!(sqlite.len(), 13, "{text}");
    // Everything sent was accepted, and the store grew.
    let ingested: f64 = sqlite[1].parse().unwrap();
    assert!(ingested > 0.0, "{text}");
    assert_eq!(sqlite[12], "0", "errors\n{text}");
    let growth: f64 = sqlite[11].parse().unwrap();
    assert!(growth > 0.0, "{text}");
    let unknown = row("gateway on an unknown store");
    assert!(unknown[1].starts_with("not measured: store:"), "{text}");
}

/// A storm while 2,000 events flow in: 429s (with and without `Retry-After`), 500s, 503s and
/// replies slower than the request timeout, mixed. Every event reaches Pinterest, none is
/// dead, none is left, and the delivered metric adds up to the events.
#[tokio::test]
async fn a_storm_of_429s_errors_and_slow_replies_under_load_is_exactly_accounted() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.delivery.request_timeout_secs = 1;
        c.delivery.lease_secs = 2 * c.delivery.request_timeout_secs + 5;
        c.delivery.batch_size = 100;
    })
    .await;
    let step = |status: u16, retry_after: Option<u64>, delay_ms: Option<u64>| FaultStep {
        status,
        retry_after,
        delay_ms,
        ..FaultStep::default()
    };
    let mut script = Vec::new();
    for _ in 0..4 {
        script.extend([
            step(429, None, None),
            step(429, Some(1), None),
            step(500, None, None),
            step(503, None, None),
            // Slower than the request timeout: the gateway gives up on it, while the sandbox
            // (as Pinterest may) still records it; the retry carries the same event_ids.
            step(200, None, Some(1500)),
        ]);
    }
    app.sandbox.fault(Faults {
        script,
        ..Faults::default()
    });
    let ids: Vec<String> = (0..2000).map(|i| format!("storm-{i}")).collect();
    for chunk in ids.chunks(100) {
        let body = json!({ "data": chunk.iter().map(|id| checkout(id)).collect::<Vec<_>>() });
        let (status, answer) = app.post_events(&body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 100);
    }
    let received = |sb: &TestSandbox| -> std::collections::HashSet<String> {
        sb.events()
            .iter()
            .filter_map(|e| e.event["event_id"].as_str().map(str::to_owned))
            .collect()
    };
    let db = app.db.clone();
    wait_for_within(
        "every event of the storm delivered",
        std::time::Duration::from_secs(60),
        || {
            let db = db.clone();
            async move { count_states(&db).unwrap() == vec![("delivered".to_owned(), 2000)] }
        },
    )
    .await;
    fn sum(metrics: &str, name: &str) -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
    // A round counts its events after it has settled them: the last count may trail the
    // states for a moment.
    let a = &app;
    wait_for("the last round counted", || async {
        let (_, m) = a.get("/metrics", None).await;
        sum(&m, "pincapi_events_delivered_total{") >= 2000.0
    })
    .await;
    let (_, metrics) = app.get("/metrics", None).await;
    let total = |name: &str| sum(&metrics, name);
    assert_eq!(
        total("pincapi_events_delivered_total{"),
        2000.0,
        "{metrics}"
    );
    assert!(total("pincapi_events_retried_total{") > 0.0, "{metrics}");
    assert_eq!(
        total("pincapi_events_dead_lettered_total{"),
        0.0,
        "{metrics}"
    );
    let sandbox = app.stop().await;
    let got = received(&sandbox);
    assert_eq!(got.len(), 2000);
    assert!(ids.iter().all(|id| got.contains(id)));
}
