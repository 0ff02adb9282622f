//! What every target checks of an event it was handed: it serialises, and what it serialises
//! to is read back as the same event (the wire type refuses unknown fields), so nothing a
//! hostile input produces can leave the core in a shape Pinterest's schema does not know.

use pincapi_core::event::ConversionEvent;

pub fn round_trips(event: &ConversionEvent) {
    let json = serde_json::to_string(event).expect("an accepted event serialises");
    let back: ConversionEvent = serde_json::from_str(&json).expect("a serialised event reads back");
    assert_eq!(
        &back, event,
        "the event changed on the way through JSON: {json}"
    );
    for hashes in [&event.user_data.em, &event.user_data.ph] {
        for h in hashes {
            let s = serde_json::to_value(h).expect("a hash serialises");
            let s = s.as_str().expect("a hash is a string");
            assert!(
                s.len() == 64
                    && s.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "not a SHA-256 hex digest: {s}"
            );
        }
    }
}

/// A fixed clock: 2026-12-01T00:00:00Z.
#[allow(dead_code)]
pub const NOW: i64 = 1_796_083_200;
