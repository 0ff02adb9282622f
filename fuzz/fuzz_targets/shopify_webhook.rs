//! Shopify bodies: a webhook on every topic (REST shape), an Admin REST list, and an Admin
//! GraphQL order node mapped as the reconciler maps it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincapi_core::shopify::graphql::GraphqlOrder;
use pincapi_core::shopify::{MapOptions, Mapped, Topic, map, map_order, parse_orders};

#[path = "common.rs"]
mod common;

const TOPICS: [&str; 11] = [
    "orders/create",
    "orders/paid",
    "orders/updated",
    "orders/cancelled",
    "refunds/create",
    "checkouts/create",
    "checkouts/update",
    "carts/create",
    "carts/update",
    "customers/create",
    "app/uninstalled",
];

fn check(mapped: Mapped) {
    if let Mapped::Event { event, .. } = mapped {
        common::round_trips(&event);
    }
}

fuzz_target!(|body: &[u8]| {
    let options = MapOptions {
        checkouts: true,
        carts: true,
        customers: true,
        ..MapOptions::default()
    };
    for topic in TOPICS.iter().filter_map(|t| Topic::parse(t)) {
        if let Ok(m) = map(topic, body, Topic::OrdersCreate, &options) {
            check(m);
        }
    }
    if let Ok(orders) = parse_orders(body) {
        for o in &orders {
            if let Ok(m) = map_order(Topic::OrdersPaid, o, Topic::OrdersPaid, &options) {
                check(m);
            }
        }
    }
    if let Ok(node) = serde_json::from_slice::<GraphqlOrder>(body) {
        let lines = node.line_items.clone().map(|p| p.nodes).unwrap_or_default();
        if let Ok(order) = node.into_order(lines) {
            if let Ok(m) = map_order(Topic::OrdersCreate, &order, Topic::OrdersCreate, &options) {
                check(m);
            }
        }
    }
});
