//! `pincapi audit` end to end: the real binary against the demo storefront's planted pages,
//! the Shopify stand-in and the Pinterest sandbox, its figures checked against figures the
//! test computes from what it put there.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use pincapi::browser::storefront::CORE_STUB_PATH;
use pincapi::config::browser::BrowserConfig;
use pincapi::sandbox::SandboxOptions;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

const TAG_ID: &str = "2612345678901";
const SHOP: &str = "audit-test.myshopify.com";
const DOCS_ORDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/shopify/orders-create.shopify-docs-2026-07.json"
));

async fn audit(dir: &Path, args: &[String]) -> (Output, Value, String) {
    let json_path = dir.join("audit.json");
    let html_path = dir.join("audit.html");
    let mut all = vec![
        "audit".to_owned(),
        "--out".to_owned(),
        html_path.display().to_string(),
        "--json".to_owned(),
        json_path.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    let cwd = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(&all)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = std::fs::read(&json_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let html = std::fs::read_to_string(&html_path).unwrap_or_default();
    (out, report, html)
}

fn findings_about<'a>(report: &'a Value, subject: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["subject"] == subject)
        .collect()
}

fn has(report: &Value, check: &str, subject: &str) -> bool {
    findings_about(report, subject).iter().any(|f| {
        f["check"] == check && f["severity"] != "ok" && !f["fix"].as_str().unwrap().is_empty()
    })
}

#[tokio::test]
async fn the_audit_finds_each_planted_storefront_problem_and_none_on_the_clean_page() {
    let app = spawn_app_with(SandboxOptions::default(), |c| {
        c.tag_id = Some(TAG_ID.into());
        c.browser = BrowserConfig {
            demo_storefront: true,
            tag_script_url: CORE_STUB_PATH.into(),
            ..BrowserConfig::default()
        };
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let site = app.url("/demo/shop");
    let (out, report, html) = audit(
        dir.path(),
        &[
            "--site".into(),
            site.clone(),
            "--sitemap".into(),
            app.url("/demo/shop/sitemap.xml?planted=1"),
            "--allow-private".into(),
            "--tag-id".into(),
            TAG_ID.into(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let product = |id: &str, tag: &str| app.url(&format!("/demo/shop/products/{id}?tag={tag}"));
    assert!(
        has(&report, "tag_missing", &product("8002", "missing")),
        "{report:#}"
    );
    assert!(
        has(&report, "tag_duplicate", &product("8003", "duplicate")),
        "{report:#}"
    );
    assert!(
        has(&report, "tag_wrong_id", &product("8004", "wrong-id")),
        "{report:#}"
    );
    let app_page = app.url("/demo/shop?tag=pinterest-app");
    assert!(has(&report, "pinterest_app_tag", &app_page), "{report:#}");
    assert!(has(&report, "tag_duplicate", &app_page), "{report:#}");
    assert!(
        has(&report, "tag_manager", &app.url("/demo/shop/cart?tag=gtm")),
        "{report:#}"
    );
    // No page passes an email (the thank-you page is in no sitemap): one finding for the site.
    assert!(has(&report, "no_enhanced_match", &site), "{report:#}");
    // The clean product: only "ok".
    let clean = app.url("/demo/shop/products/8001");
    let about = findings_about(&report, &clean);
    assert!(!about.is_empty(), "nothing about {clean}");
    assert!(
        about.iter().all(|f| f["severity"] == "ok"),
        "{clean}: {about:?}"
    );
    let score = report["score"].as_u64().unwrap();
    assert!(score < 100, "{score}");
    for f in report["findings"].as_array().unwrap() {
        assert!(["ok", "warning", "error"].contains(&f["severity"].as_str().unwrap()));
    }
    // One self-contained file: no script, no stylesheet or image from elsewhere.
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    assert!(html.contains("tag_missing") || html.contains("no Pinterest Tag on this page"));
    app.stop().await;
}

/// Shopify's sample order as a sale created `days_ago` days ago, with its own id, value,
/// email (or none) and IP (or none).
fn order(id: u64, days_ago: i64, value: &str, email: bool, ip: Option<&str>) -> Value {
    let mut o: Value = serde_json::from_str(DOCS_ORDER).unwrap();
    let created = OffsetDateTime::from_unix_timestamp(now() - 600 - days_ago * 86_400)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    o["id"] = json!(id);
    o["admin_graphql_api_id"] = json!(format!("gid://shopify/Order/{id}"));
    o["test"] = json!(false);
    o["cancelled_at"] = Value::Null;
    o["financial_status"] = json!("paid");
    for k in ["created_at", "processed_at", "updated_at"] {
        o[k] = json!(created);
    }
    o["subtotal_price"] = json!(value);
    let money = json!({"amount": value, "currency_code": "USD"});
    o["subtotal_price_set"] = json!({"shop_money": money, "presentment_money": money});
    if !email {
        o["email"] = Value::Null;
        o["contact_email"] = Value::Null;
        o["customer"] = Value::Null;
    }
    o["browser_ip"] = json!(ip);
    o["client_details"] = ip.map_or(Value::Null, |ip| json!({"browser_ip": ip}));
    o
}

#[tokio::test]
async fn the_audits_figures_equal_what_the_shop_and_the_sandbox_were_given() {
    // Pinterest's side: checkouts through the gateway to the sandbox, on three days. Click id
    // (click-attributed), email only (view-attributed) or neither (not attributed).
    let app = spawn_app().await;
    let mut sent = Vec::new();
    for (i, (days_ago, click, email, value)) in [
        (0, true, true, "10.50"),
        (0, false, true, "20.00"),
        (1, true, true, "30.25"),
        (1, false, false, "40.00"),
        (2, false, true, "5.00"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ev = checkout(&format!("order-a{i}"));
        ev["event_time"] = json!(now() - 60 - days_ago * 86_400);
        ev["custom_data"]["value"] = json!(value);
        let u = ev["user_data"].as_object_mut().unwrap();
        if !click {
            u.remove("click_id");
        }
        if !email {
            for k in [
                "em",
                "ph",
                "fn",
                "ln",
                "ct",
                "st",
                "zp",
                "country",
                "external_id",
            ] {
                u.remove(k);
            }
        }
        sent.push((days_ago, click || email, value.parse::<f64>().unwrap()));
        let (status, body) = app.post_events(&ev).await;
        assert_eq!(status, 202, "{body}");
    }
    app.wait_delivered(sent.len()).await;

    // Shopify's side: ten web orders on three days, a POS order and a test order.
    let standin = Standin::start().await;
    let mut expected_days: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
    let (mut with_email, mut with_ip) = (0, 0);
    for i in 0..10u64 {
        let days_ago = (i % 3) as i64;
        let value = format!("{}.{:02}", 10 + i, i * 7 % 100);
        let email = i % 4 != 0;
        let ip = (i % 2 == 0).then(|| format!("203.0.113.{i}"));
        with_email += i64::from(email);
        // CAPI sends an IP only with an event it can send: without an email (and without a
        // user agent, which Shopify's order lacks) there is none.
        with_ip += i64::from(ip.is_some() && email);
        let e = expected_days.entry(days_ago).or_default();
        e.0 += 1;
        e.1 += value.parse::<f64>().unwrap();
        standin.add(&order(
            6_600_000_000_000 + i,
            days_ago,
            &value,
            email,
            ip.as_deref(),
        ));
    }
    let mut pos = order(6_600_000_000_100, 0, "99.00", true, None);
    pos["source_name"] = json!("pos");
    standin.add(&pos);
    let mut test_order = order(6_600_000_000_101, 0, "99.00", true, None);
    test_order["test"] = json!(true);
    standin.add(&test_order);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pincapi.toml");
    std::fs::write(
        &config,
        format!(
            "ad_account_id = \"{ACCOUNT}\"\npinterest_token = \"{TOKEN}\"\n\
             pinterest_api_base = \"{}\"\nstore = \"sqlite://{}\"\n\
             [[shopify.shops]]\ndomain = \"{SHOP}\"\nsecrets = [\"shpss_audit\"]\n\
             access_token = \"{SHOPIFY_ADMIN_TOKEN}\"\nadmin_api_base = \"{}\"\n",
            app.sandbox.base(),
            dir.path().join("absent.db").display(),
            standin.base()
        ),
    )
    .unwrap();
    // The storefront is not the point here: an address that refuses connections.
    let (out, report, html) = audit(
        dir.path(),
        &[
            "--config".into(),
            config.display().to_string(),
            "--site".into(),
            "http://127.0.0.1:9/".into(),
            "--allow-private".into(),
            "--pinterest-token".into(),
            "ads-read-token".into(),
            "--days".into(),
            "7".into(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("absent.db").exists(),
        "the audit created a store"
    );

    let s = &report["shopify"];
    assert_eq!(s["shop"], SHOP);
    assert_eq!(
        s["listed"],
        12,
        "{s:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s["web_orders"], 10);
    assert_eq!(s["unsendable_orders"], 10 - with_email);
    assert_eq!(s["pos_orders"], 1);
    assert_eq!(s["test_orders"], 1);
    let pct = |n: i64, d: i64| (1000.0 * n as f64 / d as f64).round() / 10.0;
    assert_eq!(s["pos_percent"], pct(1, 12));
    assert_eq!(s["key_shares"]["email"], pct(with_email, 10));
    assert_eq!(s["key_shares"]["ip"], pct(with_ip, 10));
    assert_eq!(s["key_shares"]["address"], pct(with_email, 10));
    let days: Vec<(i64, f64)> = s["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["orders"].as_i64().unwrap(), d["value"].as_f64().unwrap()))
        .collect();
    let want: Vec<(i64, f64)> = expected_days
        .values()
        .rev()
        .map(|(n, v)| (*n, (v * 100.0).round() / 100.0))
        .collect();
    assert_eq!(days, want);
    // Nothing subscribed yet: every topic the shop needs is missing, orders/create first.
    assert!(s["webhooks"].as_array().unwrap().is_empty());
    assert!(
        s["webhooks_missing"]
            .as_array()
            .unwrap()
            .contains(&json!("orders/create")),
        "{s:#}"
    );

    let p = &report["pinterest"];
    let attributed: Vec<&(i64, bool, f64)> = sent.iter().filter(|s| s.1).collect();
    let value: f64 = attributed.iter().map(|s| s.2).sum();
    let active_days = 3.0;
    let spend = 25.0 * active_days;
    assert_eq!(p["checkouts"], attributed.len() as i64, "{p:#}");
    assert_eq!(
        p["value"].as_f64().unwrap(),
        (value * 100.0).round() / 100.0
    );
    assert_eq!(p["spend"].as_f64().unwrap(), spend);
    assert_eq!(
        p["roas"].as_f64().unwrap(),
        (value / spend * 100.0).round() / 100.0
    );
    assert_eq!(p["tags"][0]["id"], TAG_ID);
    assert!(p["attribution"].as_str().unwrap().contains("click 30 days"));
    assert_eq!(report["verdict"]["shopify_orders"], 10);
    assert_eq!(
        report["verdict"]["pinterest_checkouts"],
        attributed.len() as i64
    );
    assert_eq!(
        report["verdict"]["reported_share_percent"],
        pct(attributed.len() as i64, 10)
    );
    assert!(has(&report, "webhooks_missing", SHOP), "{report:#}");
    assert!(html.contains("<svg"));
    app.stop().await;
}

#[tokio::test]
async fn export_missed_writes_exactly_the_orders_pinterest_never_got_that_are_too_old_for_the_api()
{
    // The gateway delivered order B's purchase back when it was fresh (Pinterest's window is
    // widened here only to let the test deliver a 10-day-old purchase).
    let day = 86_400;
    let app = spawn_app_with(
        SandboxOptions {
            max_event_age_secs: 40 * day,
            ..SandboxOptions::default()
        },
        |c| {
            c.ingest.max_event_age_secs = 40 * day;
            c.retention.delivered_days = 0;
        },
    )
    .await;
    let id = |n: u64| 7_700_000_000_000 + n;
    let mut delivered = checkout(&format!("order-{}", id(2)));
    delivered["event_time"] = json!(now() - 600 - 10 * day);
    let (status, body) = app.post_events(&delivered).await;
    assert_eq!(status, 202, "{body}");
    app.wait_delivered(1).await;

    // A: 3 days old (the API's, not the file's); B: received; C, D: never received; E: no
    // email; F: older than the upload window; G: a test order.
    let standin = Standin::start().await;
    let specs = [
        (1, 3, true, false),
        (2, 10, true, false),
        (3, 12, true, false),
        (4, 20, true, false),
        (5, 25, false, false),
        (6, 40, true, false),
        (7, 15, true, true),
    ];
    for (n, days_ago, email, test) in specs {
        let mut o = order(
            id(n),
            days_ago,
            &format!("{n}0.00"),
            email,
            Some("203.0.113.9"),
        );
        o["test"] = json!(test);
        standin.add(&o);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pincapi.toml");
    std::fs::write(
        &config,
        format!(
            "ad_account_id = \"{ACCOUNT}\"\npinterest_token = \"{TOKEN}\"\nstore = \"sqlite://{}\"\n\
             [[shopify.shops]]\ndomain = \"{SHOP}\"\nsecrets = [\"shpss_audit\"]\n\
             access_token = \"{SHOPIFY_ADMIN_TOKEN}\"\nadmin_api_base = \"{}\"\n",
            app.db.display(),
            standin.base()
        ),
    )
    .unwrap();
    let csv_path = dir.path().join("missed.csv");
    let since = OffsetDateTime::from_unix_timestamp(now() - 45 * day)
        .unwrap()
        .date()
        .to_string();
    let args = vec![
        "shopify".to_owned(),
        "export-missed".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--since".to_owned(),
        since,
        "--out".to_owned(),
        csv_path.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("email,madid,event_time,event_type,source_type,value,currency,order_id")
    );
    // jon@example.com, the fixture's buyer, normalised and hashed as Pinterest wants.
    let email = pincapi_core::normalize::Sha256Hex::of("jon@example.com");
    let expected: Vec<String> = [(4, 20), (3, 12)]
        .iter()
        .map(|(n, days_ago)| {
            let created = now() - 600 - days_ago * day;
            (n, created)
        })
        .map(|(n, created)| {
            format!(
                "{},,{created},checkout,web,{n}0.00,USD,{}",
                email.as_str(),
                id(*n)
            )
        })
        .collect();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{text}\n{stderr}");
    // event_time comes from the order's creation, which the test set to within a second.
    for (row, want) in rows.iter().zip(&expected) {
        let (r, w): (Vec<&str>, Vec<&str>) = (row.split(',').collect(), want.split(',').collect());
        assert_eq!(r.len(), 8, "{row}");
        for i in [0, 1, 3, 4, 5, 6, 7] {
            assert_eq!(r[i], w[i], "column {i} of {row}");
        }
        let (t, wt): (i64, i64) = (r[2].parse().unwrap(), w[2].parse().unwrap());
        assert!((t - wt).abs() <= 2, "{row}");
    }
    assert!(stderr.contains("1 already received"), "{stderr}");
    assert!(stderr.contains("1 without an email"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn the_audit_refuses_private_addresses_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) =
        audit(dir.path(), &["--site".into(), "http://127.0.0.1:9/".into()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = findings_about(&report, "http://127.0.0.1:9/");
    assert!(
        f.iter().any(|f| f["check"] == "page_unreachable"
            && f["message"]
                .as_str()
                .unwrap()
                .contains("private, loopback or link-local")),
        "{report:#}"
    );
    // The sitemap beside it was refused too, before any connection.
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "sitemap_unreadable"
                && f["message"].as_str().unwrap().contains("refused")),
        "{report:#}"
    );
}
