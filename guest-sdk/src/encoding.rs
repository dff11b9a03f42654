use serde::Serialize;
use serde::de::{DeserializeOwned, IntoDeserializer};

use crate::Error;

/// How the caller encodes arguments, config and items (chosen by the host in
/// `initialize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// bincode 2, standard configuration, over the serde data model.
    Bincode,
    /// UTF-8 JSON text, one value per item.
    Json,
}

const BINCODE: bincode::config::Configuration = bincode::config::standard();

impl Encoding {
    /// Decodes a value; empty `bytes` mean "nothing given" and decode as a
    /// unit value (so `()` and `Option<T>` accept them).
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        if bytes.is_empty() {
            let unit: serde::de::value::UnitDeserializer<serde::de::value::Error> =
                ().into_deserializer();
            return T::deserialize(unit).map_err(|e| Error::msg(format!("nothing was given: {e}")));
        }
        match self {
            // The value's own bincode first; then bincode written from a JSON
            // value (`sandgen bench --args`), where objects are maps.
            Encoding::Bincode => Self::strict_bincode(bytes)
                .or_else(|strict| crate::value_bincode::from_slice(bytes).map_err(|_| strict)),
            Encoding::Json => {
                serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("invalid JSON: {e}")))
            }
        }
    }

    fn strict_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        let (value, read) = bincode::serde::decode_from_slice(bytes, BINCODE)
            .map_err(|e| Error::msg(format!("invalid bincode: {e}")))?;
        if read != bytes.len() {
            return Err(Error::msg(format!(
                "invalid bincode: {} trailing bytes after the value",
                bytes.len() - read
            )));
        }
        Ok(value)
    }

    /// Appends the encoding of `value` to `buf`, without any allocation of
    /// its own.
    pub(crate) fn encode_into<T: Serialize>(
        self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match self {
            Encoding::Bincode => bincode::serde::encode_into_std_write(value, buf, BINCODE)
                .map(drop)
                .map_err(|e| Error::msg(format!("cannot encode an item with bincode: {e}"))),
            Encoding::Json => serde_json::to_writer(buf, value)
                .map_err(|e| Error::msg(format!("cannot encode an item as JSON: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bytes_decode_as_nothing() {
        assert_eq!(Encoding::Json.decode::<Option<u32>>(b"").unwrap(), None);
        assert_eq!(Encoding::Bincode.decode::<Option<u32>>(b"").unwrap(), None);
        Encoding::Bincode.decode::<()>(b"").unwrap();
        let err = Encoding::Json.decode::<u64>(b"").unwrap_err();
        assert_eq!(
            err.message(),
            "nothing was given: invalid type: unit value, expected u64"
        );
    }

    #[test]
    fn trailing_bincode_is_an_error() {
        let err = Encoding::Bincode.decode::<u8>(&[1, 2]).unwrap_err();
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
        let bytes = bincode::serde::encode_to_vec(&value, BINCODE).unwrap();
        assert_eq!(
            Encoding::Bincode.decode::<Args>(&bytes).unwrap(),
            Args { n: 3, size: 65536 }
        );
        // The struct's own bincode still decodes.
        let own = bincode::serde::encode_to_vec((3u64, 65536u64), BINCODE).unwrap();
        assert_eq!(
            Encoding::Bincode.decode::<Args>(&own).unwrap(),
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
}
