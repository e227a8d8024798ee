//! From a verified token's claims to the identity the server authorises: who, which scopes,
//! which sites. Values the configuration does not map are ignored, so the issuer may carry
//! roles meant for other applications.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::{OidcConfig, OidcError};

/// Who a verified token speaks for, in the server's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From the first of [`OidcConfig::user_claims`] present.
    pub user: String,
    /// The `oid` claim (Entra's stable object id), when present.
    pub object_id: Option<String>,
    /// Mapped scope names, sorted, without duplicates.
    pub scopes: Vec<String>,
    /// `None`: no claim value grants sites, so every site; else the SiteKeys granted,
    /// sorted, without duplicates.
    pub sites: Option<Vec<i64>>,
}

pub(crate) fn identity(
    config: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<Identity, OidcError> {
    let user = config
        .user_claims
        .iter()
        .find_map(|name| claims.get(name)?.as_str().filter(|user| !user.is_empty()))
        .ok_or_else(|| OidcError::NoUser(config.user_claims.clone()))?
        .to_owned();
    let object_id = claims.get("oid").and_then(Value::as_str).map(str::to_owned);

    if !claims.contains_key(&config.claim) && overage(claims, &config.claim) {
        return Err(OidcError::ClaimOverage(config.claim.clone()));
    }
    let prefix = config.site_prefix.as_deref().filter(|p| !p.is_empty());
    let mut scopes = BTreeSet::new();
    let mut sites: Option<BTreeSet<i64>> = None;
    for value in claim_values(claims.get(&config.claim)) {
        if let Some(scope) = config.scopes.get(value) {
            scopes.insert(scope.clone());
        }
        if let Some(granted) = config.sites.get(value) {
            sites.get_or_insert_default().extend(granted);
        }
        if let Some(site) = prefix.and_then(|p| prefixed_site(value, p)) {
            sites.get_or_insert_default().insert(site);
        }
    }
    Ok(Identity {
        user,
        object_id,
        scopes: scopes.into_iter().collect(),
        sites: sites.map(|s| s.into_iter().collect()),
    })
}

/// An array's strings, or a string's space-separated words (the form of `scp`/`scope`).
fn claim_values(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(words)) => words.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

/// Digits only after the prefix: `Chatvault.Site.+3` or `Chatvault.Site.3a` grant nothing.
fn prefixed_site(value: &str, prefix: &str) -> Option<i64> {
    let digits = value.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Entra leaves `groups` out when a user has too many and names it in `_claim_names`
/// instead. Without this check such a user would just appear to have no groups.
fn overage(claims: &Map<String, Value>, claim: &str) -> bool {
    claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn map(config: &OidcConfig, value: Value) -> Result<Identity, OidcError> {
        identity(config, &claims(value))
    }

    #[test]
    fn roles_become_scopes_and_unknown_roles_are_ignored() {
        let config = OidcConfig::default();
        let id = map(
            &config,
            json!({
                "preferred_username": "ana@example.com",
                "oid": "0000-1111",
                "roles": ["Chatvault.Read", "Other.App.Role", "Chatvault.Admin", "Chatvault.Read", 7]
            }),
        )
        .expect("identity");
        assert_eq!(id.user, "ana@example.com");
        assert_eq!(id.object_id.as_deref(), Some("0000-1111"));
        assert_eq!(id.scopes, ["admin", "read"]);
        assert_eq!(id.sites, None, "no site-granting value: every site");
    }

    #[test]
    fn prefixed_values_grant_sites() {
        let config = OidcConfig::default();
        let id = map(
            &config,
            json!({
                "sub": "s",
                "roles": ["Chatvault.Read", "Chatvault.Site.3", "Chatvault.Site.1",
                          "Chatvault.Site.3", "Chatvault.Site.x", "Chatvault.Site.+4",
                          "Chatvault.Site.", "Chatvault.Site.99999999999999999999"]
            }),
        )
        .expect("identity");
        assert_eq!(id.scopes, ["read"]);
        assert_eq!(id.sites, Some(vec![1, 3]));
    }

    #[test]
    fn an_empty_prefix_turns_prefix_grants_off() {
        let config = OidcConfig {
            site_prefix: Some(String::new()),
            ..OidcConfig::default()
        };
        let id = map(
            &config,
            json!({"sub": "s", "roles": ["3", "Chatvault.Site.3"]}),
        )
        .expect("identity");
        assert_eq!(id.sites, None);
    }

    #[test]
    fn groups_map_to_sites_by_id() {
        let group_a = "6f1c2b6e-0000-4000-8000-00000000000a";
        let group_b = "6f1c2b6e-0000-4000-8000-00000000000b";
        let config = OidcConfig {
            claim: "groups".into(),
            scopes: [(group_a.to_owned(), "read".to_owned())].into(),
            sites: [
                (group_a.to_owned(), vec![2, 1]),
                (group_b.to_owned(), vec![2, 5]),
                ("empty".to_owned(), vec![]),
            ]
            .into(),
            ..OidcConfig::default()
        };
        let id = map(&config, json!({"sub": "s", "groups": [group_a, group_b]})).expect("identity");
        assert_eq!(id.scopes, ["read"]);
        assert_eq!(id.sites, Some(vec![1, 2, 5]));

        // A mapped value with no SiteKeys still restricts: to no site at all.
        let id = map(&config, json!({"sub": "s", "groups": ["empty"]})).expect("identity");
        assert_eq!(id.sites, Some(vec![]));
        assert!(id.scopes.is_empty());
    }

    #[test]
    fn a_space_separated_claim_is_split() {
        let config = OidcConfig {
            claim: "scp".into(),
            ..OidcConfig::default()
        };
        let id = map(
            &config,
            json!({"sub": "s", "scp": "Chatvault.Ingest openid"}),
        )
        .expect("identity");
        assert_eq!(id.scopes, ["ingest"]);
    }

    #[test]
    fn user_claims_are_tried_in_order() {
        let config = OidcConfig::default();
        let user = |value| map(&config, value).map(|id| id.user);
        assert_eq!(
            user(json!({"sub": "s", "email": "e@x", "upn": "u@x"})),
            Ok("u@x".into())
        );
        assert_eq!(
            user(json!({"sub": "s", "email": "e@x", "preferred_username": "p@x"})),
            Ok("p@x".into())
        );
        // Present but not a usable string: the next claim names the user.
        assert_eq!(
            user(json!({"sub": "s", "preferred_username": 5, "upn": ""})),
            Ok("s".into())
        );
        let custom = OidcConfig {
            user_claims: vec!["name".into()],
            ..OidcConfig::default()
        };
        assert_eq!(
            map(&custom, json!({"sub": "s"})),
            Err(OidcError::NoUser(vec!["name".into()]))
        );
        assert_eq!(
            OidcError::NoUser(vec!["name".into(), "sub".into()]).to_string(),
            "the token names no user: none of the claims ['name', 'sub'] holds a string"
        );
    }

    #[test]
    fn group_overage_is_reported_not_taken_as_no_groups() {
        let config = OidcConfig {
            claim: "groups".into(),
            ..OidcConfig::default()
        };
        let result = map(
            &config,
            json!({"sub": "s", "_claim_names": {"groups": "src1"}, "_claim_sources": {}}),
        );
        assert_eq!(result, Err(OidcError::ClaimOverage("groups".into())));
    }
}
