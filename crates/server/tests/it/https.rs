//! HTTPS in front of the gateway as `deploy/Caddyfile` sets it up, run by the real Caddy with
//! its own private CA (`tls internal`): a signed Shopify webhook and a `/collect` beacon over
//! HTTPS reach Pinterest, and the shopper's address is taken from X-Forwarded-For only when
//! the gateway trusts the proxy.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use pincapi::config::Config;
use pincapi::sandbox::SandboxOptions;
use pincapi::shopify::webhook::sign;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::shopify::{SECRET, SHOP, TAG_ID, sale, shop};

struct Caddy {
    child: Child,
    port: u16,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Caddy with the repository's Caddyfile, HTTPS on a free port for `localhost`, proxying to
/// `upstream`; and a client that trusts Caddy's root certificate only.
async fn caddy(upstream: &str, port: u16) -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let caddyfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/Caddyfile");
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env_clear()
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env(
            "CADDY_GLOBAL_OPTIONS",
            format!("admin off\nskip_install_trust\nhttp_port {http_port}\nhttps_port {port}"),
        )
        .env("PINCAPI_DOMAIN", format!("localhost:{port}"))
        .env("PINCAPI_TLS", "tls internal")
        .env("PINCAPI_UPSTREAM", upstream)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("caddy.log")).unwrap())
        .spawn()
        .expect("caddy starts (apt-get install caddy; ./scripts/test does)");
    let root = dir.path().join("data/caddy/pki/authorities/local/root.crt");
    let log = dir.path().join("caddy.log");
    wait_for("Caddy's root certificate", || async {
        std::fs::metadata(&root).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let pem = std::fs::read(&root).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/healthz");
    wait_for("the gateway over HTTPS", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("certificate"),
        "Caddy made its certificate"
    );
    Caddy {
        child,
        port,
        client,
        _dir: dir,
    }
}

fn behind_caddy(c: &mut Config, port: u16, trust: bool) {
    c.shopify.shops = vec![shop(None)];
    c.ingest.merge_window_secs = 0;
    c.tag_id = Some(TAG_ID.into());
    c.public_url = Some(format!("https://localhost:{port}"));
    c.allowed_origins = Some(format!("https://localhost:{port}"));
    if trust {
        c.browser.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    }
}

/// A `/collect` page visit over HTTPS, claiming (as a CDN before Caddy would) to be for
/// 203.0.113.7; returns the address Pinterest received.
async fn beacon_ip(app: &TestApp, caddy: &Caddy, event_id: &str) -> Value {
    let resp = caddy
        .client
        .post(format!("https://localhost:{}/collect", caddy.port))
        .header("origin", format!("https://localhost:{}", caddy.port))
        .header("content-type", "text/plain;charset=UTF-8")
        .header(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)",
        )
        .header("x-forwarded-for", "203.0.113.7")
        .body(json!({"event_name": "page_visit", "event_id": event_id}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let sb = &app.sandbox;
    wait_for(&format!("{event_id} at Pinterest"), || async {
        sb.count_of(event_id) == 1
    })
    .await;
    sb.events()
        .into_iter()
        .find(|e| e.event["event_id"] == event_id)
        .unwrap()
        .event["user_data"]["client_ip_address"]
        .clone()
}

#[tokio::test]
async fn a_signed_webhook_and_a_beacon_over_caddys_https_reach_pinterest() {
    let port = free_port();
    let app = spawn_app_with(SandboxOptions::default(), move |c| {
        behind_caddy(c, port, true)
    })
    .await;
    let caddy = caddy(&app.addr.to_string(), port).await;

    let body = serde_json::to_vec(&sale(7_700_001)).unwrap();
    let resp = caddy
        .client
        .post(format!("https://localhost:{port}/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", sign(&body, SECRET))
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", "wh-https-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let sb = &app.sandbox;
    wait_for("the order's purchase at Pinterest", || async {
        sb.events().iter().any(|e| {
            e.event["event_name"] == "checkout" && e.event["custom_data"]["order_id"] == "7700001"
        })
    })
    .await;

    // Caddy trusts a private-range client's X-Forwarded-For and appends its own peer; the
    // gateway trusts Caddy, so it takes the shopper's address.
    assert_eq!(
        beacon_ip(&app, &caddy, "https-pv-trusted").await,
        "203.0.113.7"
    );
}

#[tokio::test]
async fn behind_an_untrusted_proxy_the_beacon_keeps_the_connections_address() {
    let port = free_port();
    let app = spawn_app_with(SandboxOptions::default(), move |c| {
        behind_caddy(c, port, false)
    })
    .await;
    let caddy = caddy(&app.addr.to_string(), port).await;
    // The gateway does not list Caddy in browser.trusted_proxies: X-Forwarded-For is ignored.
    assert_eq!(
        beacon_ip(&app, &caddy, "https-pv-untrusted").await,
        "127.0.0.1"
    );
}
