//! Quality on PostgreSQL: the aggregates and the order ledger's flags, written in the
//! transaction of the writes they count (as SQLite does, with the same [`Tally`]), and read
//! back for the report, the dashboard and the alerts.
//!
//! Lock order: a transaction touches the aggregate rows last, after every event and ledger
//! row it changes, and upserts them in key order ((hour, ad account, event name), then
//! (day, ad account, kind, message)). Two instances counting into the same rows therefore wait
//! on each other in one order and never deadlock on them; the wait lasts until the commit.
//! The hourly rows are sharded by connection (see [`SHARDS`]), so such waits are rare.

use super::PostgresStore;
use crate::store::{CensusLookup, QualityStore, StoreError};
use crate::store::{LedgerFlag, Source};
use async_trait::async_trait;

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{PgError, execute, query};
use crate::store::tally::{
    QUALITY_COLUMNS, Tally, counts_from_row, counts_to_row, hour_upsert_parts,
};
use crate::store::{
    AlertState, EqsScore, MissingOrder, QualityHour, QualityMessage, ShopifyTruth, TruthDay,
};

/// Rows per (hour, ad account, event name): each connection counts into the shard of its
/// backend's pid, so transactions of different connections do not queue on one hot row until
/// each other's commit (every event of an hour and account counts into the same few keys).
/// Readers add the shards up.
const SHARDS: i32 = 16;

/// Adds a tally's counts to `quality_hours`: one upsert per (hour, ad account, event name), in
/// the connection's shard.
static UPSERT_HOUR: LazyLock<String> = LazyLock::new(|| {
    let [columns, placeholders, sums] = hour_upsert_parts(4, '$', "q");
    format!(
        "INSERT INTO quality_hours AS q (hour, ad_account_id, event_name, shard, {columns}, lag_max)
         VALUES ($1, $2, $3, (pg_backend_pid() % {SHARDS})::smallint, {placeholders})
         ON CONFLICT (hour, ad_account_id, event_name, shard) DO UPDATE SET {sums},
             lag_max = greatest(q.lag_max, excluded.lag_max)"
    )
});

/// Writes a tally in the caller's transaction, in key order (see the module's notes).
pub(super) async fn flush<C: GenericClient + Sync>(c: &C, tally: Tally) -> Result<(), PgError> {
    let Tally {
        mut hours,
        messages,
    } = tally;
    hours.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
    for (hour, account, name, counts) in &hours {
        let row = counts_to_row(counts);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![hour, account, name];
        values.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
        values.push(&counts.lag_max);
        execute(c, &UPSERT_HOUR, &values).await?;
    }
    let mut messages: Vec<_> = messages.into_iter().collect();
    messages.sort();
    for ((day, account, kind, message), n) in &messages {
        execute(
            c,
            "INSERT INTO quality_messages AS m (day, ad_account_id, kind, message, count)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (day, ad_account_id, kind, message)
             DO UPDATE SET count = m.count + excluded.count",
            &[day, account, kind, message, n],
        )
        .await?;
    }
    Ok(())
}

/// If `event_id` is a Shopify order's purchase (`order-<id>`), sets `flag` on its ledger row.
pub(super) async fn mark_order<C: GenericClient + Sync>(
    c: &C,
    account: &str,
    event_id: &str,
    flag: LedgerFlag,
) -> Result<(), PgError> {
    let Some(order_id) = pincapi_core::shopify::order_of_event_id(event_id) else {
        return Ok(());
    };
    let sql = match flag {
        LedgerFlag::BrowserSeen => {
            "UPDATE shopify_orders SET browser_seen = true
             WHERE order_id = $1 AND ad_account_id = $2 AND NOT browser_seen"
        }
        LedgerFlag::Delivered => {
            "UPDATE shopify_orders SET delivered = true
             WHERE order_id = $1 AND ad_account_id = $2 AND NOT delivered"
        }
    };
    execute(c, sql, &[&order_id, &account]).await?;
    Ok(())
}

/// A ledger row just written: its flags from the order's purchase event, when the browser's
/// copy or the delivery came first.
pub(super) async fn ledger_flags_from_event<C: GenericClient + Sync>(
    c: &C,
    shop: &str,
    order_id: &str,
) -> Result<(), PgError> {
    execute(
        c,
        "UPDATE shopify_orders o SET
             browser_seen = o.browser_seen OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = o.ad_account_id AND e.event_id = $3
                     AND (e.sources & $4) <> 0),
             delivered = o.delivered OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = o.ad_account_id AND e.event_id = $3
                     AND e.state = 'delivered')
         WHERE o.shop = $1 AND o.order_id = $2",
        &[
            &shop,
            &order_id,
            &pincapi_core::shopify::event_id_of_order(order_id),
            &Source::BROWSER_BITS,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn hours<C: GenericClient + Sync>(
    c: &C,
    since_hour: i64,
) -> Result<Vec<QualityHour>, PgError> {
    static SELECT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT hour, ad_account_id, event_name, {}, max(lag_max) FROM quality_hours
             WHERE hour >= $1 GROUP BY hour, ad_account_id, event_name
             ORDER BY hour, ad_account_id, event_name",
            QUALITY_COLUMNS
                .iter()
                .map(|c| format!("sum({c})::bigint"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let rows = query(c, &SELECT, &[&since_hour]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut row = [0i64; QUALITY_COLUMNS.len()];
            for (i, v) in row.iter_mut().enumerate() {
                *v = r.get(3 + i);
            }
            QualityHour {
                hour: r.get(0),
                ad_account_id: r.get(1),
                event_name: r.get(2),
                counts: counts_from_row(&row, r.get(3 + QUALITY_COLUMNS.len())),
            }
        })
        .collect())
}

pub(super) async fn messages<C: GenericClient + Sync>(
    c: &C,
    since_day: i64,
) -> Result<Vec<QualityMessage>, PgError> {
    let rows = query(
        c,
        "SELECT day, ad_account_id, kind, message, count FROM quality_messages
         WHERE day >= $1 ORDER BY day, ad_account_id, kind, count DESC, message",
        &[&since_day],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| QualityMessage {
            day: r.get(0),
            ad_account_id: r.get(1),
            kind: r.get(2),
            message: r.get(3),
            count: r.get(4),
        })
        .collect())
}

pub(super) async fn shopify_truth<C: GenericClient + Sync>(
    c: &C,
    since: i64,
    until: i64,
    missing_limit: usize,
    account: &str,
) -> Result<ShopifyTruth, PgError> {
    // `count(*) FILTER` is a BIGINT, where `sum()` of a flag would need casts.
    let rows = query(
        c,
        "SELECT (created_at / 86400) * 86400 AS day, count(*),
                count(*) FILTER (WHERE delivered),
                count(*) FILTER (WHERE browser_seen),
                count(*) FILTER (WHERE delivered AND NOT browser_seen)
         FROM shopify_orders
         WHERE NOT test AND outcome <> 'ignored' AND created_at >= $1 AND created_at < $2
             AND ($3 = '' OR ad_account_id = $3)
         GROUP BY 1 ORDER BY 1",
        &[&since, &until, &account],
    )
    .await?;
    let mut days: Vec<TruthDay> = rows
        .iter()
        .map(|r| TruthDay {
            day: r.get(0),
            orders: r.get(1),
            delivered: r.get(2),
            browser_seen: r.get(3),
            recovered: r.get(4),
            skipped: Vec::new(),
        })
        .collect();
    let rows = query(
        c,
        "SELECT (created_at / 86400) * 86400 AS day, coalesce(reason, ''), count(*)
         FROM shopify_orders
         WHERE NOT test AND outcome = 'skipped' AND created_at >= $1 AND created_at < $2
             AND ($3 = '' OR ad_account_id = $3)
         GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2",
        &[&since, &until, &account],
    )
    .await?;
    for r in &rows {
        let day: i64 = r.get(0);
        if let Some(d) = days.iter_mut().find(|d| d.day == day) {
            d.skipped.push((r.get(1), r.get(2)));
        }
    }
    let rows = query(
        c,
        "SELECT shop, order_id, ad_account_id, created_at, outcome, reason
         FROM shopify_orders
         WHERE NOT test AND outcome <> 'ignored' AND NOT delivered
             AND created_at >= $1 AND created_at < $2
             AND ($4 = '' OR ad_account_id = $4)
         ORDER BY created_at, order_id LIMIT $3",
        &[&since, &until, &(missing_limit as i64), &account],
    )
    .await?;
    let missing = rows
        .iter()
        .map(|r| MissingOrder {
            shop: r.get(0),
            order_id: r.get(1),
            ad_account_id: r.get(2),
            created_at: r.get(3),
            outcome: r.get(4),
            reason: r.get(5),
        })
        .collect();
    Ok(ShopifyTruth { days, missing })
}

pub(super) async fn alert_states<C: GenericClient + Sync>(
    c: &C,
) -> Result<Vec<AlertState>, PgError> {
    let rows = query(
        c,
        "SELECT rule, ad_account_id, active, detail, fired_at, cleared_at
         FROM alert_states ORDER BY rule, ad_account_id",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| AlertState {
            rule: r.get(0),
            ad_account_id: r.get(1),
            active: r.get(2),
            detail: r.get(3),
            fired_at_ms: r.get(4),
            cleared_at_ms: r.get(5),
        })
        .collect())
}

pub(super) async fn save_alert_state<C: GenericClient + Sync>(
    c: &C,
    s: &AlertState,
) -> Result<(), PgError> {
    execute(
        c,
        "INSERT INTO alert_states (rule, ad_account_id, active, detail, fired_at, cleared_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (rule, ad_account_id) DO UPDATE SET
             active = excluded.active, detail = excluded.detail,
             fired_at = excluded.fired_at, cleared_at = excluded.cleared_at",
        &[
            &s.rule,
            &s.ad_account_id,
            &s.active,
            &s.detail,
            &s.fired_at_ms,
            &s.cleared_at_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Stores scores in the caller's transaction, in key order (two pollers of one account
/// cannot deadlock).
pub(super) async fn save_eqs<C: GenericClient + Sync>(
    c: &C,
    scores: &[EqsScore],
) -> Result<(), PgError> {
    let mut sorted: Vec<&EqsScore> = scores.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |e: &&EqsScore| {
            (
                e.ad_account_id.clone(),
                e.ingestion_source.clone(),
                e.lookback_period.clone(),
                e.source_platform.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    for e in sorted {
        execute(
            c,
            "INSERT INTO eqs_scores (ad_account_id, ingestion_source, lookback_period,
                 source_platform, overall_status, quality_components, polled_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (ad_account_id, ingestion_source, lookback_period, source_platform)
             DO UPDATE SET overall_status = excluded.overall_status,
                 quality_components = excluded.quality_components,
                 polled_at = excluded.polled_at",
            &[
                &e.ad_account_id,
                &e.ingestion_source,
                &e.lookback_period,
                &e.source_platform,
                &e.overall_status,
                &e.quality_components.to_string(),
                &e.polled_at_ms,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn eqs_scores<C: GenericClient + Sync>(c: &C) -> Result<Vec<EqsScore>, PgError> {
    let rows = query(
        c,
        "SELECT ad_account_id, ingestion_source, lookback_period, source_platform,
                overall_status, quality_components, polled_at
         FROM eqs_scores ORDER BY 1, 2, 3, 4",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let components: &str = r.get(5);
            EqsScore {
                ad_account_id: r.get(0),
                ingestion_source: r.get(1),
                lookback_period: r.get(2),
                source_platform: r.get(3),
                overall_status: r.get(4),
                quality_components: serde_json::from_str(components)
                    .unwrap_or(serde_json::Value::Null),
                polled_at_ms: r.get(6),
            }
        })
        .collect())
}

#[async_trait]
impl QualityStore for PostgresStore {
    async fn quality_hours(&self, since_hour: i64) -> Result<Vec<QualityHour>, StoreError> {
        let client = self.client().await?;
        hours(&client, since_hour)
            .await
            .map_err(PgError::into_store)
    }

    async fn quality_messages(&self, since_day: i64) -> Result<Vec<QualityMessage>, StoreError> {
        let client = self.client().await?;
        messages(&client, since_day)
            .await
            .map_err(PgError::into_store)
    }

    async fn shopify_truth(
        &self,
        since: i64,
        until: i64,
        missing_limit: usize,
        ad_account_id: Option<String>,
    ) -> Result<ShopifyTruth, StoreError> {
        let client = self.client().await?;
        let account = ad_account_id.unwrap_or_default();
        shopify_truth(&client, since, until, missing_limit, &account)
            .await
            .map_err(PgError::into_store)
    }

    async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError> {
        let client = self.client().await?;
        alert_states(&client).await.map_err(PgError::into_store)
    }

    async fn save_alert_state(&self, state: AlertState) -> Result<(), StoreError> {
        let client = self.client().await?;
        save_alert_state(&client, &state)
            .await
            .map_err(PgError::into_store)
    }

    async fn save_eqs(&self, scores: Vec<EqsScore>) -> Result<(), StoreError> {
        if scores.is_empty() {
            return Ok(());
        }
        in_transaction!(self, |tx| save_eqs(&tx, &scores).await?)
    }

    async fn eqs_scores(&self) -> Result<Vec<EqsScore>, StoreError> {
        let client = self.client().await?;
        eqs_scores(&client).await.map_err(PgError::into_store)
    }

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
                &[&shop, &ad_account_id, &order_ids, &Source::BROWSER_BITS],
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
}
