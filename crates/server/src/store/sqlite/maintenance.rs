//! Maintenance on SQLite: ping, the purge, sizing.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use crate::store::{Maintenance, StoreError};

#[async_trait]
impl Maintenance for SqliteStore {
    fn is_full(&self) -> bool {
        SqliteStore::is_full(self)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        // The scan for candidates runs on the reader, so the writer is held only for the
        // deletes by id; each delete checks the condition again, since the reader's view may
        // be a moment old (a dead letter retried since is pending and stays).
        let ids: Vec<i64> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT id FROM events WHERE {PURGEABLE} ORDER BY id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![before_ms, limit as i64], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<i64>, _>>()?)
            })
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let mut event =
                conn.prepare_cached(&format!("DELETE FROM events WHERE id = ?2 AND {PURGEABLE}"))?;
            let mut payload = conn.prepare_cached("DELETE FROM payloads WHERE id = ?1")?;
            let mut n = 0;
            for id in ids {
                if event.execute(params![before_ms, id])? == 1 {
                    payload.execute(params![id])?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM events WHERE {PURGEABLE}"))?
                .query_row(params![before_ms], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn storage_bytes(&self) -> Result<u64, StoreError> {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        Ok(size(&self.path) + size(Path::new(&wal)))
    }
}

/// The events [`Store::purge_settled`] deletes, with the cutoff (Unix ms) as `?1`.
const PURGEABLE: &str = "((state = 'delivered' AND sent_at < ?1)
     OR (state = 'dropped' AND received_at < ?1 AND next_attempt_at < ?1))";
