//! The Shopify commands: `pincapi shopify pixel|backfill|connect|install-url|standin` and
//! `pincapi map shopify`.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use pincapi_core::shopify::{self, MapOptions, Topic};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clock::SystemClock;
use crate::config::shopify::{self as shop_config, Shop, normalize_domain};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::shopify::access::ShopAccess;
use crate::shopify::pixel::{self, PixelOptions};
use crate::shopify::poller::{PollReport, Reconciler};
use crate::shopify::record::{Recorder, Status, decide};
use crate::shopify::standin::{ShopifyStandin, StandinOptions};
use crate::store::Source;
use crate::store::open::{Opener, open_store};

/// `pincapi shopify ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ShopifyCommand {
    /// Print the custom pixel JavaScript to paste into Shopify (Settings → Customer events).
    Pixel {
        /// TOML configuration file (environment variables PINCAPI_* override it).
        #[arg(long, short, env = "PINCAPI_CONFIG")]
        config: Option<PathBuf>,
        /// The Pinterest Tag id (default: `tag_id` from the configuration).
        #[arg(long)]
        tag_id: Option<String>,
        /// The gateway's public URL; events are mirrored to <URL>/collect (default:
        /// `public_url`; none: no mirroring).
        #[arg(long)]
        public_url: Option<String>,
        /// Take the catalog id and value options of this configured shop (default: the first).
        #[arg(long)]
        shop: Option<String>,
    },
    /// List a shop's orders since a date from the Admin API and queue every one the webhooks
    /// missed; orders older than Pinterest's window are reported, not sent.
    Backfill {
        /// TOML configuration file (environment variables PINCAPI_* override it).
        #[arg(long, short, env = "PINCAPI_CONFIG")]
        config: Option<PathBuf>,
        /// First day (YYYY-MM-DD, UTC) or instant (RFC 3339) of orders to list.
        #[arg(long)]
        since: String,
        /// Only this shop (default: every shop with an access_token).
        #[arg(long)]
        shop: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the orders Pinterest never received that are 7–30 days old (too old for the
    /// API) as Pinterest's conversion upload CSV, for Ads Manager → Conversions → Upload file.
    ExportMissed(super::export_missed::ExportMissedArgs),
    /// Set up the shops' webhook subscriptions: exactly one per needed topic, pointing at
    /// {public_url}/webhooks/shopify; names missing access scopes. Works before `serve` ran.
    Connect(super::shopify_connect::ConnectArgs),
    /// Print the URL a merchant opens to install the app on a store of another organisation
    /// (shops configured with install = true).
    InstallUrl {
        /// TOML configuration file (environment variables PINCAPI_* override it).
        #[arg(long, short, env = "PINCAPI_CONFIG")]
        config: Option<PathBuf>,
        /// The shop's *.myshopify.com domain.
        #[arg(long)]
        shop: String,
    },
    /// Run a local stand-in for a shop on Shopify: OAuth, the Admin GraphQL API, webhook
    /// subscriptions and deliveries.
    Standin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8788")]
        listen: SocketAddr,
        /// A legacy static access token it accepts in X-Shopify-Access-Token.
        #[arg(long)]
        token: Option<String>,
        /// The app's client id.
        #[arg(long, default_value = "standin-client-id")]
        client_id: String,
        /// The app's client secret (also signs the webhooks it delivers).
        #[arg(long, default_value = "standin-client-secret")]
        client_secret: String,
        /// The shop's domain it delivers webhooks as.
        #[arg(long, default_value = "standin.myshopify.com")]
        shop: String,
        /// Orders to serve: files holding an order, {"order": ...} or {"orders": [...]}.
        #[arg(long = "orders")]
        orders: Vec<PathBuf>,
    },
}

/// `pincapi map ...`.
#[derive(Debug, clap::Subcommand)]
pub enum MapSource {
    /// Print the Pinterest event JSON the gateway would send for a Shopify webhook payload.
    /// Exits 1 with the reason when nothing would be sent, 2 when the input is unusable.
    Shopify(MapShopifyArgs),
}

/// Arguments of `pincapi map shopify`.
#[derive(Debug, clap::Args)]
pub struct MapShopifyArgs {
    /// The webhook topic, e.g. orders/create.
    pub topic: String,
    /// The payload (a webhook body, or a REST resource such as {"order": ...}); - or nothing
    /// for standard input.
    pub file: Option<PathBuf>,
    /// TOML configuration file, for a shop's mapping options.
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use this configured shop's options (default: the first shop, else the defaults).
    #[arg(long)]
    pub shop: Option<String>,
    /// Do not hold the event against Pinterest's 7-day window (for old sample payloads).
    #[arg(long)]
    pub any_age: bool,
}

/// Runs a `pincapi shopify` command.
pub async fn run(
    command: ShopifyCommand,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    match command {
        ShopifyCommand::Pixel {
            config,
            tag_id,
            public_url,
            shop,
        } => {
            let config = config::load(config.as_deref())?;
            let shop = pick_shop(&config, shop.as_deref())?;
            let tag_id = tag_id
                .or_else(|| config.tag_id.clone())
                .context("tag_id: no Pinterest Tag id; pass --tag-id or set PINCAPI_TAG_ID")?;
            let js = pixel::render(&PixelOptions {
                tag_id,
                public_url: public_url.or_else(|| config.public_base().map(str::to_owned)),
                content_ids: shop.options.content_ids,
                value: shop.options.value,
            })
            .map_err(anyhow::Error::msg)?;
            print!("{js}");
            Ok(ExitCode::SUCCESS)
        }
        ShopifyCommand::Backfill {
            config,
            since,
            shop,
            json,
        } => backfill(config.as_deref(), &since, shop.as_deref(), json).await,
        ShopifyCommand::ExportMissed(args) => super::export_missed::run(args).await,
        ShopifyCommand::Connect(args) => super::shopify_connect::connect(args).await,
        ShopifyCommand::InstallUrl { config, shop } => {
            super::shopify_connect::install_url(config.as_deref(), &shop)
        }
        ShopifyCommand::Standin {
            listen,
            token,
            client_id,
            client_secret,
            shop,
            orders,
        } => {
            let standin = ShopifyStandin::with(StandinOptions {
                shop_domain: normalize_domain(&shop),
                client_id,
                client_secret,
                static_token: token,
                ..StandinOptions::default()
            });
            for path in &orders {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                standin
                    .add(value)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot bind {listen}"))?;
            let addr = listener.local_addr()?;
            println!(
                "Shopify stand-in for {} on http://{addr}/admin/api/{} ({} orders)",
                standin.options().shop_domain,
                shop_config::ADMIN_API_VERSION,
                standin.orders().len()
            );
            println!(
                "Point a shop at it: admin_api_base = \"http://{addr}/admin/api/{}\"",
                shop_config::ADMIN_API_VERSION
            );
            standin.serve(listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `pincapi map ...`.
pub fn map(source: MapSource) -> ExitCode {
    let MapSource::Shopify(args) = source;
    match map_shopify(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn map_shopify(args: &MapShopifyArgs) -> anyhow::Result<ExitCode> {
    let Some(topic) = Topic::parse(&args.topic) else {
        let known: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
        bail!(
            "unknown topic {:?}; one of {}",
            args.topic,
            known.join(", ")
        );
    };
    let body = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    let body = unwrap_rest_resource(body);
    let config = match &args.config {
        Some(path) => config::load(Some(path))?,
        None => Config::default(),
    };
    let shop = pick_shop(&config, args.shop.as_deref())?;
    let mapped = shopify::map(topic, &body, shop.purchase_topic, &shop.options)
        .with_context(|| format!("the payload is not a {topic} payload"))?;
    let max_age = if args.any_age {
        i64::MAX / 4
    } else {
        config.ingest.max_event_age_secs
    };
    let d = decide(
        &shop,
        topic,
        mapped,
        Source::Webhook,
        crate::clock::system_now_ms(),
        max_age,
        0,
    );
    let reason = d.reason.clone().unwrap_or_default();
    match (d.status, d.event) {
        (Status::Accepted, Some(event)) => {
            let value: serde_json::Value = serde_json::from_str(&event.payload)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            if event.test {
                eprintln!("note: a test order: sent with Pinterest's test flag (?test=true)");
            }
            Ok(ExitCode::SUCCESS)
        }
        (status, _) => {
            eprintln!("not sent ({}): {reason}", status.as_str());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Lists orders since `since` for every polling shop (or `only`) and prints the reports.
async fn backfill(
    config_path: Option<&Path>,
    since: &str,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let since_secs = parse_since(since)?;
    let store = open_store(&config, Opener::Tool).await?.store;
    crate::shopify::access::check_key(&config, store.as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    let access = ShopAccess::new(&config, Some(store.clone()), SystemClock::shared())?;
    let mut apis: Vec<_> = access.apis().cloned().collect();
    if let Some(only) = only {
        let only = normalize_domain(only);
        apis.retain(|a| a.shop().domain == only);
        if apis.is_empty() {
            bail!(
                "shop {only} is not configured with Admin API access (client_id and \
                 client_secret, or an access_token)"
            );
        }
    }
    if apis.is_empty() {
        bail!(
            "no shop has Admin API access; set client_id and client_secret in \
             [[shopify.shops]] (or PINCAPI_SHOPIFY__CLIENT_ID and PINCAPI_SHOPIFY__CLIENT_SECRET \
             for the single-shop shorthand)"
        );
    }
    let recorder = Recorder {
        store,
        metrics: Arc::new(Metrics::default()),
        delivery: None,
        max_event_age_secs: config.ingest.max_event_age_secs,
        // Backfilled orders are long past the browser's report; nothing to wait for.
        merge_window_ms: 0,
        clock: SystemClock::shared(),
    };
    let mut reports = Vec::new();
    let mut failed = false;
    for api in apis {
        let domain = api.shop().domain.clone();
        let r = Reconciler::new(api, recorder.clone(), &config.shopify);
        match r.backfill(since_secs).await {
            Ok(report) => {
                if !json {
                    print_report(&report, config.ingest.max_event_age_secs);
                }
                reports.push(report);
            }
            Err(e) => {
                failed = true;
                eprintln!("error: shop {domain}: {e:#}");
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    if !json && !failed && reports.iter().any(|r| r.sent > 0) {
        println!("A running gateway sends the queued events within its poll interval.");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &PollReport, max_age_secs: i64) {
    println!(
        "shop {}: {} orders since {} in {} pages: {} queued (missed by the webhooks), {} \
         already stored, {} skipped, {} ignored, {} not paid yet, {} too old, {} invalid",
        r.shop,
        r.orders,
        fmt_time(r.since),
        r.pages,
        r.sent,
        r.already_stored,
        r.skipped,
        r.ignored,
        r.unpaid,
        r.too_old.len(),
        r.invalid.len()
    );
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    for t in &r.too_old {
        println!(
            "  order {} created {}: too old, not sent (outside Pinterest's {}-day window)",
            t.order_id,
            fmt_time(t.created_at),
            max_age_secs / 86400
        );
    }
    for i in &r.invalid {
        println!("  order at index {i}: not an order's shape, not sent");
    }
}

/// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 instant, as Unix seconds.
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .with_context(|| {
            format!("--since: {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 instant")
        })?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

fn fmt_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// The shop named by `--shop`, else the first configured one, else one with the default
/// options (for `map` and `pixel` without a configuration).
fn pick_shop(config: &Config, name: Option<&str>) -> anyhow::Result<Shop> {
    let shops = shop_config::shops(config)?;
    if let Some(name) = name {
        let name = normalize_domain(name);
        return shops
            .into_iter()
            .find(|s| s.domain == name)
            .with_context(|| format!("--shop: {name} is not configured"));
    }
    Ok(shops.into_iter().next().unwrap_or_else(|| Shop {
        domain: String::new(),
        secrets: Vec::new(),
        ad_account_id: String::new(),
        admin_api_base: String::new(),
        auth: crate::config::shopify::AdminAuth::None,
        purchase_topic: Topic::OrdersCreate,
        options: MapOptions::default(),
    }))
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(buf)
}

/// A REST resource (`{"order": {...}}`) is the webhook body wrapped in one key; unwrap it.
fn unwrap_rest_resource(body: Vec<u8>) -> Vec<u8> {
    const KEYS: [&str; 5] = ["order", "refund", "checkout", "cart", "customer"];
    let Ok(top) = serde_json::from_slice::<HashMap<String, Box<RawValue>>>(&body) else {
        return body;
    };
    match top.iter().next() {
        Some((key, inner))
            if top.len() == 1
                && KEYS.contains(&key.as_str())
                && inner.get().trim_start().starts_with('{') =>
        {
            eprintln!("note: read the REST {key:?} resource inside the payload");
            inner.get().as_bytes().to_vec()
        }
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_day_or_an_instant() {
        assert_eq!(parse_since("2022-01-01").unwrap(), 1_640_995_200);
        assert_eq!(
            parse_since("2021-12-31T19:00:00-05:00").unwrap(),
            1_640_995_200
        );
        assert!(parse_since("last week").is_err());
    }

    #[test]
    fn rest_resources_are_unwrapped_and_webhook_bodies_are_not() {
        assert_eq!(
            unwrap_rest_resource(br#"{"order": {"id": 1}}"#.to_vec()),
            br#"{"id": 1}"#
        );
        let body = br#"{"id": 1, "order": {}}"#.to_vec();
        assert_eq!(unwrap_rest_resource(body.clone()), body);
    }
}
