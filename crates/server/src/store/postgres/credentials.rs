//! Sealed credentials and OAuth states on PostgreSQL.

use async_trait::async_trait;

use super::{PgError, PostgresStore, execute, query};
use crate::store::{CredentialStore, StoreError, StoreLock};

/// First key of the advisory locks of credential renewals ("cred" in ASCII); the second is a
/// hash of the credential's name.
const CREDENTIAL_LOCK: i32 = 0x6372_6564;

#[async_trait]
impl CredentialStore for PostgresStore {
    async fn credential(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self
            .query("SELECT sealed FROM credentials WHERE name = $1", &[&name])
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn save_credential(
        &self,
        name: &str,
        sealed: Vec<u8>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO credentials (name, sealed, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                 updated_at = excluded.updated_at",
            &[&name, &sealed, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn delete_credential(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = execute(&client, "DELETE FROM credentials WHERE name = $1", &[&name])
            .await
            .map_err(PgError::into_store)?;
        Ok(n > 0)
    }

    async fn credential_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .query(
                "SELECT name FROM credentials WHERE left(name, length($1)) = $1 ORDER BY name",
                &[&prefix],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn credential_count(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT COUNT(*) FROM credentials", &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn save_oauth_state(
        &self,
        state: &str,
        subject: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        // Expired states go on every write, so unanswered installs cannot pile up.
        self.query(
            "DELETE FROM oauth_states WHERE expires_at <= $1",
            &[&(expires_at_ms - 10 * 60 * 1000)],
        )
        .await?;
        self.query(
            "INSERT INTO oauth_states (state, subject, expires_at) VALUES ($1, $2, $3)",
            &[&state, &subject, &expires_at_ms],
        )
        .await?;
        Ok(())
    }

    async fn take_oauth_state(
        &self,
        state: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM oauth_states WHERE expires_at <= $1",
            &[&now_ms],
        )
        .await
        .map_err(PgError::into_store)?;
        let rows = query(
            &client,
            "DELETE FROM oauth_states WHERE state = $1 RETURNING subject",
            &[&state],
        )
        .await
        .map_err(PgError::into_store)?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn try_lock_credential(&self, name: &str) -> Result<Option<StoreLock>, StoreError> {
        self.session_lock(CREDENTIAL_LOCK, name).await
    }
}
