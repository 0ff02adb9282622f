//! Fault injection state for the events endpoint: the scripted answers, the standing
//! failure, the reply delay and the event ids to reject.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{FaultStep, Faults, RejectSet};

/// [`Faults`] in the form the request path needs: a queue to pop from and a shared set
/// of rejected ids (looked up once per event, so a `Vec` scan would be too slow).
#[derive(Debug, Default)]
pub(super) struct FaultState {
    script: VecDeque<FaultStep>,
    delay_ms: u64,
    reject_event_ids: RejectSet,
    fail_all: Option<FaultStep>,
}

/// What the faults say about one events request.
#[derive(Debug)]
pub(super) struct FaultDecision {
    /// Answer with this step instead of processing (a 2xx step only with a body of its own).
    pub(super) answer: Option<FaultStep>,
    /// Wait this long before answering.
    pub(super) delay: Duration,
    /// Events with these ids fail.
    pub(super) reject_event_ids: RejectSet,
}

impl From<Faults> for FaultState {
    fn from(f: Faults) -> Self {
        Self {
            script: f.script.into(),
            delay_ms: f.delay_ms,
            reject_event_ids: Arc::new(f.reject_event_ids.into_iter().collect::<HashSet<_>>()),
            fail_all: f.fail_all,
        }
    }
}

impl FaultState {
    /// The faults still in effect, for `GET /sandbox/faults`.
    pub(super) fn to_faults(&self) -> Faults {
        let mut reject_event_ids: Vec<String> = self.reject_event_ids.iter().cloned().collect();
        reject_event_ids.sort();
        Faults {
            script: self.script.iter().cloned().collect(),
            delay_ms: self.delay_ms,
            reject_event_ids,
            fail_all: self.fail_all.clone(),
        }
    }

    /// Decides the fate of the next events request, consuming one script step unless
    /// `fail_all` is set.
    pub(super) fn next_request(&mut self) -> FaultDecision {
        let step = match &self.fail_all {
            Some(step) => Some(step.clone()),
            None => self.script.pop_front(),
        };
        let step_delay = step.as_ref().and_then(|s| s.delay_ms).unwrap_or(0);
        let delay = Duration::from_millis(self.delay_ms.saturating_add(step_delay));
        // A 2xx step only contributes its delay: the request is then processed normally,
        // which lets a script say "slow, then fail, then fine". One with a body of its own
        // answers with it instead.
        let answer = step.filter(|s| !(200..300).contains(&s.status) || s.body.is_some());
        FaultDecision {
            answer,
            delay,
            reject_event_ids: Arc::clone(&self.reject_event_ids),
        }
    }
}
