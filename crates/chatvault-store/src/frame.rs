//! Rows of the model's tables → polars frames, typed by the one table definition.

use chatvault_model::{ColumnDef, ColumnKind, ColumnSink, TableDef};
use itertools::Itertools;
use polars::prelude::*;
use polars_arrow::array::MutableBinaryViewArray;

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

/// Builds a frame of `rows` rows from what a row type's `put_columns` hands over.
pub(crate) fn to_frame(
    rows: usize,
    put_columns: impl FnOnce(&mut FrameSink) -> PolarsResult<()>,
) -> PolarsResult<DataFrame> {
    let mut sink = FrameSink(Vec::new());
    put_columns(&mut sink)?;
    DataFrame::new(rows, sink.0)
}

/// Turns each column straight into a polars column.
pub(crate) struct FrameSink(Vec<Column>);

impl FrameSink {
    fn push(&mut self, series: Series) -> PolarsResult<()> {
        self.0.push(series.into_column());
        Ok(())
    }
}

/// Sink methods whose polars column is built from the values as they come.
macro_rules! columns_as_they_come {
    ($($method:ident: $item:ty => $array:ty),* $(,)?) => {$(
        fn $method(
            &mut self,
            def: &ColumnDef,
            values: impl ExactSizeIterator<Item = $item>,
        ) -> PolarsResult<()> {
            self.push(<$array>::from_iter_options(def.name.into(), values).into_series())
        }
    )*};
}

impl<'a> ColumnSink<'a> for FrameSink {
    type Error = PolarsError;

    columns_as_they_come! {
        i32s: Option<i32> => Int32Chunked,
        i64s: Option<i64> => Int64Chunked,
        bools: Option<bool> => BooleanChunked,
        f64s: Option<f64> => Float64Chunked,
    }

    // A run of equal values (a chat's ChatUID on each of its lines, answers and pages)
    // is stored once, its rows viewing the same bytes: copying the ChatUID into every
    // line's string buffer was the largest single copy in turning rows into columns.
    fn strs(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> PolarsResult<()> {
        let mut array = MutableBinaryViewArray::<str>::with_capacity(values.len());
        for (rows, value) in values.dedup_with_count() {
            match value {
                Some(value) => array.extend_constant(rows, Some(value)),
                // `extend_constant` with a null adds no views (polars-arrow 0.55).
                None => array.extend_null(rows),
            }
        }
        self.push(StringChunked::with_chunk(def.name.into(), array.freeze()).into_series())
    }

    // The integers become the timestamps as they are, without the copy a cast makes.
    fn timestamps(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<i64>>,
    ) -> PolarsResult<()> {
        self.push(
            Int64Chunked::from_iter_options(def.name.into(), values)
                .into_datetime(TimeUnit::Microseconds, None)
                .into_series(),
        )
    }

    // One builder for the whole column: a series per row (two per chat) was a dozen
    // allocations each.
    fn str_lists(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = &'a [String]>,
    ) -> PolarsResult<()> {
        let mut lists = ListStringChunkedBuilder::new(def.name.into(), values.len(), 0);
        for items in values {
            lists.append_values_iter(items.iter().map(String::as_str));
        }
        self.push(lists.finish().into_series())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let df = to_frame(2, |sink| {
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

    fn names_column(values: &[Option<String>]) -> PolarsResult<StringChunked> {
        let df = to_frame(values.len(), |sink| {
            sink.strs(&NAMES, values.iter().map(Option::as_deref))
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
            let values: Vec<Option<String>> =
                values.into_iter().map(|v| v.map(str::to_owned)).collect();
            let column = names_column(&values).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let stored: Vec<Option<String>> = column.iter().map(|v| v.map(str::to_owned)).collect();
            proptest::prop_assert_eq!(stored, values);
        }
    }

    #[test]
    fn a_run_of_equal_strings_is_stored_once() -> PolarsResult<()> {
        let uid = "4f1c2a9be0d34c7f8a6b5e21";
        let other = "9a8b7c6d5e4f3a2b1c0d9e8f";
        let values: Vec<Option<String>> = [uid, uid, uid, other, other, uid]
            .into_iter()
            .map(|v| Some(v.to_owned()))
            .collect();
        let column = names_column(&values)?;
        let buffered: usize = column.downcast_iter().map(|a| a.total_buffer_len()).sum();
        // Three runs: uid, other, uid again.
        assert_eq!(buffered, 3 * uid.len());
        Ok(())
    }

    #[test]
    fn no_rows_make_an_empty_frame_of_the_table_schema() -> PolarsResult<()> {
        let df = to_frame(0, |sink| {
            sink.timestamps(&TABLE.columns[0], std::iter::empty())?;
            sink.str_lists(&TABLE.columns[1], std::iter::empty())
        })?;
        assert_eq!(df.height(), 0);
        assert_eq!(**df.schema(), table_schema(&TABLE));
        Ok(())
    }
}
