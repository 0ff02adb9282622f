//! `[browser]` configuration: the first-party tag script, the collector's limits and the demo
//! storefront. The Tag id (`tag_id`) and the collector's CORS origins (`allowed_origins`) are
//! top-level keys of [`crate::config::Config`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pinterest's Tag script, loaded by tag.js unless `browser.tag_script_url` says otherwise.
pub const PINTEREST_CORE_JS: &str = "https://s.pinimg.com/ct/core.js";

/// Browser-side settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    /// Proxies (CIDRs, e.g. `10.0.0.0/8`, or single addresses) whose `X-Forwarded-For` is
    /// believed when finding the client's IP. A list, or one comma-separated string
    /// (`PINCAPI_BROWSER__TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1`). Empty: the peer address is
    /// the client.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<Cidr>,
    /// Collector requests per client IP per minute (bursts up to the same number).
    pub rate_limit_per_minute: u32,
    /// Largest collector request body, bytes.
    pub max_body_bytes: usize,
    /// Replaced by the top-level `public_url`; refused when set.
    #[serde(skip_serializing)]
    pub public_url: Option<String>,
    /// The Pinterest Tag script tag.js loads. Relative URLs resolve against the gateway
    /// (tests and the demo point it at the local stub `/demo/core-stub.js`).
    pub tag_script_url: String,
    /// Lifetime of the first-party `_epik` cookie tag.js writes from a landing URL, days.
    pub epik_cookie_days: u32,
    /// Domain attribute of the `_epik` cookie (e.g. `.shop.example` to share it with a
    /// checkout subdomain). Unset: the page's host only.
    pub cookie_domain: Option<String>,
    /// Wait for `pincapi('consent', true)` before loading the Tag or sending anything with
    /// identifiers. Unset (false): consent is assumed until `pincapi('consent', false)`.
    pub require_consent: bool,
    /// Serve the demo storefront under `/demo/shop` and the recording Tag stub at
    /// `/demo/core-stub.js`. For `pincapi demo` and tests; off in production.
    pub demo_storefront: bool,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            trusted_proxies: Vec::new(),
            // Generous: shoppers behind one carrier NAT share an address, and each page view
            // sends one to three events.
            rate_limit_per_minute: 300,
            // A keepalive fetch carries at most 64 KiB; a sendBeacon about the same.
            max_body_bytes: 64 * 1024,
            public_url: None,
            tag_script_url: PINTEREST_CORE_JS.to_owned(),
            epik_cookie_days: 365,
            cookie_domain: None,
            require_consent: false,
            demo_storefront: false,
        }
    }
}

impl BrowserConfig {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`)
    /// count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A list of CIDRs, or one comma-separated string of them (how environment variables arrive).
fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(v) => v,
        Form::One(s) => s.split(',').map(str::to_owned).collect(),
    };
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match_v4_v6_and_mapped_addresses() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten".parse::<Cidr>().is_err());
    }

    #[test]
    fn trusted_proxies_load_from_a_list_or_a_comma_separated_string() {
        let c = crate::config::from_toml("[browser]\ntrusted_proxies = \"10.0.0.0/8, 127.0.0.1\"")
            .unwrap();
        assert_eq!(c.browser.trusted_proxies.len(), 2);
        let c =
            crate::config::from_toml("[browser]\ntrusted_proxies = [\"192.168.0.0/16\"]").unwrap();
        assert!(c.browser.is_trusted_proxy("192.168.1.1".parse().unwrap()));
        let err =
            crate::config::from_toml("[browser]\ntrusted_proxies = \"10.0.0.0/99\"").unwrap_err();
        assert!(format!("{err:#}").contains("prefix"), "{err:#}");
    }
}
