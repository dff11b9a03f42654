//! Restarting a worker under a live pass: a fresh worker from what started
//! the first (a new instance; a new process in process isolation), the
//! passes before the live one replayed in it, and the live one resumed
//! where the failed worker stood. The failures a pass survives are
//! recorded here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::caller::Workers;
use crate::error::Error;
use crate::failure::{Failure, OnFailure};
use crate::guest::output::OutputHandler;
use crate::protocol::{Command, Status};
use crate::worker::task::Task;
use crate::worker::{Placement, WorkerHandle};

/// How long a failed worker, interrupted, may take to end before its
/// replacement goes on without it (a process still running is killed).
const REPLACED_GRACE: Duration = Duration::from_millis(100);

/// What started one worker: enough to start it again.
pub(crate) struct Respawn {
    pub(crate) placement: Placement,
    pub(crate) task: Task,
    pub(crate) output: OutputHandler,
}

impl Workers {
    /// What a pass does when a worker fails.
    pub(crate) fn on_failure(&self) -> OnFailure {
        self.setup.on_failure
    }

    /// How many restarts a pass may make.
    pub(crate) fn max_restarts(&self) -> u32 {
        self.setup.max_restarts
    }

    /// Whether worker `worker` can be started again: it was started from a
    /// spec, and the workers are neither closed nor the parent's.
    pub(crate) fn can_restart(&self, worker: usize) -> bool {
        worker < self.respawn.len() && !self.is_closed() && !self.forked()
    }

    /// Whether item `item` of the pass's stream is worker `worker`'s own
    /// (with items sharding, one in `step`; otherwise every item).
    pub(crate) fn keeps(&self, worker: usize, item: u64) -> bool {
        self.respawn
            .get(worker)
            .and_then(|respawn| respawn.task.flow.keep)
            .is_none_or(|stride| stride.keeps(item))
    }

    /// Records a failure a pass survived.
    pub(crate) fn record(&self, failure: Failure) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    }

    /// The failures the passes survived, oldest first.
    pub(crate) fn failures(&self) -> Vec<Failure> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces worker `worker` with a fresh one: started and initialized,
    /// the `passes` before the live one run in it without their items (each
    /// as far as its last restart had passed over), and
    /// the live one started with `command`. Returns the live pass's
    /// ordinal for the new worker. Each wait is bounded as the first
    /// worker's were (the load timeout, then the inactivity timeout).
    pub(crate) fn restart(
        &self,
        worker: usize,
        passes: u64,
        command: Command,
    ) -> Result<u64, Error> {
        let respawn = &self.respawn[worker];
        let fresh = WorkerHandle::spawn(
            &respawn.placement,
            respawn.task.clone(),
            Arc::clone(&respawn.output),
            false,
        )
        .map_err(|error| self.named(worker, error))?;
        let old = {
            let mut handle = self.all[worker]
                .handle
                .write()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *handle, Arc::new(fresh))
        };
        old.interrupt();
        old.shutdown(REPLACED_GRACE);
        self.all[worker].starts_sent.store(0, Ordering::SeqCst);
        self.all[worker].starts_seen.store(0, Ordering::SeqCst);
        self.await_restarted(worker)?;
        for pass in 0..passes {
            self.replay_pass(worker, pass)?;
        }
        Ok(self.start_with(worker, command))
    }

    /// How a restarted worker replays pass `pass`: as the last restart of
    /// this worker in that pass resumed (past the items it passed over),
    /// or from its start.
    fn replay_command(&self, worker: usize, pass: u64) -> Command {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (delivered, past) = failures
            .iter()
            .rev()
            .find(|failure| failure.worker == worker && failure.pass == pass)
            .map_or((0, 0), |failure| failure.resumed);
        Command::SkipIteration {
            delivered,
            past,
            careful: 0,
        }
    }

    /// Waits for a restarted worker's `Loaded` and initialization.
    fn await_restarted(&self, worker: usize) -> Result<(), Error> {
        match self.recv_within(worker, Some(self.setup.start_up), "restart")? {
            Status::Loaded => {}
            Status::InitializationFailed(error) => return Err(self.named(worker, error)),
            other => return Err(self.protocol_error(worker, &other, "restart")),
        }
        match self.recv_within(worker, self.setup.timeout, "initialization")? {
            Status::InitializationSucceeded => Ok(()),
            Status::InitializationFailed(error) => Err(self.named(worker, error)),
            other => Err(self.protocol_error(worker, &other, "initialization")),
        }
    }

    /// Runs earlier pass `pass` in a restarted worker without its items.
    fn replay_pass(&self, worker: usize, pass: u64) -> Result<(), Error> {
        self.start_with(worker, self.replay_command(worker, pass));
        loop {
            match self.recv_within(worker, self.setup.timeout, "replay of an earlier pass")? {
                Status::IterationStarted => {
                    self.pass_started(worker);
                }
                Status::Items(batch) if batch.count == 0 => {
                    // Its one item of credit goes back at once.
                    self.send(worker, Command::Consumed { items: 1, bytes: 0 });
                }
                Status::FailedAt { .. } => {}
                Status::IterationFinished => return Ok(()),
                Status::IteratorFailed(error) => return Err(self.named(worker, error)),
                other => return Err(self.protocol_error(worker, &other, "replay")),
            }
        }
    }

    /// The error that ends a pass whose worker failed once more than its
    /// restarts allow.
    pub(crate) fn restarts_spent(&self, error: Error, restarts: u32) -> Error {
        if restarts == 0 {
            return error;
        }
        let plural = if restarts == 1 { "" } else { "s" };
        error.context(format!(
            "the pass failed after {restarts} restart{plural} (on_failure={}, max_restarts={})",
            self.setup.on_failure, self.setup.max_restarts
        ))
    }
}
