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
mod validate;

pub use anonymise::{Anonymisation, PersonalField, MASK as ANONYMISED_MASK};
pub use document::{
    ChatDocument, ChatHeader, GeoIp, Line, Page, Role, SurveyAnswer, VisitDetail,
    COSMOS_SYSTEM_PROPERTIES,
};
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
