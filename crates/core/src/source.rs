//! Where an event came from, and the one rule that tells a browser report from the shop's own.

use serde::Serialize;

/// Where an event came from. Stored as a bit in `sources` so one event can remember every
/// source that saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/events`.
    Api,
    /// A Shopify webhook.
    Webhook,
    /// The Shopify Admin API reconciliation poller.
    Poller,
    /// The browser collector (`POST /collect`).
    Collector,
    /// A mirror of a Pinterest Tag call made in the browser.
    TagMirror,
    /// `pincapi demo`.
    Demo,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 6] = [
        Source::Api,
        Source::Webhook,
        Source::Poller,
        Source::Collector,
        Source::TagMirror,
        Source::Demo,
    ];

    /// The label used in tables, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Webhook => "webhook",
            Source::Poller => "poller",
            Source::Collector => "collector",
            Source::TagMirror => "tag_mirror",
            Source::Demo => "demo",
        }
    }

    /// Whether the event was seen in the visitor's browser (as opposed to the shop's systems).
    pub fn is_browser(self) -> bool {
        matches!(self, Source::Collector | Source::TagMirror)
    }

    /// The bit of this source in a `sources` set.
    pub fn bit(self) -> i64 {
        1 << (self as i64)
    }

    /// The sources in a bit set.
    pub fn from_bits(bits: i64) -> Vec<Source> {
        Source::ALL
            .into_iter()
            .filter(|s| bits & s.bit() != 0)
            .collect()
    }
}

impl Source {
    /// The bits of the browser sources (collector, Tag mirror) in a `sources` set.
    pub const BROWSER_BITS: i64 = 1 << (Source::Collector as i64) | 1 << (Source::TagMirror as i64);

    /// The source named by its label ([`Source::as_str`]).
    pub fn parse(label: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_only_the_browser_sources_are_browser() {
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(s));
            assert_eq!(s.is_browser(), s.bit() & Source::BROWSER_BITS != 0);
        }
        assert_eq!(Source::parse("outbox"), None);
        let browser: Vec<Source> = Source::ALL.into_iter().filter(|s| s.is_browser()).collect();
        assert_eq!(browser, [Source::Collector, Source::TagMirror]);
    }
}
