//! `/v1/events` and `/v5/ad_accounts/{id}/events` bodies: one event, or `{"data": [...]}`,
//! each event through the loose ingest type and into the strict one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincapi_core::ingest::{IngestEvent, TimeWindow};
use serde_json::value::RawValue;

#[path = "common.rs"]
mod common;

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

fuzz_target!(|body: &[u8]| {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let events: Vec<&RawValue> = match serde_json::from_str::<Batch<'_>>(text) {
        Ok(b) => b.data,
        Err(_) => match serde_json::from_str::<&RawValue>(text) {
            Ok(one) => vec![one],
            Err(_) => return,
        },
    };
    let window = TimeWindow::around(common::NOW);
    for raw in events {
        let Ok(ev) = serde_json::from_str::<IngestEvent>(raw.get()) else {
            continue;
        };
        for country in [None, Some("US"), Some("GB")] {
            match ev.clone().into_event(&window, country) {
                Ok(accepted) => common::round_trips(&accepted.event),
                Err(issues) => assert!(!issues.is_empty(), "a refusal names no field"),
            }
        }
    }
});
