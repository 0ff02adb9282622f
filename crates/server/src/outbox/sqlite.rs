//! The embedded outbox: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the write connection and commits every
//! job waiting in its queue in one transaction (group commit): many concurrent requests share
//! one fsync, and a request is answered only after the commit that holds its events. Each
//! job runs inside its own savepoint, so one failing job does not undo its neighbours. Reads
//! that may scan (depth, dead letters) use a separate connection and never hold up writers.
//!
//! One process owns an embedded store at a time: [`SqliteOutbox::lock_owner`] takes an
//! exclusive lock on `<db>.lock`, so a second `serve` on the same file refuses to start
//! instead of double-sending. CLI commands may still open the file alongside.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pincapi_core::event::EventName;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::CensusLookup;
use super::{
    AlertState, EqsScore, MissingOrder, QualityCounts, QualityHour, QualityMessage, REFUSED_PREFIX,
    ShopifyTruth, TruthDay,
};
use super::{
    AudienceObject, EventFacts, FORGOTTEN_DROPPED, ForgetReport, IdKind, ListOperation,
    PersonFacts, StoredEvent,
};
use super::{
    ClaimedEvent, DeadLetter, Depth, Enqueued, NewEvent, Outbox, Selection, Settlement, StoreError,
};
use super::{
    OrderOutcome, ShopifyAdjustment, ShopifyAdjustmentRow, ShopifyLedger, ShopifyOrder,
    ShopifyOrderRow, ShopifyRecord, ShopifyStored, Source, TEST_ORDER_DROPPED, TestOrderCopy,
};
use crate::config::Synchronous;
use pincapi_core::audience::{Activity, Purchase};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

/// Version of the `payload` contract stored with each row: v1 = the Pinterest event JSON.
pub const PAYLOAD_VERSION: i64 = 1;

const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS events (
    id               INTEGER PRIMARY KEY,
    ad_account_id    TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    event_name       TEXT    NOT NULL,
    event_time       INTEGER NOT NULL,          -- Unix seconds
    received_at      INTEGER NOT NULL,          -- Unix ms
    source           TEXT    NOT NULL,          -- the first source that sent it
    sources          INTEGER NOT NULL,          -- bit set of every source that sent it
    match_keys       INTEGER NOT NULL,          -- MatchKeys bits
    test             INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL DEFAULT 'pending', -- pending | delivered | dead | dropped
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,          -- Unix ms; a claim moves it to the lease end
    lease_until      INTEGER,                   -- Unix ms while claimed
    sent_at          INTEGER,                   -- Unix ms of the request that delivered it
    last_error       TEXT,
    warning          TEXT,
    UNIQUE (ad_account_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_due
    ON events (ad_account_id, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_dead ON events (id) WHERE state = 'dead';
-- The event as Pinterest receives it (hashed), apart from the hot row: claims and
-- settlements rewrite `events` rows, and keeping those small keeps the writes cheap.
CREATE TABLE IF NOT EXISTS payloads (
    id               INTEGER PRIMARY KEY,       -- = events.id
    payload_version  INTEGER NOT NULL,
    body             TEXT    NOT NULL
);
";

// --- Shopify ---
/// Shopify: webhook deliveries (for dedup), the order ledger, cancellations and refunds, and
/// the poller's checkpoint per shop. No personal data: ids, times, amounts, outcomes.
const MIGRATION_2: &str = "
CREATE TABLE IF NOT EXISTS shopify_deliveries (
    shop         TEXT    NOT NULL,
    webhook_id   TEXT    NOT NULL,          -- X-Shopify-Webhook-Id
    topic        TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,          -- accepted | skipped | ignored | recorded
    received_at  INTEGER NOT NULL,          -- Unix ms
    PRIMARY KEY (shop, webhook_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shopify_deliveries_age ON shopify_deliveries (received_at);
CREATE TABLE IF NOT EXISTS shopify_orders (
    shop           TEXT    NOT NULL,
    order_id       TEXT    NOT NULL,
    ad_account_id  TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,        -- Unix seconds
    test           INTEGER NOT NULL,
    value          TEXT,
    currency       TEXT,
    source_name    TEXT,
    outcome        TEXT    NOT NULL,        -- sent | skipped | ignored; sent is final
    reason         TEXT,
    event_id       TEXT,
    sources        INTEGER NOT NULL,        -- bit set of the sources that saw it
    first_seen_at  INTEGER NOT NULL,        -- Unix ms
    updated_at     INTEGER NOT NULL,        -- Unix ms
    PRIMARY KEY (shop, order_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shopify_orders_created ON shopify_orders (created_at);
CREATE TABLE IF NOT EXISTS shopify_adjustments (
    id           INTEGER PRIMARY KEY,
    shop         TEXT    NOT NULL,
    order_id     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,          -- cancelled | refunded
    at           INTEGER NOT NULL,          -- Unix seconds
    amount       TEXT,
    currency     TEXT,
    reason       TEXT,
    test         INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL           -- Unix ms
);
CREATE UNIQUE INDEX IF NOT EXISTS shopify_adjustments_once
    ON shopify_adjustments (shop, order_id, kind, at, coalesce(amount, ''));
CREATE TABLE IF NOT EXISTS shopify_checkpoints (
    shop        TEXT    PRIMARY KEY,
    checkpoint  INTEGER NOT NULL,           -- Unix seconds of the newest order seen
    updated_at  INTEGER NOT NULL            -- Unix ms
);
";

// --- Quality ---
/// Quality: per-event facts missing from `events` (how many repeats de-duplication caught),
/// what the Shopify ledger needs to survive the purge of old events (whether the browser
/// reported the order's purchase, whether it was delivered), the hourly aggregates, Pinterest's
/// messages by day, alert states and Pinterest's Event Quality Scores. The aggregates start
/// empty on upgrade; the ledger flags are filled from the events still stored.
const MIGRATION_3: &str = "
ALTER TABLE events ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shopify_orders ADD COLUMN browser_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shopify_orders ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS shopify_orders_order ON shopify_orders (order_id);
UPDATE shopify_orders SET
    browser_seen = CASE WHEN EXISTS (
        SELECT 1 FROM events e
        WHERE e.ad_account_id = shopify_orders.ad_account_id
            AND e.event_id = 'order-' || shopify_orders.order_id AND (e.sources & 24) <> 0)
        THEN 1 ELSE 0 END,
    delivered = CASE WHEN EXISTS (
        SELECT 1 FROM events e
        WHERE e.ad_account_id = shopify_orders.ad_account_id
            AND e.event_id = 'order-' || shopify_orders.order_id AND e.state = 'delivered')
        THEN 1 ELSE 0 END;
-- One row per (hour received, ad account, event name); see QualityCounts for each column.
CREATE TABLE IF NOT EXISTS quality_hours (
    hour             INTEGER NOT NULL,          -- Unix seconds, start of the hour received
    ad_account_id    TEXT    NOT NULL,
    event_name       TEXT    NOT NULL,
    received         INTEGER NOT NULL DEFAULT 0,
    duplicates       INTEGER NOT NULL DEFAULT 0,
    merged           INTEGER NOT NULL DEFAULT 0,
    seen_api         INTEGER NOT NULL DEFAULT 0,
    seen_webhook     INTEGER NOT NULL DEFAULT 0,
    seen_poller      INTEGER NOT NULL DEFAULT 0,
    seen_collector   INTEGER NOT NULL DEFAULT 0,
    seen_tag_mirror  INTEGER NOT NULL DEFAULT 0,
    seen_demo        INTEGER NOT NULL DEFAULT 0,
    key_em           INTEGER NOT NULL DEFAULT 0,
    key_ph           INTEGER NOT NULL DEFAULT 0,
    key_external_id  INTEGER NOT NULL DEFAULT 0,
    key_click_id     INTEGER NOT NULL DEFAULT 0,
    key_ip_ua        INTEGER NOT NULL DEFAULT 0,
    key_name         INTEGER NOT NULL DEFAULT 0,
    key_address      INTEGER NOT NULL DEFAULT 0,
    key_hashed_maids INTEGER NOT NULL DEFAULT 0,
    delivered        INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    dead             INTEGER NOT NULL DEFAULT 0,
    retried          INTEGER NOT NULL DEFAULT 0,
    waits            INTEGER NOT NULL DEFAULT 0,
    warned           INTEGER NOT NULL DEFAULT 0,
    late             INTEGER NOT NULL DEFAULT 0,
    lag_0            INTEGER NOT NULL DEFAULT 0,
    lag_1            INTEGER NOT NULL DEFAULT 0,
    lag_2            INTEGER NOT NULL DEFAULT 0,
    lag_3            INTEGER NOT NULL DEFAULT 0,
    lag_4            INTEGER NOT NULL DEFAULT 0,
    lag_5            INTEGER NOT NULL DEFAULT 0,
    lag_6            INTEGER NOT NULL DEFAULT 0,
    lag_7            INTEGER NOT NULL DEFAULT 0,
    lag_8            INTEGER NOT NULL DEFAULT 0,
    lag_9            INTEGER NOT NULL DEFAULT 0,
    lag_10           INTEGER NOT NULL DEFAULT 0,
    lag_11           INTEGER NOT NULL DEFAULT 0,
    lag_max          INTEGER NOT NULL DEFAULT 0, -- seconds, exact
    PRIMARY KEY (hour, ad_account_id, event_name)
);
CREATE TABLE IF NOT EXISTS quality_messages (
    day            INTEGER NOT NULL,            -- Unix seconds of the UTC midnight received
    ad_account_id  TEXT    NOT NULL,
    kind           TEXT    NOT NULL,            -- warning | retry | wait | dead_letter
    message        TEXT    NOT NULL,
    count          INTEGER NOT NULL,
    PRIMARY KEY (day, ad_account_id, kind, message)
);
CREATE TABLE IF NOT EXISTS alert_states (
    rule           TEXT    NOT NULL,
    ad_account_id  TEXT    NOT NULL,
    active         INTEGER NOT NULL,
    detail         TEXT    NOT NULL,
    fired_at       INTEGER NOT NULL,            -- Unix ms
    cleared_at     INTEGER,                     -- Unix ms
    PRIMARY KEY (rule, ad_account_id)
);
CREATE TABLE IF NOT EXISTS eqs_scores (
    ad_account_id       TEXT    NOT NULL,
    ingestion_source    TEXT    NOT NULL,
    lookback_period     TEXT    NOT NULL,
    source_platform     TEXT    NOT NULL,
    overall_status      TEXT    NOT NULL,
    quality_components  TEXT    NOT NULL,       -- Pinterest's JSON object
    polled_at           INTEGER NOT NULL,       -- Unix ms
    PRIMARY KEY (ad_account_id, ingestion_source, lookback_period, source_platform)
);
";

/// The counter columns of `quality_hours`, in the order of [`counts_to_row`].
pub(crate) const QUALITY_COLUMNS: [&str; 36] = [
    "received",
    "duplicates",
    "merged",
    "seen_api",
    "seen_webhook",
    "seen_poller",
    "seen_collector",
    "seen_tag_mirror",
    "seen_demo",
    "key_em",
    "key_ph",
    "key_external_id",
    "key_click_id",
    "key_ip_ua",
    "key_name",
    "key_address",
    "key_hashed_maids",
    "delivered",
    "failed",
    "dead",
    "retried",
    "waits",
    "warned",
    "late",
    "lag_0",
    "lag_1",
    "lag_2",
    "lag_3",
    "lag_4",
    "lag_5",
    "lag_6",
    "lag_7",
    "lag_8",
    "lag_9",
    "lag_10",
    "lag_11",
];

// --- Audiences ---
/// Audiences: what the scan of stored events learned about each member (hashed email or
/// MAID) per ad account, the members forgotten on request, and the sync state with Pinterest
/// (the customer lists and audiences kept per segment, and each list's synced members).
/// Times of activity are Unix seconds with 0 for "never", so upserts can take max().
const MIGRATION_4: &str = "
CREATE TABLE IF NOT EXISTS audience_people (
    ad_account_id     TEXT    NOT NULL,
    kind              TEXT    NOT NULL,     -- email | maid
    hash              TEXT    NOT NULL,     -- SHA-256 hex as Pinterest receives it
    last_visit_at     INTEGER NOT NULL DEFAULT 0,   -- Unix seconds, 0 = never
    last_view_at      INTEGER NOT NULL DEFAULT 0,
    last_cart_at      INTEGER NOT NULL DEFAULT 0,
    last_purchase_at  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ad_account_id, kind, hash)
);
CREATE TABLE IF NOT EXISTS audience_views (
    ad_account_id  TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    product        TEXT    NOT NULL,        -- a content id, or category:<name>
    last_at        INTEGER NOT NULL,        -- Unix seconds
    PRIMARY KEY (ad_account_id, kind, hash, product)
);
CREATE TABLE IF NOT EXISTS audience_purchases (
    ad_account_id  TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    at             INTEGER NOT NULL,        -- Unix seconds
    value          TEXT,                    -- decimal string
    PRIMARY KEY (ad_account_id, kind, hash, event_id)
);
CREATE TABLE IF NOT EXISTS audience_suppressed (
    kind           TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    suppressed_at  INTEGER NOT NULL,        -- Unix ms
    PRIMARY KEY (kind, hash)
);
CREATE TABLE IF NOT EXISTS audience_checkpoints (
    name        TEXT    PRIMARY KEY,
    checkpoint  INTEGER NOT NULL,           -- Unix ms: newest received_at read
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audience_objects (
    ad_account_id  TEXT    NOT NULL,
    segment        TEXT    NOT NULL,
    object         TEXT    NOT NULL,        -- list:email | list:maid | audience:email | ... | visitor | actalike
    pinterest_id   TEXT    NOT NULL,
    status         TEXT,
    updated_at     INTEGER NOT NULL,        -- Unix ms
    PRIMARY KEY (ad_account_id, segment, object)
);
CREATE TABLE IF NOT EXISTS audience_members (
    ad_account_id  TEXT    NOT NULL,
    segment        TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    PRIMARY KEY (ad_account_id, segment, kind, hash)
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, id);
";

/// The name of the audience scan's row in `audience_checkpoints`.
const AUDIENCE_SCAN: &str = "events";

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job gets the connection inside the open transaction, or `None` when the transaction
/// could not begin (then it must not touch the store and only reports the failure).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// The SQLite outbox.
pub struct SqliteOutbox {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    stop_checkpoints: Arc<AtomicBool>,
}

impl Drop for SqliteOutbox {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutbox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// Opens (creating if needed) the store at `path`, runs migrations, and starts the writer
    /// thread.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqliteOutbox, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let writer = open_connection(path)?;
        migrate(&writer)?;
        // Checkpoints run on their own connection and thread (PASSIVE: they never block the
        // writer), so a commit never waits for WAL pages to be copied into the database.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        // The other connections keep a small page cache: SQLite drops a connection's whole
        // cache whenever another connection has written, and dropping a large one is slow.
        let reader = open_connection(path)?;
        reader.execute_batch("PRAGMA cache_size = -4096")?;
        let checkpointer = open_connection(path)?;
        checkpointer.execute_batch("PRAGMA cache_size = -1024")?;
        let syncer = match synchronous {
            Synchronous::Normal => None,
            Synchronous::Full => {
                let mut wal_path = path.as_os_str().to_owned();
                wal_path.push("-wal");
                let wal = File::options()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&wal_path)
                    .map_err(|e| {
                        StoreError::Unavailable(format!("cannot open the WAL for syncing: {e}"))
                    })?;
                let (tx, rx) = mpsc::channel();
                std::thread::Builder::new()
                    .name("pincapi-sqlite-sync".into())
                    .spawn(move || sync_loop(wal, rx))
                    .map_err(|e| {
                        StoreError::Unavailable(format!("cannot start sync thread: {e}"))
                    })?;
                Some(tx)
            }
        };
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pincapi-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, syncer))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("pincapi-sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(&checkpointer, &stop))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start checkpoint thread: {e}"))
                })?;
        }
        Ok(SqliteOutbox {
            path: path.to_owned(),
            jobs,
            reader: Arc::new(Mutex::new(reader)),
            stop_checkpoints: stop,
        })
    }

    /// Takes the exclusive owner lock of the store (`<db>.lock`) for as long as the returned
    /// file lives. Fails at once when another process holds it.
    pub fn lock_owner(path: &Path) -> Result<File, StoreError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open lock file: {e}")))?;
        file.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is in use by another pincapi process; one process owns an embedded store \
                 (use PostgreSQL to run several)",
                path.display()
            ))
        })?;
        Ok(file)
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("reader poisoned".into()))?;
        Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs `f` on the writer thread inside the next group commit and returns its result once
    /// the commit is durable.
    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Unavailable("transaction did not begin".into())),
            };
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?
    }

    /// Runs a read on the reader connection off the async threads.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::Unavailable("reader poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        self.write(move |conn| {
            let mut out = Vec::with_capacity(events.len());
            let mut tally = Tally::default();
            for e in &events {
                out.push(insert_event(conn, e, &mut tally)?);
            }
            tally.flush(conn)?;
            Ok(out)
        })
        .await
    }

    async fn claim(
        &self,
        ad_account_id: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let account = ad_account_id.to_owned();
        self.write(move |conn| {
            // One statement picks the due events and leases them: the lease end becomes their
            // next_attempt_at, so no other claim sees them until it passes or they are settled.
            let lease_end = now_ms + lease_ms;
            let mut lease = conn.prepare_cached(
                "UPDATE events SET next_attempt_at = ?4, lease_until = ?4
                 WHERE id IN (
                     SELECT id FROM events
                     WHERE state = 'pending' AND ad_account_id = ?1 AND next_attempt_at <= ?2
                     ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING id, event_id, event_name, event_time, received_at, attempts, test",
            )?;
            let rows = lease.query_map(params![account, now_ms, limit as i64, lease_end], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })?;
            let mut claimed = Vec::new();
            let mut body = conn.prepare_cached("SELECT body FROM payloads WHERE id = ?1")?;
            for row in rows {
                let (id, event_id, name, event_time, received_at_ms, attempts, test) = row?;
                let event_name = EventName::parse(&name).ok_or_else(|| {
                    StoreError::Query(format!("row {id} has an unknown event_name"))
                })?;
                let payload: String = body.query_row(params![id], |r| r.get(0))?;
                claimed.push(ClaimedEvent {
                    id,
                    event_id,
                    event_name,
                    event_time,
                    received_at_ms,
                    attempts,
                    test,
                    payload,
                    lease_until: lease_end,
                });
            }
            // RETURNING gives rows in no promised order; send oldest first.
            claimed.sort_by_key(|c| c.id);
            Ok(claimed)
        })
        .await
    }

    async fn settle(
        &self,
        lease_until_ms: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| {
            let mut applied = 0;
            let mut tally = Tally::default();
            for s in &settlements {
                // Each update returns what the aggregates need, or nothing when the lease
                // was replaced (then nothing is counted either).
                let settled = match s {
                    Settlement::Delivered {
                        id,
                        sent_at_ms,
                        warning,
                    } => settle_one(
                        conn,
                        "UPDATE events SET state = 'delivered', sent_at = ?3, warning = ?4,
                             attempts = attempts + 1, lease_until = NULL
                         WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'
                         RETURNING ad_account_id, event_name, event_id, received_at, event_time",
                        params![id, lease_until_ms, sent_at_ms, warning],
                    )?,
                    Settlement::Retry {
                        id,
                        next_attempt_at_ms,
                        error,
                        counted,
                    } => settle_one(
                        conn,
                        "UPDATE events SET next_attempt_at = ?3, last_error = ?4,
                             attempts = attempts + ?5, lease_until = NULL
                         WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'
                         RETURNING ad_account_id, event_name, event_id, received_at, event_time",
                        params![
                            id,
                            lease_until_ms,
                            next_attempt_at_ms,
                            error,
                            i64::from(*counted)
                        ],
                    )?,
                    Settlement::Dead { id, reason } => settle_one(
                        conn,
                        "UPDATE events SET state = 'dead', last_error = ?3,
                             attempts = attempts + 1, lease_until = NULL
                         WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'
                         RETURNING ad_account_id, event_name, event_id, received_at, event_time",
                        params![id, lease_until_ms, reason],
                    )?,
                };
                let Some(settled) = settled else {
                    continue;
                };
                applied += 1;
                tally.settled(conn, &settled, s)?;
            }
            tally.flush(conn)?;
            Ok(applied)
        })
        .await
    }

    async fn next_due(&self, ad_account_id: &str) -> Result<Option<i64>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_at) FROM events
                     WHERE state = 'pending' AND ad_account_id = ?1",
                )?
                .query_row(params![account], |r| r.get::<_, Option<i64>>(0))?)
        })
        .await
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE events SET next_attempt_at = ?1, lease_until = NULL
                 WHERE state = 'pending' AND lease_until IS NOT NULL",
                params![now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<Vec<Depth>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ad_account_id, event_name,
                        sum(state = 'pending'), sum(state = 'dead')
                 FROM events WHERE state IN ('pending', 'dead')
                 GROUP BY ad_account_id, event_name ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Depth {
                    ad_account_id: r.get(0)?,
                    event_name: r.get(1)?,
                    pending: r.get::<_, i64>(2)? as u64,
                    dead: r.get::<_, i64>(3)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, ad_account_id, event_id, event_name, event_time, attempts,
                        coalesce(last_error, '')
                 FROM events WHERE state = 'dead' ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    event_id: r.get(2)?,
                    event_name: r.get(3)?,
                    event_time: r.get(4)?,
                    attempts: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let sql = "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?1,
                           lease_until = NULL
                       WHERE state = 'dead'";
            update_selection(conn, sql, &which, now_ms)
        })
        .await
    }

    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError> {
        self.write(move |conn| {
            // ?1 is unused here but keeps one helper for both actions.
            let sql = "UPDATE events SET state = 'dropped' WHERE state = 'dead' AND ?1 = ?1";
            update_selection(conn, sql, &which, 0)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    // --- Shopify ---

    async fn record_shopify(
        &self,
        records: Vec<ShopifyRecord>,
    ) -> Result<Vec<ShopifyStored>, StoreError> {
        self.write(move |conn| {
            // One job, so one savepoint: a failure leaves nothing of any record behind.
            let mut tally = Tally::default();
            let stored = records
                .iter()
                .map(|r| shopify_record(conn, r, &mut tally))
                .collect::<Result<Vec<_>, _>>()?;
            tally.flush(conn)?;
            Ok(stored)
        })
        .await
    }

    async fn shopify_checkpoint(&self, shop: &str) -> Result<Option<i64>, StoreError> {
        let shop = shop.to_owned();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT checkpoint FROM shopify_checkpoints WHERE shop = ?1")?;
            let mut rows = stmt.query(params![shop])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn advance_shopify_checkpoint(
        &self,
        shop: &str,
        at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let shop = shop.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO shopify_checkpoints (shop, checkpoint, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (shop) DO UPDATE SET
                     checkpoint = max(checkpoint, excluded.checkpoint),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![shop, at, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn shopify_ledger(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<ShopifyLedger, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT shop, order_id, ad_account_id, created_at, test, value, currency,
                        source_name, outcome, reason, event_id, sources
                 FROM shopify_orders WHERE ?1 IS NULL OR shop = ?1
                 ORDER BY created_at DESC, order_id DESC LIMIT ?2",
            )?;
            let orders = stmt
                .query_map(params![shop, limit as i64], |r| {
                    let sources = Source::from_bits(r.get(11)?);
                    Ok(ShopifyOrderRow {
                        shop: r.get(0)?,
                        order: ShopifyOrder {
                            order_id: r.get(1)?,
                            ad_account_id: r.get(2)?,
                            created_at: r.get(3)?,
                            test: r.get(4)?,
                            value: r.get(5)?,
                            currency: r.get(6)?,
                            source_name: r.get(7)?,
                            outcome: OrderOutcome::parse(&r.get::<_, String>(8)?),
                            reason: r.get(9)?,
                            event_id: r.get(10)?,
                            source: sources.first().copied().unwrap_or(Source::Webhook),
                        },
                        sources,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT shop, order_id, kind, at, amount, currency, reason, test
                 FROM shopify_adjustments WHERE ?1 IS NULL OR shop = ?1
                 ORDER BY at DESC, id DESC LIMIT ?2",
            )?;
            let adjustments = stmt
                .query_map(params![shop, limit as i64], |r| {
                    Ok(ShopifyAdjustmentRow {
                        shop: r.get(0)?,
                        adjustment: ShopifyAdjustment {
                            order_id: r.get(1)?,
                            kind: r.get(2)?,
                            at: r.get(3)?,
                            amount: r.get(4)?,
                            currency: r.get(5)?,
                            reason: r.get(6)?,
                            test: r.get(7)?,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ShopifyLedger {
                orders,
                adjustments,
            })
        })
        .await
    }

    async fn prune_shopify_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn.execute(
                "DELETE FROM shopify_deliveries WHERE received_at < ?1",
                params![before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    // --- Quality ---

    async fn quality_hours(&self, since_hour: i64) -> Result<Vec<QualityHour>, StoreError> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT hour, ad_account_id, event_name, {}, lag_max FROM quality_hours
                 WHERE hour >= ?1 ORDER BY hour, ad_account_id, event_name",
                QUALITY_COLUMNS.join(", ")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![since_hour], |r| {
                let mut row = [0i64; QUALITY_COLUMNS.len()];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = r.get(3 + i)?;
                }
                Ok(QualityHour {
                    hour: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    event_name: r.get(2)?,
                    counts: counts_from_row(&row, r.get(3 + QUALITY_COLUMNS.len())?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn quality_messages(&self, since_day: i64) -> Result<Vec<QualityMessage>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT day, ad_account_id, kind, message, count FROM quality_messages
                 WHERE day >= ?1 ORDER BY day, ad_account_id, kind, count DESC, message",
            )?;
            let rows = stmt.query_map(params![since_day], |r| {
                Ok(QualityMessage {
                    day: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                    count: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn shopify_truth(
        &self,
        since: i64,
        until: i64,
        missing_limit: usize,
    ) -> Result<ShopifyTruth, StoreError> {
        self.read(move |conn| {
            let mut days: Vec<TruthDay> = conn
                .prepare_cached(
                    "SELECT (created_at / 86400) * 86400 AS day, count(*), sum(delivered),
                            sum(browser_seen),
                            sum(CASE WHEN delivered = 1 AND browser_seen = 0 THEN 1 ELSE 0 END)
                     FROM shopify_orders
                     WHERE test = 0 AND outcome <> 'ignored' AND created_at >= ?1 AND created_at < ?2
                     GROUP BY (created_at / 86400) * 86400 ORDER BY day",
                )?
                .query_map(params![since, until], |r| {
                    Ok(TruthDay {
                        day: r.get(0)?,
                        orders: r.get(1)?,
                        delivered: r.get(2)?,
                        browser_seen: r.get(3)?,
                        recovered: r.get(4)?,
                        skipped: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT (created_at / 86400) * 86400 AS day, coalesce(reason, ''), count(*)
                 FROM shopify_orders
                 WHERE test = 0 AND outcome = 'skipped' AND created_at >= ?1 AND created_at < ?2
                 GROUP BY (created_at / 86400) * 86400, coalesce(reason, '') ORDER BY 1, 3 DESC",
            )?;
            let skipped = stmt.query_map(params![since, until], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in skipped {
                let (day, reason, n) = row?;
                if let Some(d) = days.iter_mut().find(|d| d.day == day) {
                    d.skipped.push((reason, n));
                }
            }
            let missing = conn
                .prepare_cached(
                    "SELECT shop, order_id, ad_account_id, created_at, outcome, reason
                     FROM shopify_orders
                     WHERE test = 0 AND outcome <> 'ignored' AND delivered = 0
                         AND created_at >= ?1 AND created_at < ?2
                     ORDER BY created_at, order_id LIMIT ?3",
                )?
                .query_map(params![since, until, missing_limit as i64], |r| {
                    Ok(MissingOrder {
                        shop: r.get(0)?,
                        order_id: r.get(1)?,
                        ad_account_id: r.get(2)?,
                        created_at: r.get(3)?,
                        outcome: r.get(4)?,
                        reason: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(ShopifyTruth { days, missing })
        })
        .await
    }

    async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT rule, ad_account_id, active, detail, fired_at, cleared_at
                 FROM alert_states ORDER BY rule, ad_account_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(AlertState {
                    rule: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    active: r.get(2)?,
                    detail: r.get(3)?,
                    fired_at_ms: r.get(4)?,
                    cleared_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn save_alert_state(&self, state: AlertState) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO alert_states (rule, ad_account_id, active, detail, fired_at,
                     cleared_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (rule, ad_account_id) DO UPDATE SET
                     active = excluded.active, detail = excluded.detail,
                     fired_at = excluded.fired_at, cleared_at = excluded.cleared_at",
            )?
            .execute(params![
                state.rule,
                state.ad_account_id,
                state.active,
                state.detail,
                state.fired_at_ms,
                state.cleared_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn save_eqs(&self, scores: Vec<EqsScore>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO eqs_scores (ad_account_id, ingestion_source, lookback_period,
                     source_platform, overall_status, quality_components, polled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (ad_account_id, ingestion_source, lookback_period, source_platform)
                 DO UPDATE SET overall_status = excluded.overall_status,
                     quality_components = excluded.quality_components,
                     polled_at = excluded.polled_at",
            )?;
            for e in &scores {
                stmt.execute(params![
                    e.ad_account_id,
                    e.ingestion_source,
                    e.lookback_period,
                    e.source_platform,
                    e.overall_status,
                    e.quality_components.to_string(),
                    e.polled_at_ms
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn eqs_scores(&self) -> Result<Vec<EqsScore>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ad_account_id, ingestion_source, lookback_period, source_platform,
                        overall_status, quality_components, polled_at
                 FROM eqs_scores ORDER BY 1, 2, 3, 4",
            )?;
            let rows = stmt.query_map([], |r| {
                let components: String = r.get(5)?;
                Ok(EqsScore {
                    ad_account_id: r.get(0)?,
                    ingestion_source: r.get(1)?,
                    lookback_period: r.get(2)?,
                    source_platform: r.get(3)?,
                    overall_status: r.get(4)?,
                    quality_components: serde_json::from_str(&components)
                        .unwrap_or(serde_json::Value::Null),
                    polled_at_ms: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    // --- Audiences ---

    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT checkpoint FROM audience_checkpoints WHERE name = ?1")?;
            let mut rows = stmt.query(params![AUDIENCE_SCAN])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // Row ids are positive, so (from_ms, 0) is "everything from from_ms on".
        let (at, id) = after.unwrap_or((from_ms, 0));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.id, e.ad_account_id, e.received_at, p.body
                 FROM events e JOIN payloads p ON p.id = e.id
                 WHERE e.received_at >= ?1 AND e.test = 0 AND e.state <> 'dropped'
                     AND (e.received_at > ?2 OR (e.received_at = ?2 AND e.id > ?3))
                 ORDER BY e.received_at, e.id LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![from_ms, at, id, limit as i64], |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    received_at_ms: r.get(2)?,
                    payload: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            for f in &facts {
                for (kind, hash) in &f.identities {
                    record_member_facts(conn, f, *kind, hash)?;
                }
            }
            conn.prepare_cached(
                "INSERT INTO audience_checkpoints (name, checkpoint, updated_at)
                 VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO UPDATE SET
                     checkpoint = max(checkpoint, excluded.checkpoint),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![AUDIENCE_SCAN, checkpoint_ms])?;
            Ok(())
        })
        .await
    }

    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| audience_people(conn, &account)).await
    }

    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError> {
        let hash = hash.to_ascii_lowercase();
        self.write(move |conn| forget_member(conn, kind, &hash, now_ms))
            .await
    }

    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ad_account_id, segment, object, pinterest_id, status, updated_at
                 FROM audience_objects WHERE ad_account_id = ?1 ORDER BY segment, object",
            )?;
            let rows = stmt.query_map(params![account], |r| {
                Ok(AudienceObject {
                    ad_account_id: r.get(0)?,
                    segment: r.get(1)?,
                    object: r.get(2)?,
                    pinterest_id: r.get(3)?,
                    status: r.get(4)?,
                    updated_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn save_audience_object(&self, o: AudienceObject) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audience_objects (ad_account_id, segment, object, pinterest_id,
                     status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (ad_account_id, segment, object) DO UPDATE SET
                     pinterest_id = excluded.pinterest_id,
                     status = coalesce(excluded.status, audience_objects.status),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                o.ad_account_id,
                o.segment,
                o.object,
                o.pinterest_id,
                o.status,
                o.updated_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError> {
        let (account, segment, object) = (
            ad_account_id.to_owned(),
            segment.to_owned(),
            object.to_owned(),
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM audience_objects
                 WHERE ad_account_id = ?1 AND segment = ?2 AND object = ?3",
            )?
            .execute(params![account, segment, object])?;
            if let Some(kind) = object.strip_prefix("list:") {
                conn.prepare_cached(
                    "DELETE FROM audience_members
                     WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3",
                )?
                .execute(params![account, segment, kind])?;
            }
            Ok(())
        })
        .await
    }

    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError> {
        let (account, segment) = (ad_account_id.to_owned(), segment.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hash FROM audience_members
                 WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3 ORDER BY hash",
            )?;
            let rows = stmt.query_map(params![account, segment, kind.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError> {
        let (account, segment) = (ad_account_id.to_owned(), segment.to_owned());
        self.write(move |conn| {
            let sql = match operation {
                ListOperation::Add => {
                    "INSERT INTO audience_members (ad_account_id, segment, kind, hash)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING"
                }
                ListOperation::Remove => {
                    "DELETE FROM audience_members
                     WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3 AND hash = ?4"
                }
            };
            let mut stmt = conn.prepare_cached(sql)?;
            for h in &hashes {
                stmt.execute(params![account, segment, kind.as_str(), h])?;
            }
            Ok(())
        })
        .await
    }

    // --- Census ---

    async fn census_lookup(
        &self,
        shop: String,
        ad_account_id: String,
        order_ids: Vec<String>,
    ) -> Result<Vec<CensusLookup>, StoreError> {
        self.read(move |conn| {
            let mut ledger = conn
                .prepare_cached("SELECT 1 FROM shopify_orders WHERE shop = ?1 AND order_id = ?2")?;
            let mut event = conn.prepare_cached(
                "SELECT state, (sources & ?3) <> 0 FROM events
                 WHERE ad_account_id = ?1 AND event_id = ?2",
            )?;
            let mut out = Vec::with_capacity(order_ids.len());
            for order_id in order_ids {
                let in_ledger = ledger.exists(params![shop, order_id])?;
                let mut rows = event.query(params![
                    ad_account_id,
                    format!("order-{order_id}"),
                    BROWSER_SOURCES
                ])?;
                let (purchase_state, browser_seen) = match rows.next()? {
                    Some(r) => (Some(r.get::<_, String>(0)?), r.get::<_, bool>(1)?),
                    None => (None, false),
                };
                out.push(CensusLookup {
                    order_id,
                    in_ledger,
                    purchase_state,
                    browser_seen,
                });
            }
            Ok(out)
        })
        .await
    }

    // --- Retention and back-pressure ---

    async fn pending_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            // Answered from the partial index `events_due`, which holds only pending events.
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM events WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        // The scan for candidates runs on the reader, so the writer is held only for the
        // deletes by id; each delete checks the condition again, since the reader's view may
        // be a moment old (a dead letter retried since is pending and stays).
        let ids: Vec<i64> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT id FROM events WHERE {PURGEABLE} ORDER BY id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![before_ms, limit as i64], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<i64>, _>>()?)
            })
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let mut event =
                conn.prepare_cached(&format!("DELETE FROM events WHERE id = ?2 AND {PURGEABLE}"))?;
            let mut payload = conn.prepare_cached("DELETE FROM payloads WHERE id = ?1")?;
            let mut n = 0;
            for id in ids {
                if event.execute(params![before_ms, id])? == 1 {
                    payload.execute(params![id])?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM events WHERE {PURGEABLE}"))?
                .query_row(params![before_ms], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn storage_bytes(&self) -> Result<u64, StoreError> {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        Ok(size(&self.path) + size(Path::new(&wal)))
    }
}

// --- Audiences ---

/// Upserts one member's facts from one event, keeping the latest time of each kind, unless
/// the member was forgotten.
fn record_member_facts(
    conn: &Connection,
    f: &EventFacts,
    kind: IdKind,
    hash: &str,
) -> Result<(), StoreError> {
    let suppressed: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM audience_suppressed WHERE kind = ?1 AND hash = ?2)",
        )?
        .query_row(params![kind.as_str(), hash], |r| r.get(0))?;
    if suppressed {
        return Ok(());
    }
    let at = |a: Activity| if f.activity == a { f.at } else { 0 };
    conn.prepare_cached(
        "INSERT INTO audience_people (ad_account_id, kind, hash, last_visit_at, last_view_at,
             last_cart_at, last_purchase_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (ad_account_id, kind, hash) DO UPDATE SET
             last_visit_at = max(audience_people.last_visit_at, excluded.last_visit_at),
             last_view_at = max(audience_people.last_view_at, excluded.last_view_at),
             last_cart_at = max(audience_people.last_cart_at, excluded.last_cart_at),
             last_purchase_at = max(audience_people.last_purchase_at, excluded.last_purchase_at)",
    )?
    .execute(params![
        f.ad_account_id,
        kind.as_str(),
        hash,
        f.at,
        at(Activity::View),
        at(Activity::Cart),
        at(Activity::Purchase),
    ])?;
    if f.activity == Activity::View {
        let mut view = conn.prepare_cached(
            "INSERT INTO audience_views (ad_account_id, kind, hash, product, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (ad_account_id, kind, hash, product) DO UPDATE SET
                 last_at = max(audience_views.last_at, excluded.last_at)",
        )?;
        let categories = f
            .categories
            .iter()
            .map(|c| pincapi_core::audience::category_key(c));
        for product in f.products.iter().cloned().chain(categories) {
            view.execute(params![f.ad_account_id, kind.as_str(), hash, product, f.at])?;
        }
    }
    if f.activity == Activity::Purchase {
        conn.prepare_cached(
            "INSERT INTO audience_purchases (ad_account_id, kind, hash, event_id, at, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (ad_account_id, kind, hash, event_id) DO UPDATE SET
                 at = excluded.at, value = excluded.value",
        )?
        .execute(params![
            f.ad_account_id,
            kind.as_str(),
            hash,
            f.event_id,
            f.at,
            f.value
        ])?;
    }
    Ok(())
}

fn audience_people(conn: &Connection, account: &str) -> Result<Vec<PersonFacts>, StoreError> {
    use std::collections::HashMap;
    let never = |t: i64| (t > 0).then_some(t);
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, last_visit_at, last_view_at, last_cart_at, last_purchase_at
         FROM audience_people p WHERE ad_account_id = ?1
             AND NOT EXISTS (SELECT 1 FROM audience_suppressed s
                             WHERE s.kind = p.kind AND s.hash = p.hash)
         ORDER BY kind, hash",
    )?;
    let mut people: Vec<PersonFacts> = stmt
        .query_map(params![account], |r| {
            Ok(PersonFacts {
                kind: IdKind::parse(&r.get::<_, String>(0)?),
                hash: r.get(1)?,
                last_visit_at: never(r.get(2)?),
                last_view_at: never(r.get(3)?),
                last_cart_at: never(r.get(4)?),
                last_purchase_at: never(r.get(5)?),
                purchases: Vec::new(),
                views: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let index: HashMap<(String, String), usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kind = p.kind.map(IdKind::as_str).unwrap_or_default().to_owned();
            ((kind, p.hash.clone()), i)
        })
        .collect();
    // A purchase is refunded when Shopify recorded a refund of its order: purchases from a
    // Shopify order carry the event_id order-<id>.
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, event_id, at, value,
                event_id IN (SELECT 'order-' || order_id FROM shopify_adjustments
                             WHERE kind = 'refunded')
         FROM audience_purchases WHERE ad_account_id = ?1",
    )?;
    let mut rows = stmt.query(params![account])?;
    while let Some(r) = rows.next()? {
        if let Some(&i) = index.get(&(r.get(0)?, r.get(1)?)) {
            people[i].purchases.push(Purchase {
                event_id: r.get(2)?,
                at: r.get(3)?,
                value: r.get(4)?,
                refunded: r.get(5)?,
            });
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, product, last_at FROM audience_views WHERE ad_account_id = ?1",
    )?;
    let mut rows = stmt.query(params![account])?;
    while let Some(r) = rows.next()? {
        if let Some(&i) = index.get(&(r.get(0)?, r.get(1)?)) {
            people[i].views.push((r.get(2)?, r.get(3)?));
        }
    }
    Ok(people)
}

fn forget_member(
    conn: &Connection,
    kind: IdKind,
    hash: &str,
    now_ms: i64,
) -> Result<ForgetReport, StoreError> {
    let mut report = ForgetReport::default();
    conn.prepare_cached(
        "INSERT INTO audience_suppressed (kind, hash, suppressed_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, hash) DO NOTHING",
    )?
    .execute(params![kind.as_str(), hash, now_ms])?;
    report.members = conn
        .prepare_cached("DELETE FROM audience_people WHERE kind = ?1 AND hash = ?2")?
        .execute(params![kind.as_str(), hash])? as u64;
    for table in ["audience_views", "audience_purchases"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE kind = ?1 AND hash = ?2"),
            params![kind.as_str(), hash],
        )?;
    }
    // The hash is hex, so it holds no LIKE wildcard. A forget is rare: a scan of the
    // payloads is acceptable here.
    let found: Vec<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT p.id, p.body, e.state FROM payloads p JOIN events e ON e.id = p.id
             WHERE p.body LIKE '%' || ?1 || '%'",
        )?
        .query_map(params![hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, body, state) in found {
        let Some(scrubbed) = pincapi_core::audience::scrub_member(&body, kind, hash) else {
            continue;
        };
        conn.prepare_cached("UPDATE payloads SET body = ?2 WHERE id = ?1")?
            .execute(params![id, scrubbed.payload])?;
        report.events_scrubbed += 1;
        if !scrubbed.sendable && matches!(state.as_str(), "pending" | "dead") {
            conn.prepare_cached(
                "UPDATE events SET state = 'dropped', last_error = ?2, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, FORGOTTEN_DROPPED])?;
            report.events_dropped += 1;
        }
    }
    Ok(report)
}

// --- Retention and back-pressure ---

/// The events [`Outbox::purge_settled`] deletes, with the cutoff (Unix ms) as `?1`.
const PURGEABLE: &str = "((state = 'delivered' AND sent_at < ?1)
     OR (state = 'dropped' AND received_at < ?1 AND next_attempt_at < ?1))";

// --- Shopify ---

/// Stores one Shopify record (inside the job's savepoint, so all or nothing).
fn shopify_record(
    conn: &Connection,
    r: &ShopifyRecord,
    tally: &mut Tally,
) -> Result<ShopifyStored, StoreError> {
    if let Some(d) = &r.delivery {
        let n = conn
            .prepare_cached(
                "INSERT INTO shopify_deliveries (shop, webhook_id, topic, outcome, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (shop, webhook_id) DO NOTHING",
            )?
            .execute(params![
                r.shop,
                d.webhook_id,
                d.topic,
                d.outcome,
                r.received_at_ms
            ])?;
        if n == 0 {
            return Ok(ShopifyStored::DuplicateDelivery);
        }
    }
    let enqueued = match &r.event {
        Some(e) => Some(insert_event(conn, e, tally)?),
        None => None,
    };
    if let Some(t) = &r.test_order {
        browser_copy_of_test_order(conn, t)?;
    }
    if let Some(o) = &r.order {
        conn.prepare_cached(
            "INSERT INTO shopify_orders (shop, order_id, ad_account_id, created_at, test, value,
                 currency, source_name, outcome, reason, event_id, sources, first_seen_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
             ON CONFLICT (shop, order_id) DO UPDATE SET
                 sources = sources | excluded.sources,
                 updated_at = excluded.updated_at,
                 event_id = coalesce(event_id, excluded.event_id),
                 ad_account_id = CASE WHEN outcome = 'sent' THEN ad_account_id
                                      ELSE excluded.ad_account_id END,
                 created_at = CASE WHEN outcome = 'sent' THEN created_at
                                   ELSE excluded.created_at END,
                 test = CASE WHEN outcome = 'sent' THEN test ELSE excluded.test END,
                 value = CASE WHEN outcome = 'sent' THEN value ELSE excluded.value END,
                 currency = CASE WHEN outcome = 'sent' THEN currency ELSE excluded.currency END,
                 source_name = CASE WHEN outcome = 'sent' THEN source_name
                                    ELSE excluded.source_name END,
                 reason = CASE WHEN outcome = 'sent' THEN reason ELSE excluded.reason END,
                 outcome = CASE WHEN outcome = 'sent' THEN outcome ELSE excluded.outcome END",
        )?
        .execute(params![
            r.shop,
            o.order_id,
            o.ad_account_id,
            o.created_at,
            o.test,
            o.value,
            o.currency,
            o.source_name,
            o.outcome.as_str(),
            o.reason,
            o.event_id,
            o.source.bit(),
            r.received_at_ms,
        ])?;
        ledger_flags_from_event(conn, &r.shop, &o.order_id)?;
    }
    if let Some(a) = &r.adjustment {
        conn.prepare_cached(
            "INSERT INTO shopify_adjustments (shop, order_id, kind, at, amount, currency, reason,
                 test, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.shop,
            a.order_id,
            a.kind,
            a.at,
            a.amount,
            a.currency,
            a.reason,
            a.test,
            r.received_at_ms,
        ])?;
    }
    Ok(ShopifyStored::Stored(enqueued))
}

/// A Shopify test order: the browser's copy of its purchase, while it waits unsent (pending
/// and not claimed), is flagged as a test (`send_as_test`; the shop's own copy may have just
/// merged into it) or dropped (`ignore`; only a copy the browser reported, never one from the
/// shop's own API).
fn browser_copy_of_test_order(conn: &Connection, t: &TestOrderCopy) -> Result<(), StoreError> {
    if t.send_as_test {
        conn.prepare_cached(
            "UPDATE events SET test = 1
             WHERE ad_account_id = ?1 AND event_id = ?2 AND state = 'pending'
                 AND lease_until IS NULL",
        )?
        .execute(params![t.ad_account_id, t.event_id])?;
    } else {
        conn.prepare_cached(
            "UPDATE events SET state = 'dropped', last_error = ?3
             WHERE ad_account_id = ?1 AND event_id = ?2 AND state = 'pending'
                 AND lease_until IS NULL AND source IN ('collector', 'tag_mirror')",
        )?
        .execute(params![t.ad_account_id, t.event_id, TEST_ORDER_DROPPED])?;
    }
    Ok(())
}

/// Stores one event, or records it as a repeat of the stored (ad account, event_id).
fn insert_event(
    conn: &Connection,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO events (ad_account_id, event_id, event_name, event_time, received_at,
                source, sources, match_keys, test, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (ad_account_id, event_id) DO NOTHING",
        )?
        .execute(params![
            e.ad_account_id,
            e.event_id,
            e.event_name.as_str(),
            e.event_time,
            e.received_at_ms,
            e.source.as_str(),
            e.source.bit(),
            e.match_keys,
            e.test,
            e.received_at_ms + e.hold_ms.max(0),
        ])?;
    if n == 1 {
        conn.prepare_cached(
            "INSERT INTO payloads (id, payload_version, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            conn.last_insert_rowid(),
            PAYLOAD_VERSION,
            e.payload
        ])?;
        let counts = tally.hour(&e.ad_account_id, e.event_name.as_str(), e.received_at_ms);
        counts.received += 1;
        counts.count_sources(e.source.bit());
        counts.count_keys(e.match_keys);
        if e.source.is_browser() {
            mark_browser_seen(conn, &e.ad_account_id, &e.event_id)?;
        }
        Ok(Enqueued::Accepted)
    } else {
        record_repeat(conn, e, tally)
    }
}

/// A repeat of a stored event: remember its source, and merge it in while the stored event
/// waits unsent (not delivered, not claimed by a worker).
fn record_repeat(
    conn: &Connection,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, StoreError> {
    let stored = conn
        .prepare_cached(
            "SELECT e.id, e.state, e.lease_until IS NOT NULL, p.body, e.source, e.event_name,
                    e.received_at, e.sources, e.match_keys
             FROM events e JOIN payloads p ON p.id = e.id
             WHERE e.ad_account_id = ?1 AND e.event_id = ?2",
        )?
        .query_row(params![e.ad_account_id, e.event_id], |r| {
            Ok(RepeatTarget {
                id: r.get(0)?,
                state: r.get(1)?,
                leased: r.get(2)?,
                payload: r.get(3)?,
                first_source: r.get(4)?,
                event_name: r.get(5)?,
                received_at_ms: r.get(6)?,
                sources: r.get(7)?,
                match_keys: r.get(8)?,
            })
        })?;
    let RepeatTarget {
        id,
        state,
        leased,
        payload,
        first_source,
        ..
    } = &stored;
    let id = *id;
    conn.prepare_cached(
        "UPDATE events SET sources = sources | ?2, repeats = repeats + 1 WHERE id = ?1",
    )?
    .execute(params![id, e.source.bit()])?;
    // Counted in the hour the stored event was received, like everything about it.
    let counts = tally.hour(&e.ad_account_id, &stored.event_name, stored.received_at_ms);
    counts.duplicates += 1;
    counts.count_sources(e.source.bit() & !stored.sources);
    if e.source.is_browser() && stored.sources & BROWSER_SOURCES == 0 {
        mark_browser_seen(conn, &e.ad_account_id, &e.event_id)?;
    }
    if state != "pending" || *leased {
        return Ok(Enqueued::Duplicate);
    }
    // The shop's own record of a purchase (webhook, poller, API) knows value, currency and
    // items better than the browser that reported it first.
    let browser_first = matches!(first_source.as_str(), "collector" | "tag_mirror");
    let authoritative = browser_first && !e.source.is_browser();
    let counts = tally.hour(&e.ad_account_id, &stored.event_name, stored.received_at_ms);
    counts.merged += 1;
    if let Some(merged) = pincapi_core::event::merge_payload(payload, &e.payload, authoritative) {
        conn.prepare_cached("UPDATE payloads SET body = ?2 WHERE id = ?1")?
            .execute(params![id, merged])?;
        conn.prepare_cached("UPDATE events SET match_keys = match_keys | ?2 WHERE id = ?1")?
            .execute(params![id, e.match_keys])?;
        counts.count_keys(e.match_keys & !stored.match_keys);
    }
    if authoritative {
        // The shop's record completes a purchase the browser reported and that waits in its
        // hold: nothing more is expected, so it is due now.
        conn.prepare_cached(
            "UPDATE events SET next_attempt_at = min(next_attempt_at, ?2) WHERE id = ?1",
        )?
        .execute(params![id, e.received_at_ms])?;
    }
    Ok(Enqueued::Merged)
}

// --- Quality ---

/// Bits of the browser sources (collector, Tag mirror) in a `sources` set.
pub(crate) const BROWSER_SOURCES: i64 =
    1 << (Source::Collector as i64) | 1 << (Source::TagMirror as i64);

/// What a repeat needs to know of the stored event.
struct RepeatTarget {
    id: i64,
    state: String,
    leased: bool,
    payload: String,
    first_source: String,
    event_name: String,
    received_at_ms: i64,
    sources: i64,
    match_keys: u32,
}

/// What a settlement needs to know of the event it settled.
pub(crate) struct Settled {
    pub(crate) ad_account_id: String,
    pub(crate) event_name: String,
    pub(crate) event_id: String,
    pub(crate) received_at_ms: i64,
    pub(crate) event_time: i64,
}

/// Quality counts of one job, written at its end with one UPSERT per (hour, ad account,
/// event name) and per message, instead of one per event. PostgreSQL counts with it too.
#[derive(Default)]
pub(crate) struct Tally {
    /// A job touches few (hour, ad account, event name) groups, so a short list searched in
    /// order is cheaper than hashing, and allocates only for a new group.
    pub(crate) hours: Vec<(i64, String, String, QualityCounts)>,
    pub(crate) messages: std::collections::HashMap<(i64, String, &'static str, String), i64>,
}

impl Tally {
    /// The counts of the hour `received_at_ms` falls in.
    pub(crate) fn hour(
        &mut self,
        account: &str,
        event_name: &str,
        received_at_ms: i64,
    ) -> &mut QualityCounts {
        let hour = received_at_ms.div_euclid(3_600_000) * 3600;
        let found = self
            .hours
            .iter()
            .position(|(h, a, n, _)| *h == hour && a == account && n == event_name);
        let i = match found {
            Some(i) => i,
            None => {
                self.hours.push((
                    hour,
                    account.to_owned(),
                    event_name.to_owned(),
                    QualityCounts::default(),
                ));
                self.hours.len() - 1
            }
        };
        &mut self.hours[i].3
    }

    pub(crate) fn message(
        &mut self,
        account: &str,
        received_at_ms: i64,
        kind: &'static str,
        text: &str,
    ) {
        // Messages quoting input can be long; the start says what happened.
        let text: String = text.chars().take(300).collect();
        let day = received_at_ms.div_euclid(86_400_000) * 86_400;
        *self
            .messages
            .entry((day, account.to_owned(), kind, text))
            .or_default() += 1;
    }

    /// Counts one settlement, and marks a delivered Shopify purchase on the order ledger.
    fn settled(
        &mut self,
        conn: &Connection,
        e: &Settled,
        s: &Settlement,
    ) -> Result<(), StoreError> {
        self.count_settled(e, s);
        if let Settlement::Delivered { .. } = s
            && let Some(order_id) = e.event_id.strip_prefix("order-")
        {
            conn.prepare_cached(
                "UPDATE shopify_orders SET delivered = 1
                 WHERE order_id = ?1 AND ad_account_id = ?2 AND delivered = 0",
            )?
            .execute(params![order_id, e.ad_account_id])?;
        }
        Ok(())
    }

    /// Counts one settlement (what it changes on the order ledger is the store's to write).
    pub(crate) fn count_settled(&mut self, e: &Settled, s: &Settlement) {
        let (account, received) = (e.ad_account_id.as_str(), e.received_at_ms);
        match s {
            Settlement::Delivered {
                sent_at_ms,
                warning,
                ..
            } => {
                let counts = self.hour(account, &e.event_name, received);
                counts.delivered += 1;
                counts.count_lag(sent_at_ms.div_euclid(1000) - e.event_time);
                if let Some(w) = warning {
                    counts.warned += 1;
                    self.message(account, received, "warning", w);
                }
            }
            Settlement::Retry { error, counted, .. } => {
                let counts = self.hour(account, &e.event_name, received);
                if *counted {
                    counts.retried += 1;
                    self.message(account, received, "retry", error);
                } else {
                    counts.waits += 1;
                    self.message(account, received, "wait", error);
                }
            }
            Settlement::Dead { reason, .. } => {
                let counts = self.hour(account, &e.event_name, received);
                counts.dead += 1;
                if reason.starts_with(REFUSED_PREFIX) {
                    counts.failed += 1;
                }
                self.message(account, received, "dead_letter", reason);
            }
        }
    }

    fn flush(self, conn: &Connection) -> Result<(), StoreError> {
        if !self.hours.is_empty() {
            let mut stmt = conn.prepare_cached(&UPSERT_HOUR)?;
            for (hour, account, name, counts) in &self.hours {
                let row = counts_to_row(counts);
                let mut values: Vec<&dyn rusqlite::ToSql> = vec![hour, account, name];
                values.extend(row.iter().map(|v| v as &dyn rusqlite::ToSql));
                values.push(&counts.lag_max);
                stmt.execute(values.as_slice())?;
            }
        }
        if !self.messages.is_empty() {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO quality_messages (day, ad_account_id, kind, message, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (day, ad_account_id, kind, message)
                 DO UPDATE SET count = quality_messages.count + excluded.count",
            )?;
            for ((day, account, kind, message), n) in &self.messages {
                stmt.execute(params![day, account, kind, message, n])?;
            }
        }
        Ok(())
    }
}

/// Adds a job's counts to `quality_hours`: plain column arithmetic in a standard UPSERT.
static UPSERT_HOUR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let n = QUALITY_COLUMNS.len();
    let placeholders: Vec<String> = (4..=n + 4).map(|i| format!("?{i}")).collect();
    let sums: Vec<String> = QUALITY_COLUMNS
        .iter()
        .map(|c| format!("{c} = quality_hours.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO quality_hours (hour, ad_account_id, event_name, {}, lag_max)
         VALUES (?1, ?2, ?3, {})
         ON CONFLICT (hour, ad_account_id, event_name) DO UPDATE SET {},
             lag_max = CASE WHEN excluded.lag_max > quality_hours.lag_max
                            THEN excluded.lag_max ELSE quality_hours.lag_max END",
        QUALITY_COLUMNS.join(", "),
        placeholders.join(", "),
        sums.join(", ")
    )
});

/// The counters in [`QUALITY_COLUMNS`] order.
pub(crate) fn counts_to_row(c: &QualityCounts) -> [i64; QUALITY_COLUMNS.len()] {
    let mut row = [0i64; QUALITY_COLUMNS.len()];
    let head = [c.received, c.duplicates, c.merged];
    let tail = [
        c.delivered,
        c.failed,
        c.dead,
        c.retried,
        c.waits,
        c.warned,
        c.late,
    ];
    let values = head
        .iter()
        .chain(&c.seen)
        .chain(&c.keys)
        .chain(&tail)
        .chain(&c.lag);
    for (slot, v) in row.iter_mut().zip(values) {
        *slot = *v;
    }
    row
}

/// The inverse of [`counts_to_row`].
pub(crate) fn counts_from_row(row: &[i64; QUALITY_COLUMNS.len()], lag_max: i64) -> QualityCounts {
    let mut c = QualityCounts {
        received: row[0],
        duplicates: row[1],
        merged: row[2],
        delivered: row[17],
        failed: row[18],
        dead: row[19],
        retried: row[20],
        waits: row[21],
        warned: row[22],
        late: row[23],
        lag_max,
        ..QualityCounts::default()
    };
    c.seen.copy_from_slice(&row[3..9]);
    c.keys.copy_from_slice(&row[9..17]);
    c.lag.copy_from_slice(&row[24..36]);
    c
}

/// Runs one settling UPDATE ... RETURNING; `None` when no row matched.
fn settle_one(
    conn: &Connection,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> Result<Option<Settled>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(values)?;
    let settled = match rows.next()? {
        Some(r) => Some(Settled {
            ad_account_id: r.get(0)?,
            event_name: r.get(1)?,
            event_id: r.get(2)?,
            received_at_ms: r.get(3)?,
            event_time: r.get(4)?,
        }),
        None => None,
    };
    Ok(settled)
}

/// The browser reported an event: if it is a Shopify order's purchase, the ledger says so.
fn mark_browser_seen(conn: &Connection, account: &str, event_id: &str) -> Result<(), StoreError> {
    if let Some(order_id) = event_id.strip_prefix("order-") {
        conn.prepare_cached(
            "UPDATE shopify_orders SET browser_seen = 1
             WHERE order_id = ?1 AND ad_account_id = ?2 AND browser_seen = 0",
        )?
        .execute(params![order_id, account])?;
    }
    Ok(())
}

/// A ledger row just written: its flags from the order's purchase event, when the browser's
/// copy or the delivery came first.
fn ledger_flags_from_event(
    conn: &Connection,
    shop: &str,
    order_id: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE shopify_orders SET
             browser_seen = CASE WHEN browser_seen = 1 OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = shopify_orders.ad_account_id
                     AND e.event_id = ?3 AND (e.sources & ?4) <> 0) THEN 1 ELSE 0 END,
             delivered = CASE WHEN delivered = 1 OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = shopify_orders.ad_account_id
                     AND e.event_id = ?3 AND e.state = 'delivered') THEN 1 ELSE 0 END
         WHERE shop = ?1 AND order_id = ?2",
    )?
    .execute(params![
        shop,
        order_id,
        format!("order-{order_id}"),
        BROWSER_SOURCES
    ])?;
    Ok(())
}

fn update_selection(
    conn: &Connection,
    sql: &str,
    which: &Selection,
    now_ms: i64,
) -> Result<u64, StoreError> {
    match which {
        Selection::All => Ok(conn.execute(sql, params![now_ms])? as u64),
        Selection::Ids(ids) => {
            let mut stmt = conn.prepare(&format!("{sql} AND id = ?2"))?;
            let mut n = 0;
            for id in ids {
                n += stmt.execute(params![now_ms, id])? as u64;
            }
            Ok(n)
        }
    }
}

/// Opens a connection. SQLite itself runs with `synchronous = NORMAL` (no fsync per commit);
/// with `Synchronous::Full` the sync thread fsyncs the WAL before any commit is acknowledged
/// (see `sync_loop`).
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot configure {}: {e}", path.display())))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the store has schema version {version}, newer than this build ({SCHEMA_VERSION})"
        )));
    }
    if version < 1 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATION_1} PRAGMA user_version = 1; COMMIT;"
        ))?;
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATION_2} PRAGMA user_version = 2; COMMIT;"
        ))?;
    }
    if version < 3 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATION_3} PRAGMA user_version = 3; COMMIT;"
        ))?;
    }
    if version < 4 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATION_4} PRAGMA user_version = 4; COMMIT;"
        ))?;
    }
    Ok(())
}

/// WAL frames (4 KiB pages) past which the checkpointer makes the log start over (64 MiB).
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database a few times a second without blocking the
/// writer (PASSIVE). The log starts from the beginning again only when a writer finds every
/// frame copied, which continuous group commits under sustained load rarely allow, so the WAL
/// would grow without bound (a 180 s benchmark left 20 GB). Past `WAL_RESTART_FRAMES` a
/// RESTART checkpoint holds the writer for the moment it takes to copy what PASSIVE left and
/// makes the next transaction start the log over; `journal_size_limit` then trims the file.
fn checkpoint_loop(conn: &Connection, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        let result = match passive {
            Ok(frames) if frames > WAL_RESTART_FRAMES => {
                conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "SQLite checkpoint failed; will retry");
        }
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    // Prepared once per connection: every job of every group passes here.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(r) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(r)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// Takes every waiting job, runs them in one transaction, commits once, then answers each.
fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    syncer: Option<mpsc::Sender<Vec<Reply>>>,
) {
    const MAX_GROUP: usize = 1024;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::Unavailable(format!("cannot begin: {e}"));
            for job in jobs {
                job(None)(Err(err.clone()));
            }
            continue;
        }
        let replies: Vec<Reply> = jobs.into_iter().map(|job| job(Some(&conn))).collect();
        let commit = conn
            .execute_batch("COMMIT")
            .map_err(|e| StoreError::Unavailable(format!("commit failed: {e}")));
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        match (&syncer, commit) {
            // Committed: the answers wait for the fsync that makes it durable, while this
            // thread goes on with the next group.
            (Some(syncer), Ok(())) => {
                if let Err(mpsc::SendError(replies)) = syncer.send(replies) {
                    let err = StoreError::Unavailable("sync thread stopped".into());
                    for reply in replies {
                        reply(Err(err.clone()));
                    }
                }
            }
            (_, commit) => {
                for reply in replies {
                    reply(commit.clone());
                }
            }
        }
    }
}

/// Makes committed groups durable: one `fdatasync` of the WAL file covers every group
/// committed before it started, then their answers go out. Pipelining the flush this way keeps
/// the writer committing while the disk syncs; the guarantee is that of `synchronous = FULL`
/// (nothing is acknowledged before it is on disk), at a fraction of the fsyncs.
fn sync_loop(wal: File, rx: mpsc::Receiver<Vec<Reply>>) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        let synced = wal
            .sync_data()
            .map_err(|e| StoreError::Unavailable(format!("fsync of the WAL failed: {e}")));
        for reply in groups.into_iter().flatten() {
            reply(synced.clone());
        }
    }
}

/// How many events are in each state, from a fresh connection (CLI and tests).
pub fn count_states(path: &Path) -> Result<Vec<(String, i64)>, StoreError> {
    let conn = Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT state, count(*) FROM events GROUP BY state ORDER BY 1")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
