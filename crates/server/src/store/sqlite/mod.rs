//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the write connection and commits every
//! job waiting in its queue in one transaction (group commit): many concurrent requests share
//! one fsync, and a request is answered only after the commit that holds its events. Each
//! job runs inside its own savepoint, so one failing job does not undo its neighbours; the
//! quality counts of the group's jobs are summed and written once, before the commit. Reads
//! that may scan (depth, dead letters) use a separate connection and never hold up writers.
//!
//! One process owns an embedded store at a time: [`SqliteStore::lock_owner`] takes an
//! exclusive lock on `<db>.lock`, so a second `serve` on the same file refuses to start
//! instead of double-sending. CLI commands may still open the file alongside.

mod audiences;
mod compliance;
mod credentials;
mod dead_letters;
mod maintenance;
mod quality;
mod queue;
mod schema;
mod shopify;

use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use self::schema::migrate;
use crate::config::Synchronous;
use crate::store::StoreError;
use crate::store::tally::Tally;

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A job gets the connection inside the open transaction and the group's quality counts,
/// or `None` when the transaction could not begin (then it must not touch the store and only
/// reports the failure).
type Job = Box<dyn FnOnce(Option<(&Connection, &mut Tally)>) -> Reply + Send>;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    stop_checkpoints: Arc<AtomicBool>,
    /// The last write failed for want of disk space.
    full: Arc<AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, runs migrations, and starts the writer
    /// thread.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let writer = open_connection(path)?;
        make_reserve(path);
        migrate(&writer)?;
        // Checkpoints run on their own connection and thread (PASSIVE: they never block the
        // writer), so a commit never waits for WAL pages to be copied into the database.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        // The writer's page cache stays small too: at every commit SQLite walks the cache's
        // hash table (pcache1TruncateUnsafe), so its cost grows with the cache. With 64 MiB that
        // walk was 10-16 % of the gateway's CPU under load and grew as the cache filled; pages
        // not cached are read through the memory map, which costs little.
        writer.execute_batch("PRAGMA cache_size = -8192")?;
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
                    .mode(PRIVATE)
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
        let full = Arc::new(AtomicBool::new(false));
        {
            let stop = Arc::clone(&stop);
            let full = Arc::clone(&full);
            let checkpoint_path = path.to_owned();
            std::thread::Builder::new()
                .name("pincapi-sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(&checkpointer, &checkpoint_path, &stop, &full))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start checkpoint thread: {e}"))
                })?;
        }
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs,
            reader: Arc::new(Mutex::new(reader)),
            stop_checkpoints: stop,
            full,
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
            .mode(PRIVATE)
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
        self.write_counted(move |conn, _| f(conn)).await
    }

    /// [`write`](Self::write) for a job that counts: what it adds to its tally is written
    /// with the rest of its group, at the commit, and only when the job succeeded.
    async fn write_counted<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, &mut Tally) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |group| {
            let result = match group {
                Some((conn, group_tally)) => {
                    let mut tally = Tally::default();
                    let result = in_savepoint(conn, |conn| f(conn, &mut tally));
                    if result.is_ok() {
                        group_tally.absorb(tally);
                    }
                    result
                }
                None => Err(StoreError::Unavailable("transaction did not begin".into())),
            };
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        let result = rx
            .await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?;
        match &result {
            Err(StoreError::Full(_)) if !self.full.swap(true, Ordering::Relaxed) => {
                let _ = std::fs::remove_file(reserve_path(&self.path));
                tracing::error!(path = %self.path.display(), "The disk under the store is full: new events are refused (503) and what is stored is delivered in the space set aside; free some space and the gateway resumes by itself");
            }
            // A write that fits in the last free bytes does not end the shortage: only free
            // space does (see `recovered`).
            Ok(_) if self.full.load(Ordering::Relaxed) => recovered(&self.path, &self.full),
            _ => {}
        }
        result
    }

    /// Copies the WAL into the database and empties it (`wal_checkpoint(TRUNCATE)`), so what
    /// an erasure overwrote is in no older frame of the WAL either. Best effort: a busy
    /// checkpoint is left to the checkpoint thread.
    pub(crate) async fn checkpoint_truncate(&self) {
        let done = self
            .read(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok(())
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "Could not empty the WAL after an erasure");
        }
    }

    /// Whether the last write failed for want of disk space.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Refuses a write of new data while the disk is full, before it is tried: the space left
    /// is for delivering what is stored.
    fn room_for_new_data(&self) -> Result<(), StoreError> {
        if self.is_full() {
            return Err(StoreError::Full(
                "the disk under the store is full; new events wait until space is freed".into(),
            ));
        }
        Ok(())
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

/// Opens a connection. SQLite itself runs with `synchronous = NORMAL` (no fsync per commit);
/// with `Synchronous::Full` the sync thread fsyncs the WAL before any commit is acknowledged
/// (see `sync_loop`).
/// Free bytes on the store's filesystem that end a shortage (beyond the reserve, which is
/// made again first): room for the WAL to grow again.
const RECOVERED_BYTES: u64 = 4 * 1024 * 1024;

/// The space the store keeps beside it (`<db>-reserve`) for a full disk: given back at the
/// first write that finds no room, so the checkpoint and the settlements of what is already
/// stored still fit while new events are refused.
const RESERVE_BYTES: usize = 2 * 1024 * 1024;

fn reserve_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-reserve");
    PathBuf::from(p)
}

/// Sets the reserve aside (written out, so the space is really taken). A reserve that cannot
/// be made is not an error: the store works without it.
fn make_reserve(db: &Path) {
    let path = reserve_path(db);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() as usize >= RESERVE_BYTES) {
        return;
    }
    let made = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(PRIVATE)
        .open(&path)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&vec![0u8; RESERVE_BYTES])?;
            f.sync_all()
        });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(error = %e, path = %path.display(), "Could not set disk space aside for the store");
    }
}

/// Clears `full` once the filesystem of `path` has the reserve and [`RECOVERED_BYTES`] free,
/// setting the reserve aside again first.
fn recovered(path: &Path, full: &AtomicBool) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let free = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    if free >= RECOVERED_BYTES + RESERVE_BYTES as u64 && full.load(Ordering::Relaxed) {
        make_reserve(path);
        full.store(false, Ordering::Relaxed);
        tracing::info!(
            free_bytes = free,
            "The disk under the store has room again: new events are taken"
        );
    }
}

/// The mode of every file of the store: the owner's alone. SQLite gives the WAL and the
/// shared-memory file the mode of the database file, so creating that one private is enough.
const PRIVATE: u32 = 0o600;

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        File::options()
            .create_new(true)
            .write(true)
            .mode(PRIVATE)
            .open(path)
            .or_else(|e| match e.kind() {
                // Another connection created it meanwhile.
                std::io::ErrorKind::AlreadyExists => File::open(path),
                _ => Err(e),
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
            })?;
    }
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA secure_delete = ON;",
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot configure {}: {e}", path.display())))?;
    Ok(conn)
}

/// WAL frames (4 KiB pages) past which the checkpointer makes the log start over (64 MiB).
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database a few times a second without blocking the
/// writer (PASSIVE). The log starts from the beginning again only when a writer finds every
/// frame copied, which continuous group commits under sustained load rarely allow, so the WAL
/// would grow without bound (a 180 s benchmark left 20 GB). Past `WAL_RESTART_FRAMES` a
/// RESTART checkpoint holds the writer for the moment it takes to copy what PASSIVE left and
/// makes the next transaction start the log over; `journal_size_limit` then trims the file.
fn checkpoint_loop(conn: &Connection, path: &Path, stop: &AtomicBool, full: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        // Out of space: copy the WAL into the database and cut it to nothing, which gives its
        // space back to the writes delivery still has to make (and to new events, once more
        // is free).
        if full.load(Ordering::Relaxed) {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "SQLite checkpoint on a full disk failed; will retry");
            }
            recovered(path, full);
            continue;
        }
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
            let err = match StoreError::from(e) {
                full @ StoreError::Full(_) => full,
                e => StoreError::Unavailable(format!("cannot begin: {e}")),
            };
            for job in jobs {
                job(None)(Err(err.clone()));
            }
            continue;
        }
        let mut tally = Tally::default();
        let replies: Vec<Reply> = jobs
            .into_iter()
            .map(|job| job(Some((&conn, &mut tally))))
            .collect();
        // The group's quality counts, one upsert per (hour, ad account, event name): written
        // in the same transaction as the events they count, or neither is.
        let commit = quality::flush(&conn, tally)
            .and_then(|()| conn.execute_batch("COMMIT").map_err(StoreError::from))
            .map_err(|e| match e {
                full @ StoreError::Full(_) => full,
                e => StoreError::Unavailable(format!("commit failed: {e}")),
            });
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

/// Writes a consistent copy of the store at `path` to `to` (`VACUUM INTO`: one read
/// transaction, so it runs beside a live gateway, and the copy is compact). Refuses an
/// existing `to`.
pub fn backup(path: &Path, to: &Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::Unavailable(format!(
            "{} exists; a backup never overwrites a file",
            to.display()
        )));
    }
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "{} does not exist: nothing to back up",
            path.display()
        )));
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(PRIVATE)).map_err(|e| {
        StoreError::Unavailable(format!("cannot make {} private: {e}", to.display()))
    })?;
    Ok(())
}

/// Puts the backup `from` in place as the store at `path`. Refuses while a gateway owns the
/// store, and when the store holds events already (a restore never overwrites data).
pub fn restore(from: &Path, path: &Path) -> Result<(), StoreError> {
    let _owner = SqliteStore::lock_owner(path)?;
    let held: i64 = if path.exists() {
        let conn = Connection::open(path)?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )?;
        if tables == 0 {
            0
        } else {
            conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?
        }
    } else {
        0
    };
    if held > 0 {
        return Err(StoreError::Unavailable(format!(
            "{} holds {held} events; a restore never overwrites a store with events (move it \
             away first)",
            path.display()
        )));
    }
    // Check the backup is a store before anything is replaced.
    let version: i64 =
        Connection::open(from)?.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        return Err(StoreError::Unavailable(format!(
            "{} is not a pincapi store",
            from.display()
        )));
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(Path::new(&p));
    }
    let partial = path.with_extension("restoring");
    std::fs::copy(from, &partial)
        .and_then(|_| std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(PRIVATE)))
        .and_then(|_| std::fs::rename(&partial, path))
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot restore into {}: {e}", path.display()))
        })?;
    Ok(())
}
