//! `run --save-state FILE` and `--resume FILE` (design section 14): a run
//! stopped by `--take`, SIGINT or SIGKILL and resumed from its state file
//! prints exactly the lines an uninterrupted run prints after the ones it
//! printed; bad state files are usage errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CLI_DEADLINE, expect, run_command, sandgen};
use crate::util::artifacts::FIXTURE_SPDL;
use crate::util::{Running, Stdout, temp_dir};
use sandgen::Position;

fn state_file(test: &str) -> PathBuf {
    temp_dir(test).join("state.json")
}

fn position(path: &Path) -> Position {
    Position::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

both_isolations!(runs_stopped_by_take_resume_exactly);
fn runs_stopped_by_take_resume_exactly() {
    let state = state_file("runs_stopped_by_take_resume_exactly");
    let state = state.to_str().unwrap();
    let base = [
        "run",
        FIXTURE_SPDL,
        "random",
        "--args",
        "120",
        "--seed",
        "3",
        "--workers",
        "2",
        "--passes",
        "2",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        lines(&expect(&sandgen(&args), 0).0)
    };
    let whole = with(&[]);
    assert_eq!(whole.len(), 480);
    // 50 items, then 200 more (across the pass boundary), then the rest.
    let mut joined = with(&["--take", "50", "--save-state", state]);
    assert_eq!(
        (
            position(state.as_ref()).pass(),
            position(state.as_ref()).items()
        ),
        (0, 50)
    );
    joined.extend(with(&[
        "--take",
        "200",
        "--resume",
        state,
        "--save-state",
        state,
    ]));
    assert_eq!(
        (
            position(state.as_ref()).pass(),
            position(state.as_ref()).items()
        ),
        (1, 10)
    );
    joined.extend(with(&["--resume", state, "--save-state", state]));
    assert_eq!(joined, whole);
    // The run is over: its position is after its last pass, and resuming
    // it prints nothing.
    assert_eq!(position(state.as_ref()).pass(), 2);
    assert_eq!(with(&["--resume", state]), Vec::<String>::new());
}

/// `sleep` yields 0..1000, 5 ms apart: a run that is still going long after the
/// first save of its state (a second after the first item).
fn slow_run(state: &str, extra: &[&str]) -> Running {
    let mut args = vec![FIXTURE_SPDL, "sleep", "--args", r#"{"n": 1000, "ms": 5}"#];
    args.extend(["--save-state", state]);
    args.extend_from_slice(extra);
    Running::spawn(&run_command(&args), Stdout::Collect)
}

/// Waits for the state file to show items.
fn wait_for_state(path: &Path) {
    let until = Instant::now() + crate::util::limit(CLI_DEADLINE);
    while !path.exists() || position(path).items() == 0 {
        assert!(
            Instant::now() < until,
            "no state saved in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn numbers(text: &str) -> Vec<u64> {
    text.lines().map(|line| line.parse().unwrap()).collect()
}

/// The rest of `sleep` from the position in `state`.
fn resumed(state: &str) -> Vec<u64> {
    let args = [
        "run",
        FIXTURE_SPDL,
        "sleep",
        "--args",
        r#"{"n": 1000, "ms": 5}"#,
        "--resume",
        state,
    ];
    numbers(&expect(&sandgen(&args), 0).0)
}

both_isolations!(sigint_saves_the_position_and_exits_130);
fn sigint_saves_the_position_and_exits_130() {
    let state = state_file("sigint_saves_the_position_and_exits_130");
    let state = state.to_str().unwrap();
    let mut child = slow_run(state, &[]);
    wait_for_state(state.as_ref());
    child.signal("INT");
    let output = child.wait(CLI_DEADLINE, "sandgen run after SIGINT");
    let (out, errors) = expect(&output, 130);
    assert_eq!(
        errors,
        [format!(
            "error: interrupted; the position is saved in {state}"
        )]
    );
    let printed = numbers(&out);
    assert!(printed.len() < 1000, "stopped before the end");
    assert_eq!(
        position(state.as_ref()).items(),
        printed.len() as u64,
        "every line printed is counted"
    );
    let all: Vec<u64> = printed.into_iter().chain(resumed(state)).collect();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
}

both_isolations!(a_sigkilled_run_resumes_from_its_last_saved_position);
fn a_sigkilled_run_resumes_from_its_last_saved_position() {
    let state = state_file("a_sigkilled_run_resumes_from_its_last_saved_position");
    let state = state.to_str().unwrap();
    let mut child = slow_run(state, &[]);
    wait_for_state(state.as_ref());
    child.signal("KILL");
    let output = child.wait(CLI_DEADLINE, "sandgen run after SIGKILL");
    let printed = numbers(&super::stdout(&output));
    // Items reach stdout before their position is saved: stdout may hold
    // a few more than the file counts, never fewer.
    let saved = position(state.as_ref()).items() as usize;
    assert!(
        saved <= printed.len(),
        "{saved} saved, {} printed",
        printed.len()
    );
    let all: Vec<u64> = printed[..saved]
        .iter()
        .copied()
        .chain(resumed(state))
        .collect();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
}

#[test]
fn bad_state_files_are_usage_errors() {
    let _watch = crate::util::watchdog("cli::resume::bad_state_files_are_usage_errors");
    let dir = temp_dir("bad_state_files_are_usage_errors");
    let state = dir.join("state.json");
    let state = state.to_str().unwrap();
    let run = |extra: &[&str]| {
        let args: Vec<&str> = ["run", FIXTURE_SPDL, "range", "--args", "10", "--take", "3"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        sandgen(&args)
    };
    expect(&run(&["--save-state", state]), 0);
    let missing = dir.join("missing.json");
    let (_, errors) = expect(&run(&["--resume", missing.to_str().unwrap()]), 2);
    assert!(
        errors[0].starts_with(&format!(
            "error: cannot read --resume {}: ",
            missing.display()
        )),
        "{errors:?}"
    );

    let edited = std::fs::read_to_string(state)
        .unwrap()
        .replace("[3]", "[4]");
    std::fs::write(dir.join("edited.json"), edited).unwrap();
    let (_, errors) = expect(
        &run(&["--resume", dir.join("edited.json").to_str().unwrap()]),
        2,
    );
    assert!(
        errors[0].contains(": cannot read the position: its checksum does not match"),
        "{errors:?}"
    );

    let other = [
        "run",
        FIXTURE_SPDL,
        "range",
        "--args",
        "11",
        "--resume",
        state,
    ];
    let (_, errors) = expect(&sandgen(&other), 2);
    assert_eq!(
        errors,
        [
            "error: cannot resume generator range: the position was saved with other args; resume with the same args"
        ]
    );
}
