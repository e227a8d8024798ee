//! The HTTP service: routes, authentication, the JSON error format, health and metrics,
//! the report routes, and the OpenAPI document with its Swagger UI.
//!
//! Owns the mapping between HTTP and the ingest pipeline's and the report engine's
//! outcomes (status codes, `Retry-After`, per-document result lists), who a request acts
//! as (API keys, single sign-on tokens, published sites) and what it may see, and how
//! `serve` meets the network (TLS, HTTP/2, compression, the brake on guessing).
//!
//! Must not decide anything about documents itself: validation, idempotency and durability
//! belong to `chatvault-ingest`, so every source behaves the same.

mod admin;
mod auth;
mod error;
mod export;
mod health;
mod ingest;
mod listen;
mod odata;
mod openapi;
mod reports;
mod tls;

use axum::routing::{delete, get, post};
use axum::Router;
use chatvault_catalog::Catalog;
use chatvault_ingest::Pipeline;
use chatvault_model::SchemaRegistry;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub use admin::{
    erase_as, place_hold_as, record as audit, release_hold_as, ErasureRequest, HoldRequest,
};
pub use auth::{FailedSignIn, Principal, ThrottleConfig};
pub use error::ApiError;
pub use export::export_as;
pub use listen::{serve, Connection, Listening};
pub use reports::ReportService;
pub use tls::{Tls, TlsError, TlsFiles};
/// How hard responses are compressed: a level on each algorithm's own scale.
pub use tower_http::CompressionLevel;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body, before and after decompression.
    pub max_body_bytes: usize,
    /// When set, ingest requests must carry `X-Chatvault-Signature: sha256=<hex HMAC>`.
    pub webhook_secret: Option<String>,
    /// Ingest requests handled at once; more get 429.
    pub max_concurrent_ingest: usize,
    /// Ingest routes refuse a connection without a client certificate from the configured
    /// client CA (mutual TLS).
    pub require_client_certificate: bool,
    /// The query parameter the feed and exports take a key from (Power BI's "Web API"
    /// credential); None turns it off.
    pub api_key_param: Option<String>,
    /// Sites a request without any credential may read (published read-only); empty
    /// refuses such requests.
    pub anonymous_sites: Vec<i64>,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    pub throttle: ThrottleConfig,
    /// Proxies whose `X-Forwarded-For` names the client (for the brake on guessing and
    /// the audit log); any other peer is the client itself.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Responses are compressed at this level (gzip, deflate, br and zstd alike) when
    /// the client accepts it.
    pub compression_level: CompressionLevel,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default)]
pub enum MetricsAccess {
    /// Anyone who reaches the port (a scraper on a private network).
    #[default]
    Open,
    /// A key or token with the admin scope, or `Authorization: Bearer` with this token
    /// when one is set (for a scraper that should hold nothing else).
    Restricted { token: Option<String> },
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 32 * 1024 * 1024,
            webhook_secret: None,
            max_concurrent_ingest: 256,
            require_client_certificate: false,
            api_key_param: Some("api_key".into()),
            anonymous_sites: Vec::new(),
            metrics_access: MetricsAccess::Open,
            throttle: ThrottleConfig::default(),
            trusted_proxies: Vec::new(),
            compression_level: CompressionLevel::Fastest,
        }
    }
}

/// Everything a request handler may need.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Catalog,
    pub pipeline: Pipeline,
    pub registry: Arc<SchemaRegistry>,
    pub config: Arc<ServerConfig>,
    pub metrics: Option<PrometheusHandle>,
    pub health: health::Health,
    /// The OData feed; None on a node that only ingests.
    pub odata: Option<odata::SharedService>,
    /// The report routes answer 503 without it.
    pub reports: Option<Arc<ReportService>>,
    /// The data directory's stores, for erasure requests; 503 without them.
    pub compliance: Option<chatvault_compliance::Stores>,
    /// Verifies single sign-on tokens; None accepts API keys only.
    pub oidc: Option<chatvault_oidc::Verifier>,
    ingest_slots: Arc<Semaphore>,
    keys: Arc<auth::KeyCache>,
    throttle: Arc<auth::AuthThrottle>,
}

impl AppState {
    pub fn new(
        catalog: Catalog,
        pipeline: Pipeline,
        registry: Arc<SchemaRegistry>,
        config: ServerConfig,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        AppState {
            ingest_slots: Arc::new(Semaphore::new(config.max_concurrent_ingest.max(1))),
            keys: Arc::default(),
            throttle: Arc::new(auth::AuthThrottle::new(config.throttle)),
            oidc: None,
            catalog,
            pipeline,
            registry,
            config: Arc::new(config),
            metrics,
            health: health::Health::default(),
            odata: None,
            reports: None,
            compliance: None,
        }
    }

    pub fn with_odata(mut self, service: chatvault_odata::Service) -> AppState {
        self.odata = Some(Arc::new(service));
        self
    }

    pub fn with_reports(mut self, reports: ReportService) -> AppState {
        self.reports = Some(Arc::new(reports));
        self
    }

    pub fn with_oidc(mut self, verifier: chatvault_oidc::Verifier) -> AppState {
        self.oidc = Some(verifier);
        self
    }

    pub fn with_compliance(mut self, stores: chatvault_compliance::Stores) -> AppState {
        self.compliance = Some(stores);
        self
    }
}

pub use health::{Health, SourceStatus};

/// Streamed compression of every response the client accepts it for, except what is
/// compressed already (Parquet, and bodies that carry their own Content-Encoding).
fn compression(
    level: CompressionLevel,
) -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate};
    tower_http::compression::CompressionLayer::new()
        .quality(level)
        .compress_when(tower_http::compression::DefaultPredicate::new().and(
            NotForContentType::new(chatvault_odata::export::ExportFormat::Parquet.content_type()),
        ))
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The HTTP surface with `pages` (the console's) served beside the API, behind the same
/// brake on guessing, compression and request metrics.
pub fn router_with(state: AppState, pages: Router<AppState>) -> Router {
    Router::new()
        .route("/api/v1/chats", post(ingest::post_chats))
        .route("/api/v1/chats/{chat_uid}", delete(ingest::delete_chat))
        .route("/api/v1/stats", get(health::stats))
        .route("/api/v1/export/{file}", get(export::export))
        .route("/odata", get(odata::root))
        .route("/odata/", get(odata::root))
        .route("/odata/{*path}", get(odata::resource))
        .route("/api/v1/audit", get(admin::list_audit))
        .route(
            "/api/v1/holds",
            get(admin::list_holds).post(admin::place_hold),
        )
        .route("/api/v1/holds/{id}", delete(admin::release_hold))
        .route("/api/v1/erasures", post(admin::erase))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/reports", get(reports::list).post(reports::create))
        .route(
            "/api/v1/reports/{id}",
            get(reports::get_one)
                .put(reports::replace)
                .delete(reports::remove),
        )
        .route("/api/v1/reports/{id}/run", post(reports::run))
        .merge(openapi::routes())
        .merge(pages)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(compression(state.config.compression_level))
        .layer(axum::middleware::from_fn(health::track_requests))
        .with_state(state)
}
