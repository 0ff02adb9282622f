//! `[server]`: what a client may make the listener hold (see `crate::serve`).

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Connections open at once; one more is closed as soon as it is accepted. Keep it below
    /// the process's file limit (`ulimit -n`, systemd's `LimitNOFILE`) less what the store
    /// and outgoing requests need.
    pub max_connections: usize,
    /// Seconds a request's head may take to arrive, and a kept-alive connection may sit idle.
    pub header_timeout_secs: u64,
    /// Seconds a request's body may take to arrive.
    pub body_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 768,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
        }
    }
}

impl ServerConfig {
    /// Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.max_connections) {
            invalid!("server.max_connections: must be 1..=1000000");
        }
        if !(1..=600).contains(&self.header_timeout_secs) {
            invalid!("server.header_timeout_secs: must be 1..=600");
        }
        if !(1..=3600).contains(&self.body_timeout_secs) {
            invalid!("server.body_timeout_secs: must be 1..=3600");
        }
        Ok(())
    }
}
