//! Helpers for the end-to-end tests: a shared engine, plugins compiled once
//! per test binary, output capture and assertions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sandgen::{Engine, OutputLine, Plugin};
pub use sandgen_tests::artifacts;

/// One engine per test binary.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("engine"))
}

/// The plugin at `path`, compiled once per test binary.
pub fn plugin(path: &str) -> Plugin {
    static PLUGINS: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    let mut plugins = plugins.lock().unwrap();
    plugins
        .entry(path.to_owned())
        .or_insert_with(|| {
            engine()
                .load(path)
                .unwrap_or_else(|e| panic!("loading {path}: {e}"))
        })
        .clone()
}

/// The SDK fixture that mirrors SPDL's test cases.
pub fn spdl() -> Plugin {
    plugin(artifacts::FIXTURE_SPDL)
}

/// The fixture written against the WIT without the SDK.
pub fn raw() -> Plugin {
    plugin(artifacts::FIXTURE_RAW)
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
