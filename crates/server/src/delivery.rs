//! The delivery worker: claim due events, send them to Pinterest in batches, settle each one.
//!
//! One loop per ad account and concurrency slot, so a failing account never stalls another.
//! [`Delivery::deliver_once`] is one round (claim → send → settle) and is public so tests
//! and the benchmark can drain the outbox without sleeping. Only this module settles rows.
//!
//! Outcomes, decided by `pincapi_core::pinterest::classify`:
//! - processed → `delivered` (a warning is kept); failed → dead letter with Pinterest's message;
//! - 429, 5xx, timeouts, connection errors → retried on the schedule of
//!   `pincapi_core::pinterest::retry_delay` (or after `Retry-After`), dead-lettered when it ends;
//! - 401/403 → the account stops; its events wait, uncounted, and the account tries again
//!   every `delivery.auth_retry_secs`, logging an operator-facing error each time;
//! - 400 → the batch is split in halves until the offending event is alone, which is
//!   dead-lettered with Pinterest's message; the others are delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pincapi_core::pinterest::{self, BatchOutcome, EventOutcome};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{AccountConfig, DeliveryConfig, Secret};
use crate::metrics::Metrics;
use crate::outbox::{ClaimedEvent, Settlement, SharedOutbox, StoreError};
use crate::pinterest_client::PinterestClient;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    pub failed: usize,
    pub retried: usize,
    pub requests: usize,
}

/// The claim a group of events is sent under: its lease end, and the call slot taken before
/// it (for the first request; `None` once used).
struct Claim<'a> {
    lease_until: i64,
    slot: &'a mut Option<i64>,
}

/// A rolling one-minute call budget: at most `limit` calls in any 60 seconds.
#[derive(Debug)]
struct CallBudget {
    limit: usize,
    calls: VecDeque<i64>,
}

impl CallBudget {
    /// Takes a call slot if one is free at `now_ms`; otherwise says when one frees up.
    fn take(&mut self, now_ms: i64) -> Result<(), i64> {
        while self.calls.front().is_some_and(|t| *t <= now_ms - 60_000) {
            self.calls.pop_front();
        }
        if self.calls.len() < self.limit {
            self.calls.push_back(now_ms);
            Ok(())
        } else {
            Err(self.calls.front().map_or(now_ms, |t| t + 60_000))
        }
    }

    /// Returns an unused slot taken at `taken_at_ms`.
    fn give_back(&mut self, taken_at_ms: i64) {
        if let Some(i) = self.calls.iter().rposition(|t| *t == taken_at_ms) {
            self.calls.remove(i);
        }
    }
}

#[derive(Debug)]
struct Account {
    id: String,
    token: Secret,
    test: bool,
    budget: Mutex<CallBudget>,
    /// Unix ms before which the account sends nothing (a stop or Retry-After).
    paused_until: AtomicI64,
    /// Why the account is stopped (401/403, or a request Pinterest refuses as such).
    blocked: Mutex<Option<String>>,
    wake: Notify,
}

/// The delivery engine for all configured accounts.
#[derive(Debug)]
pub struct Delivery {
    outbox: SharedOutbox,
    client: PinterestClient,
    metrics: Arc<Metrics>,
    config: DeliveryConfig,
    max_event_age_secs: i64,
    accounts: HashMap<String, Arc<Account>>,
}

impl Delivery {
    /// Builds the engine. `accounts` must be validated already.
    pub fn new(
        outbox: SharedOutbox,
        client: PinterestClient,
        metrics: Arc<Metrics>,
        config: DeliveryConfig,
        max_event_age_secs: i64,
        accounts: &[AccountConfig],
    ) -> Delivery {
        let accounts = accounts
            .iter()
            .map(|a| {
                let limit = a
                    .max_calls_per_minute
                    .unwrap_or(config.max_calls_per_minute);
                (
                    a.id.clone(),
                    Arc::new(Account {
                        id: a.id.clone(),
                        token: a.token.clone(),
                        test: a.test,
                        budget: Mutex::new(CallBudget {
                            limit: limit.max(1) as usize,
                            calls: VecDeque::new(),
                        }),
                        paused_until: AtomicI64::new(0),
                        blocked: Mutex::new(None),
                        wake: Notify::new(),
                    }),
                )
            })
            .collect();
        Delivery {
            outbox,
            client,
            metrics,
            config,
            max_event_age_secs,
            accounts,
        }
    }

    /// Tells the account's workers that events are waiting.
    pub fn wake(&self, ad_account_id: &str) {
        if let Some(a) = self.accounts.get(ad_account_id) {
            a.wake.notify_one();
        }
    }

    /// Why the account is stopped, if it is (a 401/403, or requests Pinterest refuses as
    /// such); `None` while it delivers.
    pub fn blocked_reason(&self, ad_account_id: &str) -> Option<String> {
        self.accounts
            .get(ad_account_id)
            .and_then(|a| a.blocked.lock().ok().and_then(|b| b.clone()))
    }

    /// Starts the worker loops; they end when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        for account in self.accounts.values() {
            for _ in 0..self.config.concurrency {
                let me = Arc::clone(self);
                let account = Arc::clone(account);
                let shutdown = shutdown.clone();
                handles.push(tokio::spawn(async move {
                    me.run_account(account, shutdown).await;
                }));
            }
        }
        handles
    }

    async fn run_account(&self, account: Arc<Account>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.round(&account).await {
                Ok(r) if r.claimed >= self.config.batch_size => {
                    // More may be waiting: let a sibling loop start on it while this one
                    // goes round again at once.
                    account.wake.notify_one();
                    Duration::ZERO
                }
                Ok(r) if r.claimed > 0 && self.config.linger_ms > 0 => {
                    // A partial batch: the account is busy but not backlogged. Let events
                    // gather for a moment (a wake-up does not cut this short), so the next
                    // claim takes a fuller batch instead of one or two events per call.
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(self.config.linger_ms)) => {}
                    }
                    continue;
                }
                Ok(_) => self.idle_wait(&account).await,
                Err(e) => {
                    tracing::error!(ad_account_id = %account.id, error = %e, "Delivery round failed on the store");
                    Duration::from_secs(1)
                }
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = account.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long an idle loop may sleep: until the next scheduled retry or pause end, bounded
    /// by the poll interval.
    async fn idle_wait(&self, account: &Account) -> Duration {
        let now = now_ms();
        let poll = self.config.poll_interval_ms as i64;
        let mut until = now + poll;
        let paused = account.paused_until.load(Ordering::Relaxed);
        if paused > now {
            until = until.max(paused.min(now + poll));
        }
        if let Ok(Some(next)) = self.outbox.next_due(&account.id).await {
            until = until.min(next.max(paused));
        }
        Duration::from_millis((until - now).clamp(0, poll) as u64)
    }

    /// One round for one account: claim up to a batch, send, settle. Returns what happened.
    pub async fn deliver_once(&self, ad_account_id: &str) -> Result<Round, StoreError> {
        match self.accounts.get(ad_account_id) {
            Some(a) => self.round(a).await,
            None => Ok(Round::default()),
        }
    }

    async fn round(&self, account: &Account) -> Result<Round, StoreError> {
        let mut round = Round::default();
        let now = now_ms();
        if account.paused_until.load(Ordering::Relaxed) > now {
            return Ok(round);
        }
        // The call slot is taken before the claim: when the budget runs short, the loop waits
        // here while events pile up, and the claim after the wait takes a fuller batch. (Taken
        // after the claim, a slot would carry whatever small batch was due before the wait, and
        // a busy account would stall at its call limit with small requests.)
        let mut slot = self.wait_for_budget(account).await;
        let now = now_ms();
        let lease = self.config.lease_secs as i64 * 1000;
        let claimed = match self
            .outbox
            .claim(&account.id, self.config.batch_size, now, lease)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                self.give_back(account, slot);
                return Err(e);
            }
        };
        round.claimed = claimed.len();
        let Some(lease_until) = claimed.first().map(|c| c.lease_until) else {
            self.give_back(account, slot);
            return Ok(round);
        };
        let mut tally = Tally::default();
        let oldest = now / 1000 - self.max_event_age_secs;
        let (too_old, sendable): (Vec<_>, Vec<_>) =
            claimed.into_iter().partition(|e| e.event_time < oldest);
        if !too_old.is_empty() {
            let reason = format!(
                "not sent: older than {} days, outside Pinterest's window",
                self.max_event_age_secs / 86400
            );
            for e in &too_old {
                tally.count(e, "pincapi_events_dead_lettered_total");
            }
            round.failed += too_old.len();
            let dead = too_old
                .iter()
                .map(|e| Settlement::Dead {
                    id: e.id,
                    reason: reason.clone(),
                })
                .collect();
            self.settle(account, lease_until, dead).await?;
        }
        // Test events (Shopify test orders sent in test mode) go in requests of their own.
        let (test, live): (Vec<_>, Vec<_>) =
            sendable.into_iter().partition(|e| e.test || account.test);
        for (group, is_test) in [(live, false), (test, true)] {
            if !group.is_empty() {
                let claim = Claim {
                    lease_until,
                    slot: &mut slot,
                };
                self.send_group(account, group, is_test, claim, &mut round, &mut tally)
                    .await?;
            }
        }
        self.give_back(account, slot);
        tally.flush(&self.metrics, &account.id);
        Ok(round)
    }

    /// Sends a group and settles after every request. A 400 splits the batch (breadth first)
    /// to isolate the offending event; when both halves of the first split are refused with
    /// the same message, the request itself is wrong (an ad account id, a base URL), not an
    /// event, and the account stops instead of dead-lettering everything.
    async fn send_group(
        &self,
        account: &Account,
        group: Vec<ClaimedEvent>,
        test: bool,
        claim: Claim<'_>,
        round: &mut Round,
        tally: &mut Tally,
    ) -> Result<(), StoreError> {
        let Claim { lease_until, slot } = claim;
        let timeout_ms = self.config.request_timeout_secs as i64 * 1000;
        let mut work = VecDeque::from([(group, 0u32)]);
        let mut first_refusal: Option<String> = None;
        let mut halves_refused = 0;
        while let Some((batch, depth)) = work.pop_front() {
            // Never send under a lease that may end before the answer: another worker could
            // claim the same events meanwhile. Give the rest back for a fresh claim.
            if now_ms() + timeout_ms + 5_000 > lease_until {
                let rest: Vec<ClaimedEvent> = std::iter::once(batch)
                    .chain(work.drain(..).map(|(b, _)| b))
                    .flatten()
                    .collect();
                let back = retry_all(&rest, now_ms(), "lease ran out while splitting a batch");
                round.retried += rest.len();
                self.settle(account, lease_until, back).await?;
                return Ok(());
            }
            // The round's first request uses the slot taken before the claim.
            if slot.take().is_none() {
                self.wait_for_budget(account).await;
            }
            let body = pinterest::batch_body(batch.iter().map(|e| e.payload.as_str()));
            round.requests += 1;
            let outcome = self.send(account, test, body, batch.len()).await;
            if !matches!(
                outcome,
                BatchOutcome::AuthFailed { .. } | BatchOutcome::Misconfigured { .. }
            ) {
                self.unblock(account);
            }
            let mut settlements = Vec::with_capacity(batch.len());
            match outcome {
                BatchOutcome::PerEvent(outcomes) => {
                    let sent_at = now_ms();
                    for (e, o) in batch.iter().zip(outcomes) {
                        match o {
                            EventOutcome::Delivered { warning } => {
                                round.delivered += 1;
                                tally.count(e, "pincapi_events_delivered_total");
                                if let Some(w) = &warning {
                                    tally.count(e, "pincapi_events_warned_total");
                                    tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, warning = %w, "Pinterest processed an event with a warning");
                                }
                                tally.lag(e, sent_at);
                                settlements.push(Settlement::Delivered {
                                    id: e.id,
                                    sent_at_ms: sent_at,
                                    warning,
                                });
                            }
                            EventOutcome::Failed { message } => {
                                round.failed += 1;
                                tally.count(e, "pincapi_events_failed_total");
                                tally.count(e, "pincapi_events_dead_lettered_total");
                                tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, event_name = %e.event_name, reason = %message, "Pinterest refused an event; dead-lettered");
                                settlements.push(Settlement::Dead {
                                    id: e.id,
                                    reason: format!("Pinterest: {message}"),
                                });
                            }
                        }
                    }
                }
                BatchOutcome::Retry {
                    after,
                    reason,
                    rate_limited,
                } => {
                    let now = now_ms();
                    if let Some(after) = after {
                        let until = now + after.as_millis() as i64;
                        account.paused_until.fetch_max(until, Ordering::Relaxed);
                    }
                    let label = if rate_limited {
                        "rate_limited"
                    } else {
                        "unavailable"
                    };
                    tracing::warn!(ad_account_id = %account.id, events = batch.len(), reason = %reason, "Pinterest did not take the batch; will retry");
                    for e in &batch {
                        // A rate-limit wait is Pinterest asking us to slow down, not a failure
                        // of the event: it does not use up the event's attempts.
                        let counted = !rate_limited;
                        let attempt = e.attempts + u32::from(counted);
                        let delay = match after {
                            Some(a) if rate_limited || attempt < pinterest::MAX_ATTEMPTS => {
                                Some(a.as_millis() as i64)
                            }
                            _ => pinterest::retry_delay(attempt.max(1), rand::random::<f64>())
                                .map(|d| (d.as_millis() as f64 * self.config.retry_scale) as i64),
                        };
                        match delay {
                            Some(d) => {
                                round.retried += 1;
                                self.metrics.inc(
                                    "pincapi_events_retried_total",
                                    &[
                                        ("ad_account_id", &account.id),
                                        ("event_name", e.event_name.as_str()),
                                        ("reason", label),
                                    ],
                                    1,
                                );
                                settlements.push(Settlement::Retry {
                                    id: e.id,
                                    next_attempt_at_ms: now + d,
                                    error: reason.clone(),
                                    counted,
                                });
                            }
                            None => {
                                round.failed += 1;
                                tally.count(e, "pincapi_events_dead_lettered_total");
                                settlements.push(Settlement::Dead {
                                    id: e.id,
                                    reason: format!(
                                        "gave up after {attempt} attempts; last error: {reason}"
                                    ),
                                });
                            }
                        }
                    }
                }
                BatchOutcome::AuthFailed { status, message } => {
                    let why = format!(
                        "Pinterest refused the token (HTTP {status}: {message}); check the \
                         conversion access token and that it belongs to this ad account"
                    );
                    let rest = take_all(batch, &mut work);
                    settlements = self.stop_account(account, &why, &rest, round);
                }
                BatchOutcome::Misconfigured { status, message } => {
                    let why = format!(
                        "Pinterest answered HTTP {status} ({message}) to the request itself; check \
                         pinterest_api_base and the ad account id"
                    );
                    let rest = take_all(batch, &mut work);
                    settlements = self.stop_account(account, &why, &rest, round);
                }
                BatchOutcome::Invalid { message } => {
                    if depth == 0 {
                        first_refusal = Some(message.clone());
                    } else if depth == 1 && first_refusal.as_ref() == Some(&message) {
                        halves_refused += 1;
                    }
                    if halves_refused == 2 {
                        let why = format!(
                            "Pinterest refused every part of a batch with HTTP 400 ({message}): \
                             the request itself is wrong, not an event"
                        );
                        let rest = take_all(batch, &mut work);
                        settlements = self.stop_account(account, &why, &rest, round);
                    } else if batch.len() > 1 {
                        tracing::warn!(ad_account_id = %account.id, events = batch.len(), reason = %message, "Pinterest refused the request as invalid; splitting the batch to find the event");
                        let mut first = batch;
                        let second = first.split_off(first.len() / 2);
                        work.push_back((first, depth + 1));
                        work.push_back((second, depth + 1));
                    } else {
                        for e in &batch {
                            round.failed += 1;
                            tally.count(e, "pincapi_events_failed_total");
                            tally.count(e, "pincapi_events_dead_lettered_total");
                            tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, reason = %message, "Pinterest refused an event as invalid; dead-lettered");
                            settlements.push(Settlement::Dead {
                                id: e.id,
                                reason: format!("Pinterest: {message}"),
                            });
                        }
                    }
                }
            }
            self.settle(account, lease_until, settlements).await?;
        }
        Ok(())
    }

    /// One request to Pinterest, classified.
    async fn send(&self, account: &Account, test: bool, body: String, n: usize) -> BatchOutcome {
        match self
            .client
            .send_events(&account.id, &account.token, test, body)
            .await
        {
            Ok(answer) => {
                self.metrics.inc(
                    "pincapi_pinterest_requests_total",
                    &[
                        ("ad_account_id", &account.id),
                        ("status", &answer.status.to_string()),
                    ],
                    1,
                );
                pinterest::classify(
                    answer.status,
                    answer.retry_after.as_deref(),
                    &answer.body,
                    n,
                )
            }
            Err(e) => {
                self.metrics.inc(
                    "pincapi_pinterest_requests_total",
                    &[("ad_account_id", &account.id), ("status", "0")],
                    1,
                );
                BatchOutcome::Retry {
                    after: None,
                    reason: e.to_string(),
                    rate_limited: false,
                }
            }
        }
    }

    /// Stops an account whose requests cannot succeed as configured: its events wait without
    /// using attempts, and it tries again every `auth_retry_secs`, saying why each time.
    fn stop_account(
        &self,
        account: &Account,
        why: &str,
        events: &[ClaimedEvent],
        round: &mut Round,
    ) -> Vec<Settlement> {
        let until = now_ms() + self.config.auth_retry_secs as i64 * 1000;
        account.paused_until.fetch_max(until, Ordering::Relaxed);
        if let Ok(mut b) = account.blocked.lock() {
            *b = Some(why.to_owned());
        }
        self.metrics.set(
            "pincapi_account_blocked",
            &[("ad_account_id", &account.id)],
            1.0,
        );
        tracing::error!(
            ad_account_id = %account.id,
            reason = %why,
            retry_in_secs = self.config.auth_retry_secs,
            events_kept = events.len(),
            "Delivery for this ad account is stopped; its events are kept"
        );
        for e in events {
            round.retried += 1;
            self.metrics.inc(
                "pincapi_events_retried_total",
                &[
                    ("ad_account_id", &account.id),
                    ("event_name", e.event_name.as_str()),
                    ("reason", "account_stopped"),
                ],
                1,
            );
        }
        retry_all(events, until, why)
    }

    fn unblock(&self, account: &Account) {
        let was = account.blocked.lock().ok().and_then(|mut b| b.take());
        if was.is_some() {
            tracing::info!(ad_account_id = %account.id, "Pinterest accepts this ad account's requests again; delivery resumed");
            self.metrics.set(
                "pincapi_account_blocked",
                &[("ad_account_id", &account.id)],
                0.0,
            );
        }
    }

    async fn settle(
        &self,
        account: &Account,
        lease_until: i64,
        settlements: Vec<Settlement>,
    ) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        let wanted = settlements.len();
        let applied = self.outbox.settle(lease_until, settlements).await?;
        if applied < wanted {
            tracing::warn!(ad_account_id = %account.id, wanted, applied, "Some outcomes were not recorded: their lease had ended and another worker owns them");
        }
        Ok(())
    }

    /// Waits for a call slot of the account's budget and takes it; returns when it was taken
    /// (to give it back unused), or `None` if the budget cannot be read.
    async fn wait_for_budget(&self, account: &Account) -> Option<i64> {
        loop {
            let now = now_ms();
            let next = match account.budget.lock() {
                Ok(mut b) => b.take(now),
                Err(_) => return None,
            };
            match next {
                Ok(()) => return Some(now),
                Err(at) => {
                    tokio::time::sleep(Duration::from_millis((at - now).max(1) as u64)).await
                }
            }
        }
    }

    /// Returns a call slot the round did not use.
    fn give_back(&self, account: &Account, slot: Option<i64>) {
        if let (Some(at), Ok(mut b)) = (slot, account.budget.lock()) {
            b.give_back(at);
        }
    }
}

/// Metric updates of one round, applied at its end with one lock each instead of several per
/// event.
#[derive(Default)]
struct Tally {
    counts: HashMap<(&'static str, &'static str), u64>,
    lags: Vec<f64>,
    delays: Vec<f64>,
}

impl Tally {
    fn count(&mut self, e: &ClaimedEvent, metric: &'static str) {
        *self
            .counts
            .entry((metric, e.event_name.as_str()))
            .or_default() += 1;
    }

    fn lag(&mut self, e: &ClaimedEvent, sent_at_ms: i64) {
        self.lags
            .push((sent_at_ms as f64 / 1000.0 - e.event_time as f64).max(0.0));
        self.delays
            .push(((sent_at_ms - e.received_at_ms) as f64 / 1000.0).max(0.0));
    }

    fn flush(self, metrics: &Metrics, account: &str) {
        for ((metric, event_name), n) in self.counts {
            metrics.inc(
                metric,
                &[("ad_account_id", account), ("event_name", event_name)],
                n,
            );
        }
        let l = [("ad_account_id", account)];
        metrics.observe_many("pincapi_send_lag_seconds", &l, &self.lags);
        metrics.observe_many("pincapi_queue_delay_seconds", &l, &self.delays);
    }
}

/// Gives events back to the queue at `at`, without using an attempt.
fn retry_all(events: &[ClaimedEvent], at: i64, why: &str) -> Vec<Settlement> {
    events
        .iter()
        .map(|e| Settlement::Retry {
            id: e.id,
            next_attempt_at_ms: at,
            error: why.to_owned(),
            counted: false,
        })
        .collect()
}

/// The batch in hand plus everything still waiting in the split queue.
fn take_all(
    batch: Vec<ClaimedEvent>,
    work: &mut VecDeque<(Vec<ClaimedEvent>, u32)>,
) -> Vec<ClaimedEvent> {
    let mut all = batch;
    for (b, _) in work.drain(..) {
        all.extend(b);
    }
    all
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_budget_allows_at_most_the_limit_in_any_minute() {
        let mut b = CallBudget {
            limit: 2,
            calls: VecDeque::new(),
        };
        assert!(b.take(0).is_ok());
        assert!(b.take(10).is_ok());
        assert_eq!(b.take(20), Err(60_000));
        assert!(b.take(60_000).is_ok());
        assert_eq!(b.take(60_001), Err(60_010));
    }

    #[test]
    fn a_slot_given_back_is_free_again() {
        let mut b = CallBudget {
            limit: 2,
            calls: VecDeque::new(),
        };
        assert!(b.take(0).is_ok());
        assert!(b.take(10).is_ok());
        b.give_back(10);
        assert!(b.take(20).is_ok());
        // A slot that already left the window is not there to give back: nothing else goes.
        b.give_back(5);
        assert_eq!(b.take(30), Err(60_000));
    }
}
