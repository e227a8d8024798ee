use axum::http::HeaderMap;
use chatvault_catalog::{ApiKey, Catalog, Scope};

use crate::error::ApiError;

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

/// The caller's key if it exists, is live and carries `scope`.
pub async fn require(
    catalog: &Catalog,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<ApiKey, ApiError> {
    let Some(secret) = presented_key(headers) else {
        return Err(ApiError::unauthorized(
            "an API key is required: send it as 'Authorization: Bearer KEY', as the HTTP Basic password, or in 'X-Api-Key'",
        ));
    };
    let key = catalog
        .authenticate(&secret)
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "CatalogUnavailable",
                e.to_string(),
            )
        })?
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
