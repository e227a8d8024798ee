//! OData JSON for result rows: values written straight from polars columns (no per-cell
//! dynamic values), timestamps as Edm.DateTimeOffset in the site's zone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use polars::prelude::*;

use crate::error::Result;

/// How much control information a response carries (`odata.metadata=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metadata {
    None,
    #[default]
    Minimal,
    Full,
}

#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub metadata: Metadata,
    /// `IEEE754Compatible=true`: Int64 values as strings, so JavaScript clients keep them exact.
    pub ieee754: bool,
    pub tz: Tz,
}

/// A JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The site zone's offset from UTC, in seconds, at a wall-clock time.
fn offset_secs(tz: Tz, local: NaiveDateTime) -> i32 {
    if tz == Tz::UTC {
        return 0;
    }
    // A wall-clock time skipped by a DST change has no offset of its own; the offset in
    // force just before the change is the honest reading of what the server wrote.
    tz.offset_from_local_datetime(&local)
        .earliest()
        .map(|o| o.fix())
        .unwrap_or_else(|| tz.offset_from_utc_datetime(&local).fix())
        .local_minus_utc()
}

fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// How a timestamp is spelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// The feed's Edm.DateTimeOffset: fractions only when there are any, `Z` for UTC
    /// (`2024-08-01T10:00:00Z`, `…T10:00:00.000500+01:00`).
    Feed,
    /// Exports: always six fractional digits and a numeric offset, so every value of a
    /// column has the same width (`2024-08-01T10:00:00.000000+00:00`).
    Export,
}

/// Writes a site wall-clock time with the site zone's offset at that instant, without
/// quotes. Written digit by digit: a page holds several per row, and going through a
/// format string dominated the time to write one.
pub fn write_datetime(out: &mut Vec<u8>, tz: Tz, local: NaiveDateTime, style: TimeStyle) {
    use chrono::{Datelike, Timelike};
    let year = local.year();
    if !(0..=9999).contains(&year) {
        // Outside what four digits hold: the general (slow) formatter says it right.
        let text = local.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        out.extend_from_slice(text.as_bytes());
    } else {
        push_digits(out, year as u32, 4);
        out.push(b'-');
        push_digits(out, local.month(), 2);
        out.push(b'-');
        push_digits(out, local.day(), 2);
        out.push(b'T');
        push_digits(out, local.hour(), 2);
        out.push(b':');
        push_digits(out, local.minute(), 2);
        out.push(b':');
        push_digits(out, local.second(), 2);
        let micros = local.nanosecond() / 1000;
        if micros != 0 || style == TimeStyle::Export {
            out.push(b'.');
            push_digits(out, micros.min(999_999), 6);
        }
    }
    let offset = offset_secs(tz, local);
    if offset == 0 && style == TimeStyle::Feed {
        out.push(b'Z');
    } else {
        out.push(if offset < 0 { b'-' } else { b'+' });
        let minutes = offset.unsigned_abs() / 60;
        push_digits(out, minutes / 60, 2);
        out.push(b':');
        push_digits(out, minutes % 60, 2);
    }
}

/// An Edm.DateTimeOffset for a site wall-clock time, as text.
pub fn datetime_text(tz: Tz, local: NaiveDateTime) -> String {
    let mut out = Vec::with_capacity(32);
    write_datetime(&mut out, tz, local, TimeStyle::Feed);
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn micros_to_local(micros: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

/// A column's one Arrow array: reading cells from it directly, rather than through
/// `ChunkedArray::get` (which locates the chunk for every cell), was a tenth of the time
/// to write a page.
type Cells<'a, T> = &'a <T as PolarsDataType>::Array;

fn only_chunk<T: PolarsDataType>(column: &ChunkedArray<T>) -> Result<Cells<'_, T>> {
    match (column.chunks().len(), column.downcast_get(0)) {
        (1, Some(array)) => Ok(array),
        (chunks, _) => Err(crate::error::QueryError::Invalid(format!(
            "column {} is in {chunks} chunks; a page is rechunked before it is written",
            column.name()
        ))),
    }
}

/// One column, downcast once, written row by row.
pub enum ColumnWriter<'a> {
    Str(Cells<'a, StringType>),
    I32(Cells<'a, Int32Type>),
    I64(Cells<'a, Int64Type>),
    U32(Cells<'a, UInt32Type>),
    U64(Cells<'a, UInt64Type>),
    F64(Cells<'a, Float64Type>),
    Bool(Cells<'a, BooleanType>),
    Timestamp(Cells<'a, Int64Type>),
    Date(Cells<'a, Int32Type>),
    StrList(&'a ListChunked),
}

impl<'a> ColumnWriter<'a> {
    /// `series` must be a single chunk (see `DataFrame::rechunk`).
    pub fn new(series: &'a Series) -> Result<ColumnWriter<'a>> {
        Ok(match series.dtype() {
            DataType::String => ColumnWriter::Str(only_chunk(series.str()?)?),
            DataType::Int32 => ColumnWriter::I32(only_chunk(series.i32()?)?),
            DataType::Int64 => ColumnWriter::I64(only_chunk(series.i64()?)?),
            DataType::UInt32 => ColumnWriter::U32(only_chunk(series.u32()?)?),
            DataType::UInt64 => ColumnWriter::U64(only_chunk(series.u64()?)?),
            DataType::Float64 => ColumnWriter::F64(only_chunk(series.f64()?)?),
            DataType::Boolean => ColumnWriter::Bool(only_chunk(series.bool()?)?),
            DataType::Datetime(TimeUnit::Microseconds, _) => {
                ColumnWriter::Timestamp(only_chunk(series.datetime()?.physical())?)
            }
            DataType::Date => ColumnWriter::Date(only_chunk(series.date()?.physical())?),
            DataType::List(inner) if **inner == DataType::String => {
                ColumnWriter::StrList(series.list()?)
            }
            other => {
                return Err(crate::error::QueryError::Invalid(format!(
                    "column {} has the type {other}, which the feed cannot write",
                    series.name()
                )))
            }
        })
    }

    /// Whether the value is an Int64 (written as a string under IEEE754Compatible).
    pub fn is_int64(&self) -> bool {
        matches!(self, ColumnWriter::I64(_) | ColumnWriter::U64(_))
    }

    pub fn is_timestamp(&self) -> bool {
        matches!(self, ColumnWriter::Timestamp(_))
    }

    pub fn write(&self, row: usize, out: &mut Vec<u8>, format: &Format) {
        fn int(out: &mut Vec<u8>, v: impl itoa::Integer, quoted: bool) {
            let mut buf = itoa::Buffer::new();
            let text = buf.format(v).as_bytes();
            if quoted {
                out.push(b'"');
                out.extend_from_slice(text);
                out.push(b'"');
            } else {
                out.extend_from_slice(text);
            }
        }
        match self {
            ColumnWriter::Str(c) => match c.get(row) {
                Some(s) => write_str(out, s),
                None => out.extend_from_slice(b"null"),
            },
            ColumnWriter::I32(c) => opt(out, c.get(row), |out, v| int(out, v, false)),
            ColumnWriter::U32(c) => opt(out, c.get(row), |out, v| int(out, v, false)),
            ColumnWriter::I64(c) => opt(out, c.get(row), |out, v| int(out, v, format.ieee754)),
            ColumnWriter::U64(c) => opt(out, c.get(row), |out, v| int(out, v, format.ieee754)),
            ColumnWriter::F64(c) => opt(out, c.get(row), |out, v| {
                if v.is_nan() {
                    out.extend_from_slice(b"\"NaN\"");
                } else if v.is_infinite() {
                    out.extend_from_slice(if v > 0.0 { b"\"INF\"" } else { b"\"-INF\"" });
                } else {
                    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes())
                }
            }),
            ColumnWriter::Bool(c) => opt(out, c.get(row), |out, v| {
                out.extend_from_slice(if v { b"true" } else { b"false" })
            }),
            ColumnWriter::Timestamp(c) => {
                opt(out, c.get(row).and_then(micros_to_local), |out, v| {
                    out.push(b'"');
                    write_datetime(out, format.tz, v, TimeStyle::Feed);
                    out.push(b'"');
                })
            }
            ColumnWriter::Date(c) => opt(
                out,
                c.get(row).and_then(|d| {
                    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(d)))
                }),
                |out, v| write_str(out, &v.format("%Y-%m-%d").to_string()),
            ),
            ColumnWriter::StrList(c) => match c.get_as_series(row) {
                Some(items) => {
                    out.push(b'[');
                    if let Ok(items) = items.str() {
                        for (i, item) in (0..items.len()).map(|i| items.get(i)).enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            match item {
                                Some(s) => write_str(out, s),
                                None => out.extend_from_slice(b"null"),
                            }
                        }
                    }
                    out.push(b']');
                }
                None => out.extend_from_slice(b"[]"),
            },
        }
    }

    /// The value as it appears in a key predicate or `$value` (no JSON quoting).
    pub fn raw_text(&self, row: usize, format: &Format) -> Option<String> {
        Some(match self {
            ColumnWriter::Str(c) => c.get(row)?.to_owned(),
            ColumnWriter::I32(c) => c.get(row)?.to_string(),
            ColumnWriter::U32(c) => c.get(row)?.to_string(),
            ColumnWriter::I64(c) => c.get(row)?.to_string(),
            ColumnWriter::U64(c) => c.get(row)?.to_string(),
            ColumnWriter::F64(c) => c.get(row)?.to_string(),
            ColumnWriter::Bool(c) => c.get(row)?.to_string(),
            ColumnWriter::Timestamp(c) => datetime_text(format.tz, micros_to_local(c.get(row)?)?),
            ColumnWriter::Date(c) => {
                let d = NaiveDate::default()
                    .checked_add_signed(chrono::Duration::days(i64::from(c.get(row)?)))?;
                d.format("%Y-%m-%d").to_string()
            }
            ColumnWriter::StrList(_) => return None,
        })
    }

    /// The value as a JSON value (for skip tokens).
    pub fn json_value(&self, row: usize) -> serde_json::Value {
        use serde_json::json;
        match self {
            ColumnWriter::Str(c) => json!(c.get(row)),
            ColumnWriter::I32(c) => json!(c.get(row)),
            ColumnWriter::U32(c) => json!(c.get(row)),
            ColumnWriter::I64(c) | ColumnWriter::Timestamp(c) => json!(c.get(row)),
            ColumnWriter::U64(c) => json!(c.get(row)),
            ColumnWriter::F64(c) => json!(c.get(row)),
            ColumnWriter::Bool(c) => json!(c.get(row)),
            ColumnWriter::Date(c) => json!(c.get(row)),
            ColumnWriter::StrList(_) => serde_json::Value::Null,
        }
    }
}

fn opt<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The instant with the zone's offset, as chrono reads it.
    fn with_offset(tz: Tz, local: NaiveDateTime) -> DateTime<chrono::FixedOffset> {
        let offset = tz
            .offset_from_local_datetime(&local)
            .earliest()
            .map(|o| o.fix())
            .unwrap_or_else(|| tz.offset_from_utc_datetime(&local).fix());
        DateTime::<chrono::FixedOffset>::from_naive_utc_and_offset(local, offset)
    }

    /// What the digit-by-digit writer must produce, said with chrono's formatter.
    fn reference(tz: Tz, local: NaiveDateTime) -> String {
        let t = with_offset(tz, local);
        let fraction = if local.and_utc().timestamp_subsec_micros() == 0 {
            "%S"
        } else {
            "%S%.6f"
        };
        let base = local
            .format(&format!("%Y-%m-%dT%H:%M:{fraction}"))
            .to_string();
        if t.offset().local_minus_utc() == 0 {
            format!("{base}Z")
        } else {
            format!("{base}{}", t.format("%:z"))
        }
    }

    proptest! {
        #[test]
        fn timestamps_match_the_general_formatter(
            micros in 0i64..253_402_300_799_000_000,
            zone in prop::sample::select(vec![
                Tz::UTC, chrono_tz::Europe::London, chrono_tz::America::New_York,
                chrono_tz::Asia::Kolkata, chrono_tz::Australia::Adelaide, chrono_tz::Pacific::Chatham,
            ]),
            whole_seconds in any::<bool>(),
        ) {
            let micros = if whole_seconds { micros - micros % 1_000_000 } else { micros };
            let local = micros_to_local(micros).expect("in range");
            prop_assert_eq!(datetime_text(zone, local), reference(zone, local));
            let mut export = Vec::new();
            write_datetime(&mut export, zone, local, TimeStyle::Export);
            let t = with_offset(zone, local);
            prop_assert_eq!(
                String::from_utf8(export).expect("ascii"),
                format!("{}{}", local.format("%Y-%m-%dT%H:%M:%S%.6f"), t.format("%:z"))
            );
        }

        #[test]
        fn numbers_are_json_that_reads_back_exactly(i in any::<i64>(), f in any::<f64>()) {
            let ints = Int64Chunked::from_slice("i".into(), &[i]).into_series();
            let floats = Float64Chunked::from_slice("f".into(), &[f]).into_series();
            let format = Format { metadata: Metadata::Minimal, ieee754: false, tz: Tz::UTC };
            let mut out = Vec::new();
            ColumnWriter::new(&ints).expect("writer").write(0, &mut out, &format);
            prop_assert_eq!(serde_json::from_slice::<i64>(&out).expect("int"), i);
            out.clear();
            ColumnWriter::new(&floats).expect("writer").write(0, &mut out, &format);
            if f.is_finite() {
                prop_assert_eq!(serde_json::from_slice::<f64>(&out).expect("float"), f);
            } else {
                prop_assert!(out.starts_with(b"\""));
            }
        }
    }

    #[test]
    fn strings_are_escaped_and_emoji_survive() {
        let mut out = Vec::new();
        write_str(&mut out, "a \"quote\"\nnew\u{1}line 😀");
        let text = String::from_utf8(out).expect("utf-8");
        let back: String = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back, "a \"quote\"\nnew\u{1}line 😀");
    }

    #[test]
    fn timestamps_carry_the_site_offset() {
        let t = NaiveDate::from_ymd_opt(2024, 8, 1)
            .and_then(|d| d.and_hms_micro_opt(10, 0, 0, 500))
            .expect("time");
        assert_eq!(datetime_text(Tz::UTC, t), "2024-08-01T10:00:00.000500Z");
        assert_eq!(
            datetime_text(chrono_tz::Europe::London, t),
            "2024-08-01T10:00:00.000500+01:00"
        );
        let winter = NaiveDate::from_ymd_opt(2024, 1, 1)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .expect("time");
        assert_eq!(
            datetime_text(chrono_tz::Europe::London, winter),
            "2024-01-01T09:00:00Z"
        );
        // 01:30 on the spring-forward night does not exist in London; still answered.
        let gap = NaiveDate::from_ymd_opt(2024, 3, 31)
            .and_then(|d| d.and_hms_opt(1, 30, 0))
            .expect("time");
        assert!(datetime_text(chrono_tz::Europe::London, gap).starts_with("2024-03-31T01:30:00"));
    }
}
