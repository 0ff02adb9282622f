//! `landing_site`: the page URL for `event_source_url`, and the Pinterest click id (`epik`) in
//! its query string.
//!
//! Shopify stores the first page of the session as a path plus query (`/products/x?epik=...`),
//! sometimes as a full URL. Many values are not storefront pages at all: `/password` (the
//! store was locked), `/online_store_preview`, `/wallets/checkouts.json` (accelerated
//! checkouts); those give no URL. Preview and session tokens are removed from the query, and
//! so is `key`, which grants access on some Shopify pages (the order status page), and any
//! parameter whose value is an email address (`?email=jane@example.com` from a newsletter
//! link): the URL is stored and sent as it is, never hashed.
//!
//! The browser collector (`crate::tag::collect`) scrubs the page URLs it is sent with the same
//! [`event_source_url`].

/// Paths that are not storefront pages a buyer landed on.
const NOT_PAGES: &[&str] = &["/password", "/online_store_preview", "/wallets"];

/// Query parameters that are tokens, not attribution: theme previews (`_bt`,
/// `preview_theme_id`, `_ab`, `_fd`, `_sc`), access keys (`key`) and credentials.
const TOKEN_PARAMS: &[&str] = &[
    "_bt",
    "preview_theme_id",
    "_ab",
    "_fd",
    "_sc",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "password",
    "pass",
    "pwd",
    "secret",
    "signature",
    "sig",
    "auth",
];

/// Query parameters that are personal data whatever their value looks like (names, phone
/// numbers, addresses, birthdays): a form's GET, a pre-filled link.
const PERSONAL_PARAMS: &[&str] = &[
    "email",
    "phone",
    "tel",
    "mobile",
    "name",
    "first_name",
    "firstname",
    "last_name",
    "lastname",
    "fn",
    "ln",
    "address",
    "address1",
    "address2",
    "street",
    "city",
    "zip",
    "zipcode",
    "postal_code",
    "postcode",
    "dob",
    "birthday",
];

/// Shopify's customer-account paths whose last segments are a one-time token
/// (`/account/reset/<id>/<token>`, `/account/activate/<id>/<token>`): kept without them.
const TOKEN_PATHS: &[&str] = &[
    "/account/reset/",
    "/account/activate/",
    "/account/invitation/",
];

/// Whether a query parameter is never stored: a token, a credential or personal data.
fn dropped_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // `customer[first_name]`, `contact[phone]`: a form field, named by its last key.
    let field = name
        .rsplit('[')
        .next()
        .map_or(name.as_str(), |f| f.trim_end_matches(']'));
    TOKEN_PARAMS.contains(&name.as_str())
        || TOKEN_PARAMS.contains(&field)
        || PERSONAL_PARAMS.contains(&name.as_str())
        || PERSONAL_PARAMS.contains(&field)
}

/// `landing_site` (or a page URL) as an absolute URL without its fragment, token parameters
/// and email addresses, or `None` when it is empty, not a storefront page, or relative while
/// the shop's domain is unknown. A relative path gets `https://<shop_domain>`.
pub(crate) fn event_source_url(landing_site: &str, shop_domain: Option<&str>) -> Option<String> {
    let s = landing_site.trim();
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (origin, rest) = if let Some(after) = strip_scheme(s) {
        let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        if authority_end == 0 {
            return None;
        }
        let split = s.len() - after.len() + authority_end;
        // A user and password in the authority (`https://user:pass@shop.example/`) are
        // credentials, never part of a page's address as Pinterest needs it.
        let authority = &after[..authority_end];
        let host = authority.rsplit('@').next().unwrap_or(authority);
        if host.is_empty() {
            return None;
        }
        let scheme = &s[..s.len() - after.len()];
        (format!("{scheme}{host}"), &s[split..])
    } else if (s.starts_with('/') && !s.starts_with("//")) || s.starts_with('?') {
        (format!("https://{}", host(shop_domain?)?), s)
    } else {
        return None;
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let lower = path.to_ascii_lowercase();
    let path = match TOKEN_PATHS.iter().find(|p| lower.starts_with(**p)) {
        Some(p) => &path[..p.len()],
        None => path,
    };
    if NOT_PAGES
        .iter()
        .any(|p| lower == *p || lower.starts_with(&format!("{p}/")))
    {
        return None;
    }
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            !pair.is_empty()
                && !dropped_param(percent_decode(name).as_deref().unwrap_or(name))
                && !looks_like_email(value)
        })
        .collect();
    let mut url = origin;
    url.push_str(path);
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    Some(url)
}

/// The `epik` query parameter of `landing_site`, percent-decoded. `None` if absent, empty, or
/// not UTF-8 once decoded.
pub(super) fn epik(landing_site: &str) -> Option<String> {
    let query = landing_site.split('#').next()?.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if name != "epik" {
            return None;
        }
        let value = percent_decode(value)?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Whether a query value is an email address once percent-decoded (`jane%40example.com`,
/// `jane%2540example.com` encoded twice): `local@domain.tld`, no spaces. Form encoding's `+`
/// is taken as itself (`jane+tag@example.com`).
fn looks_like_email(value: &str) -> bool {
    let mut v = value.to_owned();
    for _ in 0..3 {
        match percent_decode(&v) {
            Some(d) if d != v => v = d,
            _ => break,
        }
    }
    let v = v.trim();
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && !local.chars().any(|c| c.is_whitespace() || c.is_control())
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as it is. `+` is kept:
/// the click id is a token, not form data.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(text) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(text, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn strip_scheme(s: &str) -> Option<&str> {
    ["https://", "http://"].iter().find_map(|scheme| {
        s.get(..scheme.len())
            .filter(|p| p.eq_ignore_ascii_case(scheme))
            .map(|_| &s[scheme.len()..])
    })
}

/// The host of a configured shop domain, tolerating a scheme and a trailing slash.
fn host(domain: &str) -> Option<&str> {
    let d = domain.trim();
    let d = strip_scheme(d).unwrap_or(d).trim_end_matches('/');
    let ok = !d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    ok.then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(landing: &str) -> Option<String> {
        event_source_url(landing, Some("shop.example"))
    }

    #[test]
    fn relative_pages_get_the_shop_domain() {
        assert_eq!(
            url("/products/mug?utm_source=pinterest").as_deref(),
            Some("https://shop.example/products/mug?utm_source=pinterest")
        );
        assert_eq!(url("/").as_deref(), Some("https://shop.example/"));
        assert_eq!(
            url("?epik=abc").as_deref(),
            Some("https://shop.example/?epik=abc")
        );
        assert_eq!(event_source_url("/products/mug", None), None);
        assert_eq!(
            event_source_url("/a", Some("https://shop.example/")).as_deref(),
            Some("https://shop.example/a")
        );
    }

    #[test]
    fn absolute_urls_are_kept() {
        assert_eq!(
            url("http://www.example.com?source=abc").as_deref(),
            Some("http://www.example.com/?source=abc")
        );
        assert_eq!(
            url("HTTPS://Shop.example/a#frag").as_deref(),
            Some("HTTPS://Shop.example/a")
        );
        assert_eq!(url("https://"), None);
        assert_eq!(url("www.example.com/a"), None);
        assert_eq!(url("//evil.example/a"), None);
    }

    #[test]
    fn noise_pages_give_no_url() {
        for noise in [
            "/password",
            "/Password?x=1",
            "/online_store_preview",
            "/wallets/checkouts.json",
            "https://shop.example/password",
            "",
            "   ",
            "/a b",
        ] {
            assert_eq!(url(noise), None, "{noise}");
        }
        assert!(url("/passwords-and-keys").is_some());
    }

    #[test]
    fn personal_fields_credentials_and_account_tokens_are_removed() {
        let u = |s: &str| event_source_url(s, Some("shop.example"));
        assert_eq!(
            u("/pages/x?Phone=1&contact%5Bfirst_name%5D=J&ZIP=1&code=abc&q=rose").as_deref(),
            Some("https://shop.example/pages/x?q=rose")
        );
        assert_eq!(
            u("https://a:b@shop.example/?pwd=1").as_deref(),
            Some("https://shop.example/")
        );
        assert_eq!(
            u("/account/activate/1/2?x=1").as_deref(),
            Some("https://shop.example/account/activate/?x=1")
        );
        assert_eq!(u("https://user@/x"), None);
    }

    #[test]
    fn preview_and_access_tokens_are_removed() {
        assert_eq!(
            url("/?_bt=eyJfcmFpbHMi&utm_source=pin&_ab=0&_fd=0&_sc=1&preview_theme_id=1")
                .as_deref(),
            Some("https://shop.example/?utm_source=pin")
        );
        assert_eq!(
            url("/pages/x?key=secret").as_deref(),
            Some("https://shop.example/pages/x")
        );
    }

    #[test]
    fn parameters_whose_value_is_an_email_address_are_removed() {
        assert_eq!(
            url("/?email=jane.doe%40example.com&utm_source=newsletter&e=a@b.co").as_deref(),
            Some("https://shop.example/?utm_source=newsletter")
        );
        assert_eq!(
            url("/?to=jane%2540example.co.uk&u=jane+tag@example.com&x=1").as_deref(),
            Some("https://shop.example/?x=1")
        );
        // Not addresses: kept.
        assert_eq!(
            url("/?handle=@shop&q=a@b&at=1@").as_deref(),
            Some("https://shop.example/?handle=@shop&q=a@b&at=1@")
        );
    }

    #[test]
    fn epik_is_read_and_percent_decoded() {
        assert_eq!(
            epik("/?utm_source=pinterest&epik=dj0yJnU9%3D%3D&x=1").as_deref(),
            Some("dj0yJnU9==")
        );
        assert_eq!(epik("/?epik="), None);
        assert_eq!(epik("/?xepik=a"), None);
        assert_eq!(epik("/products/a"), None);
        assert_eq!(epik("/?epik=%FF"), None);
        assert_eq!(epik("/?epik=a%2"), Some("a%2".to_owned()));
    }
}
