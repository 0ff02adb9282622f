//! Backfills over `shopify.bulk_threshold` orders (10,000) run as a bulk operation: Shopify
//! runs the whole query (`bulkOperationRunQuery`) on its side, and the gateway reads the
//! result, a JSONL file, once it is `COMPLETED`. That costs a handful of queries instead of a
//! page per 12 orders, and no throttling.
//!
//! In the file, each order is a line, and each of its line items is a line of its own with
//! `__parentId` naming the order (nested objects such as addresses stay on the order's line).
//! Lines are joined to their order by that id, not by position; the orders are then stored as
//! the poller stores a page, 250 at a time, through the same mapping, so each is sent once
//! whether or not a webhook or the poller saw it before.

use std::collections::HashMap;
use std::time::Duration;

use pincapi_core::shopify::graphql::{GraphqlLineItem, GraphqlOrder};
use serde::Deserialize;
use serde_json::json;

use super::admin::{AdminApi, BULK_ORDERS, BULK_ORDERS_INNER, BULK_STATUS, Document, ShopifyError};
use super::orders::ParsedOrder;
use super::poller::{PollReport, Reconciler};

/// The filter written into `bulk_orders_inner.graphql`, replaced by the run's own.
const PLACEHOLDER: &str = "\"updated_at:>='2026-01-01T00:00:00Z'\"";
/// Orders stored per transaction.
const CHUNK: usize = 250;
/// The longest wait between two looks at a running operation.
const MAX_POLL: Duration = Duration::from_secs(10);
/// A bulk operation that runs longer than this is given up on (Shopify allows 10 days; a
/// backfill that has not finished in a day is better retried).
const MAX_RUN: Duration = Duration::from_secs(24 * 3600);

const ORDERS_COUNT: Document = Document {
    name: "OrdersCount",
    text: include_str!("graphql/orders_count.graphql"),
};

/// The documents of this module, for the schema test.
pub const DOCUMENTS: [Document; 1] = [ORDERS_COUNT];

#[derive(Deserialize)]
struct CountData {
    #[serde(rename = "ordersCount")]
    orders_count: Option<Count>,
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

/// How many orders match `filter`, counted up to `limit` (`None` when Shopify does not say).
pub async fn count_orders(
    api: &AdminApi,
    filter: &str,
    limit: u64,
) -> Result<Option<u64>, ShopifyError> {
    let data: CountData = api
        .run(ORDERS_COUNT, json!({"query": filter, "limit": limit}), 1)
        .await?;
    Ok(data.orders_count.map(|c| c.count))
}

#[derive(Deserialize)]
struct RunData {
    #[serde(rename = "bulkOperationRunQuery")]
    run: RunPayload,
}

#[derive(Deserialize)]
struct RunPayload {
    #[serde(rename = "bulkOperation")]
    operation: Option<Operation>,
    #[serde(rename = "userErrors", default)]
    user_errors: Vec<UserError>,
}

#[derive(Deserialize)]
pub(crate) struct UserError {
    #[serde(default)]
    pub field: Option<Vec<String>>,
    pub message: String,
}

#[derive(Deserialize)]
struct StatusData {
    #[serde(rename = "bulkOperation")]
    operation: Option<Operation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    id: String,
    status: String,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// Runs the backfill from `since` as a bulk operation and stores what it lists.
pub async fn backfill(
    reconciler: &Reconciler,
    api: &AdminApi,
    since: i64,
    filter: &str,
) -> Result<PollReport, ShopifyError> {
    let shop = api.shop().domain.clone();
    let inner = BULK_ORDERS_INNER.text.replace(
        PLACEHOLDER,
        &serde_json::to_string(filter).unwrap_or_default(),
    );
    let started: RunData = api.run(BULK_ORDERS, json!({ "query": inner }), 10).await?;
    if !started.run.user_errors.is_empty() {
        return Err(ShopifyError::Graphql {
            shop,
            operation: BULK_ORDERS.name,
            messages: started
                .run
                .user_errors
                .iter()
                .map(|e| match &e.field {
                    Some(f) => format!("{}: {}", f.join("."), e.message),
                    None => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            hint: "",
        });
    }
    let Some(mut op) = started.run.operation else {
        return Err(ShopifyError::Shape {
            shop,
            operation: BULK_ORDERS.name,
            reason: "no bulkOperation and no userErrors".into(),
        });
    };
    let began = std::time::Instant::now();
    let mut wait = Duration::from_millis(200);
    while !matches!(
        op.status.as_str(),
        "COMPLETED" | "FAILED" | "CANCELED" | "EXPIRED"
    ) {
        if began.elapsed() > MAX_RUN {
            return Err(ShopifyError::Shape {
                shop,
                operation: BULK_STATUS.name,
                reason: format!("bulk operation {} still {} after a day", op.id, op.status),
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_POLL);
        let status: StatusData = api.run(BULK_STATUS, json!({ "id": op.id }), 1).await?;
        op = status.operation.ok_or_else(|| ShopifyError::Shape {
            shop: shop.clone(),
            operation: BULK_STATUS.name,
            reason: format!("bulk operation {} is unknown", op.id),
        })?;
    }
    if op.status != "COMPLETED" {
        return Err(ShopifyError::Graphql {
            shop,
            operation: BULK_STATUS.name,
            messages: format!(
                "bulk operation {} ended {}{}",
                op.id,
                op.status,
                op.error_code.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
            hint: "; `pincapi shopify backfill` can be run again: orders already stored are not \
                   sent twice",
        });
    }
    let mut report = PollReport {
        shop: shop.clone(),
        since,
        bulk: true,
        ..PollReport::default()
    };
    // No URL: the operation matched no order.
    if let Some(url) = op.url {
        let (orders, lines) = read_result(api, &url).await?;
        let mut lines = lines;
        let mut chunk = Vec::with_capacity(CHUNK);
        for order in orders {
            chunk.push(match order {
                Ok(order) => {
                    let own = order
                        .id
                        .as_ref()
                        .and_then(|id| lines.remove(id))
                        .unwrap_or_default();
                    ParsedOrder::from_graphql(order, own)
                }
                Err(e) => ParsedOrder::Invalid(e),
            });
            if chunk.len() == CHUNK {
                report.pages += 1;
                reconciler
                    .store_page(std::mem::take(&mut chunk), &mut report)
                    .await?;
            }
        }
        if !chunk.is_empty() {
            report.pages += 1;
            reconciler.store_page(chunk, &mut report).await?;
        }
    }
    reconciler.finish(since, &report).await?;
    Ok(report)
}

/// The orders of a result file, in file order, each read or why it could not be.
type ResultOrders = Vec<Result<GraphqlOrder, String>>;

/// The result file: its orders, and the line items of each order by its id.
async fn read_result(
    api: &AdminApi,
    url: &str,
) -> Result<(ResultOrders, HashMap<String, Vec<GraphqlLineItem>>), ShopifyError> {
    let shop = api.shop().domain.clone();
    let mut orders = Vec::new();
    let mut lines: HashMap<String, Vec<GraphqlLineItem>> = HashMap::new();
    let mut bad: HashMap<String, String> = HashMap::new();
    let mut n = 0usize;
    api.download_lines(url, |line| {
        n += 1;
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| ShopifyError::Shape {
                shop: shop.clone(),
                operation: BULK_STATUS.name,
                reason: format!("line {n} of the result is not JSON: {e}"),
            })?;
        if let Some(parent) = value.get("__parentId").and_then(|p| p.as_str()) {
            let parent = parent.to_owned();
            match serde_json::from_value::<GraphqlLineItem>(value) {
                Ok(item) => lines.entry(parent).or_default().push(item),
                // Its order would be sent without it, with the wrong contents: it is not sent.
                Err(e) => {
                    bad.insert(parent, format!("line {n}: a line item of the order: {e}"));
                }
            }
        } else {
            orders.push(
                serde_json::from_value::<GraphqlOrder>(value).map_err(|e| format!("line {n}: {e}")),
            );
        }
        Ok(())
    })
    .await?;
    let orders = orders
        .into_iter()
        .map(|o| match o {
            Ok(order) => match order.id.as_ref().and_then(|id| bad.get(id)) {
                Some(why) => Err(why.clone()),
                None => Ok(order),
            },
            Err(e) => Err(e),
        })
        .collect();
    Ok((orders, lines))
}
