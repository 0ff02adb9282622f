//! What Shopify's compliance webhooks ask of the store: erasing a customer, erasing a shop,
//! and saying what is held about a customer.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;

/// The reason recorded on an unsent event dropped by a redaction.
pub const REDACTED_DROPPED: &str = "redacted at Shopify's request";

/// A customer to erase (`customers/redact`).
#[derive(Debug, Clone)]
pub struct Redaction {
    pub shop: String,
    /// The customer's hashes (email, phone): taken out of every stored event and audience.
    pub hashes: Vec<String>,
    /// The purchase event ids of the orders to redact: they lose every identifier.
    pub order_event_ids: Vec<String>,
}

/// What an erasure did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RedactReport {
    /// Stored events identifiers were taken out of.
    pub events_scrubbed: u64,
    /// Of those, unsent events dropped (nothing left to send them by).
    pub events_dropped: u64,
    /// Audience facts deleted.
    pub audience_rows: u64,
    /// Shopify rows deleted (ledger, deliveries, adjustments, checkpoint, credentials, data
    /// requests).
    pub shop_rows: u64,
}

/// A customer's data request (`customers/data_request`).
#[derive(Debug, Clone)]
pub struct DataRequest {
    pub shop: String,
    /// `data_request.id`, or the webhook id.
    pub request_id: String,
    pub customer_id: Option<String>,
    pub hashes: Vec<String>,
    /// `order-<id>` of the orders requested.
    pub order_event_ids: Vec<String>,
    pub received_at_ms: i64,
}

/// A data request as kept and served.
#[derive(Debug, Clone, Serialize)]
pub struct DataRequestRow {
    pub shop: String,
    pub request_id: String,
    pub customer_id: Option<String>,
    /// Unix ms.
    pub received_at_ms: i64,
    /// What was held: `{hashes, orders: [ledger rows], events: [{event_id, event_name,
    /// state, sent_at_ms, match_keys}]}`.
    pub report: serde_json::Value,
}

/// Erasure and disclosure.
#[async_trait]
pub trait Compliance: Send + Sync + fmt::Debug {
    /// Erases a customer in one transaction: their hashes leave every stored event and every
    /// audience fact (an audience list they are on loses them at the next sync), the orders'
    /// events lose every identifier, unsent ones that cannot be sent any more are dropped, and
    /// earlier data-request reports naming them are deleted.
    async fn redact_customer(&self, r: Redaction) -> Result<RedactReport, StoreError>;

    /// Erases everything held for `shop`: its ledger, deliveries, adjustments, checkpoint,
    /// credentials and data requests, and every identifier of its orders' events.
    async fn forget_shop(&self, shop: &str) -> Result<RedactReport, StoreError>;

    /// Records what is held about a customer now, and returns it.
    async fn record_data_request(&self, r: DataRequest) -> Result<DataRequestRow, StoreError>;

    /// The data requests recorded, newest first.
    async fn data_requests(
        &self,
        shop: Option<String>,
        limit: usize,
    ) -> Result<Vec<DataRequestRow>, StoreError>;
}
