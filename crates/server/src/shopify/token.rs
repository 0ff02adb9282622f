//! Admin API tokens, per shop, as Shopify issues them in 2026: one [`AdminTokens`] per shop
//! is shared by the poller, the backfill, the census and `shopify connect`.
//!
//! - a legacy custom app's static token is used as it is;
//! - an app of the shop's own organisation gets 24-hour tokens through the client-credentials
//!   grant (`POST {origin}/admin/oauth/access_token`, `grant_type=client_credentials`; no
//!   refresh token): a new one is asked for when 80 % of the lifetime has passed, and at once
//!   after a 401;
//! - an app installed on a store of another organisation holds an expiring offline token
//!   (60 minutes) and a rotating refresh token from the install flow (`install.rs`);
//!   `grant_type=refresh_token` renews both.
//!
//! Tokens are sealed ([`crate::sealed`]) in the store under `shopify:<domain>`, so a restart
//! and the other instances on one PostgreSQL store use the same token. A renewal holds the
//! store's credential lock and reads the store again first: another instance may have renewed
//! already, and a rotating refresh token must be used once. The new token is saved before it
//! is used, in one statement; until then the old access token stays in the store, and it is
//! valid until its own expiry, so a crash in the middle of a renewal leaves a working token
//! behind. Without `PINCAPI_SECRET_KEY` client-credential tokens live in memory only.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::Secret;
use crate::config::shopify::{AdminAuth, Shop};
use crate::sealed::SecretKey;
use crate::store::SharedStore;

/// The share of a token's lifetime after which it is renewed.
const RENEW_AT: f64 = 0.8;
/// How long a renewal waits for another process's to finish.
const RENEWAL_WAIT: Duration = Duration::from_secs(10);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0} has no Admin API access (no client_id/client_secret, no access_token)")]
    NoAccess(String),
    #[error(
        "{0} is not installed yet: open the URL `pincapi shopify install-url --shop {0}` prints, \
         and approve the app"
    )]
    NotInstalled(String),
    #[error(
        "PINCAPI_SECRET_KEY is not set: the install flow's tokens of {0} are kept sealed in the \
         store and need it"
    )]
    NoKey(String),
    #[error("another process is renewing the token of {0}; try again in a moment")]
    Busy(String),
    #[error("while asking {shop} for an Admin API token: {source}")]
    Http {
        shop: String,
        source: reqwest::Error,
    },
    #[error("{shop} refused the token request ({status}){hint}: {body}")]
    Refused {
        shop: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("{0} answered the token request with a body that is not a token")]
    NotAToken(String),
    #[error("the stored token of {shop}: {reason}")]
    Stored { shop: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A token with what is known of its lifetime. Sealed in the store as JSON.
#[derive(Clone, Serialize, Deserialize)]
pub struct Token {
    pub access_token: String,
    /// Unix ms it was obtained at.
    pub obtained_at_ms: i64,
    /// Unix ms it expires at; `None`: it does not.
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at_ms: Option<i64>,
    /// The scopes granted, comma-separated, as Shopify answered.
    #[serde(default)]
    pub scope: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refreshable", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether the token should be renewed at `now_ms`.
    fn due(&self, now_ms: i64) -> bool {
        match self.expires_at_ms {
            None => false,
            Some(end) => {
                let life = (end - self.obtained_at_ms).max(0) as f64;
                now_ms >= self.obtained_at_ms + (life * RENEW_AT) as i64
            }
        }
    }

    /// A token from Shopify's answer to a token request.
    pub fn from_answer(answer: TokenAnswer, now_ms: i64) -> Token {
        Token {
            access_token: answer.access_token,
            obtained_at_ms: now_ms,
            expires_at_ms: answer
                .expires_in
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            refresh_token: answer.refresh_token,
            refresh_expires_at_ms: answer
                .refresh_token_expires_in
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            scope: answer.scope.unwrap_or_default(),
        }
    }
}

/// Shopify's answer to `POST /admin/oauth/access_token`.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub refresh_token_expires_in: Option<i64>,
}

/// The name a shop's token is stored under.
pub fn credential_name(domain: &str) -> String {
    format!("shopify:{domain}")
}

/// One shop's Admin API tokens.
#[derive(Debug)]
pub struct AdminTokens {
    shop: Shop,
    http: reqwest::Client,
    store: Option<SharedStore>,
    key: Option<SecretKey>,
    clock: SharedClock,
    current: Mutex<Option<Token>>,
    /// The token in `current` could not be stored yet.
    unsaved: std::sync::atomic::AtomicBool,
}

impl AdminTokens {
    /// Tokens for `shop`. Without a store (`pincapi shopify connect` before `serve` ever ran
    /// still has one: the configured store) tokens live in memory.
    pub fn new(
        shop: Shop,
        store: Option<SharedStore>,
        key: Option<SecretKey>,
        clock: SharedClock,
        timeout: Duration,
    ) -> Arc<AdminTokens> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("pincapi/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(AdminTokens {
            shop,
            http,
            store,
            key,
            clock,
            current: Mutex::new(None),
            unsaved: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The shop.
    pub fn shop(&self) -> &Shop {
        &self.shop
    }

    /// A token to call the Admin API with: the current one, or a renewed one when it is due.
    pub async fn token(&self) -> Result<Secret, TokenError> {
        self.get(None).await
    }

    /// A token after the Admin API refused `rejected` with a 401: a renewed one (a static
    /// token cannot be renewed and is returned as it is).
    pub async fn after_rejection(&self, rejected: &Secret) -> Result<Secret, TokenError> {
        self.get(Some(rejected.expose())).await
    }

    /// The scopes the current token was granted, as Shopify last said (empty for a static
    /// token).
    pub async fn granted_scopes(&self) -> Vec<String> {
        let current = self.current.lock().await;
        current
            .as_ref()
            .map(|t| {
                t.scope
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores the token the install flow obtained (sealed), replacing any other.
    pub async fn install(&self, token: Token) -> Result<(), TokenError> {
        self.save(&token).await?;
        *self.current.lock().await = Some(token);
        Ok(())
    }

    async fn get(&self, rejected: Option<&str>) -> Result<Secret, TokenError> {
        let domain = self.shop.domain.clone();
        let (client_id, client_secret, install) = match &self.shop.auth {
            AdminAuth::None => return Err(TokenError::NoAccess(domain)),
            AdminAuth::Static(t) => return Ok(t.clone()),
            AdminAuth::ClientCredentials {
                client_id,
                client_secret,
            } => (client_id, client_secret, false),
            AdminAuth::Install {
                client_id,
                client_secret,
            } => (client_id, client_secret, true),
        };
        if install && self.key.is_none() {
            return Err(TokenError::NoKey(domain));
        }
        let mut current = self.current.lock().await;
        if self.unsaved.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(t) = current.as_ref()
            && self.save(t).await.is_ok()
        {
            self.unsaved
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let now = self.clock.now_ms();
        let usable = |t: &Token| !t.due(now) && Some(t.access_token.as_str()) != rejected;
        if let Some(t) = current.as_ref().filter(|t| usable(t)) {
            return Ok(Secret::new(t.access_token.clone()));
        }
        // One process at a time renews: a rotating refresh token must be used once.
        let _lock = match &self.store {
            Some(store) => {
                let name = credential_name(&domain);
                match crate::store::lock_credential(store.as_ref(), &name, RENEWAL_WAIT).await? {
                    Some(lock) => Some(lock),
                    None => return Err(TokenError::Busy(domain)),
                }
            }
            None => None,
        };
        // Another process (or the install flow) may have stored a newer token meanwhile.
        let stored = self.load().await?;
        if let Some(stored) = stored.clone().filter(|t| usable(t)) {
            let token = Secret::new(stored.access_token.clone());
            *current = Some(stored);
            return Ok(token);
        }
        // The stored refresh token is the newest: another process may have rotated the one
        // held here.
        let refresh = stored
            .and_then(|t| t.refresh_token)
            .or_else(|| current.as_ref().and_then(|t| t.refresh_token.clone()));
        let answer = if install {
            let refresh = refresh
                .clone()
                .ok_or_else(|| TokenError::NotInstalled(domain.clone()))?;
            self.ask(&[
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ])
            .await?
        } else {
            self.ask(&[
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("grant_type", "client_credentials"),
            ])
            .await?
        };
        let mut token = Token::from_answer(answer, self.clock.now_ms());
        if install && token.refresh_token.is_none() {
            // A refresh that does not rotate keeps the refresh token it used.
            token.refresh_token = refresh;
        }
        tracing::info!(shop = %domain, expires_in_secs = token.expires_at_ms.map(|e| (e - token.obtained_at_ms) / 1000), "Obtained a Shopify Admin API token");
        let secret = Secret::new(token.access_token.clone());
        // Held before it is saved: a failed save must not lose a rotated refresh token. It is
        // saved again at the next call.
        *current = Some(token.clone());
        if let Err(e) = self.save(&token).await {
            tracing::error!(shop = %domain, error = %e, "Could not store the new Shopify token; it is kept in memory and saved at the next call");
            self.unsaved
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(secret)
    }

    /// Posts a token request to `{origin}/admin/oauth/access_token`.
    pub async fn ask(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, TokenError> {
        request_token(&self.http, &self.shop, form).await
    }

    async fn load(&self) -> Result<Option<Token>, TokenError> {
        let (Some(store), Some(key)) = (&self.store, &self.key) else {
            return Ok(None);
        };
        crate::sealed::load_json(store.as_ref(), key, &credential_name(&self.shop.domain))
            .await
            .map_err(|reason| TokenError::Stored {
                shop: self.shop.domain.clone(),
                reason,
            })
    }

    async fn save(&self, token: &Token) -> Result<(), TokenError> {
        let (Some(store), Some(key)) = (&self.store, &self.key) else {
            return Ok(());
        };
        let name = credential_name(&self.shop.domain);
        crate::sealed::save_json(store.as_ref(), key, &name, token, self.clock.now_ms())
            .await
            .map_err(|reason| TokenError::Stored {
                shop: self.shop.domain.clone(),
                reason,
            })
    }
}

/// `POST {origin}/admin/oauth/access_token` with `form`, for the grants and the install's code
/// exchange.
pub async fn request_token(
    http: &reqwest::Client,
    shop: &Shop,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, TokenError> {
    let url = format!("{}/admin/oauth/access_token", shop.origin());
    let resp = http
        .post(&url)
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| TokenError::Http {
            shop: shop.domain.clone(),
            source: e.without_url(),
        })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| TokenError::Http {
        shop: shop.domain.clone(),
        source: e.without_url(),
    })?;
    if !status.is_success() {
        let hint = match status.as_u16() {
            400 | 401 | 403 => {
                "; check the shop's client_id and client_secret, and that the app is installed \
                 on the shop"
            }
            _ => "",
        };
        return Err(TokenError::Refused {
            shop: shop.domain.clone(),
            status: status.as_u16(),
            hint,
            body: super::admin::snippet(&body),
        });
    }
    serde_json::from_slice(&body).map_err(|_| TokenError::NotAToken(shop.domain.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_due_at_80_percent_of_its_life_and_a_static_one_never() {
        let t = Token {
            access_token: "a".into(),
            obtained_at_ms: 0,
            expires_at_ms: Some(100_000),
            refresh_token: None,
            refresh_expires_at_ms: None,
            scope: String::new(),
        };
        assert!(!t.due(79_999));
        assert!(t.due(80_000));
        let forever = Token {
            expires_at_ms: None,
            ..t.clone()
        };
        assert!(!forever.due(i64::MAX));
        assert!(!format!("{t:?}").contains("\"a\""));
    }
}
