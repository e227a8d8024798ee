//! The OData common expression language (what `$filter` and `$apply=filter(…)` carry),
//! parsed into a small AST that remembers where each node came from, so an error can
//! name the offending token and its position.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};

use crate::error::QueryError;

/// Longest expression text accepted: a Power BI incremental-refresh filter is a few
/// hundred bytes; anything near this is hostile or a mistake.
pub const MAX_EXPR_LEN: usize = 16 * 1024;
/// Deepest nesting accepted, so a hostile `((((…` cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Byte offsets into the option's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    DateTime(DateTime<FixedOffset>),
    Date(NaiveDate),
    Time(NaiveTime),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Add,
    Sub,
    Mul,
    Div,
    DivBy,
    Mod,
    Has,
}

impl BinOp {
    fn from_word(word: &str) -> Option<BinOp> {
        Some(match word {
            "eq" => BinOp::Eq,
            "ne" => BinOp::Ne,
            "gt" => BinOp::Gt,
            "ge" => BinOp::Ge,
            "lt" => BinOp::Lt,
            "le" => BinOp::Le,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "add" => BinOp::Add,
            "sub" => BinOp::Sub,
            "mul" => BinOp::Mul,
            "div" => BinOp::Div,
            "divby" => BinOp::DivBy,
            "mod" => BinOp::Mod,
            "has" => BinOp::Has,
            _ => return None,
        })
    }

    /// Left and right binding power, following the OData operator precedence table.
    fn binding_power(self) -> (u8, u8) {
        match self {
            BinOp::Or => (1, 2),
            BinOp::And => (3, 4),
            BinOp::Eq | BinOp::Ne => (5, 6),
            BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le | BinOp::Has => (7, 8),
            BinOp::Add | BinOp::Sub => (9, 10),
            BinOp::Mul | BinOp::Div | BinOp::DivBy | BinOp::Mod => (11, 12),
        }
    }
}

/// `in` shares the relational operators' precedence.
const IN_BINDING_POWER: u8 = 7;
const UNARY_BINDING_POWER: u8 = 13;

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    /// A property of the entity, or the variable of an enclosing lambda.
    Prop(String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    Call(String, Vec<Expr>),
    /// `Collection/any(v: body)` or `Collection/all(v: body)`.
    Lambda {
        collection: String,
        all: bool,
        var: String,
        body: Box<Expr>,
    },
    /// A path through a navigation property (`Chat/SiteKey`), recognised so that it can be
    /// refused clearly.
    Path(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Lit),
    Open,
    Close,
    Comma,
    Slash,
    Colon,
    Minus,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Lit(Lit::Str(s)) => format!("string '{s}'"),
            Tok::Lit(l) => format!("literal {l:?}"),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Slash => "'/'".into(),
            Tok::Colon => "':'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Eof => "the end of the expression".into(),
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    option: &'static str,
}

impl<'a> Lexer<'a> {
    fn error(&self, at: usize, message: impl Into<String>) -> QueryError {
        QueryError::syntax(self.option, at, message)
    }

    fn skip_space(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn next(&mut self) -> Result<(Tok, Span), QueryError> {
        self.skip_space();
        let start = self.pos;
        let Some(&b) = self.bytes.get(self.pos) else {
            return Ok((Tok::Eof, Span { start, end: start }));
        };
        let tok = match b {
            b'(' => self.single(Tok::Open),
            b')' => self.single(Tok::Close),
            b',' => self.single(Tok::Comma),
            b'/' => self.single(Tok::Slash),
            b':' => self.single(Tok::Colon),
            b'\'' => self.string()?,
            b'-' if self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit) => {
                self.pos += 1;
                self.number(start)?
            }
            b'-' => self.single(Tok::Minus),
            b'0'..=b'9' => self.number(start)?,
            b if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => {
                while self
                    .bytes
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
                {
                    self.pos += 1;
                }
                Tok::Ident(self.text[start..self.pos].to_owned())
            }
            _ => {
                let ch = self.text[start..].chars().next().unwrap_or('?');
                return Err(self.error(start, format!("unexpected character '{ch}'")));
            }
        };
        Ok((
            tok,
            Span {
                start,
                end: self.pos,
            },
        ))
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    /// `'…'` with `''` standing for one quote.
    fn string(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(rel) = self.text[self.pos..].find('\'') else {
                return Err(self.error(start, "string literal is not closed with a quote"));
            };
            out.push_str(&self.text[self.pos..self.pos + rel]);
            self.pos += rel + 1;
            if self.bytes.get(self.pos) == Some(&b'\'') {
                out.push('\'');
                self.pos += 1;
            } else {
                return Ok(Tok::Lit(Lit::Str(out)));
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn digits_at(&self, at: usize, n: usize) -> bool {
        self.bytes.len() >= at + n && self.bytes[at..at + n].iter().all(u8::is_ascii_digit)
    }

    /// Numbers, dates (`2024-08-01`), date-times (`2024-08-01T10:00:00Z`) and times of day
    /// (`10:30:00`), told apart by their shape since all start with a digit.
    fn number(&mut self, start: usize) -> Result<Tok, QueryError> {
        let digits_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 4 && self.bytes.get(self.pos) == Some(&b'-') && start == digits_start {
            return self.date_or_datetime(start);
        }
        if int_digits == 2 && self.bytes.get(self.pos) == Some(&b':') && start == digits_start {
            return self.time_of_day(start);
        }
        let mut float = false;
        if self.bytes.get(self.pos) == Some(&b'.') && self.digits_at(self.pos + 1, 1) {
            self.pos += 1;
            self.digits();
            float = true;
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                self.pos = save;
            } else {
                float = true;
            }
        }
        let text = &self.text[start..self.pos];
        if float {
            text.parse::<f64>()
                .map(|f| Tok::Lit(Lit::Float(f)))
                .map_err(|_| self.error(start, format!("'{text}' is not a number")))
        } else {
            text.parse::<i64>()
                .map(|i| Tok::Lit(Lit::Int(i)))
                .map_err(|_| self.error(start, format!("integer '{text}' is out of range")))
        }
    }

    fn date_or_datetime(&mut self, start: usize) -> Result<Tok, QueryError> {
        // yyyy-mm-dd
        if !(self.bytes.get(self.pos) == Some(&b'-')
            && self.digits_at(self.pos + 1, 2)
            && self.bytes.get(self.pos + 3) == Some(&b'-')
            && self.digits_at(self.pos + 4, 2))
        {
            return Err(self.error(start, "malformed date: expected yyyy-mm-dd"));
        }
        self.pos += 6;
        let date_text = &self.text[start..self.pos];
        let date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d")
            .map_err(|e| self.error(start, format!("invalid date '{date_text}': {e}")))?;
        if self.bytes.get(self.pos) != Some(&b'T') {
            return Ok(Tok::Lit(Lit::Date(date)));
        }
        self.pos += 1;
        let time_start = self.pos;
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_digit() || *c == b':' || *c == b'.')
        {
            self.pos += 1;
        }
        let mut time = self.text[time_start..self.pos].to_owned();
        if time.len() == 5 {
            time.push_str(":00");
        }
        // The offset: Z, +hh:mm or -hh:mm; a '+' that arrived as a space (form encoding
        // of an unescaped '+') is accepted too, since clients often forget to escape it.
        let offset = match self.bytes.get(self.pos) {
            Some(b'Z' | b'z') => {
                self.pos += 1;
                "Z".to_owned()
            }
            Some(sign @ (b'+' | b'-' | b' '))
                if self.digits_at(self.pos + 1, 2)
                    && self.bytes.get(self.pos + 3) == Some(&b':')
                    && self.digits_at(self.pos + 4, 2) =>
            {
                let sign = if *sign == b'-' { '-' } else { '+' };
                let text = format!("{sign}{}", &self.text[self.pos + 1..self.pos + 6]);
                self.pos += 6;
                text
            }
            _ => return Err(self.error(
                start,
                "date-time literal needs a time zone: end it with Z or an offset such as +01:00",
            )),
        };
        let full = format!("{date_text}T{time}{offset}");
        DateTime::parse_from_rfc3339(&full)
            .map(|dt| Tok::Lit(Lit::DateTime(dt)))
            .map_err(|e| self.error(start, format!("invalid date-time '{full}': {e}")))
    }

    fn time_of_day(&mut self, start: usize) -> Result<Tok, QueryError> {
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_digit() || *c == b':' || *c == b'.')
        {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
            .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
            .map(|t| Tok::Lit(Lit::Time(t)))
            .map_err(|_| self.error(start, format!("invalid time of day '{text}'")))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Tok, Span)>,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<&(Tok, Span), QueryError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("peeked was just filled"))
    }

    fn bump(&mut self) -> Result<(Tok, Span), QueryError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn expect(&mut self, want: Tok) -> Result<Span, QueryError> {
        let (tok, span) = self.bump()?;
        if tok == want {
            Ok(span)
        } else {
            Err(self.lexer.error(
                span.start,
                format!("expected {} but found {}", want.describe(), tok.describe()),
            ))
        }
    }

    fn expr(&mut self, min_bp: u8, depth: usize) -> Result<Expr, QueryError> {
        if depth > MAX_DEPTH {
            let at = self.peek()?.1.start;
            return Err(self.lexer.error(
                at,
                format!("expression is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let mut lhs = self.prefix(depth)?;
        loop {
            let (tok, span) = self.peek()?.clone();
            let Tok::Ident(word) = tok else { break };
            if word == "in" {
                if IN_BINDING_POWER < min_bp {
                    break;
                }
                self.bump()?;
                self.expect(Tok::Open)?;
                let mut items = Vec::new();
                loop {
                    items.push(self.expr(0, depth + 1)?);
                    match self.bump()? {
                        (Tok::Comma, _) => continue,
                        (Tok::Close, close) => {
                            let span = Span {
                                start: lhs.span.start,
                                end: close.end,
                            };
                            lhs = Expr {
                                kind: ExprKind::In(Box::new(lhs), items),
                                span,
                            };
                            break;
                        }
                        (tok, at) => {
                            return Err(self.lexer.error(
                                at.start,
                                format!(
                                    "expected ',' or ')' in the 'in' list but found {}",
                                    tok.describe()
                                ),
                            ))
                        }
                    }
                }
                continue;
            }
            let Some(op) = BinOp::from_word(&word) else {
                return Err(self.lexer.error(
                    span.start,
                    format!("expected an operator such as 'eq' or 'and' but found '{word}'"),
                ));
            };
            let (lbp, rbp) = op.binding_power();
            if lbp < min_bp {
                break;
            }
            self.bump()?;
            let rhs = self.expr(rbp, depth + 1)?;
            let span = Span {
                start: lhs.span.start,
                end: rhs.span.end,
            };
            lhs = Expr {
                kind: ExprKind::Bin(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        Ok(lhs)
    }

    fn prefix(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let (tok, span) = self.bump()?;
        let node = |kind, end: usize| Expr {
            kind,
            span: Span {
                start: span.start,
                end,
            },
        };
        match tok {
            Tok::Lit(lit) => Ok(node(ExprKind::Lit(lit), span.end)),
            Tok::Open => {
                let inner = self.expr(0, depth + 1)?;
                let close = self.expect(Tok::Close)?;
                Ok(Expr {
                    kind: inner.kind,
                    span: Span {
                        start: span.start,
                        end: close.end,
                    },
                })
            }
            Tok::Minus => {
                let inner = self.expr(UNARY_BINDING_POWER, depth + 1)?;
                let end = inner.span.end;
                Ok(node(ExprKind::Neg(Box::new(inner)), end))
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(node(ExprKind::Lit(Lit::Bool(true)), span.end)),
                "false" => Ok(node(ExprKind::Lit(Lit::Bool(false)), span.end)),
                "null" => Ok(node(ExprKind::Lit(Lit::Null), span.end)),
                "not" => {
                    let inner = self.expr(UNARY_BINDING_POWER, depth + 1)?;
                    let end = inner.span.end;
                    Ok(node(ExprKind::Not(Box::new(inner)), end))
                }
                _ => self.identifier(word, span, depth),
            },
            other => Err(self.lexer.error(
                span.start,
                format!(
                    "expected a property, literal or function but found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn identifier(&mut self, word: String, span: Span, depth: usize) -> Result<Expr, QueryError> {
        match self.peek()?.0 {
            Tok::Open => {
                self.bump()?;
                let mut args = Vec::new();
                if self.peek()?.0 == Tok::Close {
                    let close = self.bump()?.1;
                    return Ok(Expr {
                        kind: ExprKind::Call(word, args),
                        span: Span {
                            start: span.start,
                            end: close.end,
                        },
                    });
                }
                loop {
                    args.push(self.expr(0, depth + 1)?);
                    match self.bump()? {
                        (Tok::Comma, _) => continue,
                        (Tok::Close, close) => {
                            return Ok(Expr {
                                kind: ExprKind::Call(word, args),
                                span: Span {
                                    start: span.start,
                                    end: close.end,
                                },
                            })
                        }
                        (tok, at) => {
                            return Err(self.lexer.error(
                                at.start,
                                format!(
                                    "expected ',' or ')' in the arguments of {word}() but found {}",
                                    tok.describe()
                                ),
                            ))
                        }
                    }
                }
            }
            Tok::Slash => {
                let mut segments = vec![word];
                let mut end = span.end;
                while self.peek()?.0 == Tok::Slash {
                    self.bump()?;
                    let (tok, seg_span) = self.bump()?;
                    let Tok::Ident(segment) = tok else {
                        return Err(self.lexer.error(
                            seg_span.start,
                            format!(
                                "expected a property name after '/' but found {}",
                                tok.describe()
                            ),
                        ));
                    };
                    end = seg_span.end;
                    if (segment == "any" || segment == "all") && self.peek()?.0 == Tok::Open {
                        return self.lambda(segments, segment == "all", span.start, depth);
                    }
                    segments.push(segment);
                }
                Ok(Expr {
                    kind: ExprKind::Path(segments),
                    span: Span {
                        start: span.start,
                        end,
                    },
                })
            }
            _ => Ok(Expr {
                kind: ExprKind::Prop(word),
                span,
            }),
        }
    }

    fn lambda(
        &mut self,
        segments: Vec<String>,
        all: bool,
        start: usize,
        depth: usize,
    ) -> Result<Expr, QueryError> {
        self.expect(Tok::Open)?;
        let (tok, at) = self.bump()?;
        let Tok::Ident(var) = tok else {
            return Err(self.lexer.error(
                at.start,
                format!(
                    "expected a lambda variable name but found {}",
                    tok.describe()
                ),
            ));
        };
        self.expect(Tok::Colon)?;
        let body = self.expr(0, depth + 1)?;
        let close = self.expect(Tok::Close)?;
        let collection = if segments.len() == 1 {
            segments.into_iter().next().unwrap_or_default()
        } else {
            return Err(QueryError::unsupported(format!(
                "lambda over the path '{}': only a collection property of the entity itself can be used with any/all",
                segments.join("/")
            )));
        };
        Ok(Expr {
            kind: ExprKind::Lambda {
                collection,
                all,
                var,
                body: Box::new(body),
            },
            span: Span {
                start,
                end: close.end,
            },
        })
    }
}

/// Parses one boolean-or-value expression; `option` names the query option for errors.
pub fn parse_expr(text: &str, option: &'static str) -> Result<Expr, QueryError> {
    if text.len() > MAX_EXPR_LEN {
        return Err(QueryError::TooLarge(format!(
            "{option} is {} bytes long; the limit is {MAX_EXPR_LEN}",
            text.len()
        )));
    }
    let mut parser = Parser {
        lexer: Lexer {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            option,
        },
        peeked: None,
    };
    let expr = parser.expr(0, 0)?;
    let (tok, span) = parser.bump()?;
    if tok != Tok::Eof {
        return Err(parser.lexer.error(
            span.start,
            format!("unexpected {} after a complete expression", tok.describe()),
        ));
    }
    Ok(expr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Expr {
        parse_expr(text, "$filter").expect("parses")
    }

    fn shape(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Lit(l) => format!("{l:?}"),
            ExprKind::Prop(p) => p.clone(),
            ExprKind::Not(x) => format!("not({})", shape(x)),
            ExprKind::Neg(x) => format!("-({})", shape(x)),
            ExprKind::Bin(op, a, b) => format!("{op:?}({},{})", shape(a), shape(b)),
            ExprKind::In(a, items) => format!(
                "in({};{})",
                shape(a),
                items.iter().map(shape).collect::<Vec<_>>().join(",")
            ),
            ExprKind::Call(f, args) => format!(
                "{f}({})",
                args.iter().map(shape).collect::<Vec<_>>().join(",")
            ),
            ExprKind::Lambda {
                collection,
                all,
                var,
                body,
            } => {
                format!(
                    "{collection}/{}({var}:{})",
                    if *all { "all" } else { "any" },
                    shape(body)
                )
            }
            ExprKind::Path(p) => p.join("/"),
        }
    }

    #[test]
    fn precedence_follows_the_odata_table() {
        assert_eq!(
            shape(&parse("A eq 1 or B eq 2 and C eq 3")),
            "Or(Eq(A,Int(1)),And(Eq(B,Int(2)),Eq(C,Int(3))))"
        );
        assert_eq!(
            shape(&parse("A add 2 mul 3 gt 7")),
            "Gt(Add(A,Mul(Int(2),Int(3))),Int(7))"
        );
        assert_eq!(shape(&parse("not (A eq 1)")), "not(Eq(A,Int(1)))");
        assert_eq!(
            shape(&parse("not contains(Name,'x') and -A lt -3")),
            "And(not(contains(Name,Str(\"x\"))),Lt(-(A),Int(-3)))"
        );
        assert_eq!(
            shape(&parse("SiteKey in (1, 2,3) and Tags/any(t: t eq 'vip')")),
            "And(in(SiteKey;Int(1),Int(2),Int(3)),Tags/any(t:Eq(t,Str(\"vip\"))))"
        );
    }

    #[test]
    fn literals_are_told_apart_by_shape() {
        let lit = |t: &str| match parse(t).kind {
            ExprKind::Lit(l) => l,
            other => panic!("{other:?}"),
        };
        assert_eq!(lit("'it''s'"), Lit::Str("it's".into()));
        assert_eq!(
            lit("2024-08-01"),
            Lit::Date(NaiveDate::from_ymd_opt(2024, 8, 1).expect("date"))
        );
        assert_eq!(lit("1.5e3"), Lit::Float(1500.0));
        assert_eq!(lit("-42"), Lit::Int(-42));
        assert!(matches!(lit("2024-08-01T10:00:00Z"), Lit::DateTime(_)));
        assert!(matches!(lit("2024-08-01T10:00Z"), Lit::DateTime(_)));
        assert!(matches!(
            lit("2024-08-01T10:00:00.123+01:00"),
            Lit::DateTime(_)
        ));
        // An unescaped '+' arrives as a space after form decoding.
        match lit("2024-08-01T10:00:00 01:00") {
            Lit::DateTime(dt) => assert_eq!(dt.offset().local_minus_utc(), 3600),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            lit("10:30:00"),
            Lit::Time(NaiveTime::from_hms_opt(10, 30, 0).expect("time"))
        );
    }

    #[test]
    fn errors_name_the_token_and_position() {
        let err = parse_expr("SiteKey eq 3 andd Started gt 1", "$filter").expect_err("fails");
        let text = err.to_string();
        assert!(
            text.contains("'andd'") && text.contains("position 14"),
            "{text}"
        );
        let err = parse_expr("Name eq 'open", "$filter").expect_err("fails");
        assert!(err.to_string().contains("position 9"), "{err}");
        let err = parse_expr("Started gt 2024-08-01T10:00:00", "$filter").expect_err("fails");
        assert!(err.to_string().contains("time zone"), "{err}");
        let err = parse_expr("(A eq 1", "$filter").expect_err("fails");
        assert!(err.to_string().contains("expected ')'"), "{err}");
    }

    #[test]
    fn hostile_input_is_refused_not_crashed_on() {
        let deep = format!("{}A eq 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(
            parse_expr(&deep, "$filter"),
            Err(QueryError::TooLarge(_))
        ));
        let deep = format!("{}A eq 1{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_expr(&deep, "$filter")
            .expect_err("too deep")
            .to_string()
            .contains("nested"));
        let nots = format!("{}true", "not ".repeat(1000));
        assert!(parse_expr(&nots, "$filter").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the input, the parser answers (Ok or a positioned error) without panicking.
        #[test]
        fn never_panics(text in "[ -~]{0,80}") {
            let _ = parse_expr(&text, "$filter");
        }

        /// Printing an integer comparison and parsing it back gives the same tree.
        #[test]
        fn comparisons_round_trip(name in "[A-Z][a-zA-Z]{0,8}", n in any::<i64>(), op in 0usize..6) {
            let words = ["eq", "ne", "gt", "ge", "lt", "le"];
            let text = format!("{name} {} {n}", words[op]);
            let parsed = parse(&text);
            match parsed.kind {
                ExprKind::Bin(_, a, b) => {
                    prop_assert_eq!(a.kind, ExprKind::Prop(name));
                    prop_assert_eq!(b.kind, ExprKind::Lit(Lit::Int(n)));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
