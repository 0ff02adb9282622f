//! The outbox contract: what every store backend must do, written once against the trait.
//! Runs on SQLite; a PostgreSQL backend runs the same functions.

use std::sync::Arc;

use pincapi::config::Synchronous;
use pincapi::outbox::sqlite::SqliteOutbox;
use pincapi::outbox::{
    AudienceObject, Enqueued, IdKind, ListOperation, NewEvent, Outbox, Selection, Settlement,
    SharedOutbox, ShopifyAdjustment, ShopifyRecord, Source,
};
use pincapi_core::event::EventName;

fn sqlite() -> (SharedOutbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = SqliteOutbox::open(&dir.path().join("o.db"), Synchronous::Normal).unwrap();
    (Arc::new(outbox), dir)
}

fn event(id: &str, received: i64) -> NewEvent {
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

async fn stores_once_per_account_and_event_id(o: SharedOutbox) {
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

async fn a_claim_leases_events_until_settled(o: SharedOutbox) {
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
                    reason: "Pinterest: bad".into(),
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

async fn an_expired_lease_is_claimable_again_and_release_ends_leases(o: SharedOutbox) {
    o.enqueue(vec![event("a", 0)]).await.unwrap();
    assert_eq!(o.claim("1", 10, 100, 1000).await.unwrap().len(), 1);
    assert_eq!(o.claim("1", 10, 1100, 1000).await.unwrap().len(), 1);
    assert_eq!(o.release_leases(1200).await.unwrap(), 1);
    assert_eq!(o.claim("1", 10, 1200, 1000).await.unwrap().len(), 1);
}

async fn held_events_wait_and_repeats_merge_into_them(o: SharedOutbox) {
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

async fn dead_letters_can_be_retried_and_dropped(o: SharedOutbox) {
    o.enqueue(vec![event("a", 0), event("b", 0)]).await.unwrap();
    let c = o.claim("1", 10, 0, 1000).await.unwrap();
    o.settle(
        c[0].lease_until,
        c.iter()
            .map(|e| Settlement::Dead {
                id: e.id,
                reason: "x".into(),
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

async fn an_outcome_under_an_ended_lease_is_not_recorded(o: SharedOutbox) {
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
                reason: "late".into(),
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

async fn scan_all(o: &SharedOutbox, limit: usize) -> Vec<pincapi::outbox::StoredEvent> {
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

fn facts(events: &[pincapi::outbox::StoredEvent]) -> Vec<pincapi::outbox::EventFacts> {
    events
        .iter()
        .filter_map(|e| pincapi_core::audience::facts_from_payload(&e.ad_account_id, &e.payload))
        .collect()
}

async fn audience_facts_are_idempotent_upserts_behind_a_checkpoint(o: SharedOutbox) {
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

async fn a_shopify_refund_marks_its_purchase_refunded(o: SharedOutbox) {
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
        delivery: None,
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

async fn a_forgotten_member_is_suppressed_and_scrubbed_from_events(o: SharedOutbox) {
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

async fn sync_state_keeps_ids_statuses_and_synced_members(o: SharedOutbox) {
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
    };
}

contract!(
    stores_once_per_account_and_event_id,
    a_claim_leases_events_until_settled,
    an_expired_lease_is_claimable_again_and_release_ends_leases,
    held_events_wait_and_repeats_merge_into_them,
    dead_letters_can_be_retried_and_dropped,
    an_outcome_under_an_ended_lease_is_not_recorded,
    audience_facts_are_idempotent_upserts_behind_a_checkpoint,
    a_shopify_refund_marks_its_purchase_refunded,
    a_forgotten_member_is_suppressed_and_scrubbed_from_events,
    sync_state_keeps_ids_statuses_and_synced_members,
);

#[tokio::test]
async fn a_committed_enqueue_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    {
        let o = SqliteOutbox::open(&path, Synchronous::Full).unwrap();
        o.enqueue(vec![event("a", 0)]).await.unwrap();
    }
    let o = SqliteOutbox::open(&path, Synchronous::Full).unwrap();
    assert_eq!(o.claim("1", 10, 0, 1000).await.unwrap().len(), 1);
}
