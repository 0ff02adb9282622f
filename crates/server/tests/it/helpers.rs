//! `spawn_app()`: the real gateway and the sandbox on loopback port 0, and verbs to drive them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pincapi::app::App;
use pincapi::clock::{SharedClock, SystemClock};
use pincapi::config::{AccountConfig, Config, Secret};
use pincapi::sandbox::{Faults, RecordedEvent, Sandbox, SandboxOptions};
use pincapi::shopify::standin::{ShopifyStandin, StandinOptions};
use serde_json::{Value, json};
use tokio::sync::watch;

pub const API_KEY: &str = "test-ingest-key";
pub const ADMIN_KEY: &str = "test-admin-key-0001";
pub const ACCOUNT: &str = "549755885175";
pub const TOKEN: &str = "test-conversion-token";

/// A running sandbox.
pub struct TestSandbox {
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    _stop: watch::Sender<bool>,
}

impl TestSandbox {
    pub async fn start(options: SandboxOptions) -> TestSandbox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sandbox = Sandbox::new(options);
        let (stop, mut rx) = watch::channel(false);
        let s = sandbox.clone();
        tokio::spawn(async move {
            let _ = s
                .serve(listener, async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
        TestSandbox {
            addr,
            sandbox,
            _stop: stop,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}/v5", self.addr)
    }

    pub fn fault(&self, faults: Faults) {
        self.sandbox.set_faults(faults);
    }

    /// Processed events, non-test.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.sandbox.events()
    }

    /// How many processed events carry `event_id`.
    pub fn count_of(&self, event_id: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.event["event_id"] == event_id)
            .count()
    }
}

/// A gateway plus its sandbox.
pub struct TestApp {
    pub addr: SocketAddr,
    pub sandbox: TestSandbox,
    pub http: reqwest::Client,
    /// Keeps the store directory alive for the life of the app.
    pub _dir: tempfile::TempDir,
    pub db: PathBuf,
    stop: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<Result<(), pincapi::app::AppError>>>,
}

/// A test config: fast retries and polling so tests finish quickly without sleeping.
pub fn test_config(sandbox_base: &str, db: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: format!("sqlite://{}", db.display()),
        api_key: Secret::new(API_KEY),
        admin_key: Secret::new(ADMIN_KEY),
        pinterest_api_base: sandbox_base.to_owned(),
        ad_account_id: Some(ACCOUNT.into()),
        pinterest_token: Secret::new(TOKEN),
        ..Config::default()
    };
    c.delivery.retry_scale = 0.001;
    c.delivery.poll_interval_ms = 20;
    c.delivery.auth_retry_secs = 1;
    c.delivery.request_timeout_secs = 2;
    // The store's gauges in /metrics are refreshed in the background; tests wait for them.
    c.metrics_refresh_secs = 1;
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SandboxOptions::default(), |_| {}).await
}

pub async fn spawn_app_with(options: SandboxOptions, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(SystemClock::shared(), options, tweak).await
}

/// [`spawn_app_with`] on `clock`: a test that moves a [`ManualClock`] takes no real time to
/// let a minute pass.
///
/// [`ManualClock`]: pincapi::clock::ManualClock
pub async fn spawn_app_on(
    clock: SharedClock,
    options: SandboxOptions,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    spawn_app_at(clock, options, listener, dir, tweak).await
}

/// [`spawn_app_on`] on a listener and a store directory the test made already: it knows the
/// gateway's address (a `public_url`) and its store before the gateway starts.
pub async fn spawn_app_at(
    clock: SharedClock,
    options: SandboxOptions,
    listener: tokio::net::TcpListener,
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let sandbox = TestSandbox::start(options).await;
    spawn_app_beside(clock, sandbox, listener, dir, tweak).await
}

/// [`spawn_app_at`] with a sandbox the test started (and used) already.
pub async fn spawn_app_beside(
    clock: SharedClock,
    sandbox: TestSandbox,
    listener: tokio::net::TcpListener,
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let db = dir.path().join("pincapi.db");
    let mut config = test_config(&sandbox.base(), &db);
    tweak(&mut config);
    config.validate(true).expect("test config is valid");
    let app = App::build_with_clock(config, clock)
        .await
        .expect("app builds");
    let addr = listener.local_addr().unwrap();
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(app.run(listener, async move {
        let _ = rx.changed().await;
    }));
    TestApp {
        addr,
        sandbox,
        http: reqwest::Client::new(),
        _dir: dir,
        db,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a JSON body to `/v1/events` with the ingest key.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        self.post_raw("/v1/events", API_KEY, body.to_string().into_bytes())
            .await
    }

    pub async fn post_raw(&self, path: &str, key: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Waits until the sandbox has processed `n` events in all.
    pub async fn wait_delivered(&self, n: usize) {
        let sb = &self.sandbox;
        wait_for(&format!("{n} events at the sandbox"), || async {
            sb.events().len() >= n
        })
        .await;
    }

    /// Stops the gateway gracefully.
    pub async fn stop(mut self) -> TestSandbox {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        self.sandbox
    }
}

/// Polls `cond` until it holds; panics after 20 s with `what`. Polling waits for a state,
/// it never assumes one after a fixed sleep.
pub async fn wait_for<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_within(what, Duration::from_secs(20), cond).await
}

/// [`wait_for`] with a deadline of its own, for conditions that take Pinterest's minute.
pub async fn wait_for_within<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Current Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A checkout in the ingest shape with raw match keys.
pub fn checkout(event_id: &str) -> Value {
    json!({
        "event_name": "checkout",
        "action_source": "web",
        "event_time": now() - 30,
        "event_id": event_id,
        "event_source_url": "https://shop.example/thank-you",
        "user_data": {
            "em": "  Jane.Doe@Example.COM ",
            "ph": "+1 (555) 123-4567",
            "fn": "Jane", "ln": "Doe", "ct": "San Francisco", "st": "CA", "zp": "94103",
            "country": "US", "external_id": "7012345678901",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)",
            "click_id": "dj0yJnU9abc"
        },
        "custom_data": {
            "currency": "USD", "value": "72.39", "order_id": "5550001", "num_items": 3,
            "content_ids": ["sku-1", "sku-2"],
            "contents": [{"id": "sku-1", "item_price": "12.13", "quantity": 2},
                         {"id": "sku-2", "item_price": "48.13", "quantity": 1}]
        }
    })
}

/// A page visit with only IP + user agent.
pub fn page_visit(event_id: &str) -> Value {
    json!({
        "event_name": "page_visit",
        "action_source": "web",
        "event_time": now() - 5,
        "event_id": event_id,
        "user_data": {"client_ip_address": "198.51.100.4", "client_user_agent": "Mozilla/5.0"}
    })
}

/// The strict request schema our payloads must pass.
pub fn strict_schema() -> jsonschema::Validator {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pinterest/pinterest-events-request.strict.schema.json"
    ));
    let schema: Value = serde_json::from_str(text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// The account config for a second ad account.
pub fn second_account(id: &str, token: &str) -> AccountConfig {
    AccountConfig {
        id: id.into(),
        token: Secret::new(token),
        test: false,
        max_calls_per_minute: None,
    }
}

/// The Admin API access token the Shopify stand-in takes.
pub const SHOPIFY_ADMIN_TOKEN: &str = "shpat_test_admin_token";

/// A running Shopify Admin API stand-in (`pincapi shopify standin`), on port 0.
pub struct Standin {
    pub addr: SocketAddr,
    pub standin: ShopifyStandin,
    _stop: watch::Sender<bool>,
}

impl Standin {
    pub async fn start() -> Standin {
        Standin::start_with(StandinOptions {
            static_token: Some(SHOPIFY_ADMIN_TOKEN.into()),
            ..StandinOptions::default()
        })
        .await
    }

    /// A stand-in set up as `options` say.
    pub async fn start_with(options: StandinOptions) -> Standin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let standin = ShopifyStandin::with(options);
        let (stop, mut rx) = watch::channel(false);
        let s = standin.clone();
        tokio::spawn(async move {
            let _ = s
                .serve(listener, async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
        Standin {
            addr,
            standin,
            _stop: stop,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}/admin/api/2026-04", self.addr)
    }

    pub fn add(&self, order: &Value) {
        self.standin.add(order.clone()).unwrap();
    }

    /// Order listings the poller has asked for so far.
    pub fn polls(&self) -> usize {
        self.standin.requests_of("OrdersPage").len()
    }
}

/// The address a `pincapi serve` child announces on its first line of stdout
/// (`pincapi listening on http://ADDR`); the child must have been spawned with stdout piped.
pub fn announced_address(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("pincapi listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

/// Runs `pincapi tag check --json ARGS` with nothing of the environment but `PATH`; returns the
/// process output and the reports it printed (`null` when it printed none).
pub async fn tag_check(args: Vec<String>) -> (std::process::Output, Value) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pincapi"))
            .args(["tag", "check", "--json"])
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let reports = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, reports)
}
