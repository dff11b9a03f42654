//! The example plugins, run through the host as their users would.

use std::path::Path;

use crate::util::{artifacts, assert_error, plugin};
use sandgen::ErrorKind;
use serde_json::{Value, json};

fn data_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

both_isolations!(jsonl_rows_are_projected_and_filtered);
fn jsonl_rows_are_projected_and_filtered() {
    let iterable = plugin(artifacts::EXAMPLE_JSONL)
        .generator("rows")
        .encoding(sandgen::Encoding::Json)
        .args(&json!({ "path": "/data/reviews.jsonl", "fields": ["id", "stars"], "where_field": "lang", "where_value": "en" }))
        .dir(data_dir(), "/data")
        .build()
        .unwrap();
    let rows: Vec<Value> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        rows,
        [
            json!({"id": 1, "stars": 5}),
            json!({"id": 2, "stars": 2}),
            json!({"id": 4, "stars": 1})
        ]
    );
}

both_isolations!(jsonl_without_granted_dir_fails_clearly);
fn jsonl_without_granted_dir_fails_clearly() {
    let iterable = plugin(artifacts::EXAMPLE_JSONL)
        .generator("rows")
        .encoding(sandgen::Encoding::Json)
        .args(&json!({ "path": "/data/reviews.jsonl", "fields": ["id"] }))
        .build()
        .unwrap();
    let error = crate::util::pass_error::<Value>(&iterable);
    assert_error(
        &error,
        ErrorKind::IterationFailed,
        "cannot open /data/reviews.jsonl",
    );
    // The host says why: nothing is granted.
    assert_error(
        &error,
        ErrorKind::IterationFailed,
        "(no directory is granted to the plugin, so it cannot see /data/reviews.jsonl: grant \
         its directory with `dirs=` in Python or `--dir` in the CLI)",
    );
}

both_isolations!(the_examples_share_their_items_among_workers);
fn the_examples_share_their_items_among_workers() {
    // Each worker yields its share, so several give every item once, in
    // the order of one (the workers' items come round-robin).
    let rows = |workers: usize| -> Vec<Value> {
        let iterable = plugin(artifacts::EXAMPLE_JSONL)
            .generator("rows")
            .encoding(sandgen::Encoding::Json)
            .args(&json!({ "path": "/data/reviews.jsonl", "fields": ["id"] }))
            .dir(data_dir(), "/data")
            .workers(workers)
            .build()
            .unwrap();
        iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(rows(1).len(), 5);
    assert_eq!(rows(2), rows(1));
    assert_eq!(rows(3), rows(1));
    let windows = |workers: usize| -> Vec<Vec<u32>> {
        let iterable = plugin(artifacts::EXAMPLE_TOKENIZE)
            .generator("windows")
            .args(&json!({ "path": "/data/reviews.jsonl", "window": 3, "shuffle_seed": 4 }))
            .dir(data_dir(), "/data")
            .workers(workers)
            .build()
            .unwrap();
        iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert!(windows(1).len() > 10);
    assert_eq!(windows(2), windows(1));
}

both_isolations!(jsonl_missing_field_names_the_line);
fn jsonl_missing_field_names_the_line() {
    let iterable = plugin(artifacts::EXAMPLE_JSONL)
        .generator("rows")
        .encoding(sandgen::Encoding::Json)
        .args(&json!({ "path": "/data/reviews.jsonl", "fields": ["id", "title"] }))
        .dir(data_dir(), "/data")
        .build()
        .unwrap();
    let error = crate::util::pass_error::<Value>(&iterable);
    assert_eq!(
        error.plugin_message(),
        Some("line 1: missing field `title`")
    );
}

both_isolations!(tokenize_windows_typed_over_bincode);
fn tokenize_windows_typed_over_bincode() {
    let iterable = plugin(artifacts::EXAMPLE_TOKENIZE)
        .generator("windows")
        .args(&json!({ "text": "one two three four five\n\nsix", "window": 4, "vocab_size": 1000 }))
        .build()
        .unwrap();
    let windows: Vec<Vec<u32>> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    // [one two three four] [five END six END]: word ids are >= 2, END is 1.
    assert_eq!(windows.len(), 2);
    assert!(windows[0].iter().all(|&t| (2..1000).contains(&t)));
    assert_eq!((windows[1][1], windows[1][3]), (1, 1));
    assert!((2..1000).contains(&windows[1][0]) && (2..1000).contains(&windows[1][2]));
    // Ids are stable: the same word always gets the same id.
    let again = plugin(artifacts::EXAMPLE_TOKENIZE)
        .generator("windows")
        .args(&json!({ "text": "four", "window": 1, "vocab_size": 1000 }))
        .build()
        .unwrap();
    let four: Vec<Vec<u32>> = again.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(four[0][0], windows[0][3]);
}

both_isolations!(tokenize_shuffles_differently_each_epoch);
fn tokenize_shuffles_differently_each_epoch() {
    let text: String = (0..200).map(|i| format!("word{i} ")).collect();
    let iterable = plugin(artifacts::EXAMPLE_TOKENIZE)
        .generator("windows")
        .args(&json!({ "text": text, "window": 8, "shuffle_seed": 3 }))
        .build()
        .unwrap();
    let epoch = || -> Vec<Vec<u32>> { iterable.iter().unwrap().collect::<Result<_, _>>().unwrap() };
    let (first, second) = (epoch(), epoch());
    assert_ne!(first, second);
    let (mut a, mut b) = (first, second);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}
