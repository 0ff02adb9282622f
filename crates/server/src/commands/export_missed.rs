//! `pincapi shopify export-missed --since DATE`: the orders Pinterest never received that are
//! too old for the Conversions API (older than `ingest.max_event_age_secs`, 7 days) but young
//! enough for Pinterest's file upload (30 days), as the CSV Ads Manager takes under
//! Conversions → Upload file.
//!
//! Pinterest's help page documents these columns: `email` (hashed SHA-256 is accepted, after
//! lower-casing and trimming, which is Pinterest's normalisation the gateway applies),
//! `madid`, `event_time` (Unix seconds recommended), `event_type` (`checkout`) and
//! `source_type`. The template's order columns `value`, `currency` and `order_id` follow.
//! Orders come from the Admin API (read-only), mapped as the webhook would map them, so an
//! order the buyer's consent keeps from Pinterest is not exported; an order counts as
//! received when its purchase `order-<id>` is delivered in the gateway's store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use pincapi_core::shopify::{self, Mapped, SkipReason};

use super::shopify::parse_since;
use crate::clock::SystemClock;
use crate::config::shopify::normalize_domain;
use crate::shopify::access::ShopAccess;
use crate::shopify::admin::rfc3339;
use crate::shopify::orders::{OrderPages, ParsedOrder};
use crate::store::open::{Opener, open_store};

/// Pinterest takes uploaded conversions up to this old.
pub const UPLOAD_WINDOW_SECS: i64 = 30 * 86_400;
/// The header line of the file.
pub const HEADER: &str = "email,madid,event_time,event_type,source_type,value,currency,order_id";

/// Options of `export-missed`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportMissedArgs {
    /// TOML configuration file (environment variables PINCAPI_* override it).
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// First day (YYYY-MM-DD, UTC) or instant (RFC 3339) of orders to look at; never more
    /// than 30 days back.
    #[arg(long)]
    pub since: String,
    /// Only this shop (default: every shop with Admin API access).
    #[arg(long)]
    pub shop: Option<String>,
    /// Write the CSV here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One row of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub email: String,
    pub event_time: i64,
    pub source_type: &'static str,
    pub value: String,
    pub currency: String,
    pub order_id: String,
}

impl Row {
    fn line(&self) -> String {
        [
            csv(&self.email),
            String::new(),
            self.event_time.to_string(),
            "checkout".to_owned(),
            self.source_type.to_owned(),
            csv(&self.value),
            csv(&self.currency),
            csv(&self.order_id),
        ]
        .join(",")
    }
}

/// A CSV field, quoted when it needs to be.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Runs the command.
pub async fn run(args: ExportMissedArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config::load(args.config.as_deref())?;
    let now = crate::clock::system_now_ms() / 1000;
    let oldest = now - UPLOAD_WINDOW_SECS;
    let newest = now - config.ingest.max_event_age_secs;
    let since = parse_since(&args.since)?.max(oldest);
    let store = open_store(&config, Opener::Tool)
        .await
        .context("export-missed needs the gateway's store, to know what Pinterest received")?
        .store;
    let access = ShopAccess::new(&config, Some(store.clone()), SystemClock::shared())?;
    let mut apis: Vec<_> = access.apis().cloned().collect();
    if let Some(only) = &args.shop {
        let only = normalize_domain(only);
        apis.retain(|a| a.shop().domain == only);
    }
    if apis.is_empty() {
        bail!("no shop with Admin API access (client_id and client_secret, or an access_token)");
    }
    let mut rows = Vec::new();
    let (mut recent, mut received, mut no_email) = (0, 0, 0);
    for api in apis {
        let shop = api.shop().clone();
        let mut pages = OrderPages::new(&api, format!("created_at:>='{}'", rfc3339(since)?), 250);
        let mut candidates = Vec::new();
        while let Some(page) = pages.next().await? {
            for parsed in page {
                let ParsedOrder::Order(order) = parsed else {
                    continue;
                };
                let Some(created) = order.created_at.filter(|c| *c >= since) else {
                    continue;
                };
                if created > newest {
                    recent += 1;
                    continue;
                }
                let topic = shop.purchase_topic;
                let (event, test) = match shopify::map_order(topic, &order, topic, &shop.options) {
                    Ok(Mapped::Event { event, test, .. }) => (event, test),
                    // No key at all (the file needs an email); the buyer's refusal is kept.
                    Ok(Mapped::Skipped { reason, .. }) if reason != SkipReason::Consent => {
                        no_email += 1;
                        continue;
                    }
                    _ => continue,
                };
                if test {
                    continue;
                }
                candidates.push(event);
            }
        }
        let ids: Vec<String> = candidates
            .iter()
            .filter_map(|e| shopify::order_of_event_id(e.event_id.as_str()).map(str::to_owned))
            .collect();
        let found = store
            .census_lookup(shop.domain.clone(), shop.ad_account_id.clone(), ids)
            .await?;
        for (event, f) in candidates.iter().zip(found) {
            if f.purchase_state.as_deref() == Some("delivered") {
                received += 1;
                continue;
            }
            let Some(email) = event.user_data.em.first() else {
                // The file's one customer key is the email (or a mobile ad id, which Shopify
                // orders do not have).
                no_email += 1;
                continue;
            };
            let custom = event.custom_data.as_ref();
            rows.push(Row {
                email: email.as_str().to_owned(),
                event_time: event.event_time.secs(),
                source_type: if event.action_source.as_str() == "offline" {
                    "offline"
                } else {
                    "web"
                },
                value: custom
                    .and_then(|c| c.value.as_ref())
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                currency: custom
                    .and_then(|c| c.currency.as_ref())
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
                order_id: f.order_id,
            });
        }
    }
    rows.sort_by(|a, b| (a.event_time, &a.order_id).cmp(&(b.event_time, &b.order_id)));
    let mut text = String::from(HEADER);
    text.push('\n');
    for r in &rows {
        text.push_str(&r.line());
        text.push('\n');
    }
    match &args.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("while writing {}", path.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    eprintln!(
        "{} orders Pinterest never received, 7–30 days old, written{}; {received} already \
         received; {recent} newer than {} days (send those with pincapi shopify backfill); \
         {no_email} without an email (the file needs one).",
        rows.len(),
        args.out
            .as_ref()
            .map_or(String::new(), |p| format!(" to {}", p.display())),
        config.ingest.max_event_age_secs / 86_400,
    );
    if !rows.is_empty() {
        eprintln!("Upload it in Ads Manager: Conversions → Upload file.");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_the_header_s_columns_in_order() {
        let r = Row {
            email: "86e0b9e5".into(),
            event_time: 1_795_000_000,
            source_type: "web",
            value: "19.99".into(),
            currency: "USD".into(),
            order_id: "1001".into(),
        };
        assert_eq!(r.line(), "86e0b9e5,,1795000000,checkout,web,19.99,USD,1001");
        assert_eq!(r.line().split(',').count(), HEADER.split(',').count());
        assert_eq!(csv("a,b"), "\"a,b\"");
    }
}
