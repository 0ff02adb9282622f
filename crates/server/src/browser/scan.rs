//! Reads a page's HTML the way `pincapi tag check` needs it: its scripts (inline text and
//! `src`), and the `pintrk(...)` and `pincapi(...)` calls written in them. A scanner, not a
//! parser: it knows HTML comments, script elements, JavaScript strings and comments, and
//! balanced brackets, which is what Tag snippets are made of.

/// One `pintrk(...)` or `pincapi(...)` call written in an inline script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `pintrk` or `pincapi`.
    pub function: &'static str,
    /// Each argument's source text, trimmed.
    pub args: Vec<String>,
}

impl Call {
    /// Argument `i` when it is a string literal, unquoted.
    pub fn str_arg(&self, i: usize) -> Option<String> {
        self.args.get(i).and_then(|a| string_literal(a))
    }

    /// Whether argument `i` is an object literal naming `key` (`{key: ...}`, `{'key': ...}`).
    pub fn arg_has_key(&self, i: usize, key: &str) -> bool {
        self.args.get(i).is_some_and(|a| {
            a.starts_with('{')
                && [
                    format!("{key}:"),
                    format!("{key} :"),
                    format!("'{key}'"),
                    format!("\"{key}\""),
                ]
                .iter()
                .any(|k| a.contains(k.as_str()))
        })
    }
}

/// What a page's HTML holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Calls in inline scripts, in page order.
    pub calls: Vec<Call>,
    /// `src` of every external script, as written.
    pub script_srcs: Vec<String>,
    /// Inline copies of the base code's loader (the snippet that adds core.js).
    pub loaders: usize,
    /// Google Tag Manager's container is loaded (`googletagmanager.com/gtm.js`): a Tag inside
    /// it is invisible to a scan.
    pub gtm: bool,
}

/// Scans a page. HTML comments are skipped, so a commented-out snippet does not count.
pub fn scan_html(html: &str) -> Scan {
    let html = strip_html_comments(html);
    let lower = html.to_ascii_lowercase();
    let mut scan = Scan {
        gtm: lower.contains("googletagmanager.com/gtm.js"),
        ..Scan::default()
    };
    let mut at = 0;
    while let Some(start) = lower[at..].find("<script").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let attrs = &html[start + "<script".len()..tag_end];
        let body_start = tag_end + 1;
        let body_end = lower[body_start..]
            .find("</script")
            .map_or(html.len(), |i| body_start + i);
        if let Some(src) = attribute(attrs, "src") {
            scan.script_srcs.push(src);
        } else {
            let body = strip_js_comments(&html[body_start..body_end]);
            if body.contains("window.pintrk.queue") || body.contains("s.pinimg.com/ct/core.js") {
                scan.loaders += 1;
            }
            scan.calls.extend(find_calls(&body));
        }
        at = body_end;
    }
    scan
}

/// Every `pintrk(` / `pincapi(` call whose first argument is a string literal (which leaves
/// out the loaders' own definitions), in page order.
fn find_calls(js: &str) -> Vec<Call> {
    let bytes = js.as_bytes();
    let mut found: Vec<(usize, &'static str)> = ["pintrk", "pincapi"]
        .into_iter()
        .flat_map(|f| js.match_indices(f).map(move |(i, _)| (i, f)))
        .collect();
    found.sort_unstable();
    let mut calls = Vec::new();
    for (i, function) in found {
        let before_ok = i == 0 || {
            let b = bytes[i - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        };
        let rest = js[i + function.len()..].trim_start();
        if !before_ok || !rest.starts_with('(') {
            continue;
        }
        if let Some(args) = split_args(&rest[1..])
            && args.first().is_some_and(|a| string_literal(a).is_some())
        {
            calls.push(Call { function, args });
        }
    }
    calls
}

/// Splits `a, {b: (c, d)}, 'e,f')...` at top-level commas up to the closing parenthesis.
/// `None` when the parenthesis never closes.
fn split_args(s: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                current.push(c);
                let mut escaped = false;
                for d in chars.by_ref() {
                    current.push(d);
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ')' if depth == 0 => {
                let last = current.trim();
                if !last.is_empty() || !args.is_empty() {
                    args.push(last.to_owned());
                }
                return Some(args);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' if depth == 0 => {
                args.push(current.trim().to_owned());
                current.clear();
            }
            c => current.push(c),
        }
    }
    None
}

/// The value of a string literal (`'x'`, `"x"`), with simple escapes undone.
pub fn string_literal(s: &str) -> Option<String> {
    let s = s.trim();
    let quote = s.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = s.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(d) = chars.next() {
                out.push(d);
            }
        } else if c == quote {
            // An unescaped quote inside: this was an expression like 'a' + 'b'.
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn attribute(attrs: &str, name: &str) -> Option<String> {
    let lower = attrs.to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = lower[at..].find(name).map(|i| at + i) {
        at = i + name.len();
        let before_ok = i == 0 || lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = attrs[at..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        let v = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        };
        return Some(v.replace("&amp;", "&"));
    }
    None
}

fn strip_html_comments(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i + 4..].find("-->") {
            Some(j) => rest = &rest[i + 4 + j + 3..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Blanks out `//` and `/* */` comments, leaving strings alone (a URL's `//` is not one).
fn strip_js_comments(js: &str) -> String {
    let mut out = String::with_capacity(js.len());
    let mut chars = js.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                let mut escaped = false;
                for d in chars.by_ref() {
                    out.push(d);
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c || (d == '\n' && c != '`') {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_CODE: &str = r#"<script>
!function(e){if(!window.pintrk){window.pintrk = function () {
window.pintrk.queue.push(Array.prototype.slice.call(arguments))};var
  n=window.pintrk;n.queue=[],n.version="3.0";var
  t=document.createElement("script");t.async=!0,t.src=e;var
  r=document.getElementsByTagName("script")[0];
  r.parentNode.insertBefore(t,r)}}("https://s.pinimg.com/ct/core.js");
pintrk('load', '2612345678901', {em: '{{ customer.email }}'});
pintrk('page');
</script>"#;

    #[test]
    fn the_base_code_and_its_calls_are_found() {
        let scan = scan_html(&format!(
            "<html><head>{BASE_CODE}<script>pintrk('track', 'checkout', {{value: 72.39, \
             event_id: 'order-1', line_items: [{{product_id: 'a,b'}}]}});</script></head></html>"
        ));
        assert_eq!(scan.loaders, 1);
        let names: Vec<String> = scan.calls.iter().map(|c| c.str_arg(0).unwrap()).collect();
        assert_eq!(names, vec!["load", "page", "track"]);
        assert_eq!(scan.calls[0].str_arg(1).as_deref(), Some("2612345678901"));
        assert!(scan.calls[0].arg_has_key(2, "em"));
        assert!(scan.calls[2].arg_has_key(2, "event_id"));
        assert_eq!(scan.calls[2].args.len(), 3);
    }

    #[test]
    fn pincapi_calls_and_script_sources_are_found_and_comments_skipped() {
        let html = r#"<script>window.pincapi = window.pincapi || function () {
            (window.pincapi.q = window.pincapi.q || []).push(arguments); };</script>
            <SCRIPT async SRC="https://t.shop.example/tag.js?v=1&amp;x=2"></SCRIPT>
            <!-- <script>pintrk('load', '1')</script> -->
            <script>// pintrk('load', '2')
            pincapi('track', "page_visit"); /* pintrk('load', '3') */
            var u = "https://x//y"; pincapi('load', {'em': 'a@b.co'});</script>"#;
        let scan = scan_html(html);
        assert_eq!(
            scan.script_srcs,
            vec!["https://t.shop.example/tag.js?v=1&x=2"]
        );
        assert_eq!(scan.loaders, 0);
        assert_eq!(scan.calls.len(), 2);
        assert_eq!(scan.calls[0].function, "pincapi");
        assert_eq!(scan.calls[0].str_arg(1).as_deref(), Some("page_visit"));
        assert!(scan.calls[1].arg_has_key(1, "em"));
    }

    #[test]
    fn a_tag_id_from_a_template_variable_is_not_a_literal() {
        let scan = scan_html("<script>pintrk('load', TAG_ID); pintrk('load', 'a' + b)</script>");
        assert_eq!(scan.calls.len(), 2);
        assert_eq!(scan.calls[0].str_arg(1), None);
        assert_eq!(scan.calls[1].str_arg(1), None);
    }
}
