//! The queue on PostgreSQL: group-committed enqueues (with the repeat rule), claims with
//! `FOR UPDATE SKIP LOCKED`, settlements under the claim's lease.

use std::collections::HashMap;

use tokio::sync::oneshot;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pincapi_core::event::EventName;

use super::quality;
use super::{PgError, PostgresStore, execute, query};
use crate::store::LedgerFlag;
use crate::store::repeat::{self, RepeatTarget};
use crate::store::tally::{Settled, Tally};
use crate::store::{
    ClaimedEvent, Depth, Enqueued, NewEvent, PAYLOAD_VERSION, Queue, Settlement, StoreError,
    first_per_event,
};

#[async_trait]
impl Queue for PostgresStore {
    async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || StoreError::Unavailable("the PostgreSQL enqueue writers stopped".into());
        let (reply, answer) = oneshot::channel();
        self.enqueues.send((events, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn claim(
        &self,
        ad_account_id: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let lease_end = now_ms + lease_ms;
        // One statement: the due rows nobody else is locking are picked and leased; a row
        // another instance claimed a moment ago is either skipped (still locked) or no longer
        // free (its lease_until is in the future once committed). The claim writes only
        // `lease_until`, which no index holds, so PostgreSQL rewrites the row in place on its
        // page (a HOT update) and touches no index: before, the claim also moved the indexed
        // `next_attempt_at` to the lease end, and each claimed row cost four new index
        // entries. Leased rows keep their place at the front of `events_due` until they are
        // settled, so a claim steps over at most the events in flight.
        let rows = self
            .query(
                "WITH picked AS MATERIALIZED (
                     SELECT id, lease_until IS NOT NULL AS retaken FROM events
                     WHERE state = 'pending' AND ad_account_id = $1 AND next_attempt_at <= $2
                         AND (lease_until IS NULL OR lease_until <= $2)
                     ORDER BY next_attempt_at, id LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 UPDATE events e SET lease_until = $4
                 FROM picked, payloads p
                 WHERE e.id = picked.id AND p.id = e.id
                 RETURNING e.id, e.event_id, e.event_name, e.event_time, e.received_at,
                           e.attempts, e.test, p.body, picked.retaken",
                &[&ad_account_id, &now_ms, &(limit as i64), &lease_end],
            )
            .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let name: String = r.get(2);
                let event_name = EventName::parse(&name).ok_or_else(|| {
                    StoreError::Query(format!("row {id} has an unknown event_name"))
                })?;
                Ok(ClaimedEvent {
                    id,
                    event_id: r.get(1),
                    event_name,
                    event_time: r.get(3),
                    received_at_ms: r.get(4),
                    attempts: r.get::<_, i32>(5).max(0) as u32,
                    test: r.get(6),
                    payload: r.get(7),
                    lease_until: lease_end,
                    retaken: r.get(8),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING gives rows in no promised order; send oldest first.
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn settle(
        &self,
        lease_until_ms: i64,
        settlements: Vec<Settlement>,
    ) -> Result<usize, StoreError> {
        let settlements = first_per_event(settlements);
        if settlements.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(settlements.len());
        let mut kinds = Vec::with_capacity(settlements.len());
        let mut ats: Vec<Option<i64>> = Vec::with_capacity(settlements.len());
        let mut messages: Vec<Option<String>> = Vec::with_capacity(settlements.len());
        let mut counted: Vec<i32> = Vec::with_capacity(settlements.len());
        for row in settlements.iter().map(Settlement::row) {
            ids.push(row.id);
            kinds.push(row.kind);
            ats.push(row.at);
            messages.push(row.message);
            counted.push(row.counted);
        }
        let applied = in_transaction!(self, |tx| {
            // One statement updates them all. A finished event's last schedule is its lease
            // end (what a dropped event is aged by), as when claims moved `next_attempt_at`;
            // the settlement rewrites the row anyway, so this costs nothing. RETURNING says which were settled (a row whose
            // lease was replaced is not), which is what the aggregates count. The ids come
            // sorted and the update walks them in that order, taking each row's lock as it
            // goes, which is the order an enqueue merging into these rows locks them in. (A
            // separate `SELECT ... FOR UPDATE` first made that order certain, but wrote a lock
            // record for every row before the update wrote it again; should the planner ever
            // pick another order and PostgreSQL report a deadlock, the transaction is run
            // again.)
            let mut settled = query(
                &tx,
                "UPDATE events e SET
                     state = CASE s.kind WHEN 'retry' THEN e.state ELSE s.kind END,
                     sent_at = CASE s.kind WHEN 'delivered' THEN s.at ELSE e.sent_at END,
                     warning = CASE s.kind WHEN 'delivered' THEN s.message ELSE e.warning END,
                     last_error = CASE s.kind WHEN 'delivered' THEN e.last_error
                                  ELSE s.message END,
                     next_attempt_at = CASE s.kind WHEN 'retry' THEN s.at ELSE $1 END,
                     attempts = e.attempts + s.counted,
                     lease_until = NULL
                 FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::int[])
                      AS s(id, kind, at, message, counted)
                 WHERE e.id = s.id AND e.lease_until = $1 AND e.state = 'pending'
                 RETURNING e.id, e.ad_account_id, e.event_name, e.event_id, e.received_at,
                           e.event_time",
                &[&lease_until_ms, &ids, &kinds, &ats, &messages, &counted],
            )
            .await?;
            settled.sort_by_key(|r| r.get::<_, i64>(0));
            let mut tally = Tally::default();
            for r in &settled {
                let id: i64 = r.get(0);
                let Ok(i) = ids.binary_search(&id) else {
                    return Err(
                        StoreError::Query(format!("settled row {id} was not asked for")).into(),
                    );
                };
                let e = Settled {
                    ad_account_id: r.get(1),
                    event_name: r.get(2),
                    event_id: r.get(3),
                    received_at_ms: r.get(4),
                    event_time: r.get(5),
                };
                tally.count_settled(&e, &settlements[i]);
                if let Settlement::Delivered { .. } = settlements[i] {
                    quality::mark_order(&tx, &e.ad_account_id, &e.event_id, LedgerFlag::Delivered)
                        .await?;
                }
            }
            quality::flush(&tx, tally).await?;
            settled.len()
        })?;
        Ok(applied)
    }

    async fn next_due(&self, ad_account_id: &str) -> Result<Option<i64>, StoreError> {
        // The first unleased event in `events_due`'s order: a leased event is its holder's to
        // settle, and should the holder die, the next claim after its lease (at the latest a
        // poll interval later) takes it. Stepping over the leased rows at the front costs at
        // most the events in flight; a min() over lease ends would read every pending row.
        let rows = self
            .query(
                "SELECT next_attempt_at FROM events
                 WHERE state = 'pending' AND ad_account_id = $1 AND lease_until IS NULL
                 ORDER BY next_attempt_at, id LIMIT 1",
                &[&ad_account_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET next_attempt_at = $1, lease_until = NULL
             WHERE state = 'pending' AND lease_until IS NOT NULL",
            &[&now_ms],
        )
        .await
        .map_err(PgError::into_store)
    }

    async fn depth(&self) -> Result<Vec<Depth>, StoreError> {
        let rows = self
            .query(
                "SELECT ad_account_id, event_name,
                        count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'dead')
                 FROM events WHERE state IN ('pending', 'dead')
                 GROUP BY ad_account_id, event_name ORDER BY 1, 2",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Depth {
                ad_account_id: r.get(0),
                event_name: r.get(1),
                pending: r.get::<_, i64>(2) as u64,
                dead: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    fn shares_call_budgets(&self) -> bool {
        self.shared_call_budget
    }

    async fn take_call(
        &self,
        ad_account_id: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<Result<i64, i64>, StoreError> {
        in_transaction!(self, |tx| super::budget::take(
            &tx,
            ad_account_id,
            limit,
            now_ms
        )
        .await?)
    }

    async fn give_back_call(&self, ad_account_id: &str, slot: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        super::budget::give_back(&client, ad_account_id, slot)
            .await
            .map_err(PgError::into_store)
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        // Answered from the partial index `events_due`, which holds only pending events.
        let rows = self
            .query("SELECT count(*) FROM events WHERE state = 'pending'", &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }
}

/// The row id a settlement is about.
/// Stores events: every first sighting of an (ad account, event_id) in one insert, then the
/// repeats (of stored events, or within the batch) one by one in the order given.
pub(super) async fn enqueue_in<C: GenericClient + Sync>(
    c: &C,
    events: &[NewEvent],
    tally: &mut Tally,
) -> Result<Vec<Enqueued>, PgError> {
    let mut out: Vec<Option<Enqueued>> = vec![None; events.len()];
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        first
            .entry((e.ad_account_id.as_str(), e.event_id.as_str()))
            .or_insert(i);
    }
    let mut fresh: Vec<usize> = first.values().copied().collect();
    // A fixed order of inserts: two instances inserting overlapping events wait on each
    // other in the same order, never in a cycle.
    fresh.sort_by(|&a, &b| {
        (&events[a].ad_account_id, &events[a].event_id)
            .cmp(&(&events[b].ad_account_id, &events[b].event_id))
    });
    let col = |f: &dyn Fn(&NewEvent) -> String| -> Vec<String> {
        fresh.iter().map(|&i| f(&events[i])).collect()
    };
    let accounts = col(&|e| e.ad_account_id.clone());
    let event_ids = col(&|e| e.event_id.clone());
    let names = col(&|e| e.event_name.as_str().to_owned());
    let sources = col(&|e| e.source.as_str().to_owned());
    let num = |f: &dyn Fn(&NewEvent) -> i64| -> Vec<i64> {
        fresh.iter().map(|&i| f(&events[i])).collect()
    };
    let times = num(&|e| e.event_time);
    let received = num(&|e| e.received_at_ms);
    let source_bits = num(&|e| e.source.bit());
    let match_keys = num(&|e| i64::from(e.match_keys));
    let due = num(&|e| e.received_at_ms + e.hold_ms.max(0));
    let tests: Vec<bool> = fresh.iter().map(|&i| events[i].test).collect();
    let bodies: Vec<&str> = fresh.iter().map(|&i| events[i].payload.as_str()).collect();
    // One statement stores the new events and their payloads (a repeat inserts neither): a
    // round trip fewer per group, and PostgreSQL's cost here is mostly per round trip.
    let inserted = query(
        c,
        "WITH input AS MATERIALIZED (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                 $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::boolean[],
                 $10::bigint[], $11::text[])
                 AS i(ad_account_id, event_id, event_name, event_time, received_at, source,
                      sources, match_keys, test, next_attempt_at, body)),
         inserted AS (
             INSERT INTO events (ad_account_id, event_id, event_name, event_time, received_at,
                 source, sources, match_keys, test, next_attempt_at)
             SELECT ad_account_id, event_id, event_name, event_time, received_at, source,
                    sources, match_keys, test, next_attempt_at
             FROM input
             ON CONFLICT (ad_account_id, event_id) DO NOTHING
             RETURNING id, ad_account_id, event_id),
         stored AS (
             INSERT INTO payloads (id, payload_version, body)
             SELECT n.id, $12, i.body
             FROM inserted n JOIN input i USING (ad_account_id, event_id))
         SELECT id, ad_account_id, event_id FROM inserted",
        &[
            &accounts,
            &event_ids,
            &names,
            &times,
            &received,
            &sources,
            &source_bits,
            &match_keys,
            &tests,
            &due,
            &bodies,
            &(PAYLOAD_VERSION as i32),
        ],
    )
    .await?;
    for r in &inserted {
        let account: &str = r.get(1);
        let event_id: &str = r.get(2);
        let Some(&i) = first.get(&(account, event_id)) else {
            return Err(StoreError::Query("an inserted event is not in the batch".into()).into());
        };
        out[i] = Some(Enqueued::Accepted);
        let e = &events[i];
        let counts = tally.hour(&e.ad_account_id, e.event_name.as_str(), e.received_at_ms);
        counts.received += 1;
        counts.count_sources(e.source.bit());
        counts.count_keys(e.match_keys);
    }
    // The ledger rows of browser purchases, in the fixed order of the inserts.
    for &i in &fresh {
        let e = &events[i];
        if out[i].is_some() && e.source.is_browser() {
            quality::mark_order(c, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen).await?;
        }
    }
    let repeats: Vec<usize> = (0..events.len()).filter(|&i| out[i].is_none()).collect();
    if !repeats.is_empty() {
        // Lock every stored event a repeat touches, in id order, before merging any.
        let accounts: Vec<&str> = repeats
            .iter()
            .map(|&i| events[i].ad_account_id.as_str())
            .collect();
        let event_ids: Vec<&str> = repeats
            .iter()
            .map(|&i| events[i].event_id.as_str())
            .collect();
        query(
            c,
            "SELECT id FROM events
             WHERE (ad_account_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY id FOR UPDATE",
            &[&accounts, &event_ids],
        )
        .await?;
        for &i in &repeats {
            out[i] = Some(record_repeat(c, &events[i], tally).await?);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(Enqueued::Duplicate))
        .collect())
}

/// A repeat of a stored event: what [`repeat::plan`] says, written (the stored row locked
/// first).
async fn record_repeat<C: GenericClient + Sync>(
    c: &C,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<Enqueued, PgError> {
    let rows = query(
        c,
        "SELECT e.id, e.state, e.lease_until IS NOT NULL, p.body, e.source, e.event_name,
                e.received_at, e.sources, e.match_keys
         FROM events e JOIN payloads p ON p.id = e.id
         WHERE e.ad_account_id = $1 AND e.event_id = $2
         FOR UPDATE OF e",
        &[&e.ad_account_id, &e.event_id],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Err(StoreError::Query(format!(
            "event {:?} of ad account {} was neither inserted nor found",
            e.event_id, e.ad_account_id
        ))
        .into());
    };
    let stored = RepeatTarget {
        id: row.get(0),
        state: row.get(1),
        leased: row.get(2),
        payload: row.get(3),
        first_source: row.get(4),
        event_name: row.get(5),
        received_at_ms: row.get(6),
        sources: row.get(7),
        match_keys: row.get::<_, i64>(8) as u32,
    };
    let write = repeat::plan(&stored, e, tally)?;
    if write.first_browser_report {
        quality::mark_order(c, &e.ad_account_id, &e.event_id, LedgerFlag::BrowserSeen).await?;
    }
    if let Some(merged) = &write.merged {
        execute(
            c,
            "UPDATE payloads SET body = $2 WHERE id = $1",
            &[&stored.id, &merged.json],
        )
        .await?;
    }
    let keys = i64::from(
        write
            .merged
            .as_ref()
            .map_or(stored.match_keys, |m| m.match_keys),
    );
    let due = write.due_at_ms.unwrap_or(i64::MAX);
    execute(
        c,
        "UPDATE events SET sources = sources | $2, repeats = repeats + 1,
             match_keys = $3, next_attempt_at = least(next_attempt_at, $4)
         WHERE id = $1",
        &[&stored.id, &e.source.bit(), &keys, &due],
    )
    .await?;
    Ok(write.enqueued)
}
