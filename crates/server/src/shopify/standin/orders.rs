//! The stand-in's orders as the GraphQL Admin API shows them: the REST-shaped orders it holds,
//! rewritten into GraphQL nodes (written apart from the core's reverse rewrite, so a test
//! that goes through both checks one against the other), filtered by Shopify's search syntax,
//! sorted, paged with opaque cursors, counted, and exported by bulk operations.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pincapi_core::shopify::wire::parse_time;
use serde_json::{Map, Value, json};

use super::{BulkOp, ShopifyStandin};

/// Orders older than this need `read_all_orders`.
const SIXTY_DAYS_SECS: i64 = 60 * 86_400;

pub(super) fn order_id(o: &Value) -> Option<u64> {
    o.get("id").and_then(Value::as_u64)
}

fn time_of(o: &Value, k: &str) -> Option<i64> {
    o.get(k).and_then(Value::as_str).and_then(parse_time)
}

/// `updated_at`, or `created_at` for an order never updated.
pub(super) fn updated(o: &Value) -> i64 {
    time_of(o, "updated_at")
        .or_else(|| time_of(o, "created_at"))
        .unwrap_or(0)
}

pub(super) fn created(o: &Value) -> i64 {
    time_of(o, "created_at").unwrap_or(0)
}

/// One term of a search query: `field:>=value`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Term {
    field: String,
    op: String,
    at: i64,
}

/// Parses the search syntax pincapi uses: `updated_at:>='…'` and `created_at:>=…` terms
/// joined by spaces or `AND`. Anything else is an error (Shopify would ignore it, and the
/// stand-in wants to hear of a query it does not understand).
pub(super) fn parse_query(q: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for word in q.split_whitespace().filter(|w| *w != "AND") {
        let (field, rest) = word
            .split_once(':')
            .ok_or_else(|| format!("search term {word:?} has no field"))?;
        if !matches!(field, "updated_at" | "created_at") {
            return Err(format!(
                "search field {field:?} is not known to the stand-in"
            ));
        }
        let op_len = rest
            .bytes()
            .take_while(|b| matches!(b, b'<' | b'>' | b'='))
            .count();
        let (op, value) = rest.split_at(op_len);
        let value = value.trim_matches(|c| c == '\'' || c == '"');
        let at = parse_time(value).ok_or_else(|| format!("{value:?} is not a date"))?;
        if !matches!(op, ">=" | ">" | "<=" | "<") {
            return Err(format!("comparator {op:?} is not known to the stand-in"));
        }
        terms.push(Term {
            field: field.to_owned(),
            op: op.to_owned(),
            at,
        });
    }
    Ok(terms)
}

fn matches(o: &Value, terms: &[Term]) -> bool {
    terms.iter().all(|t| {
        let v = if t.field == "updated_at" {
            updated(o)
        } else {
            created(o)
        };
        match t.op.as_str() {
            ">=" => v >= t.at,
            ">" => v > t.at,
            "<=" => v <= t.at,
            _ => v < t.at,
        }
    })
}

impl ShopifyStandin {
    /// The orders the app may see that match `query`: without `read_all_orders`, none older
    /// than 60 days.
    pub(super) fn matching(&self, query: &str) -> Result<Vec<Value>, String> {
        let terms = parse_query(query)?;
        let all_orders = self.options.scopes.iter().any(|s| s == "read_all_orders");
        let floor = self.options.clock.now_ms() / 1000 - SIXTY_DAYS_SECS;
        Ok(self
            .lock()
            .orders
            .iter()
            .filter(|o| all_orders || created(o) >= floor)
            .filter(|o| matches(o, &terms))
            .cloned()
            .collect())
    }
}

/// An opaque cursor: the sort key and id of the last node of a page.
pub(super) fn cursor(key: i64, id: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{key}:{id}"))
}

pub(super) fn decode_cursor(c: &str) -> Option<(i64, u64)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (k, id) = text.split_once(':')?;
    Some((k.parse().ok()?, id.parse().ok()?))
}

/// A page of `sorted` (by `key`, then id, ascending unless `reverse`) after `after`.
pub(super) fn page(
    mut sorted: Vec<Value>,
    key: fn(&Value) -> i64,
    reverse: bool,
    first: usize,
    after: Option<&str>,
) -> Result<(Vec<Value>, Value), String> {
    let sort_key = |o: &Value| (key(o), order_id(o).unwrap_or(0));
    sorted.sort_by_key(sort_key);
    if reverse {
        sorted.reverse();
    }
    let start = match after {
        None => 0,
        Some(c) => {
            let at = decode_cursor(c).ok_or("Invalid cursor for current pagination sort.")?;
            sorted
                .iter()
                .position(|o| {
                    let k = sort_key(o);
                    if reverse { k < at } else { k > at }
                })
                .unwrap_or(sorted.len())
        }
    };
    let rest = &sorted[start..];
    let nodes: Vec<Value> = rest.iter().take(first).cloned().collect();
    let end = nodes
        .last()
        .map(|o| cursor(key(o), order_id(o).unwrap_or(0)));
    let info = json!({"hasNextPage": rest.len() > first, "endCursor": end});
    Ok((nodes, info))
}

fn gid(kind: &str, id: &Value) -> Value {
    match id.as_u64() {
        Some(n) => json!(format!("gid://shopify/{kind}/{n}")),
        None => Value::Null,
    }
}

fn upper(v: Option<&Value>) -> Value {
    v.and_then(Value::as_str)
        .map_or(Value::Null, |s| json!(s.to_ascii_uppercase()))
}

/// `{shopMoney, presentmentMoney}` from a REST `*_set`, or from a bare amount in `currency`.
fn money(set: Option<&Value>, amount: Option<&Value>, currency: Option<&Value>) -> Value {
    let bag = |m: &Value| {
        json!({"amount": m.get("amount").map(|a| match a {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        }), "currencyCode": m.get("currency_code")})
    };
    if let Some(set) = set.filter(|s| s.is_object()) {
        return json!({
            "shopMoney": set.get("shop_money").map(bag),
            "presentmentMoney": set.get("presentment_money").map(bag),
        });
    }
    match amount.filter(|a| !a.is_null()) {
        Some(a) => {
            let text = a.as_str().map_or_else(|| a.to_string(), str::to_owned);
            let m = json!({"amount": text, "currencyCode": currency});
            json!({"shopMoney": m, "presentmentMoney": m})
        }
        None => Value::Null,
    }
}

fn address(a: Option<&Value>) -> Value {
    let Some(a) = a.filter(|a| a.is_object()) else {
        return Value::Null;
    };
    json!({
        "firstName": a.get("first_name"), "lastName": a.get("last_name"),
        "city": a.get("city"), "province": a.get("province"),
        "provinceCode": a.get("province_code"), "zip": a.get("zip"),
        "country": a.get("country"), "countryCodeV2": a.get("country_code"),
        "phone": a.get("phone"),
    })
}

/// One REST line item as a GraphQL `LineItem`.
pub(super) fn line_node(l: &Value, currency: Option<&Value>) -> Value {
    let id_of = |k: &str, kind: &str| match l.get(k) {
        Some(v) if v.is_u64() => json!({"id": gid(kind, v)}),
        _ => Value::Null,
    };
    json!({
        "id": l.get("id").map(|v| gid("LineItem", v)),
        "quantity": l.get("quantity"),
        "sku": l.get("sku"),
        "title": l.get("title"),
        "vendor": l.get("vendor"),
        "product": id_of("product_id", "Product"),
        "variant": id_of("variant_id", "ProductVariant"),
        "originalUnitPriceSet": money(l.get("price_set"), l.get("price"), currency),
    })
}

/// The lines of a REST order.
pub(super) fn lines_of(o: &Value) -> Vec<Value> {
    o.get("line_items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A REST order as a GraphQL `Order` node, without its line items.
pub(super) fn order_node(o: &Value, shop_domain: &str) -> Map<String, Value> {
    let currency = o.get("currency");
    let customer = o.get("customer").filter(|c| c.is_object()).map(|c| {
        json!({
            "id": c.get("id").map(|v| gid("Customer", v)),
            "firstName": c.get("first_name"), "lastName": c.get("last_name"),
            "defaultEmailAddress": c.get("email").filter(|e| e.is_string())
                .map(|e| json!({"emailAddress": e})),
            "defaultPhoneNumber": c.get("phone").filter(|p| p.is_string())
                .map(|p| json!({"phoneNumber": p})),
        })
    });
    let ip = o
        .get("browser_ip")
        .filter(|v| v.is_string())
        .or_else(|| o.pointer("/client_details/browser_ip"));
    let attributes: Vec<Value> = o
        .get("note_attributes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|n| json!({"key": n.get("name"), "value": n.get("value")}))
                .collect()
        })
        .unwrap_or_default();
    let landing = o.get("landing_site").and_then(Value::as_str).map(|l| {
        if l.starts_with("http") {
            l.to_owned()
        } else {
            format!("https://{shop_domain}{l}")
        }
    });
    let journey = json!({
        "ready": true,
        "firstVisit": landing.as_ref().map(|l| json!({"landingPage": l})),
        "lastVisit": landing.as_ref().map(|l| json!({"landingPage": l})),
    });
    let location = o.get("location_id").filter(|v| v.is_u64()).map(
        |v| json!({"id": gid("Location", v), "legacyResourceId": v.to_string(), "name": "Store"}),
    );
    let updated_at = o
        .get("updated_at")
        .filter(|v| v.is_string())
        .or_else(|| o.get("created_at"));
    let v = json!({
        "id": o.get("id").map(|v| gid("Order", v)),
        "legacyResourceId": order_id(o).map(|n| n.to_string()),
        "name": o.get("name"),
        "email": o.get("email"),
        "phone": o.get("phone"),
        "createdAt": o.get("created_at"),
        "processedAt": o.get("processed_at"),
        "updatedAt": updated_at,
        "cancelledAt": o.get("cancelled_at"),
        "cancelReason": upper(o.get("cancel_reason")),
        "displayFinancialStatus": upper(o.get("financial_status")),
        "test": o.get("test").cloned().unwrap_or(json!(false)),
        "sourceName": o.get("source_name"),
        "retailLocation": location,
        "currencyCode": currency,
        "presentmentCurrencyCode": o.get("presentment_currency").or(currency),
        "subtotalPriceSet": money(o.get("subtotal_price_set"), o.get("subtotal_price"), currency),
        "totalPriceSet": money(o.get("total_price_set"), o.get("total_price"), currency),
        "billingAddress": address(o.get("billing_address")),
        "shippingAddress": address(o.get("shipping_address")),
        "customer": customer,
        "clientIp": ip,
        "customAttributes": attributes,
        "customerJourneySummary": journey,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A page of an order's line items: `first` after `after` (an index cursor).
pub(super) fn line_page(o: &Value, first: usize, after: Option<&str>) -> Result<Value, String> {
    let lines = lines_of(o);
    let start = match after {
        None => 0,
        Some(c) => decode_cursor(c).ok_or("Invalid cursor")?.1 as usize,
    };
    let currency = o.get("currency");
    let nodes: Vec<Value> = lines
        .iter()
        .skip(start)
        .take(first)
        .map(|l| line_node(l, currency))
        .collect();
    let end = start + nodes.len();
    Ok(json!({
        "pageInfo": {"hasNextPage": lines.len() > end,
                     "endCursor": (!nodes.is_empty()).then(|| cursor(0, end as u64))},
        "nodes": nodes,
    }))
}

impl ShopifyStandin {
    /// Starts a bulk export of the orders matching `query`: the JSONL is made now, and the
    /// operation reports `RUNNING` for the configured number of looks first.
    pub(super) fn start_bulk(&self, query: &str) -> Result<String, String> {
        let orders = self.matching(query)?;
        let mut text = String::new();
        let mut objects = 0;
        for o in &orders {
            let node = Value::Object(order_node(o, &self.options.shop_domain));
            text.push_str(&node.to_string());
            text.push('\n');
            objects += 1;
            let parent = node.get("id").cloned().unwrap_or(Value::Null);
            for l in lines_of(o) {
                let mut line = line_node(&l, o.get("currency"));
                line["__parentId"] = parent.clone();
                text.push_str(&line.to_string());
                text.push('\n');
                objects += 1;
            }
        }
        let id = format!("gid://shopify/BulkOperation/{}", self.next_id());
        self.lock().bulk.insert(
            id.clone(),
            BulkOp {
                looks: 0,
                result: text,
                objects,
            },
        );
        Ok(id)
    }

    /// A bulk operation as `bulkOperation(id:)` shows it, counting this look.
    pub(super) fn bulk_status(&self, id: &str, base: &str) -> Value {
        let running_looks = self.options.bulk_running_looks;
        let mut shop = self.lock();
        let Some(op) = shop.bulk.get_mut(id) else {
            return Value::Null;
        };
        op.looks += 1;
        let done = op.looks > running_looks;
        let n = id.rsplit('/').next().unwrap_or("0");
        json!({
            "id": id,
            "status": if done { "COMPLETED" } else { "RUNNING" },
            "errorCode": null,
            "objectCount": op.objects.to_string(),
            "rootObjectCount": null,
            "url": (done && !op.result.is_empty()).then(|| format!("{base}/standin/bulk/{n}.jsonl")),
            "partialDataUrl": null,
        })
    }
}

/// `GET /standin/bulk/{n}.jsonl`.
pub(super) async fn bulk_result(
    State(standin): State<ShopifyStandin>,
    Path(file): Path<String>,
) -> Response {
    let n = file.trim_end_matches(".jsonl");
    let id = format!("gid://shopify/BulkOperation/{n}");
    match standin.lock().bulk.get(&id) {
        Some(op) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jsonl")],
            op.result.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_syntax_pincapi_sends_is_understood_and_other_terms_are_refused() {
        let t = parse_query(
            "updated_at:>='2026-01-01T00:00:00Z' AND created_at:>='2026-01-01T00:00:00Z'",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].op, ">=");
        assert!(parse_query("status:open").is_err());
        assert!(parse_query("updated_at:~x").is_err());
    }

    #[test]
    fn pages_follow_their_cursor_in_sort_order() {
        let orders: Vec<Value> = (1..=5)
            .map(|i| json!({"id": i, "updated_at": format!("2026-01-0{i}T00:00:00Z")}))
            .collect();
        let (p1, info) = page(orders.clone(), updated, false, 2, None).unwrap();
        assert_eq!(
            p1.iter().map(|o| order_id(o).unwrap()).collect::<Vec<_>>(),
            [1, 2]
        );
        let after = info["endCursor"].as_str().unwrap();
        let (p2, _) = page(orders.clone(), updated, false, 2, Some(after)).unwrap();
        assert_eq!(
            p2.iter().map(|o| order_id(o).unwrap()).collect::<Vec<_>>(),
            [3, 4]
        );
        let (r, _) = page(orders, updated, true, 2, None).unwrap();
        assert_eq!(
            r.iter().map(|o| order_id(o).unwrap()).collect::<Vec<_>>(),
            [5, 4]
        );
    }
}
