//! Rows of the model's tables → polars frames, typed by the one table definition.

use chatvault_model::{ColumnDef, ColumnKind, ColumnSink, TableDef};
use polars::prelude::*;

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
        strs: Option<&'a str> => StringChunked,
        i32s: Option<i32> => Int32Chunked,
        i64s: Option<i64> => Int64Chunked,
        bools: Option<bool> => BooleanChunked,
        f64s: Option<f64> => Float64Chunked,
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
