//! The caller's side of the protocol for the workers of one iterable:
//! [`Workers`] holds their handles, sends their commands, owns every wait
//! on them (`wait.rs`: the inactivity timeout counts only the time the
//! caller waits), remembers the failure that ended them, and names a
//! failing worker (`worker 2 of 4`). The handle ([`Iterable`](crate::Iterable))
//! and its passes (`pass/`) both work through it.

mod progress;
mod restart;
mod wait;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sandgen_wire::Encoding;

pub(crate) use crate::caller::progress::{Progress, Resume};
pub(crate) use crate::caller::restart::{FailedAt, Respawn};
use crate::error::{Error, ErrorKind};
use crate::failure::{Failure, OnFailure};
use crate::fork;
use crate::protocol::{Command, Status};
use crate::worker::{Recycler, WorkerHandle};

/// How long closing or dropping an iterable waits for each worker to end.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

/// What the caller knows of how its workers run.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    /// The generator's name, for messages.
    pub(crate) generator: String,
    pub(crate) encoding: Encoding,
    /// The inactivity timeout.
    pub(crate) timeout: Option<Duration>,
    /// Items round-robin by worker (`true`) or as they come.
    pub(crate) in_order: bool,
    /// What a pass does when a worker fails, and how many restarts it may
    /// make.
    pub(crate) on_failure: OnFailure,
    pub(crate) max_restarts: u32,
    /// How long a restarted worker may take to start (the plugin's load
    /// timeout).
    pub(crate) start_up: Duration,
}

/// The workers of one iterable, as the caller sees them.
pub(crate) struct Workers {
    all: Vec<Worker>,
    setup: Setup,
    pass_active: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// Set by [`Workers::close`].
    closed: AtomicBool,
    /// The process's fork generation when the workers started: in a forked
    /// child they are the parent's, and left alone.
    generation: u64,
    /// What the passes delivered, for positions.
    progress: Progress,
    /// What started each worker, to start it again (empty: the workers
    /// cannot be restarted).
    respawn: Vec<Respawn>,
    /// The failures the passes survived.
    failures: Mutex<Vec<Failure>>,
}

/// One worker, as the caller sees it.
struct Worker {
    /// Replaced when the worker is restarted.
    handle: RwLock<Arc<WorkerHandle>>,
    /// `StartIteration` commands sent; a pass's `IterationStarted` is the
    /// status with the same ordinal, so leftovers of earlier passes are told
    /// apart without a pass id on the wire.
    starts_sent: AtomicU64,
    starts_seen: AtomicU64,
}

impl Workers {
    pub(crate) fn new(handles: Vec<WorkerHandle>, setup: Setup) -> Workers {
        let progress = Progress::new(handles.len());
        Workers {
            progress,
            all: handles
                .into_iter()
                .map(|handle| Worker {
                    handle: RwLock::new(Arc::new(handle)),
                    starts_sent: AtomicU64::new(0),
                    starts_seen: AtomicU64::new(0),
                })
                .collect(),
            setup,
            pass_active: AtomicBool::new(false),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            generation: fork::generation(),
            respawn: Vec::new(),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// Keeps what started each worker, so that a pass can restart it.
    pub(crate) fn with_respawn(mut self, respawn: Vec<Respawn>) -> Workers {
        self.respawn = respawn;
        self
    }

    /// Worker `worker`'s handle, as it is now.
    fn handle(&self, worker: usize) -> Arc<WorkerHandle> {
        Arc::clone(
            &self.all[worker]
                .handle
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Every worker's handle, as they are now.
    fn handles(&self) -> Vec<Arc<WorkerHandle>> {
        (0..self.all.len())
            .map(|worker| self.handle(worker))
            .collect()
    }

    /// Whether this is a process forked from the one that started the
    /// workers: they run there (a thread, or a process the parent reads and
    /// reaps), so here they are neither waited for, nor stopped, nor killed.
    fn forked(&self) -> bool {
        fork::generation() != self.generation
    }

    fn forked_error(&self) -> Error {
        Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the workers of generator {} belong to the process this one was forked from, \
                 which runs them; create the iterable after the fork",
                self.setup.generator
            ),
        )
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    pub(crate) fn generator(&self) -> &str {
        &self.setup.generator
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.setup.encoding
    }

    pub(crate) fn in_order(&self) -> bool {
        self.setup.in_order
    }

    /// What the passes delivered.
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The worker processes' ids, by worker index (none for threads).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.handles()
            .iter()
            .filter_map(|handle| handle.process_id())
            .collect()
    }

    /// Waits for every worker to report `Loaded` (within `start_up`: a
    /// worker process's start is sandgen's time, bounded by the load
    /// timeout), then for every worker's initialization, within one
    /// inactivity timeout for all of them. The workers start side by side;
    /// they are awaited in order.
    pub(crate) fn await_initialized(&self, start_up: Duration) -> Result<(), Error> {
        for worker in 0..self.len() {
            match self.recv_within(worker, Some(start_up), "start-up")? {
                Status::Loaded => {}
                Status::InitializationFailed(error) => return Err(self.named(worker, error)),
                other => return Err(self.protocol_error(worker, &other, "start-up")),
            }
        }
        let deadline = self
            .setup
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        for worker in 0..self.len() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.recv_within(worker, left, "initialization")? {
                Status::InitializationSucceeded => {}
                Status::InitializationFailed(error) => return Err(self.named(worker, error)),
                other => return Err(self.protocol_error(worker, &other, "initialization")),
            }
        }
        Ok(())
    }

    /// Sends `command` to worker `worker` (a worker that is gone is
    /// reported by the next wait, not here).
    pub(crate) fn send(&self, worker: usize, command: Command) {
        let _ = self.handle(worker).queues.commands.send(command);
    }

    /// Sends `StartIteration` (with `skip`, `SkipIteration`; past
    /// `delivered` items it delivered before a position,
    /// `ResumeIteration`) to worker `worker`: the pass's ordinal for it.
    pub(crate) fn start_pass(&self, worker: usize, skip: bool, delivered: u64) -> u64 {
        let command = if skip {
            Command::SkipIteration {
                delivered: 0,
                past: 0,
                careful: 0,
            }
        } else if delivered > 0 {
            Command::ResumeIteration {
                delivered,
                past: 0,
                careful: 0,
            }
        } else {
            Command::StartIteration
        };
        self.start_with(worker, command)
    }

    /// Sends a command that starts a pass to worker `worker`: the pass's
    /// ordinal for it.
    fn start_with(&self, worker: usize, command: Command) -> u64 {
        self.send(worker, command);
        self.all[worker].starts_sent.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// An `IterationStarted` of worker `worker` arrived: its ordinal.
    pub(crate) fn pass_started(&self, worker: usize) -> u64 {
        self.all[worker].starts_seen.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Gives back the buffer of a batch of worker `worker` that the caller
    /// has read.
    pub(crate) fn recycle(&self, worker: usize, buf: Vec<u8>) {
        self.handle(worker).recycle(buf);
    }

    /// Where a batch of worker `worker` handed to the caller whole gives
    /// its buffer back.
    pub(crate) fn recycler(&self, worker: usize) -> Option<Recycler> {
        self.handle(worker).recycler()
    }

    /// Ends the workers now and waits for them (up to a second each, then a
    /// worker process is killed). Closing twice does nothing more.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) && !self.forked() {
            let handles = self.handles();
            for handle in &handles {
                handle.interrupt();
            }
            for handle in &handles {
                handle.shutdown(TEARDOWN_GRACE);
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!(
                "the iterable of generator {} was closed; create a new iterable to iterate again",
                self.setup.generator
            ),
        )
    }

    /// Checks that a pass may start now, and marks one as live.
    pub(crate) fn begin_pass(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if self.forked() {
            return Err(self.forked_error());
        }
        if let Some(error) = self.failed() {
            return Err(Error::new(
                ErrorKind::Closed,
                format!(
                    "cannot start a pass over generator {}: its worker shut down after an earlier error ({error}); create a new iterable",
                    self.setup.generator
                ),
            ));
        }
        if self.pass_active.swap(true, Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "a pass over generator {} is already in progress; finish or drop it before starting another",
                    self.setup.generator
                ),
            ));
        }
        Ok(())
    }

    /// Marks the live pass as over.
    pub(crate) fn end_pass(&self) {
        self.pass_active.store(false, Ordering::SeqCst);
    }

    fn failed(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers the error that ended the workers, and makes sure they end.
    pub(crate) fn fail(&self, error: &Error) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| error.clone());
        if !self.forked() {
            for handle in self.handles() {
                handle.interrupt();
            }
        }
    }

    /// `error` of worker `worker`, named when there are several.
    pub(crate) fn named(&self, worker: usize, error: Error) -> Error {
        name_worker(error, worker, self.len())
    }

    /// A status that has no place where it came: the workers end.
    pub(crate) fn protocol_error(&self, worker: usize, status: &Status, phase: &str) -> Error {
        let generator = &self.setup.generator;
        let error = match status {
            Status::UnexpectedCommand(command) => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the worker of generator {generator} received an unexpected command during {phase}: {command:?}"
                ),
            ),
            other => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the worker of generator {generator} sent an unexpected status during {phase}: {other:?}"
                ),
            ),
        };
        let error = self.named(worker, error);
        self.fail(&error);
        error
    }
}

/// `error` of worker `index` of `workers`, named when there are several.
pub(crate) fn name_worker(error: Error, index: usize, workers: usize) -> Error {
    if workers > 1 {
        error.context(format!("worker {index} of {workers}"))
    } else {
        error
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if self.forked() {
            // The parent's workers: nothing of them is ours to end.
            return;
        }
        // Interrupt every worker first, so that they end side by side.
        let handles = self.handles();
        for handle in &handles {
            let _ = handle.queues.commands.send(Command::Abort);
        }
        for handle in &handles {
            handle.shutdown(TEARDOWN_GRACE);
        }
    }
}
