//! What the operator configures (`[auth.oidc]` in the server's TOML) and the checks that
//! refuse a configuration which would silently grant nothing or too much.

use std::collections::BTreeMap;
use std::net::IpAddr;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::OidcError;

/// The scope names the server knows. Anything else in [`OidcConfig::scopes`] is a typo
/// that would grant nothing, so it is refused up front.
const SCOPE_NAMES: [&str; 3] = ["read", "ingest", "admin"];

/// The issuer to trust and how its tokens' claims become scopes and sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Compared exactly with the tokens' `iss` and the discovery document's `issuer`, e.g.
    /// `https://login.microsoftonline.com/{tenant}/v2.0`. Discovery is fetched from
    /// `{issuer}/.well-known/openid-configuration` (a trailing `/` is dropped there only).
    pub issuer: String,
    /// Accepted `aud` values; a token is accepted when any of its audiences is listed.
    pub audience: Vec<String>,
    /// The claim whose values are mapped: `roles` for Entra app roles, `groups` for groups.
    /// A string value is split at spaces, as OAuth `scope`/`scp` claims are.
    pub claim: String,
    /// Claim value -> scope name (`read`, `ingest` or `admin`).
    pub scopes: BTreeMap<String, String>,
    /// A claim value of this prefix followed by digits grants the SiteKey the digits name
    /// (`Chatvault.Site.3` -> site 3). An empty string turns prefix grants off (TOML has no
    /// null to write `None` with).
    pub site_prefix: Option<String>,
    /// Claim value -> SiteKeys it grants, for values that cannot carry a number, such as an
    /// Entra group's object id.
    pub sites: BTreeMap<String, Vec<i64>>,
    /// The first of these claims present as a string names the user in the audit log.
    pub user_claims: Vec<String>,
    /// Clock skew allowed between this server and the issuer when checking `exp`/`nbf`.
    pub leeway_secs: u64,
    /// The sign-in URI clients are sent to by the 401 challenge, when the derived one (see
    /// [`crate::Verifier::challenge`]) is not what the clients need.
    pub authorization_uri: Option<String>,
    /// At most one JWKS fetch per this many seconds when a token names an unknown key id,
    /// so tokens with made-up key ids cannot make the server hammer the issuer.
    pub min_refresh_secs: u64,
    /// The JWKS is fetched again after this age even when no unknown key id forces it, so
    /// keys the issuer withdraws stop being trusted.
    pub keys_ttl_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        let scopes = [
            ("Chatvault.Read", "read"),
            ("Chatvault.Ingest", "ingest"),
            ("Chatvault.Admin", "admin"),
        ];
        let user_claims = ["preferred_username", "upn", "email", "unique_name", "sub"];
        OidcConfig {
            issuer: String::new(),
            audience: Vec::new(),
            claim: "roles".into(),
            scopes: scopes
                .iter()
                .map(|(value, scope)| ((*value).to_owned(), (*scope).to_owned()))
                .collect(),
            site_prefix: Some("Chatvault.Site.".into()),
            sites: BTreeMap::new(),
            user_claims: user_claims.iter().map(|c| (*c).to_owned()).collect(),
            leeway_secs: 60,
            authorization_uri: None,
            min_refresh_secs: 30,
            keys_ttl_secs: 3600,
        }
    }
}

impl OidcConfig {
    /// Refuses what would make every token fail, or trust keys fetched in clear text.
    /// Returns the parsed issuer URL.
    pub(crate) fn check(&self) -> Result<Url, OidcError> {
        if self.issuer.is_empty() {
            return Err(OidcError::Config(
                "issuer must be set, e.g. https://login.microsoftonline.com/{tenant}/v2.0".into(),
            ));
        }
        let issuer = fetch_url("issuer", &self.issuer).map_err(OidcError::Config)?;
        if self.audience.is_empty() || self.audience.iter().any(String::is_empty) {
            return Err(OidcError::Config(
                "audience must list the 'aud' values tokens are issued for (the application's \
                 client id or application ID URI)"
                    .into(),
            ));
        }
        if self.claim.is_empty() {
            return Err(OidcError::Config(
                "claim must name the token claim to map, e.g. roles or groups".into(),
            ));
        }
        if let Some((value, scope)) = self
            .scopes
            .iter()
            .find(|(_, scope)| !SCOPE_NAMES.contains(&scope.as_str()))
        {
            return Err(OidcError::Config(format!(
                "scopes maps '{value}' to '{scope}', which is not a scope: use read, ingest or admin"
            )));
        }
        if self.user_claims.is_empty() {
            return Err(OidcError::Config(
                "user_claims must name at least one claim, e.g. preferred_username".into(),
            ));
        }
        if let Some(uri) = &self.authorization_uri {
            fetch_url("authorization_uri", uri).map_err(OidcError::Config)?;
        }
        Ok(issuer)
    }
}

/// Parses a URL this crate fetches from or sends clients to. Plain http is allowed only to a
/// loopback host: keys fetched in clear text across a network could be swapped by anyone
/// on the path, while a local test issuer or sidecar has no such path.
pub(crate) fn fetch_url(what: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{what} '{text}' is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{what} '{text}' must use https (plain http is allowed only to a loopback host \
             such as 127.0.0.1 or localhost)"
        )),
        other => Err(format!(
            "{what} '{text}' must be an https URL, not {other}:"
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed; the URL parser has already normalised IPv4 forms.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|addr| addr.is_loopback())
}
