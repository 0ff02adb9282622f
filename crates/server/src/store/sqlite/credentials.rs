//! Sealed credentials and OAuth states on SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use crate::store::{CredentialStore, StoreError};

/// The longest life an OAuth state is given (`pinterest connect` waits 10 minutes): a
/// state whose end is this far before a new one's has expired.
const STATE_MAX_LIFE_MS: i64 = 10 * 60 * 1000;

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn credential(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT sealed FROM credentials WHERE name = ?1")?;
            let mut rows = stmt.query(params![name])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn save_credential(
        &self,
        name: &str,
        sealed: Vec<u8>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO credentials (name, sealed, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![name, sealed, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn delete_credential(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM credentials WHERE name = ?1")?
                .execute(params![name])?
                > 0)
        })
        .await
    }

    async fn credential_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM credentials WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![prefix], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn credential_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM credentials", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn save_oauth_state(
        &self,
        state: &str,
        subject: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (state, subject) = (state.to_owned(), subject.to_owned());
        self.write(move |conn| {
            // Expired states go on every write, so unanswered installs cannot pile up.
            conn.prepare_cached("DELETE FROM oauth_states WHERE expires_at <= ?1")?
                .execute(params![expires_at_ms - STATE_MAX_LIFE_MS])?;
            conn.prepare_cached(
                "INSERT INTO oauth_states (state, subject, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![state, subject, expires_at_ms])?;
            Ok(())
        })
        .await
    }

    async fn try_lock_credential(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::StoreLock>, StoreError> {
        // A file lock beside the store: `serve` and the commands that run beside it
        // (`shopify backfill`, `status`, `pinterest accounts`) renew one at a time.
        let _ = name;
        let mut path = self.path.as_os_str().to_owned();
        path.push(".credentials.lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::path::Path::new(&path))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open the credential lock: {e}"))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(crate::store::StoreLock::holding(file))),
            Err(_) => Ok(None),
        }
    }

    async fn take_oauth_state(
        &self,
        state: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let state = state.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM oauth_states WHERE expires_at <= ?1")?
                .execute(params![now_ms])?;
            let mut stmt =
                conn.prepare_cached("DELETE FROM oauth_states WHERE state = ?1 RETURNING subject")?;
            let mut rows = stmt.query(params![state])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }
}
