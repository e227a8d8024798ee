//! A small OpenID Connect issuer for tests: serves a discovery document and a JWKS on a
//! loopback port and signs tokens with its own RS256 and ES256 keys, including the hostile
//! and broken tokens a verifier must refuse (`alg: none`, HS256 keyed with the public key,
//! unknown key ids), and rotates its RSA key on demand.
//!
//! Shared by several crates' tests: `#[path = "../../../tests/common/issuer.rs"] mod issuer;`.
//! It needs these dev-dependencies: axum, tokio, serde_json, jsonwebtoken, rcgen, base64.
//! The server runs on its own thread with its own runtime, so it works from `#[test]` and
//! from `#[tokio::test]` (either flavour) alike.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::{json, Value};

/// Which key signs a token built with [`TestIssuer::sign`].
pub enum SigningKey<'a> {
    /// The current RSA key (RS* or PS* per the header's `alg`).
    Rsa,
    /// The P-256 key (ES256).
    Ec,
    /// An HMAC secret, e.g. the RSA public key's bytes for the key-confusion attack.
    Hmac(&'a [u8]),
    /// No signature at all (for `alg: none`).
    Unsigned,
}

struct RsaKey {
    kid: String,
    key_pair: KeyPair,
    /// PKCS#1 RSAPrivateKey: what jsonwebtoken's aws-lc backend signs with.
    private_pkcs1: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
}

struct EcKey {
    kid: String,
    private_pkcs8: Vec<u8>,
    x: Vec<u8>,
    y: Vec<u8>,
}

struct Keys {
    rsa: Mutex<RsaKey>,
    ec: EcKey,
    rotations: AtomicUsize,
    jwks_fetches: AtomicUsize,
    base: String,
}

/// A running issuer; stops when dropped.
pub struct TestIssuer {
    keys: Arc<Keys>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestIssuer {
    /// Generates the keys and starts serving on `127.0.0.1:` a free port.
    pub fn start() -> TestIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let port = listener.local_addr().expect("listener address").port();
        let base = format!("http://127.0.0.1:{port}");
        let keys = Arc::new(Keys {
            rsa: Mutex::new(rsa_key("rsa-0")),
            ec: ec_key("ec-0"),
            rotations: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            base,
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&keys));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("test-issuer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("issuer runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("serve the test issuer");
                });
            })
            .expect("start the issuer thread");
        TestIssuer {
            keys,
            stop: Some(stop),
        }
    }

    /// The issuer URL (`iss`), `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.keys.base.clone()
    }

    pub fn rsa_kid(&self) -> String {
        self.rsa().kid.clone()
    }

    pub fn ec_kid(&self) -> String {
        self.keys.ec.kid.clone()
    }

    /// How often the JWKS has been fetched, to check refetching and its throttle.
    pub fn jwks_fetches(&self) -> usize {
        self.keys.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims a verifier configured with this issuer and `audience` accepts: `iss`, `aud`,
    /// `sub`, `preferred_username`, `iat`, and `exp` an hour ahead. Add `roles` etc. to it.
    pub fn claims(&self, audience: &str) -> Value {
        let now = now();
        json!({
            "iss": self.base(),
            "aud": audience,
            "sub": "test-subject",
            "preferred_username": "ana@example.com",
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// `claims` signed RS256 with the current RSA key, its kid in the header.
    pub fn token(&self, claims: Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.rsa_kid()});
        self.sign(header, claims, SigningKey::Rsa)
    }

    /// `claims` signed ES256 with the P-256 key, its kid in the header.
    pub fn token_es256(&self, claims: Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.ec_kid()});
        self.sign(header, claims, SigningKey::Ec)
    }

    /// `header.claims.signature`, the signature made with `key` by the header's `alg`
    /// (which may be anything with [`SigningKey::Unsigned`]).
    pub fn sign(&self, header: Value, claims: Value, key: SigningKey<'_>) -> String {
        let message = format!("{}.{}", segment(&header), segment(&claims));
        let alg = || {
            let name = header["alg"].as_str().expect("the header has an alg");
            Algorithm::from_str(name).expect("an alg jsonwebtoken can sign with")
        };
        let signature = match key {
            SigningKey::Rsa => {
                let key = EncodingKey::from_rsa_der(&self.rsa().private_pkcs1);
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg()).expect("RSA signature")
            }
            SigningKey::Ec => {
                let key = EncodingKey::from_ec_der(&self.keys.ec.private_pkcs8);
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg()).expect("EC signature")
            }
            SigningKey::Hmac(secret) => {
                let key = EncodingKey::from_secret(secret).expect("HMAC key");
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg()).expect("HMAC signature")
            }
            SigningKey::Unsigned => String::new(),
        };
        format!("{message}.{signature}")
    }

    /// Replaces the RSA key with a new one under a new kid; only the new one is published.
    pub fn rotate(&self) {
        let n = self.keys.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        *self.keys.rsa.lock().expect("RSA key lock") = rsa_key(&format!("rsa-{n}"));
    }

    /// The current RSA public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.rsa().key_pair.subject_public_key_info()
    }

    /// The current RSA public key as a `PUBLIC KEY` PEM.
    pub fn public_key_pem(&self) -> String {
        self.rsa().key_pair.public_key_pem()
    }

    fn rsa(&self) -> std::sync::MutexGuard<'_, RsaKey> {
        self.keys.rsa.lock().expect("RSA key lock")
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Seconds since the epoch, as JWT times are given.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn discovery(State(keys): State<Arc<Keys>>) -> Json<Value> {
    let base = &keys.base;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State(keys): State<Arc<Keys>>) -> Json<Value> {
    keys.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let rsa = keys.rsa.lock().expect("RSA key lock");
    let ec = &keys.ec;
    Json(json!({"keys": [
        {
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": rsa.kid,
            "n": URL_SAFE_NO_PAD.encode(&rsa.n), "e": URL_SAFE_NO_PAD.encode(&rsa.e),
        },
        {
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": ec.kid,
            "x": URL_SAFE_NO_PAD.encode(&ec.x), "y": URL_SAFE_NO_PAD.encode(&ec.y),
        },
    ]}))
}

fn segment(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn rsa_key(kid: &str) -> RsaKey {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("generate an RSA key");
    // The raw public key is PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
    let (public, _) = der(key_pair.public_key_raw(), 0x30);
    let (n, rest) = der(public, 0x02);
    let (e, _) = der(rest, 0x02);
    // A DER INTEGER carries a leading zero when its top bit is set; a JWK does not.
    let unsigned = |bytes: &[u8]| bytes.strip_prefix(&[0]).unwrap_or(bytes).to_vec();
    let private_pkcs1 = pkcs1_private(key_pair.serialized_der());
    RsaKey {
        kid: kid.to_owned(),
        n: unsigned(n),
        e: unsigned(e),
        private_pkcs1,
        key_pair,
    }
}

fn ec_key(kid: &str) -> EcKey {
    let key_pair =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key");
    // The raw public key is the uncompressed point 0x04 || x || y.
    let point = key_pair.public_key_raw();
    assert_eq!(
        (point.len(), point[0]),
        (65, 0x04),
        "uncompressed P-256 point"
    );
    EcKey {
        kid: kid.to_owned(),
        private_pkcs8: key_pair.serialize_der(),
        x: point[1..33].to_vec(),
        y: point[33..].to_vec(),
    }
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (SEQUENCE { INTEGER version,
/// SEQUENCE algorithm, OCTET STRING key }), or the input if it already is one.
fn pkcs1_private(der_key: &[u8]) -> Vec<u8> {
    let (info, _) = der(der_key, 0x30);
    let (_version, rest) = der(info, 0x02);
    if rest.first() == Some(&0x02) {
        return der_key.to_vec();
    }
    let (_algorithm, rest) = der(rest, 0x30);
    let (key, _) = der(rest, 0x04);
    key.to_vec()
}

/// The DER element of tag `tag` at the start of `input`: (its contents, what follows).
fn der(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
    assert_eq!(input.first(), Some(&tag), "DER tag");
    let (len, header) = match input[1] {
        short if short < 0x80 => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let len = input[2..2 + count]
                .iter()
                .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
            (len, 2 + count)
        }
    };
    (&input[header..header + len], &input[header + len..])
}
