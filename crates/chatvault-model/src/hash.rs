use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fmt;

use crate::document::COSMOS_SYSTEM_PROPERTIES;

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
    CANONICAL.with_borrow_mut(|out| {
        out.clear();
        match document {
            Value::Object(map) => write_object(
                out,
                map.iter()
                    .filter(|(k, _)| !COSMOS_SYSTEM_PROPERTIES.contains(&k.as_str())),
            ),
            other => write_canonical(out, other),
        }
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

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map.iter()),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        scalar => put_json(out, scalar),
    }
}

/// Writes the entries sorted by key. serde_json's map keeps its keys sorted unless its
/// `preserve_order` feature is on, so the sort is only a safeguard against that.
fn write_object<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, &'a Value)> + Clone,
) {
    if !entries.clone().map(|(k, _)| k).is_sorted() {
        let mut sorted: Vec<(&String, &Value)> = entries.collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        return write_entries(out, sorted.into_iter());
    }
    write_entries(out, entries)
}

fn write_entries<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_json(out, key);
        out.push(b':');
        write_canonical(out, value);
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

    /// Any JSON: strings drawn to include quotes, backslashes, control characters and
    /// non-ASCII text, keys likewise, nested a few levels.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![any::<String>(), "[a-z\"\\\\/\\x00-\\x1f\\x7f é€😀]{0,12}",];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((text.clone(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// For any document, not only the samples: the hash is of serde_json's own
        /// compact text with the keys sorted, escapes and numbers included.
        #[test]
        fn canonical_form_is_serde_jsons_compact_text(value in any_json()) {
            let expected = serde_json::to_vec(&value).unwrap_or_default();
            proptest::prop_assert_eq!(
                content_hash(&Value::Array(vec![value])).0,
                <[u8; 32]>::from(Sha256::digest([b"[", &expected[..], b"]"].concat()))
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let h = content_hash(&json!({"a": 1}));
        assert_eq!(ContentHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(ContentHash::from_hex("zz"), None);
    }
}
