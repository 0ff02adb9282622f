//! `[retention]`: how long finished events are kept (see `crate::retention`).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};

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
    pub fn validate(config: &Config) -> Result<(), ConfigError> {
        let r = &config.retention;
        let window_days = (config.ingest.max_event_age_secs.max(0) as u64).div_ceil(86_400);
        if r.delivered_days != 0 && u64::from(r.delivered_days) < window_days {
            invalid!(
                "retention.delivered_days: must be 0 (keep for ever) or at least {window_days} \
                 (ingest.max_event_age_secs in days), so a repeat of a purged event is refused \
                 at ingest instead of being sent again"
            );
        }
        if r.purge_interval_secs == 0 {
            invalid!("retention.purge_interval_secs: must be at least 1");
        }
        if !(1..=100_000).contains(&r.purge_batch) {
            invalid!("retention.purge_batch: must be 1..=100000");
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
