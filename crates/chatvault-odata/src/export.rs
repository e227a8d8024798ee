//! Whole-table exports for BI tools: the feed's `$filter`/`$select`/`$orderby`, read page
//! by page through the same engine (so memory stays flat for any size) and written as
//! CSV (RFC 4180) or Parquet.

use std::io::Write;

use chrono::NaiveDateTime;
use polars::prelude::{
    col, lit, CsvWriter, DataFrame, DataType, IntoColumn, IntoLazy, IntoSeries, ParquetWriter,
    QuoteStyle, SerWriter, Series, StringChunkedBuilder, TimeUnit,
};

use crate::error::{QueryError, Result};
use crate::json::{micros_to_local, write_datetime, TimeStyle};
use crate::model::EntitySet;
use crate::options::QueryOptions;
use crate::query::{Access, Engine};

/// Rows read per step: large enough to amortise a scan, small enough to stay flat.
pub const EXPORT_PAGE: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// With `bom`, a UTF-8 byte-order mark first, which Excel needs to read UTF-8.
    Csv {
        bom: bool,
    },
    Parquet,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv { .. } => "csv",
            ExportFormat::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv { .. } => "text/csv; charset=utf-8; header=present",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A page made CSV-friendly: lists joined with ';', timestamps with the site offset.
fn for_csv(mut frame: DataFrame, tz: chrono_tz::Tz) -> Result<DataFrame> {
    let timestamps: Vec<String> = frame
        .columns()
        .iter()
        .filter(|c| matches!(c.dtype(), DataType::Datetime(TimeUnit::Microseconds, None)))
        .map(|c| c.name().to_string())
        .collect();
    for name in &timestamps {
        let text = timestamps_as_text(frame.column(name)?.as_materialized_series(), tz)?;
        frame.with_column(text.into_column())?;
    }
    let lists: Vec<_> = frame
        .columns()
        .iter()
        .filter(|c| matches!(c.dtype(), DataType::List(_)))
        .map(|c| col(c.name().as_str()).list().join(lit(";"), true))
        .collect();
    if lists.is_empty() {
        return Ok(frame);
    }
    Ok(frame.lazy().with_columns(lists).collect()?)
}

/// ISO-8601 with the site's offset at each instant, as the feed writes them (a
/// wall-clock time a DST change skipped takes the offset in force before the change).
fn timestamps_as_text(series: &Series, tz: chrono_tz::Tz) -> Result<Series> {
    let values = series.datetime()?.physical();
    let mut builder = StringChunkedBuilder::new(series.name().clone(), values.len());
    let mut text = Vec::with_capacity(40);
    for value in values.iter() {
        match value.and_then(micros_to_local) {
            Some(local) => {
                text.clear();
                write_datetime(&mut text, tz, local, TimeStyle::Export);
                builder.append_value(std::str::from_utf8(&text).unwrap_or_default());
            }
            None => builder.append_null(),
        }
    }
    Ok(builder.finish().into_series())
}

/// Writes every row `options` selects from `set` to `out`; calls `progress` with the
/// running row count after each page. Returns the number of rows written.
#[allow(clippy::too_many_arguments)]
pub fn export<W: Write>(
    engine: &Engine,
    set: &'static EntitySet,
    options: &QueryOptions,
    access: &Access,
    format: ExportFormat,
    now: NaiveDateTime,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let tz = engine.settings().tz;
    let pages = Pages::new(engine, set, options, access, now)?;
    let mut rows = 0u64;
    match format {
        ExportFormat::Csv { bom } => {
            // The next page is read (and made CSV-friendly) while this one is written:
            // reading and writing each keep a core busy about half of the time.
            std::thread::scope(|scope| -> Result<()> {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<DataFrame>>(1);
                scope.spawn(move || {
                    for page in pages {
                        let page = page.and_then(|frame| for_csv(frame, tz));
                        let failed = page.is_err();
                        if tx.send(page).is_err() || failed {
                            break;
                        }
                    }
                });
                for (i, frame) in rx.into_iter().enumerate() {
                    let mut frame = frame?;
                    rows += frame.height() as u64;
                    CsvWriter::new(&mut out)
                        .include_bom(bom && i == 0)
                        .include_header(i == 0)
                        .with_line_terminator("\r\n".into())
                        .with_quote_style(QuoteStyle::Necessary)
                        .finish(&mut frame)?;
                    progress(rows);
                }
                Ok(())
            })?;
        }
        ExportFormat::Parquet => {
            // The first page (there always is one, if empty) fixes the file's schema.
            let mut pages = pages;
            let Some(first) = pages.next() else {
                return Ok(0);
            };
            let first = first?;
            let mut writer = ParquetWriter::new(&mut out).batched(first.schema())?;
            for frame in std::iter::once(Ok(first)).chain(pages) {
                let mut frame = frame?;
                frame.rechunk_mut();
                rows += frame.height() as u64;
                writer.write_batch(&frame)?;
                progress(rows);
            }
            writer.finish()?;
        }
    }
    out.flush()
        .map_err(|e| QueryError::Invalid(format!("writing the export: {e}")))?;
    Ok(rows)
}

/// [`export`], gzip-compressed when `gzip` (the writer receives the finished stream).
#[allow(clippy::too_many_arguments)]
pub fn export_maybe_gzip<W: Write>(
    engine: &Engine,
    set: &'static EntitySet,
    options: &QueryOptions,
    access: &Access,
    format: ExportFormat,
    now: NaiveDateTime,
    out: W,
    gzip: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    if !gzip {
        return export(engine, set, options, access, format, now, out, progress);
    }
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let rows = export(
        engine,
        set,
        options,
        access,
        format,
        now,
        &mut encoder,
        progress,
    )?;
    encoder
        .finish()
        .and_then(|mut out| out.flush())
        .map_err(|e| QueryError::Invalid(format!("writing the export: {e}")))?;
    Ok(rows)
}

/// The selection page by page (keyset paging, as the feed does), each page reduced to
/// its output columns.
struct Pages<'a> {
    engine: &'a Engine,
    set: &'static EntitySet,
    options: QueryOptions,
    access: &'a Access,
    now: NaiveDateTime,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(
        engine: &'a Engine,
        set: &'static EntitySet,
        options: &QueryOptions,
        access: &'a Access,
        now: NaiveDateTime,
    ) -> Result<Pages<'a>> {
        if !options.expand.is_empty() || options.apply.is_some() {
            return Err(QueryError::unsupported(
                "$expand and $apply in exports: export each entity set on its own",
            ));
        }
        let options = QueryOptions {
            count: false,
            skiptoken: None,
            ..options.clone()
        };
        Ok(Pages {
            engine,
            set,
            options,
            access,
            now,
            done: false,
        })
    }

    fn next_page(&mut self) -> Result<DataFrame> {
        let page = self.engine.collection(
            self.set,
            &self.options,
            None,
            self.access,
            EXPORT_PAGE,
            self.now,
        )?;
        match page.next {
            Some((token, top)) => {
                self.options.skiptoken = Some(token);
                self.options.top = top;
                self.options.skip = None;
            }
            None => self.done = true,
        }
        Ok(page.frame.select(page.output.iter().map(String::as_str))?)
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<DataFrame>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let page = self.next_page();
        if page.is_err() {
            self.done = true;
        }
        Some(page)
    }
}
