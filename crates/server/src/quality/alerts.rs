//! Alerts: rules evaluated on a schedule, each a state machine per (rule, ad account) whose
//! transitions are persisted in the store, so an alert fires once per incident and a restart
//! does not fire it again. Each transition goes to the log, to `/metrics`
//! (`pincapi_alert_active`, `pincapi_alert_transitions_total`) and, when
//! `quality.webhook_url` is set, to a Slack-compatible webhook as `{"text": "..."}`.
//!
//! Rules (thresholds in `[quality]`):
//! - `auth_failure`: delivery for the ad account is stopped (401/403, or requests Pinterest
//!   refuses as such), as `/readyz` reports;
//! - `dead_letter`: the ad account has dead letters;
//! - `coverage_<key>`: the key's coverage among `coverage_event_name` events received in the
//!   last 24 hours is below `coverage_min_percent.<key>`;
//! - `volume_drop`: the last full hour received `volume_drop_percent` fewer events than the
//!   same hour a week earlier;
//! - `p95_send_lag`: the p95 send lag of events received in the last 24 hours is above
//!   `max_p95_lag_secs`;
//! - `oauth_refresh_failing` (ad account `all`): Pinterest's OAuth token could not be
//!   refreshed at its last try; it names the fix (`pincapi pinterest connect`);
//! - `webhooks_missing` (ad account `all`): a Shopify webhook subscription the shop needs was
//!   missing (Shopify deletes one after 8 failed deliveries); raised by the webhook check
//!   (`shopify::connect`), which re-creates it and clears the alert;
//! - `purchases_missing` (ad account `all`): of the Shopify orders created in the last 24 hours
//!   and older than `purchase_grace_secs`, `purchase_gap_percent` or more have no delivered
//!   purchase. The orders are the ledger's; with the poller off (`shopify.poller = false`)
//!   they include the orders the census lists and the ledger lacks (the poller, when on, puts
//!   every listed order in the ledger itself).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use pincapi_core::quality::{duration_label, lag_percentile, percent};
use serde_json::json;
use tokio::sync::watch;

use super::report::add_census;
use crate::clock::system_now_ms as now_ms;
use crate::config::quality::{QualityConfig, masked_webhook_url};
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::quality::census::{self, CensusCache};
use crate::store::{AlertState, QualityCounts, SharedStore, StoreError};

/// The ad account label of rules that look at every account at once.
pub const ALL_ACCOUNTS: &str = "all";

/// One rule's verdict for one ad account.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub rule: String,
    pub ad_account_id: String,
    /// `Some(what is wrong)` while the condition holds.
    pub problem: Option<String>,
}

/// A state change an evaluation made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Fired(AlertState),
    Cleared(AlertState),
}

/// Evaluates the rules and keeps their states.
#[derive(Debug)]
pub struct Alerter {
    store: SharedStore,
    delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
    config: QualityConfig,
    accounts: Vec<String>,
    http: reqwest::Client,
    /// The order census `purchases_missing` counts with, and Pinterest's window (seconds).
    census: Option<(Arc<CensusCache>, i64)>,
    /// Pinterest's OAuth token, whose failing refreshes raise `oauth_refresh_failing`.
    oauth: Option<Arc<crate::pinterest_oauth::OAuthTokens>>,
}

impl Alerter {
    /// An alerter for `accounts`.
    pub fn new(
        store: SharedStore,
        delivery: Arc<Delivery>,
        metrics: Arc<Metrics>,
        config: QualityConfig,
        accounts: Vec<String>,
    ) -> Alerter {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Alerter {
            store,
            delivery,
            metrics,
            config,
            accounts,
            http,
            census: None,
            oauth: None,
        }
    }

    /// Watches Pinterest's OAuth refreshes (`oauth_refresh_failing`).
    pub fn with_oauth(mut self, oauth: Arc<crate::pinterest_oauth::OAuthTokens>) -> Alerter {
        self.oauth = Some(oauth);
        self
    }

    /// `purchases_missing` also counts the orders the census lists and the ledger lacks (used
    /// when the poller is off, so the ledger cannot know every order). The census is the
    /// cache's: the Admin API is asked at most once per its TTL.
    pub fn with_census(mut self, cache: Arc<CensusCache>, max_event_age_secs: i64) -> Alerter {
        self.census = Some((cache, max_event_age_secs));
        self
    }

    /// Runs [`Alerter::evaluate_once`] every `alert_interval_secs` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.config.alert_interval_secs);
        loop {
            if let Err(e) = self.evaluate_once(now_ms()).await {
                tracing::error!(error = %e, "Alert evaluation failed on the store; will try again");
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Evaluates every rule once, persists and announces each transition, and returns them.
    pub async fn evaluate_once(&self, now_ms: i64) -> Result<Vec<Transition>, StoreError> {
        let verdicts = self.verdicts(now_ms).await?;
        self.apply(verdicts, now_ms).await
    }

    /// Persists and announces the transitions `verdicts` make, and returns them. Rules
    /// checked elsewhere (the webhook check's `webhooks_missing`) come in here too.
    pub async fn apply(
        &self,
        verdicts: Vec<Verdict>,
        now_ms: i64,
    ) -> Result<Vec<Transition>, StoreError> {
        let stored: HashMap<(String, String), AlertState> = self
            .store
            .alert_states()
            .await?
            .into_iter()
            .map(|s| ((s.rule.clone(), s.ad_account_id.clone()), s))
            .collect();
        let mut transitions = Vec::new();
        for v in verdicts {
            let before = stored.get(&(v.rule.clone(), v.ad_account_id.clone()));
            let was_active = before.is_some_and(|s| s.active);
            let transition = match (&v.problem, was_active) {
                (Some(problem), false) => Some(Transition::Fired(AlertState {
                    rule: v.rule.clone(),
                    ad_account_id: v.ad_account_id.clone(),
                    active: true,
                    detail: problem.clone(),
                    fired_at_ms: now_ms,
                    cleared_at_ms: None,
                })),
                (None, true) => before.map(|s| {
                    Transition::Cleared(AlertState {
                        active: false,
                        cleared_at_ms: Some(now_ms),
                        ..s.clone()
                    })
                }),
                _ => None,
            };
            let labels = [
                ("rule", v.rule.as_str()),
                ("ad_account_id", v.ad_account_id.as_str()),
            ];
            self.metrics.set(
                "pincapi_alert_active",
                &labels,
                if v.problem.is_some() { 1.0 } else { 0.0 },
            );
            if let Some(t) = transition {
                let (state, word) = match &t {
                    Transition::Fired(s) => (s, "fired"),
                    Transition::Cleared(s) => (s, "cleared"),
                };
                self.store.save_alert_state(state.clone()).await?;
                self.metrics.inc(
                    "pincapi_alert_transitions_total",
                    &[
                        ("rule", v.rule.as_str()),
                        ("ad_account_id", v.ad_account_id.as_str()),
                        ("transition", word),
                    ],
                    1,
                );
                self.announce(&t).await;
                transitions.push(t);
            }
        }
        Ok(transitions)
    }

    /// Every rule's verdict now.
    pub async fn verdicts(&self, now_ms: i64) -> Result<Vec<Verdict>, StoreError> {
        let now = now_ms / 1000;
        let c = &self.config;
        let mut out = Vec::new();
        let verdict = |rule: &str, account: &str, problem: Option<String>| Verdict {
            rule: rule.to_owned(),
            ad_account_id: account.to_owned(),
            problem,
        };
        let dead: HashMap<String, u64> =
            self.store
                .depth()
                .await?
                .into_iter()
                .fold(HashMap::new(), |mut m, d| {
                    *m.entry(d.ad_account_id).or_default() += d.dead;
                    m
                });
        let this_hour = now.div_euclid(3600) * 3600;
        let week = 7 * 86_400;
        let hours = self.store.quality_hours(this_hour - week - 3600).await?;
        for account in &self.accounts {
            let a = account.as_str();
            out.push(verdict("auth_failure", a, self.delivery.blocked_reason(a)));
            out.push(verdict(
                "unreadable_answers",
                a,
                self.delivery.unreadable_reason(a),
            ));
            let n = dead.get(a).copied().unwrap_or(0);
            out.push(verdict(
                "dead_letter",
                a,
                (n > 0).then(|| format!("{n} events in the dead-letter table")),
            ));

            let mut day = QualityCounts::default();
            let mut named = QualityCounts::default();
            let (mut last_hour, mut week_ago) = (0, 0);
            for h in hours.iter().filter(|h| h.ad_account_id == a) {
                if h.hour > this_hour - 86_400 {
                    day.add(&h.counts);
                    if h.event_name == c.coverage_event_name {
                        named.add(&h.counts);
                    }
                }
                if h.hour == this_hour - 3600 {
                    last_hour += h.counts.received;
                }
                if h.hour == this_hour - 3600 - week {
                    week_ago += h.counts.received;
                }
            }
            for (key, min) in &c.coverage_min_percent {
                let Some(i) = pincapi_core::event::MatchKeys::NAMES
                    .iter()
                    .position(|(_, name)| name == key)
                else {
                    continue;
                };
                let cov = percent(named.keys[i], named.received);
                let problem = (named.received >= c.coverage_min_events && cov < *min).then(|| {
                    format!(
                        "{key} is on {cov} % of {} events in the last 24 hours (threshold {min} %)",
                        c.coverage_event_name
                    )
                });
                out.push(verdict(&format!("coverage_{key}"), a, problem));
            }
            let floor = week_ago as f64 * (1.0 - c.volume_drop_percent / 100.0);
            let problem = (week_ago >= c.volume_min_events && (last_hour as f64) < floor).then(|| {
                format!(
                    "{last_hour} events in the last hour against {week_ago} in the same hour a week \
                     ago (more than {} % fewer)",
                    c.volume_drop_percent
                )
            });
            out.push(verdict("volume_drop", a, problem));
            let p95 = lag_percentile(&day.lag, 0.95, day.lag_max);
            let problem = p95.filter(|p| *p > c.max_p95_lag_secs).map(|p| {
                format!(
                    "95 % of events were sent within {}, above the limit of {}",
                    duration_label(p),
                    duration_label(c.max_p95_lag_secs)
                )
            });
            out.push(verdict("p95_send_lag", a, problem));
        }

        let until = now - c.purchase_grace_secs as i64;
        let mut truth = self
            .store
            .shopify_truth(now - 86_400, until, 100_000, None)
            .await?;
        if let Some((cache, max_age)) = &self.census
            && let Some(census) = cache.get(now - 86_400, now_ms).await
        {
            let found = census::compare(
                self.store.as_ref(),
                &census,
                now - 86_400,
                until,
                now,
                *max_age,
            )
            .await?;
            add_census(&mut truth, &found, usize::MAX);
        }
        let orders: i64 = truth.days.iter().map(|d| d.orders).sum();
        let missing = truth.missing.len() as i64;
        let gap = percent(missing, orders);
        let problem = (orders > 0 && missing > 0 && gap >= c.purchase_gap_percent).then(|| {
            format!(
                "{missing} of {orders} Shopify orders of the last 24 hours have no delivered \
                 purchase ({gap} %)"
            )
        });
        out.push(verdict("purchases_missing", ALL_ACCOUNTS, problem));
        if let Some(oauth) = &self.oauth {
            out.push(verdict(
                "oauth_refresh_failing",
                ALL_ACCOUNTS,
                oauth.failing().map(|why| {
                    format!(
                        "Pinterest's OAuth token cannot be refreshed ({why}); audiences and the \
                         Event Quality Score stop when it expires. Fix: run `pincapi pinterest \
                         connect` again"
                    )
                }),
            ));
        }
        Ok(out)
    }

    async fn announce(&self, t: &Transition) {
        let text = match t {
            Transition::Fired(s) => {
                tracing::warn!(rule = %s.rule, ad_account_id = %s.ad_account_id, detail = %s.detail, "Alert fired");
                format!(
                    "pincapi alert FIRED: {} (ad account {}): {}",
                    s.rule, s.ad_account_id, s.detail
                )
            }
            Transition::Cleared(s) => {
                tracing::info!(rule = %s.rule, ad_account_id = %s.ad_account_id, "Alert cleared");
                format!(
                    "pincapi alert CLEARED: {} (ad account {}) is back to normal",
                    s.rule, s.ad_account_id
                )
            }
        };
        let Some(url) = &self.config.webhook_url else {
            return;
        };
        // One attempt: the transition is already in the log, /metrics and the store, and the
        // next one is announced whatever became of this one.
        match self
            .http
            .post(url)
            .json(&json!({ "text": text }))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "The alert webhook refused the alert"
                )
            }
            // Without the URL: a webhook URL is its own secret.
            Err(e) => {
                tracing::warn!(error = %e.without_url(), webhook = %masked_webhook_url(url), "The alert webhook could not be reached")
            }
        }
    }
}

/// Active alerts by rule, for `pincapi report --check`.
pub fn active(states: &[AlertState]) -> BTreeMap<String, Vec<&AlertState>> {
    let mut m: BTreeMap<String, Vec<&AlertState>> = BTreeMap::new();
    for s in states.iter().filter(|s| s.active) {
        m.entry(s.rule.clone()).or_default().push(s);
    }
    m
}
