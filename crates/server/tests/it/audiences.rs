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
    let mut events = pincapi::commands::demo::sample_traffic(40, now);
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

    // Each segment has a VISITOR audience over the Tag and Conversions API stream; no list
    // reaches 100 members, so none is wrapped in a CUSTOMER_LIST audience yet.
    let audiences = app.sandbox.sandbox.audiences();
    let of_type = |t: &str| audiences.iter().filter(|a| a.audience_type == t).count();
    assert_eq!(of_type("CUSTOMER_LIST"), 0);
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

    // A second run changes nothing at Pinterest: no create, no update. It only reads the
    // status of each list still waiting for 100 matched members.
    let before = requests.len();
    let again = sync(&app).await;
    let after = app.sandbox.sandbox.requests();
    let sent: Vec<String> = after[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let list_ids: BTreeSet<String> = app
        .sandbox
        .sandbox
        .customer_lists()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(sent.len(), list_ids.len(), "{sent:?}");
    for (r, s) in after[before..].iter().zip(&sent) {
        let id = r.path.rsplit('/').next().unwrap();
        assert!(r.method == "GET" && list_ids.contains(id), "{s}");
    }
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
async fn a_cart_abandoner_who_buys_moves_from_one_list_to_the_other() {
    let (app, _) = app_with_traffic().await;
    sync(&app).await;
    let who = email_hash("cart.only@example.com");
    let key = |s: &str| (s.to_owned(), "email".to_owned());
    assert!(lists(&app)[&key("cart_abandoners")].contains(&who));
    let mut order = checkout("order-cart-only");
    order["user_data"]["em"] = json!("cart.only@example.com");
    let (status, body) = app.post_events(&order).await;
    assert_eq!(status, 202, "{body}");
    let out = sync(&app).await;
    let now = lists(&app);
    assert!(now[&key("cart_abandoners")].is_empty(), "{out}");
    assert!(now[&key("purchasers")].contains(&who));
    assert!(
        out.contains("cart_abandoners email: 0 members, +0 -1"),
        "{out}"
    );
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
async fn lists_deleted_at_pinterest_are_made_again_with_every_member() {
    let (app, events) = app_with_traffic().await;
    sync(&app).await;
    // Someone deletes everything in Ads Manager; a new member arrives.
    app.sandbox.sandbox.reset();
    let (status, _) = app
        .post_events(&json!({
            "event_name": "checkout", "action_source": "web", "event_time": now() - 10,
            "event_id": "order-late-1",
            "user_data": {"em": "late@example.com", "client_ip_address": "203.0.113.9",
                          "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"currency": "USD", "value": "12.00"},
        }))
        .await;
    assert_eq!(status, 202);
    sync(&app).await;
    // Lists still waiting for 100 matched members are read on every run, so their deletion
    // is noticed at once: every list is made again, with every member.
    let mut want: BTreeMap<(String, String), BTreeSet<String>> = expected(&events)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|((s, k), v)| ((s.to_owned(), k.to_owned()), v))
        .collect();
    for segment in ["visitors", "purchasers"] {
        want.get_mut(&(segment.to_owned(), "email".to_owned()))
            .unwrap()
            .insert(email_hash("late@example.com"));
    }
    assert_eq!(lists(&app), want);
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

/// A spec schema (`components/schemas/<name>` of the official OpenAPI description) as a JSON
/// Schema validator: `$ref`s resolve inside the copied components, and OpenAPI's
/// `nullable: true` becomes a `null` alternative.
fn spec_schema(name: &str) -> jsonschema::Validator {
    fn nullable(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.remove("nullable") == Some(Value::Bool(true)) {
                    let inner = Value::Object(std::mem::take(m));
                    m.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                }
                for x in m.values_mut() {
                    nullable(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(nullable),
            _ => {}
        }
    }
    let spec: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pinterest/pinterest-openapi-v5.json"
    )))
    .unwrap();
    let mut components = spec["components"]["schemas"].clone();
    nullable(&mut components);
    let root = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": {"schemas": components},
    });
    jsonschema::validator_for(&root).unwrap()
}

#[tokio::test]
async fn requests_and_answers_have_the_specs_shapes() {
    let (app, _) = app_with_traffic().await;
    sync(&app).await;
    let check = |schema: &jsonschema::Validator, v: &Value, what: &str| {
        let errors: Vec<String> = schema.iter_errors(v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{what}: {errors:?}\n{v}");
    };
    let list = spec_schema("CustomerList");
    let list_create = spec_schema("CustomerListRequest");
    let list_update = spec_schema("CustomerListUpdateRequest");
    let audience = spec_schema("Audience");
    let audience_create = spec_schema("AudienceCreateRequest");
    // The validators do check: a wrong status or a non-digit id is refused.
    assert!(!list.is_valid(&json!({"status": "BOGUS"})));
    assert!(!audience.is_valid(&json!({"id": "abc"})));
    assert!(!list_update.is_valid(&json!({"operation_type": "ADD", "records": ["a"]})));
    let mut seen = BTreeSet::new();
    let ads_api = |r: &&pincapi::sandbox::RecordedRequest| {
        r.path.contains("/customer_lists") || r.path.contains("/audiences")
    };
    for r in app.sandbox.sandbox.requests().iter().filter(ads_api) {
        assert_eq!(r.status, 200, "{} {}: {}", r.method, r.path, r.response);
        let what = format!("{} {}", r.method, r.path);
        let is_list = r.path.contains("/customer_lists");
        let is_item = r.path.split('/').count() == 6;
        match (r.method.as_str(), is_list, is_item) {
            ("POST", true, false) => {
                check(&list_create, &r.body, &what);
                check(&list, &r.response, &what);
            }
            ("PATCH", true, true) => {
                check(&list_update, &r.body, &what);
                check(&list, &r.response, &what);
            }
            ("POST", false, false) => {
                check(&audience_create, &r.body, &what);
                check(&audience, &r.response, &what);
            }
            ("GET", _, false) => {
                let item = if is_list { &list } else { &audience };
                for i in r.response["items"].as_array().unwrap() {
                    check(item, i, &what);
                }
            }
            ("GET", true, true) => check(&list, &r.response, &what),
            _ => check(&audience, &r.response, &what),
        }
        seen.insert((r.method.clone(), is_list, is_item));
    }
    // Creates, updates and lookups of both kinds were all seen.
    assert!(seen.len() >= 5, "{seen:?}");
    // Records are the spec's one comma-separated string of SHA-256 hex.
    let creates = app.sandbox.sandbox.requests();
    let records = creates
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/customer_lists"))
        .unwrap();
    for h in records.body["records"].as_str().unwrap().split(',') {
        assert!(
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            "{h}"
        );
    }
}

#[tokio::test]
async fn a_purchaser_list_of_100_is_ready_and_seeds_an_actalike() {
    let app = spawn_app_with(options(), |_| {}).await;
    // 500 demo visitors include 100 purchasers.
    let events = pincapi::commands::demo::sample_traffic(500, now());
    for chunk in events.chunks(1000) {
        let (status, body) = app.post_events(&json!({ "data": chunk })).await;
        assert_eq!(status, 202, "{body}");
    }
    let out = pincapi(
        &app,
        &["audiences", "sync"],
        &[
            ("PINCAPI_PINTEREST_OAUTH_TOKEN", WRITE_TOKEN),
            ("PINCAPI_AUDIENCES__BATCH_SIZE", "40"),
            ("PINCAPI_AUDIENCES__ACTALIKE_COUNTRY", "GB"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lists = lists(&app);
    assert_eq!(lists[&("purchasers".into(), "email".into())].len(), 100);
    let audiences = app.sandbox.sandbox.audiences();
    let seed = audiences
        .iter()
        .find(|a| a.name == "pincapi · purchasers" && a.audience_type == "CUSTOMER_LIST")
        .unwrap();
    let actalike = audiences
        .iter()
        .find(|a| a.audience_type == "ACTALIKE")
        .unwrap();
    assert_eq!(actalike.rule["seed_id"], json!([seed.id]));
    assert_eq!(actalike.rule["country"], "GB");
    assert_eq!(actalike.rule["percentage"], 5);
    assert!(
        stdout.contains("purchasers email: 100 members, +100 -0") && stdout.contains("READY"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_sandbox_checks_scopes_records_and_ids_as_pinterest_does() {
    let sb = TestSandbox::start(options()).await;
    let http = reqwest::Client::new();
    let lists = format!("{}/ad_accounts/{ACCOUNT}/customer_lists", sb.base());
    let post = |token: &'static str, body: Value| {
        let (http, lists) = (http.clone(), lists.clone());
        async move {
            let r = http
                .post(lists)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let hash = email_hash("a@example.com");
    let good = json!({"name": "n", "records": hash, "list_type": "EMAIL"});
    assert_eq!(
        post(TOKEN, good.clone()).await.0,
        401,
        "the conversion token"
    );
    let (status, body) = post(READ_TOKEN, good.clone()).await;
    assert_eq!(status, 403);
    assert!(body["message"].as_str().unwrap().contains("ads:write"));
    let (status, body) = post(
        WRITE_TOKEN,
        json!({"name": "n", "records": "A@Example.com"}),
    )
    .await;
    assert_eq!(status, 400, "an upper-case email: {body}");
    let (status, _) = post(
        WRITE_TOKEN,
        json!({"name": "n", "records": "abc", "list_type": "MAID"}),
    )
    .await;
    assert_eq!(status, 400, "an unhashed MAID");
    let (status, created) = post(WRITE_TOKEN, good).await;
    assert_eq!(status, 200);
    assert_eq!(created["status"], "TOO_SMALL");
    assert_eq!(created["type"], "customerlist");
    let audiences = format!("{}/ad_accounts/{ACCOUNT}/audiences", sb.base());
    let create = |body: Value| {
        let (http, audiences) = (http.clone(), audiences.clone());
        async move {
            let r = http
                .post(audiences)
                .bearer_auth(WRITE_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, a) = create(json!({"name": "a", "audience_type": "CUSTOMER_LIST",
        "rule": {"customer_list_id": created["id"]}}))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (a["status"].as_str(), a["size"].as_i64()),
        (Some("TOO_SMALL"), Some(1))
    );
    let (status, _) = create(json!({"name": "a", "audience_type": "customer_list",
        "rule": {"customer_list_id": created["id"]}}))
    .await;
    assert_eq!(status, 400, "audience_type is case-sensitive");
    let (status, _) = create(json!({"name": "a", "audience_type": "ACTALIKE",
        "rule": {"seed_id": [a["id"]], "country": "FR", "percentage": 5}}))
    .await;
    assert_eq!(status, 400, "Actalike countries are US, CA, GB");
    let (status, _) = create(json!({"name": "v", "audience_type": "VISITOR",
        "rule": {"visitor_source_id": TAG_ID, "retention_days": 541}}))
    .await;
    assert_eq!(status, 400, "retention is 1..=540 days");
    let r = http
        .get(format!("{audiences}/999"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// On a shared PostgreSQL store, a sync that finds another run syncing an ad account (another
/// instance, or `serve` while the CLI runs) leaves it alone instead of racing it to create
/// the same lists; the next run, once the lock is free, syncs it.
#[tokio::test]
async fn a_sync_skips_an_ad_account_another_run_is_syncing() {
    let schema = crate::pg::TestSchema::create().await;
    let store = schema.url.clone();
    let app = spawn_app_with(options(), |c| c.store = store).await;
    let events = traffic();
    let (status, body) = app.post_events(&json!({ "data": events })).await;
    assert_eq!(status, 202, "{body}");
    let on_postgres = [
        ("PINCAPI_STORE", schema.url.as_str()),
        ("PINCAPI_PINTEREST_OAUTH_TOKEN", WRITE_TOKEN),
    ];

    // Another run holds the ad account's lock, on a connection of its own.
    let other = pincapi::store::postgres::PostgresStore::connect(
        &schema.url,
        &pincapi::config::PostgresConfig::default(),
    )
    .await
    .unwrap();
    let held = pincapi::store::AudienceStore::try_lock_audience_sync(&other, ACCOUNT)
        .await
        .unwrap();
    assert!(held.is_some());
    let out = pincapi(&app, &["audiences", "sync", "--json"], &on_postgres).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["skipped"], json!([ACCOUNT]), "{report}");
    assert_eq!(report["segments"], json!([]), "{report}");
    assert!(app.sandbox.sandbox.customer_lists().is_empty());
    assert!(app.sandbox.sandbox.audiences().is_empty());

    drop(held);
    let out = pincapi(&app, &["audiences", "sync"], &on_postgres).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("skipped"), "{stdout}");
    let want: BTreeMap<(String, String), BTreeSet<String>> = expected(&events)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|((s, k), v)| ((s.to_owned(), k.to_owned()), v))
        .collect();
    assert_eq!(lists(&app), want, "{stdout}");
}
