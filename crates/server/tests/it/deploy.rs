//! What ships for deployment: the systemd unit passes `systemd-analyze verify`, and
//! `pincapi healthcheck` says whether a gateway is ready.

use std::process::Command;

use crate::helpers::*;

#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit file is not verified here");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/pincapi.service"
    ))
    .unwrap();
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=pincapi",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // The unit as installed, with the binary where this build put it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pincapi.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/pincapi", env!("CARGO_BIN_EXE_pincapi")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_ready_gateway_and_1_otherwise() {
    let app = spawn_app().await;
    let url = app.url("/readyz");
    let ok = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(["healthcheck", "--url", &url])
            .env_clear()
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (_, body) = app.get("/healthz", None).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["schema_version"].as_i64().unwrap() >= 5);
    let _ = app.stop().await;
    // Nothing listening: 1, with the reason.
    let down = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(["healthcheck", "--url", "http://127.0.0.1:9/readyz"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(!down.stderr.is_empty());
    // --version names the build.
    let v = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("pincapi {}", env!("CARGO_PKG_VERSION"))
    );
}
