//! Guest output: what a guest writes to its stdout and stderr reaches the
//! output handler line by line (long lines in pieces, invalid UTF-8
//! replaced), never among the items; a trap carries the tail of its stderr;
//! a flood of output is held back by the handler, never queued in the worker
//! process or in the caller.

use std::time::Duration;

use sandgen::{ErrorKind, GuestStream, Isolation};
use serde_json::json;

use crate::util::{Captured, assert_error, pass_error, probing};

/// The `write` generator: `bytes` written `times` to `stream`.
fn writer(stream: &str, bytes: &[u8], times: u64, items: u64) -> sandgen::IterableBuilder {
    probing("write")
        .args(&json!({ "stream": stream, "bytes": bytes, "times": times, "items": items }))
}

both_isolations!(a_guest_flooding_stdout_never_reaches_the_items);
/// 100,000 lines on the guest's stdout: each reaches the output handler as
/// a stdout line, in order, and the items are exactly the items.
fn a_guest_flooding_stdout_never_reaches_the_items() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let iterable = writer("stdout", b"flood\n", 100_000, 3)
        .on_output(move |line| {
            assert_eq!(line.stream, GuestStream::Stdout);
            sink.lock().unwrap().push(line.text.len());
        })
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1, 2]);
    drop(iterable);
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 100_000);
    assert!(lines.iter().all(|&len| len == "flood".len()));
}

both_isolations!(long_lines_are_split_and_invalid_utf8_is_replaced);
/// A 40,000-byte line reaches the handler in pieces of at most 16 KiB; bytes
/// that are not UTF-8 become U+FFFD; the prefix names plugin, generator and
/// stream.
fn long_lines_are_split_and_invalid_utf8_is_replaced() {
    let captured = Captured::default();
    let mut long = vec![b'a'; 40_000];
    long.push(b'\n');
    let iterable = writer("stderr", &long, 1, 0)
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 0);
    drop(iterable);
    let lengths: Vec<usize> = captured.lines().iter().map(String::len).collect();
    let prefix = "[fixture_probe/write stderr] ".len();
    assert_eq!(
        lengths,
        [prefix + 16384, prefix + 16384, prefix + 40_000 - 2 * 16384]
    );

    let captured = Captured::default();
    let iterable = writer("stdout", b"f\xffo\n", 1, 0)
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 0);
    drop(iterable);
    assert_eq!(
        captured.lines(),
        ["[fixture_probe/write stdout] f\u{fffd}o"]
    );
}

both_isolations!(a_last_line_without_a_newline_reaches_the_handler);
/// The last line a guest prints in a pass, without a line ending, reaches
/// the handler with the end of the pass (a worker process is killed when
/// its iterable is closed: it used to take that line with it).
fn a_last_line_without_a_newline_reaches_the_handler() {
    let captured = Captured::default();
    // Stderr: a Rust guest's stdout keeps an unfinished line in its own
    // buffer, stderr passes every write on at once.
    let iterable = writer("stderr", b"done\nno newline", 1, 2)
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 2);
    // Closed, as a Python `with` block ends it: a worker process is killed
    // at once.
    iterable.close();
    assert_eq!(
        captured.lines(),
        [
            "[fixture_probe/write stderr] done",
            "[fixture_probe/write stderr] no newline"
        ]
    );
}

both_isolations!(a_trap_carries_the_last_4_kib_of_stderr);
/// A guest that prints 2,000 lines and panics: the error carries at most
/// 4 KiB of stderr, ending with the panic message, starting at a whole line.
fn a_trap_carries_the_last_4_kib_of_stderr() {
    let iterable = probing("write")
        .args(&json!({
            "stream": "stderr", "bytes": b"a line of the guest's stderr\n",
            "times": 2000, "panic": "the last words"
        }))
        .on_output(|_| {})
        .build()
        .unwrap();
    let error = pass_error::<u64>(&iterable);
    assert_error(&error, ErrorKind::Trap, "the last words");
    let tail = error.guest_stderr().unwrap();
    assert!(tail.len() <= 4096, "{} bytes", tail.len());
    assert!(tail.len() > 3000, "{} bytes", tail.len());
    assert!(tail.starts_with("a line of the guest's stderr\n"), "{tail}");
    assert!(tail.contains("the last words"), "{tail}");
}

/// A guest that writes 64 MB to stderr faster than the caller takes it:
/// the worker process is held back by the pipe (no queue grows in it); its
/// peak resident memory, read from /proc, grows by far less than what was
/// written.
#[test]
fn a_stderr_flood_is_held_back_not_queued() {
    let _watch = crate::util::watchdog("output::a_stderr_flood_is_held_back_not_queued");
    crate::util::set_isolation(Isolation::Process);
    let (builder, lines) = slow_flood("stderr");
    let iterable = builder.build().unwrap();
    let pid = iterable.worker_pid().unwrap();
    let before = peak_kib(&pid.to_string());
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    let after = peak_kib(&pid.to_string());
    assert_eq!(pass.next().map(Result::unwrap), None);
    assert_eq!(lines.load(std::sync::atomic::Ordering::Relaxed), 64 * 1024);
    eprintln!("worker peak RSS {before} KiB before 64 MB of stderr, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "the worker's peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// Set in the child process that [`flood_probe`] runs in: its isolation.
const FLOOD_PROBE: &str = "SANDGEN_TEST_FLOOD_PROBE";

both_isolations!(a_flood_of_guest_output_leaves_the_callers_memory_alone);
/// 64 MB written to the guest's stdout and 64 MB to its stderr, taken by a
/// slow handler: the caller's peak resident memory, measured in a process of
/// its own, grows by far less than what was written (no queue holds the
/// lines), in both isolation modes.
fn a_flood_of_guest_output_leaves_the_callers_memory_alone() {
    let (before, after) = crate::util::run_probe("output::flood_probe", FLOOD_PROBE, "peak kib: ");
    eprintln!("caller peak RSS {before} KiB before 128 MB of guest output, {after} KiB after");
    assert!(
        after < before + 32 * 1024,
        "the caller's peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
#[ignore = "the child process of a_flood_of_guest_output_leaves_the_callers_memory_alone"]
fn flood_probe() {
    let _watch = crate::util::watchdog("output::flood_probe");
    let mode = std::env::var(FLOOD_PROBE)
        .expect("run by output::a_flood_of_guest_output_leaves_the_callers_memory_alone");
    crate::util::set_isolation(mode.parse().unwrap());
    let mut line = vec![b'y'; 1023];
    line.push(b'\n');
    // Warm up: the plugin loaded and a worker run once.
    let warm = writer("stderr", &line, 1, 1)
        .on_output(|_| {})
        .build()
        .unwrap();
    assert_eq!(warm.iter::<u64>().unwrap().count(), 1);
    drop(warm);
    let before = peak_kib("self");
    for stream in ["stdout", "stderr"] {
        let (builder, seen) = slow_flood(stream);
        let iterable = builder.build().unwrap();
        assert_eq!(iterable.iter::<u64>().unwrap().count(), 1);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 64 * 1024);
    }
    println!("peak kib: {before} {}", peak_kib("self"));
}

/// The `write` generator flooding `stream` with 64 Ki lines of 1 KiB, taken
/// by a slow handler (1 ms every 256 lines), and the count of lines taken.
fn slow_flood(
    stream: &str,
) -> (
    sandgen::IterableBuilder,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut line = vec![b'y'; 1023];
    line.push(b'\n');
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    let builder = writer(stream, &line, 64 * 1024, 1).on_output(move |_| {
        if counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(256)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    (builder, seen)
}

/// The peak resident memory of process `pid` (or `self`), in KiB.
fn peak_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
