//! A borrowed, flat JSON tree ("tape") for the events hot path.
//!
//! A 1000-event body parsed into `serde_json::Value` costs tens of thousands of small
//! allocations (every key, every string, every map node) and as many frees. Here the whole
//! document is one `Vec` of nodes in document order; strings point into the request body
//! (copied only when they contain escapes). Validation walks it through the [`JsonRef`]
//! handle and its [`View`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One node of the tape. A container is followed by its descendants (for objects: a key node,
/// then the value's subtree, per member); `end` is the index just past its last descendant.
#[derive(Debug, Clone, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    Int(i64),
    BigUint(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Key(Cow<'a, str>),
    Array { len: u32, end: u32 },
    Object { len: u32, end: u32 },
}

/// A parsed JSON document borrowing from its source bytes.
#[derive(Debug)]
pub(super) struct Tape<'a> {
    nodes: Vec<Node<'a>>,
}

impl<'a> Tape<'a> {
    /// Parses one JSON document.
    pub(super) fn parse(bytes: &'a [u8]) -> serde_json::Result<Self> {
        // About one node per 24 bytes of typical event JSON: one allocation, rarely regrown.
        let mut nodes = Vec::with_capacity(bytes.len() / 24 + 8);
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        NodeSeed(&mut nodes).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(Self { nodes })
    }

    /// The document's root value.
    pub(super) fn root(&self) -> JsonRef<'_, 'a> {
        JsonRef {
            nodes: &self.nodes,
            at: 0,
        }
    }
}

/// A value inside a [`Tape`]. Cheap to copy.
#[derive(Clone, Copy)]
pub(super) struct JsonRef<'t, 'a> {
    nodes: &'t [Node<'a>],
    at: usize,
}

/// What a [`JsonRef`] is, for `match`.
#[derive(Clone, Copy)]
pub(super) enum View<'t, 'a> {
    Null,
    Bool(bool),
    /// Any integer that fits `i64`.
    Int(i64),
    /// A non-negative integer above `i64::MAX`.
    BigUint(u64),
    /// A number written with a fraction or exponent (or too large for 64 bits).
    Float(f64),
    Str(&'t str),
    Array(Items<'t, 'a>),
    Object(Members<'t, 'a>),
}

impl<'t, 'a> JsonRef<'t, 'a> {
    pub(super) fn view(self) -> View<'t, 'a> {
        match self.nodes.get(self.at) {
            Some(Node::Bool(b)) => View::Bool(*b),
            Some(Node::Int(n)) => View::Int(*n),
            Some(Node::BigUint(n)) => View::BigUint(*n),
            Some(Node::Float(f)) => View::Float(*f),
            Some(Node::Str(s) | Node::Key(s)) => View::Str(s),
            Some(Node::Array { len, .. }) => View::Array(Items {
                nodes: self.nodes,
                next: self.at + 1,
                remaining: *len as usize,
            }),
            Some(Node::Object { len, .. }) => View::Object(Members {
                nodes: self.nodes,
                next: self.at + 1,
                remaining: *len as usize,
            }),
            // `Null`, and (unreachable) out of range.
            Some(Node::Null) | None => View::Null,
        }
    }

    /// Index just past this value's subtree.
    fn end(self) -> usize {
        match self.nodes.get(self.at) {
            Some(Node::Array { end, .. } | Node::Object { end, .. }) => *end as usize,
            _ => self.at + 1,
        }
    }

    /// The member `key` of an object. Like `serde_json`, the last duplicate wins.
    pub(super) fn get(self, key: &str) -> Option<JsonRef<'t, 'a>> {
        match self.view() {
            View::Object(members) => members.filter(|(k, _)| *k == key).last().map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn as_str(self) -> Option<&'t str> {
        match self.view() {
            View::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn is_null(self) -> bool {
        matches!(self.view(), View::Null)
    }

    pub(super) fn is_str(self) -> bool {
        matches!(self.view(), View::Str(_))
    }

    /// "a string", "an object", …: for error messages.
    pub(super) fn type_name(self) -> &'static str {
        match self.view() {
            View::Null => "null",
            View::Bool(_) => "a boolean",
            View::Int(_) | View::BigUint(_) => "an integer",
            View::Float(_) => "a number",
            View::Str(_) => "a string",
            View::Array(_) => "an array",
            View::Object(_) => "an object",
        }
    }

    /// An owned `serde_json::Value` (for recording; not on the benchmark path).
    pub(super) fn to_value(self) -> Value {
        match self.view() {
            View::Null => Value::Null,
            View::Bool(b) => Value::Bool(b),
            View::Int(n) => Value::from(n),
            View::BigUint(n) => Value::from(n),
            View::Float(f) => Value::from(f),
            View::Str(s) => Value::String(s.to_owned()),
            View::Array(items) => Value::Array(items.map(JsonRef::to_value).collect()),
            View::Object(members) => {
                Value::Object(members.map(|(k, v)| (k.to_owned(), v.to_value())).collect())
            }
        }
    }
}

/// The elements of an array.
#[derive(Clone, Copy)]
pub(super) struct Items<'t, 'a> {
    nodes: &'t [Node<'a>],
    next: usize,
    remaining: usize,
}

impl<'t, 'a> Iterator for Items<'t, 'a> {
    type Item = JsonRef<'t, 'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let item = JsonRef {
            nodes: self.nodes,
            at: self.next,
        };
        self.next = item.end();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Items<'_, '_> {}

/// The members of an object, in document order (duplicates kept).
#[derive(Clone, Copy)]
pub(super) struct Members<'t, 'a> {
    nodes: &'t [Node<'a>],
    next: usize,
    remaining: usize,
}

impl<'t, 'a> Iterator for Members<'t, 'a> {
    type Item = (&'t str, JsonRef<'t, 'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let key = match self.nodes.get(self.next) {
            Some(Node::Key(k)) => k.as_ref(),
            // The tape builder always writes a key before each member's value.
            _ => "",
        };
        let value = JsonRef {
            nodes: self.nodes,
            at: self.next + 1,
        };
        self.next = value.end();
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Appends one value's subtree to the tape.
struct NodeSeed<'t, 'a>(&'t mut Vec<Node<'a>>);

impl<'de> NodeSeed<'_, 'de> {
    /// Writes a container's final `len`/`end` into the placeholder pushed at `at`.
    fn close(self, at: usize, len: usize, array: bool) {
        // Bodies are capped at a few MiB, so counts always fit; saturate rather than wrap.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let end = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        if let Some(slot) = self.0.get_mut(at) {
            *slot = if array {
                Node::Array { len, end }
            } else {
                Node::Object { len, end }
            };
        }
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Node::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.0.push(Node::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Node::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Node::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0
            .push(i64::try_from(v).map_or(Node::BigUint(v), Node::Int));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Node::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Owned(v)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Node::Array { len: 0, end: 0 });
        let mut len = 0;
        while seq.next_element_seed(NodeSeed(&mut *self.0))?.is_some() {
            len += 1;
        }
        self.close(at, len, true);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Node::Object { len: 0, end: 0 });
        let mut len = 0;
        while map.next_key_seed(KeySeed(&mut *self.0))?.is_some() {
            map.next_value_seed(NodeSeed(&mut *self.0))?;
            len += 1;
        }
        self.close(at, len, false);
        Ok(())
    }
}

/// Appends an object key to the tape, borrowed when it has no escapes.
struct KeySeed<'t, 'a>(&'t mut Vec<Node<'a>>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Node::Key(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Node::Key(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Node::Key(Cow::Owned(v)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tape_round_trips_to_the_same_value_as_serde_json() {
        let text = br#"{"a": "plain", "b\n": "esc\"aped", "n": [1, -2, 1.5, 18446744073709551615, null, true, [], {}],
                        "o": {"x": [{"y": [1, {"z": "w"}]}], "v": false}, "last": 3}"#;
        let tape = Tape::parse(text).expect("valid JSON");
        let expected: Value = serde_json::from_slice(text).expect("valid JSON");
        assert_eq!(tape.root().to_value(), expected);
        assert_eq!(
            tape.root().get("b\n").and_then(JsonRef::as_str),
            Some("esc\"aped")
        );
        assert!(matches!(
            tape.root().get("last").map(JsonRef::view),
            Some(View::Int(3))
        ));
    }

    #[test]
    fn the_last_duplicate_key_wins_like_serde_json() {
        let tape = Tape::parse(br#"{"k": 1, "k": 2}"#).expect("valid JSON");
        assert!(matches!(
            tape.root().get("k").map(JsonRef::view),
            Some(View::Int(2))
        ));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        assert!(Tape::parse(br#"{"data": []} x"#).is_err());
    }
}
