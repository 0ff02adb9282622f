//! Polls Pinterest's Event Quality Score, `GET /ad_accounts/{id}/conversion_eqs`, for each ad
//! account, for the 1-day and 14-day lookbacks and for both the Conversions API and the Tag,
//! and stores the answers for the report and the dashboard. Needs `pinterest_oauth_token` (an
//! OAuth token with `ads:read`; the conversion token is not accepted there); without it the
//! poller does not run and the report says so.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::clock::system_now_ms as now_ms;
use crate::metrics::Metrics;
use crate::pinterest_client::PinterestClient;
use crate::store::{EqsScore, SharedStore};

/// The lookback periods polled.
pub const LOOKBACKS: [&str; 2] = ["1d", "14d"];
/// The ingestion sources polled.
pub const INGESTION_SOURCES: [&str; 2] = ["CONVERSIONS_API", "TAG"];

/// One `EventQualityScore` of the answer (`components/schemas/EventQualityScore`).
#[derive(Debug, Deserialize)]
struct WireScore {
    overall_status: String,
    quality_components: serde_json::Value,
    ingestion_source: String,
    source_platform: String,
    lookback_period: String,
}

/// The poller.
#[derive(Debug)]
pub struct EqsPoller {
    pub store: SharedStore,
    pub client: PinterestClient,
    /// Pinterest's OAuth token (`ads:read`), refreshed.
    pub oauth: Arc<crate::pinterest_oauth::OAuthTokens>,
    pub metrics: Arc<Metrics>,
    pub accounts: Vec<String>,
    pub interval: Duration,
}

impl EqsPoller {
    /// Polls every `interval` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            self.poll_once().await;
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One round over every account, lookback and ingestion source. Returns how many scores
    /// were stored; failures are logged and counted, and the next round tries again.
    pub async fn poll_once(&self) -> usize {
        let mut stored = 0;
        for account in &self.accounts {
            for lookback in LOOKBACKS {
                for source in INGESTION_SOURCES {
                    match self.poll(account, lookback, source).await {
                        Ok(n) => {
                            stored += n;
                            self.count(account, "ok");
                        }
                        Err(e) => {
                            self.count(account, "error");
                            tracing::warn!(ad_account_id = %account, lookback_period = lookback, ingestion_source = source, error = %e, "Could not read Pinterest's Event Quality Score");
                        }
                    }
                }
            }
        }
        stored
    }

    fn count(&self, account: &str, result: &str) {
        self.metrics.inc(
            "pincapi_eqs_polls_total",
            &[("ad_account_id", account), ("result", result)],
            1,
        );
    }

    async fn poll(&self, account: &str, lookback: &str, source: &str) -> Result<usize, String> {
        let path = format!(
            "/ad_accounts/{account}/conversion_eqs?lookback_period={lookback}&ingestion_source={source}"
        );
        let token = self.oauth.token().await.map_err(|e| e.to_string())?;
        let mut answer = self
            .client
            .get(&path, &token)
            .await
            .map_err(|e| format!("{}: {}", e.kind, e.detail))?;
        if answer.status == 401 {
            // Refreshed at once, and asked again.
            let token = self
                .oauth
                .after_rejection(&token)
                .await
                .map_err(|e| e.to_string())?;
            answer = self
                .client
                .get(&path, &token)
                .await
                .map_err(|e| format!("{}: {}", e.kind, e.detail))?;
        }
        if answer.status != 200 {
            let body = String::from_utf8_lossy(&answer.body);
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(format!("HTTP {}: {message}", answer.status));
        }
        let scores: Vec<WireScore> = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the answer is not a list of EventQualityScore: {e}"))?;
        let at = now_ms();
        let rows: Vec<EqsScore> = scores
            .into_iter()
            .map(|s| EqsScore {
                ad_account_id: account.to_owned(),
                ingestion_source: s.ingestion_source,
                lookback_period: s.lookback_period,
                source_platform: s.source_platform,
                overall_status: s.overall_status,
                quality_components: s.quality_components,
                polled_at_ms: at,
            })
            .collect();
        let n = rows.len();
        for r in &rows {
            let status = match r.overall_status.as_str() {
                "GOOD" => 2.0,
                "FAIR" => 1.0,
                _ => 0.0,
            };
            self.metrics.set(
                "pincapi_eqs_status",
                &[
                    ("ad_account_id", account),
                    ("ingestion_source", &r.ingestion_source),
                    ("lookback_period", &r.lookback_period),
                    ("source_platform", &r.source_platform),
                ],
                status,
            );
        }
        self.store.save_eqs(rows).await.map_err(|e| e.to_string())?;
        Ok(n)
    }
}
