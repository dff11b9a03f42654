//! `sandgen bench`: one JSON object on one line, its figures, `--args` sent
//! as bincode, items of 64 MiB.

use super::{expect, sandgen};
use crate::util::artifacts::{EXAMPLE_TOKENIZE, FIXTURE_SPDL};

both_isolations!(bench_prints_one_json_object);
fn bench_prints_one_json_object() {
    let output = sandgen(&[
        "bench",
        FIXTURE_SPDL,
        "bytes",
        "--args",
        r#"{"n": 100, "size": 1000}"#,
    ]);
    let (out, _) = expect(&output, 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out.lines().count(), 1);
    assert_eq!(report["items"], 100);
    // Each bincode item is a 3-byte length (251, then a u16) and 1000 bytes.
    assert_eq!(report["bytes"], 100 * 1003);
    for key in [
        "seconds",
        "items_per_second",
        "megabytes_per_second",
        "first_item_ms",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {report}"
        );
    }
    // bench sends --args as bincode: the tokenize example decodes a struct.
    let (out, _) = expect(
        &sandgen(&[
            "bench",
            EXAMPLE_TOKENIZE,
            "windows",
            "--args",
            r#"{"text": "a b c d e f", "window": 2}"#,
        ]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 4);
}

both_isolations!(huge_item_through_the_cli);
fn huge_item_through_the_cli() {
    let size = 64 << 20;
    let args = format!(r#"{{"n": 1, "size": {size}}}"#);
    let (out, _) = expect(
        &sandgen(&["bench", FIXTURE_SPDL, "bytes", "--args", &args]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 1);
    // bincode: a 5-byte length, then the bytes.
    assert_eq!(report["bytes"], size + 5);
}
