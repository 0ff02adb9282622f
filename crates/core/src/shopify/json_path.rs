//! Parsing with errors that name the field, e.g. `line_items[2].quantity`, and never echo the
//! value.
//!
//! serde_json reports where a type error happened as a line and column. Scanning the body up
//! to that point with a tiny tokenizer gives the path of keys and indices that leads there,
//! which is what an operator needs to find the problem. The error text itself is cleaned of
//! the offending value, because it may be personal data (`invalid type: string "jon@...`).

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::MapError;

/// Deserialises `body`, turning any error into a [`MapError`] that names the field.
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, MapError> {
    serde_json::from_slice(body).map_err(|e| describe(body, &e))
}

fn describe(body: &[u8], e: &serde_json::Error) -> MapError {
    match e.classify() {
        // Syntax messages ("expected `,` or `}` at line 3 column 7") never quote the input.
        Category::Syntax | Category::Eof | Category::Io => MapError::Json(e.to_string()),
        Category::Data => {
            let offset = offset_of(body, e.line(), e.column());
            let path = path_before(&body[..offset]);
            let message = strip_position(&e.to_string());
            let (field, reason) = match missing_field(&message) {
                Some(name) if path.is_empty() => (name.to_owned(), "is missing".to_owned()),
                Some(name) => (format!("{path}.{name}"), "is missing".to_owned()),
                None => (path, crate::ingest::redact_serde_message(&message)),
            };
            let field = if field.is_empty() {
                "body".to_owned()
            } else {
                field
            };
            MapError::Field { field, reason }
        }
    }
}

/// The byte offset of serde_json's 1-based line and 0-based byte column.
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match body[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    start.saturating_add(column).min(body.len())
}

enum Frame {
    Object {
        key: Option<String>,
        expecting_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The path of the innermost value that `prefix` (a JSON text cut short) is in, or has just
/// finished: `line_items[2].quantity`. Empty at the top level.
fn path_before(prefix: &[u8]) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < prefix.len() {
        match prefix[i] {
            b'{' => stack.push(Frame::Object {
                key: None,
                expecting_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expecting_key, .. }) => *expecting_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < prefix.len() && prefix[i] != b'"' {
                    if prefix[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let end = (i + 1).min(prefix.len());
                if let Some(Frame::Object {
                    key,
                    expecting_key: expecting_key @ true,
                }) = stack.last_mut()
                {
                    let text = &prefix[start..end];
                    *key = Some(serde_json::from_slice::<String>(text).unwrap_or_else(|_| {
                        String::from_utf8_lossy(text).trim_matches('"').to_owned()
                    }));
                    *expecting_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

/// serde_json appends " at line L column C"; the path replaces it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// `missing field `id`` → `id`.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: i64,
        sku: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        id: u64,
        #[serde(default)]
        items: Vec<Item>,
    }

    fn err(json: &str) -> String {
        parse::<Doc>(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn type_errors_name_the_field_and_hide_the_value() {
        assert_eq!(
            err(r#"{"id": 1, "items": [{"quantity": 1}, {"quantity": 2}, {"quantity": "3"}]}"#),
            "items[2].quantity: invalid type: string, expected i64"
        );
        assert_eq!(
            err("{\n  \"id\": 1,\n  \"items\": [\n {\"quantity\": 1, \"sku\": 42}\n]}"),
            "items[0].sku: invalid type: integer, expected a string"
        );
        assert_eq!(
            err(r#"{"id": "jon@example.com"}"#),
            "id: invalid type: string, expected u64"
        );
    }

    #[test]
    fn missing_fields_are_named_with_their_path() {
        assert_eq!(err(r#"{"items": []}"#), "id: is missing");
        assert_eq!(
            err(r#"{"id": 1, "items": [{"quantity": 1}, {"sku": "a"}]}"#),
            "items[1].quantity: is missing"
        );
    }

    #[test]
    fn keys_with_escapes_and_nested_containers_are_tracked() {
        assert_eq!(
            err(r#"{"a\"b": {"x": [1, {"y": "}"}]}, "id": true}"#),
            "id: invalid type: boolean, expected u64"
        );
        assert_eq!(
            err("[]"),
            "body: invalid length 0, expected struct Doc with 2 elements"
        );
        assert_eq!(err("7"), "body: invalid type: integer, expected struct Doc");
    }

    #[test]
    fn syntax_errors_say_where() {
        assert_eq!(
            err("{\"id\": 1,"),
            "the body is not valid JSON: EOF while parsing a value at line 1 column 9"
        );
    }
}
