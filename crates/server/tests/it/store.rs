//! The store contract: what every store backend must do, written once against the trait.
//! Every contract function runs on SQLite and on PostgreSQL (a schema of its own per test).

use std::sync::Arc;

use pincapi::config::PostgresConfig;
use pincapi::config::Synchronous;
use pincapi::store::postgres::PostgresStore;
use pincapi::store::sqlite::SqliteStore;
use pincapi::store::{
    AlertState, AudienceObject, AudienceStore, DeadReason, Enqueued, EqsScore, IdKind,
    ListOperation, NewEvent, OrderStatus, QualityStore, Queue, Selection, Settlement, SharedStore,
    ShopifyAdjustment, ShopifyOrder, ShopifyRecord, ShopifyStore, ShopifyStored, Source, Store,
    TestOrderCopy, WebhookReceipt,
};
use pincapi_core::event::EventName;
use pincapi_core::event::MatchKeys;

use crate::helpers::wait_for;
use crate::pg::TestSchema;

pub(crate) fn sqlite() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("o.db"), Synchronous::Normal).unwrap();
    (Arc::new(store), dir)
}

pub(crate) async fn postgres() -> (SharedStore, TestSchema) {
    let schema = TestSchema::create().await;
    let store = PostgresStore::connect(&schema.url, &PostgresConfig::default())
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL store opens: {e}"));
    (Arc::new(store), schema)
}

pub(crate) fn event(id: &str, received: i64) -> NewEvent {
    NewEvent {
        ad_account_id: "1".into(),
        event_id: id.into(),
        event_name: EventName::PageVisit,
        event_time: 1_764_000_000,
        received_at_ms: received,
        source: Source::Api,
        match_keys: 16,
        test: false,
        hold_ms: 0,
        payload: format!(
            r#"{{"event_name":"page_visit","action_source":"web","event_time":1764000000,"event_id":"{id}","user_data":{{"client_ip_address":"192.0.2.1","client_user_agent":"UA"}}}}"#
        ),
    }
}

async fn stores_once_per_account_and_event_id(o: SharedStore) {
    let r = o
        .enqueue(vec![event("a", 0), event("a", 0), event("b", 0)])
        .await
        .unwrap();
    // The second "a" merges into the first (nothing new to add, still one event).
    assert_eq!(
        r,
        vec![Enqueued::Accepted, Enqueued::Merged, Enqueued::Accepted]
    );
    let mut other = event("a", 0);
    other.ad_account_id = "2".into();
    assert_eq!(
        o.enqueue(vec![other]).await.unwrap(),
        vec![Enqueued::Accepted]
    );
    let depth: u64 = o.depth().await.unwrap().iter().map(|d| d.pending).sum();
    assert_eq!(depth, 3);
}

async fn a_claim_leases_events_until_settled(o: SharedStore) {
    o.enqueue(vec![event("a", 0), event("b", 0), event("c", 10)])
        .await
        .unwrap();
    let first = o.claim("1", 2, 100, 1000).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Leased events are not claimed again; the third one is.
    let second = o.claim("1", 10, 100, 1000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event_id, "c");
    assert!(o.claim("1", 10, 200, 1000).await.unwrap().is_empty());
    // A repeat while claimed is a plain duplicate: it may already be on its way.
    assert_eq!(
        o.enqueue(vec![event("a", 0)]).await.unwrap(),
        vec![Enqueued::Duplicate]
    );
    // Both claims were made at 100 with a 1000 ms lease.
    let applied = o
        .settle(
            1100,
            vec![
                Settlement::Delivered {
                    id: first[0].id,
                    sent_at_ms: 150,
                    warning: None,
                },
                Settlement::Retry {
                    id: first[1].id,
                    next_attempt_at_ms: 5000,
                    error: "503".into(),
                    counted: true,
                },
                Settlement::Dead {
                    id: second[0].id,
                    reason: DeadReason::Refused("bad".into()),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, 3);
    assert_eq!(o.next_due("1").await.unwrap(), Some(5000));
    assert!(o.claim("1", 10, 4999, 1000).await.unwrap().is_empty());
    let retry = o.claim("1", 10, 5000, 1000).await.unwrap();
    assert_eq!(retry[0].event_id, "b");
    assert_eq!(retry[0].attempts, 1);
    let dead = o.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "Pinterest: bad");
}

async fn an_expired_lease_is_claimable_again_and_release_ends_leases(o: SharedStore) {
    o.enqueue(vec![event("a", 0)]).await.unwrap();
    assert_eq!(o.claim("1", 10, 100, 1000).await.unwrap().len(), 1);
    assert_eq!(o.claim("1", 10, 1100, 1000).await.unwrap().len(), 1);
    assert_eq!(o.release_leases(1200).await.unwrap(), 1);
    assert_eq!(o.claim("1", 10, 1200, 1000).await.unwrap().len(), 1);
}

async fn held_events_wait_and_repeats_merge_into_them(o: SharedStore) {
    let mut held = event("order-1", 1000);
    held.hold_ms = 60_000;
    held.event_name = EventName::Checkout;
    o.enqueue(vec![held]).await.unwrap();
    assert!(o.claim("1", 10, 2000, 1000).await.unwrap().is_empty());
    let mut browser = event("order-1", 2000);
    browser.source = Source::Collector;
    browser.payload = browser.payload.replace(
        "\"client_user_agent\":\"UA\"}",
        "\"client_user_agent\":\"UA\",\"click_id\":\"epik-1\"}",
    );
    assert_eq!(
        o.enqueue(vec![browser]).await.unwrap(),
        vec![Enqueued::Merged]
    );
    let claimed = o.claim("1", 10, 61_000, 1000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        claimed[0].payload.contains("epik-1"),
        "{}",
        claimed[0].payload
    );
}

async fn dead_letters_can_be_retried_and_dropped(o: SharedStore) {
    o.enqueue(vec![event("a", 0), event("b", 0)]).await.unwrap();
    let c = o.claim("1", 10, 0, 1000).await.unwrap();
    o.settle(
        c[0].lease_until,
        c.iter()
            .map(|e| Settlement::Dead {
                id: e.id,
                reason: DeadReason::GaveUp {
                    attempts: 1,
                    last_error: "x".into(),
                },
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        o.retry_dead(Selection::Ids(vec![c[0].id]), 10)
            .await
            .unwrap(),
        1
    );
    let again = o.claim("1", 10, 10, 1000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);
    assert_eq!(o.drop_dead(Selection::All).await.unwrap(), 1);
    assert!(o.dead_letters(10).await.unwrap().is_empty());
    // A dropped event still counts for de-duplication.
    assert_eq!(
        o.enqueue(vec![event("b", 0)]).await.unwrap(),
        vec![Enqueued::Duplicate]
    );
}

async fn an_outcome_under_an_ended_lease_is_not_recorded(o: SharedStore) {
    o.enqueue(vec![event("a", 0)]).await.unwrap();
    let first = o.claim("1", 10, 0, 1000).await.unwrap();
    // The lease ran out and another worker claimed the event.
    let second = o.claim("1", 10, 1000, 1000).await.unwrap();
    assert_eq!(second.len(), 1);
    let late = o
        .settle(
            first[0].lease_until,
            vec![Settlement::Dead {
                id: first[0].id,
                reason: DeadReason::TooOld { days: 7 },
            }],
        )
        .await
        .unwrap();
    assert_eq!(late, 0);
    assert!(o.dead_letters(10).await.unwrap().is_empty());
    let on_time = o
        .settle(
            second[0].lease_until,
            vec![Settlement::Delivered {
                id: second[0].id,
                sent_at_ms: 1500,
                warning: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(on_time, 1);
}

async fn a_large_batch_with_repeats_is_stored_once_per_event_id(o: SharedStore) {
    let mut batch: Vec<NewEvent> = (0..1000).map(|i| event(&format!("e{i}"), 0)).collect();
    // Repeats inside the batch and of an event stored before.
    o.enqueue(vec![event("e999", 0)]).await.unwrap();
    batch[10] = event("e3", 0);
    let r = o.enqueue(batch).await.unwrap();
    assert_eq!(r.len(), 1000);
    assert_eq!(r[3], Enqueued::Accepted);
    assert_eq!(r[10], Enqueued::Merged);
    assert_eq!(r[999], Enqueued::Merged);
    assert_eq!(
        r.iter().filter(|e| **e == Enqueued::Accepted).count(),
        998,
        "{r:?}"
    );
    let depth: u64 = o.depth().await.unwrap().iter().map(|d| d.pending).sum();
    assert_eq!(depth, 999);
    let claimed = o.claim("1", 1000, 0, 1000).await.unwrap();
    assert_eq!(claimed.len(), 999);
    // Oldest first, and each payload is its own event's.
    assert!(claimed.windows(2).all(|w| w[0].id < w[1].id));
    assert!(claimed.iter().all(|c| {
        c.payload
            .contains(&format!("\"event_id\":\"{}\"", c.event_id))
    }));
}

async fn concurrent_enqueues_of_one_event_store_it_once(o: SharedStore) {
    // Eight writers (as from eight gateway instances) enqueue overlapping batches at once,
    // in different orders.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let o = Arc::clone(&o);
        tasks.push(tokio::spawn(async move {
            let mut ids: Vec<usize> = (0..50).collect();
            if w % 2 == 1 {
                ids.reverse();
            }
            let batch = ids.iter().map(|i| event(&format!("c{i}"), 0)).collect();
            o.enqueue(batch).await.unwrap()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t
            .await
            .unwrap()
            .iter()
            .filter(|e| **e == Enqueued::Accepted)
            .count();
    }
    assert_eq!(accepted, 50);
    let claimed = o.claim("1", 1000, 0, 1000).await.unwrap();
    assert_eq!(claimed.len(), 50);
}

async fn concurrent_claims_take_disjoint_events(o: SharedStore) {
    let batch: Vec<NewEvent> = (0..300).map(|i| event(&format!("d{i}"), 0)).collect();
    o.enqueue(batch).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let o = Arc::clone(&o);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let c = o.claim("1", 7, 100, 60_000).await.unwrap();
                if c.is_empty() {
                    return mine;
                }
                mine.extend(c.into_iter().map(|e| e.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(total, 300, "every event claimed");
    assert_eq!(all.len(), 300, "no event claimed twice");
}

async fn the_shops_record_completes_a_held_browser_purchase_at_once(o: SharedStore) {
    let mut browser = event("order-7", 1000);
    browser.event_name = EventName::Checkout;
    browser.source = Source::Collector;
    browser.hold_ms = 600_000;
    o.enqueue(vec![browser]).await.unwrap();
    assert!(o.claim("1", 10, 5000, 1000).await.unwrap().is_empty());
    let mut shop = event("order-7", 5000);
    shop.event_name = EventName::Checkout;
    shop.source = Source::Webhook;
    shop.hold_ms = 60_000;
    shop.payload = shop.payload.replace(
        "}}",
        "},\"custom_data\":{\"currency\":\"USD\",\"value\":\"10.00\"}}",
    );
    assert_eq!(o.enqueue(vec![shop]).await.unwrap(), vec![Enqueued::Merged]);
    // Due at the shop's arrival, not at the end of either hold.
    assert_eq!(o.next_due("1").await.unwrap(), Some(5000));
    let claimed = o.claim("1", 10, 5000, 1000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        claimed[0].payload.contains("10.00"),
        "{}",
        claimed[0].payload
    );
}

fn webhook(shop: &str, webhook_id: &str, order_id: &str, received: i64) -> ShopifyRecord {
    let mut e = event(&format!("order-{order_id}"), received);
    e.event_name = EventName::Checkout;
    e.source = Source::Webhook;
    ShopifyRecord {
        shop: shop.into(),
        webhook: Some(WebhookReceipt {
            webhook_id: webhook_id.into(),
            topic: "orders/create".into(),
            answer: "accepted".into(),
        }),
        event: Some(e),
        order: Some(ShopifyOrder {
            order_id: order_id.into(),
            ad_account_id: "1".into(),
            created_at: 1_764_000_000,
            test: false,
            value: Some("10.00".into()),
            currency: Some("USD".into()),
            source_name: Some("web".into()),
            outcome: OrderStatus::Sent,
            reason: None,
            event_id: Some(format!("order-{order_id}")),
            source: Source::Webhook,
        }),
        adjustment: None,
        test_order: None,
        received_at_ms: received,
    }
}

async fn shopify_deliveries_are_stored_once_per_webhook_id(o: SharedStore) {
    let r = o
        .record_shopify(vec![webhook("a.myshopify.com", "w1", "1", 1000)])
        .await
        .unwrap();
    assert_eq!(r, vec![ShopifyStored::Stored(Some(Enqueued::Accepted))]);
    // Shopify's retry of the same delivery stores nothing, on the same or another shop's id.
    let r = o
        .record_shopify(vec![
            webhook("a.myshopify.com", "w1", "1", 2000),
            webhook("b.myshopify.com", "w1", "2", 2000),
        ])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            ShopifyStored::DuplicateWebhook,
            ShopifyStored::Stored(Some(Enqueued::Accepted))
        ]
    );
    // The same delivery from two instances at once: stored once.
    let (x, y) = tokio::join!(
        o.record_shopify(vec![webhook("a.myshopify.com", "w2", "3", 3000)]),
        o.record_shopify(vec![webhook("a.myshopify.com", "w2", "3", 3000)]),
    );
    let mut both = vec![x.unwrap()[0], y.unwrap()[0]];
    both.sort_by_key(|s| matches!(s, ShopifyStored::DuplicateWebhook));
    assert_eq!(
        both,
        vec![
            ShopifyStored::Stored(Some(Enqueued::Accepted)),
            ShopifyStored::DuplicateWebhook
        ]
    );
    // Forgotten deliveries are accepted again (the event itself is still stored once).
    assert_eq!(o.prune_webhook_receipts(2500).await.unwrap(), 2);
    let r = o
        .record_shopify(vec![webhook("a.myshopify.com", "w1", "1", 4000)])
        .await
        .unwrap();
    assert_eq!(r, vec![ShopifyStored::Stored(Some(Enqueued::Merged))]);
}

async fn the_order_ledger_keeps_sent_orders_and_adjustments_once(o: SharedStore) {
    o.record_shopify(vec![webhook("a.myshopify.com", "w1", "1", 1000)])
        .await
        .unwrap();
    // The poller sees it later as skipped: `sent` stays, its source is added.
    let mut polled = webhook("a.myshopify.com", "-", "1", 2000);
    polled.webhook = None;
    polled.event = None;
    if let Some(order) = polled.order.as_mut() {
        order.outcome = OrderStatus::Skipped;
        order.reason = Some("no match key".into());
        order.source = Source::Poller;
        order.value = Some("99.00".into());
    }
    o.record_shopify(vec![polled]).await.unwrap();
    let refund = ShopifyAdjustment {
        order_id: "1".into(),
        kind: "refunded".into(),
        at: 1_764_000_100,
        amount: Some("4.00".into()),
        currency: Some("USD".into()),
        reason: None,
        test: false,
    };
    for webhook_id in ["r1", "r2"] {
        o.record_shopify(vec![ShopifyRecord {
            shop: "a.myshopify.com".into(),
            webhook: Some(WebhookReceipt {
                webhook_id: webhook_id.into(),
                topic: "refunds/create".into(),
                answer: "recorded".into(),
            }),
            event: None,
            order: None,
            adjustment: Some(refund.clone()),
            test_order: None,
            received_at_ms: 3000,
        }])
        .await
        .unwrap();
    }
    o.record_shopify(vec![webhook("b.myshopify.com", "w9", "9", 1000)])
        .await
        .unwrap();
    let ledger = o
        .shopify_ledger(Some("a.myshopify.com".into()), 100)
        .await
        .unwrap();
    assert_eq!(ledger.orders.len(), 1);
    let row = &ledger.orders[0];
    assert_eq!(row.order.outcome, OrderStatus::Sent);
    assert_eq!(row.order.value.as_deref(), Some("10.00"));
    assert_eq!(row.sources, vec![Source::Webhook, Source::Poller]);
    assert_eq!(ledger.adjustments.len(), 1, "the same refund counts once");
    assert_eq!(
        ledger.adjustments[0].adjustment.amount.as_deref(),
        Some("4.00")
    );
    let all = o.shopify_ledger(None, 100).await.unwrap();
    assert_eq!(all.orders.len(), 2);
}

async fn a_test_orders_browser_copy_is_dropped_or_flagged(o: SharedStore) {
    let mut copies = Vec::new();
    for id in ["order-1", "order-2", "order-3"] {
        let mut e = event(id, 0);
        e.event_name = EventName::Checkout;
        e.source = Source::Collector;
        e.hold_ms = 600_000;
        copies.push(e);
    }
    let mut api = event("order-4", 0);
    api.event_name = EventName::Checkout;
    copies.push(api);
    o.enqueue(copies).await.unwrap();
    let test_order = |event_id: &str, send_as_test: bool| ShopifyRecord {
        shop: "a.myshopify.com".into(),
        webhook: None,
        event: None,
        order: None,
        adjustment: None,
        test_order: Some(TestOrderCopy {
            ad_account_id: "1".into(),
            event_id: event_id.into(),
            send_as_test,
        }),
        received_at_ms: 1000,
    };
    o.record_shopify(vec![
        test_order("order-1", false),
        test_order("order-2", true),
        test_order("order-4", false),
    ])
    .await
    .unwrap();
    let claimed = o.claim("1", 10, 600_000, 1000).await.unwrap();
    let seen: Vec<(&str, bool)> = claimed
        .iter()
        .map(|c| (c.event_id.as_str(), c.test))
        .collect();
    // order-1 dropped; order-2 flagged; order-3 untouched; order-4 (not from the browser)
    // kept as it was.
    assert_eq!(
        seen,
        vec![("order-2", true), ("order-3", false), ("order-4", false)]
    );
    // A dropped copy still counts for de-duplication.
    assert_eq!(
        o.enqueue(vec![event("order-1", 0)]).await.unwrap(),
        vec![Enqueued::Duplicate]
    );
}

async fn shopify_checkpoints_only_move_forward(o: SharedStore) {
    assert_eq!(o.shopify_checkpoint("a.myshopify.com").await.unwrap(), None);
    o.advance_shopify_checkpoint("a.myshopify.com", 100, 1)
        .await
        .unwrap();
    o.advance_shopify_checkpoint("a.myshopify.com", 50, 2)
        .await
        .unwrap();
    assert_eq!(
        o.shopify_checkpoint("a.myshopify.com").await.unwrap(),
        Some(100)
    );
    o.advance_shopify_checkpoint("a.myshopify.com", 200, 3)
        .await
        .unwrap();
    assert_eq!(
        o.shopify_checkpoint("a.myshopify.com").await.unwrap(),
        Some(200)
    );
    assert_eq!(o.shopify_checkpoint("b.myshopify.com").await.unwrap(), None);
}

async fn the_poller_lock_is_granted(o: SharedStore) {
    let lock = o.try_lock_shopify_poller("a.myshopify.com").await.unwrap();
    assert!(lock.is_some());
    drop(lock);
    assert!(
        o.try_lock_shopify_poller("a.myshopify.com")
            .await
            .unwrap()
            .is_some()
    );
}

/// On a shared store the poller lock is exclusive across instances, and ends with its holder.
#[tokio::test]
async fn postgres_the_poller_lock_is_held_by_one_instance_at_a_time() {
    let (first, _schema) = postgres().await;
    let second = PostgresStore::connect(&_schema.url, &PostgresConfig::default())
        .await
        .unwrap();
    let held = first
        .try_lock_shopify_poller("a.myshopify.com")
        .await
        .unwrap();
    assert!(held.is_some());
    assert!(
        second
            .try_lock_shopify_poller("a.myshopify.com")
            .await
            .unwrap()
            .is_none()
    );
    // Another shop is independent.
    assert!(
        second
            .try_lock_shopify_poller("b.myshopify.com")
            .await
            .unwrap()
            .is_some()
    );
    drop(held);
    wait_for("the lock to be free once its holder lets go", || async {
        second
            .try_lock_shopify_poller("a.myshopify.com")
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

async fn the_audience_sync_lock_is_granted(o: SharedStore) {
    let lock = o.try_lock_audience_sync("1").await.unwrap();
    assert!(lock.is_some());
    drop(lock);
    assert!(o.try_lock_audience_sync("1").await.unwrap().is_some());
}

/// On a shared store one run at a time syncs an ad account's audiences, whichever instance
/// it is on; the lock is apart from the poller's and ends with its holder.
#[tokio::test]
async fn postgres_the_audience_sync_lock_is_held_by_one_instance_at_a_time() {
    let (first, _schema) = postgres().await;
    let second = PostgresStore::connect(&_schema.url, &PostgresConfig::default())
        .await
        .unwrap();
    let held = first.try_lock_audience_sync("1").await.unwrap();
    assert!(held.is_some());
    assert!(second.try_lock_audience_sync("1").await.unwrap().is_none());
    // The same instance asking again (a second run on it) is refused as well.
    assert!(first.try_lock_audience_sync("1").await.unwrap().is_none());
    // Another ad account, and the poller lock of a shop, are independent.
    assert!(second.try_lock_audience_sync("2").await.unwrap().is_some());
    assert!(second.try_lock_shopify_poller("1").await.unwrap().is_some());
    drop(held);
    wait_for("the lock to be free once its holder lets go", || async {
        second.try_lock_audience_sync("1").await.unwrap().is_some()
    })
    .await;
}

/// Several instances starting at once migrate the schema once.
#[tokio::test]
async fn postgres_instances_starting_at_once_migrate_once() {
    let schema = TestSchema::create().await;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            tokio::spawn(
                async move { PostgresStore::connect(&url, &PostgresConfig::default()).await },
            )
        })
        .collect();
    let mut stores = Vec::new();
    for h in handles {
        stores.push(h.await.unwrap());
    }
    for o in &stores {
        let o = o.as_ref().unwrap();
        assert_eq!(
            i64::from(o.schema_version()),
            i64::from(pincapi::store::postgres::MIGRATIONS.last().unwrap().version)
        );
    }
}

/// `sslmode=require` speaks TLS and checks the server's certificate: the local server's
/// self-signed one is refused with a certificate error, not silently used in plain text.
#[tokio::test]
async fn postgres_sslmode_require_verifies_the_server_certificate() {
    let url = format!(
        "{}{}sslmode=require",
        crate::pg::base_url(),
        if crate::pg::base_url().contains('?') {
            '&'
        } else {
            '?'
        }
    );
    let settings = PostgresConfig {
        connect_timeout_secs: 5,
        ..PostgresConfig::default()
    };
    let err = PostgresStore::connect(&url, &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

// --- Quality ---

/// The quality row of hour 0 (every event of these tests is received in the first hour).
async fn hour_zero(o: &SharedStore, event_name: &str) -> pincapi::store::QualityCounts {
    let hours = o.quality_hours(0).await.unwrap();
    let rows: Vec<_> = hours
        .iter()
        .filter(|h| h.event_name == event_name)
        .collect();
    assert_eq!(rows.len(), 1, "{hours:?}");
    assert_eq!(rows[0].hour, 0);
    assert_eq!(rows[0].ad_account_id, "1");
    rows[0].counts.clone()
}

fn key_index(bit: u32) -> usize {
    MatchKeys::NAMES
        .iter()
        .position(|(b, _)| *b == bit)
        .unwrap()
}

fn source_index(s: Source) -> usize {
    Source::ALL.iter().position(|x| *x == s).unwrap()
}

async fn quality_counts_follow_receipts_repeats_and_settlements(o: SharedStore) {
    // "a" from the API (IP + user agent), then the browser's copy with a click id merges in.
    let mut a_browser = event("a", 2000);
    a_browser.source = Source::Collector;
    a_browser.match_keys = MatchKeys::IP_UA | MatchKeys::CLICK_ID;
    a_browser.payload = a_browser.payload.replace(
        "\"client_user_agent\":\"UA\"}",
        "\"client_user_agent\":\"UA\",\"click_id\":\"epik-1\"}",
    );
    o.enqueue(vec![event("a", 1000), event("b", 1000), a_browser])
        .await
        .unwrap();
    let c = hour_zero(&o, "page_visit").await;
    assert_eq!((c.received, c.duplicates, c.merged), (2, 1, 1));
    assert_eq!(c.seen[source_index(Source::Api)], 2);
    assert_eq!(c.seen[source_index(Source::Collector)], 1);
    assert_eq!(c.keys[key_index(MatchKeys::IP_UA)], 2);
    assert_eq!(c.keys[key_index(MatchKeys::CLICK_ID)], 1);
    assert_eq!(c.keys[key_index(MatchKeys::EM)], 0);

    // event_time is 1_764_000_000: sent 90 s later, and 2 h later.
    let t = 1_764_000_000_000;
    let first = o.claim("1", 10, t, 1000).await.unwrap();
    let (a, b) = (&first[0], &first[1]);
    o.settle(
        first[0].lease_until,
        vec![
            Settlement::Delivered {
                id: a.id,
                sent_at_ms: t + 90_000,
                warning: Some("Deprecated field".into()),
            },
            Settlement::Retry {
                id: b.id,
                next_attempt_at_ms: t + 5000,
                error: "HTTP 503".into(),
                counted: true,
            },
        ],
    )
    .await
    .unwrap();
    let again = o.claim("1", 10, t + 5000, 1000).await.unwrap();
    o.settle(
        again[0].lease_until,
        vec![Settlement::Retry {
            id: b.id,
            next_attempt_at_ms: t + 7_200_000,
            error: "rate limited".into(),
            counted: false,
        }],
    )
    .await
    .unwrap();
    let last = o.claim("1", 10, t + 7_200_000, 1000).await.unwrap();
    o.settle(
        last[0].lease_until,
        vec![Settlement::Dead {
            id: b.id,
            reason: DeadReason::Refused("bad event".into()),
        }],
    )
    .await
    .unwrap();
    // A settlement under an ended lease counts nothing.
    o.settle(
        first[0].lease_until,
        vec![Settlement::Delivered {
            id: b.id,
            sent_at_ms: t,
            warning: None,
        }],
    )
    .await
    .unwrap();

    let c = hour_zero(&o, "page_visit").await;
    assert_eq!((c.delivered, c.failed, c.dead), (1, 1, 1));
    assert_eq!((c.retried, c.waits, c.warned, c.late), (1, 1, 1, 0));
    let bucket = pincapi_core::quality::lag_bucket(90);
    assert_eq!(c.lag[bucket], 1);
    assert_eq!(c.lag.iter().sum::<i64>(), 1);
    assert_eq!(c.lag_max, 90);

    let messages = o.quality_messages(0).await.unwrap();
    let find = |kind: &str| {
        messages
            .iter()
            .find(|m| m.kind == kind)
            .map(|m| (m.message.clone(), m.count, m.day))
    };
    assert_eq!(find("warning"), Some(("Deprecated field".into(), 1, 0)));
    assert_eq!(find("retry"), Some(("HTTP 503".into(), 1, 0)));
    assert_eq!(find("wait"), Some(("rate limited".into(), 1, 0)));
    assert_eq!(
        find("dead_letter"),
        Some(("Pinterest: bad event".into(), 1, 0))
    );
    // Hours before the one asked for are left out.
    assert!(o.quality_hours(3600).await.unwrap().is_empty());
}

fn order(order_id: &str, created_at: i64, outcome: OrderStatus, test: bool) -> ShopifyRecord {
    let event_id = format!("order-{order_id}");
    let mut e = event(&event_id, 1000);
    e.event_name = EventName::Checkout;
    e.source = Source::Webhook;
    ShopifyRecord {
        shop: "s.myshopify.com".into(),
        webhook: None,
        event: (outcome == OrderStatus::Sent).then_some(e),
        order: Some(ShopifyOrder {
            order_id: order_id.into(),
            ad_account_id: "1".into(),
            created_at,
            test,
            value: Some("10.00".into()),
            currency: Some("USD".into()),
            source_name: Some("web".into()),
            outcome,
            reason: (outcome == OrderStatus::Skipped).then(|| "no match key".to_owned()),
            event_id: Some(event_id),
            source: Source::Webhook,
        }),
        adjustment: None,
        test_order: None,
        received_at_ms: 1000,
    }
}

async fn the_shopify_truth_counts_orders_the_browser_saw_and_purchases_delivered(o: SharedStore) {
    let day = 1_764_028_800; // a UTC midnight
    // Order 1: the browser reported it before the webhook; order 2: only the webhook; order 3:
    // skipped (no match key) and never reported; order 4: a test order; order 5: the next day,
    // the browser's copy after the webhook.
    let mut browser_1 = event("order-1", 500);
    browser_1.event_name = EventName::Checkout;
    browser_1.source = Source::TagMirror;
    o.enqueue(vec![browser_1]).await.unwrap();
    o.record_shopify(vec![
        order("1", day + 10, OrderStatus::Sent, false),
        order("2", day + 20, OrderStatus::Sent, false),
        order("3", day + 30, OrderStatus::Skipped, false),
        order("4", day + 40, OrderStatus::Ignored, true),
        order("5", day + 86_400 + 10, OrderStatus::Sent, false),
    ])
    .await
    .unwrap();
    let mut browser_5 = event("order-5", 2000);
    browser_5.event_name = EventName::Checkout;
    browser_5.source = Source::Collector;
    o.enqueue(vec![browser_5]).await.unwrap();

    // Deliver orders 1 and 2 (order 5 waits).
    let claimed = o.claim("1", 10, 10_000, 1000).await.unwrap();
    let settle: Vec<Settlement> = claimed
        .iter()
        .filter(|c| c.event_id == "order-1" || c.event_id == "order-2")
        .map(|c| Settlement::Delivered {
            id: c.id,
            sent_at_ms: 10_000,
            warning: None,
        })
        .collect();
    assert_eq!(settle.len(), 2);
    o.settle(claimed[0].lease_until, settle).await.unwrap();

    let truth = o.shopify_truth(day, i64::MAX, 10, None).await.unwrap();
    assert_eq!(truth.days.len(), 2, "{truth:?}");
    let d = &truth.days[0];
    assert_eq!(d.day, day);
    assert_eq!(
        (d.orders, d.delivered, d.browser_seen, d.recovered),
        (3, 2, 1, 1)
    );
    assert_eq!(d.skipped, vec![("no match key".to_owned(), 1)]);
    let d = &truth.days[1];
    assert_eq!(
        (d.orders, d.delivered, d.browser_seen, d.recovered),
        (1, 0, 1, 0)
    );
    let missing: Vec<&str> = truth.missing.iter().map(|m| m.order_id.as_str()).collect();
    assert_eq!(missing, ["3", "5"]);
    assert_eq!(truth.missing[0].outcome, "skipped");
    assert_eq!(
        o.shopify_truth(day, i64::MAX, 1, None)
            .await
            .unwrap()
            .missing
            .len(),
        1,
        "the list of missing orders is bounded"
    );
    let next_day = o
        .shopify_truth(day + 86_400, i64::MAX, 10, None)
        .await
        .unwrap();
    assert_eq!(next_day.days.len(), 1);
    // Orders created before `until` only.
    let early = o.shopify_truth(day, day + 25, 10, None).await.unwrap();
    assert_eq!(early.days[0].orders, 2);
    assert!(early.missing.is_empty());
}

async fn alert_states_and_event_quality_scores_are_kept(o: SharedStore) {
    assert!(o.alert_states().await.unwrap().is_empty());
    let mut fired = AlertState {
        rule: "auth_failure".into(),
        ad_account_id: "1".into(),
        active: true,
        detail: "HTTP 401".into(),
        fired_at_ms: 1000,
        cleared_at_ms: None,
    };
    o.save_alert_state(fired.clone()).await.unwrap();
    assert_eq!(o.alert_states().await.unwrap(), vec![fired.clone()]);
    fired.active = false;
    fired.cleared_at_ms = Some(2000);
    o.save_alert_state(fired.clone()).await.unwrap();
    assert_eq!(o.alert_states().await.unwrap(), vec![fired]);

    let score = |status: &str, at: i64| EqsScore {
        ad_account_id: "1".into(),
        ingestion_source: "CONVERSIONS_API".into(),
        lookback_period: "1d".into(),
        source_platform: "WEB".into(),
        overall_status: status.into(),
        quality_components: serde_json::json!({"hashed_email": {"checkout": {"coverage": 80.0}}}),
        polled_at_ms: at,
    };
    o.save_eqs(vec![score("FAIR", 1)]).await.unwrap();
    o.save_eqs(vec![score("GOOD", 2)]).await.unwrap();
    assert_eq!(o.eqs_scores().await.unwrap(), vec![score("GOOD", 2)]);
}

// --- Audiences ---

const H: &str = "abababababababababababababababababababababababababababababababab";
const M: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

/// An event with an email (or MAID) hash in its match keys.
fn member_event(id: &str, name: &str, received: i64, user: &str, custom: &str) -> NewEvent {
    let mut e = event(id, received);
    e.event_name = EventName::parse(name).unwrap();
    e.payload = format!(
        r#"{{"event_name":"{name}","action_source":"web","event_time":{},"event_id":"{id}","user_data":{{{user}}},"custom_data":{{{custom}}}}}"#,
        1_764_000_000 + received
    );
    e
}

async fn scan_all(o: &SharedStore, limit: usize) -> Vec<pincapi::store::StoredEvent> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = o.audience_events(0, after, limit).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.received_at_ms, last.id));
        all.extend(page);
    }
    all
}

fn facts(events: &[pincapi::store::StoredEvent]) -> Vec<pincapi::store::EventFacts> {
    events
        .iter()
        .filter_map(|e| pincapi_core::audience::facts_from_payload(&e.ad_account_id, &e.payload))
        .collect()
}

async fn audience_facts_are_idempotent_upserts_behind_a_checkpoint(o: SharedStore) {
    let mut test_event = member_event("t", "checkout", 5, &format!(r#""em":["{H}"]"#), "");
    test_event.test = true;
    o.enqueue(vec![
        member_event(
            "order-1",
            "checkout",
            10,
            &format!(r#""em":["{H}"]"#),
            r#""value":"72.39""#,
        ),
        member_event(
            "pv",
            "page_visit",
            20,
            &format!(r#""em":["{H}"]"#),
            r#""content_ids":["8001"]"#,
        ),
        member_event(
            "atc",
            "add_to_cart",
            30,
            &format!(r#""hashed_maids":["{M}"]"#),
            "",
        ),
        test_event,
    ])
    .await
    .unwrap();
    // Paged by (received_at, id); test events are not people's activity.
    let events = scan_all(&o, 2).await;
    assert_eq!(
        events.iter().map(|e| e.received_at_ms).collect::<Vec<_>>(),
        [10, 20, 30]
    );
    assert_eq!(o.audience_checkpoint().await.unwrap(), None);
    let f = facts(&events);
    o.record_audience_facts(f.clone(), 30).await.unwrap();
    let once = o.audience_people("1").await.unwrap();
    // Reading the same events again (an overlap window) changes nothing, and the
    // checkpoint never goes back.
    o.record_audience_facts(f, 5).await.unwrap();
    assert_eq!(o.audience_people("1").await.unwrap(), once);
    assert_eq!(o.audience_checkpoint().await.unwrap(), Some(30));
    assert_eq!(o.audience_events(31, None, 10).await.unwrap().len(), 0);
    assert_eq!(once.len(), 2);
    let h = once.iter().find(|p| p.hash == H).unwrap();
    assert_eq!(h.last_visit_at, Some(1_764_000_020));
    assert_eq!(h.last_purchase_at, Some(1_764_000_010));
    assert_eq!(h.last_cart_at, None);
    assert_eq!(h.views, [("8001".to_owned(), 1_764_000_020)]);
    assert_eq!(h.purchases.len(), 1);
    assert_eq!(h.purchases[0].value.as_deref(), Some("72.39"));
    assert!(!h.purchases[0].refunded);
    let m = once.iter().find(|p| p.hash == M).unwrap();
    assert_eq!(m.kind, Some(IdKind::Maid));
    assert_eq!(m.last_cart_at, Some(1_764_000_030));
    assert!(o.audience_people("2").await.unwrap().is_empty());
}

async fn a_shopify_refund_marks_its_purchase_refunded(o: SharedStore) {
    o.enqueue(vec![member_event(
        "order-77",
        "checkout",
        10,
        &format!(r#""em":["{H}"]"#),
        r#""value":"10.00""#,
    )])
    .await
    .unwrap();
    o.record_audience_facts(facts(&scan_all(&o, 10).await), 10)
        .await
        .unwrap();
    o.record_shopify(vec![ShopifyRecord {
        shop: "s.myshopify.com".into(),
        webhook: None,
        event: None,
        order: None,
        adjustment: Some(ShopifyAdjustment {
            order_id: "77".into(),
            kind: "refunded".into(),
            at: 1_764_000_100,
            amount: Some("10.00".into()),
            currency: Some("USD".into()),
            reason: None,
            test: false,
        }),
        test_order: None,
        received_at_ms: 100,
    }])
    .await
    .unwrap();
    let people = o.audience_people("1").await.unwrap();
    assert!(people[0].purchases[0].refunded);
}

async fn a_forgotten_member_is_suppressed_and_scrubbed_from_events(o: SharedStore) {
    o.enqueue(vec![
        member_event(
            "with-ip",
            "checkout",
            10,
            &format!(r#""em":["{H}"],"client_ip_address":"192.0.2.1","client_user_agent":"UA""#),
            "",
        ),
        member_event(
            "only-email",
            "page_visit",
            20,
            &format!(r#""em":["{H}"]"#),
            "",
        ),
        member_event(
            "other",
            "page_visit",
            30,
            &format!(r#""hashed_maids":["{M}"]"#),
            "",
        ),
    ])
    .await
    .unwrap();
    let f = facts(&scan_all(&o, 10).await);
    o.record_audience_facts(f.clone(), 30).await.unwrap();
    let report = o.forget_member(IdKind::Email, H, 1000).await.unwrap();
    assert_eq!(report.members, 1);
    assert_eq!(report.events_scrubbed, 2);
    // Left without any match key Pinterest requires, the unsent event is dropped.
    assert_eq!(report.events_dropped, 1);
    let events = scan_all(&o, 10).await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| !e.payload.contains(H)));
    // Re-reading old facts (an overlap window) does not bring the member back.
    o.record_audience_facts(f, 30).await.unwrap();
    let people = o.audience_people("1").await.unwrap();
    assert_eq!(people.len(), 1);
    assert_eq!(people[0].hash, M);
    let depth: u64 = o.depth().await.unwrap().iter().map(|d| d.pending).sum();
    assert_eq!(depth, 2);
}

/// Several instances scanning the same events at once (in any order) all succeed and agree.
async fn concurrent_scans_of_the_same_events_agree(o: SharedStore) {
    let hash = |i: usize| format!("{i:064x}");
    let events: Vec<NewEvent> = (0..60)
        .map(|i| {
            let (name, custom) = match i % 3 {
                0 => (
                    "page_visit",
                    format!(r#""content_ids":["p{}","p{}"]"#, i % 4, i % 5),
                ),
                1 => ("add_to_cart", String::new()),
                _ => ("checkout", format!(r#""value":"{i}.00""#)),
            };
            member_event(
                &format!("e{i}"),
                name,
                i as i64 + 1,
                &format!(
                    r#""em":["{}"],"hashed_maids":["{}"]"#,
                    hash(i % 7),
                    hash(100 + i % 5)
                ),
                &custom,
            )
        })
        .collect();
    o.enqueue(events).await.unwrap();
    let f = facts(&scan_all(&o, 100).await);
    assert_eq!(f.len(), 60);
    let runs: Vec<_> = (0..4)
        .map(|n| {
            let o = o.clone();
            let mut f = f.clone();
            if n % 2 == 1 {
                f.reverse();
            }
            f.rotate_left(n * 7);
            tokio::spawn(async move { o.record_audience_facts(f, 60).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let people = o.audience_people("1").await.unwrap();
    assert_eq!(people.len(), 7 + 5);
    o.record_audience_facts(f, 60).await.unwrap();
    assert_eq!(o.audience_people("1").await.unwrap(), people);
    assert_eq!(o.audience_checkpoint().await.unwrap(), Some(60));
}

async fn sync_state_keeps_ids_statuses_and_synced_members(o: SharedStore) {
    let object = |object: &str, id: &str, status: Option<&str>| AudienceObject {
        ad_account_id: "1".into(),
        segment: "purchasers".into(),
        object: object.into(),
        pinterest_id: id.into(),
        status: status.map(str::to_owned),
        updated_at_ms: 5,
    };
    o.save_audience_object(object("list:email", "11", None))
        .await
        .unwrap();
    o.save_audience_object(object("audience:email", "12", Some("TOO_SMALL")))
        .await
        .unwrap();
    // Without a new status the last known one stays.
    o.save_audience_object(object("audience:email", "12", None))
        .await
        .unwrap();
    let objects = o.audience_objects("1").await.unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].object, "audience:email");
    assert_eq!(objects[0].status.as_deref(), Some("TOO_SMALL"));
    assert!(o.audience_objects("2").await.unwrap().is_empty());

    let hashes = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    o.apply_list_update(
        "1",
        "purchasers",
        IdKind::Email,
        ListOperation::Add,
        hashes(&["c", "a", "b"]),
    )
    .await
    .unwrap();
    // Applying the same update twice (a resumed run) is harmless.
    o.apply_list_update(
        "1",
        "purchasers",
        IdKind::Email,
        ListOperation::Add,
        hashes(&["a"]),
    )
    .await
    .unwrap();
    o.apply_list_update(
        "1",
        "purchasers",
        IdKind::Email,
        ListOperation::Remove,
        hashes(&["b"]),
    )
    .await
    .unwrap();
    assert_eq!(
        o.synced_members("1", "purchasers", IdKind::Email)
            .await
            .unwrap(),
        ["a", "c"]
    );
    assert!(
        o.synced_members("1", "purchasers", IdKind::Maid)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        o.synced_members("1", "visitors", IdKind::Email)
            .await
            .unwrap()
            .is_empty()
    );
    // A list gone at Pinterest is forgotten with its synced members; its audience stays
    // until it is dropped on its own.
    o.drop_audience_object("1", "purchasers", "list:email")
        .await
        .unwrap();
    assert!(
        o.synced_members("1", "purchasers", IdKind::Email)
            .await
            .unwrap()
            .is_empty()
    );
    let objects = o.audience_objects("1").await.unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].object, "audience:email");
}

// --- Census ---

async fn the_census_lookup_reports_ledger_purchase_state_and_browser_sight(o: SharedStore) {
    let mut browser = event("order-1", 500);
    browser.event_name = EventName::Checkout;
    browser.source = Source::Collector;
    o.enqueue(vec![browser]).await.unwrap();
    o.record_shopify(vec![webhook("a.myshopify.com", "w2", "2", 1000)])
        .await
        .unwrap();
    let ids = ["3", "2", "1"].map(String::from).to_vec();
    let found = o
        .census_lookup("a.myshopify.com".into(), "1".into(), ids)
        .await
        .unwrap();
    let seen: Vec<_> = found
        .iter()
        .map(|c| {
            (
                c.order_id.as_str(),
                c.in_ledger,
                c.purchase_state.as_deref(),
                c.browser_seen,
            )
        })
        .collect();
    // In the order asked; another shop's ledger or account's store does not count.
    assert_eq!(
        seen,
        [
            ("3", false, None, false),
            ("2", true, Some("pending"), false),
            ("1", false, Some("pending"), true),
        ]
    );
    let other = o
        .census_lookup("b.myshopify.com".into(), "2".into(), vec!["2".into()])
        .await
        .unwrap();
    assert_eq!(
        (other[0].in_ledger, other[0].purchase_state.is_none()),
        (false, true)
    );
}

// --- Retention and back-pressure ---

async fn pending_count_counts_every_event_not_yet_finished(o: SharedStore) {
    assert_eq!(o.pending_count().await.unwrap(), 0);
    let mut held = event("held", 0);
    held.hold_ms = 60_000;
    o.enqueue(vec![event("a", 0), event("b", 0), held])
        .await
        .unwrap();
    // Due, leased and held events all wait to be delivered.
    let claimed = o.claim("1", 10, 100, 1000).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(o.pending_count().await.unwrap(), 3);
    o.settle(
        claimed[0].lease_until,
        vec![
            Settlement::Delivered {
                id: claimed[0].id,
                sent_at_ms: 150,
                warning: None,
            },
            Settlement::Dead {
                id: claimed[1].id,
                reason: DeadReason::GaveUp {
                    attempts: 1,
                    last_error: "x".into(),
                },
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.pending_count().await.unwrap(), 1);
}

async fn purge_deletes_only_finished_events_past_the_cutoff(o: SharedStore) {
    let ids = ["old-sent", "new-sent", "dead", "waiting", "dropped"];
    o.enqueue(ids.iter().map(|id| event(id, 0)).collect())
        .await
        .unwrap();
    let c = o.claim("1", 10, 100, 1000).await.unwrap();
    let id_of = |name: &str| c.iter().find(|e| e.event_id == name).unwrap().id;
    o.settle(
        1100,
        vec![
            Settlement::Delivered {
                id: id_of("old-sent"),
                sent_at_ms: 150,
                warning: None,
            },
            Settlement::Delivered {
                id: id_of("new-sent"),
                sent_at_ms: 5000,
                warning: None,
            },
            Settlement::Dead {
                id: id_of("dead"),
                reason: DeadReason::GaveUp {
                    attempts: 1,
                    last_error: "x".into(),
                },
            },
            Settlement::Retry {
                id: id_of("waiting"),
                next_attempt_at_ms: 10,
                error: "503".into(),
                counted: true,
            },
            Settlement::Dead {
                id: id_of("dropped"),
                reason: DeadReason::GaveUp {
                    attempts: 1,
                    last_error: "y".into(),
                },
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        o.drop_dead(Selection::Ids(vec![id_of("dropped")]))
            .await
            .unwrap(),
        1
    );
    // Its last schedule (the lease end, 1100) is what a drop is aged by.
    assert_eq!(o.count_purgeable(1100).await.unwrap(), 1);
    assert_eq!(o.count_purgeable(2000).await.unwrap(), 2);
    // Bounded batches: one at a time, then the rest, then nothing.
    assert_eq!(o.purge_settled(2000, 1).await.unwrap(), 1);
    assert_eq!(o.purge_settled(2000, 10).await.unwrap(), 1);
    assert_eq!(o.purge_settled(2000, 10).await.unwrap(), 0);
    assert_eq!(o.count_purgeable(2000).await.unwrap(), 0);
    // Pending and dead events stay whatever their age; so does what was sent after the cutoff.
    assert_eq!(o.pending_count().await.unwrap(), 1);
    let dead = o.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "dead");
    assert_eq!(o.count_purgeable(i64::MAX).await.unwrap(), 1);
    assert_eq!(
        o.enqueue(vec![event("new-sent", 0), event("waiting", 0)])
            .await
            .unwrap(),
        vec![Enqueued::Duplicate, Enqueued::Merged]
    );
    // A purged event is forgotten, payload and all: its event_id is new again.
    assert_eq!(
        o.enqueue(vec![event("old-sent", 0)]).await.unwrap(),
        vec![Enqueued::Accepted]
    );
    let again = o.claim("1", 10, 20_000, 1000).await.unwrap();
    let fresh = again.iter().find(|e| e.event_id == "old-sent").unwrap();
    assert!(fresh.payload.contains("\"old-sent\""), "{}", fresh.payload);
    assert!(o.storage_bytes().await.unwrap() > 0);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite_contract {
            $(
                #[tokio::test]
                async fn $name() {
                    let (o, _dir) = super::sqlite();
                    super::$name(o).await;
                }
            )*
        }
        mod postgres_contract {
            $(
                #[tokio::test]
                async fn $name() {
                    let (o, _schema) = super::postgres().await;
                    super::$name(o).await;
                }
            )*
        }
    };
}

contract!(
    stores_once_per_account_and_event_id,
    a_claim_leases_events_until_settled,
    an_expired_lease_is_claimable_again_and_release_ends_leases,
    held_events_wait_and_repeats_merge_into_them,
    dead_letters_can_be_retried_and_dropped,
    an_outcome_under_an_ended_lease_is_not_recorded,
    a_large_batch_with_repeats_is_stored_once_per_event_id,
    concurrent_enqueues_of_one_event_store_it_once,
    concurrent_claims_take_disjoint_events,
    the_shops_record_completes_a_held_browser_purchase_at_once,
    shopify_deliveries_are_stored_once_per_webhook_id,
    the_order_ledger_keeps_sent_orders_and_adjustments_once,
    a_test_orders_browser_copy_is_dropped_or_flagged,
    shopify_checkpoints_only_move_forward,
    the_poller_lock_is_granted,
    quality_counts_follow_receipts_repeats_and_settlements,
    the_shopify_truth_counts_orders_the_browser_saw_and_purchases_delivered,
    alert_states_and_event_quality_scores_are_kept,
    audience_facts_are_idempotent_upserts_behind_a_checkpoint,
    a_shopify_refund_marks_its_purchase_refunded,
    a_forgotten_member_is_suppressed_and_scrubbed_from_events,
    sync_state_keeps_ids_statuses_and_synced_members,
    the_census_lookup_reports_ledger_purchase_state_and_browser_sight,
    pending_count_counts_every_event_not_yet_finished,
    purge_deletes_only_finished_events_past_the_cutoff,
    concurrent_scans_of_the_same_events_agree,
    the_audience_sync_lock_is_granted,
);

#[tokio::test]
async fn a_committed_enqueue_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    {
        let o = SqliteStore::open(&path, Synchronous::Full).unwrap();
        o.enqueue(vec![event("a", 0)]).await.unwrap();
    }
    let o = SqliteStore::open(&path, Synchronous::Full).unwrap();
    assert_eq!(o.claim("1", 10, 0, 1000).await.unwrap().len(), 1);
}

/// The store state the upgrade tests start from: orders 1 and 2 of `day`, the browser's
/// copy of order 1's purchase, and order 2's purchase delivered.
async fn two_orders_one_seen_by_the_browser_one_delivered(o: &dyn Store, day: i64) {
    let mut browser = event("order-1", 500);
    browser.event_name = EventName::Checkout;
    browser.source = Source::Collector;
    o.enqueue(vec![browser]).await.unwrap();
    o.record_shopify(vec![
        order("1", day, OrderStatus::Sent, false),
        order("2", day, OrderStatus::Sent, false),
    ])
    .await
    .unwrap();
    let c = o.claim("1", 10, 10_000, 1000).await.unwrap();
    let delivered = c.iter().find(|e| e.event_id == "order-2").unwrap();
    o.settle(
        delivered.lease_until,
        vec![Settlement::Delivered {
            id: delivered.id,
            sent_at_ms: 10_000,
            warning: None,
        }],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn upgrading_to_schema_3_fills_the_ledger_flags_from_the_stored_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    let day = 1_764_028_800;
    {
        let o = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        two_orders_one_seen_by_the_browser_one_delivered(&o, day).await;
    }
    // Take the store back to schema 2, as a build without quality and audiences left it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE quality_hours; DROP TABLE quality_messages; DROP TABLE alert_states;
         DROP TABLE eqs_scores; DROP INDEX shopify_orders_order;
         ALTER TABLE events DROP COLUMN repeats;
         ALTER TABLE shopify_orders DROP COLUMN browser_seen;
         ALTER TABLE shopify_orders DROP COLUMN delivered;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    let o = SqliteStore::open(&path, Synchronous::Normal).unwrap();
    let truth = o.shopify_truth(day, i64::MAX, 10, None).await.unwrap();
    let d = &truth.days[0];
    assert_eq!(
        (d.orders, d.delivered, d.browser_seen, d.recovered),
        (2, 1, 1, 1)
    );
    assert!(o.quality_hours(0).await.unwrap().is_empty());
}

/// PostgreSQL's migration 3 fills the ledger flags from the stored events, as SQLite's does.
#[tokio::test]
async fn postgres_upgrading_to_schema_3_fills_the_ledger_flags_from_the_stored_events() {
    let (o, schema) = postgres().await;
    let day = 1_764_028_800;
    two_orders_one_seen_by_the_browser_one_delivered(o.as_ref(), day).await;
    drop(o);
    // Take the store back to schema 2, as a build without quality and audiences left it.
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE quality_hours; DROP TABLE quality_messages; DROP TABLE alert_states;
             DROP TABLE eqs_scores; DROP INDEX shopify_orders_order;
             ALTER TABLE events DROP COLUMN repeats;
             ALTER TABLE shopify_orders DROP COLUMN browser_seen;
             ALTER TABLE shopify_orders DROP COLUMN delivered;
             DROP TABLE audience_people; DROP TABLE audience_views;
             DROP TABLE audience_purchases; DROP TABLE audience_suppressed;
             DROP TABLE audience_checkpoints; DROP TABLE audience_objects;
             DROP TABLE audience_members; DROP INDEX events_received;
             DELETE FROM schema_migrations WHERE version >= 3;",
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    let o = PostgresStore::connect(&schema.url, &PostgresConfig::default())
        .await
        .unwrap();
    // Upgraded through 3 (quality), 4 (audiences), 5 (quality shards) and on to the latest.
    assert_eq!(
        o.schema_version(),
        pincapi::store::postgres::MIGRATIONS.last().unwrap().version
    );
    let truth = o.shopify_truth(day, i64::MAX, 10, None).await.unwrap();
    let d = &truth.days[0];
    assert_eq!(
        (d.orders, d.delivered, d.browser_seen, d.recovered),
        (2, 1, 1, 1)
    );
    assert!(o.quality_hours(0).await.unwrap().is_empty());
}
