//! Tests of the Shopify mapping: every fixture in `testdata/shopify/` as an insta snapshot
//! under the options that change its output, the pitfalls of shopify.md §7 by name, and
//! properties (`map` never panics).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::*;
use crate::event::{ActionSource, CustomData, EventName, UserData};
use crate::normalize::Sha256Hex;

mod pitfalls;
mod rules;

// ---- helpers -------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/shopify/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The resource inside a REST wrapper (`{"order": {...}}`), byte for byte.
fn unwrap_one(body: &[u8], key: &str) -> Vec<u8> {
    let outer: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).unwrap();
    outer[key].get().as_bytes().to_vec()
}

/// The resources of a REST list (`{"checkouts": [...]}`), byte for byte.
fn unwrap_list(body: &[u8], key: &str) -> Vec<Vec<u8>> {
    let outer: BTreeMap<String, Vec<Box<RawValue>>> = serde_json::from_slice(body).unwrap();
    outer[key]
        .iter()
        .map(|r| r.get().as_bytes().to_vec())
        .collect()
}

fn docs_order() -> Vec<u8> {
    fixture("orders-create.shopify-docs-2026-07.json")
}

fn python_order() -> Vec<u8> {
    unwrap_one(&fixture("rest-order.shopify-python-api.json"), "order")
}

fn webhookdb_order() -> Vec<u8> {
    fixture("rest-order.webhookdb-spec.json")
}

/// Shopify's sample order is a test order, cancelled and voided; this clears the three flags
/// so that the mapping of everything else shows.
fn docs_order_as_a_real_sale() -> Vec<u8> {
    edit(&docs_order(), |o| {
        o["test"] = json!(false);
        o["cancelled_at"] = Value::Null;
        o["cancel_reason"] = Value::Null;
        o["financial_status"] = json!("paid");
    })
}

/// `body` changed by `f`. (serde_json keeps integers up to u64::MAX exact in a `Value`.)
fn edit(body: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn options() -> MapOptions {
    MapOptions {
        shop_domain: Some("jsmith.myshopify.com".into()),
        ..MapOptions::default()
    }
}

fn map_ok(topic: Topic, body: &[u8], options: &MapOptions) -> Mapped {
    let mapped =
        map(topic, body, Topic::OrdersCreate, options).unwrap_or_else(|e| panic!("{topic}: {e}"));
    if let Mapped::Event { event, .. } = &mapped {
        assert_valid(event);
    }
    mapped
}

fn event_of(mapped: &Mapped) -> &ConversionEvent {
    match mapped {
        Mapped::Event { event, .. } => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn purchase(body: &[u8], options: &MapOptions) -> ConversionEvent {
    event_of(&map_ok(Topic::OrdersCreate, body, options)).clone()
}

fn custom(event: &ConversionEvent) -> &CustomData {
    event.custom_data.as_ref().expect("custom_data")
}

fn sha(normalised: &str) -> Vec<Sha256Hex> {
    vec![Sha256Hex::of(normalised)]
}

/// Checks `{"data":[event]}` against the project's strict request schema.
fn assert_valid(event: &ConversionEvent) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let path = format!(
            "{}/../../testdata/pinterest/pinterest-events-request.strict.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    });
    let request = json!({ "data": [serde_json::to_value(event).unwrap()] });
    let errors: Vec<String> = validator
        .iter_errors(&request)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}\n{request:#}");
}

// ---- snapshots of every fixture ------------------------------------------------------------

#[test]
fn snapshot_docs_order_as_shopify_sends_it() {
    // test + cancelled + voided: ignored, first for being a test order ...
    insta::assert_json_snapshot!(
        "docs_order__default",
        map_ok(Topic::OrdersCreate, &docs_order(), &options())
    );
    // ... and, when test orders are sent, for being cancelled.
    let send_tests = MapOptions {
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    insta::assert_json_snapshot!(
        "docs_order__send_as_test",
        map_ok(Topic::OrdersCreate, &docs_order(), &send_tests)
    );
}

#[test]
fn snapshot_docs_order_as_a_real_sale_under_each_content_id_scheme() {
    for (name, scheme) in [
        ("variant_id", ContentIdScheme::VariantId),
        ("product_id", ContentIdScheme::ProductId),
        ("sku", ContentIdScheme::Sku),
    ] {
        let opts = MapOptions {
            content_ids: scheme,
            ..options()
        };
        insta::assert_json_snapshot!(
            format!("docs_order_as_sale__{name}"),
            map_ok(Topic::OrdersCreate, &docs_order_as_a_real_sale(), &opts)
        );
    }
}

#[test]
fn snapshot_docs_order_on_the_other_topics() {
    let body = docs_order_as_a_real_sale();
    for topic in [Topic::OrdersPaid, Topic::OrdersUpdated] {
        insta::assert_json_snapshot!(
            format!("docs_order_as_sale__{}", topic.as_str().replace('/', "_")),
            map_ok(topic, &body, &options())
        );
    }
    // The real sample (cancel_reason customer) on orders/cancelled.
    insta::assert_json_snapshot!(
        "docs_order__orders_cancelled",
        map_ok(Topic::OrdersCancelled, &docs_order(), &options())
    );
}

#[test]
fn snapshot_webhookdb_order_in_each_currency_and_value() {
    // A test order too: sent as test so that the money shows.
    for (name, currency, value) in [
        ("shop_subtotal", CurrencySource::Shop, ValueSource::Subtotal),
        (
            "presentment_subtotal",
            CurrencySource::Presentment,
            ValueSource::Subtotal,
        ),
        ("shop_total", CurrencySource::Shop, ValueSource::Total),
        (
            "presentment_total",
            CurrencySource::Presentment,
            ValueSource::Total,
        ),
    ] {
        let opts = MapOptions {
            currency,
            value,
            test_orders: TestOrders::SendAsTest,
            ..options()
        };
        insta::assert_json_snapshot!(
            format!("webhookdb_order__{name}"),
            map_ok(Topic::OrdersCreate, &webhookdb_order(), &opts)
        );
    }
    insta::assert_json_snapshot!(
        "webhookdb_order__default",
        map_ok(Topic::OrdersCreate, &webhookdb_order(), &options())
    );
}

#[test]
fn snapshot_python_api_order() {
    insta::assert_json_snapshot!(
        "python_api_order__default",
        map_ok(Topic::OrdersCreate, &python_order(), &options())
    );
    let total = MapOptions {
        value: ValueSource::Total,
        partner_name: Some("ss-pincapi".into()),
        ..options()
    };
    insta::assert_json_snapshot!(
        "python_api_order__total_with_partner_name",
        map_ok(Topic::OrdersCreate, &python_order(), &total)
    );
    // The sample order is not cancelled; as an orders/cancelled payload it carries the time
    // (its updated_at, which the cancellation took before cancelled_at was required).
    let cancelled = edit(&python_order(), |o| {
        o["cancelled_at"] = json!("2008-01-10T11:00:00-05:00");
    });
    insta::assert_json_snapshot!(
        "python_api_order__orders_cancelled",
        map_ok(Topic::OrdersCancelled, &cancelled, &options())
    );
    let err = map(
        Topic::OrdersCancelled,
        &python_order(),
        Topic::OrdersCreate,
        &options(),
    );
    assert!(
        matches!(&err, Err(MapError::Field { field, .. }) if field == "cancelled_at"),
        "{err:?}"
    );
}

#[test]
fn snapshot_checkouts() {
    insta::assert_json_snapshot!(
        "docs_checkout",
        map_ok(
            Topic::CheckoutsCreate,
            &fixture("checkouts-create.shopify-docs-2026-07.json"),
            &options()
        )
    );
    let list = unwrap_list(
        &fixture("rest-checkouts.shopify-python-api.json"),
        "checkouts",
    );
    assert_eq!(list.len(), 1);
    insta::assert_json_snapshot!(
        "python_api_checkout",
        map_ok(Topic::CheckoutsUpdate, &list[0], &options())
    );
}

#[test]
fn snapshot_carts() {
    insta::assert_json_snapshot!(
        "docs_cart",
        map_ok(
            Topic::CartsCreate,
            &fixture("carts-create.shopify-docs-2026-07.json"),
            &options()
        )
    );
    let carts: Vec<Mapped> = unwrap_list(&fixture("rest-carts.shopify-python-api.json"), "carts")
        .iter()
        .map(|c| map_ok(Topic::CartsUpdate, c, &options()))
        .collect();
    insta::assert_json_snapshot!("python_api_carts", carts);
}

#[test]
fn snapshot_refund() {
    insta::assert_json_snapshot!(
        "python_api_refund",
        map_ok(
            Topic::RefundsCreate,
            &unwrap_one(&fixture("rest-refund.shopify-python-api.json"), "refund"),
            &options()
        )
    );
}

#[test]
fn snapshot_signup_from_the_python_api_customer() {
    // There is no customers/create fixture; the customer resource inside an order is the same
    // object.
    let order: Value = serde_json::from_slice(&python_order()).unwrap();
    let customer = serde_json::to_vec(&order["customer"]).unwrap();
    insta::assert_json_snapshot!(
        "python_api_customer_signup",
        map_ok(Topic::CustomersCreate, &customer, &options())
    );
}

// ---- hashes are of the expected normalised strings ------------------------------------------

#[test]
fn python_api_order_hashes_are_of_the_expected_normalised_strings() {
    let e = purchase(&python_order(), &options());
    let want = UserData {
        em: sha("bob.norman@hostmail.com"),
        // Billing phone 555-625-1199 with the billing country US.
        ph: sha("15556251199"),
        fn_: sha("bob"),
        ln: sha("norman"),
        ct: sha("louisville"),
        st: sha("ky"),
        zp: sha("40202"),
        country: sha("us"),
        external_id: sha("207119551"),
        // browser_ip is the REST fixture's placeholder 0.0.0.0: dropped.
        client_ip_address: None,
        client_user_agent: None,
        ..UserData::default()
    };
    assert_eq!(e.user_data, want);
    // A spot check of the digest itself, against a known vector.
    assert_eq!(
        Sha256Hex::of("us").as_str(),
        "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
    );
}

#[test]
fn docs_order_keeps_every_distinct_email_with_the_order_level_one_first() {
    let e = purchase(&docs_order_as_a_real_sale(), &options());
    // email and contact_email are jon@, customer.email is john@.
    assert_eq!(
        e.user_data.em,
        vec![
            Sha256Hex::of("jon@example.com"),
            Sha256Hex::of("john@example.com")
        ]
    );
    assert_eq!(e.user_data.fn_, sha("steve"));
    assert_eq!(e.user_data.ln, sha("shipper"));
    assert_eq!(e.user_data.ct, sha("shippington"));
}
