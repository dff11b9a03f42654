//! sandgen errors as Python exceptions: the classes live in
//! `sandgen/_errors.py` (one per kind), made here through its
//! `_from_native`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception of a sandgen error.
pub(crate) fn from_sandgen(py: Python<'_>, error: &sandgen::Error) -> PyErr {
    new(
        py,
        error.kind().name(),
        &error.to_string(),
        error.plugin_message(),
        error.guest_stderr(),
        error.backtrace(),
    )
}

/// A `sandgen.Error` of `kind` (its subclass for that kind).
pub(crate) fn new(
    py: Python<'_>,
    kind: &str,
    message: &str,
    plugin_message: Option<&str>,
    guest_stderr: Option<&str>,
    backtrace: Option<&str>,
) -> PyErr {
    let made = FROM_NATIVE
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("sandgen._errors")?
                .getattr("_from_native")?
                .unbind())
        })
        .and_then(|from_native| {
            from_native
                .bind(py)
                .call1((kind, message, plugin_message, guest_stderr, backtrace))
        });
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(error) => error,
    }
}
