//! The one path from a mapped Shopify payload to the store, shared by the webhook and the
//! poller: [`decide`] turns the core's [`Mapped`] into what to store and what to answer, and
//! [`Recorder::store`] writes it in one transaction and keeps the metrics.

use std::sync::Arc;

use pincapi_core::event::EventName;
use pincapi_core::ingest::TimeWindow;
use pincapi_core::shopify::{LedgerKind, Mapped, OrderFacts, TestOrders, Topic, purchase_event_id};
use serde::Serialize;

use crate::config::shopify::Shop;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::store::{
    Enqueued, NewEvent, OrderStatus, SharedStore, ShopifyAdjustment, ShopifyOrder, ShopifyRecord,
    ShopifyStored, Source, StoreError, TestOrderCopy, WebhookReceipt,
};

/// What the gateway answers about one payload (and the poller reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// An event was stored for Pinterest.
    Accepted,
    /// The delivery was processed before (same webhook id): nothing stored.
    Duplicate,
    /// Not a conversion (a test order, `orders/updated`, a topic turned off, ...).
    Ignored,
    /// A conversion that cannot be sent (no match key, too old).
    Skipped,
    /// A cancellation or refund, recorded in the order ledger.
    Recorded,
}

impl Status {
    /// The label used in answers, the delivery table and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Ignored => "ignored",
            Status::Skipped => "skipped",
            Status::Recorded => "recorded",
        }
    }
}

/// What to store for one payload, and what to say about it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub status: Status,
    pub reason: Option<String>,
    pub event: Option<NewEvent>,
    pub order: Option<ShopifyOrder>,
    pub adjustment: Option<ShopifyAdjustment>,
    /// A test order: the browser's unsent copy of its purchase is dropped or sent as a test.
    pub test_order: Option<TestOrderCopy>,
    /// The event is older than Pinterest's window and is not sent.
    pub too_old: bool,
}

impl Decision {
    /// Whether anything would be written. An ignored payload with no ledger row (an
    /// `orders/updated`, a turned-off topic) writes nothing, not even its delivery: it costs
    /// no fsync, and a retry of it is ignored again anyway.
    pub fn stores_anything(&self) -> bool {
        self.event.is_some()
            || self.order.is_some()
            || self.adjustment.is_some()
            || self.test_order.is_some()
    }

    /// The event id, when there is an event.
    pub fn event_id(&self) -> Option<&str> {
        self.event.as_ref().map(|e| e.event_id.as_str())
    }
}

/// Decides what one mapped payload becomes. `topic` is the topic it arrived on (the poller
/// passes the shop's purchase topic); `now_ms` is the receive time.
pub fn decide(
    shop: &Shop,
    topic: Topic,
    mapped: Mapped,
    source: Source,
    now_ms: i64,
    max_event_age_secs: i64,
    merge_window_ms: i64,
) -> Decision {
    let ledger_row =
        |facts: &OrderFacts, outcome: OrderStatus, reason: Option<String>| ShopifyOrder {
            order_id: facts.order_id.clone(),
            ad_account_id: shop.ad_account_id.clone(),
            created_at: facts.created_at,
            test: facts.test,
            value: facts.value.as_ref().map(|m| m.as_str().to_owned()),
            currency: facts.currency.as_ref().map(|c| c.as_str().to_owned()),
            source_name: facts.source_name.clone(),
            outcome,
            reason,
            event_id: None,
            source,
        };
    // Whatever the topic and outcome, a test order's purchase must not reach Pinterest as a
    // live conversion through the browser's copy.
    let test_order = |facts: Option<&OrderFacts>| {
        let f = facts.filter(|f| f.test)?;
        Some(TestOrderCopy {
            ad_account_id: shop.ad_account_id.clone(),
            event_id: purchase_event_id(&f.order_id)?.as_str().to_owned(),
            send_as_test: shop.options.test_orders == TestOrders::SendAsTest,
        })
    };
    let nothing = |status: Status, reason: String| Decision {
        status,
        reason: Some(reason),
        event: None,
        order: None,
        adjustment: None,
        test_order: None,
        too_old: false,
    };
    match mapped {
        Mapped::Event {
            mut event,
            test,
            order,
        } => {
            let window = TimeWindow {
                now: now_ms / 1000,
                max_age: max_event_age_secs,
                max_future_skew: TimeWindow::DEFAULT_MAX_FUTURE_SKEW,
            };
            match window.check(event.event_time) {
                Ok(t) => event.event_time = t,
                Err(why) => {
                    let too_old = event.event_time.secs() < window.now;
                    let reason = if too_old {
                        format!("too old, not sent: event_time {why}")
                    } else {
                        format!("not sent: event_time {why}")
                    };
                    let mut d = nothing(Status::Skipped, reason.clone());
                    d.order = order
                        .as_ref()
                        .map(|f| ledger_row(f, OrderStatus::Skipped, Some(reason)));
                    d.test_order = test_order(order.as_ref());
                    d.too_old = too_old;
                    return d;
                }
            }
            let event_id = event.event_id.as_str().to_owned();
            // A purchase waits a little before its first send so the browser's report of the
            // same event_id can be merged into it (see `ingest.merge_window_secs`).
            let hold_ms = if event.event_name == EventName::Checkout {
                merge_window_ms
            } else {
                0
            };
            let new_event = NewEvent::from_event(&shop.ad_account_id, &event, source, now_ms)
                .held(hold_ms)
                .as_test(test);
            let order_row = order.as_ref().map(|f| {
                let mut row = ledger_row(f, OrderStatus::Sent, None);
                row.event_id = Some(event_id.clone());
                row
            });
            Decision {
                status: Status::Accepted,
                reason: test.then(|| "a test order, sent with Pinterest's test flag".to_owned()),
                event: Some(new_event),
                test_order: test_order(order.as_ref()),
                order: order_row,
                adjustment: None,
                too_old: false,
            }
        }
        Mapped::Skipped { reason, order } => {
            let reason = reason.to_string();
            let mut d = nothing(Status::Skipped, reason.clone());
            d.order = order
                .as_ref()
                .map(|f| ledger_row(f, OrderStatus::Skipped, Some(reason)));
            d.test_order = test_order(order.as_ref());
            d
        }
        Mapped::Ignored { reason, order } => {
            let mut d = nothing(Status::Ignored, reason.clone());
            d.test_order = test_order(order.as_ref());
            // Only the purchase topic speaks for the order: an `orders/updated` that is
            // ignored says nothing about whether the purchase was sent.
            if topic == shop.purchase_topic {
                d.order = order
                    .as_ref()
                    .map(|f| ledger_row(f, OrderStatus::Ignored, Some(reason)));
            }
            d
        }
        Mapped::Ledger(entry) => {
            let kind = match entry.kind {
                LedgerKind::Cancelled => "cancelled",
                LedgerKind::Refunded => "refunded",
            };
            let mut d = nothing(
                Status::Recorded,
                format!(
                    "order {} {kind}, recorded in the order ledger",
                    entry.order_id
                ),
            );
            d.adjustment = Some(ShopifyAdjustment {
                order_id: entry.order_id,
                kind: kind.to_owned(),
                at: entry.at,
                amount: entry.amount.map(|m| m.as_str().to_owned()),
                currency: entry.currency.map(|c| c.as_str().to_owned()),
                reason: entry.reason,
                test: entry.test,
            });
            d
        }
    }
}

/// Stores decisions and counts them: what the webhook handler and the poller share.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    /// Woken after an enqueue; `None` in CLI commands, whose events a running gateway picks up
    /// within its poll interval.
    pub delivery: Option<Arc<Delivery>>,
    pub max_event_age_secs: i64,
    pub merge_window_ms: i64,
    /// What the poller reads the time from (the gateway's clock; the system clock in CLI
    /// commands).
    pub clock: crate::clock::SharedClock,
}

impl Recorder {
    /// Stores each `(decision, delivery)` of one shop atomically (a duplicate delivery stores
    /// nothing) and returns, per decision, what the store did.
    pub async fn store(
        &self,
        shop: &Shop,
        items: Vec<(Decision, Option<WebhookReceipt>)>,
        received_at_ms: i64,
    ) -> Result<Vec<ShopifyStored>, StoreError> {
        let records: Vec<ShopifyRecord> = items
            .iter()
            .map(|(d, delivery)| ShopifyRecord {
                shop: shop.domain.clone(),
                webhook: delivery.clone(),
                event: d.event.clone(),
                order: d.order.clone(),
                adjustment: d.adjustment.clone(),
                test_order: d.test_order.clone(),
                received_at_ms,
            })
            .collect();
        let stored = self.store.record_shopify(records).await?;
        let mut wake = false;
        for ((d, _), s) in items.iter().zip(&stored) {
            let ShopifyStored::Stored(enqueued) = s else {
                continue;
            };
            if let (Some(e), Some(outcome)) = (&d.event, enqueued) {
                let metric = match outcome {
                    Enqueued::Accepted => {
                        wake = true;
                        "pincapi_events_ingested_total"
                    }
                    Enqueued::Merged | Enqueued::Duplicate => "pincapi_events_duplicate_total",
                };
                self.metrics.inc(
                    metric,
                    &[
                        ("ad_account_id", &e.ad_account_id),
                        ("event_name", e.event_name.as_str()),
                        ("source", e.source.as_str()),
                    ],
                    1,
                );
            }
            if let Some(o) = &d.order {
                self.metrics.inc(
                    "pincapi_shopify_orders_total",
                    &[
                        ("source", o.source.as_str()),
                        ("outcome", o.outcome.as_str()),
                    ],
                    1,
                );
            }
        }
        if wake && let Some(delivery) = &self.delivery {
            delivery.wake(&shop.ad_account_id);
        }
        Ok(stored)
    }
}
