//! What the console shows when a page cannot be shown.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chatvault_server::ApiError;

use crate::view::{render, Nav};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Also what another site's chat answers, so that its existence does not leak.
    #[error("there is no such page, or nothing here that this key may see")]
    NotFound,
    #[error("sign in first")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the service cannot answer now: {0}")]
    Unavailable(String),
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Api(e) => e.status,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let page = ErrorPage {
            nav: Nav::signed_out(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.to_string(),
        };
        (status, render(&page)).into_response()
    }
}

pub async fn not_found() -> ConsoleError {
    ConsoleError::NotFound
}
