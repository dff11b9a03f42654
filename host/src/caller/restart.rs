//! Restarting a worker under a live pass: a fresh worker from what started
//! the first (a new instance; a new process in process isolation), the
//! passes before the live one replayed in it, and the live one resumed
//! where the failed worker stood. The failures a pass survives are
//! recorded here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::caller::Workers;
use crate::error::{Error, ErrorKind};
use crate::failure::{Failure, OnFailure, item_failure};
use crate::guest::output::OutputHandler;
use crate::protocol::{Command, Status};
use crate::worker::task::Task;
use crate::worker::{Placement, WorkerHandle};

/// How long a failed worker, interrupted, may take to end before its
/// replacement goes on without it (a process still running is killed).
const REPLACED_GRACE: Duration = Duration::from_millis(100);

/// Where a worker's `next` call failed (`Status::FailedAt`): the stream's
/// item, how many it asked for, and whether it was dropping items before
/// where it resumed.
pub(crate) type FailedAt = (u64, u32, bool);

/// How a restarted worker replays an earlier pass (`SkipIteration`).
struct Replay {
    delivered: u64,
    past: u64,
    careful: u64,
}

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
    /// the `passes` before the live one run in it without their items
    /// (each as far as its last restart had passed over), and the live one
    /// started with `command`. Each wait is bounded as the first worker's
    /// were (the load timeout, then the inactivity timeout).
    ///
    /// With `skip_failed`, an item that fails in the replay of an earlier
    /// pass (one that pass never reached, stopped early) is passed over as
    /// the pass would have: a restart of its own, recorded, at most
    /// `budget` of them. Returns the live pass's ordinal for the new worker
    /// and those extra restarts; or the error and those restarts.
    pub(crate) fn restart(
        &self,
        worker: usize,
        passes: u64,
        command: Command,
        budget: u32,
        skip_failed: bool,
    ) -> Result<(u64, u32), (Error, u32)> {
        let mut plans: Vec<Replay> = (0..passes)
            .map(|pass| self.replay_plan(worker, pass))
            .collect();
        let mut used = 0;
        loop {
            self.fresh_worker(worker).map_err(|error| (error, used))?;
            let failed = plans.iter().enumerate().find_map(|(pass, plan)| {
                let replayed = self.replay_pass(worker, plan);
                replayed.err().map(|failed| (pass, failed))
            });
            let Some((pass, (error, failed_at))) = failed else {
                return Ok((self.start_with(worker, command), used));
            };
            let plan = &mut plans[pass];
            let skipped = match failed_at {
                Some((item, asked, false))
                    if skip_failed && used < budget && item_failure(error.kind()) =>
                {
                    if asked == 1 || error.kind() == ErrorKind::IterationFailed {
                        plan.past = plan.past.max(item.saturating_add(1));
                        Some(item)
                    } else {
                        plan.careful = item.saturating_add(u64::from(asked));
                        None
                    }
                }
                _ => return Err((error, used)),
            };
            used += 1;
            self.record(Failure {
                worker,
                pass: pass as u64,
                position: plan.delivered,
                skipped,
                error,
                resumed: (plan.delivered, plan.past),
            });
        }
    }

    /// Starts a fresh worker in place of worker `worker` (the old one is
    /// interrupted and ended) and waits for its initialization.
    fn fresh_worker(&self, worker: usize) -> Result<(), Error> {
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
        if self.is_closed() {
            // Closed while it started: `close` may have ended the old one
            // only.
            let fresh = self.handle(worker);
            fresh.interrupt();
            fresh.shutdown(REPLACED_GRACE);
            return Err(self.closed_error());
        }
        self.all[worker].starts_sent.store(0, Ordering::SeqCst);
        self.all[worker].starts_seen.store(0, Ordering::SeqCst);
        self.await_restarted(worker)
    }

    /// How a restarted worker replays pass `pass`: as the last restart of
    /// this worker in that pass resumed (past the items it passed over),
    /// or from its start.
    fn replay_plan(&self, worker: usize, pass: u64) -> Replay {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (delivered, past) = failures
            .iter()
            .rev()
            .find(|failure| failure.worker == worker && failure.pass == pass)
            .map_or((0, 0), |failure| failure.resumed);
        Replay {
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

    /// Runs an earlier pass in a restarted worker without its items, as
    /// `plan` says; a failure with where it was (`FailedAt`), if said.
    fn replay_pass(&self, worker: usize, plan: &Replay) -> Result<(), (Error, Option<FailedAt>)> {
        let command = Command::SkipIteration {
            delivered: plan.delivered,
            past: plan.past,
            careful: plan.careful,
        };
        self.start_with(worker, command);
        let mut failed_at = None;
        loop {
            let phase = "replay of an earlier pass";
            let status = self
                .recv_within(worker, self.setup.timeout, phase)
                .map_err(|error| (error, None))?;
            match status {
                Status::IterationStarted => {
                    self.pass_started(worker);
                }
                Status::Items(batch) if batch.count == 0 => {
                    // Its one item of credit goes back at once.
                    self.send(worker, Command::Consumed { items: 1, bytes: 0 });
                }
                Status::FailedAt {
                    item,
                    asked,
                    dropping,
                } => failed_at = Some((item, asked, dropping)),
                Status::IterationFinished => return Ok(()),
                Status::IteratorFailed(error) => {
                    return Err((self.named(worker, error), failed_at));
                }
                other => return Err((self.protocol_error(worker, &other, "replay"), None)),
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
