//! The demo as a new user meets it: `pincapi demo` running, its dashboard opened in Chromium
//! and signed in with the printed admin key. The tiles show the shop's orders against the
//! deliveries and the share the server side recovered; the results panel shows what the
//! sandbox reports as Pinterest, with the go-live day marked and the learning period shaded;
//! the EQS panel the scores the sandbox served. Every figure is the one `/api/quality` gives.
//! The screenshot is kept as `target/artifacts/demo-dashboard.png`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pincapi::commands::demo::{DEMO_AD_ACCOUNT, DEMO_ADMIN_KEY};
use pincapi::commands::webdriver::{BrowserOptions, Chromedriver};
use serde_json::{Value, json};

/// The demo child, killed when dropped (also when the test fails).
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demos_dashboard_shows_orders_deliveries_the_recovered_share_and_pinterests_results() {
    if std::env::var_os("PINCAPI_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("PINCAPI_SKIP_BROWSER_TESTS is set: skipping a Chromium test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--sandbox-listen",
            "127.0.0.1:0",
        ])
        .arg("--store")
        .arg(dir.path().join("demo.db"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    // Its own words, until it waits for Ctrl-C: the gateway's address is on the second line.
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<String>>();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done && let Some(tx) = tx.take() {
                let _ = tx.send(std::mem::take(&mut lines));
            }
        }
    });
    let lines = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("the demo reached 'Press Ctrl-C'")
        .unwrap();
    let text = lines.join("\n");
    let gateway = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("gateway"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gateway address in:\n{text}"))
        .to_owned();
    assert!(text.contains("Audit: score"), "{text}");

    let http = reqwest::Client::new();
    let api: Value = http
        .get(format!("{gateway}/api/quality"))
        .bearer_auth(DEMO_ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &api["headline"];
    assert!(h["orders"].as_i64().unwrap() > 0, "{api:#}");
    assert_eq!(h["delivered_purchases"], h["orders"]);
    assert!(h["recovered_percent"].as_f64().unwrap() > 0.0);
    let results = &api["results"][0];
    assert_eq!(results["ad_account_id"], DEMO_AD_ACCOUNT);
    assert!(results["go_live_day"].is_string(), "{results:#}");
    assert_eq!(
        results["total"]["pinterest_checkouts"], h["orders"],
        "{results:#}"
    );
    assert!(
        !api["eqs"]["scores"].as_array().unwrap().is_empty(),
        "{api:#}"
    );

    // One account's view is the same as the whole here (the demo has one); another is refused.
    let one: Value = http
        .get(format!("{gateway}/api/quality?account={DEMO_AD_ACCOUNT}"))
        .bearer_auth(DEMO_ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["headline"], api["headline"]);
    assert_eq!(one["ad_account_id"], DEMO_AD_ACCOUNT);
    let other = http
        .get(format!("{gateway}/api/quality?account=123"))
        .bearer_auth(DEMO_ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 400);
    assert!(other.text().await.unwrap().contains("account: 123"));

    let driver = Chromedriver::start(&BrowserOptions::default())
        .await
        .expect("chromium and chromedriver (apt-get install chromium chromium-driver)");
    let s = driver.session().await.expect("a Chromium session");
    s.goto(&format!("{gateway}/dashboard")).await.unwrap();
    s.fill("#key", DEMO_ADMIN_KEY).await.unwrap();
    s.click("#sign-in").await.unwrap();
    s.wait_for(
        "the dashboard",
        "document.getElementById('tile-orders')",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let shown = s
        .execute(
            "const v = id => document.getElementById(id).dataset.value; \
             const rows = [...document.querySelectorAll('.results-table tr')]; \
             const total = rows[rows.length - 1].querySelectorAll('td'); \
             return {orders: v('tile-orders'), recovered: v('tile-recovered'), \
                     goLive: !!document.getElementById('go-live'), \
                     learning: !!document.getElementById('learning-period'), \
                     pinterestTotal: total[3].textContent, \
                     eqs: document.querySelectorAll('#eqs-scores tr').length};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        shown["orders"],
        json!(format!("{}/{}", h["orders"], h["delivered_purchases"]))
    );
    assert_eq!(
        shown["recovered"].as_str().unwrap().parse::<f64>().unwrap(),
        h["recovered_percent"].as_f64().unwrap()
    );
    assert_eq!(shown["goLive"], true, "{shown}");
    assert_eq!(shown["learning"], true, "{shown}");
    assert_eq!(
        shown["pinterestTotal"],
        json!(results["total"]["pinterest_checkouts"].to_string())
    );
    assert_eq!(
        shown["eqs"].as_u64().unwrap(),
        api["eqs"]["scores"].as_array().unwrap().len() as u64
    );
    let png = s.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("demo-dashboard.png"), png).unwrap();
    s.quit().await;
    driver.stop().await;
    drop(demo);
}
