//! Compliance across the archive, the catalog and the columnar store.
//!
//! Owns the checks and operations that span all three: `verify` (the archive's hash
//! chain, every record's content hash, and that the catalog and the store hold exactly
//! what the archive says), signed digests of the archive and audit-log heads that a
//! third party can later check, legal holds' coverage, erasure and retention, and the
//! export of a person's chats for legal review.
//!
//! Must not change what the archive or catalog hold behind their own APIs: it reads
//! them, and anything it records goes through the catalog (audit log) or the archive.

mod digest;
mod erase;
mod legal;
mod verify;

pub use digest::{
    check_digest, export_digest, spawn_periodic_digests, write_digest, DigestBody, DigestCheck,
    DigestSegment, SignedDigest, SigningKey, DIGEST_ALGORITHM,
};
pub use erase::{
    execute_erasure, holds_covering, plan_erasure, plan_retention, resume_erasure, ErasurePlan,
    ErasureReceipt, Person, Removal, Removed, RetentionAction, Stores,
};
pub use legal::{
    chat_history, legal_export, transcript_html, ArchivedVersion, ChatBundle, LegalBundle,
};
pub use verify::{verify_all, VerifyOutcome};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error(transparent)]
    Archive(#[from] chatvault_archive::ArchiveError),
    #[error(transparent)]
    Catalog(#[from] chatvault_catalog::CatalogError),
    #[error(transparent)]
    Store(#[from] chatvault_store::StoreError),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid digest signing key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("not a Chatvault digest: {0}")]
    BadDigest(String),
    #[error("the erasure journal {0} is unreadable: {1}")]
    BadJournal(PathBuf, String),
    #[error("background task failed: {0}")]
    Task(String),
}

use chatvault_catalog::now_us;

impl ComplianceError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ComplianceError {
        let path = path.into();
        move |source| ComplianceError::Io { path, source }
    }
}

pub type Result<T, E = ComplianceError> = std::result::Result<T, E>;
