//! Audiences on SQLite: members' facts, forgetting, the Pinterest objects and synced members.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::store::audiences::People;
use crate::store::{
    AudienceObject, AudienceStore, EventFacts, FORGOTTEN_DROPPED, ForgetReport, IdKind,
    ListOperation, PersonFacts, StoreError, StoredEvent,
};
use pincapi_core::audience::{Activity, Purchase};

#[async_trait]
impl AudienceStore for SqliteStore {
    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT checkpoint FROM audience_checkpoints WHERE name = ?1")?;
            let mut rows = stmt.query(params![AUDIENCE_SCAN])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // Row ids are positive, so (from_ms, 0) is "everything from from_ms on".
        let (at, id) = after.unwrap_or((from_ms, 0));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.id, e.ad_account_id, e.received_at, p.body
                 FROM events e JOIN payloads p ON p.id = e.id
                 WHERE e.received_at >= ?1 AND e.test = 0 AND e.state <> 'dropped'
                     AND (e.received_at > ?2 OR (e.received_at = ?2 AND e.id > ?3))
                 ORDER BY e.received_at, e.id LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![from_ms, at, id, limit as i64], |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    ad_account_id: r.get(1)?,
                    received_at_ms: r.get(2)?,
                    payload: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            for f in &facts {
                for (kind, hash) in &f.identities {
                    record_member_facts(conn, f, *kind, hash)?;
                }
            }
            conn.prepare_cached(
                "INSERT INTO audience_checkpoints (name, checkpoint, updated_at)
                 VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO UPDATE SET
                     checkpoint = max(checkpoint, excluded.checkpoint),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![AUDIENCE_SCAN, checkpoint_ms])?;
            Ok(())
        })
        .await
    }

    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| audience_people(conn, &account)).await
    }

    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError> {
        let hash = hash.to_ascii_lowercase();
        self.write(move |conn| forget_member(conn, kind, &hash, now_ms))
            .await
    }

    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError> {
        let account = ad_account_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ad_account_id, segment, object, pinterest_id, status, updated_at
                 FROM audience_objects WHERE ad_account_id = ?1 ORDER BY segment, object",
            )?;
            let rows = stmt.query_map(params![account], |r| {
                Ok(AudienceObject {
                    ad_account_id: r.get(0)?,
                    segment: r.get(1)?,
                    object: r.get(2)?,
                    pinterest_id: r.get(3)?,
                    status: r.get(4)?,
                    updated_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn save_audience_object(&self, o: AudienceObject) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audience_objects (ad_account_id, segment, object, pinterest_id,
                     status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (ad_account_id, segment, object) DO UPDATE SET
                     pinterest_id = excluded.pinterest_id,
                     status = coalesce(excluded.status, audience_objects.status),
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                o.ad_account_id,
                o.segment,
                o.object,
                o.pinterest_id,
                o.status,
                o.updated_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError> {
        let (account, segment, object) = (
            ad_account_id.to_owned(),
            segment.to_owned(),
            object.to_owned(),
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM audience_objects
                 WHERE ad_account_id = ?1 AND segment = ?2 AND object = ?3",
            )?
            .execute(params![account, segment, object])?;
            if let Some(kind) = object.strip_prefix("list:") {
                conn.prepare_cached(
                    "DELETE FROM audience_members
                     WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3",
                )?
                .execute(params![account, segment, kind])?;
            }
            Ok(())
        })
        .await
    }

    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError> {
        let (account, segment) = (ad_account_id.to_owned(), segment.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hash FROM audience_members
                 WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3 ORDER BY hash",
            )?;
            let rows = stmt.query_map(params![account, segment, kind.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError> {
        let (account, segment) = (ad_account_id.to_owned(), segment.to_owned());
        self.write(move |conn| {
            let sql = match operation {
                ListOperation::Add => {
                    "INSERT INTO audience_members (ad_account_id, segment, kind, hash)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING"
                }
                ListOperation::Remove => {
                    "DELETE FROM audience_members
                     WHERE ad_account_id = ?1 AND segment = ?2 AND kind = ?3 AND hash = ?4"
                }
            };
            let mut stmt = conn.prepare_cached(sql)?;
            for h in &hashes {
                stmt.execute(params![account, segment, kind.as_str(), h])?;
            }
            Ok(())
        })
        .await
    }
}

/// The name of the audience scan's row in `audience_checkpoints`.
const AUDIENCE_SCAN: &str = "events";

/// Upserts one member's facts from one event, keeping the latest time of each kind, unless
/// the member was forgotten.
fn record_member_facts(
    conn: &Connection,
    f: &EventFacts,
    kind: IdKind,
    hash: &str,
) -> Result<(), StoreError> {
    let suppressed: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM audience_suppressed WHERE kind = ?1 AND hash = ?2)",
        )?
        .query_row(params![kind.as_str(), hash], |r| r.get(0))?;
    if suppressed {
        return Ok(());
    }
    let at = |a: Activity| if f.activity == a { f.at } else { 0 };
    conn.prepare_cached(
        "INSERT INTO audience_people (ad_account_id, kind, hash, last_visit_at, last_view_at,
             last_cart_at, last_purchase_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (ad_account_id, kind, hash) DO UPDATE SET
             last_visit_at = max(audience_people.last_visit_at, excluded.last_visit_at),
             last_view_at = max(audience_people.last_view_at, excluded.last_view_at),
             last_cart_at = max(audience_people.last_cart_at, excluded.last_cart_at),
             last_purchase_at = max(audience_people.last_purchase_at, excluded.last_purchase_at)",
    )?
    .execute(params![
        f.ad_account_id,
        kind.as_str(),
        hash,
        f.at,
        at(Activity::View),
        at(Activity::Cart),
        at(Activity::Purchase),
    ])?;
    if f.activity == Activity::View {
        let mut view = conn.prepare_cached(
            "INSERT INTO audience_views (ad_account_id, kind, hash, product, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (ad_account_id, kind, hash, product) DO UPDATE SET
                 last_at = max(audience_views.last_at, excluded.last_at)",
        )?;
        let categories = f
            .categories
            .iter()
            .map(|c| pincapi_core::audience::category_key(c));
        for product in f.products.iter().cloned().chain(categories) {
            view.execute(params![f.ad_account_id, kind.as_str(), hash, product, f.at])?;
        }
    }
    if f.activity == Activity::Purchase {
        conn.prepare_cached(
            "INSERT INTO audience_purchases (ad_account_id, kind, hash, event_id, at, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (ad_account_id, kind, hash, event_id) DO UPDATE SET
                 at = excluded.at, value = excluded.value",
        )?
        .execute(params![
            f.ad_account_id,
            kind.as_str(),
            hash,
            f.event_id,
            f.at,
            f.value
        ])?;
    }
    Ok(())
}

fn audience_people(conn: &Connection, account: &str) -> Result<Vec<PersonFacts>, StoreError> {
    let never = |t: i64| (t > 0).then_some(t);
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, last_visit_at, last_view_at, last_cart_at, last_purchase_at
         FROM audience_people p WHERE ad_account_id = ?1
             AND NOT EXISTS (SELECT 1 FROM audience_suppressed s
                             WHERE s.kind = p.kind AND s.hash = p.hash)
         ORDER BY kind, hash",
    )?;
    let people: Vec<PersonFacts> = stmt
        .query_map(params![account], |r| {
            Ok(PersonFacts {
                kind: IdKind::parse(&r.get::<_, String>(0)?),
                hash: r.get(1)?,
                last_visit_at: never(r.get(2)?),
                last_view_at: never(r.get(3)?),
                last_cart_at: never(r.get(4)?),
                last_purchase_at: never(r.get(5)?),
                purchases: Vec::new(),
                views: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut people = People::new(people);
    // A purchase is refunded when Shopify recorded a refund of its order: purchases from a
    // Shopify order carry the event_id order-<id>.
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, event_id, at, value,
                event_id IN (SELECT 'order-' || order_id FROM shopify_adjustments
                             WHERE kind = 'refunded')
         FROM audience_purchases WHERE ad_account_id = ?1",
    )?;
    let mut rows = stmt.query(params![account])?;
    while let Some(r) = rows.next()? {
        let purchase = Purchase {
            event_id: r.get(2)?,
            at: r.get(3)?,
            value: r.get(4)?,
            refunded: r.get(5)?,
        };
        people.add_purchase((r.get(0)?, r.get(1)?), purchase);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT kind, hash, product, last_at FROM audience_views WHERE ad_account_id = ?1",
    )?;
    let mut rows = stmt.query(params![account])?;
    while let Some(r) = rows.next()? {
        people.add_view((r.get(0)?, r.get(1)?), r.get(2)?, r.get(3)?);
    }
    Ok(people.into_vec())
}

fn forget_member(
    conn: &Connection,
    kind: IdKind,
    hash: &str,
    now_ms: i64,
) -> Result<ForgetReport, StoreError> {
    let mut report = ForgetReport::default();
    conn.prepare_cached(
        "INSERT INTO audience_suppressed (kind, hash, suppressed_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, hash) DO NOTHING",
    )?
    .execute(params![kind.as_str(), hash, now_ms])?;
    report.members = conn
        .prepare_cached("DELETE FROM audience_people WHERE kind = ?1 AND hash = ?2")?
        .execute(params![kind.as_str(), hash])? as u64;
    for table in ["audience_views", "audience_purchases"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE kind = ?1 AND hash = ?2"),
            params![kind.as_str(), hash],
        )?;
    }
    // The hash is hex, so it holds no LIKE wildcard. A forget is rare: a scan of the
    // payloads is acceptable here.
    let found: Vec<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT p.id, p.body, e.state FROM payloads p JOIN events e ON e.id = p.id
             WHERE p.body LIKE '%' || ?1 || '%'",
        )?
        .query_map(params![hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, body, state) in found {
        let Some(scrubbed) = pincapi_core::audience::scrub_member(&body, kind, hash) else {
            continue;
        };
        conn.prepare_cached("UPDATE payloads SET body = ?2 WHERE id = ?1")?
            .execute(params![id, scrubbed.payload])?;
        report.events_scrubbed += 1;
        if !scrubbed.sendable && matches!(state.as_str(), "pending" | "dead") {
            conn.prepare_cached(
                "UPDATE events SET state = 'dropped', last_error = ?2, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, FORGOTTEN_DROPPED])?;
            report.events_dropped += 1;
        }
    }
    Ok(report)
}
