//! `pincapi bench`: ingest and delivery throughput on this machine, measured side by side
//! with a minimal HTTP server (the floor) in one run, so the figures are ratios that hold on
//! a shared, noisy machine.
//!
//! Everything runs in this one process on loopback: the floor server, the gateway (real
//! router, real SQLite store with `synchronous = FULL`, real delivery workers), the
//! Pinterest sandbox (recording off) and the load generator. The same load generator and
//! concurrency drive the floor and the gateway.
//!
//! `--duration 180s` runs the sustained mode instead ([`sustained`]): ingest and delivery
//! together for minutes on each `--store`, for sizing.

pub mod sustained;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::post;
use serde::Serialize;
use tokio::sync::watch;

use crate::app::App;
use crate::config::{Config, Secret, Synchronous};
use crate::sandbox::{Sandbox, SandboxOptions};

/// Options of `pincapi bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each ingest phase runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent HTTP clients of the load generator (a shop's webhooks and its visitors'
    /// browsers are many independent clients; durable ingest commits what arrives together).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Events queued before the delivery phase.
    #[arg(long, default_value_t = 200_000)]
    pub delivery_events: usize,
    /// SQLite durability during the run (`full` = fsync per group commit).
    #[arg(long, value_enum, default_value = "full")]
    pub synchronous: SyncArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sustained mode: ingest and delivery together for this long on each store (`180s`,
    /// `3m`), side by side with the floor for as long.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// A store for the sustained mode, `sqlite://PATH` or `postgres://...` (a fresh database:
    /// its growth is measured); repeat to compare. Default: SQLite in a temporary directory.
    #[arg(long = "store")]
    pub stores: Vec<String>,
    /// Ad accounts the sustained traffic is spread over (an agency's stores each have their
    /// own; each account has its own call budget at Pinterest).
    #[arg(long, default_value_t = 10)]
    pub accounts: u32,
    /// Also write the report to this file.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// `180`, `180s`, `3m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = match s.strip_suffix('m') {
        Some(d) => (d, 60),
        None => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n * unit)),
        _ => Err(format!(
            "{s:?} is not a duration: use seconds (180s) or minutes (3m)"
        )),
    }
}

/// `--synchronous`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SyncArg {
    Full,
    Normal,
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub requests_per_sec: f64,
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub phases: Vec<Phase>,
    pub delivery_events_per_sec: f64,
    pub delivery_events: usize,
    pub delivery_requests: u64,
    pub single_vs_floor: f64,
    pub peak_rss_mib: f64,
    pub cores: usize,
    pub synchronous: String,
}

const ACCOUNT: &str = "549755885175";
const KEY: &str = "bench-key";

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(duration) = args.duration {
        return sustained::run(&args, duration).await;
    }
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, &args));
    }
    Ok(())
}

/// Runs every phase and returns the figures.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    let dir = tempdir()?;
    let (stop, stopped) = watch::channel(false);

    let floor_addr = serve(floor_router(), stopped.clone()).await?;

    let sandbox = Sandbox::new(SandboxOptions {
        record_requests: false,
        rate_limit_per_minute: None,
        ..SandboxOptions::default()
    });
    let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sandbox_addr = sandbox_listener.local_addr()?;
    {
        let sandbox = sandbox.clone();
        let mut rx = stopped.clone();
        tokio::spawn(async move {
            let _ = sandbox
                .serve(sandbox_listener, async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
    }

    let db = dir.join("bench.db");
    let config = Config {
        store: format!("sqlite://{}", db.display()),
        sqlite_synchronous: match args.synchronous {
            SyncArg::Full => Synchronous::Full,
            SyncArg::Normal => Synchronous::Normal,
        },
        api_key: Secret::new(KEY),
        pinterest_api_base: format!("http://{sandbox_addr}/v5"),
        ad_account_id: Some(ACCOUNT.into()),
        pinterest_token: Secret::new("bench-token"),
        ..Config::default()
    };
    config.validate(true)?;
    let app = App::build(config).await?;
    let state = app.state().clone();
    // Serve the router without delivery workers: ingest phases measure ingest alone.
    let gateway_addr = serve(app.router(), stopped.clone()).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let seconds = Duration::from_secs_f64(args.seconds);
    let counter = Arc::new(AtomicU64::new(0));

    let mut phases = Vec::new();
    let single = |addr: SocketAddr| {
        let counter = Arc::clone(&counter);
        move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            (format!("http://{addr}/v1/events"), event_json(n), 1)
        }
    };
    phases.push(
        load(
            "floor: minimal axum server, 1 event/request",
            &client,
            args.concurrency,
            seconds,
            single(floor_addr),
        )
        .await,
    );
    phases.push(
        load(
            "gateway: 1 event/request, durable",
            &client,
            args.concurrency,
            seconds,
            single(gateway_addr),
        )
        .await,
    );
    let batch_counter = Arc::clone(&counter);
    phases.push(
        load(
            "gateway: 100 events/request, durable",
            &client,
            args.concurrency.min(16),
            seconds,
            move || {
                let start = batch_counter.fetch_add(100, Ordering::Relaxed);
                let mut body = String::with_capacity(100 * 700);
                body.push_str("{\"data\":[");
                for i in 0..100 {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&event_json(start + i));
                }
                body.push_str("]}");
                (format!("http://{gateway_addr}/v1/events"), body, 100)
            },
        )
        .await,
    );

    // Delivery: drain what the ingest phases stored, plus a top-up to the requested count,
    // with the workers started only now, and time it until the sandbox has them all.
    let queued: u64 = state.store.depth().await?.iter().map(|d| d.pending).sum();
    let mut queued = queued as usize;
    while queued < args.delivery_events {
        let n = (args.delivery_events - queued).min(1000);
        let start = counter.fetch_add(n as u64, Ordering::Relaxed);
        let body = format!(
            "{{\"data\":[{}]}}",
            (0..n as u64)
                .map(|i| event_json(start + i))
                .collect::<Vec<_>>()
                .join(",")
        );
        let resp = client
            .post(format!("http://{gateway_addr}/v1/events"))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 202, "top-up refused: {}", resp.status());
        queued += n;
    }
    let before = sandbox.stats();
    let t0 = Instant::now();
    let workers = state.delivery.spawn(stopped.clone());
    loop {
        let s = sandbox.stats();
        if (s.events_processed + s.events_failed - before.events_processed - before.events_failed)
            as usize
            >= queued
        {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "delivery did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivery_secs = t0.elapsed().as_secs_f64();
    let after = sandbox.stats();
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }

    let floor_rps = phases[0].requests_per_sec;
    let report = Report {
        single_vs_floor: phases[1].requests_per_sec / floor_rps.max(1e-9),
        phases,
        delivery_events_per_sec: queued as f64 / delivery_secs,
        delivery_events: queued,
        delivery_requests: after.requests - before.requests,
        peak_rss_mib: peak_rss_mib(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        synchronous: format!("{:?}", args.synchronous).to_lowercase(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// The floor: the smallest useful axum handler that reads the body and answers 202 JSON.
fn floor_router() -> Router {
    let answer = |body: axum::body::Bytes| async move {
        (
            axum::http::StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"accepted": usize::from(!body.is_empty())})),
        )
    };
    Router::new()
        .route("/v1/events", post(answer))
        .route("/v1/ad_accounts/{ad_account_id}/events", post(answer))
}

/// Drives `next()` requests from `concurrency` clients for `duration`.
async fn load<F>(
    name: &str,
    client: &reqwest::Client,
    concurrency: usize,
    duration: Duration,
    next: F,
) -> Phase
where
    F: Fn() -> (String, String, u64) + Clone + Send + Sync + 'static,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut events, mut errors) = (0u64, 0u64);
            while start.elapsed() < duration {
                let (url, body, n) = next();
                let t = Instant::now();
                let ok = client
                    .post(url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status() == 202)
                    .unwrap_or(false);
                lat.push(t.elapsed());
                if ok {
                    events += n;
                } else {
                    errors += 1;
                }
            }
            (lat, events, errors)
        }));
    }
    let (mut lat, mut events, mut errors) = (Vec::new(), 0, 0);
    for t in tasks {
        if let Ok((l, e, x)) = t.await {
            lat.extend(l);
            events += e;
            errors += x;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Phase {
        name: name.to_owned(),
        requests_per_sec: lat.len() as f64 / secs,
        events_per_sec: events as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests: lat.len() as u64,
        errors,
    }
}

/// A realistic purchase with raw match keys, so hashing is part of the cost.
fn event_json(n: u64) -> String {
    let now = crate::clock::system_now_ms() / 1000;
    format!(
        concat!(
            r#"{{"event_name":"checkout","action_source":"web","event_time":{now},"#,
            r#""event_id":"bench-{n}","event_source_url":"https://shop.example/thank-you","#,
            r#""user_data":{{"em":"Shopper{n}@Example.com","ph":"+1 (415) 555-{p:04}","#,
            r#""fn":"Avery","ln":"Lee","ct":"San Francisco","st":"CA","zp":"94103","#,
            r#""country":"US","external_id":"cust-{n}","client_ip_address":"198.51.100.7","#,
            r#""client_user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)","#,
            r#""click_id":"dj0yJnU9{n}"}},"#,
            r#""custom_data":{{"currency":"USD","value":"72.39","order_id":"{n}","num_items":2,"#,
            r#""content_ids":["8001","8002"],"contents":[{{"id":"8001","item_price":"24.00","quantity":1}},"#,
            r#"{{"id":"8002","item_price":"48.39","quantity":1}}]}}}}"#
        ),
        now = now,
        n = n,
        p = n % 10_000
    )
}

async fn serve(router: Router, mut stop: watch::Receiver<bool>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
    Ok(addr)
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "pincapi-bench-{}-{}",
        std::process::id(),
        crate::clock::system_now_ms()
    ));
    std::fs::create_dir_all(&dir).context("while creating the bench directory")?;
    Ok(dir)
}

/// Peak resident memory of this process (VmHWM), MiB; 0 where /proc is missing.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The report as a Markdown table.
pub fn render(r: &Report, args: &BenchArgs) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "pincapi bench: {} cores, {} s per ingest phase, {} clients, sqlite synchronous={}\n\n",
        r.cores, args.seconds, args.concurrency, r.synchronous
    ));
    s.push_str("| phase | requests/s | events/s | p50 ms | p99 ms | errors |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
    for p in &r.phases {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {} |\n",
            p.name, p.requests_per_sec, p.events_per_sec, p.p50_ms, p.p99_ms, p.errors
        ));
    }
    s.push_str(&format!(
        "| delivery into the sandbox ({} events, {} requests) | | {:.0} | | | |\n\n",
        r.delivery_events, r.delivery_requests, r.delivery_events_per_sec
    ));
    s.push_str(&format!(
        "durable single-event ingest = {:.0} % of the floor's requests/s; peak RSS of the whole process {:.0} MiB\n",
        r.single_vs_floor * 100.0,
        r.peak_rss_mib
    ));
    s
}
