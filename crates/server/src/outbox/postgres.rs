//! The shared outbox: PostgreSQL, for several gateway instances behind a load balancer.
//!
//! Every instance runs the same delivery loops against the same tables; what keeps an event
//! from being sent twice is the lease, as with SQLite, plus row locks:
//!
//! - a claim picks due rows with `FOR UPDATE SKIP LOCKED` and moves their `next_attempt_at`
//!   and `lease_until` to the lease end in the same statement, so two instances claiming at
//!   once get disjoint events and no claim waits on another;
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

mod audiences;
mod migrations;
mod quality;

use self::quality::LedgerFlag;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use pincapi_core::event::EventName;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{AlertState, CensusLookup, EqsScore, QualityHour, QualityMessage, ShopifyTruth};
use super::{
    AudienceObject, EventFacts, ForgetReport, IdKind, ListOperation, PersonFacts, StoredEvent,
};
use super::{
    ClaimedEvent, DeadLetter, Depth, Enqueued, NewEvent, Outbox, Selection, Settlement, StoreError,
};
use super::{
    OrderOutcome, ShopifyAdjustment, ShopifyAdjustmentRow, ShopifyLedger, ShopifyOrder,
    ShopifyOrderRow, ShopifyRecord, ShopifyStored, Source, StoreLock, TEST_ORDER_DROPPED,
    TestOrderCopy,
};
use crate::outbox::sqlite::{BROWSER_SOURCES, PAYLOAD_VERSION, Settled, Tally};

pub use migrations::{MIGRATIONS, Migration};

/// How many times a transaction PostgreSQL aborted as a deadlock victim is run again.
const RETRIES: u32 = 4;

/// First key of the advisory locks of Shopify pollers ("shop" in ASCII); the second is a
/// hash of the shop's domain.
const POLLER_LOCK: i32 = 0x73_68_6f_70;

/// The events [`Outbox::purge_settled`] deletes, with the cutoff (Unix ms) as `$1`: the same
/// rule as SQLite's.
const PURGEABLE: &str = "((state = 'delivered' AND sent_at < $1)
     OR (state = 'dropped' AND received_at < $1 AND next_attempt_at < $1))";

/// First key of the advisory locks of audience syncs ("audi" in ASCII); the second is a hash
/// of the ad account id.
const AUDIENCE_SYNC_LOCK: i32 = 0x61_75_64_69;

/// `[postgres]`: the connection pool of a PostgreSQL store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// Connections per instance (the database's `max_connections` must cover every
    /// instance's pool, plus one per Shopify shop while it is polled and one while an
    /// audience sync runs).
    pub pool_size: usize,
    /// Seconds to wait for a connection to PostgreSQL before the store counts as unavailable.
    pub connect_timeout_secs: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            pool_size: 16,
            connect_timeout_secs: 10,
        }
    }
}

impl PostgresConfig {
    /// Errors name the key.
    pub fn validate(config: &crate::config::Config) -> anyhow::Result<()> {
        let p = &config.postgres;
        if !(1..=512).contains(&p.pool_size) {
            anyhow::bail!("postgres.pool_size: must be 1..=512");
        }
        if !(1..=600).contains(&p.connect_timeout_secs) {
            anyhow::bail!("postgres.connect_timeout_secs: must be 1..=600");
        }
        Ok(())
    }
}

/// `postgres://user:password@host/db` with the password replaced by `***` (also a
/// `password=` query parameter), for logs, errors and `check-config`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Serialises a store URL without its password (for `Config`'s `store`).
pub fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

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
            let result: Result<_, PgError> = async {
                let $tx = client.transaction().await?;
                let value = $body;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && tries < RETRIES => tries += 1,
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

/// The PostgreSQL outbox.
pub struct PostgresOutbox {
    pool: Pool,
    /// The URL without its password.
    display: String,
    version: i32,
    /// Enqueues go through the group-commit writers (see [`GroupWriter`]).
    enqueues: mpsc::UnboundedSender<EnqueueJob>,
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
const WRITERS: usize = 4;

/// A group stops collecting at this many events (a single call may bring up to 1000).
const MAX_GROUP_EVENTS: usize = 2000;

impl GroupWriter {
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        pooled_client(&self.pool, &self.display).await
    }

    /// Collects the calls waiting now (at least one) and commits them together, until the
    /// outbox is dropped.
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

impl std::fmt::Debug for PostgresOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOutbox")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl PostgresOutbox {
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
        let mut outbox = PostgresOutbox {
            pool,
            display,
            version: 0,
            enqueues,
        };
        let mut client = outbox.client().await?;
        outbox.version = migrations::migrate(&mut client, crate::delivery::now_ms()).await?;
        drop(client);
        Ok(outbox)
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

#[async_trait]
impl Outbox for PostgresOutbox {
    async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || StoreError::Unavailable("the PostgreSQL enqueue writers stopped".into());
        let (reply, answer) = oneshot::channel();
        self.enqueues.send((events, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn claim(
        &self,
        ad_account_id: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let lease_end = now_ms + lease_ms;
        // One statement: the due rows nobody else is locking are picked and leased; a row
        // another instance claimed a moment ago is either skipped (still locked) or no longer
        // due (its next_attempt_at is its lease end once committed).
        let rows = self
            .query(
                "WITH picked AS MATERIALIZED (
                     SELECT id FROM events
                     WHERE state = 'pending' AND ad_account_id = $1 AND next_attempt_at <= $2
                     ORDER BY next_attempt_at, id LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 UPDATE events e SET next_attempt_at = $4, lease_until = $4
                 FROM picked, payloads p
                 WHERE e.id = picked.id AND p.id = e.id
                 RETURNING e.id, e.event_id, e.event_name, e.event_time, e.received_at,
                           e.attempts, e.test, p.body",
                &[&ad_account_id, &now_ms, &(limit as i64), &lease_end],
            )
            .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let name: String = r.get(2);
                let event_name = EventName::parse(&name).ok_or_else(|| {
                    StoreError::Query(format!("row {id} has an unknown event_name"))
                })?;
                Ok(ClaimedEvent {
                    id,
                    event_id: r.get(1),
                    event_name,
                    event_time: r.get(3),
                    received_at_ms: r.get(4),
                    attempts: r.get::<_, i32>(5).max(0) as u32,
                    test: r.get(6),
                    payload: r.get(7),
                    lease_until: lease_end,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING gives rows in no promised order; send oldest first.
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn settle(
        &self,
        lease_until_ms: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError> {
        // One outcome per event (the first, as one statement per outcome would record).
        let mut seen = std::collections::HashSet::new();
        let mut settlements: Vec<Settlement> = settlements
            .into_iter()
            .filter(|s| seen.insert(settlement_id(s)))
            .collect();
        if settlements.is_empty() {
            return Ok(0);
        }
        settlements.sort_by_key(settlement_id);
        let mut ids = Vec::with_capacity(settlements.len());
        let mut kinds = Vec::with_capacity(settlements.len());
        let mut ats: Vec<Option<i64>> = Vec::with_capacity(settlements.len());
        let mut messages: Vec<Option<&str>> = Vec::with_capacity(settlements.len());
        let mut counted: Vec<i32> = Vec::with_capacity(settlements.len());
        for s in &settlements {
            let (id, kind, at, message, count) = match s {
                Settlement::Delivered {
                    id,
                    sent_at_ms,
                    warning,
                } => (*id, "delivered", Some(*sent_at_ms), warning.as_deref(), 1),
                Settlement::Retry {
                    id,
                    next_attempt_at_ms,
                    error,
                    counted,
                } => (
                    *id,
                    "retry",
                    Some(*next_attempt_at_ms),
                    Some(error.as_str()),
                    i32::from(*counted),
                ),
                Settlement::Dead { id, reason } => (*id, "dead", None, Some(reason.as_str()), 1),
            };
            ids.push(id);
            kinds.push(kind);
            ats.push(at);
            messages.push(message);
            counted.push(count);
        }
        let applied = in_transaction!(self, |tx| {
            // Lock in id order first (an enqueue merging into one of these rows locks the
            // same way), then update them all at once; RETURNING says which were settled
            // (a row whose lease was replaced is not), which is what the aggregates count.
            query(
                &tx,
                "SELECT id FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .await?;
            let mut settled = query(
                &tx,
                "UPDATE events e SET
                     state = CASE s.kind WHEN 'retry' THEN e.state ELSE s.kind END,
                     sent_at = CASE s.kind WHEN 'delivered' THEN s.at ELSE e.sent_at END,
                     warning = CASE s.kind WHEN 'delivered' THEN s.message ELSE e.warning END,
                     last_error = CASE s.kind WHEN 'delivered' THEN e.last_error
                                  ELSE s.message END,
                     next_attempt_at = CASE s.kind WHEN 'retry' THEN s.at
                                       ELSE e.next_attempt_at END,
                     attempts = e.attempts + s.counted,
                     lease_until = NULL
                 FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::int[])
                      AS s(id, kind, at, message, counted)
                 WHERE e.id = s.id AND e.lease_until = $1 AND e.state = 'pending'
                 RETURNING e.id, e.ad_account_id, e.event_name, e.event_id, e.received_at,
                           e.event_time",
                &[&lease_until_ms, &ids, &kinds, &ats, &messages, &counted],
            )
            .await?;
            settled.sort_by_key(|r| r.get::<_, i64>(0));
            let mut tally = Tally::default();
            for r in &settled {
                let id: i64 = r.get(0);
                let Ok(i) = ids.binary_search(&id) else {
                    return Err(
                        StoreError::Query(format!("settled row {id} was not asked for")).into(),
                    );
                };
                let e = Settled {
                    ad_account_id: r.get(1),
                    event_name: r.get(2),
                    event_id: r.get(3),
                    received_at_ms: r.get(4),
                    event_time: r.get(5),
                };
                tally.count_settled(&e, &settlements[i]);
                if let Settlement::Delivered { .. } = settlements[i] {
                    quality::mark_order(&tx, &e.ad_account_id, &e.event_id, LedgerFlag::Delivered)
                        .await?;
                }
            }
            quality::flush(&tx, tally).await?;
            settled.len()
        })?;
        Ok(applied)
    }

    async fn next_due(&self, ad_account_id: &str) -> Result<Option<i64>, StoreError> {
        let rows = self
            .query(
                "SELECT min(next_attempt_at) FROM events
                 WHERE state = 'pending' AND ad_account_id = $1",
                &[&ad_account_id],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET next_attempt_at = $1, lease_until = NULL
             WHERE state = 'pending' AND lease_until IS NOT NULL",
            &[&now_ms],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn depth(&self) -> Result<Vec<Depth>, StoreError> {
        let rows = self
            .query(
                "SELECT ad_account_id, event_name,
                        count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'dead')
                 FROM events WHERE state IN ('pending', 'dead')
                 GROUP BY ad_account_id, event_name ORDER BY 1, 2",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Depth {
                ad_account_id: r.get(0),
                event_name: r.get(1),
                pending: r.get::<_, i64>(2) as u64,
                dead: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self
            .query(
                "SELECT id, ad_account_id, event_id, event_name, event_time, attempts,
                        coalesce(last_error, '')
                 FROM events WHERE state = 'dead' ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                ad_account_id: r.get(1),
                event_id: r.get(2),
                event_name: r.get(3),
                event_time: r.get(4),
                attempts: r.get::<_, i32>(5).max(0) as u32,
                reason: r.get(6),
            })
            .collect())
    }

    async fn retry_dead(&self, which: Selection, now_ms: i64) -> Result<u64, StoreError> {
        let ids = selection_ids(which);
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1,
                 lease_until = NULL
             WHERE state = 'dead' AND ($2::bigint[] IS NULL OR id = ANY($2))",
            &[&now_ms, &ids],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn drop_dead(&self, which: Selection) -> Result<u64, StoreError> {
        let ids = selection_ids(which);
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET state = 'dropped'
             WHERE state = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1))",
            &[&ids],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }

    // --- Shopify ---

    async fn record_shopify(
        &self,
        records: Vec<ShopifyRecord>,
    ) -> Result<Vec<ShopifyStored>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // One transaction: a failure leaves nothing of any record behind.
        in_transaction!(self, |tx| {
            let mut tally = Tally::default();
            let mut out = Vec::with_capacity(records.len());
            for r in &records {
                out.push(shopify_record(&tx, r, &mut tally).await?);
            }
            quality::flush(&tx, tally).await?;
            out
        })
    }

    async fn shopify_checkpoint(&self, shop: &str) -> Result<Option<i64>, StoreError> {
        let rows = self
            .query(
                "SELECT checkpoint FROM shopify_checkpoints WHERE shop = $1",
                &[&shop],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn advance_shopify_checkpoint(
        &self,
        shop: &str,
        at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO shopify_checkpoints (shop, checkpoint, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (shop) DO UPDATE SET
                 checkpoint = greatest(shopify_checkpoints.checkpoint, excluded.checkpoint),
                 updated_at = excluded.updated_at",
            &[&shop, &at, &now_ms],
        )
        .await
        .map(|_| ())
    }

    async fn shopify_ledger(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<ShopifyLedger, StoreError> {
        let limit = limit as i64;
        let rows = self
            .query(
                "SELECT shop, order_id, ad_account_id, created_at, test, value, currency,
                        source_name, outcome, reason, event_id, sources
                 FROM shopify_orders WHERE $1::text IS NULL OR shop = $1
                 ORDER BY created_at DESC, order_id DESC LIMIT $2",
                &[&shop, &limit],
            )
            .await?;
        let orders = rows
            .iter()
            .map(|r| {
                let sources = Source::from_bits(r.get(11));
                ShopifyOrderRow {
                    shop: r.get(0),
                    order: ShopifyOrder {
                        order_id: r.get(1),
                        ad_account_id: r.get(2),
                        created_at: r.get(3),
                        test: r.get(4),
                        value: r.get(5),
                        currency: r.get(6),
                        source_name: r.get(7),
                        outcome: OrderOutcome::parse(r.get(8)),
                        reason: r.get(9),
                        event_id: r.get(10),
                        source: sources.first().copied().unwrap_or(Source::Webhook),
                    },
                    sources,
                }
            })
            .collect();
        let rows = self
            .query(
                "SELECT shop, order_id, kind, at, amount, currency, reason, test
                 FROM shopify_adjustments WHERE $1::text IS NULL OR shop = $1
                 ORDER BY at DESC, id DESC LIMIT $2",
                &[&shop, &limit],
            )
            .await?;
        let adjustments = rows
            .iter()
            .map(|r| ShopifyAdjustmentRow {
                shop: r.get(0),
                adjustment: ShopifyAdjustment {
                    order_id: r.get(1),
                    kind: r.get(2),
                    at: r.get(3),
                    amount: r.get(4),
                    currency: r.get(5),
                    reason: r.get(6),
                    test: r.get(7),
                },
            })
            .collect();
        Ok(ShopifyLedger {
            orders,
            adjustments,
        })
    }

    async fn prune_shopify_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM shopify_deliveries WHERE received_at < $1",
            &[&before_ms],
        )
        .await
        .map_err(PgError::into_store)
    }

    // --- Multi-instance ---

    async fn try_lock_shopify_poller(&self, shop: &str) -> Result<Option<StoreLock>, StoreError> {
        // A session-level advisory lock on a connection of its own, taken out of the pool:
        // it is held for as long as the guard lives, and ends with the connection (the guard
        // is dropped, or the instance dies and PostgreSQL closes its session).
        let client = self.client().await?;
        let got: bool = query(
            &client,
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&POLLER_LOCK, &shop],
        )
        .await
        .map_err(PgError::into_store)?
        .first()
        .is_some_and(|r| r.get(0));
        let connection = deadpool_postgres::Object::take(client);
        Ok(got.then(|| StoreLock::holding(connection)))
    }

    // --- Quality ---

    async fn quality_hours(&self, since_hour: i64) -> Result<Vec<QualityHour>, StoreError> {
        let client = self.client().await?;
        quality::hours(&client, since_hour)
            .await
            .map_err(PgError::into_store)
    }

    async fn quality_messages(&self, since_day: i64) -> Result<Vec<QualityMessage>, StoreError> {
        let client = self.client().await?;
        quality::messages(&client, since_day)
            .await
            .map_err(PgError::into_store)
    }

    async fn shopify_truth(
        &self,
        since: i64,
        until: i64,
        missing_limit: usize,
    ) -> Result<ShopifyTruth, StoreError> {
        let client = self.client().await?;
        quality::shopify_truth(&client, since, until, missing_limit)
            .await
            .map_err(PgError::into_store)
    }

    async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError> {
        let client = self.client().await?;
        quality::alert_states(&client)
            .await
            .map_err(PgError::into_store)
    }

    async fn save_alert_state(&self, state: AlertState) -> Result<(), StoreError> {
        let client = self.client().await?;
        quality::save_alert_state(&client, &state)
            .await
            .map_err(PgError::into_store)
    }

    async fn save_eqs(&self, scores: Vec<EqsScore>) -> Result<(), StoreError> {
        if scores.is_empty() {
            return Ok(());
        }
        in_transaction!(self, |tx| quality::save_eqs(&tx, &scores).await?)
    }

    async fn eqs_scores(&self) -> Result<Vec<EqsScore>, StoreError> {
        let client = self.client().await?;
        quality::eqs_scores(&client)
            .await
            .map_err(PgError::into_store)
    }

    async fn try_lock_audience_sync(
        &self,
        ad_account_id: &str,
    ) -> Result<Option<StoreLock>, StoreError> {
        self.session_lock(AUDIENCE_SYNC_LOCK, ad_account_id).await
    }

    // --- Audiences ---

    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        audiences::checkpoint(&client)
            .await
            .map_err(PgError::into_store)
    }

    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        audiences::events(&client, from_ms, after, limit)
            .await
            .map_err(PgError::into_store)
    }

    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| audiences::record_facts(
            &tx,
            &facts,
            checkpoint_ms
        )
        .await?)
    }

    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError> {
        // Members, purchases and views from one snapshot.
        let mut client = self.client().await?;
        let result: Result<_, PgError> = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let people = audiences::people(&tx, ad_account_id).await?;
            tx.commit().await?;
            Ok(people)
        }
        .await;
        result.map_err(PgError::into_store)
    }

    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError> {
        let hash = hash.to_ascii_lowercase();
        in_transaction!(self, |tx| audiences::forget(&tx, kind, &hash, now_ms)
            .await?)
    }

    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError> {
        let client = self.client().await?;
        audiences::objects(&client, ad_account_id)
            .await
            .map_err(PgError::into_store)
    }

    async fn save_audience_object(&self, object: AudienceObject) -> Result<(), StoreError> {
        let client = self.client().await?;
        audiences::save_object(&client, &object)
            .await
            .map_err(PgError::into_store)
    }

    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            audiences::drop_object(&tx, ad_account_id, segment, object).await?
        })
    }

    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        audiences::synced(&client, ad_account_id, segment, kind)
            .await
            .map_err(PgError::into_store)
    }

    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        audiences::apply_update(&client, ad_account_id, segment, kind, operation, hashes)
            .await
            .map_err(PgError::into_store)
    }

    // --- Census ---

    async fn census_lookup(
        &self,
        shop: String,
        ad_account_id: String,
        order_ids: Vec<String>,
    ) -> Result<Vec<CensusLookup>, StoreError> {
        // One round trip for the whole listing, in the order it was given.
        let rows = self
            .query(
                "SELECT o.id, l.order_id IS NOT NULL, e.state,
                        coalesce((e.sources & $4) <> 0, false)
                 FROM unnest($3::text[]) WITH ORDINALITY AS o (id, n)
                 LEFT JOIN shopify_orders l ON l.shop = $1 AND l.order_id = o.id
                 LEFT JOIN events e
                     ON e.ad_account_id = $2 AND e.event_id = 'order-' || o.id
                 ORDER BY o.n",
                &[&shop, &ad_account_id, &order_ids, &BROWSER_SOURCES],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CensusLookup {
                order_id: r.get(0),
                in_ledger: r.get(1),
                purchase_state: r.get(2),
                browser_seen: r.get(3),
            })
            .collect())
    }

    // --- Retention and back-pressure ---

    async fn pending_count(&self) -> Result<u64, StoreError> {
        // Answered from the partial index `events_due`, which holds only pending events.
        let rows = self
            .query("SELECT count(*) FROM events WHERE state = 'pending'", &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    async fn purge_settled(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        // One statement, so it is atomic on its own: up to `limit` finished events, skipping
        // rows another instance holds (it may be purging them too), lose their payloads and go.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "WITH doomed AS (
                         SELECT id FROM events WHERE {PURGEABLE}
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),
                     payloads_gone AS (
                         DELETE FROM payloads WHERE id IN (SELECT id FROM doomed))
                     DELETE FROM events WHERE id IN (SELECT id FROM doomed) RETURNING id"
                ),
                &[&before_ms, &limit],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn count_purgeable(&self, before_ms: i64) -> Result<u64, StoreError> {
        let rows = self
            .query(
                &format!("SELECT count(*) FROM events WHERE {PURGEABLE}"),
                &[&before_ms],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    async fn storage_bytes(&self) -> Result<u64, StoreError> {
        let rows = self
            .query("SELECT pg_database_size(current_database())", &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }
}

impl PostgresOutbox {
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

/// The row id a settlement is about.
fn settlement_id(s: &Settlement) -> i64 {
    match s {
        Settlement::Delivered { id, .. }
        | Settlement::Retry { id, .. }
        | Settlement::Dead { id, .. } => *id,
    }
}

fn selection_ids(which: Selection) -> Option<Vec<i64>> {
    match which {
        Selection::All => None,
        Selection::Ids(ids) => Some(ids),
    }
}

/// Stores events: every first sighting of an (ad account, event_id) in one insert, then the
/// repeats (of stored events, or within the batch) one by one in the order given.
async fn enqueue_in<C: GenericClient + Sync>(
    c: &C,
    events: &[NewEvent],
    tally: &mut Tally,
) -> Result<Vec<Enqueued>, PgError> {
    let mut out: Vec<Option<Enqueued>> = vec![None; events.len()];
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        first
            .entry((e.ad_account_id.as_str(), e.event_id.as_str()))
            .or_insert(i);
    }
    let mut fresh: Vec<usize> = first.values().copied().collect();
    // A fixed order of inserts: two instances inserting overlapping events wait on each
    // other in the same order, never in a cycle.
    fresh.sort_by(|&a, &b| {
        (&events[a].ad_account_id, &events[a].event_id)
            .cmp(&(&events[b].ad_account_id, &events[b].event_id))
    });
    let col = |f: &dyn Fn(&NewEvent) -> String| -> Vec<String> {
        fresh.iter().map(|&i| f(&events[i])).collect()
    };
    let accounts = col(&|e| e.ad_account_id.clone());
    let event_ids = col(&|e| e.event_id.clone());
    let names = col(&|e| e.event_name.as_str().to_owned());
    let sources = col(&|e| e.source.as_str().to_owned());
    let num = |f: &dyn Fn(&NewEvent) -> i64| -> Vec<i64> {
        fresh.iter().map(|&i| f(&events[i])).collect()
    };
    let times = num(&|e| e.event_time);
    let received = num(&|e| e.received_at_ms);
    let source_bits = num(&|e| e.source.bit());
    let match_keys = num(&|e| i64::from(e.match_keys));
    let due = num(&|e| e.received_at_ms + e.hold_ms.max(0));
    let tests: Vec<bool> = fresh.iter().map(|&i| events[i].test).collect();
    let inserted = query(
        c,
        "INSERT INTO events (ad_account_id, event_id, event_name, event_time, received_at,
             source, sources, match_keys, test, next_attempt_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
             $6::text[], $7::bigint[], $8::bigint[], $9::boolean[], $10::bigint[])
         ON CONFLICT (ad_account_id, event_id) DO NOTHING
         RETURNING id, ad_account_id, event_id",
        &[
            &accounts,
            &event_ids,
            &names,
            &times,
            &received,
            &sources,
            &source_bits,
            &match_keys,
            &tests,
            &due,
        ],
    )
    .await?;
    let mut payload_ids = Vec::with_capacity(inserted.len());
    let mut bodies = Vec::with_capacity(inserted.len());
    for r in &inserted {
        let account: &str = r.get(1);
        let event_id: &str = r.get(2);
        let Some(&i) = first.get(&(account, event_id)) else {
            return Err(StoreError::Query("an inserted event is not in the batch".into()).into());
        };
        out[i] = Some(Enqueued::Accepted);
        payload_ids.push(r.get::<_, i64>(0));
        let e = &events[i];
        bodies.push(e.payload.as_str());
        let counts = tally.hour(&e.ad_account_id, e.event_name.as_str(), e.received_at_ms);
        counts.received += 1;
        counts.count_sources(e.source.bit());
        counts.count_keys(e.match_keys);
    }
    // The ledger rows of browser purchases, in the fixed order of the inserts.
    for &i in &fresh {
        let e = &events[i];
        if out[i].is_some() && e.source.is_browser() {
            quality::mark_order(c, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen).await?;
        }
    }
    if !payload_ids.is_empty() {
        execute(
            c,
            "INSERT INTO payloads (id, payload_version, body)
             SELECT id, $2, body FROM unnest($1::bigint[], $3::text[]) AS p(id, body)",
            &[&payload_ids, &(PAYLOAD_VERSION as i32), &bodies],
        )
        .await?;
    }
    let repeats: Vec<usize> = (0..events.len()).filter(|&i| out[i].is_none()).collect();
    if !repeats.is_empty() {
        // Lock every stored event a repeat touches, in id order, before merging any.
        let accounts: Vec<&str> = repeats
            .iter()
            .map(|&i| events[i].ad_account_id.as_str())
            .collect();
        let event_ids: Vec<&str> = repeats
            .iter()
            .map(|&i| events[i].event_id.as_str())
            .collect();
        query(
            c,
            "SELECT id FROM events
             WHERE (ad_account_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY id FOR UPDATE",
            &[&accounts, &event_ids],
        )
        .await?;
        for &i in &repeats {
            out[i] = Some(record_repeat(c, &events[i], tally).await?);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(Enqueued::Duplicate))
        .collect())
}

/// A repeat of a stored event: remember its source, and merge it in while the stored event
/// waits unsent (not delivered, not claimed by a worker). The same rules and counts as
/// SQLite's.
async fn record_repeat<C: GenericClient + Sync>(
    c: &C,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, PgError> {
    let rows = query(
        c,
        "SELECT e.id, e.state, e.lease_until IS NOT NULL, p.body, e.source, e.event_name,
                e.received_at, e.sources, e.match_keys
         FROM events e JOIN payloads p ON p.id = e.id
         WHERE e.ad_account_id = $1 AND e.event_id = $2
         FOR UPDATE OF e",
        &[&e.ad_account_id, &e.event_id],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Err(StoreError::Query(format!(
            "event {:?} of ad account {} was neither inserted nor found",
            e.event_id, e.ad_account_id
        ))
        .into());
    };
    let id: i64 = row.get(0);
    let state: &str = row.get(1);
    let leased: bool = row.get(2);
    let payload: &str = row.get(3);
    let first_source: &str = row.get(4);
    let event_name: &str = row.get(5);
    let received_at_ms: i64 = row.get(6);
    let stored_sources: i64 = row.get(7);
    let stored_keys: i64 = row.get(8);
    // Counted in the hour the stored event was received, like everything about it.
    let counts = tally.hour(&e.ad_account_id, event_name, received_at_ms);
    counts.duplicates += 1;
    counts.count_sources(e.source.bit() & !stored_sources);
    if e.source.is_browser() && stored_sources & BROWSER_SOURCES == 0 {
        quality::mark_order(c, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen).await?;
    }
    if state != "pending" || leased {
        execute(
            c,
            "UPDATE events SET sources = sources | $2, repeats = repeats + 1 WHERE id = $1",
            &[&id, &e.source.bit()],
        )
        .await?;
        return Ok(Enqueued::Duplicate);
    }
    counts.merged += 1;
    // The shop's own record of a purchase (webhook, poller, API) knows value, currency and
    // items better than the browser that reported it first.
    let browser_first = matches!(first_source, "collector" | "tag_mirror");
    let authoritative = browser_first && !e.source.is_browser();
    let merged = pincapi_core::event::merge_payload(payload, &e.payload, authoritative);
    let match_keys = match &merged {
        Some(merged) => {
            execute(
                c,
                "UPDATE payloads SET body = $2 WHERE id = $1",
                &[&id, merged],
            )
            .await?;
            counts.count_keys(e.match_keys & !(stored_keys as u32));
            i64::from(e.match_keys)
        }
        None => 0,
    };
    // An authoritative repeat completes a purchase the browser reported and that waits in
    // its hold: nothing more is expected, so it is due now.
    let due = if authoritative {
        e.received_at_ms
    } else {
        i64::MAX
    };
    execute(
        c,
        "UPDATE events SET sources = sources | $2, repeats = repeats + 1,
             match_keys = match_keys | $3, next_attempt_at = least(next_attempt_at, $4)
         WHERE id = $1",
        &[&id, &e.source.bit(), &match_keys, &due],
    )
    .await?;
    Ok(Enqueued::Merged)
}

// --- Shopify ---

/// Stores one Shopify record inside the caller's transaction.
async fn shopify_record<C: GenericClient + Sync>(
    c: &C,
    r: &ShopifyRecord,
    tally: &mut Tally,
) -> Result<ShopifyStored, PgError> {
    if let Some(d) = &r.delivery {
        // Two instances receiving the same delivery at once: the second insert waits for the
        // first transaction and then finds the id stored.
        let n = execute(
            c,
            "INSERT INTO shopify_deliveries (shop, webhook_id, topic, outcome, received_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shop, webhook_id) DO NOTHING",
            &[
                &r.shop,
                &d.webhook_id,
                &d.topic,
                &d.outcome,
                &r.received_at_ms,
            ],
        )
        .await?;
        if n == 0 {
            return Ok(ShopifyStored::DuplicateDelivery);
        }
    }
    let enqueued = match &r.event {
        Some(e) => enqueue_in(c, std::slice::from_ref(e), tally)
            .await?
            .first()
            .copied(),
        None => None,
    };
    if let Some(t) = &r.test_order {
        browser_copy_of_test_order(c, t).await?;
    }
    if let Some(o) = &r.order {
        execute(
            c,
            "INSERT INTO shopify_orders AS o (shop, order_id, ad_account_id, created_at, test,
                 value, currency, source_name, outcome, reason, event_id, sources,
                 first_seen_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (shop, order_id) DO UPDATE SET
                 sources = o.sources | excluded.sources,
                 updated_at = excluded.updated_at,
                 event_id = coalesce(o.event_id, excluded.event_id),
                 ad_account_id = CASE WHEN o.outcome = 'sent' THEN o.ad_account_id
                                      ELSE excluded.ad_account_id END,
                 created_at = CASE WHEN o.outcome = 'sent' THEN o.created_at
                                   ELSE excluded.created_at END,
                 test = CASE WHEN o.outcome = 'sent' THEN o.test ELSE excluded.test END,
                 value = CASE WHEN o.outcome = 'sent' THEN o.value ELSE excluded.value END,
                 currency = CASE WHEN o.outcome = 'sent' THEN o.currency
                                 ELSE excluded.currency END,
                 source_name = CASE WHEN o.outcome = 'sent' THEN o.source_name
                                    ELSE excluded.source_name END,
                 reason = CASE WHEN o.outcome = 'sent' THEN o.reason ELSE excluded.reason END,
                 outcome = CASE WHEN o.outcome = 'sent' THEN o.outcome
                                ELSE excluded.outcome END",
            &[
                &r.shop,
                &o.order_id,
                &o.ad_account_id,
                &o.created_at,
                &o.test,
                &o.value,
                &o.currency,
                &o.source_name,
                &o.outcome.as_str(),
                &o.reason,
                &o.event_id,
                &o.source.bit(),
                &r.received_at_ms,
            ],
        )
        .await?;
        quality::ledger_flags_from_event(c, &r.shop, &o.order_id).await?;
    }
    if let Some(a) = &r.adjustment {
        execute(
            c,
            "INSERT INTO shopify_adjustments (shop, order_id, kind, at, amount, currency,
                 reason, test, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &r.shop,
                &a.order_id,
                &a.kind,
                &a.at,
                &a.amount,
                &a.currency,
                &a.reason,
                &a.test,
                &r.received_at_ms,
            ],
        )
        .await?;
    }
    Ok(ShopifyStored::Stored(enqueued))
}

/// The browser's copy of a Shopify test order's purchase, while it waits unsent: flagged as
/// a test, or dropped (only a copy the browser reported). As in SQLite.
async fn browser_copy_of_test_order<C: GenericClient + Sync>(
    c: &C,
    t: &TestOrderCopy,
) -> Result<(), PgError> {
    if t.send_as_test {
        execute(
            c,
            "UPDATE events SET test = true
             WHERE ad_account_id = $1 AND event_id = $2 AND state = 'pending'
                 AND lease_until IS NULL",
            &[&t.ad_account_id, &t.event_id],
        )
        .await?;
    } else {
        execute(
            c,
            "UPDATE events SET state = 'dropped', last_error = $3
             WHERE ad_account_id = $1 AND event_id = $2 AND state = 'pending'
                 AND lease_until IS NULL AND source IN ('collector', 'tag_mirror')",
            &[&t.ad_account_id, &t.event_id, &TEST_ORDER_DROPPED],
        )
        .await?;
    }
    Ok(())
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
