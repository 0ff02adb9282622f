//! The outbox contract: what every store backend must do, written once against the trait.
//! Runs on SQLite; a PostgreSQL backend runs the same functions.

use std::sync::Arc;

use pincapi::config::Synchronous;
use pincapi::outbox::sqlite::SqliteOutbox;
use pincapi::outbox::{Enqueued, NewEvent, Outbox, Selection, Settlement, SharedOutbox, Source};
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

// --- Retention and back-pressure ---

async fn pending_count_counts_every_event_not_yet_finished(o: SharedOutbox) {
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
                reason: "x".into(),
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.pending_count().await.unwrap(), 1);
}

async fn purge_deletes_only_finished_events_past_the_cutoff(o: SharedOutbox) {
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
                reason: "x".into(),
            },
            Settlement::Retry {
                id: id_of("waiting"),
                next_attempt_at_ms: 10,
                error: "503".into(),
                counted: true,
            },
            Settlement::Dead {
                id: id_of("dropped"),
                reason: "y".into(),
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
    };
}

contract!(
    stores_once_per_account_and_event_id,
    a_claim_leases_events_until_settled,
    an_expired_lease_is_claimable_again_and_release_ends_leases,
    held_events_wait_and_repeats_merge_into_them,
    dead_letters_can_be_retried_and_dropped,
    an_outcome_under_an_ended_lease_is_not_recorded,
    pending_count_counts_every_event_not_yet_finished,
    purge_deletes_only_finished_events_past_the_cutoff,
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
