//! `[quality]`: how often alerts are evaluated, their thresholds, where they are posted, and
//! how often Pinterest's Event Quality Score is polled.

use std::collections::BTreeMap;

use super::{ConfigError, invalid};
use serde::{Deserialize, Serialize};

/// The `[quality]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// How often the alert rules are evaluated, seconds.
    pub alert_interval_secs: u64,
    /// A Slack-compatible incoming webhook: each alert that fires or clears is POSTed to it
    /// as `{"text": "..."}`. Unset: alerts go to the log and `/metrics` only.
    /// Printed as its scheme and host only: a Slack-style webhook URL is its own secret.
    #[serde(serialize_with = "serialize_webhook_url")]
    pub webhook_url: Option<String>,
    /// Minimum coverage of a match key, percent, by key (`em`, `ph`, `external_id`,
    /// `click_id`, `ip_ua`, `name`, `address`), among the `coverage_event_name` events received
    /// in the last 24 hours. A key not listed has no alert.
    pub coverage_min_percent: BTreeMap<String, f64>,
    /// The event name the coverage rules look at (purchases: `checkout`).
    pub coverage_event_name: String,
    /// Coverage rules wait for at least this many events in their 24 hours.
    pub coverage_min_events: i64,
    /// Alert when the events received in the last full hour are this many percent below the
    /// same hour a week earlier.
    pub volume_drop_percent: f64,
    /// The volume rule only compares hours whose week-earlier volume is at least this.
    pub volume_min_events: i64,
    /// Alert when this many percent of the Shopify orders created in the last 24 hours (and
    /// older than `purchase_grace_secs`) have no delivered purchase.
    pub purchase_gap_percent: f64,
    /// How long an order may wait for its purchase to be delivered before it counts as
    /// missing for the alert (the browser purchase hold and retries take time), seconds.
    pub purchase_grace_secs: u64,
    /// Alert when the p95 send lag (event_time → delivery) of the last 24 hours is above this,
    /// seconds. Pinterest counts events later than an hour as offline.
    pub max_p95_lag_secs: i64,
    /// How often Pinterest's Event Quality Score is polled (needs `pinterest_oauth_token`
    /// with `ads:read`), seconds.
    pub eqs_interval_secs: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            alert_interval_secs: 60,
            webhook_url: None,
            coverage_min_percent: BTreeMap::from([("em".to_owned(), 50.0)]),
            coverage_event_name: "checkout".to_owned(),
            coverage_min_events: 20,
            volume_drop_percent: 50.0,
            volume_min_events: 20,
            purchase_gap_percent: 10.0,
            purchase_grace_secs: 3600,
            max_p95_lag_secs: 3600,
            eqs_interval_secs: 6 * 3600,
        }
    }
}

impl QualityConfig {
    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.alert_interval_secs == 0 {
            invalid!("quality.alert_interval_secs: must be at least 1");
        }
        if self.eqs_interval_secs < 1 {
            invalid!(
                "quality.eqs_interval_secs: must be at least 1 (mind Pinterest's ads_read quota below 60)"
            );
        }
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            invalid!("quality.webhook_url: must be an http(s) URL");
        }
        for (key, pct) in &self.coverage_min_percent {
            if pincapi_core::event::MatchKeys::bit_of(key).is_none() {
                invalid!(
                    "quality.coverage_min_percent.{key}: unknown match key; one of em, ph, \
                     external_id, click_id, ip_ua, name, address, hashed_maids"
                );
            }
            if !(0.0..=100.0).contains(pct) {
                invalid!("quality.coverage_min_percent.{key}: must be a percentage, 0 to 100");
            }
        }
        if pincapi_core::event::EventName::parse(&self.coverage_event_name).is_none() {
            invalid!("quality.coverage_event_name: not a Pinterest event name");
        }
        for (key, pct) in [
            ("volume_drop_percent", self.volume_drop_percent),
            ("purchase_gap_percent", self.purchase_gap_percent),
        ] {
            if !(0.0..=100.0).contains(&pct) {
                invalid!("quality.{key}: must be a percentage, 0 to 100");
            }
        }
        if self.max_p95_lag_secs <= 0 {
            invalid!("quality.max_p95_lag_secs: must be positive");
        }
        Ok(())
    }
}

/// `https://hooks.slack.com/***`: what `check-config` shows of a webhook URL.
pub fn masked_webhook_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/***")
        }
        None => "***".to_owned(),
    }
}

fn serialize_webhook_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&masked_webhook_url(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_quality_settings_name_their_key() {
        assert!(QualityConfig::default().validate().is_ok());
        let mut c = QualityConfig::default();
        c.coverage_min_percent.insert("email".into(), 50.0);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("quality.coverage_min_percent.email:"),
            "{err}"
        );
        let c = QualityConfig {
            webhook_url: Some("hooks.slack.com/x".into()),
            ..QualityConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("quality.webhook_url:"), "{err}");
        let c = QualityConfig {
            coverage_event_name: "purchase".into(),
            ..QualityConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("quality.coverage_event_name:"), "{err}");
    }
}
