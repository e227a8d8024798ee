//! The watched folder: the chat server writes one file per chat; each complete file is
//! validated, stored, and moved to `processed/` (or to `rejected/` beside a reason file).

use chatvault_model::SchemaRegistry;
use notify::Watcher;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};

use crate::payload::{decode_body, format_of_path, split_documents, PayloadError};
use crate::pipeline::{prepare, OutcomeKind, Pipeline, Prepared, SubmitError};
use crate::{IngestError, Result, Source};

#[derive(Debug, Clone)]
pub struct FolderConfig {
    pub path: PathBuf,
    /// A file is taken once its size and modification time have not changed for this long
    /// (writers that rename a finished file into place are picked up at once).
    pub settle: Duration,
    /// Full rescans catch anything the OS notifications missed.
    pub rescan_interval: Duration,
    /// Files committed together in one group commit.
    pub batch_files: usize,
    pub max_file_bytes: usize,
}

impl FolderConfig {
    pub fn new(path: impl Into<PathBuf>) -> FolderConfig {
        FolderConfig {
            path: path.into(),
            settle: Duration::from_millis(500),
            rescan_interval: Duration::from_secs(10),
            batch_files: 256,
            max_file_bytes: 64 * 1024 * 1024,
        }
    }

    pub fn processed_dir(&self) -> PathBuf {
        self.path.join("processed")
    }

    pub fn rejected_dir(&self) -> PathBuf {
        self.path.join("rejected")
    }
}

pub struct FolderSource {
    config: FolderConfig,
    pipeline: Pipeline,
    registry: Arc<SchemaRegistry>,
}

/// What a file looked like at the last scan; unchanged across two scans means complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: SystemTime,
}

#[derive(Serialize)]
struct ErrorReport<'a> {
    file: String,
    rejected_at: String,
    reason: &'a str,
    documents: Vec<serde_json::Value>,
}

impl FolderSource {
    pub fn new(
        config: FolderConfig,
        pipeline: Pipeline,
        registry: Arc<SchemaRegistry>,
    ) -> FolderSource {
        FolderSource {
            config,
            pipeline,
            registry,
        }
    }

    /// Runs until `shutdown` turns true. Files are never deleted: each ends in
    /// `processed/` or `rejected/`, or stays where it is until it can be stored.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        for dir in [
            &self.config.path,
            &self.config.processed_dir(),
            &self.config.rejected_dir(),
        ] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| IngestError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        let mut watcher =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                waker.notify_one()
            })?;
        watcher.watch(&self.config.path, notify::RecursiveMode::NonRecursive)?;
        tracing::info!(folder = %self.config.path.display(), "watching folder for chat documents");

        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        loop {
            let pending = self.pass(&mut seen).await;
            let wait = if pending {
                self.config.settle
            } else {
                self.config.rescan_interval
            };
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = wake.notified() => {
                    // Let a burst of events coalesce into one scan.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }

    /// One scan: stores every complete file. Returns true while files are still settling
    /// or waiting for the pipeline, so the next scan comes soon.
    async fn pass(&self, seen: &mut HashMap<PathBuf, Seen>) -> bool {
        let listing = match self.list().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the watched folder");
                return true;
            }
        };
        let now = SystemTime::now();
        let mut ready = Vec::new();
        let mut settling = false;
        let mut next_seen = HashMap::with_capacity(listing.len());
        for (path, current) in listing {
            let old_enough =
                now.duration_since(current.modified).unwrap_or_default() >= self.config.settle;
            if seen.get(&path) == Some(&current) && old_enough {
                ready.push(path.clone());
            } else {
                settling = true;
            }
            next_seen.insert(path, current);
        }
        *seen = next_seen;
        ready.sort();
        let mut blocked = false;
        for chunk in ready.chunks(self.config.batch_files.max(1)) {
            match self.store(chunk).await {
                Ok(()) => {
                    for path in chunk {
                        seen.remove(path);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "folder files left in place; will retry");
                    blocked = true;
                    break;
                }
            }
        }
        settling || blocked
    }

    async fn list(&self) -> std::io::Result<Vec<(PathBuf, Seen)>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.config.path).await?;
        while let Some(entry) = dir.next_entry().await? {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Hidden and partial files are still being written by their producer.
            if name.starts_with('.') || format_of_path(&path).is_none() {
                continue;
            }
            let meta = entry.metadata().await?;
            if meta.is_file() {
                out.push((
                    path,
                    Seen {
                        len: meta.len(),
                        modified: meta.modified()?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Validates a group of files; stores the valid ones in one submission, then moves
    /// every file to where it belongs. A file with any bad document is rejected whole.
    async fn store(&self, files: &[PathBuf]) -> std::result::Result<(), SubmitError> {
        let mut accepted: Vec<(PathBuf, usize)> = Vec::new();
        let mut items: Vec<Prepared> = Vec::new();
        for path in files {
            match self.read_and_prepare(path).await {
                Ok(prepared) => {
                    accepted.push((path.clone(), prepared.len()));
                    items.extend(prepared);
                }
                Err(report) => self.reject(path, report).await,
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let outcomes = self.pipeline.submit(Source::Folder, items).await?;
        let mut outcomes = outcomes.into_iter();
        for (path, n) in accepted {
            let mine: Vec<_> = outcomes.by_ref().take(n).collect();
            let stored = mine
                .iter()
                .filter(|o| o.status != OutcomeKind::Unchanged)
                .count();
            tracing::debug!(file = %path.display(), documents = n, stored, "folder file archived");
            move_into(&path, &self.config.processed_dir(), None).await;
        }
        Ok(())
    }

    /// The documents of a file, or a report of why the file is refused.
    async fn read_and_prepare(
        &self,
        path: &Path,
    ) -> std::result::Result<Vec<Prepared>, (String, Vec<serde_json::Value>)> {
        let whole = |reason: String| (reason, Vec::new());
        let (format, encoding) = format_of_path(path)
            .ok_or_else(|| whole("not a .json, .ndjson or .jsonl file".into()))?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| whole(format!("cannot read the file: {e}")))?;
        if meta.len() > self.config.max_file_bytes as u64 {
            return Err(whole(format!(
                "file is {} bytes; the limit is {} bytes",
                meta.len(),
                self.config.max_file_bytes
            )));
        }
        let raw = tokio::fs::read(path)
            .await
            .map_err(|e| whole(format!("cannot read the file: {e}")))?;
        let registry = self.registry.clone();
        let detail = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let limit = self.config.max_file_bytes;
        let result = tokio::task::spawn_blocking(
            move || -> std::result::Result<Vec<Prepared>, PayloadError> {
                let body = decode_body(&raw, encoding, limit)?;
                let pieces = split_documents(&body, format)?;
                Ok(prepare(&registry, &pieces, &detail))
            },
        )
        .await
        .map_err(|e| whole(format!("validation task failed: {e}")))?;
        let prepared = result.map_err(|e| whole(e.to_string()))?;
        let problems: Vec<serde_json::Value> = prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Rejected {
                    location,
                    rejection,
                    ..
                } => Some(serde_json::json!({
                    "location": location,
                    "error": rejection,
                })),
                _ => None,
            })
            .collect();
        if problems.is_empty() {
            Ok(prepared)
        } else {
            Err((
                format!(
                    "{} of {} documents are invalid; nothing from this file was stored",
                    problems.len(),
                    prepared.len()
                ),
                problems,
            ))
        }
    }

    async fn reject(&self, path: &Path, (reason, documents): (String, Vec<serde_json::Value>)) {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::warn!(file = %file, %reason, "folder file rejected");
        metrics::counter!("chatvault_folder_files_rejected_total").increment(1);
        self.pipeline.activity().refused(crate::Refusal {
            at_us: crate::now_us(),
            source: Source::Folder.as_str(),
            location: file.clone(),
            chat_uid: None,
            reason: reason.clone(),
        });
        let report = ErrorReport {
            file,
            rejected_at: chrono::Utc::now().to_rfc3339(),
            reason: &reason,
            documents,
        };
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        move_into(path, &self.config.rejected_dir(), Some(json)).await;
    }
}

/// Moves `path` into `dir` under its own name (with a numeric suffix if that is taken),
/// writing `error_report` beside it first when given.
async fn move_into(path: &Path, dir: &Path, error_report: Option<Vec<u8>>) {
    let Some(name) = path.file_name() else { return };
    let mut target = dir.join(name);
    let mut n = 1;
    while tokio::fs::try_exists(&target).await.unwrap_or(false) {
        let mut with_suffix = name.to_os_string();
        with_suffix.push(format!(".{n}"));
        target = dir.join(with_suffix);
        n += 1;
    }
    if let Some(report) = error_report {
        let mut report_name = target
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        report_name.push(".error.json");
        if let Err(e) = tokio::fs::write(dir.join(report_name), report).await {
            tracing::warn!(error = %e, "cannot write a rejection report");
        }
    }
    if let Err(e) = tokio::fs::rename(path, &target).await {
        tracing::warn!(file = %path.display(), error = %e, "cannot move a processed file; it will be seen again (harmless: it is unchanged)");
    }
}
