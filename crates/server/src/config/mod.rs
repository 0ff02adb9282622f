//! Configuration: one [`Config`], loaded by [`load`] from built-in defaults, an optional TOML
//! file and `PINCAPI_*` environment variables, later layers winning.
//!
//! Everything is parsed into real types at load; a missing or malformed setting fails with the
//! key's name. Secrets are [`Secret`]s: their `Debug`, `Display` and `Serialize` print a mask.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod audiences;
pub mod browser;
pub mod env;
pub mod postgres;
pub mod quality;
pub mod retention;
pub mod server;
pub mod shopify;

pub use audiences::AudiencesConfig;
pub use browser::BrowserConfig;
pub use postgres::{PostgresConfig, redact_url, serialize_redacted};
pub use quality::QualityConfig;
pub use retention::RetentionConfig;
pub use server::ServerConfig;
pub use shopify::ShopifyConfig;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The real Pinterest API; the default for `pinterest_api_base`.
pub const PINTEREST_API_BASE: &str = "https://api.pinterest.com/v5";

/// A secret string (token, key). Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A mask that shows only whether it is set and its length class.
    pub fn masked(&self) -> String {
        if self.0.is_empty() {
            "(not set)".to_owned()
        } else {
            format!("****** ({} characters)", self.0.chars().count())
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lossy_string(d).map(Secret)
    }
}

/// One Pinterest ad account the gateway delivers to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The ad account id: digits only, at most 18.
    #[serde(deserialize_with = "lossy_string")]
    pub id: String,
    /// Its conversion access token (or an OAuth token with `ads:write`).
    pub token: Secret,
    /// Send every request with `?test=true`: Pinterest checks but does not record the events.
    #[serde(default)]
    pub test: bool,
    /// Calls per minute to Pinterest for this account; defaults to `delivery.max_calls_per_minute`.
    #[serde(default)]
    pub max_calls_per_minute: Option<u32>,
}

/// Delivery worker settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Events per request, 1..=1000.
    pub batch_size: usize,
    /// Call budget per ad account per minute; Pinterest allows 5,000.
    pub max_calls_per_minute: u32,
    /// Requests in flight per ad account. With Pinterest answering a 1000-event batch in a
    /// few hundred milliseconds, 4 keeps up with thousands of events per second per account.
    pub concurrency: usize,
    /// Timeout of one request to Pinterest, seconds.
    pub request_timeout_secs: u64,
    /// How long a claimed batch stays reserved before another worker may take it, seconds.
    pub lease_secs: u64,
    /// How often an idle worker looks for due events it was not told about, milliseconds
    /// (scheduled retries; events written by another process).
    pub poll_interval_ms: u64,
    /// After sending a batch smaller than `batch_size`, a worker waits this long before it
    /// claims again, so that a busy account's events leave in fuller batches (fewer calls to
    /// Pinterest and fewer store round trips) at the cost of this much latency; a worker that
    /// found nothing to send is woken at once by the next event. Milliseconds, 0..=10000.
    pub linger_ms: u64,
    /// The largest request body sent to Pinterest, bytes: a batch is cut into requests of at
    /// most this size (one event larger than it goes alone).
    pub max_request_bytes: usize,
    /// How long an account stopped by a 401/403 waits before it tries again, seconds.
    pub auth_retry_secs: u64,
    /// Multiplies every retry delay; 1.0 in production. Tests set it small.
    pub retry_scale: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_size: 1000,
            max_calls_per_minute: 4000,
            concurrency: 4,
            request_timeout_secs: 30,
            lease_secs: 120,
            poll_interval_ms: 1000,
            linger_ms: 200,
            max_request_bytes: pincapi_core::pinterest::MAX_REQUEST_BYTES,
            auth_retry_secs: 300,
            retry_scale: 1.0,
        }
    }
}

/// Ingest API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// ISO alpha-2 country used to complete phone numbers when an event names none.
    pub default_country: Option<String>,
    /// Oldest accepted event, seconds (Pinterest's window: 7 days).
    pub max_event_age_secs: i64,
    /// How long a purchase (`checkout`) reported by the browser or by Shopify waits before its
    /// first send, so the other side's report of the same event_id can be merged into it
    /// (the webhook's email and address, the browser's click id, IP and user agent). Seconds;
    /// 60 keeps the send far inside Pinterest's one-hour real-time limit.
    pub merge_window_secs: u64,
    /// How long a purchase reported by the browser (tag.js, the Shopify custom pixel) waits
    /// before its first send when a Shopify shop sends to the same ad account, instead of
    /// `merge_window_secs`: the order webhook can be minutes late (and the poller later still),
    /// and only its copy carries the buyer's email, phone, address and the order's value.
    /// When it arrives the event is sent at once. Seconds; 600 (10 minutes) stays far inside
    /// Pinterest's one-hour real-time limit.
    pub browser_purchase_hold_secs: u64,
    // --- Back-pressure (see `crate::backpressure`) ---
    /// Pending events (across every ad account) at which ingest answers 503 with
    /// `Retry-After` instead of storing more; 0 = never. 1,000,000 is at most about 1 GB of
    /// store (0.7–1 KB per event of a shop's traffic mix, measured by `scripts/sizing`): safe
    /// on a small server, and many hours of a single shop's traffic. See the README's Sizing
    /// for when an agency should raise it.
    pub max_queue_depth: u64,
    /// `Retry-After` of those 503s, seconds.
    pub shed_retry_after_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 5 * 1024 * 1024,
            default_country: None,
            max_event_age_secs: pincapi_core::ingest::TimeWindow::DEFAULT_MAX_AGE,
            merge_window_secs: 60,
            browser_purchase_hold_secs: 600,
            max_queue_depth: 1_000_000,
            shed_retry_after_secs: 30,
        }
    }
}

/// SQLite durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an accepted event survives a power cut.
    Full,
    /// fsync at checkpoints only: an accepted event survives a crash of the process.
    Normal,
}

/// The whole configuration. Unknown keys are refused at every level.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// The URL the world reaches the gateway at (`PINCAPI_PUBLIC_URL`, e.g.
    /// `https://t.shop.example`): Shopify's webhook subscriptions, OAuth callbacks, the custom
    /// pixel's collector mirror and tag.js all use it. Unset: no webhook subscriptions or
    /// installs, no pixel mirroring, and tag.js uses the origin it was loaded from.
    pub public_url: Option<String>,
    /// The key that seals the credentials the gateway obtains (`PINCAPI_SECRET_KEY`, 64 hex
    /// characters); see [`crate::sealed`].
    pub secret_key: Secret,
    /// `sqlite://PATH` (default) or `postgres://...` (printed without its password).
    #[serde(serialize_with = "crate::config::serialize_redacted")]
    pub store: String,
    /// SQLite durability: `full` (default) or `normal`.
    pub sqlite_synchronous: Synchronous,
    /// Bearer key for `POST /v1/events`.
    pub api_key: Secret,
    /// Bearer key for admin endpoints.
    pub admin_key: Secret,
    /// Pinterest API base URL, ending in `/v5`.
    #[serde(serialize_with = "crate::config::serialize_redacted")]
    pub pinterest_api_base: String,
    /// Single-account shorthand: the ad account id.
    #[serde(deserialize_with = "lossy_opt_string")]
    pub ad_account_id: Option<String>,
    /// Single-account shorthand: its token.
    pub pinterest_token: Secret,
    /// Single-account shorthand: test mode.
    pub test: bool,
    /// OAuth access token for the Ads API calls (audiences and customer lists need `ads:write`,
    /// Event Quality Score needs `ads:read`). The conversion token is not accepted there.
    pub pinterest_oauth_token: Secret,
    /// Further ad accounts.
    pub accounts: Vec<AccountConfig>,
    /// The Pinterest app `pincapi pinterest connect` authorizes (`PINCAPI_PINTEREST_APP_ID`):
    /// its OAuth tokens are refreshed for ever and mint conversion tokens.
    #[serde(deserialize_with = "lossy_opt_string")]
    pub pinterest_app_id: Option<String>,
    /// The app's secret (`PINCAPI_PINTEREST_APP_SECRET`).
    pub pinterest_app_secret: Secret,
    /// Pinterest's authorize page.
    pub pinterest_oauth_authorize_url: String,
    pub delivery: DeliveryConfig,
    pub ingest: IngestConfig,
    /// Single-shop shorthand: the Shopify webhook signing secret.
    pub shopify_webhook_secret: Secret,
    /// Single-shop shorthand: the shop's `*.myshopify.com` domain.
    pub shopify_shop_domain: Option<String>,
    /// The Pinterest Tag id the browser side loads.
    #[serde(deserialize_with = "lossy_opt_string")]
    pub tag_id: Option<String>,
    /// Origins allowed to call the browser collector, comma-separated.
    pub allowed_origins: Option<String>,
    pub shopify: ShopifyConfig,
    pub browser: BrowserConfig,
    /// `[postgres]`: the connection pool, when `store` is a PostgreSQL URL.
    pub postgres: PostgresConfig,
    pub quality: QualityConfig,
    pub audiences: AudiencesConfig,
    pub retention: RetentionConfig,
    /// `[server]`: what a client may make the listener hold.
    pub server: ServerConfig,
    /// Bearer key `/metrics` asks for; unset, `/metrics` is open (bind it to a private
    /// address, or set this).
    pub metrics_key: Secret,
    /// How often the gauges `/metrics` takes from the store are refreshed, seconds.
    pub metrics_refresh_secs: u64,
    /// Seconds a graceful stop (SIGTERM, Ctrl-C) waits for requests in flight before it stops
    /// anyway.
    pub shutdown_grace_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            secret_key: Secret::default(),
            store: "sqlite://pincapi.db".to_owned(),
            sqlite_synchronous: Synchronous::Full,
            api_key: Secret::default(),
            admin_key: Secret::default(),
            pinterest_api_base: PINTEREST_API_BASE.to_owned(),
            ad_account_id: None,
            pinterest_token: Secret::default(),
            test: false,
            pinterest_oauth_token: Secret::default(),
            accounts: Vec::new(),
            pinterest_app_id: None,
            pinterest_app_secret: Secret::default(),
            pinterest_oauth_authorize_url: "https://www.pinterest.com/oauth/".to_owned(),
            delivery: DeliveryConfig::default(),
            ingest: IngestConfig::default(),
            shopify_webhook_secret: Secret::default(),
            shopify_shop_domain: None,
            tag_id: None,
            allowed_origins: None,
            shopify: Default::default(),
            browser: Default::default(),
            postgres: Default::default(),
            quality: Default::default(),
            audiences: Default::default(),
            retention: Default::default(),
            server: ServerConfig::default(),
            metrics_key: Secret::default(),
            metrics_refresh_secs: 15,
            shutdown_grace_secs: 10,
            log: "info".to_owned(),
            log_format: "text".to_owned(),
        }
    }
}

/// The shortest admin key `validate` takes.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

/// A setting that cannot be used; the message starts with the key's name
/// (`delivery.batch_size: must be 1..=1000`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error whose text starts with the key, as every configuration error does.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

/// Returns a [`ConfigError`] from a format string that starts with the key.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::config::ConfigError::new(format!($($arg)*)))
    };
}
pub(crate) use invalid;

/// Where the store lives, parsed from `store`. `Debug` hides a PostgreSQL password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL, as given (it may hold a password: print it
    /// with [`crate::config::redact_url`]).
    Postgres(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::config::redact_url(url))
                .finish(),
        }
    }
}

impl Config {
    /// All ad accounts: the single-account shorthand first, then `accounts`.
    pub fn all_accounts(&self) -> Vec<AccountConfig> {
        let mut v = Vec::new();
        if let Some(id) = &self.ad_account_id {
            v.push(AccountConfig {
                id: id.clone(),
                token: self.pinterest_token.clone(),
                test: self.test,
                max_calls_per_minute: None,
            });
        }
        v.extend(self.accounts.iter().cloned());
        v
    }

    /// The store location.
    pub fn store_url(&self) -> Result<StoreUrl, ConfigError> {
        parse_store_url(&self.store)
    }

    /// Checks what the types cannot: ids, ranges, required settings for `serve`. Errors name
    /// the key.
    pub fn validate(&self, serving: bool) -> Result<(), ConfigError> {
        self.store_url()?;
        let base = self.pinterest_api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            invalid!("pinterest_api_base: must be an http(s) URL, e.g. {PINTEREST_API_BASE}");
        }
        let accounts = self.all_accounts();
        // Accounts connected with `pincapi pinterest connect` are in the store, not here.
        if serving && accounts.is_empty() && self.pinterest_app_id.is_none() {
            invalid!(
                "ad_account_id: no Pinterest ad account configured; set PINCAPI_AD_ACCOUNT_ID and \
                 PINCAPI_PINTEREST_TOKEN, or [[accounts]] in the config file"
            );
        }
        if self.ad_account_id.is_none() && !self.pinterest_token.is_empty() {
            invalid!("ad_account_id: pinterest_token is set but ad_account_id is not");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in accounts.iter().enumerate() {
            let key = if self.ad_account_id.is_some() && i == 0 {
                "ad_account_id".to_owned()
            } else {
                format!(
                    "accounts[{}].id",
                    i - usize::from(self.ad_account_id.is_some())
                )
            };
            if a.id.is_empty() || a.id.len() > 18 || !a.id.bytes().all(|b| b.is_ascii_digit()) {
                invalid!("{key}: must be digits only, at most 18 (Pinterest's ad account id)");
            }
            if !seen.insert(a.id.clone()) {
                invalid!("{key}: ad account {} is configured twice", a.id);
            }
            if a.token.is_empty() {
                let tkey = if key == "ad_account_id" {
                    "pinterest_token".to_owned()
                } else {
                    key.replace(".id", ".token")
                };
                invalid!("{tkey}: no Pinterest token for ad account {}", a.id);
            }
        }
        if !self.admin_key.is_empty()
            && self.admin_key.expose().chars().count() < MIN_ADMIN_KEY_CHARS
        {
            invalid!(
                "admin_key: must be at least {MIN_ADMIN_KEY_CHARS} characters (it signs in to \
                 the dashboard; a short key is guessed); e.g. openssl rand -hex 16"
            );
        }
        if serving && self.api_key.is_empty() {
            invalid!("api_key: set PINCAPI_API_KEY (the bearer key clients send to /v1/events)");
        }
        let d = &self.delivery;
        if !(1..=pincapi_core::pinterest::MAX_BATCH).contains(&d.batch_size) {
            invalid!("delivery.batch_size: must be 1..=1000");
        }
        if d.max_calls_per_minute == 0 || d.max_calls_per_minute > 5000 {
            invalid!("delivery.max_calls_per_minute: must be 1..=5000 (Pinterest's limit)");
        }
        if d.concurrency == 0 || d.concurrency > 64 {
            invalid!("delivery.concurrency: must be 1..=64");
        }
        // A worker sends only while `now + request timeout + 5 s` is within its lease (see
        // `delivery`), so the lease must hold a request with that margin, and a second one
        // after a 400 splits the batch.
        if d.lease_secs < 2 * d.request_timeout_secs + 5 {
            invalid!(
                "delivery.lease_secs: must be at least 2 x delivery.request_timeout_secs + 5 \
                 ({}), so a claimed batch is answered before another worker may take it",
                2 * d.request_timeout_secs + 5
            );
        }
        if !(d.retry_scale > 0.0 && d.retry_scale <= 10.0) {
            invalid!("delivery.retry_scale: must be in (0, 10]");
        }
        if d.linger_ms > 10_000 {
            invalid!("delivery.linger_ms: must be at most 10000");
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&d.max_request_bytes) {
            invalid!("delivery.max_request_bytes: must be 65536..=67108864");
        }
        if let Some(c) = &self.ingest.default_country
            && pincapi_core::normalize::calling_code(c).is_none()
        {
            invalid!("ingest.default_country: {c:?} is not an ISO 3166 alpha-2 country code");
        }
        self.server.validate()?;
        if !(1..=3600).contains(&self.metrics_refresh_secs) {
            invalid!("metrics_refresh_secs: must be 1..=3600");
        }
        if !(1..=600).contains(&self.shutdown_grace_secs) {
            invalid!("shutdown_grace_secs: must be 1..=600");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            invalid!("log_format: must be text or json");
        }
        self.validate_public_url()?;
        if !self.secret_key.is_empty() {
            crate::sealed::SecretKey::from_hex(self.secret_key.expose())
                .map_err(|e| ConfigError::new(format!("secret_key: {e}")))?;
        }
        ShopifyConfig::validate(self)?;
        crate::config::PostgresConfig::validate(self)?;
        self.quality.validate()?;
        self.audiences.validate()?;
        if !(1..=3600).contains(&self.ingest.shed_retry_after_secs) {
            invalid!("ingest.shed_retry_after_secs: must be 1..=3600");
        }
        RetentionConfig::validate(self)?;
        Ok(())
    }

    /// `public_url` without its trailing slash, if set.
    pub fn public_base(&self) -> Option<&str> {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
    }

    /// `public_url` is an origin (no path, query or fragment); plain `http://` and loopback
    /// hosts are accepted for tests and the stand-in, with a warning at start (Shopify
    /// delivers webhooks to HTTPS only). The keys it replaced are refused by name.
    fn validate_public_url(&self) -> Result<(), ConfigError> {
        if self.shopify.gateway_url.is_some() {
            invalid!(
                "shopify.gateway_url: replaced by the top-level public_url (PINCAPI_PUBLIC_URL); \
                 move the value there"
            );
        }
        if self.browser.public_url.is_some() {
            invalid!(
                "browser.public_url: replaced by the top-level public_url (PINCAPI_PUBLIC_URL); \
                 move the value there"
            );
        }
        let Some(base) = self.public_base() else {
            return Ok(());
        };
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']) => Ok(()),
            _ => invalid!(
                "public_url: must be an http(s) origin without a path, e.g. https://t.shop.example"
            ),
        }
    }

    /// Why `public_url` will not do for Shopify's webhook deliveries, if it will not: they go
    /// to HTTPS URLs on public hosts only. For a warning at start.
    pub fn public_url_warning(&self) -> Option<String> {
        let base = self.public_base()?;
        let host = base.split("://").nth(1).unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !base.starts_with("https://") {
            Some(format!(
                "public_url {base} is not HTTPS; Shopify delivers webhooks only to HTTPS URLs"
            ))
        } else if host == "localhost" || host.starts_with("127.") || host == "[::1]" {
            Some(format!(
                "public_url {base} is a loopback address; Shopify cannot reach it"
            ))
        } else {
            None
        }
    }

    /// Request timeout as a Duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.delivery.request_timeout_secs)
    }
}

/// Parses `sqlite://PATH` (or `sqlite:PATH`) and `postgres://...` (or `postgresql://...`).
pub fn parse_store_url(s: &str) -> Result<StoreUrl, ConfigError> {
    if let Some(rest) = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"))
    {
        if rest.is_empty() {
            invalid!("store: sqlite:// needs a file path, e.g. sqlite://pincapi.db");
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(rest)));
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        if let Err(e) = s.parse::<tokio_postgres::Config>() {
            invalid!(
                "store: {} is not a usable PostgreSQL URL: {e}",
                crate::config::redact_url(s)
            );
        }
        return Ok(StoreUrl::Postgres(s.to_owned()));
    }
    invalid!("store: must be sqlite://PATH or postgres://USER@HOST/DB, got an unsupported scheme")
}

/// Loads the configuration: defaults, then `file` (if given, it must exist), then `PINCAPI_*`
/// variables. Nested keys use `__`, e.g. `PINCAPI_DELIVERY__BATCH_SIZE=500`.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    // Defaults come from `#[serde(default)]` (Config::default()), not from a serialised
    // Config: serialising would write the secrets' masks in as values.
    let mut fig = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            invalid!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let vars: Vec<(String, String)> = std::env::vars().collect();
    env::check(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    fig = fig.merge(
        Env::prefixed("PINCAPI_")
            .ignore(&[
                "config",
                "shared_dir",
                "skip_browser_tests",
                "python_sdk",
                "pinterest_refresh_token",
            ])
            .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__"),
    );
    let config: Config = fig.extract().map_err(|e| {
        let key = e.path.join(".");
        let key = if key.is_empty() {
            "config".to_owned()
        } else {
            key
        };
        ConfigError::new(format!("{key}: {}", e.kind))
    })?;
    Ok(config)
}

/// Loads from an explicit TOML string (tests and `check-config`); no environment.
pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
    Figment::from(Toml::string(toml)).extract().map_err(|e| {
        let key = e.path.join(".");
        let key = if key.is_empty() {
            "config".to_owned()
        } else {
            key
        };
        ConfigError::new(format!("{key}: {}", e.kind))
    })
}

/// A string, or a number or boolean taken as its text: environment values such as
/// `549755885175` reach us as numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lossy {
    S(String),
    U(u64),
    I(i64),
    F(f64),
    B(bool),
}

impl Lossy {
    fn into_string(self) -> String {
        match self {
            Lossy::S(s) => s,
            Lossy::U(u) => u.to_string(),
            Lossy::I(i) => i.to_string(),
            Lossy::F(f) => f.to_string(),
            Lossy::B(b) => b.to_string(),
        }
    }
}

fn lossy_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Lossy::deserialize(d)
        .map(Lossy::into_string)
        .map_err(|_| serde::de::Error::custom("expected a string"))
}

fn lossy_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<Lossy>::deserialize(d)
        .map(|v| v.map(Lossy::into_string).filter(|s| !s.is_empty()))
        .map_err(|_| serde::de::Error::custom("expected a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid_and_says_the_defaults() {
        let text = include_str!("../../../../config.example.toml");
        let c = from_toml(text).expect("config.example.toml parses");
        c.validate(false).expect("config.example.toml is valid");
        let d = Config::default();
        assert_eq!(
            c.shopify.webhook_check_interval_secs,
            d.shopify.webhook_check_interval_secs
        );
        assert_eq!(c.shopify.bulk_threshold, d.shopify.bulk_threshold);
        assert_eq!(c.shopify.consent, d.shopify.consent);
        // The replaced keys are refused by name.
        let e = from_toml("[shopify]\ngateway_url = \"https://t.example\"\n")
            .unwrap()
            .validate(false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("shopify.gateway_url: replaced by the top-level public_url"),
            "{e}"
        );
        let e = from_toml("public_url = \"https://t.example/path\"\n")
            .unwrap()
            .validate(false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("public_url:"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("pina_very_secret");
        assert!(!format!("{s:?} {s}").contains("very_secret"));
        assert!(!serde_json::to_string(&s).unwrap().contains("very_secret"));
    }

    #[test]
    fn a_bad_setting_names_its_key() {
        let err = from_toml("[delivery]\nbatch_size = \"many\"").unwrap_err();
        assert!(format!("{err:#}").contains("batch_size"), "{err:#}");
        let c = from_toml("ad_account_id = \"12x\"\npinterest_token = \"t\"").unwrap();
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.starts_with("ad_account_id:"), "{err}");
    }

    #[test]
    fn serve_needs_an_account_and_an_api_key() {
        let c = Config::default();
        assert!(
            c.validate(true)
                .unwrap_err()
                .to_string()
                .starts_with("ad_account_id")
        );
        let c = from_toml("ad_account_id = 549755885175\npinterest_token = \"t\"").unwrap();
        assert_eq!(c.all_accounts()[0].id, "549755885175");
        assert!(
            c.validate(true)
                .unwrap_err()
                .to_string()
                .starts_with("api_key")
        );
    }

    #[test]
    fn store_urls_parse() {
        assert_eq!(
            parse_store_url("sqlite://data/p.db").unwrap(),
            StoreUrl::Sqlite("data/p.db".into())
        );
        assert!(parse_store_url("mysql://x").is_err());
        assert_eq!(
            parse_store_url("postgresql://app@db/pincapi").unwrap(),
            StoreUrl::Postgres("postgresql://app@db/pincapi".into())
        );
        let bad = parse_store_url("postgres://app:s3cret@db/pincapi?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("store: "), "{bad}");
        assert!(!bad.contains("s3cret"), "{bad}");
    }
}
