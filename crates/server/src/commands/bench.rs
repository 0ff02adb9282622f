//! `pincapi bench`: what the gateway costs per event on this machine, measured side by side
//! with a minimal HTTP server (the floor) in one run, so the figures are ratios and CPU per
//! event, which hold on a shared, noisy machine where absolute rates move.
//!
//! Each server under test is a child process pinned to one core ([`pinned`]): the floor
//! (`pincapi bench-floor`) and real `pincapi serve` gateways, durable (SQLite with
//! `synchronous = full`, or PostgreSQL), with delivery running into the Pinterest sandbox. The
//! bench process, pinned to the other core, holds the load generator ([`http_load`]) and the
//! sandbox. The CPU a phase cost is read from the servers' own counters (and, on PostgreSQL,
//! the database's processes), divided by the events the phase ingested.
//!
//! `--duration 180s` runs the sustained mode instead ([`sustained`]): ingest and delivery
//! together for minutes on each `--store`, in one process, for sizing.

pub mod http_load;
pub mod pinned;
pub mod sustained;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::post;
use serde::Serialize;
use tokio::sync::watch;

use self::http_load::{Bodies, Load, drive};
use self::pinned::{Layout, Server, postgres_cpu_secs};
use crate::sandbox::{Sandbox, SandboxOptions};

/// Options of `pincapi bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each phase measures (after one second of warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent connections of the load generator for one-event requests.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Concurrent connections for 100-event requests.
    #[arg(long, default_value_t = 16)]
    pub batch_concurrency: usize,
    /// The core the servers under test are pinned to (default 0).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// The core the load generator and sandbox are pinned to (default the last).
    #[arg(long)]
    pub load_cpu: Option<usize>,
    /// A PostgreSQL server (`postgres://user@host:port`): adds phases with 1, 2 and 3
    /// gateway instances on one fresh database it creates and drops, with the database's CPU
    /// per event (read from the `postgres` processes, so the server must run on this machine).
    #[arg(long)]
    pub postgres: Option<String>,
    /// Gateway instances of the PostgreSQL phases.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub instances: Vec<usize>,
    /// SQLite durability during the run (`full` = fsync before every answer).
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
    /// Gateway processes (0 for the floor).
    pub instances: usize,
    pub requests_per_sec: f64,
    pub events_per_sec: f64,
    /// Events the sandbox accepted from the gateways during the phase, per second.
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    /// utime + stime of the servers under test over the phase, per event ingested.
    pub cpu_us_per_event: f64,
    /// The same of the PostgreSQL processes, on the PostgreSQL phases.
    pub db_cpu_us_per_event: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub phases: Vec<Phase>,
    pub layout: String,
    pub cores: usize,
    pub seconds: f64,
    pub concurrency: usize,
    pub batch_concurrency: usize,
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
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        render(&report)
    };
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Where the gateways of a phase send to Pinterest.
enum Pinterest {
    Sandbox(SocketAddr),
    /// A port nothing listens on: every call is refused.
    Unreachable(u16),
}

/// Runs every phase and returns the figures.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let layout = Layout::new(args.server_cpu, args.load_cpu);
    layout.pin_bench()?;
    let dir = tempdir()?;
    let (stop, stopped) = watch::channel(false);
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
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let counter = Arc::new(AtomicU64::new(0));
    let single: Bodies = Arc::new(|n| (page_visit_json(n), 1));
    let batch: Bodies = Arc::new(|n| {
        let mut body = String::with_capacity(100 * 600);
        body.push_str("{\"data\":[");
        for i in 0..100 {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&page_visit_json(n * 100 + i));
        }
        body.push_str("]}");
        (body, 100)
    });
    let bench = Bench {
        args,
        layout,
        dir: &dir,
        sandbox: &sandbox,
        counter,
    };
    let sync = format!("{:?}", args.synchronous).to_lowercase();
    let sqlite = |name: &str| format!("sqlite://{}", dir.join(format!("{name}.db")).display());

    let mut phases = Vec::new();
    {
        let floor = Server::start(&layout, &["bench-floor"], &dir.join("floor.log"))?;
        phases.push(
            bench
                .phase(
                    "floor: minimal axum server, 1 event/request",
                    &[floor],
                    &single,
                    args.concurrency,
                    Measured::Floor,
                )
                .await,
        );
    }
    {
        let gw = bench.gateway(
            &sqlite("healthy"),
            &sync,
            &Pinterest::Sandbox(sandbox_addr),
            0,
        )?;
        let gw = [gw];
        phases.push(
            bench
                .phase(
                    "gateway on SQLite: 1 event/request, Pinterest answering",
                    &gw,
                    &single,
                    args.concurrency,
                    Measured::Gateways,
                )
                .await,
        );
        phases.push(
            bench
                .phase(
                    "gateway on SQLite: 100 events/request, Pinterest answering",
                    &gw,
                    &batch,
                    args.batch_concurrency,
                    Measured::Gateways,
                )
                .await,
        );
    }
    {
        let gw = bench.gateway(
            &sqlite("down"),
            &sync,
            &Pinterest::Unreachable(unreachable),
            0,
        )?;
        phases.push(
            bench
                .phase(
                    "gateway on SQLite: 1 event/request, Pinterest unreachable",
                    &[gw],
                    &single,
                    args.concurrency,
                    Measured::Gateways,
                )
                .await,
        );
    }
    if let Some(base) = &args.postgres {
        let db = FreshDatabase::create(base).await?;
        for &n in &args.instances {
            let mut gws = Vec::new();
            for i in 0..n {
                gws.push(bench.gateway(&db.url, &sync, &Pinterest::Sandbox(sandbox_addr), i)?);
            }
            let name = format!(
                "gateway on PostgreSQL: {n} instance{}, 1 event/request",
                if n == 1 { "" } else { "s" }
            );
            phases.push(
                bench
                    .phase(
                        &name,
                        &gws,
                        &single,
                        args.concurrency,
                        Measured::GatewaysAndPostgres,
                    )
                    .await,
            );
        }
        drop(db);
    }
    let _ = stop.send(true);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        phases,
        layout: layout.describe(),
        cores,
        seconds: args.seconds,
        concurrency: args.concurrency,
        batch_concurrency: args.batch_concurrency,
        synchronous: sync,
    })
}

/// What a phase's servers are, for what its figures hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measured {
    /// The floor server: no gateway instances.
    Floor,
    /// Gateways on SQLite.
    Gateways,
    /// Gateways on PostgreSQL: the database's CPU is measured too.
    GatewaysAndPostgres,
}

/// What every phase shares.
struct Bench<'a> {
    args: &'a BenchArgs,
    layout: Layout,
    dir: &'a Path,
    sandbox: &'a Sandbox,
    counter: Arc<AtomicU64>,
}

impl Bench<'_> {
    /// Starts `pincapi serve` on `store`, the default configuration but for what the bench
    /// needs: a queue deep enough that a phase never sheds, and quiet logs.
    fn gateway(
        &self,
        store: &str,
        synchronous: &str,
        pinterest: &Pinterest,
        i: usize,
    ) -> anyhow::Result<Server> {
        let base = match pinterest {
            Pinterest::Sandbox(addr) => format!("http://{addr}/v5"),
            Pinterest::Unreachable(port) => format!("http://127.0.0.1:{port}/v5"),
        };
        let n = self.counter.load(std::sync::atomic::Ordering::Relaxed);
        let config = self.dir.join(format!("gateway-{n}-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nstore = {store:?}\nsqlite_synchronous = \
                 {synchronous:?}\napi_key = {KEY:?}\npinterest_api_base = {base:?}\n\
                 ad_account_id = {ACCOUNT:?}\npinterest_token = \"bench-token\"\n\
                 log = \"warn\"\n\n[ingest]\nmax_queue_depth = 1000000000\n"
            ),
        )?;
        let log = self.dir.join(format!("gateway-{n}-{i}.log"));
        let config = config.to_string_lossy().into_owned();
        Server::start(&self.layout, &["serve", "--config", &config], &log)
    }

    /// One second of warm-up, then `--seconds` measured: rates, latency, and the CPU of
    /// `servers` (and of PostgreSQL on `Measured::GatewaysAndPostgres`) per event ingested.
    async fn phase(
        &self,
        name: &str,
        servers: &[Server],
        bodies: &Bodies,
        concurrency: usize,
        measured: Measured,
    ) -> Phase {
        let targets: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let run = |secs: f64| {
            drive(
                &targets,
                "/v1/events",
                KEY,
                concurrency,
                Duration::from_secs_f64(secs),
                Arc::clone(bodies),
                Arc::clone(&self.counter),
            )
        };
        let _ = run(1.0).await;
        let cpu = || servers.iter().map(Server::cpu_secs).sum::<f64>();
        let (cpu0, db0, sent0) = (cpu(), postgres_cpu_secs(), self.delivered());
        let load: Load = run(self.args.seconds).await;
        let (cpu1, db1, sent1) = (cpu(), postgres_cpu_secs(), self.delivered());
        let per_event = |secs: f64| secs * 1e6 / load.events.max(1) as f64;
        Phase {
            name: name.to_owned(),
            instances: match measured {
                Measured::Floor => 0,
                _ => servers.len(),
            },
            requests_per_sec: load.requests as f64 / load.secs,
            events_per_sec: load.events as f64 / load.secs,
            delivered_per_sec: (sent1 - sent0) as f64 / load.secs,
            p50_ms: load.latency.quantile_ms(0.50),
            p99_ms: load.latency.quantile_ms(0.99),
            requests: load.requests,
            errors: load.errors,
            cpu_us_per_event: per_event(cpu1 - cpu0),
            db_cpu_us_per_event: (measured == Measured::GatewaysAndPostgres)
                .then(|| per_event(db1 - db0)),
        }
    }

    fn delivered(&self) -> u64 {
        self.sandbox.stats().events_processed
    }
}

/// A database of its own on the PostgreSQL server under test, dropped afterwards.
struct FreshDatabase {
    base: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create(base: &str) -> anyhow::Result<FreshDatabase> {
        let base = base.trim_end_matches('/').to_owned();
        let name = format!("pincapi_bench_{}", std::process::id());
        let admin = admin_client(&base).await?;
        // One statement each: several in one call would run as one transaction, which
        // neither may.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .context("creating the bench's database")?;
        }
        let url = format!("{base}/{name}");
        Ok(FreshDatabase { base, name, url })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // The gateways are gone by now; the drop runs on a thread of its own so it can wait.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(admin) = admin_client(&base).await {
                        let _ = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

async fn admin_client(base: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {base}"))?;
    tokio::spawn(conn);
    Ok(client)
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

/// `pincapi bench-floor`: serves the floor on `listen` until killed, after printing the
/// address as `pincapi serve` does.
pub async fn serve_floor(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("floor listening on http://{}", listener.local_addr()?);
    axum::serve(listener, floor_router()).await?;
    Ok(())
}

/// A page visit as a storefront sends it (about 0.5 KB, a raw email to hash, IP, user agent
/// and click id), with a unique event_id.
fn page_visit_json(n: u64) -> String {
    let now = crate::clock::system_now_ms() / 1000;
    format!(
        concat!(
            r#"{{"event_name":"page_visit","action_source":"web","event_time":{now},"#,
            r#""event_id":"pv-{pid}-{n}","#,
            r#""event_source_url":"https://shop.example/products/linen-throw?variant=4471","#,
            r#""user_data":{{"em":"Shopper{n}@Example.com","client_ip_address":"198.51.100.7","#,
            r#""client_user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) "#,
            r#"AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1","#,
            r#""click_id":"dj0yJnU9{n}"}},"custom_data":{{"content_ids":["8001"]}}}}"#
        ),
        now = now,
        pid = std::process::id(),
        n = n
    )
}

/// The report as a Markdown table.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "pincapi bench: {} cores, {}; {} s per phase, {} connections (100-event requests: {}), \
         SQLite synchronous={}\n\n",
        r.cores, r.layout, r.seconds, r.concurrency, r.batch_concurrency, r.synchronous
    );
    s.push_str(
        "| phase | requests/s | events/s | delivered/s | p50 ms | p99 ms | CPU µs/event (user + sys) | × floor | database CPU µs/event | errors |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let floor = r
        .phases
        .first()
        .map_or(1.0, |p| p.cpu_us_per_event.max(1e-9));
    for p in &r.phases {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |\n",
            p.name,
            p.requests_per_sec,
            p.events_per_sec,
            if p.instances == 0 {
                "–".to_owned()
            } else {
                format!("{:.0}", p.delivered_per_sec)
            },
            p.p50_ms,
            p.p99_ms,
            p.cpu_us_per_event,
            p.cpu_us_per_event / floor,
            p.db_cpu_us_per_event
                .map_or("–".to_owned(), |d| format!("{d:.1}")),
            p.errors
        ));
    }
    s
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
