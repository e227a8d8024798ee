//! Who a request acts as: an API key, a user signed in through the configured OpenID
//! Connect issuer, or an anonymous reader of the sites published read-only; and the guard
//! in front of every route that slows and then refuses an address guessing credentials.

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chatvault_catalog::{ApiKey, Catalog, Scope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::AppState;

/// The rights a request runs with, whatever credential it presented.
#[derive(Debug, Clone)]
pub struct Principal {
    /// How the audit log names it: `key:cv_1a2b3c4d (name)`, `user:ana@example.com (oid)`.
    pub actor: String,
    scopes: Vec<Scope>,
    /// SiteKeys it may see; `None` means every site.
    pub sites: Option<Vec<i64>>,
}

impl Principal {
    /// The rights of a key the catalog confirmed (directly, or through a console session).
    pub fn from_key(key: &ApiKey) -> Principal {
        Principal {
            actor: format!("key:{} ({})", key.id, key.name),
            scopes: key.scopes.clone(),
            sites: key.sites.clone(),
        }
    }

    fn from_identity(identity: chatvault_oidc::Identity) -> Principal {
        let actor = match &identity.object_id {
            Some(oid) if *oid != identity.user => format!("user:{} ({oid})", identity.user),
            _ => format!("user:{}", identity.user),
        };
        Principal {
            actor,
            // The verifier only maps to names it has checked are scopes.
            scopes: identity
                .scopes
                .iter()
                .filter_map(|s| Scope::from_str(s).ok())
                .collect(),
            sites: identity.sites,
        }
    }

    /// `admin` carries every other scope.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    pub fn may_see_site(&self, site_key: i64) -> bool {
        self.sites
            .as_ref()
            .is_none_or(|sites| sites.contains(&site_key))
    }
}

/// The credential a request presents: `Authorization: Bearer` (an API key or a JWT),
/// HTTP Basic with the key as password (any user name; what BI tools send), or
/// `X-Api-Key` (where a key from the URL's query is also put, see [`guard`]).
pub fn presented_credential(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_owned()).filter(|k| !k.is_empty());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        // Power Query's first request with "Organizational account" is an empty Bearer:
        // a question for the challenge, not a credential.
        Some(rest.trim().to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        decode_basic_password(rest.trim())
    } else {
        None
    };
    secret.filter(|s| !s.is_empty())
}

/// How long a key the catalog confirmed is trusted without asking again. A key revoked
/// meanwhile (by `chatvault keys revoke`, or on another node) is refused at most this
/// long after; in return a webhook taking thousands of requests a second does not query
/// the catalog for each of them.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries kept at most; the cache starts afresh beyond it (keys are few, requests many).
const KEY_CACHE_ENTRIES: usize = 1024;

/// Keys the catalog confirmed recently, by the SHA-256 of their secret (the secret
/// itself is not kept). Unknown keys are not cached: each is checked again.
///
/// Secrets are never compared byte by byte: the catalog and this cache look a key up by
/// the SHA-256 of what was presented, so how long a look-up takes says nothing about how
/// close a guess came to a real key.
#[derive(Default)]
pub struct KeyCache {
    confirmed: Mutex<HashMap<[u8; 32], (Instant, ApiKey)>>,
}

impl KeyCache {
    async fn authenticate(
        &self,
        catalog: &Catalog,
        secret: &str,
    ) -> Result<Option<ApiKey>, ApiError> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Ok(confirmed) = self.confirmed.lock() {
            if let Some((at, key)) = confirmed.get(&digest) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(Some(key.clone()));
                }
            }
        }
        let key = catalog.authenticate(secret).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "CatalogUnavailable",
                e.to_string(),
            )
        })?;
        if let (Some(key), Ok(mut confirmed)) = (&key, self.confirmed.lock()) {
            if confirmed.len() >= KEY_CACHE_ENTRIES {
                confirmed.clear();
            }
            confirmed.insert(digest, (Instant::now(), key.clone()));
        }
        Ok(key)
    }
}

/// A 401 carrying the challenge that starts the client's sign-in: with an OpenID Connect
/// issuer, `Bearer authorization_uri="…"`, which Power BI's "Organizational account"
/// reads to find where to sign in.
fn unauthorized(state: &AppState, message: impl Into<String>) -> ApiError {
    let mut error = ApiError::unauthorized(message);
    if let Some(challenge) = state
        .oidc
        .as_ref()
        .and_then(|oidc| oidc.challenge())
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        error.www_authenticate = Some(challenge);
    }
    error
}

/// The caller's rights if its credential is valid and carries `scope`.
pub async fn require(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let Some(secret) = presented_credential(headers) else {
        if scope == Scope::Read && !state.config.anonymous_sites.is_empty() {
            return Ok(Principal {
                actor: "anonymous".into(),
                scopes: vec![Scope::Read],
                sites: Some(state.config.anonymous_sites.clone()),
            });
        }
        let sso = if state.oidc.is_some() {
            ", or a bearer token from the configured sign-in"
        } else {
            ""
        };
        return Err(unauthorized(
            state,
            format!("an API key is required: send it as 'Authorization: Bearer KEY', as the HTTP Basic password, or in 'X-Api-Key'{sso}"),
        ));
    };
    let principal = match &state.oidc {
        Some(oidc) if chatvault_oidc::looks_like_jwt(&secret) => {
            let identity = oidc.verify(&secret).await.map_err(|e| {
                if e.is_unavailable() {
                    tracing::warn!(error = %e, "cannot check a bearer token");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SignInUnavailable",
                        e.to_string(),
                    )
                    .retry_after(5)
                } else {
                    unauthorized(state, format!("the bearer token is not accepted: {e}"))
                }
            })?;
            Principal::from_identity(identity)
        }
        _ => {
            let key = state
                .keys
                .authenticate(&state.catalog, &secret)
                .await?
                .ok_or_else(|| {
                    unauthorized(state, "the API key is not known or has been revoked")
                })?;
            Principal::from_key(&key)
        }
    };
    if !principal.allows(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} lacks the '{scope}' scope", principal.actor),
        ));
    }
    Ok(principal)
}

/// The password half of an HTTP Basic credential.
fn decode_basic_password(encoded: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// How many failed authentications an address may make, and how fast it earns more.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures an address may make in a burst before it is refused.
    pub burst: u32,
    /// Failures per minute it earns back.
    pub per_minute: u32,
    /// Once half the burst is spent, each further failure is answered up to this late.
    pub max_delay: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            burst: 20,
            per_minute: 10,
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Addresses tracked at most; past it, addresses that have earned their whole burst back
/// are forgotten first.
const THROTTLE_ADDRESSES: usize = 65_536;

/// A token bucket of failed authentications per client address.
pub struct AuthThrottle {
    config: ThrottleConfig,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> AuthThrottle {
        AuthThrottle {
            config,
            buckets: Mutex::default(),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.config.per_minute.max(1)) / 60.0
    }

    fn refilled(&self, (tokens, at): (f64, Instant), now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.rate_per_sec())
            .min(f64::from(self.config.burst))
    }

    /// How long `ip` must wait before it may try again, if it is refused now.
    fn refused_for(&self, ip: IpAddr) -> Option<Duration> {
        let buckets = self.buckets.lock().ok()?;
        let tokens = self.refilled(*buckets.get(&ip)?, Instant::now());
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.rate_per_sec()))
    }

    /// Records a failure of `ip`; returns how long to hold its answer back.
    fn failed(&self, ip: IpAddr) -> Duration {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        if buckets.len() >= THROTTLE_ADDRESSES && !buckets.contains_key(&ip) {
            let full = f64::from(self.config.burst);
            buckets.retain(|_, b| self.refilled(*b, now) < full);
            if buckets.len() >= THROTTLE_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry(ip)
            .or_insert((f64::from(self.config.burst), now));
        let tokens = self.refilled(*bucket, now) - 1.0;
        *bucket = (tokens, now);
        metrics::gauge!("chatvault_auth_tracked_addresses").set(buckets.len() as f64);
        let half = f64::from(self.config.burst) / 2.0;
        if tokens >= half || half <= 0.0 {
            Duration::ZERO
        } else {
            self.config
                .max_delay
                .mul_f64(((half - tokens) / half).clamp(0.0, 1.0))
        }
    }
}

/// In front of every route: moves a key sent in the URL's query (Power BI's "Web API"
/// credential) into a header and out of the URL, so that no log, link or audit record
/// carries it; refuses an address that failed to authenticate too often; and records
/// and slows each failure.
/// Marks a response that refused a credential sent some other way than the headers
/// [`presented_credential`] reads (the console's sign-in form), so that the brake on
/// guessing counts it too.
#[derive(Debug, Clone, Copy)]
pub struct FailedSignIn;

pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(param) = &state.config.api_key_param {
        take_query_key(&mut request, param);
    }
    let ip = client_behind_proxies(&mut request, &state.config.trusted_proxies);
    if let Some(wait) = ip.and_then(|ip| state.throttle.refused_for(ip)) {
        metrics::counter!("chatvault_auth_refused_total").increment(1);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyFailedAuthentications",
            "too many failed authentications from this address; wait and try again with a valid credential",
        )
        .retry_after(wait.as_secs().max(1))
        .into_response();
    }
    let presented = presented_credential(request.headers()).is_some();
    let response = next.run(request).await;
    let refused = presented && response.status() == StatusCode::UNAUTHORIZED;
    if refused || response.extensions().get::<FailedSignIn>().is_some() {
        metrics::counter!("chatvault_auth_failures_total").increment(1);
        if let Some(ip) = ip {
            let delay = state.throttle.failed(ip);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
    response
}

/// The client's address: the connection's peer, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not one. Handlers see it too (as
/// `ConnectInfo`), so audit records name the client, not the proxy.
fn client_behind_proxies(request: &mut Request, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
    if !trusted.contains(&peer.ip()) {
        return Some(peer.ip());
    }
    let forwarded: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    // Entries are appended hop by hop: the last one a trusted proxy did not add is the
    // client; anything before it the client could have written itself.
    let client = forwarded
        .iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .copied()
        .unwrap_or(peer.ip());
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    Some(client)
}

/// Only the feed and exports take a key in the URL: they are what BI tools fetch with a
/// URL alone. Elsewhere a key in the URL is left alone, and so not accepted.
fn takes_query_key(path: &str) -> bool {
    path == "/odata" || path.starts_with("/odata/") || path.starts_with("/api/v1/export/")
}

fn take_query_key(request: &mut Request, param: &str) {
    let uri = request.uri();
    if !takes_query_key(uri.path()) {
        return;
    }
    let Some(query) = uri.query() else {
        return;
    };
    let mut key = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut any_kept = false;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == param {
            key = Some(value.into_owned());
        } else {
            kept.append_pair(&name, &value);
            any_kept = true;
        }
    }
    let Some(key) = key else {
        return;
    };
    let kept = kept.finish();
    let path_and_query = if any_kept {
        format!("{}?{kept}", uri.path())
    } else {
        uri.path().to_owned()
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(stripped) = Uri::from_parts(parts) {
        *request.uri_mut() = stripped.clone();
        if let Some(original) = request.extensions_mut().get_mut::<OriginalUri>() {
            original.0 = stripped;
        }
    }
    let presented = presented_credential(request.headers()).is_some();
    if let (false, Ok(value)) = (presented, HeaderValue::from_str(&key)) {
        request.headers_mut().insert("x-api-key", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_yield_the_password() {
        // "powerbi:cv_abc" and "user:pa:ss"
        assert_eq!(
            decode_basic_password("cG93ZXJiaTpjdl9hYmM="),
            Some("cv_abc".into())
        );
        assert_eq!(
            decode_basic_password("dXNlcjpwYTpzcw=="),
            Some("pa:ss".into())
        );
        assert_eq!(decode_basic_password("!!"), None);
    }

    #[test]
    fn an_empty_bearer_is_no_credential() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(presented_credential(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  "));
        assert_eq!(presented_credential(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer cv_x"),
        );
        assert_eq!(presented_credential(&headers), Some("cv_x".into()));
    }

    #[test]
    fn a_query_key_moves_into_a_header_and_out_of_the_url() {
        let mut request = Request::builder()
            .uri("/odata/Chats?$top=5&api_key=cv_secret&$filter=SiteKey%20eq%203")
            .body(axum::body::Body::empty())
            .expect("request");
        take_query_key(&mut request, "api_key");
        assert_eq!(request.uri().path(), "/odata/Chats");
        let query = request.uri().query().expect("query kept");
        assert!(!query.contains("cv_secret"), "{query}");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("$top".into(), "5".into()),
                ("$filter".into(), "SiteKey eq 3".into())
            ]
        );
        assert_eq!(
            presented_credential(request.headers()),
            Some("cv_secret".into())
        );

        // Outside the feed and exports the URL is not a place for keys.
        let mut request = Request::builder()
            .uri("/api/v1/holds?api_key=cv_secret")
            .body(axum::body::Body::empty())
            .expect("request");
        take_query_key(&mut request, "api_key");
        assert_eq!(presented_credential(request.headers()), None);
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let request = |peer: IpAddr, forwarded: Option<&str>| {
            let mut builder = Request::builder().uri("/odata/");
            if let Some(f) = forwarded {
                builder = builder.header("x-forwarded-for", f);
            }
            let mut request = builder.body(axum::body::Body::empty()).expect("request");
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(peer, 40000)));
            request
        };
        let client = |peer: &str, forwarded: Option<&str>| {
            let mut r = request(peer.parse().expect("ip"), forwarded);
            let ip = client_behind_proxies(&mut r, &[proxy]).map(|ip| ip.to_string());
            let seen = r
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string());
            assert_eq!(ip, seen, "handlers see the same address");
            ip.unwrap_or_default()
        };
        // A client that is not a trusted proxy cannot choose its address.
        assert_eq!(client("192.0.2.1", Some("198.51.100.7")), "192.0.2.1");
        // Through the proxy: the entry it added, not what the client wrote before it.
        assert_eq!(
            client("10.0.0.5", Some("198.51.100.7, 192.0.2.1")),
            "192.0.2.1"
        );
        assert_eq!(client("10.0.0.5", Some("192.0.2.1, 10.0.0.5")), "192.0.2.1");
        assert_eq!(client("10.0.0.5", Some("garbage")), "10.0.0.5");
        assert_eq!(client("10.0.0.5", None), "10.0.0.5");
    }

    #[test]
    fn failures_are_slowed_then_refused_and_earned_back() {
        let throttle = AuthThrottle::new(ThrottleConfig {
            burst: 4,
            per_minute: 60,
            max_delay: Duration::from_millis(800),
        });
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(throttle.refused_for(ip), None);
        let delays: Vec<Duration> = (0..4).map(|_| throttle.failed(ip)).collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert!(
            delays[3] > delays[2] && delays[3] <= Duration::from_millis(800),
            "{delays:?}"
        );
        let wait = throttle.refused_for(ip).expect("refused after the burst");
        assert!(
            wait <= Duration::from_secs(1),
            "one failure a second is earned back: {wait:?}"
        );
        assert_eq!(
            throttle.refused_for(other),
            None,
            "other addresses are not affected"
        );
        std::thread::sleep(wait + Duration::from_millis(50));
        assert_eq!(throttle.refused_for(ip), None);
    }
}
