//! Several workers through the CLI: `--workers` in order and `--unordered`,
//! `--seed`, `--sharding`, `bench` with workers, and bad worker options
//! (exit 2).

use super::{expect, sandgen, stderr};
use crate::util::artifacts::FIXTURE_SPDL;

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
        first.starts_with("2287019691376321887\n13723196602761704988\n"),
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

both_isolations!(sharding_by_items_through_the_cli);
fn sharding_by_items_through_the_cli() {
    // `range` does not shard itself: by items, 3 workers give 0..10 once.
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "range",
            "--args",
            "10",
            "--workers",
            "3",
            "--sharding",
            "items",
        ]),
        0,
    );
    assert_eq!(out, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    let (_, errors) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "range", "--sharding", "rows"]),
        2,
    );
    assert!(
        errors.len() == 1
            && errors[0].contains("--sharding")
            && errors[0].contains("unknown sharding `rows`"),
        "{errors:?}"
    );
}

#[test]
fn bad_worker_options_exit_2() {
    let _watch = crate::util::watchdog("cli::workers::bad_worker_options_exit_2");
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
