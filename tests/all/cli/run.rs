//! What `sandgen list` and `sandgen run` print: a generator per line, items
//! one JSON value a line and nothing else on stdout, the guest's output on
//! stderr, and whatever came from a plugin escaped; the examples and the
//! README's first command.

use super::{expect, run_command, sandgen, stderr};
use crate::util::artifacts::{EXAMPLE_TOKENIZE, FIXTURE_RAW, FIXTURE_SPDL};

both_isolations!(list_prints_name_tab_description);
fn list_prints_name_tab_description() {
    let (out, errors) = expect(&sandgen(&["list", FIXTURE_RAW]), 0);
    assert!(errors.is_empty());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "count\tyields the JSON numbers 0..n from the argument n"
    );
    assert_eq!(lines.len(), 9);
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

both_isolations!(a_large_item_over_many_lines_is_not_held_as_a_tree);
/// An item of 24 MB that a plugin spread over 8 million lines goes to
/// stdout as one line in about one more copy of the item; it used to be
/// parsed into a tree of values first, over ten times its size.
fn a_large_item_over_many_lines_is_not_held_as_a_tree() {
    let mut command = run_command(&[FIXTURE_RAW, "pretty_big", "--args", "8000000"]);
    let (status, peak_kib) = peak_kib(&mut command);
    assert_eq!(status, 0);
    // The item (24 MB) in the caller's buffers and its compact copy
    // (16 MB), with the runtime: far below the tree's 256 MB or more.
    assert!(
        peak_kib < 150 * 1024,
        "sandgen run peaked at {peak_kib} KiB"
    );
}

/// Runs `command` to its end (within the CLI's deadline), its output
/// discarded: its exit status and its peak resident memory in KiB.
fn peak_kib(command: &mut std::process::Command) -> (i32, u64) {
    // Reaped by `wait4` below, which reports its peak memory as well.
    #[allow(clippy::zombie_processes)]
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let deadline = std::time::Instant::now() + crate::util::limit(super::CLI_DEADLINE);
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own
        // child, without blocking.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            return (code, usage.ru_maxrss as u64);
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: kills our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("sandgen run did not end within {:?}", super::CLI_DEADLINE);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

both_isolations!(items_on_stdout_cannot_drive_a_terminal);
/// Items on stdout are data, one JSON value per line: the C0 controls are
/// escaped as JSON requires (by the plugin's encoder; raw ones are invalid
/// JSON), and sandgen writes DEL, the C1 controls and the bidi controls as
/// `\u` escapes too, so the same strings reach a JSON reader and nothing
/// reaches a terminal that could drive it; other characters pass through as
/// UTF-8.
fn items_on_stdout_cannot_drive_a_terminal() {
    use crate::util::artifacts::FIXTURE_PROBE;
    let text = "\u{1b}]0;title\u{7} \u{7f} \u{9b}2J \u{85} \u{202e}txt \u{2066} é — 日本";
    let args = serde_json::json!([text]).to_string();
    let output = sandgen(&["run", FIXTURE_PROBE, "fs", "--args", &args]);
    let raw = &output.stdout;
    let (out, _) = expect(&output, 0);
    for control in [
        &b"\x1b"[..],
        b"\x07",
        b"\x7f",
        b"\xc2\x9b",
        b"\xc2\x85",
        b"\xe2\x80\xae",
        b"\xe2\x81\xa6",
    ] {
        assert!(
            !raw.windows(control.len()).any(|w| w == control),
            "{control:?} reached stdout raw: {out}"
        );
    }
    assert_eq!(
        out,
        "\"\\u001b]0;title\\u0007 \\u007f \\u009b2J \\u0085 \\u202etxt \\u2066 é — 日本: unknown operation\"\n"
    );
    let item: String = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(item, format!("{text}: unknown operation"));
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
            &sandgen(&[
                "bench", example, "count", "--args", "2500", "--passes", "2", "--decode", "u64",
            ]),
            0,
        );
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["items"], 5000, "{example}");
        // Each pass counts 0..2500, decoded.
        assert_eq!(report["checksum"], 2 * 2499 * 2500 / 2, "{example}");
        let (out, _) = expect(
            &sandgen(&[
                "bench",
                example,
                "blobs",
                "--args",
                r#"{"n": 10, "size": 1000}"#,
                "--decode",
                "bytes",
            ]),
            0,
        );
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["items"], 10, "{example}");
        assert_eq!(report["checksum"], 10 * 1000, "{example}");
        assert_eq!(report["bytes"], 10 * 1003, "{example}");
    }
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
