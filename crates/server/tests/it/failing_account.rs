//! While Pinterest does not take an account's calls, the account makes one call per back-off
//! wait, and the rest of its queue is not touched: no claim, no send, no rescheduling. Time
//! is a manual clock, so each wait ends when the test says.

use std::time::Duration;

use pincapi::clock::ManualClock;
use pincapi::sandbox::{FaultStep, Faults, SandboxOptions};

use crate::helpers::*;

const QUEUE: usize = 3000;
const BATCH: usize = 100;

fn calls(app: &TestApp) -> usize {
    app.sandbox
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events"))
        .count()
}

/// Events the engine has tried to send at least once.
fn touched(app: &TestApp) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(&app.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM events WHERE attempts > 0", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn an_account_pinterest_refuses_makes_one_call_per_wait_and_leaves_its_queue_alone() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_on(clock.clone(), SandboxOptions::default(), |c| {
        c.delivery.batch_size = BATCH;
        c.delivery.retry_scale = 1.0;
        c.delivery.linger_ms = 0;
        // One loop: with several, the first failure can meet calls already in flight (at
        // most one per loop), and the count before the first wait would be a race.
        c.delivery.concurrency = 1;
    })
    .await;
    app.sandbox.fault(Faults {
        fail_all: Some(FaultStep {
            status: 503,
            ..FaultStep::default()
        }),
        ..Faults::default()
    });
    for chunk in 0..QUEUE / 100 {
        let events: Vec<_> = (0..100)
            .map(|i| page_visit(&format!("down-{chunk}-{i}")))
            .collect();
        let (status, body) = app
            .post_events(&serde_json::json!({ "data": events }))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    wait_for("the first call", || async { calls(&app) >= 1 }).await;
    // The account waits (1 s, then 2 s, 4 s, 8 s; a minute at most): each minute the clock
    // moves brings one call, and one batch touched.
    for round in 0..4 {
        let before = calls(&app);
        assert_eq!(before, round + 1, "more than one call per wait");
        clock.advance(Duration::from_secs(60));
        wait_for("the next call", || async { calls(&app) > before }).await;
    }
    assert_eq!(calls(&app), 5);
    let t = touched(&app);
    assert!(t <= (5 * BATCH) as i64, "{t} events touched by 5 calls");
    // Pinterest is back: the queue drains.
    app.sandbox.fault(Faults::default());
    clock.advance(Duration::from_secs(60));
    wait_for("the whole queue", || async {
        app.sandbox.sandbox.events().len() >= QUEUE
    })
    .await;
    assert_eq!(app.sandbox.sandbox.events().len(), QUEUE);
    app.stop().await;
}
