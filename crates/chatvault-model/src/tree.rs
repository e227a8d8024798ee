//! A document read once for everything a valid document needs: the schema check (as a
//! `jsonschema` representation of its own), the content hash and the typed model.
//!
//! Reading into `serde_json::Value` allocated every key and string and built a B-tree per
//! object, only for the model to move some of those strings and drop the rest. Here
//! strings borrow the received text unless they held escapes, and each object is one
//! vector, sorted by key once so that look-ups are binary searches and the canonical form
//! for the hash is already in order.

use std::borrow::Cow;
use std::fmt;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, Visitor};
use serde_json::{Number, Value};

/// One JSON value. Repeated keys resolve as in a `Value`: the last one wins.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tree<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Tree<'a>>),
    /// Sorted by key, each key once.
    Object(Vec<(Cow<'a, str>, Tree<'a>)>),
}

impl<'a> Tree<'a> {
    /// Reads JSON text; the text's strings without escapes are borrowed, not copied.
    pub(crate) fn parse(text: &'a str) -> Result<Tree<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Tree<'a>> {
        match self {
            Tree::Object(entries) => member(entries, key),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Tree::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Tree::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(*b),
            Tree::Number(n) => Value::Number(n.clone()),
            Tree::String(s) => Value::String(s.as_ref().to_owned()),
            Tree::Array(items) => Value::Array(items.iter().map(Tree::to_value).collect()),
            Tree::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_ref().to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

fn member<'t, 'a>(entries: &'t [(Cow<'a, str>, Tree<'a>)], key: &str) -> Option<&'t Tree<'a>> {
    entries
        .binary_search_by(|(k, _)| k.as_ref().cmp(key))
        .ok()
        .map(|i| &entries[i].1)
}

impl<'de> Deserialize<'de> for Tree<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree<'de>, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Tree<'de>, E> {
        Ok(Tree::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Tree<'de>, E> {
        Ok(Tree::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Tree<'de>, E> {
        Ok(Tree::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Tree<'de>, E> {
        Ok(Tree::Number(n.into()))
    }
    // As `Value` reads a float, so that the hash sees the same number.
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Tree<'de>, E> {
        Ok(Number::from_f64(n).map_or(Tree::Null, Tree::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Tree<'de>, E> {
        Ok(Tree::String(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Tree<'de>, E> {
        Ok(Tree::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Tree<'de>, E> {
        Ok(Tree::String(Cow::Owned(s)))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Tree<'de>, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Tree<'de>)> = Vec::new();
        while let Some(key) = map.next_key()? {
            let Tree::String(key) = key else {
                return Err(de::Error::custom("an object key must be a string"));
            };
            entries.push((key, map.next_value()?));
        }
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so repeated keys stay in the order they came.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            if entries.windows(2).any(|w| w[0].0 == w[1].0) {
                entries.reverse();
                entries.dedup_by(|later, kept| later.0 == kept.0);
                entries.reverse();
            }
        }
        Ok(Tree::Object(entries))
    }
}

/// Moves the tree into a typed value (the model): owned strings are moved, borrowed ones
/// copied once.
impl<'de> Deserializer<'de> for Tree<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Tree::Null => visitor.visit_unit(),
            Tree::Bool(b) => visitor.visit_bool(b),
            Tree::Number(n) => n.deserialize_any(visitor),
            Tree::String(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Tree::String(Cow::Owned(s)) => visitor.visit_string(s),
            Tree::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Tree::Object(entries) => {
                let mut map = MapDeserializer::new(entries.into_iter());
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Tree::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Tree<'de> {
    type Deserializer = Tree<'de>;
    fn into_deserializer(self) -> Tree<'de> {
        self
    }
}

/// [`Tree`] as a representation the schema validator reads.
pub(crate) struct TreeJson;

impl Json for TreeJson {
    type Node<'a> = &'a Tree<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // A look-up is a binary search, as in `Value`'s B-tree: the same trade-off as there.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(Self::Node<'_>) -> T) -> T {
        f(&Tree::String(Cow::Borrowed(string)))
    }
}

/// An object's members, sorted by key.
#[derive(Clone, Copy)]
pub(crate) struct Members<'a>(&'a [(Cow<'a, str>, Tree<'a>)]);

impl<'a> Node<'a, TreeJson> for &'a Tree<'a> {
    type Object = Members<'a>;
    type Array = &'a [Tree<'a>];
    type Number = &'a Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match self {
            Tree::Object(entries) => Some(Members(entries)),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&'a [Tree<'a>]> {
        match self {
            Tree::Array(items) => Some(items),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Tree::String(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<&'a Number> {
        match self {
            Tree::Number(n) => Some(n),
            _ => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self {
            Tree::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Tree::Null)
    }
    fn json_type(&self) -> JsonType {
        match self {
            Tree::Null => JsonType::Null,
            Tree::Bool(_) => JsonType::Boolean,
            Tree::Number(_) => JsonType::Number,
            Tree::String(_) => JsonType::String,
            Tree::Array(_) => JsonType::Array,
            Tree::Object(_) => JsonType::Object,
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Tree::to_value(self))
    }
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Tree<'a>>(self) as usize
        ))
    }
}

impl<'a> Object<'a, TreeJson> for Members<'a> {
    type Node = &'a Tree<'a>;
    type MemberName = &'a str;
    type MembersIter = std::iter::Map<
        std::slice::Iter<'a, (Cow<'a, str>, Tree<'a>)>,
        fn(&'a (Cow<'a, str>, Tree<'a>)) -> (&'a str, &'a Tree<'a>),
    >;

    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, key: &String) -> Option<&'a Tree<'a>> {
        member(self.0, key)
    }
    fn members(&self) -> Self::MembersIter {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<'a> Array<'a, TreeJson> for &'a [Tree<'a>] {
    type Node = &'a Tree<'a>;
    type ElementsIter = std::slice::Iter<'a, Tree<'a>>;

    fn len(&self) -> usize {
        <[Tree<'a>]>::len(self)
    }
    fn elements(&self) -> std::slice::Iter<'a, Tree<'a>> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn satisfies_the_validators_contract_for_a_representation() {
        let text = jsonschema::json::conformance::document().to_string();
        let tree = Tree::parse(&text).expect("JSON");
        jsonschema::json::conformance::assert_conformance::<TreeJson>(&&tree);
    }

    #[test]
    fn repeated_keys_resolve_as_in_a_value() {
        let text = r#"{"b": 1, "a": {"y": 2, "x": 3, "y": 4}, "b": [5], "c\u0041": "d"}"#;
        let tree = Tree::parse(text).expect("JSON");
        let value: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(tree.to_value(), value);
        assert_eq!(
            tree.get("a").and_then(|a| a.get("y")),
            Some(&Tree::Number(4.into()))
        );
        assert_eq!(tree.get("cA"), Some(&Tree::String(Cow::Borrowed("d"))));
        assert_eq!(tree.get("missing"), None);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"plain": "abc", "escaped": "a\nb"}"#;
        let tree = Tree::parse(text).expect("JSON");
        assert!(matches!(
            tree.get("plain"),
            Some(Tree::String(Cow::Borrowed("abc")))
        ));
        assert!(matches!(tree.get("escaped"), Some(Tree::String(Cow::Owned(s))) if s == "a\nb"));
    }

    proptest! {
        /// Any JSON, keys in any order and repeated, reads the same through a tree as
        /// straight into a `Value`.
        #[test]
        fn reads_as_a_value_does(value in crate::any_json()) {
            let text = crate::scrambled_json(&value);
            let tree = Tree::parse(&text).expect("JSON");
            prop_assert_eq!(tree.to_value(), value.clone());
            let moved = Value::deserialize(tree).expect("moves into a Value");
            prop_assert_eq!(moved, value);
        }
    }
}
