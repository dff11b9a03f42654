//! The fast path of resuming (`wit/resume.wit`): a plugin that exports it
//! (every plugin of the Rust SDK) drops the items before a position inside
//! itself, without making them, and starts a pass directly where it can; a
//! plugin built against `generator.wit` alone is replayed. Fuel (a count of
//! the guest's instructions, afresh each pass) tells the two apart.

use std::sync::Arc;
use std::time::Duration;

use crate::util::{Lang, assert_error, raw, spdl};
use sandgen::{Encoding, ErrorKind, IterableBuilder, Position};

const TIMEOUT: Duration = Duration::from_secs(60);
const ITEMS: u64 = 1_000_000;
/// Where the runs stop: ten items before the end of the pass.
const STOP: u64 = ITEMS - 10;
/// Far less than making and encoding a million items takes, far more than
/// skipping them with `Iterator::nth` over a range and making ten.
const FUEL: u64 = 20_000_000;
/// The items of `shuffle`, whose every pass starts by making its order.
const SHUFFLED: u64 = 200_000;

/// The position after `stop` items of the first pass, cut out of whole
/// batches with [`sandgen::Iterable::position_before`].
fn position_after(make: &dyn Fn() -> IterableBuilder, stop: u64) -> Position {
    let iterable = Arc::new(make().build().unwrap());
    let mut batches = iterable.batches().unwrap();
    let mut read = 0u64;
    loop {
        let batch = batches.next_batch().unwrap().unwrap();
        read += batch.len() as u64;
        if read >= stop {
            // The batch's last `read - stop` items are not used.
            let mut unused = Vec::new();
            let mut extra = (read - stop) as usize;
            for &(worker, items) in batch.workers().iter().rev() {
                if extra == 0 {
                    break;
                }
                unused.insert(0, (worker, items.min(extra)));
                extra -= items.min(extra);
            }
            let position = iterable.position_before(&unused);
            assert_eq!(position.items(), stop);
            return position;
        }
    }
}

/// A pass of `iterable` fails, out of fuel.
fn assert_out_of_fuel(iterable: &sandgen::Iterable) {
    let error = iterable
        .iter_raw()
        .unwrap()
        .find_map(Result::err)
        .expect("the pass fails");
    assert_error(&error, ErrorKind::FuelExhausted, "fuel");
}

both_isolations!(a_plugin_with_the_fast_path_skips_without_making_the_items);
fn a_plugin_with_the_fast_path_skips_without_making_the_items() {
    let make = || {
        spdl()
            .generator("range")
            .encoding(Encoding::Json)
            .args(&ITEMS)
            .timeout(TIMEOUT)
    };
    let position = position_after(&make, STOP);
    let resumed = make().fuel(FUEL).resume(position).build().unwrap();
    let rest: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, (STOP..ITEMS).collect::<Vec<_>>());
    // The budget is real: a whole pass made and encoded exhausts it.
    assert_out_of_fuel(&resumed);
}

both_isolations!(a_plugin_without_the_fast_path_is_replayed);
fn a_plugin_without_the_fast_path_is_replayed() {
    // `count` of the raw fixture, written against generator.wit alone.
    let make = || {
        raw()
            .generator("count")
            .encoding(Encoding::Json)
            .args(&ITEMS)
            .timeout(TIMEOUT)
    };
    let position = position_after(&make, STOP);
    // Replayed, the items before the position are made: they exhaust the
    // budget that the fast path has room to spare in.
    let starved = make().fuel(FUEL).resume(position.clone()).build().unwrap();
    assert_out_of_fuel(&starved);
    // With no budget, the replay gives exactly the rest.
    let resumed = make().resume(position).build().unwrap();
    let rest: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, (STOP..ITEMS).collect::<Vec<_>>());
}

both_isolations!(a_generator_that_moves_to_a_pass_at_once_resumes_there);
/// `shuffle` moves its pass counter itself (`Generator::skip_passes`): the
/// passes before a position are not run at all.
fn a_generator_that_moves_to_a_pass_at_once_resumes_there() {
    let make = || {
        spdl()
            .generator("shuffle")
            .args(&SHUFFLED)
            .buffer_size(64)
            .timeout(TIMEOUT)
    };
    let iterable = make().build().unwrap();
    for _ in 0..3 {
        iterable.skip_pass().unwrap();
    }
    let mut pass = iterable.iter::<u64>().unwrap();
    let head: Vec<u64> = pass.by_ref().take(5).collect::<Result<_, _>>().unwrap();
    // Pass 3 starts at 4: rotated by one more each pass.
    assert_eq!(head, [4, 5, 6, 7, 8]);
    let position = iterable.position();
    drop(pass);
    assert_eq!((position.pass(), position.items()), (3, 5));
    // The budget (afresh each pass) has room for a pass's start and a few
    // items, not for a pass read (or replayed) whole.
    let resumed = make().fuel(FUEL).resume(position).build().unwrap();
    let next: Vec<u64> = resumed
        .iter()
        .unwrap()
        .take(3)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(next, [9, 10, 11]);
    assert_out_of_fuel(&resumed);
}

every_language!(python_and_javascript_helpers_skip_without_writing_the_items);
/// The Python helper skips with `itertools.islice`, the JavaScript helper
/// by stepping the iterator: the generator runs, the items are not
/// written. 200 items of 4 KiB as JSON (a list of numbers each) cost far
/// more to write than to make.
fn python_and_javascript_helpers_skip_without_writing_the_items(lang: Lang) {
    let make = || {
        crate::languages::fixture(lang)
            .generator("big")
            .encoding(Encoding::Json)
            .args(&serde_json::json!({"size": 4096, "n": 200}))
            .timeout(TIMEOUT)
    };
    // About a third of what a pass written whole takes, and three times
    // what making 190 items and writing 10 take (measured).
    let fuel = match lang {
        Lang::Python => 300_000_000,
        Lang::Js => 3_000_000_000,
    };
    let position = position_after(&make, 190);
    let resumed = make().fuel(fuel).resume(position).build().unwrap();
    let rest: Vec<Vec<u8>> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, vec![vec![0u8; 4096]; 10], "{lang:?}");
    assert_out_of_fuel(&resumed);
    // Built for the world `plugin` alone, the same plugin is replayed: the
    // items before the position are written, and exhaust the budget.
    let make_replayed = || {
        crate::languages::replay_fixture(lang)
            .generator("big")
            .encoding(Encoding::Json)
            .args(&serde_json::json!({"size": 4096, "n": 200}))
            .timeout(TIMEOUT)
    };
    let position = position_after(&make_replayed, 190);
    let replayed = make_replayed().fuel(fuel).resume(position).build();
    match replayed {
        Ok(iterable) => assert_out_of_fuel(&iterable),
        Err(error) => assert_error(&error, ErrorKind::FuelExhausted, "fuel"),
    }
}
