//! Sandbox defaults and traps: nothing leaks in, failures keep the guest's
//! own words, memory is capped (by default 1 GiB), granted directories
//! cannot be escaped or changed, there is no UDP and stdin is empty.

use std::os::unix::fs::symlink;
use std::time::Duration;

use crate::util::{Captured, assert_error, pass_error, probing, spdl, temp_dir};
use sandgen::ErrorKind;
use serde_json::json;

fn environment(builder: sandgen::IterableBuilder) -> Vec<String> {
    let iterable = builder.build().unwrap();
    iterable.iter().unwrap().collect::<Result<_, _>>().unwrap()
}

/// What every worker sees of itself: its index and how many
/// workers there are, also for one.
const WORKER_ONE_OF_ONE: [&str; 2] = ["env SANDGEN_WORKER_ID=0", "env SANDGEN_NUM_WORKERS=1"];

both_isolations!(guest_sees_no_environment_and_no_arguments_by_default);
fn guest_sees_no_environment_and_no_arguments_by_default() {
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(
        environment(spdl().generator("environment")),
        WORKER_ONE_OF_ONE
    );
}

both_isolations!(granted_environment_is_visible);
fn granted_environment_is_visible() {
    let seen = environment(
        spdl()
            .generator("environment")
            .env("DATASET", "train")
            .env("SEED", "7"),
    );
    assert_eq!(seen[..2], ["env DATASET=train", "env SEED=7"]);
    assert_eq!(seen[2..], WORKER_ONE_OF_ONE);
}

both_isolations!(panic_keeps_the_guest_message);
fn panic_keeps_the_guest_message() {
    let captured = Captured::default();
    let iterable = spdl()
        .generator("panic_at")
        .args(&json!({ "at": 2, "message": "kaboom 42" }))
        .on_output(captured.handler())
        .build()
        .unwrap();
    let error = iterable
        .iter::<u64>()
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Trap);
    let message = error.to_string();
    assert!(
        message.starts_with("generator panic_at trapped while iterating: "),
        "{message}"
    );
    assert!(
        message.contains("panicked at tests/fixtures/spdl/src/lib.rs:"),
        "{message}"
    );
    assert!(message.ends_with(": kaboom 42)"), "{message}");
    assert!(error.guest_stderr().unwrap().contains("kaboom 42"));
    assert!(error.backtrace().is_some_and(|b| !b.is_empty()));
    // The guest's stderr also reached the output handler, prefixed.
    assert!(
        captured
            .lines()
            .contains(&"[fixture_spdl/panic_at stderr] kaboom 42".to_owned())
    );
}

both_isolations!(panic_in_the_initializer_is_a_trap_at_build);
fn panic_in_the_initializer_is_a_trap_at_build() {
    let error = spdl()
        .generator("range")
        .args(&1u64)
        .config(&json!({ "panic": "bad config" }))
        .on_output(|_| {})
        .build()
        .unwrap_err();
    assert_error(&error, ErrorKind::Trap, "in the initializer");
    assert!(error.to_string().contains("bad config"), "{error}");
}

both_isolations!(memory_limit_is_enforced_and_named);
fn memory_limit_is_enforced_and_named() {
    let error = spdl()
        .generator("allocate")
        .args(&64usize)
        .memory_limit(16 << 20)
        .on_output(|_| {})
        .build()
        .unwrap()
        .iter::<usize>()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert_error(&error, ErrorKind::MemoryLimit, "memory limit of 16 MiB");
    // Within the cap, the same allocation works.
    let iterable = spdl()
        .generator("allocate")
        .args(&8usize)
        .memory_limit(64 << 20)
        .build()
        .unwrap();
    let sizes: Vec<usize> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(sizes, [8 << 20]);
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

both_isolations!(timeout_during_initialization);
fn timeout_during_initialization() {
    let started = std::time::Instant::now();
    let error = spdl()
        .generator("range")
        .args(&1u64)
        .config(&json!({ "spin": true }))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::Timeout,
        "timed out during initialization",
    );
    assert!(started.elapsed() < crate::util::limit(Duration::from_secs(5)));
}

both_isolations!(a_coped_with_memory_refusal_is_not_a_memory_limit);
/// A guest that handled a refused allocation (`try_reserve`) and trapped
/// later for another reason: a trap, not a memory limit.
fn a_coped_with_memory_refusal_is_not_a_memory_limit() {
    let iterable = spdl()
        .generator("reserve_then_panic")
        .args(&128usize)
        .memory_limit(64 << 20)
        .on_output(|_| {})
        .build()
        .unwrap();
    let error = crate::util::pass_error::<u64>(&iterable);
    assert_error(&error, ErrorKind::Trap, "unrelated bug");
}

both_isolations!(output_lines_and_items_keep_their_order);
/// Guest output and items reach the caller in the order the guest produced
/// them, in both modes: `announce` prints `produced i` before it yields i,
/// so when item i arrives, its line (and every earlier one) has arrived.
fn output_lines_and_items_keep_their_order() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let iterable = spdl()
        .generator("announce")
        .args(&10_000u64)
        .buffer_size(8)
        .on_output(move |line| sink.lock().unwrap().push(line.text.to_owned()))
        .build()
        .unwrap();
    for _ in 0..3 {
        lines.lock().unwrap().clear();
        for (i, item) in iterable.iter::<u64>().unwrap().enumerate() {
            assert_eq!(item.unwrap(), i as u64);
            let seen = lines.lock().unwrap();
            assert!(
                seen.get(i)
                    .is_some_and(|line| *line == format!("produced {i}")),
                "item {i} arrived before its line `produced {i}`; lines so far end with {:?}",
                seen.last()
            );
        }
    }
}

/// The SDK fixture with `count` extra core instances beside the plugin, each
/// of a module with one memory of `pages` 64 KiB pages (or none): a
/// component may hold many core instances, and each may bring memories of
/// its own. The extra instances are created when the plugin is
/// instantiated, before any of its code runs.
fn spdl_with_extra_instances(name: &str, count: u32, pages: Option<u64>) -> crate::util::Fixture {
    let plugin = std::fs::read(crate::util::artifacts::FIXTURE_SPDL).unwrap();
    let modules = core_modules(&plugin);
    let mut module = wasm_encoder::Module::new();
    if let Some(pages) = pages {
        let mut memories = wasm_encoder::MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
    }
    let mut hostile = plugin;
    use wasm_encoder::ComponentSection;
    wasm_encoder::ModuleSection(&module).append_to_component(&mut hostile);
    let mut instances = wasm_encoder::InstanceSection::new();
    for _ in 0..count {
        instances.instantiate::<[(&str, wasm_encoder::ModuleArg); 0], &str>(modules, []);
    }
    instances.append_to_component(&mut hostile);
    let path = crate::util::temp_dir(name).join("hostile.wasm");
    std::fs::write(&path, hostile).unwrap();
    crate::util::plugin(path.to_str().unwrap())
}

/// How many core modules a component defines at its top level (so the next
/// one gets this index): its sections, walked without a parser.
fn core_modules(component: &[u8]) -> u32 {
    let mut rest = &component[8..];
    let mut modules = 0;
    while let Some((&id, tail)) = rest.split_first() {
        let (mut size, mut shift, mut used) = (0usize, 0, 0);
        loop {
            let byte = tail[used];
            size |= usize::from(byte & 0x7f) << shift;
            used += 1;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        modules += u32::from(id == 1);
        rest = &tail[used + size..];
    }
    modules
}

/// The error of building `range` of `hostile` with `memory` bytes of cap.
fn build_error(hostile: &crate::util::Fixture, memory: u64) -> sandgen::Error {
    hostile
        .generator("range")
        .args(&3u64)
        .memory_limit(memory)
        .on_output(|_| {})
        .build()
        .unwrap_err()
}

both_isolations!(the_memory_cap_covers_every_memory_of_the_plugin);
/// Eight memories of 16 MiB each fit one by one under a 64 MiB cap, not
/// together: the cap is the plugin's, all memories summed (initial sizes
/// included), so instantiation fails before any plugin code runs.
fn the_memory_cap_covers_every_memory_of_the_plugin() {
    let hostile = spdl_with_extra_instances("eight-memories", 8, Some(256));
    let error = build_error(&hostile, 64 << 20);
    assert_error(&error, ErrorKind::MemoryLimit, "memory limit of 64 MiB");
    assert!(
        error.to_string().contains("while instantiating the plugin"),
        "{error}"
    );
    // Two of them fit beside the plugin's own memory: the component is
    // sound, and only the sum was refused.
    let fitting = spdl_with_extra_instances("two-memories", 2, Some(256));
    let iterable = fitting
        .generator("range")
        .args(&3u64)
        .memory_limit(64 << 20)
        .build()
        .unwrap();
    let items: Vec<u64> = iterable.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [0, 1, 2]);
}

both_isolations!(a_plugin_holds_few_memories);
/// Many tiny memories are refused by their number, however small each is.
fn a_plugin_holds_few_memories() {
    let hostile = spdl_with_extra_instances("many-memories", 20, Some(1));
    let error = build_error(&hostile, sandgen::DEFAULT_MEMORY_LIMIT);
    assert_error(
        &error,
        ErrorKind::MemoryLimit,
        "needs more than 16 memories",
    );
}

both_isolations!(a_plugin_holds_few_instances);
/// Core instances without any memory are still host memory: their number is
/// bounded.
fn a_plugin_holds_few_instances() {
    let hostile = spdl_with_extra_instances("many-instances", 100, None);
    let error = build_error(&hostile, sandgen::DEFAULT_MEMORY_LIMIT);
    assert_error(
        &error,
        ErrorKind::MemoryLimit,
        "needs more than 64 core instances",
    );
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

/// A guest in thread isolation holds at most 256 WASI handles at once, so
/// that a plugin given one directory cannot take its caller's file
/// descriptors (it once opened 19,993 of 20,000): past them it fails with
/// `MemoryLimit`, saying so, and its files are closed with it.
#[test]
fn a_guest_cannot_take_the_callers_file_descriptors() {
    let _watch = crate::util::watchdog("sandbox::a_guest_cannot_take_the_callers_file_descriptors");
    let root = grants_tree("handles");
    let hold = |n: usize| {
        probing("fs")
            .isolation(sandgen::Isolation::Thread)
            .dir(root.join("granted"), "/data")
            .args(&[format!("hold {n} /data/inside.txt")])
    };
    assert_eq!(outcomes(hold(200)), ["hold 200 /data/inside.txt: ok 200"]);
    let error = pass_error::<String>(&hold(20_000).build().unwrap());
    assert_error(
        &error,
        sandgen::ErrorKind::MemoryLimit,
        "needs more than 256 WASI handles at once",
    );
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
