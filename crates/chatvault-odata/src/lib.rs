//! The OData v4 feed: resource paths and query options parsed, typed against the model,
//! planned onto polars scans of the columnar store, and written as OData JSON; plus the
//! CSDL (`$metadata`) generated from the one table definition.
//!
//! Owns the OData language and its mapping onto the store. Must not know HTTP framework
//! types or authentication (the server hands it the caller's site restriction), and must
//! never answer a query it does not fully understand: unsupported features are errors.

pub mod compile;
pub mod csdl;
mod error;
pub mod export;
pub mod json;
pub mod model;
pub mod options;
pub mod query;
pub mod resource;
pub mod syntax;
pub mod write;

use chrono::NaiveDateTime;
use polars::prelude::DataFrame;

pub use error::{QueryError, Result};
pub use json::{Format, Metadata};
pub use options::QueryOptions;
pub use query::{Access, Engine, Page, Settings};
pub use resource::Resource;
pub use write::PageWriter;

use crate::model::JOIN_KEY;
use crate::resource::Key;

/// Largest page a client may ask for with `Prefer: odata.maxpagesize`.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// A request as the feed sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The path below the service root, percent-decoded (`Chats('x')/Lines`).
    pub path: &'a str,
    /// The raw query string, still percent-encoded.
    pub query: &'a str,
    pub accept: Option<&'a str>,
    pub prefer: Option<&'a str>,
    /// The service root as the client reached it, ending in '/'.
    pub base_url: String,
    pub access: Access,
    /// `now()` for this request, in site time.
    pub now: NaiveDateTime,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// Written lazily, chunk by chunk.
    Page(Box<PageWriter>),
}

pub struct Reply {
    pub content_type: String,
    pub body: Body,
    pub preference_applied: Option<String>,
}

/// `odata.metadata` and `IEEE754Compatible` from `$format` or the Accept header.
fn negotiate(options: &QueryOptions, accept: Option<&str>, tz: chrono_tz::Tz) -> Format {
    let source = options
        .format
        .as_deref()
        .or(accept)
        .unwrap_or("")
        .to_ascii_lowercase();
    let metadata = if source.contains("odata.metadata=full") {
        Metadata::Full
    } else if source.contains("odata.metadata=none") {
        Metadata::None
    } else {
        Metadata::Minimal
    };
    Format {
        metadata,
        ieee754: source.contains("ieee754compatible=true"),
        tz,
    }
}

fn json_content_type(format: &Format) -> String {
    let level = match format.metadata {
        Metadata::None => "none",
        Metadata::Minimal => "minimal",
        Metadata::Full => "full",
    };
    format!(
        "application/json;odata.metadata={level};odata.streaming=true;IEEE754Compatible={};charset=utf-8",
        format.ieee754
    )
}

/// The page size a `Prefer: odata.maxpagesize=N` header asks for.
fn preferred_page_size(prefer: Option<&str>) -> Option<usize> {
    prefer?.split(',').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        (name.trim().eq_ignore_ascii_case("odata.maxpagesize"))
            .then(|| value.trim().trim_matches('"').parse::<usize>().ok())
            .flatten()
            .filter(|n| *n > 0)
    })
}

/// The request's query string with paging options replaced, for `@odata.nextLink`.
fn next_query(query: &str, token: &str, top: Option<usize>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bare = key.trim_start_matches('$');
        if !matches!(bare, "skiptoken" | "skip" | "top") {
            out.append_pair(&key, &value);
        }
    }
    if let Some(top) = top {
        out.append_pair("$top", &top.to_string());
    }
    out.append_pair("$skiptoken", token);
    out.finish()
}

fn context_select(options: &QueryOptions) -> String {
    let mut items: Vec<String> = options.select.clone().unwrap_or_default();
    for e in &options.expand {
        let nested = e
            .options
            .select
            .as_ref()
            .map(|s| s.join(","))
            .unwrap_or_default();
        items.push(format!("{}({nested})", e.navigation));
    }
    if items.is_empty() || (options.select.is_none() && options.expand.is_empty()) {
        String::new()
    } else if options.select.is_none() {
        // Every property plus the expansions.
        let mut all = vec!["*".to_owned()];
        all.extend(items);
        format!("({})", all.join(","))
    } else {
        format!("({})", items.join(","))
    }
}

pub struct Service {
    engine: Engine,
}

impl Service {
    pub fn new(engine: Engine) -> Service {
        Service { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Answers one request. Blocking: it runs polars queries.
    pub fn handle(&self, request: &Request<'_>) -> Result<Reply> {
        let resource = resource::parse(request.path)?;
        let options = QueryOptions::parse(request.query)?;
        let tz = self.engine.settings().tz;
        let format = negotiate(&options, request.accept, tz);
        let metadata_url = format!("{}$metadata", request.base_url);
        let json = |value: serde_json::Value| Reply {
            content_type: json_content_type(&format),
            body: Body::Bytes(value.to_string().into_bytes()),
            preference_applied: None,
        };
        match resource {
            Resource::ServiceDocument => Ok(json(csdl::service_document(&metadata_url))),
            Resource::Metadata => Ok(
                if metadata_as_json(options.format.as_deref(), request.accept) {
                    Reply {
                        content_type: "application/json;charset=utf-8".into(),
                        body: Body::Bytes(csdl::metadata_json().to_string().into_bytes()),
                        preference_applied: None,
                    }
                } else {
                    Reply {
                        content_type: "application/xml;charset=utf-8".into(),
                        body: Body::Bytes(csdl::metadata_xml().into_bytes()),
                        preference_applied: None,
                    }
                },
            ),
            Resource::Collection { set, from, count } => {
                let from_key = match &from {
                    Some((_, key, _)) => Some((JOIN_KEY, key_value(key)?)),
                    None => None,
                };
                let from_ref = from_key.as_ref().map(|(c, v)| (*c, v));
                if count {
                    let n =
                        self.engine
                            .count(set, &options, from_ref, &request.access, request.now)?;
                    if n == 0 {
                        self.require_parent(&from, request)?;
                    }
                    return Ok(Reply {
                        content_type: "text/plain;charset=utf-8".into(),
                        body: Body::Bytes(n.to_string().into_bytes()),
                        preference_applied: None,
                    });
                }
                let preferred = preferred_page_size(request.prefer);
                let page_size = preferred
                    .map_or(self.engine.settings().page_size, |p| p.min(MAX_PAGE_SIZE))
                    .max(1);
                let page = self.engine.collection(
                    set,
                    &options,
                    from_ref,
                    &request.access,
                    page_size,
                    request.now,
                )?;
                if page.frame.height() == 0 {
                    self.require_parent(&from, request)?;
                }
                let context = if options.apply.is_some() {
                    format!("{metadata_url}#{}({})", set.name, page.output.join(","))
                } else {
                    format!("{metadata_url}#{}{}", set.name, context_select(&options))
                };
                let next_link = page.next.as_ref().map(|(token, top)| {
                    format!(
                        "{}{}?{}",
                        request.base_url,
                        request.path.trim_start_matches('/'),
                        next_query(request.query, token, *top)
                    )
                });
                Ok(Reply {
                    content_type: json_content_type(&format),
                    body: Body::Page(Box::new(PageWriter::new(
                        page,
                        format,
                        request.base_url.clone(),
                        context,
                        next_link,
                        false,
                    )?)),
                    preference_applied: preferred.map(|_| format!("odata.maxpagesize={page_size}")),
                })
            }
            Resource::Entity { set, key, via } => {
                let key = match via {
                    Some(_) => Key(vec![(JOIN_KEY, key_value(&key)?)]),
                    None => key,
                };
                let page = self
                    .engine
                    .entity(set, &key, &options, &request.access, request.now)?;
                let context = format!(
                    "{metadata_url}#{}{}/$entity",
                    set.name,
                    context_select(&options)
                );
                Ok(Reply {
                    content_type: json_content_type(&format),
                    body: Body::Page(Box::new(PageWriter::new(
                        page,
                        format,
                        request.base_url.clone(),
                        context,
                        None,
                        true,
                    )?)),
                    preference_applied: None,
                })
            }
            Resource::Property {
                set,
                key,
                property,
                raw,
            } => {
                let select = QueryOptions {
                    select: Some(vec![property.to_owned()]),
                    ..QueryOptions::default()
                };
                let page = self
                    .engine
                    .entity(set, &key, &select, &request.access, request.now)?;
                let value = property_value(&page.frame, property, &format, raw)?;
                if raw {
                    return Ok(Reply {
                        content_type: "text/plain;charset=utf-8".into(),
                        body: Body::Bytes(value.into_bytes()),
                        preference_applied: None,
                    });
                }
                let mut out = Vec::new();
                out.extend_from_slice(b"{\"@odata.context\":");
                json::write_str(
                    &mut out,
                    &format!(
                        "{metadata_url}#{}/{property}",
                        request.path.rsplit_once('/').map_or("", |(head, _)| head)
                    ),
                );
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(value.as_bytes());
                out.push(b'}');
                Ok(Reply {
                    content_type: json_content_type(&format),
                    body: Body::Bytes(out),
                    preference_applied: None,
                })
            }
        }
    }
}

impl Service {
    /// A navigation from an entity the caller cannot see (another site's chat, or none at
    /// all) is 404, as the entity itself is: an empty collection would tell that it exists.
    /// Only asked when the navigation found nothing, since rows found are on the caller's
    /// sites and so is their chat.
    fn require_parent(
        &self,
        from: &Option<(
            &'static model::EntitySet,
            resource::Key,
            &'static model::Navigation,
        )>,
        request: &Request<'_>,
    ) -> Result<()> {
        let Some((parent, key, _)) = from else {
            return Ok(());
        };
        let just_the_key = QueryOptions {
            select: Some(vec![JOIN_KEY.to_owned()]),
            ..QueryOptions::default()
        };
        self.engine
            .entity(parent, key, &just_the_key, &request.access, request.now)
            .map(|_| ())
    }
}

/// Whether `$metadata` is answered as JSON CSDL: for `$format=json`, or for an `Accept`
/// that names JSON and nothing XML satisfies. Power Query's OData connector ranks JSON
/// first and `application/xml` lower, yet reads only XML CSDL: any acceptable XML wins.
fn metadata_as_json(format: Option<&str>, accept: Option<&str>) -> bool {
    if let Some(format) = format {
        return format.to_ascii_lowercase().contains("json");
    }
    let Some(accept) = accept else {
        return false;
    };
    let (mut json, mut xml) = (false, false);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality <= 0.0 {
            continue;
        }
        match media.as_str() {
            "application/json" => json = true,
            "application/xml" | "text/xml" | "application/*" | "*/*" => xml = true,
            _ => {}
        }
    }
    json && !xml
}

/// The ChatUID a key addresses (every key in this model includes it).
fn key_value(key: &Key) -> Result<syntax::Lit> {
    key.0
        .iter()
        .find(|(k, _)| *k == JOIN_KEY)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| QueryError::Invalid(format!("the key does not name a {JOIN_KEY}")))
}

/// A property of the single row in `frame`: JSON text, or raw text for `$value`.
fn property_value(frame: &DataFrame, property: &str, format: &Format, raw: bool) -> Result<String> {
    let series = frame.column(property)?.as_materialized_series().rechunk();
    let writer = json::ColumnWriter::new(&series)?;
    if raw {
        return writer.raw_text(0, format).ok_or_else(|| {
            QueryError::NotFound(format!("{property} is null, so it has no $value"))
        });
    }
    let mut out = Vec::new();
    writer.write(0, &mut out, format);
    String::from_utf8(out).map_err(|e| QueryError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::metadata_as_json;
    use proptest::prelude::*;

    /// What Power Query's OData connector sends with every request.
    const POWER_QUERY_ACCEPT: &str = "application/json;odata.metadata=minimal;q=1.0,application/json;odata=minimalmetadata;q=0.9,application/atomsvc+xml;q=0.8,application/atom+xml;q=0.8,application/xml;q=0.7,text/plain;q=0.7";

    #[test]
    fn metadata_is_xml_whenever_xml_is_acceptable() {
        assert!(!metadata_as_json(None, Some(POWER_QUERY_ACCEPT)));
        assert!(!metadata_as_json(None, None));
        assert!(!metadata_as_json(None, Some("*/*")));
        assert!(!metadata_as_json(None, Some("application/json, */*;q=0.1")));
        assert!(!metadata_as_json(None, Some("application/xml")));
        assert!(metadata_as_json(None, Some("application/json")));
        assert!(metadata_as_json(
            None,
            Some("Application/JSON; charset=utf-8")
        ));
        // XML refused outright (q=0) leaves JSON.
        assert!(metadata_as_json(
            None,
            Some("application/json, application/xml;q=0")
        ));
        // $format decides over Accept.
        assert!(metadata_as_json(Some("json"), Some(POWER_QUERY_ACCEPT)));
        assert!(metadata_as_json(Some("application/json"), None));
        assert!(!metadata_as_json(Some("xml"), Some("application/json")));
    }

    proptest! {
        /// Adding an acceptable XML range to any Accept list makes the answer XML.
        #[test]
        fn any_acceptable_xml_range_wins(
            ranges in proptest::collection::vec(
                prop_oneof![
                    Just("application/json"), Just("text/plain"), Just("application/atom+xml"),
                    Just("application/json;odata.metadata=full"), Just("text/html"),
                ],
                0..5,
            ),
            xml in prop_oneof![Just("application/xml"), Just("*/*"), Just("application/*"), Just("text/xml")],
            q in 1u32..=10,
            at in 0usize..5,
        ) {
            let mut list: Vec<String> = ranges.iter().map(|r| (*r).to_owned()).collect();
            let at = at.min(list.len());
            list.insert(at, format!("{xml};q={}", f64::from(q) / 10.0));
            prop_assert!(!metadata_as_json(None, Some(&list.join(","))));
        }
    }
}
