//! The console: the web pages `serve` hands to a browser at `/console/`, so that
//! compliance officers and analysts can find, read, hold, erase and report on chats
//! without a terminal.
//!
//! Owns the pages (askama templates compiled into the binary, charts drawn as SVG on the
//! server), the console's sign-in sessions and their CSRF tokens, and the security headers
//! of its responses. Every page acts with the signed-in key's scopes and sites.
//!
//! Must not decide anything the API decides: what a key may see, how a hold or an
//! erasure is made, what an export contains come from `chatvault-server` and the
//! libraries under it, so the console and the API can never disagree.

mod assets;
mod chat;
mod compliance;
mod diff;
mod error;
mod feed;
mod home;
mod ingest;
mod keys;
mod reports;
mod search;
mod session;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Extension, Router};
use chatvault_server::AppState;

pub use error::ConsoleError;

/// What the console needs beyond the service's state.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// And after this long in any case.
    pub session_absolute: Duration,
    /// The retention policy in words, for the compliance page (None: no policy).
    pub retention: Option<String>,
    /// How often `serve` applies it.
    pub retention_every: Option<Duration>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            retention: None,
            retention_every: None,
        }
    }
}

/// The console's routes, to be served beside the API (`chatvault_server::router_with`).
pub fn routes(config: ConsoleConfig) -> Router<AppState> {
    let pages: Router<AppState> = Router::new()
        .route("/console/", get(home::page))
        .route("/console/sign-in", post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/search", get(search::page))
        .route("/console/search.csv", get(search::export))
        .route("/console/chats/{chat_uid}", get(chat::page))
        .route("/console/chats/{chat_uid}/versions", get(chat::versions))
        .route(
            "/console/chats/{chat_uid}/transcript.html",
            get(chat::transcript),
        )
        .route(
            "/console/chats/{chat_uid}/document.json",
            get(chat::document),
        )
        .route("/console/chats/{chat_uid}/hold", post(chat::hold))
        .route("/console/chats/{chat_uid}/erase", post(chat::erase))
        .route("/console/reports", get(reports::library))
        .route("/console/reports/{id}", get(reports::page))
        .route("/console/reports/{id}/result.csv", get(reports::csv))
        .route("/console/compliance", get(compliance::page))
        .route("/console/compliance/holds", post(compliance::place_hold))
        .route(
            "/console/compliance/holds/{id}/release",
            post(compliance::release_hold),
        )
        .route("/console/compliance/erasures", post(compliance::erase))
        .route("/console/ingest", get(ingest::page))
        .route("/console/keys", get(keys::page).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/{*unknown}", get(error::not_found))
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }));
    pages
        .layer(axum::middleware::map_response(security_headers))
        .layer(Extension(Arc::new(config)))
}

/// No script but the console's own, no framing, no guessing of content types, and no
/// caching of pages that show personal data.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    // A download that carries its own styles (the transcript) sets its own policy.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
