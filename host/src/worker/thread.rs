//! The thread flavour: the worker state machine on a thread of the caller's
//! process, with its own guest; interrupted through its [`Interrupt`].

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::protocol::Command;

use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::guest::{Interrupt, Linked};
use crate::worker::machine;
use crate::worker::task::{Reports, Task, thread_name};

/// The caller's handle on a worker thread.
pub(crate) struct ThreadWorker {
    interrupt: Arc<Interrupt>,
    /// Disconnects when the worker thread ends.
    done: Receiver<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let thread = std::thread::Builder::new()
            .name(thread_name("", &task.generator))
            .spawn(move || {
                let _done = done_tx;
                machine::run(
                    &linked,
                    task,
                    output,
                    &commands,
                    &statuses,
                    &worker_interrupt,
                );
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::WorkerDied,
                    format!("failed to start a worker thread: {e}"),
                )
            })?;
        Ok(ThreadWorker {
            interrupt,
            done,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits for the worker thread to end by itself.
    pub(crate) fn wait(&self) {
        let _ = self.done.recv();
    }

    /// Stops the guest at once, wherever it is.
    pub(crate) fn interrupt(&self) {
        self.interrupt.trigger();
    }

    /// Interrupts the guest and waits up to `grace` for the thread to end; a
    /// thread still running then (a guest stuck where no interrupt reaches)
    /// is left to end on its own.
    pub(crate) fn shutdown(&self, grace: Duration) {
        self.interrupt.trigger();
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.done.recv_timeout(grace)
            && let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = thread.join();
        }
    }
}
