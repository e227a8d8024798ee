//! A rebuild's files: every partition's tables written a row group at a time while the
//! archive is still being replayed, instead of held in memory to the end and written then.

use chatvault_catalog::StoreFile;
use chatvault_model::TABLES;
use polars::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;

use crate::parquet::{FileKind, RowGroupWriter};
use crate::store::{on_every_core, partition_path, poisoned};
use crate::Result;

/// A row group is written once it has this many bytes, even if it has fewer rows than
/// `row_group_rows`: a Chats row is a hundred times wider than a ChatLines row.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// Each open file's write buffer. Hundreds are open at once (a file per table and
/// partition), so this is smaller than a flush's.
const FILE_BUFFER: usize = 128 << 10;

/// (index of the table in `TABLES`, SiteKey, month): one open file.
type FileKey = (usize, i32, String);

/// The rows of one table and partition not yet written, and its file.
struct Pending {
    frames: Vec<DataFrame>,
    rows: usize,
    bytes: usize,
    /// Created with the first row group.
    file: Option<(String, RowGroupWriter)>,
    rows_in_file: usize,
    /// Files of this key closed early (see `max_open`), to name the next one.
    closed: usize,
    last_added: u64,
}

/// The files a rebuild writes. Rows arrive converted, any number of times per partition;
/// each table and partition keeps one file open and adds a row group to it whenever its
/// rows fill one, or when everything pending together outgrows the memory budget.
pub(crate) struct RebuildFiles {
    target: Target,
    row_group_rows: usize,
    hold_bytes: usize,
    /// Open files at most; past it the least recently fed one is finished, and its
    /// partition gets a second file if more of its rows come.
    max_open: usize,
    pending: HashMap<FileKey, Pending>,
    pending_bytes: usize,
    added: u64,
    finished: Vec<StoreFile>,
}

impl RebuildFiles {
    pub(crate) fn new(
        dir: PathBuf,
        tag: String,
        row_group_rows: usize,
        hold_bytes: usize,
        max_open: usize,
        kind: FileKind,
    ) -> RebuildFiles {
        RebuildFiles {
            target: Target { dir, tag, kind },
            row_group_rows: row_group_rows.max(1),
            hold_bytes,
            max_open: max_open.max(1),
            pending: HashMap::new(),
            pending_bytes: 0,
            added: 0,
            finished: Vec::new(),
        }
    }

    /// Takes one partition's rows (a frame per table, in `TABLES` order) and writes any
    /// row group they fill.
    pub(crate) fn add(&mut self, site: i32, month: &str, frames: [DataFrame; 5]) -> Result<()> {
        for (table, df) in frames.into_iter().enumerate() {
            if df.height() == 0 {
                continue;
            }
            self.added += 1;
            let key = (table, site, month.to_owned());
            let bytes = df.estimated_size();
            let pending = self.pending.entry(key.clone()).or_insert_with(|| Pending {
                frames: Vec::new(),
                rows: 0,
                bytes: 0,
                file: None,
                rows_in_file: 0,
                closed: 0,
                last_added: 0,
            });
            pending.rows += df.height();
            pending.bytes += bytes;
            pending.frames.push(df);
            pending.last_added = self.added;
            self.pending_bytes += bytes;
            if pending.rows >= self.row_group_rows || pending.bytes >= ROW_GROUP_BYTES {
                self.write_row_group(&key)?;
            }
        }
        // Over budget, the largest pending rows go first: the fewest, biggest row groups.
        while self.pending_bytes > self.hold_bytes {
            let Some(largest) = self
                .pending
                .iter()
                .filter(|(_, p)| p.rows > 0)
                .max_by_key(|(_, p)| p.bytes)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            self.write_row_group(&largest)?;
        }
        Ok(())
    }

    /// Writes what `key` has pending as one row group, opening its file if need be.
    fn write_row_group(&mut self, key: &FileKey) -> Result<()> {
        let needs_file = self.pending.get(key).is_some_and(|p| p.file.is_none());
        if needs_file && self.open_files() >= self.max_open {
            self.close_least_recent()?;
        }
        let Some(pending) = self.pending.get_mut(key) else {
            return Ok(());
        };
        self.pending_bytes -= pending.bytes;
        write_pending(&self.target, key, pending)
    }

    /// Files open now; counted only when a file is about to be opened.
    fn open_files(&self) -> usize {
        self.pending.values().filter(|p| p.file.is_some()).count()
    }

    /// Finishes the open file fed longest ago, with what it has pending.
    fn close_least_recent(&mut self) -> Result<()> {
        let Some(key) = self
            .pending
            .iter()
            .filter(|(_, p)| p.file.is_some())
            .min_by_key(|(_, p)| p.last_added)
            .map(|(key, _)| key.clone())
        else {
            return Ok(());
        };
        if self.pending.get(&key).is_some_and(|p| p.rows > 0) {
            self.write_row_group(&key)?;
        }
        if let Some(pending) = self.pending.get_mut(&key) {
            if let Some(file) = finish_file(&key, pending)? {
                self.finished.push(file);
            }
            pending.closed += 1;
        }
        Ok(())
    }

    /// Writes everything pending and finishes every file, on every core; returns the
    /// files, all still under their temporary names.
    pub(crate) fn finish(self) -> Result<Vec<StoreFile>> {
        let RebuildFiles {
            target,
            pending,
            mut finished,
            ..
        } = self;
        let rest: Vec<std::sync::Mutex<Option<(FileKey, Pending)>>> = pending
            .into_iter()
            .map(|entry| std::sync::Mutex::new(Some(entry)))
            .collect();
        let written = on_every_core(&rest, |slot| {
            let Some((key, mut pending)) = slot.lock().map_err(|_| poisoned())?.take() else {
                return Ok(None);
            };
            write_pending(&target, &key, &mut pending)?;
            finish_file(&key, &mut pending)
        })?;
        finished.extend(written.into_iter().flatten());
        Ok(finished)
    }
}

/// Where and how a rebuild's files are written.
struct Target {
    dir: PathBuf,
    /// Part of every file name, so that no rebuild's files collide with another's.
    tag: String,
    kind: FileKind,
}

/// Writes what `pending` holds as one row group, creating its file first if it has none.
fn write_pending(target: &Target, key: &FileKey, pending: &mut Pending) -> Result<()> {
    let Some(mut df) = stacked(std::mem::take(&mut pending.frames))? else {
        return Ok(());
    };
    pending.rows = 0;
    pending.bytes = 0;
    // One chunk, so the frame is one row group.
    df.rechunk_mut();
    let writer = match &mut pending.file {
        Some((_, writer)) => writer,
        None => {
            let (table, site, month) = key;
            let rel = partition_path(
                TABLES[*table].name,
                i64::from(*site),
                month,
                &format!("rebuild-{}-{:05}", target.tag, pending.closed),
            );
            let writer =
                RowGroupWriter::create(&target.dir, &rel, df.schema(), target.kind, FILE_BUFFER)?;
            &mut pending.file.insert((rel, writer)).1
        }
    };
    writer.write(&df)?;
    pending.rows_in_file += df.height();
    Ok(())
}

/// Finishes `pending`'s file, if it has one, as a registry entry.
fn finish_file(key: &FileKey, pending: &mut Pending) -> Result<Option<StoreFile>> {
    let Some((rel, writer)) = pending.file.take() else {
        return Ok(None);
    };
    let bytes = writer.finish()?;
    let (table, site, month) = key;
    let rows = std::mem::take(&mut pending.rows_in_file);
    Ok(Some(StoreFile {
        path: rel,
        table: TABLES[*table].name.to_owned(),
        site_key: i64::from(*site),
        month: month.clone(),
        rows: rows as i64,
        bytes: bytes as i64,
    }))
}

/// The frames as one; None if there are none.
fn stacked(frames: Vec<DataFrame>) -> Result<Option<DataFrame>> {
    let mut frames = frames.into_iter();
    let Some(mut out) = frames.next() else {
        return Ok(None);
    };
    for df in frames {
        out.vstack_mut_owned(df)?;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::temporary_path;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A frame of `rows` rows numbered from `first`, tagged with where it was sent.
    fn frame(first: i64, rows: i64, site: i32) -> DataFrame {
        df!(
            "Row" => (first..first + rows).collect::<Vec<i64>>(),
            "Site" => vec![site; rows as usize],
        )
        .expect("frame")
    }

    fn read(dir: &Path, file: &StoreFile) -> PolarsResult<DataFrame> {
        let path = temporary_path(&dir.join(&file.path));
        ParquetReader::new(std::fs::File::open(path)?).finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
        /// However rows arrive, and whatever the row group size, memory budget and cap on
        /// open files, each table and partition's files hold exactly its rows, in the
        /// order they came, and the registry entries count them.
        #[test]
        fn every_row_is_written_once_in_order(
            sends in prop::collection::vec((0usize..2, 1i32..4, 0i64..9), 1..40),
            row_group_rows in 1usize..12,
            hold_bytes in prop_oneof![Just(0usize), Just(1usize << 30)],
            max_open in 1usize..4,
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut files = RebuildFiles::new(
                dir.path().to_owned(),
                "t".into(),
                row_group_rows,
                hold_bytes,
                max_open,
                FileKind::Merged { zstd_level: 1 },
            );
            let mut sent: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
            let mut next = 0i64;
            for &(table, site, rows) in &sends {
                let mut frames: [DataFrame; 5] = Default::default();
                frames[table] = frame(next, rows, site);
                sent.entry((TABLES[table].name.to_owned(), i64::from(site))).or_default().extend(next..next + rows);
                next += rows;
                files.add(site, "2024-01", frames).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let written = files.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut found: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
            let mut paths = std::collections::HashSet::new();
            // Files of one partition were opened in turn, so their names order them.
            let mut written = written;
            written.sort_by(|a, b| a.path.cmp(&b.path));
            for file in &written {
                prop_assert!(paths.insert(file.path.clone()), "{} registered twice", file.path);
                let df = read(dir.path(), file).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(df.height() as i64, file.rows);
                let rows = df.column("Row").and_then(|c| c.i64().cloned()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                found.entry((file.table.clone(), file.site_key)).or_default().extend(rows.into_no_null_iter());
            }
            sent.retain(|_, rows| !rows.is_empty());
            prop_assert_eq!(found, sent);
        }
    }
}
