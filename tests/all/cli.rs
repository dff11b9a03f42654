//! The `sandgen` command, tested as a process: output, exit statuses and the
//! one-line errors that README.md ("The CLI") promises.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{Running, Stdout, output_within};

use crate::util::artifacts::{
    EXAMPLE_JSONL, EXAMPLE_TOKENIZE, FIXTURE_HANG_LIST, FIXTURE_RAW, FIXTURE_SPDL,
    FIXTURE_WRONG_WORLD,
};

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

/// Runs `sandgen`; `run` and `bench` get the test's `--isolation`.
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

both_isolations!(list_prints_name_tab_description);
fn list_prints_name_tab_description() {
    let (out, errors) = expect(&sandgen(&["list", FIXTURE_RAW]), 0);
    assert!(errors.is_empty());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "count\tyields the JSON numbers 0..n from the argument n"
    );
    assert_eq!(lines.len(), 8);
    // A tab in a description does not break the format.
    assert_eq!(
        lines[6],
        "pretty\tyields a pretty-printed JSON object, spread over lines"
    );
}

both_isolations!(run_prints_one_json_item_per_line);
fn run_prints_one_json_item_per_line() {
    let (out, _) = expect(&sandgen(&["run", FIXTURE_SPDL, "range", "--args", "5"]), 0);
    assert_eq!(out, "0\n1\n2\n3\n4\n");
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "bytes",
            "--args",
            r#"{"n": 2, "size": 2}"#,
        ]),
        0,
    );
    assert_eq!(out, "[0,0]\n[1,1]\n");
}

both_isolations!(run_plugin_without_sdk);
fn run_plugin_without_sdk() {
    let (out, _) = expect(&sandgen(&["run", FIXTURE_RAW, "count", "--args", "3"]), 0);
    assert_eq!(out, "0\n1\n2\n");
}

both_isolations!(run_passes_take_and_buffer_size);
fn run_passes_take_and_buffer_size() {
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "shuffle",
            "--args",
            "3",
            "--passes",
            "3",
        ]),
        0,
    );
    assert_eq!(out, "1\n2\n0\n2\n0\n1\n0\n1\n2\n");
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "range",
            "--args",
            "1000000",
            "--take",
            "3",
        ]),
        0,
    );
    assert_eq!(out, "0\n1\n2\n");
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "range",
            "--args",
            "4",
            "--passes",
            "2",
            "--take",
            "6",
            "--buffer-size",
            "1",
        ]),
        0,
    );
    assert_eq!(out, "0\n1\n2\n3\n0\n1\n");
}

both_isolations!(run_with_config);
fn run_with_config() {
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "config_echo",
            "--config",
            r#"{"announce": "hi"}"#,
        ]),
        0,
    );
    assert_eq!(out, "[1,\"hi\"]\n");
}

both_isolations!(plugin_failures_exit_1_with_one_error_line);
fn plugin_failures_exit_1_with_one_error_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "fail_at",
                "--args",
                r#"{"n": 5, "fail_at": 2, "message": "bad record 2"}"#,
            ],
            "error: iteration failed in generator fail_at: bad record 2",
        ),
        (
            &["range", "--config", r#"{"fail": "no setup"}"#],
            "error: initializer failed in plugin fixture_spdl: no setup",
        ),
        (
            &["create_fails", "--args", r#""nope""#],
            "error: create failed in generator create_fails: nope",
        ),
    ];
    for (args, line) in cases {
        let mut all = vec!["run", FIXTURE_SPDL];
        all.extend_from_slice(args);
        let (_, errors) = expect(&sandgen(&all), 1);
        assert_eq!(errors, [line.to_string()]);
    }
    // Items before the failure were printed.
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fail_at",
            "--args",
            r#"{"n": 5, "fail_at": 2, "message": "x"}"#,
        ]),
        1,
    );
    assert_eq!(out, "0\n1\n");
}

both_isolations!(trap_exits_1_with_the_panic_message);
fn trap_exits_1_with_the_panic_message() {
    let output = sandgen(&[
        "run",
        FIXTURE_SPDL,
        "panic_at",
        "--args",
        r#"{"at": 0, "message": "kaboom"}"#,
    ]);
    let (out, errors) = expect(&output, 1);
    assert_eq!(out, "");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("error: generator panic_at trapped while iterating: "),
        "{errors:?}"
    );
    assert!(errors[0].ends_with(": kaboom)"), "{errors:?}");
    // The guest's own stderr went to stderr, prefixed; never to stdout.
    assert!(stderr(&output).contains("[fixture_spdl/panic_at stderr] kaboom"));
}

both_isolations!(timeout_and_memory_limit_exit_1_with_their_words);
fn timeout_and_memory_limit_exit_1_with_their_words() {
    let (_, errors) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "sleep",
            "--args",
            r#"{"ms": 10000, "n": 1}"#,
            "--timeout",
            "0.2",
        ]),
        1,
    );
    assert!(errors[0].contains("timed out"), "{errors:?}");
    let (_, errors) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "allocate",
            "--args",
            "64",
            "--memory-limit",
            "16",
        ]),
        1,
    );
    assert!(errors[0].contains("memory limit of 16 MiB"), "{errors:?}");
}

both_isolations!(items_are_one_line_of_valid_json);
/// Items go to stdout one per line, valid JSON, whatever the plugin wrote.
fn items_are_one_line_of_valid_json() {
    let (out, _) = expect(&sandgen(&["run", FIXTURE_RAW, "pretty"]), 0);
    assert_eq!(out, "{\"a\":[1,2]}\n");
    let (out, errors) = expect(&sandgen(&["run", FIXTURE_RAW, "not_json"]), 1);
    assert_eq!(out, "");
    assert!(
        errors[0].starts_with(
            "error: generator not_json broke the plugin contract: an item is not valid JSON"
        ),
        "{errors:?}"
    );
}

both_isolations!(protocol_violation_exits_1);
fn protocol_violation_exits_1() {
    let (_, errors) = expect(&sandgen(&["run", FIXTURE_RAW, "overrun"]), 1);
    assert!(
        errors[0].contains("broke the plugin contract: malformed frame"),
        "{errors:?}"
    );
}

both_isolations!(listing_a_hanging_plugin_times_out);
fn listing_a_hanging_plugin_times_out() {
    let (_, errors) = expect(
        &sandgen(&["list", FIXTURE_HANG_LIST, "--timeout", "0.2"]),
        1,
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("timed out listing its generators"),
        "{errors:?}"
    );
}

both_isolations!(load_and_usage_errors_exit_2);
fn load_and_usage_errors_exit_2() {
    let (_, errors) = expect(&sandgen(&["run", "/no/such.wasm", "range"]), 2);
    assert!(
        errors[0].starts_with("error: failed to read plugin `/no/such.wasm`: "),
        "{errors:?}"
    );
    let (_, errors) = expect(&sandgen(&["run", FIXTURE_WRONG_WORLD, "range"]), 2);
    assert!(errors[0].contains("is not a sandgen plugin"), "{errors:?}");
    let (_, errors) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "range", "--args", "{not json"]),
        2,
    );
    assert!(
        errors[0].starts_with("error: invalid --args: not JSON: {not json"),
        "{errors:?}"
    );
    let (_, errors) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "range", "--env", "NOEQUALS"]),
        2,
    );
    assert!(errors[0].contains("invalid --env `NOEQUALS`"), "{errors:?}");
    let (_, errors) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "range", "--buffer-size", "0"]),
        2,
    );
    assert!(
        errors[0].contains("buffer size must be at least 1"),
        "{errors:?}"
    );
    // clap's own usage errors: one line too.
    for args in [
        &["run", FIXTURE_SPDL][..],
        &["frobnicate"],
        &["run", FIXTURE_SPDL, "range", "--passes", "many"],
    ] {
        let output = sandgen(args);
        expect(&output, 2);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    // --help is not an error.
    let (out, errors) = expect(&sandgen(&["--help"]), 0);
    assert!(out.contains("Usage: sandgen"), "{out}");
    assert!(errors.is_empty());
}

both_isolations!(env_and_dir_grants);
fn env_and_dir_grants() {
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "environment",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
        ]),
        0,
    );
    assert_eq!(
        out,
        "\"env A=1\"\n\"env B=x=y\"\n\"env SANDGEN_WORKER_ID=0\"\n\"env SANDGEN_NUM_WORKERS=1\"\n"
    );
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let grant = format!("{}::/data", data.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            EXAMPLE_JSONL,
            "rows",
            "--dir",
            &grant,
            "--args",
            r#"{"path": "/data/reviews.jsonl", "fields": ["id"], "where_field": "stars", "where_value": 5}"#,
        ]),
        0,
    );
    assert_eq!(out, "{\"id\":1}\n{\"id\":5}\n");
}

both_isolations!(bench_prints_one_json_object);
fn bench_prints_one_json_object() {
    let output = sandgen(&[
        "bench",
        FIXTURE_SPDL,
        "bytes",
        "--args",
        r#"{"n": 100, "size": 1000}"#,
    ]);
    let (out, _) = expect(&output, 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out.lines().count(), 1);
    assert_eq!(report["items"], 100);
    // Each bincode item is a 3-byte length (251, then a u16) and 1000 bytes.
    assert_eq!(report["bytes"], 100 * 1003);
    for key in [
        "seconds",
        "items_per_second",
        "megabytes_per_second",
        "first_item_ms",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {report}"
        );
    }
    // bench sends --args as bincode: the tokenize example decodes a struct.
    let (out, _) = expect(
        &sandgen(&[
            "bench",
            EXAMPLE_TOKENIZE,
            "windows",
            "--args",
            r#"{"text": "a b c d e f", "window": 2}"#,
        ]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 4);
}

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

both_isolations!(faults_exit_1_with_their_words);
/// The fault suite through the CLI: each fault exits 1 with its own words.
fn faults_exit_1_with_their_words() {
    let cases: &[(&[&str], &str)] = &[
        (&["recurse"], "exhausted its stack"),
        (
            &["spin", "--args", "0", "--fuel", "5000000"],
            "ran out of fuel",
        ),
        (&["spin", "--args", "0", "--timeout", "0.2"], "timed out"),
        (
            &["range", "--config", r#"{"spin": true}"#, "--timeout", "0.2"],
            "timed out during initialization",
        ),
        (
            &[
                "sleep",
                "--args",
                r#"{"ms": 60000, "n": 1}"#,
                "--timeout",
                "0.1",
            ],
            "timed out",
        ),
        (&["allocate", "--args", "1500"], "memory limit of 1024 MiB"),
        (
            &["panic_at", "--args", r#"{"at": 3, "message": "mid-pass"}"#],
            ": mid-pass)",
        ),
    ];
    for (args, words) in cases {
        let mut all = vec!["run", FIXTURE_SPDL];
        all.extend_from_slice(args);
        let started = Instant::now();
        let (_, errors) = expect(&sandgen(&all), 1);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(errors.len(), 1, "{args:?}: {errors:?}");
        assert!(errors[0].contains(words), "{args:?}: {errors:?}");
    }
    let (_, errors) = expect(&sandgen(&["run", FIXTURE_RAW, "after_end"]), 1);
    assert!(
        errors[0].contains("returned items after an empty buffer had ended the pass"),
        "{errors:?}"
    );
}

both_isolations!(huge_item_through_the_cli);
fn huge_item_through_the_cli() {
    let size = 64 << 20;
    let args = format!(r#"{{"n": 1, "size": {size}}}"#);
    let (out, _) = expect(
        &sandgen(&["bench", FIXTURE_SPDL, "bytes", "--args", &args]),
        0,
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["items"], 1);
    // bincode: a 5-byte length, then the bytes.
    assert_eq!(report["bytes"], size + 5);
}

both_isolations!(capabilities_through_the_cli);
fn capabilities_through_the_cli() {
    let dir = crate::util::temp_dir("sandgen-cli-ro");
    std::fs::write(dir.join("a.txt"), "hello").unwrap();
    let grant = format!("{}::/data", dir.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--dir",
            &grant,
            "--args",
            r#"{"read": "/data/a.txt", "write": "/data/a.txt"}"#,
        ]),
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "\"read /data/a.txt: ok hello\"");
    assert!(
        lines[1].starts_with("\"write /data/a.txt: error "),
        "{lines:?}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "hello");
    // The same path as host and guest when no ::GUEST is given.
    let read = format!(r#"{{"read": "{}/a.txt"}}"#, dir.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--dir",
            &dir.display().to_string(),
            "--args",
            &read,
        ]),
        0,
    );
    assert!(out.contains("ok hello"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Nothing outside a granted directory.
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--args",
            r#"{"read": "/etc/passwd", "list": "/"}"#,
        ]),
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("\"read /etc/passwd: error "),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("\"list /: error "), "{lines:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("\"{}\"", listener.local_addr().unwrap());
    let (out, _) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "net_probe", "--args", &address]),
        0,
    );
    assert!(out.starts_with("\"connect: error "), "{out}");
    // The host's environment never leaks; granted variables do.
    let mut command = run_command(&[FIXTURE_SPDL, "environment", "--env", "ONLY=this"]);
    command.env("SECRET_TOKEN", "do-not-leak");
    let output = output_within(&command, CLI_DEADLINE, "sandgen run environment");
    let (out, _) = expect(&output, 0);
    assert_eq!(
        out,
        "\"env ONLY=this\"\n\"env SANDGEN_WORKER_ID=0\"\n\"env SANDGEN_NUM_WORKERS=1\"\n"
    );
}

both_isolations!(python_and_js_examples_run_and_bench);
fn python_and_js_examples_run_and_bench() {
    use crate::util::artifacts::{EXAMPLE_JS, EXAMPLE_PYTHON};
    for example in [EXAMPLE_PYTHON, EXAMPLE_JS] {
        let (out, errors) = expect(
            &sandgen(&[
                "run",
                example,
                "windows",
                "--args",
                r#"{"text": "the quick brown fox jumps over the lazy dog", "window": 4}"#,
            ]),
            0,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            out,
            "[\"the\",\"quick\",\"brown\",\"fox\"]\n[\"jumps\",\"over\",\"the\",\"lazy\"]\n[\"dog\"]\n",
            "{example}"
        );
        // bench sends --args as bincode, which the helpers read by the
        // generator's parameter types (Python) or args schema (JS).
        let (out, _) = expect(
            &sandgen(&["bench", example, "count", "--args", "2500", "--passes", "2"]),
            0,
        );
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["items"], 5000, "{example}");
        let (out, _) = expect(
            &sandgen(&[
                "bench",
                example,
                "blobs",
                "--args",
                r#"{"n": 10, "size": 1000}"#,
            ]),
            0,
        );
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["items"], 10, "{example}");
        assert_eq!(report["bytes"], 10 * 1003, "{example}");
    }
}

both_isolations!(plugin_traceback_is_printed_beneath_the_error_line);
fn plugin_traceback_is_printed_beneath_the_error_line() {
    use crate::util::artifacts::{FIXTURE_JS, FIXTURE_PYTHON};
    for (fixture, summary, frame) in [
        (
            FIXTURE_PYTHON,
            "ValueError: boom",
            "  Traceback (most recent call last):",
        ),
        (
            FIXTURE_JS,
            "RangeError: boom",
            "  failAfter@tests/fixtures/js/app.js:",
        ),
    ] {
        let output = sandgen(&[
            "run",
            fixture,
            "fail_after",
            "--args",
            r#"{"n": 2, "message": "boom"}"#,
        ]);
        let (out, errors) = expect(&output, 1);
        assert_eq!(out, "0\n1\n");
        assert_eq!(
            errors,
            [format!(
                "error: iteration failed in generator fail_after: {summary}"
            )]
        );
        let text = stderr(&output);
        let after: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("error: "))
            .skip(1)
            .collect();
        assert!(after.iter().all(|l| l.starts_with("  ")), "{text}");
        assert!(after.iter().any(|l| l.starts_with(frame)), "{text}");
    }
}

both_isolations!(python_and_js_limits_through_the_cli);
fn python_and_js_limits_through_the_cli() {
    use crate::util::artifacts::{FIXTURE_JS, FIXTURE_PYTHON};
    for fixture in [FIXTURE_PYTHON, FIXTURE_JS] {
        let (out, errors) = expect(&sandgen(&["run", fixture, "spin", "--timeout", "0.3"]), 1);
        assert_eq!(out, "");
        assert_eq!(
            errors,
            ["error: generator spin timed out during iteration: no data from its worker for 300ms"]
        );
        let (_, errors) = expect(
            &sandgen(&["run", fixture, "hog", "--memory-limit", "64"]),
            1,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "error: iteration failed in generator hog after hitting its memory limit of 64 MiB"
            ),
            "{errors:?}"
        );
    }
}

both_isolations!(bad_options_exit_2_naming_the_option);
/// Each bad option: exit 2, one line that names the option, and a value the
/// user typed echoed short (its start and length when long).
fn bad_options_exit_2_naming_the_option() {
    let long_args = format!("[{}", "1,".repeat(100));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--timeout", "abc"],
            "error: invalid --timeout abc: give a positive number of seconds",
        ),
        (
            &["--timeout", "-1"],
            "error: invalid --timeout -1: give a positive number of seconds",
        ),
        (
            &["--timeout", "0"],
            "error: invalid --timeout 0: give a positive number of seconds",
        ),
        (
            &["--timeout", "1e300"],
            "error: invalid --timeout 1e300: give a positive number of seconds",
        ),
        (
            &["--memory-limit", "0"],
            "error: invalid --memory-limit 0: give a positive number of MiB",
        ),
        (
            &["--dir", ""],
            "error: invalid --dir ``: expected HOST or HOST::GUEST",
        ),
        (
            &["--dir", "::/x"],
            "error: invalid --dir `::/x`: expected HOST or HOST::GUEST",
        ),
        (
            &["--dir", "/no/such/dir"],
            "error: cannot grant directory `/no/such/dir`: it is not a directory on the host",
        ),
        (
            &["--config", "{bad"],
            "error: invalid --config: not JSON: {bad: key must be a string at line 1 column 2",
        ),
        (
            &["--args", &long_args],
            "error: invalid --args: not JSON: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1... (201 bytes): EOF while parsing a value at line 1 column 201",
        ),
    ];
    for (options, line) in cases {
        let mut args = vec!["run", FIXTURE_SPDL, "range"];
        args.extend_from_slice(options);
        let output = sandgen(&args);
        let (out, errors) = expect(&output, 2);
        assert_eq!(out, "");
        assert_eq!(errors, [*line], "{options:?}");
        assert_eq!(stderr(&output).lines().count(), 1, "{options:?}");
    }
    let (_, errors) = expect(&sandgen(&["list", FIXTURE_SPDL, "--timeout", "-2"]), 2);
    assert_eq!(
        errors,
        ["error: invalid --timeout -2: give a positive number of seconds"]
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

/// A worker process killed from outside: the run exits 1 and names the
/// signal.
#[test]
fn a_killed_worker_process_exits_1() {
    let _watch = crate::util::watchdog("cli::a_killed_worker_process_exits_1");
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

both_isolations!(the_readme_main_job_command_runs);
/// The README's first command, as written there (with the plugin built by
/// the tests): the windows of the sentence it gives.
fn the_readme_main_job_command_runs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let command = "cargo run -p sandgen -- run target/wasm32-wasip2/release/example_tokenize.wasm windows --args '";
    let start = readme.find(command).expect("the README's main-job command") + command.len();
    let args = &readme[start..start + readme[start..].find('\'').unwrap()];
    let value: serde_json::Value = serde_json::from_str(args).unwrap();
    let (out, errors) = expect(
        &sandgen(&["run", EXAMPLE_TOKENIZE, "windows", "--args", args]),
        0,
    );
    assert!(errors.is_empty());
    let words = value["text"].as_str().unwrap().split_whitespace().count();
    let window = value["window"].as_u64().unwrap() as usize;
    let windows: Vec<Vec<u32>> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Every word, then the end-of-document token, padded to whole windows.
    assert_eq!(windows.len(), (words + 1).div_ceil(window), "{out}");
    assert!(windows.iter().all(|w| w.len() == window), "{out}");
}

both_isolations!(stdout_carries_items_only_while_the_guest_floods_its_stdout);
/// The guest writes 1,000 lines to its own stdout: sandgen's stdout still
/// holds the items and nothing else; the guest's lines go to stderr, each
/// prefixed as the guest's stdout.
fn stdout_carries_items_only_while_the_guest_floods_its_stdout() {
    let args = serde_json::json!({
        "stream": "stdout", "bytes": b"flood\n", "times": 1000, "items": 3
    })
    .to_string();
    let output = sandgen(&[
        "run",
        crate::util::artifacts::FIXTURE_PROBE,
        "write",
        "--args",
        &args,
    ]);
    let (out, errors) = expect(&output, 0);
    assert_eq!(out, "0\n1\n2\n");
    assert!(errors.is_empty());
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1000, "{err}");
    assert!(
        err.lines()
            .all(|line| line == "[fixture_probe/write stdout] flood"),
        "{err}"
    );
}

both_isolations!(repeated_dirs_are_all_granted);
/// `--dir` repeats: each grant is visible at its own guest path, read-only.
fn repeated_dirs_are_all_granted() {
    let root = crate::util::temp_dir("cli-dirs");
    for name in ["a", "b"] {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("file"), name).unwrap();
    }
    let a = format!("{}::/a", root.join("a").display());
    let b = format!("{}::/b", root.join("b").display());
    let (out, errors) = expect(
        &sandgen(&[
            "run",
            crate::util::artifacts::FIXTURE_PROBE,
            "fs",
            "--dir",
            &a,
            "--dir",
            &b,
            "--args",
            r#"["read /a/file", "read /b/file", "write /b/file"]"#,
        ]),
        0,
    );
    assert!(errors.is_empty());
    assert_eq!(
        out,
        "\"read /a/file: ok a\"\n\"read /b/file: ok b\"\n\"write /b/file: error PermissionDenied\"\n"
    );
}

both_isolations!(plugin_text_is_shown_escaped);
/// Whatever the CLI prints that came from a plugin shows control
/// characters, bidi controls and invalid UTF-8 escaped: guest output lines,
/// the plugin's error message, generator names and descriptions.
fn plugin_text_is_shown_escaped() {
    use crate::util::artifacts::FIXTURE_PROBE;
    let bytes: &[u8] = b"\x1b]0;title\x07 \x00 \xe2\x80\xae \xc2\x9b \xff\n";
    let args = serde_json::json!({ "stream": "stderr", "bytes": bytes, "times": 1 }).to_string();
    let output = sandgen(&["run", FIXTURE_PROBE, "write", "--args", &args]);
    expect(&output, 0);
    assert_eq!(
        stderr(&output),
        "[fixture_probe/write stderr] \\x1b]0;title\\x07 \\x00 \\u{202e} \\u{9b} \\xff\n"
    );

    let message = serde_json::json!("bad\x1b[31m red\u{202e}\nerror: forged").to_string();
    let output = sandgen(&["run", FIXTURE_PROBE, "fail", "--args", &message]);
    expect(&output, 1);
    assert_eq!(
        stderr(&output),
        "error: iteration failed in generator fail: bad\\x1b[31m red\\u{202e}\n  error: forged\n"
    );

    let (out, _) = expect(&sandgen(&["list", FIXTURE_PROBE]), 0);
    let hostile = out.lines().find(|line| line.starts_with("evil")).unwrap();
    assert_eq!(
        hostile,
        "evil\\x1b[2J\\u{202e}\tclears\\x07the\\x0ascreen\\x1b]0;title\\x07"
    );
}

both_isolations!(loading_is_bounded_by_load_timeout_and_load_memory);
/// Compiling a plugin that is not in the cache has a deadline and a memory
/// bound: past either, exit 2 with the option to raise named; within them,
/// `list`, `run` and `bench` all take the options.
fn loading_is_bounded_by_load_timeout_and_load_memory() {
    let cache = crate::util::temp_dir("load-limits");
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let with_cache = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
        command.args(args).env("SANDGEN_CACHE_DIR", &cache);
        output_within(&command, CLI_DEADLINE, "sandgen with load limits")
    };
    let plugin = crate::util::artifacts::FIXTURE_KINDS;
    let (_, errors) = expect(&with_cache(&["list", plugin, "--load-timeout", "0.001"]), 2);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with(
            "took longer than its load timeout of 1ms; raise it with `--load-timeout SECONDS` (`EngineBuilder::load_timeout`)"
        ),
        "{errors:?}"
    );
    let (_, errors) = expect(&with_cache(&["list", plugin, "--load-memory", "16"]), 2);
    assert!(
        errors[0].ends_with(
            "needed more than its load memory of 16 MiB; raise it with `--load-memory MIB` (`EngineBuilder::load_memory`)"
        ),
        "{errors:?}"
    );
    for (option, value, line) in [
        (
            "--load-timeout",
            "0",
            "error: invalid --load-timeout 0: give a positive number of seconds",
        ),
        (
            "--load-memory",
            "0",
            "error: invalid --load-memory 0: give a positive number of MiB",
        ),
    ] {
        let (_, errors) = expect(&with_cache(&["list", plugin, option, value]), 2);
        assert_eq!(errors, [line]);
    }
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing was cached"
    );
    let limits = ["--load-timeout", "60", "--load-memory", "2048"];
    let (out, _) = expect(&with_cache(&[&["list", plugin][..], &limits].concat()), 0);
    assert!(out.starts_with("kinds\t"), "{out}");
    let (out, _) = expect(
        &with_cache(
            &[
                &["run", plugin, "kinds", "--isolation", mode()][..],
                &limits,
            ]
            .concat(),
        ),
        0,
    );
    assert_eq!(out.lines().count(), 10, "{out}");
    let (out, _) = expect(
        &with_cache(
            &[
                &["bench", plugin, "kinds", "--isolation", mode()][..],
                &limits,
            ]
            .concat(),
        ),
        0,
    );
    assert!(out.contains("\"items\":10"), "{out}");
}

both_isolations!(workers_unordered_and_seed_through_the_cli);
fn workers_unordered_and_seed_through_the_cli() {
    // In order: round-robin by worker; the shards of 0..10 give 0..10.
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "sharded",
            "--args",
            "10",
            "--workers",
            "3",
        ]),
        0,
    );
    assert_eq!(out, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "sharded",
            "--args",
            "1000",
            "--workers",
            "2",
            "--unordered",
        ]),
        0,
    );
    let mut seen: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // A seed gives the same items every time (and the same as the library).
    let seeded = || {
        expect(
            &sandgen(&[
                "run",
                FIXTURE_SPDL,
                "random",
                "--args",
                "4",
                "--workers",
                "2",
                "--seed",
                "7",
            ]),
            0,
        )
        .0
    };
    let first = seeded();
    assert_eq!(first, seeded());
    assert_eq!(first.lines().count(), 8);
    assert!(
        first.starts_with("16445603648473584932\n2058941319982262280\n"),
        "{first}"
    );
    // Bench runs several workers too.
    let (out, _) = expect(
        &sandgen(&[
            "bench",
            FIXTURE_SPDL,
            "range",
            "--args",
            "1000",
            "--workers",
            "2",
        ]),
        0,
    );
    assert!(out.contains("\"items\":2000"), "{out}");
}

#[test]
fn bad_worker_options_exit_2() {
    for (args, words) in [
        (&["--workers", "0"][..], "between 1 and 256, not 0"),
        (
            &["--seed", "18446744073709551616"],
            "invalid --seed `18446744073709551616`",
        ),
        (&["--seed", "-1"], "invalid --seed"),
        (&["--workers", "x"], "invalid value 'x' for '--workers <N>'"),
    ] {
        let mut all = vec!["run", FIXTURE_SPDL, "range", "--args", "3"];
        all.extend_from_slice(args);
        let output = sandgen(&all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(words),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // --unordered with one worker is fine and says nothing.
    let output = sandgen(&["run", FIXTURE_SPDL, "range", "--args", "3", "--unordered"]);
    let (out, errors) = expect(&output, 0);
    assert_eq!(out, "0\n1\n2\n");
    assert!(
        errors.is_empty() && stderr(&output).is_empty(),
        "{}",
        stderr(&output)
    );
}

/// A pseudo-terminal: its master, and the path of its other end.
fn open_terminal() -> (std::fs::File, String) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain libc calls on a descriptor this function owns; the name
    // buffer outlives the call that fills it.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(master, libc::TIOCSWINSZ, &size), 0);
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .unwrap()
            .to_owned();
        (std::fs::File::from_raw_fd(master), path)
    }
}

both_isolations!(a_progress_line_shows_on_a_terminal_and_never_otherwise);
fn a_progress_line_shows_on_a_terminal_and_never_otherwise() {
    use std::io::Read as _;
    let args = [
        "run",
        "--isolation",
        mode(),
        FIXTURE_SPDL,
        "sleep",
        "--args",
        r#"{"ms": 40, "n": 25}"#,
        "--workers",
        "2",
    ];
    // stderr on a terminal: `sh` sends it to the terminal's other end.
    let (mut master, terminal) = open_terminal();
    let (text_tx, text) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Ends with EIO once the child, the last holder of the other end,
        // has exited.
        let _ = master.read_to_end(&mut bytes);
        let _ = text_tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            r#"exec "$0" "$@" 2>"$TERMINAL""#,
            env!("CARGO_BIN_EXE_sandgen"),
        ])
        .args(args)
        .env("TERMINAL", &terminal)
        .env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
    let output = output_within(&command, CLI_DEADLINE, "sandgen run on a terminal");
    let (out, _) = expect(&output, 0);
    assert_eq!(out.lines().count(), 50);
    let shown = text
        .recv_timeout(Duration::from_secs(30))
        .expect("the terminal closes when sandgen exits");
    assert!(shown.contains(" items, "), "{shown:?}");
    assert!(shown.contains(" items/s, "), "{shown:?}");
    assert!(shown.contains("[w0 "), "{shown:?}");
    // The same run with stderr not a terminal: no progress at all.
    let output = sandgen(
        &args[..1]
            .iter()
            .chain(&args[3..])
            .copied()
            .collect::<Vec<_>>(),
    );
    let (out, _) = expect(&output, 0);
    assert_eq!(out.lines().count(), 50);
    assert_eq!(stderr(&output), "");
}

#[test]
fn a_sigkilled_caller_leaves_no_worker_process_behind() {
    let _watch = crate::util::watchdog("cli::a_sigkilled_caller_leaves_no_worker_process_behind");
    crate::util::set_isolation(sandgen::Isolation::Process);
    let mut child = spinning_run(&["--workers", "3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let workers = crate::process::children(child.pid());
        if workers.len() == 3 || Instant::now() > deadline {
            break workers;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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
