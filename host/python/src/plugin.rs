//! `Plugin`: a loaded plugin, which lists its generators and makes their
//! iterables.

use pyo3::prelude::*;

use crate::errors;
use crate::iterable::Iterable;
use crate::options::{IterableOptions, Ready};
use crate::wait::interruptible;

/// A loaded plugin.
#[pyclass(frozen, module = "sandgen._native")]
pub(crate) struct Plugin {
    plugin: sandgen::Plugin,
    path: String,
}

impl Plugin {
    /// `plugin`, whose `path` shows `path` (its file, or the name given to
    /// `load_bytes`).
    pub(crate) fn new(plugin: sandgen::Plugin, path: String) -> Plugin {
        Plugin { plugin, path }
    }
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

    /// The seconds this process spent compiling the plugin (0.0 when it
    /// came compiled from the cache).
    #[getter]
    fn compile_time(&self) -> f64 {
        self.plugin.compile_time().as_secs_f64()
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

    /// Starts the workers and creates the generator's iterable; the options
    /// (a `sandgen._IterableOptions`) were checked by the Python side.
    /// `resume`: a position's JSON (`Iterable.state_dict`) to start at.
    #[pyo3(signature = (options, resume=None))]
    fn iterable(
        &self,
        py: Python<'_>,
        options: IterableOptions<'_>,
        resume: Option<&str>,
    ) -> PyResult<Iterable> {
        let Ready {
            mut builder,
            decoding,
            isolation,
            output,
        } = options.apply(py, &self.plugin)?;
        if let Some(text) = resume {
            let position = sandgen::Position::from_json(text)
                .map_err(|error| errors::from_sandgen(py, &error))?;
            builder = builder.resume(position);
        }
        let built = interruptible(py, "start a worker", move || builder.build());
        // What the initializer and `create` printed, before what they made
        // (or the error).
        output.deliver(py);
        match built? {
            Ok(iterable) => Ok(Iterable::new(iterable, decoding, isolation, output)),
            Err(error) => Err(errors::from_sandgen(py, &error)),
        }
    }
}
