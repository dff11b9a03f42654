//! The options of `Plugin.iterable`. The Python side defines and checks
//! them once, as the frozen dataclass `sandgen._IterableOptions`; the native
//! `Plugin.iterable` takes that one object and reads it here, field by field
//! (each an attribute of the same name), into [`IterableOptions`].
//!
//! A new option is a field of the dataclass (and its check in
//! `sandgen._iterable_options`), a field here and its line in
//! [`IterableOptions::apply`], and a keyword of `Plugin.iterable`.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use sandgen::{Encoding, ErrorKind, Isolation, IterableBuilder, OnFailure, Sharding};

use crate::decode::{Decoder, Shape};
use crate::errors;
use crate::output::Output;
use crate::pass::Decoding;

/// `sandgen._IterableOptions`: the options of one iterable, checked, in the
/// units the library takes.
#[derive(FromPyObject)]
pub(crate) struct IterableOptions<'py> {
    /// The generator's name.
    #[pyo3(attribute)]
    generator: String,
    /// `"json"` or `"bincode"`.
    #[pyo3(attribute)]
    encoding: String,
    /// The generator's arguments, as JSON text (`None`: none given).
    #[pyo3(attribute)]
    args: Option<String>,
    /// The plugin's configuration, as JSON text (`None`: none given).
    #[pyo3(attribute)]
    config: Option<String>,
    /// `"thread"` or `"process"`.
    #[pyo3(attribute)]
    isolation: String,
    /// Items buffered ahead of the caller (`None`: the library's default).
    #[pyo3(attribute)]
    buffer_size: Option<usize>,
    /// The inactivity timeout, in seconds.
    #[pyo3(attribute)]
    timeout: Option<f64>,
    /// Each guest's memory limit, in bytes.
    #[pyo3(attribute)]
    memory_limit: u64,
    #[pyo3(attribute)]
    fuel: Option<u64>,
    /// Read-only directories, as `(host, guest)` paths.
    #[pyo3(attribute)]
    dirs: Vec<(String, String)>,
    /// The guest's environment, as `(name, value)`.
    #[pyo3(attribute)]
    env: Vec<(String, String)>,
    /// `item_type` as `sandgen._types.describe` describes it.
    #[pyo3(attribute)]
    item_shape: Option<Bound<'py, PyAny>>,
    /// `item_type` as messages name it (`""` without one).
    #[pyo3(attribute)]
    item_type_name: String,
    #[pyo3(attribute)]
    num_workers: usize,
    #[pyo3(attribute)]
    in_order: bool,
    /// `"plugin"` or `"items"`.
    #[pyo3(attribute)]
    sharding: String,
    #[pyo3(attribute)]
    seed: Option<u64>,
    /// Each worker's arguments, as JSON text (instead of `args`).
    #[pyo3(attribute)]
    worker_args: Option<Vec<String>>,
    /// `(index, count)`.
    #[pyo3(attribute)]
    shard: Option<(usize, usize)>,
    /// `on_output(worker, stream, line)`, called for each line a guest
    /// prints (the Python side gives the logging default).
    #[pyo3(attribute)]
    on_output: Bound<'py, PyAny>,
    /// The largest item, encoded, in bytes (`None`: the library's default).
    #[pyo3(attribute)]
    max_item_bytes: Option<u32>,
    /// Stack this many items into each batch (`None`: items one by one).
    #[pyo3(attribute)]
    batch_size: Option<usize>,
    /// Leave out a short last batch.
    #[pyo3(attribute)]
    drop_last: bool,
    /// `"stop"`, `"restart"` or `"skip"`.
    #[pyo3(attribute)]
    on_failure: String,
    #[pyo3(attribute)]
    max_restarts: u32,
}

/// An iterable ready to start: its builder with every option set, and what
/// the native `Iterable` keeps of the options.
pub(crate) struct Ready {
    pub(crate) builder: IterableBuilder,
    pub(crate) decoding: Decoding,
    pub(crate) isolation: Isolation,
    /// The guests' output lines, for `on_output`.
    pub(crate) output: Arc<Output>,
}

impl IterableOptions<'_> {
    /// Sets every option on a builder of `plugin`'s generator. A value the
    /// library refuses raises `InvalidInputError`.
    pub(crate) fn apply(self, py: Python<'_>, plugin: &sandgen::Plugin) -> PyResult<Ready> {
        let encoding: Encoding = self
            .encoding
            .parse()
            .map_err(|e: sandgen_wire::CodecError| invalid(py, e.to_string()))?;
        let isolation: Isolation = self
            .isolation
            .parse()
            .map_err(|e: sandgen::Error| invalid(py, e.to_string()))?;
        let sharding: Sharding = self
            .sharding
            .parse()
            .map_err(|e: sandgen::Error| invalid(py, e.to_string()))?;
        let on_failure: OnFailure = self
            .on_failure
            .parse()
            .map_err(|e: sandgen::Error| invalid(py, e.to_string()))?;
        let decoder = item_decoder(encoding, self.item_shape.as_ref())?;
        let output = Output::new(self.on_output.unbind());
        let mut builder = plugin
            .generator(&self.generator)
            .encoding(encoding)
            .isolation(isolation)
            .memory_limit(self.memory_limit)
            .workers(self.num_workers)
            .in_order(self.in_order)
            .sharding(sharding)
            .on_failure(on_failure)
            .max_restarts(self.max_restarts)
            .on_output(output.handler());
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        if let Some((index, count)) = self.shard {
            builder = builder.shard(index, count);
        }
        if let Some(json) = self.args {
            builder = builder.args_raw(encode(py, encoding, "args", json)?);
        }
        if let Some(json) = self.config {
            builder = builder.config_raw(encode(py, encoding, "config", json)?);
        }
        if let Some(per_worker) = self.worker_args {
            let encoded = per_worker
                .into_iter()
                .enumerate()
                .map(|(i, json)| encode(py, encoding, &format!("worker_args[{i}]"), json))
                .collect::<PyResult<Vec<_>>>()?;
            builder = builder.worker_args_raw(encoded);
        }
        if let Some(items) = self.buffer_size {
            builder = builder.buffer_size(items);
        }
        if let Some(seconds) = self.timeout {
            let timeout = Duration::try_from_secs_f64(seconds)
                .map_err(|e| invalid(py, format!("invalid timeout {seconds}: {e}")))?;
            builder = builder.timeout(timeout);
        }
        if let Some(units) = self.fuel {
            builder = builder.fuel(units);
        }
        if let Some(bytes) = self.max_item_bytes {
            builder = builder.max_item_bytes(bytes);
        }
        for (host, guest) in self.dirs {
            builder = builder.dir(host, guest);
        }
        for (key, value) in self.env {
            builder = builder.env(key, value);
        }
        Ok(Ready {
            builder,
            decoding: Decoding {
                decoder,
                item_type_name: self.item_type_name,
                batch_size: self.batch_size,
                drop_last: self.drop_last,
            },
            isolation,
            output,
        })
    }
}

/// An `InvalidInputError`.
fn invalid(py: Python<'_>, message: String) -> PyErr {
    errors::new(py, ErrorKind::InvalidInput, &message)
}

/// How the items of a pass become Python objects.
fn item_decoder(encoding: Encoding, item_shape: Option<&Bound<'_, PyAny>>) -> PyResult<Decoder> {
    Ok(match (encoding, item_shape) {
        (Encoding::Json, None) => Decoder::Json,
        (Encoding::Json, Some(shape)) => Decoder::JsonShaped(Shape::from_description(shape)?),
        (Encoding::Bincode, None) => Decoder::Raw,
        (Encoding::Bincode, Some(shape)) => match Shape::from_description(shape)? {
            Shape::Bytes => Decoder::Bytes,
            shape => Decoder::Bincode(shape),
        },
    })
}

/// A value given as JSON text (`name` in messages), in `encoding`: bincode
/// values are the bincode of the JSON value.
fn encode(py: Python<'_>, encoding: Encoding, name: &str, json: String) -> PyResult<Vec<u8>> {
    Ok(match encoding {
        Encoding::Json => json.into_bytes(),
        _ => {
            let value: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| invalid(py, format!("{name} is not valid JSON: {e}")))?;
            sandgen_wire::bincode_of_json(&value)
                .map_err(|e| invalid(py, format!("cannot encode {name} as bincode: {e}")))?
        }
    })
}
