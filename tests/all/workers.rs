//! Several workers per iterable: the order of items, worker
//! info, per-worker arguments, failures named by worker, early stop,
//! timeouts, a dying worker, teardown, and reproducible streams.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{assert_error, plugin, spdl};
use sandgen::{ErrorKind, Isolation};
use serde_json::json;

fn items<T: serde::de::DeserializeOwned>(iterable: &sandgen::Iterable) -> Vec<T> {
    iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
}

both_isolations!(in_order_items_come_round_robin_by_worker);
fn in_order_items_come_round_robin_by_worker() {
    // Workers of 3, 5 and 1 items: one from each that has not finished.
    let iterable = spdl()
        .generator("range")
        .workers(3)
        .worker_args(&[3u64, 5, 1])
        .build()
        .unwrap();
    let expected = [0u64, 0, 0, 1, 1, 2, 2, 3, 4];
    assert_eq!(items::<u64>(&iterable), expected);
    // The workers live across passes; the next pass is the same stream.
    assert_eq!(items::<u64>(&iterable), expected);
    assert_eq!(iterable.workers(), 3);
}

both_isolations!(sharded_workers_in_order_give_the_input_order);
fn sharded_workers_in_order_give_the_input_order() {
    for workers in [1, 2, 3, 4] {
        let iterable = spdl()
            .generator("sharded")
            .args(&1000u64)
            .workers(workers)
            .buffer_size(7)
            .build()
            .unwrap();
        assert_eq!(
            items::<u64>(&iterable),
            (0..1000).collect::<Vec<_>>(),
            "{workers} workers"
        );
    }
}

both_isolations!(unordered_items_are_every_workers_items);
fn unordered_items_are_every_workers_items() {
    let iterable = Arc::new(
        spdl()
            .generator("sharded")
            .args(&20_000u64)
            .workers(3)
            .in_order(false)
            .build()
            .unwrap(),
    );
    let mut seen: Vec<u64> = items(&iterable);
    seen.sort_unstable();
    assert_eq!(seen, (0..20_000).collect::<Vec<_>>());
    // Batches: each from one worker, whole.
    let mut batches = iterable.batches().unwrap();
    let mut count = 0;
    while let Some(batch) = batches.next_batch() {
        count += batch.unwrap().len();
    }
    assert_eq!(count, 20_000);
}

both_isolations!(in_order_batches_interleave_the_workers);
fn in_order_batches_interleave_the_workers() {
    let iterable = Arc::new(
        spdl()
            .generator("range")
            .workers(2)
            .worker_args(&[1000u64, 3])
            .build()
            .unwrap(),
    );
    let mut batches = iterable.batches().unwrap();
    let mut all = Vec::new();
    while let Some(batch) = batches.next_batch() {
        for item in batch.unwrap().items() {
            all.push(sandgen_wire::Encoding::Bincode.decode::<u64>(item).unwrap());
        }
    }
    let mut expected = vec![0, 0, 1, 1, 2, 2];
    expected.extend(3..1000);
    assert_eq!(all, expected);
}

both_isolations!(each_worker_sees_its_index_and_the_count);
fn each_worker_sees_its_index_and_the_count() {
    let iterable = spdl().generator("worker").workers(3).build().unwrap();
    let seen: Vec<(u32, u32, Option<u64>)> = items(&iterable);
    assert_eq!(seen, [(0, 3, None), (1, 3, None), (2, 3, None)]);
    let iterable = spdl()
        .generator("worker")
        .workers(2)
        .seed(42)
        .build()
        .unwrap();
    let seen: Vec<(u32, u32, Option<u64>)> = items(&iterable);
    assert_eq!(seen, [(0, 2, Some(42)), (1, 2, Some(42))]);
    // The Python and JavaScript helpers read the same (a seed of 64 bits
    // too), and shard by it.
    for fixture in [
        crate::util::artifacts::FIXTURE_PYTHON,
        crate::util::artifacts::FIXTURE_JS,
    ] {
        let guest = plugin(fixture);
        let iterable = guest
            .generator("worker")
            .encoding(sandgen::Encoding::Json)
            .workers(2)
            .seed(u64::MAX)
            .build()
            .unwrap();
        let seen: Vec<(u32, u32, Option<u64>)> = items(&iterable);
        assert_eq!(
            seen,
            [(0, 2, Some(u64::MAX)), (1, 2, Some(u64::MAX))],
            "{fixture}"
        );
        let sharded = guest
            .generator("sharded")
            .encoding(sandgen::Encoding::Json)
            .args(&10u64)
            .workers(3)
            .build()
            .unwrap();
        assert_eq!(
            items::<u64>(&sharded),
            (0..10).collect::<Vec<_>>(),
            "{fixture}"
        );
    }
}

both_isolations!(the_first_failure_in_delivery_order_names_its_worker);
fn the_first_failure_in_delivery_order_names_its_worker() {
    let args = |n: u64, fail_at: u64| json!({ "n": n, "fail_at": fail_at, "message": format!("boom at {fail_at}") });
    let iterable = spdl()
        .generator("fail_at")
        .workers(3)
        .worker_args(&[args(10, 99), args(10, 2), args(10, 99)])
        .on_output(|_| {})
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let mut pass = iterable.iter::<u64>().unwrap();
    let error = loop {
        match pass.next() {
            Some(Ok(item)) => seen.push(item),
            Some(Err(error)) => break error,
            None => panic!("the pass ended without the failure"),
        }
    };
    // Worker 1 fails at its third item: the items before it in delivery
    // order came first.
    assert_eq!(seen, [0, 0, 0, 1, 1, 1, 2]);
    assert_error(&error, ErrorKind::IterationFailed, "worker 1 of 3");
    assert_eq!(error.plugin_message(), Some("boom at 2"));
    assert!(pass.next().is_none());
    drop(pass);
    assert_error(
        &iterable.iter::<u64>().unwrap_err(),
        ErrorKind::Closed,
        "earlier error",
    );
}

both_isolations!(a_failing_worker_fails_the_build_by_name);
fn a_failing_worker_fails_the_build_by_name() {
    let error = spdl()
        .generator("create_fails")
        .workers(2)
        .worker_args(&["", "no data for worker 1"])
        .build()
        .err();
    // Worker 0 gets "" (an empty message still fails); either way the first
    // failure awaited is named.
    let error = error.expect("create fails");
    assert_eq!(error.kind(), ErrorKind::CreateFailed);
    assert!(error.to_string().starts_with("worker 0 of 2: "), "{error}");
}

both_isolations!(leaving_a_pass_early_lets_the_next_pass_start_afresh);
/// A pass left after 7 items, three times: each next pass starts afresh
/// from the first item of every worker (none is busy with the pass left,
/// none goes on from where it was), and a full pass after them gives every
/// item.
fn leaving_a_pass_early_lets_the_next_pass_start_afresh() {
    let _watch =
        crate::util::watchdog("workers::leaving_a_pass_early_lets_the_next_pass_start_afresh");
    let iterable = spdl()
        .generator("range")
        // Far more than a worker may run ahead (8 items): each is busy
        // with the pass when it is left.
        .args(&10_000u64)
        .workers(3)
        .buffer_size(8)
        .build()
        .unwrap();
    for round in 0..3 {
        let first: Vec<u64> = iterable
            .iter::<u64>()
            .unwrap()
            .take(7)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(first, [0, 0, 0, 1, 1, 1, 2], "round {round}");
    }
    // A full pass after the early stops.
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 30_000);
}

both_isolations!(a_silent_worker_times_out_by_name);
fn a_silent_worker_times_out_by_name() {
    for in_order in [true, false] {
        let started = Instant::now();
        let iterable = spdl()
            .generator("spin")
            .workers(2)
            .worker_args(&[1_000_000u64, 0])
            .in_order(in_order)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let error = iterable
            .iter::<u64>()
            .unwrap()
            .find_map(Result::err)
            .expect("a timeout");
        assert_error(&error, ErrorKind::Timeout, "worker 1 of 2");
        assert!(started.elapsed() < crate::util::limit(Duration::from_secs(20)));
    }
}

#[test]
fn a_dying_worker_process_is_named() {
    let _watch = crate::util::watchdog("workers::a_dying_worker_process_is_named");
    let iterable = spdl()
        .generator("sleep")
        .args(&json!({ "ms": 20, "n": 100_000 }))
        .workers(2)
        .isolation(Isolation::Process)
        .build()
        .unwrap();
    let pids = iterable.worker_pids();
    assert_eq!(pids.len(), 2);
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pids[1] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let error = pass.find_map(Result::err).expect("the death is reported");
    assert_error(&error, ErrorKind::WorkerDied, "worker 1 of 2");
    assert!(error.to_string().contains("SIGKILL"), "{error}");
}

#[test]
fn dropping_the_iterable_ends_every_worker_process() {
    let _watch = crate::util::watchdog("workers::dropping_the_iterable_ends_every_worker_process");
    let iterable = spdl()
        .generator("spin")
        .args(&0u64)
        .workers(3)
        .isolation(Isolation::Process)
        .build()
        .unwrap();
    let pids = iterable.worker_pids();
    assert_eq!(pids.len(), 3);
    let pass = iterable.iter::<u64>().unwrap();
    // Every worker spins inside its pass: it has used CPU time of its own.
    let cpu_ticks = |pid: u32| cpu_ticks(&format!("/proc/{pid}/stat"));
    let started: Vec<u64> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    crate::util::wait_until(Duration::from_secs(60), "every worker spinning", || {
        pids.iter()
            .zip(&started)
            .all(|(&pid, &ticks)| cpu_ticks(pid) > ticks)
    });
    drop(pass);
    let started = Instant::now();
    drop(iterable);
    assert!(
        started.elapsed() < crate::util::limit(Duration::from_secs(5)),
        "{:?}",
        started.elapsed()
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
}

both_isolations!(a_seed_makes_the_stream_reproducible);
fn a_seed_makes_the_stream_reproducible() {
    let run = |seed: Option<u64>, workers: usize| -> Vec<u64> {
        let mut builder = spdl().generator("random").args(&4u64).workers(workers);
        if let Some(seed) = seed {
            builder = builder.seed(seed);
        }
        items(&builder.build().unwrap())
    };
    let seeded = run(Some(7), 2);
    assert_eq!(seeded.len(), 8);
    assert_eq!(
        run(Some(7), 2),
        seeded,
        "the same seed gives the same items"
    );
    // Each worker has its own stream, and another seed another stream.
    assert_ne!(seeded[0], seeded[1]);
    assert_ne!(run(Some(8), 2), seeded);
    // Without a seed, random is real.
    assert_ne!(run(None, 2), run(None, 2));
    // The same stream in the other isolation mode, and on any machine:
    // these values are fixed by the seed, the worker index and the
    // generator (xoshiro256++ behind std's RandomState).
    assert_eq!(seeded, SEEDED_7_TWO_WORKERS);
}

/// `random` with args 4, seed 7 and two workers, in either isolation mode.
const SEEDED_7_TWO_WORKERS: [u64; 8] = [
    2287019691376321887,
    13723196602761704988,
    11018011670913209786,
    3909694600468519541,
    5613452099088997969,
    17235213021986566653,
    4827999498332795556,
    4080989811985737223,
];

both_isolations!(a_seed_reaches_python_and_javascript_plugins);
fn a_seed_reaches_python_and_javascript_plugins() {
    for fixture in [
        crate::util::artifacts::FIXTURE_PYTHON,
        crate::util::artifacts::FIXTURE_JS,
    ] {
        seeded_entropy(fixture);
    }
}

fn seeded_entropy(fixture: &str) {
    let guest = plugin(fixture);
    let run = |seed: u64| -> Vec<String> {
        let iterable = guest
            .generator("entropy")
            .encoding(sandgen::Encoding::Json)
            .args(&3u64)
            .workers(2)
            .seed(seed)
            .build()
            .unwrap();
        items(&iterable)
    };
    let first = run(11);
    assert_eq!(first.len(), 6);
    assert_eq!(run(11), first);
    assert_ne!(run(12), first);
    assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 6, "{first:?}");
}

#[test]
fn bad_worker_options_are_refused_before_any_worker_starts() {
    let _watch =
        crate::util::watchdog("workers::bad_worker_options_are_refused_before_any_worker_starts");
    let cases: Vec<(sandgen::IterableBuilder, &str)> = vec![
        (
            spdl().generator("range").args(&1u64).workers(0),
            "between 1 and 256, not 0",
        ),
        (
            spdl().generator("range").args(&1u64).workers(100_000),
            "not 100000",
        ),
        (
            spdl().generator("range").workers(3).worker_args(&[1u64, 2]),
            "worker_args has 2 values for 3 worker(s)",
        ),
        (
            spdl().generator("range").args(&1u64).worker_args(&[1u64]),
            "either args (for every worker) or worker_args",
        ),
        (
            spdl()
                .generator("range")
                .args(&1u64)
                .env("SANDGEN_WORKER_ID", "5"),
            "SANDGEN_WORKER_ID is set by sandgen",
        ),
    ];
    for (builder, words) in cases {
        let error = builder.build().unwrap_err();
        assert_error(&error, ErrorKind::InvalidInput, words);
    }
    // Unordered with one worker is fine.
    let iterable = spdl()
        .generator("range")
        .args(&3u64)
        .in_order(false)
        .build()
        .unwrap();
    assert_eq!(items::<u64>(&iterable), [0, 1, 2]);
}

both_isolations!(a_shard_numbers_its_workers_after_the_shards_before_it);
fn a_shard_numbers_its_workers_after_the_shards_before_it() {
    let iterable = spdl()
        .generator("worker")
        .workers(2)
        .shard(1, 3)
        .seed(9)
        .build()
        .unwrap();
    let seen: Vec<(u32, u32, Option<u64>)> = items(&iterable);
    assert_eq!(seen, [(2, 6, Some(9)), (3, 6, Some(9))]);
    // Shard 1 of 2, one worker: worker 1's stream of seed 7 (its items are
    // every second one of the two-worker run, in order).
    let shard: Vec<u64> = items(
        &spdl()
            .generator("random")
            .args(&4u64)
            .shard(1, 2)
            .seed(7)
            .build()
            .unwrap(),
    );
    let worker_1: Vec<u64> = SEEDED_7_TWO_WORKERS
        .iter()
        .skip(1)
        .step_by(2)
        .copied()
        .collect();
    assert_eq!(shard, worker_1);
    let error = spdl().generator("worker").shard(2, 2).build().unwrap_err();
    assert_error(&error, ErrorKind::InvalidInput, "invalid shard 2 of 2");
}

/// Where each line of the guest's output was handled: its text, and
/// whether the handler ran on the test's own thread.
type Seen = Arc<std::sync::Mutex<Vec<(String, bool)>>>;

/// An `announce` iterable of `n` items in thread isolation whose output
/// lines are recorded in the returned list, with whether the guest ran on
/// the calling thread when it printed each.
fn announcing(n: u64, workers: usize) -> (sandgen::Iterable, Seen) {
    let seen: Seen = Arc::default();
    let caller = std::thread::current().id();
    let record = seen.clone();
    let iterable = spdl()
        .generator("announce")
        .encoding(sandgen::Encoding::Json)
        .config(&json!({ "announce": "initialized" }))
        .args(&n)
        .workers(workers)
        .buffer_size(1)
        .isolation(Isolation::Thread)
        .on_output(move |line| {
            let here = std::thread::current().id() == caller;
            record.lock().unwrap().push((line.text.to_owned(), here));
        })
        .build()
        .unwrap();
    (iterable, seen)
}

/// Waits until `seen` holds `count` lines (the worker's own thread prints
/// on its own time).
fn lines(seen: &Seen, count: usize) -> Vec<(String, bool)> {
    crate::util::wait_until(
        Duration::from_secs(10),
        &format!("{count} lines of the workers"),
        || seen.lock().unwrap().len() >= count,
    );
    seen.lock().unwrap().clone()
}

/// One worker thread runs its first steps on the caller's thread: the
/// initializer during `build`, and the pass's first item during `iter`
/// (so the first item costs no hand-off between threads); the rest of the
/// pass is made on a thread of its own, ahead of the caller.
#[test]
fn a_lone_worker_thread_starts_on_the_callers_thread() {
    let _watch = crate::util::watchdog("a_lone_worker_thread_starts_on_the_callers_thread");
    let (iterable, seen) = announcing(4, 1);
    assert_eq!(lines(&seen, 1), [("initialized".to_owned(), true)]);
    let mut pass = iterable.iter::<u64>().unwrap();
    // Made during `iter`, before any wait: the worker keeps one item ahead
    // (buffer size 1) from the start of the pass.
    assert_eq!(lines(&seen, 2)[1], ("produced 0".to_owned(), true));
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    let rest: Vec<u64> = pass.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, [1, 2, 3]);
    let later = lines(&seen, 5);
    for (line, here) in &later[2..] {
        assert!(!here, "`{line}` was made on the caller's thread: {later:?}");
    }
    // Later passes run on that thread too, and give the same items.
    assert_eq!(items::<u64>(&iterable), [0, 1, 2, 3]);
    let all = lines(&seen, 9);
    assert!(all[5..].iter().all(|(_, here)| !here), "{all:?}");
}

/// The guest never runs on the caller's thread when the caller waits with
/// bounds of its own (`Batches`, as the Python package does, so that it
/// can look for a Ctrl-C between waits), nor with several workers (they
/// start side by side).
#[test]
fn bounded_waits_and_several_workers_run_guests_on_their_own_threads() {
    let _watch =
        crate::util::watchdog("bounded_waits_and_several_workers_run_guests_on_their_own_threads");
    let (iterable, seen) = announcing(3, 1);
    let iterable = Arc::new(iterable);
    let mut batches = iterable.batches().unwrap();
    let mut got = Vec::new();
    loop {
        match batches
            .next_batch_within(Duration::from_millis(50))
            .unwrap()
        {
            sandgen::NextBatch::Batch(batch) => got.extend(
                batch
                    .items()
                    .map(|item| serde_json::from_slice::<u64>(item).unwrap()),
            ),
            sandgen::NextBatch::End => break,
            _ => {}
        }
    }
    assert_eq!(got, [0, 1, 2]);
    let produced = lines(&seen, 4);
    // The initializer ran in `build`, which waits as long as it takes.
    assert_eq!(produced[0], ("initialized".to_owned(), true));
    assert!(produced[1..].iter().all(|(_, here)| !here), "{produced:?}");

    let (iterable, seen) = announcing(2, 2);
    assert_eq!(items::<u64>(&iterable), [0, 0, 1, 1]);
    let all = lines(&seen, 6);
    assert!(all.iter().all(|(_, here)| !here), "{all:?}");
}

/// A guest that spins on the caller's thread (the pass's first item) is
/// still stopped by `close` from another thread: the pass ends with
/// `Closed` at once, and the iterable's teardown is prompt.
#[test]
fn close_from_another_thread_stops_a_guest_running_on_the_callers_thread() {
    let _watch = crate::util::watchdog(
        "close_from_another_thread_stops_a_guest_running_on_the_callers_thread",
    );
    let iterable = Arc::new(
        spdl()
            .generator("spin")
            .args(&0u64)
            .isolation(Isolation::Thread)
            .build()
            .unwrap(),
    );
    // SAFETY: gettid takes nothing and cannot fail.
    let caller = unsafe { libc::gettid() };
    let closer = {
        let iterable = iterable.clone();
        std::thread::spawn(move || {
            // Closed only once the guest spins on the caller's thread: that
            // thread has used CPU time since.
            let stat = format!("/proc/self/task/{caller}/stat");
            let before = cpu_ticks(&stat);
            crate::util::wait_until(
                Duration::from_secs(60),
                "the guest spinning on the caller's thread",
                || cpu_ticks(&stat) >= before + 2,
            );
            let closing = Instant::now();
            iterable.close();
            closing.elapsed()
        })
    };
    let mut pass = iterable.iter::<u64>().unwrap();
    let error = pass.next().unwrap().unwrap_err();
    assert_error(&error, ErrorKind::Closed, "was closed");
    let closing = closer.join().unwrap();
    assert!(
        closing < crate::util::limit(Duration::from_millis(800)),
        "close took {closing:?}"
    );
}

/// A caller inside an async runtime cannot have a guest's runtime driven on
/// its thread: its worker runs on a thread of its own, and iterating works
/// the same.
#[test]
fn a_caller_inside_an_async_runtime_gets_its_items() {
    let _watch = crate::util::watchdog("a_caller_inside_an_async_runtime_gets_its_items");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (got, seen) = runtime.block_on(async {
        let (iterable, seen) = announcing(3, 1);
        (items::<u64>(&iterable), seen)
    });
    assert_eq!(got, [0, 1, 2]);
    // The initializer too ran on the worker's thread.
    let produced = lines(&seen, 4);
    assert!(produced.iter().all(|(_, here)| !here), "{produced:?}");
}

/// The CPU time (user and system, in clock ticks) of the process or thread
/// whose `stat` file is at `path`.
fn cpu_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
