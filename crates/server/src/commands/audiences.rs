//! `pincapi audiences preview|sync` and `pincapi forget --email|--maid`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use pincapi_core::audience::IdKind;
use pincapi_core::normalize::{self, HashedField};

use crate::clock::system_now_ms as now_ms;
use crate::config;
use crate::metrics::Metrics;
use crate::store::open::open_existing_store;

/// `pincapi audiences ...`.
#[derive(Debug, Subcommand)]
pub enum AudiencesCommand {
    /// Read new events, then print each segment's size and how many members carry an email
    /// or a mobile ad id. Sends nothing.
    Preview {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read new events and bring the Pinterest customer lists and audiences in step once;
    /// print what changed.
    Sync {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `pincapi forget`: who to forget (one of the two).
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The email address (normalised and hashed here; never stored or printed raw).
    #[arg(long, required_unless_present = "maid", conflicts_with = "maid")]
    pub email: Option<String>,
    /// The mobile ad id (hashed here).
    #[arg(long)]
    pub maid: Option<String>,
}

/// Runs `pincapi audiences ...`.
pub async fn audiences(
    config_file: Option<&std::path::Path>,
    cmd: AudiencesCommand,
) -> anyhow::Result<ExitCode> {
    let config = config::load(config_file)?;
    config.validate(false)?;
    let store = open_existing_store(&config).await?;
    match cmd {
        AudiencesCommand::Preview { json } => {
            let rows = crate::audiences::preview(&config, &store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<18}  {:<20}  {:>8}  {:>8}  {:>8}",
                "ad_account", "segment", "members", "email", "maid"
            );
            for r in rows {
                println!(
                    "{:<18}  {:<20}  {:>8}  {:>8}  {:>8}",
                    r.ad_account_id, r.segment, r.members, r.with_email, r.with_maid
                );
            }
        }
        AudiencesCommand::Sync { json } => {
            let metrics = Metrics::default();
            let oauth = crate::pinterest_oauth::OAuthTokens::new(
                &config,
                Some(store.clone()),
                crate::clock::SystemClock::shared(),
                None,
            );
            let report = crate::audiences::run_once(&config, &store, &metrics, &oauth).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            for note in &report.notes {
                println!("note: {note}");
            }
            for account in &report.skipped {
                println!("ad account {account}: skipped, another run is syncing it");
            }
            if report.segments.is_empty() && report.skipped.is_empty() {
                println!("no segment has members yet; nothing sent");
            }
            for r in &report.segments {
                let status = match r.status.as_deref() {
                    Some("TOO_SMALL") => format!(
                        "TOO_SMALL (Pinterest needs {} matched members)",
                        crate::audiences::sync::MIN_MATCHED
                    ),
                    Some(s) => s.to_owned(),
                    None => "unknown".to_owned(),
                };
                println!(
                    "{} {} {}: {} members, +{} -{}, list {}, audience {} {}{}",
                    r.ad_account_id,
                    r.segment,
                    r.kind,
                    r.members,
                    r.added,
                    r.removed,
                    r.customer_list_id.as_deref().unwrap_or("-"),
                    r.audience_id.as_deref().unwrap_or("-"),
                    status,
                    if r.also.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", r.also.join(", "))
                    }
                );
            }
            println!("{} added, {} removed", report.added(), report.removed());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pincapi forget`.
pub async fn forget(
    config_file: Option<&std::path::Path>,
    args: ForgetArgs,
) -> anyhow::Result<ExitCode> {
    let config = config::load(config_file)?;
    config.validate(false)?;
    let (kind, field, raw) = match (&args.email, &args.maid) {
        (Some(e), None) => (IdKind::Email, HashedField::Em, e),
        (None, Some(m)) => (IdKind::Maid, HashedField::HashedMaids, m),
        _ => bail!("say who: --email ADDRESS or --maid ID"),
    };
    let hash = normalize::hash(field, raw, None).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}",
            if kind == IdKind::Email {
                "--email"
            } else {
                "--maid"
            }
        )
    })?;
    let store = open_existing_store(&config).await?;
    let report = store.forget_member(kind, hash.as_str(), now_ms()).await?;
    println!(
        "forgot {} {}: facts deleted in {} ad account(s), taken out of {} stored event(s), {} \
         unsent event(s) dropped; the next audience sync removes it from every list",
        kind.as_str(),
        hash,
        report.members,
        report.events_scrubbed,
        report.events_dropped
    );
    Ok(ExitCode::SUCCESS)
}
