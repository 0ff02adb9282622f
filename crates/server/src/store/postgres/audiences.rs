//! The audience methods of the PostgreSQL store: the tables of migration 4 with the meanings
//! of SQLite's (`MIGRATION_4` and its `// --- Audiences ---` functions in `store/sqlite.rs`).
//!
//! Several instances may scan the same events at once (each runs `serve`'s schedule, or one
//! runs the CLI): the facts of a batch are folded together first, then written with one
//! upsert per table in key order, so concurrent scans lock rows in the same order and a re-read
//! changes nothing. A forget excludes scans while it runs (an advisory transaction lock the
//! scans take shared), so a member being forgotten cannot be written back in between.

use super::PostgresStore;
use crate::store::audiences::People;
use crate::store::{AudienceStore, StoreError, StoreLock};
use async_trait::async_trait;

use std::collections::{BTreeMap, HashSet};

use deadpool_postgres::GenericClient;
use pincapi_core::audience::{Activity, Purchase};

use super::{PgError, execute, query};
use crate::store::{
    AudienceObject, EventFacts, FORGOTTEN_DROPPED, ForgetReport, IdKind, ListOperation,
    PersonFacts, StoredEvent,
};

/// The name of the audience scan's row in `audience_checkpoints` (as in SQLite).
const AUDIENCE_SCAN: &str = "events";

/// Key of the advisory lock between scans (shared) and forgets (exclusive): "forget" in ASCII.
const FORGET_LOCK: i64 = 0x66_6f_72_67_65_74;

pub(super) async fn checkpoint<C: GenericClient + Sync>(c: &C) -> Result<Option<i64>, PgError> {
    let rows = query(
        c,
        "SELECT checkpoint FROM audience_checkpoints WHERE name = $1",
        &[&AUDIENCE_SCAN],
    )
    .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

pub(super) async fn events<C: GenericClient + Sync>(
    c: &C,
    from_ms: i64,
    after: Option<(i64, i64)>,
    limit: usize,
) -> Result<Vec<StoredEvent>, PgError> {
    // Row ids are positive, so (from_ms, 0) is "everything from from_ms on".
    let (at, id) = after.unwrap_or((from_ms, 0));
    let rows = query(
        c,
        "SELECT e.id, e.ad_account_id, e.received_at, p.body
         FROM events e JOIN payloads p ON p.id = e.id
         WHERE e.received_at >= $1 AND NOT e.test AND e.state <> 'dropped'
             AND (e.received_at, e.id) > ($2, $3)
         ORDER BY e.received_at, e.id LIMIT $4",
        &[&from_ms, &at, &id, &(limit as i64)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            id: r.get(0),
            ad_account_id: r.get(1),
            received_at_ms: r.get(2),
            payload: r.get(3),
        })
        .collect())
}

/// A member of one ad account: (ad account, kind, hash).
type Member<'a> = (&'a str, &'static str, &'a str);

/// Records the facts of scanned events and moves the checkpoint, inside the caller's
/// transaction.
pub(super) async fn record_facts<C: GenericClient + Sync>(
    c: &C,
    facts: &[EventFacts],
    checkpoint_ms: i64,
) -> Result<(), PgError> {
    execute(
        c,
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&FORGET_LOCK],
    )
    .await?;
    let suppressed = suppressed_among(c, facts).await?;
    // Folded per key, in key order: greatest times, and the last purchase row of an event_id
    // (SQLite applies the facts one by one with the same result).
    let mut people: BTreeMap<Member<'_>, [i64; 4]> = BTreeMap::new();
    let mut views: BTreeMap<(Member<'_>, String), i64> = BTreeMap::new();
    let mut purchases: BTreeMap<(Member<'_>, &str), (i64, Option<&str>)> = BTreeMap::new();
    for f in facts {
        let at = |a: Activity| if f.activity == a { f.at } else { 0 };
        let times = [
            f.at,
            at(Activity::View),
            at(Activity::Cart),
            at(Activity::Purchase),
        ];
        for (kind, hash) in &f.identities {
            if suppressed.contains(&(kind.as_str(), hash.as_str())) {
                continue;
            }
            let member = (f.ad_account_id.as_str(), kind.as_str(), hash.as_str());
            let row = people.entry(member).or_insert([0; 4]);
            for (old, new) in row.iter_mut().zip(times) {
                *old = (*old).max(new);
            }
            if f.activity == Activity::View {
                let categories = f
                    .categories
                    .iter()
                    .map(|c| pincapi_core::audience::category_key(c));
                for product in f.products.iter().cloned().chain(categories) {
                    let last = views.entry((member, product)).or_insert(f.at);
                    *last = (*last).max(f.at);
                }
            }
            if f.activity == Activity::Purchase {
                purchases.insert((member, f.event_id.as_str()), (f.at, f.value.as_deref()));
            }
        }
    }
    if !people.is_empty() {
        let (accounts, kinds, hashes) = columns(people.keys());
        let col = |i: usize| people.values().map(|t| t[i]).collect::<Vec<i64>>();
        execute(
            c,
            "INSERT INTO audience_people AS cur (ad_account_id, kind, hash, last_visit_at,
                 last_view_at, last_cart_at, last_purchase_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                 $5::bigint[], $6::bigint[], $7::bigint[]) AS t(a, k, h, v, w, c, p)
             ORDER BY a, k, h
             ON CONFLICT (ad_account_id, kind, hash) DO UPDATE SET
                 last_visit_at = greatest(cur.last_visit_at, excluded.last_visit_at),
                 last_view_at = greatest(cur.last_view_at, excluded.last_view_at),
                 last_cart_at = greatest(cur.last_cart_at, excluded.last_cart_at),
                 last_purchase_at = greatest(cur.last_purchase_at, excluded.last_purchase_at)",
            &[
                &accounts,
                &kinds,
                &hashes,
                &col(0),
                &col(1),
                &col(2),
                &col(3),
            ],
        )
        .await?;
    }
    if !views.is_empty() {
        let (accounts, kinds, hashes) = columns(views.keys().map(|(m, _)| m));
        let products: Vec<&str> = views.keys().map(|(_, p)| p.as_str()).collect();
        let last: Vec<i64> = views.values().copied().collect();
        execute(
            c,
            "INSERT INTO audience_views AS cur (ad_account_id, kind, hash, product, last_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                 AS t(a, k, h, p, l)
             ORDER BY a, k, h, p
             ON CONFLICT (ad_account_id, kind, hash, product) DO UPDATE SET
                 last_at = greatest(cur.last_at, excluded.last_at)",
            &[&accounts, &kinds, &hashes, &products, &last],
        )
        .await?;
    }
    if !purchases.is_empty() {
        let (accounts, kinds, hashes) = columns(purchases.keys().map(|(m, _)| m));
        let event_ids: Vec<&str> = purchases.keys().map(|(_, e)| *e).collect();
        let ats: Vec<i64> = purchases.values().map(|(at, _)| *at).collect();
        let values: Vec<Option<&str>> = purchases.values().map(|(_, v)| *v).collect();
        execute(
            c,
            "INSERT INTO audience_purchases (ad_account_id, kind, hash, event_id, at, value)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                 $6::text[]) AS t(a, k, h, e, at, v)
             ORDER BY a, k, h, e
             ON CONFLICT (ad_account_id, kind, hash, event_id) DO UPDATE SET
                 at = excluded.at, value = excluded.value",
            &[&accounts, &kinds, &hashes, &event_ids, &ats, &values],
        )
        .await?;
    }
    execute(
        c,
        "INSERT INTO audience_checkpoints (name, checkpoint, updated_at) VALUES ($1, $2, $2)
         ON CONFLICT (name) DO UPDATE SET
             checkpoint = greatest(audience_checkpoints.checkpoint, excluded.checkpoint),
             updated_at = excluded.updated_at",
        &[&AUDIENCE_SCAN, &checkpoint_ms],
    )
    .await?;
    Ok(())
}

/// The (kind, hash) pairs of `facts` that were forgotten.
async fn suppressed_among<'f, C: GenericClient + Sync>(
    c: &C,
    facts: &'f [EventFacts],
) -> Result<HashSet<(&'static str, &'f str)>, PgError> {
    let mut kinds = Vec::new();
    let mut hashes = Vec::new();
    for f in facts {
        for (kind, hash) in &f.identities {
            kinds.push(kind.as_str());
            hashes.push(hash.as_str());
        }
    }
    if kinds.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = query(
        c,
        "SELECT s.kind, s.hash FROM audience_suppressed s
         JOIN unnest($1::text[], $2::text[]) AS t(k, h) ON s.kind = t.k AND s.hash = t.h",
        &[&kinds, &hashes],
    )
    .await?;
    let found: HashSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(kinds
        .into_iter()
        .zip(hashes)
        .filter(|(k, h)| found.contains(&((*k).to_owned(), (*h).to_owned())))
        .collect())
}

/// The member columns of rows, for `unnest`.
fn columns<'a, 'm: 'a>(
    members: impl Iterator<Item = &'a Member<'m>>,
) -> (Vec<&'m str>, Vec<&'static str>, Vec<&'m str>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for (account, kind, hash) in members {
        out.0.push(*account);
        out.1.push(*kind);
        out.2.push(*hash);
    }
    out
}

/// Every unsuppressed member of an account with its facts; run in one snapshot.
pub(super) async fn people<C: GenericClient + Sync>(
    c: &C,
    account: &str,
) -> Result<Vec<PersonFacts>, PgError> {
    let never = |t: i64| (t > 0).then_some(t);
    // Byte order, as SQLite sorts.
    let rows = query(
        c,
        "SELECT kind, hash, last_visit_at, last_view_at, last_cart_at, last_purchase_at
         FROM audience_people p WHERE ad_account_id = $1
             AND NOT EXISTS (SELECT 1 FROM audience_suppressed s
                             WHERE s.kind = p.kind AND s.hash = p.hash)
         ORDER BY kind COLLATE \"C\", hash COLLATE \"C\"",
        &[&account],
    )
    .await?;
    let people: Vec<PersonFacts> = rows
        .iter()
        .map(|r| PersonFacts {
            kind: IdKind::parse(r.get(0)),
            hash: r.get(1),
            last_visit_at: never(r.get(2)),
            last_view_at: never(r.get(3)),
            last_cart_at: never(r.get(4)),
            last_purchase_at: never(r.get(5)),
            purchases: Vec::new(),
            views: Vec::new(),
        })
        .collect();
    let mut people = People::new(people);
    // A purchase is refunded when Shopify recorded a refund of its order: purchases from a
    // Shopify order carry the event_id order-<id>.
    let rows = query(
        c,
        "SELECT kind, hash, event_id, at, value,
                event_id IN (SELECT 'order-' || order_id FROM shopify_adjustments
                             WHERE kind = 'refunded')
         FROM audience_purchases WHERE ad_account_id = $1",
        &[&account],
    )
    .await?;
    for r in &rows {
        let purchase = Purchase {
            event_id: r.get(2),
            at: r.get(3),
            value: r.get(4),
            refunded: r.get(5),
        };
        people.add_purchase((r.get(0), r.get(1)), purchase);
    }
    let rows = query(
        c,
        "SELECT kind, hash, product, last_at FROM audience_views WHERE ad_account_id = $1",
        &[&account],
    )
    .await?;
    for r in &rows {
        people.add_view((r.get(0), r.get(1)), r.get(2), r.get(3));
    }
    Ok(people.into_vec())
}

/// Forgets a member everywhere, inside the caller's transaction. `hash` is lowercase.
pub(super) async fn forget<C: GenericClient + Sync>(
    c: &C,
    kind: IdKind,
    hash: &str,
    now_ms: i64,
) -> Result<ForgetReport, PgError> {
    // No scan writes facts while the member is being forgotten.
    execute(c, "SELECT pg_advisory_xact_lock($1)", &[&FORGET_LOCK]).await?;
    let mut report = ForgetReport::default();
    execute(
        c,
        "INSERT INTO audience_suppressed (kind, hash, suppressed_at) VALUES ($1, $2, $3)
         ON CONFLICT (kind, hash) DO NOTHING",
        &[&kind.as_str(), &hash, &now_ms],
    )
    .await?;
    report.members = execute(
        c,
        "DELETE FROM audience_people WHERE kind = $1 AND hash = $2",
        &[&kind.as_str(), &hash],
    )
    .await?;
    for sql in [
        "DELETE FROM audience_views WHERE kind = $1 AND hash = $2",
        "DELETE FROM audience_purchases WHERE kind = $1 AND hash = $2",
    ] {
        execute(c, sql, &[&kind.as_str(), &hash]).await?;
    }
    // A forget is rare: a scan of the payloads is acceptable here. The events are locked in
    // id order, as enqueues and settlements lock them.
    let rows = query(
        c,
        "SELECT p.id, p.body, e.state FROM payloads p JOIN events e ON e.id = p.id
         WHERE strpos(p.body, $1) > 0
         ORDER BY p.id FOR UPDATE OF e, p",
        &[&hash],
    )
    .await?;
    for r in &rows {
        let id: i64 = r.get(0);
        let body: &str = r.get(1);
        let state: &str = r.get(2);
        let Some(scrubbed) = pincapi_core::audience::scrub_member(body, kind, hash) else {
            continue;
        };
        execute(
            c,
            "UPDATE payloads SET body = $2 WHERE id = $1",
            &[&id, &scrubbed.payload],
        )
        .await?;
        report.events_scrubbed += 1;
        if !scrubbed.sendable && matches!(state, "pending" | "dead") {
            execute(
                c,
                "UPDATE events SET state = 'dropped', last_error = $2, lease_until = NULL
                 WHERE id = $1",
                &[&id, &FORGOTTEN_DROPPED],
            )
            .await?;
            report.events_dropped += 1;
        }
    }
    Ok(report)
}

pub(super) async fn objects<C: GenericClient + Sync>(
    c: &C,
    account: &str,
) -> Result<Vec<AudienceObject>, PgError> {
    let rows = query(
        c,
        "SELECT ad_account_id, segment, object, pinterest_id, status, updated_at
         FROM audience_objects WHERE ad_account_id = $1
         ORDER BY segment COLLATE \"C\", object COLLATE \"C\"",
        &[&account],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| AudienceObject {
            ad_account_id: r.get(0),
            segment: r.get(1),
            object: r.get(2),
            pinterest_id: r.get(3),
            status: r.get(4),
            updated_at_ms: r.get(5),
        })
        .collect())
}

pub(super) async fn save_object<C: GenericClient + Sync>(
    c: &C,
    o: &AudienceObject,
) -> Result<(), PgError> {
    execute(
        c,
        "INSERT INTO audience_objects AS cur (ad_account_id, segment, object, pinterest_id,
             status, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (ad_account_id, segment, object) DO UPDATE SET
             pinterest_id = excluded.pinterest_id,
             status = coalesce(excluded.status, cur.status),
             updated_at = excluded.updated_at",
        &[
            &o.ad_account_id,
            &o.segment,
            &o.object,
            &o.pinterest_id,
            &o.status,
            &o.updated_at_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Forgets an object (and a list's synced members), inside the caller's transaction.
pub(super) async fn drop_object<C: GenericClient + Sync>(
    c: &C,
    account: &str,
    segment: &str,
    object: &str,
) -> Result<(), PgError> {
    execute(
        c,
        "DELETE FROM audience_objects WHERE ad_account_id = $1 AND segment = $2 AND object = $3",
        &[&account, &segment, &object],
    )
    .await?;
    if let Some(kind) = object.strip_prefix("list:") {
        execute(
            c,
            "DELETE FROM audience_members WHERE ad_account_id = $1 AND segment = $2 AND kind = $3",
            &[&account, &segment, &kind],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn synced<C: GenericClient + Sync>(
    c: &C,
    account: &str,
    segment: &str,
    kind: IdKind,
) -> Result<Vec<String>, PgError> {
    let rows = query(
        c,
        "SELECT hash FROM audience_members
         WHERE ad_account_id = $1 AND segment = $2 AND kind = $3 ORDER BY hash COLLATE \"C\"",
        &[&account, &segment, &kind.as_str()],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies a list update in one statement, rows in hash order.
pub(super) async fn apply_update<C: GenericClient + Sync>(
    c: &C,
    account: &str,
    segment: &str,
    kind: IdKind,
    operation: ListOperation,
    mut hashes: Vec<String>,
) -> Result<(), PgError> {
    if hashes.is_empty() {
        return Ok(());
    }
    hashes.sort_unstable();
    hashes.dedup();
    let sql = match operation {
        ListOperation::Add => {
            "INSERT INTO audience_members (ad_account_id, segment, kind, hash)
             SELECT $1::text, $2::text, $3::text, h FROM unnest($4::text[]) AS t(h) ORDER BY h
             ON CONFLICT DO NOTHING"
        }
        ListOperation::Remove => {
            "DELETE FROM audience_members
             WHERE ad_account_id = $1 AND segment = $2 AND kind = $3 AND hash = ANY($4)"
        }
    };
    execute(c, sql, &[&account, &segment, &kind.as_str(), &hashes]).await?;
    Ok(())
}

#[async_trait]
impl AudienceStore for PostgresStore {
    async fn try_lock_audience_sync(
        &self,
        ad_account_id: &str,
    ) -> Result<Option<StoreLock>, StoreError> {
        self.session_lock(AUDIENCE_SYNC_LOCK, ad_account_id).await
    }

    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        checkpoint(&client).await.map_err(PgError::into_store)
    }

    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        events(&client, from_ms, after, limit)
            .await
            .map_err(PgError::into_store)
    }

    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| record_facts(&tx, &facts, checkpoint_ms).await?)
    }

    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError> {
        // Members, purchases and views from one snapshot.
        let mut client = self.client().await?;
        let result: Result<_, PgError> = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let people = people(&tx, ad_account_id).await?;
            tx.commit().await?;
            Ok(people)
        }
        .await;
        result.map_err(PgError::into_store)
    }

    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError> {
        let hash = hash.to_ascii_lowercase();
        in_transaction!(self, |tx| forget(&tx, kind, &hash, now_ms).await?)
    }

    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError> {
        let client = self.client().await?;
        objects(&client, ad_account_id)
            .await
            .map_err(PgError::into_store)
    }

    async fn save_audience_object(&self, object: AudienceObject) -> Result<(), StoreError> {
        let client = self.client().await?;
        save_object(&client, &object)
            .await
            .map_err(PgError::into_store)
    }

    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            drop_object(&tx, ad_account_id, segment, object).await?
        })
    }

    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        synced(&client, ad_account_id, segment, kind)
            .await
            .map_err(PgError::into_store)
    }

    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        apply_update(&client, ad_account_id, segment, kind, operation, hashes)
            .await
            .map_err(PgError::into_store)
    }
}

/// First key of the advisory locks of audience syncs ("audi" in ASCII); the second is a hash
/// of the ad account id.
const AUDIENCE_SYNC_LOCK: i32 = 0x61_75_64_69;
