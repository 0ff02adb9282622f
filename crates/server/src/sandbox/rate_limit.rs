//! Per-ad-account "calls per minute" limiter for the events endpoint (Pinterest publishes
//! 5,000 calls per minute per ad account).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

const WINDOW: Duration = Duration::from_secs(60);

/// Fixed one-minute windows per ad account. Fixed rather than rolling windows because the
/// `Retry-After` answer is then exact (the end of the window) and tests are deterministic.
#[derive(Debug)]
pub(super) struct RateLimiter {
    limit: Option<u32>,
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    calls: u32,
}

impl RateLimiter {
    pub(super) fn new(limit: Option<u32>) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one call for `ad_account_id`. `Err(seconds)` means the call is over the limit
    /// and the client should retry after that many seconds (at least 1).
    pub(super) fn check(&self, ad_account_id: &str) -> Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        // Look up before inserting so the hot path (a known account) does not allocate a key.
        if !windows.contains_key(ad_account_id) {
            windows.insert(
                ad_account_id.to_owned(),
                Window {
                    started: now,
                    calls: 0,
                },
            );
        }
        let Some(window) = windows.get_mut(ad_account_id) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= WINDOW {
            window.started = now;
            window.calls = 0;
        }
        if window.calls >= limit {
            let remaining = WINDOW.saturating_sub(now.saturating_duration_since(window.started));
            // Round up so a client that waits exactly this long lands in the next window.
            let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            return Err(secs.max(1));
        }
        window.calls += 1;
        Ok(())
    }

    pub(super) fn reset(&self) {
        lock(&self.windows).clear();
    }
}
