//! The schemas, the Rust types and the documents agree: every reference sample and every
//! generated document validates, and the typed model round-trips them without losing a
//! field (values may only change as normalisation says: unset timestamps become null,
//! identifiers are trimmed, nulls become empty values).

mod common;

use chatvault_model::{parse_local_timestamp, ChatDocument, SchemaRegistry, MAX_DOCUMENT_BYTES};
use proptest::prelude::*;
use serde_json::Value;

fn registry() -> SchemaRegistry {
    SchemaRegistry::new(MAX_DOCUMENT_BYTES).expect("schemas compile")
}

/// Checks that `after` holds everything `before` held, at the same place, with a value
/// equal up to normalisation. Returns the path of the first difference.
fn same_up_to_normalisation(path: &str, before: &Value, after: &Value) -> Result<(), String> {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}/{key}");
                let other = b.get(key).ok_or_else(|| format!("{child} was lost"))?;
                same_up_to_normalisation(&child, value, other)?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (x, y))| same_up_to_normalisation(&format!("{path}/{i}"), x, y)),
        (Value::String(a), Value::String(b)) if a.trim() == b.trim() => Ok(()),
        (Value::String(a), other) if parse_local_timestamp(a).is_ok() => {
            let original = parse_local_timestamp(a).ok().flatten();
            let now = match other {
                Value::Null => None,
                Value::String(s) => parse_local_timestamp(s).map_err(|e| format!("{path}: {e}"))?,
                _ => return Err(format!("{path}: timestamp became {other}")),
            };
            (original == now)
                .then_some(())
                .ok_or_else(|| format!("{path}: {a} became {other}"))
        }
        (Value::Null, Value::String(s)) if s.is_empty() => Ok(()),
        (Value::Null, Value::Array(v)) if v.is_empty() => Ok(()),
        (Value::Null, Value::Bool(false) | Value::Number(_)) => Ok(()),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{path}: {a} became {b}")),
    }
}

fn round_trip(original: &Value) -> Result<(), String> {
    let typed = ChatDocument::from_value(original).map_err(|e| e.to_string())?;
    let bytes = serde_json::to_vec(original).map_err(|e| e.to_string())?;
    if ChatDocument::from_json(&bytes).map_err(|e| e.to_string())? != typed {
        return Err("reading the bytes directly differs from reading the value".into());
    }
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    same_up_to_normalisation("", original, &back)?;
    let again = ChatDocument::from_value(&back).map_err(|e| e.to_string())?;
    (again == typed)
        .then_some(())
        .ok_or_else(|| "second round trip differs".to_owned())
}

#[test]
fn every_reference_sample_validates_and_round_trips() {
    let registry = registry();
    let mut n = 0;
    for entry in std::fs::read_dir(common::samples()).expect("../shared/reference/samples") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let validated = registry
            .validate(&bytes)
            .unwrap_or_else(|r| panic!("{}: {r}", path.display()));
        assert_eq!(validated.chat_uid.len(), 24);
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        round_trip(&value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 6, "expected the six reference samples, found {n}");
}

#[test]
fn unknown_fields_survive_the_round_trip() {
    let mut doc: Value =
        serde_json::from_slice(&common::read_sample("bot-then-transfer.json")).expect("json");
    doc["FutureSection"] = serde_json::json!({"a": [1, {"b": null}]});
    doc["ChatHeader"]["NewFlag"] = Value::Bool(true);
    doc["Lines"][0]["Reaction"] = Value::String("👍".into());
    doc["VisitDetail"]["GeoIP"]["Continent"] = Value::String("EU".into());
    assert!(registry().validate_value(&doc).is_ok());
    round_trip(&doc).expect("round trip keeps unknown fields");
}

#[test]
fn a_lost_field_would_be_detected() {
    let before = serde_json::json!({"a": {"b": 1, "c": "x"}});
    let after = serde_json::json!({"a": {"b": 1}});
    assert_eq!(
        same_up_to_normalisation("", &before, &after),
        Err("/a/c was lost".into())
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]
    #[test]
    fn generated_documents_validate_and_round_trip(seed in any::<u64>(), index in 0u64..1_000_000) {
        let doc = chatvault_gen::Generator::new(seed).chat(index);
        let bytes = serde_json::to_vec(&doc).expect("json");
        let validated = registry().validate(&bytes);
        prop_assert!(validated.is_ok(), "{:?}", validated.err());
        prop_assert_eq!(round_trip(&doc), Ok(()));
    }
}
