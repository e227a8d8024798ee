//! Turning a request body or a file into the documents inside it.

use serde_json::value::RawValue;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// One document, or a JSON array of documents.
    Json,
    /// One document per line.
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the {what} is larger than the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("the body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("the body is not a JSON document or array of documents: {0}")]
    BadJson(String),
    #[error("the body holds no documents")]
    Empty,
}

/// One document's bytes and where it sat in the payload (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    /// `""` for a single document, `"/3"` for the fourth array element, `"line 7"`.
    pub location: String,
    pub bytes: &'a [u8],
}

/// Undoes a content encoding without ever holding more than `limit` decoded bytes, so a
/// gzip bomb costs at most `limit` of memory before it is refused.
pub fn decode_body(
    body: &[u8],
    encoding: Encoding,
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, PayloadError> {
    match encoding {
        Encoding::Identity => Ok(std::borrow::Cow::Borrowed(body)),
        Encoding::Gzip => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            flate2::read::MultiGzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| PayloadError::BadGzip(e.to_string()))?;
            if out.len() > limit {
                return Err(PayloadError::TooLarge {
                    what: "decompressed body",
                    limit,
                });
            }
            Ok(std::borrow::Cow::Owned(out))
        }
    }
}

/// Splits a payload into documents without parsing them fully: each piece is validated
/// on its own, so one bad document in an array does not hide the others.
pub fn split_documents(body: &[u8], format: PayloadFormat) -> Result<Vec<Piece<'_>>, PayloadError> {
    let trimmed = trim_ascii(body);
    if trimmed.is_empty() {
        return Err(PayloadError::Empty);
    }
    match format {
        PayloadFormat::Ndjson => {
            let pieces: Vec<Piece<'_>> = body
                .split(|b| *b == b'\n')
                .enumerate()
                .map(|(i, line)| Piece {
                    location: format!("line {}", i + 1),
                    bytes: trim_ascii(line),
                })
                .filter(|p| !p.bytes.is_empty())
                .collect();
            Ok(pieces)
        }
        PayloadFormat::Json if trimmed[0] == b'[' => {
            let items: Vec<&RawValue> = serde_json::from_slice(trimmed).map_err(|e| {
                PayloadError::BadJson(format!("{e} (line {}, column {})", e.line(), e.column()))
            })?;
            if items.is_empty() {
                return Err(PayloadError::Empty);
            }
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, raw)| Piece {
                    location: format!("/{i}"),
                    bytes: raw.get().as_bytes(),
                })
                .collect())
        }
        PayloadFormat::Json => Ok(vec![Piece {
            location: String::new(),
            bytes: trimmed,
        }]),
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn arrays_split_into_exact_element_bytes() {
        let body = br#" [ {"a": 1}, {"b": [2, 3]} ] "#;
        let pieces = split_documents(body, PayloadFormat::Json).expect("split");
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].bytes, br#"{"b": [2, 3]}"#);
        assert_eq!(pieces[1].location, "/1");
    }

    #[test]
    fn ndjson_skips_blank_lines_and_numbers_lines() {
        let body = b"{\"a\":1}\r\n\n{\"b\":2}\n";
        let pieces = split_documents(body, PayloadFormat::Ndjson).expect("split");
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].bytes, b"{\"a\":1}");
        assert_eq!(pieces[1].location, "line 3");
    }

    #[test]
    fn a_single_document_keeps_its_bytes_even_if_invalid() {
        let pieces = split_documents(b"{not json", PayloadFormat::Json).expect("split");
        assert_eq!(pieces[0].bytes, b"{not json");
    }

    #[test]
    fn broken_arrays_and_empty_bodies_are_errors() {
        assert!(matches!(
            split_documents(b"[{\"a\":1},", PayloadFormat::Json),
            Err(PayloadError::BadJson(_))
        ));
        assert_eq!(
            split_documents(b"  ", PayloadFormat::Json),
            Err(PayloadError::Empty)
        );
        assert_eq!(
            split_documents(b"[]", PayloadFormat::Json),
            Err(PayloadError::Empty)
        );
    }

    #[test]
    fn gzip_is_decoded_and_bombs_are_stopped_at_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b' '; 10_000_000]).expect("compress");
        let bomb = enc.finish().expect("finish");
        assert!(bomb.len() < 20_000);
        assert_eq!(
            decode_body(&bomb, Encoding::Gzip, 1_000_000).map(|b| b.len()),
            Err(PayloadError::TooLarge {
                what: "decompressed body",
                limit: 1_000_000
            })
        );
        assert_eq!(
            decode_body(&bomb, Encoding::Gzip, 10_000_000).map(|b| b.len()),
            Ok(10_000_000)
        );
        assert!(matches!(
            decode_body(b"not gzip", Encoding::Gzip, 100),
            Err(PayloadError::BadGzip(_))
        ));
    }
}

/// How a file's name says its documents are laid out: `.json`, `.ndjson`/`.jsonl`, each
/// optionally `.gz`. `None` for files that are not chat documents.
pub fn format_of_path(path: &std::path::Path) -> Option<(PayloadFormat, Encoding)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, encoding) = match name.strip_suffix(".gz") {
        Some(stem) => (stem.to_owned(), Encoding::Gzip),
        None => (name, Encoding::Identity),
    };
    let format = if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
        PayloadFormat::Ndjson
    } else if stem.ends_with(".json") {
        PayloadFormat::Json
    } else {
        return None;
    };
    Some((format, encoding))
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn file_names_select_the_format() {
        assert_eq!(
            format_of_path(Path::new("a/b.JSON")),
            Some((PayloadFormat::Json, Encoding::Identity))
        );
        assert_eq!(
            format_of_path(Path::new("x.ndjson.gz")),
            Some((PayloadFormat::Ndjson, Encoding::Gzip))
        );
        assert_eq!(
            format_of_path(Path::new("x.jsonl")),
            Some((PayloadFormat::Ndjson, Encoding::Identity))
        );
        assert_eq!(
            format_of_path(Path::new("..json")),
            Some((PayloadFormat::Json, Encoding::Identity))
        );
        assert_eq!(format_of_path(Path::new("notes.txt")), None);
        assert_eq!(format_of_path(Path::new("x.json.part")), None);
    }
}
