//! Bulk import of files and folders: streamed, validated on worker threads, committed in
//! order through the pipeline.

use chatvault_model::SchemaRegistry;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::payload::{format_of_path, split_documents, Encoding, PayloadFormat, Piece};
use crate::pipeline::{prepare, Outcome, OutcomeKind, Pending, Pipeline, Prepared};
use crate::{IngestError, Result, Source};

/// Documents validated and committed together.
const CHUNK_DOCUMENTS: usize = 1000;
/// Chunks queued in the pipeline at once: one committing while the next is prepared.
const IN_FLIGHT: usize = 3;
/// At most this many rejection reasons are kept for the summary.
const MAX_REASONS: usize = 100;

/// Progress callbacks, so the CLI can draw a bar without this crate knowing about it.
pub trait ImportProgress: Send + Sync {
    fn start(&self, total_bytes: u64);
    fn advance(&self, bytes: u64, outcomes: &[Outcome]);
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportSummary {
    pub files: u64,
    pub counts: BTreeMap<OutcomeKind, u64>,
    /// `file location: reason` for the first rejections.
    pub rejections: Vec<String>,
    /// Files that could not be read at all.
    pub unreadable: Vec<String>,
}

impl ImportSummary {
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or_default()
    }
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
    let mut summary = ImportSummary::default();
    let mut pending: VecDeque<(String, u64, Pending)> = VecDeque::new();
    for file in files {
        summary.files += 1;
        let name = file.display().to_string();
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<std::result::Result<(u64, Vec<Prepared>), String>>(2);
        let registry = registry.clone();
        let reader_file = file.clone();
        // Reading and validating are CPU work: keep them off the async workers.
        let reader = tokio::task::spawn_blocking(move || read_chunks(&reader_file, &registry, &tx));
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok((bytes, items)) => {
                    let queued = pipeline.enqueue(Source::Import, items).await?;
                    pending.push_back((name.clone(), bytes, queued));
                    while pending.len() >= IN_FLIGHT {
                        settle_one(&mut pending, &mut summary, progress).await?;
                    }
                }
                Err(reason) => {
                    summary.unreadable.push(format!("{name}: {reason}"));
                }
            }
        }
        reader.await.map_err(|e| IngestError::Io {
            path: file.clone(),
            source: std::io::Error::other(e),
        })?;
    }
    while !pending.is_empty() {
        settle_one(&mut pending, &mut summary, progress).await?;
    }
    Ok(summary)
}

async fn settle_one(
    pending: &mut VecDeque<(String, u64, Pending)>,
    summary: &mut ImportSummary,
    progress: &dyn ImportProgress,
) -> Result<()> {
    let Some((name, bytes, queued)) = pending.pop_front() else {
        return Ok(());
    };
    let outcomes = queued.wait().await?;
    for o in &outcomes {
        *summary.counts.entry(o.status).or_default() += 1;
        if let (OutcomeKind::Rejected, Some(err)) = (o.status, &o.error) {
            if summary.rejections.len() < MAX_REASONS {
                summary
                    .rejections
                    .push(format!("{name} {}: {err}", o.location).replace("  ", " "));
            }
        }
    }
    progress.advance(bytes, &outcomes);
    Ok(())
}

type ChunkSender = tokio::sync::mpsc::Sender<std::result::Result<(u64, Vec<Prepared>), String>>;

/// Streams a file's documents in validated chunks. NDJSON is read line by line so a file
/// of any size imports in bounded memory; a JSON file is one document or one array.
fn read_chunks(path: &Path, registry: &SchemaRegistry, tx: &ChunkSender) {
    let detail = path.display().to_string();
    let send = |r| tx.blocking_send(r).is_ok();
    let Some((format, encoding)) = format_of_path(path) else {
        send(Err(
            "not a .json, .ndjson or .jsonl file (optionally .gz)".into()
        ));
        return;
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            send(Err(format!("cannot open: {e}")));
            return;
        }
    };
    let consumed = Arc::new(AtomicU64::new(0));
    let counted = CountingReader {
        inner: file,
        count: consumed.clone(),
    };
    let mut reported = 0u64;
    // Progress is in bytes of the file as stored, however it is compressed.
    let mut step = || {
        let now = consumed.load(Ordering::Relaxed);
        let step = now - reported;
        reported = now;
        step
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
                send(Err(format!("cannot read: {e}")));
                return;
            }
            match split_documents(&body, PayloadFormat::Json) {
                Ok(pieces) => {
                    for group in pieces.chunks(CHUNK_DOCUMENTS) {
                        if !send(Ok((step(), prepare(registry, group, &detail)))) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    send(Err(e.to_string()));
                }
            }
        }
        PayloadFormat::Ndjson => {
            let mut lines: Vec<(usize, Vec<u8>)> = Vec::with_capacity(CHUNK_DOCUMENTS);
            let mut line_no = 0usize;
            loop {
                let mut line = Vec::new();
                let read = match reader.read_until(b'\n', &mut line) {
                    Ok(n) => n,
                    Err(e) => {
                        send(Err(format!("cannot read after line {line_no}: {e}")));
                        return;
                    }
                };
                if read > 0 {
                    line_no += 1;
                    if !line.trim_ascii().is_empty() {
                        lines.push((line_no, line));
                    }
                }
                if lines.len() == CHUNK_DOCUMENTS || (read == 0 && !lines.is_empty()) {
                    let pieces: Vec<Piece<'_>> = lines
                        .iter()
                        .map(|(n, l)| Piece {
                            location: format!("line {n}"),
                            bytes: l.trim_ascii(),
                        })
                        .collect();
                    let prepared = prepare(registry, &pieces, &detail);
                    if !send(Ok((step(), prepared))) {
                        return;
                    }
                    lines.clear();
                }
                if read == 0 {
                    return;
                }
            }
        }
    }
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
