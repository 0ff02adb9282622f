//! `/collect` bodies, with and without the request's own signals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincapi_core::ingest::TimeWindow;
use pincapi_core::tag::{BrowserContext, collect};

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let window = TimeWindow::around(common::NOW);
    let bare = BrowserContext::default();
    let full = BrowserContext {
        client_ip: Some("203.0.113.7"),
        user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)"),
        epik_cookie: Some("dj0yJnU9fuzz"),
        referer: Some("https://shop.example/products/1?utm_source=pinterest"),
    };
    for ctx in [bare, full] {
        match collect(text, &ctx, &window) {
            Ok(c) => common::round_trips(&c.event),
            Err(issues) => assert!(!issues.is_empty(), "a refusal names no field"),
        }
    }
});
