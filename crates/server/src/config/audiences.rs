//! `[audiences]`: whether `serve` keeps the Pinterest audiences in sync and how often, the
//! segments, the list update batch size, and the Actalike audience.

use super::{ConfigError, invalid};
use pincapi_core::audience::Segment;
use serde::{Deserialize, Serialize};

/// The `[audiences]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudiencesConfig {
    /// `serve` runs the sync every `sync_interval_secs` (it needs `pinterest_oauth_token`).
    pub enabled: bool,
    /// Seconds between two scheduled syncs.
    pub sync_interval_secs: u64,
    /// Hashed members per customer-list request (create, ADD or REMOVE).
    pub batch_size: usize,
    /// How far before its checkpoint each scan of the stored events starts again, seconds:
    /// longer than a purchase's hold, so a late merge into a stored event is read.
    pub scan_overlap_secs: u64,
    /// The segments; empty means the built-in ones (visitors 30 days, product viewers 30,
    /// cart abandoners 7, purchasers 180).
    pub segments: Vec<Segment>,
    /// The segment whose email audience seeds an `ACTALIKE` audience (`""`: no Actalike).
    pub actalike_seed: Option<String>,
    /// `US`, `CA` or `GB`.
    pub actalike_country: String,
    /// 1..=10: the Actalike's size as a share of the country's Pinterest users.
    pub actalike_percentage: u8,
}

/// Pinterest states no per-request record limit; 10,000 SHA-256 hashes make a body of
/// about 650 KB, well under the 2 MB request cap reported for its API, and bound what one
/// failed request has to repeat.
pub const DEFAULT_BATCH_SIZE: usize = 10_000;

impl Default for AudiencesConfig {
    fn default() -> Self {
        AudiencesConfig {
            enabled: false,
            sync_interval_secs: 3600,
            batch_size: DEFAULT_BATCH_SIZE,
            scan_overlap_secs: 900,
            segments: Vec::new(),
            actalike_seed: Some("purchasers".to_owned()),
            actalike_country: "US".to_owned(),
            actalike_percentage: 5,
        }
    }
}

impl AudiencesConfig {
    /// The segments in effect: the configured ones, or the built-in ones.
    pub fn segments(&self) -> Vec<Segment> {
        if self.segments.is_empty() {
            Segment::defaults()
        } else {
            self.segments.clone()
        }
    }

    /// The segment that seeds the Actalike, if any (an empty name turns it off).
    pub fn actalike_seed(&self) -> Option<&str> {
        self.actalike_seed.as_deref().filter(|s| !s.is_empty())
    }

    /// Checks what the types cannot; errors start with the key's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sync_interval_secs == 0 {
            invalid!("audiences.sync_interval_secs: must be at least 1");
        }
        if !(1..=50_000).contains(&self.batch_size) {
            invalid!("audiences.batch_size: must be 1..=50000");
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            if let Err(e) = s.validate() {
                invalid!("audiences.segments[{i}].{e}");
            }
            if !names.insert(s.name.clone()) {
                invalid!("audiences.segments[{i}].name: {} is defined twice", s.name);
            }
        }
        if let Some(seed) = self.actalike_seed()
            && !self.segments().iter().any(|s| s.name == seed)
        {
            invalid!(
                "audiences.actalike_seed: no segment is named {seed} (set it to \"\" for no Actalike)"
            );
        }
        if !matches!(self.actalike_country.as_str(), "US" | "CA" | "GB") {
            invalid!(
                "audiences.actalike_country: must be US, CA or GB (Pinterest's Actalike countries)"
            );
        }
        if !(1..=10).contains(&self.actalike_percentage) {
            invalid!("audiences.actalike_percentage: must be 1..=10");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml;

    #[test]
    fn segments_come_from_toml_and_bad_ones_name_their_key() {
        let c = from_toml(
            r#"
            [audiences]
            enabled = true
            [[audiences.segments]]
            name = "big_spenders"
            rule = "purchased"
            days = 90
            min_value = "150.00"
            [[audiences.segments]]
            name = "vase_viewers"
            rule = "viewed"
            days = 14
            products = ["8003"]
            visitor_audience = false
            "#,
        )
        .unwrap();
        let a = &c.audiences;
        assert_eq!(a.segments().len(), 2);
        assert_eq!(a.segments()[0].min_value.as_deref(), Some("150.00"));
        // The Actalike's default seed is a built-in segment these replace.
        let err = a.validate().unwrap_err().to_string();
        assert!(err.starts_with("audiences.actalike_seed:"), "{err}");
        let mut off = a.clone();
        off.actalike_seed = Some(String::new());
        off.validate().unwrap();

        let c = from_toml("[audiences]\nactalike_seed = \"purchasers\"\nactalike_percentage = 11")
            .unwrap();
        let err = c.audiences.validate().unwrap_err().to_string();
        assert!(err.starts_with("audiences.actalike_percentage:"), "{err}");

        let c = from_toml("[[audiences.segments]]\nname = \"Bad\"\nrule = \"visited\"\ndays = 3")
            .unwrap();
        let err = c.audiences.validate().unwrap_err().to_string();
        assert!(err.starts_with("audiences.segments[0].name:"), "{err}");
        assert!(
            from_toml("[[audiences.segments]]\nname = \"x\"\nrule = \"bought\"\ndays = 3").is_err()
        );
    }

    #[test]
    fn the_built_in_segments_apply_when_none_are_configured() {
        let c = from_toml("").unwrap();
        let names: Vec<String> = c.audiences.segments().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "visitors",
                "product_viewers",
                "cart_abandoners",
                "purchasers"
            ]
        );
        c.audiences.validate().unwrap();
    }
}
