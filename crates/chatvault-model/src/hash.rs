use serde_json::{Number, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use crate::document::COSMOS_SYSTEM_PROPERTIES;
use crate::tree::Tree;

/// SHA-256 of a document's canonical form. Two deliveries of the same chat have the same
/// hash however their keys are ordered or spaced, and whatever Cosmos DB stamped on them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub const ZERO: ContentHash = ContentHash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<ContentHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(ContentHash(out))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

thread_local! {
    /// Where a document's canonical form is written before it is hashed in one call:
    /// feeding SHA-256 a few bytes per key and value cost more than the hashing itself.
    static CANONICAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer grown past this by a huge document is not kept for the next one.
const CANONICAL_KEPT_BYTES: usize = 1 << 20;

/// Hashes the canonical form: object keys sorted, no insignificant whitespace, and the
/// top-level Cosmos DB system properties left out (they change without the chat changing).
pub fn content_hash(document: &Value) -> ContentHash {
    hash_canonical(|out| match document {
        Value::Object(map) => write_object(
            out,
            map.iter()
                .filter(|(k, _)| !COSMOS_SYSTEM_PROPERTIES.contains(&k.as_str())),
        ),
        other => other.write_canonical(out),
    })
}

/// [`content_hash`] of the same document read as a [`Tree`].
pub(crate) fn content_hash_of_tree(document: &Tree<'_>) -> ContentHash {
    hash_canonical(|out| match document {
        Tree::Object(entries) => write_members(
            out,
            tree_members(entries.iter()).filter(|(k, _)| !COSMOS_SYSTEM_PROPERTIES.contains(k)),
        ),
        other => other.write_canonical(out),
    })
}

fn hash_canonical(write: impl FnOnce(&mut Vec<u8>)) -> ContentHash {
    CANONICAL.with_borrow_mut(|out| {
        out.clear();
        write(out);
        let hash = ContentHash(Sha256::digest(out.as_slice()).into());
        if out.capacity() > CANONICAL_KEPT_BYTES {
            *out = Vec::new();
        }
        hash
    })
}

/// JSON text of a scalar or key. Writing to a `Vec` cannot fail, and these values always
/// serialise.
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// A string as serde_json writes it. serde_json escapes only quotes, backslashes and
/// control characters, which few strings of a chat hold: the others are copied as they
/// are, instead of passing each of a document's hundreds of strings and keys through a
/// serializer of their own that looks every byte up in a table (4% of a validation).
fn put_str(out: &mut Vec<u8>, s: &str) {
    if !is_written_verbatim(s) {
        return put_json(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn is_written_verbatim(s: &str) -> bool {
    // Whole chunks are tested without stopping at the first hit, so that the compiler
    // tests many bytes per instruction.
    s.as_bytes().chunks(64).all(|chunk| {
        !chunk.iter().fold(false, |escaped, &b| {
            escaped | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

/// A number as serde_json writes it: integers through `itoa`, as serde_json does, without
/// a serializer per number.
fn put_number(out: &mut Vec<u8>, n: &Number) {
    let mut digits = itoa::Buffer::new();
    if let Some(u) = n.as_u64() {
        out.extend_from_slice(digits.format(u).as_bytes());
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(digits.format(i).as_bytes());
    } else {
        put_json(out, n);
    }
}

/// What the canonical form is written from: a `Value`, or a `Tree` read for validation.
trait Canonical {
    fn write_canonical(&self, out: &mut Vec<u8>);
}

impl Canonical for Value {
    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Value::Object(map) => write_object(out, map.iter()),
            Value::Array(items) => write_array(out, items),
            Value::String(s) => put_str(out, s),
            Value::Number(n) => put_number(out, n),
            scalar => put_json(out, scalar),
        }
    }
}

impl Canonical for Tree<'_> {
    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Null => out.extend_from_slice(b"null"),
            Tree::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Tree::Number(n) => put_number(out, n),
            Tree::String(s) => put_str(out, s),
            Tree::Array(items) => write_array(out, items),
            // A tree's objects are sorted when read.
            Tree::Object(entries) => write_members(out, tree_members(entries.iter())),
        }
    }
}

fn tree_members<'t, 'a: 't>(
    entries: impl Iterator<Item = &'t (Cow<'a, str>, Tree<'a>)>,
) -> impl Iterator<Item = (&'t str, &'t Tree<'a>)> {
    entries.map(|(k, v)| (k.as_ref(), v))
}

fn write_array<T: Canonical>(out: &mut Vec<u8>, items: &[T]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_canonical(out);
    }
    out.push(b']');
}

/// Writes the entries sorted by key. serde_json's map keeps its keys sorted unless its
/// `preserve_order` feature is on, so the sort is only a safeguard against that.
fn write_object<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, &'a Value)> + Clone,
) {
    let entries = entries.map(|(k, v)| (k.as_str(), v));
    if !entries.clone().map(|(k, _)| k).is_sorted() {
        let mut sorted: Vec<(&str, &Value)> = entries.collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        return write_members(out, sorted.into_iter());
    }
    write_members(out, entries)
}

/// Writes an object's members in the order given: sorted by key.
fn write_members<'a, T: Canonical + 'a>(
    out: &mut Vec<u8>,
    members: impl Iterator<Item = (&'a str, &'a T)>,
) {
    out.push(b'{');
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_str(out, key);
        out.push(b':');
        value.write_canonical(out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value =
            serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":"z"}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str("{ \"b\" : { \"y\":\"z\", \"x\":[ 1 , 2 ] },\n \"a\" : 1 }")
                .unwrap_or_default();
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn any_value_change_changes_the_hash() {
        let a = json!({"a": 1, "b": ["x"]});
        assert_ne!(content_hash(&a), content_hash(&json!({"a": 2, "b": ["x"]})));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"a": 1, "b": ["x", "y"]}))
        );
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"a": 1, "b": ["x"], "c": null}))
        );
    }

    #[test]
    fn cosmos_system_properties_are_ignored_at_top_level_only() {
        let plain = json!({"ChatHeader": {"ChatUID": "x"}});
        let cosmos = json!({"ChatHeader": {"ChatUID": "x"}, "id": "x", "_ts": 5, "_etag": "e"});
        assert_eq!(content_hash(&plain), content_hash(&cosmos));
        let nested = json!({"ChatHeader": {"ChatUID": "x", "_ts": 5}});
        assert_ne!(content_hash(&plain), content_hash(&nested));
    }

    /// The canonical form is serde_json's compact text of the document with its keys
    /// sorted: hashes stored in catalogs must not change with how they are computed.
    #[test]
    fn canonical_form_is_compact_sorted_json() {
        let dir = crate::reference_samples();
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.map(|e| e.path()).unwrap_or_default();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut document: Value = serde_json::from_str(&text).unwrap_or_default();
            document["_ts"] = json!(1_700_000_000);
            let hash = content_hash(&document);
            if let Some(map) = document.as_object_mut() {
                map.retain(|k, _| !COSMOS_SYSTEM_PROPERTIES.contains(&k.as_str()));
            }
            let compact = serde_json::to_vec(&document).unwrap_or_default();
            assert_eq!(
                hash.0,
                <[u8; 32]>::from(Sha256::digest(&compact)),
                "{path:?}"
            );
            checked += 1;
        }
        assert!(checked > 3, "only {checked} samples in {dir:?}");
    }

    proptest::proptest! {
        /// For any document, not only the samples: the hash is of serde_json's own
        /// compact text with the keys sorted, escapes and numbers included.
        #[test]
        fn canonical_form_is_serde_jsons_compact_text(value in crate::any_json()) {
            let expected = serde_json::to_vec(&value).unwrap_or_default();
            proptest::prop_assert_eq!(
                content_hash(&Value::Array(vec![value])).0,
                <[u8; 32]>::from(Sha256::digest([b"[", &expected[..], b"]"].concat()))
            );
        }

        /// Read as a tree, any document hashes as it does read as a `Value`, its top-level
        /// Cosmos DB properties left out alike.
        #[test]
        fn a_tree_hashes_as_its_value_does(value in crate::any_json(), ts in proptest::option::of(proptest::prelude::any::<i64>())) {
            let mut value = serde_json::json!({"doc": value});
            if let Some(ts) = ts {
                value["_ts"] = ts.into();
            }
            let text = crate::scrambled_json(&value);
            let tree = Tree::parse(&text).expect("JSON");
            proptest::prop_assert_eq!(content_hash_of_tree(&tree), content_hash(&value));
        }
    }

    /// Strings are copied without serde_json only where it would not change them: an
    /// escape anywhere in a long string, in its first 64 bytes, in a later full chunk or in
    /// the short last one, still comes out escaped.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let plain = "é€😀/ \u{7f}".repeat(40);
        for escape in ["\"", "\\", "\n", "\u{1}", "\u{1f}"] {
            for near in [0, 63, 64, 150, plain.len()] {
                let at = (near..=plain.len())
                    .find(|&i| plain.is_char_boundary(i))
                    .unwrap_or(plain.len());
                let mut text = plain.clone();
                text.insert_str(at, escape);
                let mut out = Vec::new();
                put_str(&mut out, &text);
                assert_eq!(
                    out,
                    serde_json::to_vec(&text).unwrap_or_default(),
                    "{escape:?} at {at}"
                );
            }
        }
        let mut out = Vec::new();
        put_str(&mut out, &plain);
        assert_eq!(out, serde_json::to_vec(&plain).unwrap_or_default());
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        for n in [
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-2.5e-300),
        ] {
            let Value::Number(n) = &n else {
                panic!("{n} is a number")
            };
            let mut out = Vec::new();
            put_number(&mut out, n);
            assert_eq!(out, serde_json::to_vec(n).unwrap_or_default(), "{n}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let h = content_hash(&json!({"a": 1}));
        assert_eq!(ContentHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(ContentHash::from_hex("zz"), None);
    }
}
