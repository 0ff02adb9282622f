//! Back-pressure: when more events wait for Pinterest than `ingest.max_queue_depth`, the
//! sources answer 503 with `Retry-After` instead of letting the queue grow without bound.
//!
//! The depth is the store's count of pending events across every ad account, read by one
//! background task about once a second into an atomic ([`run`]); requests only read the
//! atomic, so the check costs nothing per request. Several instances on one database each poll
//! the shared count, so they all shed together. The limit is therefore soft by up to one poll
//! interval of ingest.
//!
//! Who is refused while shedding: `POST /v1/events` and `POST /v1/ad_accounts/{id}/events`
//! (after the key check), `POST /webhooks/shopify` (before the body is read: Shopify retries a
//! 503 with the same body), and `POST /collect` for everything but purchases. A browser's
//! beacon is never retried, so what the collector refuses is lost; the Pinterest Tag on the
//! same page still reports the event to Pinterest itself, and page visits and carts are the
//! bulk of the collector's volume. Purchases are one per order and the costliest to lose, so
//! the collector keeps storing them. The Shopify poller is not shed: it reads at its own pace
//! and is what catches up on orders whose webhooks were refused.
//!
//! Nothing already accepted is affected: shedding refuses new requests only, and delivery
//! keeps draining the queue at full speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::api_error::ApiError;
use crate::metrics::Metrics;
use crate::store::Queue;

/// How often the depth is read from the store.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shared view of the queue's depth and whether ingest is shedding.
#[derive(Debug)]
pub struct Backpressure {
    /// `ingest.max_queue_depth`; 0 = never shed.
    limit: u64,
    /// `ingest.shed_retry_after_secs`.
    retry_after_secs: u64,
    /// Pending events at the last poll.
    depth: AtomicU64,
    shedding: AtomicBool,
}

impl Backpressure {
    /// Starts accepting, with the depth unknown (0) until the first poll.
    pub fn new(limit: u64, retry_after_secs: u64) -> Backpressure {
        Backpressure {
            limit,
            retry_after_secs: retry_after_secs.max(1),
            depth: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
        }
    }

    /// The configured limit (0 = off).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Pending events at the last poll.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Whether new events are refused now.
    pub fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// The `Retry-After` of a refusal, seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_secs
    }

    /// Records a fresh depth; returns the new shedding state when it changed.
    pub fn observe(&self, depth: u64) -> Option<bool> {
        self.depth.store(depth, Ordering::Relaxed);
        let shed = self.limit > 0 && depth >= self.limit;
        (self.shedding.swap(shed, Ordering::Relaxed) != shed).then_some(shed)
    }

    /// `Ok` while accepting; otherwise counts a refusal on `route` and returns the answer.
    pub fn admit(&self, metrics: &Metrics, route: &'static str) -> Result<(), Shed> {
        if !self.shedding() {
            return Ok(());
        }
        metrics.inc("pincapi_ingest_shed_total", &[("route", route)], 1);
        Err(Shed {
            depth: self.depth(),
            limit: self.limit,
            retry_after_secs: self.retry_after_secs,
        })
    }
}

/// A refusal while shedding: 503 with `Retry-After` and a JSON error naming the reason.
#[derive(Debug, Clone)]
pub struct Shed {
    pub depth: u64,
    pub limit: u64,
    pub retry_after_secs: u64,
}

impl Shed {
    /// The error code in the body.
    pub const CODE: &'static str = "shedding";

    /// What the body says.
    pub fn message(&self) -> String {
        format!(
            "the gateway is shedding load: {} events wait to be delivered, at or over \
             ingest.max_queue_depth ({}); nothing from this request was stored, retry after \
             {} seconds",
            self.depth, self.limit, self.retry_after_secs
        )
    }

    /// Adds `Retry-After` to an answer.
    pub fn with_retry_after(&self, mut resp: Response) -> Response {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        resp
    }
}

impl IntoResponse for Shed {
    fn into_response(self) -> Response {
        let err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Shed::CODE, self.message());
        self.with_retry_after(err.into_response())
    }
}

/// Polls the store's pending count every [`POLL_INTERVAL`] into the state's [`Backpressure`]
/// and the `pincapi_queue_limit` gauge, until `stop` turns true. A failed poll keeps the last
/// known state (the store being down already fails the requests that would write to it).
pub async fn run(
    bp: Arc<Backpressure>,
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    metrics.set("pincapi_queue_limit", &[], bp.limit() as f64);
    metrics.set("pincapi_ingest_shedding", &[], 0.0);
    if bp.limit() == 0 {
        return;
    }
    loop {
        match queue.pending_count().await {
            Ok(depth) => match bp.observe(depth).inspect(|&shed| {
                metrics.set("pincapi_ingest_shedding", &[], f64::from(u8::from(shed)));
            }) {
                Some(true) => tracing::warn!(
                    depth,
                    limit = bp.limit(),
                    "The queue is at ingest.max_queue_depth: new events are refused with 503 \
                     until delivery brings it down"
                ),
                Some(false) => tracing::info!(
                    depth,
                    limit = bp.limit(),
                    "The queue is below ingest.max_queue_depth again: accepting events"
                ),
                None => {}
            },
            Err(e) => tracing::warn!(error = %e, "Could not read the queue depth"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_at_the_limit_and_reports_changes_once() {
        let bp = Backpressure::new(10, 30);
        assert_eq!(bp.observe(9), None);
        assert!(!bp.shedding());
        assert_eq!(bp.observe(10), Some(true));
        assert_eq!(bp.observe(12), None);
        let m = Metrics::default();
        let shed = bp.admit(&m, "/v1/events").unwrap_err();
        assert_eq!((shed.depth, shed.limit), (12, 10));
        assert_eq!(
            m.counter("pincapi_ingest_shed_total", &[("route", "/v1/events")]),
            1
        );
        assert_eq!(bp.observe(3), Some(false));
        assert!(bp.admit(&m, "/v1/events").is_ok());
    }

    #[test]
    fn a_limit_of_zero_never_sheds() {
        let bp = Backpressure::new(0, 30);
        assert_eq!(bp.observe(u64::MAX), None);
        assert!(!bp.shedding());
    }
}
