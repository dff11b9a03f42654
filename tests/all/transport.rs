//! The transport between the caller and a worker process, and what the
//! caller trusts of it: items cross through the caller's shared region
//! exactly; a worker process that sends malformed batches, points outside the
//! region, writes garbage into it, ignores back-pressure or lingers with its
//! stdout closed is refused and killed (stand-ins for a compromised worker
//! process).

use std::path::Path;
use std::time::{Duration, Instant};

use sandgen::{ErrorKind, Isolation};

use crate::process::{gone_within, spdl_process, with_worker_program};
use crate::util::assert_error;

/// A worker process that sends an item batch whose count does not match
/// its frames is killed and reported, never trusted (the parent validates
/// every batch it reads).
#[test]
fn malformed_batch_from_a_worker_process_is_refused() {
    let _watch =
        crate::util::watchdog("transport::malformed_batch_from_a_worker_process_is_refused");
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
    let _watch =
        crate::util::watchdog("transport::large_items_cross_through_shared_memory_exactly");
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
        let pid = iterable.worker_pid().unwrap();
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
    let _watch = crate::util::watchdog("transport::a_shared_batch_outside_the_region_is_refused");
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
    let _watch = crate::util::watchdog("transport::garbage_in_the_shared_region_is_refused");
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
                &preamble()[..],
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

/// A worker process that closes its stdout and goes on running is killed
/// on the timeout and reaped, without the caller hanging (the reader thread
/// waits for it without holding what the kill needs).
#[test]
fn a_worker_that_closes_its_stdout_and_lingers_is_killed() {
    let _watch =
        crate::util::watchdog("transport::a_worker_that_closes_its_stdout_and_lingers_is_killed");
    // Started and initialized; then stdout closes and the process sleeps.
    let fake = fake_worker("sandgen-lingering-worker", "exec sleep 60 >&- <&-");
    let iterable = with_worker_program(&fake)
        .generator("range")
        .isolation(Isolation::Process)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let pid = iterable.worker_pid().unwrap();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert!(
        matches!(error.kind(), ErrorKind::WorkerDied | ErrorKind::Timeout),
        "{error}"
    );
    let started = Instant::now();
    drop(iterable);
    assert!(
        started.elapsed() < crate::util::limit(Duration::from_secs(2)),
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
    let _watch = crate::util::watchdog("transport::a_worker_that_ignores_back_pressure_is_killed");
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

/// The worker protocol's version, as `host/src/worker/process/wire.rs`
/// states it: a fake worker that opens with another one is refused (the
/// fakes below must speak this one to get as far as they do).
const PROTOCOL: u32 = 7;

/// The 12 bytes a worker process opens with: the magic, then [`PROTOCOL`].
fn preamble() -> Vec<u8> {
    let mut opening = b"sandgen\0".to_vec();
    opening.extend_from_slice(&PROTOCOL.to_le_bytes());
    opening
}

/// A shell script that speaks the worker protocol as far as a started,
/// initialized worker (the preamble, then `Loaded` and
/// `InitializationSucceeded`: frames `[u64 length][tag][payload]`, bincode
/// `[0, 7]` and `[0, 0]` under tag 0), then runs `rest`: a stand-in for a
/// compromised worker process.
fn fake_worker(name: &str, rest: &str) -> std::path::PathBuf {
    let fake = crate::util::temp_dir(name).join("fake-worker");
    let preamble = printf(&preamble());
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             {preamble}\n\
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

/// A script, made executable, that writes `bytes` and then reads its stdin
/// until the caller closes it: a worker program that says only that.
fn saying(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let fake = crate::util::temp_dir(name).join("fake-worker");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\n{}\ncat >/dev/null\n", printf(bytes)),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fake
}

/// Why an iterable of `range` whose worker program is `fake` cannot be
/// built.
fn build_error(fake: &Path) -> sandgen::Error {
    with_worker_program(fake)
        .generator("range")
        .isolation(Isolation::Process)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_err()
}

/// A worker program of another sandgen, speaking protocol version 2, is
/// refused at its first words, saying which versions differ.
#[test]
fn a_worker_of_another_protocol_version_is_refused() {
    let _watch =
        crate::util::watchdog("transport::a_worker_of_another_protocol_version_is_refused");
    let mut opening = b"sandgen\0".to_vec();
    opening.extend_from_slice(&2u32.to_le_bytes());
    let fake = saying("sandgen-version-2-worker", &opening);
    let error = build_error(&fake);
    assert_error(
        &error,
        ErrorKind::WorkerDied,
        &format!("speaks worker protocol version 2, this sandgen speaks version {PROTOCOL}"),
    );
}

/// `Loaded` is accepted only as a worker's first status: a worker process
/// that says it again, where its initialization's outcome belongs, is a
/// protocol error.
#[test]
fn loaded_is_accepted_only_first() {
    let _watch = crate::util::watchdog("transport::loaded_is_accepted_only_first");
    let fake = saying(
        "sandgen-loaded-twice-worker",
        &[&preamble()[..], LOADED, LOADED].concat(),
    );
    let error = build_error(&fake);
    assert_error(
        &error,
        ErrorKind::Protocol,
        "sent an unexpected status during initialization: Loaded",
    );
}
