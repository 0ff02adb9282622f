//! Shopify's mandatory compliance webhooks, on `/webhooks/shopify` and verified like the rest:
//!
//! - `customers/redact` (`{shop_domain, customer: {id, email, phone}, orders_to_redact}`): the
//!   customer's email and phone hashes leave every stored event and audience fact, and the
//!   listed orders' events lose every identifier ([`Compliance::redact_customer`]);
//! - `shop/redact` (`{shop_domain}`, 48 hours after an uninstall): everything held for the
//!   shop is deleted ([`Compliance::forget_shop`]);
//! - `customers/data_request` (`{customer, orders_requested, data_request: {id}}`): what is
//!   held about the customer (hashes, the orders' ledger rows, the events sent) is recorded,
//!   and served at `GET /admin/shopify/data-requests` for the merchant to pass on.
//!
//! Shopify does not let an app subscribe these through the API: they are set in the app's
//! configuration (the README says where). The answer is 200 once the store has done it, so a
//! failure is retried by Shopify.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use pincapi_core::normalize::{self, HashedField};
use serde::Deserialize;
use serde_json::Value;

use super::record::Status;
use super::webhook::WebhookAnswer;
use crate::api_error::{ApiError, bearer_matches};
use crate::config::shopify::Shop;
use crate::state::AppState;
use crate::store::{DataRequest, DataRequestRow, Redaction};

/// The compliance topics.
pub const TOPICS: [&str; 3] = ["customers/redact", "shop/redact", "customers/data_request"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    /// The shop the request is about. Shopify signs the body, not the headers: this, not
    /// `X-Shopify-Shop-Domain`, says whose data to erase.
    shop_domain: Option<String>,
    customer: Option<Customer>,
    orders_to_redact: Vec<Value>,
    orders_requested: Vec<Value>,
    data_request: Option<RequestId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Customer {
    id: Option<Value>,
    email: Option<String>,
    phone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequestId {
    id: Option<Value>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => pincapi_core::shopify::wire::parse_id(s).map(|n| n.to_string()),
        _ => None,
    }
}

/// The customer's email and phone hashes, as the events carry them.
fn hashes(state: &AppState, c: &Customer) -> Vec<String> {
    let country = state.config.ingest.default_country.as_deref();
    let mut out = Vec::new();
    if let Some(e) = c.email.as_deref()
        && let Ok(h) = normalize::hash(HashedField::Em, e, None)
    {
        out.push(h.as_str().to_owned());
    }
    if let Some(p) = c.phone.as_deref()
        && let Ok(h) = normalize::hash(HashedField::Ph, p, country)
    {
        out.push(h.as_str().to_owned());
    }
    // The customer id goes to Pinterest hashed as external_id.
    if let Some(id) = c.id.as_ref().and_then(id_text)
        && let Ok(h) = normalize::hash(HashedField::ExternalId, &id, None)
    {
        out.push(h.as_str().to_owned());
    }
    out
}

fn order_event_ids(ids: &[Value]) -> Vec<String> {
    ids.iter()
        .filter_map(id_text)
        .map(|id| format!("{}{id}", pincapi_core::shopify::PURCHASE_PREFIX))
        .collect()
}

/// Handles one compliance webhook of `shop`, already verified.
pub async fn handle(
    state: &AppState,
    shop: &Shop,
    topic: &str,
    body: &[u8],
    webhook_id: Option<&str>,
) -> Result<WebhookAnswer, ApiError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_shape",
            format!("the body is not a {topic} payload: {e}"),
        )
    })?;
    let named = payload
        .shop_domain
        .as_deref()
        .map(crate::config::shopify::normalize_domain);
    if named.as_deref() != Some(shop.domain.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_shape",
            format!(
                "shop_domain: the body names {} but the delivery came for {}; nothing was done",
                named.as_deref().unwrap_or("no shop"),
                shop.domain
            ),
        ));
    }
    let unavailable = |e: crate::store::StoreError| {
        tracing::error!(shop = %shop.domain, topic, error = %e, "Could not carry out a Shopify compliance request; Shopify will retry");
        ApiError::unavailable("the event store is unavailable")
    };
    let customer = payload.customer.unwrap_or_default();
    let reason = match topic {
        "customers/redact" => {
            let r = state
                .store
                .redact_customer(Redaction {
                    shop: shop.domain.clone(),
                    hashes: hashes(state, &customer),
                    order_event_ids: order_event_ids(&payload.orders_to_redact),
                })
                .await
                .map_err(unavailable)?;
            tracing::info!(shop = %shop.domain, events_scrubbed = r.events_scrubbed, events_dropped = r.events_dropped, audience_rows = r.audience_rows, "Redacted a customer at Shopify's request");
            format!(
                "customer redacted: {} stored events scrubbed, {} unsent events dropped, {} \
                 audience facts deleted",
                r.events_scrubbed, r.events_dropped, r.audience_rows
            )
        }
        "shop/redact" => {
            let r = state
                .store
                .forget_shop(&shop.domain)
                .await
                .map_err(unavailable)?;
            tracing::info!(shop = %shop.domain, shop_rows = r.shop_rows, events_scrubbed = r.events_scrubbed, "Erased a shop's data at Shopify's request");
            format!(
                "shop erased: {} rows deleted, {} stored events scrubbed",
                r.shop_rows, r.events_scrubbed
            )
        }
        _ => {
            let request_id = payload
                .data_request
                .and_then(|d| d.id.as_ref().and_then(id_text))
                .or_else(|| webhook_id.map(str::to_owned))
                .unwrap_or_else(|| state.clock.now_ms().to_string());
            let row = state
                .store
                .record_data_request(DataRequest {
                    shop: shop.domain.clone(),
                    request_id: request_id.clone(),
                    customer_id: customer.id.as_ref().and_then(id_text),
                    hashes: hashes(state, &customer),
                    order_event_ids: order_event_ids(&payload.orders_requested),
                    received_at_ms: state.clock.now_ms(),
                })
                .await
                .map_err(unavailable)?;
            let events = row.report["events"].as_array().map_or(0, Vec::len);
            tracing::info!(shop = %shop.domain, request_id = %request_id, events, "Recorded a Shopify customer data request");
            format!(
                "data request {request_id} recorded ({events} events); see \
                 /admin/shopify/data-requests"
            )
        }
    };
    state
        .metrics
        .inc("pincapi_shopify_compliance_total", &[("topic", topic)], 1);
    Ok(WebhookAnswer {
        status: Status::Recorded,
        topic: topic.to_owned(),
        event_id: None,
        enqueued: None,
        reason: Some(reason),
    })
}

/// `?shop=&limit=` of the data-request listing.
#[derive(Debug, Deserialize)]
pub struct DataRequestsQuery {
    pub shop: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /admin/shopify/data-requests` (admin key): the customer data requests recorded,
/// newest first.
pub async fn data_requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DataRequestsQuery>,
) -> Result<Json<Vec<DataRequestRow>>, ApiError> {
    if !bearer_matches(&headers, &state.config.admin_key) {
        return Err(ApiError::unauthorized());
    }
    let shop = q
        .shop
        .as_deref()
        .map(crate::config::shopify::normalize_domain);
    state
        .store
        .data_requests(shop, q.limit.unwrap_or(100).min(1000))
        .await
        .map(Json)
        .map_err(|e| {
            tracing::error!(error = %e, "Could not read the data requests");
            ApiError::unavailable("the event store is unavailable")
        })
}
