//! `pincapi shopify connect` and `pincapi shopify install-url`: setting a shop up on Shopify's
//! side, from the configuration alone (no `serve` needs to have run).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::clock::SystemClock;
use crate::config::{self, shopify::normalize_domain};
use crate::shopify::access::{ShopAccess, check_key};
use crate::shopify::connect::{ConnectReport, connect as run_connect, webhook_uri};
use crate::shopify::install;
use crate::store::open::{Opener, open_store};

/// Arguments of `pincapi shopify connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// TOML configuration file (environment variables PINCAPI_* override it).
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only this shop (default: every shop with Admin API access).
    #[arg(long)]
    pub shop: Option<String>,
    /// Say what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pincapi shopify connect`.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config.as_deref())?;
    config.validate(false)?;
    let Some(public) = config.public_base() else {
        bail!(
            "public_url: not set; webhook subscriptions point at {{public_url}}/webhooks/shopify \
             (set PINCAPI_PUBLIC_URL, e.g. https://t.shop.example)"
        );
    };
    if let Some(w) = config.public_url_warning() {
        eprintln!("warning: {w}");
    }
    // The configured store keeps the shops' tokens; it is created if it does not exist yet.
    let store = open_store(&config, Opener::Tool).await?.store;
    check_key(&config, store.as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    let access = ShopAccess::new(&config, Some(store), SystemClock::shared())?;
    let mut apis: Vec<_> = access.apis().cloned().collect();
    if let Some(only) = &args.shop {
        let only = normalize_domain(only);
        apis.retain(|a| a.shop().domain == only);
        if apis.is_empty() {
            bail!("--shop: {only} is not configured with Admin API access");
        }
    }
    if apis.is_empty() {
        bail!("no shop has Admin API access; set client_id and client_secret in [[shopify.shops]]");
    }
    let uri = webhook_uri(public);
    let mut reports = Vec::new();
    let mut failed = false;
    for api in apis {
        let shop = api.shop().domain.clone();
        match run_connect(&api, &uri, args.dry_run).await {
            Ok(r) => {
                if !args.json {
                    print_report(&r);
                }
                failed |= !r.missing_scopes.is_empty();
                reports.push(r);
            }
            Err(e) => {
                failed = true;
                eprintln!("error: shop {shop}: {e:#}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &ConnectReport) {
    let would = if r.dry_run { "would be " } else { "" };
    println!("shop {}: webhooks to {}", r.shop, r.uri);
    for s in &r.missing_scopes {
        println!(
            "  missing scope {s}: add it to the app's access scopes and approve the update on \
             the shop"
        );
    }
    for t in &r.created {
        println!("  {t}: {would}created");
    }
    for t in &r.updated {
        println!("  {t}: {would}pointed at {}", r.uri);
    }
    for t in &r.deleted {
        println!("  {t}: duplicate {would}deleted");
    }
    for t in &r.kept {
        println!("  {t}: already set up");
    }
    for t in &r.skipped {
        println!("  skipped {t}");
    }
}

/// Runs `pincapi shopify install-url`.
pub fn install_url(config_path: Option<&Path>, shop: &str) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let domain = normalize_domain(shop);
    if !install::is_shop_host(&domain) {
        bail!("--shop: {domain:?} is not a shop's *.myshopify.com host");
    }
    let shops = config::shopify::shops(&config)?;
    let configured = shops
        .iter()
        .find(|s| s.domain == domain)
        .with_context(|| format!("--shop: {domain} is not configured in [[shopify.shops]]"))?;
    if !matches!(configured.auth, config::shopify::AdminAuth::Install { .. }) {
        bail!(
            "--shop: {domain} is not configured with install = true (and client_id, \
             client_secret)"
        );
    }
    let public = config.public_base().context(
        "public_url: not set; the install redirects back to {public_url}/shopify/callback",
    )?;
    println!("{}", install::install_url(public, &domain));
    Ok(ExitCode::SUCCESS)
}
