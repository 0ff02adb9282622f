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

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::app::AppState;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Maintenance, StoreError};

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a delivered or dropped event is kept after it was sent (or dropped); 0 keeps them
    /// for ever. 30 leaves a month to answer "did order X reach Pinterest?" from the store.
    pub delivered_days: u32,
    /// How often `serve` purges, seconds.
    pub purge_interval_secs: u64,
    /// Events deleted per store call, so a purge never holds the writer long.
    pub purge_batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delivered_days: 30,
            purge_interval_secs: 3600,
            purge_batch: 1000,
        }
    }
}

impl RetentionConfig {
    /// Checks the section; errors start with the key.
    pub fn validate(config: &Config) -> anyhow::Result<()> {
        let r = &config.retention;
        let window_days = (config.ingest.max_event_age_secs.max(0) as u64).div_ceil(86_400);
        if r.delivered_days != 0 && u64::from(r.delivered_days) < window_days {
            anyhow::bail!(
                "retention.delivered_days: must be 0 (keep for ever) or at least {window_days} \
                 (ingest.max_event_age_secs in days), so a repeat of a purged event is refused \
                 at ingest instead of being sent again"
            );
        }
        if r.purge_interval_secs == 0 {
            anyhow::bail!("retention.purge_interval_secs: must be at least 1");
        }
        if !(1..=100_000).contains(&r.purge_batch) {
            anyhow::bail!("retention.purge_batch: must be 1..=100000");
        }
        Ok(())
    }

    /// The cutoff for `now_ms`: events finished before it are purged. `None` when retention
    /// is off.
    pub fn cutoff(&self, now_ms: i64) -> Option<i64> {
        (self.delivered_days > 0)
            .then(|| now_ms.saturating_sub(i64::from(self.delivered_days) * 86_400_000))
    }
}

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
