//! Search: chats by site, period, free text and the visitor, operator and outcome
//! fields, as a table paged by keyset (the next page starts after the last row shown,
//! so page 500 costs what page 1 does), with the results exportable as CSV.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use chatvault_server::AppState;
use chrono::NaiveDate;
use serde_json::Value;

use crate::error::ConsoleError;
use crate::feed::{self, literal};
use crate::session::Signed;
use crate::view::{choices, render, site_time, Choice, Nav};

const PAGE_ROWS: usize = 50;
const COLUMNS: &str =
    "ChatUID,SiteKey,Started,Name,Email,TakenByUsers,TakenByDept,Missed,Rating,Tags";

/// The search form's fields, as they appear in the page's address.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct SearchQuery {
    /// Free text over the chat's lines, summary and missed-chat message.
    pub q: String,
    pub site: String,
    /// `today`, `yesterday`, `this_week`, `last_week`, `this_month`, `last_month`, or
    /// empty for the `from`/`to` dates.
    pub period: String,
    pub from: String,
    pub to: String,
    pub name: String,
    pub email: String,
    pub ip: String,
    pub operator: String,
    pub dept: String,
    /// `yes`, `no` or empty.
    pub missed: String,
    pub rating: String,
    pub tag: String,
    /// The column the results are sorted by (see [`SORTS`]); `Started` when empty.
    pub sort: String,
    /// `asc`, or descending.
    pub order: String,
    /// The keyset of the last row of the previous page: its sort value, `|`, its ChatUID.
    pub after: String,
}

/// How a sort column's value is written in an OData expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Int,
    Text,
    Bool,
}

/// The columns results can be sorted by: the page's parameter, the feed's column, its
/// kind. Every one is non-null but `Started`, so a keyset comparison never meets a null
/// except there.
const SORTS: [(&str, &str, Kind); 8] = [
    ("started", "Started", Kind::Time),
    ("site", "SiteKey", Kind::Int),
    ("name", "Name", Kind::Text),
    ("email", "Email", Kind::Text),
    ("operators", "TakenByUsers", Kind::Text),
    ("dept", "TakenByDept", Kind::Text),
    ("missed", "Missed", Kind::Bool),
    ("rating", "Rating", Kind::Int),
];

fn position() -> ConsoleError {
    bad("after", "not a position in the results")
}

/// The report presets a period may name, by the chat server's date selector numbers.
pub const PERIODS: [(&str, &str, u8); 6] = [
    ("today", "Today", 1),
    ("yesterday", "Yesterday", 2),
    ("this_week", "This week", 3),
    ("last_week", "Last week", 4),
    ("this_month", "This month", 5),
    ("last_month", "Last month", 6),
];

/// The period `<select>`: the presets, or the dates given.
pub fn period_choices(current: &str) -> Vec<Choice> {
    let mut options = vec![("", "Dates below")];
    options.extend(PERIODS.iter().map(|(id, label, _)| (*id, *label)));
    choices(&options, current)
}

fn bad(field: &str, why: &str) -> ConsoleError {
    ConsoleError::Invalid(format!("{field}: {why}"))
}

fn date(field: &str, text: &str) -> Result<Option<NaiveDate>, ConsoleError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| bad(field, "a date is YYYY-MM-DD"))
}

impl SearchQuery {
    fn descending(&self) -> bool {
        self.order != "asc"
    }

    fn sort(&self) -> Result<(&'static str, &'static str, Kind), ConsoleError> {
        let wanted = if self.sort.is_empty() {
            "started"
        } else {
            self.sort.as_str()
        };
        SORTS
            .iter()
            .find(|(param, _, _)| *param == wanted)
            .copied()
            .ok_or_else(|| bad("sort", "not a column the results can be sorted by"))
    }

    /// The inclusive period asked for, if any.
    fn period(
        &self,
        today: NaiveDate,
    ) -> Result<(Option<NaiveDate>, Option<NaiveDate>), ConsoleError> {
        if let Some((_, _, selector)) = PERIODS.iter().find(|(id, _, _)| *id == self.period) {
            let (from, to) = chatvault_reports::resolve_dates(*selector, None, None, today)
                .map_err(|e| bad("period", &e.to_string()))?;
            return Ok((Some(from), Some(to)));
        }
        Ok((date("from", &self.from)?, date("to", &self.to)?))
    }

    /// The `$filter` for everything but the free text (without the keyset).
    pub fn filter(&self, today: NaiveDate) -> Result<Vec<String>, ConsoleError> {
        let mut terms = Vec::new();
        let site = self.site.trim();
        if !site.is_empty() {
            let site: i64 = site
                .parse()
                .map_err(|_| bad("site", "a SiteKey is a number"))?;
            terms.push(format!("SiteKey eq {site}"));
        }
        let (from, to) = self.period(today)?;
        if let Some(from) = from {
            terms.push(format!("Started ge {from}T00:00:00Z"));
        }
        if let Some(to) = to.and_then(|t| t.succ_opt()) {
            terms.push(format!("Started lt {to}T00:00:00Z"));
        }
        let contains = |field: &str, value: &str| {
            format!(
                "contains(tolower({field}),{})",
                literal(&value.trim().to_lowercase())
            )
        };
        if !self.name.trim().is_empty() {
            terms.push(contains("Name", &self.name));
        }
        if !self.email.trim().is_empty() {
            terms.push(contains("Email", &self.email));
        }
        if !self.ip.trim().is_empty() {
            terms.push(format!("IP eq {}", literal(self.ip.trim())));
        }
        if !self.operator.trim().is_empty() {
            terms.push(contains("TakenByUsers", &self.operator));
        }
        if !self.dept.trim().is_empty() {
            terms.push(contains("TakenByDept", &self.dept));
        }
        match self.missed.as_str() {
            "yes" => terms.push("Missed eq true".into()),
            "no" => terms.push("Missed eq false".into()),
            _ => {}
        }
        if !self.rating.trim().is_empty() {
            let rating: i64 = self
                .rating
                .trim()
                .parse()
                .map_err(|_| bad("rating", "a rating is a number"))?;
            terms.push(format!("Rating eq {rating}"));
        }
        if !self.tag.trim().is_empty() {
            terms.push(format!("Tags/any(t: t eq {})", literal(self.tag.trim())));
        }
        Ok(terms)
    }

    /// The rows after the previous page's last one, in the page's order.
    fn keyset(&self) -> Result<Option<String>, ConsoleError> {
        if self.after.is_empty() {
            return Ok(None);
        }
        let (_, column, kind) = self.sort()?;
        let (value, uid) = self.after.rsplit_once('|').ok_or_else(position)?;
        let op = if self.descending() { "lt" } else { "gt" };
        let uid = literal(uid);
        let value = match kind {
            Kind::Time if value.is_empty() => {
                return Ok(Some(format!("({column} eq null and ChatUID {op} {uid})")));
            }
            Kind::Time => {
                if !value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"-:TZ.".contains(&b))
                {
                    return Err(position());
                }
                value.to_owned()
            }
            Kind::Int => value.parse::<i64>().map_err(|_| position())?.to_string(),
            Kind::Bool => value.parse::<bool>().map_err(|_| position())?.to_string(),
            Kind::Text => literal(value),
        };
        Ok(Some(format!(
            "({column} {op} {value} or ({column} eq {value} and ChatUID {op} {uid}))"
        )))
    }

    /// The keyset position of a result row (what `after` takes).
    fn position_of(&self, row: &Value) -> String {
        let column = self.sort().map_or("Started", |(_, column, _)| column);
        format!("{}|{}", feed::text(row, column), feed::text(row, "ChatUID"))
    }

    /// The address that sorts by `sort`: the other way round when already sorted by it.
    fn sort_link(&self, sort: &str) -> String {
        let current = self.sort().map_or("started", |(param, _, _)| param);
        let mut next = self.clone();
        next.after.clear();
        next.sort = sort.to_owned();
        next.order = if current == sort && self.descending() {
            "asc"
        } else {
            ""
        }
        .to_owned();
        format!("/console/search?{}", query_string(&next))
    }

    /// The OData query options this search is.
    pub fn options(
        &self,
        today: NaiveDate,
        page: Option<usize>,
    ) -> Result<Vec<(&'static str, String)>, ConsoleError> {
        let mut terms = self.filter(today)?;
        if page.is_some() {
            terms.extend(self.keyset()?);
        }
        let mut options = Vec::new();
        if !terms.is_empty() {
            options.push(("$filter", terms.join(" and ")));
        }
        if !self.q.trim().is_empty() {
            options.push(("$search", self.q.trim().to_owned()));
        }
        let direction = if self.descending() { "desc" } else { "asc" };
        let (_, column, _) = self.sort()?;
        options.push((
            "$orderby",
            format!("{column} {direction},ChatUID {direction}"),
        ));
        if let Some(rows) = page {
            options.push(("$select", COLUMNS.to_owned()));
            options.push(("$top", (rows + 1).to_string()));
            if self.after.is_empty() {
                options.push(("$count", "true".into()));
            }
        }
        Ok(options)
    }

    /// This search's address, from the row after `after`.
    pub fn link(&self, after: &str) -> String {
        let mut next = self.clone();
        next.after = after.to_owned();
        format!("/console/search?{}", query_string(&next))
    }

    /// The address of this search's CSV export.
    pub fn csv_link(&self) -> String {
        let mut all = self.clone();
        all.after.clear();
        format!("/console/search.csv?{}", query_string(&all))
    }

    fn is_empty(&self) -> bool {
        let blank = SearchQuery {
            sort: self.sort.clone(),
            order: self.order.clone(),
            ..SearchQuery::default()
        };
        query_string(self) == query_string(&blank)
    }
}

/// The non-empty fields as a query string.
fn query_string(query: &SearchQuery) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(query) else {
        return String::new();
    };
    feed::encode(fields.iter().filter_map(|(k, v)| {
        let v = v.as_str().filter(|v| !v.is_empty())?;
        Some((k.as_str(), v.to_owned()))
    }))
}

pub struct Heading {
    pub label: &'static str,
    pub href: Option<String>,
    pub aria_sort: &'static str,
}

/// The result table's columns: label and sort parameter (None: not sortable).
const HEADINGS: [(&str, Option<&str>); 9] = [
    ("Started", Some("started")),
    ("Site", Some("site")),
    ("Visitor", Some("name")),
    ("Email", Some("email")),
    ("Operators", Some("operators")),
    ("Department", Some("dept")),
    ("Outcome", Some("missed")),
    ("Rating", Some("rating")),
    ("Tags", None),
];

fn headings(query: &SearchQuery) -> Vec<Heading> {
    let current = query.sort().map_or("started", |(param, _, _)| param);
    HEADINGS
        .iter()
        .map(|(label, sort)| Heading {
            label,
            href: sort.map(|s| query.sort_link(s)),
            aria_sort: match sort {
                Some(s) if *s == current && query.descending() => "descending",
                Some(s) if *s == current => "ascending",
                _ => "none",
            },
        })
        .collect()
}

pub struct ResultRow {
    pub href: String,
    pub site: i64,
    pub started: String,
    pub name: String,
    pub email: String,
    pub operators: String,
    pub dept: String,
    pub missed: bool,
    pub rating: i64,
    pub tags: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    nav: Nav,
    query: SearchQuery,
    periods: Vec<Choice>,
    missed: Vec<Choice>,
    searched: bool,
    total: Option<i64>,
    rows: Vec<ResultRow>,
    next: Option<String>,
    first: Option<String>,
    /// Each column's header: its label, the address that sorts by it, and how the
    /// results are sorted by it now (`aria-sort`).
    headings: Vec<Heading>,
    csv: String,
    error: Option<String>,
}

fn today(state: &AppState) -> NaiveDate {
    let tz = state
        .odata
        .as_ref()
        .map_or(chrono_tz::UTC, |s| s.engine().settings().tz);
    chrono::Utc::now().with_timezone(&tz).date_naive()
}

/// `GET /console/search?q=…&site=…`.
pub async fn page(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ConsoleError> {
    let mut page = SearchPage {
        nav: signed.nav("search"),
        periods: period_choices(&query.period),
        missed: choices(
            &[("", "Any"), ("yes", "Missed"), ("no", "Answered")],
            &query.missed,
        ),
        searched: !query.is_empty(),
        total: None,
        rows: Vec::new(),
        next: None,
        first: None,
        headings: headings(&query),
        csv: query.csv_link(),
        error: None,
        query,
    };
    if page.searched {
        match run(&state, &signed, &page.query).await {
            Ok((total, rows, more)) => {
                page.total = total;
                if more {
                    page.next = rows.last().map(|(after, _)| page.query.link(after));
                }
                if !page.query.after.is_empty() {
                    page.first = Some(page.query.link(""));
                }
                page.rows = rows.into_iter().map(|(_, r)| r).collect();
            }
            Err(ConsoleError::Invalid(message)) => page.error = Some(message),
            Err(e) => return Err(e),
        }
    }
    Ok(render(&page))
}

/// One page of results, each with its keyset position, and whether more follow.
async fn run(
    state: &AppState,
    signed: &Signed,
    query: &SearchQuery,
) -> Result<(Option<i64>, Vec<(String, ResultRow)>, bool), ConsoleError> {
    let options = query.options(today(state), Some(PAGE_ROWS))?;
    let answer = feed::get(state, signed, "Chats".into(), feed::encode(options)).await?;
    let total = answer.get("@odata.count").and_then(Value::as_i64);
    let found = feed::rows(&answer);
    let more = found.len() > PAGE_ROWS;
    let rows = found
        .iter()
        .take(PAGE_ROWS)
        .map(|row| {
            let chat_uid = feed::text(row, "ChatUID");
            let started = feed::text(row, "Started");
            (
                query.position_of(row),
                ResultRow {
                    href: format!(
                        "/console/chats/{}",
                        form_urlencoded::byte_serialize(chat_uid.as_bytes()).collect::<String>()
                    ),
                    site: feed::int(row, "SiteKey"),
                    started: site_time(&started),
                    name: feed::text(row, "Name"),
                    email: feed::text(row, "Email"),
                    operators: feed::text(row, "TakenByUsers"),
                    dept: feed::text(row, "TakenByDept"),
                    missed: feed::flag(row, "Missed"),
                    rating: feed::int(row, "Rating"),
                    tags: feed::text(row, "Tags"),
                },
            )
        })
        .collect();
    Ok((total, rows, more))
}

/// `GET /console/search.csv?…`: every result of the search, as the API's export streams
/// it (and audits it).
pub async fn export(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ConsoleError> {
    let options = query.options(today(&state), None)?;
    let query = feed::encode(options);
    Ok(
        chatvault_server::export_as(&state, &signed.principal, signed.peer, "Chats.csv", &query)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 8, 14).expect("date")
    }

    #[test]
    fn fields_become_one_filter() {
        let query = SearchQuery {
            site: "3".into(),
            period: "last_month".into(),
            email: " Ana@Example.com ".into(),
            missed: "yes".into(),
            tag: "vip's".into(),
            ..SearchQuery::default()
        };
        assert_eq!(
            query.filter(today()).expect("filter"),
            [
                "SiteKey eq 3",
                "Started ge 2024-07-01T00:00:00Z",
                "Started lt 2024-08-01T00:00:00Z",
                "contains(tolower(Email),'ana@example.com')",
                "Missed eq true",
                "Tags/any(t: t eq 'vip''s')",
            ]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let query = SearchQuery {
            from: "14/08/2024".into(),
            ..SearchQuery::default()
        };
        let message = query.filter(today()).expect_err("bad date").to_string();
        assert!(message.starts_with("from:"), "{message}");
        let query = SearchQuery {
            after: "2024-08-01T00:00:00Z) or (true|x".into(),
            ..SearchQuery::default()
        };
        assert!(query.options(today(), Some(50)).is_err());
    }

    #[test]
    fn the_next_page_starts_after_the_last_row() {
        let query = SearchQuery {
            after: "2024-08-01T10:00:00Z|c-9".into(),
            ..SearchQuery::default()
        };
        let options = query.options(today(), Some(50)).expect("options");
        assert_eq!(
            options[0],
            (
                "$filter",
                "(Started lt 2024-08-01T10:00:00Z or (Started eq 2024-08-01T10:00:00Z and ChatUID lt 'c-9'))".to_owned()
            )
        );
        assert!(options.iter().all(|(k, _)| *k != "$count"));
        assert!(options.contains(&("$top", "51".to_owned())));
    }

    #[test]
    fn results_sort_by_any_shown_column_and_page_after_its_value() {
        let query = SearchQuery {
            sort: "name".into(),
            order: "asc".into(),
            after: "O'Brien|x|c-9".into(),
            ..SearchQuery::default()
        };
        let options = query.options(today(), Some(50)).expect("options");
        assert_eq!(
            options[0].1,
            "(Name gt 'O''Brien|x' or (Name eq 'O''Brien|x' and ChatUID gt 'c-9'))"
        );
        assert!(options.contains(&("$orderby", "Name asc,ChatUID asc".to_owned())));
        // Sorting again by the same column turns the order round; another column starts
        // descending, from the first page.
        assert!(
            query.sort_link("name").contains("sort=name")
                && !query.sort_link("name").contains("order")
        );
        assert!(
            query.sort_link("rating").ends_with("sort=rating"),
            "{}",
            query.sort_link("rating")
        );
        let bad = SearchQuery {
            sort: "rating".into(),
            after: "five|c-1".into(),
            ..SearchQuery::default()
        };
        assert!(bad.options(today(), Some(50)).is_err());
        let unknown = SearchQuery {
            sort: "Summary".into(),
            ..SearchQuery::default()
        };
        assert!(unknown.options(today(), Some(50)).is_err());
    }

    #[test]
    fn links_keep_the_search_and_drop_empty_fields() {
        let query = SearchQuery {
            q: "refund please".into(),
            site: "3".into(),
            ..SearchQuery::default()
        };
        assert_eq!(
            query.link("x|y"),
            "/console/search?after=x%7Cy&q=refund+please&site=3"
        );
        assert_eq!(
            query.csv_link(),
            "/console/search.csv?q=refund+please&site=3"
        );
    }
}
