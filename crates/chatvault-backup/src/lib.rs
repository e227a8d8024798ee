//! Back-up and restore of a data directory.
//!
//! Owns the backup's layout and manifest (every file with its size and SHA-256), and the
//! order that makes a copy taken while `serve` runs consistent: the catalog first (one
//! SQLite snapshot), then the store files that snapshot names (immutable once written),
//! then the archive, which can only have grown past what the snapshot knows and whose
//! growth the next open replays. A copy that an erasure, a retention run or a compaction
//! changed while it was taken is started again.
//!
//! Must not interpret chat data, nor write into a data directory another process uses:
//! opening the restored directory (torn-tail repair, catalog catch-up, store recovery) is
//! the caller's next step.

use chatvault_catalog::Catalog;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The backup's manifest; only a complete backup has one.
pub const MANIFEST: &str = "chatvault-backup.json";
/// The catalog's name inside a backup, wherever the data directory keeps it.
const CATALOG: &str = "catalog.db";
const FORMAT: u32 = 1;
/// Copies a change may spoil before the backup gives up.
const ATTEMPTS: u32 = 3;
/// How long a backup waits for an erasure under way to finish.
const ERASURE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] chatvault_catalog::CatalogError),
    #[error("{0} is not empty: back up into, and restore into, a new or empty folder")]
    NotEmpty(PathBuf),
    #[error("{0} is outside the data directory {1}, so a backup cannot place it")]
    Outside(PathBuf, PathBuf),
    #[error("{0} holds no {MANIFEST}: it is not a complete backup")]
    NoManifest(PathBuf),
    #[error("{path} is not a readable backup manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("the backup is in format {0}, newer than this chatvault reads ({FORMAT}); restore it with a newer chatvault")]
    Format(u32),
    #[error("{path} in the backup is damaged ({reason}); nothing was restored")]
    Damaged { path: String, reason: String },
    #[error("the data changed under the backup {ATTEMPTS} times (an erasure, a retention run or a compaction each time); try again when it is quieter")]
    Unsettled,
    #[error("an erasure is under way ({0} exists) and did not finish within a minute; try again after it")]
    ErasureUnderWay(PathBuf),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Where a data directory keeps what a backup copies. Every path but the catalog's lies
/// inside `data_dir` and keeps its place relative to it in the backup.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    /// The embedded catalog's file.
    pub catalog: PathBuf,
    pub archive_dir: PathBuf,
    pub store_dir: PathBuf,
    /// Files and folders copied whole when they exist (the digest signing key, digests).
    pub extras: Vec<PathBuf>,
    /// Exists while an erasure is under way.
    pub erasure_journal: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub chatvault_version: String,
    pub created_us: i64,
    pub files: Vec<FileEntry>,
}

/// One file of a backup, by its path relative to the backup (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// What a finished backup holds, and how many copies it took to get one no change spoiled.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub attempts: u32,
}

/// Told the bytes copied so far and the bytes to copy, as a copy goes.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Copies the data directory `layout` describes into `out` (new or empty), consistently
/// even while another process writes to it. The catalog must be the embedded one.
pub async fn backup(
    catalog: &Catalog,
    layout: &Layout,
    out: &Path,
    chatvault_version: &str,
    progress: Progress<'_>,
) -> Result<BackupReport> {
    prepare_empty(out)?;
    for attempt in 1..=ATTEMPTS {
        wait_for_erasure(&layout.erasure_journal).await?;
        let rewrites_before = newest_rewrite(catalog).await?;
        empty_folder(out)?;
        let Some(files) = copy_once(catalog, layout, out, progress).await? else {
            tracing::info!(
                attempt,
                "a store file was compacted away during the backup; copying again"
            );
            continue;
        };
        if newest_rewrite(catalog).await? != rewrites_before || layout.erasure_journal.exists() {
            tracing::info!(
                attempt,
                "the archive was rewritten during the backup; copying again"
            );
            continue;
        }
        let manifest = Manifest {
            format: FORMAT,
            chatvault_version: chatvault_version.to_owned(),
            created_us: chatvault_catalog::now_us(),
            files,
        };
        write_manifest(out, &manifest)?;
        return Ok(BackupReport {
            manifest,
            attempts: attempt,
        });
    }
    Err(BackupError::Unsettled)
}

/// One copy: the catalog snapshot, the store files it names, the archive, the extras.
/// None when a store file the snapshot names was removed before it could be copied.
async fn copy_once(
    catalog: &Catalog,
    layout: &Layout,
    out: &Path,
    progress: Progress<'_>,
) -> Result<Option<Vec<FileEntry>>> {
    let catalog_copy = out.join(CATALOG);
    catalog.snapshot_into(&catalog_copy).await?;
    let registry = {
        let snapshot = Catalog::connect(&format!("sqlite://{}", catalog_copy.display())).await?;
        let registry = snapshot.store_snapshot().await;
        snapshot.close().await;
        registry?
    };
    let store_files = registry
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(registry.deletes.iter().map(String::as_str))
        .map(|path| layout.store_dir.join(path));
    let mut sources = Vec::new();
    for source in store_files
        .chain(archive_segments(&layout.archive_dir)?)
        .chain(extra_files(&layout.extras)?)
    {
        let relative = relative_to(&layout.data_dir, &source)?;
        sources.push((source, relative));
    }
    let mut total = file_len(&catalog_copy)?;
    for (source, _) in &sources {
        match std::fs::metadata(source) {
            Ok(meta) => total += meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source_err) => return Err(io("read", source)(source_err)),
        }
    }
    let mut meter = Meter {
        done: 0,
        total,
        progress,
    };
    let mut files = vec![hash_in_place(&catalog_copy, CATALOG, &mut meter)?];
    let mut folders = BTreeSet::from([out.to_path_buf()]);
    for (source, relative) in sources {
        let dest = out.join(&relative);
        match copy_hashed(&source, &dest, &mut meter) {
            Ok((bytes, sha256)) => files.push(FileEntry {
                path: relative,
                bytes,
                sha256,
            }),
            Err(Failure::SourceGone) => return Ok(None),
            Err(Failure::Error(e)) => return Err(e),
        }
        if let Some(parent) = dest.parent() {
            folders.insert(parent.to_path_buf());
        }
    }
    for folder in folders {
        sync_folder(&folder)?;
    }
    Ok(Some(files))
}

/// Restores the backup in `from` into the data directory `layout` describes, which must
/// be new or empty, as must the catalog's file. Every file is checked against the
/// manifest as it is copied; on any damage nothing restored is left behind.
pub fn restore(from: &Path, layout: &Layout, progress: Progress<'_>) -> Result<Manifest> {
    let manifest = read_manifest(from)?;
    if manifest.format > FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    let destinations = manifest
        .files
        .iter()
        .map(|entry| destination(layout, &entry.path))
        .collect::<Result<Vec<_>>>()?;
    prepare_empty(&layout.data_dir)?;
    if layout.catalog.exists() {
        return Err(BackupError::NotEmpty(layout.catalog.clone()));
    }
    let restored = restore_files(from, &manifest, &destinations, progress);
    if restored.is_err() {
        // Leave the data directory as it was found (empty), never half restored.
        let _ = empty_folder(&layout.data_dir);
        let _ = std::fs::remove_file(&layout.catalog);
    }
    restored.map(|()| manifest)
}

fn restore_files(
    from: &Path,
    manifest: &Manifest,
    destinations: &[PathBuf],
    progress: Progress<'_>,
) -> Result<()> {
    let mut meter = Meter {
        done: 0,
        total: manifest.bytes(),
        progress,
    };
    let mut folders = BTreeSet::new();
    for (entry, dest) in manifest.files.iter().zip(destinations) {
        let (bytes, sha256) = match copy_hashed(&from.join(&entry.path), dest, &mut meter) {
            Ok(copied) => copied,
            Err(Failure::SourceGone) => {
                return Err(BackupError::Damaged {
                    path: entry.path.clone(),
                    reason: "the file is missing".into(),
                })
            }
            Err(Failure::Error(e)) => return Err(e),
        };
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::Damaged {
                path: entry.path.clone(),
                reason: format!(
                    "{bytes} bytes with SHA-256 {sha256}, where the manifest says {} bytes with SHA-256 {}",
                    entry.bytes, entry.sha256
                ),
            });
        }
        if let Some(parent) = dest.parent() {
            folders.insert(parent.to_path_buf());
        }
    }
    for folder in folders {
        sync_folder(&folder)?;
    }
    Ok(())
}

/// Reads a backup's manifest.
pub fn read_manifest(from: &Path) -> Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NoManifest(from.to_path_buf()))
        }
        Err(e) => return Err(io("read", &path)(e)),
    };
    serde_json::from_slice(&text).map_err(|e| BackupError::Manifest {
        path,
        reason: e.to_string(),
    })
}

/// Where a file of the backup goes: the catalog to its configured file, everything else
/// to its place under the data directory. A path that would leave the data directory
/// (`..`, absolute) is refused, so an edited manifest cannot write elsewhere.
fn destination(layout: &Layout, relative: &str) -> Result<PathBuf> {
    if relative == CATALOG {
        return Ok(layout.catalog.clone());
    }
    let path = Path::new(relative);
    if relative.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(BackupError::Manifest {
            path: PathBuf::from(MANIFEST),
            reason: format!("{relative:?} is not a path inside the data directory"),
        });
    }
    Ok(layout.data_dir.join(path))
}

fn write_manifest(out: &Path, manifest: &Manifest) -> Result<()> {
    let path = out.join(MANIFEST);
    let staged = out.join(format!("{MANIFEST}.partial"));
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut file = std::fs::File::create(&staged).map_err(io("create", &staged))?;
    file.write_all(&text).map_err(io("write", &staged))?;
    file.sync_all().map_err(io("write", &staged))?;
    std::fs::rename(&staged, &path).map_err(io("rename", &staged))?;
    sync_folder(out)
}

/// The seq of the newest archive rewrite in the audit log (erasure and retention rewrite
/// closed segments; each rewrite is audited).
async fn newest_rewrite(catalog: &Catalog) -> Result<Option<u64>> {
    Ok(catalog
        .newest_audit("archive.rewrite")
        .await?
        .map(|entry| entry.seq))
}

async fn wait_for_erasure(journal: &Path) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ERASURE_WAIT;
    while journal.exists() {
        if tokio::time::Instant::now() >= deadline {
            return Err(BackupError::ErasureUnderWay(journal.to_path_buf()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The archive's segments in order (any other file there is not part of the archive).
fn archive_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut segments = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(io("list", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("list", dir))?.path();
        if path.extension().is_some_and(|ext| ext == "avro") {
            segments.push(path);
        }
    }
    segments.sort();
    Ok(segments)
}

/// Every regular file of `extras`, a folder's files included, sorted.
fn extra_files(extras: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = extras.to_vec();
    while let Some(path) = pending.pop() {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                for entry in std::fs::read_dir(&path).map_err(io("list", &path))? {
                    pending.push(entry.map_err(io("list", &path))?.path());
                }
            }
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &path)(e)),
        }
    }
    files.sort();
    Ok(files)
}

/// `path` relative to `root`, `/`-separated, for the manifest.
fn relative_to(root: &Path, path: &Path) -> Result<String> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| BackupError::Outside(path.to_path_buf(), root.to_path_buf()))?;
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| BackupError::Outside(path.to_path_buf(), root.to_path_buf()))?;
    Ok(parts.join("/"))
}

/// Creates `dir` if needed and checks that it holds nothing.
fn prepare_empty(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(io("list", dir))?;
    if entries.next().is_some() {
        return Err(BackupError::NotEmpty(dir.to_path_buf()));
    }
    Ok(())
}

/// Removes everything inside `dir` (an earlier attempt's copy, a failed restore).
fn empty_folder(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        } else {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

struct Meter<'a> {
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl Meter<'_> {
    fn add(&mut self, bytes: u64) {
        self.done += bytes;
        (self.progress)(self.done, self.total.max(self.done));
    }
}

enum Failure {
    /// The source file no longer exists.
    SourceGone,
    Error(BackupError),
}

/// Copies `source` to `dest` (creating its folder), durably, and returns its length and
/// SHA-256 as read.
fn copy_hashed(source: &Path, dest: &Path, meter: &mut Meter) -> Result<(u64, String), Failure> {
    let mut input = match std::fs::File::open(source) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Failure::SourceGone),
        Err(e) => return Err(Failure::Error(io("open", source)(e))),
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::Error(io("create", parent)(e)))?;
    }
    let mut output =
        std::fs::File::create_new(dest).map_err(|e| Failure::Error(io("create", dest)(e)))?;
    let copied =
        drain(&mut input, source, Some((&mut output, dest)), meter).map_err(Failure::Error)?;
    output
        .sync_all()
        .map_err(|e| Failure::Error(io("write", dest)(e)))?;
    Ok(copied)
}

/// The manifest entry of a file already in the backup (the catalog's snapshot).
fn hash_in_place(path: &Path, name: &str, meter: &mut Meter) -> Result<FileEntry> {
    let mut file = std::fs::File::open(path).map_err(io("open", path))?;
    file.sync_all().map_err(io("write", path))?;
    let (bytes, sha256) = drain(&mut file, path, None, meter)?;
    Ok(FileEntry {
        path: name.to_owned(),
        bytes,
        sha256,
    })
}

/// Reads `input` to its end, writing it to `output` when given; its length and SHA-256.
fn drain(
    input: &mut std::fs::File,
    source: &Path,
    mut output: Option<(&mut std::fs::File, &Path)>,
    meter: &mut Meter,
) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(io("read", source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let Some((file, dest)) = output.as_mut() {
            file.write_all(&buffer[..n]).map_err(io("write", dest))?;
        }
        bytes += n as u64;
        meter.add(n as u64);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(io("read", path))?.len())
}

/// Makes the names of files created in `folder` durable.
fn sync_folder(folder: &Path) -> Result<()> {
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io("write", folder))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(data_dir: &Path) -> Layout {
        Layout {
            data_dir: data_dir.to_path_buf(),
            catalog: data_dir.join("catalog.db"),
            archive_dir: data_dir.join("archive"),
            store_dir: data_dir.join("store"),
            extras: vec![data_dir.join("signing.key"), data_dir.join("digests")],
            erasure_journal: data_dir.join("erasure.journal"),
        }
    }

    /// A data directory with a real catalog, two archive segments, a store file the
    /// catalog names and one it does not, and the extras.
    async fn data_dir(dir: &Path) -> Catalog {
        let layout = layout(dir);
        std::fs::create_dir_all(dir).expect("data dir");
        let catalog = Catalog::connect(&format!("sqlite://{}", layout.catalog.display()))
            .await
            .expect("catalog");
        std::fs::create_dir_all(&layout.archive_dir).expect("archive dir");
        std::fs::write(layout.archive_dir.join("segment-0000000001.avro"), b"first").expect("w");
        std::fs::write(
            layout.archive_dir.join("segment-0000000002.avro"),
            b"second",
        )
        .expect("w");
        std::fs::create_dir_all(layout.store_dir.join("chats")).expect("store dir");
        std::fs::write(layout.store_dir.join("chats/a.parquet"), b"registered").expect("w");
        std::fs::write(
            layout.store_dir.join("chats/stray.parquet"),
            b"not registered",
        )
        .expect("w");
        let change = chatvault_catalog::StoreChange {
            add_files: vec![chatvault_catalog::StoreFile {
                path: "chats/a.parquet".into(),
                table: "chats".into(),
                site_key: 1,
                month: "2024-01".into(),
                rows: 1,
                bytes: 10,
            }],
            ..Default::default()
        };
        catalog
            .commit_store_change(&change, 1)
            .await
            .expect("register");
        std::fs::write(dir.join("signing.key"), b"key").expect("w");
        std::fs::create_dir_all(dir.join("digests")).expect("digests");
        std::fs::write(dir.join("digests/digest-1.json"), b"{}").expect("w");
        catalog
    }

    fn no_progress() -> impl Fn(u64, u64) + Send + Sync {
        |_, _| {}
    }

    #[tokio::test]
    async fn a_restore_brings_back_what_the_backup_copied_and_nothing_else() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        let catalog = data_dir(&live).await;
        let out = root.path().join("backup");
        let report = backup(&catalog, &layout(&live), &out, "test", &no_progress())
            .await
            .expect("backup");
        assert_eq!(report.attempts, 1);
        let paths: Vec<&str> = report
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "catalog.db",
                "store/chats/a.parquet",
                "archive/segment-0000000001.avro",
                "archive/segment-0000000002.avro",
                "digests/digest-1.json",
                "signing.key"
            ]
        );

        let restored = root.path().join("restored");
        let manifest = restore(&out, &layout(&restored), &no_progress()).expect("restore");
        assert_eq!(manifest, report.manifest);
        for file in [
            "archive/segment-0000000002.avro",
            "store/chats/a.parquet",
            "signing.key",
        ] {
            assert_eq!(
                std::fs::read(restored.join(file)).expect("restored file"),
                std::fs::read(live.join(file)).expect("live file"),
                "{file}"
            );
        }
        assert!(!restored.join("store/chats/stray.parquet").exists());
        let copy = Catalog::connect(&format!(
            "sqlite://{}",
            restored.join("catalog.db").display()
        ))
        .await
        .expect("restored catalog");
        let registry = copy.store_snapshot().await.expect("registry");
        assert_eq!(registry.files.len(), 1);
    }

    #[tokio::test]
    async fn a_damaged_backup_restores_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        let catalog = data_dir(&live).await;
        let out = root.path().join("backup");
        backup(&catalog, &layout(&live), &out, "test", &no_progress())
            .await
            .expect("backup");
        std::fs::write(out.join("archive/segment-0000000002.avro"), b"secOnd").expect("damage");

        let restored = root.path().join("restored");
        let error = restore(&out, &layout(&restored), &no_progress()).expect_err("damaged");
        assert!(
            matches!(&error, BackupError::Damaged { path, .. } if path == "archive/segment-0000000002.avro"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&restored).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn backups_and_restores_go_only_into_empty_folders() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        let catalog = data_dir(&live).await;
        let error = backup(&catalog, &layout(&live), &live, "test", &no_progress())
            .await
            .expect_err("into the data directory itself");
        assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");

        let out = root.path().join("backup");
        backup(&catalog, &layout(&live), &out, "test", &no_progress())
            .await
            .expect("backup");
        let error = restore(&out, &layout(&live), &no_progress()).expect_err("over live data");
        assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
        assert!(live.join("archive/segment-0000000001.avro").exists());
    }

    #[test]
    fn a_manifest_cannot_place_files_outside_the_data_directory() {
        let layout = layout(Path::new("/data"));
        for path in ["../etc/passwd", "/etc/passwd", "archive/../../x", ""] {
            assert!(destination(&layout, path).is_err(), "{path}");
        }
        assert_eq!(
            destination(&layout, "archive/segment-1.avro").expect("inside"),
            Path::new("/data/archive/segment-1.avro")
        );
        assert_eq!(
            destination(&layout, "catalog.db").expect("catalog"),
            layout.catalog
        );
    }

    #[tokio::test]
    async fn a_folder_without_a_manifest_is_not_a_backup() {
        let root = tempfile::tempdir().expect("tempdir");
        let error = restore(root.path(), &layout(&root.path().join("d")), &no_progress())
            .expect_err("no manifest");
        assert!(matches!(error, BackupError::NoManifest(_)), "{error}");
    }
}
