//! Planning and running a request against the columnar store: predicates and projections
//! go into the Parquet scan, pages are cut by keyset so page N costs what page 1 costs.

use base64::Engine as _;
use chatvault_model::ColumnKind;
use chatvault_store::{Partition, ScanFilter, Store};
use chrono::NaiveDateTime;
use chrono_tz::Tz;
use polars::prelude::{
    col, concat_str, len, lit, DataFrame, DataType, Expr as P, IntoLazy, JoinArgs, JoinType,
    LazyFrame, NamedFrom, Series, SortMultipleOptions,
};
use serde_json::{json, Value};

use crate::compile::{scan_hint, timestamp_lit, Env, Ty};
use crate::error::{QueryError, Result};
use crate::json::ColumnWriter;
use crate::model::{entity_set, EntitySet, Navigation, JOIN_KEY};
use crate::options::{Aggregate, AggregateMethod, QueryOptions, Search, Transform};
use crate::resource::Key;
use crate::syntax::Lit;

/// Where the engine's settings come from: the service configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tz: Tz,
    /// Rows per page unless the client asks for fewer (`Prefer: odata.maxpagesize`).
    pub page_size: usize,
}

/// What the caller may see: `None` is every site.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub sites: Option<Vec<i64>>,
}

/// A navigation property expanded inline: the related rows of every entity on the page.
pub struct Expansion {
    pub navigation: &'static Navigation,
    pub target: &'static EntitySet,
    /// Sorted by the join key, then the requested order.
    pub frame: DataFrame,
    pub output: Vec<String>,
    pub skip: usize,
    pub top: Option<usize>,
}

/// One page of results, ready to be written.
pub struct Page {
    /// None for `$apply` results, which are not entities.
    pub set: Option<&'static EntitySet>,
    pub frame: DataFrame,
    /// Columns written for each row, in order; the frame may hold more (keys for ids).
    pub output: Vec<String>,
    pub expansions: Vec<Expansion>,
    pub count: Option<u64>,
    /// The `$skiptoken` and remaining `$top` of the next page.
    pub next: Option<(String, Option<usize>)>,
}

/// The resolved scope of a collection request before paging.
struct Plan<'a> {
    store: &'a Store,
    set: &'static EntitySet,
    predicate: P,
    hint: ScanFilter,
    search: Option<&'a Search>,
}

impl Plan<'_> {
    fn all(&self) -> Result<LazyFrame> {
        let rows = self.store.scan(self.set.name, &self.hint)?;
        let lines = || Ok(self.store.scan("ChatLines", &self.hint)?);
        self.shape(rows, lines)
    }

    fn partition(&self, part: &Partition) -> Result<LazyFrame> {
        let rows = self.store.scan_partition(self.set.name, part)?;
        // Child rows share their chat's partition, so a chat's lines are in the same one.
        let lines = || Ok(self.store.scan_partition("ChatLines", part)?);
        self.shape(rows, lines)
    }

    fn shape(
        &self,
        rows: LazyFrame,
        lines: impl FnOnce() -> Result<LazyFrame>,
    ) -> Result<LazyFrame> {
        let rows = rows.filter(self.predicate.clone());
        let Some(search) = self.search else {
            return Ok(rows);
        };
        let own_text = |columns: &[&str]| {
            concat_str(
                columns.iter().map(|c| col(*c)).collect::<Vec<_>>(),
                " ",
                true,
            )
            .str()
            .to_lowercase()
        };
        Ok(match self.set.name {
            // A chat matches on its summary, missed message and every line it holds: each
            // term is looked for in each line once, the lines that hold none are dropped,
            // and what is left says per chat which terms it holds. (Joining every chat's
            // lines into one text first made a search 80 times slower than DuckDB's
            // LIKE over the lines.)
            "Chats" => {
                let terms = search_terms(search);
                let flags: Vec<String> =
                    (0..terms.len()).map(|i| format!("__search_{i}")).collect();
                let mentions = |text: P, term: &str| {
                    text.str()
                        .contains(lit(case_insensitive_pattern(term)), true)
                };
                let line_flags: Vec<P> = terms
                    .iter()
                    .zip(&flags)
                    .map(|(term, flag)| mentions(col("Message"), term).alias(flag.as_str()))
                    .collect();
                // Filtering on the text itself (not on the flags computed from it) lets
                // the scan test each line before it decodes the line's other columns.
                let any_term = terms
                    .iter()
                    .map(|term| mentions(col("Message"), term))
                    .reduce(P::or)
                    .unwrap_or_else(|| lit(false));
                let held = lines()?
                    .filter(any_term)
                    .select([col(JOIN_KEY), col("Message")])
                    .with_columns(line_flags)
                    .group_by([col(JOIN_KEY)])
                    .agg(
                        flags
                            .iter()
                            .map(|f| {
                                col(f.as_str())
                                    .cast(DataType::UInt32)
                                    .sum()
                                    .gt(lit(0u32))
                                    .alias(f.as_str())
                            })
                            .collect::<Vec<_>>(),
                    );
                let own = concat_str([col("Summary"), col("MissedMessage")], " ", true);
                let chat_flags: Vec<P> = terms
                    .iter()
                    .zip(&flags)
                    .map(|(term, flag)| {
                        col(flag.as_str())
                            .fill_null(lit(false))
                            .or(mentions(own.clone(), term))
                            .alias(flag.as_str())
                    })
                    .collect();
                let names: Vec<P> = self.set.table.columns.iter().map(|c| col(c.name)).collect();
                rows.join(
                    held,
                    [col(JOIN_KEY)],
                    [col(JOIN_KEY)],
                    JoinArgs::new(JoinType::Left),
                )
                .with_columns(chat_flags)
                .filter(term_formula(search, &terms, &flags))
                .select(names)
            }
            "ChatLines" => rows.filter(search_predicate(search, &own_text(&["Message"]))),
            "SurveyAnswers" => rows.filter(search_predicate(search, &own_text(&["Name", "Value"]))),
            "PageViews" => rows.filter(search_predicate(search, &own_text(&["Name"]))),
            _ => rows.filter(search_predicate(search, &own_text(&["Tag"]))),
        })
    }
}

/// Where the rows related to a page of chats can be: a chat's lines, answers, pages and
/// tags are stored in its own partition (its site and the month it started), so a
/// navigation from a few chats reads a few partitions, not the whole table.
struct ChatPartitions {
    sites: Vec<i32>,
    /// The first and last start on the page; None when a chat on it has none (its rows
    /// are in the partition of chats without a date, which a time range excludes).
    started: Option<(NaiveDateTime, NaiveDateTime)>,
}

impl ChatPartitions {
    /// `hint` narrowed to these partitions.
    fn within(&self, mut hint: ScanFilter) -> ScanFilter {
        hint.sites = Some(match hint.sites {
            Some(allowed) => self
                .sites
                .iter()
                .copied()
                .filter(|s| allowed.contains(s))
                .collect(),
            None => self.sites.clone(),
        });
        if let Some((first, last)) = self.started {
            hint.started_from = Some(first);
            hint.started_before = Some(last + chrono::Duration::microseconds(1));
        }
        hint
    }
}

/// The partitions of the chats on `page`; None when it lacks their site or start (a
/// `$select` without them).
fn partitions_of_chats(page: &DataFrame) -> Result<Option<ChatPartitions>> {
    let (Ok(sites), Ok(started)) = (page.column("SiteKey"), page.column("Started")) else {
        return Ok(None);
    };
    let mut sites: Vec<i32> = sites
        .as_materialized_series()
        .cast(&DataType::Int32)?
        .i32()?
        .iter()
        .flatten()
        .collect();
    sites.sort_unstable();
    sites.dedup();
    let micros = started.as_materialized_series().cast(&DataType::Int64)?;
    let micros = micros.i64()?;
    let at = |us: Option<i64>| {
        us.and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.naive_utc())
    };
    let started = if micros.null_count() == 0 {
        at(micros.iter().flatten().min()).zip(at(micros.iter().flatten().max()))
    } else {
        None
    };
    Ok(Some(ChatPartitions { sites, started }))
}

/// The distinct terms of a search, in the order they first appear.
fn search_terms(search: &Search) -> Vec<String> {
    fn walk(search: &Search, out: &mut Vec<String>) {
        match search {
            Search::Term(term) => {
                if !out.contains(term) {
                    out.push(term.clone());
                }
            }
            Search::Not(inner) => walk(inner, out),
            Search::And(a, b) | Search::Or(a, b) => {
                walk(a, out);
                walk(b, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(search, &mut out);
    out
}

/// The search as a formula over one flag column per term (see [`search_terms`]).
fn term_formula(search: &Search, terms: &[String], flags: &[String]) -> P {
    match search {
        Search::Term(term) => terms
            .iter()
            .position(|t| t == term)
            .and_then(|i| flags.get(i))
            .map_or_else(|| lit(false), |f| col(f.as_str())),
        Search::Not(inner) => term_formula(inner, terms, flags).not(),
        Search::And(a, b) => term_formula(a, terms, flags).and(term_formula(b, terms, flags)),
        Search::Or(a, b) => term_formula(a, terms, flags).or(term_formula(b, terms, flags)),
    }
}

/// A regular expression matching `term` literally, ignoring case: searching this way
/// reads each text once, where lower-casing it first would copy it.
fn case_insensitive_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 8);
    pattern.push_str("(?i)");
    for c in term.chars() {
        if c.is_ascii_punctuation() {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

fn search_predicate(search: &Search, text: &P) -> P {
    match search {
        Search::Term(term) => text
            .clone()
            .str()
            .contains_literal(lit(term.to_lowercase())),
        Search::Not(inner) => search_predicate(inner, text).not(),
        Search::And(a, b) => search_predicate(a, text).and(search_predicate(b, text)),
        Search::Or(a, b) => search_predicate(a, text).or(search_predicate(b, text)),
    }
}

/// A sort key of a page: a column, its direction and its kind (to rebuild literals).
#[derive(Clone, Copy)]
struct SortKey {
    column: &'static str,
    descending: bool,
    kind: ColumnKind,
}

fn token_error(why: &str) -> QueryError {
    QueryError::Invalid(format!(
        "the $skiptoken is not one this service issued for this query ({why}); start again from the first page"
    ))
}

fn encode_token(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn decode_token(text: &str) -> Result<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| token_error("not base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| token_error("not JSON"))
}

/// The literal for a token value of a sort key's column.
fn token_literal(key: &SortKey, value: &Value) -> Result<Option<P>> {
    if value.is_null() {
        return Ok(None);
    }
    let bad = || token_error("a key value has the wrong type");
    Ok(Some(match key.kind {
        ColumnKind::Str => lit(value.as_str().ok_or_else(bad)?.to_owned()),
        ColumnKind::I32 | ColumnKind::I64 => lit(value.as_i64().ok_or_else(bad)?),
        ColumnKind::F64 => lit(value.as_f64().ok_or_else(bad)?),
        ColumnKind::Bool => lit(value.as_bool().ok_or_else(bad)?),
        ColumnKind::Timestamp => timestamp_lit(
            chrono::DateTime::from_timestamp_micros(value.as_i64().ok_or_else(bad)?)
                .ok_or_else(bad)?
                .naive_utc(),
        ),
        ColumnKind::StrList => return Err(bad()),
    }))
}

/// Rows strictly after `values` in the order of `keys` (nulls sort last either way).
fn after(keys: &[SortKey], values: &[Value]) -> Result<P> {
    if keys.len() != values.len() {
        return Err(token_error("wrong number of key values"));
    }
    let mut tail: Option<P> = None;
    for (key, value) in keys.iter().zip(values).rev() {
        let c = col(key.column);
        let (beyond, equal) = match token_literal(key, value)? {
            None => (lit(false), c.is_null()),
            Some(v) => {
                let strictly = if key.descending {
                    c.clone().lt(v.clone())
                } else {
                    c.clone().gt(v.clone())
                };
                (strictly.or(c.clone().is_null()), c.eq(v))
            }
        };
        tail = Some(match tail {
            None => beyond,
            Some(rest) => beyond.or(equal.and(rest)),
        });
    }
    tail.ok_or_else(|| token_error("no key values"))
}

fn sort_rows(rows: LazyFrame, keys: &[SortKey]) -> LazyFrame {
    rows.sort_by_exprs(
        keys.iter().map(|k| col(k.column)).collect::<Vec<_>>(),
        SortMultipleOptions::default()
            .with_order_descending_multi(keys.iter().map(|k| k.descending).collect::<Vec<_>>())
            .with_nulls_last(true)
            .with_maintain_order(false),
    )
}

fn key_values(frame: &DataFrame, keys: &[SortKey], row: usize) -> Result<Vec<Value>> {
    keys.iter()
        .map(|k| {
            let series = frame.column(k.column)?.as_materialized_series().rechunk();
            Ok(ColumnWriter::new(&series)?.json_value(row))
        })
        .collect()
}

fn site_series(sites: &[i64]) -> Series {
    Series::new(
        "sites".into(),
        sites.iter().map(|s| *s as i32).collect::<Vec<i32>>(),
    )
}

/// A key value from the resource path (keys are strings and integers in this model).
fn key_literal(l: &Lit) -> Result<P> {
    match l {
        Lit::Str(s) => Ok(lit(s.clone())),
        Lit::Int(i) => Ok(lit(*i)),
        other => Err(QueryError::Invalid(format!(
            "{other:?} cannot be a key value here"
        ))),
    }
}

pub struct Engine {
    store: Store,
    settings: Settings,
}

impl Engine {
    pub fn new(store: Store, settings: Settings) -> Engine {
        Engine { store, settings }
    }

    /// The columnar store the feed reads (the console's summaries read it directly).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn env(&self, set: &EntitySet, now: NaiveDateTime, option: &'static str) -> Env {
        Env::for_table(set.table, self.settings.tz, now, option)
    }

    /// The predicate and partition hint every read of `set` by this caller starts from.
    fn scope(access: &Access) -> (P, ScanFilter) {
        let mut hint = ScanFilter::default();
        let predicate = match &access.sites {
            Some(sites) => {
                hint.sites = Some(
                    sites
                        .iter()
                        .filter_map(|s| i32::try_from(*s).ok())
                        .collect(),
                );
                col("SiteKey").is_in(lit(site_series(sites)).implode(true), false)
            }
            None => lit(true),
        };
        (predicate, hint)
    }

    fn plan<'a>(
        &'a self,
        set: &'static EntitySet,
        options: &'a QueryOptions,
        from: Option<(&'static str, &Lit)>,
        with_filter: bool,
        access: &Access,
        now: NaiveDateTime,
    ) -> Result<Plan<'a>> {
        let (mut predicate, mut hint) = Self::scope(access);
        let env = self.env(set, now, "$filter");
        if let Some((column, value)) = from {
            predicate = predicate.and(col(column).eq(key_literal(value)?));
        }
        if with_filter {
            if let Some(filter) = &options.filter {
                predicate = predicate.and(env.predicate(filter)?);
                scan_hint(
                    filter,
                    self.settings.tz,
                    set.table.column("Started").is_some(),
                    &mut hint,
                );
            }
        }
        Ok(Plan {
            store: &self.store,
            set,
            predicate,
            hint,
            search: options.search.as_ref(),
        })
    }

    fn sort_key(set: &EntitySet, name: &str, descending: bool) -> Result<SortKey> {
        let column = set.table.column(name).ok_or_else(|| {
            QueryError::Invalid(format!(
                "$orderby: '{name}' is not a property of {}",
                set.name
            ))
        })?;
        if column.kind == ColumnKind::StrList {
            return Err(QueryError::Invalid(format!(
                "$orderby: '{name}' is a collection and has no order"
            )));
        }
        Ok(SortKey {
            column: column.name,
            descending,
            kind: column.kind,
        })
    }

    /// The columns a page must read: the selection plus what ids, etags, paging and
    /// expansions need.
    fn projection(
        set: &EntitySet,
        options: &QueryOptions,
        sort: &[SortKey],
    ) -> Result<(Vec<String>, Vec<P>)> {
        let output: Vec<String> = match &options.select {
            None => set
                .table
                .columns
                .iter()
                .map(|c| c.name.to_owned())
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    if set.table.column(n).is_some() {
                        Ok(n.clone())
                    } else if set.navigation(n).is_some() {
                        Err(QueryError::Invalid(format!(
                            "$select: '{n}' is a navigation property; use $expand={n}"
                        )))
                    } else {
                        Err(QueryError::Invalid(format!(
                            "$select: '{n}' is not a property of {}",
                            set.name
                        )))
                    }
                })
                .collect::<Result<_>>()?,
        };
        let mut read: Vec<String> = output.clone();
        let needed = set
            .table
            .keys
            .iter()
            .copied()
            .chain([JOIN_KEY, "ArchiveSeq"])
            .chain(sort.iter().map(|k| k.column));
        for name in needed {
            if !read.iter().any(|r| r == name) {
                read.push(name.to_owned());
            }
        }
        Ok((output, read.iter().map(|n| col(n.as_str())).collect()))
    }

    /// One page of an entity set (or of the entities a navigation leads to).
    pub fn collection(
        &self,
        set: &'static EntitySet,
        options: &QueryOptions,
        from: Option<(&'static str, &Lit)>,
        access: &Access,
        page_size: usize,
        now: NaiveDateTime,
    ) -> Result<Page> {
        if options.apply.is_some() {
            return self.aggregate(set, options, from, access, page_size, now);
        }
        let plan = self.plan(set, options, from, true, access, now)?;
        let keys: Vec<SortKey> = set
            .table
            .keys
            .iter()
            .map(|k| Self::sort_key(set, k, false))
            .collect::<Result<_>>()?;
        let ordered = !options.orderby.is_empty();
        let sort: Vec<SortKey> = if ordered {
            let mut sort = options
                .orderby
                .iter()
                .map(|o| Self::sort_key(set, &o.property, o.descending))
                .collect::<Result<Vec<_>>>()?;
            for k in &keys {
                if !sort.iter().any(|s| s.column == k.column) {
                    sort.push(*k);
                }
            }
            sort
        } else {
            keys
        };
        let (output, read) = Self::projection(set, options, &sort)?;
        let token = options.skiptoken.as_deref().map(decode_token).transpose()?;
        let skip = if token.is_some() {
            0
        } else {
            options.skip.unwrap_or(0)
        };
        let limit = options.top.map_or(page_size, |t| t.min(page_size));
        // One row beyond the page tells whether another page exists.
        let want = if options.top.is_some_and(|t| t <= page_size) {
            limit
        } else {
            limit + 1
        };

        // A search is most of a page's work: a first page of chats asked with its total
        // finds the matching chats' sort keys once, counts them and reads the page's rows
        // by ChatUID, instead of running the search for the count and again for the page.
        let search_once = ordered
            && options.count
            && token.is_none()
            && plan.search.is_some()
            && set.table.keys == [JOIN_KEY];
        let mut count = None;
        if options.count && !search_once {
            count = Some(self::count(plan.all()?)?);
        }
        let (frame, last_partition) = if search_once {
            let mut columns: Vec<P> = sort.iter().map(|k| col(k.column)).collect();
            if !sort.iter().any(|k| k.column == JOIN_KEY) {
                columns.push(col(JOIN_KEY));
            }
            let matching = plan.all()?.select(columns).collect()?;
            count = Some(matching.height() as u64);
            let page_keys = sort_rows(matching.lazy(), &sort)
                .slice(skip as i64, want as u32)
                .select([col(JOIN_KEY)])
                .collect()?;
            let uids = page_keys.column(JOIN_KEY)?.as_materialized_series().clone();
            // The keys came from the caller's rows, so reading them by key needs no other
            // restriction.
            let rows = self
                .store
                .scan(set.name, &plan.hint)?
                .filter(col(JOIN_KEY).is_in(lit(uids).implode(true), false));
            (sort_rows(rows, &sort).select(read).collect()?, Vec::new())
        } else if ordered {
            let mut rows = plan.all()?;
            if let Some(token) = &token {
                let values = token
                    .get("k")
                    .and_then(Value::as_array)
                    .ok_or_else(|| token_error("no key values"))?;
                if token.get("p").is_some() {
                    return Err(token_error("it was issued for the default order"));
                }
                rows = rows.filter(after(&sort, values)?);
            }
            let frame = sort_rows(rows, &sort)
                .slice(skip as i64, want as u32)
                .select(read)
                .collect()?;
            (frame, Vec::new())
        } else {
            self.walk_partitions(&plan, &sort, token.as_ref(), skip, want, &read)?
        };

        let more = frame.height() > limit;
        let frame = frame.slice(0, limit);
        let next = if more && limit > 0 {
            let last = limit - 1;
            let mut token = json!({"k": key_values(&frame, &sort, last)?});
            if !ordered {
                let (site, month) = last_partition
                    .iter()
                    .find(|(end, _)| last < *end)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| {
                        QueryError::Invalid("page bookkeeping lost its partition".into())
                    })?;
                token["p"] = json!([site, month]);
            }
            Some((encode_token(&token), options.top.map(|t| t - limit)))
        } else {
            None
        };
        let expansions = self.expand(set, options, &frame, access, now)?;
        Ok(Page {
            set: Some(set),
            frame,
            output,
            expansions,
            count,
            next,
        })
    }

    /// Reads the default order partition by partition, starting where the token left
    /// off, until `want` rows are found. Returns the rows and, for each partition that
    /// contributed, the row index it ends at.
    fn walk_partitions(
        &self,
        plan: &Plan<'_>,
        keys: &[SortKey],
        token: Option<&Value>,
        mut skip: usize,
        want: usize,
        read: &[P],
    ) -> Result<(DataFrame, Vec<(usize, Partition)>)> {
        let start: Option<(Partition, &Vec<Value>)> = match token {
            None => None,
            Some(t) => {
                let p = t
                    .get("p")
                    .and_then(Value::as_array)
                    .ok_or_else(|| token_error("it was issued for an explicit $orderby"))?;
                let site = p
                    .first()
                    .and_then(Value::as_i64)
                    .ok_or_else(|| token_error("bad partition"))?;
                let month = p
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or_else(|| token_error("bad partition"))?;
                let values = t
                    .get("k")
                    .and_then(Value::as_array)
                    .ok_or_else(|| token_error("no key values"))?;
                Some(((site, month.to_owned()), values))
            }
        };
        let mut frames: Vec<DataFrame> = Vec::new();
        let mut ends = Vec::new();
        let mut got = 0usize;
        for part in plan.store.partitions(plan.set.name, &plan.hint)? {
            if got >= want {
                break;
            }
            let mut rows = plan.partition(&part)?;
            if let Some((first, values)) = &start {
                if part < *first {
                    continue;
                }
                if part == *first {
                    rows = rows.filter(after(keys, values)?);
                }
            }
            if skip > 0 {
                let here = count(rows.clone())? as usize;
                if here <= skip {
                    skip -= here;
                    continue;
                }
            }
            let frame = sort_rows(rows, keys)
                .slice(skip as i64, (want - got) as u32)
                .select(read)
                .collect()?;
            skip = 0;
            if frame.height() == 0 {
                continue;
            }
            got += frame.height();
            ends.push((got, part));
            frames.push(frame);
        }
        let mut iter = frames.into_iter();
        let Some(mut all) = iter.next() else {
            let empty = plan.all()?.slice(0, 0).select(read).collect()?;
            return Ok((empty, ends));
        };
        for f in iter {
            all.vstack_mut(&f)?;
        }
        all.rechunk_mut();
        Ok((all, ends))
    }

    fn expand(
        &self,
        set: &'static EntitySet,
        options: &QueryOptions,
        page: &DataFrame,
        access: &Access,
        now: NaiveDateTime,
    ) -> Result<Vec<Expansion>> {
        let mut out = Vec::new();
        let items: Vec<(&'static Navigation, QueryOptions)> = options
            .expand
            .iter()
            .flat_map(|e| {
                if e.navigation == "*" {
                    set.navigation
                        .iter()
                        .map(|n| Ok((n, QueryOptions::default())))
                        .collect::<Vec<_>>()
                } else {
                    vec![set
                        .navigation(&e.navigation)
                        .map(|n| (n, e.options.clone()))
                        .ok_or_else(|| {
                            QueryError::Invalid(format!(
                                "$expand: {} has no navigation property '{}'",
                                set.name, e.navigation
                            ))
                        })]
                }
            })
            .collect::<Result<_>>()?;
        if items.is_empty() {
            return Ok(out);
        }
        let uids = page.column(JOIN_KEY)?.as_materialized_series().unique()?;
        let page_partitions = if set.name == "Chats" {
            partitions_of_chats(page)?
        } else {
            None
        };
        for (navigation, nested) in items {
            if !nested.expand.is_empty() {
                return Err(QueryError::unsupported("$expand inside $expand"));
            }
            let target = entity_set(navigation.target)
                .ok_or_else(|| QueryError::NotFound(navigation.target.into()))?;
            let (mut predicate, mut hint) = Self::scope(access);
            if let Some(partitions) = &page_partitions {
                hint = partitions.within(hint);
            }
            predicate = predicate.and(col(JOIN_KEY).is_in(lit(uids.clone()).implode(true), false));
            if let Some(filter) = &nested.filter {
                predicate = predicate.and(self.env(target, now, "$filter").predicate(filter)?);
            }
            let mut sort = vec![SortKey {
                column: JOIN_KEY,
                descending: false,
                kind: ColumnKind::Str,
            }];
            let order: Vec<SortKey> = if nested.orderby.is_empty() {
                target
                    .table
                    .keys
                    .iter()
                    .map(|k| Self::sort_key(target, k, false))
                    .collect::<Result<_>>()?
            } else {
                nested
                    .orderby
                    .iter()
                    .map(|o| Self::sort_key(target, &o.property, o.descending))
                    .collect::<Result<_>>()?
            };
            sort.extend(order.into_iter().filter(|k| k.column != JOIN_KEY));
            let (output, read) = Self::projection(target, &nested, &sort)?;
            let rows = self.store.scan(target.name, &hint)?.filter(predicate);
            let mut frame = sort_rows(rows, &sort).select(read).collect()?;
            frame.rechunk_mut();
            out.push(Expansion {
                navigation,
                target,
                frame,
                output,
                skip: nested.skip.unwrap_or(0),
                top: nested.top,
            });
        }
        Ok(out)
    }

    /// `$count` of a collection, with `$filter` and `$search` applied.
    pub fn count(
        &self,
        set: &'static EntitySet,
        options: &QueryOptions,
        from: Option<(&'static str, &Lit)>,
        access: &Access,
        now: NaiveDateTime,
    ) -> Result<u64> {
        count(self.plan(set, options, from, true, access, now)?.all()?)
    }

    /// One entity by key (or via a single-valued navigation); None if it is not there or
    /// the caller may not see it.
    pub fn entity(
        &self,
        set: &'static EntitySet,
        key: &Key,
        options: &QueryOptions,
        access: &Access,
        now: NaiveDateTime,
    ) -> Result<Page> {
        let (mut predicate, hint) = Self::scope(access);
        for (column, value) in &key.0 {
            if set.table.column(column).is_some() {
                predicate = predicate.and(col(*column).eq(key_literal(value)?));
            }
        }
        let (output, read) = Self::projection(set, options, &[])?;
        let mut frame = self
            .store
            .scan(set.name, &hint)?
            .filter(predicate)
            .select(read)
            .limit(1)
            .collect()?;
        if frame.height() == 0 {
            return Err(QueryError::NotFound(format!(
                "{} has no entity with that key",
                set.name
            )));
        }
        frame.rechunk_mut();
        let expansions = self.expand(set, options, &frame, access, now)?;
        Ok(Page {
            set: Some(set),
            frame,
            output,
            expansions,
            count: None,
            next: None,
        })
    }

    /// `$apply`: transformations over the caller's rows, then `$filter`, `$orderby`,
    /// `$skip`/`$top` and paging over the (usually small) result.
    fn aggregate(
        &self,
        set: &'static EntitySet,
        options: &QueryOptions,
        from: Option<(&'static str, &Lit)>,
        access: &Access,
        page_size: usize,
        now: NaiveDateTime,
    ) -> Result<Page> {
        let plan = self.plan(set, options, from, false, access, now)?;
        let mut rows = plan.all()?;
        let mut env = self.env(set, now, "$apply");
        for step in options.apply.iter().flatten() {
            match step {
                Transform::Filter(e) => {
                    rows = rows.filter(env.predicate(e)?);
                }
                Transform::GroupBy {
                    properties,
                    aggregates,
                } => {
                    for p in properties {
                        if env.prop(p).is_none() {
                            return Err(QueryError::Invalid(format!(
                                "$apply: groupby on unknown property '{p}'"
                            )));
                        }
                    }
                    let (aggs, produced) = aggregations(&env, aggregates)?;
                    rows = rows
                        .group_by(
                            properties
                                .iter()
                                .map(|p| col(p.as_str()))
                                .collect::<Vec<_>>(),
                        )
                        .agg(aggs);
                    let mut props: Vec<(String, Ty)> = properties
                        .iter()
                        .map(|p| (p.clone(), env.prop(p).unwrap_or(Ty::Null)))
                        .collect();
                    props.extend(produced);
                    env.props = props;
                    rows = rows.sort(
                        properties.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                        SortMultipleOptions::default().with_nulls_last(true),
                    );
                }
                Transform::Aggregate(aggregates) => {
                    let (aggs, produced) = aggregations(&env, aggregates)?;
                    rows = rows.select(aggs);
                    env.props = produced;
                }
            }
        }
        env.option = "$filter";
        if let Some(filter) = &options.filter {
            rows = rows.filter(env.predicate(filter)?);
        }
        if !options.orderby.is_empty() {
            for o in &options.orderby {
                if env.prop(&o.property).is_none() {
                    return Err(QueryError::Invalid(format!(
                        "$orderby: '{}' is not in the $apply result",
                        o.property
                    )));
                }
            }
            rows = rows.sort_by_exprs(
                options
                    .orderby
                    .iter()
                    .map(|o| col(o.property.as_str()))
                    .collect::<Vec<_>>(),
                SortMultipleOptions::default()
                    .with_order_descending_multi(
                        options
                            .orderby
                            .iter()
                            .map(|o| o.descending)
                            .collect::<Vec<_>>(),
                    )
                    .with_nulls_last(true)
                    .with_maintain_order(true),
            );
        }
        let output: Vec<String> = match &options.select {
            Some(names) => {
                for n in names {
                    if env.prop(n).is_none() {
                        return Err(QueryError::Invalid(format!(
                            "$select: '{n}' is not in the $apply result"
                        )));
                    }
                }
                names.clone()
            }
            None => env.props.iter().map(|(n, _)| n.clone()).collect(),
        };
        let total = if options.count {
            Some(count(rows.clone())?)
        } else {
            None
        };
        // Aggregated results are small; they page by offset.
        let offset = match options.skiptoken.as_deref().map(decode_token).transpose()? {
            Some(t) => t
                .get("o")
                .and_then(Value::as_u64)
                .ok_or_else(|| token_error("not an $apply token"))? as usize,
            None => options.skip.unwrap_or(0),
        };
        let limit = options.top.map_or(page_size, |t| t.min(page_size));
        let mut frame = rows
            .slice(offset as i64, (limit + 1) as u32)
            .select(output.iter().map(|n| col(n.as_str())).collect::<Vec<_>>())
            .collect()?;
        let more = frame.height() > limit && options.top.is_none_or(|t| t > limit);
        frame = frame.slice(0, limit);
        frame.rechunk_mut();
        let next = more.then(|| {
            (
                encode_token(&json!({"o": offset + limit})),
                options.top.map(|t| t - limit),
            )
        });
        Ok(Page {
            set: None,
            frame,
            output,
            expansions: Vec::new(),
            count: total,
            next,
        })
    }
}

/// Each aggregate's expression, and its output column with its type.
type Aggregations = (Vec<P>, Vec<(String, Ty)>);

fn aggregations(env: &Env, aggregates: &[Aggregate]) -> Result<Aggregations> {
    let mut exprs = Vec::new();
    let mut produced = Vec::new();
    for a in aggregates {
        match a {
            Aggregate::Count { alias } => {
                exprs.push(len().cast(DataType::Int64).alias(alias.as_str()));
                produced.push((alias.clone(), Ty::Int));
            }
            Aggregate::Method {
                property,
                method,
                alias,
            } => {
                let ty = env.prop(property).ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "$apply: '{property}' is not a property of {}",
                        env.owner
                    ))
                })?;
                let c = col(property.as_str());
                let numeric = || {
                    if ty.numeric() {
                        Ok(())
                    } else {
                        Err(QueryError::Invalid(format!(
                            "$apply: {method:?} needs a numeric property, and '{property}' is {}",
                            ty.name()
                        )))
                    }
                };
                let (e, out_ty) = match method {
                    AggregateMethod::Sum => {
                        numeric()?;
                        (c.sum(), ty)
                    }
                    AggregateMethod::Average => {
                        numeric()?;
                        (c.mean(), Ty::Float)
                    }
                    AggregateMethod::Min => (c.min(), ty),
                    AggregateMethod::Max => (c.max(), ty),
                    AggregateMethod::CountDistinct => (c.n_unique().cast(DataType::Int64), Ty::Int),
                };
                let e = if out_ty == Ty::Int {
                    e.cast(DataType::Int64)
                } else {
                    e
                };
                exprs.push(e.alias(alias.as_str()));
                produced.push((alias.clone(), out_ty));
            }
        }
    }
    Ok((exprs, produced))
}

fn count(rows: LazyFrame) -> Result<u64> {
    let frame = rows
        .select([len().cast(DataType::UInt64).alias("n")])
        .collect()?;
    Ok(frame.column("n")?.u64()?.get(0).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::Column;

    fn matching(messages: &[&str], term: &str) -> Vec<String> {
        let frame = DataFrame::new(
            messages.len(),
            vec![Column::new("Message".into(), messages)],
        )
        .expect("frame")
        .lazy()
        .filter(
            col("Message")
                .str()
                .contains(lit(case_insensitive_pattern(term)), true),
        )
        .collect()
        .expect("filter");
        frame
            .column("Message")
            .expect("column")
            .str()
            .expect("strings")
            .iter()
            .flatten()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn terms_match_literally_whatever_their_case() {
        let lines = [
            "My card: \"Error 51\"",
            "error 5",
            "a.b (c)",
            "axb (c)",
            "ÉTÉ",
        ];
        assert_eq!(matching(&lines, "error 51"), ["My card: \"Error 51\""]);
        assert_eq!(matching(&lines, "A.B (C)"), ["a.b (c)"]);
        assert_eq!(matching(&lines, "été"), ["ÉTÉ"]);
        assert_eq!(matching(&lines, "[x"), Vec::<String>::new());
    }

    #[test]
    fn related_rows_are_read_from_the_partitions_of_the_chats_on_the_page() {
        let day = |d: u32| {
            chrono::NaiveDate::from_ymd_opt(2024, 8, d)
                .and_then(|d| d.and_hms_opt(10, 0, 0))
                .expect("date")
        };
        let micros = |d: u32| day(d).and_utc().timestamp_micros();
        let page = DataFrame::new(
            2,
            vec![
                Column::new("SiteKey".into(), [3i32, 2]),
                Column::new("Started".into(), [micros(14), micros(2)]),
            ],
        )
        .expect("page");
        let partitions = partitions_of_chats(&page).expect("read").expect("present");
        let allowed = ScanFilter {
            sites: Some(vec![1, 3]),
            ..ScanFilter::default()
        };
        let hint = partitions.within(allowed);
        assert_eq!(
            hint.sites,
            Some(vec![3]),
            "the caller's sites still bound it"
        );
        assert_eq!(hint.started_from, Some(day(2)));
        assert_eq!(
            hint.started_before,
            Some(day(14) + chrono::Duration::microseconds(1))
        );

        // A chat without a start: its rows are in the undated partition, so no time range.
        let undated = DataFrame::new(
            1,
            vec![
                Column::new("SiteKey".into(), [3i32]),
                Column::new("Started".into(), [None::<i64>]),
            ],
        )
        .expect("page");
        let hint = partitions_of_chats(&undated)
            .expect("read")
            .expect("present")
            .within(ScanFilter::default());
        assert_eq!((hint.started_from, hint.started_before), (None, None));
        let selected = DataFrame::new(1, vec![Column::new("ChatUID".into(), ["c"])]).expect("page");
        assert!(partitions_of_chats(&selected).expect("read").is_none());
    }

    #[test]
    fn a_search_becomes_a_formula_over_its_distinct_terms() {
        let search = Search::And(
            Box::new(Search::Term("refund".into())),
            Box::new(Search::Or(
                Box::new(Search::Not(Box::new(Search::Term("invoice".into())))),
                Box::new(Search::Term("refund".into())),
            )),
        );
        assert_eq!(search_terms(&search), ["refund", "invoice"]);
        let flags = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            term_formula(&search, &search_terms(&search), &flags),
            col("a").and(col("b").not().or(col("a")))
        );
    }
}
