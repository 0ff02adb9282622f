//! The delivery worker: claim due events, send them to Pinterest in batches, settle each one.
//!
//! One loop per ad account and concurrency slot, so a failing account never stalls another.
//! [`Delivery::deliver_once`] is one round (claim → send → settle) and is public so tests
//! and the benchmark can drain the store without sleeping. Only this module settles rows.
//!
//! Outcomes, decided by `pincapi_core::pinterest::classify`:
//! - processed → `delivered` (a warning is kept); failed → dead letter with Pinterest's message;
//! - 429, 5xx, timeouts, connection errors → retried on the schedule of
//!   `pincapi_core::pinterest::retry_delay` (or after `Retry-After`), dead-lettered when it ends;
//! - 401/403 → the account stops; its events wait, uncounted, and the account tries again
//!   every `delivery.auth_retry_secs`, logging an operator-facing error each time;
//! - 400 → the batch is split in halves until the offending event is alone, which is
//!   dead-lettered with Pinterest's message; the others are delivered.

mod accounts;
mod answer;
mod budget;

use budget::Slot;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pincapi_core::pinterest::{self, BatchAnswer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::accounts::Account;
pub use self::accounts::AccountChanges;
pub use self::answer::RetryPolicy;
use self::answer::retry_all;
use crate::clock::SharedClock;
use crate::config::{AccountConfig, DeliveryConfig};
use crate::metrics::Metrics;
use crate::pinterest_client::PinterestClient;
use crate::store::{ClaimedEvent, DeadReason, Queue, Settlement, StoreError};

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    pub failed: usize,
    pub retried: usize,
    pub requests: usize,
    /// Another loop of the account was probing a failing Pinterest: this one did nothing.
    pub deferred: bool,
}

/// Holds an account's probe while a round runs; gives it up (and wakes the account's other
/// loops) when the round ends, however it ends.
struct Probe<'a>(Option<&'a Account>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0 {
            a.probing.store(false, Ordering::Release);
            a.wake.notify_waiters();
        }
    }
}

/// A batch to try again: Pinterest's wait, the reason recorded on each event, whether it
/// is a rate limit (which uses no attempt), and the `reason` label of the retry metric.
struct Retry<'a> {
    after: Option<Duration>,
    reason: &'a str,
    rate_limited: bool,
    label: &'static str,
}

/// The claim a group of events is sent under: its lease end, and the call slot taken before
/// it (for the first request; `None` once used).
struct Claim<'a> {
    lease_until: i64,
    slot: &'a mut Option<Slot>,
}

/// The delivery engine for all configured accounts.
#[derive(Debug)]
pub struct Delivery {
    store: Arc<dyn Queue>,
    clock: SharedClock,
    client: PinterestClient,
    metrics: Arc<Metrics>,
    config: DeliveryConfig,
    max_event_age_secs: i64,
    /// The accounts; more join while it runs ([`Delivery::add_account`]).
    accounts: std::sync::RwLock<HashMap<String, Arc<Account>>>,
    /// The stop signal the loops were started with, for accounts that join later.
    stop: Mutex<Option<watch::Receiver<bool>>>,
}

impl Delivery {
    /// Builds the engine. `accounts` must be validated already.
    pub fn new(
        store: Arc<dyn Queue>,
        clock: SharedClock,
        client: PinterestClient,
        metrics: Arc<Metrics>,
        config: DeliveryConfig,
        max_event_age_secs: i64,
        accounts: &[AccountConfig],
    ) -> Delivery {
        let accounts = Delivery::account_table(accounts, &config);
        Delivery {
            store,
            clock,
            client,
            metrics,
            config,
            max_event_age_secs,
            accounts: std::sync::RwLock::new(accounts),
            stop: Mutex::new(None),
        }
    }

    /// Starts the worker loops; they end when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        if let Ok(mut stop) = self.stop.lock() {
            *stop = Some(shutdown.clone());
        }
        let accounts: Vec<Arc<Account>> = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        accounts
            .iter()
            .flat_map(|a| self.spawn_account(a, &shutdown))
            .collect()
    }

    fn spawn_account(
        self: &Arc<Self>,
        account: &Arc<Account>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        (0..self.config.concurrency)
            .map(|_| {
                let me = Arc::clone(self);
                let account = Arc::clone(account);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    me.run_account(account, shutdown).await;
                })
            })
            .collect()
    }

    async fn run_account(&self, account: Arc<Account>, mut stop: watch::Receiver<bool>) {
        let mut retired = account.retired.subscribe();
        loop {
            if *stop.borrow() || *retired.borrow() {
                return;
            }
            // When to look again, as a time: a wait computed from an earlier reading of the
            // clock and slept from a later one would oversleep by the difference.
            let now = self.clock.now_ms();
            let wait = match self.round(&account).await {
                // Woken by the probe's end (or the poll interval, at the latest).
                Ok(r) if r.deferred => Duration::from_millis(self.config.poll_interval_ms),
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
                        _ = retired.changed() => {}
                        _ = self.clock.sleep(Duration::from_millis(self.config.linger_ms)) => {}
                    }
                    continue;
                }
                Ok(_) => {
                    let (until, wait) = self.idle_wait(&account).await;
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = retired.changed() => {}
                        _ = account.wake.notified() => {}
                        _ = self.clock.sleep_until(until), if !wait.is_zero() => {}
                        _ = tokio::task::yield_now(), if wait.is_zero() => {}
                    }
                    continue;
                }
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
                _ = retired.changed() => {}
                _ = account.wake.notified() => {}
                _ = self.clock.sleep_until(now + wait.as_millis() as i64) => {}
            }
        }
    }

    /// How long an idle loop may sleep: until the next scheduled retry or pause end, bounded
    /// by the poll interval.
    async fn idle_wait(&self, account: &Account) -> (i64, Duration) {
        let now = self.clock.now_ms();
        let poll = self.config.poll_interval_ms as i64;
        let mut until = now + poll;
        let paused = account.paused_until.load(Ordering::Relaxed);
        if paused > now {
            until = until.max(paused.min(now + poll));
        }
        if let Ok(Some(next)) = self.store.next_due(&account.id).await {
            until = until.min(next.max(paused));
        }
        let wait = (until - now).clamp(0, poll);
        (now + wait, Duration::from_millis(wait as u64))
    }

    /// One round for one account: claim up to a batch, send, settle. Returns what happened.
    pub async fn deliver_once(&self, ad_account_id: &str) -> Result<Round, StoreError> {
        match self.account(ad_account_id) {
            Some(a) => self.round(&a).await,
            None => Ok(Round::default()),
        }
    }

    async fn round(&self, account: &Account) -> Result<Round, StoreError> {
        let mut round = Round::default();
        let now = self.clock.now_ms();
        if account.paused_until.load(Ordering::Relaxed) > now {
            return Ok(round);
        }
        // After failed calls one loop at a time asks Pinterest again; the others wait for its
        // answer rather than each claiming and sending a batch that is likely to fail too.
        let probing = account.failures.load(Ordering::Relaxed) > 0;
        if probing
            && account
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            round.deferred = true;
            return Ok(round);
        }
        let _probe = Probe(probing.then_some(account));
        // The call slot is taken before the claim: when the budget runs short, the loop waits
        // here while events pile up, and the claim after the wait takes a fuller batch. (Taken
        // after the claim, a slot would carry whatever small batch was due before the wait, and
        // a busy account would stall at its call limit with small requests.)
        let mut slot = self.wait_for_budget(account).await;
        if slot.is_none() && self.stopping(account) {
            // Stopped while waiting for a call: nothing is claimed, so nothing waits.
            return Ok(round);
        }
        let now = self.clock.now_ms();
        let lease = self.config.lease_secs as i64 * 1000;
        let claimed = match self
            .store
            .claim(&account.id, self.config.batch_size, now, lease)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                self.give_back(account, slot).await;
                return Err(e);
            }
        };
        round.claimed = claimed.len();
        let retaken = claimed.iter().filter(|e| e.retaken).count();
        if retaken > 0 {
            self.metrics.inc(
                "pincapi_events_retaken_total",
                &[("ad_account_id", &account.id)],
                retaken as u64,
            );
        }
        let Some(lease_until) = claimed.first().map(|c| c.lease_until) else {
            self.give_back(account, slot).await;
            return Ok(round);
        };
        let mut metrics_batch = RoundMetrics::default();
        let oldest = now / 1000 - self.max_event_age_secs;
        let (too_old, sendable): (Vec<_>, Vec<_>) =
            claimed.into_iter().partition(|e| e.event_time < oldest);
        if !too_old.is_empty() {
            let reason = DeadReason::TooOld {
                days: self.max_event_age_secs / 86400,
            };
            for e in &too_old {
                metrics_batch.count(e, "pincapi_events_dead_lettered_total");
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
                self.send_group(
                    account,
                    group,
                    is_test,
                    claim,
                    &mut round,
                    &mut metrics_batch,
                )
                .await?;
            }
        }
        self.give_back(account, slot).await;
        metrics_batch.flush(&self.metrics, &account.id);
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
        metrics_batch: &mut RoundMetrics,
    ) -> Result<(), StoreError> {
        let Claim { lease_until, slot } = claim;
        let timeout_ms = self.config.request_timeout_secs as i64 * 1000;
        // Requests bounded by bytes as well as by count.
        let sizes: Vec<usize> = group.iter().map(|e| e.payload.len()).collect();
        let mut work = VecDeque::new();
        let mut rest = group;
        for run in pinterest::request_runs(&sizes, self.config.max_request_bytes) {
            let tail = rest.split_off(run);
            work.push_back((rest, 0u32));
            rest = tail;
        }
        let mut first_refusal: Option<String> = None;
        let mut halves_refused = 0;
        while let Some((batch, depth)) = work.pop_front() {
            // Never send under a lease that may end before the answer: another worker could
            // claim the same events meanwhile. Give the rest back for a fresh claim.
            if self.clock.now_ms() + timeout_ms + 5_000 > lease_until {
                let rest: Vec<ClaimedEvent> = std::iter::once(batch)
                    .chain(work.drain(..).map(|(b, _)| b))
                    .flatten()
                    .collect();
                let back = retry_all(
                    &rest,
                    self.clock.now_ms(),
                    "lease ran out while splitting a batch",
                );
                round.retried += rest.len();
                self.settle(account, lease_until, back).await?;
                return Ok(());
            }
            // The round's first request uses the slot taken before the claim.
            if slot.take().is_none()
                && self.wait_for_budget(account).await.is_none()
                && self.stopping(account)
            {
                // Stopped while waiting for the next call: what is left goes back to the
                // queue, sent by whoever runs next.
                let rest: Vec<ClaimedEvent> = std::iter::once(batch)
                    .chain(work.drain(..).map(|(b, _)| b))
                    .flatten()
                    .collect();
                let back = retry_all(&rest, self.clock.now_ms(), "stopped before its call");
                round.retried += rest.len();
                self.settle(account, lease_until, back).await?;
                return Ok(());
            }
            let body = pinterest::batch_body(batch.iter().map(|e| e.payload.as_str()));
            round.requests += 1;
            let reply = self.send(account, test, body, batch.len()).await;
            if !matches!(
                reply,
                BatchAnswer::AuthFailed { .. } | BatchAnswer::Misconfigured { .. }
            ) {
                self.unblock(account);
            }
            if matches!(reply, BatchAnswer::PerEvent(_)) {
                account.failures.store(0, Ordering::Relaxed);
                if let Ok(mut u) = account.unreadable.lock() {
                    *u = None;
                }
            }
            let mut settlements = Vec::with_capacity(batch.len());
            match reply {
                BatchAnswer::PerEvent(outcomes) => {
                    settlements = answer::per_event(&batch, outcomes, self.clock.now_ms());
                    for (e, s) in batch.iter().zip(&settlements) {
                        match s {
                            Settlement::Delivered {
                                sent_at_ms,
                                warning,
                                ..
                            } => {
                                round.delivered += 1;
                                metrics_batch.count(e, "pincapi_events_delivered_total");
                                if let Some(w) = warning {
                                    metrics_batch.count(e, "pincapi_events_warned_total");
                                    tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, warning = %w, "Pinterest processed an event with a warning");
                                }
                                metrics_batch.lag(e, *sent_at_ms);
                            }
                            Settlement::Dead { reason, .. } => {
                                round.failed += 1;
                                metrics_batch.count(e, "pincapi_events_failed_total");
                                metrics_batch.count(e, "pincapi_events_dead_lettered_total");
                                tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, event_name = %e.event_name, reason = %reason, "Pinterest refused an event; dead-lettered");
                            }
                            Settlement::Retry { .. } => {}
                        }
                    }
                }
                BatchAnswer::Retry {
                    after,
                    reason,
                    rate_limited,
                } => {
                    let label = if rate_limited {
                        "rate_limited"
                    } else {
                        "unavailable"
                    };
                    tracing::warn!(ad_account_id = %account.id, events = batch.len(), reason = %reason, "Pinterest did not take the batch; will retry");
                    let retry = Retry {
                        after,
                        reason: &reason,
                        rate_limited,
                        label,
                    };
                    settlements = self.retry(account, &batch, retry, round, metrics_batch);
                    settlements.extend(self.back_off(account, &mut work, round));
                }
                BatchAnswer::Unreadable { status, reason } => {
                    let reason = self.unreadable(account, status, &reason, batch.len());
                    let retry = Retry {
                        after: None,
                        reason: &reason,
                        rate_limited: false,
                        label: "unreadable",
                    };
                    settlements = self.retry(account, &batch, retry, round, metrics_batch);
                    settlements.extend(self.back_off(account, &mut work, round));
                }
                BatchAnswer::AuthFailed { status, message } => {
                    let why = format!(
                        "Pinterest refused the token (HTTP {status}: {message}); check the \
                         conversion access token and that it belongs to this ad account"
                    );
                    let rest = take_all(batch, &mut work);
                    settlements = self.stop_account(account, &why, &rest, round);
                }
                BatchAnswer::Misconfigured { status, message } => {
                    let why = format!(
                        "Pinterest answered HTTP {status} ({message}) to the request itself; check \
                         pinterest_api_base and the ad account id"
                    );
                    let rest = take_all(batch, &mut work);
                    settlements = self.stop_account(account, &why, &rest, round);
                }
                BatchAnswer::Invalid { message } => {
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
                            metrics_batch.count(e, "pincapi_events_failed_total");
                            metrics_batch.count(e, "pincapi_events_dead_lettered_total");
                            tracing::warn!(ad_account_id = %account.id, event_id = %e.event_id, reason = %message, "Pinterest refused an event as invalid; dead-lettered");
                            settlements.push(Settlement::Dead {
                                id: e.id,
                                reason: DeadReason::Refused(message.clone()),
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
    async fn send(&self, account: &Account, test: bool, body: String, n: usize) -> BatchAnswer {
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
                BatchAnswer::Retry {
                    after: None,
                    reason: e.to_string(),
                    rate_limited: false,
                }
            }
        }
    }

    /// After a call Pinterest did not take, the account waits before its next one (1 s,
    /// doubling to a minute, scaled by `retry_scale`; a Retry-After may say longer) and the
    /// rest of the round goes back to the queue untouched, due when the wait ends. While
    /// Pinterest is down an account thus makes one call per wait, whatever its queue holds:
    /// its other events are not claimed, sent or rescheduled meanwhile.
    fn back_off(
        &self,
        account: &Account,
        work: &mut VecDeque<(Vec<ClaimedEvent>, u32)>,
        round: &mut Round,
    ) -> Vec<Settlement> {
        let n = account.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let wait_ms = (1_000f64 * 2f64.powi(n.saturating_sub(1).min(6) as i32)).min(60_000.0)
            * self.config.retry_scale;
        let until = self.clock.now_ms() + wait_ms as i64;
        account.paused_until.fetch_max(until, Ordering::Relaxed);
        let until = account.paused_until.load(Ordering::Relaxed);
        let rest: Vec<ClaimedEvent> = work.drain(..).flat_map(|(b, _)| b).collect();
        round.retried += rest.len();
        retry_all(&rest, until, "waiting for Pinterest to take calls again")
    }

    /// An answer that is not Pinterest's: counted, logged with the base URL and kept for the
    /// `unreadable_answers` alert (Pinterest's per-event results clear it). Returns the
    /// events' retry reason.
    fn unreadable(&self, account: &Account, status: u16, reason: &str, n: usize) -> String {
        let base = self.client.base();
        self.metrics.inc(
            "pincapi_pinterest_unreadable_answers_total",
            &[
                ("ad_account_id", &account.id),
                ("status", &status.to_string()),
            ],
            1,
        );
        tracing::error!(ad_account_id = %account.id, pinterest_api_base = %base, events = n, reason = %reason, "The answer to a batch is not Pinterest's; nothing counts as delivered and the events will be retried. Check pinterest_api_base and any proxy in between");
        if let Ok(mut u) = account.unreadable.lock() {
            *u = Some(format!("{reason} from {base}"));
        }
        format!("not Pinterest's answer: {reason}")
    }

    /// Schedules a batch Pinterest did not take (or whose answer is unreadable) again, or
    /// dead-letters the events whose attempts ran out.
    fn retry(
        &self,
        account: &Account,
        batch: &[ClaimedEvent],
        retry: Retry<'_>,
        round: &mut Round,
        metrics_batch: &mut RoundMetrics,
    ) -> Vec<Settlement> {
        let now = self.clock.now_ms();
        if let Some(after) = retry.after {
            let until = now + after.as_millis() as i64;
            account.paused_until.fetch_max(until, Ordering::Relaxed);
        }
        let policy = RetryPolicy {
            scale: self.config.retry_scale,
        };
        let settlements = answer::retry(
            batch,
            retry.after,
            retry.reason,
            retry.rate_limited,
            now,
            policy,
            &mut rand::random::<f64>,
        );
        for (e, s) in batch.iter().zip(&settlements) {
            match s {
                Settlement::Retry { .. } => {
                    round.retried += 1;
                    self.metrics.inc(
                        "pincapi_events_retried_total",
                        &[
                            ("ad_account_id", &account.id),
                            ("event_name", e.event_name.as_str()),
                            ("reason", retry.label),
                        ],
                        1,
                    );
                }
                Settlement::Dead { .. } => {
                    round.failed += 1;
                    metrics_batch.count(e, "pincapi_events_dead_lettered_total");
                }
                Settlement::Delivered { .. } => {}
            }
        }
        settlements
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
        let until = self.clock.now_ms() + self.config.auth_retry_secs as i64 * 1000;
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
        let applied = self
            .settle_until_recorded(account, lease_until, settlements)
            .await?;
        if applied < wanted {
            tracing::warn!(ad_account_id = %account.id, wanted, applied, "Some outcomes were not recorded: their lease had ended and another worker owns them");
        }
        Ok(())
    }

    /// Records outcomes, trying again while the store is away. Pinterest has already answered
    /// for these events: an outcome dropped here would leave them leased until the lease ends
    /// and then send them a second time, so the answer is kept and written as soon as the
    /// store takes it (under the same lease, so a worker that took the events over after the
    /// lease ended wins). Gives up only when the gateway stops (or, outside the worker loops, at once).
    async fn settle_until_recorded(
        &self,
        account: &Account,
        lease_until: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError> {
        let mut stop = self.stop.lock().ok().and_then(|s| s.clone());
        let mut wait = Duration::from_millis(50);
        let mut failures = 0u32;
        loop {
            match self.store.settle(lease_until, settlements.clone()).await {
                Ok(applied) => {
                    if failures > 0 {
                        tracing::info!(ad_account_id = %account.id, failures, "Outcomes recorded after the store came back");
                    }
                    return Ok(applied);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(ad_account_id = %account.id, events = settlements.len(), error = %e, "Cannot record Pinterest's answer; keeping it and trying again");
                    }
                    // Outside the worker loops (no stop signal) the caller gets the error.
                    let Some(s) = stop.as_mut().filter(|s| !*s.borrow()) else {
                        return Err(e);
                    };
                    tokio::select! {
                        _ = s.changed() => {}
                        _ = self.clock.sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Metric updates of one round, applied at its end with one lock each instead of several per
/// event.
#[derive(Default)]
struct RoundMetrics {
    counts: HashMap<(&'static str, &'static str), u64>,
    lags: Vec<f64>,
    delays: Vec<f64>,
}

impl RoundMetrics {
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
