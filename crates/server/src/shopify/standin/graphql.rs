//! The stand-in's Admin GraphQL endpoint: the operations pincapi sends, recognised by their
//! operation name (and checked to be in the query text), with Shopify's answer shapes, cost
//! extensions and throttling.
//!
//! Costs follow Shopify's rules for these documents (objects 1, connections 2 plus `first`
//! times a node's cost, mutations 10): a query over 1,000 requested points is refused with
//! `MAX_COST_EXCEEDED`; one over what the bucket holds is answered `THROTTLED` (HTTP 200);
//! otherwise the requested cost is taken from the bucket and the difference to the actual
//! cost (what the answer holds) given back.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::orders::{created, line_page, order_node, page, updated};
use super::{ShopifyStandin, StandinRequest};

/// Points of one order node of `OrdersPage` without its line items, and of one line item.
const ORDER_POINTS: u32 = 17;
const LINE_POINTS: u32 = 6;

/// An answer being built: `data` or `errors`, and how many orders it holds.
struct Answer {
    status: StatusCode,
    body: Value,
    error: Option<String>,
    orders: usize,
    actual: u32,
}

impl Answer {
    fn data(data: Value, orders: usize, actual: u32) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: json!({ "data": data }),
            error: None,
            orders,
            actual,
        }
    }

    fn error(code: &str, message: String) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: json!({"errors": [{"message": message, "extensions": {"code": code}}]}),
            error: Some(code.to_owned()),
            orders: 0,
            actual: 0,
        }
    }
}

fn var<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn int(v: &Value, k: &str) -> u32 {
    var(v, k).and_then(Value::as_u64).unwrap_or(0) as u32
}

/// The requested cost of an operation with these variables.
fn requested(op: &str, v: &Value) -> u32 {
    match op {
        "OrdersPage" => 2 + int(v, "first") * (ORDER_POINTS + 2 + LINE_POINTS * int(v, "lines")),
        "OrderLineItems" => 3 + LINE_POINTS * int(v, "first"),
        "CensusPage" => 2 + int(v, "first"),
        "WebhookSubscriptions" => 252,
        "BulkOrders" | "WebhookCreate" | "WebhookUpdate" | "WebhookDelete" => 10,
        _ => 1,
    }
}

/// `POST /admin/api/{version}/graphql.json`.
pub(super) async fn graphql(
    State(standin): State<ShopifyStandin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok());
    if !standin.accepts(token) {
        standin.record(StandinRequest {
            operation: "unauthorized".into(),
            variables: Value::Null,
            status: 401,
            error: None,
            orders: 0,
        });
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})),
        )
            .into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": {"query": format!("Required parameter missing or invalid: {e}")}})),
            )
                .into_response();
        }
    };
    let query = request.get("query").and_then(Value::as_str).unwrap_or("");
    let op = request
        .get("operationName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let variables = request.get("variables").cloned().unwrap_or(Value::Null);
    let base = format!(
        "http://{}",
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
    );
    let cost = requested(&op, &variables);
    let mut answer = if !(query.contains(&format!("query {op}"))
        || query.contains(&format!("mutation {op}")))
    {
        Answer::error(
            "BAD_REQUEST",
            format!("operationName {op:?} names no operation of the query"),
        )
    } else if cost > 1000 {
        Answer::error(
            "MAX_COST_EXCEEDED",
            format!("Query cost is {cost}, which exceeds the single query max cost limit (1000)."),
        )
    } else if !standin.take_points(cost) {
        Answer::error("THROTTLED", "Throttled".into())
    } else {
        let a = standin.operation(&op, &variables, &base);
        standin.give_back(cost.saturating_sub(a.actual));
        a
    };
    let (available, max, rate) = standin.bucket_now();
    let cost_ext = json!({
        "requestedQueryCost": cost,
        "actualQueryCost": if answer.error.as_deref() == Some("THROTTLED") { Value::Null } else { json!(answer.actual) },
        "throttleStatus": {"maximumAvailable": max, "currentlyAvailable": available, "restoreRate": rate},
    });
    answer.body["extensions"] = json!({ "cost": cost_ext });
    standin.record(StandinRequest {
        operation: op,
        variables,
        status: answer.status.as_u16(),
        error: answer.error.clone(),
        orders: answer.orders,
    });
    (answer.status, Json(answer.body)).into_response()
}

impl ShopifyStandin {
    /// The bucket now: points available, size, restore rate.
    fn bucket_now(&self) -> (f64, f64, f64) {
        let o = &self.options;
        let mut shop = self.lock();
        let (points, at) = shop.bucket.unwrap_or((o.bucket_size, Instant::now()));
        let now = (points + at.elapsed().as_secs_f64() * o.restore_rate).min(o.bucket_size);
        shop.bucket = Some((now, Instant::now()));
        (now.floor(), o.bucket_size, o.restore_rate)
    }

    /// Takes `cost` points if the bucket holds them (and no throttling is forced).
    fn take_points(&self, cost: u32) -> bool {
        let (available, _, _) = self.bucket_now();
        let mut shop = self.lock();
        if shop.throttle_next > 0 {
            shop.throttle_next -= 1;
            return false;
        }
        if available < f64::from(cost) {
            return false;
        }
        if let Some((p, _)) = shop.bucket.as_mut() {
            *p -= f64::from(cost);
        }
        true
    }

    fn give_back(&self, points: u32) {
        let size = self.options.bucket_size;
        if let Some((p, _)) = self.lock().bucket.as_mut() {
            *p = (*p + f64::from(points)).min(size);
        }
    }

    fn has_scope(&self, scope: &str) -> bool {
        self.options.scopes.iter().any(|s| s == scope)
    }

    fn operation(&self, op: &str, v: &Value, base: &str) -> Answer {
        let orders_scope = || {
            Answer::error(
                "ACCESS_DENIED",
                "Access denied for orders field. Required access: `read_orders` access scope."
                    .into(),
            )
        };
        let query = || {
            var(v, "query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let shop_domain = self.options.shop_domain.clone();
        match op {
            "OrdersPage" => {
                if !self.has_scope("read_orders") {
                    return orders_scope();
                }
                let (first, lines) = (int(v, "first") as usize, int(v, "lines") as usize);
                if !(1..=250).contains(&first) {
                    return Answer::error("BAD_REQUEST", "first must be 1..=250".into());
                }
                let matching = match self.matching(&query()) {
                    Ok(m) => m,
                    Err(e) => return Answer::error("BAD_REQUEST", e),
                };
                let after = var(v, "after").and_then(Value::as_str);
                let (nodes, info) = match page(matching, updated, false, first, after) {
                    Ok(p) => p,
                    Err(e) => return Answer::error("BAD_REQUEST", e),
                };
                let n = nodes.len();
                let mut actual = 2;
                let nodes: Vec<Value> = nodes
                    .iter()
                    .map(|o| {
                        let mut node = order_node(o, &shop_domain);
                        let lp = line_page(o, lines, None).unwrap_or(Value::Null);
                        let shown = lp["nodes"].as_array().map_or(0, Vec::len) as u32;
                        actual += ORDER_POINTS + 2 + LINE_POINTS * shown;
                        node.insert("lineItems".into(), lp);
                        Value::Object(node)
                    })
                    .collect();
                Answer::data(
                    json!({"orders": {"pageInfo": info, "nodes": nodes}}),
                    n,
                    actual,
                )
            }
            "OrderLineItems" => {
                if !self.has_scope("read_orders") {
                    return orders_scope();
                }
                let id = var(v, "id").and_then(Value::as_str).unwrap_or("");
                let digits = id.rsplit('/').next().and_then(|d| d.parse::<u64>().ok());
                let order = self
                    .lock()
                    .orders
                    .iter()
                    .find(|o| super::orders::order_id(o) == digits)
                    .cloned();
                let Some(o) = order else {
                    return Answer::data(json!({"order": null}), 0, 1);
                };
                let after = var(v, "after").and_then(Value::as_str);
                match line_page(&o, int(v, "first") as usize, after) {
                    Ok(lp) => {
                        let shown = lp["nodes"].as_array().map_or(0, Vec::len) as u32;
                        Answer::data(
                            json!({"order": {"id": id, "lineItems": lp}}),
                            0,
                            3 + LINE_POINTS * shown,
                        )
                    }
                    Err(e) => Answer::error("BAD_REQUEST", e),
                }
            }
            "CensusPage" => {
                if !self.has_scope("read_orders") {
                    return orders_scope();
                }
                let matching = match self.matching(&query()) {
                    Ok(m) => m,
                    Err(e) => return Answer::error("BAD_REQUEST", e),
                };
                let after = var(v, "after").and_then(Value::as_str);
                let first = (int(v, "first") as usize).clamp(1, 250);
                match page(matching, created, true, first, after) {
                    Ok((nodes, info)) => {
                        let n = nodes.len();
                        let keep = [
                            "id",
                            "legacyResourceId",
                            "createdAt",
                            "test",
                            "cancelledAt",
                            "displayFinancialStatus",
                        ];
                        let nodes: Vec<Value> = nodes
                            .iter()
                            .map(|o| {
                                let mut node = order_node(o, &shop_domain);
                                node.retain(|k, _| keep.contains(&k.as_str()));
                                Value::Object(node)
                            })
                            .collect();
                        Answer::data(
                            json!({"orders": {"pageInfo": info, "nodes": nodes}}),
                            n,
                            2 + n as u32,
                        )
                    }
                    Err(e) => Answer::error("BAD_REQUEST", e),
                }
            }
            "OrdersCount" => {
                if !self.has_scope("read_orders") {
                    return orders_scope();
                }
                match self.matching(&query()) {
                    Ok(m) => {
                        let limit = var(v, "limit").and_then(Value::as_u64);
                        let n = m.len() as u64;
                        let (count, precision) = match limit {
                            Some(l) if n > l => (l, "AT_LEAST"),
                            _ => (n, "EXACT"),
                        };
                        Answer::data(
                            json!({"ordersCount": {"count": count, "precision": precision}}),
                            0,
                            1,
                        )
                    }
                    Err(e) => Answer::error("BAD_REQUEST", e),
                }
            }
            "BulkOrders" => {
                if !self.has_scope("read_orders") {
                    return orders_scope();
                }
                let inner = var(v, "query").and_then(Value::as_str).unwrap_or("");
                // The search filter of the inner query: `orders(query: "…"`.
                let filter = inner
                    .split_once("orders(query: ")
                    .and_then(|(_, rest)| {
                        serde_json::Deserializer::from_str(rest)
                            .into_iter::<String>()
                            .next()
                    })
                    .and_then(Result::ok);
                let Some(filter) = filter else {
                    return Answer::data(
                        json!({"bulkOperationRunQuery": {"bulkOperation": null, "userErrors": [
                            {"field": ["query"], "message": "Invalid bulk query: no orders(query:) filter", "code": "INVALID"}]}}),
                        0,
                        10,
                    );
                };
                match self.start_bulk(&filter) {
                    Ok(id) => Answer::data(
                        json!({"bulkOperationRunQuery": {"bulkOperation": {"id": id, "status": "CREATED"}, "userErrors": []}}),
                        0,
                        10,
                    ),
                    Err(e) => Answer::error("BAD_REQUEST", e),
                }
            }
            "BulkStatus" => {
                let id = var(v, "id").and_then(Value::as_str).unwrap_or("");
                Answer::data(json!({"bulkOperation": self.bulk_status(id, base)}), 0, 1)
            }
            "AccessScopes" => {
                let scopes: Vec<Value> = self
                    .options
                    .scopes
                    .iter()
                    .map(|s| json!({"handle": s}))
                    .collect();
                Answer::data(
                    json!({"currentAppInstallation": {"accessScopes": scopes}}),
                    0,
                    2,
                )
            }
            "Shop" => Answer::data(
                json!({"shop": {"myshopifyDomain": shop_domain, "name": "Stand-in",
                    "currencyCode": "USD",
                    "plan": {"publicDisplayName": "Basic", "partnerDevelopment": true, "shopifyPlus": false}}}),
                0,
                2,
            ),
            "WebhookSubscriptions" | "WebhookCreate" | "WebhookUpdate" | "WebhookDelete" => {
                let (data, actual) = self.webhook_operation(op, v);
                Answer::data(data, 0, actual)
            }
            other => Answer::error(
                "BAD_REQUEST",
                format!("the stand-in does not know the operation {other:?}"),
            ),
        }
    }
}
