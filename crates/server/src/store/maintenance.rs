//! Maintenance: liveness, retention and sizing.

use std::fmt;

use async_trait::async_trait;

use super::StoreError;

/// Liveness, retention and sizing.
#[async_trait]
pub trait Maintenance: Send + Sync + fmt::Debug {
    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the last write failed for want of disk space (an embedded store only; it
    /// clears with the next write that succeeds).
    fn is_full(&self) -> bool {
        false
    }

    /// Deletes, with their payloads, up to `limit` events that are finished and older than
    /// `before_ms`, lowest id first: `delivered` ones sent before it, and `dropped` ones
    /// received and last scheduled before it (a drop records no time of its own). Pending and
    /// dead events are never deleted. Returns how many were deleted; a caller purging
    /// everything calls again until it gets less than `limit`, so no call holds the store
    /// long.
    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError>;

    /// How many events [`Store::purge_settled`] would delete for `before_ms`, in all.
    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Bytes the store takes on disk (SQLite: the database file and its WAL; PostgreSQL: the
    /// database's size), for sizing.
    async fn storage_bytes(&self) -> Result<u64, StoreError>;
}
