//! The SQLite schema: numbered migrations recorded in `PRAGMA user_version`.

use rusqlite::Connection;

use crate::store::StoreError;

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 5;

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

// --- Credentials ---
/// Sealed credentials, OAuth states, and Shopify's data requests.
const MIGRATION_5: &str = "
CREATE TABLE IF NOT EXISTS credentials (
    name        TEXT    PRIMARY KEY,        -- shopify:<domain>
    sealed      BLOB   NOT NULL,           -- sealed with PINCAPI_SECRET_KEY (sealed.rs)
    updated_at  INTEGER NOT NULL             -- Unix ms
);
CREATE TABLE IF NOT EXISTS oauth_states (
    state       TEXT    PRIMARY KEY,        -- one-time, random
    subject     TEXT    NOT NULL,           -- the shop's domain
    expires_at  INTEGER NOT NULL             -- Unix ms
);
-- Shopify's customers/data_request: what was held about a customer when it was asked.
-- Hashes and ids only.
CREATE TABLE IF NOT EXISTS shopify_data_requests (
    shop         TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,          -- data_request.id, or the webhook id
    customer_id  TEXT,
    report       TEXT    NOT NULL,          -- JSON
    received_at  INTEGER NOT NULL,            -- Unix ms
    PRIMARY KEY (shop, request_id)
);
";

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
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
    if version < 5 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATION_5} PRAGMA user_version = 5; COMMIT;"
        ))?;
    }
    Ok(())
}
