//! Writing the store's Parquet files, a row group at a time, under a temporary name that
//! `make_durable` later syncs and moves into place.

use polars::prelude::*;
use polars_parquet::parquet::compression::compress;
use polars_parquet::parquet::page::{CompressedDictPage, DataPageHeader, DictPage};
use polars_parquet::parquet::CowBuffer;
pub(crate) use polars_parquet::write::ZstdLevel;
use polars_parquet::write::{
    array_to_columns, get_dtype_encoding, to_parquet_schema, CompressedDataPage, CompressedPage,
    CompressionOptions, DynIter, DynStreamingIterator, Encoding, FallibleStreamingIterator,
    FileWriter, Page, ParquetType, Version, WriteOptions,
};
use std::cell::RefCell;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::runs::dictionary_of_runs;
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
    /// The Parquet type of each column, in the schema's order.
    fields: Vec<ParquetType>,
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
        let fields = to_parquet_schema(&schema)?.fields().to_vec();
        let writer = FileWriter::try_new(BufWriter::with_capacity(buffer, file), schema, options)?;
        Ok(RowGroupWriter {
            tmp,
            fields,
            encodings,
            options,
            writer,
        })
    }

    /// Appends every chunk of `df` as a row group. Each column is encoded only when the
    /// writer comes to it, as polars' own row groups do, so one row group's encoded
    /// columns are never all in memory at once.
    pub(crate) fn write(&mut self, df: &DataFrame) -> Result<()> {
        let options = self.options;
        for batch in df.iter_chunks(CompatLevel::newest(), false) {
            let columns = batch
                .into_arrays()
                .into_iter()
                .zip(self.fields.clone())
                .zip(self.encodings.clone())
                .flat_map(move |((array, type_), encoding)| {
                    let array = match encoding.as_slice() {
                        [Encoding::RleDictionary] => {
                            dictionary_of_runs(array.as_ref()).unwrap_or(array)
                        }
                        _ => array,
                    };
                    match array_to_columns(array, type_, options, &encoding) {
                        Ok(leaves) => leaves
                            .into_iter()
                            .map(|pages| {
                                Ok(DynStreamingIterator::new(CompressedPages {
                                    pages,
                                    compression: options.compression,
                                    current: None,
                                }))
                            })
                            .collect(),
                        Err(e) => vec![Err(e)],
                    }
                });
            // The row count is read from the encoded columns.
            self.writer.write(u64::MAX, DynIter::new(columns))?;
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

/// One column chunk's pages, each compressed as the writer asks for it.
struct CompressedPages {
    pages: DynIter<'static, PolarsResult<Page>>,
    compression: CompressionOptions,
    current: Option<CompressedPage>,
}

impl FallibleStreamingIterator for CompressedPages {
    type Item = CompressedPage;
    type Error = PolarsError;

    fn advance(&mut self) -> PolarsResult<()> {
        self.current = match self.pages.next() {
            Some(page) => Some(compress_page(page?, self.compression)?),
            None => None,
        };
        Ok(())
    }

    fn get(&self) -> Option<&CompressedPage> {
        self.current.as_ref()
    }
}

fn compress_page(page: Page, compression: CompressionOptions) -> PolarsResult<CompressedPage> {
    Ok(match page {
        Page::Dict(DictPage {
            buffer,
            num_values,
            is_sorted,
        }) => CompressedPage::Dict(CompressedDictPage::new(
            CowBuffer::Owned(compressed(&buffer, compression)?),
            compression.into(),
            buffer.len(),
            num_values,
            is_sorted,
        )),
        Page::Data(page) => {
            // Version 2 pages keep their levels uncompressed; the store writes version 1.
            if !matches!(page.header(), DataPageHeader::V1(_)) {
                polars_bail!(ComputeError: "the store writes version 1 data pages only");
            }
            let Some(num_rows) = page.num_rows else {
                polars_bail!(ComputeError: "an encoded data page does not count its rows");
            };
            CompressedPage::Data(CompressedDataPage::new(
                page.header().clone(),
                CowBuffer::Owned(compressed(page.buffer(), compression)?),
                compression.into(),
                page.buffer().len(),
                page.descriptor.clone(),
                num_rows,
            ))
        }
    })
}

thread_local! {
    /// The zstd context of this thread, kept for every page it compresses. polars makes
    /// one per page, and a context is costly to set up whatever the page's size: with
    /// many small column chunks (a rebuild holding less in memory) that was a twentieth
    /// of a rebuild's CPU.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

fn compressed(bytes: &[u8], compression: CompressionOptions) -> PolarsResult<Vec<u8>> {
    let CompressionOptions::Zstd(level) = compression else {
        let mut out = Vec::new();
        compress(compression, bytes, &mut out)?;
        return Ok(out);
    };
    // zstd's own default for none, as polars does.
    let level = level.map_or(0, |l| l.compression_level());
    let zstd_error = |e: std::io::Error| polars_err!(ComputeError: "zstd compression: {e}");
    ZSTD.with_borrow_mut(|context| {
        let compressor = match context {
            Some((at, compressor)) if *at == level => compressor,
            _ => {
                let compressor = zstd::bulk::Compressor::new(level).map_err(zstd_error)?;
                &mut context.insert((level, compressor)).1
            }
        };
        compressor.compress(bytes).map_err(zstd_error)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(dir: &Path, rel: &str) -> PolarsResult<DataFrame> {
        let file = File::open(temporary_path(&dir.join(rel)))?;
        ParquetReader::new(file).finish()
    }

    /// A thread keeps its zstd context from file to file: files written in turn at other
    /// levels, and a Snappy flush file between them, each read back as written, and each
    /// level is the one asked for (the same level gives the same bytes, another does not).
    /// The columns in runs (ChatUID, ArchiveSeq) take the store's own dictionaries.
    #[test]
    fn every_file_reads_back_whatever_the_codec_before_it() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
        let mut df = df!(
            "ChatUID" => (0..5000).map(|i| format!("chat {} of many", i / 20)).collect::<Vec<_>>(),
            "ArchiveSeq" => (0..5000i64).map(|i| 1_000_000 + i / 20 * 7919).collect::<Vec<_>>(),
            "Message" => (0..5000).map(|i| format!("line {} of a chat", i % 97)).collect::<Vec<_>>(),
            "Seq" => (0..5000i64).collect::<Vec<_>>(),
        )?;
        let kinds = [
            FileKind::Merged { zstd_level: 1 },
            FileKind::Flush,
            FileKind::Merged { zstd_level: 19 },
            FileKind::Merged { zstd_level: 1 },
        ];
        let mut sizes = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            let rel = format!("file-{i}.parquet");
            sizes.push(write_parquet(dir.path(), &rel, &mut df, 1000, kind)?);
            let back = read_back(dir.path(), &rel)?;
            assert!(back.equals(&df), "{kind:?} file read back differently");
        }
        assert_eq!(
            sizes[0], sizes[3],
            "level 1 wrote different bytes the second time"
        );
        assert!(sizes[2] < sizes[0], "level 19 was not used: {sizes:?}");
        Ok(())
    }
}
