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
    insta::assert_json_snapshot!(
        "python_api_order__orders_cancelled",
        map_ok(Topic::OrdersCancelled, &python_order(), &options())
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

// ---- pitfalls (shopify.md §7) -------------------------------------------------------------

#[test]
fn ids_above_2_pow_53_stay_exact() {
    let opts = MapOptions {
        content_ids: ContentIdScheme::ProductId,
        ..options()
    };
    let e = purchase(&docs_order_as_a_real_sale(), &opts);
    assert_eq!(e.event_id.as_str(), "order-820982911946154508");
    let data = custom(&e);
    assert_eq!(data.order_id.as_deref(), Some("820982911946154508"));
    assert_eq!(data.content_ids, vec!["788032119674292922".to_owned()]);
    assert_eq!(e.user_data.external_id, sha("115310627314723954"));
    // One more than 2^53, which an f64 cannot hold.
    let body = edit(&docs_order_as_a_real_sale(), |o| {
        o["id"] = json!(9_007_199_254_740_993u64)
    });
    assert_eq!(
        purchase(&body, &options()).event_id.as_str(),
        "order-9007199254740993"
    );
}

#[test]
fn presentment_and_shop_money_are_never_mixed() {
    let send = |currency| MapOptions {
        currency,
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    // webhookdb's sets disagree with the top-level currencies on purpose: the subtotal set
    // is CAD/EUR, `currency` says USD, `presentment_currency` CAD, the line price USD/EUR.
    let shop = purchase(&webhookdb_order(), &send(CurrencySource::Shop));
    let data = custom(&shop);
    assert_eq!(data.value.as_ref().map(Money::as_str), Some("141.99"));
    assert_eq!(data.currency.as_ref().map(Currency::as_str), Some("CAD"));
    // The line's shop price is in USD, not CAD: left out rather than mislabelled.
    assert_eq!(data.contents[0].item_price, None);

    let pres = purchase(&webhookdb_order(), &send(CurrencySource::Presentment));
    let data = custom(&pres);
    assert_eq!(data.value.as_ref().map(Money::as_str), Some("90.95"));
    assert_eq!(data.currency.as_ref().map(Currency::as_str), Some("EUR"));
    assert_eq!(
        data.contents[0].item_price.as_ref().map(Money::as_str),
        Some("173.30")
    );

    // Without sets, the flat amounts are shop money and serve presentment only when the
    // buyer paid in the shop's currency.
    let flat = |presentment: &str| {
        edit(&python_order(), |o| {
            o["presentment_currency"] = json!(presentment);
        })
    };
    let same = purchase(&flat("USD"), &send(CurrencySource::Presentment));
    assert_eq!(
        custom(&same).value.as_ref().map(Money::as_str),
        Some("398.00")
    );
    let other = purchase(&flat("EUR"), &send(CurrencySource::Presentment));
    assert_eq!(custom(&other).value, None);
    assert_eq!(custom(&other).currency, None);
    assert!(
        custom(&other)
            .contents
            .iter()
            .all(|c| c.item_price.is_none())
    );
}

#[test]
fn money_strings_pass_through_unchanged() {
    let body = edit(&python_order(), |o| {
        o["currency"] = json!("ARS");
        o["subtotal_price"] = json!("1450000.00");
        o["line_items"][0]["price"] = json!("1450000.10");
    });
    let e = purchase(&body, &options());
    let data = custom(&e);
    assert_eq!(data.value.as_ref().map(Money::as_str), Some("1450000.00"));
    assert_eq!(
        data.contents[0].item_price.as_ref().map(Money::as_str),
        Some("1450000.10")
    );
    // A JSON number keeps its literal digits.
    let body = br#"{"id": 1, "created_at": "2024-05-01T10:00:00Z", "email": "a@b.co",
        "currency": "USD", "subtotal_price": 398.10}"#;
    let e = purchase(body, &options());
    assert_eq!(custom(&e).value.as_ref().map(Money::as_str), Some("398.10"));
}

#[test]
fn a_phone_with_letters_is_dropped() {
    // Billing and shipping phones are 555-555-SHIP; no other phone.
    let e = purchase(&docs_order_as_a_real_sale(), &options());
    assert!(e.user_data.ph.is_empty());
    // With a valid customer phone after them, that one is used.
    let body = edit(&docs_order_as_a_real_sale(), |o| {
        o["customer"]["phone"] = json!("+1 (312) 345-6789");
    });
    assert_eq!(purchase(&body, &options()).user_data.ph, sha("13123456789"));
}

#[test]
fn a_phone_gets_the_billing_country_calling_code() {
    let body = edit(&python_order(), |o| {
        o["billing_address"]["country_code"] = json!("GB");
        o["billing_address"]["phone"] = json!("020 7946 0018");
        o["shipping_address"]["country_code"] = json!("US");
    });
    assert_eq!(
        purchase(&body, &options()).user_data.ph,
        sha("442079460018")
    );
    // Without a billing address, the shipping country applies.
    let body = edit(&python_order(), |o| {
        o["billing_address"] = Value::Null;
        o["shipping_address"]["phone"] = json!("(416) 555-0199");
        o["shipping_address"]["country_code"] = json!("CA");
    });
    assert_eq!(purchase(&body, &options()).user_data.ph, sha("14165550199"));
}

#[test]
fn the_state_comes_from_province_code_never_the_province_name() {
    let e = purchase(&python_order(), &options());
    assert_eq!(e.user_data.st, sha("ky"));
    let body = edit(&python_order(), |o| {
        o["billing_address"]["province_code"] = Value::Null;
    });
    let e = purchase(&body, &options());
    assert!(e.user_data.st.is_empty(), "province name must not be used");
    // The rest of the billing address still is.
    assert_eq!(e.user_data.zp, sha("40202"));
}

#[test]
fn a_canadian_postcode_keeps_its_letters() {
    let opts = MapOptions {
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    // webhookdb billing address: Drayton Valley, AB, "T0E 0M0", CA.
    let e = purchase(&webhookdb_order(), &opts);
    assert_eq!(e.user_data.zp, sha("t0e0m0"));
    assert_eq!(e.user_data.st, sha("ab"));
    assert_eq!(e.user_data.ct, sha("draytonvalley"));
    assert_eq!(e.user_data.country, sha("ca"));
}

#[test]
fn address_keys_all_come_from_one_address() {
    // An empty billing address: the shipping address supplies every location key.
    let body = edit(&webhookdb_order(), |o| {
        o["test"] = json!(false);
        o["billing_address"] = json!({"first_name": "Christopher"});
    });
    let e = purchase(&body, &options());
    assert_eq!(e.user_data.ct, sha("ottawa"));
    assert_eq!(e.user_data.st, sha("on"));
    assert_eq!(e.user_data.zp, sha("k2p0v6"));
    assert_eq!(e.user_data.fn_, sha("christopher"));
}

#[test]
fn a_guest_order_without_customer_maps() {
    let body = edit(&python_order(), |o| {
        o.as_object_mut().unwrap().remove("customer");
    });
    let e = purchase(&body, &options());
    assert!(e.user_data.external_id.is_empty());
    assert_eq!(e.user_data.em, sha("bob.norman@hostmail.com"));
    assert_eq!(e.user_data.fn_, sha("bob"));
    // A guest with no email but a browser still matches by IP and user agent.
    let body = edit(&body, |o| {
        o["email"] = json!("");
        o["client_details"] = json!({"browser_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"});
    });
    let e = purchase(&body, &options());
    assert!(e.user_data.em.is_empty());
    assert_eq!(
        e.user_data.client_ip_address.as_deref(),
        Some("203.0.113.7")
    );
    // And with neither, it cannot be sent.
    let body = edit(&body, |o| o["client_details"] = Value::Null);
    let mapped = map_ok(Topic::OrdersCreate, &body, &options());
    assert!(matches!(
        mapped,
        Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            order: Some(_)
        }
    ));
}

#[test]
fn a_pos_order_is_offline() {
    let pos = edit(&python_order(), |o| {
        o["source_name"] = json!("pos");
        o["location_id"] = json!(49202758);
        o["client_details"] = Value::Null;
        o["landing_site"] = Value::Null;
    });
    let e = purchase(&pos, &options());
    assert_eq!(e.action_source, ActionSource::Offline);
    assert_eq!(e.event_source_url, None);
    // A staff order from a location, without a browser, is offline too ...
    let staff = edit(&python_order(), |o| o["location_id"] = json!(49202758));
    assert_eq!(
        purchase(&staff, &options()).action_source,
        ActionSource::Offline
    );
    // ... but webhookdb's order has a location and a browser: web.
    let opts = MapOptions {
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    assert_eq!(
        purchase(&webhookdb_order(), &opts).action_source,
        ActionSource::Web
    );
    let draft = edit(&python_order(), |o| {
        o["source_name"] = json!("shopify_draft_order")
    });
    assert_eq!(
        purchase(&draft, &options()).action_source,
        ActionSource::Offline
    );
}

#[test]
fn landing_site_noise_gives_no_event_source_url() {
    let with = |landing: &str| {
        let body = edit(&python_order(), |o| o["landing_site"] = json!(landing));
        purchase(&body, &options()).event_source_url
    };
    assert_eq!(with("/password"), None);
    assert_eq!(with("/online_store_preview"), None);
    assert_eq!(with("/wallets/checkouts.json"), None);
    assert_eq!(
        with("/?_bt=BAh7BkkiC19yYWlscwY6BkVU&utm_source=pinterest").as_deref(),
        Some("https://jsmith.myshopify.com/?utm_source=pinterest")
    );
    assert_eq!(
        with("/products/mug").as_deref(),
        Some("https://jsmith.myshopify.com/products/mug")
    );
    // The order status URL is never used.
    let e = purchase(&docs_order_as_a_real_sale(), &options());
    assert_eq!(e.event_source_url, None);
    // Without a shop domain, a relative landing page is left out.
    let body = edit(&python_order(), |o| {
        o["landing_site"] = json!("/products/mug")
    });
    assert_eq!(
        purchase(&body, &MapOptions::default()).event_source_url,
        None
    );
}

#[test]
fn custom_line_items_with_null_ids_are_kept_without_an_id() {
    let opts = MapOptions {
        content_ids: ContentIdScheme::ProductId,
        ..options()
    };
    let e = purchase(&docs_order_as_a_real_sale(), &opts);
    let data = custom(&e);
    assert_eq!(data.contents.len(), 5);
    assert_eq!(data.num_items, Some(5));
    let without_id: Vec<&str> = data
        .contents
        .iter()
        .filter(|c| c.id.is_none())
        .filter_map(|c| c.item_name.as_deref())
        .collect();
    assert_eq!(
        without_id,
        ["Lens Protection Plan (2 Year)", "Premium Leather Case"]
    );
    // Every variant id is null in the sample: no content ids at all, items still listed.
    let e = purchase(&docs_order_as_a_real_sale(), &options());
    assert!(custom(&e).content_ids.is_empty());
    assert_eq!(custom(&e).contents.len(), 5);
    // An empty SKU is no id either.
    let body = edit(&python_order(), |o| o["line_items"][1]["sku"] = json!(""));
    let sku = MapOptions {
        content_ids: ContentIdScheme::Sku,
        ..options()
    };
    assert_eq!(
        custom(&purchase(&body, &sku)).content_ids,
        vec!["IPOD2008GREEN".to_owned(), "IPOD2008BLACK".to_owned()]
    );
}

#[test]
fn epik_comes_from_note_attributes_then_from_landing_site() {
    let with = |attrs: Value, landing: &str| {
        let body = edit(&python_order(), |o| {
            o["note_attributes"] = attrs;
            o["landing_site"] = json!(landing);
        });
        purchase(&body, &options()).user_data.click_id
    };
    assert_eq!(
        with(json!([{"name": "_epik", "value": "dj0yJnU9Zm9v"}]), "/").as_deref(),
        Some("dj0yJnU9Zm9v")
    );
    assert_eq!(
        with(json!([{"name": "epik", "value": " abc "}]), "/?epik=zzz").as_deref(),
        Some("abc")
    );
    assert_eq!(
        with(
            json!([]),
            "/products/a?utm_source=pinterest&epik=dj0yJnU9%3D%3D"
        )
        .as_deref(),
        Some("dj0yJnU9==")
    );
    // The cookie copy wins over the landing page.
    assert_eq!(
        with(json!([{"name": "_epik", "value": "cookie"}]), "/?epik=url").as_deref(),
        Some("cookie")
    );
    assert_eq!(
        with(json!([{"name": "colour", "value": "green"}]), "/"),
        None
    );
}

#[test]
fn a_test_order_is_ignored_or_sent_as_test() {
    let body = edit(&python_order(), |o| o["test"] = json!(true));
    let ignored = map_ok(Topic::OrdersCreate, &body, &options());
    let Mapped::Ignored { reason, order } = &ignored else {
        panic!("{ignored:?}");
    };
    assert!(reason.contains("test order"), "{reason}");
    assert!(order.as_ref().unwrap().test);
    let send = MapOptions {
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    let sent = map_ok(Topic::OrdersCreate, &body, &send);
    assert!(matches!(sent, Mapped::Event { test: true, .. }), "{sent:?}");
    // A real order is never marked test.
    let real = map_ok(Topic::OrdersCreate, &python_order(), &send);
    assert!(matches!(real, Mapped::Event { test: false, .. }));
}

#[test]
fn cancelled_or_voided_orders_are_ignored_at_purchase() {
    let cancelled = edit(&python_order(), |o| {
        o["cancelled_at"] = json!("2008-01-10T12:00:00-05:00")
    });
    let voided = edit(&python_order(), |o| o["financial_status"] = json!("voided"));
    for (body, word) in [(cancelled, "cancelled"), (voided, "voided")] {
        match map_ok(Topic::OrdersCreate, &body, &options()) {
            Mapped::Ignored { reason, order } => {
                assert!(reason.contains(word), "{reason}");
                assert_eq!(order.unwrap().order_id, "450789469");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_bad_shape_is_an_error_naming_the_field() {
    let err = |body: &[u8]| {
        map(Topic::OrdersCreate, body, Topic::OrdersCreate, &options())
            .unwrap_err()
            .to_string()
    };
    let body = edit(&python_order(), |o| {
        o["line_items"][2]["quantity"] = json!("1")
    });
    assert_eq!(
        err(&body),
        "line_items[2].quantity: invalid type: string, expected an integer"
    );
    // The value is never echoed, here an email where a number belongs.
    let body = edit(&python_order(), |o| {
        o["line_items"][0]["quantity"] = json!("bob.norman@hostmail.com")
    });
    let message = err(&body);
    assert!(!message.contains("hostmail"), "{message}");
    let body = edit(&python_order(), |o| {
        o["email"] = json!(["bob.norman@hostmail.com"])
    });
    assert_eq!(
        err(&body),
        "email: invalid type: sequence, expected a string"
    );
    let body = edit(&python_order(), |o| o["customer"]["id"] = json!(2.5));
    assert_eq!(
        err(&body),
        "customer.id: expected an integer id, found a floating point number"
    );
    let body = edit(&python_order(), |o| o["created_at"] = json!("10/01/2008"));
    assert!(err(&body).starts_with("created_at: expected an RFC 3339 timestamp"));
    let body = edit(&python_order(), |o| {
        o.as_object_mut().unwrap().remove("id");
    });
    assert_eq!(err(&body), "id: is missing; every order has one");
    let body = edit(&python_order(), |o| {
        o.as_object_mut().unwrap().remove("created_at");
    });
    assert_eq!(
        err(&body),
        "created_at: is missing (and so is processed_at)"
    );
    assert!(err(b"{\"id\": 1,").starts_with("the body is not valid JSON"));
    assert_eq!(
        err(b"\"an order\""),
        "body: invalid type: string, expected struct Order"
    );
}

#[test]
fn timestamps_with_offsets_become_utc_seconds() {
    // 2021-12-31T19:00:00-05:00 is 2022-01-01T00:00:00Z.
    let e = purchase(&docs_order_as_a_real_sale(), &options());
    assert_eq!(e.event_time.secs(), 1_640_995_200);
    // processed_at is used only when created_at is missing.
    let body = edit(&docs_order_as_a_real_sale(), |o| {
        o["created_at"] = Value::Null;
        o["processed_at"] = json!("2022-01-02T00:00:00+01:00");
    });
    assert_eq!(purchase(&body, &options()).event_time.secs(), 1_641_078_000);
    let body = edit(&docs_order_as_a_real_sale(), |o| {
        o["processed_at"] = json!("2022-01-02T00:00:00+01:00");
    });
    assert_eq!(purchase(&body, &options()).event_time.secs(), 1_640_995_200);
}

#[test]
fn orders_paid_can_be_the_purchase_topic() {
    let body = python_order();
    let create = map(Topic::OrdersCreate, &body, Topic::OrdersPaid, &options()).unwrap();
    let Mapped::Ignored { reason, order } = create else {
        panic!("orders/create must be ignored");
    };
    assert!(reason.contains("orders/paid"), "{reason}");
    assert!(order.is_some());
    let paid = map(Topic::OrdersPaid, &body, Topic::OrdersPaid, &options()).unwrap();
    assert_eq!(event_of(&paid).event_name, EventName::Checkout);
    // The order facts are what reconciliation keys on.
    let Mapped::Event {
        order: Some(facts), ..
    } = paid
    else {
        panic!()
    };
    assert_eq!(facts.order_id, "450789469");
    assert_eq!(facts.created_at, 1_199_980_800);
    assert_eq!(facts.source_name.as_deref(), Some("web"));
    assert_eq!(facts.value.as_ref().map(Money::as_str), Some("398.00"));
}

#[test]
fn topics_can_be_turned_off() {
    let off = MapOptions {
        checkouts: false,
        carts: false,
        customers: false,
        ..options()
    };
    for topic in [
        Topic::CheckoutsCreate,
        Topic::CheckoutsUpdate,
        Topic::CartsCreate,
        Topic::CartsUpdate,
        Topic::CustomersCreate,
    ] {
        // Not even parsed: the body does not matter.
        let mapped = map(topic, b"not json", Topic::OrdersCreate, &off).unwrap();
        assert!(
            matches!(&mapped, Mapped::Ignored { reason, .. } if reason.contains("turned off")),
            "{topic}: {mapped:?}"
        );
    }
}

#[test]
fn every_update_of_a_checkout_has_the_same_event_id() {
    let body = fixture("checkouts-create.shopify-docs-2026-07.json");
    let a = map_ok(Topic::CheckoutsCreate, &body, &options());
    let later = edit(&body, |c| {
        c["updated_at"] = json!("2022-01-01T10:00:00-05:00")
    });
    let b = map_ok(Topic::CheckoutsUpdate, &later, &options());
    assert_eq!(event_of(&a).event_id.as_str(), "checkout-123123123");
    assert_eq!(event_of(&a).event_id, event_of(&b).event_id);
    assert_eq!(event_of(&a).event_name, EventName::InitiateCheckout);
    // A checkout with no buyer is skipped.
    let anonymous = edit(&body, |c| {
        c["email"] = Value::Null;
        c["customer"] = Value::Null;
    });
    assert!(matches!(
        map_ok(Topic::CheckoutsCreate, &anonymous, &options()),
        Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            ..
        }
    ));
}

#[test]
fn a_cart_is_sent_only_when_it_names_a_buyer() {
    let body = fixture("carts-create.shopify-docs-2026-07.json");
    assert!(matches!(
        map_ok(Topic::CartsCreate, &body, &options()),
        Mapped::Skipped {
            reason: SkipReason::NoBuyerData,
            ..
        }
    ));
    let with_buyer = edit(&body, |c| c["email"] = json!("shopper@example.com"));
    let mapped = map_ok(Topic::CartsUpdate, &with_buyer, &options());
    let e = event_of(&mapped);
    assert_eq!(e.event_name, EventName::AddToCart);
    assert_eq!(e.event_id.as_str(), "cart-exampleCartId-1640995200");
    let data = custom(e);
    assert_eq!(data.value.as_ref().map(Money::as_str), Some("59.97"));
    assert_eq!(data.content_ids, vec!["704912205188288575".to_owned()]);
    assert_eq!(data.num_items, Some(3));
}

#[test]
fn a_signup_needs_an_email() {
    let customer = json!({
        "id": 706405506930370084u64,
        "email": "Bob@Biller.com",
        "created_at": "2024-01-01T12:00:00-05:00",
        "first_name": "Bob",
        "default_address": {"country_code": "US", "zip": "40202", "phone": "555-625-1199"}
    });
    let body = serde_json::to_vec(&customer).unwrap();
    let mapped = map_ok(Topic::CustomersCreate, &body, &options());
    let e = event_of(&mapped);
    assert_eq!(e.event_name, EventName::Signup);
    assert_eq!(e.event_id.as_str(), "signup-706405506930370084");
    assert_eq!(e.user_data.em, sha("bob@biller.com"));
    assert_eq!(e.user_data.ph, sha("15556251199"));
    assert_eq!(e.user_data.external_id, sha("706405506930370084"));
    let no_email = edit(&body, |c| c["email"] = Value::Null);
    assert!(matches!(
        map_ok(Topic::CustomersCreate, &no_email, &options()),
        Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            ..
        }
    ));
}

#[test]
fn refunds_sum_their_refund_transactions() {
    let refund = unwrap_one(&fixture("rest-refund.shopify-python-api.json"), "refund");
    let ledger = |body: &[u8]| match map_ok(Topic::RefundsCreate, body, &options()) {
        Mapped::Ledger(entry) => entry,
        other => panic!("{other:?}"),
    };
    let two = edit(&refund, |r| {
        let mut second = r["transactions"][0].clone();
        second["amount"] = json!("0.5");
        let mut failed = second.clone();
        failed["status"] = json!("failure");
        let mut capture = second.clone();
        capture["kind"] = json!("capture");
        r["transactions"]
            .as_array_mut()
            .unwrap()
            .extend([second, failed, capture]);
    });
    let entry = ledger(&two);
    assert_eq!(entry.amount.as_ref().map(Money::as_str), Some("209.50"));
    assert_eq!(entry.currency.as_ref().map(Currency::as_str), Some("USD"));
    assert_eq!(entry.order_id, "450789469");
    assert_eq!(entry.reason, None);
    // Without transactions, the refunded lines' subtotals.
    let lines = edit(&refund, |r| {
        r["transactions"] = json!([]);
        for (i, amount) in ["199.00", "189.10"].iter().enumerate() {
            r["refund_line_items"][i]["subtotal_set"] = json!({
                "shop_money": {"amount": amount, "currency_code": "USD"},
                "presentment_money": {"amount": "1.00", "currency_code": "EUR"}
            });
        }
    });
    assert_eq!(
        ledger(&lines).amount.as_ref().map(Money::as_str),
        Some("388.10")
    );
    let missing = edit(&refund, |r| {
        r.as_object_mut().unwrap().remove("order_id");
    });
    assert_eq!(
        map(
            Topic::RefundsCreate,
            &missing,
            Topic::OrdersCreate,
            &options()
        )
        .unwrap_err()
        .to_string(),
        "order_id: is missing; a refund names its order"
    );
}

#[test]
fn no_raw_personal_data_leaves_the_mapping() {
    let send = MapOptions {
        test_orders: TestOrders::SendAsTest,
        ..options()
    };
    let outputs = [
        map_ok(Topic::OrdersCreate, &docs_order_as_a_real_sale(), &send),
        map_ok(Topic::OrdersCreate, &python_order(), &send),
        map_ok(Topic::OrdersCreate, &webhookdb_order(), &send),
        map_ok(
            Topic::CheckoutsCreate,
            &fixture("checkouts-create.shopify-docs-2026-07.json"),
            &send,
        ),
    ];
    let text = serde_json::to_string(&outputs).unwrap().to_lowercase();
    // Words only: digits could occur inside a hex digest by chance.
    for pii in [
        "jon@",
        "john@",
        "example@email",
        "hostmail",
        "norman",
        "shipper",
        "gorski",
        "biller",
        "louisville",
        "drayton",
        "k2p",
    ] {
        assert!(!text.contains(pii), "{pii} leaked");
    }
}

// ---- purchase_event_id and Topic -----------------------------------------------------------

#[test]
fn an_orders_event_id_and_the_order_it_names_are_one_rule() {
    assert_eq!(event_id_of_order("5550001"), "order-5550001");
    assert_eq!(order_of_event_id("order-5550001"), Some("5550001"));
    assert_eq!(
        order_of_event_id(&event_id_of_order("US-1001")),
        Some("US-1001")
    );
    assert_eq!(order_of_event_id("visit-1"), None);
    let from_shopify = purchase_event_id("gid://shopify/Order/42").unwrap();
    assert_eq!(order_of_event_id(from_shopify.as_str()), Some("42"));
}

#[test]
fn purchase_event_id_takes_the_trailing_digits() {
    let id = |s: &str| purchase_event_id(s).map(|e| e.as_str().to_owned());
    assert_eq!(
        id("820982911946154508").as_deref(),
        Some("order-820982911946154508")
    );
    assert_eq!(
        id("gid://shopify/Order/820982911946154508").as_deref(),
        Some("order-820982911946154508")
    );
    assert_eq!(
        id("gid://shopify/OrderIdentity/5210499102").as_deref(),
        Some("order-5210499102")
    );
    assert_eq!(id(" 5210499102\n").as_deref(), Some("order-5210499102"));
    for junk in [
        "",
        "   ",
        "abc",
        "gid://shopify/Order/",
        "12a",
        "null",
        "١٢٣",
    ] {
        assert_eq!(id(junk), None, "{junk}");
    }
    assert_eq!(id(&"9".repeat(300)), None, "longer than an event id may be");
}

#[test]
fn topics_round_trip_through_their_header_spelling() {
    for t in Topic::ALL {
        assert_eq!(Topic::parse(t.as_str()), Some(t));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{}\"", t.as_str())
        );
    }
    assert_eq!(Topic::parse(" Orders/Create "), Some(Topic::OrdersCreate));
    assert_eq!(Topic::parse("orders/delete"), None);
}

#[test]
fn admin_api_order_lists_parse_and_map() {
    let list = format!(
        "{{\"orders\": [{}, {}]}}",
        String::from_utf8(python_order()).unwrap(),
        String::from_utf8(docs_order()).unwrap()
    );
    let orders = parse_orders(list.as_bytes()).unwrap();
    assert_eq!(orders[1].id, Some(820_982_911_946_154_508));
    let mapped = map_order(
        Topic::OrdersCreate,
        &orders[0],
        Topic::OrdersCreate,
        &options(),
    )
    .unwrap();
    assert_eq!(
        mapped,
        map_ok(Topic::OrdersCreate, &python_order(), &options())
    );
    let bad = br#"{"orders": [{"id": 1}, {"id": true}]}"#;
    assert_eq!(
        parse_orders(bad).unwrap_err().to_string(),
        "orders[1].id: invalid type: boolean, expected an integer id"
    );
}

#[test]
fn skip_reasons_read_as_sentences() {
    for r in [SkipReason::NoMatchKey, SkipReason::NoBuyerData] {
        let s = r.to_string();
        assert!(s.ends_with('.') && s.starts_with("Pinterest cannot"), "{s}");
    }
}

// ---- properties ----------------------------------------------------------------------------

/// Keys the mapping reads, so that random objects reach past the top level.
const KEYS: &[&str] = &[
    "id",
    "admin_graphql_api_id",
    "token",
    "email",
    "contact_email",
    "phone",
    "created_at",
    "processed_at",
    "updated_at",
    "cancelled_at",
    "cancel_reason",
    "financial_status",
    "test",
    "source_name",
    "location_id",
    "currency",
    "presentment_currency",
    "subtotal_price",
    "subtotal_price_set",
    "shop_money",
    "presentment_money",
    "amount",
    "currency_code",
    "total_price",
    "line_items",
    "product_id",
    "variant_id",
    "sku",
    "title",
    "vendor",
    "quantity",
    "price",
    "price_set",
    "line_price_set",
    "billing_address",
    "shipping_address",
    "zip",
    "country_code",
    "province_code",
    "city",
    "first_name",
    "customer",
    "default_address",
    "client_details",
    "browser_ip",
    "user_agent",
    "landing_site",
    "note_attributes",
    "name",
    "value",
    "order_id",
    "transactions",
    "kind",
    "status",
    "refund_line_items",
    "subtotal_set",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!("2021-12-31T19:00:00-05:00")),
        Just(json!("1.50")),
        Just(json!("/?epik=a%20b&_bt=x")),
        Just(json!("gid://shopify/Order/1")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS), json_value(), 0..16)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn all_options() -> impl Strategy<Value = MapOptions> {
    (
        prop::sample::select(
            &[
                ContentIdScheme::ProductId,
                ContentIdScheme::VariantId,
                ContentIdScheme::Sku,
            ][..],
        ),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(content_ids, total, presentment, send_tests)| MapOptions {
            content_ids,
            value: if total {
                ValueSource::Total
            } else {
                ValueSource::Subtotal
            },
            currency: if presentment {
                CurrencySource::Presentment
            } else {
                CurrencySource::Shop
            },
            test_orders: if send_tests {
                TestOrders::SendAsTest
            } else {
                TestOrders::Ignore
            },
            ..options()
        })
}

proptest! {
    #[test]
    fn map_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..256),
        topic in prop::sample::select(&Topic::ALL[..]),
    ) {
        let _ = map(topic, &body, Topic::OrdersCreate, &MapOptions::default());
    }

    #[test]
    fn map_never_panics_on_arbitrary_json_objects(
        object in json_object(),
        topic in prop::sample::select(&Topic::ALL[..]),
        options in all_options(),
    ) {
        let body = serde_json::to_vec(&object).unwrap();
        if let Ok(Mapped::Event { event, .. }) =
            map(topic, &body, Topic::OrdersCreate, &options)
        {
            // Whatever the input, what is sent passes the strict schema.
            assert_valid(&event);
        }
    }

    #[test]
    fn mapping_errors_never_echo_string_values(
        secret in "[a-z]{12}@pii\\.example",
        key in prop::sample::select(KEYS),
        nested in any::<bool>(),
    ) {
        let value = if nested { json!({ key: secret }) } else { json!(secret) };
        let body = serde_json::to_vec(&json!({ "id": 1, key: value, "line_items": [{ key: secret }] })).unwrap();
        for topic in Topic::ALL {
            if let Err(e) = map(topic, &body, Topic::OrdersCreate, &MapOptions::default()) {
                prop_assert!(!e.to_string().contains(&secret), "{e}");
            }
        }
    }
}
