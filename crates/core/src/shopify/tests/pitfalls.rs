//! The pitfalls of shopify.md §7.

use super::*;

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
