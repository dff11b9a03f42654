//! The host's side of the item encodings: the shared wire format
//! ([`sandgen_wire`], also used by the Rust guest SDK) with its failures
//! turned into sandgen [`Error`]s of the right kind.

use sandgen_wire::Encoding;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// Encodes arguments or config: a failure is the caller's
/// ([`ErrorKind::InvalidInput`]).
pub(crate) fn encode<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
) -> Result<Vec<u8>, Error> {
    encoding
        .encode(value)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))
}

/// Decodes one item, borrowing from `bytes` where `T` does; a failure is
/// [`ErrorKind::Decode`].
pub(crate) fn decode_item<'a, T: Deserialize<'a>>(
    encoding: Encoding,
    bytes: &'a [u8],
) -> Result<T, Error> {
    encoding.decode_borrowed(bytes).map_err(|e| {
        let hint = if encoding == Encoding::Bincode && e.message().contains("trailing bytes") {
            " (is the item type right?)"
        } else {
            ""
        };
        Error::new(
            ErrorKind::Decode,
            format!("cannot decode an item: {e}{hint}"),
        )
    })
}
