//! Resume (design section 14): a run stopped anywhere and resumed from its
//! `Iterable::position` gives exactly the items the uninterrupted run gives
//! from there (the same sequence in order, the same multiset unordered),
//! across passes, as often as it is resumed; a position binds to its run.

use std::time::Duration;

use crate::util::{assert_error, spdl};
use sandgen::{ErrorKind, IterableBuilder, Position, Sharding};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Passes of each run.
const PASSES: usize = 3;

/// The runs resumed: seeded random items (the same stream only under the
/// same seed), and a plugin that carries state from pass to pass (a
/// rotation one more every pass), in order and unordered, with 1 and
/// several workers, sharded by the plugin and by items.
/// A run's name, and how to make its iterable.
type Run = (&'static str, Box<dyn Fn() -> IterableBuilder>);

fn runs() -> Vec<Run> {
    let random = |workers: usize, in_order: bool, sharding: Sharding| {
        move || {
            spdl()
                .generator("random")
                .args(&150u64)
                .seed(11)
                .workers(workers)
                .in_order(in_order)
                .sharding(sharding)
                .buffer_size(16)
                .timeout(TIMEOUT)
        }
    };
    let shuffle = |workers: usize| {
        move || {
            spdl()
                .generator("shuffle")
                .args(&60u64)
                .workers(workers)
                .buffer_size(8)
                .timeout(TIMEOUT)
        }
    };
    vec![
        (
            "random, 1 worker",
            Box::new(random(1, true, Sharding::Plugin)),
        ),
        (
            "random, 3 workers in order",
            Box::new(random(3, true, Sharding::Plugin)),
        ),
        (
            "random, 3 workers unordered",
            Box::new(random(3, false, Sharding::Plugin)),
        ),
        (
            "random, 2 workers by items",
            Box::new(random(2, true, Sharding::Items)),
        ),
        ("shuffle, 1 worker", Box::new(shuffle(1))),
        ("shuffle, 2 workers", Box::new(shuffle(2))),
    ]
}

/// The items of every pass of an uninterrupted run.
fn uninterrupted(make: &dyn Fn() -> IterableBuilder) -> Vec<Vec<u64>> {
    let iterable = make().build().unwrap();
    (0..PASSES)
        .map(|_| iterable.iter().unwrap().collect::<Result<_, _>>().unwrap())
        .collect()
}

/// Reads `head` items of pass `pass` (the passes before it whole) and
/// returns them with the position there, through its JSON.
fn stop_at(iterable: &sandgen::Iterable, pass: usize, head: usize) -> (Vec<u64>, Position) {
    for _ in 0..pass {
        let _: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    }
    let mut items = iterable.iter::<u64>().unwrap();
    let read: Vec<u64> = items.by_ref().take(head).collect::<Result<_, _>>().unwrap();
    let position = iterable.position();
    assert_eq!(
        (position.pass(), position.items()),
        (pass as u64, read.len() as u64)
    );
    (read, Position::from_json(&position.to_json()).unwrap())
}

/// The rest of the run from `position`: the rest of its pass, then every
/// later pass.
fn rest(make: &dyn Fn() -> IterableBuilder, position: Position) -> Vec<Vec<u64>> {
    let pass = position.pass() as usize;
    let iterable = make().resume(position).build().unwrap();
    (pass..PASSES)
        .map(|_| iterable.iter().unwrap().collect::<Result<_, _>>().unwrap())
        .collect()
}

fn sorted(mut items: Vec<u64>) -> Vec<u64> {
    items.sort_unstable();
    items
}

/// Checks that `head` then `tail` is `whole`: item for item in order, as
/// multisets unordered.
fn assert_joined(head: &[u64], tail: &[u64], whole: &[u64], in_order: bool, what: &str) {
    let joined: Vec<u64> = head.iter().chain(tail).copied().collect();
    if in_order {
        assert_eq!(joined, whole, "{what}");
    } else {
        assert_eq!(sorted(joined), sorted(whole.to_vec()), "{what}");
    }
}

/// A xorshift64 stream: the cut points, the same in every run.
fn cuts(mut state: u64, passes: &[Vec<u64>]) -> Vec<(usize, usize)> {
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // The edges (a pass's first and last item, and past its end), then
    // random ones.
    let mut cuts = vec![(0, 0), (1, passes[1].len() - 1), (1, passes[1].len())];
    for _ in 0..4 {
        let pass = (next() % PASSES as u64) as usize;
        cuts.push((pass, (next() % (passes[pass].len() as u64 + 1)) as usize));
    }
    cuts
}

both_isolations!(a_resumed_run_gives_exactly_the_rest);
fn a_resumed_run_gives_exactly_the_rest() {
    for (seed, (name, make)) in runs().into_iter().enumerate() {
        let whole = uninterrupted(&*make);
        let in_order = !name.contains("unordered");
        for (pass, head) in cuts(seed as u64 + 1, &whole) {
            let what = format!("{name}: cut in pass {pass} after {head} items");
            let (read, position) = stop_at(&make().build().unwrap(), pass, head);
            let rest = rest(&*make, position);
            assert_joined(&read, &rest[0], &whole[pass], in_order, &what);
            for (k, later) in rest[1..].iter().enumerate() {
                let whole = &whole[pass + 1 + k];
                assert_joined(
                    &[],
                    later,
                    whole,
                    in_order,
                    &format!("{what}: pass {}", pass + 1 + k),
                );
            }
        }
    }
}

both_isolations!(a_resumed_run_resumes_again);
fn a_resumed_run_resumes_again() {
    for (name, make) in runs() {
        let whole = uninterrupted(&*make);
        let in_order = !name.contains("unordered");
        let (first, position) = stop_at(&make().build().unwrap(), 1, 17);
        // Resumed, read 20 more items, stopped again, resumed again.
        let resumed = make().resume(position).build().unwrap();
        let mut items = resumed.iter::<u64>().unwrap();
        let second: Vec<u64> = items.by_ref().take(20).collect::<Result<_, _>>().unwrap();
        let position = Position::from_json(&resumed.position().to_json()).unwrap();
        assert_eq!((position.pass(), position.items()), (1, 37), "{name}");
        drop(items);
        drop(resumed);
        let third = rest(&*make, position);
        let head: Vec<u64> = first.into_iter().chain(second).collect();
        assert_joined(&head, &third[0], &whole[1], in_order, name);
        assert_joined(&[], &third[1], &whole[2], in_order, name);
    }
}

both_isolations!(positions_between_passes_and_after_a_failure);
fn positions_between_passes_and_after_a_failure() {
    let iterable = spdl()
        .generator("range")
        .args(&10u64)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let position = iterable.position();
    assert_eq!((position.pass(), position.delivered()), (0, &[0][..]));
    let mut pass = iterable.iter::<u64>().unwrap();
    pass.by_ref().take(4).for_each(drop);
    assert_eq!(iterable.position().delivered(), [4]);
    // Read to its end, still live: the pass is over, and the position at
    // its end (a resumed pass gives nothing more).
    pass.by_ref().for_each(drop);
    assert_eq!(iterable.position().delivered(), [10]);
    drop(pass);
    let next = iterable.position();
    assert_eq!((next.pass(), next.delivered()), (1, &[0][..]));

    // A pass that fails keeps its position where it failed.
    let failing = spdl()
        .generator("fail_at")
        .args(&serde_json::json!({"n": 100, "fail_at": 60, "message": "bad sample 60"}))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let read: Vec<_> = failing.iter::<u64>().unwrap().collect();
    assert_eq!(read.len(), 61, "60 items, then the error");
    drop(read);
    let position = failing.position();
    assert_eq!((position.pass(), position.delivered()), (0, &[60][..]));
}

both_isolations!(a_position_past_the_end_of_its_pass_resumes_the_next);
fn a_position_past_the_end_of_its_pass_resumes_the_next() {
    let make = || spdl().generator("shuffle").args(&20u64).timeout(TIMEOUT);
    let whole = uninterrupted(&make);
    let (read, position) = stop_at(&make().build().unwrap(), 0, 20);
    assert_eq!(read, whole[0]);
    let resumed = make().resume(position).build().unwrap();
    let rest: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, Vec::<u64>::new(), "the pass was over");
    let next: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(next, whole[1]);
}

#[test]
fn a_position_binds_to_its_run() {
    let _watch = crate::util::watchdog("resume::a_position_binds_to_its_run");
    let make = || {
        spdl()
            .generator("random")
            .args(&30u64)
            .seed(5)
            .workers(2)
            .timeout(TIMEOUT)
    };
    let (_, position) = stop_at(&make().build().unwrap(), 0, 7);
    let refused = |builder: IterableBuilder, words: &str| {
        let error = builder.resume(position.clone()).build().unwrap_err();
        assert_error(&error, ErrorKind::InvalidInput, words);
        assert!(
            error.to_string().starts_with("cannot resume generator"),
            "{error}"
        );
    };
    refused(
        make().args(&31u64),
        "saved with other args; resume with the same args",
    );
    refused(
        make().seed(6),
        "saved with seed 5, this iterable has seed 6",
    );
    refused(
        make().workers(3),
        "saved with workers: 2, this iterable has 3",
    );
    refused(
        make().in_order(false),
        "saved with items in order, this iterable has unordered",
    );
    refused(
        make().sharding(Sharding::Items),
        "saved with sharding plugin, this iterable has items",
    );
    refused(make().config(&1u8), "saved with another config");
    refused(
        make().shard(1, 2),
        "saved as shard 0 of 1, this iterable is shard 1 of 2",
    );
    refused(
        spdl().generator("range").args(&30u64).seed(5).workers(2),
        "saved with generator \"random\", this iterable has \"range\"",
    );
    refused(
        crate::util::plugin(crate::util::artifacts::FIXTURE_KINDS).generator("random"),
        "saved with another plugin: xxh3-128:",
    );
    // Without a seed of its own, it takes the position's.
    let resumed = spdl()
        .generator("random")
        .args(&30u64)
        .workers(2)
        .resume(position.clone())
        .build()
        .unwrap();
    assert_eq!(resumed.position().to_json(), position.to_json());
}

#[test]
fn damaged_positions_are_refused_by_name() {
    let _watch = crate::util::watchdog("resume::damaged_positions_are_refused_by_name");
    let iterable = spdl().generator("range").args(&30u64).build().unwrap();
    let json = iterable.position().to_json();
    let check = |text: &str, words: &str| {
        let error = Position::from_json(text).unwrap_err();
        assert_error(&error, ErrorKind::InvalidInput, words);
        assert!(
            error.to_string().starts_with("cannot read the position: "),
            "{error}"
        );
    };
    check(&json[..json.len() / 2], "it is not JSON");
    check(
        &json.replace("\"pass\":0", "\"pass\":3"),
        "its checksum does not match",
    );
    check(
        &json.replace("\"format\":1", "\"format\":2"),
        "it was saved by a newer sandgen (position format 2; this sandgen reads format 1)",
    );
    check("{\"pass\": 0}", "it has no position format");
    check("{\"format\": 1}", "it is not a position of this sandgen");
    assert_eq!(Position::from_json(&json).unwrap().to_json(), json);
}

every_language!(python_and_javascript_plugins_resume_exactly);
/// Seeded random items of a Python or JavaScript plugin (`entropy`: hex
/// strings from `os.urandom`, `crypto.getRandomValues`), cut in a pass and
/// resumed: the helpers' skip (`itertools.islice`, stepping the iterator)
/// runs the generator for the skipped items, which draw what they drew in
/// the uninterrupted run, so the seeded stream after the cut is the same.
fn python_and_javascript_plugins_resume_exactly(lang: crate::util::Lang) {
    // Built with the fast path, and for the world `plugin` alone (replayed).
    for fixture in [crate::languages::fixture, crate::languages::replay_fixture] {
        let make = || {
            fixture(lang)
                .generator("entropy")
                .encoding(sandgen::Encoding::Json)
                .args(&12u64)
                .workers(2)
                .seed(4)
                .timeout(TIMEOUT)
        };
        let read = |iterable: &sandgen::Iterable| -> Vec<String> {
            iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
        };
        let whole = make().build().unwrap();
        let whole: Vec<Vec<String>> = (0..2).map(|_| read(&whole)).collect();
        assert_eq!(whole[0].len(), 24);
        assert_ne!(whole[0], whole[1], "every pass draws anew");
        for cut in [1, 13, 23] {
            let first = make().build().unwrap();
            let mut pass = first.iter::<String>().unwrap();
            let head: Vec<String> = pass.by_ref().take(cut).collect::<Result<_, _>>().unwrap();
            let position = Position::from_json(&first.position().to_json()).unwrap();
            drop(pass);
            let resumed = make().resume(position).build().unwrap();
            let tail = read(&resumed);
            assert_eq!([head, tail].concat(), whole[0], "{lang:?} cut at {cut}");
            assert_eq!(read(&resumed), whole[1], "{lang:?}: the next pass");
        }
    }
}

both_isolations!(workers_that_finish_early_and_whole_batches_resume_exactly);
/// Three workers with shares of 51, 50 and 50 items in order (the first
/// one's last item comes after the others have finished), cut while
/// reading whole batches ([`sandgen::Batches`] counts a batch when it
/// hands it over), and a skipped pass while a resume is pending.
fn workers_that_finish_early_and_whole_batches_resume_exactly() {
    let make = || {
        spdl()
            .generator("sharded")
            .args(&151u64)
            .workers(3)
            .buffer_size(8)
            .timeout(TIMEOUT)
    };
    let whole = uninterrupted(&make);
    assert_eq!(
        *whole[0].last().unwrap(),
        150,
        "worker 0's last item comes last"
    );
    for head in [149, 150, 151] {
        let (read, position) = stop_at(&make().build().unwrap(), 0, head);
        assert_joined(&read, &rest(&make, position)[0], &whole[0], true, "sharded");
    }

    let iterable = std::sync::Arc::new(make().build().unwrap());
    let mut batches = iterable.batches().unwrap();
    let mut read = Vec::new();
    for _ in 0..3 {
        let batch = batches.next_batch().unwrap().unwrap();
        let items: Vec<u64> = batch
            .decode(batches.encoding())
            .collect::<Result<_, _>>()
            .unwrap();
        read.extend(items);
    }
    let position = iterable.position();
    assert_eq!(
        position.items(),
        read.len() as u64,
        "whole batches are counted"
    );
    drop(batches);
    assert_joined(
        &read,
        &rest(&make, position.clone())[0],
        &whole[0],
        true,
        "batches",
    );

    // A pass skipped while the resume is pending skips the rest of the
    // position's pass: the next one is the pass after it.
    let resumed = make().resume(position).build().unwrap();
    resumed.skip_pass().unwrap();
    let next: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(next, whole[1]);
}

both_isolations!(an_item_that_does_not_decode_stays_ahead_of_the_position);
/// A pass that fails to decode an item fails there: its position is before
/// that item, so a resume meets it again (as the uninterrupted run does).
fn an_item_that_does_not_decode_stays_ahead_of_the_position() {
    let make = || {
        spdl()
            .generator("range")
            .encoding(sandgen::Encoding::Json)
            .args(&20u64)
            .timeout(TIMEOUT)
    };
    let iterable = make().build().unwrap();
    let read: Vec<_> = iterable.iter::<String>().unwrap().collect();
    assert!(
        matches!(&read[..], [Err(e)] if e.kind() == ErrorKind::Decode),
        "{read:?}"
    );
    let position = iterable.position();
    assert_eq!((position.pass(), position.items()), (0, 0));
    let resumed = make().resume(position).build().unwrap();
    let items: Vec<u64> = resumed.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, (0..20).collect::<Vec<_>>());
}

both_isolations!(items_held_unused_resume_from_the_first_of_them);
/// A caller that reads whole batches but uses their items one by one (a
/// language binding) takes the position before those it holds: each
/// batch says which worker gave its items ([`sandgen::Batch::workers`]),
/// in order and unordered; refusing held items fails the pass before them.
fn items_held_unused_resume_from_the_first_of_them() {
    for in_order in [true, false] {
        let make = move || {
            spdl()
                .generator("random")
                .args(&40u64)
                .seed(3)
                .workers(3)
                .in_order(in_order)
                .buffer_size(8)
                .timeout(TIMEOUT)
        };
        let whole = uninterrupted(&make);
        let iterable = std::sync::Arc::new(make().build().unwrap());
        let mut batches = iterable.batches().unwrap();
        let mut read = Vec::new();
        let mut held: Vec<(usize, usize)> = Vec::new();
        while read.len() < 50 {
            let batch = batches.next_batch().unwrap().unwrap();
            let runs = batch.workers();
            assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), batch.len());
            if in_order {
                // Round-robin: one item of each worker in turn.
                let next = |w: usize| (w + 1) % 3;
                assert!(
                    runs.windows(2)
                        .all(|w| w[1].0 == next(w[0].0) && w[0].1 == 1)
                );
            } else {
                assert_eq!(runs.len(), 1, "unordered, a batch is one worker's");
            }
            held = runs.to_vec();
            let items: Vec<u64> = batch
                .decode(batches.encoding())
                .collect::<Result<_, _>>()
                .unwrap();
            read.extend(items);
        }
        // The last batch's items from the second on are held unused.
        let last_len: usize = held.iter().map(|r| r.1).sum();
        let mut unused = held.clone();
        if unused[0].1 > 1 {
            unused[0].1 -= 1;
        } else {
            unused.remove(0);
        }
        let used = read.len() - (last_len - 1);
        let position = iterable.position_before(&unused);
        assert_eq!(position.items(), used as u64, "in order: {in_order}");
        assert_eq!(iterable.position().items(), read.len() as u64);
        // Refused, the pass fails before them: the same position.
        batches.refuse(&unused);
        assert!(batches.next_batch().is_none(), "a refused pass is over");
        assert_eq!(iterable.position(), position);
        drop(batches);
        assert_eq!(iterable.position(), position, "a failed pass stays put");
        assert_joined(
            &read[..used],
            &rest(&make, position)[0],
            &whole[0],
            in_order,
            "held items",
        );
    }
}
