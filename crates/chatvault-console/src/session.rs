//! Signing in with an API key, the session cookie that follows, and the CSRF token every
//! state-changing form carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use chatvault_catalog::{Scope, SessionLimits};
use chatvault_server::{AppState, Connection, FailedSignIn, Principal};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ConsoleError;
use crate::view::{render, Nav};
use crate::ConsoleConfig;

/// Over TLS the cookie takes the `__Host-` prefix: the browser then refuses it unless it
/// is `Secure`, host-only and for `/`, so no other site or path can plant or read one.
const TLS_COOKIE: &str = "__Host-chatvault";
const PLAIN_COOKIE: &str = "chatvault";
/// The sign-in form's own token (double-submitted: cookie and field), since there is no
/// session yet to derive one from.
const SIGN_IN_COOKIE: &str = "chatvault_sign_in";
const CSRF_CONTEXT: &[u8] = b"chatvault console csrf v1";

/// A signed-in request: who it acts as, and the token its forms must carry.
pub struct Signed {
    pub principal: Principal,
    pub csrf: String,
    pub peer: SocketAddr,
}

impl Signed {
    pub fn nav(&self, section: &'static str) -> Nav {
        Nav {
            section,
            actor: self.principal.actor.clone(),
            csrf: self.csrf.clone(),
            admin: self.principal.allows(Scope::Admin),
            signed_in: true,
        }
    }

    /// Refuses (403) unless the key holds `scope`: a form posted by hand for a button
    /// the page did not show.
    pub fn require(&self, scope: Scope) -> Result<(), ConsoleError> {
        if self.principal.allows(scope) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(format!(
                "{} lacks the '{scope}' scope",
                self.principal.actor
            )))
        }
    }

    /// The fields of a posted admin form, once its CSRF token and the key's admin scope
    /// are checked (in that order: a forged post learns nothing about the key).
    pub fn admin_form(&self, body: &[u8]) -> Result<Form, ConsoleError> {
        let form = form(body);
        self.check_csrf(&form)?;
        self.require(Scope::Admin)?;
        Ok(form)
    }

    /// Checks the CSRF token of a posted form.
    pub fn check_csrf(&self, form: &Form) -> Result<(), ConsoleError> {
        if form
            .get("csrf")
            .is_some_and(|t| constant_time_eq(t, &self.csrf))
        {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's security token is missing or stale: reload the page and try again"
                    .into(),
            ))
        }
    }
}

pub type Form = HashMap<String, String>;

/// Reads a url-encoded form body.
pub fn form(body: &[u8]) -> Form {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Compares two secrets by their MACs under a fixed key, in constant time, so how long a
/// comparison takes says nothing about how much of a guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(b"compare") else {
        return false;
    };
    mac.update(a.as_bytes());
    let Ok(mut other) = Hmac::<Sha256>::new_from_slice(b"compare") else {
        return false;
    };
    other.update(b.as_bytes());
    mac.verify_slice(&other.finalize().into_bytes()).is_ok()
}

/// The CSRF token of a session: an HMAC keyed by its token, which only the browser holds
/// (the cookie is HttpOnly and the catalog keeps only a hash), so no other site can make
/// one, and nothing needs storing.
fn csrf_of(session_token: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(session_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(CSRF_CONTEXT);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn limits(config: &ConsoleConfig) -> SessionLimits {
    let us = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    SessionLimits {
        idle_us: us(config.session_idle),
        absolute_us: us(config.session_absolute),
    }
}

fn over_tls(parts: &Parts, state: &AppState) -> bool {
    if parts.extensions.get::<Connection>().is_some_and(|c| c.tls) {
        return true;
    }
    // Behind a TLS-terminating proxy the browser still speaks HTTPS.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    peer.is_some_and(|ip| state.config.trusted_proxies.contains(&ip))
        && parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn session_cookie(tls: bool) -> &'static str {
    if tls {
        TLS_COOKIE
    } else {
        PLAIN_COOKIE
    }
}

fn set_cookie(name: &str, value: &str, max_age_secs: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

fn peer_of(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// Where a request without a live session goes: the sign-in form, which brings the user
/// back to the page asked for.
pub struct SignInFirst {
    next: String,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let target = format!(
            "/console/?next={}",
            form_urlencoded::byte_serialize(self.next.as_bytes()).collect::<String>()
        );
        Redirect::to(&target).into_response()
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let config = parts
            .extensions
            .get::<Arc<ConsoleConfig>>()
            .cloned()
            .unwrap_or_default();
        let tls = over_tls(parts, state);
        let sign_in_first = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/console/", |p| p.as_str())
                .to_owned();
            if parts.method == axum::http::Method::GET {
                SignInFirst { next }.into_response()
            } else {
                ConsoleError::Unauthorized.into_response()
            }
        };
        let Some(token) = cookie(&parts.headers, session_cookie(tls)) else {
            return Err(sign_in_first());
        };
        let session = state
            .catalog
            .session(token, limits(&config), chatvault_catalog::now_us())
            .await
            .map_err(|e| ConsoleError::Unavailable(e.to_string()).into_response())?;
        let Some(session) = session else {
            return Err(sign_in_first());
        };
        let principal = Principal::from_key(&session.key);
        // Every page reads chats: a key that may only send them reads nothing here, as
        // the API's read routes refuse it.
        if !principal.allows(Scope::Read) {
            return Err(ConsoleError::Forbidden(format!(
                "{} lacks the 'read' scope the console needs",
                principal.actor
            ))
            .into_response());
        }
        Ok(Signed {
            principal,
            csrf: csrf_of(token),
            peer: peer_of(parts),
        })
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage {
    nav: Nav,
    next: String,
    token: String,
    error: Option<String>,
}

/// The sign-in form, with a fresh double-submit token.
pub fn sign_in_form(next: &str, error: Option<String>, status: StatusCode, tls: bool) -> Response {
    let mut random = [0u8; 16];
    if getrandom::fill(&mut random).is_err() {
        return ConsoleError::Unavailable("no randomness for a sign-in token".into())
            .into_response();
    }
    let token = hex::encode(random);
    let page = SignInPage {
        nav: Nav::signed_out(),
        next: safe_next(next).to_owned(),
        token: token.clone(),
        error,
    };
    let mut response = (status, render(&page)).into_response();
    if let Some(cookie) = set_cookie(SIGN_IN_COOKIE, &token, 3600, tls) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Only a console page may be where sign-in leads, never another site.
pub fn safe_next(next: &str) -> &str {
    if next.starts_with("/console/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/console/"
    }
}

/// Whether the request came over TLS (for the forms that are shown without a session).
pub struct Transport {
    pub tls: bool,
    pub signed: Option<Signed>,
}

impl FromRequestParts<AppState> for Transport {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let tls = over_tls(parts, state);
        let signed = Signed::from_request_parts(parts, state).await.ok();
        Ok(Transport { tls, signed })
    }
}

/// `POST /console/sign-in` with `key`, `token` and `next`.
pub async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(config): Extension<Arc<ConsoleConfig>>,
    transport: Transport,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = form(&body);
    let next = form.get("next").map_or("/console/", String::as_str);
    let token_ok = match (cookie(&headers, SIGN_IN_COOKIE), form.get("token")) {
        (Some(cookie), Some(field)) => constant_time_eq(cookie, field),
        _ => false,
    };
    if !token_ok {
        return sign_in_form(
            next,
            Some("The sign-in form had expired. Please try again.".into()),
            StatusCode::FORBIDDEN,
            transport.tls,
        );
    }
    let secret = form.get("key").map_or("", |k| k.trim());
    let key = match state.catalog.authenticate(secret).await {
        Ok(key) => key,
        Err(e) => return ConsoleError::Unavailable(e.to_string()).into_response(),
    };
    let Some(key) = key.filter(|_| !secret.is_empty()) else {
        let mut response = sign_in_form(
            next,
            Some("That key is not known or has been revoked.".into()),
            StatusCode::UNAUTHORIZED,
            transport.tls,
        );
        response.extensions_mut().insert(FailedSignIn);
        return response;
    };
    if !Principal::from_key(&key).allows(Scope::Read) {
        return sign_in_form(
            next,
            Some("That key may only send documents: the console needs a key with the read or admin scope.".into()),
            StatusCode::FORBIDDEN,
            transport.tls,
        );
    }
    let limits = limits(&config);
    let token = match state
        .catalog
        .create_session(&key.id, limits, chatvault_catalog::now_us())
        .await
    {
        Ok(token) => token,
        Err(e) => return ConsoleError::Unavailable(e.to_string()).into_response(),
    };
    let mut response = Redirect::to(safe_next(next)).into_response();
    let max_age = config.session_absolute.as_secs();
    if let Some(cookie) = set_cookie(
        session_cookie(transport.tls),
        &token,
        max_age,
        transport.tls,
    ) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some(clear) = set_cookie(SIGN_IN_COOKIE, "", 0, transport.tls) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// `POST /console/sign-out`: ends the session here and in the catalog.
pub async fn sign_out(
    axum::extract::State(state): axum::extract::State<AppState>,
    transport: Transport,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let signed = transport.signed.ok_or(ConsoleError::Unauthorized)?;
    signed.check_csrf(&form(&body))?;
    if let Some(token) = cookie(&headers, session_cookie(transport.tls)) {
        state
            .catalog
            .end_session(token)
            .await
            .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    }
    let mut response = Redirect::to("/console/").into_response();
    if let Some(clear) = set_cookie(session_cookie(transport.tls), "", 0, transport.tls) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_of("session-a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, csrf_of("session-b"));
        assert!(constant_time_eq(&a, &csrf_of("session-a")));
        assert!(!constant_time_eq(&a, &a[..63]));
    }

    #[test]
    fn sign_in_leads_only_to_console_pages() {
        assert_eq!(safe_next("/console/chats/x?y=1"), "/console/chats/x?y=1");
        assert_eq!(safe_next("https://evil.example/"), "/console/");
        assert_eq!(safe_next("//evil.example/console/"), "/console/");
        assert_eq!(safe_next("/console/\\evil"), "/console/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; chatvault=tok; __Host-chatvault=tls"),
        );
        assert_eq!(cookie(&headers, PLAIN_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, TLS_COOKIE), Some("tls"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
