//! Decodes bincode written from a `serde_json::Value` (what `sandgen bench
//! --args` sends: JSON parsed to a value, then bincode-encoded as the value's
//! own `Serialize` writes it) into the plugin's own types.
//!
//! Such bytes differ from the plugin type's own bincode: an object is a map
//! (length, then key and value pairs), not a struct's fields in order; an
//! array has a length prefix even where a tuple has none; an enum is its
//! variant's name. bincode carries no type tags, so this reader is driven by
//! the target type and knows only that shape. Its limits: unknown fields
//! cannot be skipped, a JSON `null` inside an object cannot be told from a
//! value (leave the field out instead), negative numbers read as unsigned,
//! and enums must be unit variants.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

#[derive(Debug)]
pub(crate) struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, DeError>;

/// Decodes `bytes`, which must all be used.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut reader = Reader { input: bytes };
    let value = T::deserialize(&mut reader)?;
    if !reader.input.is_empty() {
        return Err(DeError(format!(
            "{} trailing bytes after the value",
            reader.input.len()
        )));
    }
    Ok(value)
}

struct Reader<'de> {
    input: &'de [u8],
}

impl<'de> Reader<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if self.input.len() < n {
            return Err(DeError("unexpected end of input".into()));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    /// bincode's variable-length unsigned integer.
    fn varint(&mut self) -> Result<u64> {
        let first = self.take(1)?[0];
        Ok(match first {
            0..=250 => u64::from(first),
            251 => u64::from(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            )),
            252 => u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            253 => u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")),
            _ => return Err(DeError(format!("invalid integer tag {first}"))),
        })
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| DeError("length too large".into()))
    }

    fn str(&mut self) -> Result<&'de str> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| DeError(format!("invalid UTF-8: {e}")))
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_u64(self.varint()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = DeError;

    integers!(deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
              deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64);

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError("this type cannot be decoded from bincode".into()))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.take(1)?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            other => Err(DeError(format!("invalid bool {other}"))),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_seq(Items { reader: self, left })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Items { reader: self, left })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let variant = de::value::BorrowedStrDeserializer::<DeError>::new(self.str()?);
        visitor.visit_enum(variant)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError(
            "unknown field: bincode arguments cannot contain fields the plugin does not know"
                .into(),
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, or the entries of a map.
struct Items<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// What `sandgen bench --args` sends for this JSON text.
    fn bench_args(json: &str) -> Vec<u8> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        bincode::serde::encode_to_vec(&value, bincode::config::standard()).unwrap()
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Args {
        n: u64,
        size: u32,
        name: String,
        ratio: f64,
        flags: Vec<bool>,
        pair: (u8, i32),
        mode: Mode,
        limit: Option<u16>,
        #[serde(default)]
        missing: Option<u16>,
        nested: Nested,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Nested {
        big: u64,
    }

    #[derive(Deserialize, Serialize, Debug, PartialEq)]
    enum Mode {
        Fast,
        Slow,
    }

    #[test]
    fn objects_decode_into_structs() {
        let bytes = bench_args(
            r#"{"size": 65536, "n": 2000, "name": "x", "ratio": 0.5, "flags": [true, false],
                "pair": [7, 300], "mode": "Slow", "limit": 9, "nested": {"big": 18446744073709551615}}"#,
        );
        let args: Args = from_slice(&bytes).unwrap();
        assert_eq!(
            args,
            Args {
                n: 2000,
                size: 65536,
                name: "x".into(),
                ratio: 0.5,
                flags: vec![true, false],
                pair: (7, 300),
                mode: Mode::Slow,
                limit: Some(9),
                missing: None,
                nested: Nested { big: u64::MAX },
            }
        );
    }

    #[test]
    fn out_of_range_and_unknown_fields_are_errors() {
        assert!(from_slice::<u8>(&bench_args("300")).is_err());
        let err = from_slice::<Nested>(&bench_args(r#"{"big": 1, "other": 2}"#)).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(from_slice::<u8>(&bench_args("[1, 2]")).is_err());
    }
}
