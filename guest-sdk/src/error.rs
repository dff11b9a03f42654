use std::fmt;

/// An error reported by a plugin: a message that reaches the caller verbatim.
///
/// Any `std::error::Error` converts into it with `?`; [`Error::msg`] makes one
/// from anything that implements `Display` (a `String`, a `&str`, ...).
///
/// ```
/// use sandgen_guest::Error;
///
/// fn parse(text: &str) -> Result<u32, Error> {
///     let n: u32 = text.trim().parse()?;
///     if n == 0 {
///         return Err(Error::msg("n must be positive"));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("0").unwrap_err().to_string(), "n must be positive");
/// assert_eq!(parse("x").unwrap_err().to_string(), "invalid digit found in string");
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// Makes an error whose message is `message`'s `Display` text.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message, as the caller will see it.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn into_message(self) -> String {
        self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::msg(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}
