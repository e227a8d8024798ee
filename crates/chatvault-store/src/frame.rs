//! Rows of the model's tables → polars frames, typed by the one table definition.

use chatvault_model::{ColumnData, ColumnKind, TableDef};
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

/// Builds a frame from columns produced by a row type's `columns()`.
pub(crate) fn to_frame(table: &TableDef, columns: Vec<ColumnData>) -> PolarsResult<DataFrame> {
    let mut out = Vec::with_capacity(columns.len());
    let mut height = 0;
    for (def, data) in table.columns.iter().zip(columns) {
        let name: PlSmallStr = def.name.into();
        let series = match data {
            ColumnData::Str(v) => Series::new(name, v),
            ColumnData::I32(v) => Series::new(name, v),
            ColumnData::I64(v) => Series::new(name, v),
            ColumnData::Bool(v) => Series::new(name, v),
            ColumnData::F64(v) => Series::new(name, v),
            ColumnData::Timestamp(v) => Series::new(name, v).cast(&dtype(ColumnKind::Timestamp))?,
            ColumnData::StrList(v) => {
                let lists: Vec<Series> = v
                    .into_iter()
                    .map(|items| Series::new(PlSmallStr::EMPTY, items))
                    .collect();
                let s = if lists.is_empty() {
                    Series::new_empty(name.clone(), &dtype(ColumnKind::StrList))
                } else {
                    Series::new(name.clone(), lists)
                };
                s.cast(&dtype(ColumnKind::StrList))?
            }
        };
        height = series.len();
        out.push(series.into_column());
    }
    DataFrame::new(height, out)
}
