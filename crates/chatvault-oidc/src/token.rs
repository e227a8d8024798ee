//! The JWT itself: its header read before any key is chosen, the published key checked to
//! fit the header's `alg`, then signature and registered claims checked by jsonwebtoken.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::{OidcConfig, OidcError};

/// What the header says, once its `alg` is known to be one this crate accepts.
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

/// True when `token` has the shape of a JWT: three base64url segments whose first decodes
/// to a JSON object with `alg`. An empty signature still counts, so that an `alg: none`
/// token is refused as a JWT (with a message saying why) rather than tried as an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments[..] else {
        return false;
    };
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(payload)
        && base64url(signature)
        && json_segment(header).is_ok_and(|h| h.contains_key("alg"))
}

/// Reads the header and refuses every `alg` but the asymmetric ones. This runs before a
/// key is looked at: `none` needs no key at all, and HS* would let anyone who has the
/// issuer's *public* key (everyone) forge tokens if it were used as an HMAC secret.
pub(crate) fn header(token: &str) -> Result<Header, OidcError> {
    let (encoded, rest) = token
        .split_once('.')
        .ok_or_else(|| OidcError::Malformed("it has no '.' between its segments".into()))?;
    if rest.split('.').count() != 2 {
        return Err(OidcError::Malformed(
            "it does not have exactly three '.'-separated segments".into(),
        ));
    }
    let header = json_segment(encoded).map_err(|e| OidcError::Malformed(format!("header: {e}")))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(OidcError::Malformed("header: 'alg' is not a string".into())),
        None => return Err(OidcError::Malformed("header: no 'alg'".into())),
    };
    let alg = accepted_alg(alg).ok_or_else(|| OidcError::AlgorithmNotAccepted(alg.clone()))?;
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(OidcError::Malformed("header: 'kid' is not a string".into())),
        None => None,
    };
    Ok(Header { alg, kid })
}

fn accepted_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => return None,
    })
}

/// Why `jwk` must not verify an `alg` token, if it must not. A key published for one
/// algorithm is never tried with another, so a token cannot pick how the issuer's key is
/// interpreted.
pub(crate) fn key_misfit(jwk: &Jwk, alg: Algorithm) -> Option<String> {
    let misfit = match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa) => None,
        (AlgorithmParameters::EllipticCurve(params), AlgorithmFamily::Ec) => {
            let needed = match alg {
                Algorithm::ES256 => EllipticCurve::P256,
                _ => EllipticCurve::P384,
            };
            (params.curve != needed).then(|| {
                format!(
                    "the key is on curve {:?}, {alg:?} needs {needed:?}",
                    params.curve
                )
            })
        }
        (params, family) => Some(format!(
            "the key's type is {}, {alg:?} needs {}",
            key_type(params),
            if family == AlgorithmFamily::Rsa {
                "RSA"
            } else {
                "EC"
            }
        )),
    };
    misfit
        .or_else(|| {
            jwk.common
                .key_algorithm
                .filter(|published| *published != KeyAlgorithm::from(alg))
                .map(|published| format!("the key is published for alg {published}"))
        })
        .or_else(|| match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => None,
            Some(PublicKeyUse::Encryption) => Some("the key is published for use 'enc'".into()),
            Some(PublicKeyUse::Other(other)) => {
                Some(format!("the key is published for use '{other}'"))
            }
        })
}

fn key_type(params: &AlgorithmParameters) -> &'static str {
    match params {
        AlgorithmParameters::RSA(_) => "RSA",
        AlgorithmParameters::EllipticCurve(_) => "EC",
        AlgorithmParameters::OctetKey(_) => "oct",
        AlgorithmParameters::OctetKeyPair(_) => "OKP",
        _ => "unknown",
    }
}

/// Checks the signature with `jwk` (already known to fit `header.alg`) and the registered
/// claims, returning all claims.
pub(crate) fn verified_claims(
    token: &str,
    header: &Header,
    kid: &str,
    jwk: &Jwk,
    config: &OidcConfig,
) -> Result<Map<String, Value>, OidcError> {
    let key = DecodingKey::from_jwk(jwk).map_err(|e| OidcError::KeyMismatch {
        kid: kid.to_owned(),
        alg: format!("{:?}", header.alg),
        reason: format!("the published key is unreadable: {e}"),
    })?;
    // Exactly the one algorithm checked above: never a list a token could choose from.
    let mut validation = Validation::new(header.alg);
    validation.leeway = config.leeway_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    // jsonwebtoken skips the iss and aud checks when the claim is absent unless required.
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&config.audience);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| refusal(e.into_kind(), token, kid, config))?
        .claims;
    // jsonwebtoken also accepts an `iss` array holding the issuer; the standard has a string.
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == config.issuer => Ok(claims),
        other => Err(OidcError::WrongIssuer {
            found: other.map(claim_text).unwrap_or_default(),
            expected: config.issuer.clone(),
        }),
    }
}

/// Words jsonwebtoken's refusal with the claim values involved. jsonwebtoken checks the
/// signature before the claims, so the claims quoted here are the signer's own.
fn refusal(kind: ErrorKind, token: &str, kid: &str, config: &OidcConfig) -> OidcError {
    let claims = || {
        token
            .split('.')
            .nth(1)
            .and_then(|payload| json_segment(payload).ok())
            .unwrap_or_default()
    };
    let time = |name: &str| {
        claims()
            .get(name)
            .and_then(Value::as_f64)
            .map(|secs| {
                // A fraction of a second does not matter in a message.
                let secs = secs as i64;
                chrono::DateTime::from_timestamp(secs, 0).map_or_else(
                    || secs.to_string(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            })
            .unwrap_or_default()
    };
    match kind {
        ErrorKind::InvalidSignature => OidcError::BadSignature(kid.to_owned()),
        ErrorKind::ExpiredSignature => OidcError::Expired {
            at: time("exp"),
            leeway_secs: config.leeway_secs,
        },
        ErrorKind::ImmatureSignature => OidcError::NotYetValid {
            at: time("nbf"),
            leeway_secs: config.leeway_secs,
        },
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer {
            found: claims().get("iss").map(claim_text).unwrap_or_default(),
            expected: config.issuer.clone(),
        },
        ErrorKind::InvalidAudience => OidcError::WrongAudience {
            found: match claims().get("aud") {
                Some(Value::String(aud)) => vec![aud.clone()],
                Some(Value::Array(auds)) => auds.iter().map(claim_text).collect(),
                _ => Vec::new(),
            },
            expected: config.audience.clone(),
        },
        ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => OidcError::BadClaim(claim),
        other => OidcError::Malformed(jsonwebtoken::errors::Error::from(other).to_string()),
    }
}

/// A claim as an operator reads it: a string bare, anything else as JSON.
fn claim_text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// A base64url segment holding a JSON object.
fn json_segment(segment: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON object: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn jwt_shape_is_told_from_api_keys() {
        let h = segment(r#"{"alg":"RS256","kid":"k"}"#);
        let p = segment(r#"{"sub":"x"}"#);
        assert!(looks_like_jwt(&format!("{h}.{p}.c2ln")));
        // alg none has an empty signature and is still a JWT (to be refused as one).
        assert!(looks_like_jwt(&format!(
            "{}.{p}.",
            segment(r#"{"alg":"none"}"#)
        )));
        assert!(!looks_like_jwt("cv_1a2b3c4d5e6f"));
        assert!(!looks_like_jwt("cv_1a2b.c3d4.e5f6"));
        assert!(!looks_like_jwt(&format!("{h}.{p}")));
        assert!(!looks_like_jwt(&format!("{h}.{p}.c2ln.x")));
        assert!(!looks_like_jwt(&format!(
            "{}.{p}.c2ln",
            segment(r#"{"typ":"JWT"}"#)
        )));
        assert!(!looks_like_jwt(&format!(
            "{}.{p}.c2ln",
            segment(r#"["alg"]"#)
        )));
        assert!(!looks_like_jwt(&format!("{h}.{p}.c2l+")));
        assert!(!looks_like_jwt(""));
    }

    #[test]
    fn only_asymmetric_algs_pass_the_header() {
        for alg in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        ] {
            let token = format!("{}.e30.c2ln", segment(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert!(header(&token).is_ok(), "{alg}");
        }
        for alg in [
            "none", "None", "HS256", "HS384", "HS512", "EdDSA", "ES512", "",
        ] {
            let token = format!("{}.e30.", segment(&format!(r#"{{"alg":"{alg}"}}"#)));
            match header(&token) {
                Err(OidcError::AlgorithmNotAccepted(refused)) => assert_eq!(refused, alg),
                other => panic!("{alg}: {:?}", other.map(|h| h.alg)),
            }
        }
        let message = header(&format!("{}.e30.", segment(r#"{"alg":"HS256"}"#)))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("alg 'HS256' is not accepted: only RS256/384/512, PS256/384/512, ES256/384")
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let kid_number = format!("{}.e30.c2ln", segment(r#"{"alg":"RS256","kid":7}"#));
        for token in ["", "a.b", "a.b.c.d", "!!.e30.c2ln", &kid_number] {
            assert!(
                matches!(header(token), Err(OidcError::Malformed(_))),
                "{token}"
            );
        }
    }

    fn jwk(json: &str) -> Jwk {
        serde_json::from_str(json).expect("test JWK")
    }

    #[test]
    fn keys_fit_only_their_own_algorithm() {
        let rsa = r#""kty":"RSA","n":"AQAB","e":"AQAB""#;
        let p256 = r#""kty":"EC","crv":"P-256","x":"AA","y":"AA""#;
        let fits = |json: &str, alg| key_misfit(&jwk(json), alg).is_none();
        assert!(fits(&format!("{{{rsa}}}"), Algorithm::RS256));
        assert!(fits(&format!("{{{rsa}}}"), Algorithm::PS512));
        assert!(fits(
            &format!(r#"{{{rsa},"alg":"RS256","use":"sig"}}"#),
            Algorithm::RS256
        ));
        assert!(!fits(
            &format!(r#"{{{rsa},"alg":"RS256"}}"#),
            Algorithm::PS256
        ));
        assert!(!fits(
            &format!(r#"{{{rsa},"use":"enc"}}"#),
            Algorithm::RS256
        ));
        assert!(!fits(&format!("{{{rsa}}}"), Algorithm::ES256));
        assert!(fits(&format!("{{{p256}}}"), Algorithm::ES256));
        assert!(!fits(&format!("{{{p256}}}"), Algorithm::ES384));
        assert!(!fits(&format!("{{{p256}}}"), Algorithm::RS256));
        assert!(!fits(r#"{"kty":"oct","k":"c2VjcmV0"}"#, Algorithm::RS256));
    }
}
