//! The queue on SQLite: enqueue (with the repeat rule), claim, settle.

use async_trait::async_trait;
use pincapi_core::event::EventName;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::quality::mark_order;
use crate::store::LedgerFlag;
use crate::store::repeat::{self, RepeatTarget};
use crate::store::tally::{Settled, Tally};
use crate::store::{
    ClaimedEvent, Depth, Enqueued, NewEvent, PAYLOAD_VERSION, Queue, Settlement, StoreError,
    first_per_event,
};

#[async_trait]
impl Queue for SqliteStore {
    async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        self.room_for_new_data()?;
        self.write_counted(move |conn, tally| {
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                out.push(insert_event(conn, e, tally)?);
            }
            Ok(out)
        })
        .await
    }

    async fn claim(
        &self,
        ad_account_id: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let account = ad_account_id.to_owned();
        self.write(move |conn| {
            // One statement picks the due events and leases them: the lease end becomes their
            // next_attempt_at, so no other claim sees them until it passes or they are settled.
            let lease_end = now_ms + lease_ms;
            let mut lease = conn.prepare_cached(
                "UPDATE events SET next_attempt_at = ?4, lease_until = ?4
                 WHERE id IN (
                     SELECT id FROM events
                     WHERE state = 'pending' AND ad_account_id = ?1 AND next_attempt_at <= ?2
                     ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING id, event_id, event_name, event_time, received_at, attempts, test",
            )?;
            let rows = lease.query_map(params![account, now_ms, limit as i64, lease_end], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })?;
            let mut leased = rows.collect::<Result<Vec<_>, _>>()?;
            // Send oldest first.
            leased.sort_unstable_by_key(|row| row.0);
            // The payloads in one statement, in the same order: one step per row of a single
            // query rather than a query per row, which cost a quarter of a claim.
            let ids = serde_json::to_string(&leased.iter().map(|row| row.0).collect::<Vec<_>>())
                .map_err(|e| StoreError::Query(format!("claimed ids: {e}")))?;
            let mut payloads = conn.prepare_cached(
                "SELECT id, body FROM payloads
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
            )?;
            let mut bodies = payloads.query(params![ids])?;
            let mut claimed = Vec::with_capacity(leased.len());
            for (id, event_id, name, event_time, received_at_ms, attempts, test) in leased {
                let event_name = EventName::parse(&name).ok_or_else(|| {
                    StoreError::Query(format!("row {id} has an unknown event_name"))
                })?;
                let payload: String = match bodies.next()? {
                    Some(r) if r.get::<_, i64>(0)? == id => r.get(1)?,
                    _ => return Err(StoreError::Query(format!("row {id} has no payload"))),
                };
                claimed.push(ClaimedEvent {
                    id,
                    event_id,
                    event_name,
                    event_time,
                    received_at_ms,
                    attempts,
                    test,
                    payload,
                    lease_until: lease_end,
                    // One process owns the store and never sends past its lease; what a
                    // process that died had claimed is released at start (and counted there).
                    retaken: false,
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn settle(
        &self,
        lease_until_ms: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError> {
        self.write_counted(move |conn, tally| settle_all(conn, tally, lease_until_ms, settlements))
            .await
    }

    async fn next_due(&self, ad_account_id: &str) -> Result<Option<i64>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_at) FROM events
                     WHERE state = 'pending' AND ad_account_id = ?1",
                )?
                .query_row(params![account], |r| r.get::<_, Option<i64>>(0))?)
        })
        .await
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE events SET next_attempt_at = ?1, lease_until = NULL
                 WHERE state = 'pending' AND lease_until IS NOT NULL",
                params![now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<Vec<Depth>, StoreError> {
        self.read(|conn| {
            // Each half names one state, so each reads its own partial index (`events_due`,
            // `events_dead`) and the delivered rows, most of the table, are never visited: with
            // `state IN (...)` SQLite scanned the whole table on every metrics refresh.
            let mut stmt = conn.prepare_cached(
                "SELECT ad_account_id, event_name, sum(pending), sum(dead) FROM (
                     SELECT ad_account_id, event_name, 1 AS pending, 0 AS dead
                     FROM events WHERE state = 'pending'
                     UNION ALL
                     SELECT ad_account_id, event_name, 0, 1
                     FROM events WHERE state = 'dead')
                 GROUP BY ad_account_id, event_name ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Depth {
                    ad_account_id: r.get(0)?,
                    event_name: r.get(1)?,
                    pending: r.get::<_, i64>(2)? as u64,
                    dead: r.get::<_, i64>(3)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            // Answered from the partial index `events_due`, which holds only pending events.
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM events WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

/// Stores one event, or records it as a repeat of the stored (ad account, event_id).
pub(super) fn insert_event(
    conn: &Connection,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO events (ad_account_id, event_id, event_name, event_time, received_at,
                source, sources, match_keys, test, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (ad_account_id, event_id) DO NOTHING",
        )?
        .execute(params![
            e.ad_account_id,
            e.event_id,
            e.event_name.as_str(),
            e.event_time,
            e.received_at_ms,
            e.source.as_str(),
            e.source.bit(),
            e.match_keys,
            e.test,
            e.received_at_ms + e.hold_ms.max(0),
        ])?;
    if n == 1 {
        conn.prepare_cached(
            "INSERT INTO payloads (id, payload_version, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            conn.last_insert_rowid(),
            PAYLOAD_VERSION,
            e.payload
        ])?;
        let counts = tally.hour(&e.ad_account_id, e.event_name.as_str(), e.received_at_ms);
        counts.received += 1;
        counts.count_sources(e.source.bit());
        counts.count_keys(e.match_keys);
        if e.source.is_browser() {
            mark_order(conn, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen)?;
        }
        Ok(Enqueued::Accepted)
    } else {
        record_repeat(conn, e, tally)
    }
}

/// A repeat of a stored event: what [`repeat::plan`] says, written.
fn record_repeat(
    conn: &Connection,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, StoreError> {
    let stored = conn
        .prepare_cached(
            "SELECT e.id, e.state, e.lease_until IS NOT NULL, p.body, e.source, e.event_name,
                    e.received_at, e.sources, e.match_keys
             FROM events e JOIN payloads p ON p.id = e.id
             WHERE e.ad_account_id = ?1 AND e.event_id = ?2",
        )?
        .query_row(params![e.ad_account_id, e.event_id], |r| {
            Ok(RepeatTarget {
                id: r.get(0)?,
                state: r.get(1)?,
                leased: r.get(2)?,
                payload: r.get(3)?,
                first_source: r.get(4)?,
                event_name: r.get(5)?,
                received_at_ms: r.get(6)?,
                sources: r.get(7)?,
                match_keys: r.get(8)?,
            })
        })?;
    let write = repeat::plan(&stored, e, tally)?;
    let id = stored.id;
    conn.prepare_cached(
        "UPDATE events SET sources = sources | ?2, repeats = repeats + 1 WHERE id = ?1",
    )?
    .execute(params![id, e.source.bit()])?;
    if write.first_browser_report {
        mark_order(conn, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen)?;
    }
    if let Some(merged) = &write.merged {
        conn.prepare_cached("UPDATE payloads SET body = ?2 WHERE id = ?1")?
            .execute(params![id, merged.json])?;
        conn.prepare_cached("UPDATE events SET match_keys = ?2 WHERE id = ?1")?
            .execute(params![id, merged.match_keys])?;
    }
    if let Some(due) = write.due_at_ms {
        conn.prepare_cached(
            "UPDATE events SET next_attempt_at = min(next_attempt_at, ?2) WHERE id = ?1",
        )?
        .execute(params![id, due])?;
    }
    Ok(write.enqueued)
}

/// Settles a claim's events with one `UPDATE ... FROM json_each(...) RETURNING`, the same
/// statement as PostgreSQL's. One statement per event cost most of a round's store time:
/// SQLite copies every page a statement changes into the statement journal before changing
/// it, so a hundred one-row updates copied the same few pages a hundred times. A finished
/// event's last schedule becomes its lease end (what a dropped event is aged by); RETURNING
/// says which were settled (a row whose lease was replaced is not), which is what the
/// aggregates count.
fn settle_all(
    conn: &Connection,
    tally: &mut Tally,
    lease_until_ms: i64,
    settlements: Vec<Settlement>,
) -> Result<usize, StoreError> {
    let settlements = first_per_event(settlements);
    if settlements.is_empty() {
        return Ok(0);
    }
    let rows: Vec<_> = settlements.iter().map(Settlement::row).collect();
    let rows =
        serde_json::to_string(&rows).map_err(|e| StoreError::Query(format!("settlements: {e}")))?;
    let mut stmt = conn.prepare_cached(
        "UPDATE events AS e SET
             state = CASE s.kind WHEN 'retry' THEN e.state ELSE s.kind END,
             sent_at = CASE s.kind WHEN 'delivered' THEN s.at ELSE e.sent_at END,
             warning = CASE s.kind WHEN 'delivered' THEN s.message ELSE e.warning END,
             last_error = CASE s.kind WHEN 'delivered' THEN e.last_error ELSE s.message END,
             next_attempt_at = CASE s.kind WHEN 'retry' THEN s.at ELSE ?1 END,
             attempts = e.attempts + s.counted,
             lease_until = NULL
         FROM (SELECT value ->> 'id' AS id, value ->> 'kind' AS kind, value ->> 'at' AS at,
                      value ->> 'message' AS message, value ->> 'counted' AS counted
               FROM json_each(?2)) AS s
         WHERE e.id = s.id AND e.lease_until = ?1 AND e.state = 'pending'
         RETURNING id, ad_account_id, event_name, event_id, received_at, event_time",
    )?;
    let settled = stmt
        .query_map(params![lease_until_ms, rows], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Settled {
                    ad_account_id: r.get(1)?,
                    event_name: r.get(2)?,
                    event_id: r.get(3)?,
                    received_at_ms: r.get(4)?,
                    event_time: r.get(5)?,
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, e) in &settled {
        let Ok(i) = settlements.binary_search_by_key(id, Settlement::id) else {
            return Err(StoreError::Query(format!(
                "settled row {id} was not asked for"
            )));
        };
        count_settlement(conn, tally, e, &settlements[i])?;
    }
    Ok(settled.len())
}

/// Counts one settlement, and marks a delivered Shopify purchase on the order ledger.
fn count_settlement(
    conn: &Connection,
    tally: &mut Tally,
    e: &Settled,
    s: &Settlement,
) -> Result<(), StoreError> {
    tally.count_settled(e, s);
    if let Settlement::Delivered { .. } = s {
        mark_order(conn, &e.ad_account_id, &e.event_id, LedgerFlag::Delivered)?;
    }
    Ok(())
}
