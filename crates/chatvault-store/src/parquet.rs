//! Writing the store's Parquet files, a row group at a time, under a temporary name that
//! `make_durable` later syncs and moves into place.

use polars::prelude::*;
pub(crate) use polars_parquet::write::ZstdLevel;
use polars_parquet::write::{
    get_dtype_encoding, CompressionOptions, Encoding, FileWriter, RowGroupIterator, Version,
    WriteOptions,
};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::store::io;
use crate::Result;

/// How a file is written: what it holds decides what is worth spending on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A flush's small file, which a compaction soon merges: Snappy, whose encoder costs
    /// nothing to set up (a zstd context per column chunk was a tenth of a rebuild), and
    /// every column plain-encoded. polars decides on dictionary encoding per column chunk
    /// with a HyperLogLog estimate whose cost does not depend on the rows (it zeroes and
    /// scans 16,384 registers): about 30 µs for each of the tens of columns of every
    /// partition a flush touches. Without it an import takes 8% less CPU; its files are
    /// 4% larger until they are merged.
    Flush,
    /// A file that stays (merged, or written by a rebuild): zstd at the configured level,
    /// and dictionaries where polars finds them worth it.
    Merged { zstd_level: i32 },
}

/// Where a file is written before it is synced and moved into place.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    path.with_extension("parquet.tmp")
}

/// One Parquet file being written under its temporary name; each chunk of each frame
/// handed to [`RowGroupWriter::write`] becomes a row group. The footer carries the Arrow
/// schema, as polars' own writer puts it, so readers see the same column types.
pub(crate) struct RowGroupWriter {
    tmp: PathBuf,
    schema: ArrowSchema,
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
    writer: FileWriter<BufWriter<File>>,
}

impl RowGroupWriter {
    /// Creates `rel` (its folders too) under `dir`, for frames of `schema`. `buffer` is
    /// the write buffer's size: the writer emits the footer a few bytes at a time, and
    /// unbuffered that was a system call per field.
    pub(crate) fn create(
        dir: &Path,
        rel: &str,
        schema: &Schema,
        kind: FileKind,
        buffer: usize,
    ) -> Result<RowGroupWriter> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = temporary_path(&path);
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let schema = schema.to_arrow(CompatLevel::newest());
        let encodings = schema
            .iter_values()
            .map(|field| {
                let chosen = get_dtype_encoding(&field.dtype);
                match kind {
                    FileKind::Flush => vec![Encoding::Plain; chosen.len()],
                    FileKind::Merged { .. } => chosen,
                }
            })
            .collect();
        let options = WriteOptions {
            // Min, max and null counts, which prune row groups; not distinct counts
            // (estimated per column chunk), which no reader uses.
            statistics: StatisticsOptions::default(),
            compression: match kind {
                FileKind::Flush => CompressionOptions::Snappy,
                FileKind::Merged { zstd_level } => {
                    CompressionOptions::Zstd(Some(ZstdLevel::try_new(zstd_level)?))
                }
            },
            version: Version::V1,
            data_page_size: None,
        };
        let writer = FileWriter::try_new(
            BufWriter::with_capacity(buffer, file),
            schema.clone(),
            options,
        )?;
        Ok(RowGroupWriter {
            tmp,
            schema,
            encodings,
            options,
            writer,
        })
    }

    /// Appends every chunk of `df` as a row group.
    pub(crate) fn write(&mut self, df: &DataFrame) -> Result<()> {
        let batches = df.iter_chunks(CompatLevel::newest(), false).map(Ok);
        let row_groups = RowGroupIterator::try_new(
            batches,
            &self.schema,
            self.options,
            self.encodings.clone().into(),
        )?;
        for row_group in row_groups {
            // The row count is read from the encoded columns.
            self.writer.write(u64::MAX, row_group?)?;
        }
        Ok(())
    }

    /// Writes the footer and flushes the buffer; returns the file's size.
    pub(crate) fn finish(mut self) -> Result<u64> {
        let bytes = self.writer.end(None)?;
        self.writer
            .into_inner()
            .into_inner()
            .map_err(|e| io(&self.tmp)(e.into_error()))?;
        Ok(bytes)
    }
}

/// Writes `df` to `rel`'s temporary name in row groups of `row_group` rows.
pub(crate) fn write_parquet(
    dir: &Path,
    rel: &str,
    df: &mut DataFrame,
    row_group: usize,
    kind: FileKind,
) -> Result<u64> {
    let df = polars::frame::chunk_df_for_writing(df, row_group)?;
    let mut writer = RowGroupWriter::create(dir, rel, df.schema(), kind, 1 << 20)?;
    writer.write(&df)?;
    writer.finish()
}
