//! Dead letters on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::store::{DeadLetter, DeadLetters, Selection, StoreError};

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, ad_account_id, event_id, event_name, event_time, attempts,
                        coalesce(last_error, '')
                 FROM events WHERE state = 'dead' ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    event_id: r.get(2)?,
                    event_name: r.get(3)?,
                    event_time: r.get(4)?,
                    attempts: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let sql = "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?1,
                           lease_until = NULL
                       WHERE state = 'dead'";
            update_selection(conn, sql, &which, now_ms)
        })
        .await
    }

    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError> {
        self.write(move |conn| {
            // ?1 is unused here but keeps one helper for both actions.
            let sql = "UPDATE events SET state = 'dropped' WHERE state = 'dead' AND ?1 = ?1";
            update_selection(conn, sql, &which, 0)
        })
        .await
    }
}

fn update_selection(
    conn: &Connection,
    sql: &str,
    which: &Selection,
    now_ms: i64,
) -> Result<u64, StoreError> {
    match which {
        Selection::All => Ok(conn.execute(sql, params![now_ms])? as u64),
        Selection::Ids(ids) => {
            let mut stmt = conn.prepare(&format!("{sql} AND id = ?2"))?;
            let mut n = 0;
            for id in ids {
                n += stmt.execute(params![now_ms, id])? as u64;
            }
            Ok(n)
        }
    }
}
