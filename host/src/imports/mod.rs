//! What the host provides to plugins: one file per import, each with its
//! state, its `Host` implementation (or the crate that has it) and its
//! `add_to_linker`. [`add_to_linker`] is the one place that links them all.
//!
//! Today plugins import WASI 0.2 only ([`wasi`]), with nothing granted by
//! default. A new import (say `sandgen:host/worker-info`) is a new file here
//! with its state and `add_to_linker`, one line below, and a field in the
//! store's data (`guest/state.rs`).

pub(crate) mod wasi;

use wasmtime::component::Linker;

/// Links every host import into `linker`.
pub(crate) fn add_to_linker<T: wasmtime_wasi::WasiView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)
}
