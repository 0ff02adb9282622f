//! Requests to addresses a user named: storefront pages for `pincapi tag check` and
//! `pincapi audit`, and everything a browser loads while it checks them.
//!
//! The rule is one [`AddressPolicy`]: private, loopback, link-local and the IPv6 forms that
//! carry them are refused unless allowed (all of them with `--allow-private`, named networks
//! with `--allow-address`). It is checked after DNS resolution, on every redirect, and the
//! connection goes to the address that was checked, so a public name cannot be pointed at the
//! internal network between the check and the request. [`proxy`] applies the same rule to
//! every request a browser makes.

pub mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail};
use reqwest::Url;

use crate::config::browser::{Cidr, canonical};

/// Largest page or script read, bytes.
pub const MAX_FETCH_BYTES: usize = 5 * 1024 * 1024;
/// Redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 5;

/// The address options of the commands that fetch storefront pages (`tag check`, `audit`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AddressArgs {
    /// Allow private, loopback and link-local addresses (a staging shop, the demo).
    #[arg(long)]
    pub allow_private: bool,
    /// Allow this private network only (an address or CIDR; repeatable), everything else
    /// private stays refused: a staging shop on 10.0.0.5 without opening the rest.
    #[arg(long = "allow-address", value_name = "CIDR")]
    pub allow_address: Vec<Cidr>,
}

impl AddressArgs {
    /// The address rule these options make.
    pub fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_private: self.allow_private,
            allowed: self.allow_address.clone(),
        }
    }
}

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Every address, private ones included.
    pub allow_private: bool,
    /// Private networks reachable anyway (a staging shop on 10.0.0.5).
    pub allowed: Vec<Cidr>,
}

impl AddressPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_private(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }

    /// Resolves `host` (a name or an address literal, brackets allowed) and checks every
    /// address it has; returns the first. The error names the host and the address refused.
    pub async fn resolve(&self, host: &str, port: u16) -> anyhow::Result<SocketAddr> {
        let addrs = lookup(host, port).await?;
        if let Some(why) = self.refusal(host, &addrs) {
            bail!("{why}; pass --allow-private (or --allow-address) to reach it anyway");
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| anyhow!("{host} has no address"))
    }

    /// Why `host`, resolved to `addrs`, may not be reached; `None` when every address may.
    pub fn refusal(&self, host: &str, addrs: &[SocketAddr]) -> Option<String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let bad = addrs.iter().find(|a| !self.permits(a.ip()))?;
        let what = if bare == bad.ip().to_string() {
            bare.to_owned()
        } else {
            format!("{host} ({})", bad.ip())
        };
        Some(format!(
            "{what} is a private, loopback or link-local address"
        ))
    }
}

/// The addresses of `host`: itself when it is an address literal (brackets allowed).
pub async fn lookup(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| anyhow!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{host} has no address");
    }
    Ok(addrs)
}

/// Fetches pages under an [`AddressPolicy`].
#[derive(Debug, Clone, Default)]
pub struct Fetcher {
    pub policy: AddressPolicy,
}

/// A fetched page.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL after redirects.
    pub url: Url,
    pub status: u16,
    pub text: String,
}

impl Fetcher {
    /// GETs `url`, following redirects, each hop checked; returns the final URL and text.
    /// A status other than 2xx is an error.
    pub async fn get(&self, url: Url) -> anyhow::Result<(Url, String)> {
        let f = self.fetch(url.clone()).await?;
        if !(200..300).contains(&f.status) {
            bail!("could not fetch {url}: HTTP {}", f.status);
        }
        Ok((f.url, f.text))
    }

    /// GETs `url`, following redirects, each hop checked; any final status is returned.
    pub async fn fetch(&self, mut url: Url) -> anyhow::Result<Fetched> {
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                bail!("refused {url}: only http and https pages can be fetched");
            }
            let host = url
                .host_str()
                .ok_or_else(|| anyhow!("refused {url}: no host"))?
                .to_owned();
            let port = url.port_or_known_default().unwrap_or(80);
            let addr = self
                .policy
                .resolve(&host, port)
                .await
                .map_err(|e| anyhow!("refused {url}: {e:#}"))?;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .user_agent(concat!("pincapi-tag-check/", env!("CARGO_PKG_VERSION")))
                // Connect to the address just checked, whatever DNS says a moment later.
                .resolve(&host, addr)
                .build()?;
            let mut resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| anyhow!("could not fetch {url}: {e}"))?;
            if resp.status().is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| anyhow!("could not fetch {url}: a redirect without Location"))?;
                url = url
                    .join(location)
                    .map_err(|e| anyhow!("could not fetch {url}: bad redirect: {e}"))?;
                continue;
            }
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_FETCH_BYTES {
                    bail!("could not fetch {url}: larger than {MAX_FETCH_BYTES} bytes");
                }
            }
            return Ok(Fetched {
                url,
                status,
                text: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        bail!("could not fetch: more than {MAX_REDIRECTS} redirects")
    }
}

/// Addresses a storefront check must not reach unless allowed: private, loopback,
/// link-local (cloud metadata lives there), unique-local and site-local, shared (CGNAT),
/// unspecified, broadcast and multicast; and an IPv6 address that carries such an IPv4
/// address (IPv4-mapped, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`), since it reaches the same host.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let carried = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[..6] == [0; 6] && carried(s[6], s[7]))
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && carried(s[6], s[7]))
                || (s[0] == 0x2002 && carried(s[1], s[2]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_link_local_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "fec0::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.9",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn an_allowed_network_opens_only_itself() {
        let policy = AddressPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        };
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("127.0.0.2".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        assert!(policy.permits("8.8.8.8".parse().unwrap()));
    }
}
