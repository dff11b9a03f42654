//! The plugin contract: a plugin written without the SDK works, and one that
//! breaks the contract gets a protocol error, never a host panic or hang.
//! The caller's side of a pass: the worker runs ahead by at most the buffer's
//! bytes, and one pass at a time, whatever thread asks.

use std::time::Duration;

use crate::util::{Captured, assert_error, raw, spdl};
use sandgen::{Encoding, ErrorKind, Iterable};

fn raw_iterable(generator: &str, args: &str) -> Iterable {
    raw()
        .generator(generator)
        .encoding(Encoding::Json)
        .args_raw(args)
        .build()
        .unwrap()
}

both_isolations!(plugin_without_sdk_runs);
fn plugin_without_sdk_runs() {
    let iterable = raw_iterable("count", "5");
    for _ in 0..2 {
        let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(items, [0, 1, 2, 3, 4]);
    }
    let raw_items: Vec<Vec<u8>> = iterable
        .iter_raw()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(raw_items, [b"0", b"1", b"2", b"3", b"4"]);
}

both_isolations!(plugin_without_sdk_errors_keep_their_message);
fn plugin_without_sdk_errors_keep_their_message() {
    let error = raw()
        .generator("count")
        .encoding(Encoding::Json)
        .config_raw("\"fail\"")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InitializerFailed);
    assert_eq!(error.plugin_message(), Some("raw init refused"));
    let iterable = raw_iterable("fail", "");
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_eq!(
        error.to_string(),
        "iteration failed in generator fail: raw failure: something broke"
    );
}

fn protocol_error(generator: &str, buffer_bytes: usize) -> sandgen::Error {
    let iterable = raw()
        .generator(generator)
        .encoding(Encoding::Json)
        .buffer_bytes(buffer_bytes)
        .build()
        .unwrap();
    let mut pass = iterable.iter::<serde_json::Value>().unwrap();
    // Valid batches may come first (the first calls ask for few items).
    let error = pass
        .by_ref()
        .find_map(Result::err)
        .expect("a protocol error");
    assert!(pass.next().is_none());
    drop(pass);
    assert_eq!(
        iterable.iter::<u64>().unwrap_err().kind(),
        ErrorKind::Closed
    );
    error
}

both_isolations!(length_overrunning_the_buffer);
fn length_overrunning_the_buffer() {
    let error = protocol_error("overrun", 1 << 20);
    assert_eq!(error.kind(), ErrorKind::Protocol);
    assert_eq!(
        error.to_string(),
        "generator overrun of plugin fixture_raw broke the plugin contract: malformed frame at byte 0: its length 1000 overruns the 6-byte buffer"
    );
}

both_isolations!(more_items_than_asked);
fn more_items_than_asked() {
    let error = protocol_error("too_many", 1 << 20);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "returned more items than the 1 asked for",
    );
}

both_isolations!(items_past_max_bytes);
fn items_past_max_bytes() {
    let error = protocol_error("ignore_max_bytes", 1000);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "the plugin added an item after its buffer reached max-bytes (",
    );
}

both_isolations!(item_of_the_wrong_type_is_a_decode_error);
fn item_of_the_wrong_type_is_a_decode_error() {
    let iterable = spdl().generator("range").args(&3u64).build().unwrap();
    let mut pass = iterable.iter::<(u64, u64)>().unwrap();
    let error = pass.next().unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    assert!(pass.next().is_none());
    drop(pass);
    // Not the worker's fault: the iterable still works.
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1, 2]);
}

both_isolations!(json_and_bincode_give_the_same_items);
fn json_and_bincode_give_the_same_items() {
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Item(#[serde(with = "serde_bytes")] Vec<u8>);
    for encoding in [Encoding::Bincode, Encoding::Json] {
        let iterable = spdl()
            .generator("bytes")
            .encoding(encoding)
            .args(&serde_json::json!({ "n": 3, "size": 4 }))
            .build()
            .unwrap();
        let items: Vec<Item> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            items,
            [Item(vec![0; 4]), Item(vec![1; 4]), Item(vec![2; 4])]
        );
    }
}

both_isolations!(large_items_arrive_whole);
fn large_items_arrive_whole() {
    let size = 8 << 20;
    let iterable = spdl()
        .generator("bytes")
        .args(&serde_json::json!({ "n": 3, "size": size }))
        .buffer_size(1)
        .build()
        .unwrap();
    let mut pass = iterable.iter_raw().unwrap();
    let mut count = 0;
    while let Some(item) = pass.next_item() {
        let item = item.unwrap();
        // bincode: a varint length (5 bytes for 8 MiB), then the bytes.
        assert_eq!(item.len(), size + 5);
        assert!(item[5..].iter().all(|&b| b == count as u8));
        count += 1;
    }
    assert_eq!(count, 3);
}

both_isolations!(items_over_the_maximum_are_a_protocol_error);
/// An item larger than `max_item_bytes` breaks the contract, also when it is
/// the only item of its batch.
fn items_over_the_maximum_are_a_protocol_error() {
    let iterable = spdl()
        .generator("bytes")
        .encoding(Encoding::Json)
        .args(&serde_json::json!({ "n": 2, "size": 2000 }))
        .max_item_bytes(1000)
        .build()
        .unwrap();
    let error = crate::util::pass_error::<serde_json::Value>(&iterable);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "broke the plugin contract: item 0 of the batch has",
    );
    assert!(
        error
            .to_string()
            .ends_with("more than the largest item allowed (1000 bytes)"),
        "{error}"
    );
}

both_isolations!(buffer_bytes_bound_how_far_the_worker_runs_ahead);
/// With room for 100,000 items but only 64 bytes, the worker runs ahead by
/// bytes: a few items (a batch of at most half the bytes, and one more
/// batch in flight), not thousands.
fn buffer_bytes_bound_how_far_the_worker_runs_ahead() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("announce")
        .args(&100_000u64)
        .buffer_size(100_000)
        .buffer_bytes(64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    // Let the worker run as far as it may.
    std::thread::sleep(Duration::from_millis(200));
    let produced = lines.try_iter().count();
    assert!(
        (1..=32).contains(&produced),
        "{produced} items produced ahead with 64 bytes of buffer"
    );
}

both_isolations!(two_threads_cannot_iterate_one_iterable_at_once);
fn two_threads_cannot_iterate_one_iterable_at_once() {
    let iterable = spdl().generator("range").args(&3u64).build().unwrap();
    let pass = iterable.iter::<u64>().unwrap();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| iterable.iter::<u64>().map(|_| ()).unwrap_err());
        assert_error(
            &other.join().unwrap(),
            ErrorKind::Busy,
            "already in progress",
        );
    });
    assert_eq!(pass.collect::<Result<Vec<_>, _>>().unwrap(), [0, 1, 2]);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            iterable
                .iter::<u64>()
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        });
        assert_eq!(other.join().unwrap(), [0, 1, 2]);
    });
}
