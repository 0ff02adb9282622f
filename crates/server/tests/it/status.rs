//! `pincapi status`: passes on a healthy gateway, and fails naming the cause and the fix for a
//! wrong conversion token, an expired OAuth token whose refresh fails, a missing webhook
//! subscription, no browser events for 24 hours, and an unreachable store.

use std::path::Path;
use std::process::Command;

use pincapi::clock::SystemClock;
use pincapi::config::Synchronous;
use pincapi::sandbox::SandboxOptions;
use pincapi::sealed::SecretKey;
use pincapi::shopify::standin::StandinOptions;
use pincapi::store::CredentialStore;
use pincapi::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::helpers::*;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

async fn status(dir: &Path, toml: String) -> (bool, Vec<Value>) {
    let file = dir.join(format!("status-{}.toml", rand::random::<u32>()));
    std::fs::write(&file, toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(["status", "--json", "-c"])
            .arg(&file)
            .env_clear()
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), checks)
}

fn find<'a>(checks: &'a [Value], check: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {checks:?}"))
}

fn base_toml(store: &str, api_base: &str, token: &str) -> String {
    format!(
        "store = \"{store}\"\npinterest_api_base = \"{api_base}\"\n\
         ad_account_id = \"{ACCOUNT}\"\npinterest_token = \"{token}\"\napi_key = \"{API_KEY}\"\n"
    )
}

#[tokio::test]
async fn status_passes_on_a_healthy_gateway_and_names_each_failure_with_its_fix() {
    let app = spawn_app_with(
        SandboxOptions {
            token: Some(TOKEN.into()),
            ..SandboxOptions::default()
        },
        |_| {},
    )
    .await;
    // A browser event (the collector), from the gateway's own origin.
    let resp = app
        .http
        .post(app.url("/collect"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", "Mozilla/5.0 (iPhone)")
        .body(
            json!({"event_name": "page_visit", "event_id": "status-visit-1",
                   "event_time": now(), "event_source_url": "https://shop.example/"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", app.db.display());
    let api = app.sandbox.base();

    // Healthy: nothing fails (what is not set up is a warning).
    let (passed, checks) = status(dir.path(), base_toml(&sqlite, &api, TOKEN)).await;
    assert!(passed, "{checks:#?}");
    assert_eq!(find(&checks, "store")["status"], "ok");
    assert_eq!(find(&checks, "conversion_token")["status"], "ok");
    assert_eq!(find(&checks, "browser_events")["status"], "ok");
    for c in &checks {
        assert!(c["status"] == "ok" || c["status"] == "warning", "{c}");
        assert!(c["status"] == "ok" || c["fix"].is_string(), "{c}");
    }
    // The same checks inside serve: /api/status (admin key) and the dashboard's Setup panel.
    let (code, body) = app.get("/api/status", Some(ADMIN_KEY)).await;
    assert_eq!(code, 200);
    let served: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(find(&served, "store")["status"], "ok");
    assert_eq!(find(&served, "browser_events")["status"], "ok");
    assert_eq!(app.get("/api/status", None).await.0, 401);
    let (_, html) = app.get("/dashboard", Some(ADMIN_KEY)).await;
    assert!(
        html.contains("<section id=\"setup\"><h2>Setup</h2>"),
        "{html}"
    );

    // A wrong conversion token.
    let (passed, checks) = status(dir.path(), base_toml(&sqlite, &api, "wrong-token")).await;
    assert!(!passed);
    let c = find(&checks, "conversion_token");
    assert_eq!(c["status"], "failing");
    assert!(c["detail"].as_str().unwrap().contains("401"), "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("conversion access token"),
        "{c}"
    );

    // No browser event in 24 hours (a store that never had one).
    let empty = format!("sqlite://{}", dir.path().join("empty.db").display());
    let (passed, checks) = status(dir.path(), base_toml(&empty, &api, TOKEN)).await;
    assert!(!passed);
    let c = find(&checks, "browser_events");
    assert_eq!(c["status"], "failing");
    assert!(c["fix"].as_str().unwrap().contains("pixel"), "{c}");

    // An unreachable store.
    let (passed, checks) = status(
        dir.path(),
        base_toml("postgres://postgres@127.0.0.1:1/none", &api, TOKEN),
    )
    .await;
    assert!(!passed);
    let c = find(&checks, "store");
    assert_eq!(c["status"], "failing");
    assert!(c["fix"].as_str().unwrap().contains("store"), "{c}");

    // An expired OAuth token whose refresh fails: the sandbox knows no such refresh token.
    let oauth_db = dir.path().join("oauth.db");
    {
        let store = SqliteStore::open(&oauth_db, Synchronous::Normal).unwrap();
        let key = SecretKey::from_hex(KEY).unwrap();
        let token = json!({"access_token": "pina_expired", "obtained_at_ms": 0,
                           "expires_at_ms": 1000, "refresh_token": "pinr_unknown", "scope": "ads:read"});
        let name = "pinterest:oauth";
        store
            .save_credential(name, key.seal(name, token.to_string().as_bytes()), 0)
            .await
            .unwrap();
    }
    let toml = format!(
        "{}pinterest_app_id = \"1234\"\npinterest_app_secret = \"s\"\nsecret_key = \"{KEY}\"\n",
        base_toml(&format!("sqlite://{}", oauth_db.display()), &api, TOKEN)
    );
    let (passed, checks) = status(dir.path(), toml).await;
    assert!(!passed);
    let c = find(&checks, "oauth_token");
    assert_eq!(c["status"], "failing", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("pincapi pinterest connect"),
        "{c}"
    );

    // A missing webhook subscription (nothing was ever connected at the stand-in).
    let standin = Standin::start_with(StandinOptions {
        shop_domain: "status-test.myshopify.com".into(),
        ..StandinOptions {
            clock: SystemClock::shared(),
            ..StandinOptions::default()
        }
    })
    .await;
    let o = standin.standin.options();
    let toml = format!(
        "{}public_url = \"https://t.shop.example\"\nsecret_key = \"{KEY}\"\n\
         [[shopify.shops]]\ndomain = \"status-test.myshopify.com\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\nadmin_api_base = \"{}\"\n",
        base_toml(&sqlite, &api, TOKEN),
        o.client_id,
        o.client_secret,
        standin.base()
    );
    let (passed, checks) = status(dir.path(), toml).await;
    assert!(!passed);
    let c = find(&checks, "shopify_webhooks");
    assert_eq!(c["status"], "failing", "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("orders/create"),
        "{c}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("pincapi shopify connect"),
        "{c}"
    );
    assert_eq!(find(&checks, "shopify_credentials")["status"], "ok");
}
