//! JSON items into [`Value`]s: as they are (dict, list, str, int, float,
//! bool, None), or read by the shape of `item_type` (an array from its
//! record `{"dtype", "shape", "data"}`, a dataclass from an object, a tuple
//! from a list), with a message that names the place that does not fit.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::array::ArrayValue;
use crate::decode::{Shape, Value};

/// One JSON item, as it is.
pub(crate) fn json(bytes: &[u8]) -> Result<Value<'static>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// One JSON item, read by `shape`.
pub(crate) fn json_shaped(bytes: &[u8], shape: &Shape) -> Result<Value<'static>, String> {
    conform(json(bytes)?, shape, &mut String::from("the item"))
}

fn expected(path: &str, what: &str, value: &Value<'_>) -> String {
    format!("{path}: expected {what}, found {}", value.kind())
}

/// A plugin's key or name in a message: quoted, escaped, and cut.
fn shown(text: &str) -> String {
    sandgen::cut_text(&format!("{text:?}"), 64).into_owned()
}

/// Runs `f` with `part` appended to `path`, then restores it.
fn within<T>(path: &mut String, part: &str, f: impl FnOnce(&mut String) -> T) -> T {
    let len = path.len();
    path.push_str(part);
    let out = f(path);
    path.truncate(len);
    out
}

/// `value` (a plain JSON value) as `shape` reads it.
fn conform(
    value: Value<'static>,
    shape: &Shape,
    path: &mut String,
) -> Result<Value<'static>, String> {
    Ok(match (shape, value) {
        (Shape::Optional(_), Value::None) => Value::None,
        (Shape::Optional(inner), value) => conform(value, inner, path)?,
        (Shape::Unsigned, Value::Unsigned(n)) => Value::Unsigned(n),
        (Shape::Byte, Value::Unsigned(n)) if n <= 255 => Value::Unsigned(n),
        (Shape::Signed, Value::Signed(n)) => Value::Signed(n),
        (Shape::Signed, Value::Unsigned(n)) if i64::try_from(n).is_ok() => Value::Signed(n as i64),
        (Shape::F64 | Shape::F32, Value::Float(f)) => Value::Float(f),
        (Shape::F64 | Shape::F32, Value::Unsigned(n)) => Value::Float(n as f64),
        (Shape::F64 | Shape::F32, Value::Signed(n)) => Value::Float(n as f64),
        (Shape::Bool, Value::Bool(b)) => Value::Bool(b),
        (Shape::Str, Value::Str(s)) => Value::Str(s),
        (Shape::Bytes, Value::List(items)) => Value::Bytes(byte_values(items, path)?),
        (Shape::List(inner), Value::List(items)) => Value::List(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| within(path, &format!("[{i}]"), |p| conform(item, inner, p)))
                .collect::<Result<_, _>>()?,
        ),
        (Shape::Dict(inner), Value::Dict(entries)) => Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = format!("[{}]", shown(&k));
                    let v = within(path, &key, |p| conform(v, inner, p))?;
                    Ok((k, v))
                })
                .collect::<Result<_, String>>()?,
        ),
        (Shape::Tuple(parts), Value::List(items)) if parts.len() == items.len() => Value::Tuple(
            items
                .into_iter()
                .zip(parts)
                .enumerate()
                .map(|(i, (item, part))| {
                    within(path, &format!("[{i}]"), |p| conform(item, part, p))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Shape::Tuple(parts), value) => {
            let what = format!("a list of {} values", parts.len());
            return Err(match value {
                Value::List(items) => format!("{path}: expected {what}, found {}", items.len()),
                value => expected(path, &what, &value),
            });
        }
        (Shape::Record { names, fields, .. }, Value::Dict(mut entries)) => {
            let mut values = Vec::with_capacity(fields.len());
            for (name, field) in names.iter().zip(fields) {
                let Some(at) = entries.iter().position(|(k, _)| k == name) else {
                    return Err(format!("{path}: the field {name:?} is missing"));
                };
                let (_, value) = entries.swap_remove(at);
                values.push(within(path, &format!(".{name}"), |p| {
                    conform(value, field, p)
                })?);
            }
            Value::Record(values)
        }
        (Shape::Array, Value::Dict(entries)) => Value::Array(array(entries, path)?),
        (shape, value) => return Err(expected(path, what(shape), &value)),
    })
}

/// What a shape reads, for messages.
fn what(shape: &Shape) -> &'static str {
    match shape {
        Shape::Unsigned => "an unsigned integer",
        Shape::Signed => "an integer of 64 bits",
        Shape::Byte => "an integer from 0 to 255",
        Shape::F64 | Shape::F32 => "a number",
        Shape::Bool => "a bool",
        Shape::Str => "a string",
        Shape::Bytes => "a list of byte values",
        Shape::List(_) => "a list",
        Shape::Dict(_) | Shape::Record { .. } => "an object",
        Shape::Tuple(_) => "a list",
        Shape::Optional(_) => "a value or null",
        Shape::Array => "an array record {\"dtype\", \"shape\", \"data\"}",
    }
}

fn byte_values(items: Vec<Value<'_>>, path: &str) -> Result<Vec<u8>, String> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Unsigned(n) if n <= 255 => Ok(n as u8),
            other => Err(expected(
                &format!("{path}[{i}]"),
                "a byte value from 0 to 255",
                &other,
            )),
        })
        .collect()
}

/// An array from its JSON record.
fn array(
    entries: Vec<(String, Value<'static>)>,
    path: &str,
) -> Result<ArrayValue<'static>, String> {
    let (mut dtype, mut shape, mut data) = (None, None, None);
    for (key, value) in entries {
        let at = format!("{path}.{key}");
        match (key.as_str(), value) {
            ("dtype", Value::Str(s)) => dtype = Some(s),
            ("shape", Value::List(dims)) => {
                let dims = dims
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| match d {
                        Value::Unsigned(n) => Ok(n),
                        other => Err(expected(
                            &format!("{at}[{i}]"),
                            "an unsigned integer",
                            &other,
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                shape = Some(dims);
            }
            ("data", Value::List(items)) => data = Some(byte_values(items, &at)?),
            ("dtype", other) => return Err(expected(&at, "a dtype name", &other)),
            ("shape", other) => return Err(expected(&at, "a list of dimensions", &other)),
            ("data", other) => return Err(expected(&at, "a list of byte values", &other)),
            (other, _) => {
                return Err(format!(
                    "{path}: an array record has no field {} (it has dtype, shape and data)",
                    shown(other)
                ));
            }
        }
    }
    let missing = |field: &str| format!("{path}: the array's field {field:?} is missing");
    ArrayValue::new(
        &dtype.ok_or_else(|| missing("dtype"))?,
        shape.ok_or_else(|| missing("shape"))?,
        Cow::Owned(data.ok_or_else(|| missing("data"))?),
    )
    .map_err(|e| format!("{path}: {e}"))
}

impl<'de> Deserialize<'de> for Value<'static> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value<'static>, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value<'static>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value<'static>, E> {
        Ok(Value::None)
    }

    fn visit_none<E>(self) -> Result<Value<'static>, E> {
        Ok(Value::None)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value<'static>, E> {
        Ok(Value::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value<'static>, E> {
        Ok(Value::Unsigned(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value<'static>, E> {
        Ok(Value::Signed(n))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value<'static>, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value<'static>, E> {
        Ok(Value::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value<'static>, E> {
        Ok(Value::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'static>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'static>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((key, value)) = map.next_entry::<String, Value<'static>>()? {
            entries.push((key, value));
        }
        Ok(Value::Dict(entries))
    }
}
