//! `pincapi pinterest connect` and `pincapi pinterest accounts`: Pinterest's OAuth for the
//! user's app, and the ad accounts it reaches (see `pinterest_oauth`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::mpsc;

use crate::clock::{SharedClock, SystemClock};
use crate::config;
use crate::pinterest_connect::{STATE_SUBJECT, connected_page, finish};
use crate::pinterest_oauth::{CONNECT_WAIT, OAUTH_CREDENTIAL, OAuthTokens, SCOPES};
use crate::shopify::install::percent_encode;
use crate::store::SharedStore;
use crate::store::open::{Opener, open_store};

/// `pincapi pinterest ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PinterestCommand {
    /// Connect the gateway to Pinterest through the OAuth flow of your Pinterest app
    /// (pinterest_app_id, pinterest_app_secret): prints the authorize URL, waits for the
    /// redirect, and stores the tokens sealed; they are refreshed for ever.
    Connect(ConnectArgs),
    /// List the ad accounts the connected Pinterest user reaches.
    Accounts {
        /// TOML configuration file (environment variables PINCAPI_* override it).
        #[arg(long, short, env = "PINCAPI_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Arguments of `pincapi pinterest connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// TOML configuration file (environment variables PINCAPI_* override it).
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Wait for the redirect on a loopback listener of its own (first setup, no `serve`):
    /// the redirect URI is http://ADDR/pinterest/callback. Without it the redirect goes to
    /// {public_url}/pinterest/callback, which a running `serve` answers.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Take a refresh token obtained elsewhere instead of the browser flow (headless
    /// servers). Best given through the environment, out of `ps` and shell history.
    #[arg(long, env = "PINCAPI_PINTEREST_REFRESH_TOKEN", hide_env_values = true)]
    pub refresh_token: Option<String>,
    /// Add this ad account: mint its conversion token (repeatable).
    #[arg(long = "ad-account")]
    pub ad_accounts: Vec<String>,
}

struct Loopback {
    store: SharedStore,
    oauth: Arc<OAuthTokens>,
    clock: SharedClock,
    redirect: String,
    done: mpsc::Sender<bool>,
}

async fn loopback_callback(State(l): State<Arc<Loopback>>, RawQuery(query): RawQuery) -> Response {
    match finish(
        &l.store,
        &l.oauth,
        &l.clock,
        query.as_deref().unwrap_or(""),
        &l.redirect,
    )
    .await
    {
        Ok(()) => {
            let _ = l.done.send(true).await;
            connected_page()
        }
        Err(e) => e.into_response(),
    }
}

/// Runs `pincapi pinterest ...`.
pub async fn run(command: PinterestCommand) -> anyhow::Result<ExitCode> {
    match command {
        PinterestCommand::Connect(args) => connect(args).await,
        PinterestCommand::Accounts { config } => {
            let config = config::load(config.as_deref())?;
            let store = open_store(&config, Opener::Tool).await?.store;
            let oauth = OAuthTokens::new(&config, Some(store), SystemClock::shared(), None);
            for (id, name) in oauth.ad_accounts().await? {
                println!("{id}  {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config.as_deref())?;
    config.validate(false)?;
    let Some(app_id) = config.pinterest_app_id.clone() else {
        bail!("pinterest_app_id: not set; give your Pinterest app's id (PINCAPI_PINTEREST_APP_ID)");
    };
    if config.pinterest_app_secret.is_empty() {
        bail!("pinterest_app_secret: not set (PINCAPI_PINTEREST_APP_SECRET)");
    }
    if crate::shopify::access::secret_key(&config).is_none() {
        bail!(
            "secret_key: not set; Pinterest's tokens are kept sealed in the store with \
             PINCAPI_SECRET_KEY (64 hex characters, e.g. `openssl rand -hex 32`)"
        );
    }
    let store = open_store(&config, Opener::Tool).await?.store;
    let clock = SystemClock::shared();
    let oauth = OAuthTokens::new(&config, Some(store.clone()), clock.clone(), None);
    if let Some(refresh) = &args.refresh_token {
        oauth.adopt_refresh_token(refresh).await?;
        println!("Connected with the refresh token given.");
    } else {
        let listener = match args.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--listen: cannot bind {addr}"))?,
            ),
            None => None,
        };
        let redirect = match (&listener, config.public_base()) {
            (Some(l), _) => format!("http://{}/pinterest/callback", l.local_addr()?),
            (None, Some(public)) => format!("{public}/pinterest/callback"),
            (None, None) => bail!(
                "public_url: not set; give --listen 127.0.0.1:PORT for a redirect to this \
                 command, or set public_url and keep `serve` running"
            ),
        };
        let nonce: [u8; 16] = rand::random();
        let state: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        store
            .save_oauth_state(
                &state,
                STATE_SUBJECT,
                clock.now_ms() + CONNECT_WAIT.as_millis() as i64,
            )
            .await?;
        let before = store.credential(OAUTH_CREDENTIAL).await?;
        println!("Open this URL, and approve the app:");
        println!(
            "{}?client_id={}&redirect_uri={}&response_type=code&scope={}&state={state}",
            config.pinterest_oauth_authorize_url,
            percent_encode(&app_id),
            percent_encode(&redirect),
            percent_encode(SCOPES),
        );
        match listener {
            Some(listener) => {
                let (done, mut finished) = mpsc::channel(1);
                let app = Router::new()
                    .route("/pinterest/callback", get(loopback_callback))
                    .with_state(Arc::new(Loopback {
                        store: store.clone(),
                        oauth: Arc::clone(&oauth),
                        clock: clock.clone(),
                        redirect,
                        done,
                    }));
                let server = tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                let got = tokio::time::timeout(CONNECT_WAIT, finished.recv()).await;
                server.abort();
                if !matches!(got, Ok(Some(true))) {
                    bail!(
                        "no redirect from Pinterest within {} minutes",
                        CONNECT_WAIT.as_secs() / 60
                    );
                }
            }
            None => {
                // `serve` takes the redirect and stores the tokens: wait until they change.
                let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
                loop {
                    if store.credential(OAUTH_CREDENTIAL).await? != before {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "no redirect reached `serve` within {} minutes",
                            CONNECT_WAIT.as_secs() / 60
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        println!("Connected to Pinterest; the tokens are stored sealed and refreshed for ever.");
    }
    for id in &args.ad_accounts {
        if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--ad-account: {id:?} is not an ad account id (digits)");
        }
        let reachable = oauth.ad_accounts().await?;
        if !reachable.iter().any(|(a, _)| a == id) {
            bail!("--ad-account: {id} is not among the ad accounts this Pinterest user reaches");
        }
        oauth.mint_conversion_token(id).await?;
        println!(
            "Ad account {id}: conversion token minted and stored; `serve` sends to it from its next start."
        );
    }
    Ok(ExitCode::SUCCESS)
}
