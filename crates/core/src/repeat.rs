//! What a repeat of a stored event does to it: the one rule both store backends apply when an
//! (ad account, event_id) arrives again.
//!
//! A repeat always records its source on the stored event and counts as a duplicate. While the
//! stored event waits unsent (pending and not claimed by a worker) the repeat is merged into
//! it; once it is sent or being sent, the repeat changes nothing else. How it merges is a
//! [`MergeRule`]: the shop's own systems (webhook, poller, API) are trusted and a browser
//! report is not, so a browser report of an event the shop has reported adds only the
//! browser's first-hand keys ([`MergeRule::BrowserSignals`]), and the shop's record of an
//! event only the browser had reported replaces its identities, value and items
//! ([`MergeRule::ShopRecord`]) and makes it due at once instead of waiting out the browser
//! hold.

pub use crate::event::MergeRule;
use crate::source::Source;

/// What the rule needs to know of the stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The source of its first receipt.
    pub first_source: Source,
    /// Every source that has seen it (bits of [`Source::bit`]).
    pub sources: i64,
    /// It is `pending` (not delivered, dead or dropped).
    pub pending: bool,
    /// A worker holds it under a lease.
    pub leased: bool,
}

/// What to do with one repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// Sources the stored event had not seen before (to count as newly seen).
    pub new_sources: i64,
    /// This is the browser's first report of the event (an order's ledger marks it seen).
    pub first_browser_report: bool,
    /// How the repeat's payload meets the stored one.
    pub action: RepeatAction,
}

/// The payload side of a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepeatAction {
    /// Sent or being sent: nothing more changes.
    Duplicate,
    /// Merged into the waiting event by `rule`; a [`MergeRule::ShopRecord`] also makes it due
    /// now.
    Merge { rule: MergeRule },
}

/// The rule.
pub fn decide(stored: Stored, incoming: Source) -> Repeat {
    let new_sources = incoming.bit() & !stored.sources;
    let first_browser_report = incoming.is_browser() && stored.sources & Source::BROWSER_BITS == 0;
    let shop_has_seen = stored.sources & !Source::BROWSER_BITS != 0;
    let rule = match (incoming.is_browser(), shop_has_seen) {
        (true, true) => MergeRule::BrowserSignals,
        (false, false) => MergeRule::ShopRecord,
        _ => MergeRule::Fill,
    };
    let action = if !stored.pending || stored.leased {
        RepeatAction::Duplicate
    } else {
        RepeatAction::Merge { rule }
    };
    Repeat {
        new_sources,
        first_browser_report,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(first: Source, pending: bool, leased: bool) -> Stored {
        Stored {
            first_source: first,
            sources: first.bit(),
            pending,
            leased,
        }
    }

    fn merge(rule: MergeRule) -> RepeatAction {
        RepeatAction::Merge { rule }
    }

    #[test]
    fn a_waiting_event_is_merged_and_a_sent_or_leased_one_is_a_duplicate() {
        let waiting = decide(stored(Source::Api, true, false), Source::Api);
        assert_eq!(waiting.action, merge(MergeRule::Fill));
        assert_eq!(waiting.new_sources, 0);
        for (pending, leased) in [(false, false), (true, true), (false, true)] {
            let r = decide(stored(Source::Api, pending, leased), Source::Webhook);
            assert_eq!(r.action, RepeatAction::Duplicate);
            assert_eq!(r.new_sources, Source::Webhook.bit());
        }
    }

    #[test]
    fn the_shops_copy_of_a_browser_report_wins_and_a_browser_report_never_does() {
        for browser in [Source::Collector, Source::TagMirror] {
            for shop in [Source::Webhook, Source::Poller, Source::Api] {
                let r = decide(stored(browser, true, false), shop);
                assert_eq!(r.action, merge(MergeRule::ShopRecord));
                let r = decide(stored(shop, true, false), browser);
                assert_eq!(r.action, merge(MergeRule::BrowserSignals));
                assert!(r.first_browser_report);
                // Once the shop has reported it, a later browser report is only signals too.
                let both = Stored {
                    sources: browser.bit() | shop.bit(),
                    ..stored(browser, true, false)
                };
                let r = decide(both, Source::Collector);
                assert_eq!(r.action, merge(MergeRule::BrowserSignals));
                assert!(!r.first_browser_report);
            }
        }
        // Two browser reports of an event the shop has not reported: filled in.
        let r = decide(stored(Source::Collector, true, false), Source::TagMirror);
        assert_eq!(r.action, merge(MergeRule::Fill));
        let seen_by_both = Stored {
            sources: Source::Webhook.bit() | Source::Collector.bit(),
            ..stored(Source::Webhook, true, false)
        };
        assert!(!decide(seen_by_both, Source::TagMirror).first_browser_report);
    }
}
