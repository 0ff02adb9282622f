//! Pinterest's OAuth, kept alive: the token the Ads API calls (audiences, customer lists, the
//! Event Quality Score) use, refreshed for ever, and the conversion tokens minted from it.
//!
//! `pincapi pinterest connect` runs the authorization-code flow for the user's Pinterest app
//! (`pinterest_app_id`, `pinterest_app_secret`) and stores the access and refresh tokens
//! sealed ([`crate::sealed`]) under `pinterest:oauth`. Pinterest's access tokens last about 30
//! days and its refresh tokens are continuous (60 days, renewed on every refresh), so
//! [`OAuthTokens`] refreshes at 80 % of the access token's life and at once after a 401, with
//! `continuous_refresh=true`. The new pair is saved, in one statement, before the new access
//! token is used and before the old refresh token is given up; the old one stays in the store
//! until then, so a crash at any point leaves a working refresh token. A refresh holds the
//! store's credential lock, so instances on one PostgreSQL store never spend one refresh
//! token twice.
//!
//! Without a connection the static `pinterest_oauth_token` is used as it is (with a warning
//! at start that nothing renews it).
//!
//! Conversion tokens (`POST /oauth/conversion_token`) are stored sealed under
//! `pinterest:conversion:<ad account id>`; those ad accounts join the configured ones, at
//! start and, while `serve` runs, within [`WATCH_EVERY`].

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::{Config, Secret};
use crate::metrics::Metrics;
use crate::sealed::SecretKey;
use crate::shopify::token::{Token, TokenAnswer};
use crate::store::SharedStore;

/// The name the OAuth token is stored under.
pub const OAUTH_CREDENTIAL: &str = "pinterest:oauth";
/// The prefix of minted conversion tokens' names.
pub const CONVERSION_PREFIX: &str = "pinterest:conversion:";
/// The scopes `pinterest connect` asks for.
pub const SCOPES: &str = "ads:read,ads:write";
/// The share of an access token's life after which it is refreshed.
const RENEW_AT: f64 = 0.8;

/// Why there is no token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error(
        "pinterest_oauth_token: not set, and Pinterest is not connected; run `pincapi pinterest \
         connect` (with pinterest_app_id and pinterest_app_secret), or set \
         PINCAPI_PINTEREST_OAUTH_TOKEN"
    )]
    NotConnected,
    #[error("PINCAPI_SECRET_KEY is not set: Pinterest's OAuth tokens are kept sealed in the store")]
    NoKey,
    #[error("pinterest_app_id: the app id and secret are needed to refresh Pinterest's token")]
    NoApp,
    #[error(
        "the refresh of Pinterest's OAuth token failed: {0}; if it goes on, run `pincapi \
         pinterest connect` again"
    )]
    Refresh(String),
    #[error("the stored Pinterest token: {0}")]
    Stored(String),
}

/// Pinterest's OAuth token, for the Ads API.
#[derive(Debug)]
pub struct OAuthTokens {
    app: Option<(String, Secret)>,
    static_token: Secret,
    /// `{pinterest_api_base}`, without a trailing slash.
    base: String,
    http: reqwest::Client,
    store: Option<SharedStore>,
    key: Option<SecretKey>,
    clock: SharedClock,
    metrics: Option<Arc<Metrics>>,
    current: Mutex<Option<Token>>,
    /// Why the last refresh failed, while it does.
    failing: StdMutex<Option<String>>,
}

impl OAuthTokens {
    /// The token of `config`, kept in `store`.
    pub fn new(
        config: &Config,
        store: Option<SharedStore>,
        clock: SharedClock,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<OAuthTokens> {
        let app = config
            .pinterest_app_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .zip(
                (!config.pinterest_app_secret.is_empty())
                    .then(|| config.pinterest_app_secret.clone()),
            );
        Arc::new(OAuthTokens {
            app,
            static_token: config.pinterest_oauth_token.clone(),
            base: config.pinterest_api_base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(config.request_timeout())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            store,
            key: crate::shopify::access::secret_key(config),
            clock,
            metrics,
            current: Mutex::new(None),
            failing: StdMutex::new(None),
        })
    }

    /// Whether an OAuth token can be had at all (connected, or a static one).
    pub async fn available(&self) -> bool {
        !self.static_token.is_empty() || matches!(self.load().await, Ok(Some(_)))
    }

    /// Unix ms the current access token expires at (`None`: a static token, or none).
    pub async fn expires_at_ms(&self) -> Option<i64> {
        if let Some(t) = self.current.lock().await.as_ref() {
            return t.expires_at_ms;
        }
        self.load()
            .await
            .ok()
            .flatten()
            .and_then(|t| t.expires_at_ms)
    }

    /// Why refreshes fail, while they do (the `oauth_refresh_failing` alert).
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A token for the Ads API: the current one, refreshed first when it is due.
    pub async fn token(&self) -> Result<Secret, OAuthError> {
        self.get(None).await
    }

    /// A token after the Ads API refused `rejected` with a 401: refreshed at once.
    pub async fn after_rejection(&self, rejected: &Secret) -> Result<Secret, OAuthError> {
        self.get(Some(rejected.expose())).await
    }

    async fn get(&self, rejected: Option<&str>) -> Result<Secret, OAuthError> {
        let mut current = self.current.lock().await;
        if current.is_none() {
            *current = self.load().await?;
        }
        let Some(held) = current.clone() else {
            if self.static_token.is_empty() {
                return Err(OAuthError::NotConnected);
            }
            return Ok(self.static_token.clone());
        };
        let now = self.clock.now_ms();
        let due = |t: &Token| {
            t.expires_at_ms.is_some_and(|end| {
                let life = (end - t.obtained_at_ms).max(0) as f64;
                now >= t.obtained_at_ms + (life * RENEW_AT) as i64
            }) || Some(t.access_token.as_str()) == rejected
        };
        if !due(&held) {
            self.gauge(&held, now);
            return Ok(Secret::new(held.access_token));
        }
        // One process at a time refreshes: a refresh token must be spent once.
        let _lock = match &self.store {
            Some(store) => match crate::store::lock_credential(
                store.as_ref(),
                OAUTH_CREDENTIAL,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| OAuthError::Stored(e.to_string()))?
            {
                Some(lock) => Some(lock),
                None => {
                    return Err(OAuthError::Refresh(
                        "another process is refreshing the token".to_owned(),
                    ));
                }
            },
            None => None,
        };
        // Another process may have refreshed meanwhile; its refresh token is the newest.
        let stored = self.load().await?;
        if let Some(stored) = stored.clone().filter(|t| !due(t)) {
            self.gauge(&stored, now);
            let token = Secret::new(stored.access_token.clone());
            *current = Some(stored);
            return Ok(token);
        }
        let refresh = stored
            .and_then(|t| t.refresh_token)
            .or_else(|| held.refresh_token.clone())
            .ok_or(OAuthError::NotConnected)?;
        match self
            .grant(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("continuous_refresh", "true"),
            ])
            .await
        {
            Ok(answer) => {
                let mut token = Token::from_answer(answer, self.clock.now_ms());
                if token.refresh_token.is_none() {
                    token.refresh_token = Some(refresh);
                }
                // Held before it is saved: a failed save must not lose the rotated refresh
                // token (it is saved at the next refresh, or `connect` starts over).
                *current = Some(token.clone());
                if let Err(e) = self.save(&token).await {
                    tracing::error!(error = %e, "Could not store Pinterest's new OAuth token; it is kept in memory");
                }
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Some(m) = &self.metrics {
                    m.inc("pincapi_oauth_refreshes_total", &[("result", "ok")], 1);
                }
                tracing::info!("Refreshed Pinterest's OAuth token");
                self.gauge(&token, self.clock.now_ms());
                Ok(Secret::new(token.access_token))
            }
            Err(e) => {
                *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                if let Some(m) = &self.metrics {
                    m.inc("pincapi_oauth_refreshes_total", &[("result", "error")], 1);
                }
                tracing::warn!(error = %e, "Could not refresh Pinterest's OAuth token");
                // Until it expires, the old access token still works.
                if held.expires_at_ms.is_some_and(|end| now < end) && rejected.is_none() {
                    return Ok(Secret::new(held.access_token));
                }
                Err(e)
            }
        }
    }

    fn gauge(&self, token: &Token, now: i64) {
        if let (Some(m), Some(end)) = (&self.metrics, token.expires_at_ms) {
            m.set(
                "pincapi_oauth_token_expiry_seconds",
                &[],
                ((end - now) / 1000) as f64,
            );
        }
    }

    /// `POST {base}/oauth/token` with HTTP Basic (app id and secret).
    async fn grant(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, OAuthError> {
        let (id, secret) = self.app.as_ref().ok_or(OAuthError::NoApp)?;
        let basic = STANDARD.encode(format!("{id}:{}", secret.expose()));
        let resp = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .header("Authorization", format!("Basic {basic}"))
            .form(form)
            .send()
            .await
            .map_err(|e| OAuthError::Refresh(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| OAuthError::Refresh(e.without_url().to_string()))?;
        if status != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(OAuthError::Refresh(format!(
                "Pinterest answered {status}: {message}"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|_| OAuthError::Refresh("the answer is not a token".to_owned()))
    }

    /// Exchanges an authorization code (`pincapi pinterest connect`) and stores the tokens.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<Token, OAuthError> {
        let answer = self
            .grant(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("continuous_refresh", "true"),
            ])
            .await?;
        self.adopt(answer).await
    }

    /// Takes a refresh token obtained elsewhere (headless servers): refreshes with it and
    /// stores the tokens.
    pub async fn adopt_refresh_token(&self, refresh: &str) -> Result<Token, OAuthError> {
        let answer = self
            .grant(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("continuous_refresh", "true"),
            ])
            .await?;
        let mut token = Token::from_answer(answer, self.clock.now_ms());
        if token.refresh_token.is_none() {
            token.refresh_token = Some(refresh.to_owned());
        }
        self.save(&token).await?;
        *self.current.lock().await = Some(token.clone());
        Ok(token)
    }

    async fn adopt(&self, answer: TokenAnswer) -> Result<Token, OAuthError> {
        let token = Token::from_answer(answer, self.clock.now_ms());
        self.save(&token).await?;
        *self.current.lock().await = Some(token.clone());
        Ok(token)
    }

    /// The ad accounts the connected user reaches (`GET /ad_accounts`): id and name.
    pub async fn ad_accounts(&self) -> Result<Vec<(String, String)>, OAuthError> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            id: String,
            #[serde(default)]
            name: String,
        }
        let body = self.ads_call(reqwest::Method::GET, "/ad_accounts").await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::Refresh(format!("GET /ad_accounts: {e}")))?;
        Ok(page.items.into_iter().map(|i| (i.id, i.name)).collect())
    }

    /// Mints a conversion token (`POST /oauth/conversion_token`) for `ad_account_id` and
    /// stores it sealed.
    pub async fn mint_conversion_token(&self, ad_account_id: &str) -> Result<(), OAuthError> {
        #[derive(Deserialize)]
        struct Minted {
            access_token: String,
        }
        let body = self
            .ads_call(reqwest::Method::POST, "/oauth/conversion_token")
            .await?;
        let minted: Minted = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::Refresh(format!("POST /oauth/conversion_token: {e}")))?;
        let (store, key) = self.sealer()?;
        let name = format!("{CONVERSION_PREFIX}{ad_account_id}");
        store
            .save_credential(
                &name,
                key.seal(&name, minted.access_token.as_bytes()),
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| OAuthError::Stored(e.to_string()))
    }

    /// An Ads API call with the token, refreshed and asked again once after a 401.
    async fn ads_call(&self, method: reqwest::Method, path: &str) -> Result<Vec<u8>, OAuthError> {
        let mut token = self.token().await?;
        for attempt in 0..2 {
            let resp = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| OAuthError::Refresh(e.without_url().to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| OAuthError::Refresh(e.without_url().to_string()))?;
            if status == 401 && attempt == 0 {
                token = self.after_rejection(&token).await?;
                continue;
            }
            if status != 200 {
                return Err(OAuthError::Refresh(format!(
                    "{method} {path}: Pinterest answered {status}"
                )));
            }
            return Ok(body.to_vec());
        }
        Err(OAuthError::Refresh(format!(
            "{method} {path}: refused twice"
        )))
    }

    fn sealer(&self) -> Result<(&SharedStore, &SecretKey), OAuthError> {
        let store = self.store.as_ref().ok_or(OAuthError::NotConnected)?;
        let key = self.key.as_ref().ok_or(OAuthError::NoKey)?;
        Ok((store, key))
    }

    async fn load(&self) -> Result<Option<Token>, OAuthError> {
        let (Some(store), Some(key)) = (&self.store, &self.key) else {
            return Ok(None);
        };
        crate::sealed::load_json(store.as_ref(), key, OAUTH_CREDENTIAL)
            .await
            .map_err(OAuthError::Stored)
    }

    async fn save(&self, token: &Token) -> Result<(), OAuthError> {
        let (store, key) = self.sealer()?;
        crate::sealed::save_json(
            store.as_ref(),
            key,
            OAUTH_CREDENTIAL,
            token,
            self.clock.now_ms(),
        )
        .await
        .map_err(OAuthError::Stored)
    }
}

/// The ad accounts connected by `pincapi pinterest connect --ad-account`, with their minted
/// conversion tokens, as configured accounts.
pub async fn connected_accounts(
    config: &Config,
    store: &SharedStore,
) -> Result<Vec<crate::config::AccountConfig>, String> {
    let Some(key) = crate::shopify::access::secret_key(config) else {
        return Ok(Vec::new());
    };
    let names = store
        .credential_names(CONVERSION_PREFIX)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for name in names {
        let Some(sealed) = store.credential(&name).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let token = key
            .open(&name, &sealed)
            .map_err(|e| format!("{name}: {e}"))?;
        out.push(crate::config::AccountConfig {
            id: name.trim_start_matches(CONVERSION_PREFIX).to_owned(),
            token: Secret::new(String::from_utf8_lossy(&token).into_owned()),
            test: false,
            max_calls_per_minute: None,
        });
    }
    Ok(out)
}

/// How often `serve` looks for ad accounts connected since it started.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// `serve`'s watch for ad accounts `pincapi pinterest connect --ad-account` added while it
/// runs: each is delivered to from then on, no restart needed. The loops it starts end with
/// the gateway.
pub async fn watch_connected(
    state: crate::state::AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut loops = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.changed() => break,
        }
        match connected_accounts(&state.config, &state.store).await {
            Ok(accounts) => {
                for a in accounts {
                    if !state.delivery.has_account(&a.id) {
                        tracing::info!(ad_account_id = %a.id, "Sending to an ad account connected through Pinterest's OAuth");
                        loops.extend(state.delivery.add_account(&a));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Could not read the connected ad accounts"),
        }
    }
    for l in loops {
        let _ = l.await;
    }
}

/// How long `pinterest connect` waits for the redirect.
pub const CONNECT_WAIT: Duration = Duration::from_secs(600);
