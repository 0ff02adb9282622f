//! Changing the configuration while the gateway runs (SIGHUP): the file is read again and
//! validated; a configuration that does not load or validate is refused, naming the key, and
//! the running one stays. An accepted one becomes a new [`AppState`]: ad accounts and shops
//! added, changed or removed, keys, Tag, browser, quality and audience settings. The store, the
//! delivery engine, the listener and the metrics carry over, so no request or event is dropped:
//! a request in flight finishes on the state it started with, the next one sees the new state.
//!
//! What only a restart can change (where the gateway listens, the store, the delivery engine's
//! settings, the secret key, logging) keeps its running value, with a warning naming each key.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::delivery::AccountChanges;
use crate::state::AppState;

/// Where reload requests come from and how the configuration is read again.
pub struct Reloads {
    /// One message per request (a SIGHUP).
    pub requests: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// Reads and validates the configuration as `serve` did at start.
    pub load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
}

impl std::fmt::Debug for Reloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloads")
    }
}

/// What an accepted reload changed.
#[derive(Debug, Default)]
pub struct Applied {
    pub accounts: AccountChanges,
    pub shops_added: Vec<String>,
    pub shops_removed: Vec<String>,
    /// Keys whose new value needs a restart; their running value was kept.
    pub kept: Vec<&'static str>,
}

/// Keeps in `new` the running value of every key only a restart can change, and names those
/// that differed.
pub fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    fn same<T: Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }
    let mut kept = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if !same(&old.$($field)+, &new.$($field)+) {
                new.$($field)+ = old.$($field)+.clone();
                kept.push($name);
            }
        };
    }
    keep!("listen", listen);
    keep!("store", store);
    keep!("sqlite_synchronous", sqlite_synchronous);
    keep!("postgres", postgres);
    keep!("pinterest_api_base", pinterest_api_base);
    keep!("delivery", delivery);
    keep!("server", server);
    keep!("shutdown_grace_secs", shutdown_grace_secs);
    keep!("log", log);
    keep!("log_format", log_format);
    keep!("ingest.max_event_age_secs", ingest.max_event_age_secs);
    keep!("ingest.max_queue_depth", ingest.max_queue_depth);
    keep!("ingest.shed_retry_after_secs", ingest.shed_retry_after_secs);
    // Secrets serialise masked: compared as they are.
    if old.secret_key.expose() != new.secret_key.expose() {
        new.secret_key = old.secret_key.clone();
        kept.push("secret_key");
    }
    kept
}

/// Builds the state of `config` beside the running `old` one and points delivery at its ad
/// accounts. Nothing running changes unless this succeeds.
pub async fn apply(old: &AppState, mut config: Config) -> Result<(AppState, Applied), String> {
    let kept = keep_restart_only(&old.config, &mut config);
    crate::assemble::resolve_accounts(&mut config, &old.store)
        .await
        .map_err(|e| e.to_string())?;
    let new = crate::assemble::assemble(config, crate::assemble::Shared::of(old))
        .map_err(|e| e.to_string())?;
    let domains = |s: &AppState| -> Vec<String> {
        crate::config::shopify::shops(&s.config)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.domain)
            .collect()
    };
    let (before, after) = (domains(old), domains(&new));
    let accounts = new.delivery.reconcile(&new.config.all_accounts());
    let applied = Applied {
        accounts,
        shops_added: after
            .iter()
            .filter(|d| !before.contains(d))
            .cloned()
            .collect(),
        shops_removed: before
            .iter()
            .filter(|d| !after.contains(d))
            .cloned()
            .collect(),
        kept,
    };
    Ok((new, applied))
}

/// Logs what a reload did, then counts it: the count comes last so that whoever sees it (a
/// test, an operator's script) finds the log lines already written.
pub fn report(state: &AppState, outcome: &Result<Applied, String>) {
    let metrics = Arc::clone(&state.metrics);
    match outcome {
        Ok(a) => {
            for key in &a.kept {
                tracing::warn!(key = %key, "This setting changes only with a restart; the running value is kept");
            }
            for id in &a.accounts.removed {
                tracing::warn!(ad_account_id = %id, "Ad account removed: nothing more is sent to it; its queued events stay in the store until it is configured again");
            }
            tracing::info!(
                accounts_added = ?a.accounts.added,
                accounts_changed = ?a.accounts.changed,
                accounts_removed = ?a.accounts.removed,
                shops_added = ?a.shops_added,
                shops_removed = ?a.shops_removed,
                "Configuration reloaded"
            );
            metrics.inc("pincapi_config_reloads_total", &[("result", "applied")], 1);
        }
        Err(e) => {
            tracing::error!(error = %e, "The new configuration is refused; the running one is kept");
            metrics.inc("pincapi_config_reloads_total", &[("result", "refused")], 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_running_value_and_are_named() {
        let old = crate::config::from_toml("listen = \"127.0.0.1:1\"\n[delivery]\nbatch_size = 10")
            .unwrap();
        let mut new = crate::config::from_toml(
            "listen = \"127.0.0.1:2\"\ntag_id = \"2612345678901\"\n[delivery]\nbatch_size = 20",
        )
        .unwrap();
        let kept = keep_restart_only(&old, &mut new);
        assert_eq!(kept, vec!["listen", "delivery"]);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.delivery.batch_size, 10);
        // What can change live does.
        assert_eq!(new.tag_id.as_deref(), Some("2612345678901"));
    }
}
