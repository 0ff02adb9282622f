//! `pincapi backup --to FILE`, `pincapi restore --from FILE` and `pincapi healthcheck`: the
//! operator's side of running the gateway.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{self, StoreUrl};
use crate::store::sqlite;

/// Runs `pincapi backup`: a consistent copy of the embedded store, taken while `serve` runs.
pub fn backup(config_path: Option<&Path>, to: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    match config.store_url()? {
        StoreUrl::Sqlite(path) => {
            sqlite::backup(&path, to)?;
            println!("backed up {} to {}", path.display(), to.display());
            Ok(ExitCode::SUCCESS)
        }
        StoreUrl::Postgres(_) => bail!(
            "store: a PostgreSQL store is backed up with PostgreSQL's own tools: \
             pg_dump --format=custom --file=pincapi.dump DB (and pg_restore into an empty \
             database); see the README's backup section"
        ),
    }
}

/// Runs `pincapi restore`: the backup in place as the configured (empty) store.
pub fn restore(config_path: Option<&Path>, from: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    match config.store_url()? {
        StoreUrl::Sqlite(path) => {
            sqlite::restore(from, &path)?;
            println!(
                "restored {} into {}; `serve` takes it from here (delivered events stay \
                 delivered, pending ones are sent)",
                from.display(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreUrl::Postgres(_) => {
            bail!("store: restore a PostgreSQL store with pg_restore into an empty database")
        }
    }
}

/// Runs `pincapi healthcheck`: exit 0 when `/readyz` answers 200 (for a container's
/// HEALTHCHECK, without curl in the image), 1 otherwise.
pub async fn healthcheck(
    config_path: Option<&Path>,
    url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let url = match url {
        // A bare address means the gateway's readiness route.
        Some(u) if u.trim_end_matches('/').matches('/').count() <= 2 => {
            format!("{}/readyz", u.trim_end_matches('/'))
        }
        Some(u) => u,
        None => {
            let config = config::load(config_path)?;
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}/readyz")
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {}", e.without_url());
            Ok(ExitCode::FAILURE)
        }
    }
}
