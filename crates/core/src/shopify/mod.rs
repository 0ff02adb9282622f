//! Shopify → Pinterest: turns one webhook payload into a conversion event, a ledger entry for
//! reporting, or a plain reason why it is neither.
//!
//! [`map`] is the single entry point for webhook bodies; [`map_order`] does the same for an
//! [`Order`] the caller already parsed (the Admin API poller, whose GraphQL orders
//! [`graphql::GraphqlOrder::into_order`] rewrites into that shape). Everything here is pure:
//! personal data is normalised and hashed inside the mapping, so no raw email, phone, name or
//! address leaves it, not even in an error message.
//!
//! | Topic | Result |
//! | --- | --- |
//! | the purchase topic (`orders/create`, or `orders/paid`) | `checkout`, event id `order-<id>` |
//! | the other of those two, `orders/updated` | ignored, with the order's facts |
//! | `orders/cancelled`, `refunds/create` | a [`LedgerEntry`] |
//! | `checkouts/create`, `checkouts/update` | `initiate_checkout`, event id `checkout-<token>` |
//! | `carts/create`, `carts/update` | `add_to_cart`, event id `cart-<token>-<updated_at>`; skipped unless the payload names the buyer, which Shopify's carts never do |
//! | `customers/create` | `signup`, event id `signup-<customer id>`; needs an email |
//!
//! The field-by-field rules are on the functions in `map.rs` and in `shopify.md` §7.

pub mod graphql;
mod json_path;
mod map;
mod money;
pub(crate) mod url;
pub mod wire;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{ConversionEvent, Currency, EventId, Money};

pub use wire::{
    Address, Amount, Cart, ClientDetails, Customer, LineItem, MoneyBag, MoneySet, NoteAttribute,
    Order, Refund, RefundLineItem, Transaction,
};

/// Which Shopify id becomes a Pinterest content id. It must be the id the merchant's Pinterest
/// catalog uses for its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentIdScheme {
    /// `product_id`: for catalogs with one item per product.
    ProductId,
    /// `variant_id`, the default: catalogs synced from Shopify (Pinterest's Shopify app, and
    /// Shopify's product feeds) list each variant as an item whose id is the variant id, with
    /// the product id as `item_group_id`.
    #[default]
    VariantId,
    /// `sku`: for catalogs uploaded from a feed keyed by SKU.
    Sku,
}

/// Which order amount becomes `custom_data.value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// `subtotal_price`: after discounts, before tax and shipping, as Pinterest recommends.
    #[default]
    Subtotal,
    /// `total_price`: what the buyer paid, tax and shipping included.
    Total,
}

/// Which currency the amounts are reported in. Amounts and the currency always come from the
/// same money bag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrencySource {
    /// The shop's currency (`*_set.shop_money`, or `currency` with the un-suffixed amounts).
    #[default]
    Shop,
    /// The buyer's currency (`*_set.presentment_money`), which is what the browser pixel sees.
    Presentment,
}

/// What to do with orders paid through a test gateway (`test: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOrders {
    /// Do not send them.
    #[default]
    Ignore,
    /// Send them with Pinterest's `?test=true`, which checks them without recording them.
    SendAsTest,
}

/// Per-shop choices for the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapOptions {
    pub content_ids: ContentIdScheme,
    pub value: ValueSource,
    pub currency: CurrencySource,
    pub test_orders: TestOrders,
    /// The storefront's domain (`shop.example` or `example.myshopify.com`), used to make a
    /// relative `landing_site` absolute. Without it a relative landing page is left out.
    pub shop_domain: Option<String>,
    /// `partner_name` on every event (Pinterest's convention is `ss-<partner>`, lower case).
    /// `None` by default: a gateway the merchant runs for their own ad account is not a third
    /// party sending on their behalf, and Pinterest only knows registered partner names.
    pub partner_name: Option<String>,
    /// Whether `checkouts/*` become `initiate_checkout`.
    pub checkouts: bool,
    /// Whether `carts/*` become `add_to_cart` (when they can be matched at all).
    pub carts: bool,
    /// Whether `customers/create` becomes `signup`.
    pub customers: bool,
    /// Whether the consent the custom pixel recorded on the cart decides what is sent.
    pub consent: Consent,
    /// What an order whose buyer did not allow marketing becomes.
    pub consent_denied: ConsentDenied,
}

/// `shopify.consent`: whether the buyer's consent, as the custom pixel recorded it in the
/// cart attribute [`CONSENT_ATTRIBUTE`], decides what is sent for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Marketing not allowed: see [`ConsentDenied`]; sale of data not allowed: the purchase is
    /// sent with `opt_out_type: "LDP"` (Pinterest's limited data processing).
    #[default]
    Respect,
    /// Orders are sent whatever the attribute says.
    Ignore,
}

/// `shopify.consent_denied`: an order whose buyer did not allow marketing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDenied {
    /// Not sent: skipped with the reason `consent`.
    #[default]
    Skip,
    /// Sent with `opt_out: true`.
    OptOut,
}

/// The cart attribute the custom pixel writes the visitor's consent into, copied by Shopify
/// onto the order: `marketing=yes;sale_of_data=no` (`yes`/`no`, `true`/`false` or `1`/`0`; a
/// missing part is unknown).
pub const CONSENT_ATTRIBUTE: &str = "_pincapi_consent";

/// The consent an order's cart attribute records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedConsent {
    pub marketing: Option<bool>,
    pub sale_of_data: Option<bool>,
}

impl RecordedConsent {
    /// Parses the attribute's value; unknown parts are ignored.
    pub fn parse(value: &str) -> RecordedConsent {
        let mut c = RecordedConsent::default();
        for part in value.split([';', ',']) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = match v.trim().to_ascii_lowercase().as_str() {
                "yes" | "true" | "1" => Some(true),
                "no" | "false" | "0" => Some(false),
                _ => None,
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "marketing" => c.marketing = v,
                "sale_of_data" => c.sale_of_data = v,
                _ => {}
            }
        }
        c
    }
}

impl Default for MapOptions {
    fn default() -> MapOptions {
        MapOptions {
            content_ids: ContentIdScheme::default(),
            value: ValueSource::default(),
            currency: CurrencySource::default(),
            test_orders: TestOrders::default(),
            shop_domain: None,
            partner_name: None,
            checkouts: true,
            carts: true,
            consent: Consent::Respect,
            consent_denied: ConsentDenied::Skip,
            customers: true,
        }
    }
}

/// The webhook topics the mapping understands (`X-Shopify-Topic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    #[serde(rename = "orders/create")]
    OrdersCreate,
    #[serde(rename = "orders/paid")]
    OrdersPaid,
    #[serde(rename = "orders/updated")]
    OrdersUpdated,
    #[serde(rename = "orders/cancelled")]
    OrdersCancelled,
    #[serde(rename = "refunds/create")]
    RefundsCreate,
    #[serde(rename = "checkouts/create")]
    CheckoutsCreate,
    #[serde(rename = "checkouts/update")]
    CheckoutsUpdate,
    #[serde(rename = "carts/create")]
    CartsCreate,
    #[serde(rename = "carts/update")]
    CartsUpdate,
    #[serde(rename = "customers/create")]
    CustomersCreate,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 10] = [
        Topic::OrdersCreate,
        Topic::OrdersPaid,
        Topic::OrdersUpdated,
        Topic::OrdersCancelled,
        Topic::RefundsCreate,
        Topic::CheckoutsCreate,
        Topic::CheckoutsUpdate,
        Topic::CartsCreate,
        Topic::CartsUpdate,
        Topic::CustomersCreate,
    ];

    /// Parses the header value, e.g. `orders/create`. Surrounding whitespace and upper case
    /// are tolerated; unknown topics are `None`.
    pub fn parse(s: &str) -> Option<Topic> {
        let s = s.trim();
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// The header spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::OrdersCreate => "orders/create",
            Topic::OrdersPaid => "orders/paid",
            Topic::OrdersUpdated => "orders/updated",
            Topic::OrdersCancelled => "orders/cancelled",
            Topic::RefundsCreate => "refunds/create",
            Topic::CheckoutsCreate => "checkouts/create",
            Topic::CheckoutsUpdate => "checkouts/update",
            Topic::CartsCreate => "carts/create",
            Topic::CartsUpdate => "carts/update",
            Topic::CustomersCreate => "customers/create",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of mapping one payload.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per webhook, moved once; boxing the event would only complicate matching"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mapped {
    /// A conversion to send. `test` means send it with Pinterest's `?test=true`.
    Event {
        event: ConversionEvent,
        test: bool,
        order: Option<OrderFacts>,
    },
    /// A conversion that cannot be sent. (Whether it is too old is the caller's decision: it
    /// knows the time.)
    Skipped {
        reason: SkipReason,
        order: Option<OrderFacts>,
    },
    /// Not a conversion: a test order, an order cancelled or voided at creation, a topic that
    /// is turned off, `orders/updated`, the order topic that is not the purchase topic.
    Ignored {
        reason: String,
        order: Option<OrderFacts>,
    },
    /// A cancellation or refund, recorded for reporting. Pinterest has no retraction event.
    Ledger(LedgerEntry),
}

/// Why a conversion cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The buyer data has no usable email, mobile ad id, or IP address with user agent.
    NoMatchKey,
    /// The payload names no buyer at all, as with every Shopify cart.
    NoBuyerData,
    /// The buyer did not allow marketing (the custom pixel recorded it on the cart), and
    /// `shopify.consent_denied = "skip"`.
    Consent,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NoMatchKey => {
                "Pinterest cannot match it to a person: it has no usable email address, mobile \
                 ad id, or IP address together with a browser user agent."
            }
            SkipReason::Consent => {
                "consent: the buyer did not allow marketing (recorded by the custom pixel in \
                 the cart attribute _pincapi_consent), so the purchase is not sent"
            }
            SkipReason::NoBuyerData => {
                "Pinterest cannot match it to a person: the payload names no buyer (Shopify's \
                 cart payloads never do). The browser tag reports this action."
            }
        })
    }
}

/// What reconciliation and reports need to know about an order. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// The order id as a decimal string.
    pub order_id: String,
    /// Unix seconds: `created_at`, or `processed_at` when `created_at` is missing.
    pub created_at: i64,
    /// Paid through a test gateway.
    pub test: bool,
    /// `web`, `pos`, `shopify_draft_order`, an app id, ...
    pub source_name: Option<String>,
    /// The value as the event reports it (same option and money bag).
    pub value: Option<Money>,
    pub currency: Option<Currency>,
}

/// A cancellation or a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The order id as a decimal string.
    pub order_id: String,
    pub kind: LedgerKind,
    /// Unix seconds when it happened.
    pub at: i64,
    /// Cancelled: the order's value as its event reported it. Refunded: the money returned.
    pub amount: Option<Money>,
    pub currency: Option<Currency>,
    /// Shopify's `cancel_reason` (`customer`, `fraud`, `inventory`, `declined`, `staff`,
    /// `other`). `None` for refunds: their note is free text and may hold personal data.
    pub reason: Option<String>,
    /// A test order (cancellations) or a test transaction (refunds).
    pub test: bool,
}

/// Which ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Cancelled,
    Refunded,
}

/// The payload is not the topic's shape. Messages name the field and never echo its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// A field is missing or has the wrong type or form. `field` is a path such as
    /// `line_items[2].quantity`, or `body` for the body as a whole.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl MapError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> MapError {
        MapError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Maps one webhook (or Admin API) payload. `body` is the raw JSON of the resource (for REST
/// responses, without the outer `{"order": ...}`). `purchase_topic` says which order topic
/// counts as the purchase: [`Topic::OrdersCreate`] (the default) or [`Topic::OrdersPaid`]; any
/// other value is taken as `OrdersCreate`. The other order topic is ignored with a reason.
pub fn map(
    topic: Topic,
    body: &[u8],
    purchase_topic: Topic,
    options: &MapOptions,
) -> Result<Mapped, MapError> {
    if let Some(ignored) = turned_off(topic, options) {
        return Ok(ignored);
    }
    match topic {
        Topic::OrdersCreate | Topic::OrdersPaid | Topic::OrdersUpdated | Topic::OrdersCancelled => {
            let order: Order = json_path::parse(body)?;
            map::order(topic, &order, purchase_topic, options)
        }
        Topic::RefundsCreate => map::refund(&json_path::parse(body)?, options),
        Topic::CheckoutsCreate | Topic::CheckoutsUpdate => {
            map::checkout(&json_path::parse(body)?, options)
        }
        Topic::CartsCreate | Topic::CartsUpdate => map::cart(&json_path::parse(body)?, options),
        Topic::CustomersCreate => map::signup(&json_path::parse(body)?, options),
    }
}

/// Maps an order that is already parsed, e.g. one of the Admin API's `{"orders": [...]}`
/// (see [`parse_orders`]), as if it arrived on `topic`. Topics that are not about orders
/// (`checkouts/*`, ...) are ignored with a reason.
pub fn map_order(
    topic: Topic,
    order: &Order,
    purchase_topic: Topic,
    options: &MapOptions,
) -> Result<Mapped, MapError> {
    match topic {
        Topic::OrdersCreate | Topic::OrdersPaid | Topic::OrdersUpdated | Topic::OrdersCancelled => {
            map::order(topic, order, purchase_topic, options)
        }
        _ => Ok(Mapped::Ignored {
            reason: format!("{topic} is not an order topic"),
            order: None,
        }),
    }
}

/// Parses an Admin REST list of orders, `{"orders": [...]}`, with the same field-naming
/// errors as [`map`].
pub fn parse_orders(body: &[u8]) -> Result<Vec<Order>, MapError> {
    #[derive(Deserialize)]
    struct Orders {
        #[serde(default)]
        orders: Vec<Order>,
    }
    json_path::parse::<Orders>(body).map(|o| o.orders)
}

/// The one `event_id` rule for purchases, shared by the server and the browser (the Pinterest
/// Tag in a Shopify custom pixel): `"order-"` followed by the trailing decimal digits of the
/// order id, as written (no leading zeros are removed). Accepts `820982911946154508`,
/// `gid://shopify/Order/820982911946154508` and `gid://shopify/OrderIdentity/5210499102`
/// (what the pixel's `checkout.order.id` can be); surrounding whitespace is ignored. `None`
/// when the id does not end in a digit.
///
/// The browser's equivalent:
/// `const m = String(id).trim().match(/(\d+)$/); const eventId = m ? "order-" + m[1] : null;`
pub fn purchase_event_id(order_id: &str) -> Option<EventId> {
    let s = order_id.trim();
    let start = s
        .bytes()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &s[start..];
    if digits.is_empty() {
        return None;
    }
    EventId::parse(event_id_of_order(digits)).ok()
}

/// What every purchase `event_id` starts with: `order-` and the order id.
pub const PURCHASE_PREFIX: &str = "order-";

/// The purchase `event_id` of an order id as the ledger keeps it (`5550001` → `order-5550001`).
pub fn event_id_of_order(order_id: &str) -> String {
    format!("{PURCHASE_PREFIX}{order_id}")
}

/// The order id a purchase `event_id` names (`order-5550001` → `5550001`), or `None` when the
/// event is not an order's purchase.
pub fn order_of_event_id(event_id: &str) -> Option<&str> {
    event_id.strip_prefix(PURCHASE_PREFIX)
}

/// `Ignored` when the options turn the topic off.
fn turned_off(topic: Topic, options: &MapOptions) -> Option<Mapped> {
    let on = match topic {
        Topic::CheckoutsCreate | Topic::CheckoutsUpdate => options.checkouts,
        Topic::CartsCreate | Topic::CartsUpdate => options.carts,
        Topic::CustomersCreate => options.customers,
        _ => true,
    };
    (!on).then(|| Mapped::Ignored {
        reason: format!("the {topic} topic is turned off in this shop's options"),
        order: None,
    })
}
