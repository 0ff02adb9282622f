//! Quality: the aggregates counted with the writes they count, alert states, Event Quality
//! Scores, and the order ledger read against deliveries.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::{Source, StoreError};

/// What conversion-quality monitoring reads and keeps.
#[async_trait]
pub trait QualityStore: Send + Sync + fmt::Debug {
    /// Quality aggregates per (hour received, ad account, event name) for hours from
    /// `since_hour` (Unix seconds) on, oldest first. Kept in the same transactions as the
    /// writes they count, so they are exact and survive the purge of old events.
    async fn quality_hours(&self, since_hour: i64) -> Result<Vec<QualityHour>, StoreError>;

    /// Pinterest's errors and warnings by message, per (day, ad account, kind), for days from
    /// `since_day` (Unix seconds of a UTC midnight) on.
    async fn quality_messages(&self, since_day: i64) -> Result<Vec<QualityMessage>, StoreError>;

    /// The Shopify order ledger against what was delivered and what the browser saw, per day
    /// of order creation, for orders created in `since..until` (Unix seconds) that are not
    /// test orders and are conversions (not `ignored`); with up to `missing_limit` of those
    /// orders that have no delivered purchase, oldest first. With `ad_account_id`, only the
    /// orders of shops that send to that ad account.
    async fn shopify_truth(
        &self,
        since: i64,
        until: i64,
        missing_limit: usize,
        ad_account_id: Option<String>,
    ) -> Result<ShopifyTruth, StoreError>;

    /// Every alert's persisted state.
    async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError>;

    /// Records an alert's state (fired or cleared), replacing the previous one of its
    /// (rule, ad account).
    async fn save_alert_state(&self, state: AlertState) -> Result<(), StoreError>;

    /// Stores Pinterest's Event Quality Scores, replacing earlier ones of the same (ad account,
    /// ingestion source, lookback period, source platform).
    async fn save_eqs(&self, scores: Vec<EqsScore>) -> Result<(), StoreError>;

    /// The latest stored Event Quality Scores.
    async fn eqs_scores(&self) -> Result<Vec<EqsScore>, StoreError>;

    /// What the store knows of orders of `shop` that the Admin API listed (the quality
    /// report's census), per order id in `order_ids`: whether the order ledger has the order,
    /// and the state of its purchase event `order-<id>` in the store of `ad_account_id`, if
    /// one is stored. Reads only.
    async fn census_lookup(
        &self,
        shop: String,
        ad_account_id: String,
        order_ids: Vec<String>,
    ) -> Result<Vec<CensusLookup>, StoreError>;
}

/// Counts of one (hour, ad account, event name). Every event is counted in the hour it was
/// received (its first receipt), whatever happens to it later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QualityCounts {
    /// Events stored (first receipts).
    pub received: i64,
    /// Repeats of a stored event (merged into it or not): what de-duplication caught.
    pub duplicates: i64,
    /// Of those, repeats merged into the stored event while it waited unsent.
    pub merged: i64,
    /// Events each source saw, in [`Source::ALL`] order.
    pub seen: [i64; 6],
    /// Events carrying each match key (after merges), in `MatchKeys::NAMES` order.
    pub keys: [i64; 8],
    /// Events Pinterest processed.
    pub delivered: i64,
    /// Events Pinterest refused (each is also dead-lettered).
    pub failed: i64,
    /// Events dead-lettered (refused, given up after retries, or too old to send).
    pub dead: i64,
    /// Attempts that failed and were scheduled again (429 without a wait, 5xx, timeouts).
    pub retried: i64,
    /// Rounds an event waited without using an attempt (a rate-limit wait, a stopped account).
    pub waits: i64,
    /// Events processed with a warning.
    pub warned: i64,
    /// Events delivered more than an hour after their event_time.
    pub late: i64,
    /// Delivered events per lag bucket (`pincapi_core::quality::LAG_BOUNDS`).
    pub lag: [i64; pincapi_core::quality::LAG_BUCKETS],
    /// The largest lag of a delivered event, seconds (exact).
    pub lag_max: i64,
}

impl QualityCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &QualityCounts) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.merged += other.merged;
        for (a, b) in self.seen.iter_mut().zip(other.seen) {
            *a += b;
        }
        for (a, b) in self.keys.iter_mut().zip(other.keys) {
            *a += b;
        }
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead += other.dead;
        self.retried += other.retried;
        self.waits += other.waits;
        self.warned += other.warned;
        self.late += other.late;
        for (a, b) in self.lag.iter_mut().zip(other.lag) {
            *a += b;
        }
        self.lag_max = self.lag_max.max(other.lag_max);
    }

    /// Counts a delivery `lag_secs` after the event happened.
    pub fn count_lag(&mut self, lag_secs: i64) {
        self.lag[pincapi_core::quality::lag_bucket(lag_secs)] += 1;
        self.lag_max = self.lag_max.max(lag_secs.max(0));
        if lag_secs > pincapi_core::quality::LATE_AFTER_SECS {
            self.late += 1;
        }
    }

    /// Counts the sources in bit set `bits` as having seen an event.
    pub fn count_sources(&mut self, bits: i64) {
        for (i, s) in Source::ALL.iter().enumerate() {
            if bits & s.bit() != 0 {
                self.seen[i] += 1;
            }
        }
    }

    /// Counts the match keys in bit set `bits` as present on an event.
    pub fn count_keys(&mut self, bits: u32) {
        for (i, (bit, _)) in pincapi_core::event::MatchKeys::NAMES.iter().enumerate() {
            if bits & bit == *bit {
                self.keys[i] += 1;
            }
        }
    }
}

/// One row of the quality aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityHour {
    /// Unix seconds of the start of the hour the events were received.
    pub hour: i64,
    pub ad_account_id: String,
    pub event_name: String,
    pub counts: QualityCounts,
}

/// How many times Pinterest (or the way to it) said one thing, on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityMessage {
    /// Unix seconds of the UTC midnight.
    pub day: i64,
    pub ad_account_id: String,
    /// `warning` (processed with a warning), `retry` (a failed attempt), `dead_letter`.
    pub kind: String,
    pub message: String,
    pub count: i64,
}

/// Shopify orders of one day against Pinterest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TruthDay {
    /// Unix seconds of the UTC midnight of the orders' creation.
    pub day: i64,
    /// Orders created (non-test, not ignored).
    pub orders: i64,
    /// Of those, orders whose purchase was delivered to Pinterest.
    pub delivered: i64,
    /// Orders whose purchase the browser (Tag mirror or collector) reported.
    pub browser_seen: i64,
    /// Delivered purchases the browser never reported: conversions recovered by the server.
    pub recovered: i64,
    /// Orders skipped (no match key, too old), per reason.
    pub skipped: Vec<(String, i64)>,
}

/// An order with no delivered purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingOrder {
    pub shop: String,
    pub order_id: String,
    pub ad_account_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The ledger's outcome (`sent` while on its way, `skipped`).
    pub outcome: String,
    pub reason: Option<String>,
}

/// What [`Store::shopify_truth`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShopifyTruth {
    pub days: Vec<TruthDay>,
    pub missing: Vec<MissingOrder>,
}

/// An alert's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertState {
    /// The rule's name, e.g. `auth_failure`.
    pub rule: String,
    pub ad_account_id: String,
    pub active: bool,
    /// What was wrong, in words, as of the last transition.
    pub detail: String,
    /// Unix ms of the last firing.
    pub fired_at_ms: i64,
    /// Unix ms of the last clearing, if it cleared since.
    pub cleared_at_ms: Option<i64>,
}

/// One Event Quality Score as Pinterest returned it, with when we polled it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EqsScore {
    pub ad_account_id: String,
    /// `CONVERSIONS_API`, `TAG`, ...
    pub ingestion_source: String,
    /// `1d` or `14d`.
    pub lookback_period: String,
    pub source_platform: String,
    /// `NEEDS_IMPROVEMENT`, `FAIR`, `GOOD`.
    pub overall_status: String,
    /// Pinterest's `quality_components` object, as returned.
    pub quality_components: serde_json::Value,
    /// Unix ms.
    pub polled_at_ms: i64,
}

/// What the store knows of one order the census listed ([`Store::census_lookup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CensusLookup {
    pub order_id: String,
    /// The order ledger has the order: a webhook or the poller reported it.
    pub in_ledger: bool,
    /// The state of its purchase event (`pending`, `delivered`, `dead`, `dropped`), if one
    /// is stored.
    pub purchase_state: Option<String>,
    /// The browser (Tag mirror or collector) reported the purchase.
    pub browser_seen: bool,
}
