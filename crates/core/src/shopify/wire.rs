//! Shopify payload types: the fields of webhook bodies (and Admin REST resources) we read.
//!
//! Every field is optional and unknown fields are ignored, so a payload from any API version
//! parses; what a mapping *requires* (an order id, a creation time) is checked by the mapping,
//! which names the field. Types are strict where a wrong type would mean we misread the
//! payload (a quantity given as a string is an error) and tolerant where Shopify itself
//! varies:
//!
//! - Ids are 64-bit and exceed 2^53, so they are read as `u64`, never through `f64`. A string
//!   of digits and a `gid://shopify/<Type>/<digits>` are accepted as well.
//! - Money ([`Amount`]) is a decimal string in Shopify's payloads but a bare JSON number in
//!   some older examples; either way the digits are kept exactly as written.
//! - Timestamps are RFC 3339 with the shop's offset and are read as Unix seconds (UTC).
//! - Lists that are `null` read as empty.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::{Iso8601, Rfc3339};

/// An order, as in the `orders/*` webhooks and the REST `order` resource. Checkouts
/// (`checkouts/*`) have the same shape minus payment and status, so they parse into this type
/// too: their key is `token`, and `id` may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Order {
    #[serde(deserialize_with = "opt_id")]
    pub id: Option<u64>,
    /// `gid://shopify/Order/<id>`; used for the id when `id` itself is missing.
    pub admin_graphql_api_id: Option<String>,
    /// The order token, or a checkout's key.
    pub token: Option<String>,
    pub email: Option<String>,
    pub contact_email: Option<String>,
    pub phone: Option<String>,
    #[serde(deserialize_with = "opt_time")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "opt_time")]
    pub processed_at: Option<i64>,
    #[serde(deserialize_with = "opt_time")]
    pub updated_at: Option<i64>,
    #[serde(deserialize_with = "opt_time")]
    pub cancelled_at: Option<i64>,
    pub cancel_reason: Option<String>,
    pub financial_status: Option<String>,
    /// `true` for orders paid through a test gateway.
    pub test: Option<bool>,
    /// `web`, `pos`, `shopify_draft_order`, or an app id as a string.
    pub source_name: Option<String>,
    /// Set on POS and staff orders.
    #[serde(deserialize_with = "opt_id")]
    pub location_id: Option<u64>,
    /// The shop's currency, which the un-suffixed amounts (`subtotal_price`, ...) are in.
    pub currency: Option<String>,
    /// The buyer's currency.
    pub presentment_currency: Option<String>,
    pub subtotal_price: Option<Amount>,
    pub subtotal_price_set: Option<MoneySet>,
    pub total_price: Option<Amount>,
    pub total_price_set: Option<MoneySet>,
    #[serde(deserialize_with = "null_as_empty")]
    pub line_items: Vec<LineItem>,
    pub billing_address: Option<Address>,
    pub shipping_address: Option<Address>,
    pub customer: Option<Customer>,
    pub client_details: Option<ClientDetails>,
    pub browser_ip: Option<String>,
    /// The first page of the session: a path plus query string, sometimes a full URL.
    pub landing_site: Option<String>,
    /// Cart attributes copied onto the order.
    #[serde(deserialize_with = "null_as_empty")]
    pub note_attributes: Vec<NoteAttribute>,
}

/// One line of an order, checkout or cart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LineItem {
    #[serde(deserialize_with = "opt_id")]
    pub id: Option<u64>,
    /// `null` on custom items.
    #[serde(deserialize_with = "opt_id")]
    pub product_id: Option<u64>,
    /// `null` on custom items (and on every item of Shopify's sample order).
    #[serde(deserialize_with = "opt_id")]
    pub variant_id: Option<u64>,
    /// Can be `null` or `""`.
    pub sku: Option<String>,
    pub title: Option<String>,
    pub vendor: Option<String>,
    #[serde(deserialize_with = "opt_int")]
    pub quantity: Option<i64>,
    /// Unit price before discounts, in the shop's currency.
    pub price: Option<Amount>,
    pub price_set: Option<MoneySet>,
    /// `price × quantity` (carts).
    pub line_price: Option<Amount>,
    pub line_price_set: Option<MoneySet>,
}

/// A billing or shipping address (also a customer's `default_address`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Address {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub province_code: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub country_code: Option<String>,
    pub phone: Option<String>,
}

/// The customer of an order, and the body of `customers/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Customer {
    #[serde(deserialize_with = "opt_id")]
    pub id: Option<u64>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// An empty object (`{}`) in some REST examples; that reads as an address with no fields.
    pub default_address: Option<Address>,
    #[serde(deserialize_with = "opt_time")]
    pub created_at: Option<i64>,
}

/// What the storefront's browser told Shopify.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClientDetails {
    pub browser_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One cart attribute (`{"name": ..., "value": ...}`). Storefront code writes these, so a
/// value that is not a string is read as absent rather than failing the order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NoteAttribute {
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub value: Option<String>,
}

/// `{"shop_money": {...}, "presentment_money": {...}}`: one amount in both currencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MoneySet {
    pub shop_money: Option<MoneyBag>,
    pub presentment_money: Option<MoneyBag>,
}

/// An amount with the currency it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MoneyBag {
    pub amount: Option<Amount>,
    pub currency_code: Option<String>,
}

/// The body of `refunds/create` (REST: the `refund` resource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Refund {
    #[serde(deserialize_with = "opt_id")]
    pub id: Option<u64>,
    #[serde(deserialize_with = "opt_id")]
    pub order_id: Option<u64>,
    #[serde(deserialize_with = "opt_time")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "opt_time")]
    pub processed_at: Option<i64>,
    #[serde(deserialize_with = "null_as_empty")]
    pub transactions: Vec<Transaction>,
    #[serde(deserialize_with = "null_as_empty")]
    pub refund_line_items: Vec<RefundLineItem>,
}

/// A payment transaction; refunds carry the money returned as `kind: "refund"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Transaction {
    pub kind: Option<String>,
    /// `success`, `failure`, `error` or `pending`.
    pub status: Option<String>,
    pub amount: Option<Amount>,
    pub currency: Option<String>,
    pub test: Option<bool>,
}

/// One refunded line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RefundLineItem {
    #[serde(deserialize_with = "opt_int")]
    pub quantity: Option<i64>,
    /// The refunded amount for this line, before tax, in the shop's currency.
    pub subtotal: Option<Amount>,
    pub subtotal_set: Option<MoneySet>,
}

/// The body of `carts/create` and `carts/update`. Carts carry no buyer: the buyer fields are
/// read only in case an app adds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Cart {
    /// A string in current payloads (`"exampleCartId"`), an integer in old REST ones.
    #[serde(deserialize_with = "opt_string_or_int")]
    pub id: Option<String>,
    pub token: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub line_items: Vec<LineItem>,
    #[serde(deserialize_with = "opt_time")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "opt_time")]
    pub updated_at: Option<i64>,
    pub email: Option<String>,
    pub customer: Option<Customer>,
    pub client_details: Option<ClientDetails>,
    pub browser_ip: Option<String>,
}

/// A money amount exactly as Shopify wrote it: the text of a JSON string, or the literal
/// digits of a JSON number. Never converted to a float; [`crate::event::Money::parse`] checks
/// its shape where it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    /// The amount's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Amount {
    fn from(s: &str) -> Amount {
        Amount(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A RawValue hands over the literal text, so `398.0` stays "398.0" instead of going
        // through f64. It works with serde_json's deserializers (from bytes, str or Value).
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text)
                .map(Amount)
                .map_err(|_| de::Error::custom("expected a decimal string")),
            Some(b'-' | b'0'..=b'9') => Ok(Amount(text.to_owned())),
            _ => Err(de::Error::invalid_type(
                unexpected_kind(text),
                &"a decimal string like \"72.39\"",
            )),
        }
    }
}

/// The kind of a raw JSON value, for error messages that must not echo the value.
fn unexpected_kind(text: &str) -> de::Unexpected<'static> {
    match text.as_bytes().first() {
        Some(b'{') => de::Unexpected::Map,
        Some(b'[') => de::Unexpected::Seq,
        Some(b't' | b'f') => de::Unexpected::Other("boolean"),
        Some(b'n') => de::Unexpected::Unit,
        _ => de::Unexpected::Other("value"),
    }
}

/// Reads the id of a Shopify object: a JSON integer, a string of digits, or a
/// `gid://shopify/<Type>/<digits>`.
pub fn parse_id(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = match s.strip_prefix("gid://shopify/") {
        Some(rest) => rest.rsplit_once('/')?.1,
        None => s,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses a Shopify timestamp into Unix seconds (UTC). Shopify writes RFC 3339 with the shop's
/// offset (`2021-12-31T19:00:00-05:00`), sometimes with fractions (`...00.000Z`); other ISO
/// 8601 forms are accepted too.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(s, &Iso8601::DEFAULT))
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct IdVisitor;
    impl<'de> Visitor<'de> for IdVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer id")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("expected an integer id, found a negative number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            // Shopify ids exceed 2^53; a float would have lost digits already.
            Err(E::custom(
                "expected an integer id, found a floating point number",
            ))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            parse_id(v).map(Some).ok_or_else(|| {
                E::custom("expected an integer id (digits or gid://shopify/...), found a string")
            })
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(IdVisitor)
}

fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct IntVisitor;
    impl<'de> Visitor<'de> for IntVisitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("expected an integer, found one that is too large"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(IntVisitor)
}

fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct TimeVisitor;
    impl<'de> Visitor<'de> for TimeVisitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp like \"2021-12-31T19:00:00-05:00\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            parse_time(v).map(Some).ok_or_else(|| {
                E::custom(
                    "expected an RFC 3339 timestamp like \"2021-12-31T19:00:00-05:00\", \
                     found a string that is not one",
                )
            })
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(TimeVisitor)
}

fn opt_string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct KeyVisitor;
    impl<'de> Visitor<'de> for KeyVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(KeyVisitor)
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_above_2_pow_53_are_exact() {
        let o: Order = serde_json::from_str(r#"{"id": 820982911946154508}"#).unwrap();
        assert_eq!(o.id, Some(820_982_911_946_154_508));
        let o: Order = serde_json::from_str(r#"{"id": "9007199254740993"}"#).unwrap();
        assert_eq!(o.id, Some(9_007_199_254_740_993));
        assert!(serde_json::from_str::<Order>(r#"{"id": 8.2e17}"#).is_err());
    }

    #[test]
    fn ids_may_be_gids() {
        assert_eq!(
            parse_id("gid://shopify/Order/820982911946154508"),
            Some(820982911946154508)
        );
        assert_eq!(parse_id("gid://shopify/Order/"), None);
        assert_eq!(parse_id("12a"), None);
    }

    #[test]
    fn amounts_keep_their_digits() {
        let b: MoneyBag = serde_json::from_str(r#"{"amount": 398.0}"#).unwrap();
        assert_eq!(b.amount.unwrap().as_str(), "398.0");
        let b: MoneyBag = serde_json::from_str(r#"{"amount": "1450000.00"}"#).unwrap();
        assert_eq!(b.amount.unwrap().as_str(), "1450000.00");
        let b: MoneyBag =
            serde_json::from_str(r#"{"amount": 0.1000000000000000055511151231257827}"#).unwrap();
        assert_eq!(
            b.amount.unwrap().as_str(),
            "0.1000000000000000055511151231257827"
        );
        assert!(serde_json::from_str::<MoneyBag>(r#"{"amount": true}"#).is_err());
        // Also through a `Value`, as a caller holding parsed JSON would do.
        let b: MoneyBag = serde_json::from_value(serde_json::json!({"amount": "12.30"})).unwrap();
        assert_eq!(b.amount.unwrap().as_str(), "12.30");
    }

    #[test]
    fn timestamps_with_offsets_become_utc_seconds() {
        // 2022-01-01T00:00:00Z
        assert_eq!(parse_time("2021-12-31T19:00:00-05:00"), Some(1_640_995_200));
        assert_eq!(parse_time("2022-01-01T00:00:00.000Z"), Some(1_640_995_200));
        assert_eq!(parse_time("2022-01-01T03:00:00+03:00"), Some(1_640_995_200));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn null_lists_read_as_empty() {
        let o: Order =
            serde_json::from_str(r#"{"line_items": null, "note_attributes": null}"#).unwrap();
        assert!(o.line_items.is_empty() && o.note_attributes.is_empty());
    }

    #[test]
    fn non_string_attribute_values_are_ignored() {
        let a: NoteAttribute = serde_json::from_str(r#"{"name": "n", "value": 5}"#).unwrap();
        assert_eq!(a.value, None);
    }
}
