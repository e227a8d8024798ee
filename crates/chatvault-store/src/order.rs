//! The order flushed and merged files keep: every table sorted by ChatUID, a chat's rows
//! in the order they were flattened.

use itertools::Itertools;
use polars::prelude::*;

/// `df` (one table's rows) in the order every file the store writes keeps.
pub(crate) fn in_file_order(df: &DataFrame) -> PolarsResult<DataFrame> {
    sort_by_key_runs(df, "ChatUID")
}

/// `df` sorted by its string column `key` (nulls first, rows with equal keys in their
/// order), as a stable polars sort would order it, comparing each run of equal adjacent
/// keys once instead of each row: a chat's lines, answers and pages are adjacent, so a
/// partition's twenty lines a chat are one run to place, not twenty. The rows are
/// gathered straight from `df`'s chunks, which a polars sort first copies into one.
fn sort_by_key_runs(df: &DataFrame, key: &str) -> PolarsResult<DataFrame> {
    let keys = df.column(key)?.str()?;
    // (key, first row, row after the last) of every run of equal adjacent keys; a
    // frame's height always fits polars' row index type.
    let mut runs: Vec<(Option<&str>, IdxSize, IdxSize)> = Vec::new();
    let mut start: IdxSize = 0;
    for (rows, value) in keys.iter().dedup_with_count() {
        let end = start + rows as IdxSize;
        runs.push((value, start, end));
        start = end;
    }
    if runs.is_sorted_by(|a, b| a.0 <= b.0) {
        return Ok(df.clone());
    }
    // Stable, so runs of the same key (a chat flattened twice) keep their order too.
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    let order: Vec<IdxSize> = runs
        .iter()
        .flat_map(|&(_, start, end)| start..end)
        .collect();
    df.take(&IdxCa::from_vec(PlSmallStr::EMPTY, order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames of `chunks` pieces (as a merge concatenates them) whose keys repeat in runs,
    /// with nulls, and a row number that shows where each row came from.
    fn chunked_frame(chunks: Vec<Vec<Option<u8>>>) -> PolarsResult<DataFrame> {
        let mut out: Option<DataFrame> = None;
        let mut row = 0u32;
        for keys in chunks {
            let n = keys.len() as u32;
            let piece = df!(
                "ChatUID" => keys.into_iter().map(|k| k.map(|k| format!("chat-{k:03}"))).collect::<Vec<_>>(),
                "Row" => (row..row + n).collect::<Vec<u32>>(),
            )?;
            row += n;
            match &mut out {
                Some(df) => {
                    df.vstack_mut_owned(piece)?;
                }
                None => out = Some(piece),
            }
        }
        Ok(out.unwrap_or_else(|| DataFrame::empty_with_schema(&Schema::default())))
    }

    fn polars_stable_sort(df: &DataFrame) -> PolarsResult<DataFrame> {
        df.sort(
            ["ChatUID"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
    }

    proptest! {
        #[test]
        fn orders_rows_as_a_stable_sort_by_the_key(
            chunks in prop::collection::vec(
                // Keys drawn from a few values and repeated, so runs form, recur in other
                // chunks and across chunk boundaries.
                prop::collection::vec(
                    (prop::option::weighted(0.95, 0u8..12), 1usize..5)
                        .prop_map(|(key, n)| vec![key; n]),
                    0..12,
                ).prop_map(|runs| runs.concat()),
                1..5,
            ),
        ) {
            let df = chunked_frame(chunks).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ours = sort_by_key_runs(&df, "ChatUID").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let theirs = polars_stable_sort(&df).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(ours.equals_missing(&theirs), "ours:\n{ours}\npolars:\n{theirs}");
        }
    }

    #[test]
    fn a_frame_already_in_order_is_returned_as_it_is() -> PolarsResult<()> {
        let df = chunked_frame(vec![
            vec![Some(1), Some(1), Some(2)],
            vec![Some(2), Some(3)],
        ])?;
        let sorted = sort_by_key_runs(&df, "ChatUID")?;
        assert!(sorted.equals(&df));
        Ok(())
    }

    #[test]
    fn a_key_that_is_not_a_string_column_is_an_error() -> PolarsResult<()> {
        let df = chunked_frame(vec![vec![Some(1)]])?;
        assert!(sort_by_key_runs(&df, "Row").is_err());
        assert!(sort_by_key_runs(&df, "Missing").is_err());
        Ok(())
    }
}
