//! Erasure for Shopify's compliance webhooks: taking a customer out of a stored event.
//!
//! `customers/redact` names a customer (email, phone) and the orders to redact. The customer's
//! hashes are taken out of every stored event that carries them; the listed orders' events lose
//! every identifier (`user_data` keeps nothing that points at a person: no hashes, no IP, no
//! user agent, no click id). What is left is a count, not a person.

use serde_json::Value;

use crate::audience::Scrubbed;

/// Takes `hashes` out of the event `payload`'s `user_data`, or, with `everything`, every
/// identifier. `None` when nothing changed.
pub fn scrub_identifiers(payload: &str, hashes: &[String], everything: bool) -> Option<Scrubbed> {
    let mut v: Value = serde_json::from_str(payload).ok()?;
    let user = v.get_mut("user_data")?.as_object_mut()?;
    let mut changed = false;
    if everything {
        changed = !user.is_empty();
        user.clear();
    } else {
        let keys: Vec<String> = user.keys().cloned().collect();
        for key in keys {
            let Some(list) = user.get_mut(&key).and_then(Value::as_array_mut) else {
                continue;
            };
            let before = list.len();
            list.retain(|h| {
                h.as_str()
                    .is_none_or(|h| !hashes.iter().any(|x| x.eq_ignore_ascii_case(h)))
            });
            if list.len() != before {
                changed = true;
                if list.is_empty() {
                    user.remove(&key);
                }
            }
        }
    }
    if !changed {
        return None;
    }
    let nonempty = |k: &str| {
        user.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let has = |k: &str| user.get(k).is_some_and(|x| !x.is_null());
    let sendable = nonempty("em")
        || nonempty("hashed_maids")
        || (has("client_ip_address") && has("client_user_agent"));
    Some(Scrubbed {
        payload: v.to_string(),
        sendable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customers_hashes_leave_and_the_rest_stays() {
        let p = r#"{"event_name":"checkout","user_data":{"em":["aa","bb"],"ph":["cc"],"client_ip_address":"1.2.3.4"}}"#;
        let s = scrub_identifiers(p, &["AA".into(), "cc".into()], false).unwrap();
        assert!(!s.payload.contains("\"aa\"") && !s.payload.contains("cc"));
        assert!(s.payload.contains("bb") && s.payload.contains("1.2.3.4"));
        assert!(s.sendable);
        assert!(scrub_identifiers(p, &["zz".into()], false).is_none());
        let all = scrub_identifiers(p, &[], true).unwrap();
        assert!(!all.payload.contains("1.2.3.4") && !all.payload.contains("bb"));
        assert!(!all.sendable);
    }
}
