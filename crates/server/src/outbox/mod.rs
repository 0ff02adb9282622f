//! The outbox: the durable queue every accepted event passes through on its way to Pinterest.
//!
//! [`Outbox`] is the one trait the rest of the server talks to; [`sqlite::SqliteOutbox`] is
//! the embedded implementation and [`postgres::PostgresOutbox`] the shared one, for several
//! gateway instances; [`open::open_store`] opens the one the configuration names. An event
//! is stored once per (ad account, event_id): a repeat is reported as
//! [`Enqueued::Duplicate`] and never sent twice. Rows hold only what Pinterest
//! receives (hashed match keys, raw IP/user agent/click id), never raw PII.
//!
//! An event's life: `pending` (due at `next_attempt_at`) → claimed by a worker under a lease →
//! settled as `delivered`, back to `pending` for a retry, or `dead` (dead-letter table view);
//! an operator can retry a dead event or drop it (`dropped`).

pub mod open;
pub mod postgres;
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

    // --- Multi-instance ---

    /// Takes the lock that lets one gateway instance at a time run the Shopify poller of
    /// `shop`, or `None` while another instance holds it. The lock lasts as long as the
    /// returned guard, and ends by itself when the instance holding it dies. An embedded store
    /// has a single owner process, so there it is always granted.
    async fn try_lock_shopify_poller(&self, shop: &str) -> Result<Option<StoreLock>, StoreError> {
        let _ = shop;
        Ok(Some(StoreLock::default()))
    }

    /// Takes the lock that lets one run at a time (of any gateway instance, `serve`'s schedule
    /// or `pincapi audiences sync`) sync the audiences of `ad_account_id`, so two runs never
    /// both create the same Pinterest object; `None` while another run holds it. Like
    /// [`Outbox::try_lock_shopify_poller`]: held as long as the guard, ends with its holder,
    /// always granted by an embedded store.
    async fn try_lock_audience_sync(
        &self,
        ad_account_id: &str,
    ) -> Result<Option<StoreLock>, StoreError> {
        let _ = ad_account_id;
        Ok(Some(StoreLock::default()))
    }

    // --- Quality ---

    /// Quality aggregates per (hour received, ad account, event name) for hours from
    /// `since_hour` (Unix seconds) on, oldest first. Kept in the same transactions as the
    /// writes they count, so they are exact and survive the purge of old events.
    async fn quality_hours(&self, since_hour: i64) -> Result<Vec<QualityHour>, StoreError>;

    /// Pinterest's errors and warnings by message, per (day, ad account, kind), for days from
    /// `since_day` (Unix seconds of a UTC midnight) on.
    async fn quality_messages(&self, since_day: i64) -> Result<Vec<QualityMessage>, StoreError>;

    /// The Shopify order ledger against what was delivered and what the browser saw, per day
    /// of order creation, for orders created in `since..until` (Unix seconds) that are not
    /// test orders and are conversions (not `ignored`); with up to `missing_limit` of those
    /// orders that have no delivered purchase, oldest first.
    async fn shopify_truth(
        &self,
        since: i64,
        until: i64,
        missing_limit: usize,
    ) -> Result<ShopifyTruth, StoreError>;

    /// Every alert's persisted state.
    async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError>;

    /// Records an alert's state (fired or cleared), replacing the previous one of its
    /// (rule, ad account).
    async fn save_alert_state(&self, state: AlertState) -> Result<(), StoreError>;

    /// Stores Pinterest's Event Quality Scores, replacing earlier ones of the same (ad account,
    /// ingestion source, lookback period, source platform).
    async fn save_eqs(&self, scores: Vec<EqsScore>) -> Result<(), StoreError>;

    /// The latest stored Event Quality Scores.
    async fn eqs_scores(&self) -> Result<Vec<EqsScore>, StoreError>;

    // --- Audiences ---

    /// The audience scan's checkpoint: the newest `received_at` (Unix ms) it has read.
    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError>;

    /// Stored events received at or after `from_ms`, after the `(received_at, id)` position
    /// `after` when given, in that order, at most `limit`. Test events and dropped ones are
    /// left out: they are not people's activity.
    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records what scanned events say about their members (upserts that keep the latest
    /// time of each kind, so reading an event twice changes nothing), skipping suppressed
    /// members, and moves the checkpoint forward to `checkpoint_ms` (never back).
    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError>;

    /// Every member of an ad account with its facts; a purchase is `refunded` when a Shopify
    /// refund of its order (`order-<id>`) is recorded.
    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError>;

    /// Forgets a member everywhere: records the hash as suppressed (it never enters an
    /// audience again), deletes its facts, and takes it out of every stored event payload
    /// (an unsent event left without a required match key is dropped). Its synced list
    /// memberships stay until the next sync has removed it from the lists at Pinterest.
    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError>;

    /// The Pinterest objects (customer lists, audiences) kept for an ad account's segments.
    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError>;

    /// Stores (or replaces) the Pinterest id and last status of one object.
    async fn save_audience_object(&self, object: AudienceObject) -> Result<(), StoreError>;

    /// Forgets one stored Pinterest object (it is gone at Pinterest); for a customer list
    /// (`list:<kind>`) also the members synced to it, so the next sync starts it afresh.
    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError>;

    /// The members a segment's list of `kind` held after the last successful update.
    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError>;

    /// Applies one successful customer-list update to the synced members.
    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError>;

    // --- Census ---

    /// What the store knows of orders of `shop` that the Admin API listed (the quality
    /// report's census), per order id in `order_ids`: whether the order ledger has the order,
    /// and the state of its purchase event `order-<id>` in the outbox of `ad_account_id`, if
    /// one is stored. Reads only.
    async fn census_lookup(
        &self,
        shop: String,
        ad_account_id: String,
        order_ids: Vec<String>,
    ) -> Result<Vec<CensusLookup>, StoreError>;

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

// --- Multi-instance ---

/// A lock held in the store for as long as this value lives (see
/// [`Outbox::try_lock_shopify_poller`]).
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

// --- Audiences ---

pub use pincapi_core::audience::{EventFacts, IdKind, PersonFacts};

/// A stored event as the audience scan reads it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub ad_account_id: String,
    pub received_at_ms: i64,
    pub payload: String,
}

/// One Pinterest object pincapi keeps for a segment, named by `object`: `list:email`,
/// `list:maid` (customer lists), `audience:email`, `audience:maid` (their `CUSTOMER_LIST`
/// audiences), `visitor`, `actalike`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudienceObject {
    pub ad_account_id: String,
    pub segment: String,
    pub object: String,
    pub pinterest_id: String,
    /// The last status Pinterest reported (`READY`, `TOO_SMALL`, ...).
    pub status: Option<String>,
    /// Unix ms.
    pub updated_at_ms: i64,
}

/// A customer-list update's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOperation {
    Add,
    Remove,
}

impl ListOperation {
    /// Pinterest's `operation_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListOperation::Add => "ADD",
            ListOperation::Remove => "REMOVE",
        }
    }
}

/// What [`Outbox::forget_member`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    /// Members' facts deleted (one per ad account that knew the member).
    pub members: u64,
    /// Stored events the hash was taken out of.
    pub events_scrubbed: u64,
    /// Unsent events dropped because no required match key was left.
    pub events_dropped: u64,
}

/// The reason recorded on an unsent event dropped by a forget request.
pub const FORGOTTEN_DROPPED: &str = "forgotten: no match key left";

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

// --- Quality ---

/// The prefix of a dead letter's reason when Pinterest itself refused the event (as opposed
/// to giving up after retries, or an event too old to send): such dead letters also count as
/// `failed` in the quality aggregates.
pub const REFUSED_PREFIX: &str = "Pinterest: ";

/// Counts of one (hour, ad account, event name). Every event is counted in the hour it was
/// received (its first receipt), whatever happens to it later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QualityCounts {
    /// Events stored (first receipts).
    pub received: i64,
    /// Repeats of a stored event (merged into it or not): what de-duplication caught.
    pub duplicates: i64,
    /// Of those, repeats merged into the stored event while it waited unsent.
    pub merged: i64,
    /// Events each source saw, in [`Source::ALL`] order.
    pub seen: [i64; 6],
    /// Events carrying each match key (after merges), in `MatchKeys::NAMES` order.
    pub keys: [i64; 8],
    /// Events Pinterest processed.
    pub delivered: i64,
    /// Events Pinterest refused (each is also dead-lettered).
    pub failed: i64,
    /// Events dead-lettered (refused, given up after retries, or too old to send).
    pub dead: i64,
    /// Attempts that failed and were scheduled again (429 without a wait, 5xx, timeouts).
    pub retried: i64,
    /// Rounds an event waited without using an attempt (a rate-limit wait, a stopped account).
    pub waits: i64,
    /// Events processed with a warning.
    pub warned: i64,
    /// Events delivered more than an hour after their event_time.
    pub late: i64,
    /// Delivered events per lag bucket (`pincapi_core::quality::LAG_BOUNDS`).
    pub lag: [i64; pincapi_core::quality::LAG_BUCKETS],
    /// The largest lag of a delivered event, seconds (exact).
    pub lag_max: i64,
}

impl QualityCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &QualityCounts) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.merged += other.merged;
        for (a, b) in self.seen.iter_mut().zip(other.seen) {
            *a += b;
        }
        for (a, b) in self.keys.iter_mut().zip(other.keys) {
            *a += b;
        }
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead += other.dead;
        self.retried += other.retried;
        self.waits += other.waits;
        self.warned += other.warned;
        self.late += other.late;
        for (a, b) in self.lag.iter_mut().zip(other.lag) {
            *a += b;
        }
        self.lag_max = self.lag_max.max(other.lag_max);
    }

    /// Counts a delivery `lag_secs` after the event happened.
    pub fn count_lag(&mut self, lag_secs: i64) {
        self.lag[pincapi_core::quality::lag_bucket(lag_secs)] += 1;
        self.lag_max = self.lag_max.max(lag_secs.max(0));
        if lag_secs > pincapi_core::quality::LATE_AFTER_SECS {
            self.late += 1;
        }
    }

    /// Counts the sources in bit set `bits` as having seen an event.
    pub fn count_sources(&mut self, bits: i64) {
        for (i, s) in Source::ALL.iter().enumerate() {
            if bits & s.bit() != 0 {
                self.seen[i] += 1;
            }
        }
    }

    /// Counts the match keys in bit set `bits` as present on an event.
    pub fn count_keys(&mut self, bits: u32) {
        for (i, (bit, _)) in pincapi_core::event::MatchKeys::NAMES.iter().enumerate() {
            if bits & bit == *bit {
                self.keys[i] += 1;
            }
        }
    }
}

/// One row of the quality aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityHour {
    /// Unix seconds of the start of the hour the events were received.
    pub hour: i64,
    pub ad_account_id: String,
    pub event_name: String,
    pub counts: QualityCounts,
}

/// How many times Pinterest (or the way to it) said one thing, on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityMessage {
    /// Unix seconds of the UTC midnight.
    pub day: i64,
    pub ad_account_id: String,
    /// `warning` (processed with a warning), `retry` (a failed attempt), `dead_letter`.
    pub kind: String,
    pub message: String,
    pub count: i64,
}

/// Shopify orders of one day against Pinterest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TruthDay {
    /// Unix seconds of the UTC midnight of the orders' creation.
    pub day: i64,
    /// Orders created (non-test, not ignored).
    pub orders: i64,
    /// Of those, orders whose purchase was delivered to Pinterest.
    pub delivered: i64,
    /// Orders whose purchase the browser (Tag mirror or collector) reported.
    pub browser_seen: i64,
    /// Delivered purchases the browser never reported: conversions recovered by the server.
    pub recovered: i64,
    /// Orders skipped (no match key, too old), per reason.
    pub skipped: Vec<(String, i64)>,
}

/// An order with no delivered purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingOrder {
    pub shop: String,
    pub order_id: String,
    pub ad_account_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The ledger's outcome (`sent` while on its way, `skipped`).
    pub outcome: String,
    pub reason: Option<String>,
}

/// What [`Outbox::shopify_truth`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShopifyTruth {
    pub days: Vec<TruthDay>,
    pub missing: Vec<MissingOrder>,
}

/// An alert's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertState {
    /// The rule's name, e.g. `auth_failure`.
    pub rule: String,
    pub ad_account_id: String,
    pub active: bool,
    /// What was wrong, in words, as of the last transition.
    pub detail: String,
    /// Unix ms of the last firing.
    pub fired_at_ms: i64,
    /// Unix ms of the last clearing, if it cleared since.
    pub cleared_at_ms: Option<i64>,
}

/// One Event Quality Score as Pinterest returned it, with when we polled it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EqsScore {
    pub ad_account_id: String,
    /// `CONVERSIONS_API`, `TAG`, ...
    pub ingestion_source: String,
    /// `1d` or `14d`.
    pub lookback_period: String,
    pub source_platform: String,
    /// `NEEDS_IMPROVEMENT`, `FAIR`, `GOOD`.
    pub overall_status: String,
    /// Pinterest's `quality_components` object, as returned.
    pub quality_components: serde_json::Value,
    /// Unix ms.
    pub polled_at_ms: i64,
}

// --- Census ---

/// What the store knows of one order the census listed ([`Outbox::census_lookup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CensusLookup {
    pub order_id: String,
    /// The order ledger has the order: a webhook or the poller reported it.
    pub in_ledger: bool,
    /// The state of its purchase event (`pending`, `delivered`, `dead`, `dropped`), if one
    /// is stored.
    pub purchase_state: Option<String>,
    /// The browser (Tag mirror or collector) reported the purchase.
    pub browser_seen: bool,
}

/// A shared outbox.
pub type SharedOutbox = Arc<dyn Outbox>;
