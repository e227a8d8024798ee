//! Reports: definitions in the chat server's style, the built-in library, parameter
//! binding and execution with polars SQL over the columnar store, and results as JSON
//! (the chat server's report-data shape) or CSV.
//!
//! Owns what a report may do: one SELECT over the store's tables, functions from an
//! allowlist, parameters bound as typed literals, the caller's site restriction applied
//! to every table before the SQL sees it, a row limit and a time limit.
//!
//! Must not trust a report's SQL for access control, reach the network or files, or know
//! anything of HTTP: the server and the binary map its errors to their own surfaces.

mod definition;
mod engine;
mod library;
mod result;
mod sql;

pub use definition::{builtin_reports, ReportDefinition, ROW_LIMIT};
pub use engine::{resolve_dates, Engine, EngineConfig, RunRequest};
pub use library::Library;
pub use result::{ReportData, ReportResult, ResultColumn};
pub use sql::{bound_sql, Params};

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error("no report has the id {0:?}")]
    NotFound(String),
    #[error(
        "report {0:?} is built in and cannot be changed or deleted; create a custom report instead"
    )]
    Builtin(String),
    #[error("a report with the id {0:?} exists already")]
    Exists(String),
    #[error("invalid report definition: {0}")]
    InvalidDefinition(String),
    #[error("invalid report SQL: {0}")]
    InvalidSql(String),
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the report ran longer than the limit of {0} s and was abandoned")]
    Timeout(u64),
    #[error("the report failed: {0}")]
    Execution(String),
    #[error(transparent)]
    Catalog(#[from] chatvault_catalog::CatalogError),
    #[error(transparent)]
    Store(#[from] chatvault_store::StoreError),
}

pub type Result<T, E = ReportsError> = std::result::Result<T, E>;
