//! `batch_size`: items stacked into batches in Rust, without the GIL.
//!
//! The first item of a batch sets its structure; each item after it must
//! have the same. Arrays of one dtype and shape become one array with a
//! new first axis (each item's elements copied once, from the worker's
//! batch into the stacked array's memory); numbers and bools become one
//! 1-D array; tuples, dicts and dataclasses are stacked field by field;
//! strings, bytes, `None` and lists stay a Python list of the items'
//! values.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use sandgen_wire::Dtype;

use crate::array::{ArrayData, Elements};
use crate::decode::{Shape, Value};

/// The most bytes a column reserves before its items come: a large
/// `batch_size` of large items grows its columns as they arrive instead.
const MAX_RESERVE: usize = 256 << 20;

/// One field of a batch, stacked across its items.
enum Column {
    Array {
        dtype: Dtype,
        /// One item's shape.
        shape: Vec<usize>,
        data: Elements,
    },
    Unsigned(Vec<u64>),
    Signed(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    Objects(Vec<Value<'static>>),
    Tuple(Vec<Column>),
    Dict(Vec<(String, Column)>),
    Record(Vec<Column>),
}

/// What a column holds, for messages.
fn column_kind(column: &Column) -> String {
    match column {
        Column::Array { dtype, shape, .. } => format!("an array of {dtype} and shape {shape:?}"),
        Column::Unsigned(_) | Column::Signed(_) => "an integer".into(),
        Column::Float(_) => "a float".into(),
        Column::Bool(_) => "a bool".into(),
        Column::Objects(_) => "a string, bytes, a list or None".into(),
        Column::Tuple(parts) => format!("a tuple of {}", parts.len()),
        Column::Dict(_) => "a dict".into(),
        Column::Record(_) => "a record".into(),
    }
}

/// A column's values, the first being `value`, with room for `items`.
fn first<T>(value: T, items: usize) -> Vec<T> {
    let mut column = Vec::with_capacity(items);
    column.push(value);
    column
}

/// Appends an array's elements, of the column's dtype.
fn append(column: &mut Elements, data: ArrayData<'_>) {
    match data {
        ArrayData::Bytes(bytes) => column.extend(&bytes),
        ArrayData::Typed(typed) => {
            macro_rules! same {
                ($($v:ident),*) => {
                    match (column, typed) {
                        $((Elements::$v(a), Elements::$v(b)) => a.extend(b),)*
                        // The dtypes were compared before.
                        _ => {}
                    }
                };
            }
            same!(Bool, U8, I8, U16, I16, U32, I32, U64, I64, F16, F32, F64)
        }
    }
}

impl Column {
    /// A column whose first item is `value`, with room for `capacity` items
    /// (reserved up to [`MAX_RESERVE`] bytes; past it, the column grows as
    /// items come).
    fn start(value: Value<'_>, capacity: usize) -> Column {
        let items = capacity.min(1 << 16);
        let parts = |parts: Vec<Value<'_>>| {
            let columns = parts.into_iter().map(|p| Column::start(p, capacity));
            columns.collect()
        };
        match value {
            Value::Array(array) => {
                let per_item = array.shape.iter().product::<usize>();
                let elements = per_item
                    .saturating_mul(capacity)
                    .min(MAX_RESERVE / array.dtype.size());
                let (dtype, shape) = (array.dtype, array.shape);
                let mut data = Elements::with_capacity(dtype, elements);
                append(&mut data, array.data);
                Column::Array { dtype, shape, data }
            }
            Value::Unsigned(n) => Column::Unsigned(first(n, items)),
            Value::Signed(n) => Column::Signed(first(n, items)),
            Value::Float(f) => Column::Float(first(f, items)),
            Value::Bool(b) => Column::Bool(first(b, items)),
            Value::Tuple(values) => Column::Tuple(parts(values)),
            Value::Record(values) => Column::Record(parts(values)),
            Value::Dict(entries) => Column::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, Column::start(v, capacity)))
                    .collect(),
            ),
            other @ (Value::None | Value::Str(_) | Value::Bytes(_) | Value::List(_)) => {
                Column::Objects(first(other.into_owned(), items))
            }
        }
    }

    /// Adds one item's `value`; `path` names the place in messages.
    fn push(&mut self, value: Value<'_>, path: &mut String) -> Result<(), String> {
        let mismatch = |column: &Column, value: &Value<'_>, path: &str| {
            let at = if path.is_empty() { "" } else { " at " };
            format!(
                "{}{at}{path}, where the batch's first item has {}",
                value.kind(),
                column_kind(column)
            )
        };
        match (&mut *self, value) {
            (Column::Array { dtype, shape, data }, Value::Array(array))
                if *dtype == array.dtype && *shape == array.shape =>
            {
                append(data, array.data);
            }
            (Column::Unsigned(v), Value::Unsigned(n)) => v.push(n),
            (Column::Signed(v), Value::Signed(n)) => v.push(n),
            (Column::Signed(v), Value::Unsigned(n)) if i64::try_from(n).is_ok() => v.push(n as i64),
            (Column::Unsigned(v), Value::Signed(n)) if v.iter().all(|&u| u <= i64::MAX as u64) => {
                let mut signed: Vec<i64> = v.iter().map(|&u| u as i64).collect();
                signed.push(n);
                *self = Column::Signed(signed);
            }
            (Column::Unsigned(v), Value::Float(f)) => {
                let mut floats: Vec<f64> = v.iter().map(|&u| u as f64).collect();
                floats.push(f);
                *self = Column::Float(floats);
            }
            (Column::Signed(v), Value::Float(f)) => {
                let mut floats: Vec<f64> = v.iter().map(|&i| i as f64).collect();
                floats.push(f);
                *self = Column::Float(floats);
            }
            (Column::Float(v), Value::Float(f)) => v.push(f),
            (Column::Float(v), Value::Unsigned(n)) => v.push(n as f64),
            (Column::Float(v), Value::Signed(n)) => v.push(n as f64),
            (Column::Bool(v), Value::Bool(b)) => v.push(b),
            (Column::Objects(v), value @ (Value::None | Value::Str(_) | Value::Bytes(_))) => {
                v.push(value.into_owned());
            }
            (Column::Objects(v), value @ Value::List(_)) => v.push(value.into_owned()),
            (Column::Tuple(columns), Value::Tuple(parts))
            | (Column::Record(columns), Value::Record(parts))
                if columns.len() == parts.len() =>
            {
                for (i, (column, part)) in columns.iter_mut().zip(parts).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    column.push(part, path)?;
                    path.truncate(len);
                }
            }
            (Column::Dict(columns), Value::Dict(entries))
                if columns.len() == entries.len()
                    && entries
                        .iter()
                        .all(|(k, _)| columns.iter().any(|(c, _)| c == k)) =>
            {
                for (key, value) in entries {
                    let len = path.len();
                    path.push_str(&format!("[{}]", sandgen::cut_text(&format!("{key:?}"), 64)));
                    if let Some((_, column)) = columns.iter_mut().find(|(c, _)| *c == key) {
                        column.push(value, path)?;
                    }
                    path.truncate(len);
                }
            }
            (Column::Dict(columns), Value::Dict(entries)) => {
                let keys = |k: Vec<&String>| sandgen::cut_text(&format!("{k:?}"), 256).into_owned();
                return Err(format!(
                    "a dict with the keys {}{}{path}, where the batch's first item has {}",
                    keys(entries.iter().map(|(k, _)| k).collect()),
                    if path.is_empty() { "" } else { " at " },
                    keys(columns.iter().map(|(k, _)| k).collect()),
                ));
            }
            (column, value) => return Err(mismatch(column, &value, path)),
        }
        Ok(())
    }

    /// The Python object of the stacked column of `count` items; `shape`
    /// gives record classes and the numbers' dtypes.
    fn into_py(self, py: Python<'_>, count: usize, shape: Option<&Shape>) -> PyResult<Py<PyAny>> {
        let shape = match shape {
            Some(Shape::Optional(inner)) => Some(&**inner),
            other => other,
        };
        let one = [count];
        Ok(match self {
            Column::Array {
                shape: item, data, ..
            } => {
                let stacked: Vec<usize> = std::iter::once(count).chain(item).collect();
                data.into_py(py, &stacked)?
            }
            Column::Unsigned(v) => match shape {
                Some(Shape::Byte) => Elements::U8(v.into_iter().map(|n| n as u8).collect()),
                _ if v.iter().all(|&n| n <= i64::MAX as u64) => {
                    Elements::I64(v.into_iter().map(|n| n as i64).collect())
                }
                _ => Elements::U64(v),
            }
            .into_py(py, &one)?,
            Column::Signed(v) => Elements::I64(v).into_py(py, &one)?,
            Column::Float(v) => match shape {
                Some(Shape::F32) => Elements::F32(v.into_iter().map(|f| f as f32).collect()),
                _ => Elements::F64(v),
            }
            .into_py(py, &one)?,
            Column::Bool(v) => Elements::Bool(v).into_py(py, &one)?,
            Column::Objects(values) => {
                let items = values
                    .into_iter()
                    .map(|value| value.into_py(py, shape))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any().unbind()
            }
            Column::Tuple(columns) => {
                let shapes = match shape {
                    Some(Shape::Tuple(shapes)) => Some(shapes),
                    _ => None,
                };
                let parts = columns
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| c.into_py(py, count, shapes.and_then(|s| s.get(i))))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, parts)?.into_any().unbind()
            }
            Column::Dict(columns) => {
                let inner = match shape {
                    Some(Shape::Dict(inner)) => Some(&**inner),
                    _ => None,
                };
                let dict = PyDict::new(py);
                for (key, column) in columns {
                    dict.set_item(key, column.into_py(py, count, inner)?)?;
                }
                dict.into_any().unbind()
            }
            Column::Record(columns) => {
                let Some(Shape::Record { class, fields, .. }) = shape else {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "a record without its class",
                    ));
                };
                let fields = columns
                    .into_iter()
                    .zip(fields)
                    .map(|(c, field)| c.into_py(py, count, Some(field)))
                    .collect::<PyResult<Vec<_>>>()?;
                class.bind(py).call1(PyTuple::new(py, fields)?)?.unbind()
            }
        })
    }
}

/// A finished batch of stacked items.
pub(crate) struct Stacked {
    column: Column,
    count: usize,
}

impl Stacked {
    /// How many items the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The batch as a Python object.
    pub(crate) fn into_py(self, py: Python<'_>, shape: Option<&Shape>) -> PyResult<Py<PyAny>> {
        self.column.into_py(py, self.count, shape)
    }
}

/// Stacks items into batches of `size`.
pub(crate) struct Stacker {
    size: usize,
    column: Option<Column>,
    count: usize,
}

impl Stacker {
    /// Batches of `size` items (at least 1).
    pub(crate) fn new(size: usize) -> Stacker {
        Stacker {
            size: size.max(1),
            column: None,
            count: 0,
        }
    }

    /// Adds an item; returns the batch it completes. An item that does
    /// not stack with the batch's first is refused with the reason (the
    /// pass then ends: the batch is not delivered).
    pub(crate) fn push(&mut self, value: Value<'_>) -> Result<Option<Stacked>, String> {
        match &mut self.column {
            None => self.column = Some(Column::start(value, self.size)),
            Some(column) => column.push(value, &mut String::new())?,
        }
        self.count += 1;
        Ok(if self.count == self.size {
            self.finish()
        } else {
            None
        })
    }

    /// How many items a batch holds.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// How many items wait for their batch to fill.
    pub(crate) fn held(&self) -> usize {
        self.count
    }

    /// The batch so far (short), if it has any item.
    pub(crate) fn finish(&mut self) -> Option<Stacked> {
        let column = self.column.take()?;
        let count = std::mem::take(&mut self.count);
        Some(Stacked { column, count })
    }
}
