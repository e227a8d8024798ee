//! The OpenAPI document of every non-OData endpoint (`GET /api/v1/openapi.json`) and the
//! Swagger UI at `/docs`, whose assets are compiled into the binary (no network at build
//! or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use crate::error::ErrorBody;
pub use chatvault_reports::ReportData;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chatvault",
        description = "Archive of the chat server's completed chats: webhook ingest, reports, health. \
The OData feed (`/odata/`) describes itself with `$metadata`.",
    ),
    paths(
        crate::ingest::post_chats,
        crate::ingest::delete_chat,
        crate::health::stats,
        crate::health::healthz,
        crate::health::readyz,
        crate::health::metrics,
        crate::reports::list,
        crate::reports::create,
        crate::reports::get_one,
        crate::reports::replace,
        crate::reports::remove,
        crate::reports::run,
        crate::export::export,
        crate::admin::list_audit,
        crate::admin::list_holds,
        crate::admin::place_hold,
        crate::admin::release_hold,
        crate::admin::erase,
    ),
    components(schemas(ErrorBody, ReportData, chatvault_reports::ReportDefinition, crate::reports::RunBody)),
    modifiers(&Security),
    // Every operation needs an API key unless it says otherwise (health and metrics).
    security(("api_key" = []), ("bearer" = []), ("basic" = [])),
    tags(
        (name = "ingest", description = "Chat documents from the chat server"),
        (name = "reports", description = "Report definitions and results"),
        (name = "export", description = "Entity sets as CSV or Parquet for BI tools"),
        (name = "compliance", description = "Audit log, legal holds and erasure requests (admin scope)"),
        (name = "operations", description = "Health, readiness, metrics, statistics"),
    )
)]
pub struct ApiDoc;

/// The refusals every admin-scope route documents.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses; the handlers build them through ApiError.
pub enum AdminRefusals {
    /// No or unknown API key
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// The key lacks the admin scope
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
}

/// The ways a credential may be presented: a key in a header, as a bearer token (a key,
/// or a JWT from the configured sign-in) or as the Basic password; on exports also in the
/// URL's query (Power BI's "Web API" credential).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, or a token from the configured OpenID Connect issuer",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "api_key_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("api_key"))),
        );
    }
}

/// `/docs` (Swagger UI) and `/api/v1/openapi.json`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    SwaggerUi::new("/docs")
        .url("/api/v1/openapi.json", ApiDoc::openapi())
        .into()
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn every_route_outside_odata_is_documented() {
        let doc = super::ApiDoc::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        for expected in [
            "/api/v1/chats",
            "/api/v1/chats/{chat_uid}",
            "/api/v1/stats",
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/reports",
            "/api/v1/reports/{id}",
            "/api/v1/reports/{id}/run",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }
}
