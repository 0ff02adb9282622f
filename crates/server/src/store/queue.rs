//! The queue: events stored once per (ad account, event_id), claimed under a lease, settled.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::{DeadReason, StoreError};

use pincapi_core::event::{ConversionEvent, EventName};
pub use pincapi_core::source::Source;

/// Version of the `payload` contract stored with each row: v1 = the Pinterest event JSON.
pub const PAYLOAD_VERSION: i64 = 1;

/// The durable queue. All times are Unix milliseconds unless named otherwise.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug {
    /// Stores events durably (the call returns after the commit) and says, per event, whether
    /// it was new or a repeat of an (account, event_id) already stored. A repeat records its
    /// source on the stored event, and is merged into it while it waits unsent.
    async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError>;

    /// Claims up to `limit` due events of one account, oldest first, leasing them until
    /// `now + lease_ms`; no other claim returns them before the lease ends or they are settled.
    async fn claim(
        &self,
        ad_account_id: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Records the outcome of events claimed under the lease ending at `lease_until_ms`.
    /// An event whose lease has since been replaced (it ran out and another claim took the
    /// event) is left alone. Returns how many outcomes were recorded.
    async fn settle(
        &self,
        lease_until_ms: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError>;

    /// The earliest `next_attempt_at` of a pending event of the account, if any.
    async fn next_due(&self, ad_account_id: &str) -> Result<Option<i64>, StoreError>;

    /// Ends every lease now. Called by the single owner of an embedded store at start, so
    /// events claimed by a process that died are sent without waiting out the lease.
    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Pending and dead counts per (account, event name).
    async fn depth(&self) -> Result<Vec<Depth>, StoreError>;

    /// How many events are pending across every ad account (due, held, leased or waiting for
    /// a retry). Back-pressure polls it about once a second, so it must stay cheap.
    async fn pending_count(&self) -> Result<u64, StoreError>;

    /// Whether the store holds the ad accounts' call budgets for every process that uses it
    /// (PostgreSQL). An embedded store has one process, which counts its calls itself.
    fn shares_call_budgets(&self) -> bool {
        false
    }

    /// Takes one call of `ad_account_id`'s budget, at most `limit` calls in any 60 seconds
    /// over every process: `Ok(slot)` (to give back unused), or `Err(ms)`, when the next one
    /// frees up. Only for a store that [`Queue::shares_call_budgets`].
    async fn take_call(
        &self,
        ad_account_id: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<Result<i64, i64>, StoreError> {
        let _ = (ad_account_id, limit, now_ms);
        Err(StoreError::Unavailable(
            "this store does not share call budgets".into(),
        ))
    }

    /// Returns a call slot [`Queue::take_call`] gave and the round did not use.
    async fn give_back_call(&self, ad_account_id: &str, slot: i64) -> Result<(), StoreError> {
        let _ = (ad_account_id, slot);
        Ok(())
    }
}

/// An event ready to be stored: already strict, hashed and serialised.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub ad_account_id: String,
    pub event_id: String,
    pub event_name: EventName,
    /// Unix seconds.
    pub event_time: i64,
    /// Unix milliseconds when the gateway accepted it.
    pub received_at_ms: i64,
    pub source: Source,
    /// `MatchKeys` bits, for coverage statistics.
    pub match_keys: u32,
    /// Send with `?test=true`.
    pub test: bool,
    /// How long to wait before the first send, so that the other side of a browser/server
    /// pair can arrive and be merged (0 for most events).
    pub hold_ms: i64,
    /// The event as Pinterest receives it (JSON object).
    pub payload: String,
}

impl NewEvent {
    /// The one way an accepted event becomes a row to store, for every source: due at
    /// `received_at_ms`, not a test, held for nothing (see [`NewEvent::held`] and
    /// [`NewEvent::as_test`]).
    pub fn from_event(
        ad_account_id: &str,
        event: &ConversionEvent,
        source: Source,
        received_at_ms: i64,
    ) -> NewEvent {
        NewEvent {
            ad_account_id: ad_account_id.to_owned(),
            event_id: event.event_id.as_str().to_owned(),
            event_name: event.event_name,
            event_time: event.event_time.secs(),
            received_at_ms,
            source,
            match_keys: event.user_data.match_keys().0,
            test: false,
            hold_ms: 0,
            payload: event.to_json(),
        }
    }

    /// Waits `hold_ms` before its first send, so the other side of a browser/server pair can
    /// arrive and be merged.
    pub fn held(mut self, hold_ms: i64) -> NewEvent {
        self.hold_ms = hold_ms;
        self
    }

    /// Sent with Pinterest's test flag when `test`.
    pub fn as_test(mut self, test: bool) -> NewEvent {
        self.test = test;
        self
    }
}

/// What `enqueue` did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    /// Stored as a new event.
    Accepted,
    /// The same (ad account, event_id) was stored and not yet sent: its match keys and
    /// missing details were merged into it. Still one event at Pinterest.
    Merged,
    /// The same (ad account, event_id) was already stored and is sent or being sent.
    Duplicate,
}

/// An event claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    /// Row id, used to settle.
    pub id: i64,
    pub event_id: String,
    pub event_name: EventName,
    pub event_time: i64,
    pub received_at_ms: i64,
    pub attempts: u32,
    pub test: bool,
    pub payload: String,
    /// Unix ms when this claim's lease ends; settling needs it, so a worker whose lease ran
    /// out cannot overwrite what the next owner of the event does.
    pub lease_until: i64,
    /// An earlier claim's lease ended without a settlement (its holder died or stalled): the
    /// event may have reached Pinterest already, which de-duplicates it by event_id.
    pub retaken: bool,
}

/// How one claimed event ends this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Pinterest processed it.
    Delivered {
        id: i64,
        sent_at_ms: i64,
        warning: Option<String>,
    },
    /// Try again at `next_attempt_at_ms`. `counted` says whether this round counts as an
    /// attempt (a rate-limit wait or an auth stop does not).
    Retry {
        id: i64,
        next_attempt_at_ms: i64,
        error: String,
        counted: bool,
    },
    /// Give up: the event goes to the dead-letter table with the reason.
    Dead { id: i64, reason: DeadReason },
}

impl Settlement {
    /// The event's row id.
    pub fn id(&self) -> i64 {
        match self {
            Settlement::Delivered { id, .. }
            | Settlement::Retry { id, .. }
            | Settlement::Dead { id, .. } => *id,
        }
    }

    /// What both stores write for it, in the shape of their one settling statement.
    pub fn row(&self) -> SettlementRow {
        match self {
            Settlement::Delivered {
                id,
                sent_at_ms,
                warning,
            } => SettlementRow {
                id: *id,
                kind: "delivered",
                at: Some(*sent_at_ms),
                message: warning.clone(),
                counted: 1,
            },
            Settlement::Retry {
                id,
                next_attempt_at_ms,
                error,
                counted,
            } => SettlementRow {
                id: *id,
                kind: "retry",
                at: Some(*next_attempt_at_ms),
                message: Some(error.clone()),
                counted: i32::from(*counted),
            },
            Settlement::Dead { id, reason } => SettlementRow {
                id: *id,
                kind: "dead",
                at: None,
                message: Some(reason.to_string()),
                counted: 1,
            },
        }
    }
}

/// One settlement as the values of the settling statement: `kind` is the new state
/// (`delivered`, `dead`) or `retry`; `at` is the send time (delivered) or the next attempt
/// (retry); `message` the warning (delivered), error (retry) or reason (dead); `counted` is
/// added to the attempts.
#[derive(Debug, Serialize)]
pub struct SettlementRow {
    pub id: i64,
    pub kind: &'static str,
    pub at: Option<i64>,
    pub message: Option<String>,
    pub counted: i32,
}

/// The first outcome given for each event, sorted by id: a later one for the same event is
/// not recorded, as when each was its own statement and found the lease already ended.
pub fn first_per_event(settlements: Vec<Settlement>) -> Vec<Settlement> {
    let mut seen = std::collections::HashSet::new();
    let mut first: Vec<Settlement> = settlements
        .into_iter()
        .filter(|s| seen.insert(s.id()))
        .collect();
    first.sort_by_key(Settlement::id);
    first
}

/// Queue depth for one (account, event name).
#[derive(Debug, Clone, Serialize)]
pub struct Depth {
    pub ad_account_id: String,
    pub event_name: String,
    pub pending: u64,
    pub dead: u64,
}
