//! The gateway as one value: [`App::build`] wires store, client, delivery and routes from a
//! [`Config`]; [`App::run`] serves on a listener the caller supplies until `shutdown` fires.

use std::fs::File;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::assemble::{Shared, assemble, resolve_accounts};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::pinterest_client::PinterestClient;
use crate::pinterest_client::TransportError;
use crate::routes;
use crate::state::AppState;
use crate::store::open::{Opener, open_store};
use crate::store::{Queue, StoreError};

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the Pinterest client: {0}")]
    Client(#[from] TransportError),
    #[error("while serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Credentials(String),
}

/// The assembled gateway.
#[derive(Debug)]
pub struct App {
    state: AppState,
    /// The embedded store's owner lock, held for the life of the app.
    _owner_lock: Option<File>,
}

impl App {
    /// Opens the store (taking an embedded store's owner lock and ending leases left by a
    /// previous process), and wires everything. The config must already be validated.
    pub async fn build(config: Config) -> Result<App, AppError> {
        App::build_with_clock(config, SystemClock::shared()).await
    }

    /// [`App::build`] on a clock of the caller's (tests move a [`crate::clock::ManualClock`]).
    pub async fn build_with_clock(mut config: Config, clock: SharedClock) -> Result<App, AppError> {
        let opened = open_store(&config, Opener::Gateway).await?;
        let store = opened.store.clone();
        let schema_version = opened.schema_version;
        resolve_accounts(&mut config, &store)
            .await
            .map_err(AppError::Credentials)?;
        let mut released_at_start = 0;
        if opened.single_owner {
            // We are the only owner: anything still leased belongs to a process that is gone.
            // (A shared store is left alone: other live instances own its leases, and what a
            // dead one held is claimed again when its lease ends.)
            let released = store.release_leases(clock.now_ms()).await?;
            released_at_start = released;
            if released > 0 {
                tracing::info!(
                    events = released,
                    "Released events claimed by a previous run"
                );
            }
        } else {
            tracing::info!(store = %opened.display, schema_version = opened.schema_version, "Using a shared PostgreSQL store");
        }
        let lock = opened.owner_lock;
        let client = PinterestClient::new(&config.pinterest_api_base, config.request_timeout())?;
        let metrics = Arc::new(Metrics::default());
        metrics.set(
            "pincapi_events_released_at_start",
            &[],
            released_at_start as f64,
        );
        let accounts = config.all_accounts();
        let queue: Arc<dyn Queue> = store.clone();
        let delivery = Arc::new(Delivery::new(
            queue,
            Arc::clone(&clock),
            client,
            Arc::clone(&metrics),
            config.delivery.clone(),
            config.ingest.max_event_age_secs,
            &accounts,
        ));
        let backpressure = Arc::new(crate::backpressure::Backpressure::new(
            config.ingest.max_queue_depth,
            config.ingest.shed_retry_after_secs,
        ));
        let shared = Shared {
            store,
            clock,
            metrics,
            delivery,
            backpressure,
            sign_ins: Arc::default(),
            schema_version,
        };
        if !config.pinterest_oauth_token.is_empty() && config.pinterest_app_id.is_none() {
            tracing::warn!(
                "pinterest_oauth_token is a static token: nothing renews it, and audiences and the Event Quality Score stop when it expires (about 30 days); run `pincapi pinterest connect` to have it refreshed"
            );
        }
        let state = assemble(config, shared).map_err(AppError::Credentials)?;
        Ok(App {
            state,
            _owner_lock: lock,
        })
    }

    /// Shared state (tests, demo and bench reach the store and delivery through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every route, on the app's state.
    pub fn router(&self) -> Router {
        router(&self.state)
    }

    /// Serves HTTP on `listener` and runs delivery until `shutdown` completes; then stops
    /// accepting, lets in-flight requests finish, and stops the workers.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        self.run_reloading(listener, shutdown, None).await
    }

    /// [`App::run`], taking a new configuration at each of `reloads`' requests (see
    /// [`crate::reload`]).
    pub async fn run_reloading(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        mut reloads: Option<crate::reload::Reloads>,
    ) -> Result<(), AppError> {
        let (stop, stopped) = watch::channel(false);
        let mut workers = self.state.delivery.spawn(stopped.clone());
        workers.push(tokio::spawn(crate::backpressure::run(
            Arc::clone(&self.state.backpressure),
            self.state.store.clone(),
            Arc::clone(&self.state.metrics),
            stopped.clone(),
        )));
        let mut state = self.state.clone();
        let (mut generation, tasks) = Generation::start(&state);
        workers.extend(tasks);
        let (routers, routed) = watch::channel(router(&state));
        let addr = listener.local_addr().map_err(AppError::Serve)?;
        tracing::info!(%addr, accounts = state.delivery.account_ids().len(), "pincapi is listening");
        let server = &state.config.server;
        let limits = crate::serve::Limits {
            max_connections: server.max_connections,
            header_timeout: std::time::Duration::from_secs(server.header_timeout_secs),
            grace: std::time::Duration::from_secs(state.config.shutdown_grace_secs),
        };
        let serving = crate::serve::serve(
            listener,
            routed,
            limits,
            Arc::clone(&state.metrics),
            shutdown,
        );
        let mut serving = std::pin::pin!(serving);
        loop {
            let request = async {
                match reloads.as_mut() {
                    Some(r) => r.requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut serving => break,
                got = request => {
                    let Some(r) = reloads.as_ref().filter(|_| got.is_some()) else {
                        reloads = None;
                        continue;
                    };
                    let outcome = match (r.load)() {
                        Ok(config) => crate::reload::apply(&state, config).await,
                        Err(e) => Err(e),
                    };
                    let outcome = outcome.map(|(new, applied)| {
                        // The new background tasks start before the old ones are told to
                        // stop; the old finish what they are doing (a poll holds its shop's
                        // lock) and end.
                        let (next, tasks) = Generation::start(&new);
                        workers.extend(tasks);
                        std::mem::replace(&mut generation, next).retire();
                        drop(routers.send_replace(router(&new)));
                        state = new;
                        applied
                    });
                    crate::reload::report(&state, &outcome);
                }
            }
        }
        generation.retire();
        let _ = stop.send(true);
        for w in workers {
            let _ = w.await;
        }
        tracing::info!("pincapi stopped");
        Ok(())
    }
}

/// The background tasks of one configuration: the Shopify poller and webhook checks, quality
/// polls, audience sync, the metrics refresh, the watch for connected accounts, retention.
struct Generation {
    stop: watch::Sender<bool>,
}

impl Generation {
    /// Starts the tasks of `state`; they end when retired (the gateway retires the last
    /// generation when it stops).
    fn start(state: &AppState) -> (Generation, Vec<JoinHandle<()>>) {
        let (stop, done) = watch::channel(false);
        let mut tasks = crate::shopify::spawn_background(state, done.clone());
        tasks.extend(crate::quality::spawn_background(state, done.clone()));
        tasks.extend(crate::audiences::spawn_background(state, done.clone()));
        tasks.push(tokio::spawn(routes::health::run_refresh(
            state.clone(),
            done.clone(),
        )));
        tasks.push(tokio::spawn(crate::pinterest_oauth::watch_connected(
            state.clone(),
            done.clone(),
        )));
        tasks.push(tokio::spawn(crate::retention::run(state.clone(), done)));
        (Generation { stop }, tasks)
    }

    fn retire(self) {
        let _ = self.stop.send(true);
    }
}

/// Every route, on `state`.
pub fn router(state: &AppState) -> Router {
    let max_body = state.config.ingest.max_body_bytes;
    Router::new()
        .route("/v1/events", post(routes::ingest::post_default))
        .route(
            "/v1/ad_accounts/{ad_account_id}/events",
            post(routes::ingest::post_account),
        )
        .route(
            "/v5/ad_accounts/{ad_account_id}/events",
            post(routes::pinterest_compat::post_events),
        )
        .route(
            "/pinterest/callback",
            get(crate::pinterest_connect::callback),
        )
        .route("/admin/dead-letters", get(routes::admin::list_dead))
        .route("/admin/dead-letters/retry", post(routes::admin::retry_dead))
        .route("/admin/dead-letters/drop", post(routes::admin::drop_dead))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .merge(
            Router::new()
                .route("/api/quality", get(routes::quality::get_report))
                .route("/api/status", get(routes::quality::get_status))
                .route("/dashboard", get(routes::dashboard::page))
                .route("/dashboard/login", post(routes::dashboard::login))
                .route("/dashboard/logout", post(routes::dashboard::logout))
                .layer(axum::middleware::map_response(routes::dashboard::protect)),
        )
        .merge(crate::shopify::routes())
        .merge(crate::browser::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone())
}
