//! Failures during a pass (design section 15): with `on_failure` restart
//! or skip, a worker that traps, fails, dies or is killed is started afresh
//! and resumed where it stood, and the pass delivers exactly the items of
//! an undisturbed pass (or all but the items that failed); every restart is
//! recorded; a failure that comes back every time spends the restarts and
//! ends the pass with its error and the count.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sandgen::{ErrorKind, Iterable, OnFailure};

use crate::util::{assert_error, spdl};

const TIMEOUT: Duration = Duration::from_secs(60);

fn all_items(iterable: &Iterable) -> Vec<u64> {
    iterable
        .iter::<u64>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// 0..50 of `fail_at`, whose item 17 fails every time, with `on_failure`
/// and `max_restarts` (a buffer of 4: its worker reads little ahead).
fn bad_sample_17(on_failure: OnFailure, max_restarts: u32) -> sandgen::IterableBuilder {
    spdl()
        .generator("fail_at")
        .encoding(sandgen::Encoding::Json)
        .args(&serde_json::json!({"n": 50, "fail_at": 17, "message": "bad sample 17"}))
        .buffer_size(4)
        .timeout(TIMEOUT)
        .on_failure(on_failure)
        .max_restarts(max_restarts)
}

/// The flaky fixture over `n` values, trapping at `traps` (every time, or
/// but for the first ahead of a restart), with `on_failure`.
fn flaky(n: u64, traps: &[u64], always: bool, on_failure: OnFailure) -> sandgen::IterableBuilder {
    spdl()
        .generator("flaky")
        .encoding(sandgen::Encoding::Json)
        .args(&serde_json::json!({"n": n, "traps": traps, "always": always}))
        .buffer_size(64)
        .timeout(TIMEOUT)
        .on_failure(on_failure)
}

/// Workers that trap at random values (seeded) are restarted where they
/// stood: the pass gives exactly 0..n (in order, in sequence), with one
/// recorded restart per trap.
fn traps_at_random_values_restart_exactly() {
    const N: u64 = 6000;
    for (workers, in_order) in [(1, true), (3, true), (3, false)] {
        let mut state = 0x7ab5 + workers as u64;
        let mut traps: Vec<u64> = (0..12)
            .map(|_| 100 + crate::util::xorshift(&mut state) % (N - 100))
            .collect();
        traps.sort_unstable();
        traps.dedup();
        let iterable = flaky(N, &traps, false, OnFailure::Restart)
            .workers(workers)
            .in_order(in_order)
            .max_restarts(1000)
            .build()
            .unwrap();
        let mut got = all_items(&iterable);
        if !in_order {
            got.sort_unstable();
        }
        let expected: Vec<u64> = (0..N).collect();
        assert!(
            got == expected,
            "{workers} workers, in order {in_order}: not 0..{N}"
        );
        let failures = iterable.failures();
        assert_eq!(failures.len(), traps.len(), "{failures:?}");
        for failure in &failures {
            assert_eq!(failure.kind(), ErrorKind::Trap, "{failure}");
            assert_eq!(failure.pass(), 0);
            assert_eq!(failure.skipped(), None);
            assert_eq!(failure.action(), "restart");
            assert!(failure.to_string().contains("flaky trap at"), "{failure}");
        }
        // The next pass starts with the workers that replaced them.
        let mut again = all_items(&iterable);
        again.sort_unstable();
        assert_eq!(again, expected);
    }
}
both_isolations!(traps_at_random_values_restart_exactly);

/// With skip, an item whose every try traps is left out, and named: the
/// worker first looks for it one item at a time, then passes over it.
fn skip_leaves_out_the_items_that_trap_every_time() {
    const N: u64 = 900;
    let traps = [150, 151, 400, 899];
    for (workers, in_order) in [(1, true), (3, true), (3, false)] {
        let iterable = flaky(N, &traps, true, OnFailure::Skip)
            .workers(workers)
            .in_order(in_order)
            .max_restarts(20)
            .build()
            .unwrap();
        let mut got = all_items(&iterable);
        if !in_order {
            got.sort_unstable();
        }
        let expected: Vec<u64> = (0..N).filter(|v| !traps.contains(v)).collect();
        let failures = iterable.failures();
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|v| !got.contains(v)).collect();
            let extra: Vec<_> = got.iter().filter(|v| !expected.contains(v)).collect();
            panic!(
                "{workers} workers, in order {in_order}: {} items, missing {missing:?}, extra {extra:?}; {failures:#?}",
                got.len()
            );
        }
        let mut skipped: Vec<u64> = failures.iter().filter_map(|f| f.skipped()).collect();
        skipped.sort_unstable();
        // With one worker, its stream is the values; with three, each
        // worker's stream is every third value.
        let in_stream = |v: u64| if workers == 1 { v } else { v / 3 };
        let mut expected_skipped: Vec<u64> = traps.iter().map(|&v| in_stream(v)).collect();
        expected_skipped.sort_unstable();
        assert_eq!(skipped, expected_skipped, "{failures:?}");
        assert!(failures.iter().all(|f| f.kind() == ErrorKind::Trap));
        // A trap in a call that asked for several items names none; the
        // next worker asks for one at a time up to there and names it: at
        // most one unnamed try before each item passed over.
        for worker in 0..workers {
            let mut unnamed = 0;
            for failure in failures.iter().filter(|f| f.worker() == worker) {
                unnamed = if failure.skipped().is_some() {
                    0
                } else {
                    unnamed + 1
                };
                assert!(unnamed <= 1, "worker {worker}: {failures:#?}");
            }
            assert_eq!(unnamed, 0, "worker {worker}: {failures:#?}");
        }
    }
}
both_isolations!(skip_leaves_out_the_items_that_trap_every_time);

/// Items sharding: every worker makes the whole stream and meets every
/// trap; each passes over it, and the pass is the stream without them, in
/// sequence.
fn skip_with_items_sharding_leaves_out_each_trap_once() {
    const N: u64 = 600;
    let traps = [100, 101, 302, 599];
    let make = || {
        flaky(N, &traps, true, OnFailure::Skip)
            .workers(3)
            .sharding(sandgen::Sharding::Items)
            .max_restarts(50)
    };
    let iterable = make().build().unwrap();
    let expected: Vec<u64> = (0..N).filter(|v| !traps.contains(v)).collect();
    assert_eq!(all_items(&iterable), expected);
    let mut skipped: Vec<(usize, u64)> = iterable
        .failures()
        .iter()
        .filter_map(|f| Some((f.worker(), f.skipped()?)))
        .collect();
    skipped.sort_unstable();
    let each: Vec<(usize, u64)> = (0..3)
        .flat_map(|w| traps.iter().map(move |&t| (w, t)))
        .collect();
    assert_eq!(skipped, each);
    // A position taken in the next pass resumes past the left-out items
    // too: the rest of the pass is the stream without them.
    let mut pass = iterable.iter::<u64>().unwrap();
    let taken: Vec<u64> = pass.by_ref().take(250).map(Result::unwrap).collect();
    let position = iterable.position();
    drop(pass);
    assert_eq!(taken, expected[..250]);
    let resumed = make().resume(position).build().unwrap();
    assert_eq!(all_items(&resumed), expected[250..]);
}
both_isolations!(skip_with_items_sharding_leaves_out_each_trap_once);

/// A plugin error at an item: skip leaves it out (the SDK's skip steps
/// over it without making it again) and records where; restart meets it
/// every time, spends its restarts and ends the pass with the error and
/// the count.
fn a_failing_item_is_skipped_or_spends_the_restarts() {
    let make = |on_failure| bad_sample_17(on_failure, 2).build().unwrap();
    let skipping = make(OnFailure::Skip);
    let expected: Vec<u64> = (0..50).filter(|&v| v != 17).collect();
    assert_eq!(all_items(&skipping), expected);
    let failures = skipping.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let failure = &failures[0];
    assert_eq!(
        (
            failure.worker(),
            failure.pass(),
            failure.position(),
            failure.skipped()
        ),
        (0, 0, 17, Some(17))
    );
    assert_eq!(failure.kind(), ErrorKind::IterationFailed);
    assert_eq!(failure.action(), "skip");
    assert!(failure.to_string().contains("bad sample 17"), "{failure}");
    // A later pass meets it again and leaves it out again, and so does a
    // restart there, which replays the earlier pass past the item too.
    assert_eq!(all_items(&skipping), expected);
    let mut pass = skipping.iter::<u64>().unwrap();
    let first: Vec<u64> = pass.by_ref().take(5).map(Result::unwrap).collect();
    let position = skipping.position();
    drop(pass);
    assert_eq!(first, [0, 1, 2, 3, 4]);
    assert_eq!(
        skipping
            .failures()
            .iter()
            .map(|f| f.pass())
            .collect::<Vec<_>>(),
        [0, 1]
    );
    // A run resumed in pass 2 replays passes 0 and 1 (without their
    // items), passing over the item there as the run did.
    let resumed = bad_sample_17(OnFailure::Skip, 2)
        .resume(position)
        .build()
        .unwrap();
    assert_eq!(all_items(&resumed), expected[5..]);

    let restarting = make(OnFailure::Restart);
    let mut pass = restarting.iter::<u64>().unwrap();
    let got: Vec<u64> = pass.by_ref().take(17).map(Result::unwrap).collect();
    assert_eq!(got, (0..17).collect::<Vec<_>>());
    let error = pass.next().unwrap().unwrap_err();
    assert_error(&error, ErrorKind::IterationFailed, "bad sample 17");
    assert!(error.to_string().contains("after 2 restarts"), "{error}");
    assert!(pass.next().is_none());
    drop(pass);
    assert_eq!(restarting.failures().len(), 2);
    assert_eq!(restarting.position().items(), 17);
    // The workers are gone, as after any failure.
    assert_eq!(pass_kind(&restarting), ErrorKind::Closed);

    let stopping = make(OnFailure::Stop);
    let error = stopping
        .iter::<u64>()
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert_error(&error, ErrorKind::IterationFailed, "bad sample 17");
    assert!(!error.to_string().contains("restart"), "{error}");
    assert!(stopping.failures().is_empty());
}
both_isolations!(a_failing_item_is_skipped_or_spends_the_restarts);

/// An item passed over counts in its worker's position: a position taken
/// after it resumes after it, with neither the item nor the one before
/// the position made again.
fn a_position_past_a_skipped_item_resumes_after_it() {
    let iterable = bad_sample_17(OnFailure::Skip, 2).build().unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    let taken: Vec<u64> = pass.by_ref().take(20).map(Result::unwrap).collect();
    let position = iterable.position();
    drop(pass);
    let expected: Vec<u64> = (0..50).filter(|&v| v != 17).collect();
    assert_eq!(taken, expected[..20]);
    assert_eq!(position.items(), 21, "the item passed over counts");
    let resumed = bad_sample_17(OnFailure::Skip, 2)
        .resume(position)
        .build()
        .unwrap();
    assert_eq!(all_items(&resumed), expected[20..]);
    assert!(resumed.failures().is_empty(), "{:?}", resumed.failures());
}
both_isolations!(a_position_past_a_skipped_item_resumes_after_it);

/// A pass stopped early never met the bad item (a buffer of 4 keeps its
/// worker from reading ahead to it); a restart in the next pass replays
/// that pass whole (the plugin has no `skip_passes`), meets the item there,
/// and passes over it as the pass would have: a restart of its own,
/// recorded.
fn a_replayed_pass_passes_over_the_item_it_never_reached() {
    let iterable = bad_sample_17(OnFailure::Skip, 2).build().unwrap();
    let first: Vec<u64> = iterable
        .iter::<u64>()
        .unwrap()
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, [0, 1, 2, 3, 4]);
    let expected: Vec<u64> = (0..50).filter(|&v| v != 17).collect();
    assert_eq!(all_items(&iterable), expected);
    let failures: Vec<(u64, Option<u64>)> = iterable
        .failures()
        .iter()
        .map(|f| (f.pass(), f.skipped()))
        .collect();
    assert_eq!(failures, [(1, Some(17)), (0, Some(17))]);
    // With one restart allowed, the replay's failure ends the pass, saying
    // how many restarts it made.
    let strict = bad_sample_17(OnFailure::Skip, 1).build().unwrap();
    assert_eq!(strict.iter::<u64>().unwrap().take(5).count(), 5);
    let error = strict.iter::<u64>().unwrap().find_map(Result::err).unwrap();
    assert_error(&error, ErrorKind::IterationFailed, "after 1 restart ");
}
both_isolations!(a_replayed_pass_passes_over_the_item_it_never_reached);

/// `close()` at random moments of a pass whose workers keep trapping and
/// being restarted (often while a restart starts or replays): the pass
/// gives a prefix of its items and then ends `Closed` (never the error of
/// a worker it was closing), and every later pass is refused `Closed`.
fn closing_while_workers_restart_ends_the_pass_closed() {
    const N: u64 = 40_000;
    let traps: Vec<u64> = (1..N / 50).map(|i| i * 50).collect();
    let mut state = 0x29c1;
    for round in 0..20 {
        let iterable = flaky(N, &traps, false, OnFailure::Restart)
            .workers(2)
            .max_restarts(u32::MAX)
            .build()
            .unwrap();
        let delay = Duration::from_millis(1 + crate::util::xorshift(&mut state) % 40);
        let (got, error) = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(delay);
                iterable.close();
            });
            let mut pass = iterable.iter::<u64>().unwrap();
            let mut got = Vec::new();
            let error = loop {
                match pass.next() {
                    Some(Ok(item)) => got.push(item),
                    Some(Err(error)) => break Some(error),
                    None => break None,
                }
            };
            if error.is_some() {
                assert!(
                    pass.next().is_none(),
                    "round {round}: items after the error"
                );
            }
            (got, error)
        });
        let expected: Vec<u64> = (0..got.len() as u64).collect();
        assert!(got == expected, "round {round}: not a prefix of 0..{N}");
        match error {
            Some(error) => assert_error(&error, ErrorKind::Closed, "was closed"),
            None => assert_eq!(got.len() as u64, N, "round {round}: ended early"),
        }
        assert_eq!(pass_kind(&iterable), ErrorKind::Closed, "round {round}");
    }
}
both_isolations!(closing_while_workers_restart_ends_the_pass_closed);

fn pass_kind(iterable: &Iterable) -> ErrorKind {
    match iterable.iter::<u64>() {
        Err(error) => error.kind(),
        Ok(_) => panic!("a pass started"),
    }
}

/// A plugin that makes the items it skips (here `(0..).inspect(..)`, whose
/// `nth` runs the panic) meets the trap again while passing over it: the
/// restarts are spent and the error says why.
fn a_plugin_without_a_real_skip_cannot_pass_over_a_trap() {
    let iterable = spdl()
        .generator("panic_at")
        .encoding(sandgen::Encoding::Json)
        .args(&serde_json::json!({"at": 5, "message": "boom"}))
        .buffer_size(2)
        .timeout(TIMEOUT)
        .on_failure(OnFailure::Skip)
        .max_restarts(3)
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    let got: Vec<u64> = pass.by_ref().take(5).map(Result::unwrap).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    let error = pass.next().unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Trap, "{error}");
    let message = error.to_string();
    assert!(message.contains("after 3 restarts"), "{message}");
    assert!(message.contains("wit/resume.wit"), "{message}");
}
both_isolations!(a_plugin_without_a_real_skip_cannot_pass_over_a_trap);

/// Worker processes SIGKILLed every 100 ms during long passes are
/// restarted where they stood: the pass delivers exactly the undisturbed
/// pass's items (the same sequence in order, the same multiset unordered),
/// with 1 and 3 workers. The consumer reads slowly enough for the pass to
/// outlast many kills.
#[test]
fn killed_every_100_ms_the_pass_is_exactly_the_undisturbed_one() {
    let _watch = crate::util::watchdog("failures::killed_every_100_ms");
    const ITEMS: u64 = 4000;
    for (workers, in_order) in [(1, true), (3, true), (3, false)] {
        let make = || {
            crate::process::spdl_process()
                .generator("random")
                .args(&ITEMS)
                .seed(29)
                .workers(workers)
                .in_order(in_order)
                .buffer_size(64)
                .timeout(TIMEOUT)
                .on_failure(OnFailure::Restart)
                .max_restarts(10_000)
                .build()
                .unwrap()
        };
        let whole = all_items(&make());
        let iterable = make();
        let done = AtomicBool::new(false);
        let (got, kills) = std::thread::scope(|scope| {
            let killer = scope.spawn(|| {
                let mut state = 0x6b11 + workers as u64;
                let mut kills = 0u32;
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    let pids = iterable.worker_pids();
                    let pid =
                        pids[(crate::util::xorshift(&mut state) % pids.len() as u64) as usize];
                    // A worker that already ended is no kill.
                    let killed = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    kills += u32::from(killed.success());
                }
                kills
            });
            let mut got = Vec::new();
            for (index, item) in iterable.iter::<u64>().unwrap().enumerate() {
                got.push(item.unwrap());
                if index % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, Ordering::SeqCst);
            (got, killer.join().unwrap())
        });
        let (mut got, mut whole) = (got, whole);
        if !in_order {
            got.sort_unstable();
            whole.sort_unstable();
        }
        assert!(got == whole, "{workers} workers, in order {in_order}");
        let failures = iterable.failures();
        assert!(kills >= 5, "{kills} kills: the pass was too short to test");
        assert!(!failures.is_empty() && failures.len() <= kills as usize);
        for failure in &failures {
            assert_eq!(failure.kind(), ErrorKind::WorkerDied, "{failure}");
            assert_eq!(failure.action(), "restart");
        }
    }
}
