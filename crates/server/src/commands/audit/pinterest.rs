//! The Pinterest part of the audit: what Pinterest itself reports for the ad account, read
//! with an OAuth token that has `ads:read` (the gateway's own, or `--pinterest-token`):
//! checkouts, checkout value and spend per UTC day (`GET /ad_accounts/{id}/analytics`,
//! granularity `DAY`, with the attribution windows stated in the report), the conversion
//! tags (`GET /ad_accounts/{id}/conversion_tags`) and the Event Quality Score
//! (`GET /ad_accounts/{id}/conversion_eqs`).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{AuditArgs, Finding};
use crate::clock::SystemClock;
use crate::config::{Config, Secret};
use crate::pinterest_client::PinterestClient;
use crate::quality::results::{
    CLICK_WINDOW_DAYS, PinterestDay, VIEW_WINDOW_DAYS, fetch_days, get_json,
};
use crate::store::SharedStore;

/// One conversion tag of the account.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TagInfo {
    pub id: String,
    pub name: String,
    pub status: String,
    pub automatic_enhanced_match: bool,
    pub last_fired_time_ms: Option<i64>,
}

/// What the Pinterest part found.
#[derive(Debug, Clone, Serialize)]
pub struct PinterestSection {
    pub ad_account_id: String,
    /// "click 30 days, view 1 day, by the time of the ad action".
    pub attribution: String,
    pub days: Vec<PinterestDay>,
    pub checkouts: i64,
    pub value: f64,
    pub spend: f64,
    /// Value over spend; `None` without spend.
    pub roas: Option<f64>,
    /// Spend per checkout; `None` without checkouts.
    pub cpa: Option<f64>,
    pub tags: Vec<TagInfo>,
    /// Pinterest's EQS for CAPI events, per source platform: `(platform, overall_status)`.
    pub eqs: Vec<(String, String)>,
}

async fn token(args: &AuditArgs, config: &Config, store: Option<SharedStore>) -> Option<Secret> {
    if let Some(t) = args.pinterest_token.as_deref().filter(|t| !t.is_empty()) {
        return Some(Secret::new(t));
    }
    let oauth =
        crate::pinterest_oauth::OAuthTokens::new(config, store, SystemClock::shared(), None);
    oauth.token().await.ok().filter(|t| !t.is_empty())
}

/// Audits the ad account; `None` (with a finding) when Pinterest cannot be read.
pub async fn audit(
    args: &AuditArgs,
    config: &Config,
    store: Option<SharedStore>,
    account: &str,
    since: i64,
    today: i64,
    findings: &mut Vec<Finding>,
) -> Option<PinterestSection> {
    let subject = format!("ad account {account}");
    let Some(token) = token(args, config, store).await else {
        findings.push(Finding::new(
            "pinterest_not_read",
            "warning",
            &subject,
            "no Pinterest OAuth token: what Pinterest reports (checkouts, value, spend, tags, EQS) was not audited",
            "pincapi pinterest connect (or pass --pinterest-token with ads:read)",
        ));
        return None;
    };
    let client = match PinterestClient::new(&config.pinterest_api_base, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding::new(
                "pinterest_not_read",
                "warning",
                &subject,
                e.to_string(),
                "check pinterest_api_base",
            ));
            return None;
        }
    };
    let days = match fetch_days(&client, &token, account, since, today).await {
        Ok(days) => days,
        Err(e) => {
            findings.push(Finding::new(
                "pinterest_not_read",
                "warning",
                &subject,
                format!("Pinterest's analytics could not be read: {e}"),
                "check the token's ads:read scope and the ad account id",
            ));
            return None;
        }
    };
    let checkouts = days.iter().map(|d| d.checkouts).sum::<i64>();
    let value = (days.iter().map(|d| d.value).sum::<f64>() * 100.0).round() / 100.0;
    let spend = (days.iter().map(|d| d.spend).sum::<f64>() * 100.0).round() / 100.0;
    let roas = (spend > 0.0).then(|| (value / spend * 100.0).round() / 100.0);
    let cpa = (checkouts > 0).then(|| (spend / checkouts as f64 * 100.0).round() / 100.0);

    let mut tags = Vec::new();
    match get_json(
        &client,
        &token,
        &format!("/ad_accounts/{account}/conversion_tags"),
    )
    .await
    {
        Ok(v) => {
            for t in v["items"].as_array().into_iter().flatten() {
                tags.push(TagInfo {
                    id: t["id"].as_str().unwrap_or("").to_owned(),
                    name: t["name"].as_str().unwrap_or("").to_owned(),
                    status: t["status"].as_str().unwrap_or("").to_owned(),
                    automatic_enhanced_match: t["configs"]["aem_enabled"]
                        .as_bool()
                        .unwrap_or(false),
                    last_fired_time_ms: t["last_fired_time_ms"].as_f64().map(|v| v as i64),
                });
            }
        }
        Err(e) => findings.push(Finding::new(
            "conversion_tags_unread",
            "warning",
            &subject,
            format!("the conversion tags could not be read: {e}"),
            "",
        )),
    }
    let mut eqs = Vec::new();
    if let Ok(Value::Array(scores)) = get_json(
        &client,
        &token,
        &format!("/ad_accounts/{account}/conversion_eqs?lookback_period=14d&ingestion_source=CONVERSIONS_API"),
    )
    .await
    {
        for s in scores {
            eqs.push((
                s["source_platform"].as_str().unwrap_or("").to_owned(),
                s["overall_status"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    let section = PinterestSection {
        ad_account_id: account.to_owned(),
        attribution: format!(
            "click {CLICK_WINDOW_DAYS} days, view {VIEW_WINDOW_DAYS} day, by the time of the ad action"
        ),
        days,
        checkouts,
        value,
        spend,
        roas,
        cpa,
        tags,
        eqs,
    };
    judge(
        &section,
        args.tag_id.as_deref().or(config.tag_id.as_deref()),
        &subject,
        findings,
    );
    Some(section)
}

fn judge(p: &PinterestSection, expected: Option<&str>, subject: &str, findings: &mut Vec<Finding>) {
    let active: Vec<&TagInfo> = p.tags.iter().filter(|t| t.status == "ACTIVE").collect();
    match (active.len(), expected) {
        (0, _) => findings.push(Finding::new(
            "no_conversion_tag",
            "error",
            subject,
            "the ad account has no active conversion tag",
            "create the Tag in Ads Manager (Conversions → Tag), then set tag_id",
        )),
        (_, Some(want)) if !active.iter().any(|t| t.id == want) => findings.push(Finding::new(
            "tag_not_in_account",
            "error",
            subject,
            format!(
                "tag id {want} is not an active conversion tag of this ad account ({})",
                active
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "set tag_id to the account's Tag id",
        )),
        _ => findings.push(Finding::new(
            "conversion_tag",
            "ok",
            subject,
            format!(
                "active conversion tag {}",
                active
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "",
        )),
    }
    if !active.is_empty() && !active.iter().any(|t| t.automatic_enhanced_match) {
        findings.push(Finding::new(
            "automatic_enhanced_match_off",
            "warning",
            subject,
            "automatic enhanced match is off on the conversion tag",
            "turn on automatic enhanced match in Ads Manager (Conversions → Tag settings)",
        ));
    }
    for (platform, status) in &p.eqs {
        if status != "GREAT" && status != "GOOD" && !status.is_empty() {
            findings.push(Finding::new(
                "eqs_low",
                "warning",
                subject,
                format!("Pinterest grades the CAPI events of {platform} {status}"),
                "see the dashboard's match keys; send email, IP, user agent and click id with every event",
            ));
        }
    }
    if p.spend > 0.0 && p.checkouts == 0 {
        findings.push(Finding::new(
            "no_reported_checkouts",
            "error",
            subject,
            format!("Pinterest reports {:.2} of spend and no checkout in the period", p.spend),
            "connect the shop's orders through pincapi (pincapi shopify connect) so Pinterest receives every purchase",
        ));
    }
}
