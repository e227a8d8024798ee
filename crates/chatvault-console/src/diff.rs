//! What changed between two versions of a chat document, as JSON pointers.

use serde_json::Value;

/// Pointers listed at most; a longer list ends with a count of the rest.
const MAX_CHANGES: usize = 40;

/// The places where `new` differs from `old`: `+/a` added, `-/a` removed, `~/a` changed.
/// Arrays are compared item by item, so a line appended shows as one addition.
pub fn changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(old, new, &mut String::new(), &mut out);
    if out.len() > MAX_CHANGES {
        let rest = out.len() - MAX_CHANGES;
        out.truncate(MAX_CHANGES);
        out.push(format!("… and {rest} more"));
    }
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(old: &Value, new: &Value, path: &mut String, out: &mut Vec<String>) {
    let len = path.len();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, va) in a {
                path.push('/');
                path.push_str(&escape(key));
                match b.get(key) {
                    Some(vb) => walk(va, vb, path, out),
                    None => out.push(format!("-{path}")),
                }
                path.truncate(len);
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("+{path}/{}", escape(key)));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                path.push_str(&format!("/{i}"));
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out),
                    (Some(_), None) => out.push(format!("-{path}")),
                    (None, Some(_)) => out.push(format!("+{path}")),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        (a, b) if a != b => out.push(format!("~{}", if path.is_empty() { "/" } else { path })),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_answered_missed_chat_shows_what_changed() {
        let old = json!({"ChatHeader": {"Missed": true, "TakenByUsers": ""}, "ChatLines": [{"Text": "hi"}]});
        let new = json!({"ChatHeader": {"Missed": false, "TakenByUsers": "Ana", "a/b": 1}, "ChatLines": [{"Text": "hi"}, {"Text": "hello"}]});
        assert_eq!(
            changes(&old, &new),
            [
                "~/ChatHeader/Missed",
                "~/ChatHeader/TakenByUsers",
                "+/ChatHeader/a~1b",
                "+/ChatLines/1",
            ]
        );
    }

    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn equal_documents_have_no_changes_and_unequal_ones_have_some(a in document(), b in document()) {
            prop_assert!(changes(&a, &a).is_empty());
            prop_assert_eq!(changes(&a, &b).is_empty(), a == b);
        }
    }
}
