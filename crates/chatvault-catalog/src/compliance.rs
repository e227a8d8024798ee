//! Legal holds and erasure bookkeeping. Which chats a hold covers is decided by the
//! compliance crate, which reads the documents; the catalog only stores the holds.

use chatvault_model::ContentHash;
use sqlx::Row;

use crate::{query_err, Catalog, CatalogError, Result};

/// What a hold covers: exactly one of a chat, a site (and Started date range), an email.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    Chat {
        chat_uid: String,
    },
    Site {
        site_key: i64,
        /// Inclusive `YYYY-MM-DD` bounds on Started; `None` leaves that end open.
        from_date: Option<String>,
        to_date: Option<String>,
    },
    Email {
        email: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegalHold {
    pub id: String,
    pub scope: HoldScope,
    pub reason: String,
    pub placed_by: String,
    pub placed_us: i64,
    pub released_by: Option<String>,
    pub released_us: Option<i64>,
}

const COLUMNS: &str =
    "id, chat_uid, site_key, from_date, to_date, email, reason, placed_by, placed_us, released_by, released_us";

fn hold_from_row(row: &sqlx::any::AnyRow) -> Result<LegalHold> {
    let err = || query_err("reading a legal hold");
    let id: String = row.try_get("id").map_err(err())?;
    let chat_uid: Option<String> = row.try_get("chat_uid").map_err(err())?;
    let site_key: Option<i64> = row.try_get("site_key").map_err(err())?;
    let email: Option<String> = row.try_get("email").map_err(err())?;
    let scope = match (chat_uid, site_key, email) {
        (Some(chat_uid), None, None) => HoldScope::Chat { chat_uid },
        (None, Some(site_key), None) => HoldScope::Site {
            site_key,
            from_date: row.try_get("from_date").map_err(err())?,
            to_date: row.try_get("to_date").map_err(err())?,
        },
        (None, None, Some(email)) => HoldScope::Email { email },
        _ => {
            return Err(CatalogError::Invalid(format!(
                "legal hold {id} does not name exactly one of chat, site, email"
            )))
        }
    };
    Ok(LegalHold {
        id,
        scope,
        reason: row.try_get("reason").map_err(err())?,
        placed_by: row.try_get("placed_by").map_err(err())?,
        placed_us: row.try_get("placed_us").map_err(err())?,
        released_by: row.try_get("released_by").map_err(err())?,
        released_us: row.try_get("released_us").map_err(err())?,
    })
}

impl Catalog {
    pub async fn place_hold(
        &self,
        scope: &HoldScope,
        reason: &str,
        placed_by: &str,
    ) -> Result<LegalHold> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random)
            .map_err(|e| CatalogError::Invalid(format!("no randomness for a hold id: {e}")))?;
        let id = format!("hold_{}", hex::encode(random));
        let (chat_uid, site_key, from_date, to_date, email) = match scope {
            HoldScope::Chat { chat_uid } => {
                (Some(chat_uid.to_ascii_lowercase()), None, None, None, None)
            }
            HoldScope::Site {
                site_key,
                from_date,
                to_date,
            } => (
                None,
                Some(*site_key),
                from_date.clone(),
                to_date.clone(),
                None,
            ),
            HoldScope::Email { email } => {
                (None, None, None, None, Some(email.trim().to_lowercase()))
            }
        };
        sqlx::query(&format!(
            "INSERT INTO legal_holds ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
        ))
        .bind(&id)
        .bind(chat_uid)
        .bind(site_key)
        .bind(from_date)
        .bind(to_date)
        .bind(email)
        .bind(reason)
        .bind(placed_by)
        .bind(crate::now_us())
        .execute(&self.pool)
        .await
        .map_err(query_err("placing a legal hold"))?;
        self.hold(&id)
            .await?
            .ok_or_else(|| CatalogError::Invalid(format!("legal hold {id} vanished")))
    }

    pub async fn hold(&self, id: &str) -> Result<Option<LegalHold>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM legal_holds WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a legal hold"))?;
        row.as_ref().map(hold_from_row).transpose()
    }

    /// Returns false when no active hold has this id.
    pub async fn release_hold(&self, id: &str, released_by: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE legal_holds SET released_by = $1, released_us = $2 WHERE id = $3 AND released_us IS NULL",
        )
        .bind(released_by)
        .bind(crate::now_us())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("releasing a legal hold"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Holds in the order they were placed; released ones only when asked for.
    pub async fn list_holds(&self, include_released: bool) -> Result<Vec<LegalHold>> {
        let filter = if include_released {
            ""
        } else {
            "WHERE released_us IS NULL"
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM legal_holds {filter} ORDER BY placed_us, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing legal holds"))?;
        rows.iter().map(hold_from_row).collect()
    }

    /// Marks chats deleted after their archive records were erased, as a replay of the
    /// rewritten archive would. Returns how many rows changed.
    pub async fn mark_erased(&self, chat_uids: &[String]) -> Result<u64> {
        let mut changed = 0;
        for chunk in chat_uids.chunks(500) {
            let placeholders = self.placeholders(chunk.len());
            let sql = format!(
                "UPDATE chats SET deleted = 1 WHERE deleted = 0 AND chat_uid IN ({})",
                placeholders.join(",")
            );
            let mut query = sqlx::query(&sql);
            for uid in chunk {
                query = query.bind(uid.as_str());
            }
            changed += query
                .execute(&self.pool)
                .await
                .map_err(query_err("marking erased chats"))?
                .rows_affected();
        }
        Ok(changed)
    }

    /// Records that each chat's newest version, at archive seq `seq`, now has `hash`
    /// (anonymisation rewrote it); a row pointing elsewhere is left alone. Returns how
    /// many rows changed.
    pub async fn set_content_hashes(&self, rows: &[(String, u64, ContentHash)]) -> Result<u64> {
        let mut changed = 0;
        for (chat_uid, seq, hash) in rows {
            changed += sqlx::query(
                "UPDATE chats SET content_hash = $1 WHERE chat_uid = $2 AND archive_seq = $3",
            )
            .bind(hash.to_hex())
            .bind(chat_uid.as_str())
            .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(query_err("recording anonymised content hashes"))?
            .rows_affected();
        }
        Ok(changed)
    }
}
