//! Plugin text made safe to show: what the CLI does with everything it
//! prints that came from a plugin, offered to embedders that print such text
//! too (the library itself always hands out the raw text).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Shows control characters, bidi controls and invalid UTF-8 in `bytes` in a
/// visible escaped form, so that text from a plugin cannot drive a terminal
/// (clear it, set its title, move the cursor, ring its bell) or reorder what
/// is shown around it.
///
/// Escaped: the C0 controls other than tab and DEL as `\x1b`; the C1
/// controls (U+0080 to U+009F), the bidi embeddings, overrides and isolates
/// (U+202A to U+202E, U+2066 to U+2069) as `\u{202e}`; each byte that is not
/// UTF-8 as `\xff`. Everything else, tab included, stays as it is, and text
/// with nothing to escape is returned without a copy.
///
/// ```
/// use sandgen::escape_text;
///
/// assert_eq!(escape_text(b"plain\ttext"), "plain\ttext");
/// assert_eq!(escape_text(b"\x1b]0;title\x07"), r"\x1b]0;title\x07");
/// assert_eq!(escape_text("\u{202e}evil".as_bytes()), r"\u{202e}evil");
/// assert_eq!(escape_text(b"caf\xe9"), r"caf\xe9");
/// ```
pub fn escape_text(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.chars().any(needs_escape)
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if !needs_escape(c) {
                out.push(c);
            } else if (c as u32) < 0x80 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// `text` cut to its first `max` bytes (at a character boundary) when it is
/// longer, saying how long it was: for a value echoed in a message (a
/// generator's name, a path), so that a huge one cannot make a huge message.
///
/// ```
/// use sandgen::cut_text;
///
/// assert_eq!(cut_text("short", 10), "short");
/// assert_eq!(cut_text(&"x".repeat(100_000), 4), "xxxx… (100000 bytes)");
/// ```
pub fn cut_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// How much of a value a message echoes ([`cut_text`]).
pub(crate) const ECHO: usize = 256;

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\0'..='\x08' | '\x0a'..='\x1f' | '\x7f'
        | '\u{80}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_escaped_and_nothing_else() {
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let escaped = escape_text(c.encode_utf8(&mut buf).as_bytes());
            let control = (c.is_control() && c != '\t')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c);
            if control {
                assert!(escaped.starts_with('\\'), "{c:?} became {escaped:?}");
                assert!(!escaped.chars().any(needs_escape), "{c:?}");
            } else {
                assert_eq!(escaped, c.to_string(), "{c:?}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_escaped_byte_by_byte() {
        assert_eq!(escape_text(b"a\xff\xfeb\n"), r"a\xff\xfeb\x0a");
        assert!(matches!(escape_text(b"fine"), Cow::Borrowed("fine")));
    }
}
