//! Running a report: dates resolved, access checked, every table restricted to the
//! requested site and period, the bound SQL run by polars on a blocking thread under a
//! time limit.

use chatvault_model::TableDef;
use chatvault_store::{day_summary_of, empty_frame, ScanFilter, Store};
use chrono::{Datelike, Duration as Days, NaiveDate, NaiveDateTime};
use polars::prelude::*;
use polars::sql::SQLContext;
use std::time::{Duration, Instant};

use crate::definition::ReportDefinition;
use crate::result::ReportResult;
use crate::sql::{self, Params};
use crate::{ReportsError, Result};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A report still running after this is abandoned with an error. Polars cannot be
    /// interrupted, so the computation may finish in the background; its result is dropped.
    pub time_limit: Duration,
    /// The chat server's zone: "today" of the date presets is the day there, as the
    /// Started times the reports filter on are its wall-clock times.
    pub site_tz: chrono_tz::Tz,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            time_limit: Duration::from_secs(60),
            site_tz: chrono_tz::Tz::UTC,
        }
    }
}

/// What a caller asks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub site_key: i32,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    config: EngineConfig,
}

// The open-ended period of reports without a date selector.
const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
const LATEST: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date");

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// The inclusive period a run covers: dates the caller gave win; otherwise the report's
/// date selector decides, relative to `today` (weeks start on Monday).
pub fn resolve_dates(
    selector: u8,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate)> {
    let monday = today - Days::days(i64::from(today.weekday().num_days_from_monday()));
    let this_month = month_start(today);
    let preset = match selector {
        1 => Some((today, today)),
        2 => Some((today - Days::days(1), today - Days::days(1))),
        3 => Some((monday, monday + Days::days(6))),
        4 => Some((monday - Days::days(7), monday - Days::days(1))),
        5 => Some((
            this_month,
            month_start(this_month + Days::days(32)) - Days::days(1),
        )),
        6 => Some((
            month_start(this_month - Days::days(1)),
            this_month - Days::days(1),
        )),
        _ => None,
    };
    let missing = |what: &str| {
        Err(ReportsError::InvalidParameters(format!(
            "this report needs {what} (YYYY-MM-DD)"
        )))
    };
    let (from, to) = match (selector, preset, from, to) {
        (_, Some((pf, pt)), from, to) => (from.unwrap_or(pf), to.unwrap_or(pt)),
        (7, None, Some(day), None) | (7, None, None, Some(day)) => (day, day),
        (7, None, None, None) => return missing("FromDate"),
        (8, None, Some(from), Some(to)) => (from, to),
        (8, None, _, _) => return missing("FromDate and ToDate"),
        (_, None, from, to) => (from.unwrap_or(EARLIEST), to.unwrap_or(LATEST)),
    };
    if from > to {
        return Err(ReportsError::InvalidParameters(format!(
            "FromDate {from} is after ToDate {to}"
        )));
    }
    Ok((from, to))
}

fn timestamp(t: NaiveDateTime) -> Expr {
    lit(t.and_utc().timestamp_micros()).cast(DataType::Datetime(TimeUnit::Microseconds, None))
}

/// Every table a report may read, restricted to the chats of `params.site_key` that
/// started within the period. The restriction is applied here, to the frames, so a
/// report's SQL can narrow it further but never widen it.
fn restricted_tables(
    scan: &dyn Fn(&TableDef, &ScanFilter) -> Result<LazyFrame>,
    params: &Params,
) -> Result<Vec<(&'static str, LazyFrame)>> {
    let from = params.from.and_time(chrono::NaiveTime::MIN);
    let before = (params.to + Days::days(1)).and_time(chrono::NaiveTime::MIN);
    let filter = ScanFilter {
        sites: Some(vec![params.site_key]),
        started_from: Some(from),
        started_before: Some(before),
    };
    let site = col("SiteKey").eq(lit(params.site_key));
    let [chats_def, children @ ..] = chatvault_model::TABLES;
    let chats = scan(&chats_def, &filter)?.filter(
        site.clone()
            .and(col("Started").gt_eq(timestamp(from)))
            .and(col("Started").lt(timestamp(before))),
    );
    let ids = chats.clone().select([col("ChatUID")]);
    // polars 0.55 rewrites `SELECT COUNT(*)` over a union (files ∪ write buffer) into a
    // sum cast to UInt128, a type this build does not include; a no-op slice on top keeps
    // the count above the union. The restriction filter still reaches the Parquet scan.
    let mut tables = vec![(chats_def.name, chats.clone().slice(0, IdxSize::MAX))];
    for def in children {
        let rows = scan(&def, &filter)?.filter(site.clone()).join(
            ids.clone(),
            [col("ChatUID")],
            [col("ChatUID")],
            JoinArgs::new(JoinType::Semi),
        );
        tables.push((def.name, rows));
    }
    tables.push(("DaySummary", day_summary_of(chats)));
    Ok(tables)
}

fn execute(
    tables: Vec<(&'static str, LazyFrame)>,
    sql: &str,
    limit: u32,
) -> PolarsResult<DataFrame> {
    let mut context = SQLContext::new();
    for (name, frame) in tables {
        context.register(name, frame);
    }
    context.execute(sql)?.limit(limit as IdxSize).collect()
}

/// Checks a report's SQL the way a save must: allowlists, then a run on empty tables
/// (which finds unknown columns, type errors and unsupported SQL).
pub(crate) fn dry_run(sql_text: &str) -> Result<()> {
    let params = Params {
        site_key: 0,
        from: EARLIEST,
        to: EARLIEST,
    };
    let bound = sql::bound_sql(sql_text, &params)?;
    let tables = restricted_tables(&|def, _| Ok(empty_frame(def).lazy()), &params)?;
    execute(tables, &bound, 1)
        .map(drop)
        .map_err(|e| ReportsError::InvalidSql(format!("it fails on empty tables: {e}")))
}

impl Engine {
    pub fn new(store: Store, config: EngineConfig) -> Engine {
        Engine { store, config }
    }

    /// The current day in the site's zone, which the date presets count from.
    pub fn today(&self) -> NaiveDate {
        chrono::Utc::now()
            .with_timezone(&self.config.site_tz)
            .date_naive()
    }

    /// Runs `report` for one site and period. `key_sites` is the caller's site
    /// restriction (None: every site).
    pub async fn run(
        &self,
        report: &ReportDefinition,
        request: &RunRequest,
        key_sites: Option<&[i64]>,
        today: NaiveDate,
    ) -> Result<ReportResult> {
        let site = i64::from(request.site_key);
        if key_sites.is_some_and(|sites| !sites.contains(&site)) {
            return Err(ReportsError::Forbidden(format!(
                "this API key may not see site {site}"
            )));
        }
        if !report.allows_site(site) {
            return Err(ReportsError::Forbidden(format!(
                "report {:?} is not available for site {site}",
                report.id
            )));
        }
        let (from, to) = resolve_dates(report.date_selector_type, request.from, request.to, today)?;
        let params = Params {
            site_key: request.site_key,
            from,
            to,
        };
        let bound = sql::bound_sql(&report.sql, &params)?;
        let store = self.store.clone();
        let limit = report.row_limit();
        let started = Instant::now();
        let task = tokio::task::spawn_blocking(move || -> Result<DataFrame> {
            let scan = |def: &TableDef, filter: &ScanFilter| -> Result<LazyFrame> {
                Ok(store.scan(def.name, filter)?)
            };
            let tables = restricted_tables(&scan, &params)?;
            execute(tables, &bound, limit).map_err(|e| ReportsError::Execution(e.to_string()))
        });
        let frame = match tokio::time::timeout(self.config.time_limit, task).await {
            Err(_) => return Err(ReportsError::Timeout(self.config.time_limit.as_secs())),
            Ok(Err(e)) => return Err(ReportsError::Execution(e.to_string())),
            Ok(Ok(frame)) => frame?,
        };
        ReportResult::new(&report.id, params, started.elapsed(), frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn presets_resolve_relative_to_today() {
        let today = day("2024-08-14"); // a Wednesday
        let cases = [
            (1, "2024-08-14", "2024-08-14"),
            (2, "2024-08-13", "2024-08-13"),
            (3, "2024-08-12", "2024-08-18"),
            (4, "2024-08-05", "2024-08-11"),
            (5, "2024-08-01", "2024-08-31"),
            (6, "2024-07-01", "2024-07-31"),
            (0, "1900-01-01", "9999-12-31"),
        ];
        for (selector, from, to) in cases {
            assert_eq!(
                resolve_dates(selector, None, None, today).expect("resolves"),
                (day(from), day(to)),
                "selector {selector}"
            );
        }
        assert_eq!(
            resolve_dates(6, None, None, day("2024-01-10")).expect("resolves"),
            (day("2023-12-01"), day("2023-12-31"))
        );
        assert_eq!(
            resolve_dates(5, None, None, day("2024-02-29")).expect("resolves"),
            (day("2024-02-01"), day("2024-02-29"))
        );
    }

    #[test]
    fn given_dates_win_and_are_checked() {
        let today = day("2024-08-14");
        assert_eq!(
            resolve_dates(1, Some(day("2024-01-01")), Some(day("2024-01-31")), today).expect("ok"),
            (day("2024-01-01"), day("2024-01-31"))
        );
        assert_eq!(
            resolve_dates(7, Some(day("2024-03-03")), None, today).expect("ok"),
            (day("2024-03-03"), day("2024-03-03"))
        );
        for (selector, from, to) in [
            (7, None, None),
            (8, Some(day("2024-01-01")), None),
            (8, None, None),
            (8, Some(day("2024-02-01")), Some(day("2024-01-01"))),
        ] {
            assert!(
                matches!(
                    resolve_dates(selector, from, to, today),
                    Err(ReportsError::InvalidParameters(_))
                ),
                "{selector} {from:?} {to:?}"
            );
        }
    }

    #[test]
    fn dry_runs_find_unknown_columns_and_accept_every_builtin() {
        assert!(matches!(
            dry_run("SELECT NoSuchColumn FROM Chats"),
            Err(ReportsError::InvalidSql(reason)) if reason.contains("empty tables")
        ));
        for report in crate::builtin_reports().expect("built-ins") {
            dry_run(&report.sql).unwrap_or_else(|e| panic!("built-in {}: {e}", report.id));
        }
    }
}
