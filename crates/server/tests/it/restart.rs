//! The gateway as a real process: stopped with SIGKILL while holding queued events, started
//! again, it delivers each of them exactly once.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::*;

/// Starts `pincapi serve` with environment configuration and returns it with its address.
fn start_gateway(db: &std::path::Path, api_base: &str) -> (Child, String) {
    start_gateway_with(db, api_base, &[])
}

fn start_gateway_with(
    db: &std::path::Path,
    api_base: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("serve")
        .env_clear()
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env("PINCAPI_STORE", format!("sqlite://{}", db.display()))
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_ADMIN_KEY", ADMIN_KEY)
        .env("PINCAPI_PINTEREST_API_BASE", api_base)
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .env("PINCAPI_DELIVERY__RETRY_SCALE", "0.001")
        .env("PINCAPI_DELIVERY__POLL_INTERVAL_MS", "20")
        .env("PINCAPI_DELIVERY__REQUEST_TIMEOUT_SECS", "2")
        .env("PINCAPI_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the pincapi binary starts");
    let addr = announced_address(&mut child);
    (child, addr)
}

#[tokio::test]
async fn events_queued_when_the_gateway_is_killed_are_delivered_exactly_once_after_restart() {
    let sandbox = TestSandbox::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let http = reqwest::Client::new();

    // Pinterest unreachable: nothing listens on port 1.
    let (mut first, addr) = start_gateway(&db, "http://127.0.0.1:1/v5");
    let mut ids = Vec::new();
    for batch in 0..5 {
        let events: Vec<Value> = (0..20)
            .map(|i| {
                let id = format!("order-{batch}-{i}");
                ids.push(id.clone());
                checkout(&id)
            })
            .collect();
        let resp = http
            .post(format!("{addr}/v1/events"))
            .bearer_auth(API_KEY)
            .json(&json!({ "data": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["accepted"], 20);
    }
    // Acknowledged means durable: kill the process without any chance to flush.
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, addr) = start_gateway(&db, &sandbox.base());
    wait_for("every event at the sandbox", || async {
        sandbox.events().len() >= ids.len()
    })
    .await;
    // A repeat of an already delivered event is refused as a duplicate, not sent again.
    let resp = http
        .post(format!("{addr}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&checkout(&ids[0]))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["duplicates"], 1);
    // Graceful stop (SIGTERM), so nothing is still in flight when we count.
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait().unwrap().success());

    assert_eq!(sandbox.events().len(), ids.len());
    for id in &ids {
        assert_eq!(sandbox.count_of(id), 1, "{id}");
    }
}

#[tokio::test]
async fn a_second_gateway_on_the_same_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let (mut first, _) = start_gateway(&db, "http://127.0.0.1:1/v5");
    let out = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("serve")
        .env_clear()
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env("PINCAPI_STORE", format!("sqlite://{}", db.display()))
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another pincapi process"), "{err}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_does_not_keep_the_gateway_from_stopping() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let (mut child, addr) = start_gateway_with(
        &db,
        "http://127.0.0.1:1/v5",
        &[("PINCAPI_SHUTDOWN_GRACE_SECS", "1")],
    );
    let host = addr.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(host).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"data\":["
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // It stops after its grace period although the request never completes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(slow);
}
