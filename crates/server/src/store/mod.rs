//! The store: everything the gateway keeps, behind one trait per concern.
//!
//! [`Queue`] (events on their way to Pinterest), [`DeadLetters`], [`ShopifyStore`],
//! [`CredentialStore`] (sealed tokens the gateway obtained), [`Compliance`] (erasure),
//! [`QualityStore`], [`AudienceStore`] and [`Maintenance`]; [`Store`] is all of them, so one
//! `Arc<dyn Store>` ([`SharedStore`]) serves every consumer, and each consumer names only the
//! concern it uses. [`sqlite::SqliteStore`] is the embedded backend and
//! [`postgres::PostgresStore`] the shared one, for several gateway instances; both are laid
//! out by the same concerns. What both count and decide lives once, backend-neutral:
//! [`tally`] (the quality counts of a transaction) and `pincapi_core::repeat` (what a repeat
//! of a stored event does). [`open::open_store`] opens the one the configuration names.
//!
//! An event is stored once per (ad account, event_id): a repeat is reported as
//! [`Enqueued::Duplicate`] or [`Enqueued::Merged`] and never sent twice. Rows hold only what
//! Pinterest receives (hashed match keys, raw IP/user agent/click id), never raw PII.
//!
//! An event's life: `pending` (due at `next_attempt_at`) → claimed by a worker under a lease →
//! settled as `delivered`, back to `pending` for a retry, or `dead` (a dead letter); an
//! operator can retry a dead letter or drop it (`dropped`).

pub mod audiences;
pub mod compliance;
pub mod credentials;
pub mod dead_letters;
pub mod maintenance;
pub mod open;
pub mod postgres;
pub mod quality;
pub mod queue;
pub(crate) mod repeat;
pub mod shopify;
pub mod sqlite;
pub mod tally;

use std::fmt;
use std::sync::Arc;

pub use audiences::*;
pub use compliance::*;
pub use credentials::*;
pub use dead_letters::*;
pub use maintenance::*;
pub use quality::*;
pub use queue::*;
pub use shopify::*;

/// Failures of the store itself (not of the data).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Query(String),
    /// The disk under an embedded store is full: nothing new can be written until space is
    /// freed (what is stored stays, and delivery goes on as far as space allows).
    #[error("store full: {0}")]
    Full(String),
    /// The configuration names no usable store.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Query(e.to_string())
        }
    }
}

/// Everything the gateway stores: every concern's trait.
pub trait Store:
    Queue
    + DeadLetters
    + ShopifyStore
    + CredentialStore
    + Compliance
    + QualityStore
    + AudienceStore
    + Maintenance
{
}

impl<T> Store for T where
    T: Queue
        + DeadLetters
        + ShopifyStore
        + CredentialStore
        + Compliance
        + QualityStore
        + AudienceStore
        + Maintenance
        + ?Sized
{
}

/// The store as the gateway shares it.
pub type SharedStore = Arc<dyn Store>;

/// A lock held in the store for as long as this value lives (see
/// [`Store::try_lock_shopify_poller`]).
#[derive(Default)]
pub struct StoreLock(Option<Box<dyn Send>>);

impl StoreLock {
    /// A lock that lasts as long as `holder` (e.g. the database session that holds it).
    pub fn holding(holder: impl Send + 'static) -> StoreLock {
        StoreLock(Some(Box::new(holder)))
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("held_in_store", &self.0.is_some())
            .finish()
    }
}
