//! The issuer's discovery document and signing keys (JWKS): fetched once and shared by all
//! requests, fetched again when older than the TTL or when a token names a key not seen yet
//! (how a key rotation at the issuer is followed).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::config::fetch_url;
use crate::token::{key_misfit, Header};
use crate::{OidcConfig, OidcError};

/// Long enough for a slow identity provider, short enough that a request waiting on a
/// fetch fails while its client is still waiting.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One fetch of discovery and JWKS.
pub(crate) struct Keys {
    pub(crate) authorization_endpoint: Option<String>,
    pub(crate) token_endpoint: Option<String>,
    jwks: Vec<Jwk>,
    fetched: Instant,
}

impl Keys {
    /// The key a token names by `kid`; without a `kid`, the only published key that fits
    /// its alg. `Ok(None)`: not published (yet), so fetching again may help.
    pub(crate) fn find(&self, header: &Header) -> Result<Option<&Jwk>, OidcError> {
        let alg = header.alg;
        match &header.kid {
            Some(kid) => {
                let mut named = self
                    .jwks
                    .iter()
                    .filter(|jwk| jwk.common.key_id.as_ref() == Some(kid))
                    .peekable();
                let Some(first) = named.peek().copied() else {
                    return Ok(None);
                };
                match named.find(|jwk| key_misfit(jwk, alg).is_none()) {
                    Some(jwk) => Ok(Some(jwk)),
                    None => Err(OidcError::KeyMismatch {
                        kid: kid.clone(),
                        alg: format!("{alg:?}"),
                        reason: key_misfit(first, alg).unwrap_or_default(),
                    }),
                }
            }
            None => {
                let fitting: Vec<&Jwk> = self
                    .jwks
                    .iter()
                    .filter(|jwk| key_misfit(jwk, alg).is_none())
                    .collect();
                match fitting[..] {
                    [] => Ok(None),
                    [only] => Ok(Some(only)),
                    _ => Err(OidcError::NoKeyId {
                        alg: format!("{alg:?}"),
                        count: fitting.len(),
                    }),
                }
            }
        }
    }

    fn key_ids(&self) -> BTreeSet<&str> {
        self.jwks
            .iter()
            .filter_map(|jwk| jwk.common.key_id.as_deref())
            .collect()
    }
}

/// The cached [`Keys`] and the one fetch at a time that replaces them.
pub(crate) struct KeyCache {
    client: reqwest::Client,
    issuer: String,
    discovery_url: String,
    min_refresh: Duration,
    ttl: Duration,
    /// A std lock: never held across an await, and read by the synchronous `challenge()`.
    current: RwLock<Option<Arc<Keys>>>,
    /// Held for the whole fetch, so that requests arriving meanwhile wait for its result
    /// instead of each asking the issuer.
    gate: tokio::sync::Mutex<Gate>,
}

#[derive(Default)]
struct Gate {
    last_attempt: Option<Instant>,
    last_error: Option<OidcError>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

/// Keys are parsed one by one, so that one key of a kind jsonwebtoken cannot read does not
/// make the whole set unusable.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

impl KeyCache {
    pub(crate) fn new(config: &OidcConfig, issuer: &Url) -> Result<KeyCache, OidcError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // An https issuer's keys must not be fetched in clear text, not even by redirect.
            .https_only(issuer.scheme() == "https")
            .build()
            .map_err(|e| {
                OidcError::Config(format!("cannot set up the HTTPS client: {}", chain(&e)))
            })?;
        Ok(KeyCache {
            client,
            issuer: config.issuer.clone(),
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            ),
            min_refresh: Duration::from_secs(config.min_refresh_secs),
            ttl: Duration::from_secs(config.keys_ttl_secs),
            current: RwLock::new(None),
            gate: tokio::sync::Mutex::new(Gate::default()),
        })
    }

    pub(crate) fn current(&self) -> Option<Arc<Keys>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fetches whatever the cache holds: the server's start wants to know now whether the
    /// issuer answers.
    pub(crate) async fn fetch_now(&self) -> Result<Arc<Keys>, OidcError> {
        let mut gate = self.gate.lock().await;
        self.fetch_locked(&mut gate).await
    }

    /// Keys younger than the TTL, fetching them if needed. Stale keys are kept when a fetch
    /// fails: the issuer being down for a moment should not sign everyone out.
    pub(crate) async fn fresh(&self) -> Result<Arc<Keys>, OidcError> {
        let current = self.current();
        if let Some(keys) = &current {
            if keys.fetched.elapsed() < self.ttl {
                return Ok(Arc::clone(keys));
            }
        }
        match (self.refresh(current.as_ref()).await, current) {
            (Ok(keys), _) => Ok(keys),
            (Err(e), Some(stale)) => {
                tracing::warn!(error = %e, "using the issuer's keys past their TTL: fetching them again failed");
                Ok(stale)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Keys fetched after `seen`: by another request while this one waited, or now unless
    /// the last attempt is younger than `min_refresh_secs` (then the keys held, or the last
    /// error, are the answer).
    pub(crate) async fn refresh(&self, seen: Option<&Arc<Keys>>) -> Result<Arc<Keys>, OidcError> {
        let mut gate = self.gate.lock().await;
        let current = self.current();
        if let Some(keys) = &current {
            if seen.is_none_or(|seen| !Arc::ptr_eq(seen, keys)) {
                return Ok(Arc::clone(keys));
            }
        }
        if gate
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.min_refresh)
        {
            if let Some(keys) = current {
                return Ok(keys);
            }
            if let Some(e) = &gate.last_error {
                return Err(e.clone());
            }
        }
        self.fetch_locked(&mut gate).await
    }

    async fn fetch_locked(&self, gate: &mut Gate) -> Result<Arc<Keys>, OidcError> {
        gate.last_attempt = Some(Instant::now());
        let keys = match self.fetch().await {
            Ok(keys) => Arc::new(keys),
            Err(e) => {
                gate.last_error = Some(e.clone());
                return Err(e);
            }
        };
        gate.last_error = None;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let new_ids = keys.key_ids();
        if current.as_ref().is_none_or(|old| old.key_ids() != new_ids) {
            tracing::info!(issuer = %self.issuer, key_ids = ?new_ids, "fetched the issuer's signing keys");
        }
        *current = Some(Arc::clone(&keys));
        Ok(keys)
    }

    async fn fetch(&self) -> Result<Keys, OidcError> {
        let discovery: Discovery = self.get_json(&self.discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(OidcError::IssuerMismatch {
                url: self.discovery_url.clone(),
                found: discovery.issuer,
                expected: self.issuer.clone(),
            });
        }
        let jwks_url = fetch_url("jwks_uri", &discovery.jwks_uri).map_err(|reason| {
            OidcError::BadResponse {
                url: self.discovery_url.clone(),
                reason,
            }
        })?;
        let raw: RawJwks = self.get_json(jwks_url.as_str()).await?;
        let jwks: Vec<Jwk> = raw
            .keys
            .into_iter()
            .filter_map(|key| {
                serde_json::from_value(key)
                    .map_err(|e| tracing::debug!(error = %e, "skipping an unreadable JWK"))
                    .ok()
            })
            .collect();
        if jwks.is_empty() {
            return Err(OidcError::BadResponse {
                url: jwks_url.into(),
                reason: "the key set holds no key this server can read".into(),
            });
        }
        // Endpoints are only handed to clients, so an unusable one is dropped, not fatal.
        let endpoint = |what: &str, url: Option<String>| {
            url.and_then(|url| {
                fetch_url(what, &url)
                    .map_err(|e| tracing::warn!("ignoring the discovery document's {e}"))
                    .ok()
                    .map(String::from)
            })
        };
        Ok(Keys {
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                discovery.authorization_endpoint,
            ),
            token_endpoint: endpoint("token_endpoint", discovery.token_endpoint),
            jwks,
            fetched: Instant::now(),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        // The message names the URL already.
        let unreachable = |e: reqwest::Error| OidcError::Unreachable {
            url: url.to_owned(),
            reason: chain(&e.without_url()),
        };
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::BadResponse {
                url: url.to_owned(),
                reason: format!("HTTP status {status}"),
            });
        }
        let body = response.bytes().await.map_err(unreachable)?;
        serde_json::from_slice(&body).map_err(|e| OidcError::BadResponse {
            url: url.to_owned(),
            reason: format!("not the expected JSON: {e}"),
        })
    }
}

/// reqwest's own message hides the cause ("error sending request"); the causes say what
/// an operator can fix (connection refused, DNS, certificate).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
