//! The purchase event_id rule, topics, and the mapping's properties.

use super::*;

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

#[test]
fn the_buyers_consent_on_the_cart_holds_for_the_order_and_for_the_checkout() {
    let attrs = |v: &str| serde_json::json!([{"name": "_pincapi_consent", "value": v}]);
    let now = "2026-11-30T10:00:00Z";
    let order = |v: &str| {
        serde_json::json!({"id": 91, "email": "a@example.com", "created_at": now,
            "financial_status": "paid", "currency": "USD", "subtotal_price": "10.00",
            "line_items": [], "note_attributes": attrs(v)})
        .to_string()
    };
    let checkout = |v: &str| {
        serde_json::json!({"token": "tok-1", "email": "a@example.com", "created_at": now,
            "currency": "USD", "line_items": [], "note_attributes": attrs(v)})
        .to_string()
    };
    let options = MapOptions::default();
    for (topic, body) in [
        (Topic::OrdersCreate, order("marketing=no")),
        (Topic::CheckoutsCreate, checkout("marketing=no")),
    ] {
        let m = map(topic, body.as_bytes(), Topic::OrdersCreate, &options).unwrap();
        assert!(
            matches!(
                m,
                Mapped::Skipped {
                    reason: SkipReason::Consent,
                    ..
                }
            ),
            "{topic}: {m:?}"
        );
    }
    for (topic, body) in [
        (Topic::OrdersCreate, order("marketing=yes;sale_of_data=no")),
        (
            Topic::CheckoutsCreate,
            checkout("marketing=yes;sale_of_data=no"),
        ),
    ] {
        let Mapped::Event { event, .. } =
            map(topic, body.as_bytes(), Topic::OrdersCreate, &options).unwrap()
        else {
            panic!("{topic} is sent");
        };
        assert_eq!(
            event.custom_data.unwrap().opt_out_type.as_deref(),
            Some("LDP"),
            "{topic}"
        );
    }
    // Ignored when configured so.
    let ignore = MapOptions {
        consent: Consent::Ignore,
        ..MapOptions::default()
    };
    let m = map(
        Topic::OrdersCreate,
        order("marketing=no").as_bytes(),
        Topic::OrdersCreate,
        &ignore,
    )
    .unwrap();
    assert!(matches!(m, Mapped::Event { .. }), "{m:?}");
}
