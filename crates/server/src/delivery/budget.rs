//! The call budget of one ad account: at most `limit` requests in any 60 seconds, counted
//! here in one process or, with a store that shares it (PostgreSQL), in the store for every
//! instance; and the delivery loop's wait for a call slot.

use std::collections::VecDeque;

use super::accounts::Account;

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

/// A call slot taken: from the account's budget in this process (when it was taken), or
/// from the one the store shares between instances (its id there).
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    Local(i64),
    Shared(i64),
}

impl super::Delivery {
    /// Waits for a call slot of the account's budget and takes it; returns the slot (to give
    /// it back unused), or `None` if the budget cannot be read. With a store that shares the
    /// budgets (PostgreSQL), the slot is taken from the one budget every instance draws on;
    /// while the store cannot be reached, from this instance's own, so delivery goes on
    /// within the account's limit as one instance counts it.
    pub(super) async fn wait_for_budget(&self, account: &Account) -> Option<Slot> {
        let mut stop = self.stop.lock().ok().and_then(|s| s.clone());
        let mut retired = account.retired.subscribe();
        loop {
            let now = self.clock.now_ms();
            let shared = if self.store.shares_call_budgets() {
                match self
                    .store
                    .take_call(&account.id, account.max_calls_per_minute, now)
                    .await
                {
                    Ok(Ok(id)) => return Some(Slot::Shared(id)),
                    Ok(Err(at)) => Some(at),
                    Err(e) => {
                        tracing::warn!(ad_account_id = %account.id, error = %e, "The shared call budget cannot be read; counting calls in this instance");
                        None
                    }
                }
            } else {
                None
            };
            let next = match shared {
                Some(at) => Err(at),
                None => match account.budget.lock() {
                    Ok(mut b) => b.take(now),
                    Err(_) => return None,
                },
            };
            match next {
                Ok(()) => return Some(Slot::Local(now)),
                // A stop ends the wait: a minute is too long for a shutdown to wait.
                Err(_) if self.stopping(account) => return None,
                Err(at) => match stop.as_mut() {
                    Some(s) => tokio::select! {
                        _ = s.changed() => {}
                        _ = retired.changed() => {}
                        _ = self.clock.sleep_until(at.max(now + 1)) => {}
                    },
                    None => self.clock.sleep_until(at.max(now + 1)).await,
                },
            }
        }
    }

    /// Whether the engine is stopping or the account was retired.
    pub(super) fn stopping(&self, account: &Account) -> bool {
        let stopped = self
            .stop
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|r| *r.borrow()))
            .unwrap_or(false);
        stopped || *account.retired.borrow()
    }

    /// Returns a call slot the round did not use, to the budget it came from.
    pub(super) async fn give_back(&self, account: &Account, slot: Option<Slot>) {
        match slot {
            Some(Slot::Shared(id)) => {
                if let Err(e) = self.store.give_back_call(&account.id, id).await {
                    tracing::debug!(ad_account_id = %account.id, error = %e, "An unused call slot stays taken until its minute is over");
                }
            }
            Some(Slot::Local(at)) => {
                if let Ok(mut b) = account.budget.lock() {
                    b.give_back(at);
                }
            }
            None => {}
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
