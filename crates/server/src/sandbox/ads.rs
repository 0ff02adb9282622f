//! State shared by the Ads API stand-ins (customer lists and audiences): what was created,
//! each list's hashed records (so tests can read exactly what "Pinterest" holds), and the
//! scripted failures of Ads API writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FaultStep;
use super::api::ApiError;

/// Pinterest needs this many matched members before a list or audience can be used; below
/// it the status is `TOO_SMALL` (spec: `CustomerList.status`, `Audience.status`). The sandbox
/// counts every record as matched.
pub(super) const MIN_MATCHED: usize = 100;

/// A customer list as the sandbox holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxList {
    pub id: String,
    pub ad_account_id: String,
    pub name: String,
    pub list_type: String,
    /// The records the list holds now, sorted.
    pub records: BTreeSet<String>,
    pub num_batches: u64,
    pub num_uploaded_user_records: u64,
    pub num_removed_user_records: u64,
    pub created_time: i64,
    pub updated_time: i64,
}

impl SandboxList {
    pub(super) fn status(&self) -> &'static str {
        if self.records.len() < MIN_MATCHED {
            "TOO_SMALL"
        } else {
            "READY"
        }
    }
}

/// An audience as the sandbox holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxAudience {
    pub id: String,
    pub ad_account_id: String,
    pub name: String,
    pub audience_type: String,
    pub description: Option<String>,
    pub rule: Value,
    pub created_timestamp: i64,
    pub updated_timestamp: i64,
    /// Set by an update with `operation_type: REMOVE`.
    pub removed: bool,
}

#[derive(Debug, Default)]
pub(super) struct AdsState {
    next_id: u64,
    pub(super) lists: BTreeMap<String, SandboxList>,
    pub(super) audiences: BTreeMap<String, SandboxAudience>,
    write_faults: VecDeque<FaultStep>,
}

impl AdsState {
    /// A fresh id of digits, as Pinterest's.
    pub(super) fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}", 2_542_620_000_000 + self.next_id)
    }

    /// The scripted answer of the next Ads API write (create or update), if any: a 2xx step
    /// means "process normally".
    pub(super) fn next_write_fault(&mut self) -> Option<ApiError> {
        let step = self.write_faults.pop_front()?;
        (!(200..300).contains(&step.status)).then(|| {
            ApiError::for_status(step.status, step.message).with_retry_after(step.retry_after)
        })
    }

    /// Forgets every list, audience and scripted failure; ids keep counting up, so an id
    /// handed out before is never reused (as at Pinterest).
    pub(super) fn clear(&mut self) {
        *self = AdsState {
            next_id: self.next_id,
            ..AdsState::default()
        };
    }

    pub(super) fn set_write_faults(&mut self, steps: Vec<FaultStep>) {
        self.write_faults = steps.into();
    }

    /// Size and status of an audience, as Pinterest would report them.
    pub(super) fn audience_size(&self, a: &SandboxAudience) -> (Option<usize>, &'static str) {
        if a.audience_type == "CUSTOMER_LIST" {
            let size = a
                .rule
                .get("customer_list_id")
                .and_then(Value::as_str)
                .and_then(|id| self.lists.get(id))
                .map_or(0, |l| l.records.len());
            let status = if size < MIN_MATCHED {
                "TOO_SMALL"
            } else {
                "READY"
            };
            (Some(size), status)
        } else {
            // No Tag traffic reaches the sandbox, so rule audiences never fill.
            (None, "INITIALIZING")
        }
    }
}

/// Unix seconds now.
pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `page_size` (1..=250, default 25) and `bookmark` (an offset we hand out) of a list call.
pub(super) fn page(query: Option<&str>) -> Result<(usize, usize), ApiError> {
    let mut size = 25;
    let mut offset = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "page_size" => {
                size = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=250).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request("Invalid page_size: it must be 1 to 250.")
                    })?;
            }
            "bookmark" => {
                offset = v
                    .parse()
                    .map_err(|_| ApiError::bad_request("Invalid bookmark."))?;
            }
            _ => {}
        }
    }
    Ok((size, offset))
}

/// `{items, bookmark}` of one page of `all`.
pub(super) fn paginated(all: Vec<Value>, size: usize, offset: usize) -> Value {
    let end = (offset + size).min(all.len());
    let items: Vec<Value> = all.get(offset..end).unwrap_or_default().to_vec();
    let bookmark = (end < all.len()).then(|| end.to_string());
    serde_json::json!({"items": items, "bookmark": bookmark})
}

/// A digits-only path id (`ad_account_id`, `customer_list_id`, `audience_id`).
pub(super) fn digits(name: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "Invalid {name}: it must be 1 to 18 digits."
        )));
    }
    Ok(())
}

/// The JSON object of a request body.
pub(super) fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON body: {e}."))),
    }
}
