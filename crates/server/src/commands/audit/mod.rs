//! `pincapi audit`: what Pinterest sees of a shop today, what it misses, and what fixes it,
//! as one self-contained HTML file and JSON. Read-only: it works before pincapi is live (an
//! agency's pre-sales audit, from the storefront and the shop's and ad account's own figures)
//! and after (with the gateway's store, what CAPI delivered and recovered).
//!
//! Sections: the storefront (`storefront.rs`: home and up to `--pages` pages from
//! `sitemap.xml`, each checked as `tag check` checks it), Shopify (`shopify.rs`: orders and
//! value per day, POS and test shares, the share carrying each match key CAPI would send,
//! webhook subscriptions, consent), Pinterest (`pinterest.rs`: checkouts, value and spend per
//! day as Pinterest reports them, conversion tags, EQS), pincapi (the quality report's
//! headline, when a store is configured) and the verdict ([`verdict`]): a 0–100 score with
//! its formula and the findings, worst first, each with the command or setting that fixes it.
//! Output: `html.rs`.

mod html;
mod pinterest;
mod shopify;
mod storefront;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::egress::AddressArgs;

pub use crate::quality::results::PinterestDay;
pub use pinterest::PinterestSection;
pub use shopify::{KeyShares, ShopifyDay, ShopifySection};
pub use storefront::StorefrontSection;

/// Options of `pincapi audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// The storefront's home page (http or https).
    #[arg(long)]
    pub site: String,
    /// The sitemap to find pages in (default: sitemap.xml beside --site).
    #[arg(long)]
    pub sitemap: Option<String>,
    /// Product and collection pages to check besides the home page.
    #[arg(long, default_value_t = 20)]
    pub pages: usize,
    /// The shop's *.myshopify.com domain, configured with Admin API access (default: the
    /// first configured shop with access, if any).
    #[arg(long)]
    pub shop: Option<String>,
    /// The Pinterest ad account (default: the shop's, or the first configured).
    #[arg(long)]
    pub ad_account: Option<String>,
    /// Days to look back (Pinterest's analytics reach 90 days back).
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Where to write the HTML report.
    #[arg(long, default_value = "pincapi-audit.html")]
    pub out: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also load each page in headless Chromium, through pincapi's filtering proxy.
    #[arg(long)]
    pub browser: bool,
    #[command(flatten)]
    pub addresses: AddressArgs,
    /// The Tag id the pages must use (default: tag_id from the configuration).
    #[arg(long)]
    pub tag_id: Option<String>,
    /// A Pinterest OAuth access token with ads:read (default: the gateway's own OAuth).
    #[arg(long, env = "PINCAPI_AUDIT_PINTEREST_TOKEN", hide_env_values = true)]
    pub pinterest_token: Option<String>,
    /// TOML configuration file: shops, ad accounts, Pinterest base, store.
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
}

/// One finding of the audit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// What was checked (`tag_missing`, `orders_without_email`, `pinterest_misses_orders`, ...).
    pub check: String,
    /// `ok`, `warning` or `error`.
    pub severity: &'static str,
    /// The page URL, shop or ad account the finding is about.
    pub subject: String,
    pub message: String,
    /// The pincapi command or setting that fixes it; empty for `ok`.
    pub fix: String,
}

impl Finding {
    pub fn new(
        check: impl Into<String>,
        severity: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            severity,
            subject: subject.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    fn rank(&self) -> u8 {
        match self.severity {
            "error" => 0,
            "warning" => 1,
            _ => 2,
        }
    }
}

/// What pincapi's own store says, when one is configured (the dashboard's headline).
#[derive(Debug, Clone, Serialize)]
pub struct GatewaySection {
    pub orders: i64,
    pub delivered_purchases: i64,
    pub browser_loss_percent: f64,
    pub recovered_percent: f64,
    pub match_score: f64,
}

/// How the score was made.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub score: u32,
    pub formula: &'static str,
    /// Each part, 0–1.
    pub tag_health: f64,
    pub coverage: f64,
    /// Where coverage comes from: `pincapi` (delivered purchases over orders) or `estimate`.
    pub coverage_source: &'static str,
    pub match_keys: f64,
}

/// The verdict's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub shopify_orders: Option<i64>,
    pub pinterest_checkouts: Option<i64>,
    /// Pinterest-reported checkouts over Shopify's web orders, percent.
    pub reported_share_percent: Option<f64>,
    /// The share of orders Pinterest misses, percent: measured from pincapi's store, else
    /// estimated (see `coverage_source`).
    pub missed_share_percent: f64,
    /// Checkout value over spend, as Pinterest reports them.
    pub roas: Option<f64>,
}

/// The whole audit.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub site: String,
    /// Unix seconds of the first day covered, and of the audit.
    pub since: i64,
    pub generated_at: i64,
    pub days: i64,
    pub score: u32,
    pub findings: Vec<Finding>,
    pub verdict: Verdict,
    pub score_detail: Score,
    pub storefront: StorefrontSection,
    pub shopify: Option<ShopifySection>,
    pub pinterest: Option<PinterestSection>,
    pub gateway: Option<GatewaySection>,
}

/// The Tag alone loses this share of conversions to ITP, blockers and iOS: the midpoint of
/// the 15–30 % range cited for Shopify audiences; used only before pincapi's own figures exist.
pub const TAG_ONLY_LOSS: f64 = 0.2;

pub const FORMULA: &str = "score = 100 × (0.4 × tag_health + 0.3 × coverage + 0.3 × match_keys); \
    tag_health = checked pages without an error / pages checked; coverage = purchases delivered \
    / orders (pincapi's store), or before go-live (1 − 0.2) × tag_health, the Tag alone losing \
    about 20 %; match_keys = 0.5 × email share + 0.2 × phone share + 0.15 × address share + \
    0.15 × IP share of Shopify's orders (0.5 when unknown)";

/// Scores the sections and orders the findings, worst first.
pub fn verdict(
    storefront: &StorefrontSection,
    shopify: Option<&ShopifySection>,
    pinterest: Option<&PinterestSection>,
    gateway: Option<&GatewaySection>,
    findings: &mut Vec<Finding>,
) -> (Score, Verdict) {
    let checked = storefront.pages.len().max(1) as f64;
    let clean = storefront.pages.iter().filter(|p| p.ok).count() as f64;
    let tag_health = if storefront.pages.is_empty() {
        0.0
    } else {
        clean / checked
    };
    let (coverage, coverage_source) = match gateway {
        Some(g) if g.orders > 0 => (
            (g.delivered_purchases as f64 / g.orders as f64).min(1.0),
            "pincapi",
        ),
        _ => ((1.0 - TAG_ONLY_LOSS) * tag_health, "estimate"),
    };
    let match_keys = shopify.map_or(0.5, |s| {
        let k = &s.key_shares;
        (0.5 * k.email + 0.2 * k.phone + 0.15 * k.address + 0.15 * k.ip) / 100.0
    });
    let score = (100.0 * (0.4 * tag_health + 0.3 * coverage + 0.3 * match_keys))
        .round()
        .clamp(0.0, 100.0) as u32;
    let shopify_orders = shopify.map(|s| s.web_orders);
    let pinterest_checkouts = pinterest.map(|p| p.checkouts);
    let reported_share_percent = match (shopify_orders, pinterest_checkouts) {
        (Some(o), Some(c)) if o > 0 => Some(pincapi_core::quality::percent(c, o)),
        _ => None,
    };
    let roas = pinterest.and_then(|p| p.roas);
    let missed_share_percent = round1(100.0 * (1.0 - coverage));
    let subject = pinterest
        .map(|p| format!("ad account {}", p.ad_account_id))
        .or_else(|| shopify.map(|s| s.shop.clone()))
        .unwrap_or_else(|| storefront.site.clone());
    if coverage_source == "pincapi" {
        let sev = if missed_share_percent > 1.0 {
            "warning"
        } else {
            "ok"
        };
        findings.push(Finding::new(
            "pinterest_misses_orders",
            sev,
            subject,
            format!("Pinterest received a purchase for {:.1} % of Shopify's orders (pincapi's store)", 100.0 - missed_share_percent),
            if sev == "ok" { "" } else { "pincapi shopify backfill --since <date>; for orders 7–30 days old, pincapi shopify export-missed --since <date>" },
        ));
    } else {
        findings.push(Finding::new(
            "pinterest_misses_orders",
            "error",
            subject,
            format!(
                "without the Conversions API Pinterest sees only what the Tag reports: an estimated {missed_share_percent:.0} % of orders are missed (Safari ITP, blockers, iOS)"
            ),
            "run pincapi serve with the shop's webhooks (pincapi shopify connect) and an ad account with a conversion token",
        ));
    }
    findings
        .sort_by(|a, b| (a.rank(), &a.check, &a.subject).cmp(&(b.rank(), &b.check, &b.subject)));
    (
        Score {
            score,
            formula: FORMULA,
            tag_health: round3(tag_health),
            coverage: round3(coverage),
            coverage_source,
            match_keys: round3(match_keys),
        },
        Verdict {
            shopify_orders,
            pinterest_checkouts,
            reported_share_percent,
            missed_share_percent,
            roas,
        },
    )
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Runs `pincapi audit`.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let audit = build(&args).await?;
    write(&args, &audit)?;
    println!(
        "Tracking audit of {}: score {}/100",
        audit.site, audit.score
    );
    for f in audit.findings.iter().filter(|f| f.severity != "ok") {
        println!("  {}: {} — {}", f.severity, f.subject, f.message);
        if !f.fix.is_empty() {
            println!("      fix: {}", f.fix);
        }
    }
    println!("Report: {}", args.out.display());
    if let Some(path) = &args.json {
        println!("JSON: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the audit with the configuration `--config` names.
pub async fn build(args: &AuditArgs) -> anyhow::Result<Audit> {
    let config = crate::config::load(args.config.as_deref())?;
    build_with(args, &config).await
}

/// Writes the audit's HTML (and JSON, if asked) where `args` say.
pub fn write(args: &AuditArgs, audit: &Audit) -> anyhow::Result<()> {
    std::fs::write(&args.out, html::render(audit))
        .with_context(|| format!("while writing {}", args.out.display()))?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(audit)?)
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    Ok(())
}

/// Builds the audit with `config` (the demo passes its own).
pub async fn build_with(args: &AuditArgs, config: &crate::config::Config) -> anyhow::Result<Audit> {
    let config = config.clone();
    let now = crate::clock::system_now_ms() / 1000;
    let today = now.div_euclid(86_400) * 86_400;
    let days = args.days.clamp(1, 90);
    let since = today - (days - 1) * 86_400;
    let policy = args.addresses.policy();
    let expected = args.tag_id.clone().or_else(|| config.tag_id.clone());
    let mut findings = Vec::new();
    let storefront = storefront::audit(args, &policy, expected.as_deref(), &mut findings).await?;
    let (shopify, store) = shopify::audit(args, &config, since, now, &mut findings).await?;
    let account = args
        .ad_account
        .clone()
        .or_else(|| shopify.as_ref().and_then(|s| s.ad_account_id.clone()))
        .or_else(|| config.all_accounts().first().map(|a| a.id.clone()));
    let pinterest = match &account {
        Some(account) => {
            pinterest::audit(
                args,
                &config,
                store.clone(),
                account,
                since,
                today,
                &mut findings,
            )
            .await
        }
        None => None,
    };
    let gateway = match &store {
        Some(store) => {
            let report = crate::quality::report::build(store.as_ref(), since, now * 1000, false)
                .await
                .context("while reading the quality report from the store")?;
            (report.headline.orders > 0 || report.headline.delivered_purchases > 0).then_some(
                GatewaySection {
                    orders: report.headline.orders,
                    delivered_purchases: report.headline.delivered_purchases,
                    browser_loss_percent: report.headline.browser_loss_percent,
                    recovered_percent: report.headline.recovered_percent,
                    match_score: report.headline.match_score,
                },
            )
        }
        None => None,
    };
    let (score_detail, verdict) = verdict(
        &storefront,
        shopify.as_ref(),
        pinterest.as_ref(),
        gateway.as_ref(),
        &mut findings,
    );
    Ok(Audit {
        site: args.site.clone(),
        since,
        generated_at: now,
        days,
        score: score_detail.score,
        findings,
        verdict,
        score_detail,
        storefront,
        shopify,
        pinterest,
        gateway,
    })
}
