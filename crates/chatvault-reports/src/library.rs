//! The report definitions in the catalog: the seeded built-ins and custom reports.

use chatvault_catalog::{Catalog, ReportWrite, StoredReport};

use crate::definition::{builtin_reports, ReportDefinition};
use crate::engine::dry_run;
use crate::{ReportsError, Result};

#[derive(Debug, Clone)]
pub struct Library {
    catalog: Catalog,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn decode(stored: &StoredReport) -> Result<ReportDefinition> {
    let mut report: ReportDefinition = serde_json::from_str(&stored.definition).map_err(|e| {
        ReportsError::InvalidDefinition(format!("stored report {:?}: {e}", stored.id))
    })?;
    report.builtin = stored.builtin;
    Ok(report)
}

fn encode(report: &ReportDefinition) -> Result<String> {
    serde_json::to_string(report).map_err(|e| ReportsError::InvalidDefinition(e.to_string()))
}

impl Library {
    pub fn new(catalog: Catalog) -> Library {
        Library { catalog }
    }

    /// Writes the compiled-in library to the catalog (at every start, so an upgrade's
    /// changed or retired built-ins take effect).
    pub async fn seed(&self) -> Result<usize> {
        let reports = builtin_reports()?;
        let rows = reports
            .iter()
            .map(|r| Ok((r.id.clone(), encode(r)?)))
            .collect::<Result<Vec<_>>>()?;
        self.catalog.seed_builtin_reports(&rows, now_us()).await?;
        Ok(rows.len())
    }

    pub async fn list(&self) -> Result<Vec<ReportDefinition>> {
        self.catalog
            .list_reports()
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    pub async fn get(&self, id: &str) -> Result<ReportDefinition> {
        let stored = self
            .catalog
            .get_report(id)
            .await?
            .ok_or_else(|| ReportsError::NotFound(id.to_owned()))?;
        decode(&stored)
    }

    /// Validates (fields, SQL allowlists, a dry run on empty tables) and stores a new
    /// custom report.
    pub async fn create(&self, report: &ReportDefinition) -> Result<ReportDefinition> {
        let report = validated(report)?;
        match self
            .catalog
            .create_report(&report.id, &encode(&report)?, now_us())
            .await?
        {
            ReportWrite::Done => Ok(report),
            _ => Err(ReportsError::Exists(report.id)),
        }
    }

    /// Replaces a custom report; `report.id` must equal `id`.
    pub async fn update(&self, id: &str, report: &ReportDefinition) -> Result<ReportDefinition> {
        if report.id != id {
            return Err(ReportsError::InvalidDefinition(format!(
                "the body's Id {:?} differs from the report being updated ({id:?})",
                report.id
            )));
        }
        let report = validated(report)?;
        write_result(
            id,
            self.catalog
                .update_report(id, &encode(&report)?, now_us())
                .await?,
        )?;
        Ok(report)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        write_result(id, self.catalog.delete_report(id).await?)
    }
}

fn validated(report: &ReportDefinition) -> Result<ReportDefinition> {
    report.check_fields()?;
    dry_run(&report.sql)?;
    Ok(ReportDefinition {
        builtin: false,
        ..report.clone()
    })
}

fn write_result(id: &str, write: ReportWrite) -> Result<()> {
    match write {
        ReportWrite::Done => Ok(()),
        ReportWrite::Missing => Err(ReportsError::NotFound(id.to_owned())),
        ReportWrite::Builtin => Err(ReportsError::Builtin(id.to_owned())),
        ReportWrite::Exists => Err(ReportsError::Exists(id.to_owned())),
    }
}
