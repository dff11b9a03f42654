//! Listing a plugin's generators: a fresh, sandboxed instance with nothing
//! granted, on a thread of its own, for a bounded time.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::guest::output::stderr_handler;
use crate::guest::{Guest, Interrupt, Linked, Stop};
use crate::options::{Grants, Limits};

/// The generators of a plugin: (name, description) in the plugin's order.
pub(crate) fn list_generators(
    linked: &Linked,
    timeout: Duration,
) -> Result<Vec<(String, String)>, Error> {
    let interrupt = Arc::new(Interrupt::default());
    let (done, result) = crossbeam_channel::bounded(1);
    let (lister, stop) = (linked.clone(), interrupt.clone());
    std::thread::Builder::new()
        .name("sandgen-list".into())
        .spawn(move || {
            let _ = done.send(list_in_guest(&lister, &stop));
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::WorkerDied,
                format!("failed to start a thread to list generators: {e}"),
            )
        })?;
    match result.recv_timeout(timeout) {
        Ok(listed) => listed,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            interrupt.trigger();
            Err(timed_out(linked, timeout))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the thread listing the generators of plugin {} died",
                linked.name
            ),
        )),
    }
}

fn timed_out(linked: &Linked, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "plugin {} timed out listing its generators (after {timeout:?})",
            linked.name
        ),
    )
}

fn list_in_guest(linked: &Linked, interrupt: &Interrupt) -> Result<Vec<(String, String)>, Error> {
    let stop = |stop: Stop| match stop {
        Stop::Failed(error) => error,
        Stop::Quiet => timed_out(linked, Duration::ZERO),
    };
    let mut guest = Guest::new(
        linked,
        "generators",
        &Grants::default(),
        &Limits::default(),
        stderr_handler(),
        interrupt,
    )
    .map_err(stop)?;
    let exports = guest.instance.sandgen_generator_generator();
    let infos = Guest::call(
        &guest.runtime,
        interrupt,
        exports.call_generators(&mut guest.store),
    )
    .map_err(|fault| stop(guest.stop("while listing its generators", fault)))?;
    Ok(infos
        .into_iter()
        .map(|info| (info.name, info.description))
        .collect())
}
