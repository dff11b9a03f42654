//! Loading plugins: every kind of bad input gets its own clear error; listing
//! generators, with its timeouts; `Engine::new` with its defaults; what a
//! plugin and an iterable say of themselves.

use std::path::Path;
use std::time::Duration;

use crate::util::{Captured, artifacts, assert_error, engine, isolation, plugin, spdl};
use sandgen::{Encoding, ErrorKind, Isolation};

#[test]
fn missing_file() {
    let _watch = crate::util::watchdog("loading::missing_file");
    let error = engine().load("/no/such/plugin.wasm").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Load);
    assert!(
        error
            .to_string()
            .starts_with("failed to read plugin `/no/such/plugin.wasm`: "),
        "{error}"
    );
}

#[test]
fn not_wasm() {
    let _watch = crate::util::watchdog("loading::not_wasm");
    let error = engine()
        .load_bytes("notes", b"just some text, not wasm")
        .unwrap_err();
    assert_error(&error, ErrorKind::Load, "`notes` is not WebAssembly");
}

#[test]
fn core_module_is_not_a_component() {
    let _watch = crate::util::watchdog("loading::core_module_is_not_a_component");
    // The smallest valid core module: magic and version 1.
    let error = engine().load_bytes("core", b"\0asm\x01\0\0\0").unwrap_err();
    assert_error(
        &error,
        ErrorKind::Load,
        "is a core WebAssembly module, not a component",
    );
}

#[test]
fn truncated_component_does_not_compile() {
    let _watch = crate::util::watchdog("loading::truncated_component_does_not_compile");
    let bytes = std::fs::read(artifacts::FIXTURE_RAW).unwrap();
    let error = engine()
        .load_bytes("cut", &bytes[..bytes.len() / 2])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Load);
    assert!(
        error
            .to_string()
            .starts_with("failed to compile plugin `cut`: "),
        "{error}"
    );
}

#[test]
fn wrong_world_is_incompatible() {
    let _watch = crate::util::watchdog("loading::wrong_world_is_incompatible");
    let error = engine().load(artifacts::FIXTURE_WRONG_WORLD).unwrap_err();
    assert_error(
        &error,
        ErrorKind::Incompatible,
        "is not a sandgen plugin: it does not export `sandgen:generator/generator@0.1.0`",
    );
}

#[test]
fn generators_are_listed() {
    let _watch = crate::util::watchdog("loading::generators_are_listed");
    let names: Vec<String> = spdl()
        .generators()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(
        names,
        [
            "range",
            "fail_at",
            "iter_fails",
            "create_fails",
            "announce",
            "shuffle",
            "config_echo",
            "panic_at",
            "sleep",
            "spin",
            "bytes",
            "environment",
            "allocate",
            "recurse",
            "fs_probe",
            "net_probe",
            "reserve_then_panic",
            "random",
            "sharded",
            "worker",
            "busy",
            "blocks",
            "flaky",
        ]
    );
}

#[test]
fn unknown_generator_is_a_create_failure() {
    let _watch = crate::util::watchdog("loading::unknown_generator_is_a_create_failure");
    let error = spdl().generator("nope").build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CreateFailed);
    assert!(
        error.to_string().starts_with("create failed in generator nope: this plugin has no generator named `nope`; it has: range, "),
        "{error}"
    );
}

#[test]
fn bad_options_are_invalid_input() {
    let _watch = crate::util::watchdog("loading::bad_options_are_invalid_input");
    let error = spdl()
        .generator("range")
        .buffer_size(0)
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let error = spdl()
        .generator("range")
        .dir("/no/such/dir", "/data")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let error = spdl()
        .generator("range")
        .args(&3u64)
        .encoding(sandgen::Encoding::Json)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InvalidInput,
        "call `encoding` before `args`",
    );
    let zero = std::time::Duration::ZERO;
    for (builder, words) in [
        (spdl().generator("range").fuel(0), "fuel must be at least 1"),
        (
            spdl().generator("range").timeout(zero),
            "timeout must be longer than zero",
        ),
        (
            spdl().generator("range").buffer_bytes(0),
            "buffer bytes must be at least 1",
        ),
    ] {
        assert_error(
            &builder.build().unwrap_err(),
            ErrorKind::InvalidInput,
            words,
        );
    }
    // Arguments the encoding cannot express (JSON object keys must be strings).
    let args: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let error = spdl()
        .generator("range")
        .encoding(sandgen::Encoding::Json)
        .args(&args)
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::InvalidInput,
        "invalid args: cannot encode as JSON",
    );
}

#[test]
fn listing_a_plugin_that_hangs_times_out() {
    let _watch = crate::util::watchdog("loading::listing_a_plugin_that_hangs_times_out");
    let plugin = engine().load(artifacts::FIXTURE_HANG_LIST).unwrap();
    let started = std::time::Instant::now();
    let error = plugin
        .generators_with_timeout(std::time::Duration::from_millis(200))
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Timeout,
        "timed out listing its generators",
    );
    assert!(started.elapsed() < crate::util::limit(std::time::Duration::from_secs(5)));
}

/// Listing a plugin that never returns stops after the default 10 seconds.
#[test]
fn listing_times_out_after_10_seconds_by_default() {
    let _watch = crate::util::watchdog("loading::listing_times_out_after_10_seconds_by_default");
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

/// A plugin that imports `wasi:http` (a componentize-js build without
/// `-d http -d fetch-event`) is incompatible, with the hint to build it
/// without.
#[test]
fn a_plugin_that_imports_wasi_http_gets_the_build_hint() {
    let _watch =
        crate::util::watchdog("loading::a_plugin_that_imports_wasi_http_gets_the_build_hint");
    let error = engine().load(artifacts::FIXTURE_WANTS_HTTP).unwrap_err();
    assert_error(
        &error,
        ErrorKind::Incompatible,
        "needs imports that sandgen does not provide (only WASI 0.2 is): component imports instance `wasi:http/outgoing-handler@0.9.0`",
    );
    assert!(
        error
            .to_string()
            .ends_with("; there is no network, so build without wasi:http (componentize-js: `-d http -d fetch-event`)"),
        "{error}"
    );
}

both_isolations!(a_generator_name_with_a_nul_is_an_unknown_generator);
/// Whatever the caller names, nothing panics: a name with a NUL byte is
/// just a generator the plugin does not have.
fn a_generator_name_with_a_nul_is_an_unknown_generator() {
    let error = spdl().generator("ra\0nge").build().unwrap_err();
    assert_error(&error, ErrorKind::CreateFailed, "has no generator named");
}

/// An engine with its compile cache in `dir/cache`.
fn engine_caching_in(dir: &std::path::Path) -> sandgen::Engine {
    sandgen::Engine::builder()
        .cache_dir(dir.join("cache"))
        .build()
        .unwrap()
}

/// The description of the SPDL fixture's `blocks` generator, which the
/// rewrite tests change by one byte.
fn description(plugin: &sandgen::Plugin) -> String {
    let generators = plugin.generators().unwrap();
    let blocks = generators.iter().find(|g| g.name == "blocks").unwrap();
    blocks.description.clone()
}

/// A plugin file rewritten in place with other contents of the same size,
/// its modification time set back, is read and compiled afresh, never
/// served the old compilation (the cache finds plugin files by a hash of
/// their contents, taken at every load).
#[test]
fn a_plugin_rewritten_in_place_is_loaded_afresh() {
    let _watch = crate::util::watchdog("loading::a_plugin_rewritten_in_place_is_loaded_afresh");
    let dir = crate::util::temp_dir("rewritten-plugin");
    let path = dir.join("plugin.wasm");
    let engine = || engine_caching_in(&dir);
    let original = std::fs::read(artifacts::FIXTURE_SPDL).unwrap();
    std::fs::write(&path, &original).unwrap();
    let first = engine().load(&path).unwrap();
    assert!(description(&first).contains("each byte 7,"));
    // The same size, one byte of the description changed.
    let at = original
        .windows(11)
        .position(|w| w == b"each byte 7")
        .expect("the description is in the component");
    let mut changed = original.clone();
    changed[at + 10] = b'8';
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut file = std::fs::File::options().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &changed).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.len(), meta.modified().unwrap()),
        (original.len() as u64, modified)
    );
    let second = engine().load(&path).unwrap();
    assert!(
        description(&second).contains("each byte 8,"),
        "the old compilation was served: {}",
        description(&second)
    );
    // The first plugin still runs what it loaded.
    assert!(description(&first).contains("each byte 7,"));
}

/// A plugin file rewritten through a shared writable mapping whose pages
/// were already dirty changes no timestamp (no new page fault stamps it):
/// nothing about the file but its contents tells the rewrite. The next load
/// runs the new contents all the same, never the old compilation.
#[test]
#[cfg(target_os = "linux")]
fn a_plugin_rewritten_through_a_shared_mapping_is_loaded_afresh() {
    let _watch = crate::util::watchdog(
        "loading::a_plugin_rewritten_through_a_shared_mapping_is_loaded_afresh",
    );
    let dir = crate::util::temp_dir("mapped-plugin");
    let path = dir.join("plugin.wasm");
    let engine = || engine_caching_in(&dir);
    let original = std::fs::read(artifacts::FIXTURE_SPDL).unwrap();
    std::fs::write(&path, &original).unwrap();
    let at = original
        .windows(11)
        .position(|w| w == b"each byte 7")
        .expect("the description is in the component")
        + 10;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: a shared mapping of a file this test alone uses, of its
    // length, unmapped below; written only within it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            original.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let byte = map.cast::<u8>().wrapping_add(at);
    // Dirty the page that will change: its write fault stamps the times now.
    // SAFETY: within the mapping.
    unsafe { byte.write_volatile(byte.read_volatile()) };
    // Past the time after which the cache once trusted a file's identity.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let stat = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).unwrap();
        (meta.ino(), meta.len(), meta.mtime_nsec(), meta.ctime_nsec())
    };
    let first = engine().load(&path).unwrap();
    assert!(description(&first).contains("each byte 7,"));
    let before = stat(&path);
    // SAFETY: within the mapping.
    unsafe { byte.write_volatile(b'8') };
    eprintln!(
        "the file's (inode, size, mtime ns, ctime ns) {before:?} before the write, {:?} after",
        stat(&path)
    );
    let second = engine().load(&path).unwrap();
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(map, original.len()) };
    assert!(
        description(&second).contains("each byte 8,"),
        "the old compilation was served: {}",
        description(&second)
    );
}

/// `Engine::new` works with its defaults (the cache from the environment).
#[test]
fn engine_new_loads_and_runs_a_plugin() {
    let _watch = crate::util::watchdog("loading::engine_new_loads_and_runs_a_plugin");
    let engine = sandgen::Engine::new().unwrap();
    let plugin = engine.load(artifacts::FIXTURE_KINDS).unwrap();
    assert_eq!(plugin.generators().unwrap()[0].name, "kinds");
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
            let pid = iterable.worker_pid().unwrap();
            assert!(Path::new(&format!("/proc/{pid}")).exists());
            assert_ne!(pid, std::process::id());
        }
        _ => assert_eq!(iterable.worker_pid(), None),
    }
    assert_eq!(iterable.iter::<u64>().unwrap().count(), 1);
    drop(iterable);
    assert_eq!(captured.lines(), ["[renamed/announce stderr] produced 0"]);
}

/// A huge value is echoed cut in the message that names it (its start and
/// its length), so that it cannot make a huge error line.
#[test]
fn huge_values_are_cut_in_messages() {
    let _watch = crate::util::watchdog("loading::huge_values_are_cut_in_messages");
    let short = |error: &sandgen::Error, length: usize| {
        let message = error.to_string();
        assert!(message.len() < 1024, "a message of {} bytes", message.len());
        assert!(
            message.contains(&format!("… ({length} bytes)")),
            "{message}"
        );
    };
    let name = "g".repeat(100_000);
    let error = spdl().generator(&name).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    short(&error, 100_000);
    let dir = format!("/{}", "d".repeat(10_000));
    let error = spdl()
        .generator("range")
        .dir(&dir, "/data")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    short(&error, 10_001);
    let path = format!("/{}.wasm", "p".repeat(10_000));
    let error = engine().load(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Load);
    short(&error, 10_006);
}
