//! The chat document as the chat server writes it.
//!
//! Owns the serde types of a chat document, the normalisation rules (unset timestamps,
//! trimmed strings, line roles), the content hash that decides whether a re-sent chat
//! changed, validation against the versioned JSON Schemas in `schemas/`, the redaction a
//! site chooses on ingest (IP addresses, card numbers), and the
//! flattening of a chat into the rows of the analytical tables (one definition of every
//! column, shared by the store, OData and exports).
//!
//! Must not do I/O: no files, no network, no clocks. Everything here is a pure function
//! of its input so that every source and every replay reaches the same answer.

mod anonymise;
#[macro_use]
mod fields;
mod document;
mod flatten;
mod hash;
mod redact;
mod tables;
mod time;
mod tree;
mod validate;

pub use anonymise::{Anonymisation, PersonalField, MASK as ANONYMISED_MASK};
pub use document::{
    ChatDocument, ChatHeader, GeoIp, Line, Page, Role, SurveyAnswer, VisitDetail,
    COSMOS_SYSTEM_PROPERTIES,
};
pub use fields::Text;
pub use flatten::{flatten, FlatChat};
pub use hash::{content_hash, ContentHash};
pub use redact::{mask_card_numbers, Redaction, RedactionPolicy};
pub use tables::{
    ChatRow, ColumnDef, ColumnKind, ColumnSink, ColumnValue, LineRow, PageRow, SurveyRow, TableDef,
    TagRow, TABLES,
};
pub use time::{parse_local_timestamp, LocalTimestamp, TimestampError};
pub use validate::{Rejection, SchemaRegistry, ValidatedDocument, MAX_DOCUMENT_BYTES};

/// The chat server's reference samples, beside the repository, for unit tests.
#[cfg(test)]
pub(crate) fn reference_samples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/samples")
}

/// Any JSON: strings drawn to include quotes, backslashes, control characters and
/// non-ASCII text, keys likewise, nested a few levels.
#[cfg(test)]
pub(crate) fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
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

/// JSON text of `value` as a producer might write it: each object's keys in reverse order,
/// and each key first given `null` and then its value (a repeated key: the last one wins).
#[cfg(test)]
pub(crate) fn scrambled_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(scrambled_json).collect();
            format!("[ {} ]", items.join(" , "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| {
                    let key = Value::from(k.as_str()).to_string();
                    format!("{key}: null, {key} :{}", scrambled_json(v))
                })
                .collect();
            format!("{{{}}}", entries.join(",\n"))
        }
        scalar => scalar.to_string(),
    }
}
