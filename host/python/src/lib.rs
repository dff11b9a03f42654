//! `sandgen._native`: the Rust side of the `sandgen` Python package. It
//! converts at the edge and nothing more: workers, protocol, limits and
//! errors are the sandgen library's. The Python side (`python/sandgen`)
//! checks options and gives the API its shape.
//!
//! Every wait releases the GIL and looks for a pending signal (Ctrl-C)
//! every `wait::WAIT`; items cross into Python a batch at a time.
//!
//! One file per class: `plugin` (`Plugin`), `iterable` (`Iterable`),
//! `pass` (`Pass`); `engine` holds the engines and the module's
//! functions (`load`, `load_bytes`, `_run_worker`), `options` the options
//! of `Plugin.iterable`, `decode` the decoding of items, `errors` the
//! exceptions, `output` the guests' output lines (for `on_output`) and
//! `wait` the interruptible waits.

mod array;
mod decode;
mod engine;
mod errors;
mod iterable;
mod json;
mod options;
mod output;
mod pass;
mod plugin;
mod stack;
mod wait;

use pyo3::prelude::*;

/// The native half of the `sandgen` package.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(engine::load, m)?)?;
    m.add_function(wrap_pyfunction!(engine::load_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(engine::_run_worker, m)?)?;
    m.add_function(wrap_pyfunction!(output::escape_text, m)?)?;
    m.add_function(wrap_pyfunction!(iterable::read_position, m)?)?;
    m.add_class::<plugin::Plugin>()?;
    m.add_class::<iterable::Iterable>()?;
    m.add_class::<pass::Pass>()?;
    m.add("DEFAULT_MEMORY_LIMIT", sandgen::DEFAULT_MEMORY_LIMIT)?;
    m.add("DEFAULT_BUFFER_SIZE", sandgen::DEFAULT_BUFFER_SIZE)?;
    m.add("MAX_WORKERS", sandgen::MAX_WORKERS)?;
    // The one version of the crates and the package (the workspace's).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
