//! The Shopify part of the audit: the shop's orders of the period through the Admin API
//! (read-only, the poller's `OrdersPage` with a `created_at` filter), each mapped as a
//! webhook would be, so the match-key shares are those of the events CAPI would send; orders
//! and value per UTC day; the POS and test shares; the webhook subscriptions against the
//! topics the shop needs; and the consent setting.

use std::collections::BTreeMap;
use std::sync::Arc;

use pincapi_core::quality::percent;
use pincapi_core::shopify::{self, Consent, MapOptions, Mapped, Order};
use serde::Serialize;

use super::{AuditArgs, Finding};
use crate::clock::SystemClock;
use crate::config::shopify::normalize_domain;
use crate::config::{Config, StoreUrl};
use crate::quality::report::day_label;
use crate::shopify::access::ShopAccess;
use crate::shopify::admin::rfc3339;
use crate::shopify::connect::{self, graphql_topic, needed_topics};
use crate::shopify::orders::{OrderPages, ParsedOrder};
use crate::store::SharedStore;
use crate::store::open::{Opener, open_store};

/// Pages of orders read at most (250 each).
const MAX_PAGES: usize = 40;

/// One UTC day of the shop's orders.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ShopifyDay {
    pub day: String,
    /// Web orders that are conversions (not test, not cancelled, not POS).
    pub orders: i64,
    /// Their value as CAPI would send it (shop currency), summed.
    pub value: f64,
}

/// Percent of the web orders whose event would carry each key.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KeyShares {
    pub email: f64,
    pub phone: f64,
    /// City, state, postcode or country.
    pub address: f64,
    pub ip: f64,
}

/// What the Shopify part found.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifySection {
    pub shop: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_account_id: Option<String>,
    /// Orders created in the period, as listed.
    pub listed: i64,
    pub web_orders: i64,
    pub pos_orders: i64,
    pub test_orders: i64,
    /// Cancelled, voided or otherwise not a conversion.
    pub other_orders: i64,
    /// Web orders whose event CAPI could not send: no email, mobile ad id, or IP with user
    /// agent.
    pub unsendable_orders: i64,
    pub pos_percent: f64,
    pub test_percent: f64,
    pub value: f64,
    pub currency: Option<String>,
    pub days: Vec<ShopifyDay>,
    pub key_shares: KeyShares,
    /// Topics subscribed, and the needed ones that are not.
    pub webhooks: Vec<String>,
    pub webhooks_missing: Vec<String>,
    /// `shopify.consent` for the shop: `respect` or `ignore`.
    pub consent: String,
    /// The listing stopped at the page limit.
    pub truncated: bool,
}

/// Opens the configured store when one exists already (the audit never creates one).
async fn existing_store(config: &Config) -> Option<SharedStore> {
    let exists = match config.store_url().ok()? {
        StoreUrl::Sqlite(path) => path.exists(),
        StoreUrl::Postgres(_) => true,
    };
    if !exists {
        return None;
    }
    open_store(config, Opener::Tool).await.ok().map(|o| o.store)
}

/// Audits the shop; also returns the store it opened, for the other parts.
pub async fn audit(
    args: &AuditArgs,
    config: &Config,
    since: i64,
    now: i64,
    findings: &mut Vec<Finding>,
) -> anyhow::Result<(Option<ShopifySection>, Option<SharedStore>)> {
    let store = existing_store(config).await;
    let access = ShopAccess::new(config, store.clone(), SystemClock::shared())?;
    let api = match &args.shop {
        Some(domain) => {
            let domain = normalize_domain(domain);
            match access.api(&domain) {
                Some(api) => Some(Arc::clone(api)),
                None => anyhow::bail!(
                    "--shop {domain}: not configured with Admin API access (client_id and \
                     client_secret, or an access_token, in [[shopify.shops]])"
                ),
            }
        }
        None => access.apis().next().cloned(),
    };
    let Some(api) = api else {
        findings.push(Finding::new(
            "shopify_not_read",
            "warning",
            &args.site,
            "no shop with Admin API access is configured: orders, match keys and webhooks were not audited",
            "add the shop to [[shopify.shops]] with client_id and client_secret, then pincapi audit --shop DOMAIN",
        ));
        return Ok((None, store));
    };
    let shop = api.shop().clone();
    let mut pages = OrderPages::new(&api, format!("created_at:>='{}'", rfc3339(since)?), 250);
    let mut s = ShopifySection {
        shop: shop.domain.clone(),
        ad_account_id: Some(shop.ad_account_id.clone()).filter(|a| !a.is_empty()),
        listed: 0,
        web_orders: 0,
        pos_orders: 0,
        test_orders: 0,
        other_orders: 0,
        unsendable_orders: 0,
        pos_percent: 0.0,
        test_percent: 0.0,
        value: 0.0,
        currency: None,
        days: Vec::new(),
        key_shares: KeyShares::default(),
        webhooks: Vec::new(),
        webhooks_missing: Vec::new(),
        consent: format!("{:?}", shop.options.consent).to_ascii_lowercase(),
        truncated: false,
    };
    let mut days: BTreeMap<i64, ShopifyDay> = BTreeMap::new();
    let (mut em, mut ph, mut addr, mut ip) = (0, 0, 0, 0);
    let mut read = 0;
    while let Some(page) = pages.next().await? {
        read += 1;
        for parsed in page {
            let ParsedOrder::Order(order) = parsed else {
                continue;
            };
            let Some(created) = order.created_at.filter(|c| *c >= since && *c <= now) else {
                continue;
            };
            s.listed += 1;
            if order.test == Some(true) {
                s.test_orders += 1;
                continue;
            }
            if order.source_name.as_deref() == Some("pos") {
                s.pos_orders += 1;
                continue;
            }
            let topic = shop.purchase_topic;
            // The keys an order carries, whatever the buyer's consent decides later.
            let options = MapOptions {
                consent: Consent::Ignore,
                ..shop.options.clone()
            };
            let event = match shopify::map_order(topic, &order, topic, &options) {
                Ok(Mapped::Event { event, .. }) => event,
                Ok(Mapped::Skipped { .. }) => {
                    // A real order CAPI cannot send: no email, no IP with user agent.
                    s.web_orders += 1;
                    s.unsendable_orders += 1;
                    add_day(&mut days, created, subtotal(&order));
                    s.value += subtotal(&order);
                    continue;
                }
                _ => {
                    s.other_orders += 1;
                    continue;
                }
            };
            s.web_orders += 1;
            let u = &event.user_data;
            em += i64::from(!u.em.is_empty());
            ph += i64::from(!u.ph.is_empty());
            addr += i64::from(
                !u.ct.is_empty() || !u.st.is_empty() || !u.zp.is_empty() || !u.country.is_empty(),
            );
            ip += i64::from(u.client_ip_address.is_some());
            let custom = event.custom_data.as_ref();
            let value: f64 = custom
                .and_then(|c| c.value.as_ref())
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0.0);
            if s.currency.is_none() {
                s.currency = custom
                    .and_then(|c| c.currency.as_ref())
                    .map(|c| c.as_str().to_owned());
            }
            s.value += value;
            add_day(&mut days, created, value);
        }
        if read >= MAX_PAGES && pages.has_more() {
            s.truncated = true;
            break;
        }
    }
    s.value = (s.value * 100.0).round() / 100.0;
    s.days = days
        .into_values()
        .map(|mut d| {
            d.value = (d.value * 100.0).round() / 100.0;
            d
        })
        .collect();
    s.pos_percent = percent(s.pos_orders, s.listed);
    s.test_percent = percent(s.test_orders, s.listed);
    s.key_shares = KeyShares {
        email: percent(em, s.web_orders),
        phone: percent(ph, s.web_orders),
        address: percent(addr, s.web_orders),
        ip: percent(ip, s.web_orders),
    };
    match connect::subscriptions(&api).await {
        Ok(subs) => {
            s.webhooks = subs.iter().map(|w| w.topic.clone()).collect();
            for need in needed_topics(&shop) {
                let topic = graphql_topic(need.topic);
                if !s.webhooks.contains(&topic) {
                    s.webhooks_missing.push(need.topic.as_str().to_owned());
                }
            }
        }
        Err(e) => findings.push(Finding::new(
            "webhooks_unread",
            "warning",
            &s.shop,
            format!("the webhook subscriptions could not be read: {e}"),
            "grant the app read access to webhooks, or run pincapi shopify connect",
        )),
    }
    judge(&s, findings);
    Ok((Some(s), store))
}

fn add_day(days: &mut BTreeMap<i64, ShopifyDay>, created: i64, value: f64) {
    let day = created.div_euclid(86_400) * 86_400;
    let d = days.entry(day).or_insert_with(|| ShopifyDay {
        day: day_label(day),
        ..ShopifyDay::default()
    });
    d.orders += 1;
    d.value += value;
}

/// The order's subtotal in the shop's currency, for an order the mapping could not send.
fn subtotal(order: &Order) -> f64 {
    order
        .subtotal_price_set
        .as_ref()
        .and_then(|s| s.shop_money.as_ref())
        .and_then(|m| m.amount.as_ref())
        .or(order.subtotal_price.as_ref())
        .and_then(|a| a.as_str().parse().ok())
        .unwrap_or(0.0)
}

fn judge(s: &ShopifySection, findings: &mut Vec<Finding>) {
    let subject = s.shop.as_str();
    if s.webhooks_missing.is_empty() {
        findings.push(Finding::new(
            "webhooks",
            "ok",
            subject,
            "every order webhook pincapi needs is subscribed",
            "",
        ));
    } else {
        findings.push(Finding::new(
            "webhooks_missing",
            "error",
            subject,
            format!(
                "no webhook subscription for {}: those orders reach Pinterest only through the Tag",
                s.webhooks_missing.join(", ")
            ),
            "pincapi shopify connect",
        ));
    }
    if s.web_orders == 0 {
        return;
    }
    let key = |check: &str, share: f64, floor: f64, what: &str, fix: &str| {
        if share >= floor {
            Finding::new(
                format!("{check}_share"),
                "ok",
                subject,
                format!("{share:.1} % of orders carry {what}"),
                "",
            )
        } else {
            Finding::new(
                format!("orders_without_{check}"),
                "warning",
                subject,
                format!(
                    "only {share:.1} % of orders carry {what}: those purchases match fewer Pinterest users"
                ),
                fix,
            )
        }
    };
    let k = &s.key_shares;
    findings.push(key(
        "email",
        k.email,
        90.0,
        "an email",
        "require an email at checkout (Shopify: Settings → Checkout → Customer contact method)",
    ));
    findings.push(key("phone", k.phone, 50.0, "a phone number", "ask for a phone number at checkout; set ingest.default_country so numbers get their calling code"));
    findings.push(key(
        "address",
        k.address,
        80.0,
        "an address",
        "keep the shipping address required; the gateway hashes city, state, postcode and country",
    ));
    findings.push(key(
        "ip",
        k.ip,
        80.0,
        "the buyer's IP address",
        "keep Shopify's client details (browser_ip); the custom pixel adds IP and user agent",
    ));
    if s.unsendable_orders > 0 {
        findings.push(Finding::new(
            "orders_unsendable",
            "warning",
            subject,
            format!(
                "{} of {} orders carry no email and no IP with user agent: CAPI cannot send them",
                s.unsendable_orders, s.web_orders
            ),
            "install the custom pixel (pincapi shopify pixel) so each order gets the browser's IP and user agent",
        ));
    }
    if s.consent != "respect" {
        findings.push(Finding::new(
            "consent_ignored",
            "warning",
            subject,
            "shopify.consent = ignore: orders are sent whatever the buyer's privacy choice",
            "set shopify.consent = \"respect\" and install the custom pixel (pincapi shopify pixel)",
        ));
    }
}
