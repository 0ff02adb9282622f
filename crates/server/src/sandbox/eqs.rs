//! `GET /v5/ad_accounts/{ad_account_id}/conversion_eqs` (`conversion_eqs/list`, scope
//! `ads:read`): Pinterest's Event Quality Score, in the spec's shapes
//! (`components/schemas/EventQualityScore`).
//!
//! Values are computed from what this sandbox processed for the ad account (non-test events
//! whose `event_time` lies within the lookback, `1d` or `14d`), one `EventQualityScore` per
//! source platform (`action_source`: `web` → `WEB`, `app_android` → `MOBILE_ANDROID`,
//! `app_ios` → `MOBILE_IOS`, `offline` → `OFFLINE`). Each quality component maps event name →
//! `{coverage}`: the percentage of those events that carry the field (`hashed_email` = `em`,
//! `hashed_maid`, `ip_address`, `user_agent`, `click_id_epik` = `click_id`,
//! `advertiser_external_id` = `external_id`, `external_event_id` = `event_id` with `overlap`
//! 0 as no Tag traffic reaches a sandbox, `order_id`, `order_value` = `value`, `product_id` =
//! `content_ids` or `contents[].id`, `source_url` = `event_source_url`). `overall_status` grades
//! the weighted mean of the user-matching components as pincapi's local score does
//! (`pincapi_core::quality`). The sandbox sees no Tag traffic: `ingestion_source=TAG` answers an
//! empty list, as Pinterest does for an account without a score.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sandbox;
use super::api::{self, ApiError};

const PLATFORMS: [&str; 9] = [
    "WEB",
    "MOBILE",
    "MOBILE_ANDROID",
    "MOBILE_IOS",
    "OFFLINE",
    "PINTEREST_WEB",
    "PINTEREST_ANDROID",
    "PINTEREST_IOS",
    "POINT_OF_SALE",
];
const INGESTION: [&str; 5] = ["TAG", "MMP", "FILE_UPLOAD", "CONVERSIONS_API", "NATIVE"];

/// `GET /v5/ad_accounts/{ad_account_id}/conversion_eqs`.
pub(super) async fn list(
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
    let params = match Params::parse(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if params
        .ingestion_source
        .is_some_and(|s| s != "CONVERSIONS_API")
    {
        return axum::Json(Vec::<Value>::new()).into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let oldest = now - params.lookback_secs;
    // platform → event name → (events, per-component counts)
    let mut by_platform: BTreeMap<&'static str, BTreeMap<String, ComponentCounts>> =
        BTreeMap::new();
    for e in sandbox.events() {
        if e.test || e.ad_account_id != ad_account_id {
            continue;
        }
        let ev = &e.event;
        if ev["event_time"].as_i64().is_none_or(|t| t < oldest) {
            continue;
        }
        let platform = match ev["action_source"].as_str() {
            Some("app_android") => "MOBILE_ANDROID",
            Some("app_ios") => "MOBILE_IOS",
            Some("offline") => "OFFLINE",
            _ => "WEB",
        };
        if params.source_platform.is_some_and(|p| p != platform) {
            continue;
        }
        let name = ev["event_name"].as_str().unwrap_or("unknown").to_owned();
        by_platform
            .entry(platform)
            .or_default()
            .entry(name)
            .or_default()
            .count(ev);
    }
    let scores: Vec<Value> = by_platform
        .into_iter()
        .map(|(platform, names)| score(platform, params.lookback, &names))
        .collect();
    axum::Json(scores).into_response()
}

struct Params {
    lookback: &'static str,
    lookback_secs: i64,
    source_platform: Option<&'static str>,
    ingestion_source: Option<&'static str>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let mut lookback = None;
        let mut platform = None;
        let mut ingestion = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let pick = |allowed: &[&'static str]| -> Result<&'static str, ApiError> {
                allowed
                    .iter()
                    .copied()
                    .find(|a| *a == value)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Invalid query parameter {key}={:?}: expected one of {}.",
                            api::truncate(value, 40),
                            allowed.join(", ")
                        ))
                    })
            };
            match key {
                "lookback_period" => lookback = Some(pick(&["1d", "14d"])?),
                "source_platform" => platform = Some(pick(&PLATFORMS)?),
                "ingestion_source" => ingestion = Some(pick(&INGESTION)?),
                _ => {}
            }
        }
        let lookback = lookback.ok_or_else(|| {
            ApiError::bad_request("Missing required query parameter lookback_period (1d or 14d).")
        })?;
        Ok(Params {
            lookback,
            lookback_secs: if lookback == "1d" {
                86_400
            } else {
                14 * 86_400
            },
            source_platform: platform,
            ingestion_source: ingestion,
        })
    }
}

/// The components, in the spec's names.
const COMPONENTS: [&str; 11] = [
    "hashed_email",
    "hashed_maid",
    "ip_address",
    "user_agent",
    "click_id_epik",
    "advertiser_external_id",
    "external_event_id",
    "order_id",
    "order_value",
    "product_id",
    "source_url",
];

#[derive(Default)]
struct ComponentCounts {
    events: u64,
    present: [u64; COMPONENTS.len()],
}

impl ComponentCounts {
    fn count(&mut self, ev: &Value) {
        let u = &ev["user_data"];
        let c = &ev["custom_data"];
        let non_empty = |v: &Value| match v {
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            Value::Null => false,
            _ => true,
        };
        let product = non_empty(&c["content_ids"])
            || c["contents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| non_empty(&i["id"])));
        let flags = [
            non_empty(&u["em"]),
            non_empty(&u["hashed_maids"]),
            non_empty(&u["client_ip_address"]),
            non_empty(&u["client_user_agent"]),
            non_empty(&u["click_id"]),
            non_empty(&u["external_id"]),
            non_empty(&ev["event_id"]),
            non_empty(&c["order_id"]),
            non_empty(&c["value"]),
            product,
            non_empty(&ev["event_source_url"]),
        ];
        self.events += 1;
        for (p, f) in self.present.iter_mut().zip(flags) {
            *p += u64::from(f);
        }
    }

    fn coverage(&self, i: usize) -> f64 {
        pincapi_core::quality::percent(self.present[i] as i64, self.events as i64)
    }
}

fn score(platform: &str, lookback: &str, names: &BTreeMap<String, ComponentCounts>) -> Value {
    let mut components = serde_json::Map::new();
    for (i, component) in COMPONENTS.iter().enumerate() {
        let mut per_event = serde_json::Map::new();
        for (name, t) in names {
            let mut details = json!({ "coverage": t.coverage(i) });
            if *component == "external_event_id" {
                details["overlap"] = json!(0.0);
            }
            per_event.insert(name.clone(), details);
        }
        components.insert((*component).to_owned(), Value::Object(per_event));
    }
    // The local score over all events of the platform: email, click id, IP and user agent
    // together, external id.
    let mut all = ComponentCounts::default();
    for t in names.values() {
        all.events += t.events;
        for (a, b) in all.present.iter_mut().zip(t.present) {
            *a += b;
        }
    }
    let ip_ua = all.coverage(2).min(all.coverage(3));
    let s = pincapi_core::quality::match_score(|bit| {
        use pincapi_core::event::MatchKeys;
        match bit {
            MatchKeys::EM => all.coverage(0),
            MatchKeys::CLICK_ID => all.coverage(4),
            MatchKeys::IP_UA => ip_ua,
            MatchKeys::EXTERNAL_ID => all.coverage(5),
            _ => 0.0,
        }
    });
    json!({
        "overall_status": pincapi_core::quality::grade(s),
        "quality_components": components,
        "ingestion_source": "CONVERSIONS_API",
        "source_platform": platform,
        "lookback_period": lookback,
    })
}
