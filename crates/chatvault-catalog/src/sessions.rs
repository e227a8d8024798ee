use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::keys::{key_from_row, KEY_COLUMNS_OF_K};
use crate::{query_err, ApiKey, Catalog, CatalogError, Result};

/// How long a console session lives: `idle_us` without a request, `absolute_us` at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub idle_us: i64,
    pub absolute_us: i64,
}

/// A console session as a request finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key: ApiKey,
    pub created_us: i64,
    pub expires_us: i64,
}

/// A session's activity is written at most this often, so that a page full of requests
/// costs one read each rather than a write each.
const TOUCH_EVERY_US: i64 = 60_000_000;

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Catalog {
    /// Opens a session for a live key and returns the token the browser keeps. Sessions
    /// past their end are removed on the way, so the table holds only live ones.
    pub async fn create_session(
        &self,
        key_id: &str,
        limits: SessionLimits,
        now_us: i64,
    ) -> Result<String> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| CatalogError::Invalid(format!("no randomness for a session: {e}")))?;
        let token = hex::encode(random);
        sqlx::query("DELETE FROM console_sessions WHERE expires_us <= $1 OR last_seen_us <= $2")
            .bind(now_us)
            .bind(now_us.saturating_sub(limits.idle_us))
            .execute(&self.pool)
            .await
            .map_err(query_err("removing ended console sessions"))?;
        sqlx::query(
            "INSERT INTO console_sessions (token_sha256, key_id, created_us, last_seen_us, expires_us) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(digest(&token))
        .bind(key_id)
        .bind(now_us)
        .bind(now_us.saturating_add(limits.absolute_us))
        .execute(&self.pool)
        .await
        .map_err(query_err("opening a console session"))?;
        Ok(token)
    }

    /// The live session this token opened, with its key as it is now; None when the
    /// token is unknown, idle too long, past its end, or its key was revoked.
    pub async fn session(
        &self,
        token: &str,
        limits: SessionLimits,
        now_us: i64,
    ) -> Result<Option<Session>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS_OF_K}, s.created_us AS session_created_us, s.last_seen_us, s.expires_us \
             FROM console_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.token_sha256 = $1 AND k.revoked_us IS NULL AND s.expires_us > $2 AND s.last_seen_us > $3"
        );
        let hash = digest(token);
        let row = sqlx::query(&sql)
            .bind(&hash)
            .bind(now_us)
            .bind(now_us.saturating_sub(limits.idle_us))
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("looking up a console session"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let err = || query_err("reading a console session");
        let last_seen: i64 = row.try_get("last_seen_us").map_err(err())?;
        let session = Session {
            key: key_from_row(&row)?,
            created_us: row.try_get("session_created_us").map_err(err())?,
            expires_us: row.try_get("expires_us").map_err(err())?,
        };
        if now_us - last_seen >= TOUCH_EVERY_US {
            sqlx::query("UPDATE console_sessions SET last_seen_us = $1 WHERE token_sha256 = $2")
                .bind(now_us)
                .bind(&hash)
                .execute(&self.pool)
                .await
                .map_err(query_err("noting a console session's activity"))?;
        }
        Ok(Some(session))
    }

    /// Ends a session (sign-out); false when it had already ended.
    pub async fn end_session(&self, token: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = $1")
            .bind(digest(token))
            .execute(&self.pool)
            .await
            .map_err(query_err("ending a console session"))?;
        Ok(done.rows_affected() > 0)
    }
}
