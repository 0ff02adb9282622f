//! The local Pinterest sandbox: an in-process stand-in for `https://api.pinterest.com/v5`
//! (Conversions API events endpoint) plus `/sandbox/*` control routes for tests and demos.
//!
//! Routes:
//! - `POST /v5/ad_accounts/{ad_account_id}/events[?test=true]`: Pinterest's `events/create`;
//! - `GET /v5/ad_accounts/{ad_account_id}/conversion_eqs`: the Event Quality Score (`eqs`);
//! - any other `/v5` path: 404 with Pinterest's `Error` body;
//! - `GET /sandbox/requests`, `GET /sandbox/events`, `GET /sandbox/stats`: what arrived;
//! - `GET|POST|DELETE /sandbox/faults`, `POST /sandbox/reset`: control.
//! - `GET|POST /v5/ad_accounts/{id}/customer_lists[/{customer_list_id}]` (PATCH to update) and
//!   the same for `audiences` (OAuth token with `ads:read` / `ads:write`);
//!   `GET /sandbox/customer_lists` (each list's records), `GET /sandbox/audiences`,
//!   `POST /sandbox/ads/faults` (scripted answers of the next Ads API writes).
//!
//! Layout:
//! - this module: the public types, the shared state and the router assembly;
//! - `api`: pieces every `/v5` endpoint shares (Pinterest `Error` bodies, bearer auth,
//!   request recording, path/query helpers);
//! - `events`: `POST /v5/ad_accounts/{ad_account_id}/events`;
//! - `validate`: the hand-written check of an events body;
//! - `json`: the borrowed, flat JSON tree `validate` walks (far cheaper than `Value`);
//! - `faults`: fault injection state;
//! - `rate_limit`: the per-ad-account calls-per-minute limiter.
//!
//! New `/v5` endpoints (customer lists, audiences, `conversion_eqs`) go in their own submodule
//! and are registered in `authenticated_v5_routes`; they then get bearer auth, recording,
//! JSON 404/405 answers and the body size limit for free. Reuse `api::ApiError` for their
//! error bodies and `api::ad_account_id` for the path parameter.

mod ads;
mod analytics;
mod api;
mod audiences;
mod customer_lists;
mod eqs;
mod events;
mod faults;
mod json;
pub mod oauth;
mod rate_limit;
mod validate;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::{Deserialize, Serialize};

pub use self::ads::{SandboxAudience, SandboxList};
use self::api::ApiError;
use self::faults::FaultState;
use self::rate_limit::RateLimiter;

/// Path of the Conversions API events endpoint, in axum route syntax.
const EVENTS_PATH: &str = "/v5/ad_accounts/{ad_account_id}/events";

/// How the sandbox behaves; [`Default`] mirrors Pinterest as far as it is known.
#[derive(Clone)]
pub struct SandboxOptions {
    /// `Some(t)`: only `Authorization: Bearer t` is accepted.
    /// `None`: any non-empty bearer token is accepted.
    pub token: Option<String>,
    /// Keep every request and every processed event for [`Sandbox::requests`] and
    /// [`Sandbox::events`]. Benchmarks turn this off; the counters are kept either way.
    pub record_requests: bool,
    /// An event whose `event_time` is more than this many seconds in the past fails.
    /// Pinterest's real limit is unpublished; 7 days is the commonly quoted figure.
    pub max_event_age_secs: i64,
    /// An event whose `event_time` is more than this many seconds in the future fails.
    pub max_future_skew_secs: i64,
    /// Calls per minute per ad account before the events endpoint answers 429
    /// (Pinterest publishes 5,000). `None` disables the limit.
    pub rate_limit_per_minute: Option<u32>,
    /// OAuth access tokens accepted on the Ads API routes (audiences, customer lists, event
    /// quality), each with its scopes. Empty: any non-empty bearer token other than the
    /// conversion `token` is accepted with every scope. The conversion token is never
    /// accepted there, as at Pinterest.
    pub oauth_tokens: Vec<OAuthToken>,
    /// `--oauth`: the Pinterest app whose OAuth the sandbox plays (`oauth.rs`); then the Ads
    /// API takes only access tokens it issued and not yet expired, and the events endpoint
    /// only conversion tokens it minted (or `token`).
    pub oauth_app: Option<oauth::OAuthApp>,
    /// Ad spend the analytics endpoint reports for every day an ad account sent events,
    /// micro-dollars (`analytics.rs`).
    pub daily_spend_micro: i64,
    /// The conversion tag `conversion_tags` lists for every ad account: its id and whether
    /// automatic enhanced match is on.
    pub conversion_tag_id: String,
    pub conversion_tag_aem: bool,
}

/// An OAuth access token the sandbox knows, with its scopes (`ads:read`, `ads:write`, ...).
#[derive(Clone)]
pub struct OAuthToken {
    pub token: String,
    pub scopes: Vec<String>,
}

impl OAuthToken {
    /// A token with the given scopes.
    pub fn new(token: impl Into<String>, scopes: &[&str]) -> OAuthToken {
        OAuthToken {
            token: token.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

// By hand so the token never lands in logs.
impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("record_requests", &self.record_requests)
            .field("max_event_age_secs", &self.max_event_age_secs)
            .field("max_future_skew_secs", &self.max_future_skew_secs)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("oauth_tokens", &self.oauth_tokens.len())
            .finish()
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            token: None,
            record_requests: true,
            max_event_age_secs: 7 * 86_400,
            max_future_skew_secs: 60,
            rate_limit_per_minute: Some(5_000),
            oauth_tokens: Vec::new(),
            oauth_app: None,
            daily_spend_micro: 25_000_000,
            conversion_tag_id: crate::browser::storefront::DEMO_TAG_ID.to_owned(),
            conversion_tag_aem: true,
        }
    }
}

/// One request answered by a `/v5` route, as returned by `GET /sandbox/requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path including the `/v5` prefix.
    pub path: String,
    /// Raw query string without the `?`, if any.
    pub query: Option<String>,
    /// The request body: parsed JSON, a JSON string holding the raw text when the body is
    /// not JSON, or `null` when the body is empty.
    pub body: serde_json::Value,
    /// HTTP status of the answer.
    pub status: u16,
    /// The JSON body sent back (`null` if the answer had no body).
    pub response: serde_json::Value,
}

/// One event Pinterest would have processed (failed events are not kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The ad account from the request path.
    pub ad_account_id: String,
    /// Whether the request carried `?test=true`.
    pub test: bool,
    /// The event object exactly as sent.
    pub event: serde_json::Value,
}

/// Counters kept even when recording is off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxStats {
    /// Requests answered by `/v5` routes, whatever the status.
    pub requests: u64,
    /// Events in events requests that reached per-event validation.
    pub events_received: u64,
    /// Events that were processed.
    pub events_processed: u64,
    /// Events that failed validation or were rejected by a fault.
    pub events_failed: u64,
}

/// Fault injection for the events endpoint; `POST /sandbox/faults` takes this as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    /// Consumed in order, one step per events request: that request gets the step's answer
    /// instead of normal processing (a 2xx step means "process normally", after its delay).
    #[serde(default)]
    pub script: Vec<FaultStep>,
    /// Every events request is answered after this many milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Events with these `event_id`s fail inside a 422, until the faults are cleared.
    #[serde(default)]
    pub reject_event_ids: Vec<String>,
    /// Every events request gets this answer until cleared (takes precedence over `script`,
    /// which is then not consumed).
    #[serde(default)]
    pub fail_all: Option<FaultStep>,
}

/// One scripted answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultStep {
    /// HTTP status to answer with; the body is Pinterest's error body for that status.
    pub status: u16,
    /// Seconds for the `Retry-After` header (sent whenever set).
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Replaces the spec's example message for that status.
    #[serde(default)]
    pub message: Option<String>,
    /// Extra delay before this one answer, added to [`Faults::delay_ms`].
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answers with this body as it is, whatever the status (2xx included), instead of
    /// Pinterest's body: what a wrong base URL, a captive proxy or a broken API would send
    /// (`""`, an HTML page, a response with the wrong number of results).
    #[serde(default)]
    pub body: Option<String>,
    /// A `Location` header (for a redirect status).
    #[serde(default)]
    pub location: Option<String>,
}

/// A running sandbox's shared state. Cheap to clone: every clone sees the same state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: SandboxOptions,
    /// Arrival sequence number for each `/v5` request, so recordings stay in arrival order
    /// even when a slow (delayed) answer completes after a later one.
    next_seq: AtomicU64,
    requests: Mutex<Vec<(u64, RecordedRequest)>>,
    events: Mutex<Vec<RecordedEvent>>,
    faults: Mutex<FaultState>,
    rate_limiter: RateLimiter,
    counters: Counters,
    /// Per bearer token: events requests being handled (body read, answer not yet sent),
    /// and events requests received in all.
    in_flight: Mutex<HashMap<String, (usize, u64)>>,
    /// Customer lists and audiences (the Ads API stand-ins).
    ads: Mutex<ads::AdsState>,
    /// Tokens issued when playing Pinterest's OAuth.
    oauth: Mutex<oauth::OAuthState>,
}

/// Counts one events request as in flight until dropped: when it is answered, or when the
/// client goes away first and the server drops the request unfinished.
pub(crate) struct InFlight {
    sandbox: Sandbox,
    token: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = lock(&self.sandbox.inner.in_flight);
        if let Some((n, _)) = map.get_mut(&self.token) {
            *n = n.saturating_sub(1);
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    events_received: AtomicU64,
    events_processed: AtomicU64,
    events_failed: AtomicU64,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere must not take the sandbox down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sandbox {
    /// Creates a sandbox with empty recordings and no faults.
    pub fn new(options: SandboxOptions) -> Self {
        let rate_limiter = RateLimiter::new(options.rate_limit_per_minute);
        Self {
            inner: Arc::new(Inner {
                options,
                next_seq: AtomicU64::new(0),
                requests: Mutex::new(Vec::new()),
                events: Mutex::new(Vec::new()),
                faults: Mutex::new(FaultState::default()),
                rate_limiter,
                counters: Counters::default(),
                in_flight: Mutex::new(HashMap::new()),
                ads: Mutex::new(ads::AdsState::default()),
                oauth: Mutex::new(oauth::OAuthState::default()),
            }),
        }
    }

    /// The options this sandbox was created with.
    pub fn options(&self) -> &SandboxOptions {
        &self.inner.options
    }

    /// Unix seconds now (the sandbox reads the system clock, as Pinterest does).
    pub fn now_secs(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// Spend per active day, micro-dollars.
    pub fn daily_spend_micro(&self) -> i64 {
        self.inner.options.daily_spend_micro
    }

    /// The conversion tag's id and whether automatic enhanced match is on.
    pub fn conversion_tag(&self) -> (String, bool) {
        (
            self.inner.options.conversion_tag_id.clone(),
            self.inner.options.conversion_tag_aem,
        )
    }

    /// Every route: `/v5/...` (the Pinterest stand-in) and `/sandbox/...` (control).
    pub fn router(&self) -> Router {
        Router::new()
            .merge(v5_router(self))
            .route("/sandbox/requests", get(admin_requests))
            .route("/sandbox/events", get(admin_events))
            .route("/sandbox/stats", get(admin_stats))
            .route(
                "/sandbox/faults",
                get(admin_get_faults)
                    .post(admin_set_faults)
                    .delete(admin_clear_faults),
            )
            .route("/sandbox/reset", post(admin_reset))
            .route("/sandbox/customer_lists", get(admin_customer_lists))
            .route("/sandbox/audiences", get(admin_audiences))
            .route("/sandbox/ads/faults", post(admin_set_ads_faults))
            // Pinterest's authorize page lives on www.pinterest.com, outside the API.
            .route("/oauth/", get(oauth::authorize))
            .route("/oauth", get(oauth::authorize))
            // Not recorded: only `/v5` traffic is "Pinterest traffic".
            .fallback(api::not_found)
            .with_state(self.clone())
    }

    /// Requests answered by `/v5` routes, in arrival order (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests)
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Processed events, test and non-test (empty when recording is off).
    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.inner.events).clone()
    }

    /// How many events requests with this bearer token are being handled right now: their
    /// body has arrived and they have not been answered. A request whose client disconnects
    /// during a delay fault is dropped unfinished (never processed nor recorded), as a request
    /// cut off at Pinterest; it then stops counting.
    pub fn in_flight(&self, token: &str) -> usize {
        lock(&self.inner.in_flight).get(token).map_or(0, |t| t.0)
    }

    /// How many events requests with this bearer token have arrived (body read), answered
    /// or not.
    pub fn requests_started(&self, token: &str) -> u64 {
        lock(&self.inner.in_flight).get(token).map_or(0, |t| t.1)
    }

    /// Replaces the current faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = FaultState::from(faults);
    }

    /// The faults still in effect (consumed script steps are gone).
    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).to_faults()
    }

    /// Clears recordings, counters, rate-limit windows, faults, customer lists and audiences.
    pub fn reset(&self) {
        lock(&self.inner.requests).clear();
        lock(&self.inner.events).clear();
        lock(&self.inner.ads).clear();
        *lock(&self.inner.faults) = FaultState::default();
        self.inner.rate_limiter.reset();
        let c = &self.inner.counters;
        for counter in [
            &c.requests,
            &c.events_received,
            &c.events_processed,
            &c.events_failed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> SandboxStats {
        let c = &self.inner.counters;
        SandboxStats {
            requests: c.requests.load(Ordering::Relaxed),
            events_received: c.events_received.load(Ordering::Relaxed),
            events_processed: c.events_processed.load(Ordering::Relaxed),
            events_failed: c.events_failed.load(Ordering::Relaxed),
        }
    }

    /// Serves [`Sandbox::router`] on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Every customer list with the records it holds now.
    pub fn customer_lists(&self) -> Vec<SandboxList> {
        lock(&self.inner.ads).lists.values().cloned().collect()
    }

    /// Every audience (removed ones included).
    pub fn audiences(&self) -> Vec<SandboxAudience> {
        lock(&self.inner.ads).audiences.values().cloned().collect()
    }

    /// Scripts the answers of the next Ads API writes (customer-list and audience creates
    /// and updates), one step per write; a 2xx step lets that write through.
    pub fn set_ads_faults(&self, steps: Vec<FaultStep>) {
        lock(&self.inner.ads).set_write_faults(steps);
    }

    // ---- crate-internal helpers used by the endpoint modules ----

    fn ads(&self) -> MutexGuard<'_, ads::AdsState> {
        lock(&self.inner.ads)
    }

    fn record_requests_enabled(&self) -> bool {
        self.inner.options.record_requests
    }

    fn next_request_seq(&self) -> u64 {
        self.inner.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn count_request(&self) {
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_events(&self, received: u64, processed: u64) {
        let c = &self.inner.counters;
        c.events_received.fetch_add(received, Ordering::Relaxed);
        c.events_processed.fetch_add(processed, Ordering::Relaxed);
        c.events_failed
            .fetch_add(received.saturating_sub(processed), Ordering::Relaxed);
    }

    fn record_request(&self, seq: u64, request: RecordedRequest) {
        let mut requests = lock(&self.inner.requests);
        // Answers usually complete in arrival order, so this is almost always a push.
        let at = requests.partition_point(|(s, _)| *s < seq);
        requests.insert(at, (seq, request));
    }

    fn record_events(&self, events: impl IntoIterator<Item = RecordedEvent>) {
        lock(&self.inner.events).extend(events);
    }

    fn faults_state(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.inner.faults)
    }

    fn enter_request(&self, token: &str) -> InFlight {
        let mut map = lock(&self.inner.in_flight);
        let entry = map.entry(token.to_owned()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += 1;
        drop(map);
        InFlight {
            sandbox: self.clone(),
            token: token.to_owned(),
        }
    }

    fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.rate_limiter
    }
}

/// Endpoints that take the conversion token. Add new Conversions API endpoints here.
fn authenticated_v5_routes() -> Router<Sandbox> {
    Router::new().route(EVENTS_PATH, post(events::create))
}

/// Ads API endpoints that take an OAuth token (never the conversion token). Each handler
/// checks its own scope with [`api::require_scope`]. Add audience, customer-list and event
/// quality endpoints here.
fn oauth_v5_routes() -> Router<Sandbox> {
    Router::new()
        // --- OAuth ---
        .route("/v5/oauth/token", post(oauth::token))
        .route("/v5/oauth/conversion_token", post(oauth::conversion_token))
        .route("/v5/ad_accounts", get(oauth::ad_accounts))
        .route(
            "/v5/ad_accounts/{ad_account_id}/conversion_eqs",
            get(eqs::list),
        )
        // --- Reporting ---
        .route(
            "/v5/ad_accounts/{ad_account_id}/analytics",
            get(analytics::analytics),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/conversion_tags",
            get(analytics::list_tags),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/conversion_tags/{conversion_tag_id}",
            get(analytics::get_tag),
        )
        // --- Audiences ---
        .route(
            "/v5/ad_accounts/{ad_account_id}/customer_lists",
            post(customer_lists::create).get(customer_lists::list),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}",
            get(customer_lists::get).patch(customer_lists::update),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/audiences",
            post(audiences::create).get(audiences::list),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/audiences/{audience_id}",
            get(audiences::get).patch(audiences::update),
        )
}

/// The `/v5` stand-in: authenticated routes, JSON 404/405 answers, recording of everything.
fn v5_router(sandbox: &Sandbox) -> Router<Sandbox> {
    Router::new()
        .merge(
            authenticated_v5_routes()
                .route_layer(from_fn_with_state(sandbox.clone(), api::require_bearer)),
        )
        .merge(oauth_v5_routes())
        // Unknown `/v5` paths are still Pinterest traffic: answered with an `Error` body and
        // recorded, unlike unknown paths elsewhere.
        .route("/v5", any(api::not_found))
        .route("/v5/{*rest}", any(api::not_found))
        .method_not_allowed_fallback(api::method_not_allowed)
        // `api::gate` enforces its own (larger) limit and hands handlers a buffered body.
        .layer(DefaultBodyLimit::disable())
        .layer(from_fn_with_state(sandbox.clone(), api::gate))
}

async fn admin_requests(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.requests()).into_response()
}

async fn admin_events(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.events()).into_response()
}

async fn admin_stats(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.stats()).into_response()
}

async fn admin_get_faults(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.faults()).into_response()
}

async fn admin_set_faults(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    // Parsed by hand rather than with the `Json` extractor so that a bad body gets the
    // same `{code, message}` shape as everything else, and no Content-Type is required.
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            sandbox.set_faults(faults);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ApiError::bad_request(format!("Invalid faults body: {e}")).into_response(),
    }
}

async fn admin_clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.set_faults(Faults::default());
    StatusCode::NO_CONTENT
}

async fn admin_customer_lists(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.customer_lists()).into_response()
}

async fn admin_audiences(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.audiences()).into_response()
}

async fn admin_set_ads_faults(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<FaultStep>>(&body) {
        Ok(steps) => {
            sandbox.set_ads_faults(steps);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ApiError::bad_request(format!("Invalid ads faults body: {e}")).into_response(),
    }
}

async fn admin_reset(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.reset();
    StatusCode::NO_CONTENT
}

/// Ids for [`Faults::reject_event_ids`], shared with in-flight requests without copying.
type RejectSet = Arc<HashSet<String>>;
