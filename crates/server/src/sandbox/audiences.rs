//! Audiences (`audiences/create`, `list`, `get`, `update`): `audience_type` is one of the
//! spec's case-sensitive values and `rule` is checked per type (a `CUSTOMER_LIST` needs an
//! existing list, `VISITOR` a Tag id and 1..=540 retention days, `ACTALIKE` existing seeds,
//! US/CA/GB and 1..=10 %). A customer-list audience below 100 members is `TOO_SMALL`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Sandbox;
use super::ads::{self, AdsState, SandboxAudience};
use super::api::{self, ApiError};

const AUDIENCE_TYPES: [&str; 5] = [
    "CUSTOMER_LIST",
    "VISITOR",
    "ENGAGEMENT",
    "ACTALIKE",
    "PERSONA",
];
const INGESTION_SOURCES: [&str; 4] = ["tag", "mmp", "file_upload", "conversions_api"];

/// `POST /v5/ad_accounts/{ad_account_id}/audiences`.
pub(super) async fn create(
    State(sandbox): State<Sandbox>,
    Path(ad_account_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:write")?;
        ads::digits("ad_account_id", &ad_account_id)?;
        let body = ads::object(&body)?;
        let name = match body.get("name").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_owned(),
            _ => return Err(ApiError::bad_request("name is required.")),
        };
        let audience_type = match body.get("audience_type").and_then(Value::as_str) {
            Some(t) if AUDIENCE_TYPES.contains(&t) => t.to_owned(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "audience_type is required, one of {} (case-sensitive).",
                    AUDIENCE_TYPES.join(", ")
                )));
            }
        };
        let Some(Value::Object(rule)) = body.get("rule") else {
            return Err(ApiError::bad_request("rule is required: a JSON object."));
        };
        let mut state = sandbox.ads();
        check_rule(&state, &ad_account_id, &audience_type, rule)?;
        if let Some(e) = state.next_write_fault() {
            return Err(e);
        }
        let now = ads::now_secs();
        let audience = SandboxAudience {
            id: state.new_id(),
            ad_account_id: ad_account_id.clone(),
            name,
            audience_type,
            description: body
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            rule: Value::Object(rule.clone()),
            created_timestamp: now,
            updated_timestamp: now,
            removed: false,
        };
        let answer = to_json(&state, &audience);
        state.audiences.insert(audience.id.clone(), audience);
        Ok(answer)
    })())
}

/// `GET /v5/ad_accounts/{ad_account_id}/audiences`.
pub(super) async fn list(
    State(sandbox): State<Sandbox>,
    Path(ad_account_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:read")?;
        ads::digits("ad_account_id", &ad_account_id)?;
        let (size, offset) = ads::page(query.as_deref())?;
        let state = sandbox.ads();
        let all: Vec<Value> = state
            .audiences
            .values()
            .filter(|a| a.ad_account_id == ad_account_id && !a.removed)
            .map(|a| to_json(&state, a))
            .collect();
        Ok(ads::paginated(all, size, offset))
    })())
}

/// `GET /v5/ad_accounts/{ad_account_id}/audiences/{audience_id}`.
pub(super) async fn get(
    State(sandbox): State<Sandbox>,
    Path((ad_account_id, audience_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:read")?;
        let state = sandbox.ads();
        let a = find(&state, &ad_account_id, &audience_id)?;
        Ok(to_json(&state, a))
    })())
}

/// `PATCH /v5/ad_accounts/{ad_account_id}/audiences/{audience_id}`.
pub(super) async fn update(
    State(sandbox): State<Sandbox>,
    Path((ad_account_id, audience_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:write")?;
        let body = ads::object(&body)?;
        let mut state = sandbox.ads();
        let current = find(&state, &ad_account_id, &audience_id)?.clone();
        let remove = match body.get("operation_type").and_then(Value::as_str) {
            None | Some("UPDATE") => false,
            Some("REMOVE") => true,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "operation_type must be UPDATE or REMOVE.",
                ));
            }
        };
        if let Some(Value::Object(rule)) = body.get("rule") {
            check_rule(&state, &ad_account_id, &current.audience_type, rule)?;
        }
        if let Some(e) = state.next_write_fault() {
            return Err(e);
        }
        let mut a = current;
        if let Some(n) = body.get("name").and_then(Value::as_str) {
            a.name = n.to_owned();
        }
        if let Some(d) = body.get("description").and_then(Value::as_str) {
            a.description = Some(d.to_owned());
        }
        if let Some(rule @ Value::Object(_)) = body.get("rule") {
            a.rule = rule.clone();
        }
        a.removed = remove;
        a.updated_timestamp = ads::now_secs();
        let answer = to_json(&state, &a);
        state.audiences.insert(a.id.clone(), a);
        Ok(answer)
    })())
}

fn check_rule(
    state: &AdsState,
    ad_account_id: &str,
    audience_type: &str,
    rule: &Map<String, Value>,
) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request(m.to_owned()));
    let int_in = |key: &str, lo: i64, hi: i64| match rule.get(key) {
        None => Ok(()),
        Some(v) if v.as_i64().is_some_and(|n| (lo..=hi).contains(&n)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "rule.{key} must be an integer {lo}..={hi}."
        ))),
    };
    match audience_type {
        "CUSTOMER_LIST" => {
            let id = rule.get("customer_list_id").and_then(Value::as_str);
            match id.and_then(|id| state.lists.get(id)) {
                Some(l) if l.ad_account_id == ad_account_id => Ok(()),
                _ => bad("rule.customer_list_id must name a customer list of this ad account."),
            }
        }
        "VISITOR" => {
            match rule.get("visitor_source_id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => return bad("rule.visitor_source_id is required: the Tag id, a digit string."),
            }
            int_in("retention_days", 1, 540)?;
            if let Some(src) = rule.get("ingestion_source") {
                let ok = src.get("=").and_then(Value::as_array).is_some_and(|a| {
                    !a.is_empty()
                        && a.iter()
                            .all(|v| v.as_str().is_some_and(|s| INGESTION_SOURCES.contains(&s)))
                });
                if !ok {
                    return bad(
                        "rule.ingestion_source must be {\"=\": [...]} of tag, mmp, file_upload, \
                         conversions_api.",
                    );
                }
            }
            if rule.get("url").is_some_and(|u| !u.is_array()) {
                return bad("rule.url must be an array of strings.");
            }
            Ok(())
        }
        "ACTALIKE" => {
            let seeds = rule.get("seed_id").and_then(Value::as_array);
            let known = seeds.is_some_and(|s| {
                !s.is_empty()
                    && s.iter().all(|id| {
                        id.as_str()
                            .and_then(|id| state.audiences.get(id))
                            .is_some_and(|a| a.ad_account_id == ad_account_id)
                    })
            });
            if !known {
                return bad("rule.seed_id must list audiences of this ad account.");
            }
            if !matches!(
                rule.get("country").and_then(Value::as_str),
                Some("US" | "CA" | "GB")
            ) {
                return bad("rule.country must be US, CA or GB.");
            }
            if rule.get("percentage").is_none() {
                return bad("rule.percentage is required: an integer 1..=10.");
            }
            int_in("percentage", 1, 10)
        }
        _ => Ok(()),
    }
}

fn find<'a>(
    state: &'a AdsState,
    ad_account_id: &str,
    audience_id: &str,
) -> Result<&'a SandboxAudience, ApiError> {
    state
        .audiences
        .get(audience_id)
        .filter(|a| a.ad_account_id == ad_account_id)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                404,
                "Audience not found.",
            )
        })
}

/// `components/schemas/Audience`.
fn to_json(state: &AdsState, a: &SandboxAudience) -> Value {
    let (size, status) = state.audience_size(a);
    json!({
        "id": a.id,
        "ad_account_id": a.ad_account_id,
        "name": a.name,
        "audience_type": a.audience_type,
        "description": a.description,
        "rule": a.rule,
        "size": size,
        "status": status,
        "type": "audience",
        "created_timestamp": a.created_timestamp,
        "updated_timestamp": a.updated_timestamp,
        "created_by_company_name": null,
    })
}

fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
