//! Opening the store the configuration names: `sqlite://` or `postgres://`.

use std::fs::File;
use std::sync::Arc;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{SharedStore, StoreError};
use crate::config::{Config, StoreUrl};

/// Who opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// `serve`: for SQLite, the single owner (takes `<db>.lock`).
    Gateway,
    /// A CLI command working alongside a running gateway.
    Tool,
}

/// An open store.
#[derive(Debug)]
pub struct OpenedStore {
    pub store: SharedStore,
    /// SQLite's owner lock when opened by the gateway; hold it as long as the store.
    pub owner_lock: Option<File>,
    /// `true` for an embedded store, which one process owns (so leases left at start belong
    /// to a process that is gone); `false` for a store several instances share.
    pub single_owner: bool,
    /// The schema version after migrations.
    pub schema_version: i64,
    /// Where it is, for messages (never with a password).
    pub display: String,
}

/// Opens (creating and migrating as needed) the configured store.
pub async fn open_store(config: &Config, opener: Opener) -> Result<OpenedStore, StoreError> {
    match config.store_url()? {
        StoreUrl::Sqlite(path) => {
            let owner_lock = match opener {
                Opener::Gateway => Some(SqliteStore::lock_owner(&path)?),
                Opener::Tool => None,
            };
            let store = SqliteStore::open(&path, config.sqlite_synchronous).map_err(|e| {
                StoreError::Unavailable(format!("while opening the store {}: {e}", path.display()))
            })?;
            let schema_version = store.schema_version()?;
            Ok(OpenedStore {
                store: Arc::new(store),
                owner_lock,
                single_owner: true,
                schema_version,
                display: format!("sqlite://{}", path.display()),
            })
        }
        StoreUrl::Postgres(url) => {
            let store = PostgresStore::connect(&url, &config.postgres).await?;
            Ok(OpenedStore {
                schema_version: i64::from(store.schema_version()),
                display: store.display_url().to_owned(),
                store: Arc::new(store),
                owner_lock: None,
                single_owner: false,
            })
        }
    }
}

/// The store for an operator command working on what a gateway stored (`deadletter`,
/// `report`, `purge`, `audiences`, `forget`, ...): an embedded store must already exist, so a
/// mistyped path is an error instead of a new, empty database.
pub async fn open_existing_store(config: &Config) -> Result<SharedStore, StoreError> {
    if let StoreUrl::Sqlite(path) = config.store_url()?
        && !path.exists()
    {
        return Err(StoreError::Unavailable(format!(
            "store: {} does not exist",
            path.display()
        )));
    }
    Ok(open_store(config, Opener::Tool).await?.store)
}
