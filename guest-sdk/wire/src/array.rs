//! The array item: an n-dimensional array of numbers as one serde record
//! (design section 13), the same in bincode and JSON, so that a plugin
//! written without an SDK can produce it and every host can read it.
//!
//! The record is `struct Array { dtype: String, shape: Vec<u64>, data:
//! bytes }`, in that field order:
//!
//! - `dtype` one of [`Dtype`]'s names (`"float32"`, `"uint8"`, ...);
//! - `shape` the dimensions in C (row-major) order;
//! - `data` the elements, little-endian, in C order; its length is the
//!   product of `shape` times the element size (`bool`: one byte, 0 or 1).
//!
//! In bincode that is the string, the sequence of u64 and the bytes
//! (`serde_bytes`), one after another; in JSON the object `{"dtype": ...,
//! "shape": [...], "data": [...]}` with `data` as the list of byte values.
//!
//! ```
//! use sandgen_wire::{Array, Dtype, Encoding};
//!
//! let image = Array::from_slice(&[1.5f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
//! let bytes = Encoding::Bincode.encode(&(image, 7u64)).unwrap();
//! // The host reads it back without copying the data out of the item.
//! let (view, label): (Array<'_>, u64) = Encoding::Bincode.decode_borrowed(&bytes).unwrap();
//! assert_eq!((view.dtype(), view.shape(), label), (Dtype::Float32, &[2, 3][..], 7));
//! assert!(view.is_borrowed());
//! assert_eq!(view.to_vec::<f32>().unwrap()[5], 6.0);
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// The element type of an [`Array`], named as numpy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// One byte, 0 or 1.
    Bool,
    /// `u8`.
    Uint8,
    /// `i8`.
    Int8,
    /// `u16`.
    Uint16,
    /// `i16`.
    Int16,
    /// `u32`.
    Uint32,
    /// `i32`.
    Int32,
    /// `u64`.
    Uint64,
    /// `i64`.
    Int64,
    /// IEEE 754 half precision (two bytes).
    Float16,
    /// `f32`.
    Float32,
    /// `f64`.
    Float64,
}

impl Dtype {
    /// Every dtype, in the order the design lists them.
    pub const ALL: [Dtype; 12] = [
        Dtype::Bool,
        Dtype::Uint8,
        Dtype::Int8,
        Dtype::Uint16,
        Dtype::Int16,
        Dtype::Uint32,
        Dtype::Int32,
        Dtype::Uint64,
        Dtype::Int64,
        Dtype::Float16,
        Dtype::Float32,
        Dtype::Float64,
    ];

    /// The name on the wire (numpy's name).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::Uint8 => "uint8",
            Dtype::Int8 => "int8",
            Dtype::Uint16 => "uint16",
            Dtype::Int16 => "int16",
            Dtype::Uint32 => "uint32",
            Dtype::Int32 => "int32",
            Dtype::Uint64 => "uint64",
            Dtype::Int64 => "int64",
            Dtype::Float16 => "float16",
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
        }
    }

    /// The dtype of a wire name; `None` for a name not in [`Dtype::ALL`].
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::Uint8 | Dtype::Int8 => 1,
            Dtype::Uint16 | Dtype::Int16 | Dtype::Float16 => 2,
            Dtype::Uint32 | Dtype::Int32 | Dtype::Float32 => 4,
            Dtype::Uint64 | Dtype::Int64 | Dtype::Float64 => 8,
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = ArrayError;

    /// The dtype of a wire name. An unknown name is refused with a message
    /// that shows at most its first 64 characters, escaped (the name may
    /// come from a plugin), and lists the known ones.
    fn from_str(name: &str) -> Result<Dtype, ArrayError> {
        Dtype::from_name(name).ok_or_else(|| {
            let mut shown: String = name.chars().take(64).flat_map(char::escape_debug).collect();
            if name.chars().nth(64).is_some() {
                shown.push('…');
            }
            ArrayError(format!(
                "unknown dtype `{shown}`: use one of {}",
                dtype_names()
            ))
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of every dtype, for messages.
fn dtype_names() -> String {
    Dtype::ALL.map(Dtype::name).join(", ")
}

/// An array whose parts do not agree; the message says how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayError(String);

impl ArrayError {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArrayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArrayError {}

/// A Rust number type that an [`Array`] can hold.
pub trait Element: Copy + sealed::Sealed {
    /// The dtype of this type.
    const DTYPE: Dtype;

    /// The little-endian bytes of `elements`, borrowed where the target
    /// is little-endian (a wasm guest, x86-64, aarch64).
    fn to_le_bytes(elements: &[Self]) -> Cow<'_, [u8]>;

    /// Appends the elements that `bytes` (little-endian, whole elements)
    /// hold to `out`.
    fn extend_from_le_bytes(out: &mut Vec<Self>, bytes: &[u8]);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! elements {
    ($($t:ty => $dtype:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$dtype;

            fn to_le_bytes(elements: &[$t]) -> Cow<'_, [u8]> {
                if cfg!(target_endian = "little") {
                    Cow::Borrowed(bytemuck::cast_slice(elements))
                } else {
                    Cow::Owned(elements.iter().flat_map(|e| e.to_le_bytes()).collect())
                }
            }

            fn extend_from_le_bytes(out: &mut Vec<$t>, bytes: &[u8]) {
                const SIZE: usize = size_of::<$t>();
                let whole = &bytes[..bytes.len() / SIZE * SIZE];
                if cfg!(target_endian = "little") {
                    // One `memcpy` (after the zeroing of `resize`): an
                    // element loop is several times slower on large arrays.
                    let start = out.len();
                    out.resize(start + whole.len() / SIZE, <$t>::default());
                    bytemuck::cast_slice_mut::<$t, u8>(&mut out[start..]).copy_from_slice(whole);
                } else {
                    out.extend(
                        whole
                            .chunks_exact(SIZE)
                            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks of SIZE"))),
                    );
                }
            }
        }
    )*};
}

elements!(u8 => Uint8, i8 => Int8, u16 => Uint16, i16 => Int16, u32 => Uint32,
    i32 => Int32, u64 => Uint64, i64 => Int64, f32 => Float32, f64 => Float64);

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;

    fn to_le_bytes(elements: &[bool]) -> Cow<'_, [u8]> {
        Cow::Owned(elements.iter().map(|&b| u8::from(b)).collect())
    }

    fn extend_from_le_bytes(out: &mut Vec<bool>, bytes: &[u8]) {
        out.extend(bytes.iter().map(|&b| b != 0));
    }
}

/// An n-dimensional array item: a dtype, a shape and the elements'
/// little-endian bytes, borrowed or owned. Its parts always agree: every
/// constructor and the deserializer check them.
///
/// A plugin yields one (alone, or inside a tuple or struct) built with
/// [`Array::from_slice`], [`Array::from_vec`] or [`Array::new`]; a host
/// reads one with [`Encoding::decode_borrowed`](crate::Encoding::decode_borrowed),
/// which borrows the data from the item's bytes in bincode.
#[derive(Clone, PartialEq, Eq)]
pub struct Array<'a> {
    dtype: Dtype,
    shape: Vec<u64>,
    data: Cow<'a, [u8]>,
}

impl fmt::Debug for Array<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl<'a> Array<'a> {
    /// An array of `dtype` and `shape` over `data`, the elements'
    /// little-endian bytes in C order.
    ///
    /// # Errors
    ///
    /// When `data`'s length is not the product of `shape` times the
    /// element size, or a `bool` byte is neither 0 nor 1.
    pub fn new(
        dtype: Dtype,
        shape: impl Into<Vec<u64>>,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<Array<'a>, ArrayError> {
        let array = Array {
            dtype,
            shape: shape.into(),
            data: data.into(),
        };
        array.check()?;
        Ok(array)
    }

    /// An array of `shape` over `elements`, borrowing them where the
    /// target is little-endian (no copy).
    ///
    /// # Errors
    ///
    /// When the shape does not hold `elements.len()` elements.
    pub fn from_slice<T: Element>(
        elements: &'a [T],
        shape: impl Into<Vec<u64>>,
    ) -> Result<Array<'a>, ArrayError> {
        Array::new(T::DTYPE, shape, T::to_le_bytes(elements))
    }

    /// An array of `shape` that owns a copy of `elements`.
    ///
    /// # Errors
    ///
    /// When the shape does not hold `elements.len()` elements.
    pub fn from_vec<T: Element>(
        elements: Vec<T>,
        shape: impl Into<Vec<u64>>,
    ) -> Result<Array<'static>, ArrayError> {
        Array::new(T::DTYPE, shape, T::to_le_bytes(&elements).into_owned())
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The dimensions, in C order.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The number of elements (the product of the shape).
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Whether the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements' little-endian bytes, in C order.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether the data is borrowed from the bytes it was read from.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }

    /// The elements as `T`, copied.
    ///
    /// # Errors
    ///
    /// When the array's dtype is not `T`'s.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, ArrayError> {
        if T::DTYPE != self.dtype {
            return Err(ArrayError(format!(
                "the array holds {}, not {}",
                self.dtype,
                T::DTYPE
            )));
        }
        let mut out = Vec::with_capacity(self.len());
        T::extend_from_le_bytes(&mut out, &self.data);
        Ok(out)
    }

    /// The dtype, the shape and the data, taken apart.
    pub fn into_parts(self) -> (Dtype, Vec<u64>, Cow<'a, [u8]>) {
        (self.dtype, self.shape, self.data)
    }

    /// The array with its data owned.
    pub fn into_owned(self) -> Array<'static> {
        Array {
            dtype: self.dtype,
            shape: self.shape,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// Parts into array; the data's length and (for `bool`) values checked.
    fn check(&self) -> Result<(), ArrayError> {
        let elements = self
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok());
        let bytes = elements.and_then(|n| n.checked_mul(self.dtype.size()));
        if bytes != Some(self.data.len()) {
            return Err(ArrayError(format!(
                "an array of dtype {} and shape {:?} holds {} bytes, not {}",
                self.dtype,
                self.shape,
                bytes.map_or_else(|| "more than memory".to_owned(), |b| b.to_string()),
                self.data.len()
            )));
        }
        if self.dtype == Dtype::Bool
            && let Some(at) = self.data.iter().position(|&b| b > 1)
        {
            return Err(ArrayError(format!(
                "a bool array holds the byte {} at element {at}: bool elements are 0 or 1",
                self.data[at]
            )));
        }
        Ok(())
    }
}

/// `data` written as bytes (bincode: a length and the bytes; JSON: the
/// list of byte values).
struct Bytes<'b>(&'b [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for Array<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut record = serializer.serialize_struct("Array", 3)?;
        record.serialize_field("dtype", self.dtype.name())?;
        record.serialize_field("shape", &self.shape)?;
        record.serialize_field("data", &Bytes(&self.data))?;
        record.end()
    }
}

const FIELDS: &[&str] = &["dtype", "shape", "data"];

impl<'de: 'a, 'a> Deserialize<'de> for Array<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Array<'a>, D::Error> {
        deserializer.deserialize_struct("Array", FIELDS, ArrayVisitor(std::marker::PhantomData))
    }
}

/// The `dtype` field.
struct DtypeField(Dtype);

impl<'de> Deserialize<'de> for DtypeField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DtypeField, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DtypeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a dtype name ({})", dtype_names())
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<DtypeField, E> {
                name.parse().map(DtypeField).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The `data` field: borrowed bytes where the format has them (bincode
/// from a slice), else owned (JSON's list of byte values).
struct DataField<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for DataField<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DataField<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = DataField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the array's bytes (a list of byte values 0 to 255 in JSON)")
            }
            fn visit_borrowed_bytes<E>(self, bytes: &'de [u8]) -> Result<DataField<'a>, E> {
                Ok(DataField(Cow::Borrowed(bytes)))
            }
            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<DataField<'a>, E> {
                Ok(DataField(Cow::Owned(bytes.to_vec())))
            }
            fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<DataField<'a>, E> {
                Ok(DataField(Cow::Owned(bytes)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataField<'a>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(DataField(Cow::Owned(bytes)))
            }
        }
        deserializer.deserialize_bytes(V(std::marker::PhantomData))
    }
}

struct ArrayVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl ArrayVisitor<'_> {
    fn build<'b, E: de::Error>(
        dtype: Dtype,
        shape: Vec<u64>,
        data: Cow<'b, [u8]>,
    ) -> Result<Array<'b>, E> {
        Array::new(dtype, shape, data).map_err(E::custom)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for ArrayVisitor<'a> {
    type Value = Array<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array record {dtype, shape, data}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Array<'a>, A::Error> {
        let missing = |i: usize| de::Error::invalid_length(i, &"an array's dtype, shape and data");
        let DtypeField(dtype) = seq.next_element()?.ok_or_else(|| missing(0))?;
        let shape: Vec<u64> = seq.next_element()?.ok_or_else(|| missing(1))?;
        let DataField(data) = seq.next_element()?.ok_or_else(|| missing(2))?;
        ArrayVisitor::build(dtype, shape, data)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Array<'a>, A::Error> {
        let (mut dtype, mut shape, mut data) = (None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "dtype" if dtype.is_none() => dtype = Some(map.next_value::<DtypeField>()?.0),
                "shape" if shape.is_none() => shape = Some(map.next_value::<Vec<u64>>()?),
                "data" if data.is_none() => data = Some(map.next_value::<DataField<'a>>()?.0),
                "dtype" => return Err(de::Error::duplicate_field("dtype")),
                "shape" => return Err(de::Error::duplicate_field("shape")),
                "data" => return Err(de::Error::duplicate_field("data")),
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        ArrayVisitor::build(
            dtype.ok_or_else(|| de::Error::missing_field("dtype"))?,
            shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            data.ok_or_else(|| de::Error::missing_field("data"))?,
        )
    }
}

#[cfg(test)]
mod tests;
