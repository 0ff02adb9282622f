//! `[postgres]`: the shared store's pool; and printing a URL without its password (store URLs,
//! `pinterest_api_base`).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};

/// `[postgres]`: the connection pool of a PostgreSQL store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connections per instance (the database's `max_connections` must cover every
    /// instance's pool, plus one per Shopify shop while it is polled and one while an
    /// audience sync runs).
    pub pool_size: usize,
    /// Seconds to wait for a connection to PostgreSQL before the store counts as unavailable.
    pub connect_timeout_secs: u64,
    /// One call budget per ad account for every instance on the database (`call_slots`),
    /// instead of each instance counting `max_calls_per_minute` on its own. It costs one
    /// short transaction under a per-account lock for each delivery round. Off by default.
    pub shared_call_budget: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            pool_size: 16,
            connect_timeout_secs: 10,
            shared_call_budget: false,
        }
    }
}

impl PostgresConfig {
    /// Errors name the key.
    pub fn validate(config: &Config) -> Result<(), ConfigError> {
        let p = &config.postgres;
        if !(1..=512).contains(&p.pool_size) {
            invalid!("postgres.pool_size: must be 1..=512");
        }
        if !(1..=600).contains(&p.connect_timeout_secs) {
            invalid!("postgres.connect_timeout_secs: must be 1..=600");
        }
        Ok(())
    }
}

/// A URL with its password replaced by `***` (`postgres://user:***@host/db`, also a
/// `password=` query parameter), for logs, errors and `check-config`: store URLs and
/// `pinterest_api_base` alike.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Serialises a store URL without its password (for `Config`'s `store`).
pub fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}
