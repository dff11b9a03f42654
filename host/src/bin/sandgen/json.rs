//! Items as `run` writes them: one line of JSON each, checked, in one copy,
//! with nothing in them that could drive a terminal.

use crate::Failure;

/// An item as one line of JSON: checked, and rewritten compactly if the
/// plugin spread it over several lines (in one copy: never as a tree of
/// values, which takes many times the item's size).
pub(crate) fn json_line<'a>(
    generator: &str,
    item: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, Failure> {
    let invalid = |e: serde_json::Error| Failure {
        status: 1,
        error: anyhow::anyhow!(
            "generator {generator} broke the plugin contract: an item is not valid JSON ({e}): {}",
            String::from_utf8_lossy(&item[..item.len().min(200)])
        ),
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(item).map_err(invalid)?;
    // One look at every byte: line breaks (between tokens), and the bytes
    // that DEL, C1 and bidi controls start with (as the UTF-8 of those
    // characters, which valid JSON has only within strings).
    let (mut breaks, mut controls) = (false, false);
    for &b in item {
        breaks |= b == b'\n' || b == b'\r';
        controls |= matches!(b, 0x7f | 0xc2 | 0xe2);
    }
    let line: std::borrow::Cow<'a, [u8]> = if breaks {
        compact(item).into()
    } else {
        item.into()
    };
    if controls {
        return Ok(escape_controls(&line).map_or(line, Into::into));
    }
    Ok(line)
}

/// `json` with DEL (U+007F), the C1 controls (U+0080 to U+009F) and the bidi
/// controls (U+202A to U+202E, U+2066 to U+2069) written as `\u` escapes:
/// the same JSON to a reader, and nothing that can drive a terminal the
/// items are shown on. `None` when it has none of them.
fn escape_controls(json: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    let mut copied = 0;
    while at < json.len() {
        let code = match json[at..] {
            [0x7f, ..] => Some((0x7f, 1)),
            [0xc2, b @ 0x80..=0x9f, ..] => Some((u32::from(b), 2)),
            [0xe2, 0x80, b @ 0xaa..=0xae, ..] => Some((0x2000 + u32::from(b - 0x80), 3)),
            [0xe2, 0x81, b @ 0xa6..=0xa9, ..] => Some((0x2040 + u32::from(b - 0x80), 3)),
            _ => None,
        };
        match code {
            Some((code, len)) => {
                let out = out.get_or_insert_with(|| Vec::with_capacity(json.len() + 16));
                out.extend_from_slice(&json[copied..at]);
                out.extend_from_slice(format!("\\u{code:04x}").as_bytes());
                at += len;
                copied = at;
            }
            None => at += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&json[copied..]);
    Some(out)
}

/// `json`, valid JSON, without the whitespace between its tokens (the only
/// place valid JSON has line breaks: within strings they are escaped).
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_that_could_drive_a_terminal_are_escaped_in_items() {
        let item = "[\"a\u{7f}b\u{9b}2J\u{202e}x\u{2069}é—\u{85}\"]";
        let escaped = super::escape_controls(item.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&escaped).unwrap(),
            r#"["a\u007fb\u009b2J\u202ex\u2069é—\u0085"]"#
        );
        let back: Vec<String> = serde_json::from_slice(&escaped).unwrap();
        let original: Vec<String> = serde_json::from_str(item).unwrap();
        assert_eq!(back, original, "the same JSON to a reader");
        assert_eq!(super::escape_controls("[\"é—…\"]".as_bytes()), None);
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let pretty = b"{\n \"a b\" : \"x\\\" \\n y\",\n\t\"c\": [1,\r\n 2]\n}";
        assert_eq!(super::compact(pretty), br#"{"a b":"x\" \n y","c":[1,2]}"#);
    }
}
