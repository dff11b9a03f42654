//! The compiling child and what the caller holds while a plugin compiles:
//! the child dies with its caller (SIGKILL, Ctrl-C), keeps its own deadline
//! and CPU limit, is confined like a worker and holds none of its caller's
//! descriptors; a plugin file is never held whole by the caller, and one
//! larger than the load memory is refused before it is read.

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandgen::ErrorKind;

use crate::util::{Running, Stdout, artifacts, assert_error, temp_dir};

/// The value of field `name` in `/proc/PID/status`, or `None` once the
/// process is gone.
fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
}

/// The process whose parent is `parent` and whose command line holds
/// `word`, waited for up to `deadline`.
fn child_with(parent: u32, word: &str, deadline: Duration) -> u32 {
    let mut found = None;
    crate::util::wait_until(
        deadline,
        &format!("a child of {parent} running `{word}`"),
        || {
            found = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .find(|&pid| {
                    status_field(pid, "PPid:").is_some_and(|ppid| ppid == parent.to_string())
                        && std::fs::read(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|line| String::from_utf8_lossy(&line).contains(word))
                });
            found.is_some()
        },
    );
    found.expect("found when the wait ended")
}

/// Waits until process `pid` is gone (or a zombie), up to `deadline`.
#[track_caller]
fn gone_within(pid: u32, deadline: Duration, what: &str) {
    let deadline = crate::util::limit(deadline);
    let until = Instant::now() + deadline;
    while status_field(pid, "State:").is_some_and(|state| !state.starts_with('Z')) {
        if Instant::now() > until {
            // Not left behind by a failing test.
            // SAFETY: a plain kill of a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what}: the compiling child {pid} still ran {deadline:?} later");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file of this test's, left open across `exec` (no close-on-exec flag),
/// as a careless caller leaves a secret.
fn inherited_secret(dir: &Path) -> (std::fs::File, String) {
    let path = dir.join("secret.txt");
    std::fs::write(&path, "secret").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
    (file, path.canonicalize().unwrap().display().to_string())
}

/// The CLI killed by SIGKILL, or by SIGINT as Ctrl-C kills it, while its
/// compiling child compiles a large plugin: the child dies with it at once
/// (its parent-death signal), though its load timeout is far away. While it
/// ran, it was confined like a worker process (no-new-privs, seccomp, no
/// capabilities), held none of its caller's descriptors but its pipes, and
/// had a CPU limit of its own.
#[test]
fn a_compiling_child_dies_with_its_caller_and_is_confined() {
    let _watch = crate::util::watchdog("compiling::a_compiling_child_dies_with_its_caller");
    let dir = temp_dir("compile-dies");
    let (_secret, secret_path) = inherited_secret(&dir);
    for (signal, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGINT, "SIGINT")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
        command
            .env("SANDGEN_CACHE_DIR", dir.join(format!("cache-{name}")))
            .args(["list", artifacts::FIXTURE_PYTHON, "--load-timeout", "100"]);
        let mut cli = Running::spawn(&command, Stdout::Collect);
        let child = child_with(cli.pid(), "__sandgen-compile", Duration::from_secs(60));
        // Confined once it has read the component.
        let until = Instant::now() + crate::util::limit(Duration::from_secs(60));
        while status_field(child, "Seccomp:").as_deref() != Some("2") {
            assert!(
                Instant::now() < until,
                "{name}: the child was never confined"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(status_field(child, "NoNewPrivs:").as_deref(), Some("1"));
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(
                status_field(child, set).as_deref(),
                Some("0000000000000000"),
                "{name}: {set}"
            );
        }
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        assert!(
            !held.contains(&secret_path),
            "{name}: the compiling child holds its caller's file: {held:?}"
        );
        let limits = std::fs::read_to_string(format!("/proc/{child}/limits")).unwrap();
        let cpu = limits
            .lines()
            .find(|line| line.starts_with("Max cpu time"))
            .unwrap();
        assert!(!cpu.contains("unlimited"), "{name}: {cpu}");
        // SAFETY: a plain kill of the CLI this test started.
        unsafe { libc::kill(cli.pid() as i32, signal) };
        // Gone at once: the compilation it was in takes several seconds
        // more (about 7 s in all on a 2-core machine), after which it would
        // end by itself.
        gone_within(child, Duration::from_secs(2), name);
        let output = cli.wait(Duration::from_secs(30), name);
        assert!(!output.status.success(), "{name}: {output:?}");
    }
}

/// A compiling child whose caller no longer watches it (stopped, say)
/// keeps its own deadline: it exits past the load timeout by itself,
/// saying so.
#[test]
fn a_compiling_child_keeps_its_own_deadline() {
    let _watch = crate::util::watchdog("compiling::a_compiling_child_keeps_its_own_deadline");
    let component = std::fs::read(artifacts::FIXTURE_PYTHON).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandgen"))
        .args([
            "__sandgen-compile",
            "plain",
            &(4u64 << 30).to_string(),
            "300",
        ])
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &component);
    });
    let until = started + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the compiling child went on past its deadline");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(5), "{said}");
    assert!(
        said.contains("the load timeout of 300ms has passed"),
        "{said}"
    );
}

/// A file of `len` bytes at `path` that opens as a component and is zeros
/// after that, sparse (it takes no disk space): a plugin that is only large.
fn sparse_component(path: &Path, len: u64) -> std::path::PathBuf {
    let file = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &file, b"\0asm\x0d\0\x01\0").unwrap();
    file.set_len(len).unwrap();
    path.to_owned()
}

const LARGE_PROBE: &str = "SANDGEN_TEST_LARGE_PLUGIN_PROBE";

/// A plugin file larger than the load memory is refused before it is read;
/// one within it is read in chunks and never held whole by the caller: its
/// peak resident memory, measured in a process of its own, grows by far
/// less than the file's 400 MiB while the plugin is hashed and handed to the
/// compiling child (which fails on it).
#[test]
fn a_large_plugin_file_is_bounded_and_never_held_whole() {
    let _watch = crate::util::watchdog("compiling::a_large_plugin_file_is_bounded");
    let dir = temp_dir("large-plugin");
    let huge = sparse_component(&dir.join("huge.wasm"), 3 << 30);
    let engine = sandgen::Engine::builder()
        .cache_dir(dir.join("cache"))
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .load_memory(1 << 30)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = engine.load(&huge).unwrap_err();
    assert_error(
        &error,
        ErrorKind::LoadLimit,
        "is 3072 MiB, more than its load memory of 1024 MiB can compile; raise it with `--load-memory MIB`",
    );
    eprintln!("refused in {:?}", started.elapsed());
    std::fs::remove_file(&huge).unwrap();

    let (before, after) =
        crate::util::run_probe("compiling::large_plugin_probe", LARGE_PROBE, "peak kib: ");
    eprintln!("caller peak RSS {before} KiB before loading a 400 MiB plugin, {after} KiB after");
    assert!(
        after < before + 64 * 1024,
        "the caller's peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
#[ignore = "the child process of a_large_plugin_file_is_bounded_and_never_held_whole"]
fn large_plugin_probe() {
    let _watch = crate::util::watchdog("compiling::large_plugin_probe");
    std::env::var(LARGE_PROBE).expect("run by a_large_plugin_file_is_bounded_and_never_held_whole");
    let dir = temp_dir("large-plugin-probe");
    let large = sparse_component(&dir.join("large.wasm"), 400 << 20);
    let engine = sandgen::Engine::builder()
        .cache_dir(dir.join("cache"))
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .load_memory(512 << 20)
        .build()
        .unwrap();
    let peak = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = peak();
    let error = engine.load(&large).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Load | ErrorKind::LoadLimit),
        "{error}"
    );
    println!("peak kib: {before} {}", peak());
}
