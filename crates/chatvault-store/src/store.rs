use chatvault_archive::{replay_chunks, replay_final_versions, FinalVersions, Operation, Record};
use chatvault_catalog::{Catalog, StoreChange, StoreFile, StoreSnapshot};
use chatvault_model::{
    flatten, ChatDocument, ChatRow, FlatChat, LineRow, PageRow, SurveyRow, TableDef, TagRow, TABLES,
};
use polars::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::frame::TableBuilder;
use crate::order::in_file_order;
use crate::parquet::{temporary_path, write_parquet, FileKind, ZstdLevel};
use crate::rebuild::RebuildFiles;
use crate::{Result, StoreError};

const HIDE: &str = "HideBelow";
const DELETES_DIR: &str = "_deletes";
const TRASH_DIR: &str = "_trash";

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Flush once this many chats are buffered…
    pub flush_chats: usize,
    /// …or the oldest buffered change is this old.
    pub flush_age: Duration,
    /// A recovery's replay flushes every this many chats instead: every flush
    /// writes a file per table and partition, and with chats spread over many partitions
    /// small flushes make many small files, which the filesystem is slow to create and a
    /// compaction must merge again. Costs memory: two flushes' worth of chats are held.
    pub replay_flush_chats: usize,
    /// A rebuild writes each table and partition's rows a row group at a time, once they
    /// fill one (`row_group_rows`, or 64 MiB); the rows of all partitions waiting to fill
    /// one are kept up to this many bytes, past which the largest waiting ones are written
    /// as a smaller row group.
    pub rebuild_hold_bytes: usize,
    pub row_group_rows: usize,
    /// zstd level (1–22) of the files that stay: those a compaction or a rebuild writes.
    /// Level 1 encodes a rebuild about a tenth faster than zstd's default 3 and makes the
    /// store about a fifth larger; the store is derived from the archive, which dwarfs it.
    pub zstd_level: i32,
    /// Compact a partition once it has this many files.
    pub compact_min_files: usize,
    /// Compact everything once this many superseded/deleted chats await removal.
    pub compact_max_deletes: usize,
    /// Files replaced by a compaction or rebuild stay this long for readers that took
    /// their view before; zero removes them at once (a process without readers).
    pub retired_file_grace: Duration,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            flush_chats: 20_000,
            flush_age: Duration::from_secs(10),
            replay_flush_chats: 100_000,
            rebuild_hold_bytes: 1 << 30,
            row_group_rows: 128 * 1024,
            zstd_level: 1,
            compact_min_files: 8,
            compact_max_deletes: 50_000,
            retired_file_grace: Duration::from_secs(600),
        }
    }

    /// How the files that stay (a compaction's and a rebuild's) are written.
    fn merged_files(&self) -> FileKind {
        FileKind::Merged {
            zstd_level: self.zstd_level,
        }
    }
}

/// One change the store must mirror, in archive order.
#[derive(Debug, Clone)]
pub enum StoreUpdate {
    Upsert {
        seq: u64,
        /// The version's rows; `apply` numbers them with `seq`, so they may be flattened
        /// before the archive has numbered the version.
        flat: Box<FlatChat<'static>>,
        /// An earlier version may exist (the chat was updated): readers must hide it.
        supersedes: bool,
    },
    Delete {
        seq: u64,
        chat_uid: String,
    },
}

/// Which files a scan may skip: a hint the caller's own predicate must imply.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    pub sites: Option<Vec<i32>>,
    /// Started ≥ this (Chats partitions only carry Started).
    pub started_from: Option<chrono::NaiveDateTime>,
    /// Started < this.
    pub started_before: Option<chrono::NaiveDateTime>,
}

impl ScanFilter {
    fn admits(&self, site_key: i64, month: &str) -> bool {
        if let Some(sites) = &self.sites {
            if !sites.iter().any(|s| i64::from(*s) == site_key) {
                return false;
            }
        }
        if self.started_from.is_none() && self.started_before.is_none() {
            return true;
        }
        if month == NO_MONTH {
            return false;
        }
        let from_ok = self
            .started_from
            .is_none_or(|from| month >= month_of(Some(from)).as_str());
        let before_ok = self.started_before.is_none_or(|before| {
            month <= month_of(Some(before - chrono::Duration::microseconds(1))).as_str()
        });
        from_ok && before_ok
    }
}

const NO_MONTH: &str = "none";

fn month_of(started: Option<chrono::NaiveDateTime>) -> String {
    started.map_or_else(|| NO_MONTH.to_owned(), |t| t.format("%Y-%m").to_string())
}

#[derive(Debug, Clone)]
struct Buffered {
    seq: u64,
    site_key: i32,
    month: String,
    /// None: the chat was deleted.
    flat: Option<Arc<FlatChat<'static>>>,
    supersedes: bool,
}

/// What readers see: the registry's files, the hide list, and the buffer as frames.
struct View {
    files: Vec<StoreFile>,
    /// (ChatUID, HideBelow): rows of the chat with a smaller ArchiveSeq are not current.
    hide: Option<DataFrame>,
    buffer: [DataFrame; 5],
    /// Which buffered chats belong to each partition, for partition-wise scans.
    buffer_partitions: BTreeMap<Partition, Vec<String>>,
}

/// A partition of every table: a SiteKey and the month of the chat's Started
/// (`YYYY-MM`, or `none`, which sorts after every month).
pub type Partition = (i64, String);

struct State {
    buffer: HashMap<String, Buffered>,
    oldest_change: Option<Instant>,
    snapshot: StoreSnapshot,
    persisted_hide: Option<DataFrame>,
    generation: u64,
    view: Option<(u64, Arc<View>)>,
    /// While a rebuild replays the archive, readers keep the view from before it.
    frozen: Option<Arc<View>>,
}

/// One partition's rows, keyed by (SiteKey, month), as a frame per table.
type PartitionFrames = ((i32, String), [DataFrame; 5]);

/// A rebuild's worker hands its columns over once it has converted this many chats.
const HAND_OVER_CHATS: usize = 20_000;

/// Archived records a replay hands on at a time.
const REPLAY_CHUNK: usize = 2000;

/// A rebuild keeps at most this many files open (one per table and partition being
/// written), well below the usual limit of 1,024 open files per process.
const MAX_OPEN_REBUILD_FILES: usize = 512;

/// A rebuild appends the Chats rows of a partition up to this many at a time. A Chats
/// row has about ninety columns and a chat only one row: appended one by one, handing
/// each column over cost more than the values themselves (a seventh of a rebuild's CPU).
const CHATS_ROWS_AT_ONCE: usize = 128;

/// Chats a rebuild has converted to columns: table builders by partition.
#[derive(Default)]
struct Converted {
    partitions: BTreeMap<(i32, String), [TableBuilder; 5]>,
    chats: usize,
}

impl Converted {
    /// Flattens a chunk of archived final versions. Each chat's lines, answers, pages and
    /// tags are appended at once, while they are still in the cache; its Chats row waits
    /// for others of its partition, at most until the end of the chunk, whose documents
    /// its text borrows.
    fn add_chunk(&mut self, chunk: &FinalVersions) -> Result<()> {
        let mut waiting: HashMap<(i32, String), Vec<ChatRow<'_>>> = HashMap::new();
        for (seq, document) in chunk.documents() {
            let flat = flat_chat(seq, document)?;
            let partition = (flat.chat.site_key, month_of(flat.chat.started));
            let builders = self
                .partitions
                .entry(partition.clone())
                .or_insert_with(|| table_builders(&[]));
            put_child_rows(builders, &[&flat])?;
            let chats = waiting
                .entry(partition)
                .or_insert_with(|| Vec::with_capacity(CHATS_ROWS_AT_ONCE));
            chats.push(flat.chat);
            if chats.len() >= CHATS_ROWS_AT_ONCE {
                put_chats(builders, chats)?;
            }
            self.chats += 1;
        }
        for (partition, mut chats) in waiting {
            if let Some(builders) = self.partitions.get_mut(&partition) {
                put_chats(builders, &mut chats)?;
            }
        }
        Ok(())
    }

    /// What this holds, leaving builders for the same partitions, each sized for as many
    /// rows as it holds now: the next chats are much like the last, and builders that
    /// grew by doubling kept unused capacity until they were written.
    fn hand_over(&mut self) -> Converted {
        let next = Converted {
            partitions: self
                .partitions
                .iter()
                .map(|(partition, builders)| {
                    let next = builders.each_ref().map(TableBuilder::sized_alike);
                    (partition.clone(), next)
                })
                .collect(),
            chats: 0,
        };
        std::mem::replace(self, next)
    }

    /// The partitions as frames.
    fn finish(self) -> Result<Vec<PartitionFrames>> {
        self.partitions
            .into_iter()
            .map(|(partition, builders)| Ok((partition, finish_tables(builders)?)))
            .collect()
    }
}

/// Appends the waiting Chats rows to their partition's builders, and empties the wait.
fn put_chats(builders: &mut [TableBuilder; 5], chats: &mut Vec<ChatRow<'_>>) -> Result<()> {
    let rows: Vec<&ChatRow<'_>> = chats.iter().collect();
    ChatRow::put_columns(&rows, &mut builders[0])?;
    chats.clear();
    Ok(())
}

/// What a rebuild's workers share.
struct Shared<'a> {
    queue: &'a std::sync::Mutex<tokio::sync::mpsc::Receiver<FinalVersions>>,
    failed: &'a AtomicBool,
    replayed: &'a AtomicU64,
    handed_over: &'a tokio::sync::mpsc::Sender<Converted>,
}

/// A rebuild worker's loop (see [`Store::replay_converting`]): takes chunks of final
/// versions in turn, converts them, and hands its columns over every
/// [`HAND_OVER_CHATS`] chats and at the end.
fn convert_chunks(shared: &Shared<'_>) -> Result<()> {
    let mut converted = Converted::default();
    while !shared.failed.load(Ordering::Relaxed) && !shared.handed_over.is_closed() {
        let chunk = shared.queue.lock().map_err(|_| poisoned())?.blocking_recv();
        let Some(chunk) = chunk else { break };
        converted.add_chunk(&chunk)?;
        shared.replayed.fetch_add(chunk.passed, Ordering::Relaxed);
        if converted.chats >= HAND_OVER_CHATS
            && shared
                .handed_over
                .blocking_send(converted.hand_over())
                .is_err()
        {
            // Writing failed; that error is the one reported.
            return Ok(());
        }
    }
    let _ = shared.handed_over.blocking_send(converted);
    Ok(())
}

/// What one flush takes from the buffer, besides its rows.
struct Flush {
    max_seq: u64,
    /// (ChatUID, HideBelow) of the changes that supersede an earlier version.
    hide: Vec<(String, i64)>,
    chats: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FlushReport {
    pub chats: usize,
    pub files: usize,
    pub bytes: u64,
    pub flushed_seq: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactReport {
    pub partitions: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub deletes_applied: usize,
}

/// Handle to the store; clones share it.
#[derive(Clone)]
pub struct Store {
    config: Arc<StoreConfig>,
    catalog: Catalog,
    state: Arc<RwLock<State>>,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    files_opened: Arc<AtomicU64>,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn poisoned() -> StoreError {
    StoreError::Task("store state lock poisoned".into())
}

impl Store {
    /// Opens the store in `config.dir`, removing files a crashed flush left unregistered.
    pub async fn open(config: StoreConfig, catalog: Catalog) -> Result<Store> {
        // Refused here rather than at the first compaction, which may be hours away.
        ZstdLevel::try_new(config.zstd_level).map_err(|e| StoreError::ZstdLevel {
            level: config.zstd_level,
            reason: e.to_string(),
        })?;
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let snapshot = catalog.store_snapshot().await?;
        remove_orphans(&config.dir, &snapshot)?;
        let persisted_hide = load_hide(&config.dir, &snapshot.deletes)?;
        Ok(Store {
            config: Arc::new(config),
            catalog,
            state: Arc::new(RwLock::new(State {
                buffer: HashMap::new(),
                oldest_change: None,
                snapshot,
                persisted_hide,
                generation: 0,
                view: None,
                frozen: None,
            })),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            files_opened: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The first archive seq not yet in Parquet files.
    pub fn flushed_seq(&self) -> u64 {
        self.state
            .read()
            .map(|s| s.snapshot.flushed_seq)
            .unwrap_or_default()
    }

    /// Parquet files handed to scans so far (to prove partition pruning).
    pub fn files_opened(&self) -> u64 {
        self.files_opened.load(Ordering::Relaxed)
    }

    pub fn buffered_chats(&self) -> usize {
        self.state
            .read()
            .map(|s| s.buffer.len())
            .unwrap_or_default()
    }

    pub fn file_count(&self) -> usize {
        self.state
            .read()
            .map(|s| s.snapshot.files.len())
            .unwrap_or_default()
    }

    /// Mirrors changes the archive has recorded. Readers see them at once (the buffer is
    /// part of every scan); they reach Parquet at the next flush.
    pub fn apply(&self, updates: Vec<StoreUpdate>) -> Result<()> {
        let prepared: Vec<(String, Buffered)> = updates.into_iter().map(buffered_of).collect();
        let mut state = self.state.write().map_err(|_| poisoned())?;
        for (uid, b) in prepared {
            match state.buffer.get(&uid) {
                Some(existing) if existing.seq >= b.seq => {}
                Some(existing) => {
                    let supersedes = b.supersedes || existing.supersedes;
                    state.buffer.insert(uid, Buffered { supersedes, ..b });
                }
                None => {
                    state.buffer.insert(uid, b);
                }
            }
        }
        state.oldest_change.get_or_insert_with(Instant::now);
        state.generation += 1;
        Ok(())
    }

    /// True when the buffer is due for a flush.
    pub fn flush_due(&self) -> bool {
        self.state.read().is_ok_and(|s| {
            s.buffer.len() >= self.config.flush_chats
                || s.oldest_change
                    .is_some_and(|t| t.elapsed() >= self.config.flush_age)
        })
    }

    fn view(&self) -> Result<Arc<View>> {
        {
            let state = self.state.read().map_err(|_| poisoned())?;
            if let Some(frozen) = &state.frozen {
                return Ok(frozen.clone());
            }
            if let Some((generation, view)) = &state.view {
                if *generation == state.generation {
                    return Ok(view.clone());
                }
            }
        }
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let buffered: Vec<&Buffered> = state.buffer.values().collect();
        let buffer = buffer_frames(&buffered)?;
        let buffer_hide: Vec<(&str, i64)> = state
            .buffer
            .iter()
            .filter(|(_, b)| b.supersedes)
            .map(|(uid, b)| (uid.as_str(), b.seq as i64))
            .collect();
        let buffer_hide = (!buffer_hide.is_empty())
            .then(|| hide_frame(&buffer_hide))
            .transpose()?;
        let hide = stack_hide(state.persisted_hide.clone(), buffer_hide)?;
        let hide = hide.map(latest_hide).transpose()?;
        let mut buffer_partitions: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for (uid, b) in &state.buffer {
            buffer_partitions
                .entry((i64::from(b.site_key), b.month.clone()))
                .or_default()
                .push(uid.clone());
        }
        let view = Arc::new(View {
            files: state.snapshot.files.clone(),
            hide,
            buffer,
            buffer_partitions,
        });
        let generation = state.generation;
        state.view = Some((generation, view.clone()));
        Ok(view)
    }

    /// The current rows of `table`: registered files (pruned by `filter`, superseded rows
    /// hidden) plus the buffer. Filters and projections the caller adds are pushed into
    /// the Parquet scan by polars.
    pub fn scan(&self, table: &str, filter: &ScanFilter) -> Result<LazyFrame> {
        let index = table_index(table)?;
        let view = self.view()?;
        let files = view
            .files
            .iter()
            .filter(|f| f.table == table && filter.admits(f.site_key, &f.month));
        self.scan_files(&view, files, view.buffer[index].clone().lazy())
    }

    /// The partitions of `table` that `filter` admits, in (SiteKey, month) order, so a
    /// reader can walk the table one partition at a time in a stable order.
    pub fn partitions(&self, table: &str, filter: &ScanFilter) -> Result<Vec<Partition>> {
        table_index(table)?;
        let view = self.view()?;
        let mut out: Vec<Partition> = view
            .files
            .iter()
            .filter(|f| f.table == table)
            .map(|f| (f.site_key, f.month.clone()))
            .chain(view.buffer_partitions.keys().cloned())
            .filter(|(site, month)| filter.admits(*site, month))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The current rows of one partition of `table` (files and buffer).
    pub fn scan_partition(&self, table: &str, partition: &Partition) -> Result<LazyFrame> {
        let index = table_index(table)?;
        let view = self.view()?;
        let (site, month) = partition;
        let files = view
            .files
            .iter()
            .filter(|f| f.table == table && f.site_key == *site && &f.month == month);
        let buffered = match view.buffer_partitions.get(partition) {
            Some(uids) if view.buffer[index].height() > 0 => {
                let uids = Series::new("uids".into(), uids.as_slice());
                view.buffer[index]
                    .clone()
                    .lazy()
                    .filter(col("ChatUID").is_in(lit(uids).implode(true), false))
            }
            _ => view.buffer[index].clone().lazy().slice(0, 0),
        };
        self.scan_files(&view, files, buffered)
    }

    fn scan_files<'a>(
        &self,
        view: &View,
        files: impl Iterator<Item = &'a StoreFile>,
        buffered: LazyFrame,
    ) -> Result<LazyFrame> {
        let paths: Vec<PlRefPath> = files
            .map(|f| PlRefPath::try_from_path(&self.config.dir.join(&f.path)))
            .collect::<PolarsResult<_>>()?;
        self.files_opened
            .fetch_add(paths.len() as u64, Ordering::Relaxed);
        if paths.is_empty() {
            return Ok(buffered);
        }
        let mut files = LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())?;
        if let Some(hide) = &view.hide {
            files = hide_superseded(files, hide);
        }
        Ok(concat([files, buffered], UnionArgs::default())?)
    }

    /// Per site and day: the derived DaySummary table.
    pub fn day_summary(&self, filter: &ScanFilter) -> Result<LazyFrame> {
        Ok(day_summary_of(self.scan("Chats", filter)?))
    }

    /// Writes the buffer to Parquet and registers the files in one catalog transaction.
    pub async fn flush(&self) -> Result<Option<FlushReport>> {
        self.flush_files().await
    }

    /// Writes the buffer to Parquet and registers the files in one catalog transaction.
    async fn flush_files(&self) -> Result<Option<FlushReport>> {
        let _guard = self.write_lock.lock().await;
        let entries: Vec<(String, Buffered)> = {
            let state = self.state.read().map_err(|_| poisoned())?;
            state
                .buffer
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let Some(flush) = flush_of(&entries) else {
            return Ok(None);
        };
        let taken: Vec<(String, u64)> = entries.iter().map(|(k, b)| (k.clone(), b.seq)).collect();
        let partitions = joined(tokio::task::spawn_blocking(move || {
            buffer_partitions(&entries)
        }))
        .await?;
        self.write_and_register(partitions, flush, &taken)
            .await
            .map(Some)
    }

    /// Writes converted partitions as new files and registers them (and the flush's
    /// hide entries) in one catalog transaction; `taken` leaves the buffer then.
    async fn write_and_register(
        &self,
        partitions: Vec<PartitionFrames>,
        flush: Flush,
        taken: &[(String, u64)],
    ) -> Result<FlushReport> {
        let dir = self.config.dir.clone();
        let row_group = self.config.row_group_rows;
        let max_seq = flush.max_seq;
        let tag = format!(
            "{:012}-{}",
            max_seq,
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let (change, report) = joined(tokio::task::spawn_blocking(move || {
            write_flush(&dir, partitions, flush, &tag, row_group)
        }))
        .await?;
        self.catalog.commit_store_change(&change, now_us()).await?;
        let new_hide = load_hide(
            &self.config.dir,
            &change
                .add_deletes
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>(),
        )?;
        let removed = {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let removed = take_from_buffer(&mut state, taken);
            state
                .snapshot
                .files
                .extend(change.add_files.iter().cloned());
            state
                .snapshot
                .deletes
                .extend(change.add_deletes.iter().map(|(p, _)| p.clone()));
            state.snapshot.flushed_seq = max_seq + 1;
            state.persisted_hide = stack_hide(state.persisted_hide.take(), new_hide)?;
            removed
        };
        release(removed);
        tracing::debug!(chats = report.chats, files = report.files, "store flush");
        Ok(report)
    }

    /// With `full`, merges each partition's files into one, drops superseded and deleted
    /// rows and retires all hide entries; otherwise merges, in each partition, the files
    /// of any size tier that has filled up (see `size_tiers_to_merge`).
    pub async fn compact(&self, full: bool) -> Result<CompactReport> {
        let _guard = self.write_lock.lock().await;
        let (snapshot, hide) = {
            let state = self.state.read().map_err(|_| poisoned())?;
            (state.snapshot.clone(), state.persisted_hide.clone())
        };
        let full = full
            || !snapshot.deletes.is_empty()
                && hide
                    .as_ref()
                    .is_some_and(|h| h.height() >= self.config.compact_max_deletes);
        let mut groups: BTreeMap<(String, i64, String), Vec<StoreFile>> = BTreeMap::new();
        for f in &snapshot.files {
            groups
                .entry((f.table.clone(), f.site_key, f.month.clone()))
                .or_default()
                .push(f.clone());
        }
        let min_files = self.config.compact_min_files.max(2);
        let chosen: Vec<Merge> = if full {
            groups
                .into_iter()
                .map(|(partition, files)| Merge { partition, files })
                .collect()
        } else {
            groups
                .into_iter()
                .flat_map(|(partition, files)| {
                    size_tiers_to_merge(files, min_files)
                        .into_iter()
                        .map(move |files| Merge {
                            partition: partition.clone(),
                            files,
                        })
                })
                .collect()
        };
        let mut report = CompactReport {
            deletes_applied: if full {
                hide.as_ref().map_or(0, DataFrame::height)
            } else {
                0
            },
            ..CompactReport::default()
        };
        if chosen.is_empty() && (!full || snapshot.deletes.is_empty()) {
            return Ok(report);
        }
        let dir = self.config.dir.clone();
        let row_group = self.config.row_group_rows;
        let merged = self.config.merged_files();
        let hide_for_rewrite = if full {
            hide.clone().map(latest_hide).transpose()?
        } else {
            None
        };
        let (change, report) = joined(tokio::task::spawn_blocking(
            move || -> Result<(StoreChange, CompactReport)> {
                let mut change = StoreChange::default();
                let stamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let numbered: Vec<_> = chosen.iter().enumerate().collect();
                let merged = on_every_core(&numbered, |(n, merge)| {
                    let (table, site, month) = &merge.partition;
                    let paths: Vec<PlRefPath> = merge
                        .files
                        .iter()
                        .map(|f| PlRefPath::try_from_path(&dir.join(&f.path)))
                        .collect::<PolarsResult<_>>()?;
                    let mut lf =
                        LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())?;
                    if let Some(h) = &hide_for_rewrite {
                        lf = hide_superseded(lf, h);
                    }
                    let mut df = in_file_order(&lf.collect()?)?;
                    if df.height() == 0 {
                        return Ok(None);
                    }
                    let rel = partition_path(table, *site, month, &format!("compact-{stamp}-{n}"));
                    let bytes = write_parquet(&dir, &rel, &mut df, row_group, merged)?;
                    Ok(Some(StoreFile {
                        path: rel,
                        table: table.clone(),
                        site_key: *site,
                        month: month.clone(),
                        rows: df.height() as i64,
                        bytes: bytes as i64,
                    }))
                })?;
                for (Merge { files, .. }, merged) in chosen.iter().zip(merged) {
                    report.partitions += 1;
                    report.files_before += files.len();
                    change
                        .remove_files
                        .extend(files.iter().map(|f| f.path.clone()));
                    if let Some(file) = merged {
                        change.add_files.push(file);
                        report.files_after += 1;
                    }
                }
                if hide_for_rewrite.is_some() || full {
                    change.remove_deletes = snapshot.deletes.clone();
                }
                make_durable(&dir, change.add_files.iter().map(|f| f.path.as_str()))?;
                Ok((change, report))
            },
        ))
        .await?;
        self.catalog.commit_store_change(&change, now_us()).await?;
        {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let removed: HashSet<&String> = change.remove_files.iter().collect();
            state.snapshot.files.retain(|f| !removed.contains(&f.path));
            state
                .snapshot
                .files
                .extend(change.add_files.iter().cloned());
            if !change.remove_deletes.is_empty() {
                let retired: HashSet<&String> = change.remove_deletes.iter().collect();
                state.snapshot.deletes.retain(|d| !retired.contains(d));
                state.persisted_hide = load_hide(&self.config.dir, &state.snapshot.deletes)?;
            }
            state.generation += 1;
        }
        retire(
            &self.config.dir,
            self.config.retired_file_grace,
            change.remove_files.iter().chain(&change.remove_deletes),
        )?;
        Ok(report)
    }

    /// Replays archive records the Parquet files do not hold yet (after a crash the
    /// buffer is gone; the archive still has everything). Returns records replayed.
    pub async fn recover(
        &self,
        archive_dir: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let from = self.flushed_seq();
        // No chunk spans more than one flush.
        let chunk = REPLAY_CHUNK.min(self.config.replay_flush_chats.max(1));
        let mut rx = replay_chunks(archive_dir.to_owned(), from, chunk, Ok::<_, StoreError>);
        let mut n = 0u64;
        // A flush writes on other threads while the next records are flattened; the one
        // before it must have finished first, so at most two flushes' worth of chats are
        // in memory.
        let mut flushing: Option<tokio::task::JoinHandle<Result<Option<FlushReport>>>> = None;
        let mut unflushed = 0usize;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            let chunk_len = chunk.len();
            n += chunk_len as u64;
            // Parsing and flattening are most of a replay's work: spread them over the
            // cores while the archive reader decodes the next chunk.
            let updates = joined(tokio::task::spawn_blocking(move || {
                on_every_core(&chunk, replayed_update)
            }))
            .await?;
            self.apply(updates)?;
            progress(n);
            // Counted here, not as the buffer's size: the buffer still holds what the
            // flush under way is writing, and would start the next one far too soon.
            unflushed += chunk_len;
            if unflushed >= self.config.replay_flush_chats {
                unflushed = 0;
                if let Some(previous) = flushing.take() {
                    joined(previous).await?;
                }
                let store = self.clone();
                flushing = Some(tokio::spawn(async move { store.flush_files().await }));
            }
        }
        if let Some(previous) = flushing.take() {
            joined(previous).await?;
        }
        self.flush_files().await?;
        Ok(n)
    }

    /// Recreates the whole store from the archive. Readers go on seeing the store as it
    /// was until the new one is complete: the old files stay where they are, no longer
    /// registered, and are retired only then. After a crash they, and the new files not
    /// yet registered, are orphans that opening removes, and recovery replays the archive
    /// from the start. Nothing else may apply changes meanwhile (the CLI holds the data
    /// directory's lock; `serve` rebuilds only as the ingest pipeline's exclusive work).
    pub async fn rebuild(
        &self,
        archive_dir: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let old = {
            let _guard = self.write_lock.lock().await;
            let before = self.view()?;
            let old = self.catalog.store_snapshot().await?;
            self.catalog.reset_store().await?;
            let mut state = self.state.write().map_err(|_| poisoned())?;
            state.frozen = Some(before);
            state.buffer.clear();
            state.oldest_change = None;
            state.snapshot = StoreSnapshot::default();
            state.persisted_hide = None;
            state.generation += 1;
            old
        };
        let rebuilt = self.rebuild_files(archive_dir, progress).await;
        {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            state.frozen = None;
            state.generation += 1;
        }
        if rebuilt.is_ok() {
            retire(
                &self.config.dir,
                self.config.retired_file_grace,
                old.files.iter().map(|f| &f.path).chain(&old.deletes),
            )?;
        }
        rebuilt
    }

    /// A rebuild's work: converts each chat's final version only (a deleted chat has
    /// none), read from the newest segment back, writes each table and partition's file
    /// as its rows come, and registers every file with the watermark past the whole
    /// archive in one transaction. So the new store holds no superseded
    /// or deleted row and needs no hide entries, nor a merge at the end.
    async fn rebuild_files(
        &self,
        archive_dir: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let started = Instant::now();
        let (rx, reading) = replay_final_versions(archive_dir.to_owned(), REPLAY_CHUNK);
        let tag = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_string();
        let files = RebuildFiles::new(
            self.config.dir.clone(),
            tag,
            self.config.row_group_rows,
            self.config.rebuild_hold_bytes,
            MAX_OPEN_REBUILD_FILES,
            self.config.merged_files(),
        );
        let (n, files) = self.replay_converting(rx, files, progress).await?;
        // A reading error ends the chunks early: the files are not registered.
        let next_seq = reading
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        tracing::info!(
            records = n,
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: archive replayed; finishing the files"
        );
        let started = Instant::now();
        let dir = self.config.dir.clone();
        let add_files = joined(tokio::task::spawn_blocking(move || {
            let files = files.finish()?;
            make_durable(&dir, files.iter().map(|f| f.path.as_str()))?;
            Ok(files)
        }))
        .await?;
        let change = StoreChange {
            add_files,
            flushed_seq: next_seq,
            ..StoreChange::default()
        };
        let _guard = self.write_lock.lock().await;
        self.catalog.commit_store_change(&change, now_us()).await?;
        {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            state
                .snapshot
                .files
                .extend(change.add_files.iter().cloned());
            if let Some(seq) = next_seq {
                state.snapshot.flushed_seq = seq;
            }
        }
        tracing::info!(
            files = change.add_files.len(),
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: files finished and registered"
        );
        Ok(n)
    }

    /// A rebuild's replay. A worker per core takes the next chunk of records as soon as
    /// it is done with the last (waiting for the slower of two halves of every chunk left
    /// a core idle an eighth of the time), flattens each final version and turns it into
    /// columns of its own at once, while its rows are still in the cache, and hands the
    /// columns over every [`HAND_OVER_CHATS`] chats to be written into `files` here.
    async fn replay_converting(
        &self,
        rx: tokio::sync::mpsc::Receiver<FinalVersions>,
        files: RebuildFiles,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(u64, RebuildFiles)> {
        let cores = cores();
        let queue = Arc::new(std::sync::Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let replayed = Arc::new(AtomicU64::new(0));
        let (handed_over, mut to_write) = tokio::sync::mpsc::channel::<Converted>(cores);
        let workers: Vec<tokio::task::JoinHandle<Result<()>>> = (0..cores)
            .map(|_| {
                let (queue, failed, replayed) = (queue.clone(), failed.clone(), replayed.clone());
                let handed_over = handed_over.clone();
                tokio::task::spawn_blocking(move || {
                    let shared = Shared {
                        queue: &queue,
                        failed: &failed,
                        replayed: &replayed,
                        handed_over: &handed_over,
                    };
                    let result = convert_chunks(&shared);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        drop(handed_over);
        let replayed_so_far = replayed.clone();
        // Owns the receiver: once it ends, on failure too, the workers stop at their next
        // hand-over.
        let written: Result<RebuildFiles> = async move {
            let mut files = files;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    part = to_write.recv() => {
                        let Some(part) = part else { break };
                        files = joined(tokio::task::spawn_blocking(move || {
                            for ((site, month), frames) in part.finish()? {
                                files.add(site, &month, frames)?;
                            }
                            Ok(files)
                        }))
                        .await?;
                    }
                    _ = tick.tick() => progress(replayed_so_far.load(Ordering::Relaxed)),
                }
            }
            Ok(files)
        }
        .await;
        for worker in workers {
            joined(worker).await?;
        }
        let files = written?;
        let n = replayed.load(Ordering::Relaxed);
        progress(n);
        Ok((n, files))
    }

    /// (ChatUID → ArchiveSeq) of every chat the store currently holds, for `verify`.
    pub fn current_versions(&self) -> Result<HashMap<String, Vec<i64>>> {
        let df = self
            .scan("Chats", &ScanFilter::default())?
            .select([col("ChatUID"), col("ArchiveSeq")])
            .collect()?;
        let uids = df.column("ChatUID")?.str()?.clone();
        let seqs = df.column("ArchiveSeq")?.i64()?.clone();
        let mut out: HashMap<String, Vec<i64>> = HashMap::with_capacity(df.height());
        for (uid, seq) in uids.iter().zip(seqs.iter()) {
            if let (Some(uid), Some(seq)) = (uid, seq) {
                out.entry(uid.to_owned()).or_default().push(seq);
            }
        }
        Ok(out)
    }

    /// Flushes and compacts in the background until [`Background::stop`]. Stopping waits
    /// for a flush or compaction under way: cancelling one between its catalog commit and
    /// the in-memory update would make the next flush write the same rows again.
    pub fn spawn_background(&self) -> Background {
        let store = self.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                if store.flush_due() {
                    if let Err(e) = store.flush().await {
                        tracing::error!(error = %e, "store flush failed; will retry");
                        continue;
                    }
                    if let Err(e) = store.compact(false).await {
                        tracing::error!(error = %e, "store compaction failed; will retry");
                    }
                }
            }
        });
        Background { stop, handle }
    }
}

/// The store's background flusher; see [`Store::spawn_background`].
#[must_use = "the flusher runs until stopped"]
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Lets a flush or compaction under way finish, then ends the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "store background task ended abnormally");
        }
    }
}

/// One merge a compaction makes: the files of a partition's table (all of them, or
/// one size tier).
struct Merge {
    partition: (String, i64, String),
    files: Vec<StoreFile>,
}

/// A change as the buffer keeps it, keyed by its ChatUID.
fn buffered_of(update: StoreUpdate) -> (String, Buffered) {
    match update {
        StoreUpdate::Upsert {
            seq,
            mut flat,
            supersedes,
        } => {
            flat.set_archive_seq(seq as i64);
            let uid = flat.chat.chat_uid.clone();
            let b = Buffered {
                seq,
                site_key: flat.chat.site_key,
                month: month_of(flat.chat.started),
                flat: Some(Arc::from(flat)),
                supersedes,
            };
            (uid, b)
        }
        StoreUpdate::Delete { seq, chat_uid } => (
            chat_uid,
            Buffered {
                seq,
                site_key: 0,
                month: NO_MONTH.into(),
                flat: None,
                supersedes: true,
            },
        ),
    }
}

/// What a flush of `entries` records besides their rows; None when there are none.
fn flush_of(entries: &[(String, Buffered)]) -> Option<Flush> {
    Some(Flush {
        max_seq: entries.iter().map(|(_, b)| b.seq).max()?,
        hide: entries
            .iter()
            .filter(|(_, b)| b.supersedes)
            .map(|(uid, b)| (uid.clone(), b.seq as i64))
            .collect(),
        chats: entries.len(),
    })
}

/// The store's change for one record a recovery replays. The chat's earlier version may
/// be in files already, so an upsert always hides older rows.
fn replayed_update(r: &Record) -> Result<StoreUpdate> {
    match r.entry.operation {
        Operation::Delete => Ok(StoreUpdate::Delete {
            seq: r.seq,
            chat_uid: r.entry.chat_uid.clone(),
        }),
        Operation::Upsert => Ok(StoreUpdate::Upsert {
            seq: r.seq,
            flat: Box::new(flat_chat(r.seq, &r.entry.document)?.into_owned()),
            supersedes: true,
        }),
    }
}

/// The rows of the archived document of record `seq`.
fn flat_chat(seq: u64, document: &[u8]) -> Result<FlatChat<'_>> {
    let document =
        ChatDocument::from_json(document).map_err(|e| StoreError::BadArchivedDocument {
            seq,
            reason: e.to_string(),
        })?;
    Ok(flatten(document, seq as i64))
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `work` on every item, spread over one thread per core (partitions are small, so
/// polars alone keeps one core busy); results in the items' order, the first error wins.
pub(crate) fn on_every_core<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    on_threads(cores(), items, work)
}

/// `work` on every item from up to `threads` threads taking the next item in turn;
/// results in the items' order, the first error wins.
fn on_threads<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(&work).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<R>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let result = work(item);
                        failed.fetch_or(result.is_err(), Ordering::Relaxed);
                        out.push((i, result));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    if done.len() < items.len() && !failed.load(Ordering::Relaxed) {
        return Err(StoreError::Task("a store worker thread panicked".into()));
    }
    done.into_iter().map(|(_, r)| r).collect()
}

async fn joined<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    task.await.map_err(|e| StoreError::Task(e.to_string()))?
}

/// Files of one partition below this size are all of the smallest tier.
const TIER_BASE_BYTES: i64 = 1 << 20;

/// Size-tiered compaction: files fall into tiers a factor of `min_files` apart in size,
/// and a tier with `min_files` files is merged into one file of the next tier. Each row
/// is rewritten about log(partition size) times, not once per compaction (merging a
/// partition's large file with every few new small ones made a long import quadratic),
/// and a partition keeps at most `min_files - 1` files per tier.
fn size_tiers_to_merge(files: Vec<StoreFile>, min_files: usize) -> Vec<Vec<StoreFile>> {
    let factor = min_files.max(2) as f64;
    let mut tiers: BTreeMap<u32, Vec<StoreFile>> = BTreeMap::new();
    for file in files {
        let tier = if file.bytes < TIER_BASE_BYTES {
            0
        } else {
            1 + ((file.bytes as f64 / TIER_BASE_BYTES as f64).ln() / factor.ln()) as u32
        };
        tiers.entry(tier).or_default().push(file);
    }
    tiers
        .into_values()
        .filter(|tier| tier.len() >= min_files)
        .collect()
}

fn buffer_frames(buffered: &[&Buffered]) -> Result<[DataFrame; 5]> {
    let flats: Vec<&FlatChat<'_>> = buffered.iter().filter_map(|b| b.flat.as_deref()).collect();
    let mut builders = table_builders(&flats);
    put_flats(&mut builders, &flats)?;
    finish_tables(builders)
}

/// A builder for every table, sized for `flats`' rows.
fn table_builders(flats: &[&FlatChat<'_>]) -> [TableBuilder; 5] {
    let rows = |count: fn(&FlatChat<'_>) -> usize| flats.iter().map(|f| count(f)).sum::<usize>();
    [
        TableBuilder::new(&ChatRow::TABLE, flats.len()),
        TableBuilder::new(&LineRow::TABLE, rows(|f| f.lines.len())),
        TableBuilder::new(&SurveyRow::TABLE, rows(|f| f.surveys.len())),
        TableBuilder::new(&PageRow::TABLE, rows(|f| f.pages.len())),
        TableBuilder::new(&TagRow::TABLE, rows(|f| f.tags.len())),
    ]
}

/// Appends the rows of `flats` to the table builders, in `TABLES` order.
fn put_flats(builders: &mut [TableBuilder; 5], flats: &[&FlatChat<'_>]) -> Result<()> {
    let chats: Vec<&ChatRow<'_>> = flats.iter().map(|f| &f.chat).collect();
    ChatRow::put_columns(&chats, &mut builders[0])?;
    put_child_rows(builders, flats)
}

/// Appends the rows of `flats` to every table builder but Chats'.
fn put_child_rows(builders: &mut [TableBuilder; 5], flats: &[&FlatChat<'_>]) -> Result<()> {
    let [_, lines_to, surveys_to, pages_to, tags_to] = builders;
    let lines: Vec<&LineRow<'_>> = flats.iter().flat_map(|f| &f.lines).collect();
    let surveys: Vec<&SurveyRow<'_>> = flats.iter().flat_map(|f| &f.surveys).collect();
    let pages: Vec<&PageRow<'_>> = flats.iter().flat_map(|f| &f.pages).collect();
    let tags: Vec<&TagRow<'_>> = flats.iter().flat_map(|f| &f.tags).collect();
    LineRow::put_columns(&lines, lines_to)?;
    SurveyRow::put_columns(&surveys, surveys_to)?;
    PageRow::put_columns(&pages, pages_to)?;
    TagRow::put_columns(&tags, tags_to)?;
    Ok(())
}

fn finish_tables(builders: [TableBuilder; 5]) -> Result<[DataFrame; 5]> {
    let [chats, lines, surveys, pages, tags] = builders.map(TableBuilder::finish);
    Ok([chats?, lines?, surveys?, pages?, tags?])
}

/// (ChatUID, HideBelow) pairs as a hide frame.
fn hide_frame<S: AsRef<str>>(pairs: &[(S, i64)]) -> Result<DataFrame> {
    let (uids, seqs): (Vec<&str>, Vec<i64>) =
        pairs.iter().map(|(uid, seq)| (uid.as_ref(), *seq)).unzip();
    Ok(DataFrame::new(
        uids.len(),
        vec![
            Column::new("ChatUID".into(), uids),
            Column::new(HIDE.into(), seqs),
        ],
    )?)
}

/// Two sets of hide entries as one; either may be absent.
fn stack_hide(a: Option<DataFrame>, b: Option<DataFrame>) -> Result<Option<DataFrame>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(a.vstack(&b)?),
        (a, b) => a.or(b),
    })
}

/// One hide bound per chat: the newest change wins. Joining against several bounds for
/// one chat would keep a row that an older bound lets through.
fn latest_hide(hide: DataFrame) -> PolarsResult<DataFrame> {
    hide.lazy()
        .group_by([col("ChatUID")])
        .agg([col(HIDE).max()])
        .collect()
}

/// Drops rows of chats whose newer version (or delete) is recorded in `hide` (one row
/// per chat, see `latest_hide`).
fn hide_superseded(rows: LazyFrame, hide: &DataFrame) -> LazyFrame {
    rows.join(
        hide.clone().lazy(),
        [col("ChatUID")],
        [col("ChatUID")],
        JoinArgs::new(JoinType::Left),
    )
    .filter(col(HIDE).is_null().or(col("ArchiveSeq").gt_eq(col(HIDE))))
    .drop(Selector::ByName {
        names: Arc::new([HIDE.into()]),
        strict: true,
    })
}

/// Scan options: the registry already pruned partitions, and SiteKey is a real column,
/// so the Hive path segments must not become extra columns.
fn scan_args() -> ScanArgsParquet {
    ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        ..ScanArgsParquet::default()
    }
}

pub(crate) fn partition_path(table: &str, site: i64, month: &str, name: &str) -> String {
    format!("{table}/SiteKey={site}/Month={month}/{name}.parquet")
}

/// At most this many fsyncs in flight: the disk and the filesystem's journal batch
/// concurrent ones (here one at a time took 1.8 ms a file, 8 or more at once 0.1 ms).
const PARALLEL_FSYNCS: usize = 32;

/// Syncs the files [`write_parquet`] wrote and renames each into place, before any is
/// registered: a flush writes hundreds of small files, and syncing them one by one was
/// most of its time.
fn make_durable<'a>(dir: &Path, rels: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let paths: Vec<PathBuf> = rels.into_iter().map(|rel| dir.join(rel)).collect();
    on_threads(PARALLEL_FSYNCS, &paths, |path| {
        let tmp = temporary_path(path);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })?;
    Ok(())
}

/// Removes what a flush took from the buffer: only those versions, not a newer version
/// of the same chat, nor an older one, applied while it was being written. Returns them
/// for [`release`], so that freeing their rows does not happen under the state lock.
#[must_use = "the removed chats are freed by `release`, away from the state lock"]
fn take_from_buffer(state: &mut State, taken: &[(String, u64)]) -> Vec<Buffered> {
    let removed = taken
        .iter()
        .filter_map(|(uid, seq)| match state.buffer.get(uid) {
            Some(b) if b.seq == *seq => state.buffer.remove(uid),
            _ => None,
        })
        .collect();
    state.oldest_change = if state.buffer.is_empty() {
        None
    } else {
        Some(Instant::now())
    };
    state.generation += 1;
    removed
}

/// Frees flushed chats on a blocking thread. A flush's chats are millions of small
/// strings: freeing them under the state lock stalled ingest and replay (a tenth of a
/// rebuild's time).
fn release(removed: Vec<Buffered>) {
    if !removed.is_empty() {
        drop(tokio::task::spawn_blocking(move || drop(removed)));
    }
}

/// The buffered chats as frames of every table, one set per partition, converted on
/// every core.
fn buffer_partitions(entries: &[(String, Buffered)]) -> Result<Vec<PartitionFrames>> {
    let mut partitions: BTreeMap<(i32, &str), Vec<&Buffered>> = BTreeMap::new();
    for (_, b) in entries {
        if b.flat.is_some() {
            partitions
                .entry((b.site_key, b.month.as_str()))
                .or_default()
                .push(b);
        }
    }
    let partitions: Vec<((i32, &str), Vec<&Buffered>)> = partitions.into_iter().collect();
    let frames = on_every_core(&partitions, |(_, group)| buffer_frames(group))?;
    Ok(partitions
        .iter()
        .map(|((site, month), _)| (*site, (*month).to_owned()))
        .zip(frames)
        .collect())
}

fn write_flush(
    dir: &Path,
    partitions: Vec<PartitionFrames>,
    flush: Flush,
    tag: &str,
    row_group: usize,
) -> Result<(StoreChange, FlushReport)> {
    let mut change = StoreChange {
        flushed_seq: Some(flush.max_seq + 1),
        ..StoreChange::default()
    };
    let mut report = FlushReport {
        chats: flush.chats,
        flushed_seq: flush.max_seq + 1,
        ..FlushReport::default()
    };
    let partitions: Vec<std::sync::Mutex<Option<PartitionFrames>>> = partitions
        .into_iter()
        .map(|p| std::sync::Mutex::new(Some(p)))
        .collect();
    let written = on_every_core(&partitions, |slot| {
        // Taken out so that each partition's frames are freed as soon as they are written.
        let Some(((site, month), frames)) = slot.lock().map_err(|_| poisoned())?.take() else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for (table, mut df) in TABLES.iter().zip(frames) {
            if df.height() == 0 {
                continue;
            }
            df = in_file_order(&df)?;
            let rel = partition_path(table.name, i64::from(site), &month, &format!("part-{tag}"));
            let bytes = write_parquet(dir, &rel, &mut df, row_group, FileKind::Flush)?;
            files.push(StoreFile {
                path: rel,
                table: table.name.to_owned(),
                site_key: i64::from(site),
                month: month.clone(),
                rows: df.height() as i64,
                bytes: bytes as i64,
            });
        }
        Ok(files)
    })?;
    for file in written.into_iter().flatten() {
        report.files += 1;
        report.bytes += file.bytes as u64;
        change.add_files.push(file);
    }
    if !flush.hide.is_empty() {
        let mut df = hide_frame(&flush.hide)?;
        let rel = format!("{DELETES_DIR}/deletes-{tag}.parquet");
        write_parquet(dir, &rel, &mut df, row_group, FileKind::Flush)?;
        change.add_deletes.push((rel, df.height() as i64));
    }
    make_durable(
        dir,
        change
            .add_files
            .iter()
            .map(|f| f.path.as_str())
            .chain(change.add_deletes.iter().map(|(rel, _)| rel.as_str())),
    )?;
    Ok((change, report))
}

fn load_hide(dir: &Path, deletes: &[String]) -> Result<Option<DataFrame>> {
    if deletes.is_empty() {
        return Ok(None);
    }
    let paths: Vec<PlRefPath> = deletes
        .iter()
        .map(|p| PlRefPath::try_from_path(&dir.join(p)))
        .collect::<PolarsResult<_>>()?;
    let df = LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())?.collect()?;
    Ok(Some(df))
}

/// Schedules replaced files for removal once the grace period has passed, and removes
/// those whose time has come. A replaced file stays where it is meanwhile, because a
/// reader that took its view before the change may still open it by that path; its
/// marker in the trash directory holds the path and, by its mtime, the time of the change.
/// (After a crash, opening removes every unregistered file at once: no reader is left.)
fn retire<'a>(dir: &Path, grace: Duration, paths: impl Iterator<Item = &'a String>) -> Result<()> {
    let trash = dir.join(TRASH_DIR);
    std::fs::create_dir_all(&trash).map_err(io(&trash))?;
    for rel in paths {
        if grace.is_zero() {
            let file = dir.join(rel);
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&file)(e));
                }
                _ => continue,
            }
        }
        let marker = trash.join(format!("{}.retired", rel.replace('/', "__")));
        std::fs::write(&marker, rel.as_bytes()).map_err(io(&marker))?;
    }
    for entry in std::fs::read_dir(&trash).map_err(io(&trash))?.flatten() {
        let due = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= grace);
        if !due {
            continue;
        }
        let marker = entry.path();
        let target = std::fs::read_to_string(&marker)
            .ok()
            .filter(|rel| rel.ends_with(".parquet") && !rel.contains(".."));
        if let Some(rel) = target {
            let file = dir.join(rel);
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %file.display(), error = %e, "cannot remove a replaced store file");
                    continue;
                }
            }
        }
        let _ = std::fs::remove_file(&marker);
    }
    Ok(())
}

/// Parquet files on disk that the registry does not list: a flush or compaction that
/// crashed before its commit. Nothing reads them; they are removed.
fn remove_orphans(dir: &Path, snapshot: &StoreSnapshot) -> Result<()> {
    let known: HashSet<&str> = snapshot
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(snapshot.deletes.iter().map(String::as_str))
        .collect();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == TRASH_DIR) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_data = rel.ends_with(".parquet") || rel.ends_with(".parquet.tmp");
            if is_data && !known.contains(rel.as_str()) {
                tracing::info!(file = %rel, "removing a store file no flush registered");
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

/// The DaySummary table (per site and day) derived from any frame of Chats rows, so
/// readers that restrict Chats first (reports) get the summary of exactly those chats.
pub fn day_summary_of(chats: LazyFrame) -> LazyFrame {
    chats
        .filter(col("Started").is_not_null())
        .group_by([col("SiteKey"), col("Started").dt().date().alias("Dated")])
        .agg([
            len().cast(DataType::Int64).alias("Chats"),
            col("Missed").cast(DataType::Int64).sum().alias("Missed"),
            col("Missed")
                .not()
                .cast(DataType::Int64)
                .sum()
                .alias("Answered"),
            col("AnsweredByBot")
                .cast(DataType::Int64)
                .sum()
                .alias("Bot"),
            col("MissedFollowedUp")
                .cast(DataType::Int64)
                .sum()
                .alias("MissedFollowedUp"),
            col("WaitedSeconds").mean().alias("AvgWaitSeconds"),
            col("DurationSeconds")
                .filter(col("Missed").not())
                .mean()
                .alias("AvgDurationSeconds"),
            col("Rating")
                .filter(col("Rating").gt(lit(0)))
                .mean()
                .alias("AvgRating"),
            col("SentimentScore")
                .filter(col("Missed").not())
                .mean()
                .alias("AvgSentiment"),
        ])
        .sort(["SiteKey", "Dated"], SortMultipleOptions::default())
}

/// The table definition of a stored table by name.
fn table_index(table: &str) -> Result<usize> {
    TABLES
        .iter()
        .position(|t| t.name == table)
        .ok_or_else(|| StoreError::UnknownTable(table.to_owned()))
}

pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: i64) -> StoreFile {
        StoreFile {
            path: name.to_owned(),
            table: "Chats".into(),
            site_key: 1,
            month: "2024-08".into(),
            rows: 1,
            bytes,
        }
    }

    fn merged(files: Vec<StoreFile>, min_files: usize) -> Vec<Vec<String>> {
        size_tiers_to_merge(files, min_files)
            .into_iter()
            .map(|tier| tier.into_iter().map(|f| f.path).collect())
            .collect()
    }

    #[test]
    fn a_tier_is_merged_only_once_it_is_full() {
        let small = |i: usize| file(&format!("s{i}"), 100_000);
        assert!(merged((0..3).map(small).collect(), 4).is_empty());
        assert_eq!(
            merged((0..4).map(small).collect(), 4),
            vec![vec!["s0", "s1", "s2", "s3"]]
        );
    }

    #[test]
    fn a_large_file_is_not_rewritten_with_each_batch_of_small_ones() {
        let mut files: Vec<StoreFile> = (0..4).map(|i| file(&format!("s{i}"), 100_000)).collect();
        files.push(file("big", 40 << 20));
        assert_eq!(merged(files, 4), vec![vec!["s0", "s1", "s2", "s3"]]);
    }

    #[test]
    fn every_full_tier_is_merged_separately() {
        let mut files: Vec<StoreFile> = (0..4).map(|i| file(&format!("s{i}"), 1_000)).collect();
        files.extend((0..4).map(|i| file(&format!("m{i}"), 2 << 20)));
        files.push(file("l", 9 << 20));
        assert_eq!(
            merged(files, 4),
            vec![vec!["s0", "s1", "s2", "s3"], vec!["m0", "m1", "m2", "m3"]]
        );
    }

    /// Files flushed one by one and compacted after each flush: every file is rewritten
    /// a logarithmic number of times, and the partition never holds many files.
    #[test]
    fn repeated_flushes_rewrite_each_byte_a_logarithmic_number_of_times() {
        let flush = 300_000i64;
        let mut files: Vec<StoreFile> = Vec::new();
        let mut rewritten = 0i64;
        for i in 0..1000 {
            files.push(file(&format!("f{i}"), flush));
            loop {
                let tiers = size_tiers_to_merge(files.clone(), 8);
                if tiers.is_empty() {
                    break;
                }
                for tier in tiers {
                    let names: HashSet<String> = tier.iter().map(|f| f.path.clone()).collect();
                    let bytes: i64 = tier.iter().map(|f| f.bytes).sum();
                    rewritten += bytes;
                    files.retain(|f| !names.contains(&f.path));
                    files.push(file(&format!("c{i}-{}", files.len()), bytes));
                }
            }
            assert!(
                files.len() < 8 * 5,
                "{} files after {i} flushes",
                files.len()
            );
        }
        let written = 1000 * flush;
        assert!(
            rewritten <= 4 * written,
            "rewrote {rewritten} bytes for {written} flushed"
        );
    }
}
