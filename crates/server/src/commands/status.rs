//! `pincapi status [--json]`: the go-live check (`setup`), printed; exit 1 when anything
//! fails.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::setup::checks;

/// Runs `pincapi status`.
pub async fn run(config_path: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let checks = checks(&config).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "{:<8} {:<20} {:<24} {}",
                c.status, c.check, c.subject, c.detail
            );
            if let Some(fix) = &c.fix {
                println!("{:<8} {:<20} {:<24} fix: {fix}", "", "", "");
            }
        }
    }
    Ok(if checks.iter().any(|c| c.status == "failing") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
