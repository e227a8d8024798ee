use sha2::{Digest, Sha256};
use sqlx::Row;
use std::fmt;
use std::str::FromStr;

use crate::{query_err, Catalog, CatalogError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Ingest,
    Admin,
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        match s.trim() {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, ingest or admin"
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        })
    }
}

/// A key as stored: never the secret itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SiteKeys the key may see; `None` means every site.
    pub sites: Option<Vec<i64>>,
    pub created_us: i64,
    pub revoked: bool,
}

impl ApiKey {
    /// `admin` carries every other scope.
    pub fn allows(&self, scope: Scope) -> bool {
        !self.revoked && (self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin))
    }

    pub fn may_see_site(&self, site_key: i64) -> bool {
        self.sites
            .as_ref()
            .is_none_or(|sites| sites.contains(&site_key))
    }
}

/// A freshly created key: the only moment the secret exists outside the caller's hands.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub key: ApiKey,
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub(crate) fn key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKey> {
    let err = || query_err("reading an API key");
    let scopes: String = row.try_get("scopes").map_err(err())?;
    let sites: Option<String> = row.try_get("sites").map_err(err())?;
    let revoked: Option<i64> = row.try_get("revoked_us").map_err(err())?;
    Ok(ApiKey {
        id: row.try_get("id").map_err(err())?,
        name: row.try_get("name").map_err(err())?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(Scope::from_str)
            .collect::<std::result::Result<_, _>>()
            .map_err(CatalogError::Invalid)?,
        sites: sites
            .map(|s| {
                s.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|n| {
                        n.parse::<i64>()
                            .map_err(|e| CatalogError::Invalid(format!("site list {s:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?,
        created_us: row.try_get("created_us").map_err(err())?,
        revoked: revoked.is_some(),
    })
}

const KEY_COLUMNS: &str = "id, name, scopes, sites, created_us, revoked_us";
/// The same columns from a query that calls `api_keys` `k`.
pub(crate) const KEY_COLUMNS_OF_K: &str =
    "k.id, k.name, k.scopes, k.sites, k.created_us, k.revoked_us";

impl Catalog {
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &[Scope],
        sites: Option<&[i64]>,
        now_us: i64,
    ) -> Result<NewKey> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random)
            .map_err(|e| CatalogError::Invalid(format!("no randomness for a key: {e}")))?;
        let secret = format!("cv_{}", hex::encode(random));
        // The id is a public handle for listing and revoking; it reveals 8 of 48 hex digits.
        let id = secret[..11].to_owned();
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let scope_text: Vec<String> = scopes.iter().map(Scope::to_string).collect();
        let site_text = sites.map(|s| s.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_sha256, scopes, sites, created_us, revoked_us) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&id)
        .bind(name)
        .bind(digest(&secret))
        .bind(scope_text.join(","))
        .bind(site_text)
        .bind(now_us)
        .execute(&self.pool)
        .await
        .map_err(query_err("creating an API key"))?;
        Ok(NewKey {
            secret,
            key: ApiKey {
                id,
                name: name.to_owned(),
                scopes,
                sites: sites.map(<[i64]>::to_vec),
                created_us: now_us,
                revoked: false,
            },
        })
    }

    /// The live key whose secret this is, if any.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_sha256 = $1 AND revoked_us IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(digest(secret))
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("checking an API key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_us, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing API keys"))?;
        rows.iter().map(key_from_row).collect()
    }

    /// Returns false when no live key has this id.
    pub async fn revoke_key(&self, id: &str, now_us: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL")
                .bind(now_us)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(query_err("revoking an API key"))?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn has_keys(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("counting API keys"))?;
        Ok(n > 0)
    }
}
