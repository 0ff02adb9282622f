//! `pincapi bench --duration 180s`: a sustained run, ingest and delivery together as in
//! production, on each store given, side by side with the HTTP floor, for sizing.
//!
//! Each leg runs for the whole duration with the same load generator: the floor (a minimal
//! axum server that reads the body and answers 202), then the gateway on each store, built by
//! `App::build` from a `store` URL exactly as `serve` builds it and run by `App::run` (delivery
//! workers, back-pressure and retention tasks included) into a fresh in-process sandbox. The
//! traffic is a shop's mix, one event per request as webhooks and beacons arrive: per ten
//! events one purchase with every match key raw, two add-to-carts with email and IP, seven
//! page visits with IP, user agent and click id; spread over `--accounts` ad accounts
//! (10), as an agency's stores each send to their own, each with its own call budget.
//!
//! Measured per leg: events/s accepted and delivered during the load, p50/p99 of the ingest
//! request, CPU seconds per 1000 events (utime + stime of the whole process from
//! `/proc/self/stat`, load generator and sandbox included), and the server's own share: the
//! load generator and the sandbox run on their own runtimes with named threads
//! (`bench-load`, `bench-sandbox`), whose CPU (`/proc/self/task/*/stat`) is taken out. Also
//! peak and steady RSS (the process's VmRSS sampled every second; steady = median of the
//! second half of the load), and store growth per million events (SQLite: database + WAL
//! files; PostgreSQL: `pg_database_size`), measured after delivery drained.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use super::{ACCOUNT, BenchArgs, KEY, serve};
use crate::app::App;
use crate::config::{AccountConfig, Config, Secret, Synchronous};
use crate::sandbox::{Sandbox, SandboxOptions};

/// One leg of the sustained run.
#[derive(Debug, Clone, Serialize)]
pub struct Leg {
    pub name: String,
    /// `None` when the leg could not run; `error` says why.
    pub result: Option<LegResult>,
    pub error: Option<String>,
}

/// What one leg measured.
#[derive(Debug, Clone, Serialize)]
pub struct LegResult {
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub ingested_per_sec: f64,
    /// Events delivered into the sandbox during the load window, per second (the floor has
    /// no delivery: 0).
    pub delivered_per_sec: f64,
    /// Seconds after the load ended until everything accepted was delivered.
    pub drain_secs: f64,
    /// Requests to the sandbox during the load, and after it until drained.
    pub delivery_requests_in_load: u64,
    pub delivery_requests_in_drain: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_secs_per_1000: f64,
    /// The same without the load generator's and the sandbox's threads: the server's own.
    pub server_cpu_secs_per_1000: f64,
    pub peak_rss_mib: f64,
    pub steady_rss_mib: f64,
    /// Store growth per million events accepted, MiB (`None` for the floor).
    pub store_mib_per_million: Option<f64>,
}

/// The whole sustained report.
#[derive(Debug, Clone, Serialize)]
pub struct SustainedReport {
    pub cores: usize,
    pub duration_secs: f64,
    pub concurrency: usize,
    pub accounts: u32,
    pub synchronous: String,
    pub legs: Vec<Leg>,
}

/// Runs the floor, then each store, and prints (and optionally writes) the table. Fails at
/// the end if any leg could not run, after reporting the others.
pub async fn run(args: &BenchArgs, duration: Duration) -> anyhow::Result<()> {
    let dir = super::tempdir()?;
    let stores = if args.stores.is_empty() {
        vec![format!("sqlite://{}", dir.join("sustained.db").display())]
    } else {
        args.stores.clone()
    };
    let aside = Aside::new()?;
    let mut legs = vec![floor_leg(args, duration, &aside).await?];
    for store in &stores {
        let name = store_label(store);
        eprintln!(
            "bench: sustained run on {name} for {} s",
            duration.as_secs()
        );
        match gateway_leg(args, duration, store, &aside).await {
            Ok(result) => legs.push(Leg {
                name,
                result: Some(result),
                error: None,
            }),
            Err(e) => {
                eprintln!("bench: the {name} leg failed: {e:#}");
                legs.push(Leg {
                    name,
                    result: None,
                    error: Some(format!("{e:#}")),
                });
            }
        }
    }
    aside.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let report = SustainedReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        duration_secs: duration.as_secs_f64(),
        concurrency: args.concurrency,
        accounts: args.accounts.max(1),
        synchronous: format!("{:?}", args.synchronous).to_lowercase(),
        legs,
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        render(&report)
    };
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed: Vec<&str> = report
        .legs
        .iter()
        .filter(|l| l.error.is_some())
        .map(|l| l.name.as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "legs not measured: {}",
        failed.join(", ")
    );
    Ok(())
}

/// `sqlite` or `postgres` with the database name, never a password.
fn store_label(url: &str) -> String {
    if url.starts_with("sqlite:") {
        "gateway on SQLite".to_owned()
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "gateway on PostgreSQL".to_owned()
    } else {
        "gateway on an unknown store".to_owned()
    }
}

async fn floor_leg(args: &BenchArgs, duration: Duration, aside: &Aside) -> anyhow::Result<Leg> {
    eprintln!(
        "bench: sustained run on the floor for {} s",
        duration.as_secs()
    );
    let (stop, stopped) = watch::channel(false);
    let addr = serve(super::floor_router(), stopped).await?;
    let sampler = Sampler::start();
    let load = drive(args, duration, &format!("http://{addr}"), aside).await?;
    let samples = sampler.stop().await;
    let _ = stop.send(true);
    let result = summarise(&load, &samples, 0, 0.0, None, duration);
    Ok(Leg {
        name: "floor: minimal axum server".to_owned(),
        result: Some(result),
        error: None,
    })
}

async fn gateway_leg(
    args: &BenchArgs,
    duration: Duration,
    store: &str,
    aside: &Aside,
) -> anyhow::Result<LegResult> {
    let (stop, stopped) = watch::channel(false);
    let sandbox = Sandbox::new(SandboxOptions {
        record_requests: false,
        rate_limit_per_minute: None,
        ..SandboxOptions::default()
    });
    // Bound here, served on the sandbox's own runtime (registered with its reactor there).
    let sandbox_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    sandbox_listener.set_nonblocking(true)?;
    let sandbox_addr = sandbox_listener.local_addr()?;
    {
        let sandbox = sandbox.clone();
        let mut rx = stopped.clone();
        aside.sandbox.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(sandbox_listener) else {
                return;
            };
            let _ = sandbox
                .serve(listener, async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
    }
    let config = Config {
        store: store.to_owned(),
        sqlite_synchronous: match args.synchronous {
            super::SyncArg::Full => Synchronous::Full,
            super::SyncArg::Normal => Synchronous::Normal,
        },
        api_key: Secret::new(KEY),
        pinterest_api_base: format!("http://{sandbox_addr}/v5"),
        ad_account_id: Some(ACCOUNT.into()),
        pinterest_token: Secret::new("bench-token"),
        accounts: (1..args.accounts.max(1))
            .map(|i| AccountConfig {
                id: account_id(i),
                token: Secret::new("bench-token"),
                test: false,
                max_calls_per_minute: None,
            })
            .collect(),
        log: "warn".to_owned(),
        ..Config::default()
    };
    config.validate(true)?;
    // The store is opened the way `serve` opens it, so every backend the build knows runs here.
    let app = App::build(config)
        .await
        .with_context(|| format!("cannot open the store for {}", store_label(store)))?;
    let state = app.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut app_stop = stopped.clone();
    let running = tokio::spawn(app.run(listener, async move {
        let _ = app_stop.changed().await;
    }));

    let store_before = state.store.storage_bytes().await?;
    let sampler = Sampler::start();
    let load = drive(args, duration, &format!("http://{addr}"), aside).await?;
    let at_end_of_load = sandbox.stats();
    let delivered_in_load = at_end_of_load.events_processed;
    // Drain: everything accepted reaches the sandbox.
    let drain_start = Instant::now();
    let accepted = load.events;
    loop {
        let s = sandbox.stats();
        if s.events_processed + s.events_failed >= accepted {
            break;
        }
        anyhow::ensure!(
            drain_start.elapsed() < Duration::from_secs(600),
            "delivery did not drain in 10 minutes ({} of {accepted} events)",
            s.events_processed + s.events_failed
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let requests_in_drain = sandbox.stats().requests - at_end_of_load.requests;
    let samples = sampler.stop().await;
    let store_after = state.store.storage_bytes().await?;
    let _ = stop.send(true);
    running
        .await
        .context("the gateway task failed")?
        .context("the gateway stopped with an error")?;
    let growth = store_after.saturating_sub(store_before) as f64;
    let per_million = (accepted > 0).then(|| growth / accepted as f64 * 1e6 / MIB);
    let mut result = summarise(
        &load,
        &samples,
        delivered_in_load,
        drain_secs,
        per_million,
        duration,
    );
    result.delivery_requests_in_load = at_end_of_load.requests;
    result.delivery_requests_in_drain = requests_in_drain;
    Ok(result)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The i-th ad account of the run; the 0th is the bench's usual one.
fn account_id(i: u32) -> String {
    (ACCOUNT.parse::<u64>().unwrap_or(549_755_885_175) + u64::from(i)).to_string()
}

/// Thread names of the runtimes kept apart from the server's (at most 15 bytes, the kernel's
/// limit for a thread name).
const ASIDE_PREFIX: &str = "bench-";

/// The load generator's and the sandbox's own runtimes, so their CPU can be told apart from
/// the server's. One worker thread each.
struct Aside {
    load: tokio::runtime::Runtime,
    sandbox: tokio::runtime::Runtime,
}

impl Aside {
    fn new() -> anyhow::Result<Aside> {
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
                .context("cannot start a bench runtime")
        };
        Ok(Aside {
            load: runtime("bench-load")?,
            sandbox: runtime("bench-sandbox")?,
        })
    }

    /// Stops both runtimes without waiting (allowed inside an async context).
    fn shutdown(self) {
        self.load.shutdown_background();
        self.sandbox.shutdown_background();
    }
}

/// What the load generator saw.
struct Load {
    requests: u64,
    events: u64,
    errors: u64,
    seconds: f64,
    latency: Histogram,
}

/// `concurrency` clients sending one event per request for `duration`.
async fn drive(
    args: &BenchArgs,
    duration: Duration,
    url: &str,
    aside: &Aside,
) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let counter = Arc::clone(&counter);
        let base = url.to_owned();
        let accounts = u64::from(args.accounts.max(1));
        tasks.push(aside.load.spawn(async move {
            let mut h = Histogram::default();
            let (mut ok, mut errors) = (0u64, 0u64);
            while start.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let account = account_id((n % accounts) as u32);
                let url = format!("{base}/v1/ad_accounts/{account}/events");
                let t = Instant::now();
                let accepted = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(mixed_event_json(n))
                    .send()
                    .await
                    .map(|r| r.status() == 202)
                    .unwrap_or(false);
                h.record(t.elapsed());
                if accepted {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            (h, ok, errors)
        }));
    }
    let mut load = Load {
        requests: 0,
        events: 0,
        errors: 0,
        seconds: 0.0,
        latency: Histogram::default(),
    };
    for t in tasks {
        let (h, ok, errors) = t.await?;
        load.latency.merge(&h);
        load.events += ok;
        load.errors += errors;
    }
    load.seconds = start.elapsed().as_secs_f64();
    load.requests = load.latency.count;
    Ok(load)
}

fn summarise(
    load: &Load,
    samples: &[Sample],
    delivered_in_load: u64,
    drain_secs: f64,
    store_mib_per_million: Option<f64>,
    duration: Duration,
) -> LegResult {
    let (cpu, aside_cpu) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => (b.cpu_secs - a.cpu_secs, b.aside_cpu_secs - a.aside_cpu_secs),
        _ => (0.0, 0.0),
    };
    let per_1000 = |secs: f64| secs / (load.events.max(1) as f64) * 1000.0;
    let peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let half = duration.as_secs_f64() / 2.0;
    let mut steady: Vec<f64> = samples
        .iter()
        .filter(|s| s.at >= half && s.at <= duration.as_secs_f64())
        .map(|s| s.rss_mib)
        .collect();
    steady.sort_by(f64::total_cmp);
    LegResult {
        seconds: load.seconds,
        requests: load.requests,
        errors: load.errors,
        ingested_per_sec: load.events as f64 / load.seconds,
        delivered_per_sec: delivered_in_load as f64 / load.seconds,
        drain_secs,
        delivery_requests_in_load: 0,
        delivery_requests_in_drain: 0,
        p50_ms: load.latency.quantile_ms(0.50),
        p99_ms: load.latency.quantile_ms(0.99),
        cpu_secs_per_1000: per_1000(cpu),
        server_cpu_secs_per_1000: per_1000((cpu - aside_cpu).max(0.0)),
        peak_rss_mib: peak,
        steady_rss_mib: steady.get(steady.len() / 2).copied().unwrap_or(peak),
        store_mib_per_million,
    }
}

/// One reading of the process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the sampler started.
    at: f64,
    cpu_secs: f64,
    /// CPU of the load generator's and the sandbox's threads.
    aside_cpu_secs: f64,
    rss_mib: f64,
}

/// Reads CPU time and RSS every second until stopped; the first and last readings are taken
/// at start and stop.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            let mut samples = vec![sample(t0)];
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if samples
                    .last()
                    .is_none_or(|s| t0.elapsed().as_secs_f64() - s.at >= 1.0)
                {
                    samples.push(sample(t0));
                }
            }
            samples.push(sample(t0));
            samples
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

fn sample(t0: Instant) -> Sample {
    Sample {
        at: t0.elapsed().as_secs_f64(),
        cpu_secs: process_cpu_secs(),
        aside_cpu_secs: threads_cpu_secs(ASIDE_PREFIX),
        rss_mib: rss_mib(),
    }
}

/// utime + stime of this process, seconds (`/proc/self/stat` fields 14 and 15, in USER_HZ,
/// which Linux fixes at 100 for user space); 0 where /proc is missing.
fn process_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |s| stat_cpu_secs(&s))
}

/// utime + stime from a `stat` line of `/proc`, seconds.
pub(super) fn stat_cpu_secs(stat: &str) -> f64 {
    stat_secs(stat, 14, 15)
}

/// The sum of two clock-tick fields (numbered as in proc(5)) of a `stat` line of `/proc`,
/// seconds; 0 when the line is not one.
pub(super) fn stat_secs(stat: &str, a: usize, b: usize) -> f64 {
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state). cutime and cstime are signed in the kernel's format.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<i64>().ok());
    match (ticks(a), ticks(b)) {
        (Some(u), Some(s)) => (u + s).max(0) as f64 / 100.0,
        _ => 0.0,
    }
}

/// utime + stime of this process's threads whose name starts with `prefix`, seconds.
fn threads_cpu_secs(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
        .map(|stat| stat_cpu_secs(&stat))
        .sum()
}

/// Resident memory now (VmRSS), MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Request latencies in buckets 2 % wide, so a long run needs no memory per request.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Histogram::BUCKETS],
            count: 0,
        }
    }
}

impl Histogram {
    /// 1 µs × 1.02^1100 ≈ 2.8 hours: more than any request.
    const BUCKETS: usize = 1100;
    const GROWTH: f64 = 1.02;

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_secs_f64() * 1e6).max(1.0);
        let i = (us.ln() / Self::GROWTH.ln()) as usize;
        self.counts[i.min(Self::BUCKETS - 1)] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The upper bound of the bucket holding quantile `q`, milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((self.count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::GROWTH.powi(i as i32 + 1) / 1000.0;
            }
        }
        Self::GROWTH.powi(Self::BUCKETS as i32) / 1000.0
    }
}

/// The n-th event of a shop's traffic: of every ten, one purchase with every match key raw,
/// two add-to-carts (email and IP), seven page visits (IP, user agent, click id).
pub fn mixed_event_json(n: u64) -> String {
    let now = crate::clock::system_now_ms() / 1000;
    match n % 10 {
        0 => super::event_json(n),
        1 | 2 => format!(
            concat!(
                r#"{{"event_name":"add_to_cart","action_source":"web","event_time":{now},"#,
                r#""event_id":"cart-{n}","event_source_url":"https://shop.example/products/8001","#,
                r#""user_data":{{"em":"Shopper{n}@Example.com","client_ip_address":"198.51.100.7","#,
                r#""client_user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)"}},"#,
                r#""custom_data":{{"currency":"USD","value":"24.00","content_ids":["8001"],"#,
                r#""contents":[{{"id":"8001","item_price":"24.00","quantity":1}}]}}}}"#
            ),
            now = now,
            n = n
        ),
        _ => format!(
            concat!(
                r#"{{"event_name":"page_visit","action_source":"web","event_time":{now},"#,
                r#""event_id":"visit-{n}","event_source_url":"https://shop.example/collections/all","#,
                r#""user_data":{{"client_ip_address":"198.51.100.7","#,
                r#""client_user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)","#,
                r#""click_id":"dj0yJnU9{n}"}}}}"#
            ),
            now = now,
            n = n
        ),
    }
}

/// The report as Markdown.
pub fn render(r: &SustainedReport) -> String {
    let mut s = format!(
        "pincapi bench --duration {}s: {} cores, {} clients, one event per request \
         (per 10: 1 purchase, 2 add-to-carts, 7 page visits) over {} ad accounts, sqlite \
         synchronous={}\n\n",
        r.duration_secs, r.cores, r.concurrency, r.accounts, r.synchronous
    );
    s.push_str(
        "| run | ingested events/s | vs floor | delivered events/s | drain s | p50 ms | p99 ms \
         | CPU s / 1000 events | server CPU s / 1000 events | peak RSS MiB | steady RSS MiB \
         | store MiB / 1M events | errors |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let floor = r
        .legs
        .first()
        .and_then(|l| l.result.as_ref())
        .map_or(0.0, |f| f.ingested_per_sec);
    for leg in &r.legs {
        match &leg.result {
            Some(x) => s.push_str(&format!(
                "| {} | {:.0} | {:.0} % | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.0} | {:.0} | {} | {} |\n",
                leg.name,
                x.ingested_per_sec,
                x.ingested_per_sec / floor.max(1e-9) * 100.0,
                if x.store_mib_per_million.is_some() {
                    format!("{:.0}", x.delivered_per_sec)
                } else {
                    "–".to_owned()
                },
                if x.store_mib_per_million.is_some() {
                    format!("{:.1}", x.drain_secs)
                } else {
                    "–".to_owned()
                },
                x.p50_ms,
                x.p99_ms,
                x.cpu_secs_per_1000,
                x.server_cpu_secs_per_1000,
                x.peak_rss_mib,
                x.steady_rss_mib,
                x.store_mib_per_million
                    .map_or("–".to_owned(), |m| format!("{m:.0}")),
                x.errors,
            )),
            None => s.push_str(&format!(
                "| {} | not measured: {} | | | | | | | | | | | |\n",
                leg.name,
                leg.error
                    .as_deref()
                    .unwrap_or("unknown error")
                    .replace('|', "/")
            )),
        }
    }
    for leg in &r.legs {
        if let Some(x) = leg
            .result
            .as_ref()
            .filter(|x| x.delivery_requests_in_load > 0)
        {
            s.push_str(&format!(
                "\n{}: {} delivery requests during the load ({:.0} events each), {} while \
                 draining.",
                leg.name,
                x.delivery_requests_in_load,
                x.delivered_per_sec * x.seconds / x.delivery_requests_in_load as f64,
                x.delivery_requests_in_drain,
            ));
        }
    }
    s.push_str(
        "\n\nCPU is the whole process; server CPU leaves out the load generator's and the \
         sandbox's threads (their own runtimes), so it is the floor server's or the gateway's \
         own: HTTP, parsing, hashing, the store and delivery.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_finds_quantiles_within_its_bucket_width() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5);
        assert!((49.0..=52.0).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((98.0..=101.5).contains(&p99), "{p99}");
    }

    #[test]
    fn the_traffic_mix_is_valid_ingest_json() {
        for n in 0..10 {
            let v: serde_json::Value = serde_json::from_str(&mixed_event_json(n)).unwrap();
            assert!(v["event_id"].is_string());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_time_and_memory_are_read_from_proc() {
        // Work until the kernel has counted a tick of CPU time for this process.
        let start = Instant::now();
        let mut x = 0u64;
        while process_cpu_secs() == 0.0 && start.elapsed() < Duration::from_secs(10) {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(process_cpu_secs() > 0.0);
        assert!(rss_mib() > 0.0);
        // A named thread's CPU is found by its name, while it runs.
        let own = std::thread::Builder::new()
            .name("cpu-probe-test".into())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while threads_cpu_secs("cpu-probe") == 0.0 && start.elapsed().as_secs() < 10 {
                    for i in 0..1_000_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
                threads_cpu_secs("cpu-probe")
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(own > 0.0);
        assert_eq!(threads_cpu_secs("no-such-thread"), 0.0);
    }
}
