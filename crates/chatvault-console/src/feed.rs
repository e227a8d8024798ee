//! Questions to the OData feed, asked on behalf of the signed-in key: the console reads
//! chats exactly as an OData client with the same key would, site restriction included.

use chatvault_odata::{Access, Body, Request};
use chatvault_server::AppState;
use serde_json::Value;

use crate::error::ConsoleError;
use crate::session::Signed;

/// Answers `path?query` (the query already percent-encoded) as JSON.
pub async fn get(
    state: &AppState,
    signed: &Signed,
    path: String,
    query: String,
) -> Result<Value, ConsoleError> {
    let service = state
        .odata
        .clone()
        .ok_or_else(|| ConsoleError::Unavailable("the feed is not enabled on this node".into()))?;
    let access = Access {
        sites: signed.principal.sites.clone(),
    };
    let bytes =
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>, chatvault_odata::QueryError> {
            let request = Request {
                path: &path,
                query: &query,
                accept: Some("application/json;odata.metadata=minimal"),
                prefer: None,
                base_url: "/odata/".into(),
                access,
                now: chrono::Utc::now().naive_utc(),
            };
            let reply = service.handle(&request)?;
            match reply.body {
                Body::Bytes(bytes) => Ok(bytes),
                Body::Page(writer) => {
                    let mut all = Vec::new();
                    for chunk in *writer {
                        all.extend_from_slice(&chunk?);
                    }
                    Ok(all)
                }
            }
        })
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
        .map_err(|e: chatvault_odata::QueryError| match e.status() {
            404 => ConsoleError::NotFound,
            s if s < 500 => ConsoleError::Invalid(e.to_string()),
            _ => ConsoleError::Unavailable(e.to_string()),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ConsoleError::Unavailable(e.to_string()))
}

/// Percent-encodes OData query options into a query string.
pub fn encode<'a>(options: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in options {
        out.append_pair(name, &value);
    }
    out.finish()
}

/// A string literal in an OData expression: quotes doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A field of a feed row as text ("" when absent or null).
pub fn text(row: &Value, field: &str) -> String {
    match row.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

pub fn int(row: &Value, field: &str) -> i64 {
    row.get(field).and_then(Value::as_i64).unwrap_or_default()
}

pub fn flag(row: &Value, field: &str) -> bool {
    row.get(field).and_then(Value::as_bool).unwrap_or_default()
}

/// The rows of a collection answer.
pub fn rows(answer: &Value) -> &[Value] {
    answer
        .get("value")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn fields_read_as_text() {
        let row = serde_json::json!({"a": "x", "b": 3, "c": null, "d": ["p", "q"]});
        assert_eq!(text(&row, "a"), "x");
        assert_eq!(text(&row, "b"), "3");
        assert_eq!(text(&row, "c"), "");
        assert_eq!(text(&row, "d"), "p, q");
        assert_eq!(text(&row, "missing"), "");
    }
}
