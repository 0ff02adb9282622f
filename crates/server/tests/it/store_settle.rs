//! One settlement of a whole claim with mixed outcomes, on SQLite and on PostgreSQL: one
//! statement settles them all, yet each is recorded as its own, a repeated id counts once (the
//! first outcome given), and per-event reasons stay per event.

use pincapi::store::{DeadReason, Settlement, SharedStore};

use crate::store::{event, postgres, sqlite};

async fn a_mixed_settlement_records_each_event_once(o: SharedStore) {
    let events = (0..250).map(|i| event(&format!("e{i:03}"), 0)).collect();
    o.enqueue(events).await.unwrap();
    let claimed = o.claim("1", 1000, 100, 1000).await.unwrap();
    assert_eq!(claimed.len(), 250);
    let lease = claimed[0].lease_until;
    let mut settlements = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        settlements.push(match i {
            0..200 => Settlement::Delivered {
                id: c.id,
                sent_at_ms: 150,
                warning: None,
            },
            200..210 => Settlement::Delivered {
                id: c.id,
                sent_at_ms: 150,
                warning: Some("event_time is old".into()),
            },
            210..240 => Settlement::Retry {
                id: c.id,
                next_attempt_at_ms: 5000,
                error: "503".into(),
                counted: true,
            },
            _ => Settlement::Dead {
                id: c.id,
                reason: DeadReason::Refused(format!("bad field {i}")),
            },
        });
    }
    // A second outcome for an event already given one is not recorded.
    settlements.push(Settlement::Dead {
        id: claimed[0].id,
        reason: DeadReason::Refused("late".into()),
    });
    assert_eq!(o.settle(lease, settlements).await.unwrap(), 250);

    assert_eq!(o.pending_count().await.unwrap(), 30);
    assert_eq!(o.next_due("1").await.unwrap(), Some(5000));
    let retried = o.claim("1", 1000, 5000, 1000).await.unwrap();
    assert_eq!(
        retried
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>(),
        claimed[210..240]
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>()
    );
    assert!(retried.iter().all(|c| c.attempts == 1));
    let mut reasons: Vec<String> = o
        .dead_letters(100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    let mut expected: Vec<String> = (240..250)
        .map(|i| format!("Pinterest: bad field {i}"))
        .collect();
    expected.sort();
    assert_eq!(reasons, expected);
}

#[tokio::test]
async fn sqlite_a_mixed_settlement_records_each_event_once() {
    let (o, _dir) = sqlite();
    a_mixed_settlement_records_each_event_once(o).await;
}

#[tokio::test]
async fn postgres_a_mixed_settlement_records_each_event_once() {
    let (o, _schema) = postgres().await;
    a_mixed_settlement_records_each_event_once(o).await;
}
