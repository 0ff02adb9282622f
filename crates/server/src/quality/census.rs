//! The order census: a read-only count of a shop's orders through the Admin API, for the
//! quality report.
//!
//! The order ledger only knows the orders a webhook or the poller reported. With webhooks
//! dropped and the poller off (`shopify.poller = false`), an order nobody reported is unknown
//! to the gateway. For every shop with Admin API access, the census lists the ids of the
//! orders created in the report's window (the GraphQL `CensusPage`: `orders(query:
//! "created_at:>='…'", sortKey: CREATED_AT, reverse: true)` with the id, the creation time,
//! `test`, `cancelledAt` and `displayFinancialStatus`, through the shop's shared client), keeps those that are conversions by the mapping's own rule (not test orders, not
//! cancelled or voided; paid, for shops whose purchase topic is `orders/paid`), and
//! [`compare`]s them with the ledger and the store: an order the ledger lacks counts in the
//! report's orders, and, unless its purchase `order-<id>` was delivered (the browser reported
//! it), it is listed as missing, `never received` when nothing reported it at all.
//!
//! The census never writes: it stores no event, no ledger row and no checkpoint, so it neither
//! sends anything nor moves the poller. It is bounded: at most [`MAX_PAGES`] pages of
//! `shopify.poll_page_size` orders (10 × 250, 252 points a page), newest first, and says when it stopped short;
//! each request has the gateway's HTTP timeout. Inside `serve` a census is kept for
//! [`CACHE_TTL`] (5 minutes) by [`CensusCache`], so the dashboard, `/api/quality` and the alert
//! do not call the Admin API on every view; `pincapi report` runs a fresh one. An Admin API
//! error is reported as a problem of the shop's census, never as a failure of the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pincapi_core::shopify::graphql::{GraphqlOrder, PageInfo};
use pincapi_core::shopify::{self, Mapped, Topic};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::config::shopify::Shop;
use crate::shopify::access::ShopAccess;
use crate::shopify::admin::{AdminApi, CENSUS_PAGE, ShopifyError, rfc3339};
use crate::shopify::poller::is_paid;
use crate::store::{MissingOrder, QualityStore, StoreError, TruthDay};

/// Pages one census lists at most per shop.
pub const MAX_PAGES: usize = 10;
/// How long `serve` reuses a census.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// The outcome of a missing order no webhook, poll or browser report ever told the gateway of.
pub const NEVER_RECEIVED: &str = "never_received";
/// The outcome of a missing order only the browser reported, whose purchase is not delivered.
pub const BROWSER_ONLY: &str = "browser_only";

/// One order the census counts: a conversion created in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CensusOrder {
    pub order_id: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The census of one shop.
#[derive(Debug, Clone, Serialize)]
pub struct ShopCensus {
    pub shop: String,
    pub ad_account_id: String,
    /// Pages read.
    pub pages: usize,
    /// Orders the Admin API listed.
    pub listed: usize,
    /// Listed orders that are not conversions (test, cancelled, voided, unpaid for
    /// `orders/paid`) or not an order's shape.
    pub not_conversions: usize,
    /// The conversions listed.
    #[serde(skip)]
    pub orders: Vec<CensusOrder>,
    /// Unix seconds of the oldest order listed.
    pub oldest_listed: Option<i64>,
    /// The listing stopped at [`MAX_PAGES`]: the oldest orders of the window were not listed
    /// (for them the report has only the ledger).
    pub truncated: bool,
    /// What went wrong; the shop's figures then come from the ledger alone.
    pub error: Option<String>,
}

/// One run of the census over every shop with Admin API access.
#[derive(Debug, Clone, Serialize)]
pub struct Census {
    /// Unix seconds: orders created from then on were listed.
    pub since: i64,
    /// Unix ms.
    pub ran_at_ms: i64,
    pub shops: Vec<ShopCensus>,
}

impl Census {
    /// This census seen from a later `since`: only the orders created from then on.
    pub fn narrowed(&self, since: i64) -> Census {
        let shops = self
            .shops
            .iter()
            .map(|s| ShopCensus {
                orders: s
                    .orders
                    .iter()
                    .filter(|o| o.created_at >= since)
                    .cloned()
                    .collect(),
                // Newest first: a listing cut short that reached back past `since` covered it.
                truncated: s.truncated && s.oldest_listed.is_none_or(|o| o >= since),
                ..s.clone()
            })
            .collect();
        Census {
            since: since.max(self.since),
            ran_at_ms: self.ran_at_ms,
            shops,
        }
    }
}

/// Lists the orders created from `since` (Unix seconds) of every shop in `shops`, one shop
/// after the other. Never fails: a shop's error is recorded in its [`ShopCensus`].
pub async fn run(shops: &[Arc<AdminApi>], page_size: usize, since: i64, now_ms: i64) -> Census {
    let mut out = Vec::with_capacity(shops.len());
    for api in shops {
        let shop = api.shop();
        let mut census = ShopCensus {
            shop: shop.domain.clone(),
            ad_account_id: shop.ad_account_id.clone(),
            pages: 0,
            listed: 0,
            not_conversions: 0,
            orders: Vec::new(),
            oldest_listed: None,
            truncated: false,
            error: None,
        };
        if let Err(e) = list(api, page_size, since, &mut census).await {
            let e = format!("{e:#}");
            tracing::warn!(shop = %shop.domain, error = %e, "The order census could not list the shop's orders; the quality report counts them from the ledger");
            census.error = Some(e);
        }
        out.push(census);
    }
    Census {
        since,
        ran_at_ms: now_ms,
        shops: out,
    }
}

#[derive(Deserialize)]
struct CensusData {
    orders: CensusConnection,
}

#[derive(Deserialize)]
struct CensusConnection {
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
    nodes: Vec<Value>,
}

async fn list(
    api: &AdminApi,
    page_size: usize,
    since: i64,
    census: &mut ShopCensus,
) -> Result<(), ShopifyError> {
    let shop = api.shop();
    let query = format!("created_at:>='{}'", rfc3339(since)?);
    let first = page_size.clamp(1, 250) as u32;
    let mut after: Option<String> = None;
    loop {
        let data: CensusData = api
            .run(
                CENSUS_PAGE,
                json!({"first": first, "after": after, "query": query}),
                2 + first,
            )
            .await?;
        census.pages += 1;
        for node in data.orders.nodes {
            census.listed += 1;
            match classify(shop, node) {
                Some(o) => {
                    census.oldest_listed = Some(
                        census
                            .oldest_listed
                            .map_or(o.created_at, |t| t.min(o.created_at)),
                    );
                    if o.conversion && o.created_at >= since {
                        census.orders.push(CensusOrder {
                            order_id: o.order_id,
                            created_at: o.created_at,
                        });
                    } else {
                        census.not_conversions += 1;
                    }
                }
                None => census.not_conversions += 1,
            }
        }
        let info = data.orders.page_info;
        match info.end_cursor.filter(|_| info.has_next_page) {
            Some(next) if census.pages < MAX_PAGES => after = Some(next),
            Some(_) => {
                census.truncated = true;
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// One listed order as the census sees it.
struct Classified {
    order_id: String,
    created_at: i64,
    conversion: bool,
}

/// Whether a listed order is a conversion, by the rule the poller applies to the same
/// listing: the mapping's `Ignored` (test, cancelled, voided) is not, nor is an unpaid order
/// of an `orders/paid` shop. Test orders are left out even when sent as tests, as the ledger's
/// figures leave them out. `None` for what is not an order's shape.
fn classify(shop: &Shop, node: Value) -> Option<Classified> {
    let order = serde_json::from_value::<GraphqlOrder>(node)
        .ok()?
        .into_order(Vec::new())
        .ok()?;
    let topic = shop.purchase_topic;
    let mapped = shopify::map_order(topic, &order, topic, &shop.options).ok()?;
    let facts = match &mapped {
        Mapped::Event { order, .. }
        | Mapped::Skipped { order, .. }
        | Mapped::Ignored { order, .. } => order.clone()?,
        Mapped::Ledger(_) => return None,
    };
    let conversion = !matches!(mapped, Mapped::Ignored { .. })
        && !facts.test
        && (topic != Topic::OrdersPaid || is_paid(order.financial_status.as_deref()));
    Some(Classified {
        order_id: facts.order_id,
        created_at: facts.created_at,
        conversion,
    })
}

/// A census kept for a short time inside `serve`, for every shop with Admin API access.
#[derive(Debug)]
pub struct CensusCache {
    shops: Vec<Arc<AdminApi>>,
    page_size: usize,
    ttl: Duration,
    cached: tokio::sync::Mutex<Option<Census>>,
}

impl CensusCache {
    /// The cache for the shops of `access` that have Admin API access, reusing a census for
    /// `ttl`.
    pub fn new(config: &Config, access: &ShopAccess, ttl: Duration) -> CensusCache {
        CensusCache {
            shops: access.apis().cloned().collect(),
            page_size: config.shopify.poll_page_size,
            ttl,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether any shop has Admin API access.
    pub fn enabled(&self) -> bool {
        !self.shops.is_empty()
    }

    /// The census of orders created from `since`: the kept one when it is younger than the
    /// TTL and covers `since`, otherwise a new one (which is then kept). `None` when no shop
    /// has Admin API access. Callers at the same time wait for one census.
    pub async fn get(&self, since: i64, now_ms: i64) -> Option<Census> {
        if !self.enabled() {
            return None;
        }
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let age = now_ms.saturating_sub(c.ran_at_ms);
            if c.since <= since && age >= 0 && (age as u128) < self.ttl.as_millis() {
                return Some(c.narrowed(since));
            }
        }
        let census = run(&self.shops, self.page_size, since, now_ms).await;
        *cached = Some(census.clone());
        Some(census)
    }
}

/// The census of one shop as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ShopCensusReport {
    pub shop: String,
    pub ad_account_id: String,
    pub pages: usize,
    pub listed: usize,
    /// Conversions created in the window.
    pub orders: i64,
    /// Of those, orders the ledger does not have (no webhook or poll reported them).
    pub not_in_ledger: i64,
    /// Of those, orders nothing reported, not even the browser.
    pub never_received: i64,
    pub truncated: bool,
    pub error: Option<String>,
}

/// The census as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CensusReport {
    /// Unix ms.
    pub ran_at_ms: i64,
    pub shops: Vec<ShopCensusReport>,
    /// Admin API errors and truncated listings, in words.
    pub problems: Vec<String>,
}

/// The census held against the store: what the ledger does not know.
#[derive(Debug, Clone)]
pub struct CensusTruth {
    /// Orders the ledger lacks, per day of creation (as [`TruthDay`]s, skipped empty).
    pub days: Vec<TruthDay>,
    /// Of those, the ones with no delivered purchase, oldest first.
    pub missing: Vec<MissingOrder>,
    /// Whether at least one shop's census listed its orders: the order counts then come
    /// from the census (with the ledger).
    pub counted: bool,
    pub report: CensusReport,
}

/// Compares `census` with the store for orders created in `since..until` (Unix seconds).
/// `now` and `max_event_age_secs` say which missing orders can still be sent.
pub async fn compare(
    store: &dyn QualityStore,
    census: &Census,
    since: i64,
    until: i64,
    now: i64,
    max_event_age_secs: i64,
) -> Result<CensusTruth, StoreError> {
    let mut days: BTreeMap<i64, TruthDay> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut shops = Vec::new();
    let mut problems = Vec::new();
    for s in &census.shops {
        let orders: Vec<&CensusOrder> = s
            .orders
            .iter()
            .filter(|o| o.created_at >= since && o.created_at < until)
            .collect();
        let found = store
            .census_lookup(
                s.shop.clone(),
                s.ad_account_id.clone(),
                orders.iter().map(|o| o.order_id.clone()).collect(),
            )
            .await?;
        let (mut not_in_ledger, mut never_received) = (0, 0);
        for (o, f) in orders.iter().zip(&found) {
            if f.in_ledger {
                continue;
            }
            not_in_ledger += 1;
            let day = o.created_at.div_euclid(86_400) * 86_400;
            let d = days.entry(day).or_insert_with(|| TruthDay {
                day,
                ..TruthDay::default()
            });
            let delivered = f.purchase_state.as_deref() == Some("delivered");
            d.orders += 1;
            d.delivered += i64::from(delivered);
            d.browser_seen += i64::from(f.browser_seen);
            d.recovered += i64::from(delivered && !f.browser_seen);
            if delivered {
                continue;
            }
            let too_old = o.created_at < now - max_event_age_secs;
            let (outcome, reason) = match f.purchase_state.as_deref() {
                None => {
                    never_received += 1;
                    let reason = if too_old {
                        "never received; older than Pinterest's window, it can no longer be sent"
                            .to_owned()
                    } else {
                        format!(
                            "never received; run pincapi shopify backfill --since {} to send it",
                            day_label(day)
                        )
                    };
                    (NEVER_RECEIVED, reason)
                }
                Some(state) => (
                    BROWSER_ONLY,
                    format!("only the browser reported it; its purchase is {state}, not delivered"),
                ),
            };
            missing.push(MissingOrder {
                shop: s.shop.clone(),
                order_id: o.order_id.clone(),
                ad_account_id: s.ad_account_id.clone(),
                created_at: o.created_at,
                outcome: outcome.to_owned(),
                reason: Some(reason),
            });
        }
        if let Some(e) = &s.error {
            problems.push(format!(
                "shop {}: the order census failed, so its orders count from the ledger only: {e}",
                s.shop
            ));
        } else if s.truncated {
            problems.push(format!(
                "shop {}: the order census stopped at {} pages; orders older than the ones \
                 listed count from the ledger only",
                s.shop, s.pages
            ));
        }
        shops.push(ShopCensusReport {
            shop: s.shop.clone(),
            ad_account_id: s.ad_account_id.clone(),
            pages: s.pages,
            listed: s.listed,
            orders: orders.len() as i64,
            not_in_ledger,
            never_received,
            truncated: s.truncated,
            error: s.error.clone(),
        });
    }
    missing.sort_by(|a, b| (a.created_at, &a.order_id).cmp(&(b.created_at, &b.order_id)));
    Ok(CensusTruth {
        days: days.into_values().collect(),
        missing,
        counted: census.shops.iter().any(|s| s.error.is_none()),
        report: CensusReport {
            ran_at_ms: census.ran_at_ms,
            shops,
            problems,
        },
    })
}

/// `YYYY-MM-DD` of a Unix-seconds UTC midnight.
pub fn day_label(day: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(day) {
        Ok(t) => {
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        }
        Err(_) => day.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::config::shopify as shop_config;

    fn shop(purchase_topic: &str) -> Shop {
        let c = from_toml(&format!(
            "ad_account_id = \"111\"\npinterest_token = \"t\"\n[[shopify.shops]]\n\
             domain = \"a.myshopify.com\"\nsecrets = [\"x\"]\naccess_token = \"shpat\"\n\
             purchase_topic = \"{purchase_topic}\"\ntest_orders = \"send_as_test\"\n"
        ))
        .unwrap();
        let s = shop_config::shops(&c).unwrap().remove(0);
        assert!(s.polls());
        s
    }

    fn raw(v: serde_json::Value) -> Value {
        v
    }

    #[test]
    fn only_the_census_fields_decide_whether_an_order_is_a_conversion() {
        let create = shop("orders/create");
        let order = |extra: serde_json::Value| {
            let mut o = serde_json::json!({"id": "gid://shopify/Order/42",
                "createdAt": "2026-11-20T10:00:00Z", "test": false, "cancelledAt": null,
                "displayFinancialStatus": "PAID"});
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            raw(o)
        };
        let c = classify(&create, order(serde_json::json!({}))).unwrap();
        assert!(c.conversion);
        assert_eq!(c.order_id, "42");
        for not in [
            serde_json::json!({"test": true}),
            serde_json::json!({"cancelledAt": "2026-11-20T10:01:00Z"}),
            serde_json::json!({"displayFinancialStatus": "VOIDED"}),
        ] {
            assert!(
                !classify(&create, order(not.clone())).unwrap().conversion,
                "{not}"
            );
        }
        let paid = shop("orders/paid");
        assert!(
            classify(&paid, order(serde_json::json!({})))
                .unwrap()
                .conversion
        );
        assert!(
            !classify(
                &paid,
                order(serde_json::json!({"displayFinancialStatus": "PENDING"}))
            )
            .unwrap()
            .conversion
        );
        assert!(classify(&create, raw(serde_json::json!({"createdAt": 5}))).is_none());
    }

    #[test]
    fn a_narrowed_census_keeps_later_orders_and_knows_when_it_covered_the_window() {
        let census = Census {
            since: 1000,
            ran_at_ms: 5_000_000,
            shops: vec![ShopCensus {
                shop: "a".into(),
                ad_account_id: "1".into(),
                pages: 10,
                listed: 3,
                not_conversions: 0,
                orders: [1500, 2500, 3500]
                    .iter()
                    .map(|t| CensusOrder {
                        order_id: t.to_string(),
                        created_at: *t,
                    })
                    .collect(),
                oldest_listed: Some(1500),
                truncated: true,
                error: None,
            }],
        };
        let n = census.narrowed(2000);
        assert_eq!(n.since, 2000);
        assert_eq!(n.shops[0].orders.len(), 2);
        assert!(
            !n.shops[0].truncated,
            "the listing reached back before 2000"
        );
        assert!(census.narrowed(1200).shops[0].truncated);
    }
}
