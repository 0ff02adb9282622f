//! Pinterest's answer to one request → what becomes of each event it carried. Pure: no IO, no
//! clock (the caller passes `now_ms`), no randomness (the caller passes the jitter).

use std::time::Duration;

use pincapi_core::pinterest::{self, EventOutcome};

use crate::store::{ClaimedEvent, DeadReason, Settlement};

/// How retries are scheduled.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Multiplies the retry schedule (tests shorten it).
    pub scale: f64,
}

/// Per-event results, one per event sent, in order: processed events are delivered (with
/// Pinterest's warning), failed ones are dead letters with Pinterest's message.
pub fn per_event(
    batch: &[ClaimedEvent],
    outcomes: Vec<EventOutcome>,
    sent_at_ms: i64,
) -> Vec<Settlement> {
    batch
        .iter()
        .zip(outcomes)
        .map(|(e, o)| match o {
            EventOutcome::Delivered { warning } => Settlement::Delivered {
                id: e.id,
                sent_at_ms,
                warning,
            },
            EventOutcome::Failed { message } => Settlement::Dead {
                id: e.id,
                reason: DeadReason::Refused(message),
            },
        })
        .collect()
}

/// Nothing was recorded: each event is tried again, after Pinterest's `Retry-After` when it
/// gave one, or on the schedule of [`pinterest::retry_delay`]; an event whose attempts ran
/// out is a dead letter. A rate-limit wait is Pinterest asking us to slow down, not a failure
/// of the event, so it does not use up an attempt. `jitter` gives a number in [0, 1) per
/// event.
pub fn retry(
    batch: &[ClaimedEvent],
    after: Option<Duration>,
    reason: &str,
    rate_limited: bool,
    now_ms: i64,
    policy: RetryPolicy,
    jitter: &mut dyn FnMut() -> f64,
) -> Vec<Settlement> {
    batch
        .iter()
        .map(|e| {
            let counted = !rate_limited;
            let attempt = e.attempts + u32::from(counted);
            let delay = match after {
                Some(a) if rate_limited || attempt < pinterest::MAX_ATTEMPTS => {
                    Some(a.as_millis() as i64)
                }
                _ => pinterest::retry_delay(attempt.max(1), jitter())
                    .map(|d| (d.as_millis() as f64 * policy.scale) as i64),
            };
            match delay {
                Some(d) => Settlement::Retry {
                    id: e.id,
                    next_attempt_at_ms: now_ms + d,
                    error: reason.to_owned(),
                    counted,
                },
                None => Settlement::Dead {
                    id: e.id,
                    reason: DeadReason::GaveUp {
                        attempts: attempt,
                        last_error: reason.to_owned(),
                    },
                },
            }
        })
        .collect()
}

/// Gives events back to the queue at `at`, without using an attempt.
pub fn retry_all(events: &[ClaimedEvent], at: i64, why: &str) -> Vec<Settlement> {
    events
        .iter()
        .map(|e| Settlement::Retry {
            id: e.id,
            next_attempt_at_ms: at,
            error: why.to_owned(),
            counted: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pincapi_core::event::EventName;

    use super::*;

    fn claimed(id: i64, attempts: u32) -> ClaimedEvent {
        ClaimedEvent {
            id,
            event_id: format!("e-{id}"),
            event_name: EventName::parse("checkout").unwrap(),
            event_time: 1_700_000_000,
            received_at_ms: 1_700_000_000_000,
            attempts,
            test: false,
            payload: "{}".into(),
            lease_until: 0,
            retaken: false,
        }
    }

    const POLICY: RetryPolicy = RetryPolicy { scale: 1.0 };

    #[test]
    fn per_event_results_deliver_or_dead_letter_each_event_in_order() {
        let batch = [claimed(1, 0), claimed(2, 0)];
        let s = per_event(
            &batch,
            vec![
                EventOutcome::Delivered {
                    warning: Some("w".into()),
                },
                EventOutcome::Failed {
                    message: "bad em".into(),
                },
            ],
            5,
        );
        assert_eq!(
            s,
            [
                Settlement::Delivered {
                    id: 1,
                    sent_at_ms: 5,
                    warning: Some("w".into())
                },
                Settlement::Dead {
                    id: 2,
                    reason: DeadReason::Refused("bad em".into())
                }
            ]
        );
        assert!(
            matches!(&s[1], Settlement::Dead { reason, .. } if reason.to_string() == "Pinterest: bad em")
        );
    }

    #[test]
    fn a_rate_limit_waits_its_retry_after_without_using_an_attempt() {
        let batch = [claimed(1, pinterest::MAX_ATTEMPTS + 3)];
        let s = retry(
            &batch,
            Some(Duration::from_secs(2)),
            "429",
            true,
            1000,
            POLICY,
            &mut || 0.5,
        );
        assert_eq!(
            s,
            [Settlement::Retry {
                id: 1,
                next_attempt_at_ms: 3000,
                error: "429".into(),
                counted: false
            }]
        );
    }

    #[test]
    fn server_errors_use_attempts_and_the_last_one_is_a_dead_letter() {
        let fresh = retry(&[claimed(1, 0)], None, "503", false, 0, POLICY, &mut || 0.0);
        let Settlement::Retry {
            next_attempt_at_ms,
            counted: true,
            ..
        } = fresh[0]
        else {
            panic!("{fresh:?}")
        };
        let expected = pinterest::retry_delay(1, 0.0).unwrap().as_millis() as i64;
        assert_eq!(next_attempt_at_ms, expected);
        let last = retry(
            &[claimed(1, pinterest::MAX_ATTEMPTS - 1)],
            None,
            "503",
            false,
            0,
            POLICY,
            &mut || 0.0,
        );
        assert_eq!(
            last,
            [Settlement::Dead {
                id: 1,
                reason: DeadReason::GaveUp {
                    attempts: pinterest::MAX_ATTEMPTS,
                    last_error: "503".into()
                }
            }]
        );
    }
}
