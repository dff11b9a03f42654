//! A plugin that fails, traps, breaks the contract or hits a limit: the run
//! exits 1 with one `error:` line in the library's words (a Python or
//! JavaScript traceback indented beneath it), after the items before the
//! failure.

use std::time::{Duration, Instant};

use super::{expect, sandgen, stderr};
use crate::util::artifacts::{FIXTURE_HANG_LIST, FIXTURE_RAW, FIXTURE_SPDL};

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
            started.elapsed() < crate::util::limit(Duration::from_secs(20)),
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

both_isolations!(protocol_violation_exits_1);
fn protocol_violation_exits_1() {
    let (_, errors) = expect(&sandgen(&["run", FIXTURE_RAW, "overrun"]), 1);
    assert!(
        errors[0].contains("broke the plugin contract: malformed frame"),
        "{errors:?}"
    );
}

both_isolations!(an_item_over_max_item_mib_exits_1);
/// `--max-item-mib` bounds one encoded item: a larger one ends the run.
fn an_item_over_max_item_mib_exits_1() {
    let run = |size: u32| {
        let args = format!(r#"{{"n": 1, "size": {size}}}"#);
        sandgen(&[
            "run",
            FIXTURE_SPDL,
            "bytes",
            "--args",
            &args,
            "--max-item-mib",
            "1",
        ])
    };
    // JSON: a byte is at least two bytes ("0,"); 400,000 fit in 1 MiB.
    let (out, _) = expect(&run(400_000), 0);
    assert_eq!(out.lines().count(), 1);
    let (out, errors) = expect(&run(600_000), 1);
    assert_eq!(out, "");
    assert!(
        errors[0].ends_with("more than the largest item allowed (1048576 bytes)"),
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

both_isolations!(on_failure_skip_prints_one_line_per_failure_and_exits_0);
/// `--on-failure skip`: the run gives every item but the one that failed,
/// says which on one escaped line, and exits 0; `--on-failure restart`
/// meets the failure every time, spends `--max-restarts` and exits 1 with
/// the error and the count, after a line per restart.
fn on_failure_skip_prints_one_line_per_failure_and_exits_0() {
    let run = |on_failure: &str| {
        sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fail_at",
            "--args",
            r#"{"n": 5, "fail_at": 2, "message": "bad\u001b[2J record"}"#,
            "--on-failure",
            on_failure,
            "--max-restarts",
            "2",
        ])
    };
    let skipped = run("skip");
    let (out, errors) = expect(&skipped, 0);
    assert_eq!(out, "0\n1\n3\n4\n");
    assert!(errors.is_empty(), "{errors:?}");
    let lines: Vec<String> = stderr(&skipped)
        .lines()
        .filter(|l| l.starts_with("sandgen: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "sandgen: worker 0 restarted past item 2 in pass 0 after 2 items (iteration_failed): \
             iteration failed in generator fail_at: bad\\x1b[2J record"
        ]
    );
    let restarted = run("restart");
    let (out, errors) = expect(&restarted, 1);
    assert_eq!(out, "0\n1\n");
    assert_eq!(
        errors,
        [
            "error: the pass failed after 2 restarts (on_failure=restart, max_restarts=2): \
          iteration failed in generator fail_at: bad\\x1b[2J record"
        ]
    );
    let restarts = stderr(&restarted)
        .lines()
        .filter(|l| l.starts_with("sandgen: worker 0 restarted in pass 0 after 2 items"))
        .count();
    assert_eq!(restarts, 2, "{}", stderr(&restarted));
    // A mode that does not exist is a usage error.
    let (_, errors) = expect(&run("retry"), 2);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("unknown on_failure `retry`"),
        "{errors:?}"
    );
}
