//! Erasure and disclosure on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::{Value, json};

use super::{PgError, PostgresStore, execute, query};
use crate::store::{
    Compliance, DataRequest, DataRequestRow, REDACTED_DROPPED, RedactReport, Redaction, StoreError,
};
use pincapi_core::redact::scrub_identifiers;

#[async_trait]
impl Compliance for PostgresStore {
    async fn redact_customer(&self, r: Redaction) -> Result<RedactReport, StoreError> {
        let hashes: Vec<String> = r.hashes.iter().map(|h| h.to_ascii_lowercase()).collect();
        in_transaction!(self, |tx| {
            let mut report = RedactReport::default();
            for hash in &hashes {
                let rows = query(
                    &tx,
                    "SELECT p.id, p.body, e.state FROM payloads p JOIN events e ON e.id = p.id
                     WHERE strpos(p.body, $1) > 0 ORDER BY p.id FOR UPDATE OF e, p",
                    &[hash],
                )
                .await?;
                scrub(&tx, &rows, &hashes, false, &mut report).await?;
                for sql in [
                    "DELETE FROM audience_people WHERE hash = $1",
                    "DELETE FROM audience_views WHERE hash = $1",
                    "DELETE FROM audience_purchases WHERE hash = $1",
                ] {
                    report.audience_rows += execute(&tx, sql, &[hash]).await?;
                }
                execute(
                    &tx,
                    "DELETE FROM shopify_data_requests WHERE strpos(report, $1) > 0",
                    &[hash],
                )
                .await?;
            }
            for event_id in &r.order_event_ids {
                let rows = query(
                    &tx,
                    "SELECT p.id, p.body, e.state FROM events e JOIN payloads p ON p.id = e.id
                     WHERE e.event_id = $1 ORDER BY p.id FOR UPDATE OF e, p",
                    &[event_id],
                )
                .await?;
                scrub(&tx, &rows, &hashes, true, &mut report).await?;
            }
            report
        })
    }

    async fn forget_shop(&self, shop: &str) -> Result<RedactReport, StoreError> {
        in_transaction!(self, |tx| {
            let mut report = RedactReport::default();
            let ids = query(
                &tx,
                "SELECT event_id FROM shopify_orders WHERE shop = $1 AND event_id IS NOT NULL",
                &[&shop],
            )
            .await?;
            for row in &ids {
                let event_id: &str = row.get(0);
                let rows = query(
                    &tx,
                    "SELECT p.id, p.body, e.state FROM events e JOIN payloads p ON p.id = e.id
                     WHERE e.event_id = $1 ORDER BY p.id FOR UPDATE OF e, p",
                    &[&event_id],
                )
                .await?;
                scrub(&tx, &rows, &[], true, &mut report).await?;
            }
            for sql in [
                "DELETE FROM shopify_deliveries WHERE shop = $1",
                "DELETE FROM shopify_orders WHERE shop = $1",
                "DELETE FROM shopify_adjustments WHERE shop = $1",
                "DELETE FROM shopify_checkpoints WHERE shop = $1",
                "DELETE FROM shopify_data_requests WHERE shop = $1",
                "DELETE FROM credentials WHERE name = 'shopify:' || $1",
            ] {
                report.shop_rows += execute(&tx, sql, &[&shop]).await?;
            }
            report
        })
    }

    async fn record_data_request(&self, r: DataRequest) -> Result<DataRequestRow, StoreError> {
        let hashes: Vec<String> = r.hashes.iter().map(|h| h.to_ascii_lowercase()).collect();
        let client = self.client().await?;
        let built: Result<Value, PgError> = async {
            let mut events = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut rows = Vec::new();
            for hash in &hashes {
                rows.extend(
                    query(
                        &client,
                        "SELECT e.id, e.ad_account_id, e.event_id, e.event_name, e.state, e.sent_at
                         FROM payloads p JOIN events e ON e.id = p.id WHERE strpos(p.body, $1) > 0",
                        &[hash],
                    )
                    .await?,
                );
            }
            for event_id in &r.order_event_ids {
                rows.extend(
                    query(
                        &client,
                        "SELECT id, ad_account_id, event_id, event_name, state, sent_at FROM events
                         WHERE event_id = $1",
                        &[event_id],
                    )
                    .await?,
                );
            }
            for row in &rows {
                let id: i64 = row.get(0);
                if seen.insert(id) {
                    events.push(json!({
                        "ad_account_id": row.get::<_, String>(1),
                        "event_id": row.get::<_, String>(2),
                        "event_name": row.get::<_, String>(3),
                        "state": row.get::<_, String>(4),
                        "sent_at_ms": row.get::<_, Option<i64>>(5),
                    }));
                }
            }
            let mut orders = Vec::new();
            for event_id in &r.order_event_ids {
                for row in query(
                    &client,
                    "SELECT order_id, ad_account_id, created_at, outcome, reason FROM shopify_orders
                     WHERE shop = $1 AND event_id = $2",
                    &[&r.shop, event_id],
                )
                .await?
                {
                    orders.push(json!({
                        "order_id": row.get::<_, String>(0),
                        "ad_account_id": row.get::<_, String>(1),
                        "created_at": row.get::<_, i64>(2),
                        "outcome": row.get::<_, String>(3),
                        "reason": row.get::<_, Option<String>>(4),
                    }));
                }
            }
            let report = json!({"hashes": hashes, "orders": orders, "events": events});
            execute(
                &client,
                "INSERT INTO shopify_data_requests (shop, request_id, customer_id, report, received_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (shop, request_id) DO UPDATE SET report = excluded.report,
                     received_at = excluded.received_at",
                &[&r.shop, &r.request_id, &r.customer_id, &report.to_string(), &r.received_at_ms],
            )
            .await?;
            Ok(report)
        }
        .await;
        let report = built.map_err(PgError::into_store)?;
        Ok(DataRequestRow {
            shop: r.shop,
            request_id: r.request_id,
            customer_id: r.customer_id,
            received_at_ms: r.received_at_ms,
            report,
        })
    }

    async fn data_requests(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<Vec<DataRequestRow>, StoreError> {
        let rows = self
            .query(
                "SELECT shop, request_id, customer_id, report, received_at
                 FROM shopify_data_requests WHERE $1::TEXT IS NULL OR shop = $1
                 ORDER BY received_at DESC LIMIT $2",
                &[&shop, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DataRequestRow {
                shop: r.get(0),
                request_id: r.get(1),
                customer_id: r.get(2),
                report: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null),
                received_at_ms: r.get(4),
            })
            .collect())
    }
}

async fn scrub<C: GenericClient + Sync>(
    c: &C,
    rows: &[tokio_postgres::Row],
    hashes: &[String],
    everything: bool,
    report: &mut RedactReport,
) -> Result<(), PgError> {
    for r in rows {
        let id: i64 = r.get(0);
        let body: &str = r.get(1);
        let state: &str = r.get(2);
        let Some(scrubbed) = scrub_identifiers(body, hashes, everything) else {
            continue;
        };
        execute(
            c,
            "UPDATE payloads SET body = $2 WHERE id = $1",
            &[&id, &scrubbed.payload],
        )
        .await?;
        report.events_scrubbed += 1;
        if !scrubbed.sendable && matches!(state, "pending" | "dead") {
            execute(
                c,
                "UPDATE events SET state = 'dropped', last_error = $2, lease_until = NULL
                 WHERE id = $1",
                &[&id, &REDACTED_DROPPED],
            )
            .await?;
            report.events_dropped += 1;
        }
    }
    Ok(())
}
