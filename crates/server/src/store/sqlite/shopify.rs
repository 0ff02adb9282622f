//! The Shopify source's tables on SQLite: deliveries, the order ledger and its flags.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::queue::insert_event;
use crate::store::tally::Tally;
use crate::store::{
    OrderStatus, ShopifyAdjustment, ShopifyAdjustmentRow, ShopifyLedger, ShopifyOrder,
    ShopifyOrderRow, ShopifyRecord, ShopifyStore, ShopifyStored, Source, StoreError,
    TEST_ORDER_DROPPED, TestOrderCopy,
};
use pincapi_core::shopify::event_id_of_order;

#[async_trait]
impl ShopifyStore for SqliteStore {
    async fn record_shopify(
        &self,
        records: Vec<ShopifyRecord>,
    ) -> Result<Vec<ShopifyStored>, StoreError> {
        self.room_for_new_data()?;
        self.write_counted(move |conn, tally| {
            // One job, so one savepoint: a failure leaves nothing of any record behind.
            records
                .iter()
                .map(|r| shopify_record(conn, r, tally))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    async fn shopify_activity(&self) -> Result<Vec<crate::store::ShopActivity>, StoreError> {
        self.read(|conn| {
            let pairs = |sql: &str| -> Result<Vec<(String, i64)>, StoreError> {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            };
            Ok(crate::store::shopify::merge_activity(
                pairs("SELECT shop, max(received_at) FROM shopify_deliveries GROUP BY shop")?,
                pairs("SELECT shop, updated_at FROM shopify_checkpoints")?,
            ))
        })
        .await
    }

    async fn shopify_checkpoint(&self, shop: &str) -> Result<Option<i64>, StoreError> {
        let shop = shop.to_owned();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT checkpoint FROM shopify_checkpoints WHERE shop = ?1")?;
            let mut rows = stmt.query(params![shop])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn advance_shopify_checkpoint(
        &self,
        shop: &str,
        at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let shop = shop.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO shopify_checkpoints (shop, checkpoint, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (shop) DO UPDATE SET
                     checkpoint = max(checkpoint, excluded.checkpoint),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![shop, at, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn shopify_ledger(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<ShopifyLedger, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT shop, order_id, ad_account_id, created_at, test, value, currency,
                        source_name, outcome, reason, event_id, sources
                 FROM shopify_orders WHERE ?1 IS NULL OR shop = ?1
                 ORDER BY created_at DESC, order_id DESC LIMIT ?2",
            )?;
            let orders = stmt
                .query_map(params![shop, limit as i64], |r| {
                    let sources = Source::from_bits(r.get(11)?);
                    Ok(ShopifyOrderRow {
                        shop: r.get(0)?,
                        order: ShopifyOrder {
                            order_id: r.get(1)?,
                            ad_account_id: r.get(2)?,
                            created_at: r.get(3)?,
                            test: r.get(4)?,
                            value: r.get(5)?,
                            currency: r.get(6)?,
                            source_name: r.get(7)?,
                            outcome: OrderStatus::parse(&r.get::<_, String>(8)?),
                            reason: r.get(9)?,
                            event_id: r.get(10)?,
                            source: sources.first().copied().unwrap_or(Source::Webhook),
                        },
                        sources,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT shop, order_id, kind, at, amount, currency, reason, test
                 FROM shopify_adjustments WHERE ?1 IS NULL OR shop = ?1
                 ORDER BY at DESC, id DESC LIMIT ?2",
            )?;
            let adjustments = stmt
                .query_map(params![shop, limit as i64], |r| {
                    Ok(ShopifyAdjustmentRow {
                        shop: r.get(0)?,
                        adjustment: ShopifyAdjustment {
                            order_id: r.get(1)?,
                            kind: r.get(2)?,
                            at: r.get(3)?,
                            amount: r.get(4)?,
                            currency: r.get(5)?,
                            reason: r.get(6)?,
                            test: r.get(7)?,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ShopifyLedger {
                orders,
                adjustments,
            })
        })
        .await
    }

    async fn prune_webhook_receipts(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn.execute(
                "DELETE FROM shopify_deliveries WHERE received_at < ?1",
                params![before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

/// Stores one Shopify record (inside the job's savepoint, so all or nothing).
fn shopify_record(
    conn: &Connection,
    r: &ShopifyRecord,
    tally: &mut Tally,
) -> Result<ShopifyStored, StoreError> {
    if let Some(d) = &r.webhook {
        let n = conn
            .prepare_cached(
                "INSERT INTO shopify_deliveries (shop, webhook_id, topic, outcome, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (shop, webhook_id) DO NOTHING",
            )?
            .execute(params![
                r.shop,
                d.webhook_id,
                d.topic,
                d.answer,
                r.received_at_ms
            ])?;
        if n == 0 {
            return Ok(ShopifyStored::DuplicateWebhook);
        }
    }
    let enqueued = match &r.event {
        Some(e) => Some(insert_event(conn, e, tally)?),
        None => None,
    };
    if let Some(t) = &r.test_order {
        browser_copy_of_test_order(conn, t)?;
    }
    if let Some(o) = &r.order {
        conn.prepare_cached(
            "INSERT INTO shopify_orders (shop, order_id, ad_account_id, created_at, test, value,
                 currency, source_name, outcome, reason, event_id, sources, first_seen_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
             ON CONFLICT (shop, order_id) DO UPDATE SET
                 sources = sources | excluded.sources,
                 updated_at = excluded.updated_at,
                 event_id = coalesce(event_id, excluded.event_id),
                 ad_account_id = CASE WHEN outcome = 'sent' THEN ad_account_id
                                      ELSE excluded.ad_account_id END,
                 created_at = CASE WHEN outcome = 'sent' THEN created_at
                                   ELSE excluded.created_at END,
                 test = CASE WHEN outcome = 'sent' THEN test ELSE excluded.test END,
                 value = CASE WHEN outcome = 'sent' THEN value ELSE excluded.value END,
                 currency = CASE WHEN outcome = 'sent' THEN currency ELSE excluded.currency END,
                 source_name = CASE WHEN outcome = 'sent' THEN source_name
                                    ELSE excluded.source_name END,
                 reason = CASE WHEN outcome = 'sent' THEN reason ELSE excluded.reason END,
                 outcome = CASE WHEN outcome = 'sent' THEN outcome ELSE excluded.outcome END",
        )?
        .execute(params![
            r.shop,
            o.order_id,
            o.ad_account_id,
            o.created_at,
            o.test,
            o.value,
            o.currency,
            o.source_name,
            o.outcome.as_str(),
            o.reason,
            o.event_id,
            o.source.bit(),
            r.received_at_ms,
        ])?;
        ledger_flags_from_event(conn, &r.shop, &o.order_id)?;
    }
    if let Some(a) = &r.adjustment {
        conn.prepare_cached(
            "INSERT INTO shopify_adjustments (shop, order_id, kind, at, amount, currency, reason,
                 test, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.shop,
            a.order_id,
            a.kind,
            a.at,
            a.amount,
            a.currency,
            a.reason,
            a.test,
            r.received_at_ms,
        ])?;
    }
    Ok(ShopifyStored::Stored(enqueued))
}

/// A Shopify test order: the browser's copy of its purchase, while it waits unsent (pending
/// and not claimed), is flagged as a test (`send_as_test`; the shop's own copy may have just
/// merged into it) or dropped (`ignore`; only a copy the browser reported, never one from the
/// shop's own API).
fn browser_copy_of_test_order(conn: &Connection, t: &TestOrderCopy) -> Result<(), StoreError> {
    if t.send_as_test {
        conn.prepare_cached(
            "UPDATE events SET test = 1
             WHERE ad_account_id = ?1 AND event_id = ?2 AND state = 'pending'
                 AND lease_until IS NULL",
        )?
        .execute(params![t.ad_account_id, t.event_id])?;
    } else {
        conn.prepare_cached(
            "UPDATE events SET state = 'dropped', last_error = ?3
             WHERE ad_account_id = ?1 AND event_id = ?2 AND state = 'pending'
                 AND lease_until IS NULL AND source IN ('collector', 'tag_mirror')",
        )?
        .execute(params![t.ad_account_id, t.event_id, TEST_ORDER_DROPPED])?;
    }
    Ok(())
}

/// A ledger row just written: its flags from the order's purchase event, when the browser's
/// copy or the delivery came first.
fn ledger_flags_from_event(
    conn: &Connection,
    shop: &str,
    order_id: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE shopify_orders SET
             browser_seen = CASE WHEN browser_seen = 1 OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = shopify_orders.ad_account_id
                     AND e.event_id = ?3 AND (e.sources & ?4) <> 0) THEN 1 ELSE 0 END,
             delivered = CASE WHEN delivered = 1 OR EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.ad_account_id = shopify_orders.ad_account_id
                     AND e.event_id = ?3 AND e.state = 'delivered') THEN 1 ELSE 0 END
         WHERE shop = ?1 AND order_id = ?2",
    )?
    .execute(params![
        shop,
        order_id,
        event_id_of_order(order_id),
        Source::BROWSER_BITS
    ])?;
    Ok(())
}
