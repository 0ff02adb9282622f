//! The browser side in pure functions: Pinterest Tag event names ↔ CAPI `event_name`, the
//! Tag's event data → `custom_data`, and one browser collector request → [`ConversionEvent`].
//!
//! The collector (`POST /collect`) takes what the Tag was given, so a page describes an action
//! once, in the Tag's words, and the same words reach both the Tag and Conversions API:
//!
//! | Tag event data | CAPI `custom_data` |
//! | --- | --- |
//! | `value`, `currency`, `order_id` | `value` (decimal string), `currency`, `order_id` |
//! | `order_quantity` | `num_items` |
//! | `search_query` | `search_string` |
//! | `opt_out_type` (`LDP`) | `opt_out_type` |
//! | `line_items[].product_id` | `content_ids[]` and `contents[].id` |
//! | `line_items[].product_price`, `product_quantity` | `contents[].item_price`, `quantity` |
//! | `line_items[].product_name`, `product_category`, `product_brand` | `contents[].item_name`, `item_category`, `item_brand` |
//!
//! Tag-only keys with no CAPI field (`promo_code`, `lead_type`, `video_title`, `page_name`,
//! `property`, `product_variant*`) are dropped quietly; any other unknown key is dropped with a
//! warning. Money keeps the exact digits the page wrote: values are read as raw JSON text and
//! never pass through a float. A bad data value loses only that value (with a warning), never
//! the event: the browser cannot be asked to send again, and the action still counts.
//!
//! The page URL (`event_source_url`, else the `Referer`) is stored and sent as it is, so it is
//! scrubbed first, as the Shopify mapping scrubs `landing_site`: no fragment, no token or
//! access-key parameters (`key=` of Shopify's order status page, theme previews), no parameter
//! whose value is an email address (`?email=` from a newsletter link).
//!
//! A purchase's `event_id` follows [`purchase_event_id`], the rule tag.js applies to the
//! Tag's `order_id`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::event::{
    ActionSource, Content, ConversionEvent, Currency, CustomData, EventId, EventName, EventTime,
    Money,
};
use crate::ingest::{FieldIssue, IngestUserData, OneOrMany, TimeWindow, hash_user_data};

/// Longest `event_source_url` kept, in characters; longer ones are dropped with a warning.
pub const MAX_URL_LEN: usize = 2048;

/// The Pinterest Tag's name for a CAPI event, as Pinterest's event code snippets write it
/// (lower case, which is also what the Tag sends on the wire: `pagevisit`, `addtocart`).
/// `None` for `app_install`, which the web Tag cannot report.
///
/// `subscribe` and `view_content` have no confirmed Tag spelling; they are sent under their
/// joined lower-case names, which the Tag treats as user-defined events at worst.
pub fn tag_event_name(name: EventName) -> Option<&'static str> {
    Some(match name {
        EventName::AddPaymentInfo => "addpaymentinfo",
        EventName::AddToCart => "addtocart",
        EventName::AddToWishlist => "addtowishlist",
        EventName::AppInstall => return None,
        EventName::Checkout => "checkout",
        EventName::Custom => "custom",
        EventName::InitiateCheckout => "initiatecheckout",
        EventName::Lead => "lead",
        EventName::PageVisit => "pagevisit",
        EventName::Search => "search",
        EventName::Signup => "signup",
        EventName::Subscribe => "subscribe",
        EventName::ViewCategory => "viewcategory",
        EventName::ViewContent => "viewcontent",
        EventName::WatchVideo => "watchvideo",
    })
}

/// A CAPI event name from what a page wrote: the CAPI spelling (`add_to_cart`) or a Tag
/// spelling in any case (`AddToCart`, `addtocart`). `None` for anything else.
pub fn parse_event_name(s: &str) -> Option<EventName> {
    let s = s.trim();
    EventName::parse(s).or_else(|| {
        let folded = s.to_ascii_lowercase();
        EventName::ALL
            .into_iter()
            .find(|n| tag_event_name(*n) == Some(folded.as_str()))
    })
}

/// Which browser path delivered a collector request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CollectSource {
    /// Posted by a collector client (the Shopify custom pixel, or tag.js when the Tag is off).
    #[default]
    Collector,
    /// A mirror of a Pinterest Tag call made by tag.js.
    TagMirror,
}

/// What the server knows about the request, beyond its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserContext<'a> {
    /// The client's IP address, already resolved through trusted proxies.
    pub client_ip: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The `_epik` cookie sent with the request.
    pub epik_cookie: Option<&'a str>,
    /// The `Referer` header, used when the body names no page URL.
    pub referer: Option<&'a str>,
}

/// A collector request turned into the event Pinterest receives.
#[derive(Debug, Clone)]
pub struct Collected {
    pub event: ConversionEvent,
    pub source: CollectSource,
    /// Values dropped on the way, by field.
    pub warnings: Vec<FieldIssue>,
}

/// Turns one collector request body (JSON) into a strict event.
///
/// The body: `{"event_name", "event_id", "event_time"?, "event_source_url"?, "data"?, "em"?,
/// "epik"?, "source"?, "opt_out"?}`. `event_time` outside `window` is replaced by `window.now`
/// with a warning (browser clocks are not to be trusted, and the beacon leaves at once).
/// `em` is normalised and hashed here. The click id is `epik`, else the `_epik` cookie. When
/// `opt_out` is true the visitor refused tracking: the event keeps only what Pinterest
/// requires (IP and user agent) and carries `opt_out: true`; email and click id are dropped.
///
/// Errors name each bad field; the event is refused only for a bad name, id or time, or
/// when no match key is left.
pub fn collect(
    body: &str,
    ctx: &BrowserContext<'_>,
    window: &TimeWindow,
) -> Result<Collected, Vec<FieldIssue>> {
    let top: BTreeMap<String, Box<RawValue>> = serde_json::from_str(body).map_err(|e| {
        vec![FieldIssue::new(
            "body",
            if e.is_syntax() || e.is_eof() {
                "is not valid JSON".to_owned()
            } else {
                "must be a JSON object".to_owned()
            },
        )]
    })?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let event_name = match top.get("event_name").map(|r| raw_string(r)) {
        Some(Ok(Some(s))) => match parse_event_name(&s) {
            Some(EventName::AppInstall) => {
                errors.push(FieldIssue::new(
                    "event_name",
                    "app_install cannot come from a web page",
                ));
                None
            }
            Some(n) => Some(n),
            None => {
                errors.push(FieldIssue::new(
                    "event_name",
                    "is not a Pinterest event name (page_visit, add_to_cart, checkout, ...)",
                ));
                None
            }
        },
        Some(Err(reason)) => {
            errors.push(FieldIssue::new("event_name", reason));
            None
        }
        Some(Ok(None)) | None => {
            errors.push(FieldIssue::new("event_name", "is required"));
            None
        }
    };
    let event_id = match top.get("event_id").map(|r| raw_string_exact(r)) {
        Some(Ok(Some(s))) => match EventId::parse(s) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(FieldIssue::new("event_id", e.to_string()));
                None
            }
        },
        Some(Err(reason)) => {
            errors.push(FieldIssue::new("event_id", reason));
            None
        }
        Some(Ok(None)) | None => {
            errors.push(FieldIssue::new(
                "event_id",
                "is required: without it Pinterest cannot de-duplicate the Tag and CAPI copies",
            ));
            None
        }
    };
    let event_time = match top.get("event_time").map(|r| raw_int(r)) {
        None | Some(Ok(None)) => Some(window.now),
        Some(Ok(Some(secs))) => Some(secs),
        Some(Err(reason)) => {
            errors.push(FieldIssue::new("event_time", reason));
            None
        }
    };
    let event_time = event_time.and_then(|secs| {
        match EventTime::from_secs(secs).map_err(|e| e.to_string()) {
            Err(reason) => {
                errors.push(FieldIssue::new("event_time", reason));
                None
            }
            Ok(t) => Some(window.check(t).unwrap_or_else(|reason| {
                warnings.push(FieldIssue::new(
                    "event_time",
                    format!("{reason}; replaced by the time of receipt"),
                ));
                // `now` is a plausible time by construction; fall back to `t` regardless.
                EventTime::from_secs(window.now).unwrap_or(t)
            })),
        }
    });

    let opt_out = match top
        .get("opt_out")
        .map(|r| serde_json::from_str::<Option<bool>>(r.get()))
    {
        Some(Ok(v)) => v.unwrap_or(false),
        Some(Err(_)) => {
            warnings.push(FieldIssue::new("opt_out", "dropped: must be true or false"));
            false
        }
        None => false,
    };
    let source = match top.get("source").map(|r| raw_string(r)) {
        Some(Ok(Some(s))) if s == "tag_mirror" => CollectSource::TagMirror,
        Some(Ok(Some(s))) if s == "collector" => CollectSource::Collector,
        None | Some(Ok(None)) => CollectSource::Collector,
        Some(_) => {
            warnings.push(FieldIssue::new(
                "source",
                "ignored: must be \"collector\" or \"tag_mirror\"",
            ));
            CollectSource::Collector
        }
    };

    let custom_data = match top.get("data") {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => match serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()) {
            Ok(data) => {
                if let (Some(EventName::Checkout), Some(id)) = (event_name, &event_id) {
                    check_purchase_id(&data, id, &mut warnings);
                }
                if let (Some(inner), Some(id)) = (data.get("event_id"), &event_id)
                    && raw_string_exact(inner).ok().flatten().as_deref() != Some(id.as_str())
                {
                    warnings.push(FieldIssue::new(
                        "data.event_id",
                        "ignored: differs from event_id, which is the one sent",
                    ));
                }
                let c = map_tag_data(&data, "data", &mut warnings);
                (!c.is_empty()).then_some(c)
            }
            Err(_) => {
                warnings.push(FieldIssue::new("data", "dropped: must be a JSON object"));
                None
            }
        },
    };

    let mut user = IngestUserData {
        client_ip_address: ctx.client_ip.map(str::to_owned),
        client_user_agent: ctx.user_agent.and_then(crate::event::raw_text),
        ..IngestUserData::default()
    };
    if !opt_out {
        match top.get("em").map(|r| raw_string(r)) {
            Some(Ok(Some(em))) => user.em = Some(OneOrMany::One(em)),
            Some(Err(reason)) => warnings.push(FieldIssue::new("em", format!("dropped: {reason}"))),
            _ => {}
        }
        user.click_id = match top.get("epik").map(|r| raw_string(r)) {
            Some(Ok(Some(epik))) => Some(epik),
            Some(Err(reason)) => {
                warnings.push(FieldIssue::new("epik", format!("dropped: {reason}")));
                None
            }
            _ => None,
        }
        .or_else(|| ctx.epik_cookie.map(str::to_owned));
    }
    let mut hash_warnings = Vec::new();
    let user_data = hash_user_data(&user, None, &mut hash_warnings);
    warnings.extend(hash_warnings.into_iter().map(|w| FieldIssue {
        field: w.field.trim_start_matches("user_data.").to_owned(),
        reason: w.reason,
    }));
    if !user_data.has_required_match_key() {
        errors.push(FieldIssue::new(
            "em",
            "no match key: send em, or call from a browser (the client's IP and user agent)",
        ));
    }

    let event_source_url = match top.get("event_source_url").map(|r| raw_string(r)) {
        Some(Ok(Some(url))) => Some(url),
        Some(Err(reason)) => {
            warnings.push(FieldIssue::new(
                "event_source_url",
                format!("dropped: {reason}"),
            ));
            None
        }
        _ => ctx.referer.map(str::to_owned),
    }
    .and_then(|url| match check_url(&url) {
        Ok(()) => Some(url),
        Err(reason) => {
            warnings.push(FieldIssue::new(
                "event_source_url",
                format!("dropped: {reason}"),
            ));
            None
        }
    })
    .and_then(|url| {
        let scrubbed = crate::shopify::url::event_source_url(&url, None);
        if scrubbed.is_none() {
            warnings.push(FieldIssue::new(
                "event_source_url",
                "dropped: not a storefront page (password, preview or wallet page)",
            ));
        }
        scrubbed
    });

    let (Some(event_name), Some(event_id), Some(event_time), true) =
        (event_name, event_id, event_time, errors.is_empty())
    else {
        return Err(errors);
    };
    let mut event = ConversionEvent::new(
        event_name,
        ActionSource::Web,
        event_time,
        event_id,
        user_data,
    );
    event.custom_data = custom_data;
    event.event_source_url = event_source_url;
    event.opt_out = opt_out.then_some(true);
    Ok(Collected {
        event,
        source,
        warnings,
    })
}

/// Maps the Tag's event data to `custom_data` (see the module table). `prefix` names the
/// object in warnings, e.g. `data`.
pub fn map_tag_data(
    data: &BTreeMap<String, Box<RawValue>>,
    prefix: &str,
    warnings: &mut Vec<FieldIssue>,
) -> CustomData {
    let mut c = CustomData::default();
    for (key, raw) in data {
        let field = format!("{prefix}.{key}");
        let mut keep = |r: Result<(), String>| {
            if let Err(reason) = r {
                warnings.push(FieldIssue::new(field.clone(), format!("dropped: {reason}")));
            }
        };
        match key.as_str() {
            "value" => keep(raw_money(raw).map(|v| c.value = v)),
            "currency" => keep(raw_currency(raw).map(|v| c.currency = v)),
            "order_quantity" => keep(raw_count(raw).map(|v| c.num_items = v)),
            "order_id" => keep(raw_string(raw).map(|v| c.order_id = v)),
            "search_query" => keep(raw_string(raw).map(|v| c.search_string = v)),
            // Pinterest's limited data processing, when the visitor did not allow the sale of
            // their data.
            "opt_out_type" => keep(raw_string(raw).map(|v| c.opt_out_type = v)),
            "line_items" => {
                match serde_json::from_str::<Option<Vec<BTreeMap<String, Box<RawValue>>>>>(
                    raw.get(),
                ) {
                    Ok(items) => {
                        for (i, item) in items.unwrap_or_default().iter().enumerate() {
                            let content = map_line_item(item, &format!("{field}[{i}]"), warnings);
                            if let Some(id) = &content.id
                                && !c.content_ids.contains(id)
                            {
                                c.content_ids.push(id.clone());
                            }
                            if content != Content::default() {
                                c.contents.push(content);
                            }
                        }
                    }
                    Err(_) => keep(Err("must be an array of objects".to_owned())),
                }
            }
            // Handled by the caller (the one sent is the top-level event_id).
            "event_id" => {}
            k if TAG_ONLY_KEYS.contains(&k) => {}
            _ => keep(Err(
                "not a Pinterest Tag event data key with a CAPI field".to_owned()
            )),
        }
    }
    c
}

/// Tag event data keys that have no CAPI field: dropped without a warning.
const TAG_ONLY_KEYS: &[&str] = &[
    "promo_code",
    "lead_type",
    "video_title",
    "page_name",
    "property",
    "np",
];

fn map_line_item(
    item: &BTreeMap<String, Box<RawValue>>,
    prefix: &str,
    warnings: &mut Vec<FieldIssue>,
) -> Content {
    let mut c = Content::default();
    for (key, raw) in item {
        let field = format!("{prefix}.{key}");
        let mut keep = |r: Result<(), String>| {
            if let Err(reason) = r {
                warnings.push(FieldIssue::new(field.clone(), format!("dropped: {reason}")));
            }
        };
        match key.as_str() {
            "product_id" => keep(raw_string(raw).map(|v| c.id = v)),
            "product_price" => keep(raw_money(raw).map(|v| c.item_price = v)),
            "product_quantity" => keep(raw_count(raw).map(|v| c.quantity = v)),
            "product_name" => keep(raw_string(raw).map(|v| c.item_name = v)),
            "product_category" => keep(raw_string(raw).map(|v| c.item_category = v)),
            "product_brand" => keep(raw_string(raw).map(|v| c.item_brand = v)),
            k if k.starts_with("product_variant") => {}
            _ => keep(Err(
                "not a Pinterest Tag line item key with a CAPI field".to_owned()
            )),
        }
    }
    c
}

/// The event_id of a purchase reported with the Tag's `order_id`, as tag.js derives it:
///
/// - a Shopify order id, digits (`820982911946154508`) or a Shopify GID
///   (`gid://shopify/Order/820982911946154508`): `"order-"` and the digits, the Shopify rule
///   [`crate::shopify::purchase_event_id`], so the order webhook's copy merges with it;
/// - any other id: `"order-"` and the whole trimmed id (`US-1001` → `order-US-1001`), so
///   `US-1001`, `CA-1001` and `1001-R2` stay three orders.
///
/// `None` for an empty id. The browser's equivalent (tag.js):
/// `var m = id.match(/^(?:gid:\/\/shopify\/[A-Za-z]+\/)?(\d+)$/); "order-" + (m ? m[1] : id)`.
pub fn purchase_event_id(order_id: &str) -> Option<EventId> {
    let id = order_id.trim();
    if id.is_empty() {
        return None;
    }
    let digits = id
        .strip_prefix("gid://shopify/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(kind, _)| !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphabetic()))
        .map_or(id, |(_, digits)| digits);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return crate::shopify::purchase_event_id(digits);
    }
    EventId::parse(crate::shopify::event_id_of_order(id)).ok()
}

/// Warns when a purchase's event_id is not the one derived from its order id: then the
/// Shopify webhook's copy cannot merge with it and Pinterest cannot de-duplicate.
fn check_purchase_id(
    data: &BTreeMap<String, Box<RawValue>>,
    event_id: &EventId,
    warnings: &mut Vec<FieldIssue>,
) {
    let Some(Ok(Some(order_id))) = data.get("order_id").map(|r| raw_string(r)) else {
        return;
    };
    if let Some(expected) = purchase_event_id(&order_id)
        && expected != *event_id
    {
        warnings.push(FieldIssue::new(
            "event_id",
            format!(
                "a purchase's event_id should be \"order-\" and the order id ({expected}); \
                 the server's copy of this order will not be de-duplicated against it"
            ),
        ));
    }
}

/// A JSON string (trimmed) or a number's exact text; `None` for null or an empty string.
fn raw_string(raw: &RawValue) -> Result<Option<String>, String> {
    Ok(raw_string_exact(raw)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

/// Like [`raw_string`] but untrimmed: event ids must arrive exactly as the Tag got them.
fn raw_string_exact(raw: &RawValue) -> Result<Option<String>, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(|s| (!s.is_empty()).then_some(s))
            .map_err(|_| "must be a string".to_owned()),
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        _ if text == "null" => Ok(None),
        _ => Err("must be a string".to_owned()),
    }
}

/// An amount as a decimal: a JSON number's exact text (`72.39`) or a string (`"72.39"`).
fn raw_money(raw: &RawValue) -> Result<Option<Money>, String> {
    let Some(s) = raw_string(raw)? else {
        return Ok(None);
    };
    Money::parse(&s).map(Some).map_err(|e| e.to_string())
}

fn raw_currency(raw: &RawValue) -> Result<Option<Currency>, String> {
    let Some(s) = raw_string(raw)? else {
        return Ok(None);
    };
    Currency::parse(&s).map(Some).map_err(|e| e.to_string())
}

/// A whole number as a JSON integer or a string of digits.
fn raw_int(raw: &RawValue) -> Result<Option<i64>, String> {
    let Some(s) = raw_string(raw)? else {
        return Ok(None);
    };
    s.parse::<i64>()
        .map(Some)
        .map_err(|_| "must be a whole number".to_owned())
}

/// A count: a whole number, not negative.
fn raw_count(raw: &RawValue) -> Result<Option<i64>, String> {
    match raw_int(raw)? {
        Some(n) if n < 0 => Err("must not be negative".to_owned()),
        n => Ok(n),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} characters"));
    }
    if url.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err("must be an http(s) URL".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;
    const UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)";

    fn browser() -> BrowserContext<'static> {
        BrowserContext {
            client_ip: Some("203.0.113.9"),
            user_agent: Some(UA),
            epik_cookie: None,
            referer: None,
        }
    }

    fn check(body: &str) -> Result<Collected, Vec<FieldIssue>> {
        collect(body, &browser(), &TimeWindow::around(NOW))
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn tag_names_round_trip_and_tag_spellings_are_accepted_in_any_case() {
        for n in EventName::ALL {
            assert_eq!(parse_event_name(n.as_str()), Some(n));
            if let Some(tag) = tag_event_name(n) {
                assert_eq!(parse_event_name(tag), Some(n), "{tag}");
            }
        }
        assert_eq!(parse_event_name("AddToCart"), Some(EventName::AddToCart));
        assert_eq!(parse_event_name("PageVisit"), Some(EventName::PageVisit));
        assert_eq!(parse_event_name("Checkout"), Some(EventName::Checkout));
        assert_eq!(parse_event_name("purchase"), None);
        assert_eq!(tag_event_name(EventName::AppInstall), None);
    }

    #[test]
    fn a_checkout_maps_tag_data_to_custom_data_keeping_the_exact_digits() {
        let c = check(
            r#"{"event_name":"checkout","event_id":"order-820982911946154508",
                "event_source_url":"https://shop.example/thank-you",
                "data":{"value":72.390,"currency":"usd","order_quantity":3,
                  "order_id":"820982911946154508","promo_code":"SPRING",
                  "line_items":[
                    {"product_id":8001,"product_name":"Rose Glow Serum","product_category":"Beauty",
                     "product_brand":"Glow","product_price":12.13,"product_quantity":2,
                     "product_variant_id":"44","product_variant":"50ml"},
                    {"product_id":"8002","product_price":"48.13","product_quantity":"1"}]},
                "em":" Jane.Doe@Example.COM ","epik":"dj0yJnU9abc","source":"tag_mirror"}"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.source, CollectSource::TagMirror);
        let e = &c.event;
        assert_eq!(e.event_name, EventName::Checkout);
        assert_eq!(e.event_time.secs(), NOW);
        let cd = e.custom_data.as_ref().unwrap();
        assert_eq!(cd.value.as_ref().unwrap().as_str(), "72.390");
        assert_eq!(cd.currency.as_ref().unwrap().as_str(), "USD");
        assert_eq!(cd.num_items, Some(3));
        assert_eq!(cd.order_id.as_deref(), Some("820982911946154508"));
        assert_eq!(cd.content_ids, vec!["8001", "8002"]);
        assert_eq!(
            cd.contents[0].item_price.as_ref().unwrap().as_str(),
            "12.13"
        );
        assert_eq!(cd.contents[0].quantity, Some(2));
        assert_eq!(cd.contents[0].item_name.as_deref(), Some("Rose Glow Serum"));
        assert_eq!(cd.contents[0].item_category.as_deref(), Some("Beauty"));
        assert_eq!(cd.contents[0].item_brand.as_deref(), Some("Glow"));
        assert_eq!(cd.contents[1].quantity, Some(1));
        assert_eq!(
            e.user_data.em[0].as_str(),
            "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
        );
        assert_eq!(e.user_data.click_id.as_deref(), Some("dj0yJnU9abc"));
        assert_eq!(
            e.user_data.client_ip_address.as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(e.user_data.client_user_agent.as_deref(), Some(UA));
        assert_eq!(
            e.event_source_url.as_deref(),
            Some("https://shop.example/thank-you")
        );
        // What Pinterest receives has no Tag key left in it.
        let json = e.to_json();
        for tag_key in ["line_items", "order_quantity", "product_id", "promo_code"] {
            assert!(!json.contains(tag_key), "{tag_key} in {json}");
        }
    }

    #[test]
    fn bad_data_values_are_dropped_with_a_warning_and_the_event_is_kept() {
        let c = check(
            r#"{"event_name":"add_to_cart","event_id":"e1",
                "data":{"value":"72,39","currency":"dollars","order_quantity":-1,
                  "colour":"red","line_items":[{"product_id":"1","product_price":1e3,
                  "sku":"x"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            fields(&c.warnings),
            vec![
                "data.colour",
                "data.currency",
                "data.line_items[0].product_price",
                "data.line_items[0].sku",
                "data.order_quantity",
                "data.value",
            ]
        );
        let cd = c.event.custom_data.unwrap();
        assert_eq!(cd.value, None);
        assert_eq!(cd.content_ids, vec!["1"]);
    }

    #[test]
    fn the_click_id_comes_from_the_body_else_the_cookie_and_the_url_from_the_referer() {
        let ctx = BrowserContext {
            epik_cookie: Some("cookie-epik"),
            referer: Some("https://shop.example/products/1"),
            ..browser()
        };
        let w = TimeWindow::around(NOW);
        let c = collect(r#"{"event_name":"page_visit","event_id":"p1"}"#, &ctx, &w).unwrap();
        assert_eq!(c.event.user_data.click_id.as_deref(), Some("cookie-epik"));
        assert_eq!(
            c.event.event_source_url.as_deref(),
            Some("https://shop.example/products/1")
        );
        let c = collect(
            r#"{"event_name":"page_visit","event_id":"p1","epik":"body-epik"}"#,
            &ctx,
            &w,
        )
        .unwrap();
        assert_eq!(c.event.user_data.click_id.as_deref(), Some("body-epik"));
    }

    #[test]
    fn an_opt_out_keeps_only_what_pinterest_requires() {
        let ctx = BrowserContext {
            epik_cookie: Some("cookie-epik"),
            ..browser()
        };
        let c = collect(
            r#"{"event_name":"page_visit","event_id":"p1","opt_out":true,
                "em":"a@b.co","epik":"x"}"#,
            &ctx,
            &TimeWindow::around(NOW),
        )
        .unwrap();
        assert_eq!(c.event.opt_out, Some(true));
        assert!(c.event.user_data.em.is_empty());
        assert_eq!(c.event.user_data.click_id, None);
        assert!(c.event.user_data.has_required_match_key());
    }

    #[test]
    fn required_fields_are_errors_named_by_field() {
        let errs = check(r#"{"event_name":"purchase","data":{}}"#).unwrap_err();
        assert_eq!(fields(&errs), vec!["event_name", "event_id"]);
        let errs = check(r#"{"event_name":"lead","event_id":" a\n"}"#).unwrap_err();
        assert_eq!(fields(&errs), vec!["event_id"]);
        let errs = check(r#"{"event_name":"lead","event_id":"a","event_time":1764000000000}"#)
            .unwrap_err();
        assert!(errs[0].reason.contains("milliseconds"));
        let errs = check("[1]").unwrap_err();
        assert_eq!(fields(&errs), vec!["body"]);
        let errs = collect(
            r#"{"event_name":"lead","event_id":"a"}"#,
            &BrowserContext::default(),
            &TimeWindow::around(NOW),
        )
        .unwrap_err();
        assert_eq!(fields(&errs), vec!["em"]);
        let errs = check(r#"{"event_name":"app_install","event_id":"a"}"#).unwrap_err();
        assert_eq!(fields(&errs), vec!["event_name"]);
    }

    #[test]
    fn an_untrusted_browser_clock_is_replaced_by_the_time_of_receipt() {
        let c = check(&format!(
            r#"{{"event_name":"lead","event_id":"a","event_time":{}}}"#,
            NOW - 30 * 86400
        ))
        .unwrap();
        assert_eq!(c.event.event_time.secs(), NOW);
        assert_eq!(fields(&c.warnings), vec!["event_time"]);
        let c = check(&format!(
            r#"{{"event_name":"lead","event_id":"a","event_time":{}}}"#,
            NOW - 10
        ))
        .unwrap();
        assert_eq!(c.event.event_time.secs(), NOW - 10);
    }

    #[test]
    fn a_purchase_id_that_breaks_the_order_rule_is_flagged() {
        let c = check(
            r#"{"event_name":"checkout","event_id":"4f1c-random",
                "data":{"order_id":"gid://shopify/Order/820982911946154508"}}"#,
        )
        .unwrap();
        assert_eq!(fields(&c.warnings), vec!["event_id"]);
        assert!(c.warnings[0].reason.contains("order-820982911946154508"));
        let c = check(
            r#"{"event_name":"checkout","event_id":"order-820982911946154508",
                "data":{"order_id":"gid://shopify/Order/820982911946154508"}}"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn purchase_ids_take_the_digits_only_of_shopify_ids() {
        let id = |s: &str| purchase_event_id(s).map(|e| e.as_str().to_owned());
        assert_eq!(
            id(" 820982911946154508 ").as_deref(),
            Some("order-820982911946154508")
        );
        assert_eq!(
            id("gid://shopify/Order/820982911946154508").as_deref(),
            Some("order-820982911946154508")
        );
        assert_eq!(
            id("gid://shopify/OrderIdentity/5210499102").as_deref(),
            Some("order-5210499102")
        );
        // Other shops' ids are kept whole: different orders stay different events.
        assert_eq!(id("US-1001").as_deref(), Some("order-US-1001"));
        assert_eq!(id("CA-1001").as_deref(), Some("order-CA-1001"));
        assert_eq!(id("1001-R2").as_deref(), Some("order-1001-R2"));
        assert_eq!(id("#1001").as_deref(), Some("order-#1001"));
        assert_eq!(
            id("gid://shopify/Order/12x").as_deref(),
            Some("order-gid://shopify/Order/12x")
        );
        assert_eq!(id("  "), None);
        // Both non-Shopify purchases are accepted under their own ids without a warning.
        for order in ["US-1001", "CA-1001"] {
            let c = check(&format!(
                r#"{{"event_name":"checkout","event_id":"order-{order}","data":{{"order_id":"{order}"}}}}"#
            ))
            .unwrap();
            assert!(c.warnings.is_empty(), "{order}: {:?}", c.warnings);
        }
        let c = check(
            r#"{"event_name":"checkout","event_id":"order-1001","data":{"order_id":"US-1001"}}"#,
        )
        .unwrap();
        assert_eq!(fields(&c.warnings), vec!["event_id"]);
    }

    #[test]
    fn page_urls_lose_access_keys_and_email_addresses_before_they_are_stored() {
        let c = check(
            r#"{"event_name":"page_visit","event_id":"p1",
                "event_source_url":"https://shop.example/123/orders/abc?key=s3cret&email=jane%40example.com&utm_source=pin#token"}"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.event.event_source_url.as_deref(),
            Some("https://shop.example/123/orders/abc?utm_source=pin")
        );
        // The Referer is scrubbed the same way.
        let ctx = BrowserContext {
            referer: Some("https://shop.example/?subscriber=jane@example.com&_bt=preview"),
            ..browser()
        };
        let c = collect(
            r#"{"event_name":"page_visit","event_id":"p1"}"#,
            &ctx,
            &TimeWindow::around(NOW),
        )
        .unwrap();
        assert_eq!(
            c.event.event_source_url.as_deref(),
            Some("https://shop.example/")
        );
        let json = c.event.to_json();
        assert!(!json.contains("jane"), "{json}");
        // A locked store's password page is no storefront page.
        let c = check(
            r#"{"event_name":"page_visit","event_id":"p1","event_source_url":"https://shop.example/password"}"#,
        )
        .unwrap();
        assert_eq!(c.event.event_source_url, None);
        assert_eq!(fields(&c.warnings), vec!["event_source_url"]);
    }

    proptest::proptest! {
        /// Whatever a browser sends, mapping answers (an event or field errors), never panics.
        #[test]
        fn any_body_maps_or_is_refused_without_panicking(
            name in "[a-zA-Z_]{0,14}",
            value in "[-+0-9.eE,\"a-z]{0,8}",
            qty in "[-0-9.\"]{0,5}",
            junk in "\\PC{0,40}",
        ) {
            let body = format!(
                r#"{{"event_name":"{name}","event_id":"e","data":{{"value":{value},
                   "order_quantity":{qty},"line_items":[{{"product_price":{value}}}]}}}}"#
            );
            let _ = check(&body);
            let _ = check(&junk);
        }
    }

    #[test]
    fn bad_urls_are_dropped() {
        let c = check(
            r#"{"event_name":"lead","event_id":"a","event_source_url":"javascript:alert(1)"}"#,
        )
        .unwrap();
        assert_eq!(c.event.event_source_url, None);
        assert_eq!(fields(&c.warnings), vec!["event_source_url"]);
    }
}
