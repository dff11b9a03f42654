//! `Iterable`: a generator's iterable, whose workers stay alive across
//! passes.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use sandgen::{Encoding, Isolation, NextBatch};

use crate::errors;
use crate::output::Output;
use crate::pass::{Decoding, Pass};
use crate::wait::WAIT;

/// A position's pass and seed, its JSON (`Iterable.state_dict`) checked.
#[pyfunction]
pub(crate) fn read_position(py: Python<'_>, text: &str) -> PyResult<(u64, Option<u64>)> {
    let position =
        sandgen::Position::from_json(text).map_err(|error| errors::from_sandgen(py, &error))?;
    Ok((position.pass(), position.seed()))
}

/// A generator's iterable: its worker, alive across passes.
#[pyclass(frozen, module = "sandgen._native")]
pub(crate) struct Iterable {
    inner: Arc<sandgen::Iterable>,
    decoding: Arc<Decoding>,
    isolation: Isolation,
    output: Arc<Output>,
}

impl Iterable {
    /// `iterable`, whose passes make their items Python objects as
    /// `decoding` says.
    pub(crate) fn new(
        iterable: sandgen::Iterable,
        decoding: Decoding,
        isolation: Isolation,
        output: Arc<Output>,
    ) -> Iterable {
        Iterable {
            inner: Arc::new(iterable),
            decoding: Arc::new(decoding),
            isolation,
            output,
        }
    }
}

#[pymethods]
impl Iterable {
    /// Starts a pass.
    fn start(&self, py: Python<'_>) -> PyResult<Pass> {
        let batches = self
            .inner
            .batches()
            .map_err(|error| errors::from_sandgen(py, &error))?;
        Ok(Pass::new(
            self.inner.clone(),
            batches,
            self.decoding.clone(),
            self.output.clone(),
        ))
    }

    /// Runs the next pass in the workers without sending its items,
    /// waiting without the GIL in slices of [`WAIT`] (Ctrl-C stops it).
    fn skip_pass(&self, py: Python<'_>) -> PyResult<()> {
        let mut batches = self
            .inner
            .skip_pass_batches()
            .map_err(|error| errors::from_sandgen(py, &error))?;
        loop {
            let next = py.detach(|| batches.next_batch_within(WAIT));
            self.output.deliver(py);
            match next {
                Ok(NextBatch::End) => return Ok(()),
                // No batch comes from a skipped pass: waiting, or (from a
                // later library) an outcome that means the same.
                Ok(_) => py.check_signals()?,
                Err(error) => return Err(errors::from_sandgen(py, &error)),
            }
        }
    }

    /// Ends the worker (waiting for it, without the GIL).
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| inner.close());
        // The guests' last lines.
        self.output.deliver(py);
    }

    /// The iterable's position, as JSON (between passes, or of a pass
    /// that failed; a live pass's is its `Pass.state`).
    fn position(&self) -> String {
        self.inner.position().to_json()
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
        self.inner.worker_pid()
    }

    #[getter]
    fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_pids()
    }

    #[getter]
    fn num_workers(&self) -> usize {
        self.inner.workers()
    }

    /// The failures the passes survived, oldest first: one dict each, with
    /// `worker`, `pass`, `position`, `skipped`, `kind`, `action` and
    /// `message` (escaped, one line).
    #[getter]
    fn failures<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .failures()
            .iter()
            .map(|failure| {
                let dict = PyDict::new(py);
                dict.set_item("worker", failure.worker())?;
                dict.set_item("pass", failure.pass())?;
                dict.set_item("position", failure.position())?;
                dict.set_item("skipped", failure.skipped())?;
                dict.set_item("kind", failure.kind().name())?;
                dict.set_item("action", failure.action())?;
                let message = failure.error().to_string();
                dict.set_item("message", sandgen::escape_text(message.as_bytes()).as_ref())?;
                Ok(dict)
            })
            .collect()
    }
}

impl Drop for Iterable {
    /// The last handle ends the worker without holding the GIL (a worker
    /// may take up to a second to end).
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            let inner = &self.inner;
            let output = &self.output;
            Python::attach(|py| {
                py.detach(|| inner.close());
                output.deliver(py);
            });
        }
    }
}
