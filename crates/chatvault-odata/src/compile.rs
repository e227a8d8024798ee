//! Typing and translation of a parsed expression into a polars expression that the
//! Parquet scan can evaluate (and push down), plus the partition hints it implies.

use chatvault_model::{ColumnKind, TableDef};
use chatvault_store::ScanFilter;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use chrono_tz::Tz;
use polars::prelude::{
    col, concat_str, element, lit, DataType, Expr as P, NamedFrom, Series, TimeUnit, NULL,
};

use crate::error::{QueryError, Result};
use crate::syntax::{BinOp, Expr, ExprKind, Lit};

/// The type of a compiled expression, as far as OData semantics need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Float,
    Bool,
    DateTime,
    Date,
    /// Microseconds since midnight, from `time(…)` and time-of-day literals.
    TimeOfDay,
    StrList,
    Null,
}

impl Ty {
    pub fn of(kind: ColumnKind) -> Ty {
        match kind {
            ColumnKind::Str => Ty::Str,
            ColumnKind::I32 | ColumnKind::I64 => Ty::Int,
            ColumnKind::Bool => Ty::Bool,
            ColumnKind::F64 => Ty::Float,
            ColumnKind::Timestamp => Ty::DateTime,
            ColumnKind::StrList => Ty::StrList,
        }
    }

    pub fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }

    pub fn name(self) -> &'static str {
        match self {
            Ty::Str => "Edm.String",
            Ty::Int => "an integer",
            Ty::Float => "Edm.Double",
            Ty::Bool => "Edm.Boolean",
            Ty::DateTime => "Edm.DateTimeOffset",
            Ty::Date => "Edm.Date",
            Ty::TimeOfDay => "Edm.TimeOfDay",
            Ty::StrList => "Collection(Edm.String)",
            Ty::Null => "null",
        }
    }
}

pub const TIMESTAMP: DataType = DataType::Datetime(TimeUnit::Microseconds, None);

/// What an expression is compiled against: the properties in scope (an entity set's
/// columns, or the output of an `$apply` step) and how to read time literals.
#[derive(Clone)]
pub struct Env {
    pub props: Vec<(String, Ty)>,
    /// What the properties belong to, for messages.
    pub owner: String,
    /// Stored timestamps are the site's wall-clock time in this zone.
    pub tz: Tz,
    /// `now()`, fixed once per request so every page agrees.
    pub now: NaiveDateTime,
    pub option: &'static str,
}

/// The site-local wall-clock time of an instant.
pub fn to_site_time(tz: Tz, instant: &DateTime<FixedOffset>) -> NaiveDateTime {
    instant.with_timezone(&tz).naive_local()
}

pub fn timestamp_lit(t: NaiveDateTime) -> P {
    lit(t.and_utc().timestamp_micros()).cast(TIMESTAMP)
}

fn date_lit(d: NaiveDate) -> P {
    let days = d.signed_duration_since(NaiveDate::default()).num_days() as i32;
    lit(days).cast(DataType::Date)
}

fn time_micros(t: NaiveTime) -> i64 {
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

struct Lambda<'a> {
    var: &'a str,
}

impl Env {
    pub fn for_table(table: &TableDef, tz: Tz, now: NaiveDateTime, option: &'static str) -> Env {
        Env {
            props: table
                .columns
                .iter()
                .map(|c| (c.name.to_owned(), Ty::of(c.kind)))
                .collect(),
            owner: table.name.to_owned(),
            tz,
            now,
            option,
        }
    }

    pub fn prop(&self, name: &str) -> Option<Ty> {
        self.props.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    fn err(&self, e: &Expr, message: impl Into<String>) -> QueryError {
        QueryError::syntax(self.option, e.span.start, message)
    }

    /// A boolean expression (what `$filter` must be).
    pub fn predicate(&self, e: &Expr) -> Result<P> {
        let (p, ty) = self.compile(e, None)?;
        match ty {
            Ty::Bool => Ok(p),
            Ty::Null => Ok(lit(false)),
            other => Err(self.err(
                e,
                format!("expected a boolean expression but this is {}", other.name()),
            )),
        }
    }

    /// Any expression with its type (what `$apply` aggregates and `$orderby` keys use).
    pub fn value(&self, e: &Expr) -> Result<(P, Ty)> {
        self.compile(e, None)
    }

    fn compile(&self, e: &Expr, lambda: Option<&Lambda<'_>>) -> Result<(P, Ty)> {
        match &e.kind {
            ExprKind::Lit(l) => Ok(self.literal(l)),
            ExprKind::Prop(name) => {
                if let Some(l) = lambda {
                    if l.var == name {
                        return Ok((element(), Ty::Str));
                    }
                }
                let ty = self.prop(name).ok_or_else(|| {
                    self.err(e, format!("'{name}' is not a property of {}", self.owner))
                })?;
                Ok((col(name.as_str()), ty))
            }
            ExprKind::Path(segments) => Err(QueryError::unsupported(format!(
                "the path '{}' in {}: filter on the entity's own properties, or query the related entity set",
                segments.join("/"),
                self.option
            ))),
            ExprKind::Not(inner) => {
                let (p, ty) = self.compile(inner, lambda)?;
                if !matches!(ty, Ty::Bool | Ty::Null) {
                    return Err(self.err(inner, format!("'not' needs a boolean but this is {}", ty.name())));
                }
                Ok((p.not(), Ty::Bool))
            }
            ExprKind::Neg(inner) => {
                let (p, ty) = self.compile(inner, lambda)?;
                if !ty.numeric() {
                    return Err(self.err(inner, format!("'-' needs a number but this is {}", ty.name())));
                }
                Ok((lit(0) - p, ty))
            }
            ExprKind::Bin(op, a, b) => self.binary(e, *op, a, b, lambda),
            ExprKind::In(a, items) => {
                let (p, ty) = self.compile(a, lambda)?;
                let values = self.in_list(ty, items)?;
                Ok((p.is_in(lit(values).implode(true), false), Ty::Bool))
            }
            ExprKind::Call(name, args) => self.call(e, name, args, lambda),
            ExprKind::Lambda { collection, all, var, body } => {
                let ty = self.prop(collection).ok_or_else(|| {
                    self.err(e, format!("'{collection}' is not a property of {}", self.owner))
                })?;
                if ty != Ty::StrList {
                    return Err(self.err(e, format!("'{collection}' is not a collection, so any/all do not apply")));
                }
                let (body, ty) = self.compile(body, Some(&Lambda { var }))?;
                if ty != Ty::Bool {
                    return Err(self.err(e, "the body of any/all must be a boolean expression"));
                }
                let per_item = col(collection.as_str()).list().eval(body);
                // max of booleans is "any", min is "all"; an empty list has neither.
                let out = if *all {
                    per_item.list().min().fill_null(lit(true))
                } else {
                    per_item.list().max().fill_null(lit(false))
                };
                Ok((out, Ty::Bool))
            }
        }
    }

    /// The literals of an `in` list as one typed series, so a long list stays one
    /// membership test rather than a deep chain of comparisons.
    fn in_list(&self, ty: Ty, items: &[Expr]) -> Result<Series> {
        let mut ints = Vec::new();
        let mut floats = Vec::new();
        let mut strings = Vec::new();
        let mut times = Vec::new();
        for item in items {
            let wrong = || {
                self.err(
                    item,
                    format!("the 'in' list must hold {} literals", ty.name()),
                )
            };
            let ExprKind::Lit(l) = &item.kind else {
                return Err(self.err(item, "the 'in' list may only hold literals"));
            };
            match (ty, l) {
                (Ty::Int, Lit::Int(i)) => ints.push(*i),
                (Ty::Float, Lit::Int(i)) => floats.push(*i as f64),
                (Ty::Float, Lit::Float(f)) => floats.push(*f),
                (Ty::Str, Lit::Str(s)) => strings.push(s.clone()),
                (Ty::DateTime, Lit::DateTime(dt)) => {
                    times.push(to_site_time(self.tz, dt).and_utc().timestamp_micros());
                }
                _ => return Err(wrong()),
            }
        }
        let name = "in".into();
        Ok(match ty {
            Ty::Int => Series::new(name, ints),
            Ty::Float => Series::new(name, floats),
            Ty::Str => Series::new(name, strings),
            Ty::DateTime => Series::new(name, times).cast(&TIMESTAMP)?,
            other => {
                return Err(QueryError::unsupported(format!(
                    "'in' over {} values",
                    other.name()
                )))
            }
        })
    }

    fn literal(&self, l: &Lit) -> (P, Ty) {
        match l {
            Lit::Null => (lit(NULL), Ty::Null),
            Lit::Bool(b) => (lit(*b), Ty::Bool),
            Lit::Int(i) => (lit(*i), Ty::Int),
            Lit::Float(f) => (lit(*f), Ty::Float),
            Lit::Str(s) => (lit(s.as_str()), Ty::Str),
            Lit::DateTime(dt) => (timestamp_lit(to_site_time(self.tz, dt)), Ty::DateTime),
            Lit::Date(d) => (date_lit(*d), Ty::Date),
            Lit::Time(t) => (lit(time_micros(*t)), Ty::TimeOfDay),
        }
    }

    fn comparable(&self, at: &Expr, a: Ty, b: Ty) -> Result<()> {
        let ok = a == b
            || a == Ty::Null
            || b == Ty::Null
            || (a.numeric() && b.numeric())
            || matches!((a, b), (Ty::DateTime, Ty::Date) | (Ty::Date, Ty::DateTime));
        if ok {
            Ok(())
        } else {
            Err(self.err(at, format!("cannot compare {} with {}", a.name(), b.name())))
        }
    }

    fn binary(
        &self,
        e: &Expr,
        op: BinOp,
        a: &Expr,
        b: &Expr,
        lambda: Option<&Lambda<'_>>,
    ) -> Result<(P, Ty)> {
        if op == BinOp::Has {
            return Err(QueryError::unsupported(
                "'has' tests enumeration flags, and this model has no enumeration-typed properties",
            ));
        }
        let (pa, ta) = self.compile(a, lambda)?;
        let (pb, tb) = self.compile(b, lambda)?;
        match op {
            BinOp::And | BinOp::Or => {
                for (side, ty) in [(a, ta), (b, tb)] {
                    if !matches!(ty, Ty::Bool | Ty::Null) {
                        return Err(self.err(
                            side,
                            format!(
                                "'{}' needs booleans but this is {}",
                                if op == BinOp::And { "and" } else { "or" },
                                ty.name()
                            ),
                        ));
                    }
                }
                Ok((
                    if op == BinOp::And {
                        pa.and(pb)
                    } else {
                        pa.or(pb)
                    },
                    Ty::Bool,
                ))
            }
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => {
                self.comparable(e, ta, tb)?;
                // Comparing with null: only eq/ne can be true (OData: null eq null is true).
                if ta == Ty::Null || tb == Ty::Null {
                    let other = if ta == Ty::Null { pb } else { pa };
                    return Ok((
                        match op {
                            BinOp::Eq => other.is_null(),
                            BinOp::Ne => other.is_not_null(),
                            _ => lit(false),
                        },
                        Ty::Bool,
                    ));
                }
                let (pa, pb) = (coerce(pa, ta, tb), coerce(pb, tb, ta));
                let out = match op {
                    BinOp::Eq => pa.eq_missing(pb),
                    BinOp::Ne => pa.neq_missing(pb),
                    BinOp::Gt => pa.gt(pb),
                    BinOp::Ge => pa.gt_eq(pb),
                    BinOp::Lt => pa.lt(pb),
                    _ => pa.lt_eq(pb),
                };
                Ok((out, Ty::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::DivBy | BinOp::Mod => {
                for (side, ty) in [(a, ta), (b, tb)] {
                    if !ty.numeric() {
                        return Err(if matches!(ty, Ty::DateTime | Ty::Date) {
                            QueryError::unsupported("date arithmetic (durations) in expressions")
                        } else {
                            self.err(
                                side,
                                format!("arithmetic needs numbers but this is {}", ty.name()),
                            )
                        });
                    }
                }
                let both_int = ta == Ty::Int && tb == Ty::Int;
                let ty = if both_int && op != BinOp::DivBy {
                    Ty::Int
                } else {
                    Ty::Float
                };
                let out = match op {
                    BinOp::Add => pa + pb,
                    BinOp::Sub => pa - pb,
                    BinOp::Mul => pa * pb,
                    // Integer division truncates towards zero, as OData defines it.
                    BinOp::Div if both_int => (pa.cast(DataType::Float64)
                        / pb.cast(DataType::Float64))
                    .cast(DataType::Int64),
                    BinOp::Div | BinOp::DivBy => {
                        pa.cast(DataType::Float64) / pb.cast(DataType::Float64)
                    }
                    _ => pa % pb,
                };
                Ok((out, ty))
            }
            BinOp::Has => unreachable!("refused above"),
        }
    }

    fn call(
        &self,
        e: &Expr,
        name: &str,
        args: &[Expr],
        lambda: Option<&Lambda<'_>>,
    ) -> Result<(P, Ty)> {
        let arity = |n: std::ops::RangeInclusive<usize>| -> Result<()> {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err(self.err(
                    e,
                    format!(
                        "{name}() takes {} argument(s), not {}",
                        if n.start() == n.end() {
                            n.start().to_string()
                        } else {
                            format!("{} to {}", n.start(), n.end())
                        },
                        args.len()
                    ),
                ))
            }
        };
        let typed = |i: usize, want: &[Ty]| -> Result<P> {
            let (p, ty) = self.compile(&args[i], lambda)?;
            if want.contains(&ty) || ty == Ty::Null {
                Ok(p)
            } else {
                Err(self.err(
                    &args[i],
                    format!(
                        "argument {} of {name}() must be {} but is {}",
                        i + 1,
                        want[0].name(),
                        ty.name()
                    ),
                ))
            }
        };
        const TEMPORAL: &[Ty] = &[Ty::DateTime, Ty::Date];
        let int = |p: P| p.cast(DataType::Int64);
        match name {
            "contains" | "startswith" | "endswith" => {
                arity(2..=2)?;
                let (s, sub) = (typed(0, &[Ty::Str])?, typed(1, &[Ty::Str])?);
                let s = s.str();
                Ok((
                    match name {
                        "contains" => s.contains_literal(sub),
                        "startswith" => s.starts_with(sub),
                        _ => s.ends_with(sub),
                    },
                    Ty::Bool,
                ))
            }
            "length" => {
                arity(1..=1)?;
                Ok((int(typed(0, &[Ty::Str])?.str().len_chars()), Ty::Int))
            }
            "indexof" => {
                arity(2..=2)?;
                let (s, sub) = (typed(0, &[Ty::Str])?, typed(1, &[Ty::Str])?);
                // polars answers a byte offset; OData wants -1 when absent.
                Ok((
                    int(s.str().find_literal(sub)).fill_null(lit(-1i64)),
                    Ty::Int,
                ))
            }
            "substring" => {
                arity(2..=3)?;
                let s = typed(0, &[Ty::Str])?;
                let start = typed(1, &[Ty::Int])?;
                let len = if args.len() == 3 {
                    typed(2, &[Ty::Int])?
                } else {
                    lit(NULL)
                };
                Ok((s.str().slice(start, len), Ty::Str))
            }
            "tolower" | "toupper" | "trim" => {
                arity(1..=1)?;
                let s = typed(0, &[Ty::Str])?.str();
                Ok((
                    match name {
                        "tolower" => s.to_lowercase(),
                        "toupper" => s.to_uppercase(),
                        _ => s.strip_chars(lit(NULL)),
                    },
                    Ty::Str,
                ))
            }
            "concat" => {
                arity(2..=2)?;
                let (a, b) = (typed(0, &[Ty::Str])?, typed(1, &[Ty::Str])?);
                Ok((concat_str([a, b], "", false), Ty::Str))
            }
            "year" | "month" | "day" => {
                arity(1..=1)?;
                let d = typed(0, TEMPORAL)?.dt();
                Ok((
                    int(match name {
                        "year" => d.year(),
                        "month" => d.month(),
                        _ => d.day(),
                    }),
                    Ty::Int,
                ))
            }
            "hour" | "minute" | "second" => {
                arity(1..=1)?;
                let d = typed(0, &[Ty::DateTime])?.dt();
                Ok((
                    int(match name {
                        "hour" => d.hour(),
                        "minute" => d.minute(),
                        _ => d.second(),
                    }),
                    Ty::Int,
                ))
            }
            "fractionalseconds" => {
                arity(1..=1)?;
                let d = typed(0, &[Ty::DateTime])?.dt();
                Ok((
                    d.microsecond().cast(DataType::Float64) / lit(1_000_000.0),
                    Ty::Float,
                ))
            }
            "date" => {
                arity(1..=1)?;
                Ok((typed(0, TEMPORAL)?.dt().date(), Ty::Date))
            }
            "time" => {
                arity(1..=1)?;
                let t = typed(0, &[Ty::DateTime])?;
                let micros = int(t.clone().dt().hour()) * lit(3_600_000_000i64)
                    + int(t.clone().dt().minute()) * lit(60_000_000i64)
                    + int(t.clone().dt().second()) * lit(1_000_000i64)
                    + int(t.dt().microsecond());
                Ok((micros, Ty::TimeOfDay))
            }
            "now" => {
                arity(0..=0)?;
                Ok((timestamp_lit(self.now), Ty::DateTime))
            }
            "round" | "floor" | "ceiling" => {
                arity(1..=1)?;
                let (p, ty) = self.compile(&args[0], lambda)?;
                if !ty.numeric() {
                    return Err(self.err(
                        &args[0],
                        format!("{name}() needs a number but this is {}", ty.name()),
                    ));
                }
                if ty == Ty::Int {
                    return Ok((p, Ty::Int));
                }
                Ok((
                    match name {
                        "round" => p.round(0, Default::default()),
                        "floor" => p.floor(),
                        _ => p.ceil(),
                    },
                    Ty::Float,
                ))
            }
            "cast" | "isof" | "geo.distance" | "geo.intersects" | "geo.length"
            | "matchesPattern" | "totaloffsetminutes" | "totalseconds" | "maxdatetime"
            | "mindatetime" => Err(QueryError::unsupported(format!(
                "the function {name}() in {}",
                self.option
            ))),
            _ => Err(self.err(e, format!("unknown function '{name}'"))),
        }
    }
}

/// Brings a date operand to a timestamp when the other side is one, so `Started ge
/// 2024-08-01` means midnight site time.
fn coerce(p: P, ty: Ty, other: Ty) -> P {
    match (ty, other) {
        (Ty::Date, Ty::DateTime) => p.cast(TIMESTAMP),
        _ => p,
    }
}

/// Which partitions a predicate can possibly match: the SiteKey and Started bounds of its
/// top-level conjuncts. Never narrower than the predicate itself.
pub fn scan_hint(e: &Expr, tz: Tz, has_started: bool, hint: &mut ScanFilter) {
    let ExprKind::Bin(op, a, b) = &e.kind else {
        if let ExprKind::In(a, items) = &e.kind {
            if matches!(&a.kind, ExprKind::Prop(p) if p == "SiteKey") {
                let sites: Option<Vec<i32>> = items
                    .iter()
                    .map(|i| match i.kind {
                        ExprKind::Lit(Lit::Int(n)) => i32::try_from(n).ok(),
                        _ => None,
                    })
                    .collect();
                if let Some(sites) = sites {
                    narrow_sites(hint, sites);
                }
            }
        }
        return;
    };
    if *op == BinOp::And {
        scan_hint(a, tz, has_started, hint);
        scan_hint(b, tz, has_started, hint);
        return;
    }
    // Normalise to `Property op literal`.
    let (prop, op, literal) = match (&a.kind, &b.kind) {
        (ExprKind::Prop(p), ExprKind::Lit(l)) => (p, *op, l),
        (ExprKind::Lit(l), ExprKind::Prop(p)) => (p, flip(*op), l),
        _ => return,
    };
    match (prop.as_str(), op, literal) {
        ("SiteKey", BinOp::Eq, Lit::Int(n)) => {
            if let Ok(n) = i32::try_from(*n) {
                narrow_sites(hint, vec![n]);
            }
        }
        ("Started", _, l) if has_started => {
            let bound = match l {
                Lit::DateTime(dt) => to_site_time(tz, dt),
                Lit::Date(d) => d.and_time(NaiveTime::MIN),
                _ => return,
            };
            match op {
                BinOp::Ge | BinOp::Gt => {
                    hint.started_from = Some(hint.started_from.map_or(bound, |f| f.max(bound)));
                }
                BinOp::Lt | BinOp::Le => {
                    let bound = if op == BinOp::Le {
                        bound + chrono::Duration::microseconds(1)
                    } else {
                        bound
                    };
                    hint.started_before = Some(hint.started_before.map_or(bound, |b| b.min(bound)));
                }
                BinOp::Eq => {
                    hint.started_from = Some(bound);
                    hint.started_before = Some(bound + chrono::Duration::microseconds(1));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fn narrow_sites(hint: &mut ScanFilter, sites: Vec<i32>) {
    hint.sites = Some(match hint.sites.take() {
        Some(existing) => existing.into_iter().filter(|s| sites.contains(s)).collect(),
        None => sites,
    });
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        other => other,
    }
}
