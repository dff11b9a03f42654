//! Prints the paths of the guests that build.rs built from source, as one
//! JSON object (`{"FIXTURE_SPDL": "/…/fixture_spdl.wasm", …}`): how the
//! Python tests (`host/python/tests`) find the same guests as the Rust ones.

fn main() {
    let entries: Vec<String> = sandgen_tests::artifacts::ALL
        .iter()
        .map(|(name, path)| format!("{}: {}", json_string(name), json_string(path)))
        .collect();
    println!("{{{}}}", entries.join(", "));
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
