//! The results view: per ad account and UTC day, what Pinterest itself reports (checkouts,
//! checkout value, spend, and CPA and ROAS from them) beside the shop's orders and what
//! pincapi delivered, with the go-live day (the first day pincapi delivered for the account)
//! and the learning period after it (the 2–4 weeks over which campaigns re-optimise on the
//! new conversions).
//!
//! Pinterest's figures come from `GET /ad_accounts/{id}/analytics` (granularity `DAY`, click
//! window 30 days, view window 1 day, by the time of the ad action), read with the gateway's
//! OAuth token and kept for [`CACHE_TTL`] by [`ResultsCache`]: Pinterest updates them a few
//! times a day, and views must not spend its analytics rate limit. A read that fails is
//! reported on the account, never as a failure of the report. `pincapi audit` reads the same
//! endpoint through [`fetch_days`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::report::{Report, day_label};
use crate::config::{Config, Secret};
use crate::pinterest_client::PinterestClient;
use crate::pinterest_oauth::OAuthTokens;
use crate::store::QualityStore;

/// How long analytics are reused.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// The attribution windows asked for (Pinterest's defaults for click and view).
pub const CLICK_WINDOW_DAYS: i64 = 30;
pub const VIEW_WINDOW_DAYS: i64 = 1;
/// The learning period after go-live, days.
pub const LEARNING_DAYS: i64 = 28;
const COLUMNS: &str = "TOTAL_CHECKOUT,TOTAL_CHECKOUT_VALUE_IN_MICRO_DOLLAR,SPEND_IN_MICRO_DOLLAR";

/// One UTC day as Pinterest reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PinterestDay {
    pub day: String,
    pub checkouts: i64,
    /// Checkout value and spend in the account's currency (Pinterest's micro units / 10⁶).
    pub value: f64,
    pub spend: f64,
}

/// `GET {base}{path}` of Pinterest's Ads API as JSON; a status other than 2xx, or a body that
/// is not JSON, is an error in words.
pub async fn get_json(
    client: &PinterestClient,
    token: &Secret,
    path: &str,
) -> Result<Value, String> {
    let answer = client
        .get(path, token)
        .await
        .map_err(|e| format!("{}: {}", e.kind, e.detail))?;
    if !(200..300).contains(&answer.status) {
        let snippet: String = String::from_utf8_lossy(&answer.body)
            .chars()
            .take(200)
            .collect();
        return Err(format!("HTTP {}: {snippet}", answer.status));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("not Pinterest's answer: {e}"))
}

/// `GET /ad_accounts/{account}/analytics` for the days `since..=today` (Unix seconds of UTC
/// midnights), one [`PinterestDay`] per day Pinterest has figures for, oldest first.
pub async fn fetch_days(
    client: &PinterestClient,
    token: &Secret,
    account: &str,
    since: i64,
    today: i64,
) -> Result<Vec<PinterestDay>, String> {
    let path = format!(
        "/ad_accounts/{account}/analytics?start_date={}&end_date={}&columns={COLUMNS}&granularity=DAY\
         &click_window_days={CLICK_WINDOW_DAYS}&view_window_days={VIEW_WINDOW_DAYS}\
         &conversion_report_time=TIME_OF_AD_ACTION",
        day_label(since),
        day_label(today)
    );
    let rows: Vec<Value> = serde_json::from_value(get_json(client, token, &path).await?)
        .map_err(|e| format!("not Pinterest's analytics answer: {e}"))?;
    let micro = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e6;
    let mut days: Vec<PinterestDay> = rows
        .iter()
        .map(|r| PinterestDay {
            day: r["DATE"].as_str().unwrap_or("").to_owned(),
            checkouts: r["TOTAL_CHECKOUT"].as_f64().unwrap_or(0.0) as i64,
            value: micro(&r["TOTAL_CHECKOUT_VALUE_IN_MICRO_DOLLAR"]),
            spend: micro(&r["SPEND_IN_MICRO_DOLLAR"]),
        })
        .collect();
    days.sort_by(|a, b| a.day.cmp(&b.day));
    Ok(days)
}

/// One day of one account's results.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResultDay {
    pub day: String,
    pub pinterest_checkouts: i64,
    pub pinterest_value: f64,
    pub spend: f64,
    /// Spend per reported checkout; `None` without checkouts.
    pub cpa: Option<f64>,
    /// Reported checkout value over spend; `None` without spend.
    pub roas: Option<f64>,
    /// The shop's orders (`None` when the report covers several accounts: choose one).
    pub shopify_orders: Option<i64>,
    /// Purchases pincapi delivered for the account.
    pub delivered_purchases: i64,
    /// Orders whose purchase only the server side reported (the browser never did).
    pub recovered: Option<i64>,
}

/// One account's results.
#[derive(Debug, Clone, Serialize)]
pub struct AccountResults {
    pub ad_account_id: String,
    pub attribution: String,
    /// The first day pincapi delivered for the account (in the last 90 days), and the last
    /// day of the learning period after it.
    pub go_live_day: Option<String>,
    pub learning_until: Option<String>,
    pub days: Vec<ResultDay>,
    pub total: ResultDay,
    /// Why Pinterest's figures are missing, if they are.
    pub error: Option<String>,
}

fn ratio(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| (n / d * 100.0).round() / 100.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// (account, first day, last day) → (read at, ms; what Pinterest answered).
type Kept = BTreeMap<(String, i64, i64), (i64, Result<Vec<PinterestDay>, String>)>;

/// Analytics per account, kept [`CACHE_TTL`].
pub struct ResultsCache {
    client: Option<PinterestClient>,
    oauth: Arc<OAuthTokens>,
    enabled: bool,
    kept: Mutex<Kept>,
    /// Go-live days found: once an account has delivered, its first day does not change, so
    /// views do not read 90 days of counts again for it.
    go_live: Mutex<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for ResultsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsCache")
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl ResultsCache {
    /// Reads analytics only when an OAuth token (or Pinterest's app) is configured.
    pub fn new(config: &Config, oauth: Arc<OAuthTokens>) -> ResultsCache {
        ResultsCache {
            client: PinterestClient::new(&config.pinterest_api_base, config.request_timeout()).ok(),
            oauth,
            enabled: !config.pinterest_oauth_token.is_empty() || config.pinterest_app_id.is_some(),
            kept: Mutex::new(BTreeMap::new()),
            go_live: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled && self.client.is_some()
    }

    /// The account's analytics for `since..=today`, from the cache when fresh.
    pub async fn days(
        &self,
        account: &str,
        since: i64,
        today: i64,
        now_ms: i64,
    ) -> Result<Vec<PinterestDay>, String> {
        let Some(client) = &self.client else {
            return Err("no Pinterest client".into());
        };
        let key = (account.to_owned(), since, today);
        let mut kept = self.kept.lock().await;
        if let Some((at, days)) = kept.get(&key)
            && now_ms - at < CACHE_TTL.as_millis() as i64
        {
            return days.clone();
        }
        let token = self.oauth.token().await.map_err(|e| e.to_string())?;
        let days = fetch_days(client, &token, account, since, today).await;
        // Readings of other periods or days go stale too: drop them rather than keep them.
        kept.retain(|_, (at, _)| now_ms - *at < CACHE_TTL.as_millis() as i64);
        kept.insert(key, (now_ms, days.clone()));
        days
    }

    /// The account's go-live day ([`go_live_day`]), remembered once found.
    pub async fn go_live(
        &self,
        store: &dyn QualityStore,
        account: &str,
        now: i64,
    ) -> Result<Option<i64>, crate::store::StoreError> {
        if let Some(day) = self.go_live.lock().await.get(account) {
            return Ok(Some(*day));
        }
        let day = go_live_day(store, account, now).await?;
        if let Some(d) = day {
            self.go_live.lock().await.insert(account.to_owned(), d);
        }
        Ok(day)
    }
}

/// The first UTC day pincapi delivered anything for `account` in the last 90 days.
pub async fn go_live_day(
    store: &dyn QualityStore,
    account: &str,
    now: i64,
) -> Result<Option<i64>, crate::store::StoreError> {
    let hours = store.quality_hours(now - 90 * 86_400).await?;
    Ok(hours
        .iter()
        .filter(|h| h.ad_account_id == account && h.counts.delivered > 0)
        .map(|h| h.hour.div_euclid(86_400) * 86_400)
        .min())
}

/// Fills `report.results`: the report's account, or every account when there is one.
pub async fn fill(
    report: &mut Report,
    store: &dyn QualityStore,
    cache: &ResultsCache,
    configured: &[String],
    now_ms: i64,
) -> Result<(), crate::store::StoreError> {
    if !cache.enabled() {
        return Ok(());
    }
    let now = now_ms / 1000;
    let today = now.div_euclid(86_400) * 86_400;
    let since = report.since.max(today - 89 * 86_400);
    let accounts: Vec<String> = match &report.ad_account_id {
        Some(a) => vec![a.clone()],
        None => configured.to_vec(),
    };
    // The shop's orders are per account only when the report is.
    let one = accounts.len() == 1;
    for account in accounts {
        let go_live = cache.go_live(store, &account, now).await?;
        let (pinterest, error) = match cache.days(&account, since, today, now_ms).await {
            Ok(d) => (d, None),
            Err(e) => (
                Vec::new(),
                Some(format!("Pinterest's analytics could not be read: {e}")),
            ),
        };
        let mut days: BTreeMap<String, ResultDay> = BTreeMap::new();
        let mut day = since;
        while day <= today {
            let label = day_label(day);
            days.insert(
                label.clone(),
                ResultDay {
                    day: label,
                    shopify_orders: one.then_some(0),
                    recovered: one.then_some(0),
                    ..ResultDay::default()
                },
            );
            day += 86_400;
        }
        for p in &pinterest {
            if let Some(d) = days.get_mut(&p.day) {
                d.pinterest_checkouts = p.checkouts;
                d.pinterest_value = round2(p.value);
                d.spend = round2(p.spend);
            }
        }
        for r in report.days.iter().filter(|r| r.event_name == "checkout") {
            if let Some(d) = days.get_mut(&r.day) {
                d.delivered_purchases = r.volume.delivered;
            }
        }
        if one {
            for s in &report.shopify.days {
                if let Some(d) = days.get_mut(&s.day) {
                    d.shopify_orders = Some(s.orders);
                    d.recovered = Some(s.recovered);
                }
            }
        }
        let mut total = ResultDay {
            day: "total".into(),
            shopify_orders: one.then_some(0),
            recovered: one.then_some(0),
            ..ResultDay::default()
        };
        for d in days.values_mut() {
            d.cpa = ratio(d.spend, d.pinterest_checkouts as f64);
            d.roas = ratio(d.pinterest_value, d.spend);
            total.pinterest_checkouts += d.pinterest_checkouts;
            total.pinterest_value += d.pinterest_value;
            total.spend += d.spend;
            total.delivered_purchases += d.delivered_purchases;
            total.shopify_orders = total
                .shopify_orders
                .zip(d.shopify_orders)
                .map(|(a, b)| a + b);
            total.recovered = total.recovered.zip(d.recovered).map(|(a, b)| a + b);
        }
        total.pinterest_value = round2(total.pinterest_value);
        total.spend = round2(total.spend);
        total.cpa = ratio(total.spend, total.pinterest_checkouts as f64);
        total.roas = ratio(total.pinterest_value, total.spend);
        report.results.push(AccountResults {
            ad_account_id: account,
            attribution: format!(
                "click {CLICK_WINDOW_DAYS} days, view {VIEW_WINDOW_DAYS} day, by the time of the ad action"
            ),
            go_live_day: go_live.map(day_label),
            learning_until: go_live.map(|d| day_label(d + LEARNING_DAYS * 86_400)),
            days: days.into_values().collect(),
            total,
            error,
        });
    }
    Ok(())
}
