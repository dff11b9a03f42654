//! What only process isolation has: a worker process that can die, be
//! killed, and must never outlive its caller; and a program that embeds
//! sandgen is its own worker process. (What the caller trusts of a worker
//! process's messages: `transport.rs`.)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandgen::{Engine, ErrorKind, Isolation};

use crate::util::{artifacts, assert_error, cache_dir, output_within, plugin};

pub fn spdl_process() -> crate::util::Fixture {
    crate::util::set_isolation(Isolation::Process);
    plugin(artifacts::FIXTURE_SPDL)
}

/// The SPDL fixture, loaded by an engine whose worker program is `program`.
pub fn with_worker_program(program: impl AsRef<Path>) -> sandgen::Plugin {
    Engine::builder()
        .cache_dir(cache_dir())
        .worker_program(program.as_ref())
        .build()
        .unwrap()
        .load(artifacts::FIXTURE_SPDL)
        .unwrap()
}

fn kill(pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Whether a process exists (a zombie counts: it was not reaped).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a process has exited (it may wait, as a zombie, to be reaped by
/// its parent; an orphan's parent is init).
fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, None | Some("Z" | "X"))
}

/// Waits up to `limit` (stretched by the tests' time factor) for `pid` to be
/// gone (`reaped`) or to have exited; the time it took.
pub fn gone_within(pid: u32, limit: Duration, reaped: bool) -> Option<Duration> {
    let limit = crate::util::limit(limit);
    let started = Instant::now();
    while started.elapsed() < limit {
        if if reaped { !exists(pid) } else { exited(pid) } {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn worker_killed_mid_pass_is_reported_at_once() {
    let _watch = crate::util::watchdog("process::worker_killed_mid_pass_is_reported_at_once");
    let iterable = spdl_process()
        .generator("spin")
        .args(&1u64)
        .build()
        .unwrap();
    let pid = iterable.worker_pid().expect("a worker process");
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    let killed = Instant::now();
    kill(pid);
    let error = pass.next().unwrap().unwrap_err();
    let detected = killed.elapsed();
    eprintln!("dead worker detected {detected:?} after SIGKILL");
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "was killed by signal 9 (SIGKILL)",
    );
    assert!(
        detected < crate::util::limit(Duration::from_secs(1)),
        "{detected:?}"
    );
    drop(pass);
    assert_eq!(
        iterable.iter::<u64>().unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn worker_killed_while_idle_is_reported_on_the_next_pass() {
    let _watch =
        crate::util::watchdog("process::worker_killed_while_idle_is_reported_on_the_next_pass");
    let iterable = spdl_process()
        .generator("range")
        .args(&3u64)
        .build()
        .unwrap();
    let pid = iterable.worker_pid().unwrap();
    kill(pid);
    assert!(
        gone_within(pid, Duration::from_secs(5), true).is_some(),
        "the worker was not reaped"
    );
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "died: it was killed by signal 9",
    );
}

#[test]
fn dropping_the_iterable_ends_and_reaps_the_worker() {
    let _watch = crate::util::watchdog("process::dropping_the_iterable_ends_and_reaps_the_worker");
    for generator in ["range", "spin"] {
        let iterable = spdl_process()
            .generator(generator)
            .args(&1u64)
            .build()
            .unwrap();
        let pid = iterable.worker_pid().unwrap();
        let mut pass = iterable.iter::<u64>().unwrap();
        assert_eq!(pass.next().unwrap().unwrap(), 0);
        drop(pass);
        let started = Instant::now();
        drop(iterable);
        let teardown = started.elapsed();
        eprintln!("teardown of a {generator} worker process took {teardown:?}");
        // Gone and reaped (no zombie) by the time drop returns.
        assert!(!exists(pid), "worker {pid} still exists after drop");
        assert!(
            teardown < crate::util::limit(Duration::from_secs(2)),
            "{teardown:?}"
        );
    }
}

#[test]
fn worker_that_cannot_start_or_dies_at_once() {
    let _watch = crate::util::watchdog("process::worker_that_cannot_start_or_dies_at_once");
    for (program, words) in [
        (
            "/no/such/sandgen",
            "failed to start the worker process `/no/such/sandgen`",
        ),
        ("/bin/false", "died: it exited with status 1"),
    ] {
        let error = with_worker_program(program)
            .generator("range")
            .isolation(Isolation::Process)
            .build()
            .unwrap_err();
        assert_error(&error, ErrorKind::WorkerDied, words);
    }
}

#[test]
fn without_a_cache_process_isolation_is_refused_clearly() {
    let _watch =
        crate::util::watchdog("process::without_a_cache_process_isolation_is_refused_clearly");
    let engine = Engine::builder()
        .no_cache()
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .build()
        .unwrap();
    let plugin = engine.load(artifacts::FIXTURE_SPDL).unwrap();
    let error = plugin
        .generator("range")
        .isolation(Isolation::Process)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Load,
        "the compile cache is disabled or not writable",
    );
}

/// The caller dies by SIGKILL: its worker process notices (its stdin
/// closes) and exits; nothing is left behind.
#[test]
fn worker_does_not_outlive_a_killed_caller() {
    let _watch = crate::util::watchdog("process::worker_does_not_outlive_a_killed_caller");
    // In a process group of its own: if this test fails, dropping `cli`
    // kills the worker too.
    crate::util::set_isolation(Isolation::Process);
    let mut cli = crate::cli::spinning_run(&[]);
    let workers = children(cli.pid());
    assert_eq!(workers.len(), 1, "worker processes: {workers:?}");
    let worker = workers[0];
    cli.signal("KILL");
    cli.wait(Duration::from_secs(10), "the killed caller");
    let exited = gone_within(worker, Duration::from_secs(5), false);
    eprintln!("orphaned worker exited {exited:?} after its caller was killed");
    assert!(
        exited.is_some_and(|t| t < crate::util::limit(Duration::from_secs(1))),
        "worker {worker} outlived its caller"
    );
}

/// The children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name: state, then the parent id.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            found.push(child);
        }
    }
    found
}

#[test]
fn process_mode_routes_guest_output_to_the_handler() {
    let _watch = crate::util::watchdog("process::process_mode_routes_guest_output_to_the_handler");
    let captured = crate::util::Captured::default();
    let iterable = spdl_process()
        .generator("announce")
        .args(&2u64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1]);
    drop(iterable);
    assert_eq!(
        captured.lines(),
        [
            "[fixture_spdl/announce stderr] produced 0",
            "[fixture_spdl/announce stderr] produced 1"
        ]
    );
}

/// Arguments too large for a worker process's setup are refused up front,
/// with a hint, instead of failing inside the worker.
#[test]
fn oversized_args_are_refused_before_starting_a_worker() {
    let _watch =
        crate::util::watchdog("process::oversized_args_are_refused_before_starting_a_worker");
    let error = spdl_process()
        .generator("range")
        .args_raw(vec![0; 256 << 20])
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InvalidInput,
        "pass large inputs as files in a granted directory",
    );
}

/// A worker process sent SIGSEGV from outside dies of it, as it would of
/// any other fatal signal (wasmtime's fault handler would otherwise take it
/// for a fault outside wasm and go on), and the caller says so.
#[test]
fn a_worker_process_sent_sigsegv_dies() {
    let _watch = crate::util::watchdog("process::a_worker_process_sent_sigsegv_dies");
    let iterable = spdl_process()
        .generator("spin")
        .args(&1u64)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let pid = iterable.worker_pid().unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    assert!(
        Command::new("kill")
            .args(["-SEGV", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let error = pass.next().unwrap().unwrap_err();
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "it was killed by signal 11 (SIGSEGV)",
    );
    assert!(gone_within(pid, Duration::from_secs(5), true).is_some());
}

/// The embedding path with the default worker program: a program that
/// calls `run_worker_if_requested()` first thing is its own worker process.
#[test]
fn an_embedding_program_is_its_own_worker_process() {
    let _watch = crate::util::watchdog("process::an_embedding_program_is_its_own_worker_process");
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/embed");
    assert!(example.exists(), "{} was not built", example.display());
    let mut outputs = Vec::new();
    for mode in ["thread", "process"] {
        let mut command = Command::new(&example);
        command
            .args([artifacts::EXAMPLE_TOKENIZE, mode])
            .env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
        let output = output_within(&command, Duration::from_secs(180), "the embed example");
        assert!(output.status.success(), "{mode}: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            text.ends_with(&format!("worker process: {}\n", mode == "process")),
            "{text}"
        );
        outputs.push(text.replace("worker process: true", "worker process: false"));
    }
    // The same windows in the same order either way.
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0].contains("epoch 1: "), "{}", outputs[0]);
}

/// The inactivity timeout counts from the moment a worker has its plugin
/// loaded: a worker process that takes a second to start (its program
/// sleeps first) is not timed out by a 300 ms timeout, and its pass runs.
#[test]
fn the_timeout_counts_from_a_loaded_worker() {
    let _watch = crate::util::watchdog("process::the_timeout_counts_from_a_loaded_worker");
    let engine = sandgen::Engine::builder()
        .cache_dir(crate::util::cache_dir())
        .worker_command(
            "/bin/sh",
            [
                "-c",
                r#"sleep 1; exec "$0" "$@""#,
                env!("CARGO_BIN_EXE_sandgen"),
            ],
        )
        .build()
        .unwrap();
    let plugin = engine.load(sandgen_tests::artifacts::FIXTURE_SPDL).unwrap();
    let started = std::time::Instant::now();
    let iterable = plugin
        .generator("range")
        .args(&3u64)
        .isolation(sandgen::Isolation::Process)
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1, 2]);
    // The worker's start did take longer than the timeout.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}
