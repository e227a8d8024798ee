//! The resource path of a request: which entity set, entity, navigation or property.

use crate::error::{QueryError, Result};
use crate::model::{entity_set, EntitySet, Navigation};
use crate::options::split_top;
use crate::syntax::{parse_expr, ExprKind, Lit};

/// `Chats('…')` or `ChatLines(ChatUID='…',Seq=3)`: a value for every key property.
#[derive(Debug, Clone, PartialEq)]
pub struct Key(pub Vec<(&'static str, Lit)>);

#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    ServiceDocument,
    Metadata,
    /// An entity set, or the entities a navigation property leads to from one entity.
    Collection {
        set: &'static EntitySet,
        /// The entity the navigation starts from, with its own set.
        from: Option<(&'static EntitySet, Key, &'static Navigation)>,
        count: bool,
    },
    Entity {
        set: &'static EntitySet,
        key: Key,
        /// The single-valued navigation taken from `key`'s entity, if any.
        via: Option<(&'static EntitySet, &'static Navigation)>,
    },
    Property {
        set: &'static EntitySet,
        key: Key,
        property: &'static str,
        raw: bool,
    },
}

/// Splits `Name(args)` into the name and the argument text.
fn split_key(segment: &str) -> Result<(&str, Option<&str>)> {
    match segment.find('(') {
        None => Ok((segment, None)),
        Some(open) => {
            let inner = segment[open + 1..].strip_suffix(')').ok_or_else(|| {
                QueryError::Invalid(format!("'{segment}': the key is not closed with ')'"))
            })?;
            Ok((&segment[..open], Some(inner)))
        }
    }
}

fn parse_key(set: &'static EntitySet, text: &str) -> Result<Key> {
    let literal = |t: &str| -> Result<Lit> {
        match parse_expr(t.trim(), "key")?.kind {
            ExprKind::Lit(l) if l != Lit::Null => Ok(l),
            _ => Err(QueryError::Invalid(format!(
                "key value '{t}' is not a literal"
            ))),
        }
    };
    let keys = set.table.keys;
    let mut values = Vec::new();
    let parts = split_top(text, ',');
    if parts.len() == 1 && keys.len() == 1 && !looks_named(parts[0]) {
        values.push((keys[0], literal(parts[0])?));
    } else {
        for part in parts {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                QueryError::Invalid(format!(
                    "{} has the key ({}); address an entity as {}({})",
                    set.name,
                    keys.join(", "),
                    set.name,
                    keys.iter()
                        .map(|k| format!("{k}=…"))
                        .collect::<Vec<_>>()
                        .join(",")
                ))
            })?;
            let name = keys.iter().find(|k| **k == name.trim()).ok_or_else(|| {
                QueryError::Invalid(format!(
                    "'{}' is not a key property of {}",
                    name.trim(),
                    set.name
                ))
            })?;
            values.push((*name, literal(value)?));
        }
    }
    for key in keys {
        if !values.iter().any(|(k, _)| k == key) {
            return Err(QueryError::Invalid(format!(
                "the key of {} needs {} (all of: {})",
                set.name,
                key,
                keys.join(", ")
            )));
        }
    }
    Ok(Key(values))
}

/// `Name=value` rather than a bare value (a string value always starts with a quote).
fn looks_named(part: &str) -> bool {
    let part = part.trim();
    !part.starts_with('\'') && part.contains('=')
}

fn unknown_set(name: &str) -> QueryError {
    let known: Vec<&str> = crate::model::ENTITY_SETS.iter().map(|s| s.name).collect();
    QueryError::NotFound(format!(
        "no entity set named '{name}' (the feed has {})",
        known.join(", ")
    ))
}

/// Parses the path below the service root, already percent-decoded.
pub fn parse(path: &str) -> Result<Resource> {
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Ok(Resource::ServiceDocument);
    }
    if path == "$metadata" {
        return Ok(Resource::Metadata);
    }
    if path.starts_with("$batch") || path.starts_with("$crossjoin") || path.starts_with("$all") {
        return Err(QueryError::unsupported(format!("the resource {path}")));
    }
    // '/' inside a quoted key value (a ChatUID may hold one) does not split.
    let segments = split_top(path, '/');
    let (set_name, key_text) = split_key(segments[0])?;
    let set = entity_set(set_name).ok_or_else(|| unknown_set(set_name))?;
    let rest = &segments[1..];
    let Some(key_text) = key_text else {
        return match rest {
            [] => Ok(Resource::Collection {
                set,
                from: None,
                count: false,
            }),
            ["$count"] => Ok(Resource::Collection {
                set,
                from: None,
                count: true,
            }),
            _ => Err(QueryError::Invalid(format!(
                "'{}' cannot follow the entity set {}; address one entity first, as in {}('…')",
                rest.join("/"),
                set.name,
                set.name
            ))),
        };
    };
    let key = parse_key(set, key_text)?;
    match rest {
        [] => Ok(Resource::Entity {
            set,
            key,
            via: None,
        }),
        [segment, tail @ ..] => {
            if let Some(nav) = set.navigation(segment) {
                let target = entity_set(nav.target).ok_or_else(|| unknown_set(nav.target))?;
                return match (nav.collection, tail) {
                    (true, []) => Ok(Resource::Collection {
                        set: target,
                        from: Some((set, key, nav)),
                        count: false,
                    }),
                    (true, ["$count"]) => Ok(Resource::Collection {
                        set: target,
                        from: Some((set, key, nav)),
                        count: true,
                    }),
                    (false, []) => Ok(Resource::Entity {
                        set: target,
                        key,
                        via: Some((set, nav)),
                    }),
                    _ => Err(QueryError::unsupported(format!(
                        "the path '{}' after {}: address the related entity set directly",
                        tail.join("/"),
                        nav.name
                    ))),
                };
            }
            let column = set.table.column(segment).ok_or_else(|| {
                QueryError::NotFound(format!(
                    "{} has no property or navigation named '{segment}'",
                    set.name
                ))
            })?;
            match tail {
                [] => Ok(Resource::Property {
                    set,
                    key,
                    property: column.name,
                    raw: false,
                }),
                ["$value"] => Ok(Resource::Property {
                    set,
                    key,
                    property: column.name,
                    raw: true,
                }),
                _ => Err(QueryError::Invalid(format!(
                    "'{}' cannot follow the property {segment}",
                    tail.join("/")
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve() {
        assert_eq!(parse("").expect("root"), Resource::ServiceDocument);
        assert_eq!(parse("$metadata").expect("metadata"), Resource::Metadata);
        assert!(matches!(
            parse("Chats").expect("set"),
            Resource::Collection {
                count: false,
                from: None,
                ..
            }
        ));
        assert!(matches!(
            parse("Chats/$count").expect("count"),
            Resource::Collection { count: true, .. }
        ));
        match parse("Chats('a/b''c')/Lines").expect("nav") {
            Resource::Collection {
                set,
                from: Some((from, key, nav)),
                ..
            } => {
                assert_eq!(set.name, "ChatLines");
                assert_eq!(from.name, "Chats");
                assert_eq!(nav.name, "Lines");
                assert_eq!(key.0, vec![("ChatUID", Lit::Str("a/b'c".into()))]);
            }
            other => panic!("{other:?}"),
        }
        match parse("ChatLines(ChatUID='x',Seq=3)/Chat").expect("single nav") {
            Resource::Entity {
                set, via: Some(_), ..
            } => assert_eq!(set.name, "Chats"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("Chats('x')/SiteKey/$value").expect("value"),
            Resource::Property {
                property: "SiteKey",
                raw: true,
                ..
            }
        ));
    }

    #[test]
    fn wrong_paths_are_explained() {
        assert!(matches!(parse("Nope"), Err(QueryError::NotFound(_))));
        assert!(parse("ChatLines('x')")
            .expect_err("composite")
            .to_string()
            .contains("Seq"));
        assert!(matches!(
            parse("Chats('x')/Nope"),
            Err(QueryError::NotFound(_))
        ));
        assert!(matches!(parse("$batch"), Err(QueryError::Unsupported(_))));
    }
}
