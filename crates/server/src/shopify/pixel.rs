//! The Shopify custom pixel: the JavaScript a merchant pastes into Settings → Customer events,
//! rendered from `assets/shopify/pixel.js` with the shop's Tag id, collector and catalog ids.
//!
//! The pixel and the gateway share one `event_id` rule for purchases: `"order-"` followed by
//! the trailing digits of the order id (`pincapi_core::shopify::purchase_event_id`). The pixel
//! reads the id from `checkout_completed`'s `checkout.order.id`, which Shopify gives as digits
//! or as `gid://shopify/OrderIdentity/<digits>`; the gateway from the order's `id`. So the Tag's
//! `checkout` and the server's event for one order carry the same id, and Pinterest counts
//! the purchase once. Page visits and cart additions get a random id per action, shared by the
//! Tag call and its mirror to the gateway's collector.

use pincapi_core::shopify::{ContentIdScheme, ValueSource};
use serde::Serialize;

/// The template; `__PINCAPI_CONFIG__` is replaced by the settings as a JSON object.
const TEMPLATE: &str = include_str!("../../assets/shopify/pixel.js");

/// What the rendered pixel needs to know.
#[derive(Debug, Clone)]
pub struct PixelOptions {
    /// The Pinterest Tag id (digits).
    pub tag_id: String,
    /// The gateway's public base URL; the pixel mirrors events to `<public_url>/collect`.
    pub public_url: Option<String>,
    /// Must match the shop's `content_ids`, so the Tag names catalog items as the server does.
    pub content_ids: ContentIdScheme,
    /// Must match the shop's `value`.
    pub value: ValueSource,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rendered<'a> {
    tag_id: &'a str,
    collector_url: Option<String>,
    content_ids: ContentIdScheme,
    value: ValueSource,
}

/// Renders the pixel. Fails when the Tag id is not digits or the gateway URL is not http(s).
pub fn render(options: &PixelOptions) -> Result<String, String> {
    let tag_id = options.tag_id.trim();
    if tag_id.is_empty() || tag_id.len() > 20 || !tag_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "tag_id: {tag_id:?} is not a Pinterest Tag id (digits, e.g. 2612345678901)"
        ));
    }
    let collector_url = match options.public_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            Some(format!("{}/collect", u.trim_end_matches('/')))
        }
        Some(u) => {
            return Err(format!(
                "public_url: {u:?} must be an http(s) URL, e.g. https://t.shop.example"
            ));
        }
    };
    let config = Rendered {
        tag_id,
        collector_url,
        content_ids: options.content_ids,
        value: options.value,
    };
    let json = serde_json::to_string(&config).map_err(|e| e.to_string())?;
    Ok(TEMPLATE.replace("__PINCAPI_CONFIG__", &json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_settings_as_json_and_refuses_a_bad_tag_id() {
        let js = render(&PixelOptions {
            tag_id: "2612345678901".into(),
            public_url: Some("https://t.shop.example/".into()),
            content_ids: ContentIdScheme::Sku,
            value: ValueSource::Total,
        })
        .unwrap();
        assert!(js.contains(
            r#"var CONFIG = {"tagId":"2612345678901","collectorUrl":"https://t.shop.example/collect","contentIds":"sku","value":"total"};"#
        ));
        assert!(!js.contains("__PINCAPI_CONFIG__"));
        assert!(
            render(&PixelOptions {
                tag_id: "'); alert(1); ('".into(),
                public_url: None,
                content_ids: ContentIdScheme::default(),
                value: ValueSource::default(),
            })
            .is_err()
        );
    }
}
