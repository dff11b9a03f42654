//! What only process isolation has: a worker process that can die, be
//! killed, and must never outlive its caller.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandgen::{Engine, ErrorKind, Isolation};

use crate::util::{artifacts, assert_error, cache_dir, plugin};

fn spdl_process() -> crate::util::Fixture {
    crate::util::set_isolation(Isolation::Process);
    plugin(artifacts::FIXTURE_SPDL)
}

/// The SPDL fixture, loaded by an engine whose worker program is `program`.
fn with_worker_program(program: impl AsRef<Path>) -> sandgen::Plugin {
    Engine::builder()
        .cache_dir(cache_dir())
        .worker_program(program.as_ref())
        .build()
        .unwrap()
        .load(artifacts::FIXTURE_SPDL)
        .unwrap()
}

fn kill(pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Whether a process exists (a zombie counts: it was not reaped).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a process has exited (it may wait, as a zombie, to be reaped by
/// its parent; an orphan's parent is init).
fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, None | Some("Z" | "X"))
}

/// Waits up to `limit` for `pid` to be gone (`reaped`) or to have exited;
/// the time it took.
pub fn gone_within(pid: u32, limit: Duration, reaped: bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if if reaped { !exists(pid) } else { exited(pid) } {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn worker_killed_mid_pass_is_reported_at_once() {
    let _watch = crate::util::watchdog("process::worker_killed_mid_pass_is_reported_at_once");
    let iterable = spdl_process()
        .generator("spin")
        .args(&1u64)
        .build()
        .unwrap();
    let pid = iterable.worker_process_id().expect("a worker process");
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    let killed = Instant::now();
    kill(pid);
    let error = pass.next().unwrap().unwrap_err();
    let detected = killed.elapsed();
    eprintln!("dead worker detected {detected:?} after SIGKILL");
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "was killed by signal 9 (SIGKILL)",
    );
    assert!(detected < Duration::from_secs(1), "{detected:?}");
    drop(pass);
    assert_eq!(
        iterable.iter::<u64>().unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn worker_killed_while_idle_is_reported_on_the_next_pass() {
    let _watch =
        crate::util::watchdog("process::worker_killed_while_idle_is_reported_on_the_next_pass");
    let iterable = spdl_process()
        .generator("range")
        .args(&3u64)
        .build()
        .unwrap();
    let pid = iterable.worker_process_id().unwrap();
    kill(pid);
    assert!(
        gone_within(pid, Duration::from_secs(5), true).is_some(),
        "the worker was not reaped"
    );
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "died: it was killed by signal 9",
    );
}

#[test]
fn dropping_the_iterable_ends_and_reaps_the_worker() {
    let _watch = crate::util::watchdog("process::dropping_the_iterable_ends_and_reaps_the_worker");
    for generator in ["range", "spin"] {
        let iterable = spdl_process()
            .generator(generator)
            .args(&1u64)
            .build()
            .unwrap();
        let pid = iterable.worker_process_id().unwrap();
        let mut pass = iterable.iter::<u64>().unwrap();
        assert_eq!(pass.next().unwrap().unwrap(), 0);
        drop(pass);
        let started = Instant::now();
        drop(iterable);
        let teardown = started.elapsed();
        eprintln!("teardown of a {generator} worker process took {teardown:?}");
        // Gone and reaped (no zombie) by the time drop returns.
        assert!(!exists(pid), "worker {pid} still exists after drop");
        assert!(teardown < Duration::from_secs(2), "{teardown:?}");
    }
}

#[test]
fn worker_that_cannot_start_or_dies_at_once() {
    let _watch = crate::util::watchdog("process::worker_that_cannot_start_or_dies_at_once");
    for (program, words) in [
        (
            "/no/such/sandgen",
            "failed to start the worker process `/no/such/sandgen`",
        ),
        ("/bin/false", "died: it exited with status 1"),
    ] {
        let error = with_worker_program(program)
            .generator("range")
            .isolation(Isolation::Process)
            .build()
            .unwrap_err();
        assert_error(&error, ErrorKind::WorkerDied, words);
    }
}

#[test]
fn without_a_cache_process_isolation_is_refused_clearly() {
    let _watch =
        crate::util::watchdog("process::without_a_cache_process_isolation_is_refused_clearly");
    let engine = Engine::builder()
        .no_cache()
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .build()
        .unwrap();
    let plugin = engine.load(artifacts::FIXTURE_SPDL).unwrap();
    let error = plugin
        .generator("range")
        .isolation(Isolation::Process)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Load,
        "the compile cache is disabled or not writable",
    );
}

/// The caller dies by SIGKILL: its worker process notices (its stdin
/// closes) and exits; nothing is left behind.
#[test]
fn worker_does_not_outlive_a_killed_caller() {
    let _watch = crate::util::watchdog("process::worker_does_not_outlive_a_killed_caller");
    // In a process group of its own: if this test fails, dropping `cli`
    // kills the worker too.
    crate::util::set_isolation(Isolation::Process);
    let mut cli = crate::cli::spinning_run(&[]);
    let workers = children(cli.pid());
    assert_eq!(workers.len(), 1, "worker processes: {workers:?}");
    let worker = workers[0];
    cli.signal("KILL");
    cli.wait(Duration::from_secs(10), "the killed caller");
    let exited = gone_within(worker, Duration::from_secs(5), false);
    eprintln!("orphaned worker exited {exited:?} after its caller was killed");
    assert!(
        exited.is_some_and(|t| t < Duration::from_secs(1)),
        "worker {worker} outlived its caller"
    );
}

/// The children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name: state, then the parent id.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            found.push(child);
        }
    }
    found
}

#[test]
fn process_mode_routes_guest_output_to_the_handler() {
    let _watch = crate::util::watchdog("process::process_mode_routes_guest_output_to_the_handler");
    let captured = crate::util::Captured::default();
    let iterable = spdl_process()
        .generator("announce")
        .args(&2u64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1]);
    drop(iterable);
    assert_eq!(
        captured.lines(),
        [
            "[fixture_spdl/announce stderr] produced 0",
            "[fixture_spdl/announce stderr] produced 1"
        ]
    );
}

/// A worker process that sends an item batch whose count does not match
/// its frames is killed and reported, never trusted (the parent validates
/// every batch it reads).
#[test]
fn malformed_batch_from_a_worker_process_is_refused() {
    let _watch = crate::util::watchdog("process::malformed_batch_from_a_worker_process_is_refused");
    // A pass starts, then an item batch (tag 1) that claims 5 items but
    // holds one.
    let fake = fake_worker(
        "sandgen-fake-worker",
        &format!(
            "{ITERATION_STARTED}\n\
             printf '\\012\\000\\000\\000\\000\\000\\000\\000\\001\\005\\000\\000\\000\\001\\000\\000\\000x'\n\
             exec cat > /dev/null"
        ),
    );
    let error = fake_pass_error(&fake);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "broke the worker protocol: it sent a malformed message (an item batch whose frames do not match its count)",
    );
}

/// Large batches cross through the caller's shared region: items of every
/// size, around the region's size and past it (those go over the pipe),
/// arrive exact and in order, and the worker process has the region mapped.
#[test]
fn large_items_cross_through_shared_memory_exactly() {
    let _watch = crate::util::watchdog("process::large_items_cross_through_shared_memory_exactly");
    #[derive(serde::Serialize)]
    struct BytesArgs {
        n: u64,
        size: usize,
    }
    // (item size, buffer bytes): batches of several items, single items of
    // a good part of the ring, and items larger than the region (those go
    // over the pipe). Wrapping around the ring is tested on both sides in
    // one process (`shared.rs`).
    for (size, buffer_bytes) in [
        (20 << 10, 16 << 20),
        (300 << 10, 700 << 10),
        (2 << 20, 100 << 10),
    ] {
        let n = 40;
        let iterable = spdl_process()
            .generator("bytes")
            .args(&BytesArgs { n, size })
            .buffer_bytes(buffer_bytes)
            .build()
            .unwrap();
        let pid = iterable.worker_process_id().unwrap();
        for _ in 0..2 {
            let mut pass = iterable.iter::<serde_bytes::ByteBuf>().unwrap();
            let first = pass.next().unwrap().unwrap();
            assert_eq!(first.as_ref(), vec![0u8; size].as_slice());
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            assert!(
                maps.contains("/memfd:sandgen-items"),
                "no shared region mapped by worker {pid}:\n{maps}"
            );
            let mut count = 1;
            for (i, item) in pass.enumerate() {
                let item = item.unwrap();
                assert!(
                    item.iter().all(|&b| b == (i + 1) as u8) && item.len() == size,
                    "item {} of {size} bytes is wrong",
                    i + 1
                );
                count += 1;
            }
            assert_eq!(count, n);
        }
        // The transport benchmark's workload: one block, sent many times.
        let blocks: Vec<serde_bytes::ByteBuf> = spdl_process()
            .generator("blocks")
            .args(&BytesArgs { n: 5, size })
            .buffer_bytes(buffer_bytes)
            .build()
            .unwrap()
            .iter()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(blocks, vec![serde_bytes::ByteBuf::from(vec![7u8; size]); 5]);
        // The worker wrote into the region (its pages there are resident),
        // unless every batch was larger than the region.
        let written = shared_region_rss_kib(pid);
        if size < buffer_bytes + (256 << 10) {
            assert!(written > 0, "worker {pid} never wrote to its region");
        } else {
            assert_eq!(written, 0, "{size}-byte items are larger than the region");
        }
    }
}

/// How much of the shared region's ring the worker process `pid` has
/// touched: the region's mapping that is not its one-page header.
fn shared_region_rss_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut mappings = smaps.split("\n").peekable();
    let mut found = None;
    while let Some(line) = mappings.next() {
        if !line.ends_with("/memfd:sandgen-items (deleted)") {
            continue;
        }
        let field = |name: &str, lines: &mut std::iter::Peekable<std::str::Split<'_, &str>>| {
            lines
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap()
        };
        let size = field("Size:", &mut mappings);
        let rss = field("Rss:", &mut mappings);
        if size * 1024 > rustix::param::page_size() as u64 {
            found = Some(rss);
        }
    }
    found.unwrap_or_else(|| panic!("no shared ring mapped by worker {pid}"))
}

/// A worker process that claims a shared batch outside the caller's region
/// is refused before anything is read, and killed.
#[test]
fn a_shared_batch_outside_the_region_is_refused() {
    let _watch = crate::util::watchdog("process::a_shared_batch_outside_the_region_is_refused");
    // A shared batch of 1 item: 8 bytes at offset 2^56.
    let fake = fake_worker(
        "sandgen-outside-worker",
        &format!(
            "{ITERATION_STARTED}\n{}\nexec cat > /dev/null",
            printf(&shared_batch(1 << 56, 8, 1))
        ),
    );
    let error = fake_pass_error(&fake);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "a shared batch of 8 bytes at offset 72057594037927936 lies outside the",
    );
}

/// The caller reads a shared batch where the worker wrote it, and
/// validates it: a worker process that puts garbage in the region (a frame
/// whose length overruns its batch) gets `Protocol`.
#[test]
fn garbage_in_the_shared_region_is_refused() {
    let _watch = crate::util::watchdog("process::garbage_in_the_shared_region_is_refused");
    // A stand-in for a compromised worker, in Python (it needs `recvmsg`
    // to receive the region): it takes the region's descriptor from its
    // stdin socket, writes at offset 0 of the ring (after the header page)
    // a frame holding `abcd` and sends it as a shared batch of 1 item, then
    // at offset 8 a frame that claims 2^32 - 1 bytes, sent the same way.
    let fake = crate::util::temp_dir("sandgen-garbage-worker").join("fake-worker");
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env python3\n\
             import mmap, socket, struct, sys\n\
             stdin = socket.socket(fileno=0)\n\
             _, ancillary, _, _ = stdin.recvmsg(12, socket.CMSG_LEN(4))\n\
             region = mmap.mmap(struct.unpack('i', ancillary[0][2][:4])[0], 0)\n\
             region[mmap.PAGESIZE:mmap.PAGESIZE + 16] = bytes({:?})\n\
             sys.stdout.buffer.write(bytes({:?}))\n\
             sys.stdout.buffer.flush()\n\
             while stdin.recv(65536):\n    pass\n",
            b"\x04\0\0\0abcd\xff\xff\xff\xffabcd",
            [
                &b"sandgen\0\x03\0\0\0"[..],
                LOADED,
                INITIALIZED,
                ITERATION_STARTED_BYTES,
                &shared_batch(0, 8, 1),
                &shared_batch(8, 8, 1),
            ]
            .concat(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let iterable = with_worker_program(&fake)
        .generator("range")
        .isolation(Isolation::Process)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut pass = iterable.iter_raw().unwrap();
    assert_eq!(pass.next_item().unwrap().unwrap(), b"abcd");
    let error = pass.next_item().unwrap().unwrap_err();
    assert_error(
        &error,
        ErrorKind::Protocol,
        "it sent a malformed message (an item batch whose frames do not match its count)",
    );
}

/// Arguments too large for a worker process's setup are refused up front,
/// with a hint, instead of failing inside the worker.
#[test]
fn oversized_args_are_refused_before_starting_a_worker() {
    let _watch =
        crate::util::watchdog("process::oversized_args_are_refused_before_starting_a_worker");
    let error = spdl_process()
        .generator("range")
        .args_raw(vec![0; 256 << 20])
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InvalidInput,
        "pass large inputs as files in a granted directory",
    );
}

/// A worker process that closes its stdout and goes on running is killed
/// on the timeout and reaped, without the caller hanging (the reader thread
/// waits for it without holding what the kill needs).
#[test]
fn a_worker_that_closes_its_stdout_and_lingers_is_killed() {
    let _watch =
        crate::util::watchdog("process::a_worker_that_closes_its_stdout_and_lingers_is_killed");
    // Started and initialized; then stdout closes and the process sleeps.
    let fake = fake_worker("sandgen-lingering-worker", "exec sleep 60 >&- <&-");
    let iterable = with_worker_program(&fake)
        .generator("range")
        .isolation(Isolation::Process)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let pid = iterable.worker_process_id().unwrap();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert!(
        matches!(error.kind(), ErrorKind::WorkerDied | ErrorKind::Timeout),
        "{error}"
    );
    let started = Instant::now();
    drop(iterable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        gone_within(pid, Duration::from_secs(5), true).is_some(),
        "worker {pid} lingers"
    );
}

/// A worker process that streams batches past the caller's buffer (it
/// ignores the back-pressure) is killed and reported, instead of filling
/// the caller's memory.
#[test]
fn a_worker_that_ignores_back_pressure_is_killed() {
    let _watch = crate::util::watchdog("process::a_worker_that_ignores_back_pressure_is_killed");
    // A pass starts, then a batch of 20 one-byte items at once: more than
    // the caller's 10 items of buffer and a batch of 5.
    let batch = format!(
        "\\151\\000\\000\\000\\000\\000\\000\\000\\001\\024\\000\\000\\000{}",
        "\\001\\000\\000\\000\\001".repeat(20)
    );
    let fake = fake_worker(
        "sandgen-flooding-worker",
        &format!("{ITERATION_STARTED}\nprintf '{batch}'\nexec cat > /dev/null"),
    );
    let iterable = with_worker_program(&fake)
        .generator("range")
        .isolation(Isolation::Process)
        .buffer_size(10)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut pass = iterable.iter_raw().unwrap();
    let mut items = 0;
    let error = loop {
        match pass.next_item() {
            Some(Ok(_)) => items += 1,
            Some(Err(error)) => break error,
            None => panic!("the pass ended"),
        }
    };
    assert_error(
        &error,
        ErrorKind::Protocol,
        "sent a malformed message (more items than its caller had room for)",
    );
    assert_eq!(items, 0, "the oversized batch was delivered");
}

/// A shell script that speaks the worker protocol as far as a started,
/// initialized worker (the preamble, then `Loaded` and
/// `InitializationSucceeded`: frames `[u64 length][tag][payload]`, bincode
/// `[0, 7]` and `[0, 0]` under tag 0), then runs `rest`: a stand-in for a
/// compromised worker process.
fn fake_worker(name: &str, rest: &str) -> std::path::PathBuf {
    let fake = crate::util::temp_dir(name).join("fake-worker");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             printf 'sandgen\\000\\003\\000\\000\\000'\n\
             printf '\\003\\000\\000\\000\\000\\000\\000\\000\\000\\000\\007'\n\
             printf '\\003\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000'\n\
             {rest}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fake
}

/// `Loaded`, `InitializationSucceeded` and `IterationStarted` reports
/// (bincode `[0, 7]`, `[0, 0]`, `[0, 2]` under tag 0).
const LOADED: &[u8] = b"\x03\0\0\0\0\0\0\0\0\0\x07";
const INITIALIZED: &[u8] = b"\x03\0\0\0\0\0\0\0\0\0\0";
const ITERATION_STARTED_BYTES: &[u8] = b"\x03\0\0\0\0\0\0\0\0\0\x02";

/// The error of a pass of `range` whose worker program is `fake`.
fn fake_pass_error(fake: &Path) -> sandgen::Error {
    let iterable = with_worker_program(fake)
        .generator("range")
        .isolation(Isolation::Process)
        .build()
        .unwrap();
    crate::util::pass_error::<u64>(&iterable)
}

/// A `printf` command that writes exactly `bytes`.
fn printf(bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    format!("printf '{escaped}'")
}

/// A shared-batch report: `[u64 length 21][tag 2][count][offset][length]`.
fn shared_batch(offset: u64, len: u64, count: u32) -> Vec<u8> {
    let mut frame = 21u64.to_le_bytes().to_vec();
    frame.push(2);
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(&offset.to_le_bytes());
    frame.extend_from_slice(&len.to_le_bytes());
    frame
}

/// `IterationStarted` (bincode `[0, 2]` under tag 0), in `printf` form.
const ITERATION_STARTED: &str = "printf '\\003\\000\\000\\000\\000\\000\\000\\000\\000\\000\\002'";

/// A worker process sent SIGSEGV from outside dies of it, as it would of
/// any other fatal signal (wasmtime's fault handler would otherwise take it
/// for a fault outside wasm and go on), and the caller says so.
#[test]
fn a_worker_process_sent_sigsegv_dies() {
    let _watch = crate::util::watchdog("process::a_worker_process_sent_sigsegv_dies");
    let iterable = spdl_process()
        .generator("spin")
        .args(&1u64)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let pid = iterable.worker_process_id().unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    assert!(
        Command::new("kill")
            .args(["-SEGV", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let error = pass.next().unwrap().unwrap_err();
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        "it was killed by signal 11 (SIGSEGV)",
    );
    assert!(gone_within(pid, Duration::from_secs(5), true).is_some());
}
