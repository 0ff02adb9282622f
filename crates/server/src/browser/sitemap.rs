//! The demo storefront's sitemaps, in the shape Shopify serves them: `/demo/shop/sitemap.xml`
//! is a sitemap index naming `sitemap_products_1.xml` and `sitemap_pages_1.xml`, each a
//! `urlset` of absolute page URLs. `pincapi audit` reads them to find pages to check.
//!
//! With `?planted=1` the same sitemaps list pages that each carry one problem an audit must
//! find: a product without the Tag, one with the Tag twice, one with a wrong Tag id, a page
//! where Pinterest's Shopify app's Tag sits beside tag.js and one with a Google Tag Manager
//! container; the first product stays clean.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::storefront::{PRODUCTS, SHOP_PATH, not_found};
use crate::state::AppState;

/// The problem planted on each product of `?planted=1`, in catalog order.
pub const PLANTED_PRODUCTS: [&str; 4] = ["pincapi", "missing", "duplicate", "wrong-id"];
/// The other pages of `?planted=1`: path under the shop, and the `tag` variant.
pub const PLANTED_PAGES: [(&str, &str); 2] = [("", "pinterest-app"), ("/cart", "gtm")];

#[derive(Debug, Deserialize)]
struct SitemapQuery {
    #[serde(default)]
    planted: Option<String>,
}

impl SitemapQuery {
    fn planted(&self) -> bool {
        self.planted
            .as_deref()
            .is_some_and(|p| p == "1" || p == "true")
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo/shop/sitemap.xml", get(index))
        .route("/demo/shop/sitemap_products_1.xml", get(products))
        .route("/demo/shop/sitemap_pages_1.xml", get(pages))
}

/// `http://host` of the request, or the configured public URL.
fn origin(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = state.config.public_url.as_deref() {
        return public.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn xml(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}

fn suffix(q: &SitemapQuery) -> &'static str {
    if q.planted() { "?planted=1" } else { "" }
}

async fn index(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SitemapQuery>,
) -> Response {
    if !s.config.browser.demo_storefront {
        return not_found();
    }
    let base = format!("{}{SHOP_PATH}", origin(&s, &headers));
    let planted = suffix(&q).replace('&', "&amp;");
    xml(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n\
         <sitemap><loc>{base}/sitemap_products_1.xml{planted}</loc></sitemap>\n\
         <sitemap><loc>{base}/sitemap_pages_1.xml{planted}</loc></sitemap>\n\
         </sitemapindex>\n"
    ))
}

fn urlset(locs: &[String]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for l in locs {
        out.push_str(&format!(
            "<url><loc>{}</loc><changefreq>daily</changefreq></url>\n",
            l.replace('&', "&amp;")
        ));
    }
    out.push_str("</urlset>\n");
    out
}

async fn products(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SitemapQuery>,
) -> Response {
    if !s.config.browser.demo_storefront {
        return not_found();
    }
    let base = format!("{}{SHOP_PATH}", origin(&s, &headers));
    let locs: Vec<String> = PRODUCTS
        .iter()
        .zip(PLANTED_PRODUCTS)
        .map(|(p, variant)| {
            if q.planted() && variant != "pincapi" {
                format!("{base}/products/{}?tag={variant}", p.id)
            } else {
                format!("{base}/products/{}", p.id)
            }
        })
        .collect();
    xml(urlset(&locs))
}

async fn pages(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SitemapQuery>,
) -> Response {
    if !s.config.browser.demo_storefront {
        return not_found();
    }
    let base = format!("{}{SHOP_PATH}", origin(&s, &headers));
    let locs: Vec<String> = PLANTED_PAGES
        .iter()
        .map(|(path, variant)| {
            if q.planted() {
                format!("{base}{path}?tag={variant}")
            } else {
                format!("{base}{path}")
            }
        })
        .collect();
    xml(urlset(&locs))
}
