//! `GET /v5/ad_accounts/{ad_account_id}/analytics` (`ad_account/analytics`, scope `ads:read`)
//! and the conversion tags (`conversion_tags/list`, `conversion_tags/get`), in the spec's
//! shapes: the analytics answer is a top-level array of rows (`AD_ACCOUNT_ID`, `DATE` for a
//! time granularity, one UPPER_CASE key per requested column), the tag list is
//! `{"items": [ConversionTag]}`.
//!
//! The figures come from what this sandbox processed for the ad account (non-test events, by
//! the UTC day of their `event_time`), under a stated attribution model, since a sandbox has
//! no ads: a conversion is click-attributed when it carries `click_id` (and
//! `click_window_days` > 0), otherwise view-attributed when it carries a hashed email or
//! phone (and `view_window_days` > 0), otherwise not attributed and not reported. Spend is
//! [`SandboxOptions::daily_spend_micro`] on every day the account sent anything, so ROAS is
//! checkout value over that. Columns the sandbox does not compute are left out of the rows,
//! as Pinterest leaves out a column without a value. The parameters are checked as the spec
//! states them: dates `YYYY-MM-DD`, at most 90 days back and 90 days long, `columns` and
//! `granularity` required, the windows one of 0, 1, 7, 14, 30, 60.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api::{self, ApiError};
use super::{RecordedEvent, Sandbox};

const WINDOWS: [&str; 6] = ["0", "1", "7", "14", "30", "60"];
const GRANULARITIES: [&str; 5] = ["TOTAL", "DAY", "HOUR", "WEEK", "MONTH"];

/// The conversion columns the sandbox computes: column prefix → Pinterest event name.
const CONVERSIONS: [(&str, &str); 7] = [
    ("CHECKOUT", "checkout"),
    ("PAGE_VISIT", "page_visit"),
    ("SIGNUP", "signup"),
    ("LEAD", "lead"),
    ("CUSTOM", "custom"),
    ("ADD_TO_WISHLIST", "add_to_wishlist"),
    ("SUBSCRIBE", "subscribe"),
];

struct Params {
    start: i64,
    end: i64,
    columns: Vec<String>,
    granularity: &'static str,
    click_window: i64,
    view_window: i64,
}

fn parse_day(key: &str, value: &str) -> Result<i64, ApiError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid query parameter {key}={:?}: expected a date YYYY-MM-DD.",
                api::truncate(value, 40)
            ))
        })
}

impl Params {
    fn parse(query: Option<&str>, today: i64) -> Result<Params, ApiError> {
        let mut q: BTreeMap<&str, String> = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.replace("%2C", ",").replace("%2c", ",");
            q.insert(k, v);
        }
        let need = |k: &str| {
            q.get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("Missing required parameter {k}.")))
        };
        let start = parse_day("start_date", &need("start_date")?)?;
        let end = parse_day("end_date", &need("end_date")?)?;
        if end < start {
            return Err(ApiError::bad_request(
                "Invalid ad account analytics parameters. end_date is before start_date.",
            ));
        }
        if start < today - 90 * 86_400 {
            return Err(ApiError::bad_request(
                "Invalid ad account analytics parameters. start_date cannot be more than 90 days back from today.",
            ));
        }
        if end > start + 90 * 86_400 {
            return Err(ApiError::bad_request(
                "Invalid ad account analytics parameters. end_date cannot be more than 90 days past start_date.",
            ));
        }
        let columns: Vec<String> = need("columns")?
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = columns.iter().find(|c| {
            !c.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(ApiError::bad_request(format!(
                "Invalid query parameter columns: {:?} is not a column.",
                api::truncate(bad, 40)
            )));
        }
        let granularity_value = need("granularity")?;
        let granularity = GRANULARITIES
            .iter()
            .copied()
            .find(|g| *g == granularity_value)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid query parameter granularity={:?}: expected one of {}.",
                    api::truncate(&granularity_value, 40),
                    GRANULARITIES.join(", ")
                ))
            })?;
        let window = |k: &str, default: i64| -> Result<i64, ApiError> {
            match q.get(k) {
                None => Ok(default),
                Some(v) if WINDOWS.contains(&v.as_str()) => Ok(v.parse().unwrap_or(default)),
                Some(v) => Err(ApiError::bad_request(format!(
                    "Invalid query parameter {k}={:?}: expected one of {}.",
                    api::truncate(v, 40),
                    WINDOWS.join(", ")
                ))),
            }
        };
        let click_window = window("click_window_days", 30)?;
        window("engagement_window_days", 30)?;
        let view_window = window("view_window_days", 1)?;
        if let Some(t) = q.get("conversion_report_time")
            && !matches!(t.as_str(), "TIME_OF_AD_ACTION" | "TIME_OF_CONVERSION")
        {
            return Err(ApiError::bad_request(format!(
                "Invalid query parameter conversion_report_time={:?}: expected TIME_OF_AD_ACTION or TIME_OF_CONVERSION.",
                api::truncate(t, 40)
            )));
        }
        Ok(Params {
            start,
            end,
            columns,
            granularity,
            click_window,
            view_window,
        })
    }

    /// The first second of the bucket `day` falls in.
    fn bucket(&self, day: i64) -> i64 {
        match self.granularity {
            "TOTAL" => self.start,
            "WEEK" => {
                // Weeks start on Monday; 1970-01-01 was a Thursday.
                let days = day.div_euclid(86_400);
                (days - (days + 3).rem_euclid(7)) * 86_400
            }
            "MONTH" => time::OffsetDateTime::from_unix_timestamp(day)
                .ok()
                .and_then(|t| t.date().replace_day(1).ok())
                .map_or(day, |d| d.midnight().assume_utc().unix_timestamp()),
            _ => day,
        }
    }
}

/// What one bucket adds up.
#[derive(Default)]
struct Bucket {
    /// Column → value (counts and micro-dollars).
    sums: BTreeMap<String, i64>,
    spend_days: i64,
}

impl Bucket {
    fn add(&mut self, column: String, v: i64) {
        *self.sums.entry(column).or_default() += v;
    }
}

/// How the sandbox attributes an event: `Some("CLICK")`, `Some("VIEW")` or `None`.
fn attribution(ev: &Value, p: &Params) -> Option<&'static str> {
    let has = |k: &str| ev["user_data"][k].as_array().is_some_and(|a| !a.is_empty());
    if p.click_window > 0 && ev["user_data"]["click_id"].is_string() {
        Some("CLICK")
    } else if p.view_window > 0 && (has("em") || has("ph")) {
        Some("VIEW")
    } else {
        None
    }
}

/// Money in a decimal string (`"19.99"`) as micro-units.
fn micro(v: &Value) -> i64 {
    let Some(s) = v.as_str() else { return 0 };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    let whole: i64 = whole.parse().unwrap_or(0);
    let frac: i64 = frac.parse().unwrap_or(0);
    whole.saturating_mul(1_000_000).saturating_add(frac)
}

fn tally(b: &mut Bucket, ev: &Value, how: &str, prefix: &str) {
    let web = ev["action_source"] == "web";
    let value = micro(&ev["custom_data"]["value"]);
    let mut put = |name: String, with_value: bool| {
        b.add(name.clone(), 1);
        if with_value {
            b.add(format!("{name}_VALUE_IN_MICRO_DOLLAR"), value);
        }
    };
    let valued = prefix == "CHECKOUT" || prefix == "CUSTOM" || prefix == "SIGNUP";
    put(format!("TOTAL_{prefix}"), valued);
    put(format!("TOTAL_{how}_{prefix}"), valued);
    if web {
        put(format!("TOTAL_WEB_{prefix}"), valued);
        put(format!("TOTAL_WEB_{how}_{prefix}"), valued);
    }
    if ev["action_source"] == "offline" {
        b.add(format!("TOTAL_OFFLINE_{prefix}"), 1);
    }
    b.add("TOTAL_CONVERSIONS".to_owned(), 1);
}

/// `GET /v5/ad_accounts/{ad_account_id}/analytics`.
pub(super) async fn analytics(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = api::require_scope(&sandbox, &headers, "ads:read") {
        return e.into_response();
    }
    let ad_account_id = match api::ad_account_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let today = sandbox.now_secs().div_euclid(86_400) * 86_400;
    let p = match Params::parse(query.as_deref(), today) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rows = rows(
        &sandbox.events(),
        &ad_account_id,
        &p,
        sandbox.daily_spend_micro(),
    );
    axum::Json(rows).into_response()
}

fn rows(events: &[RecordedEvent], ad_account_id: &str, p: &Params, spend: i64) -> Vec<Value> {
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    let mut active_days: BTreeMap<i64, ()> = BTreeMap::new();
    for e in events {
        if e.test || e.ad_account_id != ad_account_id {
            continue;
        }
        let Some(t) = e.event["event_time"].as_i64() else {
            continue;
        };
        let day = t.div_euclid(86_400) * 86_400;
        if day < p.start || day > p.end {
            continue;
        }
        active_days.insert(day, ());
        let bucket = buckets.entry(p.bucket(day)).or_default();
        let name = e.event["event_name"].as_str().unwrap_or("");
        let Some((prefix, _)) = CONVERSIONS.iter().find(|(_, n)| *n == name) else {
            continue;
        };
        if let Some(how) = attribution(&e.event, p) {
            tally(bucket, &e.event, how, prefix);
        }
    }
    for day in active_days.keys() {
        buckets.entry(p.bucket(*day)).or_default().spend_days += 1;
    }
    let hourly = p.granularity == "HOUR";
    buckets
        .into_iter()
        .map(|(start, b)| {
            let spend_micro = b.spend_days * spend;
            let mut row = Map::new();
            row.insert("AD_ACCOUNT_ID".into(), json!(ad_account_id));
            if p.granularity != "TOTAL" {
                row.insert(
                    "DATE".into(),
                    json!(crate::quality::report::day_label(start)),
                );
            }
            for c in &p.columns {
                let value = match c.as_str() {
                    "SPEND_IN_MICRO_DOLLAR" => Some(json!(spend_micro)),
                    "SPEND_IN_DOLLAR" => Some(json!(spend_micro as f64 / 1e6)),
                    // HOUR no longer provides conversion metrics.
                    _ if hourly => None,
                    "CHECKOUT_ROAS" | "WEB_CHECKOUT_ROAS" if spend_micro > 0 => {
                        let value_column = if c == "CHECKOUT_ROAS" {
                            "TOTAL_CHECKOUT_VALUE_IN_MICRO_DOLLAR"
                        } else {
                            "TOTAL_WEB_CHECKOUT_VALUE_IN_MICRO_DOLLAR"
                        };
                        let v = b.sums.get(value_column).copied().unwrap_or(0);
                        Some(json!(v as f64 / spend_micro as f64))
                    }
                    other if known(other) => Some(json!(b.sums.get(other).copied().unwrap_or(0))),
                    _ => None,
                };
                if let Some(v) = value {
                    row.insert(c.clone(), v);
                }
            }
            Value::Object(row)
        })
        .collect()
}

/// Whether the sandbox computes `column` (a count or value of a conversion above).
fn known(column: &str) -> bool {
    if column == "TOTAL_CONVERSIONS" {
        return true;
    }
    let Some(rest) = column.strip_prefix("TOTAL_") else {
        return false;
    };
    let rest = rest.strip_suffix("_VALUE_IN_MICRO_DOLLAR").unwrap_or(rest);
    let rest = ["WEB_", "OFFLINE_"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    let rest = ["CLICK_", "VIEW_"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    CONVERSIONS.iter().any(|(prefix, _)| *prefix == rest)
}

/// One `ConversionTag` of the ad account.
fn conversion_tag(sandbox: &Sandbox, ad_account_id: &str) -> Value {
    let last_fired = sandbox
        .events()
        .iter()
        .filter(|e| !e.test && e.ad_account_id == ad_account_id)
        .filter_map(|e| e.event["event_time"].as_i64())
        .max()
        .map(|t| t * 1000);
    let (id, aem) = sandbox.conversion_tag();
    json!({
        "ad_account_id": ad_account_id,
        "id": id,
        "name": "pincapi sandbox tag",
        "code_snippet": format!("<script>pintrk('load', '{id}');</script>"),
        "enhanced_match_status": if aem { "VALIDATION_COMPLETE" } else { "NOT_VALIDATED" },
        "last_fired_time_ms": last_fired,
        "status": "ACTIVE",
        "version": "3",
        "configs": {
            "aem_enabled": aem,
            "aem_ph_enabled": false,
            "aem_fnln_enabled": false,
            "aem_ge_enabled": false,
            "aem_db_enabled": false,
            "aem_loc_enabled": false,
            "aem_external_id_enabled": false,
            "md_frequency": 1,
        }
    })
}

/// `GET /v5/ad_accounts/{ad_account_id}/conversion_tags`.
pub(super) async fn list_tags(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = api::require_scope(&sandbox, &headers, "ads:read") {
        return e.into_response();
    }
    let ad_account_id = match api::ad_account_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = api::bool_query(query.as_deref(), "filter_deleted") {
        return e.into_response();
    }
    axum::Json(json!({"items": [conversion_tag(&sandbox, &ad_account_id)]})).into_response()
}

/// `GET /v5/ad_accounts/{ad_account_id}/conversion_tags/{conversion_tag_id}`.
pub(super) async fn get_tag(
    State(sandbox): State<Sandbox>,
    Path((ad_account_id, tag_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = api::require_scope(&sandbox, &headers, "ads:read") {
        return e.into_response();
    }
    let ad_account_id = match api::ad_account_id(Ok(Path(ad_account_id))) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if tag_id != sandbox.conversion_tag().0 {
        return ApiError::not_found().into_response();
    }
    axum::Json(conversion_tag(&sandbox, &ad_account_id)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_becomes_micro_units() {
        assert_eq!(micro(&json!("19.99")), 19_990_000);
        assert_eq!(micro(&json!("7")), 7_000_000);
        assert_eq!(micro(&json!("0.1234567")), 123_456);
        assert_eq!(micro(&json!(null)), 0);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let p = Params::parse(
            Some(
                "start_date=2026-11-02&end_date=2026-11-30&columns=TOTAL_CHECKOUT&granularity=WEEK",
            ),
            1_796_083_200,
        )
        .unwrap();
        // 2026-11-05 is a Thursday; its week starts Monday 2026-11-02.
        let thu = parse_day("d", "2026-11-05").unwrap();
        assert_eq!(p.bucket(thu), parse_day("d", "2026-11-02").unwrap());
        let month = Params {
            granularity: "MONTH",
            ..p
        };
        assert_eq!(month.bucket(thu), parse_day("d", "2026-11-01").unwrap());
    }

    #[test]
    fn the_columns_computed_are_known_and_others_left_out() {
        for c in [
            "TOTAL_CHECKOUT",
            "TOTAL_CHECKOUT_VALUE_IN_MICRO_DOLLAR",
            "TOTAL_WEB_CHECKOUT",
            "TOTAL_WEB_CLICK_CHECKOUT_VALUE_IN_MICRO_DOLLAR",
            "TOTAL_VIEW_CHECKOUT",
            "TOTAL_PAGE_VISIT",
            "TOTAL_CONVERSIONS",
        ] {
            assert!(known(c), "{c}");
        }
        assert!(!known("TOTAL_IMPRESSION"));
        assert!(!known("CTR"));
    }
}
