//! The quality report: the store's aggregates read back per UTC day and event name, the
//! Shopify ledger against Pinterest, API health, Pinterest's EQS and the open alerts. The
//! same value feeds `GET /api/quality`, `pincapi report`, the dashboard and `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

use pincapi_core::event::MatchKeys;
use pincapi_core::quality::{grade, lag_percentile, match_score, percent};
use serde::Serialize;

pub use crate::quality::census::day_label;
use crate::quality::census::{self, Census, CensusReport, CensusTruth};
use crate::store::{
    AlertState, EqsScore, MissingOrder, QualityCounts, QualityMessage, QualityStore, ShopifyTruth,
    Source, StoreError,
};

/// How many missing orders a report lists.
pub const MISSING_LIMIT: usize = 200;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Unix seconds of the first UTC day covered.
    pub since: i64,
    /// The ad account the report is narrowed to (`?account=`); `None`: every account.
    pub ad_account_id: Option<String>,
    /// Every ad account with figures in the period, for choosing one.
    pub accounts: Vec<String>,
    /// Per ad account: what Pinterest reports against the shop's orders and the deliveries
    /// (filled in by `quality::results` when Pinterest's analytics can be read).
    pub results: Vec<crate::quality::results::AccountResults>,
    /// Unix ms when it was built.
    pub generated_at_ms: i64,
    pub headline: Headline,
    /// Per day and event name, oldest first.
    pub days: Vec<DayRow>,
    /// Per event name over the whole period.
    pub totals: Vec<DayRow>,
    pub shopify: ShopifyReport,
    pub api_health: ApiHealth,
    pub eqs: EqsReport,
    /// Alerts firing now.
    pub alerts: Vec<AlertState>,
}

/// The figures a merchant looks at first.
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    /// Shopify orders created in the period (see [`ShopifyReport::orders_source`]).
    pub orders: i64,
    /// `census` or `ledger`: where the order count comes from.
    pub orders_source: &'static str,
    pub delivered_purchases: i64,
    pub browser_loss_percent: f64,
    pub recovered_percent: f64,
    /// The local match-quality score of purchases (`checkout`), or of every event when there
    /// were no purchases.
    pub match_score: f64,
    pub match_grade: &'static str,
    /// Bucket bound, seconds; `None` before anything was delivered.
    pub p95_lag_secs: Option<i64>,
    /// Alerts firing now, plus the census's problems (Admin API errors, truncated listings).
    pub open_problems: usize,
}

/// One day (or the whole period) of one event name.
#[derive(Debug, Clone, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD` (UTC), or `total`.
    pub day: String,
    pub event_name: String,
    pub volume: Volume,
    pub match_quality: MatchQuality,
    pub freshness: Freshness,
    #[serde(skip)]
    pub counts: QualityCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub received: i64,
    pub delivered: i64,
    /// Refused by Pinterest.
    pub failed: i64,
    pub dead_lettered: i64,
    /// Shopify orders of the day not sent, by reason (purchases only).
    pub skipped: BTreeMap<String, i64>,
    /// Repeats of a stored event caught by de-duplication.
    pub duplicates: i64,
    /// Of those, repeats merged into the waiting event.
    pub merged: i64,
    /// Events each source saw.
    pub by_source: BTreeMap<&'static str, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchQuality {
    /// Percent of events carrying each key.
    pub coverage: BTreeMap<&'static str, f64>,
    pub score: f64,
    pub grade: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// Bucket bounds (seconds) of send time − event time; `None` when nothing was delivered.
    pub p50_secs: Option<i64>,
    pub p95_secs: Option<i64>,
    /// Exact.
    pub max_secs: Option<i64>,
    /// Percent of delivered events sent more than an hour late.
    pub late_percent: f64,
}

/// Shopify orders against Pinterest.
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyReport {
    /// Where the orders come from: `census` when the order census listed at least one shop's
    /// orders through the Admin API (its orders the ledger lacks are added to the ledger's),
    /// `ledger` when only webhooks and the poller told the gateway of orders.
    pub orders_source: &'static str,
    pub days: Vec<ShopifyDay>,
    pub total: ShopifyDay,
    /// Orders with no delivered purchase, oldest first (at most [`MISSING_LIMIT`]): the
    /// ledger's (outcome `sent` or `skipped`) and the census's (`never_received`,
    /// `browser_only`).
    pub missing_orders: Vec<MissingOrder>,
    /// The order census, when a shop has Admin API access.
    pub census: Option<CensusReport>,
    /// Orders not sent because the buyer did not allow marketing (`shopify.consent`).
    pub consent_skipped: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShopifyDay {
    /// `YYYY-MM-DD` (UTC) of the orders' creation, or `total`.
    pub day: String,
    pub orders: i64,
    pub delivered_purchases: i64,
    pub browser_seen: i64,
    pub recovered: i64,
    /// Orders whose purchase the browser never reported / orders.
    pub browser_loss_percent: f64,
    /// Delivered purchases the browser never reported / orders.
    pub recovered_percent: f64,
    /// Orders with no delivered purchase.
    pub missing: i64,
    pub skipped: BTreeMap<String, i64>,
}

impl ShopifyDay {
    fn new(day: String, orders: i64, delivered: i64, browser_seen: i64, recovered: i64) -> Self {
        ShopifyDay {
            day,
            orders,
            delivered_purchases: delivered,
            browser_seen,
            recovered,
            browser_loss_percent: percent(orders - browser_seen, orders),
            recovered_percent: percent(recovered, orders),
            missing: orders - delivered,
            skipped: BTreeMap::new(),
        }
    }
}

/// Pinterest's errors and warnings, retries and waits.
#[derive(Debug, Clone, Serialize)]
pub struct ApiHealth {
    /// Attempts that failed and were retried.
    pub retried: i64,
    /// Rounds events waited without using an attempt (rate limits, a stopped account).
    pub rate_limit_waits: i64,
    pub warned: i64,
    /// By (day, kind, message), most frequent first within a day.
    pub messages: Vec<QualityMessage>,
}

/// Pinterest's own Event Quality Score, as last polled.
#[derive(Debug, Clone, Serialize)]
pub struct EqsReport {
    pub enabled: bool,
    /// Says plainly why there is nothing when there is nothing.
    pub note: String,
    pub scores: Vec<EqsScore>,
}

/// The first second of the UTC day of `since`: where a report from `since` starts.
pub fn day_start(since: i64) -> i64 {
    since.div_euclid(86_400) * 86_400
}

/// Builds the report for UTC days from `since` (Unix seconds, rounded down to the day).
pub async fn build(
    store: &dyn QualityStore,
    since: i64,
    now_ms: i64,
    eqs_enabled: bool,
) -> Result<Report, StoreError> {
    build_with_census(store, since, now_ms, eqs_enabled, None, None).await
}

/// The order census a report counts with, and Pinterest's window for what can still be sent.
#[derive(Debug, Clone, Copy)]
pub struct CensusInput<'a> {
    pub census: &'a Census,
    pub max_event_age_secs: i64,
}

/// [`build`], with the Shopify orders counted by `census` too (orders the ledger lacks are
/// added to its figures and, undelivered, to the missing orders).
pub async fn build_with_census(
    store: &dyn QualityStore,
    since: i64,
    now_ms: i64,
    eqs_enabled: bool,
    census: Option<CensusInput<'_>>,
    account: Option<&str>,
) -> Result<Report, StoreError> {
    let since = day_start(since);
    let mut hours = store.quality_hours(since).await?;
    let mut accounts: Vec<String> = hours.iter().map(|h| h.ad_account_id.clone()).collect();
    accounts.sort();
    accounts.dedup();
    let mine = |id: &str| account.is_none_or(|a| a == id);
    hours.retain(|h| mine(&h.ad_account_id));
    let mut truth = store
        .shopify_truth(since, i64::MAX, MISSING_LIMIT, account.map(str::to_owned))
        .await?;
    let census = match census {
        Some(c) => Some(
            census::compare(
                store,
                &Census {
                    shops: c
                        .census
                        .shops
                        .iter()
                        .filter(|s| mine(&s.ad_account_id))
                        .cloned()
                        .collect(),
                    ..c.census.clone()
                },
                since,
                i64::MAX,
                now_ms / 1000,
                c.max_event_age_secs,
            )
            .await?,
        ),
        None => None,
    };
    if let Some(c) = &census {
        add_census(&mut truth, c, MISSING_LIMIT);
    }
    let mut messages = store.quality_messages(since).await?;
    messages.retain(|m| mine(&m.ad_account_id));
    let alerts: Vec<AlertState> = store
        .alert_states()
        .await?
        .into_iter()
        .filter(|a| a.active && (a.ad_account_id.is_empty() || mine(&a.ad_account_id)))
        .collect();
    let mut scores = store.eqs_scores().await?;
    for sc in &scores {
        if !accounts.contains(&sc.ad_account_id) {
            accounts.push(sc.ad_account_id.clone());
        }
    }
    accounts.sort();
    scores.retain(|sc| mine(&sc.ad_account_id));

    let mut per_day: BTreeMap<(i64, String), QualityCounts> = BTreeMap::new();
    let mut per_name: BTreeMap<String, QualityCounts> = BTreeMap::new();
    for h in &hours {
        let day = h.hour.div_euclid(86_400) * 86_400;
        per_day
            .entry((day, h.event_name.clone()))
            .or_default()
            .add(&h.counts);
        per_name
            .entry(h.event_name.clone())
            .or_default()
            .add(&h.counts);
    }
    let skipped_on = |day: i64| -> BTreeMap<String, i64> {
        truth
            .days
            .iter()
            .filter(|d| d.day == day)
            .flat_map(|d| d.skipped.iter().cloned())
            .collect()
    };
    let days: Vec<DayRow> = per_day
        .into_iter()
        .map(|((day, name), c)| {
            let skipped = if name == "checkout" {
                skipped_on(day)
            } else {
                BTreeMap::new()
            };
            row(day_label(day), name, c, skipped)
        })
        .collect();
    let mut all_skipped: BTreeMap<String, i64> = BTreeMap::new();
    for d in &truth.days {
        for (reason, n) in &d.skipped {
            *all_skipped.entry(reason.clone()).or_default() += n;
        }
    }
    let totals: Vec<DayRow> = per_name
        .into_iter()
        .map(|(name, c)| {
            let skipped = if name == "checkout" {
                all_skipped.clone()
            } else {
                BTreeMap::new()
            };
            row("total".into(), name, c, skipped)
        })
        .collect();

    let mut shop_days = Vec::new();
    let (mut o, mut d, mut b, mut r) = (0, 0, 0, 0);
    for t in &truth.days {
        let mut day = ShopifyDay::new(
            day_label(t.day),
            t.orders,
            t.delivered,
            t.browser_seen,
            t.recovered,
        );
        day.skipped = t.skipped.iter().cloned().collect();
        shop_days.push(day);
        (o, d, b, r) = (
            o + t.orders,
            d + t.delivered,
            b + t.browser_seen,
            r + t.recovered,
        );
    }
    let mut total = ShopifyDay::new("total".into(), o, d, b, r);
    total.skipped = all_skipped;

    let mut all = QualityCounts::default();
    for t in &totals {
        all.add(&t.counts);
    }
    let purchases = totals.iter().find(|t| t.event_name == "checkout");
    let score_of = purchases.map_or_else(|| score(&all), |p| p.match_quality.score);
    let orders_source = if census.as_ref().is_some_and(|c| c.counted) {
        "census"
    } else {
        "ledger"
    };
    let census = census.map(|c| c.report);
    let census_problems = census.as_ref().map_or(0, |c| c.problems.len());
    let headline = Headline {
        orders: total.orders,
        orders_source,
        delivered_purchases: total.delivered_purchases,
        browser_loss_percent: total.browser_loss_percent,
        recovered_percent: total.recovered_percent,
        match_score: score_of,
        match_grade: grade(score_of),
        p95_lag_secs: lag_percentile(&all.lag, 0.95, all.lag_max),
        open_problems: alerts.len() + census_problems,
    };
    let eqs = EqsReport {
        enabled: eqs_enabled,
        note: if !eqs_enabled {
            "Pinterest's Event Quality Score is not polled: set pinterest_oauth_token (an OAuth \
             token with ads:read) to see it here"
                .to_owned()
        } else if scores.is_empty() {
            "Pinterest has returned no Event Quality Score for these accounts yet: it scores an \
             account once it has enough recent events, and pincapi asks again every hour"
                .to_owned()
        } else {
            "As last polled from Pinterest (GET /ad_accounts/{id}/conversion_eqs)".to_owned()
        },
        scores,
    };
    Ok(Report {
        since,
        ad_account_id: account.map(str::to_owned),
        accounts,
        results: Vec::new(),
        generated_at_ms: now_ms,
        headline,
        days,
        totals,
        shopify: ShopifyReport {
            orders_source,
            consent_skipped: total
                .skipped
                .iter()
                .filter(|(reason, _)| reason.starts_with("consent"))
                .map(|(_, n)| n)
                .sum(),
            days: shop_days,
            total,
            missing_orders: truth.missing,
            census,
        },
        api_health: ApiHealth {
            retried: all.retried,
            rate_limit_waits: all.waits,
            warned: all.warned,
            messages,
        },
        eqs,
        alerts,
    })
}

/// Adds the census's orders the ledger lacks to the ledger's `truth`: per day, and to the
/// missing orders (oldest first, at most `limit`).
pub fn add_census(truth: &mut ShopifyTruth, census: &CensusTruth, limit: usize) {
    for c in &census.days {
        match truth.days.iter_mut().find(|d| d.day == c.day) {
            Some(d) => {
                d.orders += c.orders;
                d.delivered += c.delivered;
                d.browser_seen += c.browser_seen;
                d.recovered += c.recovered;
            }
            None => truth.days.push(c.clone()),
        }
    }
    truth.days.sort_by_key(|d| d.day);
    truth.missing.extend(census.missing.iter().cloned());
    truth
        .missing
        .sort_by(|a, b| (a.created_at, &a.order_id).cmp(&(b.created_at, &b.order_id)));
    truth.missing.truncate(limit);
}

/// The local score of `c` (0..=100).
pub fn score(c: &QualityCounts) -> f64 {
    let s = match_score(|bit| {
        let i = MatchKeys::NAMES.iter().position(|(b, _)| *b == bit);
        i.map_or(0.0, |i| percent(c.keys[i], c.received))
    });
    (s * 10.0).round() / 10.0
}

/// Percent of `c`'s events carrying each key.
pub fn coverage(c: &QualityCounts) -> BTreeMap<&'static str, f64> {
    MatchKeys::NAMES
        .iter()
        .enumerate()
        .map(|(i, (_, name))| (*name, percent(c.keys[i], c.received)))
        .collect()
}

fn row(
    day: String,
    event_name: String,
    c: QualityCounts,
    skipped: BTreeMap<String, i64>,
) -> DayRow {
    let delivered_any = c.delivered > 0;
    let score = score(&c);
    DayRow {
        day,
        event_name,
        volume: Volume {
            received: c.received,
            delivered: c.delivered,
            failed: c.failed,
            dead_lettered: c.dead,
            skipped,
            duplicates: c.duplicates,
            merged: c.merged,
            by_source: Source::ALL
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), c.seen[i]))
                .collect(),
        },
        match_quality: MatchQuality {
            coverage: coverage(&c),
            score,
            grade: grade(score),
        },
        freshness: Freshness {
            p50_secs: lag_percentile(&c.lag, 0.5, c.lag_max),
            p95_secs: lag_percentile(&c.lag, 0.95, c.lag_max),
            max_secs: delivered_any.then_some(c.lag_max),
            late_percent: percent(c.late, c.delivered),
        },
        counts: c,
    }
}

/// Parses `--since`/`?since=`: a date (`2026-11-20`), an RFC 3339 time, or a span back from
/// `now` (`24h`, `7d`). Returns Unix seconds.
pub fn parse_since(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    let span = |n: &str, unit: i64| -> Result<i64, String> {
        n.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| now - n * unit)
            .ok_or_else(|| format!("since: {s:?} is not a number of hours or days"))
    };
    if let Some(n) = s.strip_suffix('d') {
        return span(n, 86_400);
    }
    if let Some(n) = s.strip_suffix('h') {
        return span(n, 3600);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &format) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            format!(
                "since: {s:?} is not a date (2026-11-20), an RFC 3339 time, or a span (7d, 24h)"
            )
        })
}

/// The report as text tables, for `pincapi report`.
pub fn to_table(r: &Report) -> String {
    let mut out = String::new();
    let h = &r.headline;
    let lag = |v: Option<i64>| v.map_or("-".to_owned(), pincapi_core::quality::duration_label);
    let _ = writeln!(out, "Quality since {}", day_label(r.since));
    let _ = writeln!(
        out,
        "  orders {} | delivered purchases {} | browser loss {} % | recovered by CAPI {} % | \
         match quality {} ({}) | p95 lag {} | open problems {}",
        h.orders,
        h.delivered_purchases,
        h.browser_loss_percent,
        h.recovered_percent,
        h.match_score,
        h.match_grade,
        lag(h.p95_lag_secs),
        h.open_problems
    );
    let _ = writeln!(out, "\nVolume, match quality and freshness");
    let _ = writeln!(
        out,
        "{:<10} {:<16} {:>8} {:>9} {:>6} {:>5} {:>5} {:>5} {:>6} {:>5} {:>6} {:>8} {:>8} {:>6}",
        "day",
        "event_name",
        "received",
        "delivered",
        "failed",
        "dead",
        "dups",
        "em%",
        "ip_ua%",
        "clk%",
        "score",
        "p50",
        "p95",
        "late%"
    );
    for d in r.days.iter().chain(&r.totals) {
        let cov = &d.match_quality.coverage;
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>8} {:>9} {:>6} {:>5} {:>5} {:>5} {:>6} {:>5} {:>6} {:>8} {:>8} {:>6}",
            d.day,
            d.event_name,
            d.volume.received,
            d.volume.delivered,
            d.volume.failed,
            d.volume.dead_lettered,
            d.volume.duplicates,
            cov["em"],
            cov["ip_ua"],
            cov["click_id"],
            d.match_quality.score,
            lag(d.freshness.p50_secs),
            lag(d.freshness.p95_secs),
            d.freshness.late_percent
        );
    }
    let _ = writeln!(
        out,
        "\nShopify orders against Pinterest (orders counted from the {})",
        r.shopify.orders_source
    );
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:>10} {:>13} {:>10} {:>14} {:>11} {:>8}",
        "day",
        "orders",
        "delivered",
        "browser_seen",
        "recovered",
        "browser_loss%",
        "recovered%",
        "missing"
    );
    for s in r
        .shopify
        .days
        .iter()
        .chain(std::iter::once(&r.shopify.total))
    {
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>10} {:>13} {:>10} {:>14} {:>11} {:>8}",
            s.day,
            s.orders,
            s.delivered_purchases,
            s.browser_seen,
            s.recovered,
            s.browser_loss_percent,
            s.recovered_percent,
            s.missing
        );
    }
    if !r.shopify.missing_orders.is_empty() {
        let ids: Vec<&str> = r
            .shopify
            .missing_orders
            .iter()
            .map(|m| m.order_id.as_str())
            .collect();
        let _ = writeln!(out, "  missing orders: {}", ids.join(", "));
        for m in
            r.shopify.missing_orders.iter().filter(|m| {
                m.outcome == census::NEVER_RECEIVED || m.outcome == census::BROWSER_ONLY
            })
        {
            let _ = writeln!(
                out,
                "    {} {}: {}",
                m.shop,
                m.order_id,
                m.reason.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(c) = &r.shopify.census {
        for s in &c.shops {
            let _ = writeln!(
                out,
                "  census of {}: {} orders listed in {} pages, {} conversions, {} not in the \
                 ledger, {} never received{}",
                s.shop,
                s.listed,
                s.pages,
                s.orders,
                s.not_in_ledger,
                s.never_received,
                if s.truncated { " (truncated)" } else { "" }
            );
        }
        for p in &c.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
    }
    let a = &r.api_health;
    let _ = writeln!(
        out,
        "\nAPI health: {} retries, {} rate-limit waits, {} warnings",
        a.retried, a.rate_limit_waits, a.warned
    );
    for m in &a.messages {
        let _ = writeln!(
            out,
            "  {} {:<11} {:>6}  {}",
            day_label(m.day),
            m.kind,
            m.count,
            m.message
        );
    }
    let _ = writeln!(out, "\nPinterest Event Quality Score: {}", r.eqs.note);
    for s in &r.eqs.scores {
        let _ = writeln!(
            out,
            "  {} {:<16} {:<4} {:<8} {}",
            s.ad_account_id,
            s.ingestion_source,
            s.lookback_period,
            s.source_platform,
            s.overall_status
        );
    }
    let _ = writeln!(out, "\nAlerts firing: {}", r.alerts.len());
    for a in &r.alerts {
        let _ = writeln!(
            out,
            "  {} (ad account {}): {}",
            a.rule, a.ad_account_id, a.detail
        );
    }
    out
}
