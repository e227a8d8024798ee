//! A report's result: the chat server's report-data shape as JSON, or CSV.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;
use std::time::Duration;

use crate::sql::Params;
use crate::{ReportsError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultColumn {
    pub name: String,
    /// The chat server's type names: Int64, Double, Boolean, String, Date, DateTime.
    pub r#type: &'static str,
}

/// The rows of one run, with every column already in one of the six result types
/// (dates and times as ISO strings, lists joined), so JSON and CSV agree.
#[derive(Debug, Clone)]
pub struct ReportResult {
    pub report_id: String,
    pub site_key: i32,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub execute_ms: u64,
    pub columns: Vec<ResultColumn>,
    frame: DataFrame,
}

/// The JSON result: the chat server's report-data fields, with the rows as arrays in
/// column order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ReportData<'a> {
    report_id: &'a str,
    site_key: i32,
    #[schema(format = Date)]
    from_date: String,
    #[schema(format = Date)]
    to_date: String,
    column_names: Vec<&'a str>,
    column_types: Vec<&'static str>,
    execute_ms: u64,
    row_count: usize,
    #[schema(value_type = Vec<Vec<Object>>)]
    data: Vec<Vec<serde_json::Value>>,
}

/// The result type of a polars column and how to bring it there.
fn normalise(name: &str, dtype: &DataType) -> (&'static str, Expr) {
    let c = col(name);
    match dtype {
        DataType::Boolean => ("Boolean", c),
        DataType::String => ("String", c),
        dt if dt.is_integer() => ("Int64", c.cast(DataType::Int64)),
        dt if dt.is_float() => ("Double", c.cast(DataType::Float64)),
        DataType::Date => ("Date", c.dt().strftime("%Y-%m-%d")),
        DataType::Datetime(_, _) => ("DateTime", c.dt().strftime("%Y-%m-%dT%H:%M:%S")),
        DataType::List(_) => (
            "String",
            c.cast(DataType::List(Box::new(DataType::String)))
                .list()
                .join(lit(", "), true),
        ),
        _ => ("String", c.cast(DataType::String)),
    }
}

impl ReportResult {
    pub(crate) fn new(
        report_id: &str,
        params: Params,
        elapsed: Duration,
        frame: DataFrame,
    ) -> Result<ReportResult> {
        let (columns, exprs): (Vec<ResultColumn>, Vec<Expr>) = frame
            .schema()
            .iter()
            .map(|(name, dtype)| {
                let (kind, expr) = normalise(name.as_str(), dtype);
                (
                    ResultColumn {
                        name: name.to_string(),
                        r#type: kind,
                    },
                    expr,
                )
            })
            .unzip();
        let frame = frame
            .lazy()
            .select(exprs)
            .collect()
            .map_err(|e| ReportsError::Execution(format!("formatting the result: {e}")))?;
        Ok(ReportResult {
            report_id: report_id.to_owned(),
            site_key: params.site_key,
            from: params.from,
            to: params.to,
            execute_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            columns,
            frame,
        })
    }

    pub fn row_count(&self) -> usize {
        self.frame.height()
    }

    /// Row `i` as JSON values.
    fn row(&self, i: usize) -> Vec<serde_json::Value> {
        self.frame
            .columns()
            .iter()
            .map(|column| match column.get(i) {
                Ok(AnyValue::Boolean(b)) => b.into(),
                Ok(AnyValue::Int64(n)) => n.into(),
                Ok(AnyValue::Float64(x)) => serde_json::Number::from_f64(x)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                Ok(AnyValue::String(s)) => s.into(),
                Ok(AnyValue::StringOwned(s)) => s.as_str().into(),
                _ => serde_json::Value::Null,
            })
            .collect()
    }

    /// `{"ReportId","SiteKey","FromDate","ToDate","ColumnNames","ColumnTypes","ExecuteMs","RowCount","Data":[[…]]}`
    pub fn to_json(&self) -> serde_json::Value {
        let body = ReportData {
            report_id: &self.report_id,
            site_key: self.site_key,
            from_date: self.from.to_string(),
            to_date: self.to.to_string(),
            column_names: self.columns.iter().map(|c| c.name.as_str()).collect(),
            column_types: self.columns.iter().map(|c| c.r#type).collect(),
            execute_ms: self.execute_ms,
            row_count: self.row_count(),
            data: (0..self.row_count()).map(|i| self.row(i)).collect(),
        };
        serde_json::to_value(body).unwrap_or_default()
    }

    /// RFC 4180 CSV with a header line.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut frame = self.frame.clone();
        CsvWriter::new(&mut out)
            .include_header(true)
            .finish(&mut frame)
            .map_err(|e| ReportsError::Execution(format!("writing CSV: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_carry_the_chat_servers_shape() {
        let frame = df! {
            "Dated" => [NaiveDate::from_ymd_opt(2024, 8, 1).expect("date")],
            "Chats" => [12u32],
            "AvgWait" => [Some(1.5f64)],
            "Dept" => ["Sales, \"EU\""],
        }
        .expect("frame");
        let params = Params {
            site_key: 3,
            from: NaiveDate::from_ymd_opt(2024, 8, 1).expect("date"),
            to: NaiveDate::from_ymd_opt(2024, 8, 31).expect("date"),
        };
        let result =
            ReportResult::new("r", params, Duration::from_millis(7), frame).expect("result");
        assert_eq!(
            result.to_json(),
            serde_json::json!({
                "ReportId": "r", "SiteKey": 3, "FromDate": "2024-08-01", "ToDate": "2024-08-31",
                "ColumnNames": ["Dated", "Chats", "AvgWait", "Dept"],
                "ColumnTypes": ["Date", "Int64", "Double", "String"],
                "ExecuteMs": 7, "RowCount": 1,
                "Data": [["2024-08-01", 12, 1.5, "Sales, \"EU\""]]
            })
        );
        let csv = String::from_utf8(result.to_csv().expect("csv")).expect("utf-8");
        assert_eq!(
            csv,
            "Dated,Chats,AvgWait,Dept\n2024-08-01,12,1.5,\"Sales, \"\"EU\"\"\"\n"
        );
    }
}
