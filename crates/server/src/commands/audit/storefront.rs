//! The storefront part of the audit: the home page and up to `--pages` product, collection
//! and other pages from the shop's sitemap (Shopify serves a sitemap index at `/sitemap.xml`
//! naming `sitemap_products_1.xml`, `sitemap_collections_1.xml`, ...), each checked as
//! `pincapi tag check` checks it, every fetch under the same address rule.

use reqwest::Url;
use serde::Serialize;

use super::{AuditArgs, Finding};
use crate::commands::egress::{AddressPolicy, Fetcher};
use crate::commands::tag_check::{self, CheckArgs, PageReport};

/// Child sitemaps read at most (a shop has a handful).
const MAX_SITEMAPS: usize = 10;

/// What the storefront part found.
#[derive(Debug, Clone, Serialize)]
pub struct StorefrontSection {
    pub site: String,
    /// The sitemap read, and whether it could be.
    pub sitemap: String,
    pub sitemap_read: bool,
    /// Every page checked, home first.
    pub pages: Vec<PageReport>,
    /// Whether any page passes the buyer's email to the Tag.
    pub enhanced_match: bool,
}

/// The fix of each page check, as the audit states it.
fn fix_of(check: &str) -> &'static str {
    match check {
        "tag_missing" | "browser_no_load" => {
            "add pincapi's two-line snippet to the theme (README, \"The Pinterest Tag\"); pincapi tag check URL confirms it"
        }
        "tag_duplicate" | "browser_double_load" | "browser_event_twice" => {
            "keep one Tag: remove the theme's base code or the other app's Tag; pincapi tag check --browser URL confirms it"
        }
        "tag_wrong_id" | "browser_wrong_id" => {
            "use the ad account's Tag id: set tag_id (PINCAPI_TAG_ID) and replace the id in the theme"
        }
        "pinterest_app_tag" => {
            "run one Tag: turn off the Tag of Pinterest's Shopify app or remove pincapi's tag.js (README, \"Beside Pinterest's Shopify app\")"
        }
        "tag_manager" => {
            "check the GTM container for a Pinterest Tag template; remove it or pincapi's tag.js"
        }
        "event_without_event_id" => {
            "fire events through pincapi('track', ...) so each carries the event_id CAPI sends"
        }
        "no_enhanced_match" => {
            "pass the buyer's email: pincapi('load', {em: email}) on pages that know it"
        }
        "browser_beacon_missing" => {
            "check browser.allowed_origins and that /collect is reachable from the shop"
        }
        "browser_private_address" => "remove the page's requests to internal addresses",
        "page_unreachable" => "check the URL; pass --allow-private for a staging shop",
        _ => "see pincapi tag check --browser URL",
    }
}

/// Checks the home page and the pages of the sitemap.
pub async fn audit(
    args: &AuditArgs,
    policy: &AddressPolicy,
    expected: Option<&str>,
    findings: &mut Vec<Finding>,
) -> anyhow::Result<StorefrontSection> {
    let site =
        Url::parse(&args.site).map_err(|e| anyhow::anyhow!("--site {:?}: {e}", args.site))?;
    let sitemap = match &args.sitemap {
        Some(s) => s.clone(),
        None => sitemap_beside(&site).to_string(),
    };
    let fetcher = Fetcher {
        policy: policy.clone(),
    };
    let (pages, sitemap_read) = match Url::parse(&sitemap) {
        Ok(url) => match discover(&fetcher, url, args.pages).await {
            Ok(pages) => (pages, true),
            Err(e) => {
                findings.push(Finding::new(
                    "sitemap_unreadable",
                    "warning",
                    &sitemap,
                    format!(
                        "the sitemap could not be read ({e:#}); only the home page was checked"
                    ),
                    "pass --sitemap URL",
                ));
                (Vec::new(), false)
            }
        },
        Err(e) => anyhow::bail!("--sitemap {sitemap:?}: {e}"),
    };
    let mut urls = vec![site.to_string()];
    for p in pages {
        if !urls.contains(&p) {
            urls.push(p);
        }
    }
    let check = CheckArgs {
        urls,
        browser: args.browser,
        addresses: args.addresses.clone(),
        tag_id: expected.map(str::to_owned),
        config: None,
        json: true,
        chromium: None,
        chromedriver: None,
    };
    let reports = tag_check::check_pages(&check, expected).await?;
    let enhanced_match = reports.iter().any(|r| r.enhanced_match);
    for r in &reports {
        let mut any = false;
        for p in &r.problems {
            // Enhanced match is judged once for the whole site, below: a product page rarely
            // knows the buyer's email.
            if p.check == "no_enhanced_match" || p.check == "tag_id_unchecked" {
                continue;
            }
            any = true;
            findings.push(Finding::new(
                p.check,
                p.severity,
                &r.url,
                &p.message,
                fix_of(p.check),
            ));
        }
        if !any {
            findings.push(Finding::new(
                "tag",
                "ok",
                &r.url,
                "the Pinterest Tag is on the page once, with this shop's Tag id",
                "",
            ));
        }
    }
    let site_name = site.to_string();
    if enhanced_match {
        findings.push(Finding::new(
            "enhanced_match",
            "ok",
            &site_name,
            "a page passes the buyer's email to the Tag (enhanced match)",
            "",
        ));
    } else {
        findings.push(Finding::new(
            "no_enhanced_match",
            "warning",
            &site_name,
            "no page checked passes the buyer's email to the Tag: its conversions match fewer Pinterest users",
            fix_of("no_enhanced_match"),
        ));
    }
    Ok(StorefrontSection {
        site: site_name,
        sitemap,
        sitemap_read,
        pages: reports,
        enhanced_match,
    })
}

/// `sitemap.xml` beside the site's URL: `https://shop/` → `https://shop/sitemap.xml`,
/// `http://host/demo/shop` → `http://host/demo/shop/sitemap.xml`.
fn sitemap_beside(site: &Url) -> Url {
    let mut base = site.clone();
    base.set_query(None);
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("sitemap.xml").unwrap_or(base)
}

/// The page URLs of a sitemap (following a sitemap index one level): products first, then
/// collections, then the rest, at most `limit`.
async fn discover(fetcher: &Fetcher, sitemap: Url, limit: usize) -> anyhow::Result<Vec<String>> {
    let (_, text) = fetcher.get(sitemap).await?;
    let mut pages = Vec::new();
    if text.contains("<sitemapindex") {
        let mut children = locs(&text);
        // Products and collections are where the Tag's events fire.
        children.sort_by_key(|c| {
            if c.contains("products") {
                0
            } else if c.contains("collections") {
                1
            } else {
                2
            }
        });
        for child in children.into_iter().take(MAX_SITEMAPS) {
            let Ok(url) = Url::parse(&child) else {
                continue;
            };
            if let Ok((_, t)) = fetcher.get(url).await {
                pages.extend(locs(&t));
            }
            if pages.len() >= limit {
                break;
            }
        }
    } else {
        pages = locs(&text);
    }
    pages.truncate(limit);
    Ok(pages)
}

/// The `<loc>` values of a sitemap, entities decoded.
fn locs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<loc>") {
        let after = &rest[start + 5..];
        let Some(end) = after.find("</loc>") else {
            break;
        };
        let raw = after[..end].trim();
        let raw = raw
            .strip_prefix("<![CDATA[")
            .and_then(|r| r.strip_suffix("]]>"))
            .unwrap_or(raw);
        out.push(
            raw.replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sitemap_sits_beside_the_site() {
        let u = |s: &str| sitemap_beside(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            u("https://shop.example"),
            "https://shop.example/sitemap.xml"
        );
        assert_eq!(
            u("https://shop.example/?x=1"),
            "https://shop.example/sitemap.xml"
        );
        assert_eq!(
            u("http://h:8/demo/shop"),
            "http://h:8/demo/shop/sitemap.xml"
        );
    }

    #[test]
    fn locs_are_read_with_entities_and_cdata() {
        let xml = "<urlset><url><loc>https://a/p/1?x=1&amp;y=2</loc></url>\
                   <url><loc><![CDATA[https://a/p/2]]></loc></url></urlset>";
        assert_eq!(locs(xml), vec!["https://a/p/1?x=1&y=2", "https://a/p/2"]);
    }
}
