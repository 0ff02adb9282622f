//! Hand-written validation of a Conversions API events body: the structure of
//! `components/schemas/ConversionEvents` (types, required keys, `additionalProperties: false`,
//! the user_data any-of rule, app_info/device_info bounds) plus the rules Pinterest states
//! only in prose (event names, action sources, SHA-256 hex, money strings, event time window).
//!
//! Hand-written rather than schema-driven because the gateway's benchmark pushes ~100k
//! events per second through it: it walks the borrowed [`Tape`] once per object and
//! allocates nothing unless there is something to report (field paths in messages are
//! `format_args!`, rendered only on error).

use std::fmt::Display;

use super::api::truncate;
use super::json::{JsonRef, Tape, View};

/// `ConversionEvents.data.maxItems`.
pub(super) const MAX_EVENTS: usize = 1000;

/// The 15 `event_name` values of the spec (5.23.0), listed in its description.
const EVENT_NAMES: [&str; 15] = [
    "add_payment_info",
    "add_to_cart",
    "add_to_wishlist",
    "app_install",
    "checkout",
    "custom",
    "initiate_checkout",
    "lead",
    "page_visit",
    "search",
    "signup",
    "subscribe",
    "view_category",
    "view_content",
    "watch_video",
];

const ACTION_SOURCES: [&str; 4] = ["app_android", "app_ios", "offline", "web"];

/// The clock and window an event's `event_time` is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimeWindow {
    /// Current Unix time in seconds.
    pub(super) now: i64,
    pub(super) max_age_secs: i64,
    pub(super) max_future_skew_secs: i64,
}

/// Checks the wrapper `{"data": [...]}` of a parsed body and returns the events.
/// `Err` is the message of a 400 answer.
pub(super) fn events<'t, 'a>(body: &'t Tape<'a>) -> Result<Vec<JsonRef<'t, 'a>>, String> {
    let root = body.root();
    let View::Object(members) = root.view() else {
        return Err(format!(
            "The request body must be a JSON object {{\"data\": [...]}}, got {}.",
            root.type_name()
        ));
    };
    let Some(data) = root.get("data") else {
        return Err("Missing required property \"data\" in the request body.".to_owned());
    };
    if let Some((key, _)) = members.clone().find(|(k, _)| *k != "data") {
        let hint = if key == "test" {
            " (test mode is the ?test=true query parameter)"
        } else {
            ""
        };
        return Err(format!(
            "Unknown property {:?} in the request body: only \"data\" is allowed{hint}.",
            truncate(key, 64)
        ));
    }
    let View::Array(items) = data.view() else {
        return Err(format!(
            "Property \"data\" must be an array of events, got {}.",
            data.type_name()
        ));
    };
    match items.len() {
        0 => Err("Property \"data\" must contain at least 1 event, got 0.".to_owned()),
        n if n > MAX_EVENTS => Err(format!(
            "Property \"data\" must contain at most {MAX_EVENTS} events, got {n}."
        )),
        _ => Ok(items.collect()),
    }
}

/// Parses a body and checks its wrapper (see [`events`]); `Err` is a 400 message.
pub(super) fn parse(bytes: &[u8]) -> Result<Tape<'_>, String> {
    Tape::parse(bytes).map_err(|e| format!("The request body is not valid JSON: {e}."))
}

/// Validates one event. `Ok` carries an optional warning (the event is processed);
/// `Err` is the `error_message` of a failed event.
pub(super) fn validate_event(
    event: JsonRef<'_, '_>,
    window: &TimeWindow,
) -> Result<Option<String>, String> {
    let View::Object(members) = event.view() else {
        return Err(format!(
            "Each event must be a JSON object, got {}.",
            event.type_name()
        ));
    };
    // Precedence: unknown keys, then missing keys, then required fields, then optional ones,
    // so the message names the most basic problem.
    if let Some((key, _)) = members.clone().find(|(k, _)| !is_event_key(k)) {
        return Err(unknown_property("", key));
    }
    let required = |key: &str| {
        event
            .get(key)
            .ok_or_else(|| format!("Missing required property {key:?}."))
    };
    let event_name = required("event_name")?;
    let action_source = required("action_source")?;
    let event_time = required("event_time")?;
    let user_data = required("user_data")?;
    let event_id = required("event_id")?;
    let mut warnings = Warnings::default();

    let event_name = check_event_name(event_name)?;
    check_action_source(action_source)?;
    check_event_time(event_time, window)?;
    match event_id.view() {
        View::Str(s) if !s.trim().is_empty() => {}
        View::Str(_) => return Err("Property \"event_id\" must not be empty.".to_owned()),
        _ => return Err(wrong_type(&"event_id", "a string", event_id)),
    }
    check_user_data(user_data, &mut warnings)?;

    let mut custom_data = None;
    for (key, value) in members {
        match key {
            "event_name" | "action_source" | "event_time" | "event_id" | "user_data" => {}
            "custom_data" => {
                check_custom_data(value, &mut warnings)?;
                custom_data = Some(value);
            }
            "app_info" => check_app_info(value)?,
            "device_info" => check_device_info(value)?,
            "opt_out" | "wifi" => {
                if !matches!(value.view(), View::Bool(_)) {
                    return Err(wrong_type(&key, "a boolean", value));
                }
            }
            // Every remaining event key is a nullable string in the spec.
            _ => nullable_string(&key, value)?,
        }
    }

    if event_name == "checkout" {
        let missing: Vec<&str> = ["value", "currency"]
            .into_iter()
            .filter(|k| {
                custom_data.is_none_or(|cd: JsonRef<'_, '_>| cd.get(k).is_none_or(JsonRef::is_null))
            })
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "checkout event without custom_data.{}: its revenue cannot be reported.",
                missing.join(" and custom_data.")
            ));
        }
    }
    Ok(warnings.finish())
}

fn is_event_key(key: &str) -> bool {
    matches!(
        key,
        "event_name"
            | "action_source"
            | "event_time"
            | "event_id"
            | "user_data"
            | "custom_data"
            | "event_source_url"
            | "opt_out"
            | "partner_name"
            | "app_id"
            | "app_name"
            | "app_version"
            | "device_brand"
            | "device_carrier"
            | "device_model"
            | "device_type"
            | "os_version"
            | "wifi"
            | "language"
            | "app_info"
            | "device_info"
    )
}

fn check_event_name<'t>(value: JsonRef<'t, '_>) -> Result<&'t str, String> {
    let View::Str(name) = value.view() else {
        return Err(wrong_type(&"event_name", "a string", value));
    };
    if EVENT_NAMES.contains(&name) {
        return Ok(name);
    }
    let lower = name.to_ascii_lowercase();
    let hint = if EVENT_NAMES.contains(&lower.as_str()) {
        format!(" (event names are lower case: {lower:?})")
    } else if lower == "purchase" {
        " (a purchase is \"checkout\")".to_owned()
    } else {
        String::new()
    };
    Err(format!(
        "Invalid event_name {:?}{hint}: it must be one of {}.",
        truncate(name, 64),
        EVENT_NAMES.join(", ")
    ))
}

fn check_action_source(value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Str(source) = value.view() else {
        return Err(wrong_type(&"action_source", "a string", value));
    };
    if ACTION_SOURCES.contains(&source) {
        return Ok(());
    }
    let hint = if source == "website" {
        " (use \"web\")"
    } else {
        ""
    };
    Err(format!(
        "Invalid action_source {:?}{hint}: it must be one of {}.",
        truncate(source, 64),
        ACTION_SOURCES.join(", ")
    ))
}

fn check_event_time(value: JsonRef<'_, '_>, window: &TimeWindow) -> Result<(), String> {
    let t = integer(&"event_time", value)?;
    // Same wording as a rejection observed from Pinterest (segmentio/action-destinations#2465).
    if t < window.now.saturating_sub(window.max_age_secs) {
        return Err(format!(
            "Invalid event_timestamp parameter. Given timestamp is in the past. \
             Current timestamp: {}, Given event_timestamp: {t}",
            window.now
        ));
    }
    if t > window.now.saturating_add(window.max_future_skew_secs) {
        // 1e11 seconds is year 5138: such a value is almost certainly milliseconds.
        let hint = if t > 100_000_000_000 {
            ". event_time must be Unix seconds; this looks like milliseconds"
        } else {
            ""
        };
        return Err(format!(
            "Invalid event_timestamp parameter. Given timestamp is in the future. \
             Current timestamp: {}, Given event_timestamp: {t}{hint}",
            window.now
        ));
    }
    Ok(())
}

fn check_user_data(value: JsonRef<'_, '_>, warnings: &mut Warnings) -> Result<(), String> {
    let View::Object(members) = value.view() else {
        return Err(wrong_type(&"user_data", "an object", value));
    };
    let (mut em, mut maids, mut ip, mut ua) = (false, false, false, false);
    for (key, value) in members {
        match key {
            "em" | "ph" | "fn" | "ln" | "ge" | "db" | "ct" | "st" | "zp" | "country"
            | "external_id" | "hashed_maids" => {
                em |= key == "em";
                maids |= key == "hashed_maids";
                check_hashed(key, value)?;
            }
            "client_ip_address" | "client_user_agent" => {
                ip |= key == "client_ip_address";
                ua |= key == "client_user_agent";
                if !value.is_str() {
                    return Err(wrong_type(
                        &format_args!("user_data.{key}"),
                        "a string",
                        value,
                    ));
                }
            }
            "click_id" | "partner_id" => {
                nullable_string(&format_args!("user_data.{key}"), value)?;
            }
            // The spec does not close user_data (no additionalProperties: false), so an
            // unknown key is not fatal; Pinterest flags non-standard fields as warnings.
            other => warnings.push(format!(
                "Unknown user_data property {:?} was ignored.",
                truncate(other, 64)
            )),
        }
    }
    if em || maids || (ip && ua) {
        return Ok(());
    }
    let detail = match (ip, ua) {
        (true, false) => "; it has \"client_ip_address\" without \"client_user_agent\"",
        (false, true) => "; it has \"client_user_agent\" without \"client_ip_address\"",
        _ => "",
    };
    Err(format!(
        "Property \"user_data\" must contain \"em\", \"hashed_maids\", or both \
         \"client_ip_address\" and \"client_user_agent\"{detail}."
    ))
}

/// A hashed user_data field: an array of SHA-256 digests as lower-case hex.
fn check_hashed(field: &str, value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Array(items) = value.view() else {
        return Err(wrong_type(
            &format_args!("user_data.{field}"),
            "an array of SHA-256 hex strings",
            value,
        ));
    };
    for (i, item) in items.enumerate() {
        let View::Str(s) = item.view() else {
            return Err(wrong_type(
                &format_args!("user_data.{field}[{i}]"),
                "a string",
                item,
            ));
        };
        if is_sha256_hex(s) {
            continue;
        }
        // Never echo the value: an un-hashed one is personal data.
        let problem = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            "it must be lower-case hex".to_owned()
        } else if field == "em" && s.contains('@') {
            "it looks like an un-hashed email address".to_owned()
        } else {
            format!("got {} characters", s.chars().count())
        };
        return Err(format!(
            "Property \"user_data.{field}[{i}]\" must be a SHA-256 digest of the normalised \
             value, as 64 lower-case hex characters; {problem}."
        ));
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_custom_data(value: JsonRef<'_, '_>, warnings: &mut Warnings) -> Result<(), String> {
    let View::Object(members) = value.view() else {
        return Err(wrong_type(&"custom_data", "an object", value));
    };
    for (key, value) in members {
        let field = format_args!("custom_data.{key}");
        match key {
            "value" | "predicted_ltv" => {
                if !value.is_null() {
                    money(&field, value)?;
                }
            }
            "currency" => {
                nullable_string(&field, value)?;
                if let View::Str(c) = value.view()
                    && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    warnings.push(format!(
                        "custom_data.currency {:?} is not an ISO-4217 code (three upper-case \
                         letters); the account currency may be used instead.",
                        truncate(c, 16)
                    ));
                }
            }
            "order_id"
            | "content_name"
            | "content_category"
            | "content_brand"
            | "search_string"
            | "opt_out_type"
            | "np"
            | "external_measurement_id" => nullable_string(&field, value)?,
            "num_items" => {
                integer(&field, value)?;
            }
            "external_measurement_vendor_id" => {
                if !value.is_null() {
                    integer(&field, value)?;
                }
            }
            "content_ids" => string_array(&field, value)?,
            "contents" => check_contents(value)?,
            other => return Err(unknown_property("custom_data", other)),
        }
    }
    Ok(())
}

fn check_contents(value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Array(items) = value.view() else {
        return Err(wrong_type(&"custom_data.contents", "an array", value));
    };
    for (i, item) in items.enumerate() {
        let View::Object(members) = item.view() else {
            return Err(wrong_type(
                &format_args!("custom_data.contents[{i}]"),
                "an object",
                item,
            ));
        };
        for (key, value) in members {
            let field = format_args!("custom_data.contents[{i}].{key}");
            match key {
                "id" | "item_name" | "item_category" | "item_brand" => {
                    if !value.is_str() {
                        return Err(wrong_type(&field, "a string", value));
                    }
                }
                "item_price" => money(&field, value)?,
                "quantity" => {
                    integer(&field, value)?;
                }
                other => {
                    return Err(unknown_property(
                        &format!("custom_data.contents[{i}]"),
                        other,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `ConversionEventAppInfo` (closed object, bounded strings and integers).
fn check_app_info(value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Object(members) = value.view() else {
        return Err(wrong_type(&"app_info", "an object", value));
    };
    for (key, value) in members {
        let field = format_args!("app_info.{key}");
        match key {
            "app_id" | "app_name" | "app_package_name" => bounded_string(&field, value, 200)?,
            "app_store" | "app_version" => bounded_string(&field, value, 100)?,
            "user_agent" => bounded_string(&field, value, 16_384)?,
            "install_time" => bounded_integer(&field, value, 0, i64::MAX)?,
            "window_height" | "window_width" => bounded_integer(&field, value, 0, 30_720)?,
            other => return Err(unknown_property("app_info", other)),
        }
    }
    Ok(())
}

/// `ConversionEventDeviceInfo` (closed object, enums, bounded strings and integers).
fn check_device_info(value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Object(members) = value.view() else {
        return Err(wrong_type(&"device_info", "an object", value));
    };
    for (key, value) in members {
        let field = format_args!("device_info.{key}");
        match key {
            "brand" | "carrier" | "model" | "type" | "os_name" | "os_release_name"
            | "os_version" | "kernel_version" => bounded_string(&field, value, 100)?,
            "locale" => bounded_string(&field, value, 35)?,
            "timezone" => bounded_string(&field, value, 40)?,
            "timezone_abbr" => bounded_string(&field, value, 5)?,
            "battery_level" => bounded_integer(&field, value, 0, 100)?,
            "cpu_cores" => bounded_integer(&field, value, 0, 1_152)?,
            "screen_width" | "screen_height" => bounded_integer(&field, value, 0, 30_720)?,
            "screen_density" => bounded_integer(&field, value, 0, 100_000)?,
            "storage_size"
            | "storage_free_space"
            | "external_storage_size"
            | "external_storage_free_space" => bounded_integer(&field, value, 0, 1_048_576)?,
            "form_factor" => one_of(
                &field,
                value,
                &[
                    "desktop",
                    "laptop",
                    "cellphone",
                    "tablet",
                    "smartwatch",
                    "tv",
                    "vr",
                    "console",
                    "other",
                ],
            )?,
            "network_type" => one_of(
                &field,
                value,
                &[
                    "wifi",
                    "cellular_2g",
                    "cellular_3g",
                    "cellular_4g",
                    "cellular_5g",
                    "cellular_6g",
                    "ethernet",
                    "unknown",
                ],
            )?,
            "os_family" => one_of(
                &field,
                value,
                &[
                    "ios", "android", "macos", "windows", "linux", "bsd", "other",
                ],
            )?,
            "languages" => {
                string_array(&field, value)?;
                if matches!(value.view(), View::Array(items) if items.len() > 100) {
                    return Err(format!("Property \"{field}\" must have at most 100 items."));
                }
            }
            other => return Err(unknown_property("device_info", other)),
        }
    }
    Ok(())
}

// ---- small typed checks; `field` is rendered only when there is an error ----------------

/// An `integer`/`int64` field. Floats are rejected even when whole (`1.0`): a float where the
/// spec says integer is a serialisation bug worth surfacing in a sandbox.
fn integer(field: &dyn Display, value: JsonRef<'_, '_>) -> Result<i64, String> {
    match value.view() {
        View::Int(n) => Ok(n),
        View::BigUint(_) => Err(format!("Property \"{field}\" is out of the int64 range.")),
        View::Float(_) => Err(format!(
            "Property \"{field}\" must be an integer, got a non-integer number."
        )),
        _ => Err(wrong_type(field, "an integer", value)),
    }
}

fn bounded_integer(
    field: &dyn Display,
    value: JsonRef<'_, '_>,
    min: i64,
    max: i64,
) -> Result<(), String> {
    let n = integer(field, value)?;
    if n < min || n > max {
        return Err(format!(
            "Property \"{field}\" must be between {min} and {max}, got {n}."
        ));
    }
    Ok(())
}

fn nullable_string(field: &dyn Display, value: JsonRef<'_, '_>) -> Result<(), String> {
    match value.view() {
        View::Str(_) | View::Null => Ok(()),
        _ => Err(wrong_type(field, "a string or null", value)),
    }
}

fn bounded_string(
    field: &dyn Display,
    value: JsonRef<'_, '_>,
    max_chars: usize,
) -> Result<(), String> {
    let View::Str(s) = value.view() else {
        return Err(wrong_type(field, "a string", value));
    };
    // JSON Schema's maxLength counts characters; only count them when bytes could exceed it.
    if s.len() > max_chars && s.chars().count() > max_chars {
        return Err(format!(
            "Property \"{field}\" must be at most {max_chars} characters long."
        ));
    }
    Ok(())
}

fn string_array(field: &dyn Display, value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Array(items) = value.view() else {
        return Err(wrong_type(field, "an array of strings", value));
    };
    if let Some((i, item)) = items.enumerate().find(|(_, v)| !v.is_str()) {
        return Err(wrong_type(&format_args!("{field}[{i}]"), "a string", item));
    }
    Ok(())
}

fn one_of(field: &dyn Display, value: JsonRef<'_, '_>, allowed: &[&str]) -> Result<(), String> {
    match value.view() {
        View::Str(s) if allowed.contains(&s) => Ok(()),
        View::Str(s) => Err(format!(
            "Invalid {field} {:?}: it must be one of {}.",
            truncate(s, 64),
            allowed.join(", ")
        )),
        _ => Err(wrong_type(field, "a string", value)),
    }
}

/// Money travels as a string Pinterest parses as a double (`"72.39"`); a JSON number or a
/// decimal comma fails.
fn money(field: &dyn Display, value: JsonRef<'_, '_>) -> Result<(), String> {
    let View::Str(s) = value.view() else {
        return Err(wrong_type(
            field,
            "a string holding a number (e.g. \"72.39\")",
            value,
        ));
    };
    if s.parse::<f64>().is_ok_and(f64::is_finite) {
        return Ok(());
    }
    Err(format!(
        "Property \"{field}\" must be a string holding a number (e.g. \"72.39\"), got {:?}.",
        truncate(s, 32)
    ))
}

fn wrong_type(field: &dyn Display, expected: &str, got: JsonRef<'_, '_>) -> String {
    format!(
        "Property \"{field}\" must be {expected}, got {}.",
        got.type_name()
    )
}

fn unknown_property(parent: &str, key: &str) -> String {
    let key = truncate(key, 64);
    if parent.is_empty() {
        format!("Unknown property {key:?} in the event: additional properties are not allowed.")
    } else {
        format!("Unknown property {key:?} in {parent}: additional properties are not allowed.")
    }
}

/// Warnings of one event, joined into its `warning_message`. Allocates only when there is
/// something to say.
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn push(&mut self, warning: String) {
        self.0.push(warning);
    }

    fn finish(self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Validates `event` the way the handler does: from bytes.
    fn check(event: &Value) -> Result<Option<String>, String> {
        let bytes = serde_json::to_vec(event).expect("serialisable");
        validate_event(Tape::parse(&bytes).expect("valid JSON").root(), &WINDOW)
    }

    const WINDOW: TimeWindow = TimeWindow {
        now: 1_765_400_000,
        max_age_secs: 7 * 86_400,
        max_future_skew_secs: 60,
    };
    const HASH: &str = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d";

    fn event() -> Value {
        json!({
            "event_name": "page_visit",
            "action_source": "web",
            "event_time": WINDOW.now,
            "event_id": "e1",
            "user_data": {"em": [HASH]}
        })
    }

    #[test]
    fn a_minimal_event_is_valid_without_warnings() {
        assert_eq!(check(&event()), Ok(None));
    }

    #[test]
    fn window_edges_are_inclusive() {
        let mut e = event();
        e["event_time"] = json!(WINDOW.now - WINDOW.max_age_secs);
        assert!(check(&e).is_ok());
        e["event_time"] = json!(WINDOW.now - WINDOW.max_age_secs - 1);
        assert!(check(&e).is_err());
        e["event_time"] = json!(WINDOW.now + WINDOW.max_future_skew_secs);
        assert!(check(&e).is_ok());
        e["event_time"] = json!(WINDOW.now + WINDOW.max_future_skew_secs + 1);
        assert!(check(&e).is_err());
    }

    #[test]
    fn whole_floats_are_not_integers() {
        let mut e = event();
        e["event_time"] = json!(1_765_400_000.0);
        let err = check(&e).unwrap_err();
        assert!(err.contains("event_time"), "{err}");
    }

    #[test]
    fn money_strings_must_parse_as_finite_numbers() {
        for (v, ok) in [
            ("72.39", true),
            ("0", true),
            ("72,39", false),
            ("NaN", false),
            ("", false),
        ] {
            let mut e = event();
            e["custom_data"] = json!({"value": v, "currency": "USD"});
            assert_eq!(check(&e).is_ok(), ok, "{v}");
        }
    }
}
