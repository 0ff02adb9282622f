//! The Admin GraphQL API's order (API 2026-04), the second wire type of an order beside the
//! webhook/REST one ([`Order`]). [`GraphqlOrder::into_order`] rewrites it into an [`Order`],
//! so both go through the one set of mapping rules in `map.rs`.
//!
//! Field by field (GraphQL → the webhook field it becomes):
//!
//! | GraphQL | webhook |
//! | --- | --- |
//! | `legacyResourceId` (or the digits of `id`) | `id` |
//! | `createdAt`, `processedAt`, `updatedAt`, `cancelledAt` | `created_at`, ... |
//! | `cancelReason`, `displayFinancialStatus` (upper-case enums) | `cancel_reason`, `financial_status` (lower case) |
//! | `retailLocation.legacyResourceId` | `location_id` |
//! | `currencyCode`, `presentmentCurrencyCode` | `currency`, `presentment_currency` |
//! | `subtotalPriceSet`, `totalPriceSet` (`shopMoney`, `presentmentMoney`) | `subtotal_price(_set)`, `total_price(_set)` |
//! | `lineItems` (`product.id`, `variant.id`, `originalUnitPriceSet`) | `line_items` (`product_id`, `variant_id`, `price(_set)`) |
//! | `billingAddress`, `shippingAddress` (`countryCodeV2`) | `billing_address`, `shipping_address` (`country_code`) |
//! | `customer` (`defaultEmailAddress.emailAddress`, `defaultPhoneNumber.phoneNumber`) | `customer` (`email`, `phone`) |
//! | `clientIp` | `browser_ip` |
//! | `customAttributes` (`key`, `value`) | `note_attributes` (`name`, `value`) |
//! | `customerJourneySummary.firstVisit.landingPage` (a full URL) | `landing_site` |
//!
//! What GraphQL lacks: the browser's user agent (`client_details.user_agent`; the schema has no
//! user agent on any order type), the order and cart tokens, and `landing_site` until
//! Shopify has computed the journey (`ready: false`). An order found by the poller therefore
//! carries no `client_user_agent`; its click id comes from the `_epik` cart attribute as on the
//! webhook path, and its IP from `clientIp`.

use serde::Deserialize;

use super::wire::{
    Address, Amount, Customer, LineItem, MoneyBag, MoneySet, NoteAttribute, Order, parse_id,
    parse_time,
};

/// An `Order` node as `orders` (or a bulk operation's line) returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlOrder {
    /// `gid://shopify/Order/<digits>`.
    pub id: Option<String>,
    /// The digits of `id`, as a string.
    pub legacy_resource_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: Option<String>,
    pub processed_at: Option<String>,
    pub updated_at: Option<String>,
    pub cancelled_at: Option<String>,
    pub cancel_reason: Option<String>,
    pub display_financial_status: Option<String>,
    pub test: Option<bool>,
    pub source_name: Option<String>,
    pub retail_location: Option<Node>,
    pub currency_code: Option<String>,
    pub presentment_currency_code: Option<String>,
    pub subtotal_price_set: Option<GraphqlMoneySet>,
    pub total_price_set: Option<GraphqlMoneySet>,
    /// Absent on a bulk operation's order line (its lines come as lines of their own).
    pub line_items: Option<LineItemPage>,
    pub billing_address: Option<GraphqlAddress>,
    pub shipping_address: Option<GraphqlAddress>,
    pub customer: Option<GraphqlCustomer>,
    pub client_ip: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub custom_attributes: Vec<Attribute>,
    pub customer_journey_summary: Option<JourneySummary>,
}

/// An object of which only the id is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Node {
    pub id: Option<String>,
    pub legacy_resource_id: Option<String>,
}

/// A page of an order's line items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LineItemPage {
    pub page_info: PageInfo,
    #[serde(deserialize_with = "null_as_empty")]
    pub nodes: Vec<GraphqlLineItem>,
}

/// Where a connection's page ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// A `LineItem`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlLineItem {
    pub id: Option<String>,
    pub quantity: Option<i64>,
    pub sku: Option<String>,
    pub title: Option<String>,
    pub vendor: Option<String>,
    pub product: Option<Node>,
    pub variant: Option<Node>,
    pub original_unit_price_set: Option<GraphqlMoneySet>,
    /// On a bulk operation's line: the order it belongs to.
    #[serde(rename = "__parentId")]
    pub parent_id: Option<String>,
}

/// A `MoneyBag`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlMoneySet {
    pub shop_money: Option<GraphqlMoney>,
    pub presentment_money: Option<GraphqlMoney>,
}

/// A `MoneyV2`: the amount is a decimal string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlMoney {
    pub amount: Option<Amount>,
    pub currency_code: Option<String>,
}

/// A `MailingAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlAddress {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub province_code: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub country_code_v2: Option<String>,
    pub phone: Option<String>,
}

/// A `Customer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphqlCustomer {
    pub id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub default_email_address: Option<EmailAddress>,
    pub default_phone_number: Option<PhoneNumber>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EmailAddress {
    pub email_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PhoneNumber {
    pub phone_number: Option<String>,
}

/// A cart attribute copied onto the order (`customAttributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Attribute {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// `customerJourneySummary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JourneySummary {
    pub first_visit: Option<Visit>,
}

/// `CustomerVisit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Visit {
    pub landing_page: Option<String>,
}

/// A time field that does not parse, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTime(pub &'static str);

impl GraphqlOrder {
    /// The order's numeric id.
    pub fn order_id(&self) -> Option<u64> {
        self.legacy_resource_id
            .as_deref()
            .and_then(parse_id)
            .or_else(|| self.id.as_deref().and_then(parse_id))
    }

    /// The webhook-shaped order, with `lines` for its line items (the page's own, plus any
    /// fetched after it, or a bulk operation's lines). A time that is not RFC 3339 is an error
    /// naming the field.
    pub fn into_order(self, lines: Vec<GraphqlLineItem>) -> Result<Order, BadTime> {
        let time = |v: &Option<String>, name: &'static str| match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => parse_time(s).map(Some).ok_or(BadTime(name)),
        };
        let lower = |v: Option<String>| v.map(|s| s.to_ascii_lowercase());
        let id = self.order_id();
        let subtotal = money_set(self.subtotal_price_set);
        let total = money_set(self.total_price_set);
        let shop_amount = |s: &Option<MoneySet>| {
            s.as_ref()
                .and_then(|s| s.shop_money.as_ref())
                .and_then(|m| m.amount.clone())
        };
        let line_items = lines.into_iter().map(line_item).collect();
        Ok(Order {
            id,
            admin_graphql_api_id: self.id.clone(),
            token: None,
            email: self.email,
            contact_email: None,
            phone: self.phone,
            created_at: time(&self.created_at, "createdAt")?,
            processed_at: time(&self.processed_at, "processedAt")?,
            updated_at: time(&self.updated_at, "updatedAt")?,
            cancelled_at: time(&self.cancelled_at, "cancelledAt")?,
            cancel_reason: lower(self.cancel_reason),
            financial_status: lower(self.display_financial_status),
            test: self.test,
            source_name: self.source_name,
            location_id: self.retail_location.as_ref().and_then(node_id),
            currency: self.currency_code,
            presentment_currency: self.presentment_currency_code,
            subtotal_price: shop_amount(&subtotal),
            subtotal_price_set: subtotal,
            total_price: shop_amount(&total),
            total_price_set: total,
            line_items,
            billing_address: self.billing_address.map(address),
            shipping_address: self.shipping_address.map(address),
            customer: self.customer.map(|c| Customer {
                id: c.id.as_deref().and_then(parse_id),
                email: c.default_email_address.and_then(|e| e.email_address),
                phone: c.default_phone_number.and_then(|p| p.phone_number),
                first_name: c.first_name,
                last_name: c.last_name,
                default_address: None,
                created_at: None,
            }),
            client_details: None,
            browser_ip: self.client_ip,
            landing_site: self
                .customer_journey_summary
                .and_then(|j| j.first_visit)
                .and_then(|v| v.landing_page),
            note_attributes: self
                .custom_attributes
                .into_iter()
                .map(|a| NoteAttribute {
                    name: a.key,
                    value: a.value,
                })
                .collect(),
        })
    }
}

fn node_id(n: &Node) -> Option<u64> {
    n.legacy_resource_id
        .as_deref()
        .and_then(parse_id)
        .or_else(|| n.id.as_deref().and_then(parse_id))
}

fn money_set(s: Option<GraphqlMoneySet>) -> Option<MoneySet> {
    let bag = |m: GraphqlMoney| MoneyBag {
        amount: m.amount,
        currency_code: m.currency_code,
    };
    s.map(|s| MoneySet {
        shop_money: s.shop_money.map(bag),
        presentment_money: s.presentment_money.map(bag),
    })
}

fn line_item(l: GraphqlLineItem) -> LineItem {
    let price = money_set(l.original_unit_price_set);
    LineItem {
        id: l.id.as_deref().and_then(parse_id),
        product_id: l.product.as_ref().and_then(node_id),
        variant_id: l.variant.as_ref().and_then(node_id),
        sku: l.sku,
        title: l.title,
        vendor: l.vendor,
        quantity: l.quantity,
        price: price
            .as_ref()
            .and_then(|s| s.shop_money.as_ref())
            .and_then(|m| m.amount.clone()),
        price_set: price,
        line_price: None,
        line_price_set: None,
    }
}

fn address(a: GraphqlAddress) -> Address {
    Address {
        first_name: a.first_name,
        last_name: a.last_name,
        city: a.city,
        province: a.province,
        province_code: a.province_code,
        zip: a.zip,
        country: a.country,
        country_code: a.country_code_v2,
        phone: a.phone,
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graphql_order_becomes_the_webhook_shape() {
        let o: GraphqlOrder = serde_json::from_value(serde_json::json!({
            "id": "gid://shopify/Order/820982911946154508",
            "legacyResourceId": "820982911946154508",
            "email": "Jon@Example.com",
            "createdAt": "2026-11-30T10:00:00Z",
            "updatedAt": "2026-11-30T10:05:00-05:00",
            "cancelledAt": null,
            "displayFinancialStatus": "PARTIALLY_REFUNDED",
            "test": false,
            "sourceName": "web",
            "retailLocation": null,
            "currencyCode": "USD",
            "presentmentCurrencyCode": "EUR",
            "subtotalPriceSet": {"shopMoney": {"amount": "10.00", "currencyCode": "USD"},
                                 "presentmentMoney": {"amount": "9.20", "currencyCode": "EUR"}},
            "lineItems": {"pageInfo": {"hasNextPage": false, "endCursor": null},
                          "nodes": [{"id": "gid://shopify/LineItem/1", "quantity": 2,
                                     "variant": {"id": "gid://shopify/ProductVariant/77"},
                                     "product": null,
                                     "originalUnitPriceSet": {"shopMoney": {"amount": "5.00", "currencyCode": "USD"}}}]},
            "customer": {"id": "gid://shopify/Customer/5",
                         "defaultEmailAddress": {"emailAddress": "jon@example.com"},
                         "defaultPhoneNumber": null},
            "clientIp": "203.0.113.9",
            "customAttributes": [{"key": "_epik", "value": "dj0yJnU9"}],
            "customerJourneySummary": {"ready": true, "firstVisit": {"landingPage": "https://s.example/?epik=x"}}
        }))
        .unwrap();
        let lines = o.line_items.clone().unwrap().nodes;
        let order = o.into_order(lines).unwrap();
        assert_eq!(order.id, Some(820_982_911_946_154_508));
        assert_eq!(
            order.financial_status.as_deref(),
            Some("partially_refunded")
        );
        assert_eq!(
            order.updated_at,
            Some(order.created_at.unwrap() + 5 * 3600 + 300)
        );
        assert_eq!(
            order.subtotal_price.as_ref().map(Amount::as_str),
            Some("10.00")
        );
        assert_eq!(order.presentment_currency.as_deref(), Some("EUR"));
        assert_eq!(order.line_items[0].variant_id, Some(77));
        assert_eq!(order.line_items[0].product_id, None);
        assert_eq!(order.line_items[0].quantity, Some(2));
        assert_eq!(
            order.customer.unwrap().email.as_deref(),
            Some("jon@example.com")
        );
        assert_eq!(order.browser_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(order.note_attributes[0].name.as_deref(), Some("_epik"));
        assert_eq!(
            order.landing_site.as_deref(),
            Some("https://s.example/?epik=x")
        );
        assert!(order.client_details.is_none());
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_is_named() {
        let o = GraphqlOrder {
            created_at: Some("yesterday".into()),
            ..GraphqlOrder::default()
        };
        assert_eq!(o.into_order(Vec::new()).unwrap_err(), BadTime("createdAt"));
    }
}
