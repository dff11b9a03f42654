//! The `sandgen` command, tested as a process: output, exit statuses and the
//! one-line errors that README.md ("The CLI") promises. The helpers that run
//! it are here; the tests are in a module per behaviour:
//!
//! - `run`: what `list` and `run` print (items one JSON value a line, guest
//!   output on stderr, plugin text escaped), the examples and the README's
//!   command;
//! - `bench`: `bench`'s one-line JSON report;
//! - `errors`: a failing plugin (error, trap, fault, limit, broken contract)
//!   exits 1 with one `error:` line, a traceback beneath it;
//! - `options`: usage errors, bad options and load failures exit 2, naming
//!   the option; the load limits;
//! - `grants`: `--env` and `--dir`, and what a guest cannot reach;
//! - `stopping`: a run that ends early (stdout closed or failing, `--take`,
//!   SIGTERM, SIGINT, SIGKILL, a killed worker process);
//! - `workers`: `--workers`, `--unordered` and `--seed`;
//! - `progress`: the progress line on a terminal;
//! - `resume`: `--save-state` and `--resume`.

mod bench;
mod errors;
mod grants;
mod options;
mod progress;
mod resume;
mod run;
mod stopping;
mod workers;

use std::process::{Command, Output};
use std::time::Duration;

use crate::util::artifacts::FIXTURE_SPDL;
use crate::util::{Running, Stdout, output_within};

/// The `sandgen` binary, with the tests' compile cache.
fn sandgen_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
    command.env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
    command
}

/// `--isolation` as the running test asks.
fn mode() -> &'static str {
    match crate::util::isolation() {
        sandgen::Isolation::Process => "process",
        _ => "thread",
    }
}

/// `sandgen run` with the test's `--isolation` and `args`, not started yet.
fn run_command(args: &[&str]) -> Command {
    let mut command = sandgen_command();
    command.args(["run", "--isolation", mode()]).args(args);
    command
}

/// How long one `sandgen` run of a test may take before the test fails: a
/// guard against hangs (a cold compile of a Python plugin on a loaded
/// machine takes tens of seconds), not a measure of speed.
const CLI_DEADLINE: Duration = Duration::from_secs(180);

/// Below the 1 s after which teardown kills a worker that did not stop by
/// itself, and far above the milliseconds teardown takes: a run that ends
/// within it was stopped, not drained and not killed.
const TEARDOWN: Duration = Duration::from_millis(800);

/// `sandgen run` (the test's `--isolation`, then `extra`) of a generator that
/// spins after its first item, returned once its initializer has run (it
/// announces itself on stderr): its pass starts right after.
pub fn spinning_run(extra: &[&str]) -> Running {
    let mut args = vec![
        FIXTURE_SPDL,
        "spin",
        "--args",
        "1",
        "--config",
        r#"{"announce": "initialized"}"#,
    ];
    args.extend_from_slice(extra);
    let child = Running::spawn(&run_command(&args), Stdout::Collect);
    child.stderr_line("initialized", CLI_DEADLINE);
    child
}

/// Runs `sandgen`; `run` and `bench` get the test's `--isolation`.
fn sandgen(args: &[&str]) -> Output {
    let mut args = args.to_vec();
    if matches!(args.first(), Some(&"run" | &"bench")) {
        args.extend(["--isolation", mode()]);
    }
    let mut command = sandgen_command();
    command.args(&args);
    output_within(
        &command,
        CLI_DEADLINE,
        &format!("sandgen {}", args.join(" ")),
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts the exit status and returns (stdout, the `error:` lines of stderr).
#[track_caller]
fn expect(output: &Output, code: i32) -> (String, Vec<String>) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    let errors = stderr(output)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_owned)
        .collect();
    (stdout(output), errors)
}
