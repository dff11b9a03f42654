//! The thread flavour: the worker state machine on a thread of the caller's
//! process (kept for the next worker when it ends, `pool.rs`), with its own
//! guest; interrupted through its [`Interrupt`].
//!
//! A worker may also start *parked*: its machine then waits in the handle,
//! on no thread, and the caller runs its steps on the caller's own thread
//! whenever it is about to wait for the worker without a bound of its own
//! ([`ThreadWorker::run_parked`]): initialization, and a pass's start up to
//! its first batch. The machine moves to a thread of its own once a pass
//! produces, so that it produces while the caller consumes. A worker's
//! first item then costs no hand-off between threads: on a machine whose
//! idle cores sleep, each hand-off that wakes one costs tens of
//! microseconds, more than a small guest's whole start (BENCHMARKS.md
//! "Start-up").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::guest::{Interrupt, Linked};
use crate::protocol::Command;
use crate::worker::machine::{Inline, Machine};
use crate::worker::pool;
use crate::worker::session::{GuestSession, GuestStart};
use crate::worker::task::{Reports, Task, thread_name};

/// A worker thread's machine: a guest's.
type GuestMachine = Machine<GuestSession>;

/// The caller's handle on a worker thread.
pub(crate) struct ThreadWorker {
    interrupt: Arc<Interrupt>,
    /// Disconnects when the worker has ended and dropped everything it
    /// held (its thread then waits for another worker, `pool.rs`).
    done: Receiver<()>,
    /// The machine while it runs on no thread, and what it drops when it
    /// ends.
    parked: Mutex<Option<(GuestMachine, Sender<()>)>>,
    /// Whether `parked` may hold the machine: checked before every wait, so
    /// a plain load.
    may_be_parked: AtomicBool,
    name: String,
    /// The fork generation the worker belongs to (`fork.rs`): a forked
    /// child has a copy of the handle, but not the worker's thread, and its
    /// copy of a parked machine shares state with the parent's runtime.
    generation: u64,
}

/// What [`ThreadWorker::run_parked`] did.
pub(crate) enum Parked {
    /// The worker runs on a thread of its own (or ended): wait for it.
    No,
    /// Its steps ran on the caller's thread: what it reported is queued.
    Ran,
    /// Its steps ran on the caller's thread until the deadline passed:
    /// the worker was stopped there, and has ended.
    TimedOut,
    /// The worker belongs to the process this one was forked from: it
    /// cannot run here.
    Forked,
}

impl ThreadWorker {
    /// Starts the worker: commands from `commands`, statuses to `statuses`.
    /// Parked (`park`), it reports `Loaded` at once and waits for the caller
    /// to run it; otherwise it starts on a thread.
    pub(crate) fn spawn(
        linked: Linked,
        task: Task,
        output: OutputHandler,
        commands: Receiver<Command>,
        statuses: impl Reports + Send + 'static,
        park: bool,
    ) -> Result<ThreadWorker, Error> {
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let interrupt = Arc::new(Interrupt::default());
        let name = thread_name("", &task.generator);
        let generator = task.generator.clone();
        let start = GuestStart {
            linked,
            task,
            output,
        };
        let mut machine = GuestMachine::new(
            start,
            generator,
            commands,
            Box::new(statuses),
            interrupt.clone(),
        );
        let worker = ThreadWorker {
            interrupt,
            done,
            parked: Mutex::new(None),
            may_be_parked: AtomicBool::new(park),
            name,
            generation: crate::fork::generation(),
        };
        if park {
            // Reports `Loaded` (a parked worker has nothing to start), and
            // waits for the caller.
            match machine.run_inline() {
                Inline::Waiting => worker.park(machine, done_tx),
                Inline::Producing => worker.hand_off(machine, done_tx),
                Inline::Ended => {}
            }
        } else {
            worker.start(machine, done_tx)?;
        }
        Ok(worker)
    }

    /// Starts `machine` on a thread.
    fn start(&self, machine: GuestMachine, done: Sender<()>) -> Result<(), Error> {
        pool::run(
            self.name.clone(),
            Box::new(move || {
                machine.run();
                // Dropped once the thread waits for the next worker: the
                // caller then learns that the worker ended (`done`
                // disconnects).
                Box::new(done)
            }),
        )
        .map_err(|e| {
            Error::new(
                ErrorKind::WorkerDied,
                format!("failed to start a worker thread: {e}"),
            )
        })
    }

    /// Moves a parked machine onto a thread; if no thread can start, the
    /// worker fails with that error (the caller reads it as the worker's
    /// last status).
    fn hand_off(&self, machine: GuestMachine, done: Sender<()>) {
        let machine = Arc::new(Mutex::new(Some(machine)));
        let on_thread = machine.clone();
        let started = pool::run(
            self.name.clone(),
            Box::new(move || {
                let machine = on_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(machine) = machine {
                    machine.run();
                }
                Box::new(done)
            }),
        );
        if let Err(e) = started {
            let machine = machine.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut machine) = machine {
                machine.abandon(Error::new(
                    ErrorKind::WorkerDied,
                    format!("failed to start a worker thread: {e}"),
                ));
            }
        }
    }

    fn park(&self, machine: GuestMachine, done: Sender<()>) {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some((machine, done));
        // Interrupted meanwhile (`interrupt` found no machine to drop: it
        // was running here): it ends now.
        if self.interrupt.is_set() {
            discard(self.unpark());
        }
    }

    /// Whether this process is a fork of the one the worker belongs to.
    pub(crate) fn forked(&self) -> bool {
        self.generation != crate::fork::generation()
    }

    /// Whether the machine may be parked (a plain load: asked before every
    /// wait).
    pub(crate) fn may_be_parked(&self) -> bool {
        self.may_be_parked.load(Ordering::Acquire)
    }

    fn unpark(&self) -> Option<(GuestMachine, Sender<()>)> {
        if !self.may_be_parked() {
            return None;
        }
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.forked() {
            // A forked copy: its guest's runtime and its hold on the epoch
            // clock are the parent's; dropping them here would change this
            // process's clock. Left as they are.
            std::mem::forget(parked);
            return None;
        }
        parked
    }

    /// Before the caller waits for this worker: a parked worker runs here,
    /// on the caller's thread, until it has reported what the caller needs
    /// next (`inline`, with the wait's deadline, if any), or starts on a
    /// thread (not `inline`: the caller wants its thread back within a
    /// bound of its own).
    pub(crate) fn run_parked(&self, inline: bool, deadline: Option<Instant>) -> Parked {
        if self.forked() {
            return Parked::Forked;
        }
        let Some((mut machine, done)) = self.unpark() else {
            return Parked::No;
        };
        // A caller inside an async runtime cannot drive the guest's own
        // runtime on its thread.
        if !inline || tokio::runtime::Handle::try_current().is_ok() {
            self.may_be_parked.store(false, Ordering::Release);
            self.hand_off(machine, done);
            return Parked::No;
        }
        self.interrupt.set_deadline(deadline);
        let ran = machine.run_inline();
        self.interrupt.set_deadline(None);
        if self.interrupt.timed_out() {
            // The guest was stopped at the deadline, and the machine ended
            // quietly; it is dropped here.
            return Parked::TimedOut;
        }
        match ran {
            Inline::Waiting => self.park(machine, done),
            Inline::Producing => {
                self.may_be_parked.store(false, Ordering::Release);
                self.hand_off(machine, done);
            }
            Inline::Ended => {}
        }
        Parked::Ran
    }

    /// Waits for the worker thread to end by itself.
    pub(crate) fn wait(&self) {
        let _ = self.done.recv();
    }

    /// Stops the guest at once, wherever it is (a parked worker ends here).
    pub(crate) fn interrupt(&self) {
        self.interrupt.trigger();
        discard(self.unpark());
    }

    /// Interrupts the guest and waits up to `grace` for the worker to end;
    /// one still running then (a guest stuck where no interrupt reaches) is
    /// left to end on its own, and so is the worker of the process this one
    /// was forked from (its thread is not here).
    pub(crate) fn shutdown(&self, grace: Duration) {
        self.interrupt();
        if !self.forked() {
            let _ = self.done.recv_timeout(grace);
        }
    }
}

impl Drop for ThreadWorker {
    fn drop(&mut self) {
        // A parked worker holds its guest until dropped with the handle.
        discard(self.unpark());
    }
}

/// Drops a parked machine: its guest's last output goes to the output
/// handler, whose panic must not reach the caller (a worker thread would
/// have caught it).
fn discard(parked: Option<(GuestMachine, Sender<()>)>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(parked)));
}
