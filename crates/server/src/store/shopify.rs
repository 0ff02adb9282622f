//! What the Shopify source stores: webhook deliveries, the order ledger, adjustments, the poller's checkpoint.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::{StoreError, StoreLock};

use super::{Enqueued, NewEvent, Source};

/// The Shopify source's state.
#[async_trait]
pub trait ShopifyStore: Send + Sync + fmt::Debug {
    /// Stores Shopify records, each atomically: its webhook delivery (deduplicated on the
    /// webhook id), its event (enqueued as [`Store::enqueue`] does), its order ledger row
    /// and its cancellation or refund. A record whose delivery was stored before stores
    /// nothing and is reported as [`ShopifyStored::DuplicateWebhook`].
    async fn record_shopify(
        &self,
        records: Vec<ShopifyRecord>,
    ) -> Result<Vec<ShopifyStored>, StoreError>;

    /// The poller's checkpoint of a shop: Unix seconds of the newest order it has seen.
    async fn shopify_checkpoint(&self, shop: &str) -> Result<Option<i64>, StoreError>;

    /// Moves a shop's checkpoint forward to `at` (never back).
    async fn advance_shopify_checkpoint(
        &self,
        shop: &str,
        at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The order ledger of a shop (or every shop), newest orders first, with cancellations
    /// and refunds.
    async fn shopify_ledger(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<ShopifyLedger, StoreError>;

    /// Forgets webhook deliveries received before `before_ms` (they are only kept to
    /// recognise Shopify's retries, which end after 4 hours); returns how many.
    async fn prune_webhook_receipts(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Per shop: when the last webhook delivery arrived and when the poller last finished a
    /// run (its checkpoint's update), Unix ms; for `pincapi status`.
    async fn shopify_activity(&self) -> Result<Vec<ShopActivity>, StoreError>;

    /// Takes the lock that lets one gateway instance at a time run the Shopify poller of
    /// `shop`, or `None` while another instance holds it. The lock lasts as long as the
    /// returned guard, and ends by itself when the instance holding it dies. An embedded store
    /// has a single owner process, so there it is always granted.
    async fn try_lock_shopify_poller(&self, shop: &str) -> Result<Option<StoreLock>, StoreError> {
        let _ = shop;
        Ok(Some(StoreLock::default()))
    }
}

/// A shop's last signs of life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShopActivity {
    pub shop: String,
    /// Unix ms of the newest webhook delivery still remembered (7 days).
    pub last_webhook_ms: Option<i64>,
    /// Unix ms of the poller's last finished run.
    pub last_poll_ms: Option<i64>,
}

/// Merges the two listings into one row per shop.
pub(crate) fn merge_activity(
    webhooks: Vec<(String, i64)>,
    polls: Vec<(String, i64)>,
) -> Vec<ShopActivity> {
    let mut out: std::collections::BTreeMap<String, ShopActivity> = Default::default();
    for (shop, at) in webhooks {
        out.entry(shop.clone())
            .or_insert_with(|| ShopActivity {
                shop,
                ..ShopActivity::default()
            })
            .last_webhook_ms = Some(at);
    }
    for (shop, at) in polls {
        out.entry(shop.clone())
            .or_insert_with(|| ShopActivity {
                shop,
                ..ShopActivity::default()
            })
            .last_poll_ms = Some(at);
    }
    out.into_values().collect()
}

/// One Shopify webhook delivery, or one order seen by the Admin API poller, with everything
/// it stores. Stored in one transaction by [`Store::record_shopify`].
#[derive(Debug, Clone)]
pub struct ShopifyRecord {
    /// The shop's domain.
    pub shop: String,
    /// The webhook delivery, deduplicated on its id; `None` for the poller.
    pub webhook: Option<WebhookReceipt>,
    /// The event to enqueue, if the payload maps to one.
    pub event: Option<NewEvent>,
    /// The order's ledger row, for orders seen on the purchase topic or by the poller.
    pub order: Option<ShopifyOrder>,
    /// A cancellation or refund.
    pub adjustment: Option<ShopifyAdjustment>,
    /// The order is a test order: what becomes of the browser's copy of its purchase.
    pub test_order: Option<TestOrderCopy>,
    /// Unix ms.
    pub received_at_ms: i64,
}

/// A Shopify test order seen by the webhook or the poller. The browser (the custom pixel,
/// tag.js) reports its purchase as `order-<id>` without knowing it is a test; while that copy
/// waits unsent (pending, not claimed), it is dropped (state `dropped`, reason
/// [`TEST_ORDER_DROPPED`]) for `test_orders = ignore`, or flagged to be sent with Pinterest's
/// test flag for `send_as_test`, in the same transaction as the order's ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOrderCopy {
    pub ad_account_id: String,
    /// The purchase's event_id, `order-<id>`.
    pub event_id: String,
    /// `test_orders = send_as_test`; otherwise the copy is dropped.
    pub send_as_test: bool,
}

/// The reason recorded on a browser purchase dropped because Shopify says it is a test order.
pub const TEST_ORDER_DROPPED: &str = "Shopify test order";

/// A webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookReceipt {
    /// `X-Shopify-Webhook-Id` (the same on Shopify's retries of one delivery).
    pub webhook_id: String,
    pub topic: String,
    /// What the gateway answered: `accepted`, `skipped`, `ignored`, `recorded`.
    pub answer: String,
}

/// What became of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Its purchase event is in the store (sent, or on its way).
    Sent,
    /// It cannot be sent (no match key; older than Pinterest's window).
    Skipped,
    /// It is not a conversion (a test order, cancelled or voided at creation).
    Ignored,
}

impl OrderStatus {
    /// The label used in the ledger, answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Sent => "sent",
            OrderStatus::Skipped => "skipped",
            OrderStatus::Ignored => "ignored",
        }
    }

    pub(crate) fn parse(s: &str) -> OrderStatus {
        match s {
            "sent" => OrderStatus::Sent,
            "skipped" => OrderStatus::Skipped,
            _ => OrderStatus::Ignored,
        }
    }
}

/// An order as the ledger keeps it. No personal data.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyOrder {
    pub order_id: String,
    pub ad_account_id: String,
    /// Unix seconds.
    pub created_at: i64,
    pub test: bool,
    pub value: Option<String>,
    pub currency: Option<String>,
    pub source_name: Option<String>,
    /// Once `sent`, an order stays `sent`; other outcomes are replaced by later sightings.
    pub outcome: OrderStatus,
    pub reason: Option<String>,
    pub event_id: Option<String>,
    /// The source that saw it ([`Source::Webhook`] or [`Source::Poller`]); the ledger keeps
    /// the set of every source that did.
    #[serde(skip)]
    pub source: Source,
}

/// A cancellation or a refund, for reporting (Pinterest has no retraction event).
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyAdjustment {
    pub order_id: String,
    /// `cancelled` or `refunded`.
    pub kind: String,
    /// Unix seconds.
    pub at: i64,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub reason: Option<String>,
    pub test: bool,
}

/// What [`Store::record_shopify`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopifyStored {
    /// The delivery was stored before: nothing was stored now.
    DuplicateWebhook,
    /// Stored; with the outcome of its event's enqueue, if it had one.
    Stored(Option<Enqueued>),
}

/// A ledger row as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyOrderRow {
    pub shop: String,
    #[serde(flatten)]
    pub order: ShopifyOrder,
    /// Every source that saw the order.
    pub sources: Vec<Source>,
}

/// A cancellation or refund as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyAdjustmentRow {
    pub shop: String,
    #[serde(flatten)]
    pub adjustment: ShopifyAdjustment,
}

/// The order ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShopifyLedger {
    pub orders: Vec<ShopifyOrderRow>,
    pub adjustments: Vec<ShopifyAdjustmentRow>,
}

/// A fact about an order's purchase that the ledger keeps.
#[derive(Debug, Clone, Copy)]
pub enum LedgerFlag {
    /// The browser reported the purchase.
    BrowserSeen,
    /// The purchase was delivered.
    Delivered,
}
