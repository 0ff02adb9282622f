//! The admin's dashboard sessions and the brake on guessing the admin key. No IO and no clock
//! of its own: callers pass `now_ms`.
//!
//! A session is `<expiry ms>.<nonce>.<mac>`: a fresh random nonce per sign-in, and an
//! HMAC-SHA256 under the admin key over the expiry and the nonce, so any instance that knows
//! the key can check it, it proves the key was known without being the key, and changing the
//! key ends every session. Signing out revokes the nonce in this process (other instances of a
//! shared deployment still accept it until it expires).
//!
//! Failed sign-ins are counted per client address and in all, per minute: past
//! [`FAILURES_PER_ADDRESS`] from one address or [`FAILURES_IN_ALL`] from everyone, sign-ins
//! are refused for the rest of the minute, the right key included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// How long a session lasts, ms.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;

/// Failed sign-ins one address may make in a minute.
pub const FAILURES_PER_ADDRESS: u32 = 5;

/// Failed sign-ins everyone together may make in a minute.
pub const FAILURES_IN_ALL: u32 = 30;

const WINDOW_MS: i64 = 60_000;

/// Sessions revoked by signing out, and the failure counts.
#[derive(Debug, Default)]
pub struct SignIns {
    /// Revoked nonces, with their expiry (forgotten once expired).
    revoked: Mutex<HashMap<String, i64>>,
    /// Per address: the start of its minute and its failures in it.
    failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    /// Everyone's: the start of the minute and the failures in it.
    all: Mutex<(i64, u32)>,
}

/// Why a sign-in is not even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until sign-ins are taken again.
    pub retry_after_secs: u64,
}

impl SignIns {
    /// Whether `address` may try a key now.
    pub fn admit(&self, address: IpAddr, now_ms: i64) -> Result<(), Throttled> {
        let wait = |start: i64| Throttled {
            retry_after_secs: ((start + WINDOW_MS - now_ms).max(1000) / 1000) as u64,
        };
        if let Ok(all) = self.all.lock()
            && now_ms < all.0 + WINDOW_MS
            && all.1 >= FAILURES_IN_ALL
        {
            return Err(wait(all.0));
        }
        if let Ok(f) = self.failures.lock()
            && let Some(&(start, n)) = f.get(&address)
            && now_ms < start + WINDOW_MS
            && n >= FAILURES_PER_ADDRESS
        {
            return Err(wait(start));
        }
        Ok(())
    }

    /// Counts a wrong key from `address`.
    pub fn failed(&self, address: IpAddr, now_ms: i64) {
        let bump = |slot: &mut (i64, u32)| {
            if now_ms >= slot.0 + WINDOW_MS {
                *slot = (now_ms, 0);
            }
            slot.1 += 1;
        };
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|_, (start, _)| now_ms < *start + WINDOW_MS);
            bump(f.entry(address).or_insert((now_ms, 0)));
        }
        if let Ok(mut all) = self.all.lock() {
            bump(&mut all);
        }
    }

    /// A new session for `key`, valid from `now_ms`; `nonce` must be fresh and random.
    pub fn open(&self, key: &Secret, nonce: &str, now_ms: i64) -> String {
        let expiry = now_ms + SESSION_MS;
        format!("{expiry}.{nonce}.{}", mac(key, expiry, nonce))
    }

    /// Whether `session` is one of `key`'s, unexpired and not signed out.
    pub fn valid(&self, key: &Secret, session: &str, now_ms: i64) -> bool {
        let mut parts = session.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(given)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        if key.is_empty() || expiry <= now_ms || nonce.is_empty() {
            return false;
        }
        let right: bool = mac(key, expiry, nonce)
            .as_bytes()
            .ct_eq(given.as_bytes())
            .into();
        right && !self.revoked.lock().is_ok_and(|r| r.contains_key(nonce))
    }

    /// Ends `session` (signing out).
    pub fn close(&self, session: &str, now_ms: i64) {
        let mut parts = session.splitn(3, '.');
        if let (Some(expiry), Some(nonce)) = (parts.next(), parts.next())
            && let Ok(expiry) = expiry.parse::<i64>()
            && let Ok(mut r) = self.revoked.lock()
        {
            r.retain(|_, e| *e > now_ms);
            r.insert(nonce.to_owned(), expiry);
        }
    }
}

fn mac(key: &Secret, expiry: i64, nonce: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("pincapi dashboard session v2|{expiry}|{nonce}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-long-admin-key-for-tests";

    #[test]
    fn a_session_is_valid_until_it_expires_or_is_closed_and_only_under_its_key() {
        let s = SignIns::default();
        let key = Secret::new(KEY);
        let one = s.open(&key, "n1", 1_000);
        let two = s.open(&key, "n2", 1_000);
        assert_ne!(one, two);
        assert!(s.valid(&key, &one, 2_000));
        assert!(!s.valid(&Secret::new("another-long-admin-key"), &one, 2_000));
        assert!(!s.valid(&key, &one, 1_000 + SESSION_MS));
        assert!(!s.valid(&key, "1.n1.00", 0));
        assert!(!s.valid(&key, "garbage", 0));
        s.close(&one, 3_000);
        assert!(!s.valid(&key, &one, 3_000));
        assert!(s.valid(&key, &two, 3_000));
    }

    #[test]
    fn failures_stop_an_address_then_everyone_for_the_rest_of_the_minute() {
        let s = SignIns::default();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..FAILURES_PER_ADDRESS {
            assert!(s.admit(a, 0).is_ok());
            s.failed(a, 0);
        }
        assert_eq!(
            s.admit(a, 10_000),
            Err(Throttled {
                retry_after_secs: 50
            })
        );
        assert!(s.admit(a, WINDOW_MS).is_ok());
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let mut now = WINDOW_MS;
        let mut n = 0;
        while s.admit(b, now).is_ok() && n < 1000 {
            // Spread over many addresses: the total still stops them.
            let ip: IpAddr = format!("198.51.100.{}", n % 250).parse().unwrap();
            s.failed(ip, now);
            n += 1;
            now += 1;
        }
        assert_eq!(n, FAILURES_IN_ALL);
    }
}
