//! The `pincapi` command line, run as a real process.

use std::process::{Command, Output};

use pincapi::sandbox::SandboxOptions;
use serde_json::Value;

use crate::helpers::*;

fn pincapi(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pincapi"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pincapi runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn hash_reproduces_every_normalisation_vector() {
    let vectors: Vec<Value> = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pinterest/normalization-test-vectors.json"
    )))
    .unwrap();
    for v in vectors {
        let field = v["field"].as_str().unwrap();
        let raw = v["raw"].as_str().unwrap();
        let out = pincapi(&["hash", field, raw], &[]);
        assert!(out.status.success(), "{field}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            v["sha256_hex"].as_str().unwrap(),
            "{field}"
        );
    }
}

#[test]
fn hash_exits_2_with_a_message_for_a_value_that_normalises_to_nothing() {
    let out = pincapi(&["hash", "ph", "555-555-SHIP"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: ph:"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = pincapi(&["hash", "em", "   "], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = pincapi(&["hash", "email", "a@b.co"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // A phone without its country code gets it from --country.
    let out = pincapi(&["hash", "ph", "(555) 123-4567", "--country", "US"], &[]);
    assert_eq!(
        text(&out.stdout).trim(),
        "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"
    );
}

#[tokio::test]
async fn check_config_masks_secrets_and_tests_the_token_against_pinterest() {
    let sandbox = TestSandbox::start(SandboxOptions {
        token: Some("right-token".into()),
        ..SandboxOptions::default()
    })
    .await;
    let base = sandbox.base();
    let env = move |token: &'static str| {
        vec![
            ("PINCAPI_PINTEREST_API_BASE", base.clone()),
            ("PINCAPI_AD_ACCOUNT_ID", ACCOUNT.to_owned()),
            ("PINCAPI_PINTEREST_TOKEN", token.to_owned()),
            ("PINCAPI_API_KEY", "ingest-secret-value".to_owned()),
        ]
    };
    let run = |e: Vec<(&'static str, String)>| {
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pincapi(&["check-config", "--online"], &e)
    };
    let ok = tokio::task::spawn_blocking(move || run(env("right-token")))
        .await
        .unwrap();
    let out = text(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", text(&ok.stderr));
    assert!(out.contains("token accepted"), "{out}");
    assert!(!out.contains("right-token") && !out.contains("ingest-secret-value"));
    assert!(out.contains("******"));
    let req = &sandbox.sandbox.requests()[0];
    assert_eq!(req.query.as_deref(), Some("test=true"));

    let base = sandbox.base();
    let bad = tokio::task::spawn_blocking(move || {
        pincapi(
            &["check-config", "--online"],
            &[
                ("PINCAPI_PINTEREST_API_BASE", &base),
                ("PINCAPI_AD_ACCOUNT_ID", ACCOUNT),
                ("PINCAPI_PINTEREST_TOKEN", "wrong-token"),
                ("PINCAPI_API_KEY", "ingest-secret-value"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad.stdout).contains("FAILED: HTTP 401"),
        "{}",
        text(&bad.stdout)
    );
}

#[test]
fn a_missing_or_malformed_setting_fails_at_start_with_its_key() {
    let out = pincapi(&["serve"], &[("PINCAPI_LISTEN", "127.0.0.1:0")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ad_account_id:"),
        "{}",
        text(&out.stderr)
    );

    let out = pincapi(
        &["serve"],
        &[
            ("PINCAPI_AD_ACCOUNT_ID", ACCOUNT),
            ("PINCAPI_PINTEREST_TOKEN", "t"),
            ("PINCAPI_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(
        text(&out.stderr).contains("api_key:"),
        "{}",
        text(&out.stderr)
    );

    let out = pincapi(&["serve"], &[("PINCAPI_LISTEN", "not-an-address")]);
    assert!(
        text(&out.stderr).contains("listen:"),
        "{}",
        text(&out.stderr)
    );

    let out = pincapi(
        &["serve"],
        &[
            ("PINCAPI_DELIVERY__BATCH_SIZE", "5000"),
            ("PINCAPI_AD_ACCOUNT_ID", ACCOUNT),
            ("PINCAPI_PINTEREST_TOKEN", "t"),
            ("PINCAPI_API_KEY", "k"),
        ],
    );
    assert!(
        text(&out.stderr).contains("delivery.batch_size:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_demo_delivers_its_sample_traffic_into_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo.db");
    let out = pincapi(
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store.to_str().unwrap(),
            "--visitors",
            "25",
            "--exit-when-delivered",
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // 25 visitors: 25 page visits and 15 add-to-carts through the API; 5 orders by signed
    // webhook, of which the browser reported 4 (the fifth buyer's Tag was blocked).
    assert!(
        stdout.contains(
            "Sent 40 sample events (40 accepted) and 5 Shopify orders by signed webhook; the \
             browser reported 4 of them"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the sandbox processed 45 events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Orders 5 → purchases delivered 5; the Tag alone lost 20 %, the server side recovered 20 %"),
        "{stdout}"
    );
    // The audit it wrote: the sandbox's own figures for the 5 purchases.
    let audit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pincapi-demo-audit.json")).unwrap())
            .unwrap();
    assert_eq!(audit["pinterest"]["checkouts"], 5, "{audit:#}");
    assert_eq!(audit["gateway"]["delivered_purchases"], 5);
    assert!(dir.path().join("pincapi-demo-audit.html").exists());
}

#[tokio::test]
async fn deadletter_commands_list_retry_and_drop() {
    let app = spawn_app().await;
    app.sandbox.fault(pincapi::sandbox::Faults {
        reject_event_ids: vec!["o-x".into(), "o-y".into()],
        ..Default::default()
    });
    app.post_events(&serde_json::json!({"data": [checkout("o-x"), checkout("o-y")]}))
        .await;
    wait_for("two dead letters", || async {
        let (_, b) = app.get("/admin/dead-letters", Some(ADMIN_KEY)).await;
        b.contains("o-x") && b.contains("o-y")
    })
    .await;
    let store = format!("sqlite://{}", app.db.display());
    let run = move |args: Vec<&'static str>| {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let mut a = vec!["deadletter"];
            a.extend(args);
            pincapi(&a, &[("PINCAPI_STORE", &store)])
        })
    };
    let list = run(vec!["list", "--json"]).await.unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    let drop = run(vec!["drop", "--all"]).await.unwrap();
    assert!(text(&drop.stdout).starts_with("2 dead letters dropped"));
    let none = run(vec!["list"]).await.unwrap();
    assert!(text(&none.stdout).contains("no dead letters"));
    let bad = run(vec!["retry"]).await.unwrap();
    assert!(!bad.status.success());
}

#[test]
fn the_bench_runs_every_phase_and_reports_json() {
    // A smoke run: it proves the benchmark works end to end; the figures themselves are
    // measured with a release build and reported in the README, never asserted here.
    let out = pincapi(
        &[
            "bench",
            "--seconds",
            "0.3",
            "--concurrency",
            "4",
            "--batch-concurrency",
            "2",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = report["phases"].as_array().unwrap();
    // The floor, then SQLite with one event per request, 100 per request, and Pinterest
    // unreachable (no --postgres, so no PostgreSQL phases).
    assert_eq!(phases.len(), 4, "{report}");
    for p in phases {
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["requests"].as_u64().unwrap() > 0, "{p}");
        assert!(p["cpu_us_per_event"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert!(
        phases[0]["instances"] == 0 && phases[1]["instances"] == 1,
        "{report}"
    );
    assert!(
        phases[2]["events_per_sec"].as_f64().unwrap()
            > phases[2]["requests_per_sec"].as_f64().unwrap(),
        "{report}"
    );
}

#[test]
fn check_config_refuses_what_serve_would_unknown_keys_and_misspelt_variables() {
    // Nothing configured: serve would refuse, so check-config does.
    let out = pincapi(&["check-config", "--offline"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ad_account_id:"),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.toml");
    std::fs::write(
        &file,
        format!(
            "admin_kye = \"x\"\nad_account_id = \"{ACCOUNT}\"\npinterest_token = \"t\"\n\
             api_key = \"k\"\n"
        ),
    )
    .unwrap();
    let f = file.display().to_string();
    let out = pincapi(&["check-config", "--offline", "-c", &f], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("admin_kye"), "{err}");

    std::fs::write(
        &file,
        format!(
            "store = \"sqlite://{}/s.db\"\nad_account_id = \"{ACCOUNT}\"\n\
             pinterest_token = \"t\"\napi_key = \"k\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = pincapi(
        &["check-config", "--offline", "-c", &f],
        &[("PINCAPI_SHOPIFY_ACCESS_TOKEN", "shpat_x")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("PINCAPI_SHOPIFY_ACCESS_TOKEN (did you mean PINCAPI_SHOPIFY__ACCESS_TOKEN?)"),
        "{err}"
    );
    assert!(!err.contains("shpat_x"), "the value is not printed");

    // Global options after the subcommand's subcommand.
    let out = pincapi(&["migrate", "-c", &f], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = pincapi(&["deadletter", "list", "-c", &f], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no dead letters"));
}
