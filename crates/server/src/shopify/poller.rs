//! Reconciliation against the Shopify Admin API: the poller that finds every order the
//! webhooks missed, and the backfill that does the same from an explicit date.
//!
//! Webhooks are not enough on their own: Shopify retries a failed delivery 8 times over 4
//! hours, delivers at least once and in any order, and deletes a subscription that keeps
//! failing. So every `shopify.poll_interval_ms` (5 minutes) the poller lists the shop's orders
//! (`GET {admin_api_base}/orders.json?status=any&created_at_min=…&limit=250`, following the
//! `Link: <…>; rel="next"` cursor) and passes each one through the same mapping and the same
//! store call as a webhook. The store keeps one event per (ad account, event_id), so an order
//! the webhook already delivered is not sent again.
//!
//! The checkpoint per shop is the `created_at` of the newest order seen; the next run starts
//! `shopify.poll_overlap_secs` (10 minutes) before it, because `created_at_min` is
//! second-granular and orders can become visible late. The Admin API lists newest first, so a
//! run cut short at the page limit has listed the newest orders but not the oldest of its
//! window: it leaves the checkpoint where the next run starts from the same time again. A run never looks further back than
//! Pinterest's window (7 days), which only `pincapi shopify backfill --since` does, reporting
//! the orders too old to send.
//!
//! Shops whose purchase topic is `orders/paid` are listed by `updated_at_min` instead (an
//! order is paid after it is created), and orders not yet paid are left for a later run.

use std::time::Duration;

use pincapi_core::shopify::{self, MapError, Order, Topic};
use reqwest::header::{HeaderMap, LINK, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::record::{Decision, Recorder, Status, decide};
use crate::clock::system_now_ms as now_ms;
use crate::config::shopify::{Shop, ShopifyConfig};
use crate::store::{Enqueued, ShopifyStored, Source, StoreError};

/// A run stops after this many pages (250,000 orders at full pages) so a cursor that loops
/// cannot hold it.
pub const MAX_PAGES: usize = 1000;
/// Attempts of one page when Shopify answers 429.
const MAX_THROTTLED: u32 = 5;

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
    /// Unix seconds: the `created_at_min` (or `updated_at_min`) asked for.
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
    /// Unix seconds of the newest order seen (the new checkpoint, unless `cut_short`).
    pub newest: Option<i64>,
    /// The run stopped at the page limit before the last page: older orders of its window
    /// were not listed, and the checkpoint was not moved past them.
    pub cut_short: bool,
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
    api: AdminApi,
}

impl Reconciler {
    /// A poller for `shop` with the overlap and page size of `settings`; `timeout` bounds
    /// each Admin API request.
    pub fn new(
        shop: Shop,
        recorder: Recorder,
        settings: &ShopifyConfig,
        timeout: Duration,
    ) -> Result<Reconciler, ShopifyError> {
        let api = AdminApi::new(shop.clone(), timeout)?;
        Ok(Reconciler {
            shop,
            recorder,
            overlap_secs: settings.poll_overlap_secs as i64,
            page_size: settings.poll_page_size.clamp(1, 250),
            max_pages: MAX_PAGES,
            api,
        })
    }

    /// One scheduled run: from the checkpoint (less the overlap), bounded by Pinterest's
    /// window; advances the checkpoint.
    pub async fn poll(&self) -> Result<PollReport, ShopifyError> {
        let now = now_ms() / 1000;
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
    /// reports orders too old to send. Advances the checkpoint, never moves it back.
    pub async fn backfill(&self, since: i64) -> Result<PollReport, ShopifyError> {
        self.run(since).await
    }

    async fn run(&self, since: i64) -> Result<PollReport, ShopifyError> {
        let mut report = PollReport {
            shop: self.shop.domain.clone(),
            since,
            ..PollReport::default()
        };
        let by_update = self.shop.purchase_topic == Topic::OrdersPaid;
        let filter = if by_update {
            "updated_at_min"
        } else {
            "created_at_min"
        };
        let since_text = rfc3339(since)?;
        let url = self.api.orders_url(&[
            ("status", "any"),
            (filter, since_text.as_str()),
            ("limit", &self.page_size.to_string()),
        ])?;
        let mut pages = self.api.pages(url, self.max_pages);
        while let Some(orders) = pages.next().await? {
            report.pages = pages.pages();
            self.store_page(&orders, by_update, &mut report).await?;
        }
        if pages.cut_short() {
            tracing::warn!(shop = %self.shop.domain, pages = report.pages, "Stopped listing Shopify orders at the page limit; the oldest orders of this window were not listed, and the next run starts from the same time");
            report.cut_short = true;
        }
        // Newest first: a run cut short has not listed the start of its window, so the
        // checkpoint may only move to where the next run starts at `since` again.
        let checkpoint = if report.cut_short {
            since.saturating_add(self.overlap_secs)
        } else {
            report.newest.unwrap_or(since)
        };
        self.recorder
            .store
            .advance_shopify_checkpoint(&self.shop.domain, checkpoint, now_ms())
            .await?;
        Ok(report)
    }

    /// Maps and stores one page of orders in one transaction.
    async fn store_page(
        &self,
        orders: &[Box<RawValue>],
        by_update: bool,
        report: &mut PollReport,
    ) -> Result<(), ShopifyError> {
        let now = now_ms();
        let mut decisions: Vec<Decision> = Vec::new();
        for (i, raw) in orders.iter().enumerate() {
            report.orders += 1;
            let order = match parse_order(raw) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(shop = %self.shop.domain, index = i, error = %e, "Skipped an Admin API order that is not an order's shape");
                    report.invalid.push(format!("{i}: {e}"));
                    continue;
                }
            };
            let seen_at = if by_update {
                order.updated_at.or(order.created_at)
            } else {
                order.created_at.or(order.processed_at)
            };
            report.newest = report.newest.max(seen_at);
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

/// The order listing of one shop's Admin API (`GET {admin_api_base}/orders.json`), read
/// only: the one client and pager the poller and the census share.
#[derive(Debug, Clone)]
pub struct AdminApi {
    shop: Shop,
    http: reqwest::Client,
}

impl AdminApi {
    /// A client for `shop`'s Admin API; `timeout` bounds each request.
    pub fn new(shop: Shop, timeout: Duration) -> Result<AdminApi, ShopifyError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("pincapi/", env!("CARGO_PKG_VERSION")))
            // The Link header names the next page; redirects elsewhere are not followed so the
            // access token never leaves the shop's Admin API.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ShopifyError::Client)?;
        Ok(AdminApi { shop, http })
    }

    /// The shop listed.
    pub fn shop(&self) -> &Shop {
        &self.shop
    }

    /// The URL of the first page of `orders.json` with `params`.
    pub fn orders_url(&self, params: &[(&str, &str)]) -> Result<reqwest::Url, ShopifyError> {
        let base = format!("{}/orders.json", self.shop.admin_api_base);
        reqwest::Url::parse_with_params(&base, params).map_err(|_| ShopifyError::BadBase(base))
    }

    /// The pages of a listing from `first`, following the `Link: rel="next"` cursor for at
    /// most `max_pages` pages.
    pub fn pages(&self, first: reqwest::Url, max_pages: usize) -> Pages<'_> {
        Pages {
            start: first.clone(),
            next: Some(first),
            api: self,
            pages: 0,
            max_pages: max_pages.max(1),
            cut_short: false,
            foreign: false,
            keep: Vec::new(),
        }
    }

    /// Fetches one page: its raw orders and the next page's URL.
    async fn fetch(
        &self,
        url: reqwest::Url,
    ) -> Result<(Vec<Box<RawValue>>, Option<reqwest::Url>), ShopifyError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            orders: Vec<Box<RawValue>>,
        }
        let mut throttled = 0;
        loop {
            let resp = self
                .http
                .get(url.clone())
                .header("X-Shopify-Access-Token", self.shop.access_token.expose())
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| ShopifyError::Http {
                    doing: "listing",
                    shop: self.shop.domain.clone(),
                    source: e,
                })?;
            let status = resp.status();
            if status.as_u16() == 429 && throttled < MAX_THROTTLED {
                throttled += 1;
                let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(2));
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
                continue;
            }
            let next = next_link(resp.headers());
            let body = resp.bytes().await.map_err(|e| ShopifyError::Http {
                doing: "reading",
                shop: self.shop.domain.clone(),
                source: e,
            })?;
            if !status.is_success() {
                let hint = match status.as_u16() {
                    401 | 403 => {
                        "; check the shop's access_token and that the app has the read_orders \
                         scope"
                    }
                    _ => "",
                };
                return Err(ShopifyError::Status {
                    shop: self.shop.domain.clone(),
                    status: status.as_u16(),
                    hint,
                    body: snippet(&body),
                });
            }
            let page: Page = serde_json::from_slice(&body)
                .map_err(|_| ShopifyError::NotOrders(self.shop.domain.clone()))?;
            return Ok((page.orders, next));
        }
    }
}

/// A listing being read page by page ([`AdminApi::pages`]).
#[derive(Debug)]
pub struct Pages<'a> {
    api: &'a AdminApi,
    next: Option<reqwest::Url>,
    /// The first page, whose host every next page must be on.
    start: reqwest::Url,
    pages: usize,
    max_pages: usize,
    cut_short: bool,
    /// The last page named a next page on another host: the next call fails.
    foreign: bool,
    /// Query parameters every page must carry, added to a `Link` URL that left them out.
    keep: Vec<(String, String)>,
}

impl Pages<'_> {
    /// Puts `name=value` on every next page whose `Link` URL does not carry `name` (a
    /// `fields` filter, which Shopify allows beside `page_info`).
    pub fn keeping(mut self, name: &str, value: &str) -> Self {
        self.keep.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The next page's orders; `None` after the last page, or at the page limit (then
    /// [`Pages::cut_short`] says so).
    pub async fn next(&mut self) -> Result<Option<Vec<Box<RawValue>>>, ShopifyError> {
        if self.foreign {
            return Err(ShopifyError::ForeignPage);
        }
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let (orders, next) = self.api.fetch(url).await?;
        self.pages += 1;
        if let Some(mut next) = next {
            if next.origin() != self.start.origin() {
                self.foreign = true;
            } else if self.pages >= self.max_pages {
                self.cut_short = true;
            } else {
                for (name, value) in &self.keep {
                    if !next.query_pairs().any(|(k, _)| k == name.as_str()) {
                        next.query_pairs_mut().append_pair(name, value);
                    }
                }
                self.next = Some(next);
            }
        }
        Ok(Some(orders))
    }

    /// Pages read so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The listing stopped at the page limit while Shopify had more pages.
    pub fn cut_short(&self) -> bool {
        self.cut_short
    }
}

/// `since` (Unix seconds) as the Admin API's RFC 3339 time.
pub fn rfc3339(since: i64) -> Result<String, ShopifyError> {
    OffsetDateTime::from_unix_timestamp(since)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(ShopifyError::BadTime(since))
}

/// What can go wrong talking to a shop's Admin API.
#[derive(Debug, thiserror::Error)]
pub enum ShopifyError {
    #[error("while building the Shopify Admin API client: {0}")]
    Client(reqwest::Error),
    #[error("admin_api_base: {0} is not a URL")]
    BadBase(String),
    #[error("while {doing} orders of {shop}: {source}")]
    Http {
        doing: &'static str,
        shop: String,
        source: reqwest::Error,
    },
    #[error("the Admin API of {shop} answered {status}{hint}: {body}")]
    Status {
        shop: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("the Admin API of {0} answered with a body that is not an orders list")]
    NotOrders(String),
    #[error("the Admin API's next page is on another host; not following it")]
    ForeignPage,
    #[error("since: {0} is not a valid time")]
    BadTime(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Parses one order of a list with the core's field-naming errors.
pub(crate) fn parse_order(raw: &RawValue) -> Result<Order, MapError> {
    let wrapped = format!("{{\"orders\":[{}]}}", raw.get());
    let mut orders = shopify::parse_orders(wrapped.as_bytes()).map_err(|e| match e {
        MapError::Field { field, reason } => MapError::Field {
            field: field
                .strip_prefix("orders[0].")
                .or_else(|| field.strip_prefix("orders[0]"))
                .map(|f| if f.is_empty() { "order" } else { f })
                .unwrap_or(&field)
                .to_owned(),
            reason,
        },
        other => other,
    })?;
    orders
        .pop()
        .ok_or_else(|| MapError::Json("no order".to_owned()))
}

/// Financial statuses of an order that has been paid (in part or in full).
pub(crate) fn is_paid(status: Option<&str>) -> bool {
    matches!(
        status.map(str::trim),
        Some("paid" | "partially_paid" | "partially_refunded" | "refunded")
    )
}

/// The `rel="next"` URL of a `Link` header: `<https://…?page_info=…>; rel="next"`. Links are
/// separated by commas outside the `<…>` (a URL may hold a comma itself).
fn next_link(headers: &HeaderMap) -> Option<reqwest::Url> {
    let mut rest = headers.get(LINK)?.to_str().ok()?;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params = &after[close + 1..];
        let params = &params[..params.find('<').unwrap_or(params.len())];
        let is_next = params
            .split([';', ','])
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        if is_next {
            return reqwest::Url::parse(target.trim()).ok();
        }
        rest = &after[close + 1..];
    }
    None
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The start of an error body, for messages (Admin API errors never echo the token).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "<https://s.myshopify.com/admin/api/2026-01/orders.json?limit=2&page_info=abc>; rel=\"previous\", \
             <https://s.myshopify.com/admin/api/2026-01/orders.json?limit=2&page_info=def>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        let next = next_link(&h).unwrap();
        assert!(next.as_str().ends_with("page_info=def"));
        h.insert(
            LINK,
            "<https://s.myshopify.com/x?fields=id,test&page_info=abc>; rel=\"previous\", \
             <https://s.myshopify.com/x?fields=id,test&page_info=def>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).unwrap().as_str(),
            "https://s.myshopify.com/x?fields=id,test&page_info=def"
        );
        h.insert(
            LINK,
            "<https://s.myshopify.com/x?page_info=abc>; rel=\"previous\""
                .parse()
                .unwrap(),
        );
        assert!(next_link(&h).is_none());
    }

    #[test]
    fn an_order_of_a_list_parses_with_field_names_relative_to_the_order() {
        let raw = RawValue::from_string(r#"{"id": 1, "line_items": [{"quantity": "2"}]}"#.into())
            .unwrap();
        let err = parse_order(&raw).unwrap_err().to_string();
        assert!(err.starts_with("line_items[0].quantity"), "{err}");
        let raw = RawValue::from_string(r#"{"id": 7}"#.into()).unwrap();
        assert_eq!(parse_order(&raw).unwrap().id, Some(7));
    }
}
