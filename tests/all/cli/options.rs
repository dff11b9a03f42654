//! Exit status 2: a plugin that does not load, a usage error or a bad option,
//! each in one line naming the option; compiling a plugin bounded by
//! `--load-timeout` and `--load-memory`.

use std::process::Command;

use super::{CLI_DEADLINE, expect, mode, sandgen, stderr};
use crate::util::artifacts::{FIXTURE_SPDL, FIXTURE_WRONG_WORLD};
use crate::util::output_within;

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
            &["--max-item-mib", "0"],
            "error: invalid --max-item-mib 0: give 1 to 4095 (MiB)",
        ),
        (
            &["--max-item-mib", "4096"],
            "error: invalid --max-item-mib 4096: give 1 to 4095 (MiB)",
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
            "error: invalid --args: not JSON: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1… (201 bytes): EOF while parsing a value at line 1 column 201",
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
