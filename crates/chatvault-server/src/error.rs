use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every error the API returns: `{"error":{"code","message","details":[…]}}`, the shape
/// OData clients also understand.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<serde_json::Value>,
    /// The part of the request the error is about (an OData query option).
    pub target: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// The challenge a 401 carries.
    pub www_authenticate: Option<HeaderValue>,
}

/// The error body, as written and as the OpenAPI document describes it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
struct Inner<'a> {
    /// A stable machine-readable code, e.g. `InvalidReport`.
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<Object>)]
    details: &'a [serde_json::Value],
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            target: None,
            retry_after_secs: None,
            www_authenticate: None,
        }
    }

    pub fn with_details(mut self, details: Vec<serde_json::Value>) -> ApiError {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            www_authenticate: Some(HeaderValue::from_static(
                "Basic realm=\"chatvault\", Bearer realm=\"chatvault\"",
            )),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: Inner {
                code: self.code,
                message: &self.message,
                target: self.target.as_deref(),
                details: &self.details,
            },
        })
        .unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no resource at {}", uri.path()),
    )
}
