//! The audit log: one hash-chained row per administrative action.
//!
//! Row `n` stores `sha256 = SHA-256(canonical(n's fields) ‖ prev_sha256)` and the previous
//! row's `sha256` as its `prev_sha256`, starting from 64 zeros. Editing, removing or
//! reordering a row therefore breaks the chain at that row, and `verify_audit` names it.

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::time::Duration;

use crate::{query_err, Catalog, CatalogError, Result};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const COLUMNS: &str = "seq, at_us, actor, address, action, target, detail, prev_sha256, sha256";
/// Concurrent appenders (another process, another pool connection) race for the next
/// seq; the loser's insert fails (unique key, or SQLite's stale snapshot) and retries.
const APPEND_ATTEMPTS: u32 = 50;

/// What a caller records; the catalog adds the time, position and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who asked: `key:ID (NAME)` for the API, `cli:USER` for the command line.
    pub actor: String,
    /// From where: the client's IP address, or `local` for the command line.
    pub address: String,
    /// What, as `noun.verb`: `key.create`, `chat.delete`, `erasure.apply`, …
    pub action: String,
    /// What it applied to (a key id, a ChatUID, a hold id); empty when nothing specific.
    pub target: String,
    /// Further facts as a JSON object. Never personal data: receipts count, they do not copy.
    pub detail: serde_json::Value,
}

/// One row as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_us: i64,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub prev_sha256: String,
    pub sha256: String,
}

/// What `verify_audit` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditVerifyReport {
    pub entries: u64,
    /// The last row's hash: what a digest of the log commits to.
    pub head_sha256: Option<String>,
    /// Each names the row (by seq) where the chain stops holding.
    pub problems: Vec<String>,
}

impl AuditVerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The stored columns, exactly as hashed.
struct RawRow {
    seq: i64,
    at_us: i64,
    actor: String,
    address: String,
    action: String,
    target: String,
    detail: String,
    prev_sha256: String,
    sha256: String,
}

impl RawRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<RawRow> {
        let err = || query_err("reading an audit row");
        Ok(RawRow {
            seq: row.try_get("seq").map_err(err())?,
            at_us: row.try_get("at_us").map_err(err())?,
            actor: row.try_get("actor").map_err(err())?,
            address: row.try_get("address").map_err(err())?,
            action: row.try_get("action").map_err(err())?,
            target: row.try_get("target").map_err(err())?,
            detail: row.try_get("detail").map_err(err())?,
            prev_sha256: row.try_get("prev_sha256").map_err(err())?,
            sha256: row.try_get("sha256").map_err(err())?,
        })
    }

    /// A JSON array is an unambiguous encoding of the fields (strings are escaped and
    /// delimited), so no two different rows hash the same input.
    fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.seq,
            self.at_us,
            self.actor,
            self.address,
            self.action,
            self.target,
            self.detail,
            self.prev_sha256
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    fn into_record(self) -> Result<AuditRecord> {
        let detail = serde_json::from_str(&self.detail).map_err(|e| {
            CatalogError::Invalid(format!("audit row {} detail is not JSON: {e}", self.seq))
        })?;
        Ok(AuditRecord {
            seq: u64::try_from(self.seq).map_err(|_| {
                CatalogError::Invalid(format!("audit row has negative seq {}", self.seq))
            })?,
            at_us: self.at_us,
            actor: self.actor,
            address: self.address,
            action: self.action,
            target: self.target,
            detail,
            prev_sha256: self.prev_sha256,
            sha256: self.sha256,
        })
    }
}

fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                // SQLITE_BUSY and SQLITE_BUSY_SNAPSHOT: another writer got there first.
                || matches!(db.code().as_deref(), Some("5" | "517"))
        }
        _ => false,
    }
}

impl Catalog {
    /// Appends one entry to the audit log and returns it as stored. The time is taken
    /// here, not from the caller, so no caller can backdate an entry.
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord> {
        let detail = event.detail.to_string();
        let now_us = crate::now_us();
        let mut attempt = 0;
        loop {
            match self.try_append_audit(event, &detail, now_us).await {
                Ok(row) => return row.into_record(),
                Err(e) if retryable(&e) && attempt < APPEND_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 + u64::from(attempt) * 3)).await;
                }
                Err(source) => {
                    return Err(CatalogError::Query {
                        context: "appending to the audit log",
                        source,
                    })
                }
            }
        }
    }

    async fn try_append_audit(
        &self,
        event: &AuditEvent,
        detail: &str,
        now_us: i64,
    ) -> std::result::Result<RawRow, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let last = sqlx::query("SELECT seq, sha256 FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, prev_sha256) = match last {
            Some(row) => (
                row.try_get::<i64, _>("seq")? + 1,
                row.try_get::<String, _>("sha256")?,
            ),
            None => (0, GENESIS.to_owned()),
        };
        let mut row = RawRow {
            seq,
            at_us: now_us,
            actor: event.actor.clone(),
            address: event.address.clone(),
            action: event.action.clone(),
            target: event.target.clone(),
            detail: detail.to_owned(),
            prev_sha256,
            sha256: String::new(),
        };
        row.sha256 = row.compute_hash();
        sqlx::query(&format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(row.seq)
        .bind(row.at_us)
        .bind(&row.actor)
        .bind(&row.address)
        .bind(&row.action)
        .bind(&row.target)
        .bind(&row.detail)
        .bind(&row.prev_sha256)
        .bind(&row.sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Up to `limit` entries with `seq > after` (all when `after` is None), oldest first;
    /// `action` keeps only entries whose action equals it or starts with `action.`.
    pub async fn list_audit(
        &self,
        after: Option<u64>,
        action: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let filter = if action.is_some() {
            "AND (action = $3 OR action LIKE $4)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 {filter} ORDER BY seq LIMIT $2"
        );
        let mut query = sqlx::query(&sql).bind(after).bind(i64::from(limit));
        if let Some(action) = action {
            query = query.bind(action.to_owned()).bind(format!("{action}.%"));
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing the audit log"))?;
        rows.iter()
            .map(|row| RawRow::from_row(row).and_then(RawRow::into_record))
            .collect()
    }

    /// The newest entry whose action is exactly `action` (uses the index on action).
    pub async fn newest_audit(&self, action: &str) -> Result<Option<AuditRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM audit_log WHERE action = $1 ORDER BY seq DESC LIMIT 1");
        let row = sqlx::query(&sql)
            .bind(action)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading the newest audit entry of an action"))?;
        row.as_ref()
            .map(|row| RawRow::from_row(row).and_then(RawRow::into_record))
            .transpose()
    }

    /// Walks the whole log in order and checks every row's hash and link.
    pub async fn verify_audit(&self) -> Result<AuditVerifyReport> {
        let mut report = AuditVerifyReport::default();
        let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        let mut expected_seq = 0i64;
        let mut prev = GENESIS.to_owned();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(query_err("reading the audit log"))?
        {
            let row = RawRow::from_row(&row)?;
            let seq = row.seq;
            if seq != expected_seq {
                report.problems.push(if seq > expected_seq {
                    format!("audit entries {expected_seq}..{} are missing", seq - 1)
                } else {
                    format!("audit entry {seq} appears out of order")
                });
            }
            if row.prev_sha256 != prev {
                report.problems.push(format!(
                    "audit entry {seq}: links to previous hash {} but the entry before it hashes to {prev}",
                    row.prev_sha256
                ));
            }
            let actual = row.compute_hash();
            if actual != row.sha256 {
                report.problems.push(format!(
                    "audit entry {seq} ({} {}) was altered: its fields hash to {actual}, it records {}",
                    row.action, row.target, row.sha256
                ));
            }
            report.entries += 1;
            expected_seq = seq + 1;
            // Chain on the recorded hash so one altered row is reported once, not at
            // every row after it.
            prev = row.sha256;
        }
        report.head_sha256 = (report.entries > 0).then_some(prev);
        Ok(report)
    }
}
