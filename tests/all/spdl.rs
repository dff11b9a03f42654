//! The cases of SPDL's upstream tests for `iterate_in_subprocess`
//! (`tests/spdl-cases.md`), ported to sandgen. Each test names the
//! case it ports; where sandgen is stricter than SPDL, the test asserts the
//! stricter behaviour (ARCHITECTURE.md, "The protocol").

use std::time::{Duration, Instant};

use crate::util::{Captured, assert_error, spdl};
use crossbeam_channel::Receiver;
use sandgen::{ErrorKind, Iterable};
use serde_json::json;

fn range(n: u64) -> Iterable {
    spdl().generator("range").args(&n).build().unwrap()
}

fn collect(iterable: &Iterable) -> Vec<u64> {
    iterable
        .iter::<u64>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[derive(serde::Serialize)]
struct FailArgs<'a> {
    n: u64,
    fail_at: u64,
    message: &'a str,
}

both_isolations!(a01_iterate);
/// A1 `test_iterate_in_subprocess`.
fn a01_iterate() {
    assert_eq!(collect(&range(10)), (0..10).collect::<Vec<_>>());
}

both_isolations!(a02_initializer_runs_before_build_returns);
/// A2 `test_iterate_in_subprocess_initializer`: the initializer has run
/// (its output is there) when the iterable is returned, and exactly once.
fn a02_initializer_runs_before_build_returns() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("config_echo")
        .config(&json!({ "announce": "initialized 4021" }))
        .buffer_size(1)
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(lines.try_recv().as_deref(), Ok("initialized 4021"));
    let items: Vec<(u32, Option<String>)> =
        iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [(1, Some("initialized 4021".to_owned()))]);
}

both_isolations!(a03_iterable_drops_after_use);
/// A3 `test_subprocess_iterable_exposes_finalizer`: in Rust the finalizer is
/// `Drop`; an iterable drops cleanly after use: promptly, a worker process
/// is gone (reaped) when `drop` returns, and the engine goes on working.
fn a03_iterable_drops_after_use() {
    let iterable = range(3);
    assert_eq!(collect(&iterable), [0, 1, 2]);
    let worker = iterable.worker_pid();
    assert_eq!(
        worker.is_some(),
        crate::util::isolation() == sandgen::Isolation::Process
    );
    let started = Instant::now();
    drop(iterable);
    let teardown = started.elapsed();
    assert!(
        teardown < crate::util::limit(Duration::from_millis(500)),
        "drop took {teardown:?}"
    );
    if let Some(pid) = worker {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker process {pid} still exists after drop"
        );
    }
    assert_eq!(collect(&range(2)), [0, 1]);
}

/// Waits for the next `produced i` line of the `announce` generator.
fn produced(lines: &Receiver<String>) -> u64 {
    let line = lines
        .recv_timeout(crate::util::limit(Duration::from_secs(5)))
        .expect("a `produced` line within 5 s");
    line.strip_prefix("produced ").unwrap().parse().unwrap()
}

both_isolations!(a05_buffer_size_1_is_lock_step);
/// A5 `test_iterate_in_subprocess_buffer_size_1`: with buffer_size 1 the
/// worker runs exactly one item ahead.
fn a05_buffer_size_1_is_lock_step() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("announce")
        .args(&10u64)
        .buffer_size(1)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(produced(&lines), 0);
    for i in 0..10 {
        assert_eq!(pass.next().unwrap().unwrap(), i);
        if i < 9 {
            // Taking item i lets the worker produce item i + 1, and no more.
            assert_eq!(produced(&lines), i + 1);
            assert!(
                lines.recv_timeout(Duration::from_millis(50)).is_err(),
                "the worker ran ahead"
            );
        }
    }
    assert!(pass.next().is_none());
}

both_isolations!(a06_buffer_size_64_runs_ahead);
/// A6 `test_iterate_in_subprocess_buffer_size_64`: with room for every item,
/// the worker produces them all before the caller takes a second one.
fn a06_buffer_size_64_runs_ahead() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("announce")
        .args(&10u64)
        .buffer_size(64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    for i in 0..10 {
        assert_eq!(produced(&lines), i);
    }
    let rest: Vec<u64> = pass.map(Result::unwrap).collect();
    assert_eq!(rest, (1..10).collect::<Vec<_>>());
}

both_isolations!(a07_a13_initializer_failure);
/// A7, A13 `initializer_failure`: the plugin's message, verbatim.
fn a07_a13_initializer_failure() {
    let error = spdl()
        .generator("range")
        .args(&3u64)
        .config(&json!({ "fail": "Failed!" }))
        .buffer_size(1)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InitializerFailed);
    assert_eq!(error.plugin_message(), Some("Failed!"));
    assert_eq!(
        error.to_string(),
        "initializer failed in plugin fixture_spdl: Failed!"
    );
}

both_isolations!(a08_a14_a20_create_failure);
/// A8, A14, A20 `iterable creation failure`.
fn a08_a14_a20_create_failure() {
    let error = spdl()
        .generator("create_fails")
        .args("Failed!")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CreateFailed);
    assert_eq!(
        error.to_string(),
        "create failed in generator create_fails: Failed!"
    );
    // Arguments of the wrong type fail in create, with serde's words.
    let error = spdl().generator("range").args("ten").build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CreateFailed);
    assert!(
        error.to_string().starts_with(
            "create failed in generator range: invalid arguments for generator range:"
        )
    );
}

both_isolations!(a09_abort_right_after_initialization);
/// A9 `test_execute_iterable_quite_immediately`: a worker aborted right
/// after initialization ends cleanly.
fn a09_abort_right_after_initialization() {
    let started = Instant::now();
    drop(range(3));
    assert!(started.elapsed() < crate::util::limit(Duration::from_secs(5)));
}

both_isolations!(a10_a15_generator_fails_at_first_step);
/// A10, A15 `generator_fail`: the first step fails; then the worker is gone.
fn a10_a15_generator_fails_at_first_step() {
    let iterable = spdl()
        .generator("fail_at")
        .args(&FailArgs {
            n: 5,
            fail_at: 0,
            message: "Failed!",
        })
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    let error = pass.next().unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::IterationFailed);
    assert_eq!(
        error.to_string(),
        "iteration failed in generator fail_at: Failed!"
    );
    assert!(pass.next().is_none(), "a pass is fused after an error");
    drop(pass);
    assert_eq!(
        iterable.iter::<u64>().unwrap_err().kind(),
        ErrorKind::Closed
    );
}

both_isolations!(a10_iter_fails);
/// A10 variant: `iter()` itself fails (SPDL's "Failed to create the
/// iterator").
fn a10_iter_fails() {
    let iterable = spdl()
        .generator("iter_fails")
        .args("no pass today")
        .build()
        .unwrap();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_eq!(error.kind(), ErrorKind::IterationFailed);
    assert_eq!(error.plugin_message(), Some("no pass today"));
}

both_isolations!(a11_a16_fail_after_n);
/// A11, A16 `fail_after_n`: items before the error arrive first.
fn a11_a16_fail_after_n() {
    let iterable = spdl()
        .generator("fail_at")
        .args(&FailArgs {
            n: 10,
            fail_at: 3,
            message: "Failed!",
        })
        .build()
        .unwrap();
    let items: Vec<_> = iterable.iter::<u64>().unwrap().collect();
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[..3]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        items[3].as_ref().unwrap_err().plugin_message(),
        Some("Failed!")
    );
}

both_isolations!(a12_success_then_stand_by);
/// A12 `test_execute_iterator_generator_success`: a pass ends, and the worker
/// waits in Stand By for the next.
fn a12_success_then_stand_by() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("announce")
        .args(&3u64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(collect(&iterable), [0, 1, 2]);
    let produced: Vec<String> = lines.try_iter().collect();
    assert_eq!(produced, ["produced 0", "produced 1", "produced 2"]);
    // Stand By: the worker produces nothing until the next pass starts.
    assert_eq!(
        lines.recv_timeout(Duration::from_millis(50)),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    );
    assert_eq!(collect(&iterable), [0, 1, 2]);
    let produced: Vec<String> = lines.try_iter().collect();
    assert_eq!(produced, ["produced 0", "produced 1", "produced 2"]);
}

both_isolations!(a17_large_buffer);
/// A17 `test_iterate_in_subprocess_success` with an unbounded buffer.
fn a17_large_buffer() {
    let iterable = spdl()
        .generator("range")
        .args(&3u64)
        .buffer_size(usize::MAX)
        .build()
        .unwrap();
    assert_eq!(collect(&iterable), [0, 1, 2]);
}

both_isolations!(a18_timeout);
/// A18 `test_iterate_in_subprocess_timeout`: the guest sleeps 10 s before its
/// first item; the timeout fires and the worker is stopped.
fn a18_timeout() {
    let iterable = spdl()
        .generator("sleep")
        .args(&json!({ "ms": 10_000, "n": 1 }))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_error(&error, ErrorKind::Timeout, "timed out");
    assert!(started.elapsed() < crate::util::limit(Duration::from_secs(5)));
    drop(iterable);
    assert!(
        started.elapsed() < crate::util::limit(Duration::from_secs(5)),
        "teardown waited for the sleep"
    );
}

both_isolations!(a19_initializer_runs_before_create);
/// A19 `test_iterate_in_subprocess_initializer_fail`: the initializer runs
/// before `create`, so its failure wins.
fn a19_initializer_runs_before_create() {
    let error = spdl()
        .generator("create_fails")
        .args("create failed")
        .config(&json!({ "fail": "init failed" }))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InitializerFailed);
    assert_eq!(error.plugin_message(), Some("init failed"));
}

both_isolations!(a21_reiterate_simple_iterable);
/// A21 `test_iterate_in_subprocess_success_simple_iterable`: the same worker
/// gives full passes again and again.
fn a21_reiterate_simple_iterable() {
    let iterable = range(3);
    for _ in 0..3 {
        assert_eq!(collect(&iterable), [0, 1, 2]);
    }
}

both_isolations!(b24_break_then_reiterate);
/// B24 `test_break_then_reiterate`.
fn b24_break_then_reiterate() {
    let iterable = range(10);
    let first: Vec<u64> = iterable
        .iter::<u64>()
        .unwrap()
        .take(3)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, [0, 1, 2]);
    assert_eq!(collect(&iterable), (0..10).collect::<Vec<_>>());
}

both_isolations!(b25_break_then_reiterate_multiple_times);
/// B25 `test_break_then_reiterate_multiple_times`, also with lock-step and
/// default buffers.
fn b25_break_then_reiterate_multiple_times() {
    for buffer in [1, 3, 1024] {
        let iterable = spdl()
            .generator("range")
            .args(&5u64)
            .buffer_size(buffer)
            .build()
            .unwrap();
        for _ in 0..3 {
            let first: Vec<u64> = iterable
                .iter::<u64>()
                .unwrap()
                .take(2)
                .map(Result::unwrap)
                .collect();
            assert_eq!(first, [0, 1]);
            assert_eq!(collect(&iterable), [0, 1, 2, 3, 4]);
        }
    }
}

both_isolations!(b26_partial_iteration_via_zip);
/// B26 `test_partial_iteration_via_zip`.
fn b26_partial_iteration_via_zip() {
    let iterable = range(100);
    let zipped: Vec<(u64, u64)> = (0..3)
        .zip(iterable.iter::<u64>().unwrap().map(Result::unwrap))
        .collect();
    assert_eq!(zipped, [(0, 0), (1, 1), (2, 2)]);
    assert_eq!(collect(&iterable), (0..100).collect::<Vec<_>>());
}

both_isolations!(pass_dropped_before_reading_leaves_no_leftovers);
/// A pass dropped right after it started (before any status was read) must
/// not leak its statuses into the next pass.
fn pass_dropped_before_reading_leaves_no_leftovers() {
    let iterable = range(50);
    for _ in 0..5 {
        drop(iterable.iter::<u64>().unwrap());
    }
    assert_eq!(collect(&iterable), (0..50).collect::<Vec<_>>());
}

both_isolations!(second_live_pass_is_refused);
/// SPDL does not detect two live iterators (they steal each other's items);
/// sandgen refuses the second with a clear error.
fn second_live_pass_is_refused() {
    let iterable = range(5);
    let mut first = iterable.iter::<u64>().unwrap();
    assert_eq!(first.next().unwrap().unwrap(), 0);
    let error = iterable.iter::<u64>().unwrap_err();
    assert_error(&error, ErrorKind::Busy, "already in progress");
    assert_eq!(first.map(Result::unwrap).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(collect(&iterable), [0, 1, 2, 3, 4]);
}

both_isolations!(d46_state_persists_across_passes);
/// D46 `test_move_iterable_to_subprocess_success_iterable_with_shuffle` and
/// E51: state lives across passes.
fn d46_state_persists_across_passes() {
    let iterable = spdl().generator("shuffle").args(&3u64).build().unwrap();
    assert_eq!(collect(&iterable), [1, 2, 0]);
    assert_eq!(collect(&iterable), [2, 0, 1]);
    assert_eq!(collect(&iterable), [0, 1, 2]);
}

both_isolations!(c_error_of_abandoned_pass_surfaces_next);
/// C: an error of a pass abandoned early is not lost: it is what the next
/// pass reports (SPDL reports it as an "unexpected state").
fn c_error_of_abandoned_pass_surfaces_next() {
    // The worker runs ahead of the caller (buffer of 1024): after the first
    // item it goes on to items 1..5 and the failure, unless the caller drops
    // the pass first. Give it time, more on each try under a loaded machine.
    for wait_ms in [50, 200, 800, 3200] {
        let iterable = spdl()
            .generator("fail_at")
            .args(&FailArgs {
                n: 10,
                fail_at: 5,
                message: "late failure",
            })
            .buffer_size(1024)
            .build()
            .unwrap();
        let mut pass = iterable.iter::<u64>().unwrap();
        assert_eq!(pass.next().unwrap().unwrap(), 0);
        std::thread::sleep(Duration::from_millis(wait_ms));
        drop(pass);
        let mut next = iterable.iter::<u64>().unwrap();
        match next.next() {
            Some(Err(error)) => {
                // The abandoned pass's failure, reported by the next pass.
                assert_eq!(error.plugin_message(), Some("late failure"));
                drop(next);
                assert_eq!(
                    iterable.iter::<u64>().unwrap_err().kind(),
                    ErrorKind::Closed
                );
                return;
            }
            // The worker had not reached the failure when the pass was
            // dropped: the next pass starts afresh, exactly.
            Some(Ok(first)) => {
                assert_eq!(first, 0);
                let rest: Vec<_> = next.by_ref().take(4).map(Result::unwrap).collect();
                assert_eq!(rest, [1, 2, 3, 4]);
                assert_eq!(
                    next.next().unwrap().unwrap_err().plugin_message(),
                    Some("late failure")
                );
            }
            None => panic!("the next pass ended without items or an error"),
        }
    }
    panic!("the worker never reached the failure before the pass was dropped");
}

both_isolations!(c_teardown_of_busy_and_idle_workers_is_prompt);
/// C: teardown of a busy worker (spinning in wasm code) and of an idle one
/// takes moments, not seconds (SPDL: ~3 s and SIGTERM in this race).
fn c_teardown_of_busy_and_idle_workers_is_prompt() {
    // The worker spins in the `next` call that follows its first item.
    let busy = spdl().generator("spin").args(&1u64).build().unwrap();
    let mut pass = busy.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    // Time for the worker to call the guest again: it spins from then on.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(pass);
    drop(busy);
    let busy_teardown = started.elapsed();
    let idle = range(3);
    let started = Instant::now();
    drop(idle);
    let idle_teardown = started.elapsed();
    // Below the 1 s after which teardown gives up on a worker (and a
    // process is killed): a guest that was not stopped fails this.
    assert!(
        busy_teardown < crate::util::limit(Duration::from_millis(800)),
        "busy teardown took {busy_teardown:?}"
    );
    assert!(
        idle_teardown < crate::util::limit(Duration::from_millis(800)),
        "idle teardown took {idle_teardown:?}"
    );
}

both_isolations!(c_items_before_a_stall_are_delivered);
/// Items produced before a guest stalls reach the caller (slow start and
/// batch time budget): the stall does not hold them back.
fn c_items_before_a_stall_are_delivered() {
    let iterable = spdl()
        .generator("spin")
        .args(&3u64)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    for i in 0..3 {
        assert_eq!(pass.next().unwrap().unwrap(), i);
    }
}

both_isolations!(c_timeout_of_spinning_guest);
/// C: a timeout while the guest spins in wasm code (epoch interruption).
fn c_timeout_of_spinning_guest() {
    let iterable = spdl()
        .generator("spin")
        .args(&0u64)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_eq!(error.kind(), ErrorKind::Timeout);
    let closed = iterable.iter::<u64>().unwrap_err();
    assert_error(&closed, ErrorKind::Closed, "timed out");
}

both_isolations!(c_timeout_restarts_with_every_item);
/// C: a slow but steady generator is never stopped: the timeout restarts
/// with every batch.
fn c_timeout_restarts_with_every_item() {
    let iterable = spdl()
        .generator("sleep")
        .args(&json!({ "ms": 40, "n": 8 }))
        .buffer_size(1)
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    assert_eq!(collect(&iterable), (0..8).collect::<Vec<_>>());
}
