use sqlx::Row;

use crate::{query_err, Catalog, Result};

/// One Parquet file of the columnar store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    /// Relative to the store directory.
    pub path: String,
    pub table: String,
    pub site_key: i64,
    /// `YYYY-MM` of Started, or `none`.
    pub month: String,
    pub rows: i64,
    pub bytes: i64,
}

/// The store's registry at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub files: Vec<StoreFile>,
    pub deletes: Vec<String>,
    pub flushed_seq: u64,
}

/// One atomic change of the registry (a flush or a compaction).
#[derive(Debug, Clone, Default)]
pub struct StoreChange {
    pub add_files: Vec<StoreFile>,
    pub remove_files: Vec<String>,
    pub add_deletes: Vec<(String, i64)>,
    pub remove_deletes: Vec<String>,
    pub flushed_seq: Option<u64>,
}

impl Catalog {
    pub async fn store_snapshot(&self) -> Result<StoreSnapshot> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("reading the store registry"))?;
        let files = sqlx::query("SELECT path, table_name, site_key, month, row_count, byte_count FROM store_files ORDER BY path")
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("reading the store registry"))?
            .iter()
            .map(|row| {
                Ok(StoreFile {
                    path: row.try_get("path").map_err(query_err("reading a store file"))?,
                    table: row.try_get("table_name").map_err(query_err("reading a store file"))?,
                    site_key: row.try_get("site_key").map_err(query_err("reading a store file"))?,
                    month: row.try_get("month").map_err(query_err("reading a store file"))?,
                    rows: row.try_get("row_count").map_err(query_err("reading a store file"))?,
                    bytes: row.try_get("byte_count").map_err(query_err("reading a store file"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deletes: Vec<String> =
            sqlx::query_scalar("SELECT path FROM store_deletes ORDER BY path")
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("reading the store registry"))?;
        let flushed: i64 = sqlx::query_scalar("SELECT flushed_seq FROM store_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(query_err("reading the store watermark"))?;
        tx.commit()
            .await
            .map_err(query_err("reading the store registry"))?;
        Ok(StoreSnapshot {
            files,
            deletes,
            flushed_seq: u64::try_from(flushed).unwrap_or_default(),
        })
    }

    pub async fn commit_store_change(&self, change: &StoreChange, now_us: i64) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a store change"))?;
        for path in &change.remove_files {
            sqlx::query("DELETE FROM store_files WHERE path = $1")
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing a store file"))?;
        }
        for path in &change.remove_deletes {
            sqlx::query("DELETE FROM store_deletes WHERE path = $1")
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing a store deletes file"))?;
        }
        for f in &change.add_files {
            sqlx::query(
                "INSERT INTO store_files (path, table_name, site_key, month, row_count, byte_count, created_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&f.path)
            .bind(&f.table)
            .bind(f.site_key)
            .bind(&f.month)
            .bind(f.rows)
            .bind(f.bytes)
            .bind(now_us)
            .execute(&mut *tx)
            .await
            .map_err(query_err("registering a store file"))?;
        }
        for (path, rows) in &change.add_deletes {
            sqlx::query(
                "INSERT INTO store_deletes (path, row_count, created_us) VALUES ($1, $2, $3)",
            )
            .bind(path)
            .bind(rows)
            .bind(now_us)
            .execute(&mut *tx)
            .await
            .map_err(query_err("registering a store deletes file"))?;
        }
        if let Some(seq) = change.flushed_seq {
            sqlx::query("UPDATE store_state SET flushed_seq = $1 WHERE id = 1")
                .bind(seq as i64)
                .execute(&mut *tx)
                .await
                .map_err(query_err("advancing the store watermark"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("committing a store change"))
    }

    /// Forgets every store file (before a rebuild from the archive).
    pub async fn reset_store(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("resetting the store registry"))?;
        for sql in [
            "DELETE FROM store_files",
            "DELETE FROM store_deletes",
            "UPDATE store_state SET flushed_seq = 0 WHERE id = 1",
        ] {
            sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .map_err(query_err("resetting the store registry"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("resetting the store registry"))
    }
}
