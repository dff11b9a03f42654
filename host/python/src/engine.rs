//! Engines and loading: one engine per cache directory, worker command and
//! load limits, shared by every plugin this process loads; `load`,
//! `load_bytes`, and the entry point of worker processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use sandgen::ErrorKind;

use crate::errors;
use crate::plugin::Plugin;
use crate::wait::interruptible;

/// What an engine is made from: cache directory, worker command, load
/// limits (seconds, bytes).
type EngineSettings = (Option<PathBuf>, Vec<String>, (Option<f64>, Option<u64>));

/// One engine per cache directory and worker command, shared by every
/// plugin this process loads.
fn engine(
    cache_dir: Option<PathBuf>,
    worker_command: Vec<String>,
    load_limits: (Option<f64>, Option<u64>),
) -> Result<sandgen::Engine, sandgen::Error> {
    type Key = (Option<PathBuf>, Vec<String>, (Option<u64>, Option<u64>));
    static ENGINES: OnceLock<Mutex<HashMap<Key, sandgen::Engine>>> = OnceLock::new();
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (timeout, memory) = load_limits;
    let key = (
        cache_dir,
        worker_command,
        (timeout.map(f64::to_bits), memory),
    );
    if let Some(engine) = engines.get(&key) {
        return Ok(engine.clone());
    }
    let mut builder = sandgen::Engine::builder();
    if let Some(dir) = &key.0 {
        builder = builder.cache_dir(dir);
    }
    if let Some((program, args)) = key.1.split_first() {
        builder = builder.worker_command(program, args);
    }
    if let Some(seconds) = timeout {
        builder = builder.load_timeout(Duration::from_secs_f64(seconds));
    }
    if let Some(bytes) = memory {
        builder = builder.load_memory(bytes);
    }
    let engine = builder.build()?;
    engines.insert(key, engine.clone());
    Ok(engine)
}

/// Loads (compiling on a cache miss) the plugin at `path`.
#[pyfunction]
#[pyo3(signature = (path, cache_dir, worker_command, load_timeout, load_memory))]
pub(crate) fn load(
    py: Python<'_>,
    path: PathBuf,
    cache_dir: Option<PathBuf>,
    worker_command: Vec<String>,
    load_timeout: Option<f64>,
    load_memory: Option<u64>,
) -> PyResult<Plugin> {
    if let Some(seconds) = load_timeout
        && Duration::try_from_secs_f64(seconds).is_err()
    {
        return Err(errors::new(
            py,
            ErrorKind::InvalidInput,
            &format!("invalid load_timeout {seconds}"),
        ));
    }
    let shown = path.display().to_string();
    let settings = (cache_dir, worker_command, (load_timeout, load_memory));
    load_with(py, shown, settings, move |engine| engine.load(&path))
}

/// Loads a plugin from its bytes (`name` is what messages call it); the
/// compile cache is keyed by content, so a machine compiles it once.
#[pyfunction]
#[pyo3(signature = (name, data, cache_dir, worker_command, load_timeout, load_memory))]
pub(crate) fn load_bytes(
    py: Python<'_>,
    name: String,
    data: Vec<u8>,
    cache_dir: Option<PathBuf>,
    worker_command: Vec<String>,
    load_timeout: Option<f64>,
    load_memory: Option<u64>,
) -> PyResult<Plugin> {
    let settings = (cache_dir, worker_command, (load_timeout, load_memory));
    load_with(py, name.clone(), settings, move |engine| {
        engine.load_bytes(&name, &data)
    })
}

/// Loads a plugin with the engine for `settings`, on a helper thread (see
/// [`interruptible`]); `shown` is what the plugin's `path` shows.
fn load_with(
    py: Python<'_>,
    shown: String,
    settings: EngineSettings,
    load: impl FnOnce(&sandgen::Engine) -> Result<sandgen::Plugin, sandgen::Error> + Send + 'static,
) -> PyResult<Plugin> {
    let (cache_dir, worker_command, limits) = settings;
    let loaded = interruptible(py, "load", move || {
        load(&engine(cache_dir, worker_command, limits)?)
    })?;
    match loaded {
        Ok(plugin) => Ok(Plugin::new(plugin, shown)),
        Err(error) => Err(errors::from_sandgen(py, &error)),
    }
}

/// Runs this process as a worker when `args` ask for one, then exits it;
/// raises otherwise. The worker command of the engines above runs it.
#[pyfunction]
pub(crate) fn _run_worker(args: Vec<std::ffi::OsString>) -> PyResult<()> {
    match sandgen::run_worker_from_args(args) {
        Some(code) => std::process::exit(code),
        None => Err(pyo3::exceptions::PyValueError::new_err(
            "these arguments do not ask for a sandgen worker process",
        )),
    }
}
