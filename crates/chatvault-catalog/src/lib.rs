//! The catalog: what the system knows about the archive, in SQL.
//!
//! Owns the chat index (ChatUID → current version, content hash, archive position,
//! deleted flag), the archive watermark used for replay, source checkpoints, ingest
//! statistics, API keys and the console sessions opened with them, report definitions,
//! the columnar store's file registry, legal holds and the hash-chained audit log, over
//! SQLite (embedded default) or PostgreSQL (shared, multi-node), chosen by the URL. Both run the same migrations and the same SQL.
//!
//! Must not read or write the archive or the columnar store: it is an index that can be
//! rebuilt from the archive, never the only copy of anything a user sent. (The audit log
//! is the exception: it records what operators did, which no archive holds.)

mod audit;
mod chats;
mod compliance;
mod keys;
mod pool;
mod reports;
mod sessions;
mod store;

pub use audit::{AuditEvent, AuditRecord, AuditVerifyReport};
pub use chats::{AppliedChange, ChatState, IngestStat};
pub use compliance::{HoldScope, LegalHold};
pub use keys::{ApiKey, NewKey, Scope};
pub use pool::{redact, Backend, Catalog};
pub use reports::{ReportWrite, StoredReport};
pub use sessions::{Session, SessionLimits};
pub use store::{StoreChange, StoreFile, StoreSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot open the catalog at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("catalog query failed ({context}): {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("catalog holds an invalid value: {0}")]
    Invalid(String),
    #[error("unsupported catalog URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("{0}; for PostgreSQL, use its own tools (pg_dump, or the service's backups)")]
    NotEmbedded(&'static str),
}

pub(crate) fn query_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |source| CatalogError::Query { context, source }
}

/// The catalog's clock for the records it stamps itself (audit entries, holds), so that
/// no caller can backdate them.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
