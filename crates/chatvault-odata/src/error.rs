use chatvault_store::StoreError;
use polars::prelude::PolarsError;

/// Why a request could not be answered. Each variant maps to one HTTP status, so a client
/// can tell its own mistake (400) from a feature the service lacks (501) from a fault (500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is wrong at a known place: a token, a property, a type.
    #[error("{option}: {message} (at position {position})")]
    At {
        option: &'static str,
        /// 1-based character position in the option's text.
        position: usize,
        message: String,
    },
    /// The request is wrong as a whole (an unknown option, a bad number).
    #[error("{0}")]
    Invalid(String),
    /// Longer or deeper than the service accepts.
    #[error("{0}")]
    TooLarge(String),
    /// Valid OData that this service does not implement; never answered with a guess.
    #[error("not implemented: {0}")]
    Unsupported(String),
    #[error("{0}")]
    NotFound(String),
    #[error("query engine: {0}")]
    Engine(#[from] PolarsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueryError {
    /// An error at byte offset `at` of the option's text.
    pub fn syntax(option: &'static str, at: usize, message: impl Into<String>) -> QueryError {
        QueryError::At {
            option,
            position: at + 1,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> QueryError {
        QueryError::Unsupported(message.into())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::At { .. } | QueryError::Invalid(_) | QueryError::TooLarge(_) => 400,
            QueryError::NotFound(_) => 404,
            QueryError::Unsupported(_) => 501,
            QueryError::Engine(_) | QueryError::Store(_) => 500,
        }
    }

    /// The OData error code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::At { .. } => "BadQuery",
            QueryError::Invalid(_) => "BadRequest",
            QueryError::TooLarge(_) => "QueryTooLarge",
            QueryError::NotFound(_) => "NotFound",
            QueryError::Unsupported(_) => "NotImplemented",
            QueryError::Engine(_) | QueryError::Store(_) => "QueryFailed",
        }
    }

    /// Which query option the error is about, for the OData error's `target`.
    pub fn target(&self) -> Option<&'static str> {
        match self {
            QueryError::At { option, .. } => Some(option),
            _ => None,
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
