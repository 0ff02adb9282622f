//! The conversion event: Pinterest's v5 `events` item as strict Rust types.
//!
//! A [`ConversionEvent`] serialises to exactly what `POST /v5/ad_accounts/{id}/events` takes
//! inside `data[]` and passes `pinterest-events-request.strict.schema.json`: names are the 15
//! spec values, `event_time` is Unix seconds, money is a decimal string, and every hashed
//! `user_data` key holds 64-character lower-case SHA-256 hex. Loose input (the ingest API, the
//! browser collector, Shopify payloads) becomes these types in one step and is never checked
//! again.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::normalize::Sha256Hex;

/// The 15 `event_name` values of Pinterest's spec (5.23.0), in their snake_case spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    AddPaymentInfo,
    AddToCart,
    AddToWishlist,
    AppInstall,
    Checkout,
    Custom,
    InitiateCheckout,
    Lead,
    PageVisit,
    Search,
    Signup,
    Subscribe,
    ViewCategory,
    ViewContent,
    WatchVideo,
}

impl EventName {
    /// Every event name, in the spec's order.
    pub const ALL: [EventName; 15] = [
        EventName::AddPaymentInfo,
        EventName::AddToCart,
        EventName::AddToWishlist,
        EventName::AppInstall,
        EventName::Checkout,
        EventName::Custom,
        EventName::InitiateCheckout,
        EventName::Lead,
        EventName::PageVisit,
        EventName::Search,
        EventName::Signup,
        EventName::Subscribe,
        EventName::ViewCategory,
        EventName::ViewContent,
        EventName::WatchVideo,
    ];

    /// The wire spelling, e.g. `add_to_cart`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::AddPaymentInfo => "add_payment_info",
            EventName::AddToCart => "add_to_cart",
            EventName::AddToWishlist => "add_to_wishlist",
            EventName::AppInstall => "app_install",
            EventName::Checkout => "checkout",
            EventName::Custom => "custom",
            EventName::InitiateCheckout => "initiate_checkout",
            EventName::Lead => "lead",
            EventName::PageVisit => "page_visit",
            EventName::Search => "search",
            EventName::Signup => "signup",
            EventName::Subscribe => "subscribe",
            EventName::ViewCategory => "view_category",
            EventName::ViewContent => "view_content",
            EventName::WatchVideo => "watch_video",
        }
    }

    /// Parses the wire spelling; anything else (including the Tag's `Checkout`) is `None`.
    pub fn parse(s: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the action happened (`action_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSource {
    Web,
    AppAndroid,
    AppIos,
    Offline,
}

impl ActionSource {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionSource::Web => "web",
            ActionSource::AppAndroid => "app_android",
            ActionSource::AppIos => "app_ios",
            ActionSource::Offline => "offline",
        }
    }
}

/// Why a value could not become one of the strict types below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must be a decimal string like \"72.39\" (digits, optional '.' and digits)")]
    NotDecimal,
    #[error("must be a three-letter ISO 4217 code like \"USD\"")]
    NotCurrency,
    #[error("must be Unix time in seconds (10 digits); this looks like milliseconds")]
    Milliseconds,
    #[error("must be Unix time in seconds after 2001-09-09")]
    TooEarly,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must have at most {max} digits (Pinterest reads it as a double)")]
    TooManyDigits { max: usize },
}

/// A raw match key sent as it is (IP address, user agent, click id): trimmed, without control
/// characters (a NUL or a line break is never part of one, and would be forwarded as it is),
/// `None` when nothing is left.
pub fn raw_text(s: &str) -> Option<String> {
    let kept: String = s.chars().filter(|c| !c.is_control()).collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// The de-duplication key shared by the Tag and the server: non-empty, at most 256 characters
/// (the limit Pinterest sets on the MSOT `event_id`; the events endpoint states none), no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Longest accepted event id.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps an event id. Surrounding whitespace is an error, not trimmed, because
    /// the browser must send the very same string.
    pub fn parse(s: impl Into<String>) -> Result<EventId, ValueError> {
        let s = s.into();
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(ValueError::ControlCharacter);
        }
        Ok(EventId(s))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventId::parse(s).map_err(serde::de::Error::custom)
    }
}

/// Unix time in seconds, as Pinterest wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventTime(i64);

impl EventTime {
    /// Checks that `secs` is plausible Unix seconds: not before 2001-09-09 (1e9) and not a
    /// millisecond value (13 digits).
    pub fn from_secs(secs: i64) -> Result<EventTime, ValueError> {
        if secs > 9_999_999_999 {
            return Err(ValueError::Milliseconds);
        }
        if secs < 1_000_000_000 {
            return Err(ValueError::TooEarly);
        }
        Ok(EventTime(secs))
    }

    /// The seconds.
    pub fn secs(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = i64::deserialize(d)?;
        EventTime::from_secs(secs).map_err(serde::de::Error::custom)
    }
}

/// An amount of money as a decimal string (`"72.39"`), never a float. Pinterest parses it as
/// a double on its side; we only check the shape and pass the merchant's digits through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Money(String);

impl Money {
    /// The most digits a money value may have: more than a double holds exactly, and far more
    /// than any price (`9999999999999999.99`).
    pub const MAX_DIGITS: usize = 18;

    /// Accepts `^[0-9]+(\.[0-9]+)?$` after trimming; a leading `+`, exponent, comma or minus
    /// sign is rejected.
    pub fn parse(s: &str) -> Result<Money, ValueError> {
        let s = s.trim();
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(ValueError::NotDecimal);
        }
        if int.len() + frac.map_or(0, str::len) > Money::MAX_DIGITS {
            return Err(ValueError::TooManyDigits {
                max: Money::MAX_DIGITS,
            });
        }
        Ok(Money(s.to_owned()))
    }

    /// The decimal string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only a JSON string is accepted: a JSON number would already have been through a
        // float by the time serde hands it over.
        let s = String::deserialize(d)?;
        Money::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Accepts three ASCII letters in any case and upper-cases them.
    pub fn parse(s: &str) -> Result<Currency, ValueError> {
        let s = s.trim();
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Currency(s.to_ascii_uppercase()))
        } else {
            Err(ValueError::NotCurrency)
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Match keys. Hashed keys are arrays of SHA-256 hex; IP, user agent, click id and partner id
/// stay raw, as the spec requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub em: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashed_maids: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ph: Vec<Sha256Hex>,
    #[serde(default, rename = "fn", skip_serializing_if = "Vec::is_empty")]
    pub fn_: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ln: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ge: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ct: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub st: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zp: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_id: Vec<Sha256Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
}

/// The match keys an event carries, as a bit set, for coverage statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchKeys(pub u32);

impl MatchKeys {
    pub const EM: u32 = 1;
    pub const PH: u32 = 1 << 1;
    pub const EXTERNAL_ID: u32 = 1 << 2;
    pub const CLICK_ID: u32 = 1 << 3;
    pub const IP_UA: u32 = 1 << 4;
    pub const NAME: u32 = 1 << 5;
    pub const ADDRESS: u32 = 1 << 6;
    pub const MAID: u32 = 1 << 7;

    /// Names of the keys, as used in reports and metrics labels.
    pub const NAMES: [(u32, &'static str); 8] = [
        (Self::EM, "em"),
        (Self::PH, "ph"),
        (Self::EXTERNAL_ID, "external_id"),
        (Self::CLICK_ID, "click_id"),
        (Self::IP_UA, "ip_ua"),
        (Self::NAME, "name"),
        (Self::ADDRESS, "address"),
        (Self::MAID, "hashed_maids"),
    ];

    /// The bit of a key named as in [`MatchKeys::NAMES`] (`em`, `ph`, ...).
    pub fn bit_of(name: &str) -> Option<u32> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(b, _)| *b)
    }

    /// Whether every bit of `key` is set.
    pub fn has(self, key: u32) -> bool {
        self.0 & key == key
    }
}

impl UserData {
    /// Pinterest's any-of rule: `em`, or `hashed_maids`, or both IP and user agent.
    pub fn has_required_match_key(&self) -> bool {
        !self.em.is_empty()
            || !self.hashed_maids.is_empty()
            || (self.client_ip_address.is_some() && self.client_user_agent.is_some())
    }

    /// Which match keys are present.
    pub fn match_keys(&self) -> MatchKeys {
        let mut k = 0;
        let mut set = |cond: bool, bit: u32| {
            if cond {
                k |= bit;
            }
        };
        set(!self.em.is_empty(), MatchKeys::EM);
        set(!self.ph.is_empty(), MatchKeys::PH);
        set(!self.external_id.is_empty(), MatchKeys::EXTERNAL_ID);
        set(self.click_id.is_some(), MatchKeys::CLICK_ID);
        set(
            self.client_ip_address.is_some() && self.client_user_agent.is_some(),
            MatchKeys::IP_UA,
        );
        set(!self.fn_.is_empty() || !self.ln.is_empty(), MatchKeys::NAME);
        set(
            !self.ct.is_empty() || !self.st.is_empty() || !self.zp.is_empty(),
            MatchKeys::ADDRESS,
        );
        set(!self.hashed_maids.is_empty(), MatchKeys::MAID);
        MatchKeys(k)
    }

    /// Takes the browser's first-hand keys (click id, IP address, user agent) from `other`
    /// where `self` has none; nothing else.
    pub fn fill_browser_signals(&mut self, other: &UserData) {
        for (mine, theirs) in [
            (&mut self.client_ip_address, &other.client_ip_address),
            (&mut self.client_user_agent, &other.client_user_agent),
            (&mut self.click_id, &other.click_id),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    /// Adds what `other` knows and `self` does not: hashed arrays are unioned (order kept,
    /// no repeats), raw single values are taken only where `self` has none. Used when the
    /// browser and the server saw the same action.
    pub fn merge(&mut self, other: &UserData) {
        fn union(a: &mut Vec<Sha256Hex>, b: &[Sha256Hex]) {
            for h in b {
                if !a.contains(h) {
                    a.push(h.clone());
                }
            }
        }
        union(&mut self.em, &other.em);
        union(&mut self.hashed_maids, &other.hashed_maids);
        union(&mut self.ph, &other.ph);
        union(&mut self.fn_, &other.fn_);
        union(&mut self.ln, &other.ln);
        union(&mut self.ge, &other.ge);
        union(&mut self.db, &other.db);
        union(&mut self.ct, &other.ct);
        union(&mut self.st, &other.st);
        union(&mut self.zp, &other.zp);
        union(&mut self.country, &other.country);
        union(&mut self.external_id, &other.external_id);
        fn take(a: &mut Option<String>, b: &Option<String>) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        take(&mut self.client_ip_address, &other.client_ip_address);
        take(&mut self.client_user_agent, &other.client_user_agent);
        take(&mut self.click_id, &other.click_id);
        take(&mut self.partner_id, &other.partner_id);
    }
}

/// One item of `custom_data.contents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unit price before discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_price: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_brand: Option<String>,
}

/// `custom_data`: what was bought, for how much.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Money>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_is_empty"
    )]
    pub content_ids: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_is_empty"
    )]
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_items: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ltv: Option<Money>,
}

/// An explicit `null` list (as Pinterest's SDKs send for one not set) reads as empty.
fn null_is_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl CustomData {
    /// True when no field is set, so the key can be left out.
    pub fn is_empty(&self) -> bool {
        *self == CustomData::default()
    }
}

/// One conversion event, exactly as Pinterest receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionEvent {
    pub event_name: EventName,
    pub action_source: ActionSource,
    pub event_time: EventTime,
    pub event_id: EventId,
    pub user_data: UserData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<CustomData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `app_info` (spec 5.16.0), passed through after a key and type check at ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// `device_info` (spec 5.16.0), passed through after a key and type check at ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ConversionEvent {
    /// A minimal event with the five required fields; the rest left out.
    pub fn new(
        event_name: EventName,
        action_source: ActionSource,
        event_time: EventTime,
        event_id: EventId,
        user_data: UserData,
    ) -> ConversionEvent {
        ConversionEvent {
            event_name,
            action_source,
            event_time,
            event_id,
            user_data,
            custom_data: None,
            event_source_url: None,
            opt_out: None,
            partner_name: None,
            app_id: None,
            app_name: None,
            app_version: None,
            device_brand: None,
            device_carrier: None,
            device_model: None,
            device_type: None,
            os_version: None,
            wifi: None,
            language: None,
            app_info: None,
            device_info: None,
        }
    }

    /// The JSON Pinterest receives for this event.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and no custom
        // Serialize impl returns an error.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How a repeat's payload meets the stored event (see `crate::repeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// Two reports from the same side: hashed identities unioned, the rest filled in where the
    /// stored event has none.
    Fill,
    /// The browser's report of an event the shop's systems reported: it adds only what a
    /// browser knows first-hand (click id, IP address, user agent, page URL) where the stored
    /// event has none, and never value, items or hashed identities, so a forged browser report
    /// cannot rewrite a real order.
    BrowserSignals,
    /// The shop's record of an event only the browser had reported: the shop's identities,
    /// value and items replace the browser's, whose click id, IP address, user agent and page
    /// URL stay only where the shop's record has none.
    ShopRecord,
}

/// A merged event: its JSON as Pinterest receives it, and its match keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub json: String,
    pub match_keys: u32,
}

/// Merges `incoming` into the stored event JSON `stored` (both as Pinterest receives them) by
/// `rule`, or `None` when either does not parse or nothing changes. The stored event's name,
/// time and id win.
pub fn merge_payload(stored: &str, incoming: &str, rule: MergeRule) -> Option<Merged> {
    let mut base: ConversionEvent = serde_json::from_str(stored).ok()?;
    let other: ConversionEvent = serde_json::from_str(incoming).ok()?;
    let before = base.clone();
    match rule {
        MergeRule::Fill => {
            base.user_data.merge(&other.user_data);
            if base.custom_data.is_none() {
                base.custom_data = other.custom_data;
            }
        }
        MergeRule::BrowserSignals => base.user_data.fill_browser_signals(&other.user_data),
        MergeRule::ShopRecord => {
            let mut user = other.user_data.clone();
            user.fill_browser_signals(&base.user_data);
            base.user_data = user;
            if other.custom_data.is_some() {
                base.custom_data = other.custom_data;
            }
            if other.event_source_url.is_some() {
                base.event_source_url = other.event_source_url.clone();
            }
        }
    }
    if base.event_source_url.is_none() {
        base.event_source_url = other.event_source_url;
    }
    if base.opt_out.is_none() {
        base.opt_out = other.opt_out;
    }
    (base != before).then(|| Merged {
        match_keys: base.user_data.match_keys().0,
        json: base.to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_through_their_wire_spelling() {
        for n in EventName::ALL {
            assert_eq!(EventName::parse(n.as_str()), Some(n));
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(json, format!("\"{}\"", n.as_str()));
        }
        assert_eq!(EventName::parse("Checkout"), None);
        assert_eq!(EventName::parse("purchase"), None);
    }

    #[test]
    fn money_accepts_decimal_strings_only() {
        for ok in ["0", "72.39", "1450000.00", " 5.5 "] {
            assert!(Money::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "72,39", "-1", "+1", "1e3", ".5", "5.", "NaN", "1.2.3"] {
            assert_eq!(Money::parse(bad), Err(ValueError::NotDecimal), "{bad}");
        }
        assert!(serde_json::from_str::<Money>("72.39").is_err());
    }

    #[test]
    fn event_time_rejects_milliseconds_and_ancient_values() {
        assert!(EventTime::from_secs(1_700_000_000).is_ok());
        assert_eq!(
            EventTime::from_secs(1_700_000_000_000),
            Err(ValueError::Milliseconds)
        );
        assert_eq!(EventTime::from_secs(12), Err(ValueError::TooEarly));
    }

    #[test]
    fn event_id_is_checked_not_trimmed() {
        assert!(EventId::parse("order-1").is_ok());
        assert_eq!(EventId::parse(""), Err(ValueError::Empty));
        assert_eq!(EventId::parse("a\nb"), Err(ValueError::ControlCharacter));
        assert_eq!(
            EventId::parse("x".repeat(257)),
            Err(ValueError::TooLong { max: 256 })
        );
    }

    #[test]
    fn currency_is_upper_cased() {
        assert_eq!(Currency::parse("usd").unwrap().as_str(), "USD");
        assert!(Currency::parse("US").is_err());
    }

    #[test]
    fn merge_payload_fills_what_the_stored_event_lacks() {
        let mut server = ConversionEvent::new(
            EventName::Checkout,
            ActionSource::Web,
            EventTime::from_secs(1_764_000_000).unwrap(),
            EventId::parse("order-1").unwrap(),
            UserData {
                em: vec![Sha256Hex::of("a@b.co")],
                ..UserData::default()
            },
        );
        let mut browser = server.clone();
        browser.user_data = UserData {
            click_id: Some("epik".into()),
            ..UserData::default()
        };
        browser.event_source_url = Some("https://shop.example/thank-you".into());
        server.custom_data = Some(CustomData {
            value: Some(Money::parse("10.00").unwrap()),
            ..CustomData::default()
        });
        let read = |m: Merged| -> ConversionEvent { serde_json::from_str(&m.json).unwrap() };
        let merged = merge_payload(&server.to_json(), &browser.to_json(), MergeRule::Fill).unwrap();
        assert_eq!(merged.match_keys, MatchKeys::EM | MatchKeys::CLICK_ID);
        let merged = read(merged);
        assert_eq!(merged.user_data.em.len(), 1);
        assert_eq!(merged.user_data.click_id.as_deref(), Some("epik"));
        assert_eq!(merged.custom_data, server.custom_data);
        assert!(merged.event_source_url.is_some());
        assert_eq!(
            merge_payload(&server.to_json(), &server.to_json(), MergeRule::Fill),
            None
        );
        // The shop's record arriving after the browser's report sets value and items.
        let merged = read(
            merge_payload(&browser.to_json(), &server.to_json(), MergeRule::ShopRecord).unwrap(),
        );
        assert_eq!(merged.custom_data, server.custom_data);
        assert_eq!(merged.user_data.click_id.as_deref(), Some("epik"));
    }

    #[test]
    fn a_browser_report_cannot_rewrite_the_shops_order() {
        let shop = ConversionEvent {
            custom_data: Some(CustomData {
                value: Some(Money::parse("72.39").unwrap()),
                ..CustomData::default()
            }),
            ..ConversionEvent::new(
                EventName::Checkout,
                ActionSource::Web,
                EventTime::from_secs(1_764_000_000).unwrap(),
                EventId::parse("order-1").unwrap(),
                UserData {
                    em: vec![Sha256Hex::of("buyer@shop.example")],
                    client_ip_address: Some("203.0.113.7".into()),
                    ..UserData::default()
                },
            )
        };
        let mut forged = shop.clone();
        forged.custom_data = Some(CustomData {
            value: Some(Money::parse("9999.00").unwrap()),
            ..CustomData::default()
        });
        forged.user_data = UserData {
            em: vec![Sha256Hex::of("attacker@evil.example")],
            client_ip_address: Some("198.51.100.66".into()),
            client_user_agent: Some("forger".into()),
            click_id: Some("forged-epik".into()),
            ..UserData::default()
        };
        let read = |m: Merged| -> ConversionEvent { serde_json::from_str(&m.json).unwrap() };
        // After the shop's record: only what it lacks of the browser's own keys.
        let after = read(
            merge_payload(
                &shop.to_json(),
                &forged.to_json(),
                MergeRule::BrowserSignals,
            )
            .unwrap(),
        );
        assert_eq!(after.custom_data, shop.custom_data);
        assert_eq!(after.user_data.em, shop.user_data.em);
        assert_eq!(
            after.user_data.client_ip_address.as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(after.user_data.click_id.as_deref(), Some("forged-epik"));
        // Before it: the shop's record replaces the forged identities and value, and its own
        // IP address wins over the browser's.
        let after =
            read(merge_payload(&forged.to_json(), &shop.to_json(), MergeRule::ShopRecord).unwrap());
        assert_eq!(after.custom_data, shop.custom_data);
        assert_eq!(after.user_data.em, shop.user_data.em);
        assert_eq!(
            after.user_data.client_ip_address.as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn merge_unions_hashes_and_fills_missing_raw_values() {
        let h1 = Sha256Hex::of("a@b.co");
        let h2 = Sha256Hex::of("c@d.co");
        let mut server = UserData {
            em: vec![h1.clone()],
            ..UserData::default()
        };
        let browser = UserData {
            em: vec![h1.clone(), h2.clone()],
            click_id: Some("epik1".into()),
            client_ip_address: Some("203.0.113.9".into()),
            client_user_agent: Some("UA".into()),
            ..UserData::default()
        };
        server.merge(&browser);
        assert_eq!(server.em, vec![h1, h2]);
        assert_eq!(server.click_id.as_deref(), Some("epik1"));
        assert!(server.match_keys().has(MatchKeys::IP_UA));
    }
}
