//! The OData routes: authentication, headers and streaming around `chatvault-odata`.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chatvault_catalog::Scope;
use chatvault_odata::{Access, Body, QueryError, Request, Service};
use futures::StreamExt as _;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

const ODATA_VERSION: HeaderValue = HeaderValue::from_static("4.0");
/// Formatted chunks waiting for a slow client before formatting pauses.
const CHUNKS_IN_FLIGHT: usize = 4;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn query_error(e: QueryError) -> ApiError {
    if e.status() >= 500 {
        tracing::error!(error = %e, "OData query failed");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut error = ApiError::new(status, e.code(), e.to_string());
    error.target = e.target().map(str::to_owned);
    error
}

/// The service root as the client reached it, so links work behind a proxy too.
fn base_url(headers: &HeaderMap) -> String {
    let scheme = header(headers, "x-forwarded-proto").unwrap_or("http");
    let host = header(headers, "x-forwarded-host")
        .or_else(|| header(headers, "host"))
        .unwrap_or("localhost");
    format!("{scheme}://{host}/odata/")
}

/// OData 4.0 and 4.01 clients are served; one that cannot read 4.0 is told so.
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(max) = header(headers, "odata-maxversion") {
        let major = max
            .trim()
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_some_and(|m| m < 4) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UnsupportedVersion",
                format!("this service speaks OData 4.0; the request allows at most {max}"),
            ));
        }
    }
    Ok(())
}

pub async fn root(state: State<AppState>, uri: OriginalUri, headers: HeaderMap) -> Response {
    handle(state, uri, headers, String::new()).await
}

pub async fn resource(
    state: State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    handle(state, uri, headers, path).await
}

async fn handle(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    path: String,
) -> Response {
    let mut response = match answer(&state, &uri, &headers, path).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert("odata-version", ODATA_VERSION);
    response
}

async fn answer(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    path: String,
) -> Result<Response, ApiError> {
    let Some(service) = state.odata.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FeedUnavailable",
            "the OData feed is not enabled on this node",
        ));
    };
    check_version(headers)?;
    // $metadata and the service document describe the model, not data: still keyed, so
    // that an unauthenticated probe learns nothing, but any scope may read them.
    let key = auth::require(state, headers, Scope::Read).await?;
    let query = uri.query().unwrap_or("").to_owned();
    let accept = header(headers, "accept").map(str::to_owned);
    let prefer = header(headers, "prefer").map(str::to_owned);
    let base_url = base_url(headers);
    let access = Access {
        sites: key.sites.clone(),
    };
    let reply = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now().naive_utc();
        let request = Request {
            path: &path,
            query: &query,
            accept: accept.as_deref(),
            prefer: prefer.as_deref(),
            base_url,
            access,
            now,
        };
        service.handle(&request)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "QueryFailed",
            e.to_string(),
        )
    })?
    .map_err(query_error)?;
    let body = match reply.body {
        Body::Bytes(bytes) => axum::body::Body::from(bytes),
        Body::Page(writer) => stream(writer),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&reply.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(applied) = reply
        .preference_applied
        .and_then(|p| HeaderValue::from_str(&p).ok())
    {
        headers.insert("preference-applied", applied);
    }
    Ok(response)
}

/// Formats the page on a blocking thread and sends it as it is produced; a client that
/// reads slowly holds back formatting instead of growing a buffer.
fn stream(writer: Box<chatvault_odata::PageWriter>) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        for chunk in *writer {
            let chunk = chunk.map_err(|e| {
                tracing::error!(error = %e, "OData response failed while streaming");
                std::io::Error::other(e.to_string())
            });
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    // Fused: the compression layer polls once more after the end, which `unfold` forbids.
    let chunks =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .fuse();
    axum::body::Body::from_stream(chunks)
}

pub type SharedService = Arc<Service>;
