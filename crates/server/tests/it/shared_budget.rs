//! One call budget per ad account across instances: three gateways on one PostgreSQL
//! database, each sending to Pinterest (a sandbox each, so their calls add up), never take
//! more than the account's `max_calls_per_minute` together in a minute, and one left alone
//! takes all of it. Time is a manual clock the three share, so a minute passes when the test
//! says so.

use std::time::Duration;

use pincapi::clock::ManualClock;
use pincapi::sandbox::SandboxOptions;

use crate::helpers::*;
use crate::pg::TestSchema;

const BUDGET: usize = 3;

fn calls(apps: &[&TestApp]) -> usize {
    apps.iter()
        .map(|a| {
            a.sandbox
                .sandbox
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("/events"))
                .count()
        })
        .sum()
}

#[tokio::test]
async fn three_instances_share_one_call_budget_and_one_alone_uses_all_of_it() {
    let schema = TestSchema::create().await;
    let clock = ManualClock::starting_now();
    let mut apps = Vec::new();
    for _ in 0..3 {
        let url = schema.url.clone();
        apps.push(
            spawn_app_on(clock.clone(), SandboxOptions::default(), move |c| {
                c.store = url;
                c.postgres.shared_call_budget = true;
                c.delivery.max_calls_per_minute = BUDGET as u32;
                // One event a call, so every event needs a call of its own.
                c.delivery.batch_size = 1;
                c.delivery.linger_ms = 0;
            })
            .await,
        );
    }
    for (i, app) in apps.iter().enumerate() {
        for j in 0..4 {
            let (status, body) = app
                .post_events(&page_visit(&format!("budget-{i}-{j}")))
                .await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let all: Vec<&TestApp> = apps.iter().collect();
    wait_for("the minute's calls", || async { calls(&all) >= BUDGET }).await;
    assert_eq!(
        calls(&all),
        BUDGET,
        "three instances took more than one budget"
    );

    clock.advance(Duration::from_secs(60));
    wait_for("the next minute's calls", || async {
        calls(&all) >= 2 * BUDGET
    })
    .await;
    assert_eq!(calls(&all), 2 * BUDGET);

    // Two instances stop; the one left takes the whole budget of the next minute alone.
    let third = apps.pop().unwrap();
    let second = apps.pop().unwrap();
    let before = calls(&[&apps[0]]);
    let others = calls(&[&second, &third]);
    second.stop().await;
    third.stop().await;
    clock.advance(Duration::from_secs(60));
    wait_for("one instance's calls", || async {
        calls(&[&apps[0]]) >= before + BUDGET
    })
    .await;
    assert_eq!(calls(&[&apps[0]]), before + BUDGET);
    assert_eq!(calls(&[&apps[0]]) + others, 3 * BUDGET);
    apps.pop().unwrap().stop().await;
}
