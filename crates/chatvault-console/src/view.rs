//! What every page shares: the navigation bar, rendering, and how values are shown.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};

/// The navigation bar and what it needs to know about the user.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The section the page belongs to, marked as current.
    pub section: &'static str,
    pub actor: String,
    pub csrf: String,
    pub admin: bool,
    pub signed_in: bool,
}

impl Nav {
    pub fn signed_out() -> Nav {
        Nav {
            section: "",
            actor: String::new(),
            csrf: String::new(),
            admin: false,
            signed_in: false,
        }
    }

    /// `aria-current` for the link of `section`.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// One option of a `<select>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

/// The options of a `<select>`, with `current` selected.
pub fn choices(options: &[(&'static str, &'static str)], current: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|(value, label)| Choice {
            value,
            label,
            selected: *value == current,
        })
        .collect()
}

/// Renders a page; a template that fails (it cannot, for the types these take, but the
/// API says it may) becomes a plain 500.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Makes `response` a download saved as `name` (anything but letters, digits, `-`, `_`
/// and `.` becomes `_`, so the header is always valid).
pub fn attachment(mut response: Response, name: &str) -> Response {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(value) =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
    {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Seconds as `1 h 02 min`, `3 min 05 s` or `42 s`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".into();
    }
    let s = seconds.round() as i64;
    match s {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

/// A feed timestamp (`2024-08-01T10:15:00`, site time) as `2024-08-01 10:15:00`.
pub fn site_time(text: &str) -> String {
    text.replacen('T', " ", 1)
        .trim_end_matches('Z')
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
        assert_eq!(duration(f64::NAN), "–");
    }

    #[test]
    fn site_times_drop_the_separator_and_fractions() {
        assert_eq!(site_time("2024-08-01T10:15:00.123"), "2024-08-01 10:15:00");
        assert_eq!(site_time("2024-08-01T10:15:00Z"), "2024-08-01 10:15:00");
    }
}
