//! Reconciliation against the Shopify Admin API: the poller that finds every order the
//! webhooks missed, and the backfill that does the same from an explicit date.
//!
//! Webhooks are not enough on their own: Shopify retries a failed delivery 8 times over 4
//! hours, delivers at least once and in any order, and deletes a subscription that keeps
//! failing. So every `shopify.poll_interval_ms` (5 minutes) the poller lists the shop's orders
//! through the GraphQL Admin API ([`super::orders`]: `orders(query: "updated_at:>='…'",
//! sortKey: UPDATED_AT)`, oldest first, cursor pages) and passes each one through the same
//! mapping and the same store call as a webhook. The store keeps one event per (ad account,
//! event_id), so an order the webhook already delivered is not sent again.
//!
//! The checkpoint per shop is the `updatedAt` of the newest order seen; the next run starts
//! `shopify.poll_overlap_secs` (10 minutes) before it, because orders can become visible
//! late. Orders are read oldest first, so a run cut short at the page limit has listed
//! everything up to the newest order it saw, and the checkpoint moves there: a long window is
//! read in several runs, none skipped. A run never looks further back than Pinterest's window
//! (7 days), which only `pincapi shopify backfill --since` does, reporting the orders too old
//! to send; a backfill over `shopify.bulk_threshold` orders runs as a bulk operation
//! ([`super::bulk`]).
//!
//! Shops whose purchase topic is `orders/create` list orders created since the start too
//! (`created_at:>=`), so an old order updated today is not read again; shops on
//! `orders/paid` list every order updated since (an order is paid after it is created), and
//! orders not yet paid are left for a later run.

use std::sync::Arc;
use std::time::Duration;

use pincapi_core::shopify::{self, Order, Topic};
use serde::Serialize;
use tokio::sync::watch;

pub use super::admin::ShopifyError;
use super::admin::{AdminApi, rfc3339};
use super::orders::{OrderPages, ParsedOrder};
use super::record::{Decision, Recorder, Status, decide};
use crate::config::shopify::{Shop, ShopifyConfig};
use crate::store::{Enqueued, ShopifyStored, Source};

/// A run stops after this many pages, so a cursor that loops cannot hold it; the next run
/// goes on from the checkpoint.
pub const MAX_PAGES: usize = 1000;

/// One order too old to send.
#[derive(Debug, Clone, Serialize)]
pub struct TooOld {
    pub order_id: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What one run of the poller (or a backfill) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollReport {
    pub shop: String,
    /// Unix seconds: the `updated_at` (and for `orders/create` shops `created_at`) asked
    /// from.
    pub since: i64,
    pub pages: usize,
    /// Orders listed by the Admin API.
    pub orders: usize,
    /// Orders whose event was stored now: the webhooks had missed them.
    pub sent: usize,
    /// Orders whose event was already stored (by a webhook or an earlier run).
    pub already_stored: usize,
    /// Orders that cannot be sent (no match key), too-old ones excluded.
    pub skipped: usize,
    /// Orders that are not conversions (test, cancelled, voided orders).
    pub ignored: usize,
    /// Orders not yet paid, for shops whose purchase topic is `orders/paid`.
    pub unpaid: usize,
    /// Orders older than Pinterest's window: reported, not sent.
    pub too_old: Vec<TooOld>,
    /// Orders that are not an order's shape, as "index: field: reason".
    pub invalid: Vec<String>,
    /// Unix seconds of the newest `updatedAt` seen (the new checkpoint).
    pub newest: Option<i64>,
    /// The run stopped at the page limit before the last page: the newer orders of its
    /// window are left for the next run, which starts at the checkpoint.
    pub cut_short: bool,
    /// Ran as a bulk operation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bulk: bool,
    /// What the operator should know, in words (a missing scope).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The poller of one shop.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pub shop: Shop,
    pub recorder: Recorder,
    pub overlap_secs: i64,
    pub page_size: usize,
    /// Pages one run lists at most ([`MAX_PAGES`]).
    pub max_pages: usize,
    /// A backfill over this many orders runs as a bulk operation.
    pub bulk_threshold: u64,
    api: Arc<AdminApi>,
}

impl Reconciler {
    /// A poller for the shop of `api` with the overlap and page size of `settings`.
    pub fn new(api: Arc<AdminApi>, recorder: Recorder, settings: &ShopifyConfig) -> Reconciler {
        Reconciler {
            shop: api.shop().clone(),
            recorder,
            overlap_secs: settings.poll_overlap_secs as i64,
            page_size: settings.poll_page_size.clamp(1, 250),
            max_pages: MAX_PAGES,
            bulk_threshold: settings.bulk_threshold,
            api,
        }
    }

    /// One scheduled run: from the checkpoint (less the overlap), bounded by Pinterest's
    /// window; advances the checkpoint.
    pub async fn poll(&self) -> Result<PollReport, ShopifyError> {
        let now = self.recorder.clock.now_ms() / 1000;
        let floor = now - self.recorder.max_event_age_secs;
        let checkpoint = self
            .recorder
            .store
            .shopify_checkpoint(&self.shop.domain)
            .await?;
        let since = match checkpoint {
            Some(c) => (c - self.overlap_secs).max(floor),
            // The first run covers the overlap only: history is `backfill`'s job.
            None => now - self.overlap_secs,
        };
        self.run(since).await
    }

    /// Lists every order since `since` (Unix seconds), stores what the webhooks missed, and
    /// reports orders too old to send. Advances the checkpoint, never moves it back. Over
    /// `shopify.bulk_threshold` orders it runs as a bulk operation.
    pub async fn backfill(&self, since: i64) -> Result<PollReport, ShopifyError> {
        let warning = self.all_orders_warning(since).await?;
        let mut report = self.backfill_run(since).await?;
        report.warnings.extend(warning);
        Ok(report)
    }

    /// Shopify lists only the last 60 days of orders to an app without `read_all_orders`:
    /// a backfill from further back says so.
    async fn all_orders_warning(&self, since: i64) -> Result<Option<String>, ShopifyError> {
        let now = self.recorder.clock.now_ms() / 1000;
        if since >= now - 60 * 86_400 {
            return Ok(None);
        }
        let granted = super::connect::access_scopes(&self.api).await?;
        Ok((!granted.iter().any(|s| s == "read_all_orders")).then(|| {
            tracing::warn!(shop = %self.shop.domain, "A backfill from more than 60 days ago without read_all_orders: Shopify lists only the last 60 days");
            "the app lacks the read_all_orders scope: Shopify lists only the orders of the \
             last 60 days, so older ones are not in this backfill (request the scope for the \
             app, then approve it on the shop)"
                .to_owned()
        }))
    }

    async fn backfill_run(&self, since: i64) -> Result<PollReport, ShopifyError> {
        let filter = self.filter(since)?;
        let count = super::bulk::count_orders(&self.api, &filter, self.bulk_threshold + 1).await?;
        if count.is_some_and(|n| n > self.bulk_threshold) {
            tracing::info!(shop = %self.shop.domain, orders = count, "Backfilling through a bulk operation");
            return super::bulk::backfill(self, &self.api, since, &filter).await;
        }
        self.run(since).await
    }

    /// The search filter of a run from `since`.
    pub(crate) fn filter(&self, since: i64) -> Result<String, ShopifyError> {
        let t = rfc3339(since)?;
        Ok(if self.shop.purchase_topic == Topic::OrdersPaid {
            format!("updated_at:>='{t}'")
        } else {
            format!("updated_at:>='{t}' AND created_at:>='{t}'")
        })
    }

    async fn run(&self, since: i64) -> Result<PollReport, ShopifyError> {
        let mut report = PollReport {
            shop: self.shop.domain.clone(),
            since,
            ..PollReport::default()
        };
        let mut pages = OrderPages::new(&self.api, self.filter(since)?, self.page_size);
        while let Some(orders) = pages.next().await? {
            report.pages += 1;
            self.store_page(orders, &mut report).await?;
            if report.pages >= self.max_pages && pages.has_more() {
                tracing::warn!(shop = %self.shop.domain, pages = report.pages, "Stopped listing Shopify orders at the page limit; the next run goes on from the newest order listed");
                report.cut_short = true;
                break;
            }
        }
        self.finish(since, &report).await?;
        Ok(report)
    }

    /// Moves the checkpoint to the newest order listed.
    pub(crate) async fn finish(&self, since: i64, report: &PollReport) -> Result<(), ShopifyError> {
        self.recorder
            .store
            .advance_shopify_checkpoint(
                &self.shop.domain,
                report.newest.unwrap_or(since),
                self.recorder.clock.now_ms(),
            )
            .await?;
        Ok(())
    }

    /// Maps and stores one page of orders in one transaction.
    pub(crate) async fn store_page(
        &self,
        orders: Vec<ParsedOrder>,
        report: &mut PollReport,
    ) -> Result<(), ShopifyError> {
        let now = self.recorder.clock.now_ms();
        let by_update = self.shop.purchase_topic == Topic::OrdersPaid;
        let mut decisions: Vec<Decision> = Vec::new();
        for (i, parsed) in orders.into_iter().enumerate() {
            report.orders += 1;
            let order: Order = match parsed {
                ParsedOrder::Order(o) => *o,
                ParsedOrder::Invalid(e) => {
                    tracing::warn!(shop = %self.shop.domain, index = i, error = %e, "Skipped an Admin API order that is not an order's shape");
                    report.invalid.push(format!("{i}: {e}"));
                    continue;
                }
            };
            report.newest = report.newest.max(order.updated_at.or(order.created_at));
            if by_update && !is_paid(order.financial_status.as_deref()) {
                report.unpaid += 1;
                continue;
            }
            let topic = self.shop.purchase_topic;
            let mapped = match shopify::map_order(topic, &order, topic, &self.shop.options) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(shop = %self.shop.domain, index = i, error = %e, "Skipped an Admin API order that cannot be mapped");
                    report.invalid.push(format!("{i}: {e}"));
                    continue;
                }
            };
            let d = decide(
                &self.shop,
                topic,
                mapped,
                Source::Poller,
                now,
                self.recorder.max_event_age_secs,
                self.recorder.merge_window_ms,
            );
            if d.too_old
                && let Some(o) = &d.order
            {
                report.too_old.push(TooOld {
                    order_id: o.order_id.clone(),
                    created_at: o.created_at,
                });
            }
            decisions.push(d);
        }
        let items: Vec<(Decision, _)> = decisions
            .into_iter()
            .filter(Decision::stores_anything)
            .map(|d| (d, None))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let stored = self.recorder.store(&self.shop, items.clone(), now).await?;
        for ((d, _), s) in items.iter().zip(stored) {
            match (d.status, s) {
                (Status::Accepted, ShopifyStored::Stored(Some(Enqueued::Accepted))) => {
                    tracing::info!(shop = %self.shop.domain, event_id = d.event_id().unwrap_or(""), "Found an order the webhooks missed; its event is queued");
                    report.sent += 1;
                }
                (Status::Accepted, _) => report.already_stored += 1,
                (Status::Skipped, _) if d.too_old => {}
                (Status::Skipped, _) => report.skipped += 1,
                _ => report.ignored += 1,
            }
        }
        Ok(())
    }
}

/// Runs `reconciler.poll()` every `interval` until `stop` fires; the first run is at once.
pub async fn run_loop(reconciler: Reconciler, interval: Duration, mut stop: watch::Receiver<bool>) {
    let shop = reconciler.shop.domain.clone();
    tracing::info!(shop = %shop, interval_ms = interval.as_millis() as u64, "Shopify reconciliation poller started");
    loop {
        if *stop.borrow() {
            break;
        }
        // With several instances on one store, one of them polls a shop at a time; the
        // others skip this round.
        let lock = match reconciler
            .recorder
            .store
            .try_lock_shopify_poller(&shop)
            .await
        {
            Ok(lock) => lock,
            Err(e) => {
                tracing::warn!(shop = %shop, error = %e, "Could not take the Shopify poller lock; trying again at the next interval");
                None
            }
        };
        let result = match &lock {
            Some(_) => Some(reconciler.poll().await),
            None => {
                tracing::debug!(shop = %shop, "Another instance is polling this shop; skipping this round");
                None
            }
        };
        drop(lock);
        match result {
            None => {}
            Some(Ok(r)) => {
                reconciler.recorder.metrics.inc(
                    "pincapi_shopify_polls_total",
                    &[("shop", &shop), ("result", "ok")],
                    1,
                );
                if r.sent > 0 || !r.invalid.is_empty() {
                    tracing::info!(shop = %shop, orders = r.orders, missed = r.sent, invalid = r.invalid.len(), "Reconciled Shopify orders");
                } else {
                    tracing::debug!(shop = %shop, orders = r.orders, "Reconciled Shopify orders; nothing was missing");
                }
            }
            Some(Err(e)) => {
                reconciler.recorder.metrics.inc(
                    "pincapi_shopify_polls_total",
                    &[("shop", &shop), ("result", "error")],
                    1,
                );
                tracing::warn!(shop = %shop, error = %format!("{e:#}"), "Could not reconcile Shopify orders; trying again at the next interval");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(shop = %shop, "Shopify reconciliation poller stopped");
}

/// Financial statuses of an order that has been paid (in part or in full).
pub(crate) fn is_paid(status: Option<&str>) -> bool {
    matches!(
        status.map(str::trim),
        Some("paid" | "partially_paid" | "partially_refunded" | "refunded")
    )
}
