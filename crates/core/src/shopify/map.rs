//! The mapping of each topic, and the field rules they share.
//!
//! Field rules (shopify.md §7, with the choices made where it is silent):
//!
//! - `event_time` is the order's `created_at` (`processed_at` only when `created_at` is
//!   missing), in Unix seconds UTC. Checkouts use their `created_at`, carts their
//!   `updated_at` (the change), customers their `created_at`.
//! - `em`: every distinct valid address among `email`, `contact_email`, `customer.email`, the
//!   first non-empty one first. They can disagree (Shopify's own sample does) and all belong
//!   to the buyer; Pinterest takes an array.
//! - `ph`: the first valid number among `phone`, billing phone, shipping phone,
//!   `customer.phone`, completed with the calling code of the billing (else shipping, else the
//!   customer's default) address country. Numbers with letters are dropped.
//! - `fn` / `ln`: each the first valid value among billing, customer, shipping.
//! - `ct`, `st` (from `province_code`, never the province name), `zp`, `country` (from
//!   `country_code`): all from one address, the billing address if it has any of them, else
//!   the shipping address, else the customer's default address. Fields are never mixed across
//!   addresses.
//! - `external_id`: the customer id as a decimal string.
//! - `client_ip_address`: `client_details.browser_ip`, else `browser_ip`; unspecified and
//!   loopback addresses (`0.0.0.0`, `127.0.0.1`, `::1`) and non-addresses are dropped.
//!   `client_user_agent`: `client_details.user_agent`.
//! - `click_id`: the note attribute `_epik`, else `epik`, else the `epik` query parameter of
//!   `landing_site`, percent-decoded.
//! - `action_source`: `offline` for `source_name: "pos"`, and for orders with a `location_id`
//!   or from `shopify_draft_order` that carry no browser IP or user agent; `web` otherwise.
//! - `custom_data`: `value` and `currency` from one money bag (see `money.rs`); each line item
//!   becomes a `contents` entry with the scheme's id (left out when null or empty; the item is
//!   kept), `item_price` from the same bag (left out when its currency is not the event's),
//!   `quantity`, `item_name` (title) and `item_brand` (vendor); `content_ids` are the distinct
//!   ids; `num_items` the sum of quantities.

use super::money::{self, Currencies};
use super::wire::{self, Address, Cart, Customer, LineItem, NoteAttribute, Order, Refund};
use super::{
    CONSENT_ATTRIBUTE, Consent, ConsentDenied, ContentIdScheme, LedgerEntry, LedgerKind, MapError,
    MapOptions, Mapped, OrderFacts, RecordedConsent, SkipReason, TestOrders, Topic, ValueSource,
    purchase_event_id, url,
};
use crate::event::{
    ActionSource, Content, ConversionEvent, Currency, CustomData, EventId, EventName, EventTime,
    Money, UserData,
};
use crate::normalize::{self, HashedField, Sha256Hex};

/// `orders/*`: the purchase, the ledger entry of a cancellation, or a reason to ignore it.
pub(super) fn order(
    topic: Topic,
    order: &Order,
    purchase_topic: Topic,
    options: &MapOptions,
) -> Result<Mapped, MapError> {
    let (id, facts) = order_facts(order, options)?;
    let purchase = match purchase_topic {
        Topic::OrdersPaid => Topic::OrdersPaid,
        _ => Topic::OrdersCreate,
    };
    let ignored = |reason: String| {
        Ok(Mapped::Ignored {
            reason,
            order: Some(facts.clone()),
        })
    };
    match topic {
        // Shopify's signature covers the body, not the topic header: a signed order replayed
        // under orders/cancelled must not cancel it. A cancelled order says when.
        Topic::OrdersCancelled if order.cancelled_at.is_none() => {
            return Err(MapError::field(
                "cancelled_at",
                "an orders/cancelled body is a cancelled order and says when; this order is not \
                 cancelled (the topic header is not covered by Shopify's signature)",
            ));
        }
        Topic::OrdersCancelled => return Ok(Mapped::Ledger(cancellation(order, &facts))),
        Topic::OrdersUpdated => {
            return ignored(format!(
                "orders/updated is not a conversion; the purchase is sent from {purchase}"
            ));
        }
        t if t != purchase => {
            return ignored(format!(
                "{t} is not the purchase topic; the purchase is sent from {purchase}"
            ));
        }
        _ => {}
    }
    if facts.test && options.test_orders == TestOrders::Ignore {
        return ignored(
            "a test order (paid through a test gateway); test orders are sent only with \
             test_orders = send_as_test"
                .to_owned(),
        );
    }
    if order.cancelled_at.is_some() {
        return ignored("the order is already cancelled (cancelled_at is set)".to_owned());
    }
    if order.financial_status.as_deref().map(str::trim) == Some("voided") {
        return ignored("the order's payment is voided (financial_status voided)".to_owned());
    }
    let mut event = purchase_event(order, id, &facts, options)?;
    if !apply_consent(&mut event, &order.note_attributes, options) {
        return Ok(Mapped::Skipped {
            reason: SkipReason::Consent,
            order: Some(facts),
        });
    }
    if !event.user_data.has_required_match_key() {
        return Ok(Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            order: Some(facts),
        });
    }
    Ok(Mapped::Event {
        event,
        test: facts.test,
        order: Some(facts),
    })
}

/// `refunds/create`: the money returned, for reporting. The amount is the sum of the
/// successful `refund` transactions, in their currency. A refund with no transactions at all
/// is summed from its `refund_line_items` subtotals instead (money bag per the options); that
/// overstates a refund that only restocked goods. Amounts in different currencies give no
/// amount.
pub(super) fn refund(refund: &Refund, options: &MapOptions) -> Result<Mapped, MapError> {
    let order_id = refund
        .order_id
        .ok_or_else(|| MapError::field("order_id", "is missing; a refund names its order"))?;
    let at = refund
        .created_at
        .or(refund.processed_at)
        .ok_or_else(|| MapError::field("created_at", "is missing (and so is processed_at)"))?;
    let total = if refund.transactions.is_empty() {
        total_of(refund.refund_line_items.iter().map(|r| {
            money::pick(
                r.subtotal_set.as_ref(),
                r.subtotal.as_ref(),
                options.currency,
                Currencies::default(),
            )
        }))
    } else {
        total_of(
            refund
                .transactions
                .iter()
                .filter(|t| {
                    t.kind.as_deref().map(str::trim) == Some("refund")
                        && t.status.as_deref().is_none_or(|s| s.trim() == "success")
                })
                .map(|t| {
                    let amount = Money::parse(t.amount.as_ref()?.as_str()).ok()?;
                    let currency = Currency::parse(t.currency.as_deref()?).ok()?;
                    Some((amount, currency))
                }),
        )
    };
    let (amount, currency) = total.unzip();
    Ok(Mapped::Ledger(LedgerEntry {
        order_id: order_id.to_string(),
        kind: LedgerKind::Refunded,
        at,
        amount,
        currency,
        reason: None,
        test: refund.transactions.iter().any(|t| t.test == Some(true)),
    }))
}

/// `checkouts/*` → `initiate_checkout`, event id `checkout-<token>`. Every update of one
/// checkout gives the same id, so Pinterest and the store keep one event per checkout.
pub(super) fn checkout(checkout: &Order, options: &MapOptions) -> Result<Mapped, MapError> {
    let token = key_text(checkout.token.as_deref())
        .ok_or_else(|| MapError::field("token", "is missing; a checkout is known by its token"))?;
    let secs = checkout
        .created_at
        .or(checkout.updated_at)
        .ok_or_else(|| MapError::field("created_at", "is missing (and so is updated_at)"))?;
    let time = event_time(secs, "created_at")?;
    let event_id = EventId::parse(format!("checkout-{token}"))
        .map_err(|e| MapError::field("token", e.to_string()))?;
    let user = user_data(&Buyer::of_order(checkout));
    if !user.has_required_match_key() {
        return Ok(Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            order: None,
        });
    }
    let mut event = ConversionEvent::new(
        EventName::InitiateCheckout,
        action_source(checkout, &user),
        time,
        event_id,
        user,
    );
    let data = commerce(
        &checkout.line_items,
        order_value(checkout, options),
        currencies(checkout),
        options,
    );
    event.custom_data = (!data.is_empty()).then_some(data);
    event.event_source_url = source_url(checkout, options);
    event.partner_name = partner_name(options);
    // A checkout carries the cart's attributes: the buyer's consent holds for it too.
    if !apply_consent(&mut event, &checkout.note_attributes, options) {
        return Ok(Mapped::Skipped {
            reason: SkipReason::Consent,
            order: None,
        });
    }
    Ok(Mapped::Event {
        event,
        test: false,
        order: None,
    })
}

/// `carts/*` → `add_to_cart`, event id `cart-<token>-<updated_at seconds>`: one event per
/// change of the cart, the same for `carts/create` and `carts/update` of one change. Shopify's
/// cart payloads name no buyer, so this is skipped unless an app adds buyer fields.
pub(super) fn cart(cart: &Cart, options: &MapOptions) -> Result<Mapped, MapError> {
    let token = key_text(cart.token.as_deref())
        .or_else(|| key_text(cart.id.as_deref()))
        .ok_or_else(|| MapError::field("token", "is missing (and so is id)"))?;
    let secs = cart
        .updated_at
        .or(cart.created_at)
        .ok_or_else(|| MapError::field("updated_at", "is missing (and so is created_at)"))?;
    let time = event_time(secs, "updated_at")?;
    let event_id = EventId::parse(format!("cart-{token}-{secs}"))
        .map_err(|e| MapError::field("token", e.to_string()))?;
    let buyer = Buyer::of_cart(cart);
    if buyer.is_empty() {
        return Ok(Mapped::Skipped {
            reason: SkipReason::NoBuyerData,
            order: None,
        });
    }
    let user = user_data(&buyer);
    if !user.has_required_match_key() {
        return Ok(Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            order: None,
        });
    }
    let value = total_of(cart.line_items.iter().map(|li| {
        money::pick(
            li.line_price_set.as_ref(),
            li.line_price.as_ref(),
            options.currency,
            Currencies::default(),
        )
    }));
    let mut event = ConversionEvent::new(
        EventName::AddToCart,
        ActionSource::Web,
        time,
        event_id,
        user,
    );
    let data = commerce(&cart.line_items, value, Currencies::default(), options);
    event.custom_data = (!data.is_empty()).then_some(data);
    event.partner_name = partner_name(options);
    Ok(Mapped::Event {
        event,
        test: false,
        order: None,
    })
}

/// `customers/create` → `signup`, event id `signup-<customer id>`, only with a usable email.
pub(super) fn signup(customer: &Customer, options: &MapOptions) -> Result<Mapped, MapError> {
    let id = customer
        .id
        .ok_or_else(|| MapError::field("id", "is missing; every customer has one"))?;
    let secs = customer
        .created_at
        .ok_or_else(|| MapError::field("created_at", "is missing"))?;
    let time = event_time(secs, "created_at")?;
    let event_id =
        EventId::parse(format!("signup-{id}")).map_err(|e| MapError::field("id", e.to_string()))?;
    let user = user_data(&Buyer::of_customer(customer));
    if user.em.is_empty() {
        return Ok(Mapped::Skipped {
            reason: SkipReason::NoMatchKey,
            order: None,
        });
    }
    let mut event =
        ConversionEvent::new(EventName::Signup, ActionSource::Web, time, event_id, user);
    event.partner_name = partner_name(options);
    Ok(Mapped::Event {
        event,
        test: false,
        order: None,
    })
}

/// The order's id and its facts; fails when the id or both timestamps are missing.
fn order_facts(order: &Order, options: &MapOptions) -> Result<(u64, OrderFacts), MapError> {
    let id = order
        .id
        .or_else(|| {
            order
                .admin_graphql_api_id
                .as_deref()
                .and_then(wire::parse_id)
        })
        .ok_or_else(|| MapError::field("id", "is missing; every order has one"))?;
    let created_at = order
        .created_at
        .or(order.processed_at)
        .ok_or_else(|| MapError::field("created_at", "is missing (and so is processed_at)"))?;
    let (value, currency) = order_value(order, options).unzip();
    let facts = OrderFacts {
        order_id: id.to_string(),
        created_at,
        test: order.test == Some(true),
        source_name: clean(order.source_name.as_deref()).map(str::to_owned),
        value,
        currency,
    };
    Ok((id, facts))
}

fn purchase_event(
    order: &Order,
    id: u64,
    facts: &OrderFacts,
    options: &MapOptions,
) -> Result<ConversionEvent, MapError> {
    let time_field = if order.created_at.is_some() {
        "created_at"
    } else {
        "processed_at"
    };
    let time = event_time(facts.created_at, time_field)?;
    // Cannot fail for the digits of a u64; the error only keeps this free of panics.
    let event_id = purchase_event_id(&facts.order_id)
        .ok_or_else(|| MapError::field("id", "cannot form an event id"))?;
    let user = user_data(&Buyer::of_order(order));
    let mut event = ConversionEvent::new(
        EventName::Checkout,
        action_source(order, &user),
        time,
        event_id,
        user,
    );
    let value = facts.value.clone().zip(facts.currency.clone());
    let mut data = commerce(&order.line_items, value, currencies(order), options);
    data.order_id = Some(id.to_string());
    event.custom_data = Some(data);
    event.event_source_url = source_url(order, options);
    event.partner_name = partner_name(options);
    Ok(event)
}

fn cancellation(order: &Order, facts: &OrderFacts) -> LedgerEntry {
    // Shopify's cancel_reason is a short keyword; anything else is reported as "other" so
    // free text never reaches the ledger.
    let reason = clean(order.cancel_reason.as_deref()).map(|r| {
        let r = r.to_ascii_lowercase();
        if r.len() <= 32 && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            r
        } else {
            "other".to_owned()
        }
    });
    LedgerEntry {
        order_id: facts.order_id.clone(),
        kind: LedgerKind::Cancelled,
        at: order
            .cancelled_at
            .or(order.updated_at)
            .unwrap_or(facts.created_at),
        amount: facts.value.clone(),
        currency: facts.currency.clone(),
        reason,
        test: facts.test,
    }
}

fn event_time(secs: i64, field: &str) -> Result<EventTime, MapError> {
    EventTime::from_secs(secs).map_err(|e| MapError::field(field, e.to_string()))
}

fn action_source(order: &Order, user: &UserData) -> ActionSource {
    let source = clean(order.source_name.as_deref());
    let browser = user.client_ip_address.is_some() || user.client_user_agent.is_some();
    let in_store_or_staff = order.location_id.is_some() || source == Some("shopify_draft_order");
    if source == Some("pos") || (in_store_or_staff && !browser) {
        ActionSource::Offline
    } else {
        ActionSource::Web
    }
}

fn currencies(order: &Order) -> Currencies<'_> {
    Currencies {
        shop: order.currency.as_deref(),
        presentment: order.presentment_currency.as_deref(),
    }
}

/// The order's (or checkout's) value per the options, with its currency.
fn order_value(order: &Order, options: &MapOptions) -> Option<(Money, Currency)> {
    let (set, flat) = match options.value {
        ValueSource::Subtotal => (&order.subtotal_price_set, &order.subtotal_price),
        ValueSource::Total => (&order.total_price_set, &order.total_price),
    };
    money::pick(
        set.as_ref(),
        flat.as_ref(),
        options.currency,
        currencies(order),
    )
}

/// Adds amounts that all have a value and one currency; otherwise `None`.
fn total_of(parts: impl Iterator<Item = Option<(Money, Currency)>>) -> Option<(Money, Currency)> {
    let parts: Vec<(Money, Currency)> = parts.collect::<Option<_>>()?;
    let currency = parts.first()?.1.clone();
    if parts.iter().any(|(_, c)| *c != currency) {
        return None;
    }
    Some((money::sum(parts.iter().map(|(m, _)| m))?, currency))
}

/// `custom_data` for a list of line items worth `value`.
fn commerce(
    items: &[LineItem],
    value: Option<(Money, Currency)>,
    currencies: Currencies<'_>,
    options: &MapOptions,
) -> CustomData {
    let currency = value.as_ref().map(|(_, c)| c.clone());
    let contents: Vec<Content> = items
        .iter()
        .map(|li| Content {
            id: content_id(li, options.content_ids),
            item_price: currency.as_ref().and_then(|event_currency| {
                money::pick(
                    li.price_set.as_ref(),
                    li.price.as_ref(),
                    options.currency,
                    currencies,
                )
                .filter(|(_, c)| c == event_currency)
                .map(|(m, _)| m)
            }),
            quantity: li.quantity.filter(|q| *q >= 0),
            item_name: clean(li.title.as_deref()).map(str::to_owned),
            item_category: None,
            item_brand: clean(li.vendor.as_deref()).map(str::to_owned),
        })
        .filter(|c| *c != Content::default())
        .collect();
    let mut content_ids: Vec<String> = Vec::new();
    for id in contents.iter().filter_map(|c| c.id.as_ref()) {
        if !content_ids.contains(id) {
            content_ids.push(id.clone());
        }
    }
    let quantities: Vec<i64> = contents.iter().filter_map(|c| c.quantity).collect();
    let num_items =
        (!quantities.is_empty()).then(|| quantities.iter().fold(0i64, |a, q| a.saturating_add(*q)));
    let (value, currency) = value.unzip();
    CustomData {
        currency,
        value,
        content_ids,
        contents,
        num_items,
        ..CustomData::default()
    }
}

fn content_id(li: &LineItem, scheme: ContentIdScheme) -> Option<String> {
    match scheme {
        ContentIdScheme::ProductId => li.product_id.map(|id| id.to_string()),
        ContentIdScheme::VariantId => li.variant_id.map(|id| id.to_string()),
        ContentIdScheme::Sku => clean(li.sku.as_deref()).map(str::to_owned),
    }
}

fn source_url(order: &Order, options: &MapOptions) -> Option<String> {
    url::event_source_url(
        order.landing_site.as_deref()?,
        options.shop_domain.as_deref(),
    )
}

fn partner_name(options: &MapOptions) -> Option<String> {
    clean(options.partner_name.as_deref()).map(str::to_owned)
}

/// Where a payload keeps its buyer's data, in order of preference per key.
#[derive(Default)]
struct Buyer<'a> {
    emails: Vec<Option<&'a str>>,
    phones: Vec<Option<&'a str>>,
    first_names: Vec<Option<&'a str>>,
    last_names: Vec<Option<&'a str>>,
    addresses: Vec<Option<&'a Address>>,
    customer_id: Option<u64>,
    ips: Vec<Option<&'a str>>,
    user_agent: Option<&'a str>,
    note_attributes: &'a [NoteAttribute],
    landing_site: Option<&'a str>,
}

impl<'a> Buyer<'a> {
    fn of_order(o: &'a Order) -> Buyer<'a> {
        let billing = o.billing_address.as_ref();
        let shipping = o.shipping_address.as_ref();
        let customer = o.customer.as_ref();
        let details = o.client_details.as_ref();
        Buyer {
            emails: vec![
                o.email.as_deref(),
                o.contact_email.as_deref(),
                customer.and_then(|c| c.email.as_deref()),
            ],
            phones: vec![
                o.phone.as_deref(),
                billing.and_then(|a| a.phone.as_deref()),
                shipping.and_then(|a| a.phone.as_deref()),
                customer.and_then(|c| c.phone.as_deref()),
            ],
            first_names: vec![
                billing.and_then(|a| a.first_name.as_deref()),
                customer.and_then(|c| c.first_name.as_deref()),
                shipping.and_then(|a| a.first_name.as_deref()),
            ],
            last_names: vec![
                billing.and_then(|a| a.last_name.as_deref()),
                customer.and_then(|c| c.last_name.as_deref()),
                shipping.and_then(|a| a.last_name.as_deref()),
            ],
            addresses: vec![
                billing,
                shipping,
                customer.and_then(|c| c.default_address.as_ref()),
            ],
            customer_id: customer.and_then(|c| c.id),
            ips: vec![
                details.and_then(|d| d.browser_ip.as_deref()),
                o.browser_ip.as_deref(),
            ],
            user_agent: details.and_then(|d| d.user_agent.as_deref()),
            note_attributes: &o.note_attributes,
            landing_site: o.landing_site.as_deref(),
        }
    }

    fn of_customer(c: &'a Customer) -> Buyer<'a> {
        let address = c.default_address.as_ref();
        Buyer {
            emails: vec![c.email.as_deref()],
            phones: vec![c.phone.as_deref(), address.and_then(|a| a.phone.as_deref())],
            first_names: vec![
                c.first_name.as_deref(),
                address.and_then(|a| a.first_name.as_deref()),
            ],
            last_names: vec![
                c.last_name.as_deref(),
                address.and_then(|a| a.last_name.as_deref()),
            ],
            addresses: vec![address],
            customer_id: c.id,
            ..Buyer::default()
        }
    }

    fn of_cart(cart: &'a Cart) -> Buyer<'a> {
        let mut buyer = cart
            .customer
            .as_ref()
            .map(Buyer::of_customer)
            .unwrap_or_default();
        buyer.emails.insert(0, cart.email.as_deref());
        let details = cart.client_details.as_ref();
        buyer.ips = vec![
            details.and_then(|d| d.browser_ip.as_deref()),
            cart.browser_ip.as_deref(),
        ];
        buyer.user_agent = details.and_then(|d| d.user_agent.as_deref());
        buyer
    }

    /// True when the payload has none of the fields a buyer could be known by.
    fn is_empty(&self) -> bool {
        let none = |v: &[Option<&str>]| v.iter().all(|s| clean(*s).is_none());
        none(&self.emails)
            && none(&self.phones)
            && none(&self.ips)
            && clean(self.user_agent).is_none()
            && self.customer_id.is_none()
    }
}

/// Normalises and hashes what the buyer data holds; invalid values are dropped.
fn user_data(b: &Buyer<'_>) -> UserData {
    let phone_country = b.addresses.iter().flatten().find_map(|a| country_of(a));
    let mut user = UserData::default();
    for email in b.emails.iter().filter_map(|e| clean(*e)) {
        if let Ok(h) = normalize::hash(HashedField::Em, email, None)
            && !user.em.contains(&h)
        {
            user.em.push(h);
        }
    }
    let first = |field: HashedField, values: &[Option<&str>], country: Option<&str>| {
        values
            .iter()
            .filter_map(|v| clean(*v))
            .find_map(|v| normalize::hash(field, v, country).ok())
            .into_iter()
            .collect::<Vec<Sha256Hex>>()
    };
    user.ph = first(HashedField::Ph, &b.phones, phone_country.as_deref());
    user.fn_ = first(HashedField::Fn, &b.first_names, None);
    user.ln = first(HashedField::Ln, &b.last_names, None);
    if let Some(address) = b.addresses.iter().flatten().find(|a| has_location(a)) {
        let country = country_of(address);
        let country = country.as_deref();
        user.ct = first(HashedField::Ct, &[address.city.as_deref()], country);
        user.st = first(
            HashedField::St,
            &[address.province_code.as_deref()],
            country,
        );
        user.zp = first(HashedField::Zp, &[address.zip.as_deref()], country);
        user.country = first(
            HashedField::Country,
            &[address.country_code.as_deref()],
            country,
        );
    }
    if let Some(id) = b.customer_id {
        user.external_id = first(HashedField::ExternalId, &[Some(&id.to_string())], None);
    }
    user.client_ip_address = b.ips.iter().find_map(|ip| usable_ip(*ip));
    user.client_user_agent = b.user_agent.and_then(crate::event::raw_text);
    user.click_id = click_id(b.note_attributes, b.landing_site);
    user
}

fn has_location(a: &Address) -> bool {
    [&a.city, &a.province_code, &a.zip, &a.country_code]
        .iter()
        .any(|f| clean(f.as_deref()).is_some())
}

/// The address's ISO country code, from `country_code` or else the country's name.
fn country_of(a: &Address) -> Option<String> {
    clean(a.country_code.as_deref())
        .and_then(normalize::country_code)
        .or_else(|| clean(a.country.as_deref()).and_then(normalize::country_code))
}

fn usable_ip(ip: Option<&str>) -> Option<String> {
    let ip = clean(ip)?;
    let parsed: std::net::IpAddr = ip.parse().ok()?;
    (!parsed.is_unspecified() && !parsed.is_loopback()).then(|| ip.to_owned())
}

fn click_id(attributes: &[NoteAttribute], landing_site: Option<&str>) -> Option<String> {
    let attribute = |name: &str| {
        attributes
            .iter()
            .filter(|a| clean(a.name.as_deref()) == Some(name))
            .find_map(|a| clean(a.value.as_deref()))
            .map(str::to_owned)
    };
    attribute("_epik")
        .or_else(|| attribute("epik"))
        .or_else(|| url::epik(landing_site?))
}

/// Applies the consent the custom pixel recorded in the cart attribute [`CONSENT_ATTRIBUTE`]
/// (under `Consent::Respect`): `false` when the event must not be sent (marketing not allowed,
/// `ConsentDenied::Skip`); otherwise `opt_out` and `opt_out_type: "LDP"` as the consent says.
fn apply_consent(
    event: &mut ConversionEvent,
    attributes: &[NoteAttribute],
    options: &MapOptions,
) -> bool {
    if options.consent != Consent::Respect {
        return true;
    }
    let consent = attributes
        .iter()
        .filter(|a| clean(a.name.as_deref()) == Some(CONSENT_ATTRIBUTE))
        .find_map(|a| clean(a.value.as_deref()))
        .map(RecordedConsent::parse)
        .unwrap_or_default();
    if consent.marketing == Some(false) {
        if options.consent_denied == ConsentDenied::Skip {
            return false;
        }
        event.opt_out = Some(true);
    }
    if consent.sale_of_data == Some(false) {
        event
            .custom_data
            .get_or_insert_with(Default::default)
            .opt_out_type = Some("LDP".to_owned());
    }
    true
}

/// A checkout or cart token fit for an event id: trimmed, without a `?key=...` suffix (the
/// key is a secret and not part of the token).
fn key_text(s: Option<&str>) -> Option<&str> {
    clean(s?.split('?').next())
}

/// Trimmed, and `None` when empty.
fn clean(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}
