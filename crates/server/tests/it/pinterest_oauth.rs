//! Pinterest connected for good: from only an app id and secret, `pincapi pinterest connect`
//! goes through the sandbox's authorize page, an ad account is added with a minted conversion
//! token, and events, audience syncs and EQS polls go on across token expiries.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pincapi::clock::ManualClock;
use pincapi::config::Secret;
use pincapi::sandbox::SandboxOptions;
use pincapi::sandbox::oauth::OAuthApp;

use serde_json::{Value, json};

use crate::helpers::*;

const APP_ID: &str = "1234567";
const APP_SECRET: &str = "pinterest-app-secret";
/// An ad account connected while the gateway runs.
const SECOND: &str = "549755885176";
const KEY: &str = "5e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

fn oauth_sandbox() -> SandboxOptions {
    SandboxOptions {
        oauth_app: Some(OAuthApp {
            app_id: APP_ID.into(),
            app_secret: APP_SECRET.into(),
            token_lifetime_secs: 3600,
            ad_accounts: vec![ACCOUNT.into(), SECOND.into()],
        }),
        ..SandboxOptions::default()
    }
}

#[tokio::test]
async fn from_an_app_id_and_secret_connect_mints_a_conversion_token_and_refreshes_keep_everything_going()
 {
    let sandbox = TestSandbox::start(oauth_sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pincapi.db");
    let file = dir.path().join("pincapi.toml");
    std::fs::write(
        &file,
        format!(
            "store = \"sqlite://{}\"\npinterest_api_base = \"{}\"\n\
             pinterest_oauth_authorize_url = \"http://{}/oauth/\"\n\
             pinterest_app_id = \"{APP_ID}\"\npinterest_app_secret = \"{APP_SECRET}\"\n\
             secret_key = \"{KEY}\"\n",
            db.display(),
            sandbox.base(),
            sandbox.addr
        ),
    )
    .unwrap();

    // connect prints the authorize URL on a line of its own and waits for the redirect; the
    // sandbox approves and redirects to the loopback callback.
    let said = connect_through(&file, ACCOUNT).await;
    assert!(
        said.contains(&format!("Ad account {ACCOUNT}: conversion token minted")),
        "{said}"
    );
    assert_eq!(sandbox.sandbox.oauth_grants("authorization_code"), 1);

    // The gateway, with no ad account in its configuration: the connected one is used, with
    // its minted conversion token (the sandbox takes no other on the events endpoint).
    let clock = ManualClock::starting_now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = spawn_app_beside(clock.clone(), sandbox, listener, dir, |c| {
        c.ad_account_id = None;
        c.pinterest_token = Secret::default();
        c.pinterest_app_id = Some(APP_ID.into());
        c.pinterest_app_secret = Secret::new(APP_SECRET);
        c.secret_key = Secret::new(KEY);
        c.delivery.linger_ms = 0;
        c.quality.eqs_interval_secs = 1;
        c.audiences.enabled = true;
        c.audiences.sync_interval_secs = 1;
    })
    .await;
    let sb = &app.sandbox.sandbox;
    let eqs_polls = || {
        sb.requests()
            .iter()
            .filter(|r| r.path.ends_with("/conversion_eqs") && r.status == 200)
            .count()
    };
    let syncs = || {
        sb.requests()
            .iter()
            .filter(|r| r.path.contains("/customer_lists") && r.status == 200)
            .count()
    };
    let mut sent = 0;
    // Three proactive refreshes (at 80 % of the token's life on the gateway's clock) and one
    // after a 401 (the sandbox ends its access tokens).
    for round in 0..=4usize {
        if (1..=3).contains(&round) {
            // Nothing in flight when the clock jumps: a lease ended under a request would have
            // its batch sent again.
            let db = app.db.clone();
            wait_for("every event settled", || {
                let db = db.clone();
                async move {
                    pincapi::store::sqlite::count_states(&db)
                        .unwrap()
                        .iter()
                        .all(|(state, _)| state == "delivered")
                }
            })
            .await;
            clock.advance(Duration::from_secs(2900));
        } else if round == 4 {
            sb.revoke_access_tokens();
        }
        let (before_eqs, before_sync) = (eqs_polls(), syncs());
        // A new purchaser: the next audience sync has a member to add.
        let mut event = checkout(&format!("oauth-order-{round}"));
        event["user_data"]["em"] = json!(format!("buyer{round}@example.com"));
        let (status, _) = app.post_events(&event).await;
        assert_eq!(status, 202);
        sent += 1;
        app.wait_delivered(sent).await;
        wait_for(&format!("round {round}: refreshes"), || async {
            sb.oauth_grants("refresh_token") >= round
        })
        .await;
        wait_for(&format!("round {round}: an EQS poll"), || async {
            eqs_polls() > before_eqs
        })
        .await;
        wait_for(&format!("round {round}: an audience sync"), || async {
            syncs() > before_sync
        })
        .await;
    }
    assert_eq!(sb.oauth_grants("refresh_token"), 4);

    // Another ad account, connected while the gateway runs: no restart.
    let url = app.url(&format!("/v1/ad_accounts/{SECOND}/events"));
    let post = |body: Value| {
        let http = app.http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(checkout("second-early")).await, 404);
    let said = connect_through(&file, SECOND).await;
    assert!(
        said.contains(&format!("Ad account {SECOND}: conversion token minted")),
        "{said}"
    );
    wait_for("the second account to be taken", || async {
        post(checkout("second-1")).await == 202
    })
    .await;
    wait_for("the second account's event at Pinterest", || async {
        sb.events()
            .iter()
            .any(|e| e.ad_account_id == SECOND && e.event["event_id"] == "second-1")
    })
    .await;
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pincapi_oauth_token_expiry_seconds ")),
        "{metrics}"
    );
    let sandbox = app.stop().await;
    for round in 0..=4 {
        assert_eq!(sandbox.count_of(&format!("oauth-order-{round}")), 1);
    }
}

/// Runs `pincapi pinterest connect` through the sandbox's authorize page with the config
/// file `file`; returns what it printed.
async fn connect_through(file: &std::path::Path, ad_account: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args([
            "pinterest",
            "connect",
            "--listen",
            "127.0.0.1:0",
            "--ad-account",
            ad_account,
            "-c",
        ])
        .arg(file)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("http") {
                let _ = url_tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    let url = tokio::task::spawn_blocking(move || url_rx.recv().unwrap())
        .await
        .unwrap();
    assert!(url.contains(&format!("client_id={APP_ID}")), "{url}");
    assert!(url.contains("response_type=code") && url.contains("scope=ads%3Aread%2Cads%3Awrite"));
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("connected to Pinterest")
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reader.join().unwrap().join("\n")
}

#[tokio::test]
async fn killing_the_gateway_during_refreshes_never_leaves_it_without_a_working_refresh_token() {
    // One-second access tokens: `serve` refreshes at once at each start, and each 0.8 s.
    let sandbox = TestSandbox::start(SandboxOptions {
        oauth_app: Some(OAuthApp {
            app_id: APP_ID.into(),
            app_secret: APP_SECRET.into(),
            token_lifetime_secs: 1,
            ad_accounts: vec![ACCOUNT.into()],
        }),
        ..SandboxOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pincapi.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nstore = \"sqlite://{}\"\npinterest_api_base = \"{}\"\n\
             pinterest_oauth_authorize_url = \"http://{}/oauth/\"\n\
             pinterest_app_id = \"{APP_ID}\"\npinterest_app_secret = \"{APP_SECRET}\"\n\
             secret_key = \"{KEY}\"\napi_key = \"{API_KEY}\"\nadmin_key = \"{ADMIN_KEY}\"\n\
             [quality]\neqs_interval_secs = 1\n",
            dir.path().join("pincapi.db").display(),
            sandbox.base(),
            sandbox.addr
        ),
    )
    .unwrap();
    connect_through(&file, ACCOUNT).await;
    let sb = &sandbox.sandbox;
    let serve = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(["serve", "-c"])
            .arg(&file)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        announced_address(&mut child);
        child
    };
    for round in 0..20u64 {
        let mut child = serve();
        let before = sb.oauth_grants("refresh_token");
        wait_for(&format!("round {round}: a refresh"), || async {
            sb.oauth_grants("refresh_token") > before
        })
        .await;
        // A moment after a refresh went out: sometimes before its answer is saved, sometimes
        // after.
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 40)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // After all that, a gateway still refreshes, and Pinterest never refused a refresh token.
    let mut child = serve();
    let before = sb.oauth_grants("refresh_token");
    wait_for("a refresh after the kills", || async {
        sb.oauth_grants("refresh_token") >= before + 2
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(sb.refused_token_requests(), 0);
}
