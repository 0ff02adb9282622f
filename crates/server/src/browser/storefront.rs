//! The demo storefront (`/demo/shop/...`) and the recording Tag stub (`/demo/core-stub.js`),
//! served only with `browser.demo_storefront` on: for `pincapi demo` and the browser tests.
//!
//! Four pages like a small shop's: home, product, cart and thank-you, with the event code a
//! theme would carry, installed through `/tag.js`. `?tag=` renders a page with another Tag
//! installation, so `pincapi tag check` has real pages to judge: `pincapi` (the default),
//! `base` (Pinterest's own base code), `duplicate` (a theme's base code plus tag.js),
//! `wrong-id` (base code with another Tag id), `missing`, `pinterest-app` (the Tag of
//! Pinterest's Shopify app, `np: 'shopify'`, beside tag.js) and `gtm` (tag.js with a Google Tag
//! Manager container). `/demo/shop/sitemap.xml` lists the pages the way Shopify's sitemap
//! does; with `?planted=1` it lists pages with each of these problems, for audits
//! (`sitemap.rs`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::config::browser::BrowserConfig;
use crate::state::AppState;

const PAGE: &str = include_str!("../../assets/browser/storefront/page.html");
const SHOP_JS: &str = include_str!("../../assets/browser/storefront/shop.js");
const SHOP_CSS: &str = include_str!("../../assets/browser/storefront/shop.css");
const CORE_STUB: &str = include_str!("../../assets/browser/core-stub.js");

/// Where the storefront starts.
pub const SHOP_PATH: &str = "/demo/shop";
/// The recording stand-in for Pinterest's core.js.
pub const CORE_STUB_PATH: &str = "/demo/core-stub.js";
/// The Tag id `pincapi demo` configures (any digits do: the demo's Tag is the stub).
pub const DEMO_TAG_ID: &str = "2612345678901";

/// Browser settings for `pincapi demo`: the storefront on, and the Tag pointed at the local
/// stub, so clicking through the demo sends nothing to Pinterest.
pub fn demo_browser_config() -> BrowserConfig {
    BrowserConfig {
        demo_storefront: true,
        tag_script_url: CORE_STUB_PATH.to_owned(),
        ..BrowserConfig::default()
    }
}

/// The Tag id the `wrong-id` installation uses (or [`OTHER_TAG_ID`] if that is the real one).
pub const WRONG_TAG_ID: &str = "2619999999999";
const OTHER_TAG_ID: &str = "2618888888888";

/// One product of the demo catalog.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    pub id: &'static str,
    pub name: &'static str,
    pub price: &'static str,
    pub category: &'static str,
    pub brand: &'static str,
}

/// The demo catalog.
pub const PRODUCTS: [Product; 4] = [
    Product {
        id: "8001",
        name: "Rose Glow Serum",
        price: "24.00",
        category: "Beauty",
        brand: "Glow",
    },
    Product {
        id: "8002",
        name: "Linen Throw",
        price: "89.50",
        category: "Home",
        brand: "Loom",
    },
    Product {
        id: "8003",
        name: "Ceramic Vase",
        price: "42.00",
        category: "Home",
        brand: "Kiln",
    },
    Product {
        id: "8004",
        name: "Silk Scarf",
        price: "55.00",
        category: "Accessories",
        brand: "Silk & Co",
    },
];

/// How a page installs the Pinterest Tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// tag.js, the way pincapi is meant to be installed.
    #[default]
    Pincapi,
    /// Pinterest's base code pasted into the theme, with the configured Tag id.
    Base,
    /// A theme's base code and tag.js on one page: every event counted twice.
    Duplicate,
    /// Pinterest's base code with another Tag id.
    WrongId,
    /// No Tag at all.
    Missing,
    /// Pinterest's Shopify app's Tag beside tag.js.
    PinterestApp,
    /// tag.js, and a Google Tag Manager container that could hold another Tag.
    Gtm,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Pincapi => "pincapi tag.js",
            Variant::Base => "Pinterest base code",
            Variant::Duplicate => "duplicate (theme base code and tag.js)",
            Variant::WrongId => "base code with a wrong tag id",
            Variant::Missing => "missing",
            Variant::PinterestApp => "Pinterest's Shopify app's Tag beside tag.js",
            Variant::Gtm => "tag.js and a Google Tag Manager container",
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    tag: Variant,
    /// `denied`: the page's consent banner was refused (`pincapi('consent', false)`).
    #[serde(default)]
    consent: Option<String>,
}

impl PageQuery {
    fn denied(&self) -> bool {
        self.consent.as_deref() == Some("denied")
    }
}

/// The storefront's routes; each answers 404 unless `browser.demo_storefront` is on.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(SHOP_PATH, get(home))
        .route("/demo/shop/products/{id}", get(product))
        .route("/demo/shop/cart", get(cart))
        .route("/demo/shop/thank-you", get(thank_you))
        .route("/demo/shop/shop.js", get(shop_js))
        .route("/demo/shop/shop.css", get(shop_css))
        .route(CORE_STUB_PATH, get(core_stub))
        .merge(super::sitemap::routes())
}

async fn home(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let items: String = PRODUCTS
        .iter()
        .map(|p| {
            format!(
                "<li><a href=\"/demo/shop/products/{}\">{}</a><br>${}</li>",
                p.id,
                escape(p.name),
                p.price
            )
        })
        .collect();
    let main = format!("<h1>Products</h1>\n<ul class=\"products\">{items}</ul>");
    page(&s, &q, "Products", &main, &Event::page_visit(None))
}

async fn product(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some(p) = PRODUCTS.iter().find(|p| p.id == id) else {
        return not_found();
    };
    let data = serde_json::json!({
        "id": p.id, "name": p.name, "price": p.price, "category": p.category, "brand": p.brand,
    });
    let main = format!(
        "<h1>{name}</h1>\n<p>{brand} · {category}</p>\n<p class=\"price\">${price}</p>\n\
         <button id=\"add-to-cart\" data-product=\"{data}\">Add to cart</button>\n\
         <p id=\"added\" aria-live=\"polite\"></p>\n<p><a href=\"/demo/shop/cart\">View cart</a></p>",
        name = escape(p.name),
        brand = escape(p.brand),
        category = escape(p.category),
        price = p.price,
        data = escape(&data.to_string()),
    );
    page(&s, &q, p.name, &main, &Event::page_visit(Some(p)))
}

async fn cart(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let main = "<h1>Cart</h1>\n<div id=\"cart\"></div>\n\
        <form id=\"checkout\" hidden>\n<p><label>Email for the receipt<br>\
        <input id=\"email\" type=\"email\" required value=\"jane.doe@example.com\"></label></p>\n\
        <button id=\"place-order\" type=\"submit\">Place order</button>\n</form>";
    page(&s, &q, "Cart", main, &Event::page_visit(None))
}

async fn thank_you(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let main = "<h1>Thank you!</h1>\n<div id=\"thanks\"></div>\n<p>The Tag saw this purchase \
        now. The gateway holds its copy for <code>ingest.merge_window_secs</code> (60 s by default) \
        so that Shopify's order webhook, which knows the buyer's address, can join it; then \
        Pinterest gets one checkout.</p>";
    page(&s, &q, "Thank you", main, &Event::Checkout)
}

async fn shop_js(State(s): State<AppState>) -> Response {
    asset(&s, SHOP_JS, "text/javascript; charset=utf-8")
}

async fn shop_css(State(s): State<AppState>) -> Response {
    asset(&s, SHOP_CSS, "text/css; charset=utf-8")
}

async fn core_stub(State(s): State<AppState>) -> Response {
    asset(&s, CORE_STUB, "text/javascript; charset=utf-8")
}

/// The event code a page carries.
enum Event {
    PageVisit(Option<Product>),
    /// The thank-you page: the order comes from the browser's session (the demo's checkout).
    Checkout,
}

impl Event {
    fn page_visit(p: Option<&Product>) -> Event {
        Event::PageVisit(p.copied())
    }

    /// The event code for a page with the `variant` installation: `pincapi(...)` calls where
    /// tag.js is present, the Tag's own `pintrk(...)` calls otherwise.
    fn code(&self, variant: Variant) -> String {
        let pincapi = matches!(
            variant,
            Variant::Pincapi | Variant::Duplicate | Variant::PinterestApp | Variant::Gtm
        );
        let mut out = String::new();
        if variant == Variant::Duplicate {
            // What the theme's own snippet fires next to the app: a second page visit,
            // without an event id.
            out.push_str("<script>pintrk('track', 'pagevisit');</script>\n");
        }
        match self {
            Event::PageVisit(p) => {
                let data = p.map_or_else(String::new, |p| {
                    format!(
                        ", {{line_items: [{{product_id: '{}', product_name: '{}', \
                         product_category: '{}', product_brand: '{}', product_price: {}}}]}}",
                        p.id,
                        js_str(p.name),
                        js_str(p.category),
                        js_str(p.brand),
                        p.price
                    )
                });
                if pincapi {
                    out.push_str(&format!(
                        "<script>pincapi('track', 'page_visit'{data});</script>"
                    ));
                } else {
                    out.push_str(&format!(
                        "<script>pintrk('track', 'pagevisit'{data});</script>"
                    ));
                }
            }
            Event::Checkout => {
                if pincapi {
                    out.push_str(
                        "<script>(function () { var o = shop.order(); if (!o) return;\n\
                         pincapi('load', {em: o.email});\n\
                         pincapi('track', 'checkout', shop.checkoutData(o)); })();</script>",
                    );
                } else {
                    out.push_str(
                        "<script>(function () { var o = shop.order(); if (!o) return;\n\
                         var d = shop.checkoutData(o); d.event_id = 'order-' + o.id;\n\
                         pintrk('track', 'checkout', d); })();</script>",
                    );
                }
            }
        }
        out
    }
}

fn page(state: &AppState, q: &PageQuery, title: &str, main: &str, event: &Event) -> Response {
    let variant = q.tag;
    if !state.config.browser.demo_storefront {
        return not_found();
    }
    let tag_id = state.config.tag_id.as_deref().unwrap_or("");
    let core_js = &state.config.browser.tag_script_url;
    let wrong_id = if tag_id == WRONG_TAG_ID {
        OTHER_TAG_ID
    } else {
        WRONG_TAG_ID
    };
    let tag = match variant {
        Variant::Pincapi => pincapi_snippet(q.denied()),
        Variant::Base => base_code(core_js, tag_id),
        Variant::Duplicate => format!(
            "{}\n{}",
            base_code(core_js, tag_id),
            pincapi_snippet(q.denied())
        ),
        Variant::WrongId => base_code(core_js, wrong_id),
        Variant::Missing => String::new(),
        Variant::PinterestApp => format!(
            "{}\n{}",
            base_code(core_js, tag_id).replace(
                &format!("pintrk('load', '{}');", js_str(tag_id)),
                &format!("pintrk('load', '{}', {{np: 'shopify'}});", js_str(tag_id))
            ),
            pincapi_snippet(q.denied())
        ),
        Variant::Gtm => format!("{}\n{GTM_SNIPPET}", pincapi_snippet(q.denied())),
    };
    let events = if variant == Variant::Missing {
        String::new()
    } else {
        event.code(variant)
    };
    let html = PAGE
        .replace("{{TITLE}}", &escape(title))
        .replace("{{VARIANT}}", variant.label())
        .replace("{{TAG}}", &tag)
        .replace("{{EVENTS}}", &events)
        .replace("{{MAIN}}", main);
    let mut resp = html.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The two lines a shop adds to its theme for pincapi; with `denied`, the consent answer a
/// banner gives, written before tag.js so that it applies from the first event.
fn pincapi_snippet(denied: bool) -> String {
    let consent = if denied {
        "\npincapi('consent', false);"
    } else {
        ""
    };
    format!(
        "<script>window.pincapi = window.pincapi || function () {{ \
         (window.pincapi.q = window.pincapi.q || []).push(arguments); }};{consent}</script>\n\
         <script async src=\"/tag.js\"></script>"
    )
}

/// Google Tag Manager's container snippet as GTM hands it out (a placeholder container id).
const GTM_SNIPPET: &str = "<script>(function(w,d,s,l,i){w[l]=w[l]||[];w[l].push({'gtm.start':\
new Date().getTime(),event:'gtm.js'});var f=d.getElementsByTagName(s)[0],\
j=d.createElement(s),dl=l!='dataLayer'?'&l='+l:'';j.async=true;j.src=\
'https://www.googletagmanager.com/gtm.js?id='+i+dl;f.parentNode.insertBefore(j,f);\
})(window,document,'script','dataLayer','GTM-DEMO000');</script>";

/// Pinterest's base code as its Ads Manager hands it out, loading `core_js`.
fn base_code(core_js: &str, tag_id: &str) -> String {
    format!(
        "<script>\n!function(e){{if(!window.pintrk){{window.pintrk = function () {{\n\
         window.pintrk.queue.push(Array.prototype.slice.call(arguments))}};var\n  \
         n=window.pintrk;n.queue=[],n.version=\"3.0\";var\n  \
         t=document.createElement(\"script\");t.async=!0,t.src=e;var\n  \
         r=document.getElementsByTagName(\"script\")[0];\n  \
         r.parentNode.insertBefore(t,r)}}}}(\"{core}\");\n\
         pintrk('load', '{id}');\npintrk('page');\n</script>\n\
         <noscript><img height=\"1\" width=\"1\" style=\"display:none;\" alt=\"\" \
         src=\"https://ct.pinterest.com/v3/?event=init&amp;tid={id}&amp;noscript=1\"></noscript>",
        core = js_str(core_js),
        id = js_str(tag_id),
    )
}

fn asset(state: &AppState, body: &'static str, content_type: &'static str) -> Response {
    if !state.config.browser.demo_storefront {
        return not_found();
    }
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(super) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a single-quoted JavaScript string inside an HTML `<script>`.
fn js_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\x3c"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
