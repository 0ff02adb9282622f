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

use super::{
    ClaimedEvent, DeadLetter, Depth, Enqueued, NewEvent, Outbox, Selection, Settlement, StoreError,
};
use super::{
    OrderOutcome, ShopifyAdjustment, ShopifyAdjustmentRow, ShopifyLedger, ShopifyOrder,
    ShopifyOrderRow, ShopifyRecord, ShopifyStored, Source, TEST_ORDER_DROPPED, TestOrderCopy,
};
use crate::config::Synchronous;

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

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
            for e in &events {
                out.push(insert_event(conn, e)?);
            }
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
            for s in &settlements {
                applied += match s {
                    Settlement::Delivered {
                        id,
                        sent_at_ms,
                        warning,
                    } => conn
                        .prepare_cached(
                            "UPDATE events SET state = 'delivered', sent_at = ?3, warning = ?4,
                                 attempts = attempts + 1, lease_until = NULL
                             WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                        )?
                        .execute(params![id, lease_until_ms, sent_at_ms, warning])?,
                    Settlement::Retry {
                        id,
                        next_attempt_at_ms,
                        error,
                        counted,
                    } => conn
                        .prepare_cached(
                            "UPDATE events SET next_attempt_at = ?3, last_error = ?4,
                                 attempts = attempts + ?5, lease_until = NULL
                             WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                        )?
                        .execute(params![
                            id,
                            lease_until_ms,
                            next_attempt_at_ms,
                            error,
                            i64::from(*counted)
                        ])?,
                    Settlement::Dead { id, reason } => conn
                        .prepare_cached(
                            "UPDATE events SET state = 'dead', last_error = ?3,
                                 attempts = attempts + 1, lease_until = NULL
                             WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                        )?
                        .execute(params![id, lease_until_ms, reason])?,
                };
            }
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
            records.iter().map(|r| shopify_record(conn, r)).collect()
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

// --- Retention and back-pressure ---

/// The events [`Outbox::purge_settled`] deletes, with the cutoff (Unix ms) as `?1`.
const PURGEABLE: &str = "((state = 'delivered' AND sent_at < ?1)
     OR (state = 'dropped' AND received_at < ?1 AND next_attempt_at < ?1))";

// --- Shopify ---

/// Stores one Shopify record (inside the job's savepoint, so all or nothing).
fn shopify_record(conn: &Connection, r: &ShopifyRecord) -> Result<ShopifyStored, StoreError> {
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
        Some(e) => Some(insert_event(conn, e)?),
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
fn insert_event(conn: &Connection, e: &NewEvent) -> Result<Enqueued, StoreError> {
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
        Ok(Enqueued::Accepted)
    } else {
        record_repeat(conn, e)
    }
}

/// A repeat of a stored event: remember its source, and merge it in while the stored event
/// waits unsent (not delivered, not claimed by a worker).
fn record_repeat(conn: &Connection, e: &NewEvent) -> Result<Enqueued, StoreError> {
    let (id, state, leased, payload, first_source): (i64, String, bool, String, String) = conn
        .prepare_cached(
            "SELECT e.id, e.state, e.lease_until IS NOT NULL, p.body, e.source
             FROM events e JOIN payloads p ON p.id = e.id
             WHERE e.ad_account_id = ?1 AND e.event_id = ?2",
        )?
        .query_row(params![e.ad_account_id, e.event_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    conn.prepare_cached("UPDATE events SET sources = sources | ?2 WHERE id = ?1")?
        .execute(params![id, e.source.bit()])?;
    if state != "pending" || leased {
        return Ok(Enqueued::Duplicate);
    }
    // The shop's own record of a purchase (webhook, poller, API) knows value, currency and
    // items better than the browser that reported it first.
    let browser_first = matches!(first_source.as_str(), "collector" | "tag_mirror");
    let authoritative = browser_first && !e.source.is_browser();
    if let Some(merged) = pincapi_core::event::merge_payload(&payload, &e.payload, authoritative) {
        conn.prepare_cached("UPDATE payloads SET body = ?2 WHERE id = ?1")?
            .execute(params![id, merged])?;
        conn.prepare_cached("UPDATE events SET match_keys = match_keys | ?2 WHERE id = ?1")?
            .execute(params![id, e.match_keys])?;
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
    Ok(())
}

/// Copies committed WAL frames into the database a few times a second without blocking the
/// writer (PASSIVE). Once every frame is copied, the writer's next transaction starts the log
/// from the beginning again, and `journal_size_limit` trims the file, so the WAL stays small.
fn checkpoint_loop(conn: &Connection, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
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
