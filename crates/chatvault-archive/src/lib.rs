//! The raw archive: every accepted version of every chat, and every delete, in order.
//!
//! Owns append-only Apache Avro object-container segments (`segment-NNNNNNNNNN.avro`),
//! the group commit that lets concurrent appends share one `fsync`, the hash chain that
//! links each segment to the one before it, torn-tail repair on open, and sequential
//! replay. After a crash the archive is the truth the rest of the system is rebuilt from.
//!
//! Must not know about HTTP, the catalog or the columnar store, and must never rewrite a
//! byte that an acknowledged append covered, except through the erasure rewrite
//! (`rewrite.rs`), which empties named chats' records in closed segments only.

mod codec;
mod record;
mod rewrite;
mod segment;
mod writer;

pub use record::{Entry, Operation, Record, Source, ARCHIVE_RECORD_SCHEMA};
pub use rewrite::{
    erase_entry, erase_in_segment, rewrite_segment, segments_holding, segments_where,
    SegmentRewrite,
};
pub use segment::{
    read_records, read_records_through, read_segments, replay_chunks, replay_final_versions,
    segment_path, verify, ErasureNote, FinalVersions, RewrittenSegment, SegmentSummary,
    VerifyReport,
};
pub use writer::{Archive, ArchiveConfig, ArchiveStats, OpenReport, Position};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("archive segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the archive stopped accepting writes after an earlier I/O failure ({0}); restart to repair it")]
    Poisoned(String),
    #[error("the archive writer has shut down")]
    Closed,
    #[error("{0} is the open segment and cannot be rewritten; restart so that it is closed")]
    OpenSegment(PathBuf),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
