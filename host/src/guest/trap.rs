//! Turns a guest call that did not return (a trap, a host failure, an
//! interrupt) or that returned the plugin's own error into an [`Error`] of
//! the right kind, with the guest's stderr tail and backtrace attached.

use wasmtime::{Store, Trap, WasmBacktrace};

use crate::error::{Error, ErrorKind};
use crate::guest::output::{GuestOutput, summarize_stderr};
use crate::guest::state::{HostState, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use crate::imports::wasi::MAX_HANDLES;
use crate::text::{ECHO, cut_text};

/// Why a guest call did not return.
pub(crate) enum Fault {
    /// The caller interrupted it (teardown or timeout).
    Interrupted,
    /// It trapped or the host failed.
    Trap(wasmtime::Error),
}

/// How a phase ended when it did not succeed.
pub(crate) enum Stop {
    /// Interrupted by the caller: end quietly, nobody is listening.
    Quiet,
    /// Failed: report this error, then end.
    Failed(Error),
}

pub(super) fn fault_stop(
    store: &Store<HostState>,
    output: &GuestOutput,
    generator: &str,
    phase: &str,
    fault: Fault,
) -> Stop {
    match fault {
        Fault::Interrupted => Stop::Quiet,
        Fault::Trap(error) => Stop::Failed(trap_error(store, output, generator, phase, &error)),
    }
}

/// An error that the plugin reported from a call. When the limiter refused
/// memory during that same call, the plugin's error is its reaction to the
/// limit (Python's `MemoryError`, a failed `try_reserve`): it is reported as
/// [`ErrorKind::MemoryLimit`], with the plugin's message kept.
pub(crate) fn reported_error(
    store: &Store<HostState>,
    kind: ErrorKind,
    context: impl std::fmt::Display,
    message: String,
) -> Error {
    let limiter = &store.data().limiter;
    match limiter.denied {
        Some(asked) => Error::plugin(
            ErrorKind::MemoryLimit,
            format_args!(
                "{context} after hitting its memory limit of {} MiB (its memories would have held {} MiB together)",
                limiter.max_bytes() / (1024 * 1024),
                asked.div_ceil(1024 * 1024)
            ),
            message,
        ),
        None => {
            let hint = not_granted(&store.data().granted, &message);
            let error = Error::plugin(kind, context, message);
            match hint {
                Some(hint) => error.hint(hint),
                None => error,
            }
        }
    }
}

/// The hint for a plugin's "no such file" (or "permission denied") on
/// absolute paths that no granted directory covers: the sandbox shows the
/// guest nothing else, so the file may well exist on the host. `None` when
/// the message is not such a failure, or a grant covers each path it names.
pub(crate) fn not_granted(granted: &[String], message: &str) -> Option<String> {
    // How Rust, Python (WASI's errno numbers: ENOENT 44, EACCES 2,
    // ENOTCAPABLE 76) and JavaScript plugins word these failures.
    const SIGNS: [&str; 8] = [
        "no such file",
        "not found",
        "enoent",
        "errno 44",
        "os error 44",
        "permission denied",
        "errno 76",
        "capabilities insufficient",
    ];
    let lower = message.to_lowercase();
    if !SIGNS.iter().any(|sign| lower.contains(sign)) {
        return None;
    }
    let covered = |path: &str| {
        granted.iter().any(|dir| {
            let dir = dir.trim_end_matches('/');
            path == dir
                || path
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    let uncovered: Vec<&str> = message
        .split(|c: char| c.is_whitespace() || "'\"`,;()[]{}".contains(c))
        .map(|word| word.trim_end_matches([':', '.']))
        .filter(|word| word.starts_with('/') && word.len() > 1 && !covered(word))
        .collect();
    let grant = "grant its directory with `dirs=` in Python or `--dir` in the CLI";
    match uncovered.first() {
        Some(path) if granted.is_empty() => Some(format!(
            "no directory is granted to the plugin, so it cannot see {}: {grant}",
            cut_text(path, ECHO)
        )),
        Some(path) => Some(format!(
            "no granted directory covers {} (granted: {}): {grant}",
            cut_text(path, ECHO),
            cut_text(&granted.join(", "), ECHO)
        )),
        None => None,
    }
}

/// Classifies a trap (or host failure) of a guest call into an [`Error`]
/// with the guest's stderr tail and backtrace attached.
fn trap_error(
    store: &Store<HostState>,
    output: &GuestOutput,
    generator: &str,
    phase: &str,
    error: &wasmtime::Error,
) -> Error {
    output.flush();
    let stderr = output.stderr_tail();
    let said = stderr.as_deref().and_then(summarize_stderr);
    let said = said
        .map(|s| format!(" (guest stderr: {s})"))
        .unwrap_or_default();
    let trap = error.downcast_ref::<Trap>().copied();
    let limiter = &store.data().limiter;
    let (kind, message) = match (trap, limiter.denied) {
        (Some(Trap::StackOverflow), _) => (
            ErrorKind::StackOverflow,
            format!(
                "generator {generator} exhausted its stack {phase} (unbounded recursion?){said}"
            ),
        ),
        (Some(Trap::OutOfFuel), _) => (
            ErrorKind::FuelExhausted,
            format!(
                "generator {generator} ran out of fuel {phase} (its budget is {} units per pass){said}",
                store.data().fuel.unwrap_or_default()
            ),
        ),
        (_, Some(asked)) => (
            ErrorKind::MemoryLimit,
            format!(
                "generator {generator} hit its memory limit of {} MiB {phase} (its memories would have held {} MiB together){said}",
                limiter.max_bytes() / (1024 * 1024),
                asked.div_ceil(1024 * 1024)
            ),
        ),
        (Some(Trap::MemoryOutOfBounds), None) => (
            ErrorKind::Trap,
            format!(
                "generator {generator} trapped {phase}: {} (likely a stack overflow: a guest \
                 compiled from Rust or C keeps its stack in linear memory, and unbounded \
                 recursion runs off its start){said}",
                Trap::MemoryOutOfBounds
            ),
        ),
        (Some(trap), None) => (
            ErrorKind::Trap,
            format!("generator {generator} trapped {phase}: {trap}{said}"),
        ),
        (None, None) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => (
                ErrorKind::Trap,
                format!(
                    "generator {generator} exited with status {} {phase}; a plugin must return or report errors instead of exiting{said}",
                    exit.0
                ),
            ),
            None => {
                let cause = error.root_cause().to_string();
                let cause = cause.lines().next().unwrap_or_default();
                if out_of_handles(error) {
                    return Error::new(
                        ErrorKind::MemoryLimit,
                        format!(
                            "generator {generator} needs more than {MAX_HANDLES} WASI handles at once {phase} \
                             (open files, directory streams, streams): a guest holds at most {MAX_HANDLES}, \
                             so that it cannot use up its host's file descriptors; close files it no longer \
                             needs{said}"
                        ),
                    )
                    .with_guest_stderr(stderr);
                }
                match StoreCount::parse(cause) {
                    Some(count) => (
                        ErrorKind::MemoryLimit,
                        format!(
                            "generator {generator} needs more than {} {} {phase} (it asked for {}; \
                             a plugin's store holds at most {MAX_INSTANCES} core instances, \
                             {MAX_MEMORIES} memories and {MAX_TABLES} tables){said}",
                            count.max, count.what, count.asked
                        ),
                    ),
                    None => (
                        ErrorKind::Trap,
                        format!("generator {generator} failed {phase}: {cause}{said}"),
                    ),
                }
            }
        },
    };
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(format_backtrace);
    Error::new(kind, message)
        .with_guest_stderr(stderr)
        .with_backtrace(backtrace)
}

/// Whether a guest call failed because the guest's table of WASI handles
/// is full ([`MAX_HANDLES`]).
fn out_of_handles(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    })
}

/// Wasmtime's refusal of one more instance, memory or table in a store
/// beyond the limiter's counts (`resource limit exceeded: instance count too
/// high at 65`).
#[derive(Debug, PartialEq)]
struct StoreCount {
    what: &'static str,
    max: usize,
    asked: usize,
}

impl StoreCount {
    fn parse(cause: &str) -> Option<StoreCount> {
        let rest = cause.strip_prefix("resource limit exceeded: ")?;
        let (desc, asked) = rest.split_once(" count too high at ")?;
        let asked = asked.trim().parse().ok()?;
        let (what, max) = match desc {
            "instance" => ("core instances", MAX_INSTANCES),
            "memory" => ("memories", MAX_MEMORIES),
            "table" => ("tables", MAX_TABLES),
            _ => return None,
        };
        Some(StoreCount { what, max, asked })
    }
}

/// The innermost frames of a guest backtrace, one per line.
fn format_backtrace(backtrace: &WasmBacktrace) -> String {
    const FRAMES: usize = 12;
    let mut lines: Vec<String> = backtrace
        .frames()
        .iter()
        .take(FRAMES)
        .map(|frame| {
            let name = frame.func_name().unwrap_or("<unnamed>");
            match frame.module().name() {
                Some(module) => format!("{module}!{name}"),
                None => name.to_owned(),
            }
        })
        .collect();
    if backtrace.frames().len() > FRAMES {
        lines.push(format!(
            "... {} more frames",
            backtrace.frames().len() - FRAMES
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_outside_the_grants_gets_a_hint() {
        let granted = vec!["/data".to_owned(), "/models/".to_owned()];
        // As Python, Rust and JavaScript plugins word it.
        for message in [
            "[Errno 44] No such file or directory: '/corpus/train.jsonl'",
            "cannot open /corpus/train.jsonl: No such file or directory (os error 44)",
            "ENOENT: no such file or directory, open '/corpus/train.jsonl'",
        ] {
            let hint = not_granted(&granted, message).expect(message);
            assert_eq!(
                hint,
                "no granted directory covers /corpus/train.jsonl (granted: /data, /models/): \
                 grant its directory with `dirs=` in Python or `--dir` in the CLI",
                "{message}"
            );
        }
        let none = not_granted(&[], "cannot open /x: No such file or directory").unwrap();
        assert!(none.starts_with("no directory is granted to the plugin, so it cannot see /x"));
        // Inside a grant the file is really missing; other failures and
        // relative paths get no hint.
        for message in [
            "cannot open /data/train.jsonl: No such file or directory (os error 44)",
            "cannot open /models/a/b: Permission denied",
            "cannot open /database: invalid header",
            "cannot open train.jsonl: No such file or directory",
            "generator /x not in: the plugin has range",
        ] {
            assert_eq!(not_granted(&granted, message), None, "{message}");
        }
        assert!(not_granted(&granted, "no such file: /datasets/x").is_some());
        // A huge path in the plugin's words is echoed cut.
        let huge = format!(
            "cannot open /{}: No such file or directory",
            "x".repeat(60_000)
        );
        let hint = not_granted(&granted, &huge).unwrap();
        assert!(
            hint.len() < 1024 && hint.contains("… (60001 bytes)"),
            "{hint}"
        );
    }

    #[test]
    fn store_counts_are_read_from_wasmtime_refusals() {
        assert_eq!(
            StoreCount::parse("resource limit exceeded: memory count too high at 17"),
            Some(StoreCount {
                what: "memories",
                max: MAX_MEMORIES,
                asked: 17
            })
        );
        assert_eq!(
            StoreCount::parse("resource limit exceeded: instance count too high at 65")
                .map(|c| c.what),
            Some("core instances")
        );
        assert_eq!(StoreCount::parse("resource limit exceeded: fuel"), None);
        assert_eq!(StoreCount::parse("unreachable"), None);
    }
}
