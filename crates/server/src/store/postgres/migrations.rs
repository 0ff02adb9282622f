//! The PostgreSQL schema as a numbered list of migrations, the same tables and meanings as
//! SQLite's `MIGRATION_1` to `MIGRATION_3` (see `store/sqlite.rs`), in PostgreSQL's types:
//! `BIGINT` for Unix seconds and milliseconds, `BIGSERIAL` row ids, `BOOLEAN` flags.
//!
//! `schema_migrations` records every version applied. [`migrate`] runs in one transaction
//! under a transaction-level advisory lock, so several instances starting at once apply each
//! migration once and the others wait, then find nothing left to do. A later change appends
//! a [`Migration`] with the next version; an applied migration is never edited.

use deadpool_postgres::Client;

use super::PgError;
use crate::store::StoreError;

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Key of the advisory lock taken while migrating ("pincapi" in ASCII).
const MIGRATION_LOCK: i64 = 0x70_69_6e_63_61_70_69;

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events and payloads",
        sql: "
CREATE TABLE events (
    id               BIGSERIAL PRIMARY KEY,
    ad_account_id    TEXT     NOT NULL,
    event_id         TEXT     NOT NULL,
    event_name       TEXT     NOT NULL,
    event_time       BIGINT   NOT NULL,          -- Unix seconds
    received_at      BIGINT   NOT NULL,          -- Unix ms
    source           TEXT     NOT NULL,          -- the first source that sent it
    sources          BIGINT   NOT NULL,          -- bit set of every source that sent it
    match_keys       BIGINT   NOT NULL,          -- MatchKeys bits
    test             BOOLEAN  NOT NULL DEFAULT false,
    state            TEXT     NOT NULL DEFAULT 'pending', -- pending | delivered | dead | dropped
    attempts         INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT   NOT NULL,          -- Unix ms; a claim moves it to the lease end
    lease_until      BIGINT,                     -- Unix ms while claimed
    sent_at          BIGINT,                     -- Unix ms of the request that delivered it
    last_error       TEXT,
    warning          TEXT,
    UNIQUE (ad_account_id, event_id)
);
CREATE INDEX events_due ON events (ad_account_id, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX events_dead ON events (id) WHERE state = 'dead';
-- The event as Pinterest receives it (hashed), apart from the hot row that claims and
-- settlements rewrite.
CREATE TABLE payloads (
    id               BIGINT   PRIMARY KEY,       -- = events.id
    payload_version  INTEGER  NOT NULL,
    body             TEXT     NOT NULL
);
",
    },
    Migration {
        version: 2,
        name: "shopify",
        sql: "
CREATE TABLE shopify_deliveries (
    shop         TEXT     NOT NULL,
    webhook_id   TEXT     NOT NULL,          -- X-Shopify-Webhook-Id
    topic        TEXT     NOT NULL,
    outcome      TEXT     NOT NULL,          -- accepted | skipped | ignored | recorded
    received_at  BIGINT   NOT NULL,          -- Unix ms
    PRIMARY KEY (shop, webhook_id)
);
CREATE INDEX shopify_deliveries_age ON shopify_deliveries (received_at);
CREATE TABLE shopify_orders (
    shop           TEXT     NOT NULL,
    order_id       TEXT     NOT NULL,
    ad_account_id  TEXT     NOT NULL,
    created_at     BIGINT   NOT NULL,        -- Unix seconds
    test           BOOLEAN  NOT NULL,
    value          TEXT,
    currency       TEXT,
    source_name    TEXT,
    outcome        TEXT     NOT NULL,        -- sent | skipped | ignored; sent is final
    reason         TEXT,
    event_id       TEXT,
    sources        BIGINT   NOT NULL,        -- bit set of the sources that saw it
    first_seen_at  BIGINT   NOT NULL,        -- Unix ms
    updated_at     BIGINT   NOT NULL,        -- Unix ms
    PRIMARY KEY (shop, order_id)
);
CREATE INDEX shopify_orders_created ON shopify_orders (created_at);
CREATE TABLE shopify_adjustments (
    id           BIGSERIAL PRIMARY KEY,
    shop         TEXT     NOT NULL,
    order_id     TEXT     NOT NULL,
    kind         TEXT     NOT NULL,          -- cancelled | refunded
    at           BIGINT   NOT NULL,          -- Unix seconds
    amount       TEXT,
    currency     TEXT,
    reason       TEXT,
    test         BOOLEAN  NOT NULL,
    recorded_at  BIGINT   NOT NULL           -- Unix ms
);
CREATE UNIQUE INDEX shopify_adjustments_once
    ON shopify_adjustments (shop, order_id, kind, at, coalesce(amount, ''));
CREATE TABLE shopify_checkpoints (
    shop        TEXT     PRIMARY KEY,
    checkpoint  BIGINT   NOT NULL,           -- Unix seconds of the newest order seen
    updated_at  BIGINT   NOT NULL            -- Unix ms
);
",
    },
    Migration {
        version: 3,
        name: "quality",
        sql: "
-- How many repeats de-duplication caught per event; on the order ledger, whether the browser
-- reported the order's purchase and whether it was delivered (kept there, so the ledger still
-- knows once old events are purged), filled from the events still stored. The aggregates
-- start empty. The same tables and meanings as SQLite's MIGRATION_3.
ALTER TABLE events ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shopify_orders ADD COLUMN browser_seen BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE shopify_orders ADD COLUMN delivered BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX shopify_orders_order ON shopify_orders (order_id);
UPDATE shopify_orders o SET
    browser_seen = EXISTS (
        SELECT 1 FROM events e
        WHERE e.ad_account_id = o.ad_account_id AND e.event_id = 'order-' || o.order_id
            AND (e.sources & 24) <> 0),          -- collector | tag_mirror
    delivered = EXISTS (
        SELECT 1 FROM events e
        WHERE e.ad_account_id = o.ad_account_id AND e.event_id = 'order-' || o.order_id
            AND e.state = 'delivered')
WHERE EXISTS (
    SELECT 1 FROM events e
    WHERE e.ad_account_id = o.ad_account_id AND e.event_id = 'order-' || o.order_id);
-- One row per (hour received, ad account, event name); see QualityCounts for each column.
CREATE TABLE quality_hours (
    hour             BIGINT   NOT NULL,          -- Unix seconds, start of the hour received
    ad_account_id    TEXT     NOT NULL,
    event_name       TEXT     NOT NULL,
    received         BIGINT   NOT NULL DEFAULT 0,
    duplicates       BIGINT   NOT NULL DEFAULT 0,
    merged           BIGINT   NOT NULL DEFAULT 0,
    seen_api         BIGINT   NOT NULL DEFAULT 0,
    seen_webhook     BIGINT   NOT NULL DEFAULT 0,
    seen_poller      BIGINT   NOT NULL DEFAULT 0,
    seen_collector   BIGINT   NOT NULL DEFAULT 0,
    seen_tag_mirror  BIGINT   NOT NULL DEFAULT 0,
    seen_demo        BIGINT   NOT NULL DEFAULT 0,
    key_em           BIGINT   NOT NULL DEFAULT 0,
    key_ph           BIGINT   NOT NULL DEFAULT 0,
    key_external_id  BIGINT   NOT NULL DEFAULT 0,
    key_click_id     BIGINT   NOT NULL DEFAULT 0,
    key_ip_ua        BIGINT   NOT NULL DEFAULT 0,
    key_name         BIGINT   NOT NULL DEFAULT 0,
    key_address      BIGINT   NOT NULL DEFAULT 0,
    key_hashed_maids BIGINT   NOT NULL DEFAULT 0,
    delivered        BIGINT   NOT NULL DEFAULT 0,
    failed           BIGINT   NOT NULL DEFAULT 0,
    dead             BIGINT   NOT NULL DEFAULT 0,
    retried          BIGINT   NOT NULL DEFAULT 0,
    waits            BIGINT   NOT NULL DEFAULT 0,
    warned           BIGINT   NOT NULL DEFAULT 0,
    late             BIGINT   NOT NULL DEFAULT 0,
    lag_0            BIGINT   NOT NULL DEFAULT 0,
    lag_1            BIGINT   NOT NULL DEFAULT 0,
    lag_2            BIGINT   NOT NULL DEFAULT 0,
    lag_3            BIGINT   NOT NULL DEFAULT 0,
    lag_4            BIGINT   NOT NULL DEFAULT 0,
    lag_5            BIGINT   NOT NULL DEFAULT 0,
    lag_6            BIGINT   NOT NULL DEFAULT 0,
    lag_7            BIGINT   NOT NULL DEFAULT 0,
    lag_8            BIGINT   NOT NULL DEFAULT 0,
    lag_9            BIGINT   NOT NULL DEFAULT 0,
    lag_10           BIGINT   NOT NULL DEFAULT 0,
    lag_11           BIGINT   NOT NULL DEFAULT 0,
    lag_max          BIGINT   NOT NULL DEFAULT 0, -- seconds, exact
    PRIMARY KEY (hour, ad_account_id, event_name)
);
CREATE TABLE quality_messages (
    day            BIGINT   NOT NULL,            -- Unix seconds of the UTC midnight received
    ad_account_id  TEXT     NOT NULL,
    kind           TEXT     NOT NULL,            -- warning | retry | wait | dead_letter
    message        TEXT     NOT NULL,
    count          BIGINT   NOT NULL,
    PRIMARY KEY (day, ad_account_id, kind, message)
);
CREATE TABLE alert_states (
    rule           TEXT     NOT NULL,
    ad_account_id  TEXT     NOT NULL,
    active         BOOLEAN  NOT NULL,
    detail         TEXT     NOT NULL,
    fired_at       BIGINT   NOT NULL,            -- Unix ms
    cleared_at     BIGINT,                       -- Unix ms
    PRIMARY KEY (rule, ad_account_id)
);
CREATE TABLE eqs_scores (
    ad_account_id       TEXT     NOT NULL,
    ingestion_source    TEXT     NOT NULL,
    lookback_period     TEXT     NOT NULL,
    source_platform     TEXT     NOT NULL,
    overall_status      TEXT     NOT NULL,
    quality_components  TEXT     NOT NULL,       -- Pinterest's JSON object, as returned
    polled_at           BIGINT   NOT NULL,       -- Unix ms
    PRIMARY KEY (ad_account_id, ingestion_source, lookback_period, source_platform)
);
",
    },
    Migration {
        version: 4,
        name: "audiences",
        // SQLite's MIGRATION_4.
        sql: "
-- What the scan of stored events learned about each member (hashed email or MAID) per ad
-- account. Times of activity are Unix seconds with 0 for never, so upserts take greatest().
CREATE TABLE audience_people (
    ad_account_id     TEXT     NOT NULL,
    kind              TEXT     NOT NULL,     -- email | maid
    hash              TEXT     NOT NULL,     -- SHA-256 hex as Pinterest receives it
    last_visit_at     BIGINT   NOT NULL DEFAULT 0,   -- Unix seconds, 0 = never
    last_view_at      BIGINT   NOT NULL DEFAULT 0,
    last_cart_at      BIGINT   NOT NULL DEFAULT 0,
    last_purchase_at  BIGINT   NOT NULL DEFAULT 0,
    PRIMARY KEY (ad_account_id, kind, hash)
);
CREATE TABLE audience_views (
    ad_account_id  TEXT     NOT NULL,
    kind           TEXT     NOT NULL,
    hash           TEXT     NOT NULL,
    product        TEXT     NOT NULL,        -- a content id, or category:<name>
    last_at        BIGINT   NOT NULL,        -- Unix seconds
    PRIMARY KEY (ad_account_id, kind, hash, product)
);
CREATE TABLE audience_purchases (
    ad_account_id  TEXT     NOT NULL,
    kind           TEXT     NOT NULL,
    hash           TEXT     NOT NULL,
    event_id       TEXT     NOT NULL,
    at             BIGINT   NOT NULL,        -- Unix seconds
    value          TEXT,                     -- decimal string
    PRIMARY KEY (ad_account_id, kind, hash, event_id)
);
-- Members forgotten on request: they never enter an audience again.
CREATE TABLE audience_suppressed (
    kind           TEXT     NOT NULL,
    hash           TEXT     NOT NULL,
    suppressed_at  BIGINT   NOT NULL,        -- Unix ms
    PRIMARY KEY (kind, hash)
);
CREATE TABLE audience_checkpoints (
    name        TEXT     PRIMARY KEY,
    checkpoint  BIGINT   NOT NULL,           -- Unix ms: newest received_at read
    updated_at  BIGINT   NOT NULL
);
-- The Pinterest objects kept per segment, and each customer list's synced members.
CREATE TABLE audience_objects (
    ad_account_id  TEXT     NOT NULL,
    segment        TEXT     NOT NULL,
    object         TEXT     NOT NULL,        -- list:email | list:maid | audience:email | ... | visitor | actalike
    pinterest_id   TEXT     NOT NULL,
    status         TEXT,
    updated_at     BIGINT   NOT NULL,        -- Unix ms
    PRIMARY KEY (ad_account_id, segment, object)
);
CREATE TABLE audience_members (
    ad_account_id  TEXT     NOT NULL,
    segment        TEXT     NOT NULL,
    kind           TEXT     NOT NULL,
    hash           TEXT     NOT NULL,
    PRIMARY KEY (ad_account_id, segment, kind, hash)
);
CREATE INDEX events_received ON events (received_at, id);
",
    },
    Migration {
        version: 5,
        name: "quality shards",
        // PostgreSQL only (SQLite has one writer): the hourly counts get a shard per
        // connection, so concurrent transactions stop queueing on the same few rows.
        sql: "
ALTER TABLE quality_hours ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE quality_hours DROP CONSTRAINT quality_hours_pkey;
ALTER TABLE quality_hours ADD PRIMARY KEY (hour, ad_account_id, event_name, shard);
",
    },
    Migration {
        version: 6,
        name: "credentials",
        sql: "
CREATE TABLE IF NOT EXISTS credentials (
    name        TEXT    PRIMARY KEY,        -- shopify:<domain>
    sealed      BYTEA   NOT NULL,           -- sealed with PINCAPI_SECRET_KEY (sealed.rs)
    updated_at  BIGINT  NOT NULL             -- Unix ms
);
CREATE TABLE IF NOT EXISTS oauth_states (
    state       TEXT    PRIMARY KEY,        -- one-time, random
    subject     TEXT    NOT NULL,           -- the shop's domain
    expires_at  BIGINT  NOT NULL             -- Unix ms
);
-- Shopify's customers/data_request: what was held about a customer when it was asked.
-- Hashes and ids only.
CREATE TABLE IF NOT EXISTS shopify_data_requests (
    shop         TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,          -- data_request.id, or the webhook id
    customer_id  TEXT,
    report       TEXT    NOT NULL,          -- JSON
    received_at  BIGINT  NOT NULL,            -- Unix ms
    PRIMARY KEY (shop, request_id)
);
",
    },
    Migration {
        version: 7,
        name: "shared call budgets",
        // Every instance takes its calls to Pinterest from one budget per ad account.
        sql: "
CREATE TABLE IF NOT EXISTS call_slots (
    id              BIGSERIAL PRIMARY KEY,
    ad_account_id   TEXT      NOT NULL,
    taken_at_ms     BIGINT    NOT NULL        -- Unix ms, the taking instance's clock
);
CREATE INDEX IF NOT EXISTS call_slots_account ON call_slots (ad_account_id, taken_at_ms);
",
    },
    Migration {
        version: 8,
        name: "room for in-place claims",
        // A claim rewrites a row in place (a HOT update) only when its page has room for the
        // new version. New pages of `events` are filled to half, so even a claim of every row
        // on a page finds room for each one's new version, instead of moving the row and
        // indexing it anew (at 70 %, a claim of 1000 fresh rows found room for 48 of every
        // 100). The old versions are pruned from the page when it is next visited. Existing
        // pages keep their fill. The cost: the `events` heap (not the payloads) takes up to
        // twice the pages.
        sql: "
ALTER TABLE events SET (fillfactor = 50);
",
    },
];

/// The newest version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema to [`latest`] and returns the version it is at.
pub async fn migrate(client: &mut Client, now_ms: i64) -> Result<i32, StoreError> {
    run(client, now_ms).await.map_err(PgError::into_store)
}

async fn run(client: &mut Client, now_ms: i64) -> Result<i32, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     INTEGER  PRIMARY KEY,
             name        TEXT     NOT NULL,
             applied_at  BIGINT   NOT NULL        -- Unix ms
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > latest() {
        return Err(StoreError::Unavailable(format!(
            "the store has schema version {current}, newer than this build ({})",
            latest()
        ))
        .into());
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &now_ms],
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "Applied a PostgreSQL migration"
        );
    }
    tx.commit().await?;
    Ok(latest())
}
