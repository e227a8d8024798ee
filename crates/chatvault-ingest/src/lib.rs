//! The ingest pipeline and its sources.
//!
//! Owns the one path every document takes: split a payload into documents, validate each
//! against the schemas, decide whether it is new, changed or a repeat, append it to the
//! archive (group commit), record it in the catalog, and only then report the outcome.
//! The sources — webhook payloads, the watched folder, bulk import — all submit through
//! [`Pipeline`], so they share one behaviour for validation, idempotency and durability.
//!
//! Must not speak HTTP (the server crate maps outcomes to responses) and must never report
//! a document as accepted before its archive record is fsynced and its catalog row is
//! committed.

mod activity;
mod cosmos;
mod folder;
mod import;
mod payload;
mod pipeline;
mod replay;
mod tally;

pub use activity::{Activity, Refusal, SourceActivity};
pub use cosmos::{
    BackfillSummary, CosmosConfig, CosmosSource, CA_FILE_ENV,
    CHECKPOINT_PREFIX as COSMOS_CHECKPOINT_PREFIX,
};
pub use folder::{FolderConfig, FolderSource};
pub use import::{collect_files, import_paths, ImportProgress, ImportSummary};
pub use payload::{
    decode_body, format_of_path, split_documents, Encoding, PayloadError, PayloadFormat, Piece,
};
pub use pipeline::{
    prepare, prepare_one, Outcome, OutcomeKind, Pending, Pipeline, PipelineConfig, Prepared,
    SubmitError,
};
pub use replay::catch_up_catalog;
pub use tally::OutcomeTally;

pub use chatvault_archive::Source;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Archive(#[from] chatvault_archive::ArchiveError),
    #[error(transparent)]
    Catalog(#[from] chatvault_catalog::CatalogError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("folder watcher: {0}")]
    Watch(#[from] notify::Error),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The Cosmos DB source cannot read its container (wrong key, missing container,
    /// untrusted certificate, repeated failures); the message says which, never the key.
    #[error("{0}")]
    Cosmos(String),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
