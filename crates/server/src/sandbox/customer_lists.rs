//! Customer lists (`customer_lists/create`, `list`, `get`, `update`): `records` is one
//! comma-separated string; emails must be lower case (plain or hashed), MAIDs hashed; an
//! update ADDs or REMOVEs records. A list below 100 members reports `TOO_SMALL`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sandbox;
use super::ads::{self, SandboxList};
use super::api::{self, ApiError};

const LIST_TYPES: [&str; 6] = [
    "EMAIL",
    "IDFA",
    "MAID",
    "LR_ID",
    "DLX_ID",
    "HASHED_PINNER_ID",
];

/// `POST /v5/ad_accounts/{ad_account_id}/customer_lists`.
pub(super) async fn create(
    State(sandbox): State<Sandbox>,
    Path(ad_account_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(create_list(&sandbox, &ad_account_id, &headers, &body))
}

/// `GET /v5/ad_accounts/{ad_account_id}/customer_lists`.
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
            .lists
            .values()
            .filter(|l| l.ad_account_id == ad_account_id)
            .map(to_json)
            .collect();
        Ok(ads::paginated(all, size, offset))
    })())
}

/// `GET /v5/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}`.
pub(super) async fn get(
    State(sandbox): State<Sandbox>,
    Path((ad_account_id, list_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:read")?;
        let state = sandbox.ads();
        find(&state.lists, &ad_account_id, &list_id).map(to_json)
    })())
}

/// `PATCH /v5/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}`.
pub(super) async fn update(
    State(sandbox): State<Sandbox>,
    Path((ad_account_id, list_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond((|| {
        api::require_scope(&sandbox, &headers, "ads:write")?;
        ads::digits("ad_account_id", &ad_account_id)?;
        ads::digits("customer_list_id", &list_id)?;
        let body = ads::object(&body)?;
        let op = match body.get("operation_type").and_then(Value::as_str) {
            Some(op @ ("ADD" | "REMOVE")) => op.to_owned(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "operation_type must be ADD or REMOVE.",
                ));
            }
            None => return Err(ApiError::bad_request("operation_type is required.")),
        };
        let mut state = sandbox.ads();
        if let Some(e) = state.next_write_fault() {
            return Err(e);
        }
        let list_type = find(&state.lists, &ad_account_id, &list_id)?
            .list_type
            .clone();
        let records = parse_records(&body, &list_type)?;
        let list = state
            .lists
            .get_mut(&list_id)
            .ok_or_else(ApiError::not_found)?;
        let n = records.len() as u64;
        if op == "ADD" {
            list.records.extend(records);
            list.num_uploaded_user_records += n;
        } else {
            for r in &records {
                list.records.remove(r);
            }
            list.num_removed_user_records += n;
        }
        list.num_batches += 1;
        list.updated_time = ads::now_secs();
        Ok(to_json(list))
    })())
}

fn create_list(
    sandbox: &Sandbox,
    ad_account_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    api::require_scope(sandbox, headers, "ads:write")?;
    ads::digits("ad_account_id", ad_account_id)?;
    let body = ads::object(body)?;
    let name = match body.get("name").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => n.to_owned(),
        _ => return Err(ApiError::bad_request("name is required.")),
    };
    let list_type = match body.get("list_type") {
        None => "EMAIL".to_owned(),
        Some(Value::String(t)) if LIST_TYPES.contains(&t.as_str()) => t.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "list_type must be one of {}.",
                LIST_TYPES.join(", ")
            )));
        }
    };
    let records = parse_records(&body, &list_type)?;
    let mut state = sandbox.ads();
    if let Some(e) = state.next_write_fault() {
        return Err(e);
    }
    let now = ads::now_secs();
    let list = SandboxList {
        id: state.new_id(),
        ad_account_id: ad_account_id.to_owned(),
        name,
        list_type,
        num_uploaded_user_records: records.len() as u64,
        records: records.into_iter().collect(),
        num_batches: 1,
        num_removed_user_records: 0,
        created_time: now,
        updated_time: now,
    };
    let answer = to_json(&list);
    state.lists.insert(list.id.clone(), list);
    Ok(answer)
}

/// The records of a create or update body: a required, non-empty comma-separated string.
/// Emails must be lower case, plain or hashed (MD5, SHA1, SHA256); MAIDs hashed.
fn parse_records(
    body: &serde_json::Map<String, Value>,
    list_type: &str,
) -> Result<Vec<String>, ApiError> {
    let Some(text) = body.get("records").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "records is required: one string of comma-separated values.",
        ));
    };
    let records: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    if records.is_empty() {
        return Err(ApiError::bad_request("records holds no value."));
    }
    let hashed =
        |r: &str| matches!(r.len(), 32 | 40 | 64) && r.bytes().all(|b| b.is_ascii_hexdigit());
    for (i, r) in records.iter().enumerate() {
        let ok = match list_type {
            "EMAIL" => hashed(r) || (r.contains('@') && *r == r.to_lowercase()),
            "MAID" | "IDFA" => hashed(r),
            _ => true,
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "records[{i}] is not a valid {list_type} record: emails must be lower case \
                 or hashed with MD5, SHA1 or SHA256; MAIDs and IDFAs must be hashed."
            )));
        }
    }
    Ok(records)
}

fn find<'a>(
    lists: &'a std::collections::BTreeMap<String, SandboxList>,
    ad_account_id: &str,
    list_id: &str,
) -> Result<&'a SandboxList, ApiError> {
    lists
        .get(list_id)
        .filter(|l| l.ad_account_id == ad_account_id)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                404,
                "Customer list not found.",
            )
        })
}

/// `components/schemas/CustomerList`.
fn to_json(l: &SandboxList) -> Value {
    json!({
        "id": l.id,
        "ad_account_id": l.ad_account_id,
        "name": l.name,
        "created_time": l.created_time,
        "updated_time": l.updated_time,
        "num_batches": l.num_batches,
        "num_uploaded_user_records": l.num_uploaded_user_records,
        "num_removed_user_records": l.num_removed_user_records,
        "status": l.status(),
        "type": "customerlist",
        "exceptions": {},
    })
}

fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
