//! The compile cache: private to its user and written once; where the CLI
//! keeps it (and that without a home there is none); entries bound to their
//! component and checked before a worker process maps them; a cache that is
//! not the user's own is not used; the load limits of the compilation that
//! fills it.

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sandgen::{ErrorKind, Isolation};

use crate::util::{artifacts, assert_error, output_within, temp_dir};

/// The compile cache: a fresh directory is created private to the user, the
/// first load writes one entry per plugin and later loads reuse it.
#[test]
fn the_compile_cache_is_private_and_written_once() {
    let _watch = crate::util::watchdog("cache::the_compile_cache_is_private_and_written_once");
    let dir = temp_dir("private-cache").join("cache");
    let engine = sandgen::Engine::builder().cache_dir(&dir).build().unwrap();
    let loaded = engine.load(artifacts::FIXTURE_KINDS).unwrap();
    assert!(!loaded.compile_time().is_zero(), "the first load compiles");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "cache directory mode {mode:o}");
    // Every file in it is the user's alone, whatever the umask says.
    for file in std::fs::read_dir(&dir).unwrap() {
        let file = file.unwrap().path();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: mode {mode:o}", file.display());
    }
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
    let reloaded = again.load(artifacts::FIXTURE_KINDS).unwrap();
    assert!(
        reloaded.compile_time().is_zero(),
        "a load from the cache compiles nothing: {:?}",
        reloaded.compile_time()
    );
    assert_eq!(
        entries(&dir),
        first,
        "the second load wrote the cache again"
    );
}

/// The CLI's cache: `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen`.
#[test]
fn the_cli_cache_follows_xdg_then_home() {
    let _watch = crate::util::watchdog("cache::the_cli_cache_follows_xdg_then_home");
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

/// Without `SANDGEN_CACHE_DIR`, `XDG_CACHE_HOME` and `HOME` there is no
/// cache: no shared fallback directory is used.
#[test]
fn without_a_home_there_is_no_cache() {
    let _watch = crate::util::watchdog("cache::without_a_home_there_is_no_cache");
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

/// A worker process that meets a corrupt compiled entry refuses to load it
/// (the checksum), and says so, instead of running it.
#[test]
fn a_worker_process_refuses_a_corrupt_cache_entry() {
    let _watch = crate::util::watchdog("cache::a_worker_process_refuses_a_corrupt_cache_entry");
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

/// The compile cache trusts only entries bound to the very component and
/// engine at hand: another plugin's valid entry copied over this one's is
/// refused (and replaced), in the caller and in a worker process.
#[test]
fn a_cache_entry_is_bound_to_its_component() {
    let _watch = crate::util::watchdog("cache::a_cache_entry_is_bound_to_its_component");
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
    let _watch = crate::util::watchdog("cache::an_untrusted_cache_is_not_used");
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

    // An entry that belongs to someone else (as root, give it away; for
    // anyone, `cache::trust::tests::only_the_users_own_private_files_are_trusted`
    // checks the owner test itself).
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

/// In the library, the load limits hold where a worker program is set (the
/// compilation runs in it): a deadline too short is `LoadLimit`; without a
/// worker program the compilation runs in this process, without them.
#[test]
fn the_library_bounds_loading_with_a_worker_program() {
    let _watch = crate::util::watchdog("cache::the_library_bounds_loading_with_a_worker_program");
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
