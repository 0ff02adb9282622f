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

/// Checkouts posted one after another until `stop`, named `{prefix}-N`; the acknowledged ones
/// are listed in order.
fn load(
    app: &TestApp,
    prefix: &'static str,
) -> (
    Arc<Mutex<Vec<String>>>,
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
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
                let id = format!("{prefix}-{i}");
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
    (acked, stop, load)
}

#[tokio::test]
async fn a_backup_under_load_restored_into_a_fresh_gateway_holds_every_acknowledged_event_and_resends_nothing_delivered()
 {
    let app = spawn_app().await;
    let (acked, stop, load) = load(&app, "bk");
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

/// `event_id`s in a PostgreSQL store, of one state or all.
async fn pg_ids(url: &str, state: Option<&str>) -> HashSet<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT event_id FROM events WHERE $1::text IS NULL OR state = $1",
            &[&state],
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}

fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's PostgreSQL procedure (`pg_dump --format=custom` while `serve` runs,
/// `pg_restore` into an empty database) keeps the same promise as `pincapi backup`.
#[tokio::test]
async fn a_pg_dump_under_load_restored_into_a_fresh_database_holds_every_acknowledged_event_and_resends_nothing_delivered()
 {
    let old_db = crate::pg::TestDatabase::create().await;
    let old_url = old_db.url.clone();
    let app = spawn_app_with(SandboxOptions::default(), move |c| {
        c.store = old_url;
        c.delivery.lease_secs = 2 * c.delivery.request_timeout_secs + 5;
    })
    .await;
    let (acked, stop, load) = load(&app, "pgbk");
    wait_for("some load", || async { acked.lock().unwrap().len() >= 200 }).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("pincapi.dump");
    let before: Vec<String> = acked.lock().unwrap().clone();
    tokio::task::spawn_blocking({
        let (dump, url) = (dump.clone(), old_db.url.clone());
        move || {
            tool(
                "pg_dump",
                &["--format=custom", "--file", dump.to_str().unwrap(), &url],
            )
        }
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let _ = app.stop().await;

    let new_db = crate::pg::TestDatabase::create().await;
    tool(
        "pg_restore",
        &[
            "--no-owner",
            "--dbname",
            &new_db.url,
            dump.to_str().unwrap(),
        ],
    );
    let in_backup = pg_ids(&new_db.url, None).await;
    for id in &before {
        assert!(
            in_backup.contains(id),
            "{id} was acknowledged before the dump"
        );
    }
    let delivered_then = pg_ids(&new_db.url, Some("delivered")).await;
    let pending_then = pg_ids(&new_db.url, Some("pending")).await;

    let new_url = new_db.url.clone();
    let restored = spawn_app_with(SandboxOptions::default(), move |c| {
        c.store = new_url;
        c.delivery.lease_secs = 2 * c.delivery.request_timeout_secs + 5;
    })
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
