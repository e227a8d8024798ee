//! The verifier against a real (loopback) issuer: good tokens map to identities, and every
//! kind of bad token is refused as the token's fault, not the issuer's.

#[path = "../../../tests/common/issuer.rs"]
mod issuer;

use chatvault_oidc::{Endpoints, Identity, OidcConfig, OidcError, Verifier};
use issuer::{now, SigningKey, TestIssuer};
use serde_json::{json, Value};

const AUDIENCE: &str = "api://chatvault";

fn config(issuer: &TestIssuer) -> OidcConfig {
    OidcConfig {
        issuer: issuer.base(),
        audience: vec![AUDIENCE.into()],
        min_refresh_secs: 0,
        ..OidcConfig::default()
    }
}

fn verifier(issuer: &TestIssuer) -> Verifier {
    Verifier::new(config(issuer)).expect("verifier")
}

fn claims_with(issuer: &TestIssuer, extra: Value) -> Value {
    let mut claims = issuer.claims(AUDIENCE);
    for (name, value) in extra.as_object().expect("extra claims object") {
        claims[name] = value.clone();
    }
    claims
}

/// The token is refused, and as the token's fault (401), not the issuer's (503).
async fn refused(verifier: &Verifier, token: &str) -> OidcError {
    match verifier.verify(token).await {
        Ok(identity) => panic!("accepted: {identity:?}"),
        Err(e) => {
            assert!(!e.is_unavailable(), "counted as the issuer's fault: {e}");
            e
        }
    }
}

#[tokio::test]
async fn good_rs256_and_es256_tokens_map_to_identities() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let claims = claims_with(
        &issuer,
        json!({
            "oid": "00000000-0000-0000-0000-00000000000a",
            "roles": ["Chatvault.Read", "Chatvault.Ingest", "Chatvault.Site.2", "Chatvault.Site.7"],
        }),
    );
    let expected = Identity {
        user: "ana@example.com".into(),
        object_id: Some("00000000-0000-0000-0000-00000000000a".into()),
        scopes: vec!["ingest".into(), "read".into()],
        sites: Some(vec![2, 7]),
    };
    let rs256 = issuer.token(claims.clone());
    assert!(chatvault_oidc::looks_like_jwt(&rs256));
    assert_eq!(verifier.verify(&rs256).await, Ok(expected.clone()));
    assert_eq!(
        verifier.verify(&issuer.token_es256(claims)).await,
        Ok(expected)
    );

    // An audience list holding the configured audience among others is accepted.
    let token = issuer.token(claims_with(
        &issuer,
        json!({"aud": ["api://other", AUDIENCE], "roles": ["Chatvault.Admin"]}),
    ));
    let identity = verifier.verify(&token).await.expect("audience list");
    assert_eq!(identity.scopes, ["admin"]);
    assert_eq!(identity.sites, None);
}

#[tokio::test]
async fn tokens_without_kid_use_the_only_fitting_key() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let claims = issuer.claims(AUDIENCE);
    for (alg, key) in [("RS256", SigningKey::Rsa), ("ES256", SigningKey::Ec)] {
        let token = issuer.sign(json!({"alg": alg}), claims.clone(), key);
        assert!(verifier.verify(&token).await.is_ok(), "{alg}");
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);

    let expired = issuer.token(claims_with(&issuer, json!({"exp": now() - 3600})));
    let e = refused(&verifier, &expired).await;
    assert!(matches!(e, OidcError::Expired { .. }), "{e:?}");
    assert!(e.to_string().starts_with("the token expired at 20"), "{e}");

    let early = issuer.token(claims_with(&issuer, json!({"nbf": now() + 3600})));
    let e = refused(&verifier, &early).await;
    assert!(matches!(e, OidcError::NotYetValid { .. }), "{e:?}");

    let mut no_exp = issuer.claims(AUDIENCE);
    no_exp.as_object_mut().expect("claims object").remove("exp");
    let e = refused(&verifier, &issuer.token(no_exp)).await;
    assert_eq!(e, OidcError::MissingClaim("exp".into()));
}

#[tokio::test]
async fn leeway_covers_small_clock_skew_only() {
    let issuer = TestIssuer::start();
    let token = issuer.token(claims_with(&issuer, json!({"exp": now() - 30})));

    let lenient = Verifier::new(OidcConfig {
        leeway_secs: 60,
        ..config(&issuer)
    })
    .expect("verifier");
    assert!(lenient.verify(&token).await.is_ok());

    let strict = Verifier::new(OidcConfig {
        leeway_secs: 0,
        ..config(&issuer)
    })
    .expect("verifier");
    let e = refused(&strict, &token).await;
    assert!(
        matches!(e, OidcError::Expired { leeway_secs: 0, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn wrong_audience_or_issuer_is_refused() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);

    let token = issuer.token(claims_with(&issuer, json!({"aud": "api://other"})));
    let e = refused(&verifier, &token).await;
    assert_eq!(
        e.to_string(),
        "the token's audience 'api://other' is not one of ['api://chatvault']"
    );

    let mut no_aud = issuer.claims(AUDIENCE);
    no_aud.as_object_mut().expect("claims object").remove("aud");
    let e = refused(&verifier, &issuer.token(no_aud)).await;
    assert_eq!(e, OidcError::MissingClaim("aud".into()));

    // Signed with the issuer's own key, but claiming another issuer.
    let token = issuer.token(claims_with(
        &issuer,
        json!({"iss": "https://evil.example.com"}),
    ));
    let e = refused(&verifier, &token).await;
    assert!(matches!(e, OidcError::WrongIssuer { .. }), "{e:?}");

    // An iss array holding the right issuer is not the string the standard requires.
    let token = issuer.token(claims_with(&issuer, json!({"iss": [issuer.base()]})));
    let e = refused(&verifier, &token).await;
    assert!(matches!(e, OidcError::WrongIssuer { .. }), "{e:?}");
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let claims = issuer.claims(AUDIENCE);
    let kid = issuer.rsa_kid();

    let none = issuer.sign(
        json!({"alg": "none", "kid": kid}),
        claims.clone(),
        SigningKey::Unsigned,
    );
    assert!(chatvault_oidc::looks_like_jwt(&none));
    assert_eq!(
        refused(&verifier, &none).await,
        OidcError::AlgorithmNotAccepted("none".into())
    );

    // The key-confusion attack: HS256 keyed with the issuer's public key, in either form a
    // library might read it in.
    let pem = issuer.public_key_pem();
    let der = issuer.public_key_der();
    for secret in [pem.as_bytes(), der.as_slice()] {
        let forged = issuer.sign(
            json!({"alg": "HS256", "kid": kid}),
            claims.clone(),
            SigningKey::Hmac(secret),
        );
        let e = refused(&verifier, &forged).await;
        assert_eq!(e, OidcError::AlgorithmNotAccepted("HS256".into()));
        assert_eq!(
            e.to_string(),
            "alg 'HS256' is not accepted: only RS256/384/512, PS256/384/512, ES256/384"
        );
    }
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let reader = issuer.token(claims_with(&issuer, json!({"roles": ["Chatvault.Read"]})));
    let admin = issuer.token(claims_with(&issuer, json!({"roles": ["Chatvault.Admin"]})));
    assert!(verifier.verify(&reader).await.is_ok());

    // The reader's header and signature around the admin's claims.
    let tamper = |reader: &str, admin: &str| {
        let part = |token: &str, i: usize| token.split('.').nth(i).expect("segment").to_owned();
        format!("{}.{}.{}", part(reader, 0), part(admin, 1), part(reader, 2))
    };
    let e = refused(&verifier, &tamper(&reader, &admin)).await;
    assert_eq!(e, OidcError::BadSignature(issuer.rsa_kid()));

    // The same for the EC key.
    let reader = issuer.token_es256(claims_with(&issuer, json!({"roles": ["Chatvault.Read"]})));
    let admin = issuer.token_es256(claims_with(&issuer, json!({"roles": ["Chatvault.Admin"]})));
    let e = refused(&verifier, &tamper(&reader, &admin)).await;
    assert_eq!(e, OidcError::BadSignature(issuer.ec_kid()));
}

#[tokio::test]
async fn a_key_is_used_only_for_its_own_algorithm() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let claims = issuer.claims(AUDIENCE);

    // ES256 naming the RSA key.
    let token = issuer.sign(
        json!({"alg": "ES256", "kid": issuer.rsa_kid()}),
        claims.clone(),
        SigningKey::Ec,
    );
    let e = refused(&verifier, &token).await;
    assert!(matches!(e, OidcError::KeyMismatch { .. }), "{e:?}");

    // PS256 with the RSA key, which the issuer publishes for RS256 only.
    let token = issuer.sign(
        json!({"alg": "PS256", "kid": issuer.rsa_kid()}),
        claims,
        SigningKey::Rsa,
    );
    let e = refused(&verifier, &token).await;
    assert!(
        e.to_string().contains("the key is published for alg RS256"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_refetch() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    verifier.discover().await.expect("discovery");
    assert_eq!(issuer.jwks_fetches(), 1);

    let token = issuer.sign(
        json!({"alg": "RS256", "kid": "not-published"}),
        issuer.claims(AUDIENCE),
        SigningKey::Rsa,
    );
    let e = refused(&verifier, &token).await;
    assert_eq!(e, OidcError::UnknownKey("not-published".into()));
    assert_eq!(
        e.to_string(),
        "the token is signed with key id 'not-published' which the issuer does not publish"
    );
    assert_eq!(issuer.jwks_fetches(), 2, "the JWKS is fetched again once");
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_min_refresh() {
    let issuer = TestIssuer::start();
    let verifier = Verifier::new(OidcConfig {
        min_refresh_secs: 3600,
        ..config(&issuer)
    })
    .expect("verifier");
    verifier.discover().await.expect("discovery");
    let token = issuer.sign(
        json!({"alg": "RS256", "kid": "made-up"}),
        issuer.claims(AUDIENCE),
        SigningKey::Rsa,
    );
    for _ in 0..3 {
        refused(&verifier, &token).await;
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "made-up kids must not hammer the issuer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let token = issuer.token(issuer.claims(AUDIENCE));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("task").is_ok());
    }
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn key_rotation_at_the_issuer_is_followed() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let old = issuer.token(issuer.claims(AUDIENCE));
    assert!(verifier.verify(&old).await.is_ok());
    let old_kid = issuer.rsa_kid();

    issuer.rotate();
    assert_ne!(issuer.rsa_kid(), old_kid);
    let new = issuer.token(issuer.claims(AUDIENCE));
    assert!(
        verifier.verify(&new).await.is_ok(),
        "the new key is fetched"
    );

    // The old key is no longer published, so its tokens no longer verify.
    assert_eq!(
        refused(&verifier, &old).await,
        OidcError::UnknownKey(old_kid)
    );
}

#[tokio::test]
async fn the_challenge_and_endpoints_come_from_discovery() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    assert_eq!(verifier.challenge(), None, "nothing known before discovery");
    assert_eq!(verifier.endpoints(), None);

    verifier.discover().await.expect("discovery");
    let base = issuer.base();
    assert_eq!(
        verifier.challenge(),
        Some(format!("Bearer authorization_uri=\"{base}/authorize\""))
    );
    assert_eq!(
        verifier.endpoints(),
        Some(Endpoints {
            authorization: format!("{base}/authorize"),
            token: format!("{base}/token"),
        })
    );
    assert_eq!(verifier.issuer(), base);
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_a_bad_token() {
    let issuer = TestIssuer::start();
    let token = issuer.token(issuer.claims(AUDIENCE));
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let verifier = Verifier::new(OidcConfig {
        issuer: format!("http://127.0.0.1:{port}"),
        ..config(&issuer)
    })
    .expect("verifier");

    let e = verifier.discover().await.expect_err("nothing listens");
    assert!(e.is_unavailable(), "{e}");
    let e = verifier.verify(&token).await.expect_err("nothing listens");
    assert!(e.is_unavailable(), "{e}");
    assert!(matches!(e, OidcError::Unreachable { .. }), "{e:?}");
    assert_eq!(verifier.challenge(), None);
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let issuer = TestIssuer::start();
    // Discovery is fetched from the same place, but names the issuer without the slash.
    let verifier = Verifier::new(OidcConfig {
        issuer: format!("{}/", issuer.base()),
        ..config(&issuer)
    })
    .expect("verifier");
    let e = verifier.discover().await.expect_err("issuer mismatch");
    assert!(e.is_unavailable());
    assert!(matches!(e, OidcError::IssuerMismatch { .. }), "{e:?}");
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "no keys trusted from a mismatched document"
    );
}

/// The issuer also serves callers without a runtime of their own.
#[test]
fn the_issuer_works_from_a_plain_test() {
    let issuer = TestIssuer::start();
    let verifier = verifier(&issuer);
    let token = issuer.token(issuer.claims(AUDIENCE));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let identity = runtime.block_on(verifier.verify(&token)).expect("verified");
    assert_eq!(identity.user, "ana@example.com");
}
