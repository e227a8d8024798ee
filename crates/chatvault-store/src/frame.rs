//! Rows of the model's tables → polars frames, typed by the one table definition.

use chatvault_model::{ColumnDef, ColumnKind, ColumnSink, TableDef};
use itertools::Itertools;
use polars::prelude::*;
use polars_arrow::array::{MutableBinaryViewArray, MutableBooleanArray, MutablePrimitiveArray};

fn dtype(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Str => DataType::String,
        ColumnKind::I32 => DataType::Int32,
        ColumnKind::I64 => DataType::Int64,
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::F64 => DataType::Float64,
        ColumnKind::Timestamp => DataType::Datetime(TimeUnit::Microseconds, None),
        ColumnKind::StrList => DataType::List(Box::new(DataType::String)),
    }
}

/// The polars schema of a table.
pub fn table_schema(table: &TableDef) -> Schema {
    table
        .columns
        .iter()
        .map(|c| Field::new(c.name.into(), dtype(c.kind)))
        .collect()
}

pub fn empty_frame(table: &TableDef) -> DataFrame {
    DataFrame::empty_with_schema(&table_schema(table))
}

/// A table's columns under construction. Rows are appended as the row types hand them
/// over, any number of times, and the frame is built once: a rebuild turns each chat
/// into columns as soon as it is flattened, while its rows are still in the cache,
/// instead of holding them until a flush walks them again.
pub(crate) struct TableBuilder {
    table: TableDef,
    /// One per column of `table`, in its order.
    columns: Vec<ColumnBuilder>,
    /// The column the next `put_columns` call fills: the row types hand columns over in
    /// the table's order, one call each.
    next: usize,
    rows: usize,
}

enum ColumnBuilder {
    Str(MutableBinaryViewArray<str>),
    I32(MutablePrimitiveArray<i32>),
    I64(MutablePrimitiveArray<i64>),
    Bool(MutableBooleanArray),
    F64(MutablePrimitiveArray<f64>),
    Timestamp(MutablePrimitiveArray<i64>),
    StrList(ListStringChunkedBuilder),
}

impl ColumnBuilder {
    fn new(def: &ColumnDef, rows: usize) -> ColumnBuilder {
        match def.kind {
            ColumnKind::Str => ColumnBuilder::Str(MutableBinaryViewArray::with_capacity(rows)),
            ColumnKind::I32 => ColumnBuilder::I32(MutablePrimitiveArray::with_capacity(rows)),
            ColumnKind::I64 => ColumnBuilder::I64(MutablePrimitiveArray::with_capacity(rows)),
            ColumnKind::Bool => ColumnBuilder::Bool(MutableBooleanArray::with_capacity(rows)),
            ColumnKind::F64 => ColumnBuilder::F64(MutablePrimitiveArray::with_capacity(rows)),
            ColumnKind::Timestamp => {
                ColumnBuilder::Timestamp(MutablePrimitiveArray::with_capacity(rows))
            }
            ColumnKind::StrList => {
                ColumnBuilder::StrList(ListStringChunkedBuilder::new(def.name.into(), rows, 0))
            }
        }
    }

    fn finish(self, def: &ColumnDef) -> Column {
        let name = PlSmallStr::from_static(def.name);
        let series = match self {
            ColumnBuilder::Str(a) => StringChunked::with_chunk(name, a.freeze()).into_series(),
            ColumnBuilder::I32(a) => Int32Chunked::with_chunk(name, a.into()).into_series(),
            ColumnBuilder::I64(a) => Int64Chunked::with_chunk(name, a.into()).into_series(),
            ColumnBuilder::Bool(a) => BooleanChunked::with_chunk(name, a.into()).into_series(),
            ColumnBuilder::F64(a) => Float64Chunked::with_chunk(name, a.into()).into_series(),
            // The integers become the timestamps as they are, without the copy a cast makes.
            ColumnBuilder::Timestamp(a) => Int64Chunked::with_chunk(name, a.into())
                .into_datetime(TimeUnit::Microseconds, None)
                .into_series(),
            ColumnBuilder::StrList(mut b) => b.finish().into_series(),
        };
        series.into_column()
    }
}

impl TableBuilder {
    pub(crate) fn new(table: &TableDef, rows: usize) -> TableBuilder {
        TableBuilder {
            table: *table,
            columns: table
                .columns
                .iter()
                .map(|def| ColumnBuilder::new(def, rows))
                .collect(),
            next: 0,
            rows: 0,
        }
    }

    /// An empty builder of the same table with room for a few more rows than this one
    /// holds.
    pub(crate) fn sized_alike(&self) -> TableBuilder {
        TableBuilder::new(&self.table, self.rows + self.rows / 16)
    }

    /// The builder of the column `def` names, which must be the next one in the table's
    /// order; the first column's values count the rows.
    fn column(&mut self, def: &ColumnDef, values: usize) -> PolarsResult<&mut ColumnBuilder> {
        let i = self.next;
        let expected = self.table.columns.get(i).map(|c| c.name);
        match self.columns.get_mut(i) {
            Some(builder) if expected == Some(def.name) => {
                if i == 0 {
                    self.rows += values;
                }
                self.next = (i + 1) % self.table.columns.len();
                Ok(builder)
            }
            _ => Err(PolarsError::ColumnNotFound(
                format!(
                    "{}: column {} handed over out of the table's order",
                    self.table.name, def.name
                )
                .into(),
            )),
        }
    }

    pub(crate) fn finish(self) -> PolarsResult<DataFrame> {
        let rows = self.rows;
        let columns = self
            .columns
            .into_iter()
            .zip(self.table.columns)
            .map(|(builder, def)| builder.finish(def))
            .collect();
        DataFrame::new(rows, columns)
    }
}

fn wrong_kind(def: &ColumnDef) -> PolarsError {
    PolarsError::SchemaMismatch(format!("column {} handed over as another type", def.name).into())
}

/// Sink methods that append each value as it comes.
macro_rules! appended_as_they_come {
    ($($method:ident: $item:ty => $variant:ident),* $(,)?) => {$(
        fn $method(
            &mut self,
            def: &ColumnDef,
            values: impl ExactSizeIterator<Item = $item>,
        ) -> PolarsResult<()> {
            match self.column(def, values.len())? {
                ColumnBuilder::$variant(array) => {
                    array.extend(values);
                    Ok(())
                }
                _ => Err(wrong_kind(def)),
            }
        }
    )*};
}

impl<'a> ColumnSink<'a> for TableBuilder {
    type Error = PolarsError;

    appended_as_they_come! {
        i32s: Option<i32> => I32,
        i64s: Option<i64> => I64,
        bools: Option<bool> => Bool,
        f64s: Option<f64> => F64,
        timestamps: Option<i64> => Timestamp,
    }

    // A run of one value (a chat's ChatUID on each of its lines, answers and pages) is
    // stored once, its rows viewing the same bytes: copying the ChatUID into every
    // line's string buffer was the largest single copy in turning rows into columns.
    // Runs are found by address, as the rows share one string wherever a value repeats:
    // comparing the bytes of every two neighbours (ninety Chats columns, most of them
    // never repeating) cost a twentieth of a rebuild.
    fn strs(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> PolarsResult<()> {
        let ColumnBuilder::Str(array) = self.column(def, values.len())? else {
            return Err(wrong_kind(def));
        };
        let same_string = |a: &Option<&str>, b: &Option<&str>| match (a, b) {
            (Some(a), Some(b)) => std::ptr::eq(*a, *b),
            (a, b) => a.is_none() && b.is_none(),
        };
        for (rows, value) in values.dedup_by_with_count(same_string) {
            match value {
                Some(value) => array.extend_constant(rows, Some(value)),
                // `extend_constant` with a null adds no views (polars-arrow 0.55).
                None => array.extend_null(rows),
            }
        }
        Ok(())
    }

    // One builder for the whole column: a series per row (two per chat) was a dozen
    // allocations each.
    fn str_lists(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = &'a [String]>,
    ) -> PolarsResult<()> {
        let ColumnBuilder::StrList(lists) = self.column(def, values.len())? else {
            return Err(wrong_kind(def));
        };
        for items in values {
            lists.append_values_iter(items.iter().map(String::as_str));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a frame of `table` from what a row type's `put_columns` hands over.
    fn to_frame(
        table: &TableDef,
        rows: usize,
        put_columns: impl FnOnce(&mut TableBuilder) -> PolarsResult<()>,
    ) -> PolarsResult<DataFrame> {
        let mut builder = TableBuilder::new(table, rows);
        put_columns(&mut builder)?;
        builder.finish()
    }

    const TABLE: TableDef = TableDef {
        name: "Lists",
        keys: &[],
        columns: &[
            ColumnDef {
                name: "At",
                kind: ColumnKind::Timestamp,
                nullable: true,
            },
            ColumnDef {
                name: "Tags",
                kind: ColumnKind::StrList,
                nullable: false,
            },
        ],
    };

    #[test]
    fn timestamps_and_string_lists_keep_their_values_and_the_table_schema() -> PolarsResult<()> {
        let tags = [vec!["vip".to_owned(), "sales".to_owned()], Vec::new()];
        let df = to_frame(&TABLE, 2, |sink| {
            sink.timestamps(
                &TABLE.columns[0],
                [Some(1_723_626_723_417_000), None].into_iter(),
            )?;
            sink.str_lists(&TABLE.columns[1], tags.iter().map(Vec::as_slice))
        })?;
        assert_eq!(**df.schema(), table_schema(&TABLE));
        let at = df.column("At")?.cast(&DataType::Int64)?;
        assert_eq!(at.i64()?.get(0), Some(1_723_626_723_417_000));
        assert_eq!(at.i64()?.get(1), None);
        let lists = df.column("Tags")?.list()?.clone();
        let first = lists.get_as_series(0).expect("a first row");
        let first: Vec<Option<&str>> = first.str()?.iter().collect();
        assert_eq!(first, [Some("vip"), Some("sales")]);
        assert_eq!(lists.get_as_series(1).expect("a second row").len(), 0);
        Ok(())
    }

    const NAMES: ColumnDef = ColumnDef {
        name: "Names",
        kind: ColumnKind::Str,
        nullable: true,
    };

    const NAMES_TABLE: TableDef = TableDef {
        name: "Names",
        keys: &[],
        columns: &[NAMES],
    };

    fn names_column(values: &[Option<&str>]) -> PolarsResult<StringChunked> {
        let df = to_frame(&NAMES_TABLE, values.len(), |sink| {
            sink.strs(&NAMES, values.iter().copied())
        })?;
        Ok(df.column("Names")?.str()?.clone())
    }

    proptest::proptest! {
        #[test]
        fn strings_keep_their_values_whether_or_not_they_repeat(
            values in proptest::collection::vec(
                proptest::option::weighted(
                    0.9,
                    proptest::sample::select(vec!["", "short", "a chat uid of 24 chars", "another value well past twelve bytes"]),
                ),
                0..60,
            ),
        ) {
            // Repeats of one static string share its address, as a chat's rows share
            // its ChatUID: they make runs.
            let column = names_column(&values).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let stored: Vec<Option<&str>> = column.iter().collect();
            proptest::prop_assert_eq!(stored, values);
        }
    }

    #[test]
    fn a_run_of_one_shared_string_is_stored_once() -> PolarsResult<()> {
        // As a chat's rows hold its ChatUID: one string, shared.
        let uid = String::from("4f1c2a9be0d34c7f8a6b5e21");
        let other = String::from("9a8b7c6d5e4f3a2b1c0d9e8f");
        let (uid, other) = (uid.as_str(), other.as_str());
        let values = [uid, uid, uid, other, other, uid].map(Some);
        let column = names_column(&values)?;
        let stored: Vec<Option<&str>> = column.iter().collect();
        assert_eq!(stored, values);
        let buffered: usize = column.downcast_iter().map(|a| a.total_buffer_len()).sum();
        // Three runs: uid, other, uid again.
        assert_eq!(buffered, 3 * uid.len());
        Ok(())
    }

    #[test]
    fn no_rows_make_an_empty_frame_of_the_table_schema() -> PolarsResult<()> {
        let df = to_frame(&TABLE, 0, |sink| {
            sink.timestamps(&TABLE.columns[0], std::iter::empty())?;
            sink.str_lists(&TABLE.columns[1], std::iter::empty())
        })?;
        assert_eq!(df.height(), 0);
        assert_eq!(**df.schema(), table_schema(&TABLE));
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn rows_appended_in_batches_make_the_frame_one_batch_makes(
            rows in proptest::collection::vec(
                (proptest::option::of(-5i64..5), proptest::collection::vec("[a-c]{0,14}", 0..3)),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let put = |sink: &mut TableBuilder, rows: &[(Option<i64>, Vec<String>)]| {
                sink.timestamps(&TABLE.columns[0], rows.iter().map(|r| r.0))?;
                sink.str_lists(&TABLE.columns[1], rows.iter().map(|r| r.1.as_slice()))
            };
            let fail = |e: PolarsError| proptest::test_runner::TestCaseError::fail(e.to_string());
            let whole = to_frame(&TABLE, rows.len(), |sink| put(sink, &rows)).map_err(fail)?;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
            cuts.sort_unstable();
            let mut builder = TableBuilder::new(&TABLE, 0);
            let mut from = 0;
            for to in cuts.into_iter().chain([rows.len()]) {
                put(&mut builder, &rows[from..to]).map_err(fail)?;
                from = to;
            }
            let batched = builder.finish().map_err(fail)?;
            proptest::prop_assert_eq!(batched.height(), rows.len());
            proptest::prop_assert!(batched.equals_missing(&whole));
        }
    }

    #[test]
    fn a_column_out_of_the_table_order_is_an_error() {
        let result = to_frame(&TABLE, 1, |sink| {
            sink.str_lists(&TABLE.columns[1], std::iter::once(&[][..]))
        });
        assert!(result.is_err());
    }
}
