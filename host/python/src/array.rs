//! Array items into numpy arrays. The elements are copied once, without
//! the GIL, from the worker's batch into a typed `Vec` that the numpy array
//! then owns (`PyArray::from_owned_array`: no second copy, and the array is
//! writable).

use std::borrow::Cow;

use numpy::PyArray;
use numpy::ndarray::{ArrayD, IxDyn};
use pyo3::prelude::*;
use sandgen_wire::{Dtype, Element};

// The elements travel little-endian and numpy arrays are made in the
// machine's order: on a big-endian host each would need a swap.
#[cfg(target_endian = "big")]
compile_error!("the Python extension reads array items in place: little-endian hosts only");

/// The elements of an array (or of a column of stacked arrays), typed.
/// `float16` is kept as its bits (`u16`) and viewed as `float16` in numpy.
pub(crate) enum Elements {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` of `$elements`.
macro_rules! each {
    ($elements:expr, $v:ident => $body:expr) => {
        match $elements {
            Elements::Bool($v) => $body,
            Elements::U8($v) => $body,
            Elements::I8($v) => $body,
            Elements::U16($v) | Elements::F16($v) => $body,
            Elements::I16($v) => $body,
            Elements::U32($v) => $body,
            Elements::I32($v) => $body,
            Elements::U64($v) => $body,
            Elements::I64($v) => $body,
            Elements::F32($v) => $body,
            Elements::F64($v) => $body,
        }
    };
}

impl Elements {
    /// No elements of `dtype`, with room for `capacity`.
    pub(crate) fn with_capacity(dtype: Dtype, capacity: usize) -> Elements {
        match dtype {
            Dtype::Bool => Elements::Bool(Vec::with_capacity(capacity)),
            Dtype::Uint8 => Elements::U8(Vec::with_capacity(capacity)),
            Dtype::Int8 => Elements::I8(Vec::with_capacity(capacity)),
            Dtype::Uint16 => Elements::U16(Vec::with_capacity(capacity)),
            Dtype::Int16 => Elements::I16(Vec::with_capacity(capacity)),
            Dtype::Uint32 => Elements::U32(Vec::with_capacity(capacity)),
            Dtype::Int32 => Elements::I32(Vec::with_capacity(capacity)),
            Dtype::Uint64 => Elements::U64(Vec::with_capacity(capacity)),
            Dtype::Int64 => Elements::I64(Vec::with_capacity(capacity)),
            Dtype::Float16 => Elements::F16(Vec::with_capacity(capacity)),
            Dtype::Float32 => Elements::F32(Vec::with_capacity(capacity)),
            // A dtype added to the wire format later reads as float64
            // bytes; `ArrayValue::new` refuses it before it gets here.
            _ => Elements::F64(Vec::with_capacity(capacity)),
        }
    }

    /// Appends the elements of `bytes`: little-endian, whole elements of
    /// this dtype (and 0 or 1 for bool), as [`sandgen_wire::Array`] checks.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        match self {
            Elements::Bool(v) => Element::extend_from_le_bytes(v, bytes),
            Elements::U8(v) => append_le(v, bytes),
            Elements::I8(v) => append_le(v, bytes),
            Elements::U16(v) | Elements::F16(v) => append_le(v, bytes),
            Elements::I16(v) => append_le(v, bytes),
            Elements::U32(v) => append_le(v, bytes),
            Elements::I32(v) => append_le(v, bytes),
            Elements::U64(v) => append_le(v, bytes),
            Elements::I64(v) => append_le(v, bytes),
            Elements::F32(v) => append_le(v, bytes),
            Elements::F64(v) => append_le(v, bytes),
        }
    }

    /// The numpy array of these elements in `shape` (whose product is
    /// their number), owning them.
    pub(crate) fn into_py(self, py: Python<'_>, shape: &[usize]) -> PyResult<Py<PyAny>> {
        let shape = IxDyn(shape);
        let half = matches!(self, Elements::F16(_));
        let array = each!(self, v => {
            let owned = ArrayD::from_shape_vec(shape, v).map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("array shape: {e}"))
            })?;
            PyArray::from_owned_array(py, owned).into_any()
        });
        if half {
            let float16 = py.import("numpy")?.getattr("float16")?;
            return Ok(array.call_method1("view", (float16,))?.unbind());
        }
        Ok(array.unbind())
    }
}

/// Appends the whole elements of `bytes` (little-endian) to `out` with one
/// `memcpy` into its spare room. The wire crate's safe
/// `extend_from_le_bytes` zeroes that room first: a second pass over every
/// byte, a tenth of the time of a 1 MiB item (BENCHMARKS.md, arrays).
fn append_le<T: bytemuck::Pod>(out: &mut Vec<T>, bytes: &[u8]) {
    let n = bytes.len() / size_of::<T>();
    out.reserve(n);
    let spare = out.spare_capacity_mut();
    debug_assert!(spare.len() >= n);
    // SAFETY: `reserve` left room for `n` more elements, so the copy of
    // `n * size_of::<T>()` bytes stays inside `spare`; `T: Pod` makes any
    // bytes a valid `T`, and the host is little-endian (the
    // `compile_error!` above) as the bytes are, so the first `n` elements
    // of the spare room are initialized when `set_len` counts them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            spare.as_mut_ptr().cast::<u8>(),
            n * size_of::<T>(),
        );
        out.set_len(out.len() + n);
    }
}

/// An array item as read from the wire: its parts checked, its data
/// borrowed from the batch (bincode) or owned (JSON) until it is made
/// [`Elements`].
pub(crate) struct ArrayValue<'a> {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: ArrayData<'a>,
}

/// An array's elements: the wire's bytes, or typed.
pub(crate) enum ArrayData<'a> {
    Bytes(Cow<'a, [u8]>),
    Typed(Elements),
}

impl<'a> ArrayValue<'a> {
    /// An array of the wire's parts; the dtype must be one this module
    /// knows and the parts must agree (else the message says why).
    pub(crate) fn new(
        dtype: &str,
        shape: Vec<u64>,
        data: Cow<'a, [u8]>,
    ) -> Result<ArrayValue<'a>, String> {
        let dtype: Dtype = dtype
            .parse()
            .map_err(|e: sandgen_wire::ArrayError| e.to_string())?;
        let (dtype, shape, data) = sandgen_wire::Array::new(dtype, shape, data)
            .map_err(|e| e.to_string())?
            .into_parts();
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("a dimension of {d} is too large")))
            .collect::<Result<_, _>>()?;
        Ok(ArrayValue {
            dtype,
            shape,
            data: ArrayData::Bytes(data),
        })
    }

    /// The elements, typed (the one copy, from the batch).
    pub(crate) fn into_elements(self) -> Elements {
        match self.data {
            ArrayData::Typed(elements) => elements,
            ArrayData::Bytes(bytes) => {
                let mut elements =
                    Elements::with_capacity(self.dtype, bytes.len() / self.dtype.size());
                elements.extend(&bytes);
                elements
            }
        }
    }

    /// The array with its elements typed (the one copy, from the batch).
    pub(crate) fn into_owned(self) -> ArrayValue<'static> {
        let (dtype, shape) = (self.dtype, self.shape.clone());
        ArrayValue {
            dtype,
            shape,
            data: ArrayData::Typed(self.into_elements()),
        }
    }

    /// The numpy array.
    pub(crate) fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let shape = self.shape.clone();
        self.into_elements().into_py(py, &shape)
    }
}
