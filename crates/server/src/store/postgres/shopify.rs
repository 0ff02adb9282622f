//! The Shopify source's tables on PostgreSQL, and the poller's one-instance lock.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::quality;
use super::queue::enqueue_in;
use super::{PgError, PostgresStore, execute, query};
use crate::store::tally::Tally;
use crate::store::{
    OrderStatus, ShopifyAdjustment, ShopifyAdjustmentRow, ShopifyLedger, ShopifyOrder,
    ShopifyOrderRow, ShopifyRecord, ShopifyStore, ShopifyStored, Source, StoreError, StoreLock,
    TEST_ORDER_DROPPED, TestOrderCopy,
};

#[async_trait]
impl ShopifyStore for PostgresStore {
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
                        outcome: OrderStatus::parse(r.get(8)),
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

    async fn prune_webhook_receipts(&self, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM shopify_deliveries WHERE received_at < $1",
            &[&before_ms],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn shopify_activity(&self) -> Result<Vec<crate::store::ShopActivity>, StoreError> {
        let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64)> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let webhooks = self
            .query(
                "SELECT shop, max(received_at) FROM shopify_deliveries GROUP BY shop",
                &[],
            )
            .await?;
        let polls = self
            .query("SELECT shop, updated_at FROM shopify_checkpoints", &[])
            .await?;
        Ok(crate::store::shopify::merge_activity(
            pairs(webhooks),
            pairs(polls),
        ))
    }

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
}

/// First key of the advisory locks of Shopify pollers ("shop" in ASCII); the second is a
/// hash of the shop's domain.
const POLLER_LOCK: i32 = 0x73_68_6f_70;

/// Stores one Shopify record inside the caller's transaction.
async fn shopify_record<C: GenericClient + Sync>(
    c: &C,
    r: &ShopifyRecord,
    tally: &mut Tally,
) -> Result<ShopifyStored, PgError> {
    if let Some(d) = &r.webhook {
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
                &d.answer,
                &r.received_at_ms,
            ],
        )
        .await?;
        if n == 0 {
            return Ok(ShopifyStored::DuplicateWebhook);
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
