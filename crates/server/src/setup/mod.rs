//! The go-live check, live (`pincapi status`, `/api/status` and the dashboard's Setup
//! panel). Per ad account and shop: the store
//! answers, Pinterest takes the conversion token (`?test=true`), the OAuth token works and
//! when it expires, the Shopify credentials and scopes, the webhook subscriptions and the
//! last delivery, the poller's last run, browser events in the last 24 hours, `public_url`
//! reachable over HTTPS, and the Event Quality Score's last poll. Each check says `ok`,
//! `warning` or `failing`, and the fix. (`check-config` is the offline half: the settings
//! alone.) Inside `serve`, [`SetupCache`] keeps a run for five minutes.

use std::time::Duration;

use serde::Serialize;

pub mod token;

use crate::clock::{SystemClock, system_now_ms};
use crate::config::Config;
use crate::pinterest_client::PinterestClient;
use crate::pinterest_oauth::OAuthTokens;
use crate::shopify::access::ShopAccess;
use crate::shopify::connect::{connect, webhook_uri};
use crate::store::SharedStore;
use crate::store::open::{Opener, open_store};

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    /// What it is about: `store`, an ad account id, a shop's domain, `public_url`.
    pub subject: String,
    /// `ok`, `warning` or `failing`.
    pub status: &'static str,
    pub detail: String,
    /// What to do about it (`None` when ok).
    pub fix: Option<String>,
}

fn ok(check: &'static str, subject: &str, detail: impl Into<String>) -> Check {
    Check {
        check,
        subject: subject.to_owned(),
        status: "ok",
        detail: detail.into(),
        fix: None,
    }
}

fn bad(
    status: &'static str,
    check: &'static str,
    subject: &str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        check,
        subject: subject.to_owned(),
        status,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Every check, in order, opening the store `config` names.
pub async fn checks(config: &Config) -> Vec<Check> {
    checks_with(config, None).await
}

/// Every check, in order, on `store` when the caller holds it open already (`serve`).
pub async fn checks_with(config: &Config, open: Option<SharedStore>) -> Vec<Check> {
    let mut out = Vec::new();
    if let Err(e) = config.validate(true) {
        out.push(bad(
            "failing",
            "settings",
            "config",
            e.to_string(),
            "fix the setting the message names (`pincapi check-config` prints them all)",
        ));
        return out;
    }
    let opened = match open {
        Some(store) => store.ping().await.map(|_| store).map_err(|e| e.to_string()),
        None => open_and_ping(config).await,
    };
    let store = match opened {
        Ok(store) => {
            out.push(ok("store", "store", "reachable"));
            store
        }
        Err(e) => {
            out.push(bad(
                "failing",
                "store",
                "store",
                format!("unreachable: {e}"),
                "check `store` (PINCAPI_STORE): the path must be writable, the PostgreSQL \
                 server up and the URL's credentials right",
            ));
            return out;
        }
    };
    let now = system_now_ms();
    let mut accounts = config.all_accounts();
    if let Ok(connected) = crate::pinterest_oauth::connected_accounts(config, &store).await {
        for a in connected {
            if !accounts.iter().any(|c| c.id == a.id) {
                accounts.push(a);
            }
        }
    }
    match PinterestClient::new(&config.pinterest_api_base, config.request_timeout()) {
        Ok(client) => {
            for a in &accounts {
                out.push(match token::check(&client, a).await {
                    Ok(msg) => ok("conversion_token", &a.id, msg),
                    Err(msg) => bad(
                        "failing",
                        "conversion_token",
                        &a.id,
                        msg,
                        "a new conversion access token from Ads Manager (Conversions → \
                         Conversions API), or `pincapi pinterest connect --ad-account ID`",
                    ),
                });
            }
        }
        Err(e) => out.push(bad(
            "failing",
            "conversion_token",
            "pinterest_api_base",
            e.to_string(),
            "check pinterest_api_base",
        )),
    }
    out.push(oauth_check(config, &store, now).await);
    out.extend(shopify_checks(config, &store, now).await);
    out.extend(browser_checks(&store, &accounts, now).await);
    out.push(public_url_check(config).await);
    out.push(eqs_check(config, &store, now).await);
    out
}

async fn open_and_ping(config: &Config) -> Result<SharedStore, String> {
    let store = tokio::time::timeout(Duration::from_secs(15), open_store(config, Opener::Tool))
        .await
        .map_err(|_| "no answer within 15 s".to_owned())?
        .map_err(|e| e.to_string())?
        .store;
    store.ping().await.map_err(|e| e.to_string())?;
    Ok(store)
}

async fn oauth_check(config: &Config, store: &SharedStore, now: i64) -> Check {
    let oauth = OAuthTokens::new(config, Some(store.clone()), SystemClock::shared(), None);
    if !oauth.available().await {
        return bad(
            "warning",
            "oauth_token",
            "pinterest",
            "no OAuth token: audiences and the Event Quality Score are off",
            "run `pincapi pinterest connect` (with pinterest_app_id and pinterest_app_secret)",
        );
    }
    match oauth.ad_accounts().await {
        Ok(reached) => {
            let expiry = oauth.expires_at_ms().await;
            let detail = match expiry {
                Some(end) => format!(
                    "valid ({} ad accounts reached); expires in {} h, refreshed before",
                    reached.len(),
                    (end - now) / 3_600_000
                ),
                None => format!(
                    "valid ({} ad accounts reached); a static token: nothing renews it",
                    reached.len()
                ),
            };
            if expiry.is_none() && config.pinterest_app_id.is_none() {
                bad(
                    "warning",
                    "oauth_token",
                    "pinterest",
                    detail,
                    "run `pincapi pinterest connect` so the token is refreshed for ever",
                )
            } else {
                ok("oauth_token", "pinterest", detail)
            }
        }
        Err(e) => bad(
            "failing",
            "oauth_token",
            "pinterest",
            e.to_string(),
            "run `pincapi pinterest connect` again",
        ),
    }
}

async fn shopify_checks(config: &Config, store: &SharedStore, now: i64) -> Vec<Check> {
    let mut out = Vec::new();
    let Ok(access) = ShopAccess::new(config, Some(store.clone()), SystemClock::shared()) else {
        return out;
    };
    let activity = store.shopify_activity().await.unwrap_or_default();
    for api in access.apis() {
        let shop = api.shop().domain.clone();
        let Some(public) = config.public_base() else {
            out.push(bad(
                "warning",
                "shopify_webhooks",
                &shop,
                "public_url is not set: webhook subscriptions are not checked",
                "set public_url (PINCAPI_PUBLIC_URL) and run `pincapi shopify connect`",
            ));
            continue;
        };
        match connect(api, &webhook_uri(public), true).await {
            Ok(r) => {
                out.push(if r.missing_scopes.is_empty() {
                    ok(
                        "shopify_credentials",
                        &shop,
                        "token obtained; scopes granted",
                    )
                } else {
                    bad(
                        "failing",
                        "shopify_credentials",
                        &shop,
                        format!("missing scopes: {}", r.missing_scopes.join(", ")),
                        "add the scopes to the app's configuration and approve them on the shop",
                    )
                });
                let last = activity
                    .iter()
                    .find(|a| a.shop == shop)
                    .and_then(|a| a.last_webhook_ms)
                    .map_or("no delivery recorded".to_owned(), |t| {
                        format!("last delivery {} min ago", (now - t) / 60_000)
                    });
                out.push(if r.missing_topics.is_empty() {
                    ok(
                        "shopify_webhooks",
                        &shop,
                        format!("every subscription in place; {last}"),
                    )
                } else {
                    bad(
                        "failing",
                        "shopify_webhooks",
                        &shop,
                        format!(
                            "missing subscriptions: {}; {last}",
                            r.missing_topics.join(", ")
                        ),
                        "run `pincapi shopify connect` (serve re-creates them at its next check)",
                    )
                });
            }
            Err(e) => out.push(bad(
                "failing",
                "shopify_credentials",
                &shop,
                e.to_string(),
                "check the shop's client_id and client_secret, and that the app is installed",
            )),
        }
        let poll = activity
            .iter()
            .find(|a| a.shop == shop)
            .and_then(|a| a.last_poll_ms);
        let stale = 3 * config.shopify.poll_interval_ms.max(60_000) as i64;
        out.push(match poll {
            Some(t) if now - t <= stale => ok(
                "shopify_poller",
                &shop,
                format!("last run {} min ago", (now - t) / 60_000),
            ),
            Some(t) => bad(
                "warning",
                "shopify_poller",
                &shop,
                format!("last run {} min ago", (now - t) / 60_000),
                "is `serve` running? its log says why a run failed",
            ),
            None => bad(
                "warning",
                "shopify_poller",
                &shop,
                "never ran",
                "start `serve` (shopify.poller = true)",
            ),
        });
    }
    out
}

async fn browser_checks(
    store: &SharedStore,
    accounts: &[crate::config::AccountConfig],
    now: i64,
) -> Vec<Check> {
    let since = (now / 1000 - 86_400).div_euclid(3600) * 3600;
    let hours = store.quality_hours(since).await.unwrap_or_default();
    use pincapi_core::source::Source;
    accounts
        .iter()
        .map(|a| {
            let n: i64 = hours
                .iter()
                .filter(|h| h.ad_account_id == a.id)
                .map(|h| {
                    Source::ALL
                        .iter()
                        .zip(h.counts.seen)
                        .filter(|(s, _)| s.is_browser())
                        .map(|(_, n)| n)
                        .sum::<i64>()
                })
                .sum();
            if n > 0 {
                ok("browser_events", &a.id, format!("{n} in the last 24 hours"))
            } else {
                bad(
                    "failing",
                    "browser_events",
                    &a.id,
                    "none in the last 24 hours",
                    "install the custom pixel (`pincapi shopify pixel`) or tag.js on the \
                     storefront, and list the shop's origin in allowed_origins",
                )
            }
        })
        .collect()
}

async fn public_url_check(config: &Config) -> Check {
    let Some(public) = config.public_base() else {
        return bad(
            "warning",
            "public_url",
            "public_url",
            "not set",
            "set public_url (PINCAPI_PUBLIC_URL): webhooks, installs and the pixel use it",
        );
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    match http.get(format!("{public}/healthz")).send().await {
        Ok(r) if r.status().is_success() && public.starts_with("https://") => {
            ok("public_url", public, "reachable over HTTPS")
        }
        Ok(r) if r.status().is_success() => bad(
            "warning",
            "public_url",
            public,
            "reachable, but not over HTTPS: Shopify delivers webhooks to HTTPS only",
            "put the gateway behind HTTPS (the README's deployment section)",
        ),
        Ok(r) => bad(
            "failing",
            "public_url",
            public,
            format!("answered {}", r.status()),
            "point public_url at the gateway",
        ),
        Err(e) => bad(
            "failing",
            "public_url",
            public,
            format!("unreachable: {}", e.without_url()),
            "check DNS, the proxy in front, and that `serve` runs",
        ),
    }
}

async fn eqs_check(config: &Config, store: &SharedStore, now: i64) -> Check {
    let scores = store.eqs_scores().await.unwrap_or_default();
    let last = scores.iter().map(|s| s.polled_at_ms).max();
    let interval = config.quality.eqs_interval_secs as i64 * 1000;
    match last {
        Some(t) if now - t <= 2 * interval => ok(
            "eqs",
            "pinterest",
            format!("last polled {} h ago", (now - t) / 3_600_000),
        ),
        Some(t) => bad(
            "warning",
            "eqs",
            "pinterest",
            format!("last polled {} h ago", (now - t) / 3_600_000),
            "is `serve` running with an OAuth token?",
        ),
        None => bad(
            "warning",
            "eqs",
            "pinterest",
            "never polled",
            "connect Pinterest (`pincapi pinterest connect`) and keep `serve` running",
        ),
    }
}

/// A run of the checks kept for a while inside `serve`, so the dashboard and `/api/status` do
/// not call Pinterest and Shopify on every view.
#[derive(Debug)]
pub struct SetupCache {
    ttl: Duration,
    cached: tokio::sync::Mutex<Option<(i64, Vec<Check>)>>,
}

impl SetupCache {
    /// A cache keeping a run for `ttl`.
    pub fn new(ttl: Duration) -> SetupCache {
        SetupCache {
            ttl,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The kept run while it is younger than the TTL, else a new one.
    pub async fn get(&self, config: &Config, store: &SharedStore, now_ms: i64) -> Vec<Check> {
        let mut cached = self.cached.lock().await;
        if let Some((at, checks)) = cached.as_ref()
            && now_ms.saturating_sub(*at) < self.ttl.as_millis() as i64
        {
            return checks.clone();
        }
        let checks = checks_with(config, Some(store.clone())).await;
        *cached = Some((now_ms, checks.clone()));
        checks
    }
}
