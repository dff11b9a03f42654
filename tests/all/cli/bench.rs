//! `sandgen bench`: one JSON object on one line, its figures, every item
//! decoded as `--decode` says, `--args` sent as bincode, items of 64 MiB.

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
        "--decode",
        "bytes",
    ]);
    let (out, _) = expect(&output, 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out.lines().count(), 1);
    assert_eq!(report["items"], 100);
    // Each bincode item is a 3-byte length (251, then a u16) and 1000 bytes.
    assert_eq!(report["bytes"], 100 * 1003);
    // Every item decoded into a buffer of its own: 1000 bytes each.
    assert_eq!(report["decode"], "bytes");
    assert_eq!(report["checksum"], 100 * 1000);
    assert_eq!(report["consumer_copies_per_item"], 1);
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
            "--decode",
            "none",
        ]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 4);
    assert_eq!(report["decode"], "none");
}

both_isolations!(bench_decodes_every_item_as_asked);
fn bench_decodes_every_item_as_asked() {
    let range = |decode: &str| {
        let (out, _) = expect(
            &sandgen(&[
                "bench",
                FIXTURE_SPDL,
                "range",
                "--args",
                "1000",
                "--decode",
                decode,
            ]),
            0,
        );
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    // u64: the sum of the decoded items.
    let report = range("u64");
    assert_eq!(report["decode"], "u64");
    assert_eq!(report["checksum"], 999 * 1000 / 2);
    assert_eq!(report["consumer_copies_per_item"], 0);
    // json (the default): items arrive as JSON text, each parsed.
    let (out, _) = expect(
        &sandgen(&["bench", FIXTURE_SPDL, "range", "--args", "1000"]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["decode"], "json");
    assert_eq!(report["items"], 1000);
    // The parsed numbers, summed.
    assert_eq!(report["checksum"], 999 * 1000 / 2);
    // Parsing allocates; it is not counted as copies.
    assert!(report["consumer_copies_per_item"].is_null(), "{report}");
    // JSON text of 0..1000: 10 + 90 * 2 + 900 * 3 digits.
    assert_eq!(report["bytes"], 10 + 90 * 2 + 900 * 3);
    // none: the encoded bytes counted, unread.
    let report = range("none");
    assert_eq!(report["checksum"], report["bytes"]);
    // Items that are not what --decode says: exit 2, naming the item.
    let output = sandgen(&[
        "bench",
        FIXTURE_SPDL,
        "bytes",
        "--args",
        r#"{"n": 3, "size": 10}"#,
        "--decode",
        "u64",
    ]);
    let (_, errors) = expect(&output, 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("error: item 0 is not a bincode u64: invalid bincode: 10 trailing bytes")
            && errors[0].contains("choose the --decode that matches what the generator yields"),
        "{errors:?}"
    );
}

both_isolations!(huge_item_through_the_cli);
fn huge_item_through_the_cli() {
    let size = 64 << 20;
    let args = format!(r#"{{"n": 1, "size": {size}}}"#);
    let (out, _) = expect(
        &sandgen(&[
            "bench",
            FIXTURE_SPDL,
            "bytes",
            "--args",
            &args,
            "--decode",
            "bytes",
        ]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 1);
    // bincode: a 5-byte length, then the bytes.
    assert_eq!(report["bytes"], size + 5);
    assert_eq!(report["checksum"], size);
}
