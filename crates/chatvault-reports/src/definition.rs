//! Report definitions in the chat server's own shape, and the built-in library.

use serde::{Deserialize, Serialize};

use crate::ReportsError;

/// Rows a report may return at most, whatever its `MaxRows` says.
pub const ROW_LIMIT: u32 = 1_000_000;

/// A report as the chat server defines one. Field names are the chat server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReportDefinition {
    /// Letters, digits, `-` and `_` (the chat server calls it `_id`).
    #[serde(rename = "Id", alias = "_id")]
    pub id: String,
    pub group_name: String,
    pub name: String,
    /// 0 tabular, 1 single value, 2 bar, 3 pie, 4 line, 5 point, 6 area chart.
    #[schema(maximum = 6)]
    pub r#type: u8,
    /// The column a chart plots.
    #[serde(default)]
    pub chart_field: String,
    /// The column that labels a chart's points.
    #[serde(default)]
    pub chart_label: String,
    #[serde(default)]
    pub chart_label_is_date: bool,
    /// 0 none, 1 today, 2 yesterday, 3 this week, 4 previous week, 5 this month,
    /// 6 last month, 7 single date, 8 date range.
    #[serde(default)]
    #[schema(maximum = 8)]
    pub date_selector_type: u8,
    /// How a client should display values (e.g. `#,##0`, `0.0 s`); Chatvault passes it on.
    #[serde(default)]
    pub format_string: String,
    #[serde(default)]
    pub format_color: String,
    /// One SELECT over Chats, ChatLines, SurveyAnswers, PageViews, ChatTags and
    /// DaySummary, with `@SiteKey`, `@FromDate` and `@ToDate`.
    #[serde(rename = "SQL")]
    pub sql: String,
    /// Rows returned at most; 0 means the service limit.
    #[serde(default)]
    pub max_rows: u32,
    /// Sites the report may run for; empty means every site.
    #[serde(default)]
    pub site_keys: Vec<i64>,
    /// Shipped with Chatvault (read-only). Set by the service; a value sent is ignored, so
    /// a definition fetched with GET can be sent back as it is.
    #[serde(default)]
    #[schema(read_only)]
    pub builtin: bool,
}

impl ReportDefinition {
    /// Checks every field except the SQL (which needs the engine's dry run).
    pub fn check_fields(&self) -> Result<(), ReportsError> {
        let bad = |reason: String| Err(ReportsError::InvalidDefinition(reason));
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "Id {:?} must be 1 to 64 letters, digits, '-' or '_'",
                self.id
            ));
        }
        if self.name.trim().is_empty() {
            return bad("Name must not be empty".into());
        }
        if self.r#type > 6 {
            return bad(format!(
                "Type {} is not one of 0 tabular, 1 single value, 2 bar, 3 pie, 4 line, 5 point, 6 area",
                self.r#type
            ));
        }
        if self.date_selector_type > 8 {
            return bad(format!(
                "DateSelectorType {} is not between 0 and 8",
                self.date_selector_type
            ));
        }
        if self.max_rows > ROW_LIMIT {
            return bad(format!(
                "MaxRows {} is above the limit of {ROW_LIMIT}",
                self.max_rows
            ));
        }
        if self.r#type >= 2 && (self.chart_field.is_empty() || self.chart_label.is_empty()) {
            return bad("a chart (Type 2 to 6) needs ChartField and ChartLabel".into());
        }
        Ok(())
    }

    /// Rows to return at most.
    pub fn row_limit(&self) -> u32 {
        if self.max_rows == 0 {
            ROW_LIMIT
        } else {
            self.max_rows
        }
    }

    pub fn allows_site(&self, site_key: i64) -> bool {
        self.site_keys.is_empty() || self.site_keys.contains(&site_key)
    }
}

// (file name, contents) of every file in the repository's reports/ folder.
include!(concat!(env!("OUT_DIR"), "/builtin_reports.rs"));

/// The built-in library: every `reports/*.toml` of the repository, compiled in.
pub fn builtin_reports() -> Result<Vec<ReportDefinition>, ReportsError> {
    BUILTIN_FILES
        .iter()
        .map(|(file, text)| {
            let mut report: ReportDefinition = toml::from_str(text).map_err(|e| {
                ReportsError::InvalidDefinition(format!("built-in report {file}: {e}"))
            })?;
            report.builtin = true;
            report.check_fields()?;
            Ok(report)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tabular() -> ReportDefinition {
        serde_json::from_value(serde_json::json!({
            "Id": "x", "GroupName": "g", "Name": "n", "Type": 0, "DateSelectorType": 8, "SQL": "SELECT 1"
        }))
        .expect("a minimal definition")
    }

    #[test]
    fn fields_are_checked() {
        assert!(tabular().check_fields().is_ok());
        for broken in [
            ReportDefinition {
                id: "a b".into(),
                ..tabular()
            },
            ReportDefinition {
                id: String::new(),
                ..tabular()
            },
            ReportDefinition {
                name: " ".into(),
                ..tabular()
            },
            ReportDefinition {
                r#type: 7,
                ..tabular()
            },
            ReportDefinition {
                r#type: 2,
                ..tabular()
            },
            ReportDefinition {
                date_selector_type: 9,
                ..tabular()
            },
            ReportDefinition {
                max_rows: ROW_LIMIT + 1,
                ..tabular()
            },
        ] {
            assert!(
                matches!(
                    broken.check_fields(),
                    Err(ReportsError::InvalidDefinition(_))
                ),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn the_chat_servers_id_field_is_accepted_and_unknown_fields_are_not() {
        let report: ReportDefinition = serde_json::from_value(serde_json::json!({
            "_id": "r1", "GroupName": "g", "Name": "n", "Type": 0, "SQL": "SELECT 1", "Builtin": true
        }))
        .expect("parses");
        assert_eq!(report.id, "r1");
        assert!(
            serde_json::from_value::<ReportDefinition>(serde_json::json!({
                "Id": "r1", "GroupName": "g", "Name": "n", "Type": 0, "SQL": "SELECT 1", "Nope": 1
            }))
            .is_err()
        );
    }

    #[test]
    fn the_builtin_library_is_complete_and_well_formed() {
        let reports = builtin_reports().expect("built-ins parse");
        assert!(reports.len() >= 15, "{} built-in reports", reports.len());
        let mut ids: Vec<&str> = reports.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), reports.len(), "duplicate built-in ids");
        for (file, _) in BUILTIN_FILES {
            let report = reports.iter().find(|r| format!("{}.toml", r.id) == *file);
            assert!(
                report.is_some(),
                "{file}: the file name must be the report's Id"
            );
        }
    }
}
