use sqlx::Row;

use crate::{query_err, Catalog, Result};

/// A report definition as stored: its id, whether it comes from the built-in library,
/// and the definition as JSON (chatvault-reports owns its fields and validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    pub id: String,
    pub builtin: bool,
    pub definition: String,
    pub updated_us: i64,
}

/// What a write of a custom report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportWrite {
    Done,
    /// No report has this id (update, delete).
    Missing,
    /// The id belongs to a built-in report, which only the repository's files change.
    Builtin,
    /// A report with this id exists already (create).
    Exists,
}

fn report_from_row(row: &sqlx::any::AnyRow) -> Result<StoredReport> {
    let err = || query_err("reading a report definition");
    let builtin: i64 = row.try_get("builtin").map_err(err())?;
    Ok(StoredReport {
        id: row.try_get("id").map_err(err())?,
        builtin: builtin != 0,
        definition: row.try_get("definition").map_err(err())?,
        updated_us: row.try_get("updated_us").map_err(err())?,
    })
}

impl Catalog {
    /// Makes the built-in reports exactly `reports` (id, JSON) in one transaction: new and
    /// changed ones are written, built-ins no longer shipped are removed. Custom reports
    /// are left alone.
    pub async fn seed_builtin_reports(
        &self,
        reports: &[(String, String)],
        now_us: i64,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("seeding built-in reports"))?;
        let existing: Vec<String> = sqlx::query_scalar("SELECT id FROM reports WHERE builtin = 1")
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("seeding built-in reports"))?;
        for id in existing
            .iter()
            .filter(|id| !reports.iter().any(|(r, _)| r == *id))
        {
            sqlx::query("DELETE FROM reports WHERE id = $1 AND builtin = 1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing a retired built-in report"))?;
        }
        for (id, definition) in reports {
            // A custom report never gets overwritten by a built-in of the same id.
            sqlx::query(
                "INSERT INTO reports (id, builtin, definition, updated_us) VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, updated_us = excluded.updated_us \
                 WHERE reports.builtin = 1 AND reports.definition <> excluded.definition",
            )
            .bind(id)
            .bind(definition)
            .bind(now_us)
            .execute(&mut *tx)
            .await
            .map_err(query_err("seeding a built-in report"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("seeding built-in reports"))
    }

    pub async fn list_reports(&self) -> Result<Vec<StoredReport>> {
        let rows =
            sqlx::query("SELECT id, builtin, definition, updated_us FROM reports ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("listing reports"))?;
        rows.iter().map(report_from_row).collect()
    }

    pub async fn get_report(&self, id: &str) -> Result<Option<StoredReport>> {
        let row =
            sqlx::query("SELECT id, builtin, definition, updated_us FROM reports WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("reading a report"))?;
        row.as_ref().map(report_from_row).transpose()
    }

    pub async fn create_report(
        &self,
        id: &str,
        definition: &str,
        now_us: i64,
    ) -> Result<ReportWrite> {
        let done = sqlx::query(
            "INSERT INTO reports (id, builtin, definition, updated_us) VALUES ($1, 0, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(definition)
        .bind(now_us)
        .execute(&self.pool)
        .await
        .map_err(query_err("creating a report"))?;
        Ok(if done.rows_affected() > 0 {
            ReportWrite::Done
        } else {
            ReportWrite::Exists
        })
    }

    pub async fn update_report(
        &self,
        id: &str,
        definition: &str,
        now_us: i64,
    ) -> Result<ReportWrite> {
        let done = sqlx::query(
            "UPDATE reports SET definition = $1, updated_us = $2 WHERE id = $3 AND builtin = 0",
        )
        .bind(definition)
        .bind(now_us)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query_err("updating a report"))?;
        self.write_outcome(id, done.rows_affected()).await
    }

    pub async fn delete_report(&self, id: &str) -> Result<ReportWrite> {
        let done = sqlx::query("DELETE FROM reports WHERE id = $1 AND builtin = 0")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_err("deleting a report"))?;
        self.write_outcome(id, done.rows_affected()).await
    }

    /// Why a custom-report write touched no row: missing, or a built-in.
    async fn write_outcome(&self, id: &str, affected: u64) -> Result<ReportWrite> {
        if affected > 0 {
            return Ok(ReportWrite::Done);
        }
        Ok(match self.get_report(id).await? {
            Some(r) if r.builtin => ReportWrite::Builtin,
            Some(_) => ReportWrite::Done,
            None => ReportWrite::Missing,
        })
    }
}
