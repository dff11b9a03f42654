//! Epochs: `Iterable::skip_pass` runs a pass in the workers without sending
//! its items, so an iterable that skipped `k` passes gives pass `k` next,
//! the same items as one that read passes `0..k` (what
//! `sandgen.torch.dataset(...).set_epoch(k)` builds on).

use std::sync::Arc;
use std::time::Duration;

use crate::util::{assert_error, spdl};
use sandgen::{ErrorKind, NextBatch, Sharding};

const TIMEOUT: Duration = Duration::from_secs(60);

fn items(iterable: &sandgen::Iterable) -> Vec<u64> {
    iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
}

/// `shuffle` rotates its 0..n by one more every pass.
fn shuffle(workers: usize, sharding: Sharding) -> sandgen::IterableBuilder {
    spdl()
        .generator("shuffle")
        .args(&40u64)
        .workers(workers)
        .sharding(sharding)
        .timeout(TIMEOUT)
}

both_isolations!(a_skipped_pass_moves_the_plugin_on_as_a_read_one);
fn a_skipped_pass_moves_the_plugin_on_as_a_read_one() {
    for (workers, sharding) in [
        (1, Sharding::Plugin),
        (3, Sharding::Items),
        (2, Sharding::Plugin),
    ] {
        let read = shuffle(workers, sharding).build().unwrap();
        let epochs: Vec<Vec<u64>> = (0..5).map(|_| items(&read)).collect();
        assert_ne!(epochs[0], epochs[1], "the plugin reshuffles every pass");
        for k in 0..4 {
            let skipped = shuffle(workers, sharding).build().unwrap();
            for _ in 0..k {
                skipped.skip_pass().unwrap();
            }
            assert_eq!(
                items(&skipped),
                epochs[k],
                "{workers} worker(s) by {sharding:?}: pass {k} after skipping {k}"
            );
            // And the passes after it go on from there.
            assert_eq!(items(&skipped), epochs[k + 1], "the pass after it");
        }
    }
}

both_isolations!(a_skipped_pass_sends_no_items);
fn a_skipped_pass_sends_no_items() {
    let iterable = Arc::new(
        spdl()
            .generator("range")
            .args(&50_000u64)
            .workers(2)
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    );
    let mut skipping = iterable.skip_pass_batches().unwrap();
    // The first thing it yields is the end: no batch on the way.
    match skipping.next_batch_within(Duration::from_secs(60)).unwrap() {
        NextBatch::End => {}
        NextBatch::Batch(batch) => panic!("a skipped pass sent {} items", batch.len()),
        NextBatch::Pending => panic!("no end of the skipped pass within 60 s"),
    }
    drop(skipping);
    assert_eq!(items(&iterable).len(), 100_000, "the next pass is whole");
}

both_isolations!(a_failing_pass_fails_when_skipped);
fn a_failing_pass_fails_when_skipped() {
    let iterable = spdl()
        .generator("fail_at")
        .args(&serde_json::json!({"n": 100, "fail_at": 60, "message": "bad sample 60"}))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let error = iterable.skip_pass().unwrap_err();
    assert_error(&error, ErrorKind::IterationFailed, "bad sample 60");
    // The worker ended with the error, as after a read pass.
    assert_eq!(
        iterable.iter::<u64>().err().map(|e| e.kind()),
        Some(ErrorKind::Closed)
    );
}

both_isolations!(a_slow_pass_that_makes_progress_does_not_time_out_when_skipped);
fn a_slow_pass_that_makes_progress_does_not_time_out_when_skipped() {
    // 12 items 100 ms apart: the whole pass takes twice the inactivity
    // timeout, each item a sixth of it. The workers report every batch they
    // drop, so the timeout counts silence, not the pass.
    let iterable = spdl()
        .generator("sleep")
        .args(&serde_json::json!({"ms": 100, "n": 12}))
        .timeout(Duration::from_millis(600))
        .build()
        .unwrap();
    iterable.skip_pass().unwrap();
    // A worker that stops producing still times out.
    let spinning = spdl()
        .generator("spin")
        .args(&3u64)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let error = spinning.skip_pass().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
}

#[test]
fn a_skip_while_a_pass_lives_is_busy() {
    let _watch = crate::util::watchdog("epochs::busy");
    let iterable = spdl()
        .generator("range")
        .args(&10u64)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let pass = iterable.iter::<u64>().unwrap();
    assert_eq!(iterable.skip_pass().unwrap_err().kind(), ErrorKind::Busy);
    drop(pass);
    iterable.skip_pass().unwrap();
    iterable.close();
    assert_eq!(iterable.skip_pass().unwrap_err().kind(), ErrorKind::Closed);
}
