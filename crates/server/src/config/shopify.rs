//! `[shopify]` configuration: the shops the gateway serves, and how each is resolved into a
//! [`Shop`] (its secrets, its ad account, its Admin API access and its mapping options).
//!
//! Two ways to configure shops, which can be combined:
//!
//! - the single-shop shorthand: `PINCAPI_SHOPIFY_SHOP_DOMAIN` (top-level
//!   `shopify_shop_domain`) with the app's `[shopify] client_id` / `client_secret`
//!   (`PINCAPI_SHOPIFY__CLIENT_ID`, `PINCAPI_SHOPIFY__CLIENT_SECRET`), or with a webhook secret
//!   (`PINCAPI_SHOPIFY_WEBHOOK_SECRET`) and a legacy `[shopify] access_token`; `[shopify]
//!   install` and `admin_api_base` as for a shop. It maps to one shop on the first configured
//!   ad account with the default mapping options;
//! - `[[shopify.shops]]`, one table per shop, each routed to its own ad account:
//!
//! ```toml
//! [[shopify.shops]]
//! domain = "example.myshopify.com"
//! client_id = "..."                        # the app's client id (Dev Dashboard)
//! client_secret = "..."                    # its secret: Admin API tokens, and webhooks
//! # install = true                         # a store of another organisation: tokens come
//! #                                        # from /shopify/install, not client credentials
//! # secrets = ["new-secret", "old-secret"] # webhook secrets, if not the client secret
//! # access_token = "shpat_..."             # a legacy custom app's static token instead
//! ad_account_id = "549755885175"           # default: the first configured account
//! # admin_api_base = "https://example.myshopify.com/admin/api/2026-04"
//! purchase_topic = "orders/create"         # or "orders/paid"
//! content_ids = "variant_id"               # product_id | variant_id | sku
//! value = "subtotal"                       # subtotal | total
//! currency = "shop"                        # shop | presentment
//! test_orders = "ignore"                   # ignore | send_as_test
//! ```

use std::time::Duration;

use super::{ConfigError, invalid};
use pincapi_core::shopify::{
    Consent, ConsentDenied, ContentIdScheme, CurrencySource, MapOptions, TestOrders, Topic,
    ValueSource,
};
use serde::{Deserialize, Serialize};

use super::{Config, Secret};

/// The Admin API version the poller asks for unless a shop's `admin_api_base` names another.
pub const ADMIN_API_VERSION: &str = "2026-04";

/// Largest webhook body accepted by default: 4 MiB. Shopify's order payloads grow by a few KB
/// per line item, so this holds orders with well over a thousand lines; a body over the limit
/// is answered 413 (Shopify retries it, and the poller still finds the order).
pub const DEFAULT_MAX_WEBHOOK_BYTES: usize = 4 * 1024 * 1024;

/// Shopify settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopifyConfig {
    /// Shops, each with its own secrets and ad account.
    pub shops: Vec<ShopConfig>,
    /// Single-shop shorthand: the app's client id.
    pub client_id: Option<String>,
    /// Single-shop shorthand: the app's client secret.
    pub client_secret: Secret,
    /// Single-shop shorthand: tokens come from the install flow (`/shopify/install`).
    pub install: bool,
    /// Single-shop shorthand: a legacy custom app's static Admin API access token.
    pub access_token: Secret,
    /// Single-shop shorthand: the Admin API base URL of `shopify_shop_domain`.
    pub admin_api_base: Option<String>,
    /// How often the poller asks each shop's Admin API for orders, milliseconds (5 minutes).
    pub poll_interval_ms: u64,
    /// How far behind the newest order it has seen the poller starts its next query, seconds
    /// (10 minutes): Shopify's `created_at_min` is second-granular and orders can become
    /// visible late, so the windows overlap; the store dedupes what is seen twice.
    pub poll_overlap_secs: u64,
    /// Orders per Admin API page, 1..=250 (Shopify's maximum, the default).
    pub poll_page_size: usize,
    /// Largest webhook body accepted, bytes.
    pub max_body_bytes: usize,
    /// Replaced by the top-level `public_url`; refused when set.
    #[serde(skip_serializing)]
    pub gateway_url: Option<String>,
    /// Whether the reconciliation poller runs for shops with Admin API access (default
    /// true). `false` leaves recovery to the operator (`pincapi shopify backfill`); the access
    /// still serves the quality report's order census.
    pub poller: bool,
    /// How often `serve` checks each shop's webhook subscriptions and re-creates the ones
    /// Shopify deleted, seconds (900; at least 1). Needs `public_url`.
    pub webhook_check_interval_secs: u64,
    /// A backfill over more orders than this runs as a bulk operation (10,000).
    pub bulk_threshold: u64,
    /// `respect` (default): the consent the custom pixel recorded on the cart decides what is
    /// sent for the order; `ignore`: orders are sent regardless.
    pub consent: Consent,
    /// What becomes of an order whose buyer did not allow marketing: `skip` (default: not
    /// sent, recorded as skipped with reason `consent`) or `opt_out` (sent with
    /// `opt_out: true`).
    pub consent_denied: ConsentDenied,
}

impl Default for ShopifyConfig {
    fn default() -> Self {
        ShopifyConfig {
            shops: Vec::new(),
            client_id: None,
            client_secret: Secret::default(),
            install: false,
            access_token: Secret::default(),
            admin_api_base: None,
            poll_interval_ms: 5 * 60 * 1000,
            poll_overlap_secs: 10 * 60,
            poll_page_size: 250,
            max_body_bytes: DEFAULT_MAX_WEBHOOK_BYTES,
            gateway_url: None,
            poller: true,
            webhook_check_interval_secs: 900,
            bulk_threshold: 10_000,
            consent: Consent::Respect,
            consent_denied: ConsentDenied::Skip,
        }
    }
}

/// One shop in `[[shopify.shops]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopConfig {
    /// The shop's `*.myshopify.com` domain, as Shopify sends it in `X-Shopify-Shop-Domain`.
    pub domain: String,
    /// Webhook signing secrets: the key shown in the Shopify admin for webhooks created there,
    /// or the app's client secret (the default when `client_secret` is set). Two during a
    /// rotation; either verifies.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The app's client id (Dev Dashboard → the app → Settings).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The app's client secret: Admin API tokens through the client-credentials grant (or the
    /// install flow), and the webhooks' signatures.
    #[serde(default)]
    pub client_secret: Secret,
    /// The app is installed on a store of another organisation: its tokens come from the
    /// install flow (`/shopify/install?shop=`), kept sealed in the store and refreshed.
    #[serde(default)]
    pub install: bool,
    /// The ad account this shop's events go to; default: the first configured account.
    #[serde(default)]
    pub ad_account_id: Option<String>,
    /// Admin API base URL, `{origin}/admin/api/{version}`; default
    /// `https://{domain}/admin/api/2026-04`. Tokens and installs go to the same origin.
    #[serde(default)]
    pub admin_api_base: Option<String>,
    /// A legacy custom app's static Admin API access token (`shpat_…`), instead of
    /// `client_id`/`client_secret`.
    #[serde(default)]
    pub access_token: Secret,
    /// The order topic that counts as the purchase: `orders/create` (default) or `orders/paid`.
    #[serde(default = "default_purchase_topic")]
    pub purchase_topic: Topic,
    #[serde(default)]
    pub content_ids: ContentIdScheme,
    #[serde(default)]
    pub value: ValueSource,
    #[serde(default)]
    pub currency: CurrencySource,
    #[serde(default)]
    pub test_orders: TestOrders,
    /// The storefront's domain, for making a relative `landing_site` absolute; default: `domain`.
    #[serde(default)]
    pub storefront_domain: Option<String>,
    /// `partner_name` on every event; default none.
    #[serde(default)]
    pub partner_name: Option<String>,
    /// `checkouts/*` become `initiate_checkout` (default true).
    #[serde(default = "yes")]
    pub checkouts: bool,
    /// `carts/*` become `add_to_cart` when they name a buyer (default true).
    #[serde(default = "yes")]
    pub carts: bool,
    /// `customers/create` becomes `signup` (default true).
    #[serde(default = "yes")]
    pub customers: bool,
}

fn default_purchase_topic() -> Topic {
    Topic::OrdersCreate
}

fn yes() -> bool {
    true
}

impl ShopConfig {
    /// A shop with the default options.
    pub fn new(domain: impl Into<String>) -> ShopConfig {
        ShopConfig {
            domain: domain.into(),
            secrets: Vec::new(),
            client_id: None,
            client_secret: Secret::default(),
            install: false,
            ad_account_id: None,
            admin_api_base: None,
            access_token: Secret::default(),
            purchase_topic: Topic::OrdersCreate,
            content_ids: ContentIdScheme::default(),
            value: ValueSource::default(),
            currency: CurrencySource::default(),
            test_orders: TestOrders::default(),
            storefront_domain: None,
            partner_name: None,
            checkouts: true,
            carts: true,
            customers: true,
        }
    }
}

/// A shop resolved from the configuration: everything a webhook or the poller needs.
#[derive(Debug, Clone)]
pub struct Shop {
    /// Normalised domain (lower case, no scheme, no trailing slash).
    pub domain: String,
    pub secrets: Vec<Secret>,
    pub ad_account_id: String,
    /// Without a trailing slash.
    pub admin_api_base: String,
    /// How the gateway gets Admin API tokens for the shop.
    pub auth: AdminAuth,
    pub purchase_topic: Topic,
    pub options: MapOptions,
}

/// How a shop's Admin API tokens are obtained.
#[derive(Debug, Clone)]
pub enum AdminAuth {
    /// No Admin API access: webhooks only.
    None,
    /// A legacy custom app's static token.
    Static(Secret),
    /// The client-credentials grant (an app of the shop's own organisation): 24-hour tokens.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    /// The install flow (a store of another organisation): expiring offline tokens with a
    /// rotating refresh token, sealed in the store.
    Install {
        client_id: String,
        client_secret: Secret,
    },
}

impl Shop {
    /// Whether the shop has Admin API access: its poller can run (unless
    /// `shopify.poller = false`), and the quality report counts its orders with the census.
    pub fn polls(&self) -> bool {
        !matches!(self.auth, AdminAuth::None)
    }

    /// `scheme://host[:port]` of `admin_api_base`: where tokens and installs go.
    pub fn origin(&self) -> &str {
        let after_scheme = self.admin_api_base.find("://").map_or(0, |i| i + 3);
        let end = self.admin_api_base[after_scheme..]
            .find('/')
            .map_or(self.admin_api_base.len(), |i| after_scheme + i);
        &self.admin_api_base[..end]
    }

    /// `{admin_api_base}/graphql.json`.
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql.json", self.admin_api_base)
    }

    /// The app's client id and secret, if the shop has them.
    pub fn app(&self) -> Option<(&str, &Secret)> {
        match &self.auth {
            AdminAuth::ClientCredentials {
                client_id,
                client_secret,
            }
            | AdminAuth::Install {
                client_id,
                client_secret,
            } => Some((client_id, client_secret)),
            _ => None,
        }
    }
}

impl ShopifyConfig {
    /// The poll interval as a Duration (at least 10 ms, so a zero cannot spin).
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    /// Checks the Shopify settings against the rest of the configuration; errors name the key.
    /// (`Config::validate` does not call this yet; see the `shopify` module docs.)
    pub fn validate(config: &Config) -> Result<(), ConfigError> {
        shops(config).map(|_| ())
    }
}

/// Normalises a shop domain as Shopify sends it: trimmed, lower case, without `https://` and
/// a trailing slash.
pub fn normalize_domain(d: &str) -> String {
    let d = d.trim().to_ascii_lowercase();
    let d = d
        .strip_prefix("https://")
        .or_else(|| d.strip_prefix("http://"))
        .unwrap_or(&d);
    d.trim_end_matches('/').to_owned()
}

/// Every configured shop, resolved and checked: the shorthand first, then `shopify.shops`.
pub fn shops(config: &Config) -> Result<Vec<Shop>, ConfigError> {
    let accounts: Vec<String> = config.all_accounts().into_iter().map(|a| a.id).collect();
    let mut out: Vec<Shop> = Vec::new();
    let sc = &config.shopify;
    let has_secret = !config.shopify_webhook_secret.is_empty() || !sc.client_secret.is_empty();
    match (&config.shopify_shop_domain, has_secret) {
        (Some(_), _) => {
            if let Some(shop) = shorthand(config) {
                out.push(resolve(&shop, sc, &accounts, "shopify_shop_domain")?);
            }
        }
        (None, true) => invalid!(
            "shopify_shop_domain: a Shopify secret is set but not the shop's domain; \
             set PINCAPI_SHOPIFY_SHOP_DOMAIN (e.g. example.myshopify.com)"
        ),
        (None, false) => {
            if !sc.access_token.is_empty() || sc.client_id.is_some() {
                invalid!(
                    "shopify_shop_domain: [shopify] access_token or client_id is set for the \
                     single-shop shorthand, but not the shop's domain"
                );
            }
        }
    }
    for (i, shop) in sc.shops.iter().enumerate() {
        let resolved = resolve(shop, sc, &accounts, &format!("shopify.shops[{i}]"))?;
        if out.iter().any(|s| s.domain == resolved.domain) {
            invalid!(
                "shopify.shops[{i}].domain: shop {} is configured twice",
                resolved.domain
            );
        }
        out.push(resolved);
    }
    if !(1..=250).contains(&sc.poll_page_size) {
        invalid!("shopify.poll_page_size: must be 1..=250 (Shopify's maximum page)");
    }
    if sc.webhook_check_interval_secs == 0 {
        invalid!("shopify.webhook_check_interval_secs: must be at least 1");
    }
    if sc.bulk_threshold == 0 {
        invalid!("shopify.bulk_threshold: must be at least 1");
    }
    if sc.max_body_bytes < 1024 {
        invalid!("shopify.max_body_bytes: must be at least 1024");
    }
    Ok(out)
}

/// Whether a Shopify shop sends its orders to `ad_account_id`: then the browser's purchases
/// have an order webhook to wait for (`ingest.browser_purchase_hold_secs`). A configuration
/// that does not resolve counts every configured shop: waiting longer only delays.
pub fn has_shop_for(config: &Config, ad_account_id: &str) -> bool {
    match shops(config) {
        Ok(shops) => shops.iter().any(|s| s.ad_account_id == ad_account_id),
        Err(_) => config.shopify_shop_domain.is_some() || !config.shopify.shops.is_empty(),
    }
}

/// The resolved shop for a webhook's shop domain, if it is configured. `Err` when it is
/// configured but unusable (e.g. routed to an ad account that does not exist).
pub fn find_shop(config: &Config, domain: &str) -> Result<Option<Shop>, String> {
    let domain = normalize_domain(domain);
    let accounts: Vec<String> = config.all_accounts().into_iter().map(|a| a.id).collect();
    if let Some(d) = &config.shopify_shop_domain
        && normalize_domain(d) == domain
        && let Some(shop) = shorthand(config)
    {
        return resolve(&shop, &config.shopify, &accounts, "shopify_shop_domain")
            .map(Some)
            .map_err(|e| e.to_string());
    }
    for (i, shop) in config.shopify.shops.iter().enumerate() {
        if normalize_domain(&shop.domain) == domain {
            return resolve(
                shop,
                &config.shopify,
                &accounts,
                &format!("shopify.shops[{i}]"),
            )
            .map(Some)
            .map_err(|e| e.to_string());
        }
    }
    Ok(None)
}

/// The single-shop shorthand as a shop's table, if `shopify_shop_domain` is set.
fn shorthand(config: &Config) -> Option<ShopConfig> {
    let sc = &config.shopify;
    let mut shop = ShopConfig::new(config.shopify_shop_domain.clone()?);
    if !config.shopify_webhook_secret.is_empty() {
        shop.secrets = vec![config.shopify_webhook_secret.clone()];
    }
    shop.client_id = sc.client_id.clone();
    shop.client_secret = sc.client_secret.clone();
    shop.install = sc.install;
    shop.access_token = sc.access_token.clone();
    shop.admin_api_base = sc.admin_api_base.clone();
    Some(shop)
}

fn resolve(
    shop: &ShopConfig,
    settings: &ShopifyConfig,
    accounts: &[String],
    key: &str,
) -> Result<Shop, ConfigError> {
    let domain = normalize_domain(&shop.domain);
    if domain.is_empty() || domain.contains('/') || domain.contains(' ') {
        invalid!("{key}.domain: must be a shop domain like example.myshopify.com");
    }
    let client_id = shop
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let auth = match (
        client_id,
        shop.client_secret.is_empty(),
        shop.access_token.is_empty(),
    ) {
        (Some(_), _, false) => invalid!(
            "{key}.access_token: give either a static access_token or client_id and \
             client_secret, not both"
        ),
        (Some(id), false, true) => {
            let (client_id, client_secret) = (id.to_owned(), shop.client_secret.clone());
            if shop.install {
                AdminAuth::Install {
                    client_id,
                    client_secret,
                }
            } else {
                AdminAuth::ClientCredentials {
                    client_id,
                    client_secret,
                }
            }
        }
        (Some(_), true, _) => {
            invalid!("{key}.client_secret: client_id is set but not the app's client secret")
        }
        (None, false, _) => {
            invalid!("{key}.client_id: client_secret is set but not the app's client id")
        }
        (None, true, false) => AdminAuth::Static(shop.access_token.clone()),
        (None, true, true) => AdminAuth::None,
    };
    if shop.install && !matches!(auth, AdminAuth::Install { .. }) {
        invalid!("{key}.install: the install flow needs the app's client_id and client_secret");
    }
    // The client secret signs the app's webhooks; secrets of webhooks created in the admin
    // are given apart.
    let mut secrets = shop.secrets.clone();
    if secrets.is_empty() && !shop.client_secret.is_empty() {
        secrets.push(shop.client_secret.clone());
    }
    if secrets.is_empty() || secrets.len() > 2 {
        invalid!(
            "{key}.secrets: give one webhook signing secret (or the app's client_secret), or \
             two during a rotation (found {})",
            secrets.len()
        );
    }
    if secrets.iter().any(Secret::is_empty) {
        invalid!("{key}.secrets: a secret is empty");
    }
    let ad_account_id = match &shop.ad_account_id {
        Some(id) => {
            if !accounts.contains(id) {
                invalid!(
                    "{key}.ad_account_id: ad account {id} is not configured; it must be one of \
                     ad_account_id or [[accounts]]"
                );
            }
            id.clone()
        }
        None => match accounts.first() {
            Some(id) => id.clone(),
            None => invalid!("{key}.ad_account_id: no Pinterest ad account is configured"),
        },
    };
    if !matches!(shop.purchase_topic, Topic::OrdersCreate | Topic::OrdersPaid) {
        invalid!("{key}.purchase_topic: must be orders/create or orders/paid");
    }
    let admin_api_base = shop
        .admin_api_base
        .clone()
        .unwrap_or_else(|| format!("https://{domain}/admin/api/{ADMIN_API_VERSION}"));
    let admin_api_base = admin_api_base.trim_end_matches('/').to_owned();
    if !(admin_api_base.starts_with("https://") || admin_api_base.starts_with("http://")) {
        invalid!("{key}.admin_api_base: must be an http(s) URL ending in /admin/api/<version>");
    }
    if !admin_api_base.contains("/admin/api/") {
        invalid!(
            "{key}.admin_api_base: must end in /admin/api/<version>, e.g. \
             https://{domain}/admin/api/{ADMIN_API_VERSION}"
        );
    }
    let options = MapOptions {
        content_ids: shop.content_ids,
        value: shop.value,
        currency: shop.currency,
        test_orders: shop.test_orders,
        shop_domain: Some(
            shop.storefront_domain
                .as_deref()
                .map(normalize_domain)
                .unwrap_or_else(|| domain.clone()),
        ),
        partner_name: shop.partner_name.clone(),
        checkouts: shop.checkouts,
        carts: shop.carts,
        customers: shop.customers,
        consent: settings.consent,
        consent_denied: settings.consent_denied,
    };
    Ok(Shop {
        domain,
        secrets,
        ad_account_id,
        admin_api_base,
        auth,
        purchase_topic: shop.purchase_topic,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    const BASE: &str = "ad_account_id = \"111\"\npinterest_token = \"t\"\n\
                        [[accounts]]\nid = \"222\"\ntoken = \"t2\"\n";

    #[test]
    fn the_shorthand_maps_to_one_shop_on_the_first_account() {
        let c = from_toml(&format!(
            "shopify_webhook_secret = \"s\"\nshopify_shop_domain = \"Shop.MyShopify.com\"\n{BASE}"
        ))
        .unwrap();
        let shops = shops(&c).unwrap();
        assert_eq!(shops.len(), 1);
        assert_eq!(shops[0].domain, "shop.myshopify.com");
        assert_eq!(shops[0].ad_account_id, "111");
        assert_eq!(
            shops[0].admin_api_base,
            "https://shop.myshopify.com/admin/api/2026-04"
        );
        assert!(!shops[0].polls());
        assert!(
            find_shop(&c, "https://shop.myshopify.com/")
                .unwrap()
                .is_some()
        );
        assert!(find_shop(&c, "other.myshopify.com").unwrap().is_none());
    }

    #[test]
    fn shops_route_to_their_account_and_bad_settings_name_the_key() {
        let c = from_toml(&format!(
            "{BASE}[[shopify.shops]]\ndomain = \"a.myshopify.com\"\nsecrets = [\"x\", \"y\"]\n\
             ad_account_id = \"222\"\ntest_orders = \"send_as_test\"\ncontent_ids = \"sku\"\n"
        ))
        .unwrap();
        let s = &shops(&c).unwrap()[0];
        assert_eq!(s.ad_account_id, "222");
        assert_eq!(s.secrets.len(), 2);
        assert_eq!(s.options.test_orders, TestOrders::SendAsTest);
        assert_eq!(s.options.content_ids, ContentIdScheme::Sku);

        for (extra, key) in [
            (
                "[[shopify.shops]]\ndomain = \"a.myshopify.com\"\nsecrets = [\"x\"]\nad_account_id = \"999\"\n",
                "shopify.shops[0].ad_account_id",
            ),
            (
                "[[shopify.shops]]\ndomain = \"a.myshopify.com\"\nsecrets = []\n",
                "shopify.shops[0].secrets",
            ),
            (
                "[[shopify.shops]]\ndomain = \"a.myshopify.com\"\nsecrets = [\"1\", \"2\", \"3\"]\n",
                "shopify.shops[0].secrets",
            ),
            (
                "[[shopify.shops]]\ndomain = \"a.myshopify.com\"\nsecrets = [\"x\"]\npurchase_topic = \"orders/updated\"\n",
                "shopify.shops[0].purchase_topic",
            ),
        ] {
            let c = from_toml(&format!("{BASE}{extra}")).unwrap();
            let err = ShopifyConfig::validate(&c).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
        let c = from_toml(&format!("shopify_webhook_secret = \"s\"\n{BASE}")).unwrap();
        let err = ShopifyConfig::validate(&c).unwrap_err().to_string();
        assert!(err.starts_with("shopify_shop_domain"), "{err}");
    }
}
