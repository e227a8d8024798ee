//! Reports: the library grouped as the chat server groups it, and a run as a table and
//! as the chart its definition names.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use charts_rs::{BarChart, LineChart, PieChart, Series};
use chatvault_reports::{ReportDefinition, ReportResult, RunRequest};
use chatvault_server::{AppState, ReportService};
use chrono::NaiveDate;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ConsoleError;
use crate::search::PERIODS;
use crate::session::Signed;
use crate::view::{render, Nav};

const CHART_WIDTH: f32 = 760.0;
const CHART_HEIGHT: f32 = 360.0;

fn service(state: &AppState) -> Result<&Arc<ReportService>, ConsoleError> {
    state
        .reports
        .as_ref()
        .ok_or_else(|| ConsoleError::Unavailable("reports are not enabled on this node".into()))
}

async fn definition(state: &AppState, id: &str) -> Result<ReportDefinition, ConsoleError> {
    service(state)?.library.get(id).await.map_err(reports_error)
}

fn reports_error(e: chatvault_reports::ReportsError) -> ConsoleError {
    match e {
        chatvault_reports::ReportsError::NotFound(_) => ConsoleError::NotFound,
        chatvault_reports::ReportsError::Forbidden(m) => ConsoleError::Forbidden(m),
        other => ConsoleError::Invalid(other.to_string()),
    }
}

#[derive(Template)]
#[template(path = "reports.html")]
struct LibraryPage {
    nav: Nav,
    groups: Vec<(String, Vec<ReportDefinition>)>,
}

/// `GET /console/reports`.
pub async fn library(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, ConsoleError> {
    let reports = service(&state)?
        .library
        .list()
        .await
        .map_err(reports_error)?;
    let mut groups: BTreeMap<String, Vec<ReportDefinition>> = BTreeMap::new();
    for report in reports {
        let visible = match &signed.principal.sites {
            None => true,
            Some(sites) => sites.iter().any(|s| report.allows_site(*s)),
        };
        if visible {
            groups
                .entry(report.group_name.clone())
                .or_default()
                .push(report);
        }
    }
    Ok(render(&LibraryPage {
        nav: signed.nav("reports"),
        groups: groups.into_iter().collect(),
    }))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct RunQuery {
    site: String,
    period: String,
    from: String,
    to: String,
}

impl RunQuery {
    fn request(&self) -> Result<Option<RunRequest>, ConsoleError> {
        if self.site.trim().is_empty() {
            return Ok(None);
        }
        let site_key: i32 = self
            .site
            .trim()
            .parse()
            .map_err(|_| ConsoleError::Invalid("site: a SiteKey is a number".into()))?;
        let date = |field: &str, text: &str| -> Result<Option<NaiveDate>, ConsoleError> {
            if text.trim().is_empty() {
                return Ok(None);
            }
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map(Some)
                .map_err(|_| ConsoleError::Invalid(format!("{field}: a date is YYYY-MM-DD")))
        };
        Ok(Some(RunRequest {
            site_key,
            from: date("from", &self.from)?,
            to: date("to", &self.to)?,
        }))
    }
}

pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    nav: Nav,
    report: ReportDefinition,
    query: RunQuery,
    periods: Vec<crate::view::Choice>,
    ran: Option<Ran>,
    error: Option<String>,
}

struct Ran {
    from: String,
    to: String,
    execute_ms: u64,
    table: Table,
    /// The chart as SVG, or the single value, or nothing for a tabular report.
    chart: Option<String>,
    single: Option<String>,
    csv: String,
}

async fn run(
    state: &AppState,
    signed: &Signed,
    report: &ReportDefinition,
    query: &RunQuery,
    request: &RunRequest,
) -> Result<ReportResult, ConsoleError> {
    let service = service(state)?;
    let mut request = request.clone();
    // A preset replaces the dates (the report's own selector decides otherwise).
    if let Some((_, _, selector)) = PERIODS.iter().find(|(id, _, _)| *id == query.period) {
        let (from, to) =
            chatvault_reports::resolve_dates(*selector, None, None, service.engine.today())
                .map_err(reports_error)?;
        request.from = Some(from);
        request.to = Some(to);
    }
    service
        .engine
        .run(
            report,
            &request,
            signed.principal.sites.as_deref(),
            service.engine.today(),
        )
        .await
        .map_err(reports_error)
}

/// A value as the report shows it; `format` (the definition's `FormatString`, for the
/// column it charts) applies to numbers.
fn cell(value: &Value, format: Option<&str>) -> String {
    match (value, format) {
        (Value::Null, _) => String::new(),
        (Value::String(s), _) => s.clone(),
        (Value::Number(n), Some(format)) if !format.is_empty() => n
            .as_f64()
            .map_or_else(|| n.to_string(), |x| formatted(x, format)),
        (other, _) => other.to_string(),
    }
}

/// `x` in a .NET-style numeric format as the chat server's definitions write them:
/// `#,##0` (grouped, no decimals), `0.0` (one decimal), `0.0 s` (and a suffix).
fn formatted(x: f64, format: &str) -> String {
    let pattern_len = format
        .find(|c: char| !"#,0.".contains(c))
        .unwrap_or(format.len());
    let (pattern, suffix) = format.split_at(pattern_len);
    let decimals = pattern
        .split_once('.')
        .map_or(0, |(_, d)| d.chars().filter(|c| *c == '0').count());
    let text = format!("{:.*}", decimals, x.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if pattern.contains(',') && i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if x < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    let point = if fraction.is_empty() { "" } else { "." };
    format!("{sign}{grouped}{point}{fraction}{suffix}")
}

/// `GET /console/reports/{id}`; with `site` (and a period or dates) it runs at once.
pub async fn page(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Result<Response, ConsoleError> {
    let report = definition(&state, &id).await?;
    let mut page = ReportPage {
        nav: signed.nav("reports"),
        periods: crate::search::period_choices(&query.period),
        ran: None,
        error: None,
        report,
        query,
    };
    let request = match page.query.request() {
        Ok(request) => request,
        Err(e) => {
            page.error = Some(e.to_string());
            None
        }
    };
    if let Some(request) = request {
        match run(&state, &signed, &page.report, &page.query, &request).await {
            Ok(result) => page.ran = Some(ran(&page.report, &result, &id, &page.query)),
            Err(ConsoleError::Invalid(m) | ConsoleError::Forbidden(m)) => page.error = Some(m),
            Err(e) => return Err(e),
        }
    }
    Ok(render(&page))
}

fn ran(report: &ReportDefinition, result: &ReportResult, id: &str, query: &RunQuery) -> Ran {
    let json = result.to_json();
    let columns: Vec<String> = json["ColumnNames"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let data: Vec<Vec<Value>> = json["Data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let index = |name: &str| columns.iter().position(|c| c.eq_ignore_ascii_case(name));
    // The format is the charted measure's (a single value's: the first column's).
    let formatted_column = index(&report.chart_field).or((report.r#type == 1).then_some(0));
    let rows: Vec<Vec<String>> = data
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, v)| {
                    let format =
                        (Some(i) == formatted_column).then_some(report.format_string.as_str());
                    cell(v, format)
                })
                .collect()
        })
        .collect();
    let values: Option<Vec<f64>> = index(&report.chart_field).map(|i| {
        data.iter()
            .map(|r| r.get(i).and_then(Value::as_f64).unwrap_or(0.0))
            .collect()
    });
    let labels: Vec<String> = match index(&report.chart_label) {
        Some(i) => rows
            .iter()
            .map(|r| {
                let label = r.get(i).cloned().unwrap_or_default();
                if report.chart_label_is_date {
                    // A date label drops the time of day it may carry.
                    label.split('T').next().unwrap_or_default().to_owned()
                } else {
                    label
                }
            })
            .collect(),
        None => (1..=rows.len()).map(|n| n.to_string()).collect(),
    };
    let title = if report.chart_field.is_empty() {
        report.name.clone()
    } else {
        report.chart_field.clone()
    };
    let (chart, single) = match (report.r#type, values) {
        (1, _) => (None, rows.first().and_then(|r| r.first()).cloned()),
        (2, Some(v)) => (
            Some(bar_chart(&title, &labels, &[(title.as_str(), v)])),
            None,
        ),
        (3, Some(v)) => (Some(pie_chart(&labels, &v)), None),
        (4..=6, Some(v)) => (
            Some(line_chart(&title, &labels, &v, report.r#type == 6)),
            None,
        ),
        _ => (None, None),
    };
    let csv = format!(
        "/console/reports/{}/result.csv?{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>(),
        crate::feed::encode([
            ("site", query.site.clone()),
            ("period", query.period.clone()),
            ("from", query.from.clone()),
            ("to", query.to.clone()),
        ])
    );
    Ran {
        from: result.from.to_string(),
        to: result.to.to_string(),
        execute_ms: result.execute_ms,
        table: Table { columns, rows },
        chart,
        single,
        csv,
    }
}

/// `GET /console/reports/{id}/result.csv?site=…`.
pub async fn csv(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Result<Response, ConsoleError> {
    let report = definition(&state, &id).await?;
    let request = query.request()?.ok_or_else(|| {
        ConsoleError::Invalid("site: choose the site to run the report for".into())
    })?;
    let result = run(&state, &signed, &report, &query, &request).await?;
    let csv = result.to_csv().map_err(reports_error)?;
    let mut response = csv.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(crate::view::attachment(response, &format!("{id}.csv")))
}

fn series(name: &str, values: &[f64]) -> Series {
    Series::new(name.to_owned(), values.iter().map(|v| *v as f32).collect())
}

fn svg_or_note(result: Result<String, impl std::fmt::Display>) -> String {
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a chart could not be drawn");
        String::new()
    })
}

/// A bar chart with one bar per label and series.
pub fn bar_chart(title: &str, labels: &[String], series_list: &[(&str, Vec<f64>)]) -> String {
    let mut chart = BarChart::new(
        series_list.iter().map(|(n, v)| series(n, v)).collect(),
        labels.to_vec(),
    );
    chart.width = CHART_WIDTH;
    chart.height = CHART_HEIGHT;
    chart.title.text = title.to_owned();
    svg_or_note(chart.svg())
}

fn line_chart(title: &str, labels: &[String], values: &[f64], area: bool) -> String {
    let mut chart = LineChart::new(vec![series(title, values)], labels.to_vec());
    chart.width = CHART_WIDTH;
    chart.height = CHART_HEIGHT;
    chart.title.text = title.to_owned();
    chart.series.fill = area;
    svg_or_note(chart.svg())
}

fn pie_chart(labels: &[String], values: &[f64]) -> String {
    let mut chart = PieChart::new(
        labels
            .iter()
            .zip(values)
            .map(|(label, value)| series(label, &[*value]))
            .collect(),
    );
    chart.width = CHART_WIDTH;
    chart.height = CHART_HEIGHT;
    svg_or_note(chart.svg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_definitions_format() {
        assert_eq!(formatted(1234567.0, "#,##0"), "1,234,567");
        assert_eq!(formatted(999.0, "#,##0"), "999");
        assert_eq!(formatted(-1234.4, "#,##0"), "-1,234");
        assert_eq!(formatted(42.26, "0.0 s"), "42.3 s");
        assert_eq!(formatted(-0.01, "0.0"), "0.0");
        assert_eq!(cell(&serde_json::json!(7), None), "7");
        assert_eq!(cell(&serde_json::json!(1500), Some("#,##0")), "1,500");
    }

    #[test]
    fn a_bar_chart_draws_one_bar_per_value() {
        let labels: Vec<String> = ["Mon", "Tue", "Wed"].map(String::from).to_vec();
        let svg = bar_chart("Chats", &labels, &[("Chats", vec![3.0, 5.0, 2.0])]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("data-value=").count(), 3, "{svg}");
        assert!(
            !svg.contains("<style"),
            "no inline style under the console's CSP"
        );
    }
}
