//! Single sign-on: verifies OpenID Connect bearer tokens (JWTs) against the keys the
//! issuer publishes (discovery document and JWKS, cached, refreshed on an unknown key id)
//! and maps their claims to scope names and SiteKeys by configuration.
//!
//! Must not know about HTTP routes, API keys or the catalog: the server decides what a
//! mapped identity may do, exactly as it does for a key.

mod claims;
mod config;
mod error;
mod keys;
mod token;
mod verifier;

pub use claims::Identity;
pub use config::OidcConfig;
pub use error::OidcError;
pub use token::looks_like_jwt;
pub use verifier::{Endpoints, Verifier};
