//! Erasure and disclosure on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::SqliteStore;
use crate::store::{
    Compliance, DataRequest, DataRequestRow, REDACTED_DROPPED, RedactReport, Redaction, StoreError,
};
use pincapi_core::redact::scrub_identifiers;

#[async_trait]
impl Compliance for SqliteStore {
    async fn redact_customer(&self, r: Redaction) -> Result<RedactReport, StoreError> {
        let report = self
            .write(move |conn| {
                let mut report = RedactReport::default();
                let hashes: Vec<String> = r.hashes.iter().map(|h| h.to_ascii_lowercase()).collect();
                for hash in &hashes {
                    // Hashes are hex: no LIKE wildcard in them. Rare requests: a scan is fine.
                    let found = select(
                        conn,
                        "SELECT p.id, p.body, e.state FROM payloads p JOIN events e ON e.id = p.id
                     WHERE p.body LIKE '%' || ?1 || '%'",
                        hash,
                    )?;
                    scrub(conn, found, &hashes, false, &mut report)?;
                    for table in ["audience_people", "audience_views", "audience_purchases"] {
                        report.audience_rows += conn.execute(
                            &format!("DELETE FROM {table} WHERE hash = ?1"),
                            params![hash],
                        )? as u64;
                    }
                    conn.execute(
                        "DELETE FROM shopify_data_requests WHERE report LIKE '%' || ?1 || '%'",
                        params![hash],
                    )?;
                }
                for event_id in &r.order_event_ids {
                    let found = select(
                        conn,
                        "SELECT p.id, p.body, e.state FROM events e JOIN payloads p ON p.id = e.id
                     WHERE e.event_id = ?1",
                        event_id,
                    )?;
                    scrub(conn, found, &hashes, true, &mut report)?;
                }
                Ok(report)
            })
            .await?;
        // `secure_delete` zeroed what was overwritten in the file; the WAL's older frames
        // still hold it until it is emptied.
        self.checkpoint_truncate().await;
        Ok(report)
    }

    async fn forget_shop(&self, shop: &str) -> Result<RedactReport, StoreError> {
        let shop = shop.to_owned();
        let report = self
            .write(move |conn| {
                let mut report = RedactReport::default();
                let event_ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT event_id FROM shopify_orders WHERE shop = ?1 AND event_id IS NOT NULL",
                )?
                .query_map(params![shop], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
                for event_id in &event_ids {
                    let found = select(
                        conn,
                        "SELECT p.id, p.body, e.state FROM events e JOIN payloads p ON p.id = e.id
                     WHERE e.event_id = ?1",
                        event_id,
                    )?;
                    scrub(conn, found, &[], true, &mut report)?;
                }
                for table in [
                    "shopify_deliveries",
                    "shopify_orders",
                    "shopify_adjustments",
                    "shopify_checkpoints",
                    "shopify_data_requests",
                ] {
                    report.shop_rows += conn.execute(
                        &format!("DELETE FROM {table} WHERE shop = ?1"),
                        params![shop],
                    )? as u64;
                }
                report.shop_rows += conn.execute(
                    "DELETE FROM credentials WHERE name = 'shopify:' || ?1",
                    params![shop],
                )? as u64;
                Ok(report)
            })
            .await?;
        self.checkpoint_truncate().await;
        Ok(report)
    }

    async fn record_data_request(&self, r: DataRequest) -> Result<DataRequestRow, StoreError> {
        self.write(move |conn| {
            let hashes: Vec<String> = r.hashes.iter().map(|h| h.to_ascii_lowercase()).collect();
            let mut events = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut add = |conn: &Connection, sql: &str, arg: &str| -> Result<(), StoreError> {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(params![arg])?;
                while let Some(row) = rows.next()? {
                    let id: i64 = row.get(0)?;
                    if seen.insert(id) {
                        events.push(json!({
                            "ad_account_id": row.get::<_, String>(1)?,
                            "event_id": row.get::<_, String>(2)?,
                            "event_name": row.get::<_, String>(3)?,
                            "state": row.get::<_, String>(4)?,
                            "sent_at_ms": row.get::<_, Option<i64>>(5)?,
                        }));
                    }
                }
                Ok(())
            };
            for hash in &hashes {
                add(
                    conn,
                    "SELECT e.id, e.ad_account_id, e.event_id, e.event_name, e.state, e.sent_at
                     FROM payloads p JOIN events e ON e.id = p.id
                     WHERE p.body LIKE '%' || ?1 || '%'",
                    hash,
                )?;
            }
            for event_id in &r.order_event_ids {
                add(
                    conn,
                    "SELECT id, ad_account_id, event_id, event_name, state, sent_at FROM events
                     WHERE event_id = ?1",
                    event_id,
                )?;
            }
            let mut orders = Vec::new();
            for event_id in &r.order_event_ids {
                let mut stmt = conn.prepare_cached(
                    "SELECT order_id, ad_account_id, created_at, outcome, reason FROM shopify_orders
                     WHERE shop = ?1 AND event_id = ?2",
                )?;
                let mut rows = stmt.query(params![r.shop, event_id])?;
                while let Some(row) = rows.next()? {
                    orders.push(json!({
                        "order_id": row.get::<_, String>(0)?,
                        "ad_account_id": row.get::<_, String>(1)?,
                        "created_at": row.get::<_, i64>(2)?,
                        "outcome": row.get::<_, String>(3)?,
                        "reason": row.get::<_, Option<String>>(4)?,
                    }));
                }
            }
            let report = json!({"hashes": hashes, "orders": orders, "events": events});
            conn.prepare_cached(
                "INSERT INTO shopify_data_requests (shop, request_id, customer_id, report, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (shop, request_id) DO UPDATE SET report = excluded.report,
                     received_at = excluded.received_at",
            )?
            .execute(params![
                r.shop,
                r.request_id,
                r.customer_id,
                report.to_string(),
                r.received_at_ms
            ])?;
            Ok(DataRequestRow {
                shop: r.shop,
                request_id: r.request_id,
                customer_id: r.customer_id,
                received_at_ms: r.received_at_ms,
                report,
            })
        })
        .await
    }

    async fn data_requests(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<Vec<DataRequestRow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT shop, request_id, customer_id, report, received_at
                 FROM shopify_data_requests WHERE ?1 IS NULL OR shop = ?1
                 ORDER BY received_at DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![shop, limit as i64], |r| {
                Ok(DataRequestRow {
                    shop: r.get(0)?,
                    request_id: r.get(1)?,
                    customer_id: r.get(2)?,
                    report: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
                    received_at_ms: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn select(
    conn: &Connection,
    sql: &str,
    arg: &str,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params![arg], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?)
}

fn scrub(
    conn: &Connection,
    found: Vec<(i64, String, String)>,
    hashes: &[String],
    everything: bool,
    report: &mut RedactReport,
) -> Result<(), StoreError> {
    for (id, body, state) in found {
        let Some(scrubbed) = scrub_identifiers(&body, hashes, everything) else {
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
            .execute(params![id, REDACTED_DROPPED])?;
            report.events_dropped += 1;
        }
    }
    Ok(())
}
