//! Retention: delivered and dropped events are deleted from the store once they are older
//! than `retention.delivered_days`, in bounded batches, by an hourly task in `serve` or by
//! `pincapi purge` from cron.
//!
//! What is kept: pending events (still to be sent) and dead letters (an operator decides
//! about them) whatever their age; the Shopify order ledger (one small row per order, no
//! personal data, the record of what became of each order); aggregates kept apart from the
//! events. Shopify webhook ids are pruned on their own schedule (see `shopify`).
//!
//! Why deleting is safe for de-duplication: an event is accepted only while its `event_time`
//! is within `ingest.max_event_age_secs` (7 days), so once an event was sent longer ago than
//! that, a repeat of it would be refused at ingest anyway. `validate` keeps the retention at
//! least that long.

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{Maintenance, StoreError};

/// Deletes every event finished before `before_ms`, `batch` at a time; returns how many. The
/// writer is free between batches, so ingest and delivery go on meanwhile.
pub async fn purge(
    store: &dyn Maintenance,
    metrics: Option<&Metrics>,
    before_ms: i64,
    batch: usize,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = store.purge_settled(before_ms, batch).await?;
        total += n;
        if let Some(m) = metrics {
            m.inc("pincapi_events_purged_total", &[], n);
        }
        if n < batch as u64 {
            return Ok(total);
        }
        // Let queued writes in before the next batch.
        tokio::task::yield_now().await;
    }
}

/// The purge task of `serve`: at start, then every `retention.purge_interval_secs`.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let r = state.config.retention.clone();
    if r.delivered_days == 0 {
        return;
    }
    loop {
        if let Some(before) = r.cutoff(state.clock.now_ms()) {
            match purge(&*state.store, Some(&state.metrics), before, r.purge_batch).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    events = n,
                    days = r.delivered_days,
                    "Purged delivered and dropped events past retention"
                ),
                Err(e) => tracing::warn!(error = %e, "Could not purge old events; will retry"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(r.purge_interval_secs)) => {}
            _ = stop.changed() => return,
        }
    }
}
