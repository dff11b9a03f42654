//! `sandgen._native`: the Rust side of the `sandgen` Python package. It
//! converts at the edge and nothing more: workers, protocol, limits and
//! errors are the sandgen library's. The Python side (`python/sandgen`)
//! checks options and gives the API its shape.
//!
//! Every wait releases the GIL and looks for a pending signal (Ctrl-C)
//! every `WAIT`; items cross into Python a batch at a time.

mod decode;
mod errors;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sandgen::{Batch, Batches, Encoding, Isolation, NextBatch};

use crate::decode::{Decoder, Shape, Value};

/// How long a wait lasts before it looks for a signal.
const WAIT: Duration = Duration::from_millis(50);

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

/// Runs `work` on a thread of its own and waits for it without the GIL,
/// looking for signals in between: a Ctrl-C during a long compile or a
/// plugin's initializer raises `KeyboardInterrupt` at once (the work then
/// ends on its own, and what it made is dropped).
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (done, result) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name(format!("sandgen-{what}"))
        .spawn(move || {
            let _ = done.send(work());
        })
        .map_err(|e| {
            errors::new(
                py,
                "worker_died",
                &format!("cannot start a thread to {what}: {e}"),
                None,
                None,
                None,
            )
        })?;
    loop {
        match py.detach(|| result.recv_timeout(WAIT)) {
            Ok(value) => return Ok(value),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(errors::new(
                    py,
                    "worker_died",
                    &format!("the thread that was to {what} ended without a result"),
                    None,
                    None,
                    None,
                ));
            }
        }
    }
}

/// Loads (compiling on a cache miss) the plugin at `path`.
#[pyfunction]
#[pyo3(signature = (path, cache_dir, worker_command, load_timeout, load_memory))]
fn load(
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
            "invalid_input",
            &format!("invalid load_timeout {seconds}"),
            None,
            None,
            None,
        ));
    }
    let shown = path.display().to_string();
    let settings = (cache_dir, worker_command, (load_timeout, load_memory));
    load_with(py, shown, settings, move |engine| engine.load(&path))
}

/// What an engine is made from: cache directory, worker command, load
/// limits (seconds, bytes).
type EngineSettings = (Option<PathBuf>, Vec<String>, (Option<f64>, Option<u64>));

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
        Ok(plugin) => Ok(Plugin {
            plugin,
            path: shown,
        }),
        Err(error) => Err(errors::from_sandgen(py, &error)),
    }
}

/// Loads a plugin from its bytes (`name` is what messages call it); the
/// compile cache is keyed by content, so a machine compiles it once.
#[pyfunction]
#[pyo3(signature = (name, data, cache_dir, worker_command, load_timeout, load_memory))]
fn load_bytes(
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

/// Runs this process as a worker when `args` ask for one, then exits it;
/// raises otherwise. The worker command of the engines above runs it.
#[pyfunction]
fn _run_worker(args: Vec<std::ffi::OsString>) -> PyResult<()> {
    match sandgen::run_worker_from_args(args) {
        Some(code) => std::process::exit(code),
        None => Err(pyo3::exceptions::PyValueError::new_err(
            "these arguments do not ask for a sandgen worker process",
        )),
    }
}

/// A loaded plugin.
#[pyclass(frozen, module = "sandgen._native")]
struct Plugin {
    plugin: sandgen::Plugin,
    path: String,
}

#[pymethods]
impl Plugin {
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn name(&self) -> &str {
        self.plugin.name()
    }

    /// `[(name, description), ...]` in the plugin's order.
    fn generators(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        let plugin = self.plugin.clone();
        match interruptible(py, "list generators", move || plugin.generators())? {
            Ok(generators) => Ok(generators
                .into_iter()
                .map(|g| (g.name, g.description))
                .collect()),
            Err(error) => Err(errors::from_sandgen(py, &error)),
        }
    }

    /// Starts a worker and creates the generator's iterable; the options
    /// were checked by the Python side.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (generator, *, encoding, args, config, isolation, buffer_size, timeout,
                        memory_limit, fuel, dirs, env, item_shape, item_type_name,
                        num_workers, in_order, seed, worker_args, shard))]
    fn iterable(
        &self,
        py: Python<'_>,
        generator: String,
        encoding: &str,
        args: Option<String>,
        config: Option<String>,
        isolation: &str,
        buffer_size: Option<usize>,
        timeout: Option<f64>,
        memory_limit: u64,
        fuel: Option<u64>,
        dirs: Vec<(String, String)>,
        env: Vec<(String, String)>,
        item_shape: Option<Bound<'_, PyAny>>,
        item_type_name: String,
        num_workers: usize,
        in_order: bool,
        seed: Option<u64>,
        worker_args: Option<Vec<String>>,
        shard: Option<(usize, usize)>,
    ) -> PyResult<Iterable> {
        let invalid =
            |message: String| errors::new(py, "invalid_input", &message, None, None, None);
        let encoding: Encoding = encoding
            .parse()
            .map_err(|e: sandgen_wire::CodecError| invalid(e.to_string()))?;
        let isolation: Isolation = isolation
            .parse()
            .map_err(|e: sandgen::Error| invalid(e.to_string()))?;
        let decoder = match (encoding, item_shape) {
            (Encoding::Json, _) => Decoder::Json,
            (Encoding::Bincode, None) => Decoder::Raw,
            (Encoding::Bincode, Some(shape)) => match Shape::from_description(&shape)? {
                Shape::Bytes => Decoder::Bytes,
                shape => Decoder::Bincode(shape),
            },
        };
        let mut builder = self
            .plugin
            .generator(&generator)
            .encoding(encoding)
            .isolation(isolation)
            .memory_limit(memory_limit)
            .workers(num_workers)
            .in_order(in_order);
        if let Some(seed) = seed {
            builder = builder.seed(seed);
        }
        if let Some((index, count)) = shard {
            builder = builder.shard(index, count);
        }
        let encode = |name: &str, json: String| -> PyResult<Vec<u8>> {
            Ok(match encoding {
                Encoding::Json => json.into_bytes(),
                _ => {
                    let value: serde_json::Value = serde_json::from_str(&json)
                        .map_err(|e| invalid(format!("{name} is not valid JSON: {e}")))?;
                    sandgen_wire::bincode_of_json(&value)
                        .map_err(|e| invalid(format!("cannot encode {name} as bincode: {e}")))?
                }
            })
        };
        if let Some(json) = args {
            builder = builder.args_raw(encode("args", json)?);
        }
        if let Some(json) = config {
            builder = builder.config_raw(encode("config", json)?);
        }
        if let Some(per_worker) = worker_args {
            let encoded = per_worker
                .into_iter()
                .enumerate()
                .map(|(i, json)| encode(&format!("worker_args[{i}]"), json))
                .collect::<PyResult<Vec<_>>>()?;
            builder = builder.worker_args_raw(encoded);
        }
        if let Some(items) = buffer_size {
            builder = builder.buffer_size(items);
        }
        if let Some(seconds) = timeout {
            let timeout = Duration::try_from_secs_f64(seconds)
                .map_err(|e| invalid(format!("invalid timeout {seconds}: {e}")))?;
            builder = builder.timeout(timeout);
        }
        if let Some(units) = fuel {
            builder = builder.fuel(units);
        }
        for (host, guest) in dirs {
            builder = builder.dir(host, guest);
        }
        for (key, value) in env {
            builder = builder.env(key, value);
        }
        match interruptible(py, "start a worker", move || builder.build())? {
            Ok(iterable) => Ok(Iterable {
                inner: Arc::new(iterable),
                decoder: Arc::new(decoder),
                item_type_name,
                isolation,
            }),
            Err(error) => Err(errors::from_sandgen(py, &error)),
        }
    }
}

/// A generator's iterable: its worker, alive across passes.
#[pyclass(frozen, module = "sandgen._native")]
struct Iterable {
    inner: Arc<sandgen::Iterable>,
    decoder: Arc<Decoder>,
    item_type_name: String,
    isolation: Isolation,
}

#[pymethods]
impl Iterable {
    /// Starts a pass.
    fn start(&self, py: Python<'_>) -> PyResult<Pass> {
        let batches = self
            .inner
            .batches()
            .map_err(|error| errors::from_sandgen(py, &error))?;
        Ok(Pass {
            batches: Some(batches),
            decoder: self.decoder.clone(),
            item_type_name: self.item_type_name.clone(),
            delivered: 0,
            pending: None,
        })
    }

    /// Ends the worker (waiting for it, without the GIL).
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| inner.close());
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[getter]
    fn generator(&self) -> &str {
        self.inner.generator()
    }

    #[getter]
    fn isolation(&self) -> String {
        self.isolation.to_string()
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        match self.inner.encoding() {
            Encoding::Json => "json",
            _ => "bincode",
        }
    }

    #[getter]
    fn worker_pid(&self) -> Option<u32> {
        self.inner.worker_process_id()
    }

    #[getter]
    fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_process_ids()
    }

    #[getter]
    fn num_workers(&self) -> usize {
        self.inner.workers()
    }
}

impl Drop for Iterable {
    /// The last handle ends the worker without holding the GIL (a worker
    /// may take up to a second to end).
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            let inner = &self.inner;
            Python::attach(|py| py.detach(|| inner.close()));
        }
    }
}

/// One pass: a Python iterator over the pass's batches, each a `list` of
/// items made in one go (the Python side chains them into items with
/// `itertools.chain.from_iterable`, so a `for` loop pays no native call per
/// item). Dropping it stops the worker's pass.
#[pyclass(module = "sandgen._native")]
struct Pass {
    /// `None` once the pass ended, failed or was stopped.
    batches: Option<Batches>,
    decoder: Arc<Decoder>,
    item_type_name: String,
    /// Items handed out before the current batch.
    delivered: u64,
    /// An error met after some items of a batch: raised once those items
    /// are out.
    pending: Option<PyErr>,
}

/// A batch made ready without the GIL.
enum Prepared {
    /// Decoded items; `failed` tells which item could not be decoded (the
    /// items before it are kept).
    Values {
        values: Vec<Value>,
        failed: Option<(usize, String)>,
    },
    Encoded(Batch),
}

fn prepare(decoder: &Decoder, batch: Batch) -> Prepared {
    let decode = |one: &dyn Fn(&[u8]) -> Result<Value, String>| {
        let mut values = Vec::with_capacity(batch.len());
        for (index, item) in batch.items().enumerate() {
            match one(item) {
                Ok(value) => values.push(value),
                Err(reason) => {
                    return Prepared::Values {
                        values,
                        failed: Some((index, reason)),
                    };
                }
            }
        }
        Prepared::Values {
            values,
            failed: None,
        }
    };
    match decoder {
        Decoder::Json => decode(&decode::json),
        Decoder::Bincode(shape) => decode(&|item| decode::bincode(item, shape)),
        Decoder::Raw | Decoder::Bytes => Prepared::Encoded(batch),
    }
}

#[pymethods]
impl Pass {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batch's items, as a non-empty list.
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        loop {
            let Some(batches) = self.batches.as_mut() else {
                return Ok(None);
            };
            let decoder = &*self.decoder;
            let next = py.detach(|| {
                batches.next_batch_within(WAIT).map(|next| match next {
                    NextBatch::Batch(batch) => Some(Some(prepare(decoder, batch))),
                    NextBatch::End => Some(None),
                    // Pending, or an outcome a later library may add.
                    _ => None,
                })
            });
            match next {
                Err(error) => {
                    self.batches = None;
                    return Err(errors::from_sandgen(py, &error));
                }
                Ok(None) => py.check_signals()?,
                Ok(Some(None)) => {
                    self.batches = None;
                    return Ok(None);
                }
                Ok(Some(Some(prepared))) => {
                    let items = self.finish(py, prepared)?;
                    if let Some(error) = self.pending.take() {
                        if items.is_empty() {
                            return Err(error);
                        }
                        self.pending = Some(error);
                    }
                    self.delivered += items.len() as u64;
                    if !items.is_empty() {
                        return Ok(Some(PyList::new(py, items)?));
                    }
                }
            }
        }
    }

    /// Ends the pass early: the worker stops producing.
    fn close(&mut self) {
        self.batches = None;
    }
}

impl Pass {
    /// Makes a prepared batch Python objects; an item that cannot be decoded
    /// ends the pass, with the error kept in `pending`.
    fn finish(&mut self, py: Python<'_>, prepared: Prepared) -> PyResult<Vec<Py<PyAny>>> {
        match prepared {
            Prepared::Values { values, failed } => {
                let shape = match &*self.decoder {
                    Decoder::Bincode(shape) => Some(shape),
                    _ => None,
                };
                let items = values
                    .into_iter()
                    .map(|value| value.into_py(py, shape))
                    .collect::<PyResult<Vec<_>>>()?;
                if let Some((index, reason)) = failed {
                    self.pending = Some(self.decode_error(py, index, &reason));
                }
                Ok(items)
            }
            Prepared::Encoded(batch) => {
                let mut items = Vec::with_capacity(batch.len());
                for (index, item) in batch.items().enumerate() {
                    let payload = match &*self.decoder {
                        Decoder::Bytes => match decode::bytes_payload(item) {
                            Ok(payload) => payload,
                            Err(reason) => {
                                self.pending = Some(self.decode_error(py, index, &reason));
                                break;
                            }
                        },
                        _ => item,
                    };
                    items.push(PyBytes::new(py, payload).into_any().unbind());
                }
                Ok(items)
            }
        }
    }

    /// Ends the pass with a decode error for item `index` of the batch.
    fn decode_error(&mut self, py: Python<'_>, index: usize, reason: &str) -> PyErr {
        let generator = self
            .batches
            .as_ref()
            .map(|b| b.iterable().generator().to_owned())
            .unwrap_or_default();
        self.batches = None;
        let what = match &*self.decoder {
            Decoder::Json => "JSON".to_owned(),
            _ => format!("item_type {}", self.item_type_name),
        };
        errors::new(
            py,
            "decode",
            &format!(
                "cannot decode item {} of generator {generator} as {what}: {reason}",
                self.delivered + index as u64
            ),
            None,
            None,
            None,
        )
    }
}

/// The native half of the `sandgen` package.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(load_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(_run_worker, m)?)?;
    m.add_class::<Plugin>()?;
    m.add_class::<Iterable>()?;
    m.add_class::<Pass>()?;
    m.add("DEFAULT_MEMORY_LIMIT", sandgen::DEFAULT_MEMORY_LIMIT)?;
    m.add("DEFAULT_BUFFER_SIZE", sandgen::DEFAULT_BUFFER_SIZE)?;
    m.add("MAX_WORKERS", sandgen::MAX_WORKERS)?;
    Ok(())
}
