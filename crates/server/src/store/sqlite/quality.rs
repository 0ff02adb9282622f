//! Quality on SQLite: the aggregates written from a [`Tally`], and the reads behind the report.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::store::LedgerFlag;
use crate::store::tally::{
    QUALITY_COLUMNS, Tally, counts_from_row, counts_to_row, hour_upsert_parts,
};
use crate::store::{
    AlertState, CensusLookup, EqsScore, MissingOrder, QualityHour, QualityMessage, QualityStore,
    ShopifyTruth, Source, StoreError, TruthDay,
};
use pincapi_core::shopify::order_of_event_id;

#[async_trait]
impl QualityStore for SqliteStore {
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
        ad_account_id: Option<String>,
    ) -> Result<ShopifyTruth, StoreError> {
        let account = ad_account_id.unwrap_or_default();
        self.read(move |conn| {
            let mut days: Vec<TruthDay> = conn
                .prepare_cached(
                    "SELECT (created_at / 86400) * 86400 AS day, count(*), sum(delivered),
                            sum(browser_seen),
                            sum(CASE WHEN delivered = 1 AND browser_seen = 0 THEN 1 ELSE 0 END)
                     FROM shopify_orders
                     WHERE test = 0 AND outcome <> 'ignored' AND created_at >= ?1 AND created_at < ?2
                         AND (?3 = '' OR ad_account_id = ?3)
                     GROUP BY (created_at / 86400) * 86400 ORDER BY day",
                )?
                .query_map(params![since, until, account], |r| {
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
                     AND (?3 = '' OR ad_account_id = ?3)
                 GROUP BY (created_at / 86400) * 86400, coalesce(reason, '') ORDER BY 1, 3 DESC",
            )?;
            let skipped = stmt.query_map(params![since, until, account], |r| {
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
                         AND (?4 = '' OR ad_account_id = ?4)
                     ORDER BY created_at, order_id LIMIT ?3",
                )?
                .query_map(params![since, until, missing_limit as i64, account], |r| {
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
                    pincapi_core::shopify::event_id_of_order(&order_id),
                    Source::BROWSER_BITS
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
}

/// Adds a job's counts to `quality_hours`: plain column arithmetic in a standard UPSERT.
static UPSERT_HOUR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let [columns, placeholders, sums] = hour_upsert_parts(4, '?', "quality_hours");
    format!(
        "INSERT INTO quality_hours (hour, ad_account_id, event_name, {columns}, lag_max)
         VALUES (?1, ?2, ?3, {placeholders})
         ON CONFLICT (hour, ad_account_id, event_name) DO UPDATE SET {sums},
             lag_max = CASE WHEN excluded.lag_max > quality_hours.lag_max
                            THEN excluded.lag_max ELSE quality_hours.lag_max END"
    )
});

/// Writes a transaction's counts: one upsert per (hour, ad account, event name) and per message.
pub(super) fn flush(conn: &Connection, tally: Tally) -> Result<(), StoreError> {
    if !tally.hours.is_empty() {
        let mut stmt = conn.prepare_cached(&UPSERT_HOUR)?;
        for (hour, account, name, counts) in &tally.hours {
            let row = counts_to_row(counts);
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![hour, account, name];
            values.extend(row.iter().map(|v| v as &dyn rusqlite::ToSql));
            values.push(&counts.lag_max);
            stmt.execute(values.as_slice())?;
        }
    }
    if !tally.messages.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO quality_messages (day, ad_account_id, kind, message, count)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day, ad_account_id, kind, message)
             DO UPDATE SET count = quality_messages.count + excluded.count",
        )?;
        for ((day, account, kind, message), n) in &tally.messages {
            stmt.execute(params![day, account, kind, message, n])?;
        }
    }
    Ok(())
}

/// If `event_id` is a Shopify order's purchase, sets `flag` on its ledger row.
pub(super) fn mark_order(
    conn: &Connection,
    account: &str,
    event_id: &str,
    flag: LedgerFlag,
) -> Result<(), StoreError> {
    let Some(order_id) = order_of_event_id(event_id) else {
        return Ok(());
    };
    let sql = match flag {
        LedgerFlag::BrowserSeen => {
            "UPDATE shopify_orders SET browser_seen = 1
             WHERE order_id = ?1 AND ad_account_id = ?2 AND browser_seen = 0"
        }
        LedgerFlag::Delivered => {
            "UPDATE shopify_orders SET delivered = 1
             WHERE order_id = ?1 AND ad_account_id = ?2 AND delivered = 0"
        }
    };
    conn.prepare_cached(sql)?
        .execute(params![order_id, account])?;
    Ok(())
}
