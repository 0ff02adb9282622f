//! Faults of the machine under the gateway, with exact accounting: every event acknowledged
//! with a 2xx reaches Pinterest exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

/// A tmpfs of the test's own, so the disk can really fill; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "the disk-full test mounts a {mib} MiB tmpfs and so needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes, as `df` reports them.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let (status, body) = app.get("/readyz", None).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The disk under an embedded store fills: new events are refused with 503 (nothing half
/// taken), `/readyz` says `store: full`, what was acknowledged is still delivered, and once
/// space is freed the gateway takes events again by itself.
#[tokio::test]
async fn a_full_disk_refuses_new_events_delivers_the_stored_ones_and_recovers_by_itself() {
    let disk = SmallDisk::new(16);
    let db = disk.path().join("pincapi.db");
    let app = spawn_app_with(Default::default(), |c| {
        c.store = format!("sqlite://{}", db.display());
    })
    .await;
    // Leave about 1 MiB.
    let filler = disk.path().join("filler");
    let room = disk.free().saturating_sub(1024 * 1024);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();

    let mut acknowledged = HashSet::new();
    let mut refused = None;
    for batch in 0..2000 {
        let events: Vec<Value> = (0..50)
            .map(|i| checkout(&format!("order-full-{batch}-{i}")))
            .collect();
        let (status, body) = app.post_events(&json!({ "data": events })).await;
        if status == 202 {
            for i in 0..50 {
                acknowledged.insert(format!("order-full-{batch}-{i}"));
            }
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the disk never filled");
    assert_eq!(status, 503, "{body}");
    assert!(!acknowledged.is_empty());
    let (status, readiness) = ready(&app).await;
    assert_eq!(
        (status, readiness["store"].as_str()),
        (503, Some("full")),
        "{readiness}"
    );

    // Delivery goes on: every acknowledged event reaches Pinterest.
    let sandbox = &app.sandbox;
    wait_for("the acknowledged events, on a full disk", || async {
        let seen: HashSet<String> = sandbox
            .events()
            .iter()
            .filter_map(|e| e.event["event_id"].as_str().map(str::to_owned))
            .collect();
        acknowledged.is_subset(&seen)
    })
    .await;

    // Space comes back: the gateway takes events again without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_for("readiness once space is free", || async {
        ready(&app).await.0 == 200
    })
    .await;
    let (status, body) = app.post_events(&checkout("order-after-full")).await;
    assert_eq!(status, 202, "{body}");
    acknowledged.insert("order-after-full".to_owned());
    app.wait_delivered(acknowledged.len()).await;
    let sandbox = app.stop().await;
    for id in &acknowledged {
        assert_eq!(sandbox.count_of(id), 1, "{id}");
    }
    assert_eq!(
        sandbox.events().len(),
        acknowledged.len(),
        "nothing else was sent"
    );
}
