//! Maintenance on PostgreSQL: ping, the purge, sizing.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::{Maintenance, StoreError};

#[async_trait]
impl Maintenance for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }

    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        // One statement, so it is atomic on its own: up to `limit` finished events, skipping
        // rows another instance holds (it may be purging them too), lose their payloads and go.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "WITH doomed AS (
                         SELECT id FROM events WHERE {PURGEABLE}
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),
                     payloads_gone AS (
                         DELETE FROM payloads WHERE id IN (SELECT id FROM doomed))
                     DELETE FROM events WHERE id IN (SELECT id FROM doomed) RETURNING id"
                ),
                &[&before_ms, &limit],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError> {
        let rows = self
            .query(
                &format!("SELECT count(*) FROM events WHERE {PURGEABLE}"),
                &[&before_ms],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    async fn storage_bytes(&self) -> Result<u64, StoreError> {
        let rows = self
            .query("SELECT pg_database_size(current_database())", &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }
}

/// The events [`Store::purge_settled`] deletes, with the cutoff (Unix ms) as `$1`: the same
/// rule as SQLite's.
const PURGEABLE: &str = "((state = 'delivered' AND sent_at < $1)
     OR (state = 'dropped' AND received_at < $1 AND next_attempt_at < $1))";
