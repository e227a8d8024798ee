//! The columnar store: the current state of every chat as Parquet tables.
//!
//! Owns the write buffer, flushes to Hive-partitioned Parquet (`Table/SiteKey=3/Month=2024-08/`),
//! the registry of live files (kept in the catalog, changed atomically), superseding and
//! deleting versions, compaction, recovery from the archive and full rebuilds, and hands
//! out one polars `LazyFrame` per table with partition pruning and scan push-down.
//!
//! Must not decide what is current: the archive and catalog do. The store only mirrors
//! them, and everything in it can be rebuilt from the archive.

mod frame;
mod order;
mod parquet;
mod rebuild;
mod runs;
mod store;

pub use frame::{empty_frame, table_schema};
pub use store::{
    day_summary_of, table, Background, CompactReport, FlushReport, Partition, ScanFilter, Store,
    StoreConfig, StoreUpdate,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("columnar store: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    #[error("columnar store I/O on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] chatvault_catalog::CatalogError),
    #[error(transparent)]
    Archive(#[from] chatvault_archive::ArchiveError),
    #[error("archive record {seq} holds a document the model cannot read: {reason}")]
    BadArchivedDocument { seq: u64, reason: String },
    /// Names the setting: polars' own message gives only the valid range.
    #[error("store zstd_level {level} cannot be used: {reason}")]
    ZstdLevel { level: i32, reason: String },
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
