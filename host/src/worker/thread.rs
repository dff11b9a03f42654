//! The thread flavour: the worker state machine on a thread of the caller's
//! process (kept for the next worker when it ends, `pool.rs`), with its own
//! guest; interrupted through its [`Interrupt`].

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::guest::{Interrupt, Linked};
use crate::protocol::Command;
use crate::worker::task::{Reports, Task, thread_name};
use crate::worker::{machine, pool};

/// The caller's handle on a worker thread.
pub(crate) struct ThreadWorker {
    interrupt: Arc<Interrupt>,
    /// Disconnects when the worker has ended and dropped everything it
    /// held (its thread then waits for another worker, `pool.rs`).
    done: Receiver<()>,
}

impl ThreadWorker {
    /// Starts the worker thread: commands from `commands`, statuses to
    /// `statuses`.
    pub(crate) fn spawn(
        linked: Linked,
        task: Task,
        output: OutputHandler,
        commands: Receiver<Command>,
        statuses: impl Reports + Send + 'static,
    ) -> Result<ThreadWorker, Error> {
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let interrupt = Arc::new(Interrupt::default());
        let worker_interrupt = interrupt.clone();
        pool::run(
            thread_name("", &task.generator),
            Box::new(move || {
                // All dropped here: the caller learns that the worker ended
                // (`done` disconnects) once everything it held is gone and
                // its thread waits for the next worker.
                let (linked, commands, statuses, interrupt) =
                    (linked, commands, statuses, worker_interrupt);
                machine::run(&linked, task, output, &commands, &statuses, &interrupt);
                Box::new(done_tx)
            }),
        )
        .map_err(|e| {
            Error::new(
                ErrorKind::WorkerDied,
                format!("failed to start a worker thread: {e}"),
            )
        })?;
        Ok(ThreadWorker { interrupt, done })
    }

    /// Waits for the worker thread to end by itself.
    pub(crate) fn wait(&self) {
        let _ = self.done.recv();
    }

    /// Stops the guest at once, wherever it is.
    pub(crate) fn interrupt(&self) {
        self.interrupt.trigger();
    }

    /// Interrupts the guest and waits up to `grace` for the worker to end;
    /// one still running then (a guest stuck where no interrupt reaches) is
    /// left to end on its own.
    pub(crate) fn shutdown(&self, grace: Duration) {
        self.interrupt.trigger();
        let _ = self.done.recv_timeout(grace);
    }
}
