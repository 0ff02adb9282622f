//! `POST /v5/ad_accounts/{id}/events` on the gateway: Pinterest's own endpoint, so an existing
//! integration changes only its base URL. Driven by Pinterest's official Python SDK.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// The Python that has `pinterest-api-sdk` (scripts/test puts it in `target/pysdk`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PINCAPI_PYTHON_SDK") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/pysdk/bin/python"
    ))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn pinterests_python_sdk_sends_to_the_gateway_and_each_event_reaches_pinterest_once_hashed() {
    let app = spawn_app().await;
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs pinterest-api-sdk there (python3 -m venv \
         target/pysdk && target/pysdk/bin/pip install pinterest-api-sdk)",
        python.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_send.py");
    let base = app.url("/v5");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &base, API_KEY, ACCOUNT, "sdk"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        parsed,
        json!({"num_events_received": 3, "num_events_processed": 3,
               "statuses": ["processed", "processed", "processed"]})
    );
    app.wait_delivered(3).await;
    let sandbox = app.stop().await;
    let em = sha256_hex("buyer.one@example.com");
    for id in ["sdk-checkout", "sdk-cart", "sdk-visit"] {
        assert_eq!(sandbox.count_of(id), 1, "{id}");
        let e = sandbox
            .events()
            .into_iter()
            .find(|e| e.event["event_id"] == id)
            .unwrap();
        assert_eq!(e.event["user_data"]["em"], json!([em]));
        assert!(!e.test);
    }
}

#[tokio::test]
async fn the_v5_endpoint_answers_as_pinterest_does() {
    let app = spawn_app().await;
    let url = app.url(&format!("/v5/ad_accounts/{ACCOUNT}/events"));
    let now = now();
    let good = |id: &str| {
        json!({"event_name": "checkout", "action_source": "web", "event_time": now,
               "event_id": id, "user_data": {"em": ["a@example.com"], "ph": null},
               "custom_data": {"value": "10.00", "currency": "USD", "contents": null},
               "partner_name": null, "app_id": null})
    };
    // A partial failure: 422 with Pinterest's DetailedError, the results in `details`.
    let mut bad = good("v5-bad");
    bad["event_name"] = json!("not_an_event");
    let resp = app
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .query(&[("test", "True")])
        .json(&json!({"data": [good("v5-good"), bad]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 953);
    let d = &body["details"];
    assert_eq!(
        (
            d["num_events_received"].clone(),
            d["num_events_processed"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(d["events"][0]["status"], "processed");
    assert_eq!(d["events"][1]["status"], "failed");
    assert!(
        d["events"][1]["error_message"]
            .as_str()
            .unwrap()
            .contains("event_name"),
        "{body}"
    );
    // All taken: 200, and ?test=True is sent to Pinterest as a test.
    app.wait_delivered(1).await;
    let resp = app
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&json!({"data": [good("v5-second")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["events"][0]["status"], "processed");
    // Pinterest's error shape for a wrong key.
    let resp = app
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({"data": [good("v5-third")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 2);
    app.wait_delivered(2).await;
    let sandbox = app.stop().await;
    let first = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_id"] == "v5-good")
        .unwrap();
    assert!(first.test, "?test=True reached Pinterest as a test");
    assert_eq!(sandbox.count_of("v5-third"), 0);
}
