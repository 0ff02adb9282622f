//! Three `pincapi serve` processes on one PostgreSQL database share the work: a stream of
//! `/v1/events` requests and signed Shopify webhooks spread across them, one instance killed
//! with SIGKILL while a request of its own to Pinterest is in flight, and every event reaches
//! the sandbox exactly once: the survivors take the dead instance's claims over once their
//! lease ends, and never send what another instance has claimed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pincapi::sandbox::Faults;
use pincapi::shopify::webhook::sign;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::pg::TestDatabase;

const SHOP: &str = "pincapi-multi.myshopify.com";
const SECRET: &str = "shpss_multi_instance_secret";
/// The victim's conversion token: the sandbox counts its requests in flight by token.
const VICTIM_TOKEN: &str = "victim-conversion-token";
/// Request timeout and lease as low as `validate()` allows (lease ≥ 2 × timeout + 5 s).
const REQUEST_TIMEOUT_SECS: u64 = 2;
const LEASE_SECS: u64 = 2 * REQUEST_TIMEOUT_SECS + 5;
/// Every request to the sandbox is answered this late (within the request timeout), so each
/// instance spends most of its time with a batch in flight.
const DELAY_MS: u64 = 1500;

const DOCS_ORDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
));

struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(store: &str, api_base: &str, token: &str) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("serve")
        .env_clear()
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env("PINCAPI_STORE", store)
        .env("PINCAPI_POSTGRES__POOL_SIZE", "4")
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_ADMIN_KEY", ADMIN_KEY)
        .env("PINCAPI_PINTEREST_API_BASE", api_base)
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", token)
        .env("PINCAPI_SHOPIFY_WEBHOOK_SECRET", SECRET)
        .env("PINCAPI_SHOPIFY_SHOP_DOMAIN", SHOP)
        // Purchases are sent at once, not held for a browser copy to merge.
        .env("PINCAPI_INGEST__MERGE_WINDOW_SECS", "0")
        .env("PINCAPI_DELIVERY__BATCH_SIZE", "10")
        // One request in flight per instance, so the victim's newest request is its only one.
        .env("PINCAPI_DELIVERY__CONCURRENCY", "1")
        .env("PINCAPI_DELIVERY__RETRY_SCALE", "0.001")
        .env("PINCAPI_DELIVERY__POLL_INTERVAL_MS", "20")
        .env(
            "PINCAPI_DELIVERY__REQUEST_TIMEOUT_SECS",
            REQUEST_TIMEOUT_SECS.to_string(),
        )
        .env("PINCAPI_DELIVERY__LEASE_SECS", LEASE_SECS.to_string())
        .env("PINCAPI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the pincapi binary starts");
    let addr = announced_address(&mut child);
    Gateway { child, addr }
}

/// A paid order as Shopify's `orders/create` webhook carries it.
fn order(id: u64) -> Value {
    let mut o: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let created = time::OffsetDateTime::from_unix_timestamp(now() - 120)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
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

/// Sends one step of the stream to `gw`: five API events, or one order webhook. Returns
/// the event_ids it stored.
async fn send_step(http: &reqwest::Client, gw: &Gateway, step: usize) -> Vec<String> {
    if step % 3 == 2 {
        let id = 7_000_000_000_000 + step as u64;
        let body = serde_json::to_vec(&order(id)).unwrap();
        let resp = http
            .post(format!("{}/webhooks/shopify", gw.addr))
            .header("Content-Type", "application/json")
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Hmac-Sha256", sign(&body, SECRET))
            .header("X-Shopify-Shop-Domain", SHOP)
            .header("X-Shopify-Webhook-Id", format!("multi-{step}"))
            .header("X-Shopify-API-Version", "2026-01")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        vec![format!("order-{id}")]
    } else {
        let ids: Vec<String> = (0..5).map(|i| format!("multi-{step}-{i}")).collect();
        let events: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if i % 2 == 0 {
                    checkout(id)
                } else {
                    page_visit(id)
                }
            })
            .collect();
        let resp = http
            .post(format!("{}/v1/events", gw.addr))
            .bearer_auth(API_KEY)
            .json(&json!({ "data": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["accepted"], 5, "{body}");
        ids
    }
}

/// Like `wait_for`, with room for a lease to run out.
async fn wait_long<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(LEASE_SECS + 60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_gateways_on_one_postgres_deliver_every_event_once_when_one_is_killed() {
    let db = TestDatabase::create().await;
    let sandbox = TestSandbox::start(Default::default()).await;
    sandbox.fault(Faults {
        delay_ms: DELAY_MS,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let a = start_gateway(&db.url, &sandbox.base(), TOKEN);
    let b = start_gateway(&db.url, &sandbox.base(), TOKEN);
    let mut victim = start_gateway(&db.url, &sandbox.base(), VICTIM_TOKEN);

    // The first part of the stream, round-robin over the three.
    let mut ids = Vec::new();
    let mut step = 0;
    while step < 30 {
        for gw in [&a, &b, &victim] {
            ids.extend(send_step(&http, gw, step).await);
            step += 1;
        }
    }
    // Kill the victim while it holds claimed events whose request has not been answered:
    // just after one of its requests arrived, so well inside the sandbox's delay.
    let started = sandbox.sandbox.requests_started(VICTIM_TOKEN);
    wait_for("a new request of the victim in flight", || async {
        sandbox.sandbox.requests_started(VICTIM_TOKEN) > started
            && sandbox.sandbox.in_flight(VICTIM_TOKEN) > 0
    })
    .await;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    // Its connection closed, the sandbox drops the request unfinished: never processed.
    wait_for("the victim's request to be dropped", || async {
        sandbox.sandbox.in_flight(VICTIM_TOKEN) == 0
    })
    .await;

    // The rest of the stream goes to the survivors, now without delay.
    sandbox.fault(Faults::default());
    while step < 45 {
        for gw in [&a, &b] {
            ids.extend(send_step(&http, gw, step).await);
            step += 1;
        }
    }

    let expected = ids.len();
    wait_long("every event at the sandbox", || async {
        sandbox.events().len() >= expected
    })
    .await;
    wait_long("every event settled as delivered", || async {
        db.query_one_i64("SELECT count(*) FROM events WHERE state <> 'delivered'")
            .await
            == 0
    })
    .await;
    assert_eq!(
        db.query_one_i64("SELECT count(*) FROM events").await,
        expected as i64
    );
    let events = sandbox.events();
    assert_eq!(events.len(), expected, "no event was sent twice");
    // The victim's claims were taken over: they went out only once its lease had ended,
    // every other event within seconds of its arrival.
    let taken_over = db
        .query_one_i64(&format!(
            "SELECT count(*) FROM events WHERE sent_at - received_at >= {}",
            LEASE_SECS * 1000
        ))
        .await;
    assert!(
        taken_over > 0,
        "no event was claimed by the killed instance"
    );
    for id in &ids {
        assert_eq!(sandbox.count_of(id), 1, "{id}");
    }
    // The quality aggregates, written by three instances at once in the transactions of the
    // writes they count, count every event once, and its delivery once.
    for column in ["received", "delivered"] {
        assert_eq!(
            db.query_one_i64(&format!(
                "SELECT coalesce(sum({column}), 0)::bigint FROM quality_hours"
            ))
            .await,
            expected as i64,
            "{column}"
        );
    }
    // Both survivors took part, and between them they counted every event they took over
    // from the victim's ended leases (each a possible re-send).
    let mut retaken = 0;
    for gw in [&a, &b] {
        let metrics = http
            .get(format!("{}/metrics", gw.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("pincapi_events_delivered_total{"),
            "{}: {metrics}",
            gw.addr
        );
        retaken += metrics
            .lines()
            .filter(|l| l.starts_with("pincapi_events_retaken_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum::<i64>();
    }
    assert!(
        retaken >= taken_over,
        "{retaken} events counted as retaken, {taken_over} sent after the lease"
    );
}
