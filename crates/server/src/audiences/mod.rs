//! Audiences from the event stream: members (hashed emails and MAIDs) learned from stored
//! events, segments over them, and Pinterest customer lists and audiences kept in step.
//!
//! One run ([`run_once`]) is:
//! 1. **scan**: read the events received since the checkpoint (minus an overlap window) and
//!    record what they say about each member (`pincapi_core::audience::facts_from_payload`);
//!    upserts keep the latest times, so a re-read changes nothing and several instances can
//!    scan one database;
//! 2. **sync** (`sync.rs`): per ad account and segment, evaluate the rule, find or create the
//!    customer list (adopting one of the same name, so a crash between a create and storing
//!    its id makes no duplicate), send only the difference with the synced members in bounded
//!    `ADD`/`REMOVE` batches (each success is stored at once, so a crash resumes), and keep the
//!    `CUSTOMER_LIST`, `VISITOR` and `ACTALIKE` audiences.
//!
//! `serve` runs it every `audiences.sync_interval_secs` when `audiences.enabled`;
//! `pincapi audiences preview|sync` and `pincapi forget` are in `cli.rs`.

pub mod client;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use pincapi_core::audience::{IdKind, facts_from_payload};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::sync::SyncError;
use crate::audiences::client::AdsError;
use crate::clock::system_now_ms as now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{SharedStore, StoreError};

pub use self::sync::{SegmentReport, SyncReport};

/// Events read per store call of the scan.
const SCAN_PAGE: usize = 1000;

/// What a scan read.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ScanReport {
    pub events: u64,
    /// Events that carried an email or a MAID.
    pub with_members: u64,
}

/// Reads the events received since the checkpoint (less `overlap_ms`) into the members'
/// facts.
pub async fn scan(store: &SharedStore, overlap_ms: i64) -> Result<ScanReport, StoreError> {
    let from = store
        .audience_checkpoint()
        .await?
        .map_or(0, |c| c.saturating_sub(overlap_ms));
    let mut report = ScanReport::default();
    let mut after = None;
    loop {
        let page = store.audience_events(from, after, SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        let position = (last.received_at_ms, last.id);
        let facts: Vec<_> = page
            .iter()
            .filter_map(|e| facts_from_payload(&e.ad_account_id, &e.payload))
            .collect();
        report.events += page.len() as u64;
        report.with_members += facts.len() as u64;
        store.record_audience_facts(facts, position.0).await?;
        if page.len() < SCAN_PAGE {
            break;
        }
        after = Some(position);
    }
    Ok(report)
}

/// A segment's size as `audiences preview` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub ad_account_id: String,
    pub segment: String,
    pub members: usize,
    pub with_email: usize,
    pub with_maid: usize,
}

/// Scans, then counts each segment's members per ad account. Nothing is sent.
pub async fn preview(config: &Config, store: &SharedStore) -> Result<Vec<Preview>, StoreError> {
    scan(store, overlap_ms(config)).await?;
    let now = now_ms() / 1000;
    let mut out = Vec::new();
    for account in config.all_accounts() {
        let people = store.audience_people(&account.id).await?;
        for segment in config.audiences.segments() {
            let m = segment.members(&people, now);
            out.push(Preview {
                ad_account_id: account.id.clone(),
                segment: segment.name.clone(),
                members: m.email.len() + m.maid.len(),
                with_email: m.of(IdKind::Email).len(),
                with_maid: m.of(IdKind::Maid).len(),
            });
        }
    }
    Ok(out)
}

/// One whole run: scan, then sync every ad account. Progress is stored as it is made, so a
/// run that fails part way resumes where it stopped.
pub async fn run_once(
    config: &Config,
    store: &SharedStore,
    metrics: &Metrics,
    oauth: &crate::pinterest_oauth::OAuthTokens,
) -> Result<SyncReport, SyncError> {
    // The token is checked first: a missing token is a configuration error, not a skip.
    let token = oauth.token().await.map_err(|_| AdsError::MissingToken)?;
    let client =
        client::AdsClient::new(&config.pinterest_api_base, &token, config.request_timeout())?;
    scan(store, overlap_ms(config)).await?;
    match sync::sync(config, store, &client, metrics).await {
        // A token Pinterest refused: refreshed at once, and the sync runs again (it resumes
        // where it stopped).
        Err(SyncError::Pinterest(AdsError::Unauthorized)) => {
            let token = oauth
                .after_rejection(&token)
                .await
                .map_err(|_| AdsError::Unauthorized)?;
            let client = client::AdsClient::new(
                &config.pinterest_api_base,
                &token,
                config.request_timeout(),
            )?;
            sync::sync(config, store, &client, metrics).await
        }
        other => other,
    }
}

fn overlap_ms(config: &Config) -> i64 {
    (config.audiences.scan_overlap_secs as i64).saturating_mul(1000)
}

/// `serve`'s scheduled sync, when `audiences.enabled`: a run every `sync_interval_secs`, the
/// first right away. A failed run is logged as an error and counted in
/// `pincapi_audience_sync_runs_total{result="error"}` every time, never skipped silently.
pub fn spawn_background(state: &AppState, mut stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    if !state.config.audiences.enabled {
        return Vec::new();
    }
    let config = Arc::clone(&state.config);
    let store = state.store.clone();
    let metrics = Arc::clone(&state.metrics);
    let oauth = Arc::clone(&state.pinterest);
    let every = Duration::from_secs(config.audiences.sync_interval_secs.max(1));
    vec![tokio::spawn(async move {
        loop {
            let result = run_once(&config, &store, &metrics, &oauth).await;
            record_run(&metrics, &result);
            match result {
                Ok(report) => tracing::info!(
                    added = report.added(),
                    removed = report.removed(),
                    "Audience sync done"
                ),
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "Audience sync failed; it runs again at the next interval"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })]
}

/// Counts a run in the metrics.
pub fn record_run(metrics: &Metrics, result: &Result<SyncReport, SyncError>) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics.inc(
        "pincapi_audience_sync_runs_total",
        &[("result", outcome)],
        1,
    );
    metrics.set(
        "pincapi_audience_sync_failing",
        &[],
        f64::from(u8::from(result.is_err())),
    );
}
