//! Audiences: the gateway stores the demo's traffic, `pincapi audiences sync` (a real process)
//! keeps customer lists and audiences at the sandbox, and `pincapi forget` takes a person out.
//! Expected members are computed here from the raw traffic, independently of the segment code.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use pincapi::sandbox::{FaultStep, OAuthToken, SandboxOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const WRITE_TOKEN: &str = "oauth-ads-write";
const READ_TOKEN: &str = "oauth-ads-read";
const TAG_ID: &str = "2612345678901";

fn options() -> SandboxOptions {
    SandboxOptions {
        token: Some(TOKEN.into()),
        oauth_tokens: vec![
            OAuthToken::new(WRITE_TOKEN, &["ads:read", "ads:write"]),
            OAuthToken::new(READ_TOKEN, &["ads:read"]),
        ],
        ..SandboxOptions::default()
    }
}

fn sha(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash of an email as Pinterest wants it: trimmed, lower case.
fn email_hash(raw: &str) -> String {
    sha(&raw.trim().to_lowercase())
}

/// `pincapi <args>` against the test app's store and sandbox, as a real process (off the
/// runtime's threads, so the in-process sandbox keeps answering).
async fn pincapi(app: &TestApp, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pincapi"));
    cmd.args(args).env_clear();
    cmd.env("PINCAPI_STORE", format!("sqlite://{}", app.db.display()))
        .env("PINCAPI_PINTEREST_API_BASE", app.sandbox.base())
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .env("PINCAPI_TAG_ID", TAG_ID)
        .env("PINCAPI_AUDIENCES__BATCH_SIZE", "3")
        .env("PINCAPI_LOG", "warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("pincapi runs"))
        .await
        .unwrap()
}

async fn sync(app: &TestApp) -> String {
    let out = pincapi(
        app,
        &["audiences", "sync"],
        &[("PINCAPI_PINTEREST_OAUTH_TOKEN", WRITE_TOKEN)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sync failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The demo's traffic plus people the demo does not have: signed-in viewers, a cart
/// abandoner with an email, and an app user known by a mobile ad id.
fn traffic() -> Vec<Value> {
    let now = now();
    let mut events = pincapi::demo::sample_traffic(40, now);
    let ua = "Mozilla/5.0";
    for (i, email) in ["viewer1@example.com", "Viewer2@Example.com"]
        .iter()
        .enumerate()
    {
        events.push(json!({
            "event_name": "page_visit", "action_source": "web", "event_time": now - 100,
            "event_id": format!("signed-in-view-{i}"),
            "user_data": {"em": email, "client_ip_address": "203.0.113.9", "client_user_agent": ua},
            "custom_data": {"content_ids": ["8003"]},
        }));
    }
    events.push(json!({
        "event_name": "add_to_cart", "action_source": "web", "event_time": now - 90,
        "event_id": "abandoned-cart-1",
        "user_data": {"em": "cart.only@example.com", "client_ip_address": "203.0.113.9", "client_user_agent": ua},
        "custom_data": {"currency": "USD", "value": "42.00", "content_ids": ["8003"]},
    }));
    events.push(json!({
        "event_name": "page_visit", "action_source": "app_android", "event_time": now - 80,
        "event_id": "app-visit-1",
        "user_data": {"hashed_maids": "38400000-8CF0-11BD-B23E-10B96E40000D"},
    }));
    events
}

/// Each default segment's members, from the raw traffic by the rules' plain meaning.
fn expected(events: &[Value]) -> BTreeMap<(&'static str, &'static str), BTreeSet<String>> {
    let mut out: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    let mut carted = BTreeSet::new();
    let mut bought = BTreeSet::new();
    for e in events {
        let u = &e["user_data"];
        if let Some(m) = u["hashed_maids"].as_str() {
            out.entry(("visitors", "maid"))
                .or_default()
                .insert(sha(&m.trim().to_lowercase()));
        }
        let Some(em) = u["em"].as_str().map(email_hash) else {
            continue;
        };
        out.entry(("visitors", "email"))
            .or_default()
            .insert(em.clone());
        match e["event_name"].as_str().unwrap() {
            "page_visit" if e["custom_data"]["content_ids"].is_array() => {
                out.entry(("product_viewers", "email"))
                    .or_default()
                    .insert(em);
            }
            "add_to_cart" => {
                carted.insert(em);
            }
            "checkout" => {
                bought.insert(em);
            }
            _ => {}
        }
    }
    out.insert(
        ("cart_abandoners", "email"),
        carted.difference(&bought).cloned().collect(),
    );
    out.insert(("purchasers", "email"), bought);
    out
}

/// What the sandbox's lists hold, by (segment, kind) from their names.
fn lists(app: &TestApp) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for l in app.sandbox.sandbox.customer_lists() {
        let rest = l.name.strip_prefix("pincapi · ").unwrap();
        let (segment, kind) = match rest.strip_suffix(" · maid") {
            Some(s) => (s.to_owned(), "maid".to_owned()),
            None => (rest.to_owned(), "email".to_owned()),
        };
        assert_eq!(
            l.list_type,
            kind.to_uppercase(),
            "{} has the wrong list_type",
            l.name
        );
        let before = out.insert((segment, kind), l.records);
        assert!(before.is_none(), "two lists named {}", l.name);
    }
    out
}

async fn app_with_traffic() -> (TestApp, Vec<Value>) {
    let app = spawn_app_with(options(), |_| {}).await;
    let events = traffic();
    let (status, body) = app.post_events(&json!({ "data": events })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
    (app, events)
}

#[tokio::test]
async fn sync_builds_each_segment_from_the_stream_and_a_second_sync_sends_nothing() {
    let (app, events) = app_with_traffic().await;
    let out = sync(&app).await;
    let want = expected(&events);
    let got = lists(&app);
    let want_named: BTreeMap<(String, String), BTreeSet<String>> = want
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|((s, k), v)| ((s.to_owned(), k.to_owned()), v))
        .collect();
    assert_eq!(got, want_named, "sync output:\n{out}");
    assert_eq!(got[&("purchasers".into(), "email".into())].len(), 8);

    // Every list is wrapped in a CUSTOMER_LIST audience, and each segment has a VISITOR
    // audience over the Tag and Conversions API stream.
    let audiences = app.sandbox.sandbox.audiences();
    let of_type = |t: &str| audiences.iter().filter(|a| a.audience_type == t).count();
    assert_eq!(of_type("CUSTOMER_LIST"), got.len());
    assert_eq!(of_type("VISITOR"), 4);
    let purchasers = audiences
        .iter()
        .find(|a| a.name == "pincapi · purchasers · visitors")
        .unwrap();
    assert_eq!(purchasers.rule["visitor_source_id"], TAG_ID);
    assert_eq!(purchasers.rule["event"], "checkout");
    assert_eq!(purchasers.rule["retention_days"], 180);
    assert_eq!(
        purchasers.rule["ingestion_source"],
        json!({"=": ["tag", "conversions_api"]})
    );
    // Fewer than 100 members: reported plainly, and no Actalike is seeded from it.
    assert!(out.contains("TOO_SMALL"), "{out}");
    assert_eq!(of_type("ACTALIKE"), 0);

    // Batches are bounded (3 in this test): the 8 purchasers took a create and two ADDs.
    let requests = app.sandbox.sandbox.requests();
    let patches = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/customer_lists/"))
        .collect::<Vec<_>>();
    assert!(
        patches
            .iter()
            .all(|r| r.body["records"].as_str().unwrap().split(',').count() <= 3)
    );

    let before = requests.len();
    let again = sync(&app).await;
    let after = app.sandbox.sandbox.requests();
    assert_eq!(
        after.len(),
        before,
        "a second sync sent {:?}\n{again}",
        after[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert!(again.contains("0 added, 0 removed"), "{again}");
}

#[tokio::test]
async fn a_forgotten_email_is_removed_from_every_list_and_from_the_stored_events() {
    let (app, _) = app_with_traffic().await;
    sync(&app).await;
    let gone = email_hash(" Shopper0@Example.com ");
    let holding: Vec<_> = lists(&app)
        .into_iter()
        .filter(|(_, v)| v.contains(&gone))
        .map(|(k, _)| k)
        .collect();
    assert!(holding.len() >= 2, "{holding:?}");

    let out = pincapi(&app, &["forget", "--email", " Shopper0@Example.com "], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.to_lowercase().contains("shopper0@"), "{stdout}");
    let before = app.sandbox.sandbox.requests().len();
    let out = sync(&app).await;
    assert!(
        out.contains(&format!("0 added, {} removed", holding.len())),
        "{out}"
    );
    let requests = app.sandbox.sandbox.requests();
    let removes: Vec<_> = requests[before..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.body["operation_type"] == "REMOVE")
        .collect();
    assert_eq!(removes.len(), holding.len());
    assert!(removes.iter().all(|r| r.body["records"] == gone.as_str()));
    assert!(lists(&app).values().all(|v| !v.contains(&gone)));

    // Not in the store either, and it never comes back from a re-read of the events.
    let conn = rusqlite::Connection::open(&app.db).unwrap();
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM payloads WHERE body LIKE '%' || ?1 || '%'",
            [&gone],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    conn.execute("DELETE FROM audience_checkpoints", [])
        .unwrap();
    let out = sync(&app).await;
    assert!(out.contains("0 added, 0 removed"), "{out}");
}

#[tokio::test]
async fn the_ads_token_is_required_and_its_failures_say_what_to_do() {
    let (app, _) = app_with_traffic().await;
    let err = |out: Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = err(pincapi(&app, &["audiences", "sync"], &[]).await);
    assert!(missing.contains("pinterest_oauth_token"), "{missing}");
    assert!(
        missing.contains("PINCAPI_PINTEREST_OAUTH_TOKEN"),
        "{missing}"
    );
    // The conversion token is not accepted by the Ads API.
    let conversion = err(pincapi(
        &app,
        &["audiences", "sync"],
        &[("PINCAPI_PINTEREST_OAUTH_TOKEN", TOKEN)],
    )
    .await);
    assert!(conversion.contains("expired or invalid"), "{conversion}");
    let read_only = err(pincapi(
        &app,
        &["audiences", "sync"],
        &[("PINCAPI_PINTEREST_OAUTH_TOKEN", READ_TOKEN)],
    )
    .await);
    assert!(read_only.contains("missing scope ads:write"), "{read_only}");
    assert!(app.sandbox.sandbox.customer_lists().is_empty());
}

#[tokio::test]
async fn a_sync_that_fails_part_way_resumes_without_duplicates() {
    let (app, events) = app_with_traffic().await;
    // The first list is created, its first ADD fails: the run stops with an error.
    app.sandbox.sandbox.set_ads_faults(vec![
        FaultStep {
            status: 200,
            ..FaultStep::default()
        },
        FaultStep {
            status: 503,
            ..FaultStep::default()
        },
    ]);
    let out = pincapi(
        &app,
        &["audiences", "sync"],
        &[("PINCAPI_PINTEREST_OAUTH_TOKEN", WRITE_TOKEN)],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(app.sandbox.sandbox.customer_lists().len(), 1);
    sync(&app).await;
    // One list per name (lists() asserts it), each with exactly its members.
    let want: BTreeMap<(String, String), BTreeSet<String>> = expected(&events)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|((s, k), v)| ((s.to_owned(), k.to_owned()), v))
        .collect();
    assert_eq!(lists(&app), want);
}

#[tokio::test]
async fn a_list_made_before_its_id_was_stored_is_adopted_not_duplicated() {
    let (app, events) = app_with_traffic().await;
    // As if a previous run crashed right after creating the list.
    let resp = app
        .http
        .post(format!(
            "{}/ad_accounts/{ACCOUNT}/customer_lists",
            app.sandbox.base()
        ))
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"name": "pincapi · purchasers", "records": email_hash("someone@else.example"), "list_type": "EMAIL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sync(&app).await;
    let got = lists(&app);
    let purchasers = &got[&("purchasers".to_owned(), "email".to_owned())];
    assert!(purchasers.is_superset(&expected(&events)[&("purchasers", "email")]));
}

#[tokio::test]
async fn serve_syncs_on_its_interval_and_a_missing_token_shows_in_metrics() {
    let app = spawn_app_with(options(), |c| {
        c.audiences.enabled = true;
        c.audiences.sync_interval_secs = 1;
    })
    .await;
    wait_for("a failed audience sync in /metrics", || async {
        let (_, text) = app.get("/metrics", None).await;
        text.contains("pincapi_audience_sync_runs_total{result=\"error\"}")
            && text.contains("pincapi_audience_sync_failing 1")
    })
    .await;

    let app = spawn_app_with(options(), |c| {
        c.audiences.enabled = true;
        c.audiences.sync_interval_secs = 1;
        c.pinterest_oauth_token = pincapi::config::Secret::new(WRITE_TOKEN);
    })
    .await;
    let (status, _) = app.post_events(&json!({ "data": traffic() })).await;
    assert_eq!(status, 202);
    let sb = &app.sandbox.sandbox;
    wait_for("the purchasers list at the sandbox", || async {
        sb.customer_lists()
            .iter()
            .any(|l| l.name == "pincapi · purchasers" && l.records.len() == 8)
    })
    .await;
}

#[tokio::test]
async fn preview_counts_members_per_segment_without_calling_pinterest() {
    let (app, events) = app_with_traffic().await;
    let out = pincapi(&app, &["audiences", "preview", "--json"], &[]).await;
    assert!(out.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let want = expected(&events);
    for r in &rows {
        let seg = r["segment"].as_str().unwrap();
        let count = |k| {
            want.iter()
                .find(|((s, kk), _)| *s == seg && *kk == k)
                .map_or(0, |(_, v)| v.len())
        };
        assert_eq!(r["with_email"], count("email"), "{r}");
        assert_eq!(r["with_maid"], count("maid"), "{r}");
    }
    assert_eq!(rows.len(), 4);
    assert!(
        app.sandbox
            .sandbox
            .requests()
            .iter()
            .all(|r| !r.path.contains("customer_lists"))
    );
}
