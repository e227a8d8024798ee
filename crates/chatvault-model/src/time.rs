use chrono::{NaiveDate, NaiveDateTime};
use std::cell::Cell;

/// A site wall-clock time (the chat server writes local time without an offset).
/// `None` is the chat server's "not set" value `0001-01-01T00:00:00`.
pub type LocalTimestamp = Option<NaiveDateTime>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a timestamp of the form yyyy-MM-ddTHH:mm:ss[.fff]")]
pub struct TimestampError {
    pub value: String,
}

/// Parses `yyyy-MM-ddTHH:mm:ss[.f…]`; the year-1 sentinel means "not set".
pub fn parse_local_timestamp(value: &str) -> Result<LocalTimestamp, TimestampError> {
    let trimmed = value.trim();
    let parsed = parse_fixed(trimmed.as_bytes())
        .or_else(|| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .ok_or_else(|| TimestampError {
            value: value.to_owned(),
        })?;
    Ok((Some(parsed) != UNSET).then_some(parsed))
}

/// The chat server's "not set".
const UNSET: LocalTimestamp = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(date) => date.and_hms_opt(0, 0, 0),
    None => None,
};

thread_local! {
    /// The last date read on this thread, as `yyyyMMdd`: a chat's dozens of timestamps
    /// mostly fall on one day, and checking a date against the calendar was a tenth of
    /// reading a timestamp.
    static LAST_DATE: Cell<(u32, Option<NaiveDate>)> = const { Cell::new((0, None)) };
}

/// [`NaiveDate::from_ymd_opt`], remembering the last date asked for.
fn date(year: u32, month: u32, day: u32) -> Option<NaiveDate> {
    let key = year * 10_000 + month * 100 + day;
    LAST_DATE.with(|last| match last.get() {
        (k, date) if k == key && date.is_some() => date,
        _ => {
            let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
            last.set((key, date));
            date
        }
    })
}

/// The chat server's own spelling, read byte by byte: every chat has dozens of
/// timestamps and the general parser was a large share of reading one. Anything else
/// (other widths, more than nine fractional digits) is left to the general parser.
fn parse_fixed(b: &[u8]) -> Option<NaiveDateTime> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = date(digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?)?;
    date.and_hms_nano_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
        nanos,
    )
}

pub(crate) fn format_local_timestamp(value: &NaiveDateTime) -> String {
    value.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn year_one_sentinel_is_unset() {
        assert_eq!(parse_local_timestamp("0001-01-01T00:00:00"), Ok(None));
        assert_eq!(parse_local_timestamp("0001-01-01T00:00:00.000"), Ok(None));
    }

    #[test]
    fn fractional_seconds_of_any_precision_parse() {
        for text in [
            "2024-08-14T09:12:03",
            "2024-08-14T09:12:03.4",
            "2024-08-14T09:12:03.4170000",
        ] {
            assert!(matches!(parse_local_timestamp(text), Ok(Some(_))), "{text}");
        }
    }

    #[test]
    fn each_timestamp_keeps_its_own_date_whatever_was_read_before() {
        let read = |text: &str| {
            parse_local_timestamp(text)
                .ok()
                .flatten()
                .map(|t| t.to_string())
        };
        for _ in 0..2 {
            assert_eq!(
                read("2024-02-29T10:00:00").as_deref(),
                Some("2024-02-29 10:00:00")
            );
            assert_eq!(read("2023-02-29T10:00:00"), None);
            assert_eq!(
                read("2024-03-01T23:59:59").as_deref(),
                Some("2024-03-01 23:59:59")
            );
            assert_eq!(
                read("2024-03-01T00:00:01").as_deref(),
                Some("2024-03-01 00:00:01")
            );
        }
    }

    #[test]
    fn impossible_dates_are_errors() {
        assert!(parse_local_timestamp("2024-13-40T00:00:00").is_err());
        assert!(parse_local_timestamp("2024-08-14 09:12:03").is_err());
        assert!(parse_local_timestamp("").is_err());
    }

    proptest! {
        #[test]
        fn the_fast_reader_agrees_with_the_general_parser(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?") {
            let general = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").ok();
            // A leap second (:60) is the one spelling chrono reads and this does not; the
            // general parser then still reads it.
            if !text[17..19].starts_with('6') {
                prop_assert_eq!(parse_fixed(text.as_bytes()), general);
            }
            prop_assert_eq!(parse_local_timestamp(&text).ok().flatten(), general.filter(|t| t.to_string() != "0001-01-01 00:00:00"));
        }

        #[test]
        fn format_then_parse_round_trips(secs in 0i64..4_000_000_000i64, millis in 0u32..1000) {
            let ts = chrono::DateTime::from_timestamp(secs, millis * 1_000_000)
                .map(|d| d.naive_utc());
            prop_assume!(ts.is_some());
            let ts = ts.unwrap_or_default();
            prop_assert_eq!(parse_local_timestamp(&format_local_timestamp(&ts)), Ok(Some(ts)));
        }
    }
}
