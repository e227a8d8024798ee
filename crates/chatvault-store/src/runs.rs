//! Dictionaries for columns whose values come in runs. Every file keeps a chat's rows
//! adjacent (see `order`), so a child table repeats its chat's ChatUID and ArchiveSeq on
//! row after row: a run per chat. polars finds such a column worth a dictionary only
//! after hashing every value twice, once to estimate the distinct count and once more to
//! build the dictionary. Comparing each value with the one before costs less, and only
//! the first value of each run needs hashing.

use itertools::Itertools;
use polars_arrow::array::{Array, DictionaryArray, PrimitiveArray, Utf8ViewArray};
use polars_arrow::datatypes::{ArrowDataType, PhysicalType, PrimitiveType};
use std::collections::HashMap;
use std::hash::Hash;

/// Values looked at before deciding whether a column comes in runs at all: a column of
/// distinct values (a message, a timestamp) is given up on after this many.
const SAMPLE: usize = 4096;

/// `array` as a dictionary built from its runs of equal adjacent values, or `None` when it
/// has too few such runs to be worth one, has nulls, or is of a type this does not
/// handle; polars then decides for itself. A column qualifies when its runs are at most
/// half its rows: it then has at most half as many distinct values as rows, which polars
/// would also have dictionary-encoded.
pub(crate) fn dictionary_of_runs(array: &dyn Array) -> Option<Box<dyn Array>> {
    if array.len() < 2 || array.null_count() > 0 {
        return None;
    }
    match array.dtype().to_physical_type() {
        PhysicalType::Utf8View => {
            let strings = array.as_any().downcast_ref::<Utf8ViewArray>()?;
            let (keys, distinct) = keys_of_runs(strings.len(), |i| strings.value(i))?;
            dictionary(keys, Utf8ViewArray::from_slice_values(distinct).boxed())
        }
        PhysicalType::Primitive(PrimitiveType::Int64) => {
            let numbers = array.as_any().downcast_ref::<PrimitiveArray<i64>>()?;
            let (keys, distinct) = keys_of_runs(numbers.len(), |i| numbers.value(i))?;
            // The column's own type, so a timestamp stays a timestamp.
            let values = PrimitiveArray::new(array.dtype().clone(), distinct.into(), None);
            dictionary(keys, values.boxed())
        }
        _ => None,
    }
}

fn dictionary(keys: Vec<u32>, values: Box<dyn Array>) -> Option<Box<dyn Array>> {
    let keys = PrimitiveArray::new(ArrowDataType::UInt32, keys.into(), None);
    let dictionary = DictionaryArray::<u32>::try_from_keys(keys, values, false).ok()?;
    Some(dictionary.boxed())
}

/// The dictionary key of each of `len` values and the distinct values in the order first
/// met, if the values come in at most `len / 2` runs.
fn keys_of_runs<T: Copy + Eq + Hash>(
    len: usize,
    value_at: impl Fn(usize) -> T,
) -> Option<(Vec<u32>, Vec<T>)> {
    let most_runs = len / 2;
    // Room for every key only once the sample has passed.
    let mut keys = Vec::with_capacity(len.min(SAMPLE));
    let mut distinct: Vec<T> = Vec::new();
    let mut index: HashMap<T, u32, foldhash::fast::RandomState> = HashMap::default();
    for (runs, (rows, value)) in (1..).zip((0..len).map(value_at).dedup_with_count()) {
        let start = keys.len();
        if runs > most_runs || (start < SAMPLE && runs > SAMPLE / 2) {
            return None;
        }
        if start >= SAMPLE {
            keys.reserve_exact(len - start);
        }
        let key = *index.entry(value).or_insert_with(|| {
            distinct.push(value);
            (distinct.len() - 1) as u32
        });
        keys.extend(std::iter::repeat_n(key, rows));
    }
    Some((keys, distinct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings in runs: (value, run length) pairs, values from a small alphabet so that a
    /// value comes back in later runs too.
    fn runs_of_strings() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec((0u8..6, 1usize..30), 1..400).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(v, n)| {
                    std::iter::repeat_n(format!("chat-{v:02}-uid-longer-than-a-view"), n)
                })
                .collect()
        })
    }

    fn run_count<T: PartialEq>(values: &[T]) -> usize {
        1 + values.windows(2).filter(|w| w[0] != w[1]).count()
    }

    proptest! {
        /// A column in runs comes back as a dictionary whose keys give every value in
        /// order, each distinct value once; a column of too many runs is left to polars.
        #[test]
        fn a_dictionary_of_runs_gives_back_every_value(values in runs_of_strings()) {
            let array = Utf8ViewArray::from_slice_values(&values);
            let runs = run_count(&values);
            let decided = dictionary_of_runs(&array);
            let expected = values.len() >= 2 && runs <= values.len() / 2
                && run_count(&values[..values.len().min(SAMPLE)]) <= SAMPLE / 2;
            prop_assert_eq!(decided.is_some(), expected, "{} values in {} runs", values.len(), runs);
            if let Some(dictionary) = decided {
                let dictionary = dictionary.as_any().downcast_ref::<DictionaryArray<u32>>().expect("a dictionary");
                let distinct = dictionary.values().as_any().downcast_ref::<Utf8ViewArray>().expect("strings");
                let mut seen = std::collections::HashSet::new();
                prop_assert!(distinct.values_iter().all(|v| seen.insert(v)), "a value is in the dictionary twice");
                let back: Vec<&str> = dictionary.keys().values_iter().map(|&k| distinct.value(k as usize)).collect();
                prop_assert_eq!(back, values.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }

        /// Numbers keep their own type (a timestamp stays a timestamp) and their values.
        #[test]
        fn numbers_in_runs_keep_their_type_and_values(runs in prop::collection::vec((0i64..5, 2usize..9), 1..50)) {
            let values: Vec<i64> = runs.into_iter().flat_map(|(v, n)| std::iter::repeat_n(v * 1_000_003, n)).collect();
            let dtype = ArrowDataType::Timestamp(polars_arrow::datatypes::TimeUnit::Microsecond, None);
            let array = PrimitiveArray::new(dtype.clone(), values.clone().into(), None);
            let dictionary = dictionary_of_runs(&array).expect("runs of two or more");
            let dictionary = dictionary.as_any().downcast_ref::<DictionaryArray<u32>>().expect("a dictionary");
            prop_assert_eq!(dictionary.values().dtype(), &dtype);
            let distinct = dictionary.values().as_any().downcast_ref::<PrimitiveArray<i64>>().expect("numbers");
            let back: Vec<i64> = dictionary.keys().values_iter().map(|&k| distinct.value(k as usize)).collect();
            prop_assert_eq!(back, values);
        }
    }

    /// A column with nulls, or of a type without runs worth having, is left to polars.
    #[test]
    fn nulls_and_other_types_are_left_to_polars() {
        let with_null = Utf8ViewArray::from_slice([Some("a"), Some("a"), None, None]);
        assert!(dictionary_of_runs(&with_null).is_none());
        let floats = PrimitiveArray::<f64>::from_vec(vec![1.0; 10]);
        assert!(dictionary_of_runs(&floats).is_none());
        let distinct = Utf8ViewArray::from_slice_values(
            (0..10_000).map(|i| format!("line {i}")).collect::<Vec<_>>(),
        );
        assert!(dictionary_of_runs(&distinct).is_none());
    }
}
