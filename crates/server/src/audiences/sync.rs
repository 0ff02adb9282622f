//! The sync of one run: per ad account and segment, the customer lists (one per kind of
//! member that the segment has), their `CUSTOMER_LIST` audiences, the `VISITOR` audience and
//! the `ACTALIKE`. Everything Pinterest-side is found by its deterministic name before it is
//! created, and every id and every applied update is stored at once.

use std::collections::{BTreeSet, HashMap};

use pincapi_core::audience::{IdKind, ListDiff, Segment, records};
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{AdsClient, AdsError};
use crate::clock::system_now_ms as now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{AudienceObject, ListOperation, SharedStore, StoreError};

/// Pinterest's threshold of matched members, below which a list or audience is `TOO_SMALL`.
pub const MIN_MATCHED: usize = 100;

/// What one run did, per (ad account, segment, kind of member).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub segments: Vec<SegmentReport>,
    /// Notes that concern the run as a whole (e.g. no Tag id for `VISITOR` audiences).
    pub notes: Vec<String>,
    /// Ad accounts left alone because another run (another instance, or `serve` and the CLI)
    /// was syncing them; that run keeps them in step.
    pub skipped: Vec<String>,
}

impl SyncReport {
    /// Members added to lists in this run.
    pub fn added(&self) -> usize {
        self.segments.iter().map(|s| s.added).sum()
    }

    /// Members removed from lists in this run.
    pub fn removed(&self) -> usize {
        self.segments.iter().map(|s| s.removed).sum()
    }
}

/// One segment's list of one kind after the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SegmentReport {
    pub ad_account_id: String,
    pub segment: String,
    pub kind: String,
    pub members: usize,
    pub added: usize,
    pub removed: usize,
    pub customer_list_id: Option<String>,
    pub audience_id: Option<String>,
    /// The audience's status as Pinterest last reported it, or the list's while it has no
    /// audience yet (`READY`, `TOO_SMALL`, `PROCESSING`, ...).
    pub status: Option<String>,
    /// Other audiences kept for the segment: `visitor <id>`, `actalike <id>`.
    pub also: Vec<String>,
}

/// Names of the Pinterest objects of a segment: `pincapi · <segment>[ · <what>]`.
pub fn object_name(segment: &str, what: Option<&str>) -> String {
    match what {
        None => format!("pincapi · {segment}"),
        Some(w) => format!("pincapi · {segment} · {w}"),
    }
}

fn list_name(segment: &str, kind: IdKind) -> String {
    match kind {
        IdKind::Email => object_name(segment, None),
        IdKind::Maid => object_name(segment, Some("maid")),
    }
}

/// Syncs every configured ad account.
pub async fn sync(
    config: &Config,
    store: &SharedStore,
    client: &AdsClient,
    metrics: &Metrics,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let tag_id = config.tag_id.clone();
    if tag_id.is_none() {
        report
            .notes
            .push("tag_id is not set: no VISITOR audiences are kept".to_owned());
    }
    let batch = config.audiences.batch_size.max(1);
    let now = now_ms() / 1000;
    for account in config.all_accounts() {
        // Two runs at once could both create the same Pinterest object (each finds none by
        // name, then each creates one): one run at a time syncs an ad account.
        let Some(_lock) = store.try_lock_audience_sync(&account.id).await? else {
            tracing::info!(
                ad_account_id = %account.id,
                "Another run is syncing this ad account's audiences; skipping it this time"
            );
            metrics.inc(
                "pincapi_audience_sync_skipped_total",
                &[("ad_account_id", account.id.as_str())],
                1,
            );
            report.skipped.push(account.id.clone());
            continue;
        };
        let mut run = AccountRun {
            account: account.id.clone(),
            store,
            client,
            metrics,
            batch,
            objects: store
                .audience_objects(&account.id)
                .await?
                .into_iter()
                .map(|o| ((o.segment.clone(), o.object.clone()), o))
                .collect(),
        };
        let people = store.audience_people(&account.id).await?;
        for segment in config.audiences.segments() {
            let members = segment.members(&people, now);
            let mut rows = Vec::new();
            for kind in IdKind::ALL {
                if let Some(row) = run.sync_list(&segment, kind, members.of(kind)).await? {
                    rows.push(row);
                }
            }
            let mut also = Vec::new();
            if let (Some(tag), true) = (&tag_id, segment.visitor_audience) {
                let id = run.ensure_visitor(&segment, tag).await?;
                also.push(format!("visitor {id}"));
            }
            if config.audiences.actalike_seed() == Some(segment.name.as_str())
                && let Some(id) = run
                    .ensure_actalike(
                        &segment,
                        &config.audiences.actalike_country,
                        config.audiences.actalike_percentage,
                    )
                    .await?
            {
                also.push(format!("actalike {id}"));
            }
            if let Some(first) = rows.first_mut() {
                first.also = also;
            }
            report.segments.extend(rows);
        }
    }
    Ok(report)
}

struct AccountRun<'a> {
    account: String,
    store: &'a SharedStore,
    client: &'a AdsClient,
    metrics: &'a Metrics,
    batch: usize,
    objects: HashMap<(String, String), AudienceObject>,
}

impl AccountRun<'_> {
    fn object(&self, segment: &str, object: &str) -> Option<&AudienceObject> {
        self.objects.get(&(segment.to_owned(), object.to_owned()))
    }

    async fn save(
        &mut self,
        segment: &str,
        object: &str,
        id: &str,
        status: Option<String>,
    ) -> Result<(), SyncError> {
        let o = AudienceObject {
            ad_account_id: self.account.clone(),
            segment: segment.to_owned(),
            object: object.to_owned(),
            pinterest_id: id.to_owned(),
            status,
            updated_at_ms: now_ms(),
        };
        self.store.save_audience_object(o.clone()).await?;
        let key = (segment.to_owned(), object.to_owned());
        // The store keeps the last known status when none is given; so does the cache.
        let status = o
            .status
            .clone()
            .or_else(|| self.objects.get(&key).and_then(|old| old.status.clone()));
        self.objects.insert(key, AudienceObject { status, ..o });
        Ok(())
    }

    /// Brings the segment's list of `kind` to `current`. A list or audience deleted at
    /// Pinterest (404) is forgotten and made again once.
    async fn sync_list(
        &mut self,
        segment: &Segment,
        kind: IdKind,
        current: &BTreeSet<String>,
    ) -> Result<Option<SegmentReport>, SyncError> {
        match self.sync_list_once(segment, kind, current).await {
            Err(e) if is_gone(&e) => {
                tracing::warn!(
                    ad_account_id = %self.account,
                    segment = %segment.name,
                    kind = kind.as_str(),
                    "A customer list or its audience is gone at Pinterest; making it again"
                );
                for object in [
                    format!("list:{}", kind.as_str()),
                    format!("audience:{}", kind.as_str()),
                ] {
                    self.store
                        .drop_audience_object(&self.account, &segment.name, &object)
                        .await?;
                    self.objects.remove(&(segment.name.clone(), object));
                }
                self.sync_list_once(segment, kind, current).await
            }
            other => other,
        }
    }

    /// One attempt of [`AccountRun::sync_list`]. `None` when the segment never had members
    /// of that kind (no list is made for nothing).
    async fn sync_list_once(
        &mut self,
        segment: &Segment,
        kind: IdKind,
        current: &BTreeSet<String>,
    ) -> Result<Option<SegmentReport>, SyncError> {
        let seg = segment.name.as_str();
        let list_key = format!("list:{}", kind.as_str());
        let audience_key = format!("audience:{}", kind.as_str());
        let synced: BTreeSet<String> = self
            .store
            .synced_members(&self.account, seg, kind)
            .await?
            .into_iter()
            .collect();
        let mut row = SegmentReport {
            ad_account_id: self.account.clone(),
            segment: seg.to_owned(),
            kind: kind.as_str().to_owned(),
            members: current.len(),
            ..SegmentReport::default()
        };
        let mut changed = false;
        // The list's status as Pinterest last answered it (`READY`, `TOO_SMALL`, ...).
        let mut list_status = self.object(seg, &list_key).and_then(|o| o.status.clone());
        let list_id = match self.object(seg, &list_key) {
            Some(o) => o.pinterest_id.clone(),
            None if current.is_empty() && synced.is_empty() => return Ok(None),
            None => {
                let name = list_name(seg, kind);
                match self.client.find_customer_list(&self.account, &name).await? {
                    Some(found) => {
                        let id = id_of(&found)?;
                        list_status = status_of(&found);
                        self.save(seg, &list_key, &id, list_status.clone()).await?;
                        id
                    }
                    None => {
                        // A list is created with its first batch of members.
                        let first: Vec<String> = current.iter().take(self.batch).cloned().collect();
                        let created = self
                            .client
                            .create_customer_list(
                                &self.account,
                                &name,
                                kind.list_type(),
                                records(&first),
                            )
                            .await?;
                        let id = id_of(&created)?;
                        list_status = status_of(&created);
                        self.save(seg, &list_key, &id, list_status.clone()).await?;
                        self.applied(seg, kind, ListOperation::Add, first.clone())
                            .await?;
                        row.added += first.len();
                        changed = true;
                        id
                    }
                }
            }
        };
        // Read again: a create above has already stored its first batch.
        let synced: BTreeSet<String> = self
            .store
            .synced_members(&self.account, seg, kind)
            .await?
            .into_iter()
            .collect();
        let diff = ListDiff::between(current, &synced);
        // Removals first: someone who asked to be forgotten leaves the lists before anyone
        // new is added.
        for (op, hashes) in [
            (ListOperation::Remove, &diff.remove),
            (ListOperation::Add, &diff.add),
        ] {
            for chunk in hashes.chunks(self.batch) {
                let answer = self
                    .client
                    .update_customer_list(&self.account, &list_id, op.as_str(), records(chunk))
                    .await?;
                self.applied(seg, kind, op, chunk.to_vec()).await?;
                match op {
                    ListOperation::Add => row.added += chunk.len(),
                    ListOperation::Remove => row.removed += chunk.len(),
                }
                list_status = status_of(&answer).or(list_status);
                changed = true;
            }
        }
        if changed {
            self.save(seg, &list_key, &list_id, list_status.clone())
                .await?;
        }
        row.customer_list_id = Some(list_id.clone());
        // The CUSTOMER_LIST audience that makes the list targetable. Pinterest matches a list
        // before it can be targeted: the audience is made once the list is READY (100
        // matched members). Until then the list's status is read on every run, since
        // matching finishes at Pinterest's pace, not ours.
        let (audience_id, status) = match self.object(seg, &audience_key).cloned() {
            Some(o) if !changed => (Some(o.pinterest_id), o.status),
            Some(o) => {
                let got = self
                    .client
                    .get_audience(&self.account, &o.pinterest_id)
                    .await?;
                let status = status_of(&got);
                self.save(seg, &audience_key, &o.pinterest_id, status.clone())
                    .await?;
                (Some(o.pinterest_id), status)
            }
            None => {
                if !changed {
                    let got = self
                        .client
                        .get_customer_list(&self.account, &list_id)
                        .await?;
                    if status_of(&got) != list_status {
                        list_status = status_of(&got);
                        self.save(seg, &list_key, &list_id, list_status.clone())
                            .await?;
                    }
                }
                if list_status.as_deref() == Some("READY") {
                    let (id, status) = self.ensure_list_audience(seg, kind, &list_id).await?;
                    (Some(id), status)
                } else {
                    (None, list_status.clone())
                }
            }
        };
        if status.as_deref() == Some("TOO_SMALL") {
            tracing::info!(
                ad_account_id = %self.account,
                segment = seg,
                kind = kind.as_str(),
                members = current.len(),
                "Customer list is TOO_SMALL: Pinterest needs {MIN_MATCHED} matched members before it can be used"
            );
        }
        self.metrics.set(
            "pincapi_audience_members",
            &[
                ("ad_account_id", self.account.as_str()),
                ("segment", seg),
                ("kind", kind.as_str()),
            ],
            current.len() as f64,
        );
        row.audience_id = audience_id;
        row.status = status;
        Ok(Some(row))
    }

    /// Finds or creates the `CUSTOMER_LIST` audience of a list and stores it.
    async fn ensure_list_audience(
        &mut self,
        seg: &str,
        kind: IdKind,
        list_id: &str,
    ) -> Result<(String, Option<String>), SyncError> {
        let name = list_name(seg, kind);
        let found = self
            .client
            .find_audience(&self.account, &name, "CUSTOMER_LIST")
            .await?;
        let audience = match found {
            Some(a) => a,
            None => {
                self.client
                    .create_audience(
                        &self.account,
                        json!({
                            "ad_account_id": self.account,
                            "name": name,
                            "audience_type": "CUSTOMER_LIST",
                            "description": format!(
                                "Kept by pincapi from the {seg} segment ({} members).",
                                kind.as_str()
                            ),
                            "rule": {"customer_list_id": list_id},
                        }),
                    )
                    .await?
            }
        };
        let id = id_of(&audience)?;
        let status = status_of(&audience);
        self.save(
            seg,
            &format!("audience:{}", kind.as_str()),
            &id,
            status.clone(),
        )
        .await?;
        Ok((id, status))
    }

    async fn applied(
        &self,
        seg: &str,
        kind: IdKind,
        op: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), SyncError> {
        let n = hashes.len() as u64;
        self.store
            .apply_list_update(&self.account, seg, kind, op, hashes)
            .await?;
        let operation = match op {
            ListOperation::Add => "add",
            ListOperation::Remove => "remove",
        };
        self.metrics.inc(
            "pincapi_audience_records_sent_total",
            &[
                ("ad_account_id", self.account.as_str()),
                ("operation", operation),
            ],
            n,
        );
        Ok(())
    }

    /// The segment's `VISITOR` audience over the Tag and Conversions API stream.
    async fn ensure_visitor(
        &mut self,
        segment: &Segment,
        tag_id: &str,
    ) -> Result<String, SyncError> {
        let seg = segment.name.as_str();
        if let Some(o) = self.object(seg, "visitor") {
            return Ok(o.pinterest_id.clone());
        }
        let name = object_name(seg, Some("visitors"));
        let audience = match self
            .client
            .find_audience(&self.account, &name, "VISITOR")
            .await?
        {
            Some(a) => a,
            None => {
                let mut rule = json!({
                    "visitor_source_id": tag_id,
                    "retention_days": segment.days,
                    "ingestion_source": {"=": ["tag", "conversions_api"]},
                    "prefill": true,
                });
                if let Some(event) = segment.visitor_event() {
                    rule["event"] = json!(event);
                }
                if !segment.visitor_url.is_empty() {
                    rule["url"] = json!(segment.visitor_url);
                }
                self.client
                    .create_audience(
                        &self.account,
                        json!({
                            "ad_account_id": self.account,
                            "name": name,
                            "audience_type": "VISITOR",
                            "description": format!("Kept by pincapi for the {seg} segment."),
                            "rule": rule,
                        }),
                    )
                    .await?
            }
        };
        let id = id_of(&audience)?;
        self.save(seg, "visitor", &id, status_of(&audience)).await?;
        Ok(id)
    }

    /// The `ACTALIKE` seeded from the segment's email audience, once that audience is not
    /// `TOO_SMALL` (a seed without enough members gives Pinterest nothing to model).
    async fn ensure_actalike(
        &mut self,
        segment: &Segment,
        country: &str,
        percentage: u8,
    ) -> Result<Option<String>, SyncError> {
        let seg = segment.name.as_str();
        if let Some(o) = self.object(seg, "actalike") {
            return Ok(Some(o.pinterest_id.clone()));
        }
        let Some(seed) = self.object(seg, "audience:email").cloned() else {
            return Ok(None);
        };
        if seed.status.as_deref() == Some("TOO_SMALL") {
            return Ok(None);
        }
        let name = object_name(seg, Some("actalike"));
        let audience = match self
            .client
            .find_audience(&self.account, &name, "ACTALIKE")
            .await?
        {
            Some(a) => a,
            None => self
                .client
                .create_audience(
                    &self.account,
                    json!({
                        "ad_account_id": self.account,
                        "name": name,
                        "audience_type": "ACTALIKE",
                        "description": format!("Actalike of the {seg} segment, kept by pincapi."),
                        "rule": {
                            "seed_id": [seed.pinterest_id],
                            "country": country,
                            "percentage": percentage,
                        },
                    }),
                )
                .await?,
        };
        let id = id_of(&audience)?;
        self.save(seg, "actalike", &id, status_of(&audience))
            .await?;
        Ok(Some(id))
    }
}

/// Pinterest answered 404 to a call on an object we hold an id of.
fn is_gone(e: &SyncError) -> bool {
    matches!(e, SyncError::Pinterest(AdsError::Api { status: 404, .. }))
}

fn id_of(v: &Value) -> Result<String, SyncError> {
    v["id"].as_str().map(str::to_owned).ok_or(SyncError::NoId)
}

fn status_of(v: &Value) -> Option<String> {
    v["status"].as_str().map(str::to_owned)
}

/// What can stop an audience sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Pinterest(#[from] AdsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Pinterest's answer has no id")]
    NoId,
}
