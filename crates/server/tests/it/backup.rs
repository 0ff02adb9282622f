//! `pincapi backup` under load and `pincapi restore` into a fresh gateway: every event
//! acknowledged before the backup began is in it, and nothing it had delivered is sent again.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use pincapi::clock::SystemClock;
use pincapi::sandbox::SandboxOptions;
use rusqlite::Connection;

use crate::helpers::*;

fn pincapi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn ids(db: &std::path::Path, state: Option<&str>) -> HashSet<String> {
    let conn = Connection::open(db).unwrap();
    let sql = match state {
        Some(_) => "SELECT event_id FROM events WHERE state = ?1",
        None => "SELECT event_id FROM events WHERE ?1 IS NULL",
    };
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([state], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_backup_under_load_restored_into_a_fresh_gateway_holds_every_acknowledged_event_and_resends_nothing_delivered()
 {
    let app = spawn_app().await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop, http, url) = (
            Arc::clone(&acked),
            Arc::clone(&stop),
            app.http.clone(),
            app.url("/v1/events"),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("bk-{i}");
                let resp = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&checkout(&id))
                    .send()
                    .await
                    .unwrap();
                if resp.status().as_u16() == 202 {
                    acked.lock().unwrap().push(id);
                }
                i += 1;
            }
        })
    };
    wait_for("some load", || async { acked.lock().unwrap().len() >= 200 }).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.toml");
    std::fs::write(
        &file,
        format!("store = \"sqlite://{}\"\n", app.db.display()),
    )
    .unwrap();
    let copy = dir.path().join("backup.db");
    let before: Vec<String> = acked.lock().unwrap().clone();
    let out = tokio::task::spawn_blocking({
        let (file, copy) = (file.clone(), copy.clone());
        move || {
            pincapi(&[
                "backup",
                "--to",
                copy.to_str().unwrap(),
                "-c",
                file.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A backup never overwrites a file.
    let again = pincapi(&[
        "backup",
        "--to",
        copy.to_str().unwrap(),
        "-c",
        file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let _ = app.stop().await;

    let in_backup = ids(&copy, None);
    for id in &before {
        assert!(
            in_backup.contains(id),
            "{id} was acknowledged before the backup"
        );
    }
    let delivered_then = ids(&copy, Some("delivered"));
    let pending_then = ids(&copy, Some("pending"));

    // Into a fresh gateway's store.
    let fresh = tempfile::tempdir().unwrap();
    let db = fresh.path().join("pincapi.db");
    let file2 = dir.path().join("new.toml");
    std::fs::write(&file2, format!("store = \"sqlite://{}\"\n", db.display())).unwrap();
    let out = pincapi(&[
        "restore",
        "--from",
        copy.to_str().unwrap(),
        "-c",
        file2.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not twice: the store holds events now.
    let out = pincapi(&[
        "restore",
        "--from",
        copy.to_str().unwrap(),
        "-c",
        file2.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds"),
        "refused by name"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restored = spawn_app_at(
        SystemClock::shared(),
        SandboxOptions::default(),
        listener,
        fresh,
        |_| {},
    )
    .await;
    restored.wait_delivered(pending_then.len()).await;
    let sandbox = restored.stop().await;
    let sent: HashSet<String> = sandbox
        .events()
        .iter()
        .map(|e| e.event["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent, pending_then,
        "what was pending is sent, and only that"
    );
    assert!(sent.is_disjoint(&delivered_then));
}
