//! Who splits a stream among an iterable's workers: the plugin (the
//! default; `workers.rs` tests it) or sandgen, by items. By items, every
//! worker runs the whole stream as the only worker and keeps every n-th
//! item, so a plugin that does not shard itself still gives each item
//! exactly once, in its own order when the workers' items come in order.

use std::time::Duration;

use crate::util::{assert_error, spdl};
use sandgen::{ErrorKind, Sharding};

const TIMEOUT: Duration = Duration::from_secs(60);

fn items<T: serde::de::DeserializeOwned>(iterable: &sandgen::Iterable) -> Vec<T> {
    iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
}

fn by_items(generator: &str, workers: usize) -> sandgen::IterableBuilder {
    spdl()
        .generator(generator)
        .workers(workers)
        .sharding(Sharding::Items)
        .timeout(TIMEOUT)
}

both_isolations!(a_plugin_that_does_not_shard_gives_each_item_once_in_order);
fn a_plugin_that_does_not_shard_gives_each_item_once_in_order() {
    // `range` ignores its worker index: by plugin, 3 workers give 0..1000
    // three times; by items, once, in order, every pass.
    for workers in [1, 2, 3, 5] {
        let iterable = by_items("range", workers)
            .args(&1000u64)
            .buffer_size(7)
            .build()
            .unwrap();
        for pass in 0..2 {
            assert_eq!(
                items::<u64>(&iterable),
                (0..1000).collect::<Vec<_>>(),
                "{workers} workers, pass {pass}"
            );
        }
    }
    let by_plugin = spdl()
        .generator("range")
        .args(&10u64)
        .workers(3)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    assert_eq!(items::<u64>(&by_plugin).len(), 30);
}

both_isolations!(unordered_each_item_comes_once);
fn unordered_each_item_comes_once() {
    let iterable = by_items("range", 3)
        .args(&20_000u64)
        .in_order(false)
        .build()
        .unwrap();
    let mut seen: Vec<u64> = items(&iterable);
    seen.sort_unstable();
    assert_eq!(seen, (0..20_000).collect::<Vec<_>>());
}

both_isolations!(a_stream_that_changes_every_pass_is_split_the_same_way);
fn a_stream_that_changes_every_pass_is_split_the_same_way() {
    // `shuffle` rotates its items by one more every pass: every worker's
    // pass k is the same stream, so by items the workers give one worker's
    // pass k.
    let one = spdl()
        .generator("shuffle")
        .args(&50u64)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let three = by_items("shuffle", 3).args(&50u64).build().unwrap();
    for pass in 0..3 {
        assert_eq!(items::<u64>(&three), items::<u64>(&one), "pass {pass}");
    }
}

both_isolations!(every_worker_runs_as_the_only_one);
fn every_worker_runs_as_the_only_one() {
    // Each of 3 workers yields the one item `[id, count, seed]`, which is
    // [0, 1, seed] for all of them; only worker 0 keeps item 0.
    let iterable = by_items("worker", 3).seed(9).build().unwrap();
    assert_eq!(
        items::<(u32, u32, Option<u64>)>(&iterable),
        [(0, 1, Some(9))]
    );
}

both_isolations!(the_workers_random_sources_are_one_stream);
fn the_workers_random_sources_are_one_stream() {
    // With a seed: the stream of one worker seeded alike, split.
    let one = spdl()
        .generator("random")
        .args(&12u64)
        .seed(5)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let three = by_items("random", 3).args(&12u64).seed(5).build().unwrap();
    assert_eq!(items::<u64>(&three), items::<u64>(&one));
    // Without one: a seed drawn for the iterable, the same for its workers
    // (so each item still comes once), another for the next iterable.
    let drawn = |n: u64| -> Vec<u64> {
        let iterable = by_items("random", 3).args(&n).build().unwrap();
        items(&iterable)
    };
    let (first, second) = (drawn(12), drawn(12));
    assert_eq!(first.len(), 12);
    assert_ne!(first, second, "each iterable draws its own seed");
}

both_isolations!(shards_split_by_items_give_each_item_once);
fn shards_split_by_items_give_each_item_once() {
    // Two shards of two workers each, as two DataLoader workers would run
    // them: together, every item once.
    let shard = |index: usize| -> Vec<u64> {
        let iterable = by_items("range", 2)
            .args(&101u64)
            .shard(index, 2)
            .seed(1)
            .build()
            .unwrap();
        items(&iterable)
    };
    // The shards take turns item by item (as DataLoader takes one item
    // from each of its workers in turn): shard i has items i, i + 2, ...
    assert_eq!(shard(0), (0..101).step_by(2).collect::<Vec<_>>());
    assert_eq!(shard(1), (1..101).step_by(2).collect::<Vec<_>>());
}

#[test]
fn what_cannot_be_split_by_items_is_refused_before_any_worker_starts() {
    let _watch = crate::util::watchdog("sharding::refused");
    // Several shards need a seed: their streams must be the same.
    let error = spdl()
        .generator("range")
        .args(&10u64)
        .sharding(Sharding::Items)
        .shard(0, 2)
        .build()
        .unwrap_err();
    assert_error(&error, ErrorKind::InvalidInput, "needs a seed");
    // Per-worker arguments are per-worker streams.
    let error = spdl()
        .generator("range")
        .workers(2)
        .worker_args(&[1u64, 2])
        .sharding(Sharding::Items)
        .build()
        .unwrap_err();
    assert_error(&error, ErrorKind::InvalidInput, "worker_args");
    // The mode's name.
    let error = "rows".parse::<Sharding>().unwrap_err();
    assert_error(&error, ErrorKind::InvalidInput, "unknown sharding `rows`");
}
