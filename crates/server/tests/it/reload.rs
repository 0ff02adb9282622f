//! SIGHUP under load, on SQLite and on PostgreSQL: the real binary re-reads its config file and
//! takes an added ad account, a changed one and a removed one, and a shop swapped for another,
//! while requests keep arriving on kept-alive connections; every request is answered, every
//! acknowledged event reaches Pinterest once. A bad file is refused with the key's name and
//! the running configuration stays.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pincapi::sandbox::SandboxOptions;
use pincapi::shopify::webhook::sign;
use serde_json::Value;

use crate::helpers::*;
use crate::pg::TestDatabase;

const REMOVED: &str = "549755885176";
const ADDED: &str = "549755885177";
const OLD_SHOP: &str = "reload-one.myshopify.com";
const NEW_SHOP: &str = "reload-two.myshopify.com";

/// A config file's text: `ACCOUNT` (in test mode or not), one more account, one shop.
fn config(store: &str, api_base: &str, test: bool, other: &str, shop: &str, extra: &str) -> String {
    format!(
        "store = \"{store}\"\nlisten = \"127.0.0.1:0\"\napi_key = \"{API_KEY}\"\n\
         admin_key = \"{ADMIN_KEY}\"\npinterest_api_base = \"{api_base}\"\n\
         log = \"info\"\n{extra}\n\
         [delivery]\nretry_scale = 0.001\npoll_interval_ms = 20\nrequest_timeout_secs = 2\n\
         [[accounts]]\nid = \"{ACCOUNT}\"\ntoken = \"{TOKEN}\"\ntest = {test}\n\
         [[accounts]]\nid = \"{other}\"\ntoken = \"token-{other}\"\n\
         [[shopify.shops]]\ndomain = \"{shop}\"\nsecrets = [\"secret-{shop}\"]\n"
    )
}

struct Gateway {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(file: &std::path::Path, log: std::path::PathBuf) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(["serve", "-c"])
            .arg(file)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the pincapi binary starts");
        let base = announced_address(&mut child);
        Gateway { child, base, log }
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }

    async fn reloads(&self, http: &reqwest::Client, result: &str) -> u64 {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!("pincapi_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn post(&self, http: &reqwest::Client, account: &str, id: &str) -> u16 {
        http.post(format!("{}/v1/ad_accounts/{account}/events", self.base))
            .bearer_auth(API_KEY)
            .json(&checkout(id))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn webhook(&self, http: &reqwest::Client, shop: &str, secret: &str, id: u64) -> u16 {
        let body = serde_json::to_vec(&crate::shopify::sale(id)).unwrap();
        http.post(format!("{}/webhooks/shopify", self.base))
            .header("Content-Type", "application/json")
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Hmac-Sha256", sign(&body, secret))
            .header("X-Shopify-Shop-Domain", shop)
            .header("X-Shopify-Webhook-Id", format!("wh-{id}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn reload_under_load(store: &str) {
    let sandbox = TestSandbox::start(SandboxOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pincapi.toml");
    let write = |text: String| std::fs::write(&file, text).unwrap();
    write(config(store, &sandbox.base(), false, REMOVED, OLD_SHOP, ""));
    let gw = Gateway::start(&file, dir.path().join("stderr.log"));
    // One client, so requests ride kept-alive connections across the reload.
    let http = reqwest::Client::new();

    // Before: the shop and both accounts take what they are sent.
    assert_eq!(gw.post(&http, REMOVED, "before-removed").await, 202);
    assert_eq!(
        gw.webhook(&http, OLD_SHOP, &format!("secret-{OLD_SHOP}"), 9_000_001)
            .await,
        200
    );

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let other: Arc<Mutex<Vec<u16>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, other, stop, http) = (
            Arc::clone(&acked),
            Arc::clone(&other),
            Arc::clone(&stop),
            http.clone(),
        );
        let url = format!("{}/v1/ad_accounts/{ACCOUNT}/events", gw.base);
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("reload-{i}");
                i += 1;
                let status = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&checkout(&id))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                match status {
                    202 => acked.lock().unwrap().push(id),
                    s => other.lock().unwrap().push(s),
                }
            }
        })
    };
    wait_for("load before the reload", || async {
        acked.lock().unwrap().len() >= 100
    })
    .await;

    // ACCOUNT goes to test mode (changed), REMOVED goes, ADDED comes, the shop is swapped;
    // a restart-only key changes too and is kept.
    write(config(
        store,
        &sandbox.base(),
        true,
        ADDED,
        NEW_SHOP,
        "shutdown_grace_secs = 7",
    ));
    gw.hup();
    wait_for("the reload applied", || async {
        gw.reloads(&http, "applied").await == 1
    })
    .await;
    let at_reload = acked.lock().unwrap().len();
    wait_for("load after the reload", || async {
        acked.lock().unwrap().len() >= at_reload + 100
    })
    .await;

    assert_eq!(gw.post(&http, ADDED, "after-added").await, 202);
    assert_eq!(gw.post(&http, REMOVED, "after-removed").await, 404);
    assert_eq!(
        gw.webhook(&http, NEW_SHOP, &format!("secret-{NEW_SHOP}"), 9_000_002)
            .await,
        200
    );
    assert_eq!(
        gw.webhook(&http, OLD_SHOP, &format!("secret-{OLD_SHOP}"), 9_000_003)
            .await,
        401
    );
    let sb = &sandbox;
    wait_for("the added account's event at Pinterest", || async {
        sb.events()
            .iter()
            .any(|e| e.ad_account_id == ADDED && e.event["event_id"] == "after-added")
    })
    .await;

    // A bad file is refused with the key's name; the running configuration stays.
    write(config(
        store,
        &sandbox.base(),
        true,
        ADDED,
        NEW_SHOP,
        "[quality]\neqs_interval_secs = 0",
    ));
    gw.hup();
    wait_for("the bad file refused", || async {
        gw.reloads(&http, "refused").await == 1
    })
    .await;
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        log.contains("refused") && log.contains("quality.eqs_interval_secs"),
        "the refusal names the key:\n{log}"
    );
    assert!(
        log.contains("shutdown_grace_secs"),
        "the kept restart-only key is named:\n{log}"
    );
    assert_eq!(gw.post(&http, ADDED, "after-refused").await, 202);

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        other.lock().unwrap().clone(),
        Vec::<u16>::new(),
        "every request across the reload was acknowledged"
    );
    let ids = acked.lock().unwrap().clone();
    wait_for("every acknowledged event at Pinterest", || async {
        ids.iter().all(|id| sb.count_of(id) >= 1) && sb.count_of("after-refused") == 1
    })
    .await;
    let events = sandbox.events();
    for id in &ids {
        assert_eq!(sandbox.count_of(id), 1, "{id} exactly once");
    }
    // The change reached delivery: ACCOUNT's later events went in test mode.
    let test_mode: Vec<&Value> = events
        .iter()
        .filter(|e| e.ad_account_id == ACCOUNT && e.test)
        .map(|e| &e.event)
        .collect();
    assert!(
        !test_mode.is_empty(),
        "the changed account sends in test mode"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.ad_account_id == REMOVED && e.event["event_id"] == "after-removed"),
        "nothing is sent to the removed account"
    );
}

#[tokio::test]
async fn sighup_under_load_applies_accounts_and_shops_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("pincapi.db").display());
    reload_under_load(&store).await;
}

#[tokio::test]
async fn sighup_under_load_applies_accounts_and_shops_on_postgres() {
    let db = TestDatabase::create().await;
    reload_under_load(&db.url).await;
}
