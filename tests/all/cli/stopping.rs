//! A run that ends before its generator does: stdout closed (quietly) or
//! failing (exit 2), `--take`, SIGTERM and SIGINT, a killed worker process
//! (exit 1), a SIGKILLed run (no worker process left behind).

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{CLI_DEADLINE, TEARDOWN, expect, mode, run_command, spinning_run};
use crate::util::artifacts::FIXTURE_SPDL;
use crate::util::{Running, Stdout, output_within};

both_isolations!(closing_stdout_early_ends_quietly);
fn closing_stdout_early_ends_quietly() {
    let mut child = Running::spawn(
        &run_command(&[FIXTURE_SPDL, "range", "--args", "100000000"]),
        Stdout::Pipe,
    );
    let mut lines = BufReader::new(child.take_stdout()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "0");
    drop(lines);
    let closed = Instant::now();
    let output = child.wait(CLI_DEADLINE, "sandgen run with its stdout closed");
    let took = closed.elapsed();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "");
    // 10^8 items would take seconds to drain: the run stopped instead.
    assert!(
        took < TEARDOWN,
        "the run ended {took:?} after its stdout closed"
    );
}

both_isolations!(a_stdout_that_fails_is_an_error);
/// Writing items fails for a reason other than a closed pipe (a full
/// disk): exit 2 and say so.
fn a_stdout_that_fails_is_an_error() {
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"exec "$0" "$@" > /dev/full"#])
        .arg(env!("CARGO_BIN_EXE_sandgen"))
        .args([
            "run",
            FIXTURE_SPDL,
            "range",
            "--args",
            "10",
            "--isolation",
            mode(),
        ])
        .env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
    let output = output_within(&command, CLI_DEADLINE, "sandgen run > /dev/full");
    let (_, errors) = expect(&output, 2);
    assert_eq!(
        errors,
        ["error: failed to write items to stdout: No space left on device (os error 28)"]
    );
}

both_isolations!(take_stops_a_huge_pass);
/// `--take` stops the pass (not drained): a huge generator ends at once.
/// The worker spins after its first item, so only a stopped (interrupted)
/// pass ends: within milliseconds of the initializer, not after the 1 s
/// fallback that kills a worker at teardown.
fn take_stops_a_huge_pass() {
    let mut child = spinning_run(&["--take", "1"]);
    let started = Instant::now();
    let output = child.wait(CLI_DEADLINE, "sandgen run --take 1");
    let took = started.elapsed();
    let (out, _) = expect(&output, 0);
    assert_eq!(out, "0\n");
    assert!(
        took < TEARDOWN,
        "--take 1 ended {took:?} after initialization"
    );
}

both_isolations!(sigterm_and_sigint_end_a_busy_run_promptly);
fn sigterm_and_sigint_end_a_busy_run_promptly() {
    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let mut child = spinning_run(&[]);
        let workers = crate::process::children(child.pid());
        assert_eq!(
            workers.len(),
            usize::from(crate::util::isolation() == sandgen::Isolation::Process),
            "worker processes: {workers:?}"
        );
        child.signal(signal);
        let output = child.wait(
            Duration::from_secs(10),
            &format!("sandgen run after SIG{signal}"),
        );
        assert_eq!(
            output.status.signal(),
            Some(number),
            "SIG{signal}: {:?}",
            output.status
        );
        for worker in workers {
            assert!(
                crate::process::gone_within(worker, Duration::from_secs(10), false).is_some(),
                "worker process {worker} outlived its caller's SIG{signal}"
            );
        }
    }
}

/// A worker process killed from outside: the run exits 1 and names the
/// signal.
#[test]
fn a_killed_worker_process_exits_1() {
    let _watch = crate::util::watchdog("cli::stopping::a_killed_worker_process_exits_1");
    crate::util::set_isolation(sandgen::Isolation::Process);
    let mut child = spinning_run(&[]);
    let workers = crate::process::children(child.pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait(CLI_DEADLINE, "sandgen run whose worker was killed");
    let (_, errors) = expect(&output, 1);
    assert_eq!(
        errors,
        ["error: the worker process of generator spin died: it was killed by signal 9 (SIGKILL)"]
    );
}

#[test]
fn a_sigkilled_caller_leaves_no_worker_process_behind() {
    let _watch =
        crate::util::watchdog("cli::stopping::a_sigkilled_caller_leaves_no_worker_process_behind");
    crate::util::set_isolation(sandgen::Isolation::Process);
    let mut child = spinning_run(&["--workers", "3"]);
    crate::util::wait_until(Duration::from_secs(30), "3 worker processes", || {
        crate::process::children(child.pid()).len() == 3
    });
    let workers = crate::process::children(child.pid());
    assert_eq!(workers.len(), 3, "worker processes: {workers:?}");
    child.signal("KILL");
    let output = child.wait(Duration::from_secs(10), "sandgen run after SIGKILL");
    assert_eq!(output.status.signal(), Some(9));
    for worker in workers {
        assert!(
            crate::process::gone_within(worker, Duration::from_secs(10), false).is_some(),
            "worker process {worker} outlived its SIGKILLed caller"
        );
    }
}
