//! Audiences: members' facts, the Pinterest objects kept per segment, and synced list members.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::{StoreError, StoreLock};

use pincapi_core::audience::Purchase;
pub use pincapi_core::audience::{EventFacts, IdKind, PersonFacts};

/// What the audience scan and sync read and keep.
#[async_trait]
pub trait AudienceStore: Send + Sync + fmt::Debug {
    /// Takes the lock that lets one run at a time (of any gateway instance, `serve`'s schedule
    /// or `pincapi audiences sync`) sync the audiences of `ad_account_id`, so two runs never
    /// both create the same Pinterest object; `None` while another run holds it. Like
    /// [`Store::try_lock_shopify_poller`]: held as long as the guard, ends with its holder,
    /// always granted by an embedded store.
    async fn try_lock_audience_sync(
        &self,
        ad_account_id: &str,
    ) -> Result<Option<StoreLock>, StoreError> {
        let _ = ad_account_id;
        Ok(Some(StoreLock::default()))
    }

    /// The audience scan's checkpoint: the newest `received_at` (Unix ms) it has read.
    async fn audience_checkpoint(&self) -> Result<Option<i64>, StoreError>;

    /// Stored events received at or after `from_ms`, after the `(received_at, id)` position
    /// `after` when given, in that order, at most `limit`. Test events and dropped ones are
    /// left out: they are not people's activity.
    async fn audience_events(
        &self,
        from_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records what scanned events say about their members (upserts that keep the latest
    /// time of each kind, so reading an event twice changes nothing), skipping suppressed
    /// members, and moves the checkpoint forward to `checkpoint_ms` (never back).
    async fn record_audience_facts(
        &self,
        facts: Vec<EventFacts>,
        checkpoint_ms: i64,
    ) -> Result<(), StoreError>;

    /// Every member of an ad account with its facts; a purchase is `refunded` when a Shopify
    /// refund of its order (`order-<id>`) is recorded.
    async fn audience_people(&self, ad_account_id: &str) -> Result<Vec<PersonFacts>, StoreError>;

    /// Forgets a member everywhere: records the hash as suppressed (it never enters an
    /// audience again), deletes its facts, and takes it out of every stored event payload
    /// (an unsent event left without a required match key is dropped). Its synced list
    /// memberships stay until the next sync has removed it from the lists at Pinterest.
    async fn forget_member(
        &self,
        kind: IdKind,
        hash: &str,
        now_ms: i64,
    ) -> Result<ForgetReport, StoreError>;

    /// The Pinterest objects (customer lists, audiences) kept for an ad account's segments.
    async fn audience_objects(
        &self,
        ad_account_id: &str,
    ) -> Result<Vec<AudienceObject>, StoreError>;

    /// Stores (or replaces) the Pinterest id and last status of one object.
    async fn save_audience_object(&self, object: AudienceObject) -> Result<(), StoreError>;

    /// Forgets one stored Pinterest object (it is gone at Pinterest); for a customer list
    /// (`list:<kind>`) also the members synced to it, so the next sync starts it afresh.
    async fn drop_audience_object(
        &self,
        ad_account_id: &str,
        segment: &str,
        object: &str,
    ) -> Result<(), StoreError>;

    /// The members a segment's list of `kind` held after the last successful update.
    async fn synced_members(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
    ) -> Result<Vec<String>, StoreError>;

    /// Applies one successful customer-list update to the synced members.
    async fn apply_list_update(
        &self,
        ad_account_id: &str,
        segment: &str,
        kind: IdKind,
        operation: ListOperation,
        hashes: Vec<String>,
    ) -> Result<(), StoreError>;
}

/// A stored event as the audience scan reads it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub ad_account_id: String,
    pub received_at_ms: i64,
    pub payload: String,
}

/// One Pinterest object pincapi keeps for a segment, named by `object`: `list:email`,
/// `list:maid` (customer lists), `audience:email`, `audience:maid` (their `CUSTOMER_LIST`
/// audiences), `visitor`, `actalike`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudienceObject {
    pub ad_account_id: String,
    pub segment: String,
    pub object: String,
    pub pinterest_id: String,
    /// The last status Pinterest reported (`READY`, `TOO_SMALL`, ...).
    pub status: Option<String>,
    /// Unix ms.
    pub updated_at_ms: i64,
}

/// A customer-list update's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOperation {
    Add,
    Remove,
}

impl ListOperation {
    /// Pinterest's `operation_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListOperation::Add => "ADD",
            ListOperation::Remove => "REMOVE",
        }
    }
}

/// What [`Store::forget_member`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    /// Members' facts deleted (one per ad account that knew the member).
    pub members: u64,
    /// Stored events the hash was taken out of.
    pub events_scrubbed: u64,
    /// Unsent events dropped because no required match key was left.
    pub events_dropped: u64,
}

/// The reason recorded on an unsent event dropped by a forget request.
pub const FORGOTTEN_DROPPED: &str = "forgotten: no match key left";

/// An ad account's members as a backend reads them: the people in key order, then their
/// purchases and product views attached by member as the rows come.
pub(crate) struct People {
    people: Vec<PersonFacts>,
    index: std::collections::HashMap<(String, String), usize>,
}

impl People {
    pub(crate) fn new(people: Vec<PersonFacts>) -> People {
        let index = people
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let kind = p.kind.map(IdKind::as_str).unwrap_or_default().to_owned();
                ((kind, p.hash.clone()), i)
            })
            .collect();
        People { people, index }
    }

    /// A purchase of the member (`kind`, `hash`); one of a member not read is left out.
    pub(crate) fn add_purchase(&mut self, member: (String, String), purchase: Purchase) {
        if let Some(&i) = self.index.get(&member) {
            self.people[i].purchases.push(purchase);
        }
    }

    /// A product the member viewed, last at `at`.
    pub(crate) fn add_view(&mut self, member: (String, String), product: String, at: i64) {
        if let Some(&i) = self.index.get(&member) {
            self.people[i].views.push((product, at));
        }
    }

    /// The members, each one's purchases in event_id order and views in product order (byte
    /// order, as SQLite's keys give them): neither table's rows come in a promised order from
    /// PostgreSQL, whose heap order changes as rows are updated.
    pub(crate) fn into_vec(mut self) -> Vec<PersonFacts> {
        for p in &mut self.people {
            p.purchases.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            p.views.sort();
        }
        self.people
    }
}
