//! A repeat of a stored event, decided and counted once for both backends: each backend reads
//! the stored event with its own query ([`RepeatTarget`]), calls [`plan`], and writes what the
//! returned [`RepeatWrite`] says. The rule itself is `pincapi_core::repeat`.

use pincapi_core::event::Merged;
use pincapi_core::repeat::{self, MergeRule, RepeatAction};

use super::tally::Tally;
use super::{Enqueued, NewEvent, Source, StoreError};

/// What a repeat needs to know of the stored event.
#[derive(Debug, Clone)]
pub(crate) struct RepeatTarget {
    pub(crate) id: i64,
    pub(crate) state: String,
    pub(crate) leased: bool,
    pub(crate) payload: String,
    pub(crate) first_source: String,
    pub(crate) event_name: String,
    pub(crate) received_at_ms: i64,
    pub(crate) sources: i64,
    pub(crate) match_keys: u32,
}

/// What a backend writes for one repeat, beyond adding its source to `sources` and one to
/// `repeats` (always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepeatWrite {
    pub(crate) enqueued: Enqueued,
    /// The browser's first report of the event: an order's ledger marks it seen.
    pub(crate) first_browser_report: bool,
    /// The merged payload and its match keys (the whole set: a shop's record may replace the
    /// browser's identities), when the merge changed anything.
    pub(crate) merged: Option<Merged>,
    /// Make the event due at this time (Unix ms) if it is due later: the shop's copy completed
    /// a purchase the browser reported first, so nothing more is expected.
    pub(crate) due_at_ms: Option<i64>,
}

/// Decides what a repeat `e` of `stored` does, and counts it in `tally` (in the hour the
/// stored event was received, like everything about it).
pub(crate) fn plan(
    stored: &RepeatTarget,
    e: &NewEvent,
    tally: &mut Tally,
) -> Result<RepeatWrite, StoreError> {
    let first_source = Source::parse(&stored.first_source).ok_or_else(|| {
        StoreError::Query(format!(
            "event {} has an unknown source {:?}",
            stored.id, stored.first_source
        ))
    })?;
    let decision = repeat::decide(
        repeat::Stored {
            first_source,
            sources: stored.sources,
            pending: stored.state == "pending",
            leased: stored.leased,
        },
        e.source,
    );
    let counts = tally.hour(&e.ad_account_id, &stored.event_name, stored.received_at_ms);
    counts.duplicates += 1;
    counts.count_sources(decision.new_sources);
    let mut write = RepeatWrite {
        enqueued: Enqueued::Duplicate,
        first_browser_report: decision.first_browser_report,
        merged: None,
        due_at_ms: None,
    };
    let RepeatAction::Merge { rule } = decision.action else {
        return Ok(write);
    };
    counts.merged += 1;
    write.enqueued = Enqueued::Merged;
    if let Some(merged) = pincapi_core::event::merge_payload(&stored.payload, &e.payload, rule) {
        counts.count_keys(merged.match_keys & !stored.match_keys);
        write.merged = Some(merged);
    }
    if rule == MergeRule::ShopRecord {
        write.due_at_ms = Some(e.received_at_ms);
    }
    Ok(write)
}
