//! Pinterest's answer to a batch: any status, `Retry-After` and body. The delivery contract:
//! per-event results only from a 2xx that holds exactly one result per event sent; never from
//! a redirect.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincapi_core::pinterest::{BatchAnswer, classify, parse_retry_after};

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let status = 100 + u16::from_le_bytes([input[0], input[1]]) % 500;
    let sent = 1 + usize::from(input[2]) * 4;
    let split = usize::from(input[3]).min(input.len() - 4);
    let (retry, body) = input[4..].split_at(split);
    let retry = std::str::from_utf8(retry).ok();
    if let Some(r) = retry {
        let _ = parse_retry_after(r);
    }
    match classify(status, retry, body, sent) {
        BatchAnswer::PerEvent(outcomes) => {
            assert_eq!(
                outcomes.len(),
                sent,
                "status {status}: results for other events"
            );
            assert!(
                (200..300).contains(&status) || (400..500).contains(&status),
                "per-event results from status {status}"
            );
        }
        _ if (300..400).contains(&status) => {
            assert!(matches!(
                classify(status, retry, body, sent),
                BatchAnswer::Unreadable { .. }
            ));
        }
        _ => {}
    }
});
