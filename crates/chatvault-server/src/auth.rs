use axum::http::HeaderMap;
use chatvault_catalog::{ApiKey, Catalog, Scope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::AppState;

/// The key a request presents: `Authorization: Bearer KEY`, HTTP Basic with the key as
/// password (any user name; what BI tools send), or `X-Api-Key: KEY`.
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_owned());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.trim().to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        decode_basic_password(rest.trim())
    } else {
        None
    }
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
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
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

/// The caller's key if it exists, is live and carries `scope`.
pub async fn require(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<ApiKey, ApiError> {
    let Some(secret) = presented_key(headers) else {
        return Err(ApiError::unauthorized(
            "an API key is required: send it as 'Authorization: Bearer KEY', as the HTTP Basic password, or in 'X-Api-Key'",
        ));
    };
    let key = state
        .keys
        .authenticate(&state.catalog, &secret)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is not known or has been revoked"))?;
    if !key.allows(scope) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "Forbidden",
            format!("API key {} lacks the '{scope}' scope", key.id),
        ));
    }
    Ok(key)
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

#[cfg(test)]
mod tests {
    #[test]
    fn basic_credentials_yield_the_password() {
        // "powerbi:cv_abc" and "user:pa:ss"
        assert_eq!(
            super::decode_basic_password("cG93ZXJiaTpjdl9hYmM="),
            Some("cv_abc".into())
        );
        assert_eq!(
            super::decode_basic_password("dXNlcjpwYTpzcw=="),
            Some("pa:ss".into())
        );
        assert_eq!(super::decode_basic_password("!!"), None);
    }
}
