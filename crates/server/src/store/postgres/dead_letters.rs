//! Dead letters on PostgreSQL.

use async_trait::async_trait;

use super::{PgError, PostgresStore, execute};
use crate::store::{DeadLetter, DeadLetters, Selection, StoreError};

#[async_trait]
impl DeadLetters for PostgresStore {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self
            .query(
                "SELECT id, ad_account_id, event_id, event_name, event_time, attempts,
                        coalesce(last_error, '')
                 FROM events WHERE state = 'dead' ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                ad_account_id: r.get(1),
                event_id: r.get(2),
                event_name: r.get(3),
                event_time: r.get(4),
                attempts: r.get::<_, i32>(5).max(0) as u32,
                reason: r.get(6),
            })
            .collect())
    }

    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError> {
        let ids = selection_ids(which);
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1,
                 lease_until = NULL
             WHERE state = 'dead' AND ($2::bigint[] IS NULL OR id = ANY($2))",
            &[&now_ms, &ids],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError> {
        let ids = selection_ids(which);
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET state = 'dropped'
             WHERE state = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1))",
            &[&ids],
        )
        .await
        .map_err(PgError::into_store)
    }
}

fn selection_ids(which: Selection) -> Option<Vec<i64>> {
    match which {
        Selection::All => None,
        Selection::Ids(ids) => Some(ids),
    }
}
