//! The system query options of a request (`$filter`, `$select`, `$expand`, `$apply`, …)
//! parsed and checked for shape; typing against the model happens in the planner.

use crate::error::{QueryError, Result};
use crate::syntax::{parse_expr, Expr};

/// Longest query string accepted before anything is parsed.
pub const MAX_QUERY_LEN: usize = 32 * 1024;
/// Deepest `$expand` nesting (Chats → Lines → Chat is already two).
const MAX_EXPAND_DEPTH: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub property: String,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expand {
    pub navigation: String,
    pub options: QueryOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// `Property with method as Alias`.
    Method {
        property: String,
        method: AggregateMethod,
        alias: String,
    },
    /// `$count as Alias`.
    Count { alias: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateMethod {
    Sum,
    Average,
    Min,
    Max,
    CountDistinct,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Filter(Expr),
    GroupBy {
        properties: Vec<String>,
        aggregates: Vec<Aggregate>,
    },
    Aggregate(Vec<Aggregate>),
}

/// `$search`: terms that must all appear (case-insensitive), or one of two alternatives.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    Term(String),
    Not(Box<Search>),
    And(Box<Search>, Box<Search>),
    Or(Box<Search>, Box<Search>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    pub filter: Option<Expr>,
    /// None: every property.
    pub select: Option<Vec<String>>,
    pub orderby: Vec<OrderKey>,
    pub top: Option<usize>,
    pub skip: Option<usize>,
    pub count: bool,
    pub expand: Vec<Expand>,
    pub search: Option<Search>,
    pub apply: Option<Vec<Transform>>,
    pub skiptoken: Option<String>,
    pub format: Option<String>,
}

/// Splits `text` on `sep` where it is not inside parentheses or a string literal.
pub(crate) fn split_top(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        match ch {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn number(option: &str, value: &str) -> Result<usize> {
    value.trim().parse::<usize>().map_err(|_| {
        QueryError::Invalid(format!(
            "{option} must be a non-negative integer, not '{value}'"
        ))
    })
}

fn identifier(option: &str, text: &str) -> Result<String> {
    let name = text.trim();
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_owned())
    } else {
        Err(QueryError::Invalid(format!(
            "{option}: '{name}' is not a property name"
        )))
    }
}

fn parse_select(text: &str) -> Result<Option<Vec<String>>> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.contains(&"*") {
        return Ok(None);
    }
    items
        .into_iter()
        .map(|i| identifier("$select", i))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn parse_orderby(text: &str) -> Result<Vec<OrderKey>> {
    text.split(',')
        .map(|item| {
            let mut words = item.split_whitespace();
            let property = words
                .next()
                .ok_or_else(|| QueryError::Invalid("$orderby has an empty item".into()))?;
            if property.contains('(') || property.contains('/') {
                return Err(QueryError::unsupported(format!(
                    "$orderby by the expression '{property}': order by properties"
                )));
            }
            let descending = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(QueryError::Invalid(format!(
                        "$orderby: expected 'asc' or 'desc' after {property}, found '{other}'"
                    )))
                }
            };
            if let Some(extra) = words.next() {
                return Err(QueryError::Invalid(format!(
                    "$orderby: unexpected '{extra}'"
                )));
            }
            Ok(OrderKey {
                property: identifier("$orderby", property)?,
                descending,
            })
        })
        .collect()
}

fn parse_expand(text: &str, depth: usize) -> Result<Vec<Expand>> {
    if depth > MAX_EXPAND_DEPTH {
        return Err(QueryError::TooLarge(format!(
            "$expand is nested more than {MAX_EXPAND_DEPTH} levels deep"
        )));
    }
    split_top(text, ',')
        .into_iter()
        .map(|item| {
            let item = item.trim();
            let (name, nested) = match item.find('(') {
                Some(open) if item.ends_with(')') => {
                    (&item[..open], &item[open + 1..item.len() - 1])
                }
                Some(_) => {
                    return Err(QueryError::Invalid(format!(
                        "$expand: '{item}' has unbalanced parentheses"
                    )))
                }
                None => (item, ""),
            };
            if name.contains('/') {
                return Err(QueryError::unsupported(format!(
                    "$expand of the path '{name}': expand one navigation property at a time"
                )));
            }
            let mut options = QueryOptions::default();
            for pair in split_top(nested, ';')
                .into_iter()
                .filter(|p| !p.trim().is_empty())
            {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    QueryError::Invalid(format!("$expand: '{pair}' is not option=value"))
                })?;
                options.set(key.trim(), value, depth + 1)?;
            }
            if options.apply.is_some() || options.skiptoken.is_some() || options.search.is_some() {
                return Err(QueryError::unsupported(
                    "$apply, $search and $skiptoken inside $expand",
                ));
            }
            Ok(Expand {
                navigation: identifier("$expand", name)?,
                options,
            })
        })
        .collect()
}

fn parse_aggregates(text: &str) -> Result<Vec<Aggregate>> {
    split_top(text, ',')
        .into_iter()
        .map(|item| {
            let words: Vec<&str> = item.split_whitespace().collect();
            match words.as_slice() {
                ["$count", "as", alias] => Ok(Aggregate::Count {
                    alias: identifier("$apply", alias)?,
                }),
                [property, "with", method, "as", alias] => Ok(Aggregate::Method {
                    property: identifier("$apply", property)?,
                    method: match *method {
                        "sum" => AggregateMethod::Sum,
                        "average" => AggregateMethod::Average,
                        "min" => AggregateMethod::Min,
                        "max" => AggregateMethod::Max,
                        "countdistinct" => AggregateMethod::CountDistinct,
                        other => {
                            return Err(QueryError::unsupported(format!(
                                "the aggregation method '{other}' (sum, average, min, max and countdistinct are supported)"
                            )))
                        }
                    },
                    alias: identifier("$apply", alias)?,
                }),
                _ => Err(QueryError::Invalid(format!(
                    "$apply: '{}' is not 'Property with method as Alias' or '$count as Alias'",
                    item.trim()
                ))),
            }
        })
        .collect()
}

/// The text between the outer parentheses of `name(…)`.
fn call_body<'a>(step: &'a str, name: &str) -> Option<&'a str> {
    step.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_apply(text: &str) -> Result<Vec<Transform>> {
    split_top(text, '/')
        .into_iter()
        .map(|step| {
            let step = step.trim();
            if let Some(body) = call_body(step, "filter") {
                return Ok(Transform::Filter(parse_expr(body, "$apply")?));
            }
            if let Some(body) = call_body(step, "aggregate") {
                return Ok(Transform::Aggregate(parse_aggregates(body)?));
            }
            if let Some(body) = call_body(step, "groupby") {
                let parts = split_top(body, ',');
                let props = parts
                    .first()
                    .and_then(|p| p.trim().strip_prefix('(')?.strip_suffix(')'))
                    .ok_or_else(|| {
                        QueryError::Invalid("$apply: groupby needs a parenthesised property list, as in groupby((SiteKey))".into())
                    })?;
                let properties = props
                    .split(',')
                    .map(|p| {
                        if p.contains('/') {
                            Err(QueryError::unsupported("groupby over navigation paths"))
                        } else {
                            identifier("$apply", p)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let aggregates = match parts.get(1..).unwrap_or_default() {
                    [] => Vec::new(),
                    [one] => match call_body(one.trim(), "aggregate") {
                        Some(body) => parse_aggregates(body)?,
                        None => {
                            return Err(QueryError::unsupported(format!(
                                "'{}' inside groupby: only aggregate(…) is supported there",
                                one.trim()
                            )))
                        }
                    },
                    _ => return Err(QueryError::Invalid("$apply: groupby takes at most two arguments".into())),
                };
                return Ok(Transform::GroupBy {
                    properties,
                    aggregates,
                });
            }
            let name = step.split('(').next().unwrap_or(step);
            Err(QueryError::unsupported(format!(
                "the $apply transformation '{name}' (filter, groupby and aggregate are supported)"
            )))
        })
        .collect()
}

/// `$search` terms: words and "quoted phrases", joined by AND (implicit), OR and NOT.
fn parse_search(text: &str) -> Result<Search> {
    let mut tokens = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').ok_or_else(|| {
                QueryError::Invalid("$search: a quoted phrase is not closed".into())
            })?;
            tokens.push((after[..end].to_owned(), true));
            rest = after[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            tokens.push((rest[..end].to_owned(), false));
            rest = rest[end..].trim_start();
        }
    }
    let mut alternatives: Vec<Search> = Vec::new();
    let mut current: Option<Search> = None;
    let mut negate = false;
    for (token, quoted) in tokens {
        match (token.as_str(), quoted) {
            ("OR", false) => {
                alternatives.push(current.take().ok_or_else(|| {
                    QueryError::Invalid("$search: OR needs a term on each side".into())
                })?);
            }
            ("AND", false) => {}
            ("NOT", false) => negate = true,
            _ => {
                let mut term = Search::Term(token);
                if std::mem::take(&mut negate) {
                    term = Search::Not(Box::new(term));
                }
                current = Some(match current {
                    Some(prev) => Search::And(Box::new(prev), Box::new(term)),
                    None => term,
                });
            }
        }
    }
    let last = current.ok_or_else(|| QueryError::Invalid("$search has no terms".into()))?;
    Ok(alternatives
        .into_iter()
        .rev()
        .fold(last, |acc, alt| Search::Or(Box::new(alt), Box::new(acc))))
}

impl QueryOptions {
    /// Parses a raw (still percent-encoded) query string. Unknown `$` options are errors;
    /// other parameters are custom options and ignored, as OData prescribes.
    pub fn parse(query: &str) -> Result<QueryOptions> {
        if query.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLarge(format!(
                "the query string is {} bytes long; the limit is {MAX_QUERY_LEN}",
                query.len()
            )));
        }
        let mut options = QueryOptions::default();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let key = key.trim();
            // OData 4.01 lets clients omit the '$'; other names are custom options.
            let key = if key.starts_with('$') {
                key.to_owned()
            } else if is_system_option(&format!("${key}")) {
                format!("${key}")
            } else {
                continue;
            };
            if !seen.insert(key.clone()) {
                return Err(QueryError::Invalid(format!(
                    "{key} is given more than once"
                )));
            }
            options.set(&key, &value, 0)?;
        }
        Ok(options)
    }

    fn set(&mut self, key: &str, value: &str, depth: usize) -> Result<()> {
        match key {
            "$filter" => self.filter = Some(parse_expr(value, "$filter")?),
            "$select" => self.select = parse_select(value)?,
            "$orderby" => self.orderby = parse_orderby(value)?,
            "$top" => self.top = Some(number(key, value)?),
            "$skip" => self.skip = Some(number(key, value)?),
            "$count" => {
                self.count = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(QueryError::Invalid(format!(
                            "$count must be true or false, not '{other}'"
                        )))
                    }
                }
            }
            "$expand" => self.expand = parse_expand(value, depth)?,
            "$search" => self.search = Some(parse_search(value)?),
            "$apply" => self.apply = Some(parse_apply(value)?),
            "$skiptoken" => self.skiptoken = Some(value.to_owned()),
            "$format" => self.format = Some(value.trim().to_owned()),
            "$levels" | "$compute" | "$index" | "$schemaversion" | "$id" => {
                return Err(QueryError::unsupported(format!("the query option {key}")))
            }
            other => {
                return Err(QueryError::Invalid(format!(
                    "unknown system query option '{other}'"
                )))
            }
        }
        Ok(())
    }
}

fn is_system_option(key: &str) -> bool {
    matches!(
        key,
        "$filter"
            | "$select"
            | "$orderby"
            | "$top"
            | "$skip"
            | "$count"
            | "$expand"
            | "$search"
            | "$apply"
            | "$skiptoken"
            | "$format"
            | "$levels"
            | "$compute"
            | "$index"
            | "$schemaversion"
            | "$id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_nesting() {
        let o = QueryOptions::parse(
            "$select=ChatUID,SiteKey&$orderby=Started desc,ChatUID&$top=10&$count=true&$expand=Lines($select=Seq,Message;$filter=Role eq 'operator';$top=2),ChatTags&custom=1",
        )
        .expect("parses");
        assert_eq!(o.select, Some(vec!["ChatUID".into(), "SiteKey".into()]));
        assert_eq!(o.orderby.len(), 2);
        assert!(o.orderby[0].descending);
        assert_eq!(o.top, Some(10));
        assert!(o.count);
        assert_eq!(o.expand.len(), 2);
        assert_eq!(o.expand[0].navigation, "Lines");
        assert_eq!(o.expand[0].options.top, Some(2));
        assert!(o.expand[0].options.filter.is_some());
    }

    #[test]
    fn apply_parses_groupby_and_aggregate() {
        let o = QueryOptions::parse(
            "$apply=filter(SiteKey eq 3)/groupby((SiteKey,Channel),aggregate($count as Chats,WaitedSeconds with average as AvgWait))",
        )
        .expect("parses");
        let apply = o.apply.expect("apply");
        assert_eq!(apply.len(), 2);
        match &apply[1] {
            Transform::GroupBy {
                properties,
                aggregates,
            } => {
                assert_eq!(properties, &["SiteKey", "Channel"]);
                assert_eq!(aggregates.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            QueryOptions::parse("$apply=compute(1 as x)"),
            Err(QueryError::Unsupported(_))
        ));
    }

    #[test]
    fn search_understands_phrases_and_operators() {
        let o = QueryOptions::parse("$search=%22order number%22 refund OR NOT invoice")
            .expect("parses");
        assert_eq!(
            o.search,
            Some(Search::Or(
                Box::new(Search::And(
                    Box::new(Search::Term("order number".into())),
                    Box::new(Search::Term("refund".into()))
                )),
                Box::new(Search::Not(Box::new(Search::Term("invoice".into()))))
            ))
        );
    }

    #[test]
    fn mistakes_are_refused_clearly() {
        for (query, needle) in [
            ("$top=-1", "non-negative"),
            ("$top=1&$top=2", "more than once"),
            ("$frobnicate=1", "unknown system query option"),
            ("$orderby=Started sideways", "asc"),
            ("$count=yes", "true or false"),
            ("$select=Chat UID", "not a property name"),
        ] {
            let err = QueryOptions::parse(query).expect_err(query);
            assert!(err.to_string().contains(needle), "{query}: {err}");
        }
        let huge = format!("$filter={}", "A eq 1 and ".repeat(10_000));
        assert!(matches!(
            QueryOptions::parse(&huge),
            Err(QueryError::TooLarge(_))
        ));
    }
}
