use serde_json::Value;
use sha2::{Digest, Sha256};
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

/// Hashes the canonical form: object keys sorted, no insignificant whitespace, and the
/// top-level Cosmos DB system properties left out (they change without the chat changing).
pub fn content_hash(document: &Value) -> ContentHash {
    let mut hasher = HashWriter(Sha256::new());
    match document {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !COSMOS_SYSTEM_PROPERTIES.contains(&k.as_str()))
                .collect();
            keys.sort();
            write_object(&mut hasher, keys.into_iter().map(|k| (k, &map[k])));
        }
        other => write_canonical(&mut hasher, other),
    }
    ContentHash(hasher.0.finalize().into())
}

struct HashWriter(Sha256);

impl HashWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// JSON text of a scalar or key, written straight into the hash (no temporary string).
    fn put_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Writing to a hasher cannot fail, and these values always serialise.
        let _ = serde_json::to_writer(&mut *self, value);
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_canonical(out: &mut HashWriter, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(out, entries.into_iter());
        }
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_canonical(out, item);
            }
            out.put(b"]");
        }
        scalar => out.put_json(scalar),
    }
}

fn write_object<'a>(out: &mut HashWriter, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.put(b"{");
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.put(b",");
        }
        out.put_json(key);
        out.put(b":");
        write_canonical(out, value);
    }
    out.put(b"}");
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

    #[test]
    fn hex_round_trips() {
        let h = content_hash(&json!({"a": 1}));
        assert_eq!(ContentHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(ContentHash::from_hex("zz"), None);
    }
}
