//! How the extension waits: never holding the GIL, and looking for a
//! pending signal (Ctrl-C) every [`WAIT`], so that a wait raises
//! `KeyboardInterrupt` as promptly as Python code would.

use std::time::Duration;

use pyo3::prelude::*;
use sandgen::ErrorKind;

use crate::errors;

/// How long a wait lasts before it looks for a signal.
pub(crate) const WAIT: Duration = Duration::from_millis(50);

/// Runs `work` on a thread of its own and waits for it without the GIL,
/// looking for signals in between: a Ctrl-C during a long compile or a
/// plugin's initializer raises `KeyboardInterrupt` at once (the work then
/// ends on its own, and what it made is dropped).
pub(crate) fn interruptible<T: Send + 'static>(
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
                ErrorKind::WorkerDied,
                &format!("cannot start a thread to {what}: {e}"),
            )
        })?;
    loop {
        match py.detach(|| result.recv_timeout(WAIT)) {
            Ok(value) => return Ok(value),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(errors::new(
                    py,
                    ErrorKind::WorkerDied,
                    &format!("the thread that was to {what} ended without a result"),
                ));
            }
        }
    }
}
