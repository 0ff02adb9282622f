//! Audiences: what a stored event says about the people in it, the segment rules evaluated
//! over those facts, and the difference between a segment and what a Pinterest customer list
//! already holds. Pure: the server reads events and facts from the store, passes `now` in,
//! and sends the differences.
//!
//! A *member* is one hashed identity: a SHA-256 of a normalised email (`em`) or of a mobile
//! ad id (`hashed_maids`), exactly as the stored event carries it. Raw values never reach
//! this module.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::normalize::Sha256Hex;

/// Which kind of hashed identity a member is; each kind is its own customer list at
/// Pinterest (`list_type` `EMAIL` or `MAID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Email,
    Maid,
}

impl IdKind {
    /// Both kinds.
    pub const ALL: [IdKind; 2] = [IdKind::Email, IdKind::Maid];

    /// The label used in tables, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Email => "email",
            IdKind::Maid => "maid",
        }
    }

    /// From [`IdKind::as_str`].
    pub fn parse(s: &str) -> Option<IdKind> {
        match s {
            "email" => Some(IdKind::Email),
            "maid" => Some(IdKind::Maid),
            _ => None,
        }
    }

    /// Pinterest's `list_type` for a customer list of this kind.
    pub fn list_type(self) -> &'static str {
        match self {
            IdKind::Email => "EMAIL",
            IdKind::Maid => "MAID",
        }
    }
}

/// What kind of activity an event shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Any event: the person was on the site.
    Visit,
    /// A page or category view naming products or a category.
    View,
    /// `add_to_cart`.
    Cart,
    /// `checkout` (a purchase).
    Purchase,
}

/// What one stored event says about the identities in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFacts {
    pub ad_account_id: String,
    pub event_id: String,
    /// Unix seconds (the event's `event_time`).
    pub at: i64,
    pub activity: Activity,
    pub identities: Vec<(IdKind, String)>,
    /// Product ids from `content_ids` and `contents[].id`.
    pub products: Vec<String>,
    /// `content_category` and `contents[].item_category`.
    pub categories: Vec<String>,
    /// `custom_data.value` of a purchase, a decimal string.
    pub value: Option<String>,
}

/// Reads the facts of one stored event (the JSON Pinterest receives). `None` when the event
/// carries no email or mobile ad id, or does not parse.
pub fn facts_from_payload(ad_account_id: &str, payload: &str) -> Option<EventFacts> {
    let v: Value = serde_json::from_str(payload).ok()?;
    let user = v.get("user_data")?;
    let mut identities = Vec::new();
    for (key, kind) in [("em", IdKind::Email), ("hashed_maids", IdKind::Maid)] {
        for h in user
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(h) = h.as_str().and_then(Sha256Hex::parse) {
                identities.push((kind, String::from(h)));
            }
        }
    }
    if identities.is_empty() {
        return None;
    }
    identities.sort();
    identities.dedup();
    let custom = v.get("custom_data");
    let str_at = |c: Option<&Value>, key: &str| {
        c.and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut products: Vec<String> = Vec::new();
    let mut categories: Vec<String> = Vec::new();
    if let Some(c) = custom {
        for id in c
            .get("content_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = id.as_str() {
                products.push(id.to_owned());
            }
        }
        for item in c
            .get("contents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = str_at(Some(item), "id") {
                products.push(id);
            }
            if let Some(cat) = str_at(Some(item), "item_category") {
                categories.push(cat);
            }
        }
        if let Some(cat) = str_at(Some(c), "content_category") {
            categories.push(cat);
        }
    }
    products.sort();
    products.dedup();
    categories.sort();
    categories.dedup();
    let name = v.get("event_name").and_then(Value::as_str).unwrap_or("");
    let activity = match name {
        "checkout" => Activity::Purchase,
        "add_to_cart" => Activity::Cart,
        "page_visit" | "view_category" if !(products.is_empty() && categories.is_empty()) => {
            Activity::View
        }
        _ => Activity::Visit,
    };
    Some(EventFacts {
        ad_account_id: ad_account_id.to_owned(),
        event_id: v.get("event_id")?.as_str()?.to_owned(),
        at: v.get("event_time")?.as_i64()?,
        activity,
        identities,
        products,
        categories,
        value: (activity == Activity::Purchase)
            .then(|| str_at(custom, "value"))
            .flatten(),
    })
}

/// Everything the store knows about one member of one ad account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonFacts {
    pub kind: Option<IdKind>,
    pub hash: String,
    /// Unix seconds of the latest event of each kind (a view, cart or purchase is also a visit).
    pub last_visit_at: Option<i64>,
    pub last_view_at: Option<i64>,
    pub last_cart_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub purchases: Vec<Purchase>,
    /// `(product id or "category:<name>", last view in Unix seconds)`.
    pub views: Vec<(String, i64)>,
}

/// One purchase of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub event_id: String,
    /// Unix seconds.
    pub at: i64,
    pub value: Option<String>,
    /// A Shopify refund was recorded for its order.
    pub refunded: bool,
}

/// The key a product-category view is stored under, next to plain product ids.
pub fn category_key(category: &str) -> String {
    format!("category:{category}")
}

/// The rule of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Any event in the last `days`.
    Visited,
    /// Viewed one of `products` or `categories` (any product when both are empty).
    Viewed,
    /// Added to cart in the last `days` and bought nothing since.
    CartAbandoned,
    /// A purchase that was not refunded in the last `days`, of at least `min_value`.
    Purchased,
    /// A refunded purchase in the last `days` (for exclusion in Ads Manager).
    Refunded,
}

/// A segment: a named rule over the members' facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Lower-case letters, digits and `_`; part of the Pinterest list and audience names.
    pub name: String,
    pub rule: RuleKind,
    /// Look-back window in days (1..=540, Pinterest's longest retention).
    pub days: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Purchases only: the smallest order value counted, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<String>,
    /// Also keep a Pinterest `VISITOR` audience from the Tag and Conversions API stream for
    /// this segment (when a Tag id is configured).
    #[serde(default = "yes")]
    pub visitor_audience: bool,
    /// Filters of the `VISITOR` audience on the event URL (`url` of the rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visitor_url: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Why a segment definition is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SegmentError {
    pub field: &'static str,
    pub reason: String,
}

impl Segment {
    fn new(name: &str, rule: RuleKind, days: u32) -> Segment {
        Segment {
            name: name.to_owned(),
            rule,
            days,
            products: Vec::new(),
            categories: Vec::new(),
            min_value: None,
            visitor_audience: true,
            visitor_url: Vec::new(),
        }
    }

    /// The built-in segments used when none are configured: visitors (30 days), product
    /// viewers (30), cart abandoners (7), purchasers (180).
    pub fn defaults() -> Vec<Segment> {
        vec![
            Segment::new("visitors", RuleKind::Visited, 30),
            Segment::new("product_viewers", RuleKind::Viewed, 30),
            Segment::new("cart_abandoners", RuleKind::CartAbandoned, 7),
            Segment::new("purchasers", RuleKind::Purchased, 180),
        ]
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), SegmentError> {
        let bad = |field, reason: &str| {
            Err(SegmentError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.name.is_empty()
            || self.name.len() > 40
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return bad(
                "name",
                "must be 1 to 40 lower-case letters, digits or underscores",
            );
        }
        if !(1..=540).contains(&self.days) {
            return bad("days", "must be 1..=540 (Pinterest's longest retention)");
        }
        if let Some(v) = &self.min_value {
            if self.rule != RuleKind::Purchased {
                return bad("min_value", "only applies to the purchased rule");
            }
            if compare_decimal(v, "0").is_none() {
                return bad("min_value", "must be a decimal string such as \"50.00\"");
            }
        }
        if (!self.products.is_empty() || !self.categories.is_empty())
            && self.rule != RuleKind::Viewed
        {
            return bad(
                "products",
                "products and categories only apply to the viewed rule",
            );
        }
        Ok(())
    }

    /// The Tag event a `VISITOR` audience of this segment filters on (`None`: every event),
    /// in the Tag's spelling that the audience rule takes.
    pub fn visitor_event(&self) -> Option<&'static str> {
        match self.rule {
            RuleKind::Visited => None,
            RuleKind::Viewed => Some("pagevisit"),
            RuleKind::CartAbandoned => Some("addtocart"),
            RuleKind::Purchased => Some("checkout"),
            RuleKind::Refunded => None,
        }
    }

    /// Whether a member belongs to this segment at `now` (Unix seconds).
    pub fn matches(&self, p: &PersonFacts, now: i64) -> bool {
        let since = now - i64::from(self.days) * 86_400;
        let recent = |t: Option<i64>| t.is_some_and(|t| t >= since);
        match self.rule {
            RuleKind::Visited => recent(p.last_visit_at),
            RuleKind::Viewed => {
                if self.products.is_empty() && self.categories.is_empty() {
                    return recent(p.last_view_at);
                }
                p.views.iter().any(|(key, at)| {
                    *at >= since
                        && (self.products.iter().any(|x| x == key)
                            || self.categories.iter().any(|c| category_key(c) == *key))
                })
            }
            RuleKind::CartAbandoned => match p.last_cart_at {
                Some(cart) if cart >= since => p.last_purchase_at.is_none_or(|b| b < cart),
                _ => false,
            },
            RuleKind::Purchased => p.purchases.iter().any(|b| {
                b.at >= since
                    && !b.refunded
                    && match (&self.min_value, &b.value) {
                        (None, _) => true,
                        (Some(min), Some(v)) => {
                            compare_decimal(v, min).is_some_and(|o| o != Ordering::Less)
                        }
                        (Some(_), None) => false,
                    }
            }),
            RuleKind::Refunded => p.purchases.iter().any(|b| b.at >= since && b.refunded),
        }
    }

    /// The members of this segment, per kind, sorted.
    pub fn members(&self, people: &[PersonFacts], now: i64) -> Members {
        let mut m = Members::default();
        for p in people.iter().filter(|p| self.matches(p, now)) {
            match p.kind {
                Some(IdKind::Email) => m.email.insert(p.hash.clone()),
                Some(IdKind::Maid) => m.maid.insert(p.hash.clone()),
                None => false,
            };
        }
        m
    }
}

/// A segment's members, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub email: BTreeSet<String>,
    pub maid: BTreeSet<String>,
}

impl Members {
    /// The members of one kind.
    pub fn of(&self, kind: IdKind) -> &BTreeSet<String> {
        match kind {
            IdKind::Email => &self.email,
            IdKind::Maid => &self.maid,
        }
    }
}

/// What must change at Pinterest so a list holds `current`, given it holds `synced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListDiff {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl ListDiff {
    /// The difference between the current members and the last synced ones.
    pub fn between(current: &BTreeSet<String>, synced: &BTreeSet<String>) -> ListDiff {
        ListDiff {
            add: current.difference(synced).cloned().collect(),
            remove: synced.difference(current).cloned().collect(),
        }
    }

    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The `records` string of a customer-list request: the hashes joined by commas.
pub fn records(hashes: &[String]) -> String {
    hashes.join(",")
}

/// A stored event with one member taken out of its match keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// The event JSON without the hash.
    pub payload: String,
    /// It still carries a match key Pinterest requires (`em`, `hashed_maids`, or IP and user
    /// agent together).
    pub sendable: bool,
}

/// Takes `hash` out of the `em` (email) or `hashed_maids` (MAID) match keys of a stored
/// event. `None` when the event does not carry it (or does not parse).
pub fn scrub_member(payload: &str, kind: IdKind, hash: &str) -> Option<Scrubbed> {
    let mut v: Value = serde_json::from_str(payload).ok()?;
    let key = match kind {
        IdKind::Email => "em",
        IdKind::Maid => "hashed_maids",
    };
    let user = v.get_mut("user_data")?.as_object_mut()?;
    let list = user.get_mut(key)?.as_array_mut()?;
    let before = list.len();
    list.retain(|h| h.as_str().is_none_or(|h| !h.eq_ignore_ascii_case(hash)));
    if list.len() == before {
        return None;
    }
    if list.is_empty() {
        user.remove(key);
    }
    let has = |k: &str| user.get(k).is_some_and(|x| !x.is_null());
    let nonempty = |k: &str| {
        user.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let sendable = nonempty("em")
        || nonempty("hashed_maids")
        || (has("client_ip_address") && has("client_user_agent"));
    Some(Scrubbed {
        payload: v.to_string(),
        sendable,
    })
}

/// Compares two non-negative decimal strings (`"72.39"`, `"100"`) without floats. `None`
/// when either is not a plain decimal.
pub fn compare_decimal(a: &str, b: &str) -> Option<Ordering> {
    fn parts(s: &str) -> Option<(&str, &str)> {
        let s = s.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        (!int.is_empty() && digits(int) && digits(frac))
            .then(|| (int.trim_start_matches('0'), frac.trim_end_matches('0')))
    }
    let (ai, af) = parts(a)?;
    let (bi, bf) = parts(b)?;
    Some(
        ai.len()
            .cmp(&bi.len())
            .then_with(|| ai.cmp(bi))
            .then_with(|| af.cmp(bf)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;
    const DAY: i64 = 86_400;

    fn person(hash: &str) -> PersonFacts {
        PersonFacts {
            kind: Some(IdKind::Email),
            hash: hash.to_owned(),
            ..PersonFacts::default()
        }
    }

    #[test]
    fn facts_come_from_hashed_keys_and_custom_data() {
        let em = Sha256Hex::of("a@example.com");
        let maid = Sha256Hex::of("maid-1");
        let payload = format!(
            r#"{{"event_name":"checkout","event_time":{NOW},"event_id":"order-1",
                "user_data":{{"em":["{em}"],"hashed_maids":["{maid}"],"client_ip_address":"1.2.3.4"}},
                "custom_data":{{"value":"72.39","content_ids":["8001"],
                  "contents":[{{"id":"8002","item_category":"Home"}}]}}}}"#
        );
        let f = facts_from_payload("1", &payload).unwrap();
        assert_eq!(f.activity, Activity::Purchase);
        assert_eq!(f.identities.len(), 2);
        assert_eq!(f.products, ["8001", "8002"]);
        assert_eq!(f.categories, ["Home"]);
        assert_eq!(f.value.as_deref(), Some("72.39"));
        // No email or MAID: nothing to say about anyone.
        let anon = r#"{"event_name":"page_visit","event_time":1,"event_id":"x",
                       "user_data":{"client_ip_address":"1.2.3.4","client_user_agent":"UA"}}"#;
        assert!(facts_from_payload("1", anon).is_none());
    }

    #[test]
    fn the_default_rules_select_what_their_names_say() {
        let mut visitor = person("v");
        visitor.last_visit_at = Some(NOW - 10 * DAY);
        let mut old = person("o");
        old.last_visit_at = Some(NOW - 31 * DAY);
        let mut abandoner = person("a");
        abandoner.last_visit_at = Some(NOW - DAY);
        abandoner.last_cart_at = Some(NOW - DAY);
        let mut buyer = person("b");
        buyer.last_visit_at = Some(NOW - DAY);
        buyer.last_cart_at = Some(NOW - 2 * DAY);
        buyer.last_purchase_at = Some(NOW - DAY);
        buyer.purchases.push(Purchase {
            event_id: "order-1".into(),
            at: NOW - DAY,
            value: Some("10.00".into()),
            refunded: false,
        });
        let people = [visitor, old, abandoner, buyer];
        let d = Segment::defaults();
        let names = |s: &Segment| {
            s.members(&people, NOW)
                .email
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&d[0]), ["a", "b", "v"]);
        assert_eq!(names(&d[2]), ["a"]);
        assert_eq!(names(&d[3]), ["b"]);
    }

    #[test]
    fn purchases_count_above_the_minimum_and_unless_refunded() {
        let mut s = Segment::new("big", RuleKind::Purchased, 30);
        s.min_value = Some("50".into());
        let mut p = person("b");
        p.purchases.push(Purchase {
            event_id: "order-1".into(),
            at: NOW,
            value: Some("49.99".into()),
            refunded: false,
        });
        assert!(!s.matches(&p, NOW));
        p.purchases[0].value = Some("50.00".into());
        assert!(s.matches(&p, NOW));
        p.purchases[0].refunded = true;
        assert!(!s.matches(&p, NOW));
        assert!(Segment::new("r", RuleKind::Refunded, 30).matches(&p, NOW));
    }

    #[test]
    fn product_viewers_of_given_products_or_categories() {
        let mut s = Segment::new("vases", RuleKind::Viewed, 30);
        s.products = vec!["8003".into()];
        s.categories = vec!["Home".into()];
        let mut p = person("x");
        p.views = vec![("8001".into(), NOW)];
        assert!(!s.matches(&p, NOW));
        p.views.push((category_key("Home"), NOW - DAY));
        assert!(s.matches(&p, NOW));
    }

    #[test]
    fn diffs_add_what_is_new_and_remove_what_left() {
        let cur: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let old: BTreeSet<String> = ["b", "c"].map(String::from).into();
        let d = ListDiff::between(&cur, &old);
        assert_eq!(d.add, ["a"]);
        assert_eq!(d.remove, ["c"]);
        assert!(ListDiff::between(&cur, &cur).is_empty());
        assert_eq!(records(&d.add), "a");
    }

    #[test]
    fn a_forgotten_member_is_scrubbed_from_an_event() {
        let em = Sha256Hex::of("a@example.com");
        let p = format!(
            r#"{{"event_id":"x","user_data":{{"em":["{em}"],"client_ip_address":"1.2.3.4"}}}}"#
        );
        let s = scrub_member(&p, IdKind::Email, em.as_str()).unwrap();
        assert!(!s.payload.contains(em.as_str()));
        assert!(!s.sendable);
        assert!(scrub_member(&s.payload, IdKind::Email, em.as_str()).is_none());
    }

    #[test]
    fn decimals_compare_without_floats() {
        assert_eq!(compare_decimal("100", "99.99"), Some(Ordering::Greater));
        assert_eq!(compare_decimal("050.10", "50.1"), Some(Ordering::Equal));
        assert_eq!(compare_decimal("9.5", "10"), Some(Ordering::Less));
        assert_eq!(compare_decimal("1e3", "1"), None);
    }

    #[test]
    fn segment_definitions_are_checked() {
        let mut s = Segment::new("Bad Name", RuleKind::Visited, 30);
        assert_eq!(s.validate().unwrap_err().field, "name");
        s.name = "ok".into();
        s.days = 0;
        assert_eq!(s.validate().unwrap_err().field, "days");
        s.days = 30;
        s.min_value = Some("5".into());
        assert_eq!(s.validate().unwrap_err().field, "min_value");
    }
}
