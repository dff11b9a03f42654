//! Items into Python objects: JSON items, and bincode items by the shape
//! that `item_type` describes. The bytes are decoded into [`Value`]s without
//! the GIL (arrays borrowing their data from the batch until
//! [`Value::into_owned`] copies it once); only making the Python objects
//! needs it.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::array::ArrayValue;

/// How the items of a pass become Python objects.
pub(crate) enum Decoder {
    /// JSON text into dict, list, str, int, float, bool and None.
    Json,
    /// JSON text read by the shape of `item_type` (arrays from their
    /// records, dataclasses from objects).
    JsonShaped(Shape),
    /// Each item's encoded bytes as `bytes` (bincode without `item_type`).
    Raw,
    /// `item_type=bytes`: each item's payload (after its length) as
    /// `bytes`, one copy from the worker's batch.
    Bytes,
    /// bincode, read by shape.
    Bincode(Shape),
}

/// The shape of a bincode value, from a Python `item_type`.
pub(crate) enum Shape {
    /// `int`: an unsigned integer (u16 to u64; u8 below 251), bincode's
    /// variable-length encoding.
    Unsigned,
    /// `sandgen.i64`: a signed integer (i16 to i64), zigzag encoded.
    Signed,
    /// `sandgen.u8`: one byte.
    Byte,
    /// `float`: an f64.
    F64,
    /// `sandgen.f32`: an f32.
    F32,
    Bool,
    Str,
    /// `bytes`: a length, then the bytes (`Vec<u8>` or `serde_bytes`).
    Bytes,
    List(Box<Shape>),
    /// `dict[str, T]`.
    Dict(Box<Shape>),
    Tuple(Vec<Shape>),
    /// `T | None`.
    Optional(Box<Shape>),
    /// A dataclass: its fields in order, like a Rust struct.
    Record {
        class: Py<PyAny>,
        names: Vec<String>,
        fields: Vec<Shape>,
    },
    /// `numpy.ndarray`: an array record (`sandgen_wire::Array`).
    Array,
}

impl Decoder {
    /// The shape that `item_type` gave, if any.
    pub(crate) fn shape(&self) -> Option<&Shape> {
        match self {
            Decoder::Bincode(shape) | Decoder::JsonShaped(shape) => Some(shape),
            Decoder::Json | Decoder::Raw | Decoder::Bytes => None,
        }
    }
}

impl Shape {
    /// The shape of a description made by the Python side
    /// (`sandgen._types.describe`): a name, or a tuple of a name and its
    /// parts.
    pub(crate) fn from_description(description: &Bound<'_, PyAny>) -> PyResult<Shape> {
        if let Ok(name) = description.extract::<String>() {
            return Ok(match name.as_str() {
                "int" => Shape::Unsigned,
                "i64" => Shape::Signed,
                "u8" => Shape::Byte,
                "float" => Shape::F64,
                "f32" => Shape::F32,
                "bool" => Shape::Bool,
                "str" => Shape::Str,
                "bytes" => Shape::Bytes,
                "ndarray" => Shape::Array,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "unknown item shape `{other}`"
                    )));
                }
            });
        }
        let parts = description.cast::<PyTuple>()?;
        let name: String = parts.get_item(0)?.extract()?;
        let inner = |i: usize| -> PyResult<Box<Shape>> {
            Ok(Box::new(Shape::from_description(&parts.get_item(i)?)?))
        };
        Ok(match name.as_str() {
            "list" => Shape::List(inner(1)?),
            "dict" => Shape::Dict(inner(1)?),
            "optional" => Shape::Optional(inner(1)?),
            "tuple" => Shape::Tuple(
                parts
                    .get_item(1)?
                    .try_iter()?
                    .map(|part| Shape::from_description(&part?))
                    .collect::<PyResult<_>>()?,
            ),
            "record" => Shape::Record {
                class: parts.get_item(1)?.unbind(),
                names: parts.get_item(3)?.extract()?,
                fields: parts
                    .get_item(2)?
                    .try_iter()?
                    .map(|part| Shape::from_description(&part?))
                    .collect::<PyResult<_>>()?,
            },
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown item shape `{other}`"
                )));
            }
        })
    }
}

/// A decoded item, before it becomes a Python object; arrays may borrow
/// their data from the batch (`'a`).
pub(crate) enum Value<'a> {
    None,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value<'a>>),
    Tuple(Vec<Value<'a>>),
    /// Keys in the order they came.
    Dict(Vec<(String, Value<'a>)>),
    /// A record's fields, in order.
    Record(Vec<Value<'a>>),
    Array(ArrayValue<'a>),
}

impl<'a> Value<'a> {
    /// What the value is, for messages.
    pub(crate) fn kind(&self) -> String {
        match self {
            Value::Array(a) => format!("an array of {} and shape {:?}", a.dtype, a.shape),
            Value::Unsigned(_) | Value::Signed(_) => "an integer".into(),
            Value::Float(_) => "a float".into(),
            Value::Bool(_) => "a bool".into(),
            Value::None => "None".into(),
            Value::Str(_) => "a string".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(parts) => format!("a tuple of {}", parts.len()),
            Value::Dict(_) => "a dict".into(),
            Value::Record(_) => "a record".into(),
        }
    }

    /// The value with its arrays' data copied out of the batch (once,
    /// into the typed memory the numpy arrays will own).
    pub(crate) fn into_owned(self) -> Value<'static> {
        let all = |values: Vec<Value<'a>>| values.into_iter().map(Value::into_owned).collect();
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(b),
            Value::Unsigned(n) => Value::Unsigned(n),
            Value::Signed(n) => Value::Signed(n),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(s),
            Value::Bytes(b) => Value::Bytes(b),
            Value::List(items) => Value::List(all(items)),
            Value::Tuple(items) => Value::Tuple(all(items)),
            Value::Record(fields) => Value::Record(all(fields)),
            Value::Dict(entries) => Value::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_owned()))
                    .collect(),
            ),
            Value::Array(array) => Value::Array(array.into_owned()),
        }
    }

    /// The Python object of this value; `shape` gives the classes of
    /// records.
    pub(crate) fn into_py(self, py: Python<'_>, shape: Option<&Shape>) -> PyResult<Py<PyAny>> {
        // `T | None`: a value that is there has the shape of `T`.
        let shape = match shape {
            Some(Shape::Optional(inner)) => Some(&**inner),
            other => other,
        };
        Ok(match self {
            Value::None => py.None(),
            Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
            Value::Unsigned(n) => n.into_pyobject(py)?.into_any().unbind(),
            Value::Signed(n) => n.into_pyobject(py)?.into_any().unbind(),
            Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
            Value::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
            Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
            Value::List(items) => {
                let inner = match shape {
                    Some(Shape::List(inner)) => Some(&**inner),
                    _ => None,
                };
                let items = items
                    .into_iter()
                    .map(|item| item.into_py(py, inner))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any().unbind()
            }
            Value::Tuple(items) => {
                let shapes = match shape {
                    Some(Shape::Tuple(shapes)) => Some(shapes),
                    _ => None,
                };
                let items = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| item.into_py(py, shapes.and_then(|s| s.get(i))))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, items)?.into_any().unbind()
            }
            Value::Dict(entries) => {
                let inner = match shape {
                    Some(Shape::Dict(inner)) => Some(&**inner),
                    _ => None,
                };
                let dict = PyDict::new(py);
                for (key, value) in entries {
                    dict.set_item(key, value.into_py(py, inner)?)?;
                }
                dict.into_any().unbind()
            }
            Value::Record(fields) => {
                let Some(Shape::Record {
                    class,
                    fields: shapes,
                    ..
                }) = shape
                else {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "a record without its class",
                    ));
                };
                let fields = fields
                    .into_iter()
                    .zip(shapes)
                    .map(|(field, shape)| field.into_py(py, Some(shape)))
                    .collect::<PyResult<Vec<_>>>()?;
                class.bind(py).call1(PyTuple::new(py, fields)?)?.unbind()
            }
            Value::Array(array) => array.into_py(py)?,
        })
    }
}

/// The most elements a decoded length may claim beyond what the item's
/// bytes could hold (each element takes at least one byte, except in a
/// list of empty tuples, which nobody sends).
fn check_len(len: u64, left: usize) -> Result<usize, String> {
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= left)
        .ok_or_else(|| format!("a length of {len} is more than the {left} bytes left"))
}

/// The payload of an item that is bincode of a byte string (a length,
/// then the bytes), without copying it.
pub(crate) fn bytes_payload(item: &[u8]) -> Result<&[u8], String> {
    let mut reader = Reader { input: item };
    let len = check_len(reader.varint()?, reader.input.len())?;
    if len != reader.input.len() {
        return Err(format!(
            "a byte string of {len} bytes is followed by {} more: does item_type match what the plugin yields?",
            reader.input.len() - len
        ));
    }
    Ok(reader.input)
}

/// Reads one bincode value of `shape` from `bytes`, all of which it must
/// use.
pub(crate) fn bincode<'a>(bytes: &'a [u8], shape: &Shape) -> Result<Value<'a>, String> {
    let mut reader = Reader { input: bytes };
    let value = reader.value(shape, 0)?;
    if !reader.input.is_empty() {
        return Err(format!(
            "{} bytes left over after the value: does item_type match what the plugin yields?",
            reader.input.len()
        ));
    }
    Ok(value)
}

/// The most elements a list or dict reserves room for before they are read.
const PREALLOCATE: usize = 4096;

/// Nesting deeper than this is refused (a hostile item cannot exhaust the
/// stack: shapes are finite, but this keeps the bound explicit).
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.input.len() < n {
            return Err(format!(
                "the item ended early (wanted {n} more bytes, {} left)",
                self.input.len()
            ));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// bincode's variable-length unsigned integer.
    fn varint(&mut self) -> Result<u64, String> {
        Ok(match self.byte()? {
            n @ 0..=250 => u64::from(n),
            251 => u64::from(u16::from_le_bytes(self.take(2)?.try_into().unwrap())),
            252 => u64::from(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            253 => u64::from_le_bytes(self.take(8)?.try_into().unwrap()),
            254 => {
                return Err(
                    "a 128-bit integer does not fit a Python int decoder of 64 bits".into(),
                );
            }
            tag => return Err(format!("invalid integer tag {tag}")),
        })
    }

    fn string(&mut self) -> Result<String, String> {
        let len = check_len(self.varint()?, self.input.len())?;
        let bytes = self.take(len)?;
        Ok(std::str::from_utf8(bytes)
            .map_err(|e| format!("a string is not UTF-8: {e}"))?
            .to_owned())
    }

    fn value(&mut self, shape: &Shape, depth: usize) -> Result<Value<'a>, String> {
        if depth > MAX_DEPTH {
            return Err("the item nests too deeply".into());
        }
        Ok(match shape {
            Shape::Unsigned => Value::Unsigned(self.varint()?),
            Shape::Signed => {
                let n = self.varint()?;
                Value::Signed(((n >> 1) as i64) ^ -((n & 1) as i64))
            }
            Shape::Byte => Value::Unsigned(u64::from(self.byte()?)),
            Shape::F64 => Value::Float(f64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            Shape::F32 => Value::Float(f64::from(f32::from_le_bytes(
                self.take(4)?.try_into().unwrap(),
            ))),
            Shape::Bool => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("invalid bool byte {b}")),
            },
            Shape::Str => Value::Str(self.string()?),
            Shape::Bytes => {
                let len = check_len(self.varint()?, self.input.len())?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            Shape::List(inner) => {
                let len = check_len(self.varint()?, self.input.len())?;
                // A claimed length allocates no more than a page's worth
                // up front: each element is larger here than in the item.
                let mut items = Vec::with_capacity(len.min(PREALLOCATE));
                for _ in 0..len {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::List(items)
            }
            Shape::Dict(inner) => {
                let len = check_len(self.varint()?, self.input.len())?;
                let mut entries = Vec::with_capacity(len.min(PREALLOCATE));
                for _ in 0..len {
                    let key = self.string()?;
                    entries.push((key, self.value(inner, depth + 1)?));
                }
                Value::Dict(entries)
            }
            Shape::Tuple(parts) => Value::Tuple(
                parts
                    .iter()
                    .map(|part| self.value(part, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Shape::Optional(inner) => match self.byte()? {
                0 => Value::None,
                1 => self.value(inner, depth + 1)?,
                b => return Err(format!("invalid option tag {b}")),
            },
            Shape::Record { fields, .. } => Value::Record(
                fields
                    .iter()
                    .map(|field| self.value(field, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Shape::Array => Value::Array(self.array()?),
        })
    }

    /// An array record: its dtype, its shape and its bytes (borrowed).
    fn array(&mut self) -> Result<ArrayValue<'a>, String> {
        let dtype = self.string()?;
        let rank = check_len(self.varint()?, self.input.len())?;
        let shape = (0..rank)
            .map(|_| self.varint())
            .collect::<Result<Vec<_>, _>>()?;
        let len = check_len(self.varint()?, self.input.len())?;
        ArrayValue::new(&dtype, shape, Cow::Borrowed(self.take(len)?))
            .map_err(|e| format!("an array: {e}"))
    }
}
