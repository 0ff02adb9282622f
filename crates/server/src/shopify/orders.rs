//! Orders read through the GraphQL Admin API, page by page (`OrdersPage`, oldest `updatedAt`
//! first), each rewritten into the webhook's [`Order`] shape by the core
//! ([`GraphqlOrder::into_order`]) so the poller and the backfill map it as a webhook is mapped.
//!
//! A page's size is chosen so that its requested cost stays within Shopify's limit of 1,000
//! points per query: with [`LINES`] line items per order an order costs `19 + 6 × LINES`
//! points (79), so a page holds 12 orders. An order with more lines than that reads the rest
//! with `OrderLineItems`, 150 lines (903 points) at a time.

use pincapi_core::shopify::Order;
use pincapi_core::shopify::graphql::{GraphqlLineItem, GraphqlOrder, LineItemPage, PageInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::{AdminApi, MAX_QUERY_COST, ORDER_LINE_ITEMS, ORDERS_PAGE, ShopifyError};

/// Line items asked for with each order.
pub const LINES: u32 = 10;
/// Line items per `OrderLineItems` page.
const MORE_LINES: u32 = 150;

/// The requested cost of `OrdersPage` with `first` orders of `lines` line items.
pub fn orders_page_cost(first: u32, lines: u32) -> u32 {
    2 + first * (19 + 6 * lines)
}

/// The most orders one `OrdersPage` may ask for, at most `page_size`.
pub fn orders_per_page(page_size: usize) -> u32 {
    let fit = (MAX_QUERY_COST - 2) / (19 + 6 * LINES);
    fit.min(page_size.clamp(1, 250) as u32).max(1)
}

/// One listed order: rewritten, or why it could not be.
#[derive(Debug)]
pub enum ParsedOrder {
    Order(Box<Order>),
    /// `field: reason`.
    Invalid(String),
}

impl ParsedOrder {
    /// Rewrites a GraphQL order with all of its `lines`.
    pub fn from_graphql(order: GraphqlOrder, lines: Vec<GraphqlLineItem>) -> ParsedOrder {
        match order.into_order(lines) {
            Ok(o) => ParsedOrder::Order(Box::new(o)),
            Err(e) => ParsedOrder::Invalid(format!("{}: not an RFC 3339 time", e.0)),
        }
    }
}

#[derive(Deserialize)]
struct OrdersData {
    orders: Connection,
}

#[derive(Deserialize)]
struct Connection {
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
    nodes: Vec<Value>,
}

#[derive(Deserialize)]
struct LinesData {
    order: Option<LinesOrder>,
}

#[derive(Deserialize)]
struct LinesOrder {
    #[serde(rename = "lineItems")]
    line_items: LineItemPage,
}

/// The pages of one listing.
pub struct OrderPages<'a> {
    api: &'a AdminApi,
    query: String,
    first: u32,
    after: Option<String>,
    done: bool,
}

impl<'a> OrderPages<'a> {
    /// The orders matching `query` (Shopify's search syntax), oldest update first.
    pub fn new(api: &'a AdminApi, query: String, page_size: usize) -> OrderPages<'a> {
        OrderPages {
            api,
            query,
            first: orders_per_page(page_size),
            after: None,
            done: false,
        }
    }

    /// Whether another page follows the last one read.
    pub fn has_more(&self) -> bool {
        !self.done
    }

    /// The next page, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<ParsedOrder>>, ShopifyError> {
        if self.done {
            return Ok(None);
        }
        let data: OrdersData = self
            .api
            .run(
                ORDERS_PAGE,
                json!({
                    "first": self.first,
                    "after": self.after,
                    "query": self.query,
                    "lines": LINES,
                }),
                orders_page_cost(self.first, LINES),
            )
            .await?;
        let page = data.orders;
        self.done = !page.page_info.has_next_page || page.page_info.end_cursor.is_none();
        self.after = page.page_info.end_cursor;
        let mut out = Vec::with_capacity(page.nodes.len());
        for node in page.nodes {
            let mut order: GraphqlOrder = match serde_json::from_value(node) {
                Ok(o) => o,
                Err(e) => {
                    out.push(ParsedOrder::Invalid(e.to_string()));
                    continue;
                }
            };
            let first_page = order.line_items.take().unwrap_or_default();
            let lines = self.all_lines(&order, first_page).await?;
            out.push(ParsedOrder::from_graphql(order, lines));
        }
        Ok(Some(out))
    }

    /// The order's lines: the first page's, and the rest when there are more.
    async fn all_lines(
        &self,
        order: &GraphqlOrder,
        first: LineItemPage,
    ) -> Result<Vec<GraphqlLineItem>, ShopifyError> {
        let mut lines = first.nodes;
        let mut info = first.page_info;
        while info.has_next_page
            && let (Some(after), Some(id)) = (info.end_cursor.clone(), order.id.clone())
        {
            let data: LinesData = self
                .api
                .run(
                    ORDER_LINE_ITEMS,
                    json!({"id": id, "first": MORE_LINES, "after": after}),
                    3 + 6 * MORE_LINES,
                )
                .await?;
            let Some(more) = data.order else { break };
            lines.extend(more.line_items.nodes);
            info = more.line_items.page_info;
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stays_within_the_single_query_limit() {
        let first = orders_per_page(250);
        assert_eq!(first, 12);
        assert!(orders_page_cost(first, LINES) <= MAX_QUERY_COST);
        assert!(orders_page_cost(first + 1, LINES) > MAX_QUERY_COST);
        assert_eq!(orders_per_page(3), 3);
        const { assert!(3 + 6 * MORE_LINES <= MAX_QUERY_COST) };
    }
}
