//! The verifier the server holds: configuration checked once, keys cached and shared by
//! every clone.

use std::sync::Arc;

use reqwest::Url;

use crate::claims::{identity, Identity};
use crate::keys::KeyCache;
use crate::token::{header, verified_claims};
use crate::{OidcConfig, OidcError};

/// Checks bearer tokens from one issuer. Cheap to clone: clones share the key cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    keys: KeyCache,
    /// The challenge's sign-in URI when it does not depend on discovery.
    fixed_authorization_uri: Option<String>,
}

/// Where a browser signs in and where the code is exchanged for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

impl Verifier {
    /// Checks the configuration (see [`OidcConfig`]); contacts nobody yet.
    pub fn new(config: OidcConfig) -> Result<Verifier, OidcError> {
        let issuer = config.check()?;
        let fixed_authorization_uri = config
            .authorization_uri
            .clone()
            .or_else(|| entra_authorize_uri(&issuer));
        let keys = KeyCache::new(&config, &issuer)?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                config,
                keys,
                fixed_authorization_uri,
            }),
        })
    }

    /// Fetches discovery and JWKS now, so a misconfigured or unreachable issuer shows at
    /// start rather than at the first sign-in. Failing is not final: `verify` retries.
    pub async fn discover(&self) -> Result<(), OidcError> {
        self.inner.keys.fetch_now().await.map(drop)
    }

    /// Verifies `token` and maps its claims. Never logs the token.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let header = header(token)?;
        let keys = self.inner.keys.fresh().await?;
        let jwk = match keys.find(&header)? {
            Some(jwk) => jwk.clone(),
            // Not published when the keys were fetched: the issuer may have rotated since.
            None => {
                let keys = self.inner.keys.refresh(Some(&keys)).await?;
                match keys.find(&header)? {
                    Some(jwk) => jwk.clone(),
                    None => {
                        return Err(match &header.kid {
                            Some(kid) => OidcError::UnknownKey(kid.clone()),
                            None => OidcError::NoKeyId {
                                alg: format!("{:?}", header.alg),
                                count: 0,
                            },
                        })
                    }
                }
            }
        };
        let kid = header
            .kid
            .as_deref()
            .or(jwk.common.key_id.as_deref())
            .unwrap_or("(no key id)");
        let claims = verified_claims(token, &header, kid, &jwk, &self.inner.config)?;
        identity(&self.inner.config, &claims)
    }

    /// The `WWW-Authenticate` value for a 401, `Bearer authorization_uri="URI"`: the
    /// configured `authorization_uri`; else for Microsoft Entra the v1 authorize endpoint
    /// Power BI's "Organizational account" sign-in expects; else discovery's
    /// `authorization_endpoint`. `None` until one of them is known.
    pub fn challenge(&self) -> Option<String> {
        let uri = self.inner.fixed_authorization_uri.clone().or_else(|| {
            self.inner
                .keys
                .current()
                .and_then(|keys| keys.authorization_endpoint.clone())
        })?;
        Some(format!("Bearer authorization_uri=\"{uri}\""))
    }

    /// Discovery's authorization and token endpoints, for a browser sign-in (authorization
    /// code with PKCE). `None` until discovery succeeded, or when it lacks either.
    pub fn endpoints(&self) -> Option<Endpoints> {
        let keys = self.inner.keys.current()?;
        Some(Endpoints {
            authorization: keys.authorization_endpoint.clone()?,
            token: keys.token_endpoint.clone()?,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }
}

/// Power BI's Organizational account sign-in follows the v1 endpoint
/// (`/oauth2/authorize`), whichever token version the issuer is configured for.
fn entra_authorize_uri(issuer: &Url) -> Option<String> {
    let host = issuer.host_str()?.to_ascii_lowercase();
    if !matches!(
        host.as_str(),
        "login.microsoftonline.com" | "login.windows.net" | "sts.windows.net"
    ) {
        return None;
    }
    let tenant = issuer.path_segments()?.next().filter(|t| !t.is_empty())?;
    Some(format!(
        "https://login.microsoftonline.com/{tenant}/oauth2/authorize"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(issuer: &str) -> OidcConfig {
        OidcConfig {
            issuer: issuer.into(),
            audience: vec!["api://chatvault".into()],
            ..OidcConfig::default()
        }
    }

    fn config_error(config: OidcConfig) -> String {
        match Verifier::new(config) {
            Ok(_) => panic!("configuration accepted"),
            Err(e) => {
                assert!(!e.is_unavailable());
                e.to_string()
            }
        }
    }

    #[test]
    fn http_issuers_are_refused_unless_loopback() {
        for issuer in [
            "https://login.example.com",
            "http://127.0.0.1:8080",
            "http://127.9.9.9/issuer",
            "http://[::1]:9000",
            "http://localhost:9000/realms/x",
            "http://LOCALHOST",
        ] {
            assert!(Verifier::new(config(issuer)).is_ok(), "{issuer}");
        }
        for issuer in [
            "http://login.example.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "login.example.com",
            "",
        ] {
            let message = config_error(config(issuer));
            assert!(message.starts_with("OIDC configuration: "), "{message}");
        }
        assert!(config_error(config("http://idp.example.com")).contains("must use https"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let base = config("https://login.example.com");
        let no_audience = OidcConfig {
            audience: vec![],
            ..base.clone()
        };
        assert!(config_error(no_audience).contains("audience"));
        let mut bad_scope = base.clone();
        bad_scope
            .scopes
            .insert("Chatvault.Write".into(), "write".into());
        assert_eq!(
            config_error(bad_scope),
            "OIDC configuration: scopes maps 'Chatvault.Write' to 'write', which is not a \
             scope: use read, ingest or admin"
        );
        let plain_authorize = OidcConfig {
            authorization_uri: Some("http://sso.example.com/authorize".into()),
            ..base.clone()
        };
        assert!(config_error(plain_authorize).contains("authorization_uri"));
        let no_users = OidcConfig {
            user_claims: vec![],
            ..base
        };
        assert!(config_error(no_users).contains("user_claims"));
    }

    #[test]
    fn configuration_reads_from_toml_shaped_json_with_defaults() {
        let config: OidcConfig = serde_json::from_str(
            r#"{"issuer": "https://idp.example.com", "audience": ["a"], "claim": "groups"}"#,
        )
        .expect("config");
        assert_eq!(config.claim, "groups");
        assert_eq!(config.leeway_secs, 60);
        assert_eq!(
            config.scopes.get("Chatvault.Ingest").map(String::as_str),
            Some("ingest")
        );
        assert!(serde_json::from_str::<OidcConfig>(r#"{"issuer": "x", "audiance": []}"#).is_err());
    }

    #[test]
    fn entra_challenge_is_the_v1_authorize_endpoint() {
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        for issuer in [
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            format!("https://sts.windows.net/{tenant}/"),
            format!("https://login.windows.net/{tenant}"),
        ] {
            let verifier = Verifier::new(config(&issuer)).expect("verifier");
            assert_eq!(
                verifier.challenge(),
                Some(format!(
                    "Bearer authorization_uri=\"https://login.microsoftonline.com/{tenant}/oauth2/authorize\""
                )),
                "{issuer}"
            );
            assert_eq!(verifier.issuer(), issuer);
            assert_eq!(verifier.endpoints(), None);
        }
        let overridden = Verifier::new(OidcConfig {
            authorization_uri: Some("https://sso.example.com/authorize".into()),
            ..config(&format!("https://sts.windows.net/{tenant}/"))
        })
        .expect("verifier");
        assert_eq!(
            overridden.challenge().as_deref(),
            Some("Bearer authorization_uri=\"https://sso.example.com/authorize\"")
        );
        // Not Entra and not discovered yet: nothing to point the client at.
        let other = Verifier::new(config("https://idp.example.com")).expect("verifier");
        assert_eq!(other.challenge(), None);
    }
}
