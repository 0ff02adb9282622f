//! The `pincapi` command: serve the gateway, run the sandbox or the demo, and operator tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pincapi::config::{self, Config};
use pincapi::sandbox::{Sandbox, SandboxOptions};
use pincapi::store::Selection;
use pincapi::store::open::{Opener, open_existing_store, open_store};
use pincapi_core::normalize::{self, HashedField};

// The gateway allocates many small, short-lived strings per event (JSON, hashes); with glibc's
// allocator malloc and free were about 11 % of CPU time in the benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "pincapi",
    version,
    about = "Server-side Pinterest conversions next to the Pinterest Tag"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// TOML configuration file (environment variables PINCAPI_* override it). Given before
    /// or after a subcommand's own subcommand (`pincapi deadletter list -c live.toml`).
    #[arg(long, short, env = "PINCAPI_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Run the local Pinterest sandbox (a stand-in for https://api.pinterest.com/v5).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// Accept only this bearer token (default: any non-empty token).
        #[arg(long)]
        token: Option<String>,
        /// Play Pinterest's OAuth for an app (authorize page, /oauth/token,
        /// /oauth/conversion_token, /ad_accounts); the Ads API then takes only tokens it
        /// issued and not yet expired.
        #[arg(long)]
        oauth: bool,
        /// The app's id and secret in --oauth mode.
        #[arg(long, default_value = "sandbox-app-id")]
        app_id: String,
        #[arg(long, default_value = "sandbox-app-secret")]
        app_secret: String,
        /// Access tokens' lifetime in --oauth mode, seconds.
        #[arg(long, default_value_t = 30 * 86_400)]
        token_lifetime_secs: i64,
        /// The ad accounts the app's user reaches in --oauth mode.
        #[arg(long = "ad-account", default_value = "549755885175")]
        ad_accounts: Vec<String>,
    },
    /// Run the gateway on embedded defaults with the sandbox in-process and send sample traffic.
    Demo(pincapi::commands::demo::DemoArgs),
    /// Print the SHA-256 Pinterest receives for a user_data value.
    Hash {
        /// The user_data key: em, ph, fn, ln, ge, db, ct, st, zp, country, external_id, hashed_maids.
        field: String,
        /// The raw value.
        value: String,
        /// ISO country for phones and postcodes, e.g. US.
        #[arg(long)]
        country: Option<String>,
        /// Also print the normalised value (it is personal data: mind your terminal history).
        #[arg(long)]
        show_normalized: bool,
    },
    /// The offline half of the go-live check: print the effective configuration (secrets
    /// masked) and refuse what `serve` would refuse; `--online` also tests each token.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Also test each conversion token with a ?test=true call (`pincapi status` checks
        /// everything live).
        #[arg(long)]
        online: bool,
        /// Settings only (the default; kept for scripts that pass it).
        #[arg(long, hide = true, conflicts_with = "online")]
        offline: bool,
    },
    /// The go-live check, live: store, tokens, Shopify credentials and webhooks, browser
    /// events, public_url, EQS; each ok, warning or failing with its fix. Exit 1 if anything
    /// fails.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON document: a list of {check, subject, status, detail, fix}.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and act on the dead-letter table.
    Deadletter {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: DeadAction,
    },
    /// A consistent copy of the embedded store, taken while `serve` runs (PostgreSQL: pg_dump).
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write it (refused if it exists).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place as the configured store (refused while `serve` owns it, and
    /// when it holds events).
    Restore {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        from: PathBuf,
    },
    /// Exit 0 when the gateway's /readyz answers 200, 1 otherwise (a container HEALTHCHECK
    /// without curl). The address is `listen` from the configuration, or --url.
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        url: Option<String>,
    },
    /// Create or upgrade the store's schema (`serve` does it too) and print its version.
    Migrate(ConfigArg),
    /// Conversion-quality report from the store `serve` uses: volume, match keys, lag,
    /// Shopify orders against Pinterest, API health, Pinterest's EQS and open alerts.
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// From when: a date (2026-11-20), an RFC 3339 time, or a span back (7d, 24h).
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
        /// Exit with status 1 when an alert is firing (for cron).
        #[arg(long)]
        check: bool,
    },
    /// Measure what the gateway costs per event on this machine, beside the HTTP floor.
    Bench(pincapi::commands::bench::BenchArgs),
    /// The bench's floor server (a minimal axum server), started by `pincapi bench`.
    #[command(hide = true)]
    BenchFloor {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Delete delivered and dropped events older than retention.delivered_days (`serve` does
    /// it hourly; this is for cron or a one-off clean-up).
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pinterest Tag tools: `pincapi tag check URL...` checks storefront pages for the Tag.
    Tag(pincapi::commands::tag_check::TagArgs),
    /// A tracking audit of a shop: the storefront's Tag, Shopify's orders and match keys, what
    /// Pinterest reports; writes one HTML file (and JSON) with a score and the fixes.
    Audit(pincapi::commands::audit::AuditArgs),
    /// Pinterest's OAuth: `connect` (tokens refreshed for ever, conversion tokens minted),
    /// `accounts`.
    Pinterest {
        #[command(subcommand)]
        command: pincapi::commands::pinterest::PinterestCommand,
    },
    /// Shopify tools: the custom pixel, a backfill from the Admin API, a local Admin API stand-in.
    Shopify {
        #[command(subcommand)]
        command: pincapi::commands::shopify::ShopifyCommand,
    },
    /// Print the Pinterest event the gateway would send for a payload, e.g.
    /// `pincapi map shopify orders/create order.json`.
    Map {
        #[command(subcommand)]
        source: pincapi::commands::shopify::MapSource,
    },
    /// Pinterest audiences from the stored events: `preview` the segments, `sync` them once.
    Audiences {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: pincapi::commands::audiences::AudiencesCommand,
    },
    /// Forget a person: never in an audience again, removed from every list at the next sync,
    /// taken out of the stored events.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        who: pincapi::commands::audiences::ForgetArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum DeadAction {
    /// List dead letters, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue.
    Retry {
        #[arg(long = "id")]
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Give up on dead letters for good.
    Drop {
        #[arg(long = "id")]
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(c) => {
            // Registered first: a SIGHUP during start is taken once serving, not fatal.
            let requests = reload_requests();
            let path = c.config.clone();
            let config = config::load(path.as_deref())?;
            init_tracing(&config);
            config.validate(true)?;
            if let Some(w) = config.public_url_warning() {
                tracing::warn!("{w}");
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listen: cannot bind {}", config.listen))?;
            let addr = listener.local_addr()?;
            let app = pincapi::app::App::build(config).await?;
            // Registered before the address is announced: a test or script may signal at once.
            let shutdown = shutdown_signal();
            let reloads = pincapi::reload::Reloads {
                requests,
                load: Box::new(move || {
                    let config = config::load(path.as_deref()).map_err(|e| e.to_string())?;
                    config.validate(true).map_err(|e| e.to_string())?;
                    Ok(config)
                }),
            };
            // One plain line on stdout so scripts and tests that bind port 0 learn the address.
            println!("pincapi listening on http://{addr}");
            app.run_reloading(listener, shutdown, Some(reloads)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox {
            listen,
            token,
            oauth,
            app_id,
            app_secret,
            token_lifetime_secs,
            ad_accounts,
        } => {
            init_tracing(&Config::default());
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot bind {listen}"))?;
            let addr = listener.local_addr()?;
            let shutdown = shutdown_signal();
            println!(
                "Pinterest sandbox on http://{addr}/v5 (requests: http://{addr}/sandbox/requests)"
            );
            println!("Point the gateway at it: PINCAPI_PINTEREST_API_BASE=http://{addr}/v5");
            let sandbox = Sandbox::new(SandboxOptions {
                token,
                oauth_app: oauth.then_some(pincapi::sandbox::oauth::OAuthApp {
                    app_id,
                    app_secret,
                    token_lifetime_secs,
                    ad_accounts,
                }),
                ..SandboxOptions::default()
            });
            sandbox.serve(listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            pincapi::commands::demo::run(args, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hash {
            field,
            value,
            country,
            show_normalized,
        } => Ok(hash(&field, &value, country.as_deref(), show_normalized)),
        Command::CheckConfig { config, online, .. } => check_config(config, !online).await,
        Command::Deadletter { config, action } => deadletter(config, action).await,
        Command::Backup { config, to } => {
            pincapi::commands::backup::backup(config.config.as_deref(), &to)
        }
        Command::Restore { config, from } => {
            pincapi::commands::backup::restore(config.config.as_deref(), &from)
        }
        Command::Healthcheck { config, url } => {
            pincapi::commands::backup::healthcheck(config.config.as_deref(), url).await
        }
        Command::Migrate(c) => {
            let config = config::load(c.config.as_deref())?;
            init_tracing(&config);
            config.validate(false)?;
            let store = open_store(&config, Opener::Tool).await?;
            println!("{}: schema version {}", store.display, store.schema_version);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            config,
            since,
            format,
            check,
        } => report(config, &since, format, check).await,
        Command::Bench(args) => {
            pincapi::commands::bench::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchFloor { listen } => {
            pincapi::commands::bench::serve_floor(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { config, dry_run } => purge(config, dry_run).await,
        Command::Tag(args) => pincapi::commands::tag_check::run(args).await,
        Command::Audit(args) => pincapi::commands::audit::run(args).await,
        Command::Status { config, json } => {
            pincapi::commands::status::run(config.config.as_deref(), json).await
        }
        Command::Pinterest { command } => pincapi::commands::pinterest::run(command).await,
        Command::Shopify { command } => {
            pincapi::commands::shopify::run(command, shutdown_signal()).await
        }
        Command::Map { source } => Ok(pincapi::commands::shopify::map(source)),
        Command::Audiences { config, command } => {
            pincapi::commands::audiences::audiences(config.config.as_deref(), command).await
        }
        Command::Forget { config, who } => {
            pincapi::commands::audiences::forget(config.config.as_deref(), who).await
        }
    }
}

fn hash(field: &str, value: &str, country: Option<&str>, show: bool) -> ExitCode {
    let Some(f) = HashedField::from_key(field) else {
        let keys: Vec<&str> = HashedField::ALL.iter().map(|f| f.key()).collect();
        eprintln!("error: unknown field {field:?}; one of {}", keys.join(", "));
        return ExitCode::from(2);
    };
    match normalize::hash(f, value, country) {
        Ok(h) => {
            if show && let Ok(n) = normalize::normalize(f, value, country) {
                eprintln!("normalized: {n}");
            }
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {field}: {e}; nothing to send");
            ExitCode::from(2)
        }
    }
}

async fn check_config(c: ConfigArg, offline: bool) -> anyhow::Result<ExitCode> {
    let config = config::load(c.config.as_deref())?;
    // The settings `serve` would start with: what it would refuse, this refuses.
    let valid = config.validate(true);
    println!("{}", serde_json::to_string_pretty(&config)?);
    if let Err(e) = valid {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    if offline {
        return Ok(ExitCode::SUCCESS);
    }
    let accounts = config.all_accounts();
    if accounts.is_empty() {
        eprintln!("note: no ad account configured; nothing to test");
        return Ok(ExitCode::SUCCESS);
    }
    let client = pincapi::pinterest_client::PinterestClient::new(
        &config.pinterest_api_base,
        config.request_timeout(),
    )?;
    let mut ok = true;
    for a in &accounts {
        match pincapi::setup::token::check(&client, a).await {
            Ok(msg) => println!("ad account {}: {msg}", a.id),
            Err(msg) => {
                ok = false;
                println!("ad account {}: FAILED: {msg}", a.id);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn deadletter(c: ConfigArg, action: DeadAction) -> anyhow::Result<ExitCode> {
    let config = config::load(c.config.as_deref())?;
    let store = open_existing_store(&config).await?;
    // clap already refuses --id together with --all.
    let selection = |ids: Vec<i64>, all: bool| -> anyhow::Result<Selection> {
        Selection::from_parts(all, ids)
            .ok_or_else(|| anyhow::anyhow!("say which: --id N (repeatable) or --all"))
    };
    match action {
        DeadAction::List { limit, json } => {
            let rows = store.dead_letters(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:>8}  {:<18}  {:<18}  {:<24}  {:>3}  reason",
                    "id", "ad_account", "event_name", "event_id", "try"
                );
                for r in rows {
                    println!(
                        "{:>8}  {:<18}  {:<18}  {:<24}  {:>3}  {}",
                        r.id, r.ad_account_id, r.event_name, r.event_id, r.attempts, r.reason
                    );
                }
            }
        }
        DeadAction::Retry { ids, all } => {
            let n = store
                .retry_dead(selection(ids, all)?, pincapi::clock::system_now_ms())
                .await?;
            println!(
                "{n} dead letters queued again; a running gateway sends them within its poll interval"
            );
        }
        DeadAction::Drop { ids, all } => {
            let n = store.drop_dead(selection(ids, all)?).await?;
            println!("{n} dead letters dropped");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(
    c: ConfigArg,
    since: &str,
    format: ReportFormat,
    check: bool,
) -> anyhow::Result<ExitCode> {
    use pincapi::quality::report;
    let config = config::load(c.config.as_deref())?;
    let now = pincapi::clock::system_now_ms();
    let since = report::parse_since(since, now / 1000).map_err(anyhow::Error::msg)?;
    let store = open_existing_store(&config).await?;
    let eqs = !config.pinterest_oauth_token.is_empty();
    // A fresh order census of the shops with Admin API access (nothing kept between runs).
    let since = report::day_start(since);
    let access = pincapi::shopify::access::ShopAccess::new(
        &config,
        Some(store.clone()),
        pincapi::clock::SystemClock::shared(),
    )?;
    let census =
        pincapi::quality::census::CensusCache::new(&config, &access, std::time::Duration::ZERO)
            .get(since, now)
            .await;
    let r = report::build_with_census(
        store.as_ref(),
        since,
        now,
        eqs,
        census.as_ref().map(|census| report::CensusInput {
            census,
            max_event_age_secs: config.ingest.max_event_age_secs,
        }),
        None,
    )
    .await?;
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        ReportFormat::Table => print!("{}", report::to_table(&r)),
    }
    if check && !r.alerts.is_empty() {
        for a in &r.alerts {
            eprintln!(
                "alert: {} (ad account {}): {}",
                a.rule, a.ad_account_id, a.detail
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

// --- Retention ---

async fn purge(c: ConfigArg, dry_run: bool) -> anyhow::Result<ExitCode> {
    let config = config::load(c.config.as_deref())?;
    config.validate(false)?;
    let r = &config.retention;
    let Some(before) = r.cutoff(pincapi::clock::system_now_ms()) else {
        println!("retention.delivered_days is 0: events are kept for ever, nothing to purge");
        return Ok(ExitCode::SUCCESS);
    };
    let store = open_existing_store(&config).await?;
    if dry_run {
        let n = store.count_purgeable(before).await?;
        println!(
            "{n} delivered or dropped events are older than {} days and would be deleted",
            r.delivered_days
        );
    } else {
        let n = pincapi::retention::purge(&*store, None, before, r.purge_batch).await?;
        println!(
            "{n} delivered or dropped events older than {} days deleted",
            r.delivered_days
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// One message per SIGHUP (registered when called); none where there are no such signals.
fn reload_requests() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGHUP; the configuration is read only at start")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Registers for SIGINT and SIGTERM when called (not when first polled), so a signal that
/// arrives between start-up and the server's first poll of the future is not lost; resolves at
/// the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let registered = signal(SignalKind::terminate())
            .and_then(|term| signal(SignalKind::interrupt()).map(|interrupt| (term, interrupt)));
        async move {
            match registered {
                Ok((mut term, mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
