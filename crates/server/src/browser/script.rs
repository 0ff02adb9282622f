//! `GET /tag.js`: the first-party tag script, with this gateway's settings written in.
//!
//! The script itself is `assets/browser/tag.js`; the only thing rendered per gateway is its
//! `CONFIG` object (Tag id, collector URL, Tag script URL, cookie and consent settings, and
//! the CAPI → Tag event name table from `pincapi_core::tag`, so the browser and the server
//! share one table). Cacheable: a strong ETag over the rendered text and a short max-age, so
//! a config change reaches browsers within minutes.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pincapi_core::event::EventName;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::state::AppState;

/// The script as shipped, with the `__PINCAPI_CONFIG__` placeholder.
const TAG_JS: &str = include_str!("../../assets/browser/tag.js");

/// The marker `pincapi tag check` looks for to recognise this script on a page.
pub const MARKER: &str = "pincapi tag.js";

/// How long browsers and CDNs may reuse the script without asking, seconds.
const MAX_AGE_SECS: u32 = 300;

/// `GET /tag.js`.
pub async fn tag_js(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = render(&state.config);
    let etag = format!("\"{}\"", &hex(&Sha256::digest(body.as_bytes()))[..32]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECS}"))
            .unwrap_or(HeaderValue::from_static("no-cache")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// The script text for `config`.
pub fn render(config: &Config) -> String {
    TAG_JS.replace("__PINCAPI_CONFIG__", &script_config(config).to_string())
}

/// The `CONFIG` object tag.js runs with.
pub fn script_config(config: &Config) -> Value {
    let b = &config.browser;
    let names: Map<String, Value> = EventName::ALL
        .into_iter()
        .filter_map(|n| {
            pincapi_core::tag::tag_event_name(n)
                .map(|t| (n.as_str().to_owned(), Value::String(t.to_owned())))
        })
        .collect();
    let collector = config.public_base().map(|u| format!("{u}/collect"));
    json!({
        "tag_id": config.tag_id,
        "collector": collector,
        "tag_script_url": b.tag_script_url,
        "epik_cookie_days": b.epik_cookie_days,
        "cookie_domain": b.cookie_domain,
        "require_consent": b.require_consent,
        "event_names": names,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_carries_the_config_and_the_marker() {
        let config = Config {
            tag_id: Some("2612345678901".into()),
            ..Config::default()
        };
        let js = render(&config);
        assert!(js.contains(MARKER));
        assert!(!js.contains("__PINCAPI_CONFIG__"));
        assert!(js.contains(r#""tag_id":"2612345678901""#));
        assert!(js.contains(r#""add_to_cart":"addtocart""#));
        assert!(js.contains("https://s.pinimg.com/ct/core.js"));
    }
}
