//! Reading and writing the document's objects field by field, keeping unknown fields.
//!
//! serde's derive can keep unknown fields only through `#[serde(flatten)]`, which first
//! copies a whole object, and with it every nested object, into an intermediate tree,
//! and then reads the fields out of that tree: for a chat document that was as costly
//! as parsing it. [`document_object!`] declares a struct together with a reader that
//! takes each field straight from the parser and collects the rest into `extra`, and a
//! writer that puts them back, so a document round-trips without losing a field.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::{format_local_timestamp, parse_local_timestamp, LocalTimestamp};

/// Text of a document: borrowed from the JSON it was read from wherever the JSON
/// string needed no unescaping. A rebuild reads millions of documents and keeps only
/// their columns, so a copy of every string would be allocated and freed for nothing.
pub type Text<'a> = Cow<'a, str>;

/// How one field is read from JSON (by a parser whose input lives for `'de`).
pub(crate) trait Decode<'de, T> {
    fn read<D: Deserializer<'de>>(d: D) -> Result<T, D::Error>;
}

/// How one field is written back.
pub(crate) trait Encode<T> {
    fn write<S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error>;
}

/// As the type reads and writes itself.
pub(crate) struct Plain;

impl<'de, T: Deserialize<'de>> Decode<'de, T> for Plain {
    fn read<D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
}

impl<T: Serialize> Encode<T> for Plain {
    fn write<S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }
}

/// The chat server writes `null` where it has nothing; the model uses the type's empty value.
pub(crate) struct OrDefault;

impl<'de, T: Deserialize<'de> + Default> Decode<'de, T> for OrDefault {
    fn read<D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}

impl<T: Serialize> Encode<T> for OrDefault {
    fn write<S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }
}

/// Identifiers, names and codes arrive padded now and then; the padding is never
/// meaningful. `null` is the empty string.
pub(crate) struct Trimmed;

/// Free text, kept exactly as written (newlines, markdown and leading spaces are
/// content); `null` is an error.
pub(crate) struct Verbatim;

/// Free text kept exactly as written; `null` is the empty string.
pub(crate) struct VerbatimOrEmpty;

macro_rules! text_codec {
    ($codec:ident, trim: $trim:expr, null: $null:expr) => {
        impl<'de: 'a, 'a> Decode<'de, Text<'a>> for $codec {
            fn read<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
                let visitor = TextVisitor {
                    trim: $trim,
                    null: $null,
                    life: PhantomData,
                };
                if $null {
                    d.deserialize_option(visitor)
                } else {
                    d.deserialize_str(visitor)
                }
            }
        }

        impl Encode<Text<'_>> for $codec {
            fn write<S: Serializer>(value: &Text<'_>, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(value)
            }
        }
    };
}

text_codec!(Trimmed, trim: true, null: true);
text_codec!(Verbatim, trim: false, null: false);
text_codec!(VerbatimOrEmpty, trim: false, null: true);

struct TextVisitor<'a> {
    trim: bool,
    null: bool,
    life: PhantomData<&'a ()>,
}

impl TextVisitor<'_> {
    fn cut<'t>(&self, text: &'t str) -> &'t str {
        if self.trim {
            text.trim()
        } else {
            text
        }
    }
}

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.null {
            "a string or null"
        } else {
            "a string"
        })
    }
    // Only reached through `deserialize_option`, for the codecs that allow `null`.
    fn visit_none<E: serde::de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text::Borrowed(""))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text::Borrowed(""))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text<'a>, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
        Ok(Text::Borrowed(self.cut(text)))
    }
    // Unescaped by the parser into a scratch buffer: one allocation, of the kept length.
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text<'a>, E> {
        Ok(Text::Owned(self.cut(text).to_owned()))
    }
    // Already owned (read from an owned `Value`): kept as it is unless it needs trimming.
    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Text<'a>, E> {
        Ok(Text::Owned(if self.cut(&text).len() == text.len() {
            text
        } else {
            self.cut(&text).to_owned()
        }))
    }
}

/// A site wall-clock timestamp string, or `null` (and the year-one sentinel) for "not
/// set"; written back in normalised (millisecond) form.
pub(crate) struct Local;

impl<'de> Decode<'de, LocalTimestamp> for Local {
    fn read<D: Deserializer<'de>>(d: D) -> Result<LocalTimestamp, D::Error> {
        d.deserialize_option(LocalVisitor)
    }
}

impl Encode<LocalTimestamp> for Local {
    fn write<S: Serializer>(value: &LocalTimestamp, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ts) => s.serialize_str(&format_local_timestamp(ts)),
            None => s.serialize_none(),
        }
    }
}

struct LocalVisitor;

impl<'de> Visitor<'de> for LocalVisitor {
    type Value = LocalTimestamp;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp string or null")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<LocalTimestamp, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<LocalTimestamp, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LocalTimestamp, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<LocalTimestamp, E> {
        parse_local_timestamp(text).map_err(E::custom)
    }
}

/// Reads one field's value with its codec.
pub(crate) struct Read<C, T>(pub PhantomData<(C, T)>);

impl<'de, C: Decode<'de, T>, T> DeserializeSeed<'de> for Read<C, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        C::read(d)
    }
}

/// Writes one field's value with its codec.
pub(crate) struct Written<'a, C, T>(pub &'a T, pub PhantomData<C>);

impl<C: Encode<T>, T> Serialize for Written<'_, C, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        C::write(self.0, s)
    }
}

/// An object key: one of the struct's fields, or a name to keep in `extra`.
pub(crate) enum Key<F> {
    Known(F),
    Other(String),
}

/// Reads a key without allocating unless it is unknown.
pub(crate) struct KeySeed<F>(pub fn(&str) -> Option<F>);

impl<'de, F> DeserializeSeed<'de> for KeySeed<F> {
    type Value = Key<F>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<F>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, F> Visitor<'de> for KeySeed<F> {
    type Value = Key<F>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<F>, E> {
        Ok(match (self.0)(key) {
            Some(field) => Key::Known(field),
            None => Key::Other(key.to_owned()),
        })
    }
    fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Key<F>, E> {
        Ok(match (self.0)(&key) {
            Some(field) => Key::Known(field),
            None => Key::Other(key),
        })
    }
}

/// A field's final value: absent optional fields take the type's empty value, absent
/// required ones are an error naming the field.
macro_rules! field_value {
    ($value:ident, $json:literal, $error:ty) => {
        $value.unwrap_or_default()
    };
    ($value:ident, $json:literal, $error:ty, required) => {
        $value.ok_or_else(|| <$error as serde::de::Error>::missing_field($json))?
    };
}

/// Declares a document object: its fields, each with its JSON name, its codec
/// ([`Decode`], [`Encode`]) and whether it is required, plus `extra` for every field
/// this version does not know. The object's lifetime is that of the JSON its text may
/// borrow. A repeated key reads as JSON parsers read it: the last one wins.
macro_rules! document_object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<$life:lifetime> {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $json:literal by $codec:ident $($required:ident)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name<$life> {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Fields this version does not know, kept so that writing the document back
            /// never drops what a newer producer sent.
            pub extra: serde_json::Map<String, serde_json::Value>,
        }

        impl<$life> serde::Serialize for $name<$life> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                const FIELDS: usize = [$($json),*].len();
                let mut map = s.serialize_map(Some(FIELDS + self.extra.len()))?;
                $(
                    map.serialize_entry(
                        $json,
                        &$crate::fields::Written::<$crate::fields::$codec, $ty>(
                            &self.$field,
                            std::marker::PhantomData,
                        ),
                    )?;
                )*
                for (key, value) in &self.extra {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }

        impl<'de: $life, $life> serde::Deserialize<'de> for $name<$life> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name<$life>, D::Error> {
                #[allow(non_camel_case_types)]
                enum Field {
                    $($field,)*
                }
                fn known(key: &str) -> Option<Field> {
                    match key {
                        $($json => Some(Field::$field),)*
                        _ => None,
                    }
                }
                struct ObjectVisitor<$life>(std::marker::PhantomData<&$life ()>);
                impl<'de: $life, $life> serde::de::Visitor<'de> for ObjectVisitor<$life> {
                    type Value = $name<$life>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name<$life>, A::Error> {
                        $(let mut $field: Option<$ty> = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some(key) = map.next_key_seed($crate::fields::KeySeed(known))? {
                            match key {
                                $(
                                    $crate::fields::Key::Known(Field::$field) => {
                                        $field = Some(map.next_value_seed(
                                            $crate::fields::Read::<$crate::fields::$codec, $ty>(
                                                std::marker::PhantomData,
                                            ),
                                        )?);
                                    }
                                )*
                                $crate::fields::Key::Other(name) => {
                                    extra.insert(name, map.next_value()?);
                                }
                            }
                        }
                        Ok($name {
                            $($field: field_value!($field, $json, A::Error $(, $required)?),)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            }
        }
    };
}
