//! Dead letters: events Pinterest refused or that were given up on, and what operators do with them.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;

/// Dead letters as operators see and move them.
#[async_trait]
pub trait DeadLetters: Send + Sync + fmt::Debug {
    /// Dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts dead letters back in the queue with a fresh attempt count; returns how many.
    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError>;

    /// Drops dead letters for good (they stay as `dropped` for de-duplication); returns how many.
    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError>;
}

/// A dead-lettered event as operators see it. No payload: it is not needed to decide, and
/// it keeps the listing small.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub ad_account_id: String,
    pub event_id: String,
    pub event_name: String,
    pub event_time: i64,
    pub attempts: u32,
    pub reason: String,
}

/// Which dead letters an operator action applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
}

impl Selection {
    /// From an operator's "all" flag and id list: exactly one of them must be given.
    pub fn from_parts(all: bool, ids: Vec<i64>) -> Option<Selection> {
        match (all, ids.is_empty()) {
            (true, true) => Some(Selection::All),
            (false, false) => Some(Selection::Ids(ids)),
            _ => None,
        }
    }
}

/// Why an event became a dead letter. Stored as its text (what `deadletter list` shows); the
/// quality counts read the kind, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadReason {
    /// Pinterest refused the event itself (a per-event failure, or a 400 narrowed down to it),
    /// with Pinterest's message. Counted as `failed` as well as `dead`.
    Refused(String),
    /// Retries ran out.
    GaveUp { attempts: u32, last_error: String },
    /// Older than Pinterest's window when its turn came.
    TooOld { days: i64 },
}

impl DeadReason {
    /// Pinterest itself refused the event.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DeadReason::Refused(_))
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadReason::Refused(message) => write!(f, "Pinterest: {message}"),
            DeadReason::GaveUp {
                attempts,
                last_error,
            } => write!(
                f,
                "gave up after {attempts} attempts; last error: {last_error}"
            ),
            DeadReason::TooOld { days } => {
                write!(
                    f,
                    "not sent: older than {days} days, outside Pinterest's window"
                )
            }
        }
    }
}
