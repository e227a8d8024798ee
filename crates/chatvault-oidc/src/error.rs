//! Why a token or the configuration was refused, worded for whoever must act on it: the
//! server puts the message in its 401/503 answer and in its log.

/// A refused configuration, a refused token, or an issuer that could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("OIDC configuration: {0}")]
    Config(String),

    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("alg '{0}' is not accepted: only RS256/384/512, PS256/384/512, ES256/384")]
    AlgorithmNotAccepted(String),
    #[error("the token is signed with key id '{0}' which the issuer does not publish")]
    UnknownKey(String),
    #[error(
        "the token names no key id (kid) and the issuer publishes {count} keys usable for \
         {alg}: without a kid exactly one can be chosen"
    )]
    NoKeyId { alg: String, count: usize },
    #[error("the issuer's key '{kid}' cannot verify {alg} tokens: {reason}")]
    KeyMismatch {
        kid: String,
        alg: String,
        reason: String,
    },
    #[error(
        "the token's signature does not verify with the issuer's key '{0}': the token was \
         altered or signed by someone else"
    )]
    BadSignature(String),
    #[error("the token expired at {at} (clock skew allowed: {leeway_secs} s): sign in again")]
    Expired { at: String, leeway_secs: u64 },
    #[error(
        "the token is not valid before {at} (clock skew allowed: {leeway_secs} s): check the \
         clocks of this server and the issuer"
    )]
    NotYetValid { at: String, leeway_secs: u64 },
    #[error("the token has no '{0}' claim, which is required")]
    MissingClaim(String),
    #[error("the token's '{0}' claim is not of the type the standard gives it")]
    BadClaim(String),
    #[error("the token's issuer '{found}' is not the configured issuer '{expected}'")]
    WrongIssuer { found: String, expected: String },
    #[error(
        "the token's audience {} is not one of {}",
        one_or_list(.found),
        quoted(.expected)
    )]
    WrongAudience {
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error(
        "the token names no user: none of the claims {} holds a string",
        quoted(.0)
    )]
    NoUser(Vec<String>),
    #[error(
        "the issuer left the '{0}' claim out of the token because the user has too many values \
         for it (Entra group overage): map app roles instead, or have the issuer emit only the \
         groups assigned to the application"
    )]
    ClaimOverage(String),

    #[error("the identity provider could not be reached at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the identity provider's answer at {url} is unusable: {reason}")]
    BadResponse { url: String, reason: String },
    #[error(
        "the discovery document at {url} names issuer '{found}', not the configured '{expected}': \
         if that is the right identity provider, configure exactly its issuer value"
    )]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
}

impl OidcError {
    /// True when the issuer could not be asked or answered nonsense: the token may be fine,
    /// so the server answers 503 (try again) rather than 401 (sign in again).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            OidcError::Unreachable { .. }
                | OidcError::BadResponse { .. }
                | OidcError::IssuerMismatch { .. }
        )
    }
}

/// `'a'` for the usual single audience, else the list.
fn one_or_list(values: &[String]) -> String {
    match values {
        [one] => format!("'{one}'"),
        _ => quoted(values),
    }
}

/// `['a', 'b']`: the form an operator compares with the configuration file by eye.
fn quoted(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    format!("[{}]", inner.join(", "))
}
