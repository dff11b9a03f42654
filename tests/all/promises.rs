//! Promises of README.md and SECURITY.md that no other area tests: the
//! edges of granted directories, the sandbox's other closed doors, guest
//! output in awkward shapes, the library's defaults, the compile cache, the
//! embedding path and the corners of the public API.

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sandgen::{Encoding, ErrorKind, GuestStream, Isolation};
use serde_json::json;

use crate::util::{
    Captured, Fixture, artifacts, assert_error, engine, isolation, output_within, pass_error,
    plugin, spdl, temp_dir,
};

fn probe() -> Fixture {
    plugin(artifacts::FIXTURE_PROBE)
}

/// A generator of the probe fixture, with JSON items.
fn probing(generator: &str) -> sandgen::IterableBuilder {
    probe().generator(generator).encoding(Encoding::Json)
}

/// Every item of one pass, as strings.
fn outcomes(builder: sandgen::IterableBuilder) -> Vec<String> {
    let iterable = builder.build().unwrap();
    iterable
        .iter::<String>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A granted folder `granted` inside `root`, with `inside.txt`, beside a
/// `secret.txt` it must not reach; in it, links that point out (absolute,
/// relative, to a folder) and one that stays inside; and `root/link`, a
/// link to the granted folder.
fn grants_tree(name: &str) -> std::path::PathBuf {
    let root = temp_dir(name);
    let granted = root.join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), "inside").unwrap();
    std::fs::write(root.join("secret.txt"), "secret").unwrap();
    symlink(root.join("secret.txt"), granted.join("abs")).unwrap();
    symlink("../secret.txt", granted.join("rel")).unwrap();
    symlink(&root, granted.join("dirlink")).unwrap();
    symlink("inside.txt", granted.join("inner")).unwrap();
    symlink(&granted, root.join("link")).unwrap();
    root
}

both_isolations!(granted_directories_cannot_be_escaped_or_changed);
/// `..`, absolute and relative links out, a link to a folder outside: all
/// refused; a link that stays inside works; a granted folder that is itself
/// a link works and is as closed; deleting, renaming, creating and writing
/// are refused, and the host's files are untouched.
fn granted_directories_cannot_be_escaped_or_changed() {
    let root = grants_tree("grants");
    let ops = [
        "read /data/inside.txt",
        "read /data/inner",
        "read /data/../secret.txt",
        "read /data/abs",
        "read /data/rel",
        "read /data/dirlink/secret.txt",
        "read /secret.txt",
        "list /data",
        "delete /data/inside.txt",
        "rename /data/inside.txt /data/moved.txt",
        "mkdir /data/new",
        "rmdir /data/dirlink",
        "write /data/inside.txt",
        "write /data/fresh.txt",
        "read /linked/inside.txt",
        "read /linked/../secret.txt",
    ];
    let got = outcomes(
        probing("fs")
            .dir(root.join("granted"), "/data")
            .dir(root.join("link"), "/linked")
            .args(&ops),
    );
    assert_eq!(
        got,
        [
            "read /data/inside.txt: ok inside",
            "read /data/inner: ok inside",
            "read /data/../secret.txt: error PermissionDenied",
            "read /data/abs: error PermissionDenied",
            "read /data/rel: error PermissionDenied",
            "read /data/dirlink/secret.txt: error PermissionDenied",
            "read /secret.txt: error NotFound",
            "list /data: ok abs,dirlink,inner,inside.txt,rel",
            "delete /data/inside.txt: error PermissionDenied",
            "rename /data/inside.txt /data/moved.txt: error PermissionDenied",
            "mkdir /data/new: error PermissionDenied",
            "rmdir /data/dirlink: error PermissionDenied",
            "write /data/inside.txt: error PermissionDenied",
            "write /data/fresh.txt: error PermissionDenied",
            "read /linked/inside.txt: ok inside",
            "read /linked/../secret.txt: error PermissionDenied",
        ]
    );
    let granted = root.join("granted");
    assert_eq!(
        std::fs::read_to_string(granted.join("inside.txt")).unwrap(),
        "inside"
    );
    for absent in ["moved.txt", "new", "fresh.txt"] {
        assert!(!granted.join(absent).exists(), "{absent} was created");
    }
    assert!(granted.join("dirlink").is_symlink());
}

both_isolations!(udp_is_refused);
/// No UDP either: binding a socket fails, and nothing reaches a listener.
fn udp_is_refused() {
    let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let got = outcomes(probing("udp").args(&address));
    assert_eq!(got, ["bind: error PermissionDenied"]);
    listener
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(listener.recv_from(&mut buf).is_err(), "a datagram arrived");
}

both_isolations!(stdin_is_empty);
fn stdin_is_empty() {
    assert_eq!(outcomes(probing("stdin")), ["stdin: ok 0 bytes"]);
}

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

both_isolations!(the_default_memory_limit_is_1_gib);
fn the_default_memory_limit_is_1_gib() {
    let iterable = spdl()
        .generator("allocate")
        .args(&1100u64)
        .on_output(|_| {})
        .build()
        .unwrap();
    assert_error(
        &pass_error::<u64>(&iterable),
        ErrorKind::MemoryLimit,
        "memory limit of 1024 MiB",
    );
}

/// Listing a plugin that never returns stops after the default 10 seconds.
#[test]
fn listing_times_out_after_10_seconds_by_default() {
    let _watch = crate::util::watchdog("promises::listing_times_out_after_10_seconds_by_default");
    let started = std::time::Instant::now();
    let error = plugin(artifacts::FIXTURE_HANG_LIST)
        .generators()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Timeout,
        "timed out listing its generators (after 10s)",
    );
    assert!(started.elapsed() >= Duration::from_secs(10));
}

both_isolations!(buffer_bytes_bound_how_far_the_worker_runs_ahead);
/// With room for 100,000 items but only 64 bytes, the worker runs ahead by
/// bytes: a few items (a batch of at most half the bytes, and one more
/// batch in flight), not thousands.
fn buffer_bytes_bound_how_far_the_worker_runs_ahead() {
    let (captured, lines) = Captured::with_channel();
    let iterable = spdl()
        .generator("announce")
        .args(&100_000u64)
        .buffer_size(100_000)
        .buffer_bytes(64)
        .on_output(captured.handler())
        .build()
        .unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    // Let the worker run as far as it may.
    std::thread::sleep(Duration::from_millis(200));
    let produced = lines.try_iter().count();
    assert!(
        (1..=32).contains(&produced),
        "{produced} items produced ahead with 64 bytes of buffer"
    );
}

both_isolations!(two_threads_cannot_iterate_one_iterable_at_once);
fn two_threads_cannot_iterate_one_iterable_at_once() {
    let iterable = spdl().generator("range").args(&3u64).build().unwrap();
    let pass = iterable.iter::<u64>().unwrap();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| iterable.iter::<u64>().map(|_| ()).unwrap_err());
        assert_error(
            &other.join().unwrap(),
            ErrorKind::Busy,
            "already in progress",
        );
    });
    assert_eq!(pass.collect::<Result<Vec<_>, _>>().unwrap(), [0, 1, 2]);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            iterable
                .iter::<u64>()
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        });
        assert_eq!(other.join().unwrap(), [0, 1, 2]);
    });
}

both_isolations!(public_accessors_say_what_they_hold);
/// `load_bytes` names the plugin in messages and output; an iterable knows
/// its generator, encoding and (in process isolation only) its worker's id.
fn public_accessors_say_what_they_hold() {
    let bytes = std::fs::read(artifacts::FIXTURE_SPDL).unwrap();
    let plugin = engine().load_bytes("renamed", &bytes).unwrap();
    assert_eq!(plugin.name(), "renamed");
    let captured = Captured::default();
    let iterable = plugin
        .generator("announce")
        .encoding(Encoding::Json)
        .args(&1u64)
        .isolation(isolation())
        .on_output(captured.handler())
        .build()
        .unwrap();
    assert_eq!(iterable.generator(), "announce");
    assert_eq!(iterable.encoding(), Encoding::Json);
    match isolation() {
        Isolation::Process => {
            let pid = iterable.worker_process_id().unwrap();
            assert!(Path::new(&format!("/proc/{pid}")).exists());
            assert_ne!(pid, std::process::id());
        }
        _ => assert_eq!(iterable.worker_process_id(), None),
    }
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 1);
    drop(iterable);
    assert_eq!(captured.lines(), ["[renamed/announce stderr] produced 0"]);
}

/// `Engine::new` works with its defaults (the cache from the environment).
#[test]
fn engine_new_loads_and_runs_a_plugin() {
    let _watch = crate::util::watchdog("promises::engine_new_loads_and_runs_a_plugin");
    let engine = sandgen::Engine::new().unwrap();
    let plugin = engine.load(artifacts::FIXTURE_KINDS).unwrap();
    assert_eq!(plugin.generators().unwrap()[0].name, "kinds");
}

/// The compile cache: a fresh directory is created private to the user, the
/// first load writes one entry per plugin and later loads reuse it.
#[test]
fn the_compile_cache_is_private_and_written_once() {
    let _watch = crate::util::watchdog("promises::the_compile_cache_is_private_and_written_once");
    let dir = temp_dir("private-cache").join("cache");
    let engine = sandgen::Engine::builder().cache_dir(&dir).build().unwrap();
    engine.load(artifacts::FIXTURE_KINDS).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "cache directory mode {mode:o}");
    let entries = |dir: &Path| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, modified)
            })
            .collect();
        found.sort();
        found
    };
    let first = entries(&dir);
    // The compiled file, its check file, and the record of the plugin
    // file's identity.
    let mut kinds: Vec<_> = first
        .iter()
        .map(|(p, _)| p.extension().unwrap().to_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["check", "cwasm", "source"], "{first:?}");
    let again = sandgen::Engine::builder().cache_dir(&dir).build().unwrap();
    again.load(artifacts::FIXTURE_KINDS).unwrap();
    assert_eq!(
        entries(&dir),
        first,
        "the second load wrote the cache again"
    );
}

/// The CLI's cache: `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen`.
#[test]
fn the_cli_cache_follows_xdg_then_home() {
    let _watch = crate::util::watchdog("promises::the_cli_cache_follows_xdg_then_home");
    let root = temp_dir("cache-env");
    let list = |env: &[(&str, &Path)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
        command
            .args(["list", artifacts::FIXTURE_KINDS])
            .env_remove("SANDGEN_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = output_within(&command, Duration::from_secs(180), "sandgen list");
        assert!(output.status.success(), "{output:?}");
    };
    list(&[
        ("XDG_CACHE_HOME", &root.join("xdg")),
        ("HOME", &root.join("home")),
    ]);
    assert!(root.join("xdg/sandgen").is_dir());
    assert!(!root.join("home/.cache").exists());
    list(&[("HOME", &root.join("home"))]);
    assert!(root.join("home/.cache/sandgen").is_dir());
}

/// A worker process that meets a corrupt compiled entry refuses to load it
/// (the checksum), and says so, instead of running it.
#[test]
fn a_worker_process_refuses_a_corrupt_cache_entry() {
    let _watch = crate::util::watchdog("promises::a_worker_process_refuses_a_corrupt_cache_entry");
    let dir = temp_dir("corrupt-cache");
    let engine = sandgen::Engine::builder()
        .cache_dir(&dir)
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .build()
        .unwrap();
    let plugin = engine.load(artifacts::FIXTURE_KINDS).unwrap();
    let entry = cache_files(&dir, "cwasm").pop().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    replace_file(&entry, &bytes);
    let error = plugin
        .generator("kinds")
        .isolation(Isolation::Process)
        .build()
        .unwrap_err();
    assert_error(&error, ErrorKind::Load, "checksum");
    // Truncated, likewise.
    replace_file(&entry, &bytes[..middle]);
    let error = plugin
        .generator("kinds")
        .isolation(Isolation::Process)
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Load, "{error}");
}

/// The embedding path with the default worker program: a program that
/// calls `run_worker_if_requested()` first thing is its own worker process.
#[test]
fn an_embedding_program_is_its_own_worker_process() {
    let _watch = crate::util::watchdog("promises::an_embedding_program_is_its_own_worker_process");
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/embed");
    assert!(example.exists(), "{} was not built", example.display());
    let mut outputs = Vec::new();
    for mode in ["thread", "process"] {
        let mut command = Command::new(&example);
        command
            .args([artifacts::EXAMPLE_TOKENIZE, mode])
            .env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
        let output = output_within(&command, Duration::from_secs(180), "the embed example");
        assert!(output.status.success(), "{mode}: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            text.ends_with(&format!("worker process: {}\n", mode == "process")),
            "{text}"
        );
        outputs.push(text.replace("worker process: true", "worker process: false"));
    }
    // The same windows in the same order either way.
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0].contains("epoch 1: "), "{}", outputs[0]);
}

both_isolations!(a_shadow_stack_overflow_says_what_it_likely_is);
/// A Rust guest that recurses with large frames runs off the start of its
/// linear memory (its shadow stack) before wasm's stack is full: the trap
/// is an out-of-bounds access, and the error says it is likely a stack
/// overflow.
fn a_shadow_stack_overflow_says_what_it_likely_is() {
    let iterable = probing("deep").on_output(|_| {}).build().unwrap();
    let error = pass_error::<u64>(&iterable);
    assert_error(
        &error,
        ErrorKind::Trap,
        "trapped while starting a pass: wasm trap: out of bounds memory access (likely a stack overflow",
    );
}

/// A guest that writes 64 MB to stderr faster than the caller takes it:
/// the worker process is held back by the pipe (no queue grows in it); its
/// peak resident memory, read from /proc, grows by far less than what was
/// written.
#[test]
fn a_stderr_flood_is_held_back_not_queued() {
    let _watch = crate::util::watchdog("promises::a_stderr_flood_is_held_back_not_queued");
    crate::util::set_isolation(Isolation::Process);
    let (builder, lines) = slow_flood("stderr");
    let iterable = builder.build().unwrap();
    let pid = iterable.worker_process_id().unwrap();
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

/// The compile cache trusts only entries bound to the very component and
/// engine at hand: another plugin's valid entry copied over this one's is
/// refused (and replaced), in the caller and in a worker process.
#[test]
fn a_cache_entry_is_bound_to_its_component() {
    let _watch = crate::util::watchdog("promises::a_cache_entry_is_bound_to_its_component");
    let dir = temp_dir("bound-cache");
    let engine = || {
        sandgen::Engine::builder()
            .cache_dir(&dir)
            .worker_program(env!("CARGO_BIN_EXE_sandgen"))
            .build()
            .unwrap()
    };
    engine().load(artifacts::FIXTURE_KINDS).unwrap();
    let kinds_entry = cache_files(&dir, "cwasm").pop().unwrap();
    let probe_plugin = engine().load(artifacts::FIXTURE_PROBE).unwrap();
    let probe_entry = cache_files(&dir, "cwasm")
        .into_iter()
        .find(|e| *e != kinds_entry)
        .unwrap();
    // The kinds entry (compiled file and check file), under the probe's
    // name: a worker process refuses it.
    for extension in ["cwasm", "check"] {
        replace_file(
            &probe_entry.with_extension(extension),
            &std::fs::read(kinds_entry.with_extension(extension)).unwrap(),
        );
    }
    let error = probe_plugin
        .generator("stdin")
        .isolation(Isolation::Process)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Load,
        "it was compiled from another component or engine (its key does not match)",
    );
    // A fresh load refuses it too, compiles the probe and repairs the entry.
    let names: Vec<String> = engine()
        .load(artifacts::FIXTURE_PROBE)
        .unwrap()
        .generators()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names[0], "fs");
    assert_ne!(
        std::fs::read(&probe_entry).unwrap(),
        std::fs::read(&kinds_entry).unwrap()
    );
}

/// A cache directory writable by others, a linked one, and an entry that is
/// not the user's own are not trusted: the CLI warns once and compiles in
/// memory, leaving what it found alone.
#[test]
fn an_untrusted_cache_is_not_used() {
    let _watch = crate::util::watchdog("promises::an_untrusted_cache_is_not_used");
    let root = temp_dir("untrusted-cache");
    let list = |cache: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
        command
            .args(["list", artifacts::FIXTURE_KINDS])
            .env("SANDGEN_CACHE_DIR", cache);
        let output = output_within(&command, Duration::from_secs(180), "sandgen list");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "kinds\tyields one item of each kind of value the SDK can write\n"
        );
        String::from_utf8(output.stderr).unwrap()
    };
    let open = root.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = list(&open);
    assert!(
        err.starts_with(&format!(
            "sandgen: warning: not using the compile cache `{}`: it is writable by others (mode 777)",
            open.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);

    let private = root.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let linked = root.join("linked");
    symlink(&private, &linked).unwrap();
    let err = list(&linked);
    assert!(err.contains("it is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);

    // An entry that belongs to someone else (as root, give it away).
    if running_as_root() {
        assert_eq!(list(&private), "");
        let entry = cache_files(&private, "cwasm").pop().unwrap();
        let before = std::fs::read(&entry).unwrap();
        std::os::unix::fs::chown(&entry, Some(65534), None).unwrap();
        list(&private);
        // Not read as an entry of ours: the compile replaced it with one
        // that is (the rename takes the user's ownership).
        let meta = std::fs::metadata(&entry).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
        assert_eq!(std::fs::read(&entry).unwrap(), before);
    }
}

/// Replaces a cache file as a new file renamed over it, private to the user
/// like the cache's own. (Never rewrite a cache file in place: a process
/// that has it mapped faults, SIGBUS, on the pages that are gone.)
fn replace_file(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("replacing");
    std::fs::write(&aside, contents).unwrap();
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The files of a cache directory with this extension, sorted.
fn cache_files(dir: &Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

/// Whether the tests run as root (as CI does): only root can give a file
/// away.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// Without `SANDGEN_CACHE_DIR`, `XDG_CACHE_HOME` and `HOME` there is no
/// cache: no shared fallback directory is used.
#[test]
fn without_a_home_there_is_no_cache() {
    let _watch = crate::util::watchdog("promises::without_a_home_there_is_no_cache");
    let fallback = std::env::temp_dir().join("sandgen-cache");
    let before = std::fs::read_dir(&fallback).map(|d| d.count()).ok();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandgen"));
    command
        .args(["list", artifacts::FIXTURE_KINDS])
        .env_remove("SANDGEN_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME");
    let output = output_within(&command, Duration::from_secs(180), "sandgen list");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stderr, b"");
    assert_eq!(std::fs::read_dir(&fallback).map(|d| d.count()).ok(), before);
}

/// In the library, the load limits hold where a worker program is set (the
/// compilation runs in it): a deadline too short is `LoadLimit`; without a
/// worker program the compilation runs in this process, without them.
#[test]
fn the_library_bounds_loading_with_a_worker_program() {
    let _watch =
        crate::util::watchdog("promises::the_library_bounds_loading_with_a_worker_program");
    let dir = temp_dir("library-load-limits");
    let bounded = sandgen::Engine::builder()
        .cache_dir(&dir)
        .worker_program(env!("CARGO_BIN_EXE_sandgen"))
        .load_timeout(Duration::from_micros(1))
        .build()
        .unwrap();
    let error = bounded.load(artifacts::FIXTURE_KINDS).unwrap_err();
    assert_error(
        &error,
        ErrorKind::LoadLimit,
        "took longer than its load timeout of 1µs",
    );
    let in_process = sandgen::Engine::builder()
        .cache_dir(&dir)
        .load_timeout(Duration::from_micros(1))
        .build()
        .unwrap();
    in_process.load(artifacts::FIXTURE_KINDS).unwrap();
    let error = sandgen::Engine::builder()
        .load_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InvalidInput,
        "the load timeout must be longer than zero",
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
    let (before, after) =
        crate::util::run_probe("promises::flood_probe", FLOOD_PROBE, "peak kib: ");
    eprintln!("caller peak RSS {before} KiB before 128 MB of guest output, {after} KiB after");
    assert!(
        after < before + 32 * 1024,
        "the caller's peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
#[ignore = "the child process of a_flood_of_guest_output_leaves_the_callers_memory_alone"]
fn flood_probe() {
    let mode = std::env::var(FLOOD_PROBE)
        .expect("run by promises::a_flood_of_guest_output_leaves_the_callers_memory_alone");
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
