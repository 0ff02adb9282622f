//! The call budget of one ad account: at most `limit` requests in any 60 seconds.

use std::collections::VecDeque;

/// A rolling one-minute call budget: at most `limit` calls in any 60 seconds.
#[derive(Debug)]
pub(super) struct CallBudget {
    limit: usize,
    calls: VecDeque<i64>,
}

impl CallBudget {
    /// A budget of `limit` calls a minute (at least one).
    pub(super) fn new(limit: usize) -> CallBudget {
        CallBudget {
            limit: limit.max(1),
            calls: VecDeque::new(),
        }
    }

    /// Takes a call slot if one is free at `now_ms`; otherwise says when one frees up.
    pub(super) fn take(&mut self, now_ms: i64) -> Result<(), i64> {
        while self.calls.front().is_some_and(|t| *t <= now_ms - 60_000) {
            self.calls.pop_front();
        }
        if self.calls.len() < self.limit {
            self.calls.push_back(now_ms);
            Ok(())
        } else {
            Err(self.calls.front().map_or(now_ms, |t| t + 60_000))
        }
    }

    /// Returns an unused slot taken at `taken_at_ms`.
    pub(super) fn give_back(&mut self, taken_at_ms: i64) {
        if let Some(i) = self.calls.iter().rposition(|t| *t == taken_at_ms) {
            self.calls.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_budget_allows_at_most_the_limit_in_any_minute() {
        let mut b = CallBudget {
            limit: 2,
            calls: VecDeque::new(),
        };
        assert!(b.take(0).is_ok());
        assert!(b.take(10).is_ok());
        assert_eq!(b.take(20), Err(60_000));
        assert!(b.take(60_000).is_ok());
        assert_eq!(b.take(60_001), Err(60_010));
    }

    #[test]
    fn a_slot_given_back_is_free_again() {
        let mut b = CallBudget {
            limit: 2,
            calls: VecDeque::new(),
        };
        assert!(b.take(0).is_ok());
        assert!(b.take(10).is_ok());
        b.give_back(10);
        assert!(b.take(20).is_ok());
        // A slot that already left the window is not there to give back: nothing else goes.
        b.give_back(5);
        assert_eq!(b.take(30), Err(60_000));
    }
}
