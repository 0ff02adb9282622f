//! Credentials at rest: the tokens the gateway obtains by itself (Shopify access and refresh
//! tokens) are sealed with XChaCha20-Poly1305 under the key in `PINCAPI_SECRET_KEY` before
//! they reach the store, and opened only in memory.
//!
//! A sealed value is `1 || nonce (24 bytes) || ciphertext+tag`. The nonce is random (the
//! extended nonce makes random nonces safe for any number of seals under one key), and the
//! credential's name in the store (`shopify:shop.myshopify.com`) is the associated data, so
//! a sealed value copied onto another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};

const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;

/// The 32-byte key. `Debug` does not print it.
#[derive(Clone)]
pub struct SecretKey(chacha20poly1305::Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Why a key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`; found {0} characters"
    )]
    KeyLength(usize),
    #[error("must be 64 hex characters (32 bytes); found a character that is not hex")]
    KeyNotHex,
    #[error("a sealed credential does not open with this key (another key, or a damaged row)")]
    DoesNotOpen,
}

impl SecretKey {
    /// The key from its 64 hex characters.
    pub fn from_hex(text: &str) -> Result<SecretKey, SealError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(SealError::KeyLength(text.chars().count()));
        }
        let mut key = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(SealError::KeyNotHex)?;
            let lo = hex_digit(pair[1]).ok_or(SealError::KeyNotHex)?;
            key[i] = (hi << 4) | lo;
        }
        Ok(SecretKey(key.into()))
    }

    /// Seals `plaintext` for the credential named `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.0);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            // Encryption fails only for inputs over 256 GiB.
            .expect("a credential is far below the AEAD's size limit");
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SecretKey::seal`] sealed for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_BYTES || sealed[0] != VERSION {
            return Err(SealError::DoesNotOpen);
        }
        let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_BYTES]);
        XChaCha20Poly1305::new(&self.0)
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_BYTES..],
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::DoesNotOpen)
    }
}

/// The value stored sealed under `name`, opened and read as JSON; `None` when none is stored.
/// Errors are in words (a store failure, a wrong key, a damaged row).
pub async fn load_json<T: serde::de::DeserializeOwned>(
    store: &dyn crate::store::CredentialStore,
    key: &SecretKey,
    name: &str,
) -> Result<Option<T>, String> {
    let Some(sealed) = store.credential(name).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let plain = key.open(name, &sealed).map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Stores `value` as JSON, sealed under `name`.
pub async fn save_json<T: serde::Serialize>(
    store: &dyn crate::store::CredentialStore,
    key: &SecretKey,
    name: &str,
    value: &T,
    now_ms: i64,
) -> Result<(), String> {
    let plain = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    store
        .save_credential(name, key.seal(name, &plain), now_ms)
        .await
        .map_err(|e| e.to_string())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_name() {
        let key = SecretKey::from_hex(KEY).unwrap();
        let sealed = key.seal("shopify:a.myshopify.com", b"shpat_secret");
        assert!(!sealed.windows(12).any(|w| w == b"shpat_secret"));
        assert_eq!(
            key.open("shopify:a.myshopify.com", &sealed).unwrap(),
            b"shpat_secret"
        );
        assert_eq!(
            key.open("shopify:b.myshopify.com", &sealed),
            Err(SealError::DoesNotOpen)
        );
        let other = SecretKey::from_hex(&KEY.replace("1f", "ff")).unwrap();
        assert_eq!(
            other.open("shopify:a.myshopify.com", &sealed),
            Err(SealError::DoesNotOpen)
        );
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(key.open("shopify:a.myshopify.com", &damaged).is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, key.seal("shopify:a.myshopify.com", b"shpat_secret"));
    }

    #[test]
    fn keys_are_64_hex_characters() {
        assert_eq!(
            SecretKey::from_hex("abc").unwrap_err(),
            SealError::KeyLength(3)
        );
        assert_eq!(
            SecretKey::from_hex(&KEY.replace('0', "g")).unwrap_err(),
            SealError::KeyNotHex
        );
        assert!(SecretKey::from_hex(&KEY.to_uppercase()).is_ok());
        assert_eq!(
            format!("{:?}", SecretKey::from_hex(KEY).unwrap()),
            "SecretKey(…)"
        );
    }
}
