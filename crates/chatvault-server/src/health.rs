use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatvault_catalog::Scope;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::error::ApiError;
use crate::AppState;

/// How each background source is doing, as shown by `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub healthy: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    sources: Arc<RwLock<BTreeMap<String, SourceStatus>>>,
}

impl Health {
    pub fn set(&self, source: &str, healthy: bool, detail: impl Into<String>) {
        if let Ok(mut map) = self.sources.write() {
            map.insert(
                source.to_owned(),
                SourceStatus {
                    healthy,
                    detail: detail.into(),
                },
            );
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceStatus> {
        self.sources.read().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = Object)),
    security(()))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the catalog answers, the pipeline accepts writes, every source is healthy.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready; every check with its detail", body = Object),
        (status = 503, description = "Not ready; the failing check says why", body = Object),
    ),
    security(()))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let catalog = match state.catalog.next_seq().await {
        Ok(seq) => SourceStatus {
            healthy: true,
            detail: format!("archive applied up to seq {seq}"),
        },
        Err(e) => SourceStatus {
            healthy: false,
            detail: e.to_string(),
        },
    };
    let pipeline = match state.pipeline.failure() {
        None => SourceStatus {
            healthy: true,
            detail: "accepting documents".into(),
        },
        Some(reason) => SourceStatus {
            healthy: false,
            detail: reason,
        },
    };
    let mut checks = state.health.snapshot();
    checks.insert("catalog".into(), catalog);
    checks.insert("pipeline".into(), pipeline);
    let ready = checks.values().all(|c| c.healthy);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks}))).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, description = "Metrics are not enabled in this process", body = crate::openapi::ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let crate::MetricsAccess::Restricted { token } = &state.config.metrics_access {
        let presented = crate::auth::presented_credential(&headers);
        let token_matches = match (token, &presented) {
            (Some(token), Some(presented)) => same_secret(token, presented),
            _ => false,
        };
        if !token_matches {
            if let Err(e) = crate::auth::require(&state, &headers, Scope::Admin).await {
                return e.into_response();
            }
        }
    }
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "metrics are not enabled in this process",
        )
        .into_response(),
    }
}

/// Compares two secrets in time that depends on neither: both are hashed first, and the
/// digests compared without stopping at the first difference.
fn same_secret(expected: &str, presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// Chat counts of the sites the caller may see and, for a caller that sees every site,
/// ingest totals per source and outcome (scope `read`).
#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses(
        (status = 200, description = "Chat counts of the caller's sites; ingest totals (which span every site) only for a caller that sees every site", body = Object),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the read scope", body = crate::openapi::ErrorBody),
    ))]
pub async fn stats(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let caller = crate::auth::require(&state, &headers, Scope::Read).await?;
    let unavailable = |e: chatvault_catalog::CatalogError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CatalogUnavailable",
            e.to_string(),
        )
    };
    let (live, deleted) = state
        .catalog
        .chat_counts(caller.sites.as_deref())
        .await
        .map_err(unavailable)?;
    let body = match &caller.sites {
        Some(sites) => serde_json::json!({"chats": live, "deleted_chats": deleted, "sites": sites}),
        None => {
            let ingest = state.catalog.ingest_stats().await.map_err(unavailable)?;
            serde_json::json!({"chats": live, "deleted_chats": deleted, "ingest": ingest})
        }
    };
    Ok(Json(body).into_response())
}

/// Request counts and latencies per route, for Prometheus.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    tracing::debug!(%method, %route, %status, elapsed_ms = elapsed * 1000.0, "request");
    metrics::counter!("chatvault_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("chatvault_http_request_seconds", "method" => method, "route" => route)
        .record(elapsed);
    response
}
