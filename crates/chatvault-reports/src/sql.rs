//! Report SQL: parsed with the parser polars uses, checked against allowlists, and its
//! `@Param` placeholders replaced by typed literal nodes in the AST. The SQL polars runs
//! is rendered from that AST, so a parameter's value can only ever be one literal.

use chrono::NaiveDate;
use sqlparser::ast::{
    visit_expressions_mut, DataType, Expr, Query, Select, Statement, TableFactor, TypedString,
    Value, Visit, Visitor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::ReportsError;

/// The tables a report may read; every one is restricted by the engine before the
/// report sees it.
const TABLES: [&str; 6] = [
    "Chats",
    "ChatLines",
    "SurveyAnswers",
    "PageViews",
    "ChatTags",
    "DaySummary",
];

/// Functions a report may call (lower case). Everything here is a pure scalar, aggregate
/// or window function of polars SQL; anything that reads files or selects columns by
/// pattern is left out.
const FUNCTIONS: &[&str] = &[
    // aggregates
    "avg",
    "count",
    "first",
    "last",
    "max",
    "median",
    "min",
    "quantile_cont",
    "quantile_disc",
    "sum",
    "stddev",
    "stddev_samp",
    "variance",
    "var_samp",
    "corr",
    "array_agg",
    // windows
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    // numbers
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "sign",
    "sqrt",
    "mod",
    "div",
    "exp",
    "ln",
    "log",
    "log10",
    "power",
    "pow",
    // conditionals
    "coalesce",
    "greatest",
    "least",
    "if",
    "ifnull",
    "nullif",
    // dates
    "date",
    "date_part",
    "date_trunc",
    "strftime",
    // strings
    "concat",
    "concat_ws",
    "ends_with",
    "starts_with",
    "initcap",
    "left",
    "right",
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "lpad",
    "rpad",
    "ltrim",
    "rtrim",
    "replace",
    "reverse",
    "split_part",
    "strpos",
    "substr",
    "substring",
    // lists
    "array_length",
    "array_to_string",
    "array_contains",
];

/// The parameters a report's SQL may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub site_key: i32,
    /// First day, inclusive.
    pub from: NaiveDate,
    /// Last day, inclusive (the chat server's `BETWEEN @FromDate AND @ToDate`).
    pub to: NaiveDate,
}

const PARAM_NAMES: [&str; 3] = ["@SiteKey", "@FromDate", "@ToDate"];

fn invalid(reason: impl Into<String>) -> ReportsError {
    ReportsError::InvalidSql(reason.into())
}

/// Parses `sql` into exactly one SELECT and checks it against the allowlists.
pub fn check(sql: &str) -> Result<Statement, ReportsError> {
    let mut statements = Parser::parse_sql(&GenericDialect, sql)
        .map_err(|e| invalid(format!("the SQL does not parse: {e}")))?;
    if statements.len() != 1 {
        return Err(invalid(format!(
            "a report is exactly one SELECT statement; found {}",
            statements.len()
        )));
    }
    let statement = statements.remove(0);
    if !matches!(statement, Statement::Query(_)) {
        return Err(invalid("a report can only be a SELECT query"));
    }
    let mut checker = Checker {
        ctes: HashSet::new(),
    };
    if let ControlFlow::Break(reason) = statement.visit(&mut checker) {
        return Err(invalid(reason));
    }
    Ok(statement)
}

struct Checker {
    /// Names defined by WITH clauses; CTEs may be read like tables.
    ctes: HashSet<String>,
}

impl Visitor for Checker {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break("SELECT … INTO is not allowed in a report".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { name, args, .. } => {
                let name = name.to_string();
                if args.is_some() {
                    return ControlFlow::Break(format!(
                        "table functions such as {name}(…) are not allowed: reports read only {}",
                        TABLES.join(", ")
                    ));
                }
                if !TABLES.contains(&name.as_str()) && !self.ctes.contains(&name) {
                    return ControlFlow::Break(format!(
                        "unknown table {name}: reports read only {}",
                        TABLES.join(", ")
                    ));
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(format!(
                "this kind of FROM item is not allowed in a report: {other}"
            )),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                if FUNCTIONS.contains(&name.as_str()) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!("function {name} is not allowed in a report"))
                }
            }
            Expr::Identifier(ident) if ident.value.starts_with('@') => {
                if PARAM_NAMES.contains(&ident.value.as_str()) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!(
                        "unknown parameter {}: use {}",
                        ident.value,
                        PARAM_NAMES.join(", ")
                    ))
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn date_literal(date: NaiveDate) -> Expr {
    Expr::TypedString(TypedString {
        data_type: DataType::Date,
        value: Value::SingleQuotedString(date.format("%Y-%m-%d").to_string()).with_empty_span(),
        uses_odbc_syntax: false,
    })
}

/// The SQL polars runs for `sql` with `params`: checked, then bound.
pub fn bound_sql(sql: &str, params: &Params) -> Result<String, ReportsError> {
    Ok(bind(check(sql)?, params))
}

/// Replaces every parameter with its value as a typed literal node, and renders the
/// statement as the SQL polars will run.
fn bind(mut statement: Statement, params: &Params) -> String {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        let replacement = match expr {
            Expr::Identifier(ident) => match ident.value.as_str() {
                "@SiteKey" => Some(Expr::Value(
                    Value::Number(params.site_key.to_string(), false).with_empty_span(),
                )),
                "@FromDate" => Some(date_literal(params.from)),
                "@ToDate" => Some(date_literal(params.to)),
                _ => None,
            },
            _ => None,
        };
        if let Some(replacement) = replacement {
            *expr = replacement;
        }
        ControlFlow::<()>::Continue(())
    });
    statement.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> Params {
        Params {
            site_key: 3,
            from: NaiveDate::from_ymd_opt(2024, 8, 1).expect("date"),
            to: NaiveDate::from_ymd_opt(2024, 8, 31).expect("date"),
        }
    }

    fn rejected(sql: &str) -> String {
        match check(sql) {
            Err(ReportsError::InvalidSql(reason)) => reason,
            other => panic!("{sql:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn parameters_become_typed_literals() {
        let statement = check(
            "SELECT Dated, Chats FROM DaySummary WHERE SiteKey = @SiteKey AND Dated BETWEEN @FromDate AND @ToDate",
        )
        .expect("valid");
        let sql = bind(statement, &params());
        assert_eq!(
            sql,
            "SELECT Dated, Chats FROM DaySummary WHERE SiteKey = 3 AND Dated BETWEEN DATE '2024-08-01' AND DATE '2024-08-31'"
        );
    }

    #[test]
    fn ctes_subqueries_and_joins_are_allowed() {
        check(
            "WITH t AS (SELECT ChatUID FROM ChatTags) SELECT COUNT(*) FROM Chats c JOIN t ON c.ChatUID = t.ChatUID \
             WHERE c.ChatUID IN (SELECT ChatUID FROM ChatLines) AND EXTRACT(HOUR FROM c.Started) > 3",
        )
        .expect("valid");
    }

    #[test]
    fn only_one_select_is_accepted() {
        assert!(rejected("SELECT 1; SELECT 2").contains("exactly one"));
        assert!(rejected("DELETE FROM Chats").contains("only be a SELECT"));
        assert!(rejected("DROP TABLE Chats").contains("only be a SELECT"));
        assert!(rejected("CREATE TABLE x AS SELECT * FROM Chats").contains("only be a SELECT"));
        assert!(rejected("SELECT * INTO x FROM Chats").contains("INTO"));
        assert!(rejected("SELEC 1").contains("does not parse"));
    }

    #[test]
    fn files_and_unknown_tables_are_rejected() {
        assert!(rejected("SELECT * FROM read_parquet('/etc/passwd')").contains("table functions"));
        assert!(rejected("SELECT * FROM read_csv('/etc/passwd')").contains("table functions"));
        assert!(rejected("SELECT * FROM Secrets").contains("unknown table Secrets"));
        assert!(rejected("SELECT * FROM Chats, UNNEST([1, 2])").contains("not allowed"));
    }

    #[test]
    fn functions_outside_the_allowlist_are_rejected() {
        assert!(rejected("SELECT COLUMNS('.*') FROM Chats").contains("columns"));
        assert!(rejected("SELECT read_file('x') FROM Chats").contains("read_file"));
        assert!(
            rejected("SELECT ChatUID FROM Chats WHERE SiteKey IN (SELECT pg_sleep(10))")
                .contains("pg_sleep")
        );
    }

    #[test]
    fn unknown_parameters_are_rejected() {
        assert!(rejected("SELECT * FROM Chats WHERE SiteKey = @Site").contains("@Site"));
    }

    proptest! {
        #[test]
        fn checking_arbitrary_text_never_panics(sql in "\\PC{0,120}") {
            let _ = check(&sql);
        }

        #[test]
        fn bound_sql_reparses_without_parameters(site in any::<i32>(), from in 0i64..100_000, len in 0i64..400) {
            let base = NaiveDate::from_ymd_opt(1900, 1, 1).expect("date");
            let params = Params {
                site_key: site,
                from: base + chrono::Duration::days(from),
                to: base + chrono::Duration::days(from + len),
            };
            let statement = check("SELECT COUNT(*) AS n FROM Chats WHERE SiteKey = @SiteKey AND CAST(Started AS DATE) BETWEEN @FromDate AND @ToDate").expect("valid");
            let sql = bind(statement, &params);
            prop_assert!(!sql.contains('@'));
            let again = check(&sql).expect("bound SQL parses");
            prop_assert_eq!(again.to_string(), sql.clone());
            let expected = format!("SiteKey = {site}");
            prop_assert!(sql.contains(&expected), "{} lacks {}", sql, expected);
        }

        #[test]
        fn functions_off_the_list_are_always_rejected(name in "[a-z_]{1,12}") {
            prop_assume!(!FUNCTIONS.contains(&name.as_str()));
            let sql = format!("SELECT {name}(ChatUID) FROM Chats");
            if let Ok(statement) = Parser::parse_sql(&GenericDialect, &sql) {
                // Some names are keywords that parse into other expressions; only real
                // function calls matter here.
                let is_call = statement.first().is_some_and(|s| s.to_string().to_ascii_lowercase().contains(&format!("{name}(")));
                if is_call {
                    prop_assert!(check(&sql).is_err());
                }
            }
        }
    }
}
