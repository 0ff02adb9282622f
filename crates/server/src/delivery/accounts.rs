//! The ad accounts the engine delivers to: each with its token, call budget and stop state,
//! and the changes made while the loops run (an account connected through OAuth joins; a
//! reloaded configuration adds, changes and removes accounts).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::Delivery;
use super::budget::CallBudget;
use crate::config::{AccountConfig, DeliveryConfig, Secret};

#[derive(Debug)]
pub(super) struct Account {
    pub(super) id: String,
    pub(super) token: Secret,
    pub(super) test: bool,
    /// The calls per minute it was configured with (to tell a changed account, and the
    /// limit of the budget the store shares between instances).
    pub(super) max_calls_per_minute: u32,
    pub(super) budget: Mutex<CallBudget>,
    /// Unix ms before which the account sends nothing (a stop, a Retry-After, or the back-off
    /// after failed calls).
    pub(super) paused_until: AtomicI64,
    /// Calls in a row Pinterest did not take (no answer, 5xx, 429 without Retry-After, an
    /// answer not Pinterest's); Pinterest's per-event results reset it.
    pub(super) failures: std::sync::atomic::AtomicU32,
    /// A loop is making the one call that tells whether Pinterest takes calls again; the
    /// account's other loops wait for it instead of each making one.
    pub(super) probing: std::sync::atomic::AtomicBool,
    /// Why the account is stopped (401/403, or a request Pinterest refuses as such).
    pub(super) blocked: Mutex<Option<String>>,
    /// The last answer that was not Pinterest's (see `BatchAnswer::Unreadable`), until
    /// Pinterest's own per-event results come again.
    pub(super) unreadable: Mutex<Option<String>>,
    pub(super) wake: Notify,
    /// Turns true when a reloaded configuration removes or replaces the account: its loops
    /// finish the round they are in (so every answer is recorded) and end.
    pub(super) retired: watch::Sender<bool>,
}

impl Account {
    fn new(a: &AccountConfig, config: &DeliveryConfig) -> Account {
        let limit = a
            .max_calls_per_minute
            .unwrap_or(config.max_calls_per_minute);
        Account {
            id: a.id.clone(),
            token: a.token.clone(),
            test: a.test,
            max_calls_per_minute: limit,
            budget: Mutex::new(CallBudget::new(limit as usize)),
            paused_until: AtomicI64::new(0),
            failures: std::sync::atomic::AtomicU32::new(0),
            probing: std::sync::atomic::AtomicBool::new(false),
            blocked: Mutex::new(None),
            unreadable: Mutex::new(None),
            wake: Notify::new(),
            retired: watch::channel(false).0,
        }
    }

    /// Whether `a` describes this account as it is.
    fn is(&self, a: &AccountConfig, config: &DeliveryConfig) -> bool {
        self.id == a.id
            && self.token.expose() == a.token.expose()
            && self.test == a.test
            && self.max_calls_per_minute
                == a.max_calls_per_minute
                    .unwrap_or(config.max_calls_per_minute)
    }
}

/// What [`Delivery::reconcile`] changed, by ad account id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccountChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl AccountChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Delivery {
    /// Builds the account table of a new engine.
    pub(super) fn account_table(
        accounts: &[AccountConfig],
        config: &DeliveryConfig,
    ) -> std::collections::HashMap<String, Arc<Account>> {
        accounts
            .iter()
            .map(|a| (a.id.clone(), Arc::new(Account::new(a, config))))
            .collect()
    }

    pub(super) fn account(&self, ad_account_id: &str) -> Option<Arc<Account>> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ad_account_id)
            .cloned()
    }

    /// Whether events for `ad_account_id` are delivered.
    pub fn has_account(&self, ad_account_id: &str) -> bool {
        self.account(ad_account_id).is_some()
    }

    /// The ad accounts delivered to, sorted.
    pub fn account_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Adds an ad account while the loops run (one connected through Pinterest's OAuth):
    /// its loops start at once. An account delivered to already is left as it is.
    pub fn add_account(self: &Arc<Self>, account: &AccountConfig) -> Vec<JoinHandle<()>> {
        let added = {
            let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
            if accounts.contains_key(&account.id) {
                return Vec::new();
            }
            let a = Arc::new(Account::new(account, &self.config));
            accounts.insert(account.id.clone(), Arc::clone(&a));
            a
        };
        let stop = self.stop.lock().ok().and_then(|s| s.clone());
        match stop {
            Some(stop) => self.spawn_account(&added, &stop),
            None => Vec::new(),
        }
    }

    /// Tells the account's workers that events are waiting, unless the account is paused (a
    /// back-off after failed calls, a `Retry-After`, a stop): its loops already sleep until the
    /// pause ends and then claim whatever is due. Waking one for every event ingested while
    /// Pinterest is down would only have it look at the store and sleep again, work per event
    /// that the healthy path does not do (it cost a third more CPU per ingested event).
    pub fn wake(&self, ad_account_id: &str) {
        if let Some(a) = self.account(ad_account_id)
            && a.paused_until.load(Ordering::Relaxed) <= self.clock.now_ms()
        {
            a.wake.notify_one();
        }
    }

    /// Why the account is stopped, if it is (a 401/403, or requests Pinterest refuses as
    /// such); `None` while it delivers.
    pub fn blocked_reason(&self, ad_account_id: &str) -> Option<String> {
        self.account(ad_account_id)
            .and_then(|a| a.blocked.lock().ok().and_then(|b| b.clone()))
    }

    /// The last answer to the account's requests that was not Pinterest's (garbage, an HTML
    /// page, the wrong number of results, a redirect), naming the base URL; `None` once
    /// Pinterest's own results come again.
    pub fn unreadable_reason(&self, ad_account_id: &str) -> Option<String> {
        self.account(ad_account_id)
            .and_then(|a| a.unreadable.lock().ok().and_then(|u| u.clone()))
    }

    /// Makes the delivered accounts `wanted`, while the loops run: a new account starts its
    /// loops; a changed one (token, test mode, call budget) is replaced, its old loops ending
    /// after the round they are in; a removed one stops, its queued events kept in the store
    /// for when it is configured again. Nothing claimed is dropped: a retired loop settles
    /// what it sent, and a replacement claims only what is due.
    pub fn reconcile(self: &Arc<Self>, wanted: &[AccountConfig]) -> AccountChanges {
        let mut changes = AccountChanges::default();
        let mut start = Vec::new();
        {
            let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = accounts
                .keys()
                .filter(|id| !wanted.iter().any(|a| &a.id == *id))
                .cloned()
                .collect();
            for id in gone {
                if let Some(old) = accounts.remove(&id) {
                    old.retired.send_replace(true);
                }
                changes.removed.push(id);
            }
            for a in wanted {
                match accounts.get(&a.id) {
                    Some(old) if old.is(a, &self.config) => continue,
                    Some(old) => {
                        old.retired.send_replace(true);
                        changes.changed.push(a.id.clone());
                    }
                    None => changes.added.push(a.id.clone()),
                }
                let new = Arc::new(Account::new(a, &self.config));
                accounts.insert(a.id.clone(), Arc::clone(&new));
                start.push(new);
            }
        }
        let stop = self.stop.lock().ok().and_then(|s| s.clone());
        if let Some(stop) = stop {
            for a in &start {
                // Detached: they end with the gateway's stop or their retirement.
                drop(self.spawn_account(a, &stop));
            }
        }
        for list in [
            &mut changes.added,
            &mut changes.changed,
            &mut changes.removed,
        ] {
            list.sort();
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::future::Future;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Synchronous;
    use crate::metrics::Metrics;
    use crate::pinterest_client::PinterestClient;
    use crate::store::Queue;
    use crate::store::sqlite::SqliteStore;

    const ACCOUNT: &str = "549755885175";

    #[tokio::test]
    async fn new_events_wake_an_account_unless_it_is_paused() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Queue> =
            Arc::new(SqliteStore::open(&dir.path().join("w.db"), Synchronous::Normal).unwrap());
        let clock = ManualClock::new(1_000_000);
        let delivery = Delivery::new(
            store,
            clock.clone(),
            PinterestClient::new("http://127.0.0.1:9/v5", Duration::from_secs(1)).unwrap(),
            Arc::new(Metrics::default()),
            DeliveryConfig::default(),
            7 * 86_400,
            &[AccountConfig {
                id: ACCOUNT.into(),
                token: Secret::new("t"),
                test: false,
                max_calls_per_minute: None,
            }],
        );
        let account = delivery.account(ACCOUNT).unwrap();
        // A wake leaves a permit: the next wait for one ends at once.
        let woken = |a: &Account| {
            let notified = std::pin::pin!(a.wake.notified());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            notified.poll(&mut cx).is_ready()
        };

        delivery.wake(ACCOUNT);
        assert!(woken(&account), "a delivering account is woken");
        assert!(!woken(&account));

        // Backing off for 30 s: events coming in meanwhile wake nobody.
        let until = clock.now_ms() + 30_000;
        account.paused_until.store(until, Ordering::Relaxed);
        for _ in 0..100 {
            delivery.wake(ACCOUNT);
        }
        assert!(!woken(&account), "a paused account was woken");

        // Once the pause is over, they wake it again.
        clock.advance(Duration::from_secs(30));
        delivery.wake(ACCOUNT);
        assert!(woken(&account));
    }
}
