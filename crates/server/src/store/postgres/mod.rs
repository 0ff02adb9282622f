//! The shared store: PostgreSQL, for several gateway instances behind a load balancer.
//!
//! Every instance runs the same delivery loops against the same tables; what keeps an event
//! from being sent twice is the lease, as with SQLite, plus row locks:
//!
//! - a claim picks due, unleased rows with `FOR UPDATE SKIP LOCKED` and sets their
//!   `lease_until` to the lease end in the same statement, so two instances claiming at once
//!   get disjoint events and no claim waits on another (a leased row keeps its
//!   `next_attempt_at`, so the claim rewrites no indexed column and stays a HOT update);
//! - a settlement applies only where `lease_until` still equals the claim's lease end, so an
//!   instance whose lease ran out (it stalled, or died and was replaced) cannot overwrite what
//!   the next owner does; an instance killed mid-batch leaves its events leased, and any other
//!   instance claims them once the lease ends (`release_leases` is not called at start: the
//!   other instances' leases are live);
//! - an enqueue inserts all new events in one statement (`UNNEST`, `ON CONFLICT DO NOTHING`),
//!   so the unique (ad account, event_id) decides between concurrent enqueues of one event;
//!   the repeats are then locked in id order and merged one by one, as SQLite does;
//! - the quality aggregates are counted in the transaction of the writes they count, and
//!   written last, in key order (see `quality.rs`).
//!
//! Rows are always locked in a fixed order (inserts by (ad account, event_id), existing rows
//! by id) so concurrent transactions do not deadlock; should PostgreSQL still report one, the
//! transaction is run again.
//!
//! `store = "postgres://user:password@host:5432/db"` (or `postgresql://`); TLS with
//! `sslmode=require` (see `tls.rs`). Migrations (`migrations.rs`) run at start.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use self::queue::enqueue_in;
use crate::config::PostgresConfig;
use crate::config::redact_url;
use crate::store::tally::Tally;
use crate::store::{Enqueued, NewEvent, StoreError, StoreLock};

pub use migrations::{MIGRATIONS, Migration};

/// How many times a transaction PostgreSQL aborted as a deadlock victim is run again.
pub(crate) const RETRIES: u32 = 4;

/// A failure inside a transaction: from PostgreSQL, or from our own reading of a row.
#[derive(Debug)]
pub(crate) enum PgError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl PgError {
    /// PostgreSQL gave up on the transaction to break a deadlock (or a serialisation
    /// conflict): running it again is right.
    fn retryable(&self) -> bool {
        match self {
            PgError::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            PgError::Store(_) => false,
        }
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            PgError::Store(e) => e,
            PgError::Db(e) if e.code().is_some() => StoreError::Query(with_causes(&e)),
            PgError::Db(e) => StoreError::Unavailable(format!("PostgreSQL: {}", with_causes(&e))),
        }
    }
}

/// Runs `$body` (which may use `.await` and `?`) in a transaction `$tx` on a pooled
/// connection, commits, and runs it again when PostgreSQL aborted it as a deadlock victim.
macro_rules! in_transaction {
    ($self:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            let mut client = $self.client().await?;
            let result: Result<_, $crate::store::postgres::PgError> = async {
                let $tx = client.transaction().await?;
                let value = $body;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && tries < $crate::store::postgres::RETRIES => tries += 1,
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

// After the macro, which they use.
mod audiences;
mod budget;
mod compliance;
mod credentials;
mod dead_letters;
mod maintenance;
mod migrations;
mod quality;
mod queue;
mod shopify;
mod tls;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password.
    display: String,
    version: i32,
    /// Enqueues go through the group-commit writers (see [`GroupWriter`]).
    enqueues: mpsc::UnboundedSender<EnqueueJob>,
    /// `postgres.shared_call_budget`.
    shared_call_budget: bool,
}

/// One `enqueue` call waiting for its group's commit.
type EnqueueJob = (
    Vec<NewEvent>,
    oneshot::Sender<Result<Vec<Enqueued>, StoreError>>,
);

/// Group commit for enqueues: the enqueue calls waiting at the moment a writer is free share
/// one transaction, so concurrent requests (one event each, typically) pay for one commit
/// and one WAL flush together instead of one each. `WRITERS` writers take turns collecting,
/// so one group commits while the next is being gathered. A group whose transaction fails is
/// run again one call at a time, so one call's failure is only that call's.
struct GroupWriter {
    pool: Pool,
    display: String,
}

/// Group-commit writers per instance (each holds one pooled connection while it commits).
/// Two: one commits while the other gathers the next group. More writers split the waiting
/// calls into smaller groups, and PostgreSQL's cost is mostly per transaction and round trip:
/// with four, the bench measured 193 and 242 µs of database CPU per event, with two 139 and
/// 180, and more events per second too (one writer: 134 and 159, but fewer events per second).
const WRITERS: usize = 2;

/// A group stops collecting at this many events (a single call may bring up to 1000).
const MAX_GROUP_EVENTS: usize = 2000;

impl GroupWriter {
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        pooled_client(&self.pool, &self.display).await
    }

    /// Collects the calls waiting now (at least one) and commits them together, until the
    /// store is dropped.
    async fn run(self, jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<EnqueueJob>>>) {
        loop {
            let group = {
                let mut rx = jobs.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut events = first.0.len();
                let mut group = vec![first];
                while events < MAX_GROUP_EVENTS {
                    match rx.try_recv() {
                        Ok(job) => {
                            events += job.0.len();
                            group.push(job);
                        }
                        Err(_) => break,
                    }
                }
                group
            };
            self.commit(group).await;
        }
    }

    async fn commit(&self, group: Vec<EnqueueJob>) {
        let lengths: Vec<usize> = group.iter().map(|(e, _)| e.len()).collect();
        let (events, replies): (Vec<Vec<NewEvent>>, Vec<_>) = group.into_iter().unzip();
        let all: Vec<NewEvent> = events.into_iter().flatten().collect();
        match self.enqueue(&all).await {
            Ok(mut out) => {
                for (reply, n) in replies.into_iter().zip(&lengths).rev() {
                    let mine = out.split_off(out.len() - n);
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) if replies.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(_) => {
                let mut start = 0;
                for (reply, n) in replies.into_iter().zip(lengths) {
                    let _ = reply.send(self.enqueue(&all[start..start + n]).await);
                    start += n;
                }
            }
        }
    }

    async fn enqueue(&self, events: &[NewEvent]) -> Result<Vec<Enqueued>, StoreError> {
        in_transaction!(self, |tx| {
            let mut tally = Tally::default();
            let out = enqueue_in(&tx, events, &mut tally).await?;
            quality::flush(&tx, tally).await?;
            out
        })
    }
}

async fn pooled_client(
    pool: &Pool,
    display: &str,
) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {display}: {}",
            with_causes(&e)
        ))
    })
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url`, checks the connection and runs the migrations.
    pub async fn connect(url: &str, settings: &PostgresConfig) -> Result<Self, StoreError> {
        let display = redact_url(url);
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "store: {display} is not a usable PostgreSQL URL: {e}"
            ))
        })?;
        pg.connect_timeout(Duration::from_secs(settings.connect_timeout_secs));
        if pg.get_application_name().is_none() {
            pg.application_name("pincapi");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match pg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => {
                Manager::from_config(pg, tls::MakeRustls::with_webpki_roots(), manager_config)
            }
            // `prefer` (the default) and `disable` connect without TLS.
            _ => Manager::from_config(pg, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(Duration::from_secs(settings.connect_timeout_secs)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("store: {display}: {e}")))?;
        let (enqueues, jobs) = mpsc::unbounded_channel();
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        for _ in 0..WRITERS {
            let writer = GroupWriter {
                pool: pool.clone(),
                display: display.clone(),
            };
            tokio::spawn(writer.run(Arc::clone(&jobs)));
        }
        let mut store = PostgresStore {
            pool,
            display,
            version: 0,
            enqueues,
            shared_call_budget: settings.shared_call_budget,
        };
        let mut client = store.client().await?;
        store.version = migrations::migrate(&mut client, crate::clock::system_now_ms()).await?;
        drop(client);
        Ok(store)
    }

    /// The schema version the store is at (after the migrations of [`Self::connect`]).
    pub fn schema_version(&self) -> i32 {
        self.version
    }

    /// The URL without its password.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        pooled_client(&self.pool, &self.display).await
    }

    /// Runs one statement outside an explicit transaction.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        query(&client, sql, params)
            .await
            .map_err(PgError::into_store)
    }
}

/// An error with the chain of its causes (a TLS failure says which certificate check
/// failed).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// A prepared (and per-connection cached) statement, run.
async fn query<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn execute<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

impl PostgresStore {
    /// A session-level advisory lock `(class, hashtext(name))` on a connection of its own,
    /// taken out of the pool: held for as long as the returned guard lives, and ended with the
    /// connection (the guard is dropped, or the instance dies and PostgreSQL closes its
    /// session). `None` while another session holds it.
    async fn session_lock(&self, class: i32, name: &str) -> Result<Option<StoreLock>, StoreError> {
        let client = self.client().await?;
        let got: bool = query(
            &client,
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&class, &name],
        )
        .await
        .map_err(PgError::into_store)?
        .first()
        .is_some_and(|r| r.get(0));
        Ok(got.then(|| StoreLock::holding(deadpool_postgres::Object::take(client))))
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example:5432/pincapi?sslmode=require"),
            "postgres://app:***@db.example:5432/pincapi?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://db/pincapi?user=app&password=s3cret"),
            "postgresql://db/pincapi?user=app&password=***"
        );
        assert_eq!(
            redact_url("postgres://app@db/pincapi"),
            "postgres://app@db/pincapi"
        );
    }
}
