//! Loose input → strict [`ConversionEvent`]: the shape `POST /v1/events` accepts.
//!
//! The ingest shape is Pinterest's event with two allowances: each hashed `user_data` key may
//! be a string or an array, and each value may be raw (we normalise and hash it) or already a
//! SHA-256 hex digest (passed through). Everything else is Pinterest's shape, so unknown keys
//! are rejected and money must be a decimal string.
//!
//! A bad *optional* match key (an email without `@`, a phone with letters) does not lose the
//! event: the key is dropped and reported as a warning naming the field. An event is rejected
//! only when a required field is bad or no usable match key is left.

use serde::Deserialize;

use crate::event::{
    ActionSource, ConversionEvent, CustomData, EventId, EventName, EventTime, UserData,
};
use crate::normalize::{self, HashedField, Sha256Hex};

/// The time rules applied at ingest, all in seconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    /// Current Unix time.
    pub now: i64,
    /// Oldest accepted `event_time`, as an age. Pinterest rejects old events; we use 7 days,
    /// the limit third parties report (the reference marks it unconfirmed).
    pub max_age: i64,
    /// How far ahead of our clock an `event_time` may be. Within it the time is clamped to
    /// `now` (Pinterest rejects future timestamps); beyond it the event is rejected.
    pub max_future_skew: i64,
}

impl TimeWindow {
    /// Seven days, the maximum event age pincapi accepts and sends.
    pub const DEFAULT_MAX_AGE: i64 = 7 * 24 * 3600;
    /// Five minutes of tolerated client clock skew.
    pub const DEFAULT_MAX_FUTURE_SKEW: i64 = 300;

    /// The default window around `now`.
    pub fn around(now: i64) -> TimeWindow {
        TimeWindow {
            now,
            max_age: Self::DEFAULT_MAX_AGE,
            max_future_skew: Self::DEFAULT_MAX_FUTURE_SKEW,
        }
    }

    /// Checks `t` against the window and clamps a small future skew to `now`.
    pub fn check(&self, t: EventTime) -> Result<EventTime, String> {
        let secs = t.secs();
        if secs < self.now - self.max_age {
            return Err(format!(
                "is older than {} days; Pinterest rejects events that old",
                self.max_age / 86400
            ));
        }
        if secs > self.now + self.max_future_skew {
            return Err(format!(
                "is more than {} seconds in the future",
                self.max_future_skew
            ));
        }
        if secs > self.now {
            // Cannot fail: `now` passed the same plausibility check when it was accepted.
            return Ok(EventTime::from_secs(self.now).unwrap_or(t));
        }
        Ok(t)
    }
}

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldIssue {
    /// Dotted path inside the event, e.g. `user_data.ph[0]` or `custom_data.value`.
    pub field: String,
    /// What is wrong, without echoing the value (it may be personal data).
    pub reason: String,
}

impl FieldIssue {
    /// A new issue.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldIssue {
        FieldIssue {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A string or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `user_data` as the ingest API accepts it: raw or pre-hashed values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestUserData {
    pub em: Option<OneOrMany>,
    pub hashed_maids: Option<OneOrMany>,
    pub ph: Option<OneOrMany>,
    #[serde(rename = "fn")]
    pub fn_: Option<OneOrMany>,
    pub ln: Option<OneOrMany>,
    pub ge: Option<OneOrMany>,
    pub db: Option<OneOrMany>,
    pub ct: Option<OneOrMany>,
    pub st: Option<OneOrMany>,
    pub zp: Option<OneOrMany>,
    pub country: Option<OneOrMany>,
    pub external_id: Option<OneOrMany>,
    pub client_ip_address: Option<String>,
    pub client_user_agent: Option<String>,
    pub click_id: Option<String>,
    pub partner_id: Option<String>,
}

/// One event as `POST /v1/events` accepts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    pub event_name: String,
    pub action_source: ActionSource,
    pub event_time: i64,
    pub event_id: String,
    pub user_data: IngestUserData,
    #[serde(default)]
    pub custom_data: Option<CustomData>,
    #[serde(default)]
    pub event_source_url: Option<String>,
    #[serde(default)]
    pub opt_out: Option<bool>,
    #[serde(default)]
    pub partner_name: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub device_brand: Option<String>,
    #[serde(default)]
    pub device_carrier: Option<String>,
    #[serde(default)]
    pub device_model: Option<String>,
    #[serde(default)]
    pub device_type: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub wifi: Option<bool>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub app_info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub device_info: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An accepted event with the warnings about keys that were dropped on the way.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event: ConversionEvent,
    pub warnings: Vec<FieldIssue>,
}

impl IngestEvent {
    /// Turns loose input into a strict event. `default_country` is the ISO alpha-2 country
    /// used to complete phone numbers when the event itself names none.
    pub fn into_event(
        self,
        window: &TimeWindow,
        default_country: Option<&str>,
    ) -> Result<Accepted, Vec<FieldIssue>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        let event_name = EventName::parse(&self.event_name);
        if event_name.is_none() {
            errors.push(FieldIssue::new(
                "event_name",
                "is not one of Pinterest's event names (add_to_cart, checkout, page_visit, ...)",
            ));
        }
        let event_time = EventTime::from_secs(self.event_time)
            .map_err(|e| e.to_string())
            .and_then(|t| window.check(t));
        if let Err(reason) = &event_time {
            errors.push(FieldIssue::new("event_time", reason.clone()));
        }
        let event_id = EventId::parse(self.event_id);
        if let Err(e) = &event_id {
            errors.push(FieldIssue::new("event_id", e.to_string()));
        }
        let user_data = hash_user_data(&self.user_data, default_country, &mut warnings);
        if !user_data.has_required_match_key() {
            errors.push(FieldIssue::new(
                "user_data",
                "needs em, hashed_maids, or both client_ip_address and client_user_agent",
            ));
        }
        for (name, map) in [
            ("app_info", &self.app_info),
            ("device_info", &self.device_info),
        ] {
            if let Some(map) = map {
                check_info_keys(name, map, &mut errors);
            }
        }
        let custom_data = self.custom_data.filter(|c| !c.is_empty());
        if let Some(c) = &custom_data {
            check_custom_data(c, &mut errors);
        }
        let (Some(event_name), Ok(event_time), Ok(event_id), true) =
            (event_name, event_time, event_id, errors.is_empty())
        else {
            return Err(errors);
        };
        let mut event = ConversionEvent::new(
            event_name,
            self.action_source,
            event_time,
            event_id,
            user_data,
        );
        event.custom_data = custom_data;
        event.event_source_url = self.event_source_url.filter(|s| !s.is_empty());
        event.opt_out = self.opt_out;
        event.partner_name = self.partner_name;
        event.app_id = self.app_id;
        event.app_name = self.app_name;
        event.app_version = self.app_version;
        event.device_brand = self.device_brand;
        event.device_carrier = self.device_carrier;
        event.device_model = self.device_model;
        event.device_type = self.device_type;
        event.os_version = self.os_version;
        event.wifi = self.wifi;
        event.language = self.language;
        event.app_info = self.app_info;
        event.device_info = self.device_info;
        Ok(Accepted { event, warnings })
    }
}

/// Normalises and hashes every key of loose user data. Bad values are dropped with a warning.
pub fn hash_user_data(
    raw: &IngestUserData,
    default_country: Option<&str>,
    warnings: &mut Vec<FieldIssue>,
) -> UserData {
    // The event's own raw country (if it is not already a hash) is the best hint for phones
    // and postcodes; the configured default comes second.
    let own_country = raw
        .country
        .as_ref()
        .and_then(|c| c.values().first())
        .filter(|c| Sha256Hex::parse(c).is_none())
        .and_then(|c| normalize::country_code(c));
    let country = own_country.as_deref().or(default_country);

    let mut out = UserData::default();
    let fields: [(HashedField, &Option<OneOrMany>, &mut Vec<Sha256Hex>); 12] = [
        (HashedField::Em, &raw.em, &mut out.em),
        (
            HashedField::HashedMaids,
            &raw.hashed_maids,
            &mut out.hashed_maids,
        ),
        (HashedField::Ph, &raw.ph, &mut out.ph),
        (HashedField::Fn, &raw.fn_, &mut out.fn_),
        (HashedField::Ln, &raw.ln, &mut out.ln),
        (HashedField::Ge, &raw.ge, &mut out.ge),
        (HashedField::Db, &raw.db, &mut out.db),
        (HashedField::Ct, &raw.ct, &mut out.ct),
        (HashedField::St, &raw.st, &mut out.st),
        (HashedField::Zp, &raw.zp, &mut out.zp),
        (HashedField::Country, &raw.country, &mut out.country),
        (
            HashedField::ExternalId,
            &raw.external_id,
            &mut out.external_id,
        ),
    ];
    for (field, values, target) in fields {
        let Some(values) = values else { continue };
        let many = matches!(values, OneOrMany::Many(_));
        for (i, v) in values.values().iter().enumerate() {
            match normalize::hash(field, v, country) {
                Ok(h) => {
                    if !target.contains(&h) {
                        target.push(h);
                    }
                }
                Err(e) => {
                    let name = if many {
                        format!("user_data.{}[{i}]", field.key())
                    } else {
                        format!("user_data.{}", field.key())
                    };
                    warnings.push(FieldIssue::new(name, format!("dropped: {e}")));
                }
            }
        }
    }
    out.client_ip_address = clean_raw(&raw.client_ip_address);
    out.client_user_agent = clean_raw(&raw.client_user_agent);
    out.click_id = clean_raw(&raw.click_id);
    out.partner_id = clean_raw(&raw.partner_id);
    out
}

/// Keys Pinterest's `app_info` and `device_info` objects allow (spec 5.16.0).
const APP_INFO_KEYS: &[&str] = &[
    "app_id",
    "app_name",
    "app_package_name",
    "app_store",
    "app_version",
    "install_time",
    "user_agent",
    "window_height",
    "window_width",
];
const DEVICE_INFO_KEYS: &[&str] = &[
    "battery_level",
    "brand",
    "carrier",
    "cpu_cores",
    "external_storage_free_space",
    "external_storage_size",
    "form_factor",
    "kernel_version",
    "languages",
    "locale",
    "model",
    "network_type",
    "os_family",
    "os_name",
    "os_release_name",
    "os_version",
    "screen_density",
    "screen_height",
    "screen_width",
    "storage_free_space",
    "storage_size",
    "timezone",
    "timezone_abbr",
    "type",
];

fn check_info_keys(
    name: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<FieldIssue>,
) {
    let allowed = if name == "app_info" {
        APP_INFO_KEYS
    } else {
        DEVICE_INFO_KEYS
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldIssue::new(
                format!("{name}.{key}"),
                "is not a field Pinterest accepts here",
            ));
        }
    }
}

fn check_custom_data(c: &CustomData, errors: &mut Vec<FieldIssue>) {
    if c.num_items.is_some_and(|n| n < 0) {
        errors.push(FieldIssue::new(
            "custom_data.num_items",
            "must not be negative",
        ));
    }
    for (i, item) in c.contents.iter().enumerate() {
        if item.quantity.is_some_and(|q| q < 0) {
            errors.push(FieldIssue::new(
                format!("custom_data.contents[{i}].quantity"),
                "must not be negative",
            ));
        }
    }
}

fn clean_raw(v: &Option<String>) -> Option<String> {
    v.as_deref().and_then(crate::event::raw_text)
}

/// Removes the offending value from a serde error message, keeping what was expected:
/// `invalid type: string "jon@example.com", expected an integer` → `invalid type: string,
/// expected an integer`; `unknown variant `jane@x.co`, expected one of ...` → `unknown variant,
/// expected one of ...`. The expectation is ours and safe; the found value may be personal
/// data. Field names (`unknown field `eventName``) are kept: they are the caller's keys.
pub fn redact_serde_message(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let Some(at) = rest.rfind(", expected ") else {
                return format!("{prefix}value");
            };
            let found = rest[..at]
                .split(['"', '`'])
                .next()
                .unwrap_or("value")
                .trim();
            return format!("{prefix}{found}{}", &rest[at..]);
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return match rest.find("`, expected") {
            Some(at) => format!("unknown variant{}", &rest[at + 1..]),
            None => "unknown variant".to_owned(),
        };
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;

    fn parse(json: &str) -> Result<Accepted, Vec<FieldIssue>> {
        let ev: IngestEvent = serde_json::from_str(json).expect("shape");
        ev.into_event(&TimeWindow::around(NOW), None)
    }

    #[test]
    fn raw_user_data_is_normalised_and_hashed() {
        let ok = parse(&format!(
            r#"{{"event_name":"checkout","action_source":"web","event_time":{NOW},
               "event_id":"order-1","user_data":{{"em":"  Jane.Doe@Example.COM ",
               "ph":["+1 (555) 123-4567"],"country":"US"}}}}"#
        ))
        .unwrap();
        assert_eq!(
            ok.event.user_data.em[0].as_str(),
            "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
        );
        assert_eq!(
            ok.event.user_data.ph[0].as_str(),
            "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"
        );
        assert!(ok.warnings.is_empty());
    }

    #[test]
    fn a_bad_optional_key_is_dropped_with_a_warning_naming_it() {
        let ok = parse(&format!(
            r#"{{"event_name":"page_visit","action_source":"web","event_time":{NOW},
               "event_id":"pv-1","user_data":{{"em":"a@b.co","ph":"555-555-SHIP"}}}}"#
        ))
        .unwrap();
        assert!(ok.event.user_data.ph.is_empty());
        assert_eq!(ok.warnings[0].field, "user_data.ph");
    }

    #[test]
    fn an_event_without_a_match_key_is_rejected() {
        let errs = parse(&format!(
            r#"{{"event_name":"page_visit","action_source":"web","event_time":{NOW},
               "event_id":"pv-1","user_data":{{"client_ip_address":"203.0.113.1"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(errs[0].field, "user_data");
    }

    #[test]
    fn times_outside_the_window_are_rejected_and_small_skew_is_clamped() {
        let at = |t: i64| {
            parse(&format!(
                r#"{{"event_name":"lead","action_source":"web","event_time":{t},
                   "event_id":"l","user_data":{{"em":"a@b.co"}}}}"#
            ))
        };
        assert_eq!(at(NOW - 8 * 86400).unwrap_err()[0].field, "event_time");
        assert_eq!(at(NOW + 3600).unwrap_err()[0].field, "event_time");
        assert_eq!(at(NOW + 60).unwrap().event.event_time.secs(), NOW);
        assert!(
            at(NOW * 1000).unwrap_err()[0]
                .reason
                .contains("milliseconds")
        );
    }

    #[test]
    fn serde_messages_lose_the_offending_value() {
        assert_eq!(
            redact_serde_message(r#"invalid type: string "jon@example.com", expected an integer"#),
            "invalid type: string, expected an integer"
        );
        assert_eq!(
            redact_serde_message("unknown variant `jane@x.co`, expected one of `web`, `offline`"),
            "unknown variant, expected one of `web`, `offline`"
        );
        assert_eq!(
            redact_serde_message("unknown field `eventName`, expected one of `event_name`"),
            "unknown field `eventName`, expected one of `event_name`"
        );
    }

    #[test]
    fn unknown_event_names_are_rejected() {
        let errs = parse(&format!(
            r#"{{"event_name":"purchase","action_source":"web","event_time":{NOW},
               "event_id":"x","user_data":{{"em":"a@b.co"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(errs[0].field, "event_name");
    }
}
