//! Ingest and delivery, end to end: the real gateway on loopback delivering into the sandbox.

use pincapi::clock::ManualClock;
use pincapi::sandbox::{FaultStep, Faults, SandboxOptions};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn accepted_events_reach_the_sandbox_hashed_and_valid_against_the_strict_schema() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_events(&json!({"data": [checkout("order-5550001"), page_visit("pv-1")]}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);
    app.wait_delivered(2).await;

    let schema = strict_schema();
    let requests = app.sandbox.sandbox.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.path, format!("/v5/ad_accounts/{ACCOUNT}/events"));
        let errors: Vec<String> = schema
            .iter_errors(&r.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "strict schema: {errors:?}\n{}", r.body);
    }
    let ev = app
        .sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == "order-5550001")
        .unwrap()
        .event;
    // The normalisation vectors: trimmed, lower-cased email and E.164 phone, hashed.
    assert_eq!(
        ev["user_data"]["em"],
        json!(["86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"])
    );
    assert_eq!(
        ev["user_data"]["ph"],
        json!(["d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"])
    );
    assert_eq!(ev["user_data"]["click_id"], "dj0yJnU9abc");
    assert_eq!(ev["custom_data"]["value"], "72.39");
    // Raw PII never leaves (or rests in) the gateway.
    let db = std::fs::read(&app.db).unwrap();
    let wal = std::fs::read(app.db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes).to_lowercase();
        assert!(!text.contains("jane.doe@example.com"));
        assert!(!text.contains("san francisco"));
    }
}

/// At its call limit, an account sends what waited as one fuller request, not many small ones:
/// the call slot is taken before the claim, so events pile up while the loop waits for it.
#[tokio::test]
async fn an_account_at_its_call_limit_sends_what_waited_in_one_request() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_on(clock.clone(), SandboxOptions::default(), |c| {
        c.delivery.max_calls_per_minute = 1;
    })
    .await;
    app.post_events(&checkout("first")).await;
    app.wait_delivered(1).await;
    // The minute's only call is spent; these arrive one request at a time meanwhile.
    for i in 0..200 {
        let (status, _) = app.post_events(&page_visit(&format!("visit-{i}"))).await;
        assert_eq!(status, 202);
    }
    let sandbox = &app.sandbox.sandbox;
    assert_eq!(
        sandbox.events().len(),
        1,
        "nothing more leaves within the minute"
    );
    clock.advance(std::time::Duration::from_secs(60));
    wait_for("the waiting events, after the minute", || async {
        sandbox.events().len() >= 201
    })
    .await;
    let sizes: Vec<usize> = sandbox
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events"))
        .map(|r| r.body["data"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [1, 200]);
}

#[tokio::test]
async fn an_event_id_sent_twice_is_stored_and_delivered_once() {
    let app = spawn_app().await;
    let (_, first) = app.post_events(&checkout("order-1")).await;
    assert_eq!(first["accepted"], 1);
    let (status, second) = app
        .post_events(&json!({"data": [checkout("order-1"), checkout("order-1")]}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicates"], 2);
    app.wait_delivered(1).await;
    let (_, again) = app.post_events(&checkout("order-1")).await;
    assert_eq!(again["duplicates"], 1);
    // Drain: anything still to send would show up within a few poll intervals.
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of("order-1"), 1);
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.ingest.max_body_bytes = 64 * 1024;
    })
    .await;
    let (s, b) = app
        .post_raw("/v1/events", API_KEY, b"{not json".to_vec())
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "invalid_json");
    let (s, b) = app
        .post_raw(
            "/v1/events",
            "wrong-key",
            checkout("x").to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 401);
    assert!(b["error"]["message"].as_str().unwrap().contains("Bearer"));
    let big = vec![b' '; 70 * 1024];
    let (s, b) = app.post_raw("/v1/events", API_KEY, big).await;
    assert_eq!(s, 413);
    assert_eq!(b["error"]["code"], "too_large");
    let (s, b) = app.post_raw("/v1/events", API_KEY, b"[1,2]".to_vec()).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "invalid_shape");
}

#[tokio::test]
async fn more_than_1000_events_in_one_request_is_413() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..1001).map(|i| page_visit(&format!("p{i}"))).collect();
    let (s, b) = app.post_events(&json!({ "data": many })).await;
    assert_eq!(s, 413);
    assert_eq!(b["error"]["code"], "too_many_events");
}

#[tokio::test]
async fn rejected_events_are_listed_by_index_and_field_while_the_rest_are_accepted() {
    let app = spawn_app().await;
    let mut bad_value = checkout("o-2");
    bad_value["custom_data"]["value"] = json!(72.39);
    let mut old = page_visit("pv-old");
    old["event_time"] = json!(now() - 8 * 86400);
    let mut unknown = page_visit("pv-unknown");
    unknown["eventName"] = json!("x");
    let mut ms = page_visit("pv-ms");
    ms["event_time"] = json!(now() * 1000);
    let mut weak_phone = checkout("o-3");
    weak_phone["user_data"]["ph"] = json!("555-555-SHIP");
    let (status, body) = app
        .post_events(&json!({"data": [checkout("o-1"), bad_value, old, unknown, ms, weak_phone]}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"], 4);
    let errors = body["errors"].as_array().unwrap();
    let field_of = |i: u64| {
        errors
            .iter()
            .find(|e| e["index"] == i)
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(field_of(1), "custom_data.value");
    assert_eq!(field_of(2), "event_time");
    // An unknown key is named as the field, with serde's list of the expected ones.
    assert_eq!(field_of(3), "eventName");
    assert!(errors.iter().any(|e| {
        e["index"] == 3
            && e["reason"]
                .as_str()
                .unwrap()
                .starts_with("unknown field `eventName`")
    }));
    assert_eq!(field_of(4), "event_time");
    assert_eq!(body["warnings"][0]["index"], 5);
    assert_eq!(body["warnings"][0]["field"], "user_data.ph");
    // No reason echoes personal data.
    assert!(!body.to_string().contains("SHIP"));
    let mut echo = page_visit("pv-echo");
    echo["action_source"] = json!("jane@example.com");
    let (_, body) = app.post_events(&echo).await;
    assert_eq!(body["errors"][0]["field"], "action_source");
    assert!(!body.to_string().contains("jane@"), "{body}");

    let (status, body) = app.post_events(&page_visit("")).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "event_id");
    app.wait_delivered(2).await;
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_delivered_once() {
    let app = spawn_app().await;
    app.sandbox.fault(Faults {
        script: vec![FaultStep {
            status: 429,
            retry_after: Some(1),
            ..FaultStep::default()
        }],
        ..Faults::default()
    });
    let start = tokio::time::Instant::now();
    app.post_events(&checkout("o-429")).await;
    app.wait_delivered(1).await;
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
    let statuses: Vec<u16> = app
        .sandbox
        .sandbox
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 200]);
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(metrics.contains("reason=\"rate_limited\""), "{metrics}");
    assert_eq!(app.stop().await.count_of("o-429"), 1);
}

#[tokio::test]
async fn server_errors_and_slow_replies_are_retried_until_delivered() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.delivery.request_timeout_secs = 1;
    })
    .await;
    app.sandbox.fault(Faults {
        script: vec![
            FaultStep {
                status: 503,
                ..FaultStep::default()
            },
            FaultStep {
                status: 500,
                ..FaultStep::default()
            },
            // Slower than the gateway's 1 s timeout: counts as no answer.
            FaultStep {
                status: 200,
                delay_ms: Some(1500),
                ..FaultStep::default()
            },
        ],
        ..Faults::default()
    });
    app.post_events(&checkout("o-5xx")).await;
    app.wait_delivered(1).await;
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(metrics.contains("pincapi_events_retried_total{ad_account_id=\"549755885175\",event_name=\"checkout\",reason=\"unavailable\"} 3"), "{metrics}");
    assert_eq!(app.stop().await.count_of("o-5xx"), 1);
}

#[tokio::test]
async fn an_event_pinterest_refuses_is_dead_lettered_with_its_message_and_others_delivered() {
    let app = spawn_app().await;
    app.sandbox.fault(Faults {
        reject_event_ids: vec!["o-bad".into()],
        ..Faults::default()
    });
    app.post_events(&json!({"data": [checkout("o-good"), checkout("o-bad"), page_visit("pv-2")]}))
        .await;
    app.wait_delivered(2).await;
    wait_for("a dead letter", || async {
        let (_, body) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
        body.contains("o-bad")
    })
    .await;
    let (_, body) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let dl = &v["dead_letters"][0];
    assert_eq!(dl["event_id"], "o-bad");
    assert!(
        dl["reason"].as_str().unwrap().starts_with("Pinterest: "),
        "{dl}"
    );
    let (s, _) = app.get("/admin/dead-letters", None).await;
    assert_eq!(s, 401);

    // The operator fixes the cause and retries: it is delivered, once.
    app.sandbox.fault(Faults::default());
    let id = dl["id"].as_i64().unwrap();
    let (s, r) = app
        .post_raw(
            "/admin/dead-letters/retry",
            ADMIN_KEY,
            json!({"ids": [id]}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["retried"], 1);
    app.wait_delivered(3).await;
    let sandbox = app.stop().await;
    assert_eq!(sandbox.count_of("o-bad"), 1);
    assert_eq!(sandbox.count_of("o-good"), 1);
}

#[tokio::test]
async fn a_400_splits_the_batch_so_only_the_offending_event_is_dead_lettered() {
    let app = spawn_app().await;
    // Pinterest refuses the whole batch and its first half, accepts the second half (so the
    // request itself is fine), accepts pv-0 alone and refuses pv-1 alone: pv-1 is the
    // offending event. Halves are tried breadth first.
    let step = |status| FaultStep {
        status,
        ..FaultStep::default()
    };
    app.sandbox.fault(Faults {
        script: vec![step(400), step(400), step(200), step(200), step(400)],
        ..Faults::default()
    });
    let events: Vec<Value> = (0..4).map(|i| page_visit(&format!("pv-{i}"))).collect();
    app.post_events(&json!({ "data": events })).await;
    app.wait_delivered(3).await;
    wait_for("one dead letter", || async {
        let (_, body) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
        body.contains("pv-")
    })
    .await;
    let sizes: Vec<usize> = app
        .sandbox
        .sandbox
        .requests()
        .iter()
        .map(|r| r.body["data"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![4, 2, 2, 1, 1]);
    let (_, body) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(v["dead_letters"][0]["event_id"], "pv-1");
    let sandbox = app.stop().await;
    for (id, n) in [("pv-0", 1), ("pv-1", 0), ("pv-2", 1), ("pv-3", 1)] {
        assert_eq!(sandbox.count_of(id), n, "{id}");
    }
}

#[tokio::test]
async fn an_auth_failure_stops_only_its_account_and_delivery_resumes_when_fixed() {
    let sandbox_token = "good-token";
    let app = spawn_app_with(
        SandboxOptions {
            token: Some(sandbox_token.into()),
            ..SandboxOptions::default()
        },
        |c| {
            // The first account's token is wrong; the second's is right.
            c.pinterest_token = pincapi::config::Secret::new("revoked-token");
            c.accounts.push(second_account("1234567", sandbox_token));
        },
    )
    .await;
    app.post_events(&checkout("o-a")).await;
    let (s, _) = app
        .post_raw(
            "/v1/ad_accounts/1234567/events",
            API_KEY,
            checkout("o-b").to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 202);
    app.wait_delivered(1).await;
    assert_eq!(app.sandbox.count_of("o-b"), 1);
    wait_for("the account to be reported blocked", || async {
        let (_, ready) = app.get("/readyz", None).await;
        ready.contains(ACCOUNT)
    })
    .await;
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(metrics.contains(&format!(
        "pincapi_account_blocked{{ad_account_id=\"{ACCOUNT}\"}} 1"
    )));
    let depth =
        format!("pincapi_queue_depth{{ad_account_id=\"{ACCOUNT}\",event_name=\"checkout\"}} 1");
    wait_for(
        "the queue depth in /metrics (refreshed in the background)",
        || async { app.get("/metrics", None).await.1.contains(&depth) },
    )
    .await;
    // No attempts are used up while the token is wrong: nothing is dead-lettered.
    let (_, dl) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
    assert!(!dl.contains("o-a"));
    let sb = app.stop().await;
    assert_eq!(sb.count_of("o-a"), 0);
}

#[tokio::test]
async fn an_account_in_test_mode_sends_test_true() {
    let app = spawn_app_with(SandboxOptions::default(), |c| c.test = true).await;
    app.post_events(&page_visit("pv-test")).await;
    app.wait_delivered(1).await;
    let r = &app.sandbox.sandbox.requests()[0];
    assert_eq!(r.query.as_deref(), Some("test=true"));
    assert!(app.sandbox.events()[0].test);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let (s, _) = app.get("/healthz", None).await;
    assert_eq!(s, 200);
    let (s, body) = app.get("/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    app.post_events(&json!({"data": [checkout("o-m"), page_visit("pv-m")]}))
        .await;
    app.wait_delivered(2).await;
    wait_for("delivered counters", || async {
        let (_, m) = app.get("/metrics", None).await;
        m.contains("pincapi_events_delivered_total{ad_account_id=\"549755885175\",event_name=\"page_visit\"} 1")
    })
    .await;
    let (_, m) = app.get("/metrics", None).await;
    for series in [
        "pincapi_events_ingested_total{ad_account_id=\"549755885175\",event_name=\"checkout\",source=\"api\"} 1",
        "pincapi_send_lag_seconds_count{ad_account_id=\"549755885175\"} 2",
        "pincapi_pinterest_requests_total{ad_account_id=\"549755885175\",status=\"200\"}",
        "# TYPE pincapi_queue_depth gauge",
    ] {
        assert!(m.contains(series), "missing {series}\n{m}");
    }
}

#[tokio::test]
async fn a_400_to_every_part_of_a_batch_stops_the_account_instead_of_dead_lettering() {
    let app = spawn_app().await;
    let step = || FaultStep {
        status: 400,
        ..FaultStep::default()
    };
    app.sandbox.fault(Faults {
        script: vec![step(), step(), step()],
        ..Faults::default()
    });
    let events: Vec<Value> = (0..4).map(|i| page_visit(&format!("pv-{i}"))).collect();
    app.post_events(&json!({ "data": events })).await;
    wait_for("the account to be reported stopped", || async {
        let (_, ready) = app.get("/readyz", None).await;
        ready.contains("HTTP 400")
    })
    .await;
    // Whole batch, then both halves: three requests, and no event blamed.
    assert_eq!(app.sandbox.sandbox.requests().len(), 3);
    let (_, dl) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
    assert_eq!(dl, r#"{"dead_letters":[]}"#);
    let depth =
        format!("pincapi_queue_depth{{ad_account_id=\"{ACCOUNT}\",event_name=\"page_visit\"}} 4");
    wait_for(
        "the queue depth in /metrics (refreshed in the background)",
        || async { app.get("/metrics", None).await.1.contains(&depth) },
    )
    .await;
}

#[tokio::test]
async fn a_wrong_api_base_stops_the_account_and_keeps_the_events() {
    // Without the /v5 prefix every request is a 404: no event is at fault.
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.pinterest_api_base = c.pinterest_api_base.trim_end_matches("/v5").to_owned();
    })
    .await;
    app.post_events(&checkout("o-404")).await;
    wait_for("the account to be reported stopped", || async {
        let (_, ready) = app.get("/readyz", None).await;
        ready.contains("HTTP 404") && ready.contains("pinterest_api_base")
    })
    .await;
    let (_, dl) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
    assert_eq!(dl, r#"{"dead_letters":[]}"#);
}
