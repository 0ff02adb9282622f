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
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pincapi_core::event::EventName;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::{
    ClaimedEvent, DeadLetter, Depth, Enqueued, NewEvent, Outbox, Selection, Settlement, StoreError,
};
use crate::config::Synchronous;

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

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
    payload_version  INTEGER NOT NULL,
    payload          TEXT    NOT NULL,          -- the event as Pinterest receives it (hashed)
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
        let writer = open_connection(path, synchronous)?;
        migrate(&writer)?;
        let reader = open_connection(path, synchronous)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pincapi-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteOutbox {
            path: path.to_owned(),
            jobs,
            reader: Arc::new(Mutex::new(reader)),
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
            let mut insert = conn.prepare_cached(
                "INSERT INTO events (ad_account_id, event_id, event_name, event_time, received_at,
                    source, sources, match_keys, test, payload_version, payload, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (ad_account_id, event_id) DO NOTHING",
            )?;
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                let n = insert.execute(params![
                    e.ad_account_id,
                    e.event_id,
                    e.event_name.as_str(),
                    e.event_time,
                    e.received_at_ms,
                    e.source.as_str(),
                    e.source.bit(),
                    e.match_keys,
                    e.test,
                    PAYLOAD_VERSION,
                    e.payload,
                    e.received_at_ms + e.hold_ms.max(0),
                ])?;
                if n == 1 {
                    out.push(Enqueued::Accepted);
                } else {
                    out.push(record_repeat(conn, e)?);
                }
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
            let mut select = conn.prepare_cached(
                "SELECT id, event_id, event_name, event_time, received_at, attempts, test, payload
                 FROM events
                 WHERE state = 'pending' AND ad_account_id = ?1 AND next_attempt_at <= ?2
                 ORDER BY next_attempt_at, id LIMIT ?3",
            )?;
            let rows = select.query_map(params![account, now_ms, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut claimed = Vec::new();
            for row in rows {
                let (id, event_id, name, event_time, received_at_ms, attempts, test, payload) =
                    row?;
                let event_name = EventName::parse(&name).ok_or_else(|| {
                    StoreError::Query(format!("row {id} has an unknown event_name"))
                })?;
                claimed.push(ClaimedEvent {
                    id,
                    event_id,
                    event_name,
                    event_time,
                    received_at_ms,
                    attempts,
                    test,
                    payload,
                });
            }
            let lease_end = now_ms + lease_ms;
            let mut lease = conn.prepare_cached(
                "UPDATE events SET next_attempt_at = ?2, lease_until = ?2 WHERE id = ?1",
            )?;
            for c in &claimed {
                lease.execute(params![c.id, lease_end])?;
            }
            Ok(claimed)
        })
        .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        self.write(move |conn| {
            for s in &settlements {
                match s {
                    Settlement::Delivered {
                        id,
                        sent_at_ms,
                        warning,
                    } => {
                        conn.prepare_cached(
                            "UPDATE events SET state = 'delivered', sent_at = ?2, warning = ?3,
                                 attempts = attempts + 1, lease_until = NULL
                             WHERE id = ?1",
                        )?
                        .execute(params![id, sent_at_ms, warning])?;
                    }
                    Settlement::Retry {
                        id,
                        next_attempt_at_ms,
                        error,
                        counted,
                    } => {
                        conn.prepare_cached(
                            "UPDATE events SET next_attempt_at = ?2, last_error = ?3,
                                 attempts = attempts + ?4, lease_until = NULL
                             WHERE id = ?1 AND state = 'pending'",
                        )?
                        .execute(params![
                            id,
                            next_attempt_at_ms,
                            error,
                            i64::from(*counted)
                        ])?;
                    }
                    Settlement::Dead { id, reason } => {
                        conn.prepare_cached(
                            "UPDATE events SET state = 'dead', last_error = ?2,
                                 attempts = attempts + 1, lease_until = NULL
                             WHERE id = ?1",
                        )?
                        .execute(params![id, reason])?;
                    }
                }
            }
            Ok(())
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
}

/// A repeat of a stored event: remember its source, and merge it in while the stored event
/// waits unsent (not delivered, not claimed by a worker).
fn record_repeat(conn: &Connection, e: &NewEvent) -> Result<Enqueued, StoreError> {
    let (id, state, leased, payload): (i64, String, bool, String) = conn
        .prepare_cached(
            "SELECT id, state, lease_until IS NOT NULL, payload FROM events
             WHERE ad_account_id = ?1 AND event_id = ?2",
        )?
        .query_row(params![e.ad_account_id, e.event_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    conn.prepare_cached("UPDATE events SET sources = sources | ?2 WHERE id = ?1")?
        .execute(params![id, e.source.bit()])?;
    if state != "pending" || leased {
        return Ok(Enqueued::Duplicate);
    }
    if let Some(merged) = pincapi_core::event::merge_payload(&payload, &e.payload) {
        conn.prepare_cached(
            "UPDATE events SET payload = ?2, match_keys = match_keys | ?3 WHERE id = ?1",
        )?
        .execute(params![id, merged, e.match_keys])?;
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

fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32000;"
    ))
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
    Ok(())
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// Takes every waiting job, runs them in one transaction, commits once, then answers each.
fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
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
        for reply in replies {
            reply(commit.clone());
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
