//! Helpers for the end-to-end tests: a shared engine, plugins compiled once
//! per test binary, output capture and assertions.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sandgen::{Engine, Isolation, IterableBuilder, OutputLine, Plugin};
pub use sandgen_tests::artifacts;

/// Defines `$test::thread` and `$test::process`: the test function `$test`
/// run with each isolation mode, which [`Fixture::generator`] applies.
macro_rules! both_isolations {
    ($test:ident) => {
        mod $test {
            #[test]
            fn thread() {
                $crate::util::with_isolation(sandgen::Isolation::Thread, super::$test);
            }

            #[test]
            fn process() {
                $crate::util::with_isolation(sandgen::Isolation::Process, super::$test);
            }
        }
    };
}

thread_local! {
    static ISOLATION: Cell<Isolation> = const { Cell::new(Isolation::Thread) };
}

/// Runs `test` with `isolation` for the fixtures it builds.
pub fn with_isolation(isolation: Isolation, test: fn()) {
    ISOLATION.set(isolation);
    test();
}

/// The isolation mode of the running test.
pub fn isolation() -> Isolation {
    ISOLATION.get()
}

/// One engine per test binary: its compile cache in the target directory,
/// and the `sandgen` binary as its worker program.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::builder()
            .cache_dir(cache_dir())
            .worker_program(env!("CARGO_BIN_EXE_sandgen"))
            .build()
            .expect("engine")
    })
}

/// The compile cache of the tests (also for the CLI they run).
pub fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandgen-cache")
}

/// A plugin whose iterables use the running test's isolation mode.
#[derive(Clone, Debug)]
pub struct Fixture(Plugin);

impl Fixture {
    /// A builder for generator `name`, with the test's isolation mode.
    pub fn generator(&self, name: &str) -> IterableBuilder {
        self.0.generator(name).isolation(isolation())
    }

    /// The plugin's generators.
    pub fn generators(&self) -> Result<Vec<sandgen::GeneratorInfo>, sandgen::Error> {
        self.0.generators()
    }
}

/// The plugin at `path`, compiled once per test binary.
pub fn plugin(path: &str) -> Fixture {
    static PLUGINS: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    let mut plugins = plugins.lock().unwrap();
    let plugin = plugins
        .entry(path.to_owned())
        .or_insert_with(|| {
            engine()
                .load(path)
                .unwrap_or_else(|e| panic!("loading {path}: {e}"))
        })
        .clone();
    Fixture(plugin)
}

/// The SDK fixture that mirrors SPDL's test cases.
pub fn spdl() -> Fixture {
    plugin(artifacts::FIXTURE_SPDL)
}

/// The fixture written against the WIT without the SDK.
pub fn raw() -> Fixture {
    plugin(artifacts::FIXTURE_RAW)
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error that the first pass over `iterable` starts with.
#[track_caller]
pub fn pass_error<T: serde::de::DeserializeOwned>(iterable: &sandgen::Iterable) -> sandgen::Error {
    match iterable.iter::<T>().expect("a pass starts").next() {
        Some(Err(error)) => error,
        Some(Ok(_)) => panic!("the pass yielded an item instead of an error"),
        None => panic!("the pass ended without an error"),
    }
}

/// Asserts an error's kind and that its message contains `words`.
#[track_caller]
pub fn assert_error(error: &sandgen::Error, kind: sandgen::ErrorKind, words: &str) {
    assert_eq!(error.kind(), kind, "{error}");
    assert!(
        error.to_string().contains(words),
        "`{words}` is not in: {error}"
    );
}

static MEMORY: RwLock<()> = RwLock::new(());

/// Held by tests that allocate a lot (large items, many workers), so that a
/// test measuring the process's memory can run alone.
pub fn memory_heavy() -> RwLockReadGuard<'static, ()> {
    MEMORY.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that measures the process's memory: no memory-heavy test
/// runs meanwhile.
pub fn memory_exclusive() -> RwLockWriteGuard<'static, ()> {
    MEMORY.write().unwrap_or_else(|e| e.into_inner())
}

/// Collects the lines a guest prints, for assertions.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    lines: Arc<Mutex<Vec<String>>>,
    tx: Arc<Mutex<Option<crossbeam_channel::Sender<String>>>>,
}

impl Captured {
    /// A capture that also sends each line to the returned receiver.
    pub fn with_channel() -> (Captured, crossbeam_channel::Receiver<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let captured = Captured::default();
        *captured.tx.lock().unwrap() = Some(tx);
        (captured, rx)
    }

    /// The handler to pass to `on_output`.
    pub fn handler(&self) -> impl Fn(&OutputLine<'_>) + Send + Sync + 'static {
        let me = self.clone();
        move |line| {
            me.lines.lock().unwrap().push(line.to_string());
            if let Some(tx) = &*me.tx.lock().unwrap() {
                let _ = tx.send(line.text.to_owned());
            }
        }
    }

    /// Every line so far, as `[plugin/generator stream] text`.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}
