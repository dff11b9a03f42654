//! sandgen errors as Python exceptions: the classes live in
//! `sandgen/_errors.py` (one per kind), made here through its
//! `_from_native`. Kinds are [`ErrorKind`]s on this side; they become the
//! names that `sandgen.Error.kind` shows in one place, [`kind_name`].

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use sandgen::ErrorKind;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception of a sandgen error.
pub(crate) fn from_sandgen(py: Python<'_>, error: &sandgen::Error) -> PyErr {
    make(
        py,
        error.kind(),
        &error.to_string(),
        error.plugin_message(),
        error.guest_stderr(),
        error.backtrace(),
    )
}

/// A `sandgen.Error` of `kind` (its subclass for that kind) that the
/// extension raises itself: no plugin message, stderr or backtrace.
pub(crate) fn new(py: Python<'_>, kind: ErrorKind, message: &str) -> PyErr {
    make(py, kind, message, None, None, None)
}

/// The name by which Python knows `kind` (`sandgen.Error.kind`, the keys of
/// `sandgen._errors._CLASSES`): the library's [`ErrorKind::name`], in snake
/// case. `ErrorKind` is `#[non_exhaustive]`, so only the library can match
/// it exhaustively; its `name` does, so a new kind cannot go without a name.
fn kind_name(kind: ErrorKind) -> &'static str {
    kind.name()
}

/// A `sandgen.Error` of `kind`, made by `sandgen._errors._from_native`.
fn make(
    py: Python<'_>,
    kind: ErrorKind,
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
            from_native.bind(py).call1((
                kind_name(kind),
                message,
                plugin_message,
                guest_stderr,
                backtrace,
            ))
        });
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(error) => error,
    }
}
