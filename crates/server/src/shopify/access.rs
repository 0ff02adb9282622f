//! Admin API access for every configured shop: one [`AdminApi`] (and so one token) per shop,
//! shared by the poller, the census, the webhook check and the install flow inside `serve`,
//! and built the same way by the commands that run once.

use std::sync::Arc;

use super::admin::{AdminApi, ShopifyError};
use super::token::AdminTokens;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::config::shopify::{self as shop_config, Shop};
use crate::sealed::SecretKey;
use crate::store::{CredentialStore, SharedStore};

/// Every configured shop with its Admin API client (shops without Admin API access have
/// none).
#[derive(Debug, Default)]
pub struct ShopAccess {
    shops: Vec<(Shop, Option<Arc<AdminApi>>)>,
    key: Option<SecretKey>,
}

impl ShopAccess {
    /// The shops of `config`; tokens are kept sealed in `store` when `secret_key` is set. A
    /// configuration whose shops do not resolve has none (`serve` refuses it at start).
    pub fn new(
        config: &Config,
        store: Option<SharedStore>,
        clock: SharedClock,
    ) -> Result<ShopAccess, ShopifyError> {
        let key = secret_key(config);
        let shops = shop_config::shops(config).unwrap_or_default();
        let mut out = Vec::with_capacity(shops.len());
        for shop in shops {
            let api = if shop.polls() {
                let tokens = AdminTokens::new(
                    shop.clone(),
                    store.clone(),
                    key.clone(),
                    Arc::clone(&clock),
                    config.request_timeout(),
                );
                Some(AdminApi::new(tokens, config.request_timeout())?)
            } else {
                None
            };
            out.push((shop, api));
        }
        Ok(ShopAccess { shops: out, key })
    }

    /// The shops with Admin API access.
    pub fn apis(&self) -> impl Iterator<Item = &Arc<AdminApi>> {
        self.shops.iter().filter_map(|(_, api)| api.as_ref())
    }

    /// The Admin API of the shop `domain` (normalised), if it has access.
    pub fn api(&self, domain: &str) -> Option<&Arc<AdminApi>> {
        self.shops
            .iter()
            .find(|(s, _)| s.domain == domain)
            .and_then(|(_, api)| api.as_ref())
    }

    /// The configured shop `domain` (normalised).
    pub fn shop(&self, domain: &str) -> Option<&Shop> {
        self.shops
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.domain == domain)
    }

    /// The key credentials are sealed with, if set.
    pub fn key(&self) -> Option<&SecretKey> {
        self.key.as_ref()
    }
}

/// The key of `PINCAPI_SECRET_KEY`, if set and well-formed (`Config::validate` refuses a
/// malformed one).
pub fn secret_key(config: &Config) -> Option<SecretKey> {
    (!config.secret_key.is_empty())
        .then(|| SecretKey::from_hex(config.secret_key.expose()).ok())
        .flatten()
}

/// Refuses to go on without `PINCAPI_SECRET_KEY` while the store holds sealed credentials: they
/// could not be opened, and the shops they belong to would lose their Admin API access.
pub async fn check_key(config: &Config, store: &dyn CredentialStore) -> Result<(), String> {
    if secret_key(config).is_some() {
        return Ok(());
    }
    let n = store.credential_count().await.map_err(|e| e.to_string())?;
    if n > 0 {
        return Err(format!(
            "secret_key: the store holds {n} sealed credential(s) (Shopify tokens from installs \
             or client credentials) and PINCAPI_SECRET_KEY is not set; set it to the 64 hex \
             characters they were sealed with"
        ));
    }
    Ok(())
}
