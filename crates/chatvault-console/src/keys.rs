//! API keys (admin): list, create (the secret shown once), revoke. Audited as the CLI's
//! key commands are.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chatvault_catalog::{ApiKey, Scope};
use chatvault_server::AppState;
use std::str::FromStr;

use crate::error::ConsoleError;
use crate::session::Signed;
use crate::view::{render, utc, Nav};

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<KeyLine>,
    created: Option<(String, String)>,
}

pub struct KeyLine {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub sites: String,
    pub created: String,
    pub revoked: bool,
}

impl From<ApiKey> for KeyLine {
    fn from(key: ApiKey) -> Self {
        KeyLine {
            scopes: key
                .scopes
                .iter()
                .map(Scope::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            sites: key.sites.map_or_else(
                || "all".to_owned(),
                |s| s.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
            ),
            created: utc(key.created_us),
            revoked: key.revoked,
            id: key.id,
            name: key.name,
        }
    }
}

async fn show(
    state: &AppState,
    signed: &Signed,
    created: Option<(String, String)>,
) -> Result<Response, ConsoleError> {
    let keys = state
        .catalog
        .list_keys()
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
        .into_iter()
        .map(KeyLine::from)
        .collect();
    Ok(render(&KeysPage {
        nav: signed.nav("keys"),
        keys,
        created,
    }))
}

/// `GET /console/keys`.
pub async fn page(State(state): State<AppState>, signed: Signed) -> Result<Response, ConsoleError> {
    signed.require(Scope::Admin)?;
    show(&state, &signed, None).await
}

/// `POST /console/keys` with `name`, `scope` (one or more) and `sites` (comma-separated,
/// empty for every site); the page shows the new secret once.
pub async fn create(
    State(state): State<AppState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    signed.admin_form(&body)?;
    // Read again as pairs: `scope` comes once for each box ticked.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    };
    let name = value("name");
    if name.is_empty() {
        return Err(ConsoleError::Invalid(
            "name: give the key a name saying who holds it".into(),
        ));
    }
    let scopes = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| Scope::from_str(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConsoleError::Invalid)?;
    if scopes.is_empty() {
        return Err(ConsoleError::Invalid("scope: choose at least one".into()));
    }
    let sites = match value("sites") {
        "" => None,
        text => Some(
            text.split(',')
                .map(|s| s.trim().parse::<i64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ConsoleError::Invalid("sites: SiteKeys separated by commas".into()))?,
        ),
    };
    let new = state
        .catalog
        .create_key(name, &scopes, sites.as_deref(), chatvault_catalog::now_us())
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    chatvault_server::audit(
        &state,
        &signed.principal,
        signed.peer,
        "key.create",
        &new.key.id,
        serde_json::json!({"name": name, "scopes": scopes, "sites": sites}),
    )
    .await?;
    show(&state, &signed, Some((new.key.id, new.secret))).await
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    signed.admin_form(&body)?;
    let revoked = state
        .catalog
        .revoke_key(&id, chatvault_catalog::now_us())
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    if !revoked {
        return Err(ConsoleError::NotFound);
    }
    chatvault_server::audit(
        &state,
        &signed.principal,
        signed.peer,
        "key.revoke",
        &id,
        serde_json::Value::Null,
    )
    .await?;
    Ok(Redirect::to("/console/keys").into_response())
}
