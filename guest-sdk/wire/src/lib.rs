//! The data format of sandgen's plugin contract (`wit/generator.wit`),
//! written once and shared by the host (crate `sandgen`) and the Rust guest
//! SDK (crate `sandgen-guest`):
//!
//! - [`Encoding`]: how arguments, config and items are encoded (bincode 2 in
//!   its standard configuration, or JSON text);
//! - [`frame`]: the frames a batch of items travels in (a 4-byte
//!   little-endian length, then the item), their writer, validator and
//!   reader;
//! - [`bincode_of_json`] and [`Encoding::decode_args`]: the convention by
//!   which a JSON value crosses as bincode (what `sandgen bench --args` and
//!   the Python package send), and how a guest reads it into its own types.
//!
//! The Python and JavaScript guest helpers (`guest-sdk/python`,
//! `guest-sdk/js`) implement the same format; the end-to-end conformance
//! tests (`tests/all/conformance.rs`) hold all three to this crate.
//!
//! ```
//! use sandgen_wire::{Encoding, frame};
//!
//! let mut batch = Vec::new();
//! for item in [1u64, 2, 300] {
//!     frame::push(&mut batch, |buf| Encoding::Bincode.encode_into(&item, buf)).unwrap();
//! }
//! assert_eq!(frame::validate_batch(&batch, 10, 1024, u32::MAX), Ok(3));
//! let mut frames = frame::Frames::new(batch, 3);
//! let first = frames.next_frame().unwrap();
//! assert_eq!(Encoding::Bincode.decode::<u64>(first).unwrap(), 1);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod array;
pub mod frame;
mod value_bincode;

pub use crate::array::{Array, ArrayError, Dtype, Element};

use std::fmt;

use serde::Deserialize;
use serde::Serialize;
use serde::de::{DeserializeOwned, IntoDeserializer};

/// How arguments, config and items are encoded between caller and plugin.
///
/// Chosen by the caller per iterable; the plugin learns it in `initialize`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Encoding {
    /// bincode 2, standard configuration (little-endian, variable-length
    /// integers), over the serde data model. Compact and fast; the default.
    #[default]
    Bincode,
    /// UTF-8 JSON text, one value per item; what the CLI uses.
    Json,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Bincode => "bincode",
            Encoding::Json => "json",
        })
    }
}

impl std::str::FromStr for Encoding {
    type Err = CodecError;

    /// `bincode` or `json`.
    fn from_str(s: &str) -> Result<Self, CodecError> {
        match s {
            "bincode" => Ok(Encoding::Bincode),
            "json" => Ok(Encoding::Json),
            other => Err(CodecError(format!(
                "unknown encoding `{other}`: use `bincode` or `json`"
            ))),
        }
    }
}

/// A value that could not be encoded or decoded; the message says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

const BINCODE: bincode::config::Configuration = bincode::config::standard();

impl Encoding {
    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be written in this encoding (a map with non-string
    /// keys in JSON, say).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut buf = Vec::new();
        self.encode_into(value, &mut buf)?;
        Ok(buf)
    }

    /// Appends the encoding of `value` to `buf`, without an allocation of its
    /// own.
    ///
    /// # Errors
    ///
    /// As for [`encode`](Self::encode); `buf` may then hold part of the value.
    #[inline]
    pub fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            Encoding::Bincode => bincode::serde::encode_into_std_write(value, buf, BINCODE)
                .map(drop)
                .map_err(|e| CodecError(format!("cannot encode with bincode: {e}"))),
            Encoding::Json => serde_json::to_writer(buf, value)
                .map_err(|e| CodecError(format!("cannot encode as JSON: {e}"))),
        }
    }

    /// Decodes one value written as `T` writes itself; the whole of `bytes`
    /// must be used.
    ///
    /// # Errors
    ///
    /// When `bytes` are not a `T` in this encoding.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        self.decode_borrowed(bytes)
    }

    /// Decodes one value that may borrow from `bytes` (an [`Array`]'s data,
    /// a `&str`, a `&[u8]` in bincode): no copy out of the item. The whole
    /// of `bytes` must be used.
    ///
    /// # Errors
    ///
    /// When `bytes` are not a `T` in this encoding.
    pub fn decode_borrowed<'a, T: Deserialize<'a>>(self, bytes: &'a [u8]) -> Result<T, CodecError> {
        match self {
            Encoding::Bincode => {
                let (value, read) = bincode::serde::borrow_decode_from_slice(bytes, BINCODE)
                    .map_err(|e| CodecError(format!("invalid bincode: {e}")))?;
                if read != bytes.len() {
                    return Err(CodecError(format!(
                        "invalid bincode: {} trailing bytes after the value",
                        bytes.len() - read
                    )));
                }
                Ok(value)
            }
            Encoding::Json => {
                serde_json::from_slice(bytes).map_err(|e| CodecError(format!("invalid JSON: {e}")))
            }
        }
    }

    /// Decodes arguments or config as a guest reads them:
    ///
    /// - empty `bytes` mean "nothing was given" and decode as a unit value
    ///   (so `()` and `Option<T>` accept them);
    /// - bincode is read as `T`'s own bincode (a typed Rust caller) or, when
    ///   that does not fit, as the bincode of a JSON value
    ///   ([`bincode_of_json`], where objects are maps) read by `T`'s shape;
    /// - JSON is read as JSON.
    ///
    /// # Errors
    ///
    /// When `bytes` fit neither reading; the message is the first reading's.
    ///
    /// ```
    /// use sandgen_wire::{Encoding, bincode_of_json};
    ///
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Args { n: u64, name: String }
    ///
    /// let value = serde_json::json!({"name": "x", "n": 3});
    /// let args: Args = Encoding::Bincode.decode_args(&bincode_of_json(&value).unwrap()).unwrap();
    /// assert_eq!(args, Args { n: 3, name: "x".into() });
    /// assert_eq!(Encoding::Json.decode_args::<Option<u8>>(b"").unwrap(), None);
    /// ```
    pub fn decode_args<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.is_empty() {
            let unit: serde::de::value::UnitDeserializer<serde::de::value::Error> =
                ().into_deserializer();
            return T::deserialize(unit).map_err(|e| CodecError(format!("nothing was given: {e}")));
        }
        match self {
            Encoding::Bincode => self
                .decode(bytes)
                .or_else(|strict| value_bincode::from_slice(bytes).map_err(|_| strict)),
            Encoding::Json => self.decode(bytes),
        }
    }
}

/// Encodes a JSON value with bincode as its own `Serialize` writes it: a
/// non-negative integer becomes a u64, a negative one an i64, an object a
/// map with its keys in sorted order. This is what `sandgen bench --args`
/// sends, and how the Python and JavaScript helpers write JSON-like items.
///
/// # Errors
///
/// Never for a value parsed from JSON text; kept fallible so that the
/// bincode crate's errors are never unwrapped.
///
/// ```
/// let v: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": [true]}"#).unwrap();
/// // A map of 2 entries, keys in sorted order: "a" -> [true], "b" -> 1u64.
/// assert_eq!(sandgen_wire::bincode_of_json(&v).unwrap(), [2, 1, b'a', 1, 1, 1, b'b', 1]);
/// ```
pub fn bincode_of_json(value: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
    Encoding::Bincode.encode(value)
}

/// Messages between a caller and its worker process (not plugin data):
/// bincode, with a limit on the size a message may claim.
pub mod message {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::CodecError;

    /// The largest message: 256 MiB (a worker's task carries the plugin's
    /// arguments and config).
    pub const MAX: usize = 256 << 20;

    const CONFIG: bincode::config::Configuration<
        bincode::config::LittleEndian,
        bincode::config::Varint,
        bincode::config::Limit<MAX>,
    > = bincode::config::standard().with_limit::<MAX>();

    /// Encodes a message.
    ///
    /// # Errors
    ///
    /// When it is larger than [`MAX`] or cannot be written.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, CONFIG).map_err(|e| CodecError(e.to_string()))
    }

    /// Decodes a message; all of `bytes` must be used.
    ///
    /// # Errors
    ///
    /// When `bytes` are not one `T`.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, read) = bincode::serde::decode_from_slice(bytes, CONFIG)
            .map_err(|e| CodecError(e.to_string()))?;
        if read != bytes.len() {
            return Err(CodecError("trailing bytes after a message".into()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bytes_decode_as_nothing() {
        assert_eq!(
            Encoding::Json.decode_args::<Option<u32>>(b"").unwrap(),
            None
        );
        assert_eq!(
            Encoding::Bincode.decode_args::<Option<u32>>(b"").unwrap(),
            None
        );
        Encoding::Bincode.decode_args::<()>(b"").unwrap();
        let err = Encoding::Json.decode_args::<u64>(b"").unwrap_err();
        assert_eq!(
            err.message(),
            "nothing was given: invalid type: unit value, expected u64"
        );
    }

    #[test]
    fn trailing_bincode_is_an_error() {
        let err = Encoding::Bincode.decode_args::<u8>(&[1, 2]).unwrap_err();
        assert_eq!(
            err.message(),
            "invalid bincode: 1 trailing bytes after the value"
        );
    }

    #[test]
    fn bincode_of_a_json_object_decodes_into_a_struct() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Args {
            n: u64,
            size: u64,
        }
        let value = serde_json::json!({ "n": 3, "size": 65536 });
        let bytes = bincode_of_json(&value).unwrap();
        assert_eq!(
            Encoding::Bincode.decode_args::<Args>(&bytes).unwrap(),
            Args { n: 3, size: 65536 }
        );
        // The struct's own bincode still decodes.
        let own = Encoding::Bincode.encode(&(3u64, 65536u64)).unwrap();
        assert_eq!(
            Encoding::Bincode.decode_args::<Args>(&own).unwrap(),
            Args { n: 3, size: 65536 }
        );
    }

    #[test]
    fn json_round_trip() {
        let mut buf = Vec::new();
        Encoding::Json.encode_into(&vec![1, 2], &mut buf).unwrap();
        assert_eq!(buf, b"[1,2]");
        assert_eq!(Encoding::Json.decode::<Vec<u8>>(&buf).unwrap(), [1, 2]);
    }

    #[test]
    fn encodings_parse_and_print() {
        for encoding in [Encoding::Bincode, Encoding::Json] {
            assert_eq!(encoding.to_string().parse::<Encoding>(), Ok(encoding));
        }
        assert_eq!(
            "yaml".parse::<Encoding>().unwrap_err().message(),
            "unknown encoding `yaml`: use `bincode` or `json`"
        );
    }

    #[test]
    fn messages_round_trip_and_refuse_trailing_bytes() {
        let bytes = message::encode(&("task", 7u32)).unwrap();
        assert_eq!(
            message::decode::<(String, u32)>(&bytes).unwrap(),
            ("task".into(), 7)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(message::decode::<(String, u32)>(&longer).is_err());
    }
}
