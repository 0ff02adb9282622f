//! The ad accounts' call budgets, shared by every instance on the database: one row per call
//! taken in the last minute (`call_slots`), counted and added under a per-account advisory
//! lock, so N instances together never take more than the budget in any 60 seconds and one
//! instance alone may take all of it. On with `postgres.shared_call_budget`. A call is one transaction of three short statements;
//! it carries up to a whole batch of events.

use deadpool_postgres::GenericClient;

use super::PgError;

/// The advisory lock class of the budgets (the second key is the account's hash).
const BUDGET_LOCK: i32 = 0x7062_6764; // "pbgd"

pub(super) async fn take<C: GenericClient + Sync>(
    c: &C,
    ad_account_id: &str,
    limit: u32,
    now_ms: i64,
) -> Result<Result<i64, i64>, PgError> {
    c.execute(
        // The schema is part of the key: gateways on other schemas of one database (tests,
        // or a staging beside production) never wait for each other.
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || $2))",
        &[&BUDGET_LOCK, &ad_account_id],
    )
    .await?;
    c.execute(
        "DELETE FROM call_slots WHERE ad_account_id = $1 AND taken_at_ms <= $2",
        &[&ad_account_id, &(now_ms - 60_000)],
    )
    .await?;
    let row = c
        .query_one(
            "SELECT count(*), min(taken_at_ms) FROM call_slots WHERE ad_account_id = $1",
            &[&ad_account_id],
        )
        .await?;
    let taken: i64 = row.get(0);
    if taken >= i64::from(limit.max(1)) {
        let oldest: Option<i64> = row.get(1);
        return Ok(Err(oldest.map_or(now_ms, |t| t + 60_000)));
    }
    let row = c
        .query_one(
            "INSERT INTO call_slots (ad_account_id, taken_at_ms) VALUES ($1, $2) RETURNING id",
            &[&ad_account_id, &now_ms],
        )
        .await?;
    Ok(Ok(row.get(0)))
}

pub(super) async fn give_back<C: GenericClient + Sync>(
    c: &C,
    ad_account_id: &str,
    slot: i64,
) -> Result<(), PgError> {
    c.execute(
        "DELETE FROM call_slots WHERE ad_account_id = $1 AND id = $2",
        &[&ad_account_id, &slot],
    )
    .await?;
    Ok(())
}
