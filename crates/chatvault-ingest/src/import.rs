//! Bulk import of files and folders: one reader streams documents from every file into
//! chunks (many small files share a chunk, so they share a group commit), chunks are
//! validated on worker threads in parallel, and committed in order through the pipeline.

use chatvault_model::SchemaRegistry;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

use crate::payload::{format_of_path, split_documents, Encoding, PayloadFormat};
use crate::pipeline::{prepare_one, Outcome, Pending, Pipeline, Prepared};
use crate::{IngestError, OutcomeTally, Result, Source};

/// Documents validated and committed together.
const CHUNK_DOCUMENTS: usize = 1000;
/// The largest buffer an NDJSON line is given before it is read (larger lines grow).
const LINE_HINT_MAX: usize = 64 * 1024;
/// Chunks being validated at once (one per core here, plus one waiting).
const VALIDATING: usize = 3;
/// Chunks queued in the pipeline at once: one committing while the next waits.
const IN_FLIGHT: usize = 2;

/// Progress callbacks, so the CLI can draw a bar without this crate knowing about it.
pub trait ImportProgress: Send + Sync {
    fn start(&self, total_bytes: u64);
    fn advance(&self, bytes: u64, outcomes: &[Outcome]);
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportSummary {
    pub files: u64,
    /// Rejections are kept as `file location: reason`.
    #[serde(flatten)]
    pub outcomes: OutcomeTally,
    /// Files that could not be read at all.
    pub unreadable: Vec<String>,
}

/// Every importable file under `paths` (files as given, folders walked), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| IngestError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| IngestError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type().map_err(io)?.is_dir() {
            walk(&path, out)?;
        } else if format_of_path(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Documents read but not yet validated: (file, location in the file, bytes).
struct RawChunk {
    docs: Vec<(Arc<str>, String, Vec<u8>)>,
    /// File bytes consumed since the previous chunk.
    bytes: u64,
}

enum Read_ {
    Chunk(RawChunk),
    Unreadable(String),
}

/// Imports every document in `paths`. Per-document problems are counted and reported;
/// only a failure of the pipeline itself (archive or catalog) aborts the import.
pub async fn import_paths(
    paths: &[PathBuf],
    pipeline: &Pipeline,
    registry: Arc<SchemaRegistry>,
    progress: &dyn ImportProgress,
) -> Result<ImportSummary> {
    let files = collect_files(paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    progress.start(total);
    let mut summary = ImportSummary {
        files: files.len() as u64,
        ..ImportSummary::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read_>(VALIDATING);
    let reader = tokio::task::spawn_blocking(move || read_all(&files, &tx));
    let mut validating: VecDeque<(u64, JoinHandle<Vec<Prepared>>)> = VecDeque::new();
    let mut pending: VecDeque<(u64, Pending)> = VecDeque::new();
    let mut reading = true;
    loop {
        if reading && validating.len() < VALIDATING {
            match rx.recv().await {
                Some(Read_::Chunk(chunk)) => {
                    let registry = registry.clone();
                    let handle = tokio::task::spawn_blocking(move || {
                        chunk
                            .docs
                            .into_iter()
                            .map(|(file, location, bytes)| {
                                prepare_one(
                                    &registry,
                                    format!("{file} {location}").trim_end(),
                                    bytes.into(),
                                    "import",
                                )
                            })
                            .collect()
                    });
                    validating.push_back((chunk.bytes, handle));
                    continue;
                }
                Some(Read_::Unreadable(reason)) => {
                    summary.unreadable.push(reason);
                    continue;
                }
                None => reading = false,
            }
        }
        // Validation slots are full, or the reader is done: commit the oldest chunk.
        let Some((bytes, handle)) = validating.pop_front() else {
            if reading {
                continue;
            }
            break;
        };
        let items = handle.await.map_err(|e| IngestError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?;
        pending.push_back((bytes, pipeline.enqueue(Source::Import, items).await?));
        while pending.len() >= IN_FLIGHT {
            settle_one(&mut pending, &mut summary, progress).await?;
        }
    }
    while !pending.is_empty() {
        settle_one(&mut pending, &mut summary, progress).await?;
    }
    reader.await.map_err(|e| IngestError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?;
    Ok(summary)
}

async fn settle_one(
    pending: &mut VecDeque<(u64, Pending)>,
    summary: &mut ImportSummary,
    progress: &dyn ImportProgress,
) -> Result<()> {
    let Some((bytes, queued)) = pending.pop_front() else {
        return Ok(());
    };
    let outcomes = queued.wait().await?;
    for o in &outcomes {
        summary.outcomes.record(o, &o.location);
    }
    progress.advance(bytes, &outcomes);
    Ok(())
}

/// Streams every file's documents into chunks of about `CHUNK_DOCUMENTS`. NDJSON is read
/// line by line, so a file of any size imports in bounded memory; a JSON file is one
/// document or one array.
fn read_all(files: &[PathBuf], tx: &tokio::sync::mpsc::Sender<Read_>) {
    let consumed = Arc::new(AtomicU64::new(0));
    let mut reported = 0u64;
    let mut chunk: Vec<(Arc<str>, String, Vec<u8>)> = Vec::with_capacity(CHUNK_DOCUMENTS);
    // Sends the chunk when full (or `force`); false once the receiver has gone.
    let mut emit = |chunk: &mut Vec<(Arc<str>, String, Vec<u8>)>, force: bool| -> bool {
        if chunk.is_empty() || (!force && chunk.len() < CHUNK_DOCUMENTS) {
            return true;
        }
        let now = consumed.load(Ordering::Relaxed);
        let bytes = now - reported;
        reported = now;
        tx.blocking_send(Read_::Chunk(RawChunk {
            docs: std::mem::take(chunk),
            bytes,
        }))
        .is_ok()
    };
    for path in files {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let unreadable = |reason: String| {
            tx.blocking_send(Read_::Unreadable(format!("{name}: {reason}")))
                .is_ok()
        };
        let Some((format, encoding)) = format_of_path(path) else {
            if !unreadable("not a .json, .ndjson or .jsonl file (optionally .gz)".into()) {
                return;
            }
            continue;
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                if !unreadable(format!("cannot open: {e}")) {
                    return;
                }
                continue;
            }
        };
        let counted = CountingReader {
            inner: file,
            count: consumed.clone(),
        };
        let mut reader: Box<dyn BufRead> = match encoding {
            Encoding::Identity => Box::new(BufReader::with_capacity(1 << 20, counted)),
            Encoding::Gzip => Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(counted),
            )),
        };
        match format {
            PayloadFormat::Json => {
                let mut body = Vec::new();
                if let Err(e) = reader.read_to_end(&mut body) {
                    if !unreadable(format!("cannot read: {e}")) {
                        return;
                    }
                    continue;
                }
                match split_documents(&body, PayloadFormat::Json) {
                    Ok(pieces) => {
                        for piece in pieces {
                            chunk.push((name.clone(), piece.location, piece.bytes.to_vec()));
                            if !emit(&mut chunk, false) {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if !unreadable(e.to_string()) {
                            return;
                        }
                    }
                }
            }
            PayloadFormat::Ndjson => {
                let mut line_no = 0usize;
                // Each line is read into a buffer the size of the last one (documents of
                // one export are much alike), not grown from nothing by doubling; up to
                // a bound: after a huge line, the next (kept until it is archived) would
                // otherwise hold as much again.
                let mut expected = 0usize;
                loop {
                    let hint = expected.min(LINE_HINT_MAX);
                    let mut line = Vec::with_capacity(hint + hint / 8);
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            line_no += 1;
                            expected = line.len();
                            if let Some(doc) = trim_in_place(line) {
                                chunk.push((name.clone(), format!("line {line_no}"), doc));
                                if !emit(&mut chunk, false) {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            if !unreadable(format!("cannot read after line {line_no}: {e}")) {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
    emit(&mut chunk, true);
}

/// The document on a line without the whitespace around it, in the line's own buffer
/// (every line but the last ends in a newline: copying each one out to drop it was a
/// second copy of the whole input); None for a blank line.
fn trim_in_place(mut line: Vec<u8>) -> Option<Vec<u8>> {
    let end = line.trim_ascii_end().len();
    line.truncate(end);
    let start = line.len() - line.trim_ascii_start().len();
    if line.len() == start {
        return None;
    }
    if start > 0 {
        line.drain(..start);
    }
    Some(line)
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_trimmed_in_place_is_the_line_trimmed() {
        for line in [
            &b"{\"a\": 1}\n"[..],
            b"{\"a\": 1}\r\n",
            b"{\"a\": 1}",
            b" \t{\"a\": \" x \"}  \n",
            b"\xC3\xA9 \n",
            b"\n",
            b" \r\n",
            b"",
        ] {
            let expected = line.trim_ascii();
            let trimmed = trim_in_place(line.to_vec());
            assert_eq!(
                trimmed.as_deref(),
                (!expected.is_empty()).then_some(expected),
                "line {line:?}"
            );
        }
    }
}
