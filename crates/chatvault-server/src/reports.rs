//! `/api/v1/reports`: list, read and run reports (scope `read`), and create, replace and
//! delete custom reports (scope `admin`).

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatvault_catalog::Scope;
use chatvault_reports::{Engine, Library, ReportDefinition, ReportsError, RunRequest};
use serde::Deserialize;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

/// What the report routes need: the definitions and the engine that runs them.
#[derive(Clone)]
pub struct ReportService {
    pub library: Library,
    pub engine: Engine,
}

/// Body of `POST /api/v1/reports/{id}/run`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RunBody {
    /// The site to report on.
    pub site_key: i32,
    /// First day (inclusive), YYYY-MM-DD. Optional when the report has a date selector preset.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub from_date: Option<chrono::NaiveDate>,
    /// Last day (inclusive), YYYY-MM-DD.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub to_date: Option<chrono::NaiveDate>,
}

fn reports_error(e: ReportsError) -> ApiError {
    let (status, code) = match &e {
        ReportsError::NotFound(_) => (StatusCode::NOT_FOUND, "ReportNotFound"),
        ReportsError::Builtin(_) => (StatusCode::CONFLICT, "BuiltinReport"),
        ReportsError::Exists(_) => (StatusCode::CONFLICT, "ReportExists"),
        ReportsError::InvalidDefinition(_) | ReportsError::InvalidSql(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "InvalidReport")
        }
        ReportsError::InvalidParameters(_) => (StatusCode::BAD_REQUEST, "InvalidParameters"),
        ReportsError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        ReportsError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "ReportTimeout"),
        // A stored report whose SQL fails on the data (the dry run passed on empty tables).
        ReportsError::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "ReportFailed"),
        ReportsError::Catalog(_) | ReportsError::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Unavailable")
        }
    };
    ApiError::new(status, code, e.to_string())
}

fn service(state: &AppState) -> Result<&ReportService, ApiError> {
    state.reports.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "reports are not available in this process",
        )
    })
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidBody",
            format!("the body is not a valid JSON object of the expected shape: {e}"),
        )
    })
}

/// A key limited to some sites sees the reports that can run for at least one of them.
fn visible(key: &crate::Principal, report: &ReportDefinition) -> bool {
    match &key.sites {
        None => true,
        Some(sites) => sites.iter().any(|s| report.allows_site(*s)),
    }
}

#[utoipa::path(get, path = "/api/v1/reports", tag = "reports",
    responses(
        (status = 200, description = "The report definitions this key may run", body = Vec<ReportDefinition>),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the read scope", body = crate::openapi::ErrorBody),
    ))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Read).await?;
    let reports = service(&state)?
        .library
        .list()
        .await
        .map_err(reports_error)?;
    let reports: Vec<ReportDefinition> = reports.into_iter().filter(|r| visible(&key, r)).collect();
    Ok(Json(reports).into_response())
}

#[utoipa::path(get, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    responses(
        (status = 200, description = "The report definition", body = ReportDefinition),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such report (or not visible to this key)", body = crate::openapi::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Read).await?;
    let report = service(&state)?
        .library
        .get(&id)
        .await
        .map_err(reports_error)?;
    if !visible(&key, &report) {
        return Err(reports_error(ReportsError::NotFound(id)));
    }
    Ok(Json(report).into_response())
}

#[utoipa::path(post, path = "/api/v1/reports/{id}/run", tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    request_body(content = RunBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The report's data. JSON in the chat server's report-data shape, or CSV with `Accept: text/csv`",
            content(
                (crate::openapi::ReportData = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, description = "Bad body or dates", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key or the report does not cover this site", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such report", body = crate::openapi::ErrorBody),
        (status = 422, description = "The report failed on the data", body = crate::openapi::ErrorBody),
        (status = 504, description = "The report ran longer than the time limit", body = crate::openapi::ErrorBody),
    ))]
pub async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Read).await?;
    let service = service(&state)?;
    let body: RunBody = json_body(&body)?;
    let report = service.library.get(&id).await.map_err(reports_error)?;
    let request = RunRequest {
        site_key: body.site_key,
        from: body.from_date,
        to: body.to_date,
    };
    let result = service
        .engine
        .run(
            &report,
            &request,
            key.sites.as_deref(),
            service.engine.today(),
        )
        .await
        .map_err(reports_error)?;
    if wants_csv(&headers) {
        let csv = result.to_csv().map_err(reports_error)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(Json(result.to_json()).into_response())
}

/// CSV when the client prefers it (`Accept: text/csv`, as BI tools' CSV connectors send).
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        })
}

#[utoipa::path(post, path = "/api/v1/reports", tag = "reports",
    request_body(content = ReportDefinition, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (after a dry run of the SQL on empty tables)", body = ReportDefinition),
        (status = 400, description = "Not a report definition", body = crate::openapi::ErrorBody),
        crate::openapi::AdminRefusals,
        (status = 409, description = "The id is taken", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields or SQL, with the reason", body = crate::openapi::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    let report: ReportDefinition = json_body(&body)?;
    let saved = service(&state)?
        .library
        .create(&report)
        .await
        .map_err(reports_error)?;
    crate::admin::record(
        &state,
        &key,
        peer,
        "report.create",
        &saved.id,
        serde_json::Value::Null,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(saved)).into_response())
}

#[utoipa::path(put, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    request_body(content = ReportDefinition, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = ReportDefinition),
        (status = 400, description = "Not a report definition", body = crate::openapi::ErrorBody),
        crate::openapi::AdminRefusals,
        (status = 404, description = "No such report", body = crate::openapi::ErrorBody),
        (status = 409, description = "Built-in reports are read-only", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields or SQL, with the reason", body = crate::openapi::ErrorBody),
    ))]
pub async fn replace(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    let report: ReportDefinition = json_body(&body)?;
    let saved = service(&state)?
        .library
        .update(&id, &report)
        .await
        .map_err(reports_error)?;
    crate::admin::record(
        &state,
        &key,
        peer,
        "report.update",
        &saved.id,
        serde_json::Value::Null,
    )
    .await?;
    Ok(Json(saved).into_response())
}

#[utoipa::path(delete, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    responses(
        (status = 204, description = "Deleted"),
        crate::openapi::AdminRefusals,
        (status = 404, description = "No such report", body = crate::openapi::ErrorBody),
        (status = 409, description = "Built-in reports are read-only", body = crate::openapi::ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    service(&state)?
        .library
        .delete(&id)
        .await
        .map_err(reports_error)?;
    crate::admin::record(
        &state,
        &key,
        peer,
        "report.delete",
        &id,
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::wants_csv;
    use axum::http::{header, HeaderMap, HeaderValue};

    #[test]
    fn csv_is_chosen_by_the_accept_header() {
        let mut headers = HeaderMap::new();
        assert!(!wants_csv(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_csv(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, Text/CSV;q=0.9"),
        );
        assert!(wants_csv(&headers));
    }
}
