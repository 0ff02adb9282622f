//! The outbox: the durable queue every accepted event passes through on its way to Pinterest.
//!
//! [`Outbox`] is the one trait the rest of the server talks to; [`sqlite::SqliteOutbox`] is
//! the embedded implementation. An event is stored once per (ad account, event_id): a repeat
//! is reported as [`Enqueued::Duplicate`] and never sent twice. Rows hold only what Pinterest
//! receives (hashed match keys, raw IP/user agent/click id), never raw PII.
//!
//! An event's life: `pending` (due at `next_attempt_at`) → claimed by a worker under a lease →
//! settled as `delivered`, back to `pending` for a retry, or `dead` (dead-letter table view);
//! an operator can retry a dead event or drop it (`dropped`).

pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use pincapi_core::event::EventName;
use serde::Serialize;

/// Where an event came from. Stored as a bit in `sources` so one event can remember every
/// source that saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/events`.
    Api,
    /// A Shopify webhook.
    Webhook,
    /// The Shopify Admin API reconciliation poller.
    Poller,
    /// The browser collector (`POST /collect`).
    Collector,
    /// A mirror of a Pinterest Tag call made in the browser.
    TagMirror,
    /// `pincapi demo`.
    Demo,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 6] = [
        Source::Api,
        Source::Webhook,
        Source::Poller,
        Source::Collector,
        Source::TagMirror,
        Source::Demo,
    ];

    /// The label used in tables, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Webhook => "webhook",
            Source::Poller => "poller",
            Source::Collector => "collector",
            Source::TagMirror => "tag_mirror",
            Source::Demo => "demo",
        }
    }

    /// Whether the event was seen in the visitor's browser (as opposed to the shop's systems).
    pub fn is_browser(self) -> bool {
        matches!(self, Source::Collector | Source::TagMirror)
    }

    /// The bit of this source in a `sources` set.
    pub fn bit(self) -> i64 {
        1 << (self as i64)
    }

    /// The sources in a bit set.
    pub fn from_bits(bits: i64) -> Vec<Source> {
        Source::ALL
            .into_iter()
            .filter(|s| bits & s.bit() != 0)
            .collect()
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
    Dead { id: i64, reason: String },
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

/// Queue depth for one (account, event name).
#[derive(Debug, Clone, Serialize)]
pub struct Depth {
    pub ad_account_id: String,
    pub event_name: String,
    pub pending: u64,
    pub dead: u64,
}

/// Failures of the store itself (not of the data).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Query(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Query(e.to_string())
    }
}

/// The durable queue. All times are Unix milliseconds unless named otherwise.
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug {
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

    /// Dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts dead letters back in the queue with a fresh attempt count; returns how many.
    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError>;

    /// Drops dead letters for good (they stay as `dropped` for de-duplication); returns how many.
    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- Shopify ---

    /// Stores Shopify records, each atomically: its webhook delivery (deduplicated on the
    /// webhook id), its event (enqueued as [`Outbox::enqueue`] does), its order ledger row
    /// and its cancellation or refund. A record whose delivery was stored before stores
    /// nothing and is reported as [`ShopifyStored::DuplicateDelivery`].
    async fn record_shopify(
        &self,
        records: Vec<ShopifyRecord>,
    ) -> Result<Vec<ShopifyStored>, StoreError>;

    /// The poller's checkpoint of a shop: Unix seconds of the newest order it has seen.
    async fn shopify_checkpoint(&self, shop: &str) -> Result<Option<i64>, StoreError>;

    /// Moves a shop's checkpoint forward to `at` (never back).
    async fn advance_shopify_checkpoint(
        &self,
        shop: &str,
        at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The order ledger of a shop (or every shop), newest orders first, with cancellations
    /// and refunds.
    async fn shopify_ledger(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<ShopifyLedger, StoreError>;

    /// Forgets webhook deliveries received before `before_ms` (they are only kept to
    /// recognise Shopify's retries, which end after 4 hours); returns how many.
    async fn prune_shopify_deliveries(&self, before_ms: i64) -> Result<u64, StoreError>;

    // --- Retention and back-pressure ---

    /// How many events are pending across every ad account (due, held, leased or waiting for
    /// a retry). Back-pressure polls it about once a second, so it must stay cheap.
    async fn pending_count(&self) -> Result<u64, StoreError>;

    /// Deletes, with their payloads, up to `limit` events that are finished and older than
    /// `before_ms`, lowest id first: `delivered` ones sent before it, and `dropped` ones
    /// received and last scheduled before it (a drop records no time of its own). Pending and
    /// dead events are never deleted. Returns how many were deleted; a caller purging
    /// everything calls again until it gets less than `limit`, so no call holds the store
    /// long.
    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError>;

    /// How many events [`Outbox::purge_settled`] would delete for `before_ms`, in all.
    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Bytes the store takes on disk (SQLite: the database file and its WAL; PostgreSQL: the
    /// database's size), for sizing.
    async fn storage_bytes(&self) -> Result<u64, StoreError>;
}

// --- Shopify ---

/// One Shopify webhook delivery, or one order seen by the Admin API poller, with everything
/// it stores. Stored in one transaction by [`Outbox::record_shopify`].
#[derive(Debug, Clone)]
pub struct ShopifyRecord {
    /// The shop's domain.
    pub shop: String,
    /// The webhook delivery, deduplicated on its id; `None` for the poller.
    pub delivery: Option<ShopifyDelivery>,
    /// The event to enqueue, if the payload maps to one.
    pub event: Option<NewEvent>,
    /// The order's ledger row, for orders seen on the purchase topic or by the poller.
    pub order: Option<ShopifyOrder>,
    /// A cancellation or refund.
    pub adjustment: Option<ShopifyAdjustment>,
    /// The order is a test order: what becomes of the browser's copy of its purchase.
    pub test_order: Option<TestOrderCopy>,
    /// Unix ms.
    pub received_at_ms: i64,
}

/// A Shopify test order seen by the webhook or the poller. The browser (the custom pixel,
/// tag.js) reports its purchase as `order-<id>` without knowing it is a test; while that copy
/// waits unsent (pending, not claimed), it is dropped (state `dropped`, reason
/// [`TEST_ORDER_DROPPED`]) for `test_orders = ignore`, or flagged to be sent with Pinterest's
/// test flag for `send_as_test`, in the same transaction as the order's ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOrderCopy {
    pub ad_account_id: String,
    /// The purchase's event_id, `order-<id>`.
    pub event_id: String,
    /// `test_orders = send_as_test`; otherwise the copy is dropped.
    pub send_as_test: bool,
}

/// The reason recorded on a browser purchase dropped because Shopify says it is a test order.
pub const TEST_ORDER_DROPPED: &str = "Shopify test order";

/// A webhook delivery.
#[derive(Debug, Clone)]
pub struct ShopifyDelivery {
    /// `X-Shopify-Webhook-Id` (the same on Shopify's retries of one delivery).
    pub webhook_id: String,
    pub topic: String,
    /// What the gateway answered: `accepted`, `skipped`, `ignored`, `recorded`.
    pub outcome: String,
}

/// What became of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Its purchase event is in the outbox (sent, or on its way).
    Sent,
    /// It cannot be sent (no match key; older than Pinterest's window).
    Skipped,
    /// It is not a conversion (a test order, cancelled or voided at creation).
    Ignored,
}

impl OrderOutcome {
    /// The label used in the ledger, answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderOutcome::Sent => "sent",
            OrderOutcome::Skipped => "skipped",
            OrderOutcome::Ignored => "ignored",
        }
    }

    fn parse(s: &str) -> OrderOutcome {
        match s {
            "sent" => OrderOutcome::Sent,
            "skipped" => OrderOutcome::Skipped,
            _ => OrderOutcome::Ignored,
        }
    }
}

/// An order as the ledger keeps it. No personal data.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyOrder {
    pub order_id: String,
    pub ad_account_id: String,
    /// Unix seconds.
    pub created_at: i64,
    pub test: bool,
    pub value: Option<String>,
    pub currency: Option<String>,
    pub source_name: Option<String>,
    /// Once `sent`, an order stays `sent`; other outcomes are replaced by later sightings.
    pub outcome: OrderOutcome,
    pub reason: Option<String>,
    pub event_id: Option<String>,
    /// The source that saw it ([`Source::Webhook`] or [`Source::Poller`]); the ledger keeps
    /// the set of every source that did.
    #[serde(skip)]
    pub source: Source,
}

/// A cancellation or a refund, for reporting (Pinterest has no retraction event).
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyAdjustment {
    pub order_id: String,
    /// `cancelled` or `refunded`.
    pub kind: String,
    /// Unix seconds.
    pub at: i64,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub reason: Option<String>,
    pub test: bool,
}

/// What [`Outbox::record_shopify`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopifyStored {
    /// The delivery was stored before: nothing was stored now.
    DuplicateDelivery,
    /// Stored; with the outcome of its event's enqueue, if it had one.
    Stored(Option<Enqueued>),
}

/// A ledger row as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyOrderRow {
    pub shop: String,
    #[serde(flatten)]
    pub order: ShopifyOrder,
    /// Every source that saw the order.
    pub sources: Vec<Source>,
}

/// A cancellation or refund as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyAdjustmentRow {
    pub shop: String,
    #[serde(flatten)]
    pub adjustment: ShopifyAdjustment,
}

/// The order ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShopifyLedger {
    pub orders: Vec<ShopifyOrderRow>,
    pub adjustments: Vec<ShopifyAdjustmentRow>,
}

/// A shared outbox.
pub type SharedOutbox = Arc<dyn Outbox>;
