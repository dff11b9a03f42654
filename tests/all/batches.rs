//! The batch API that language bindings build on (`Iterable::batches`):
//! whole batches, an owned pass, waits in slices, and `close`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{assert_error, cache_dir, spdl};
use sandgen::{ErrorKind, NextBatch};
use serde_json::json;

fn decode(items: sandgen::BatchItems<'_>) -> Vec<u64> {
    items
        .map(|bytes| sandgen_wire::Encoding::Bincode.decode(bytes).unwrap())
        .collect()
}

both_isolations!(batches_carry_every_item_in_order);
fn batches_carry_every_item_in_order() {
    let iterable = Arc::new(spdl().generator("range").args(&5000u64).build().unwrap());
    for _pass in 0..2 {
        let mut batches = iterable.batches().unwrap();
        let mut items = Vec::new();
        let mut count = 0;
        while let Some(batch) = batches.next_batch() {
            let batch = batch.unwrap();
            assert!(!batch.is_empty());
            count += 1;
            items.extend(decode(batch.items()));
        }
        assert_eq!(items, (0..5000).collect::<Vec<u64>>());
        assert!(count > 1, "5000 items come in more than one batch");
        assert!(batches.next_batch().is_none(), "the pass is fused");
    }
}

both_isolations!(a_batch_pass_owns_its_share_of_the_iterable);
fn a_batch_pass_owns_its_share_of_the_iterable() {
    let iterable = Arc::new(spdl().generator("range").args(&3u64).build().unwrap());
    let mut batches = iterable.batches().unwrap();
    // Another pass is busy while this one lives, whatever its kind.
    assert_error(
        &iterable.iter_raw().unwrap_err(),
        ErrorKind::Busy,
        "already in progress",
    );
    drop(iterable);
    let mut items = Vec::new();
    while let Some(batch) = batches.next_batch() {
        items.extend(decode(batch.unwrap().items()));
    }
    assert_eq!(items, [0, 1, 2]);
}

both_isolations!(waits_in_slices_keep_the_inactivity_timeout);
fn waits_in_slices_keep_the_inactivity_timeout() {
    let iterable = Arc::new(
        spdl()
            .generator("sleep")
            .args(&json!({ "ms": 300, "n": 1 }))
            .build()
            .unwrap(),
    );
    let mut batches = iterable.batches().unwrap();
    assert!(matches!(
        batches
            .next_batch_within(Duration::from_millis(20))
            .unwrap(),
        NextBatch::Pending
    ));
    let batch = loop {
        match batches
            .next_batch_within(Duration::from_millis(20))
            .unwrap()
        {
            NextBatch::Batch(batch) => break batch,
            NextBatch::Pending => {}
            NextBatch::End => panic!("the pass ended without its item"),
        }
    };
    assert_eq!(decode(batch.items()), [0]);
    assert!(matches!(
        batches.next_batch_within(Duration::from_secs(5)).unwrap(),
        NextBatch::End
    ));

    // A worker that goes silent: the timeout counts across short waits.
    let spinning = Arc::new(
        spdl()
            .generator("spin")
            .args(&0u64)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let mut batches = spinning.batches().unwrap();
    let started = Instant::now();
    let mut pending = 0;
    let error = loop {
        match batches.next_batch_within(Duration::from_millis(50)) {
            Ok(NextBatch::Pending) => pending += 1,
            Ok(other) => panic!("a spinning worker gave {other:?}"),
            Err(error) => break error,
        }
        assert!(
            started.elapsed() < crate::util::limit(Duration::from_secs(10)),
            "no timeout"
        );
    };
    assert_error(&error, ErrorKind::Timeout, "timed out");
    assert!(pending >= 2, "{pending} short waits before the timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

both_isolations!(close_ends_the_worker_and_its_live_pass);
fn close_ends_the_worker_and_its_live_pass() {
    let iterable = Arc::new(
        spdl()
            .generator("sleep")
            .args(&json!({ "ms": 20, "n": 1000 }))
            .build()
            .unwrap(),
    );
    let pid = iterable.worker_pid();
    let mut batches = iterable.batches().unwrap();
    assert!(batches.next_batch().unwrap().is_ok());
    let started = Instant::now();
    iterable.close();
    assert!(iterable.is_closed());
    assert!(started.elapsed() < crate::util::limit(Duration::from_secs(3)));
    let error = loop {
        match batches.next_batch() {
            Some(Ok(_)) => continue,
            Some(Err(error)) => break error,
            None => panic!("a closed pass ended without an error"),
        }
    };
    assert_error(&error, ErrorKind::Closed, "was closed");
    drop(batches);
    assert_error(
        &iterable.iter::<u64>().unwrap_err(),
        ErrorKind::Closed,
        "was closed",
    );
    if let Some(pid) = pid {
        // The worker process is gone, reaped.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    iterable.close(); // twice is fine
}

#[test]
fn a_worker_command_passes_its_arguments_first() {
    let _watch = crate::util::watchdog("batches::a_worker_command_passes_its_arguments_first");
    // `sh -c 'exec "$0" "$@"' SANDGEN ...`: the shell runs the sandgen
    // binary with sandgen's own arguments after the command's.
    let engine = sandgen::Engine::builder()
        .cache_dir(cache_dir())
        .worker_command(
            "/bin/sh",
            ["-c", r#"exec "$0" "$@""#, env!("CARGO_BIN_EXE_sandgen")],
        )
        .build()
        .unwrap();
    let plugin = engine.load(sandgen_tests::artifacts::FIXTURE_SPDL).unwrap();
    let iterable = plugin
        .generator("range")
        .args(&3u64)
        .isolation(sandgen::Isolation::Process)
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1, 2]);
}

#[test]
fn worker_arguments_are_recognised_and_nothing_else() {
    let _watch = crate::util::watchdog("batches::worker_arguments_are_recognised_and_nothing_else");
    assert_eq!(
        sandgen::run_worker_from_args(Vec::<std::ffi::OsString>::new()),
        None
    );
    assert_eq!(sandgen::run_worker_from_args(["run".into()]), None);
}

both_isolations!(arrays_are_read_in_place_from_the_batch);
fn arrays_are_read_in_place_from_the_batch() {
    use sandgen::{Array, Dtype};
    let fixture = crate::util::plugin(crate::util::artifacts::FIXTURE_ARRAYS);
    let args = json!({"n": 50, "dtype": "float32", "shape": [3, 4]});
    let iterable = Arc::new(fixture.generator("labelled").args(&args).build().unwrap());
    let mut batches = iterable.batches().unwrap();
    let mut labels = Vec::new();
    while let Some(batch) = batches.next_batch() {
        let batch = batch.unwrap();
        for item in batch.decode::<(Array<'_>, u64)>(batches.encoding()) {
            let (image, label) = item.unwrap();
            assert!(image.is_borrowed(), "a view of the batch's bytes");
            assert_eq!(
                (image.dtype(), image.shape()),
                (Dtype::Float32, &[3, 4][..])
            );
            let expected: Vec<f32> = (0..12).map(|i| (label * 1000 + i) as f32).collect();
            assert_eq!(image.to_vec::<f32>().unwrap(), expected);
            labels.push(label);
        }
    }
    assert_eq!(labels, (0..50).collect::<Vec<u64>>());
}

both_isolations!(a_malformed_array_is_a_decode_error_that_says_why);
fn a_malformed_array_is_a_decode_error_that_says_why() {
    use sandgen::Array;
    let fixture = crate::util::plugin(crate::util::artifacts::FIXTURE_ARRAYS);
    for (case, why) in [
        ("dtype", "unknown dtype `complex64`: use one of bool, uint8"),
        (
            "length",
            "an array of dtype float32 and shape [4] holds 16 bytes, not 12",
        ),
        ("bool", "a bool array holds the byte 2 at element 1"),
    ] {
        let iterable = Arc::new(fixture.generator("malformed").args(case).build().unwrap());
        let mut batches = iterable.batches().unwrap();
        let mut items = Vec::new();
        while let Some(batch) = batches.next_batch() {
            items.extend(
                batch
                    .unwrap()
                    .decode::<Array<'_>>(batches.encoding())
                    .map(|item| {
                        // Owned, to outlive the batch.
                        item.map(Array::into_owned)
                    }),
            );
        }
        assert_eq!(items.len(), 2, "{case}");
        assert_eq!(items[0].as_ref().unwrap().to_vec::<f32>().unwrap(), [1.0]);
        assert_error(items[1].as_ref().unwrap_err(), ErrorKind::Decode, why);
    }
}
