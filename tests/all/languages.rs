//! Plugins written in Python (componentize-py) and JavaScript
//! (componentize-js) with the guest SDK's helpers: the same behaviours as
//! Rust plugins, through the same host, in both isolation modes.

use std::time::Duration;

use sandgen::{Encoding, ErrorKind, Iterable};
use serde_json::{Value, json};

use crate::util::{Fixture, Lang, artifacts, assert_error, pass_error, plugin};

pub fn fixture(lang: Lang) -> Fixture {
    plugin(match lang {
        Lang::Python => artifacts::FIXTURE_PYTHON,
        Lang::Js => artifacts::FIXTURE_JS,
    })
}

/// The same fixture built for the world `plugin` alone, without the fast
/// path of resuming (`wit/resume.wit`): a resume replays it.
pub fn replay_fixture(lang: Lang) -> Fixture {
    plugin(match lang {
        Lang::Python => artifacts::FIXTURE_PYTHON_REPLAY,
        Lang::Js => artifacts::FIXTURE_JS_REPLAY,
    })
}

fn example(lang: Lang) -> Fixture {
    plugin(match lang {
        Lang::Python => artifacts::EXAMPLE_PYTHON,
        Lang::Js => artifacts::EXAMPLE_JS,
    })
}

fn json_iterable(lang: Lang, generator: &str, args: Option<Value>) -> Iterable {
    let mut builder = fixture(lang).generator(generator).encoding(Encoding::Json);
    if let Some(args) = args {
        builder = builder.args(&args);
    }
    builder.build().unwrap()
}

/// Every item of one pass, and the error that ended it, if any.
fn drain(iterable: &Iterable) -> (Vec<Value>, Option<sandgen::Error>) {
    let mut items = Vec::new();
    for item in iterable.iter::<Value>().unwrap() {
        match item {
            Ok(item) => items.push(item),
            Err(error) => return (items, Some(error)),
        }
    }
    (items, None)
}

/// Asserts that a pass of `generator` yields the item 1, then fails with
/// `kind` and a message containing `words`.
#[track_caller]
fn one_item_then_error(lang: Lang, generator: &str, kind: ErrorKind, words: &str) {
    let (items, error) = drain(&json_iterable(lang, generator, None));
    assert_eq!(items, [json!(1)]);
    assert_error(&error.expect("the pass fails"), kind, words);
}

fn pass(iterable: &Iterable) -> Vec<Value> {
    match drain(iterable) {
        (items, None) => items,
        (_, Some(error)) => panic!("the pass failed: {error}"),
    }
}

every_language!(lists_its_generators);
fn lists_its_generators(lang: Lang) {
    let infos = fixture(lang).generators().unwrap();
    let count = infos.iter().find(|info| info.name == "count").unwrap();
    assert_eq!(
        count.description,
        match lang {
            Lang::Python => "Yields 0..n.",
            Lang::Js => "yields 0..n",
        }
    );
    for name in [
        "fail_after",
        "bad_create",
        "epochs",
        "kinds",
        "typed",
        "big",
        "echo_config",
        "spin",
        "hog",
        "unencodable",
    ] {
        assert!(infos.iter().any(|info| info.name == name), "{name}");
    }
}

every_language!(items_arrive_in_order_in_both_encodings);
fn items_arrive_in_order_in_both_encodings(lang: Lang) {
    // 10,000 items through a buffer of 7: many batches of many sizes.
    for encoding in [Encoding::Json, Encoding::Bincode] {
        let iterable = fixture(lang)
            .generator("count")
            .encoding(encoding)
            .args(&10_000u64)
            .buffer_size(7)
            .build()
            .unwrap();
        let items: Vec<u64> = iterable.iter().unwrap().map(Result::unwrap).collect();
        assert_eq!(items, (0..10_000).collect::<Vec<u64>>(), "{encoding:?}");
    }
}

every_language!(json_items_of_every_kind);
fn json_items_of_every_kind(lang: Lang) {
    let items = pass(&json_iterable(lang, "kinds", None));
    let (ninth, tenth) = match lang {
        Lang::Python => (json!([300, "x"]), json!([0, 255])),
        Lang::Js => (json!(12_345_678_901_234_567_890u64), json!([0, 255])),
    };
    assert_eq!(
        items,
        [
            json!(7),
            json!(-3),
            json!(1.5),
            json!("hé"),
            json!(true),
            json!(null),
            json!([1, 2, 3]),
            json!({"a": 1}),
            ninth,
            tenth
        ]
    );
}

every_language!(bincode_items_are_what_serde_writes);
fn bincode_items_are_what_serde_writes(lang: Lang) {
    let iterable = fixture(lang)
        .generator("kinds")
        .encoding(Encoding::Bincode)
        .build()
        .unwrap();
    let mut pass = iterable.iter_raw().unwrap();
    let mut items = Vec::new();
    while let Some(item) = pass.next_item() {
        items.push(item.unwrap().to_vec());
    }
    let value = |v: Value| sandgen_wire::bincode_of_json(&v).unwrap();
    let mut expected = vec![
        value(json!(7)),
        value(json!(-3)),
        value(json!(1.5)),
        value(json!("hé")),
        value(json!(true)),
        value(json!(null)),
        value(json!([1, 2, 3])),
        value(json!({"a": 1})),
    ];
    match lang {
        // A tuple is written as Rust writes a tuple: no length.
        Lang::Python => expected.push(bincode(&(300u64, "x".to_owned()))),
        Lang::Js => expected.push(bincode(&12_345_678_901_234_567_890u64)),
    }
    // Bytes as serde_bytes writes them.
    expected.push(bincode(&serde_bytes::ByteBuf::from(vec![0u8, 255])));
    assert_eq!(items, expected);
    // And they decode into the Rust types they stand for.
    assert_eq!(decode::<i64>(&items[1]), -3);
    assert_eq!(decode::<f64>(&items[2]), 1.5);
    assert_eq!(decode::<Vec<u64>>(&items[6]), [1, 2, 3]);
}

/// `value` in bincode 2's standard configuration, which sandgen uses.
fn bincode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .unwrap()
        .0
}

every_language!(bincode_arguments_are_read_by_their_types);
fn bincode_arguments_are_read_by_their_types(lang: Lang) {
    let args = json!({"n": 1, "name": "a", "ratio": 0.5, "flags": [true], "opts": {"b": 2}});
    let iterable = fixture(lang)
        .generator("typed")
        .encoding(Encoding::Bincode)
        .args_raw(sandgen_wire::bincode_of_json(&args).unwrap())
        .build()
        .unwrap();
    let items: Vec<String> = iterable.iter().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        items,
        [match lang {
            Lang::Python => "1|a|0.5|[True]|[('b', 2)]",
            Lang::Js => r#"1|a|0.5|[true]|{"b":2}"#,
        }]
    );
    // The same arguments as JSON.
    assert_eq!(
        pass(&json_iterable(lang, "typed", Some(args))),
        [json!(items[0])]
    );
}

every_language!(bad_arguments_fail_in_create);
fn bad_arguments_fail_in_create(lang: Lang) {
    let error = fixture(lang)
        .generator("typed")
        .encoding(Encoding::Bincode)
        .args_raw(sandgen_wire::bincode_of_json(&json!({"n": 1, "colour": "red"})).unwrap())
        .build()
        .unwrap_err();
    let words = match lang {
        Lang::Python => "there is no parameter named 'colour'",
        Lang::Js => r#"args has no member named "colour""#,
    };
    assert_error(
        &error,
        ErrorKind::CreateFailed,
        &format!(
            "create failed in generator typed: invalid arguments for generator typed: {words}"
        ),
    );
    let error = fixture(lang)
        .generator("count")
        .encoding(Encoding::Json)
        .args_raw(b"{not json".to_vec())
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::CreateFailed,
        "invalid arguments for generator count: not JSON",
    );
}

every_language!(unknown_generator_lists_the_known_ones);
fn unknown_generator_lists_the_known_ones(lang: Lang) {
    let error = fixture(lang).generator("nope").build().unwrap_err();
    assert_error(
        &error,
        ErrorKind::CreateFailed,
        "this plugin has no generator named `nope`; it has: count, fail_after, bad_create",
    );
}

every_language!(exception_after_items_keeps_the_items_and_the_traceback);
fn exception_after_items_keeps_the_items_and_the_traceback(lang: Lang) {
    let iterable = json_iterable(lang, "fail_after", Some(json!({"n": 3, "message": "boom"})));
    let (items, error) = drain(&iterable);
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    let error = error.expect("the pass fails");
    let (summary, frame) = match lang {
        Lang::Python => ("ValueError: boom", "app.py\", line 28, in fail_after"),
        Lang::Js => ("RangeError: boom", "failAfter@tests/fixtures/js/app.js:22:"),
    };
    assert_error(
        &error,
        ErrorKind::IterationFailed,
        &format!("iteration failed in generator fail_after: {summary}\n"),
    );
    let message = error.plugin_message().unwrap();
    assert!(message.starts_with(summary), "{message}");
    assert!(message.contains(frame), "{message}");
    // The helper's own frames are left out.
    assert!(!message.contains("sandgen_guest.py"), "{message}");
    assert!(!message.contains("sandgen.js"), "{message}");
    if lang == Lang::Python {
        assert!(message.contains("Traceback (most recent call last):"));
    }
}

every_language!(exception_in_create_has_the_traceback);
fn exception_in_create_has_the_traceback(lang: Lang) {
    let error = fixture(lang).generator("bad_create").build().unwrap_err();
    let (summary, frame) = match lang {
        Lang::Python => ("KeyError: 'no such dataset'", "in __init__"),
        Lang::Js => (
            "TypeError: no such dataset",
            "create@tests/fixtures/js/app.js",
        ),
    };
    assert_error(
        &error,
        ErrorKind::CreateFailed,
        &format!(
            "create failed in generator bad_create: creating generator bad_create failed: {summary}\n"
        ),
    );
    assert!(error.to_string().contains(frame), "{error}");
}

every_language!(initializer_gets_the_config_once);
fn initializer_gets_the_config_once(lang: Lang) {
    let iterable = fixture(lang)
        .generator("echo_config")
        .encoding(Encoding::Json)
        .config(&json!({"shards": [1, 2]}))
        .build()
        .unwrap();
    assert_eq!(pass(&iterable), [json!({"shards": [1, 2]})]);
    assert_eq!(pass(&iterable), [json!({"shards": [1, 2]})]);

    let error = fixture(lang)
        .generator("echo_config")
        .encoding(Encoding::Json)
        .config(&"fail")
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InitializerFailed,
        "the initializer failed: ",
    );
    assert!(
        error
            .to_string()
            .contains("the initializer was told to fail"),
        "{error}"
    );
}

every_language!(state_lives_across_passes);
fn state_lives_across_passes(lang: Lang) {
    let iterable = json_iterable(lang, "epochs", Some(json!(2)));
    for epoch in 0..3 {
        assert_eq!(pass(&iterable), [json!([epoch, 0]), json!([epoch, 1])]);
    }
    // A pass dropped half way does not disturb the next one.
    let mut pass_ = iterable.iter::<Value>().unwrap();
    assert_eq!(pass_.next().unwrap().unwrap(), json!([3, 0]));
    drop(pass_);
    assert_eq!(pass(&iterable), [json!([4, 0]), json!([4, 1])]);
}

every_language!(large_items_arrive_whole);
fn large_items_arrive_whole(lang: Lang) {
    let iterable = fixture(lang)
        .generator("big")
        .encoding(Encoding::Bincode)
        .args_raw(sandgen_wire::bincode_of_json(&json!({"size": 3 << 20, "n": 4})).unwrap())
        .build()
        .unwrap();
    let items: Vec<serde_bytes::ByteBuf> = iterable.iter().unwrap().map(Result::unwrap).collect();
    assert_eq!(items.len(), 4);
    for item in items {
        assert_eq!(item.len(), 3 << 20);
        assert!(item.iter().all(|&b| b == 0));
    }
}

every_language!(unencodable_item_is_named);
fn unencodable_item_is_named(lang: Lang) {
    one_item_then_error(
        lang,
        "unencodable",
        ErrorKind::IterationFailed,
        "iteration failed in generator unencodable: item 1 of the pass cannot be written as JSON",
    );
}

every_language!(spinning_guest_times_out);
fn spinning_guest_times_out(lang: Lang) {
    let iterable = fixture(lang)
        .generator("spin")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = pass_error::<Value>(&iterable);
    assert_error(&error, ErrorKind::Timeout, "generator spin timed out");
}

every_language!(memory_hog_hits_the_limit);
fn memory_hog_hits_the_limit(lang: Lang) {
    let iterable = fixture(lang)
        .generator("hog")
        .encoding(Encoding::Json)
        .memory_limit(96 << 20)
        .build()
        .unwrap();
    let error = pass_error::<Value>(&iterable);
    assert_error(
        &error,
        ErrorKind::MemoryLimit,
        "iteration failed in generator hog after hitting its memory limit of 96 MiB",
    );
    // The plugin's own words for it.
    let words = match lang {
        Lang::Python => "MemoryError",
        Lang::Js => "out of memory",
    };
    assert!(error.plugin_message().unwrap().contains(words), "{error}");
}

// --- One language only -------------------------------------------------------

both_isolations!(python_sleep_times_out);
fn python_sleep_times_out() {
    let iterable = fixture(Lang::Python)
        .generator("sleep")
        .args(&30.0f64)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_error(
        &pass_error::<Value>(&iterable),
        ErrorKind::Timeout,
        "generator sleep timed out",
    );
}

both_isolations!(python_sys_exit_fails_the_pass);
fn python_sys_exit_fails_the_pass() {
    one_item_then_error(
        Lang::Python,
        "exit",
        ErrorKind::IterationFailed,
        "iteration failed in generator exit: SystemExit: the generator gave up",
    );
}

both_isolations!(python_os_exit_is_a_trap);
fn python_os_exit_is_a_trap() {
    one_item_then_error(
        Lang::Python,
        "abort",
        ErrorKind::Trap,
        "generator abort exited with status 1 while iterating",
    );
}

both_isolations!(js_thrown_value_is_described);
fn js_thrown_value_is_described() {
    one_item_then_error(
        Lang::Js,
        "throw_value",
        ErrorKind::IterationFailed,
        r#"iteration failed in generator throw_value: uncaught object: {"code":7}"#,
    );
}

// --- The examples ------------------------------------------------------------

every_language!(example_windows);
fn example_windows(lang: Lang) {
    // Several workers share the windows: the same windows, once each.
    for workers in [1, 2] {
        let iterable = example(lang)
            .generator("windows")
            .encoding(Encoding::Json)
            .args(&json!({"text": "the quick brown fox jumps over the lazy dog", "window": 4}))
            .workers(workers)
            .build()
            .unwrap();
        assert_eq!(
            pass(&iterable),
            [
                json!(["the", "quick", "brown", "fox"]),
                json!(["jumps", "over", "the", "lazy"]),
                json!(["dog"])
            ],
            "{workers} worker(s)"
        );
    }
}

every_language!(example_epochs_are_shared_by_the_workers);
fn example_epochs_are_shared_by_the_workers(lang: Lang) {
    let epoch = |workers: usize| -> Vec<serde_json::Value> {
        let iterable = example(lang)
            .generator("epochs")
            .encoding(Encoding::Json)
            .args(&json!({"n": 40, "seed": 3}))
            .workers(workers)
            .build()
            .unwrap();
        pass(&iterable)
    };
    let one = epoch(1);
    assert_eq!(one.len(), 40);
    assert_eq!(
        epoch(2),
        one,
        "two workers give the one order, each item once"
    );
}

every_language!(example_epochs_reshuffle_reproducibly);
fn example_epochs_reshuffle_reproducibly(lang: Lang) {
    let epochs = |seed: u64| {
        let iterable = example(lang)
            .generator("epochs")
            .encoding(Encoding::Bincode)
            .args_raw(sandgen_wire::bincode_of_json(&json!({"n": 50, "seed": seed})).unwrap())
            .build()
            .unwrap();
        (0..3)
            .map(|_| {
                iterable
                    .iter::<u64>()
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<u64>>()
            })
            .collect::<Vec<_>>()
    };
    let first = epochs(7);
    for order in &first {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u64>>());
    }
    assert_ne!(first[0], first[1]);
    assert_ne!(first[1], first[2]);
    assert_eq!(epochs(7), first);
    assert_ne!(epochs(8), first);
}
