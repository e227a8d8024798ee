//! A page of results as an OData JSON response body, produced in chunks so that a large
//! page never sits in memory twice and the first bytes leave before the last row is
//! formatted.

use std::collections::HashMap;
use std::ops::Range;

use polars::prelude::{DataFrame, Series};

use crate::error::Result;
use crate::json::{write_str, ColumnWriter, Format, Metadata};
use crate::model::{EntitySet, JOIN_KEY};
use crate::query::{Expansion, Page};

/// Rows formatted per chunk handed to the HTTP body.
const ROWS_PER_CHUNK: usize = 512;

/// Percent-encodes what may not appear raw in a URL path segment (keeps quotes and
/// parentheses, which key predicates need).
pub fn encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~'()!$*,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn series<'a>(frame: &'a DataFrame, name: &str) -> Result<&'a Series> {
    Ok(frame.column(name)?.as_materialized_series())
}

/// `Chats('…')` or `ChatLines(ChatUID='…',Seq=3)` for one row.
fn entity_path(set: &EntitySet, frame: &DataFrame, row: usize, format: &Format) -> Result<String> {
    let mut parts = Vec::new();
    for key in set.table.keys {
        let writer = ColumnWriter::new(series(frame, key)?)?;
        let text = writer.raw_text(row, format).unwrap_or_default();
        let value = if matches!(writer, ColumnWriter::Str(_)) {
            format!("'{}'", text.replace('\'', "''"))
        } else {
            text
        };
        parts.push(if set.table.keys.len() == 1 {
            value
        } else {
            format!("{key}={value}")
        });
    }
    Ok(format!("{}({})", set.name, encode_path(&parts.join(","))))
}

struct Frame<'a> {
    names: Vec<&'a str>,
    /// `"Name":` per column, escaped once rather than per row.
    prefixes: Vec<Vec<u8>>,
    writers: Vec<ColumnWriter<'a>>,
    etag: Option<ColumnWriter<'a>>,
}

impl<'a> Frame<'a> {
    fn new(frame: &'a DataFrame, output: &'a [String]) -> Result<Frame<'a>> {
        let mut names = Vec::with_capacity(output.len());
        let mut prefixes = Vec::with_capacity(output.len());
        let mut writers = Vec::with_capacity(output.len());
        for name in output {
            names.push(name.as_str());
            let mut prefix = Vec::with_capacity(name.len() + 3);
            write_str(&mut prefix, name);
            prefix.push(b':');
            prefixes.push(prefix);
            writers.push(ColumnWriter::new(series(frame, name)?)?);
        }
        let etag = match frame.column("ArchiveSeq") {
            Ok(c) => Some(ColumnWriter::new(c.as_materialized_series())?),
            Err(_) => None,
        };
        Ok(Frame {
            names,
            prefixes,
            writers,
            etag,
        })
    }
}

/// Where each parent's related rows sit in an expansion frame (sorted by ChatUID).
fn index_expansion(expansion: &Expansion) -> Result<HashMap<String, Range<usize>>> {
    let mut index: HashMap<String, Range<usize>> = HashMap::new();
    let uids = series(&expansion.frame, JOIN_KEY)?.str()?;
    for (i, uid) in (0..uids.len()).map(|i| uids.get(i)).enumerate() {
        if let Some(uid) = uid {
            index
                .entry(uid.to_owned())
                .and_modify(|r| r.end = i + 1)
                .or_insert(i..i + 1);
        }
    }
    Ok(index)
}

pub struct PageWriter {
    page: Page,
    format: Format,
    /// The service root, ending in '/'.
    base: String,
    context: String,
    next_link: Option<String>,
    indexes: Vec<HashMap<String, Range<usize>>>,
    row: usize,
    /// Writes one entity alone (no `value` array) for single-entity requests.
    single: bool,
    done: bool,
}

impl PageWriter {
    pub fn new(
        mut page: Page,
        format: Format,
        base: String,
        context: String,
        next_link: Option<String>,
        single: bool,
    ) -> Result<PageWriter> {
        // The column writers read each column's one Arrow array.
        page.frame.rechunk_mut();
        for expansion in &mut page.expansions {
            expansion.frame.rechunk_mut();
        }
        let indexes = page
            .expansions
            .iter()
            .map(index_expansion)
            .collect::<Result<_>>()?;
        Ok(PageWriter {
            page,
            format,
            base,
            context,
            next_link,
            indexes,
            row: 0,
            single,
            done: false,
        })
    }

    fn head(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        if self.format.metadata != Metadata::None {
            out.extend_from_slice(b"\"@odata.context\":");
            write_str(out, &self.context);
            out.push(b',');
        }
        if self.single {
            return;
        }
        if let Some(count) = self.page.count {
            out.extend_from_slice(format!("\"@odata.count\":{count},").as_bytes());
        }
        out.extend_from_slice(b"\"value\":[");
    }

    fn tail(&self, out: &mut Vec<u8>) {
        if !self.single {
            out.push(b']');
            if let Some(link) = &self.next_link {
                out.extend_from_slice(b",\"@odata.nextLink\":");
                write_str(out, link);
            }
        }
        out.push(b'}');
    }

    /// Writes the properties of `row` (no braces), with the control information the
    /// metadata level asks for.
    fn entity(
        &self,
        out: &mut Vec<u8>,
        set: Option<&EntitySet>,
        frame: &DataFrame,
        cols: &Frame<'_>,
        row: usize,
    ) -> Result<()> {
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        if let Some(set) = set {
            if self.format.metadata == Metadata::Full {
                let path = entity_path(set, frame, row, &self.format)?;
                sep(out);
                out.extend_from_slice(b"\"@odata.type\":");
                write_str(out, &format!("#{}", set.qualified_type()));
                for annotation in ["@odata.id", "@odata.editLink"] {
                    out.extend_from_slice(format!(",\"{annotation}\":").as_bytes());
                    write_str(out, &format!("{}{path}", self.base));
                }
                for nav in set.navigation {
                    out.extend_from_slice(
                        format!(",\"{}@odata.navigationLink\":", nav.name).as_bytes(),
                    );
                    write_str(out, &format!("{}{path}/{}", self.base, nav.name));
                }
            }
            if self.format.metadata != Metadata::None {
                if let Some(seq) = cols
                    .etag
                    .as_ref()
                    .and_then(|e| e.raw_text(row, &self.format))
                {
                    sep(out);
                    out.extend_from_slice(b"\"@odata.etag\":");
                    write_str(out, &format!("W/\"{seq}\""));
                }
            }
        }
        for ((name, prefix), writer) in cols.names.iter().zip(&cols.prefixes).zip(&cols.writers) {
            sep(out);
            if self.format.metadata == Metadata::Full {
                let ty = if writer.is_timestamp() {
                    Some("#DateTimeOffset")
                } else if writer.is_int64() {
                    Some("#Int64")
                } else {
                    None
                };
                if let Some(ty) = ty {
                    write_str(out, &format!("{name}@odata.type"));
                    out.push(b':');
                    write_str(out, ty);
                    out.push(b',');
                }
            }
            out.extend_from_slice(prefix);
            writer.write(row, out, &self.format);
        }
        Ok(())
    }

    fn expansions(&self, out: &mut Vec<u8>, parent_uid: Option<&str>) -> Result<()> {
        for (expansion, index) in self.page.expansions.iter().zip(&self.indexes) {
            let cols = Frame::new(&expansion.frame, &expansion.output)?;
            let range = parent_uid
                .and_then(|u| index.get(u))
                .cloned()
                .unwrap_or(0..0);
            out.push(b',');
            write_str(out, expansion.navigation.name);
            out.push(b':');
            if expansion.navigation.collection {
                out.push(b'[');
                let rows = range
                    .skip(expansion.skip)
                    .take(expansion.top.unwrap_or(usize::MAX));
                for (i, child) in rows.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    self.entity(out, Some(expansion.target), &expansion.frame, &cols, child)?;
                    out.push(b'}');
                }
                out.push(b']');
            } else if let Some(child) = range.clone().next() {
                out.push(b'{');
                self.entity(out, Some(expansion.target), &expansion.frame, &cols, child)?;
                out.push(b'}');
            } else {
                out.extend_from_slice(b"null");
            }
        }
        Ok(())
    }

    fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(64 * 1024);
        if self.row == 0 {
            self.head(&mut out);
        }
        let frame = &self.page.frame;
        let height = if self.single {
            frame.height().min(1)
        } else {
            frame.height()
        };
        let end = (self.row + ROWS_PER_CHUNK).min(height);
        if self.row < end {
            let cols = Frame::new(frame, &self.page.output)?;
            let uids = if self.page.expansions.is_empty() {
                None
            } else {
                Some(series(frame, JOIN_KEY)?.str()?)
            };
            for row in self.row..end {
                // A single entity's braces are the document's own (head and tail).
                if !self.single {
                    if row > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                }
                self.entity(&mut out, self.page.set, frame, &cols, row)?;
                if let Some(uids) = uids {
                    self.expansions(&mut out, uids.get(row))?;
                }
                if !self.single {
                    out.push(b'}');
                }
            }
            self.row = end;
        }
        if self.row >= height {
            self.tail(&mut out);
            self.done = true;
        }
        Ok(Some(out))
    }
}

impl Iterator for PageWriter {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.chunk().transpose()
    }
}
