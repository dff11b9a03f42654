//! Every wait of the caller on its workers. The inactivity timeout counts
//! only the time the caller waits; a wait that is about to block on a
//! parked worker thread (`worker/thread.rs`) runs that worker on the
//! caller's thread first.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::caller::Workers;
use crate::error::{Error, ErrorKind};
use crate::protocol::Status;
use crate::worker::Parked;

impl Workers {
    /// Waits up to `wait` for the next status of worker `worker`;
    /// `Ok(None)` when none came in that time and the wait, begun at
    /// `waiting_since`, has not lasted longer than the inactivity timeout.
    pub(crate) fn recv_for(
        &self,
        worker: usize,
        wait: Option<Duration>,
        waiting_since: Instant,
        phase: &str,
    ) -> Result<Option<Status>, Error> {
        // Waiting as long as the timeout allows: a parked worker may run
        // here, up to the end of the timeout.
        let timeout = self.setup.timeout;
        let deadline = timeout.and_then(|timeout| waiting_since.checked_add(timeout));
        self.run_parked(worker, wait.is_none(), deadline, timeout, phase)?;
        let (wait, last) = self.slice(wait, waiting_since);
        let handle = self.handle(worker);
        let statuses = &handle.queues.statuses;
        let received = match wait {
            Some(wait) => statuses.recv_timeout(wait),
            None => statuses.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(status) => Ok(Some(status)),
            Err(RecvTimeoutError::Timeout) if !last => Ok(None),
            Err(e) => Err(self.recv_failed(worker, e, timeout, phase)),
        }
    }

    /// Waits up to `wait` for the next status of any of `workers`;
    /// `Ok(None)` as for [`recv_for`](Self::recv_for). An error names the
    /// worker it is of.
    pub(crate) fn recv_any_for(
        &self,
        workers: &[usize],
        wait: Option<Duration>,
        waiting_since: Instant,
        phase: &str,
    ) -> Result<Option<(usize, Status)>, (usize, Error)> {
        if let [worker] = workers {
            return Ok(self
                .recv_for(*worker, wait, waiting_since, phase)
                .map_err(|error| (*worker, error))?
                .map(|status| (*worker, status)));
        }
        let timeout = self.setup.timeout;
        let (wait, last) = self.slice(wait, waiting_since);
        let mut select = crossbeam_channel::Select::new();
        let handles: Vec<_> = workers.iter().map(|&worker| self.handle(worker)).collect();
        for (&worker, handle) in workers.iter().zip(&handles) {
            // Several workers are waited for at once: none runs here.
            self.run_parked(worker, false, None, timeout, phase)
                .map_err(|error| (worker, error))?;
            select.recv(&handle.queues.statuses);
        }
        let ready = match wait {
            Some(wait) => select.select_timeout(wait).ok(),
            None => Some(select.select()),
        };
        let Some(operation) = ready else {
            if !last {
                return Ok(None);
            }
            // Every worker was silent for the whole timeout: the first is
            // named.
            let error = self.recv_failed(workers[0], RecvTimeoutError::Timeout, timeout, phase);
            return Err((workers[0], error));
        };
        let index = operation.index();
        let worker = workers[index];
        match operation.recv(&handles[index].queues.statuses) {
            Ok(status) => Ok(Some((worker, status))),
            Err(_) => Err((
                worker,
                self.recv_failed(worker, RecvTimeoutError::Disconnected, timeout, phase),
            )),
        }
    }

    /// How long the next wait may last: up to `wait` (`None`: unbounded),
    /// and up to the end of the inactivity timeout of a wait begun at
    /// `waiting_since`; `true` when that end is what bounds it.
    fn slice(&self, wait: Option<Duration>, waiting_since: Instant) -> (Option<Duration>, bool) {
        match (self.setup.timeout, wait) {
            (Some(timeout), wait) => {
                let left = timeout.saturating_sub(waiting_since.elapsed());
                match wait {
                    Some(wait) if wait < left => (Some(wait), false),
                    _ => (Some(left), true),
                }
            }
            (None, wait) => (wait, false),
        }
    }

    /// Waits for the next status of worker `worker`, up to `deadline`.
    pub(crate) fn recv_within(
        &self,
        worker: usize,
        deadline: Option<Duration>,
        phase: &str,
    ) -> Result<Status, Error> {
        let until = deadline.and_then(|timeout| Instant::now().checked_add(timeout));
        self.run_parked(worker, true, until, deadline, phase)?;
        let handle = self.handle(worker);
        let statuses = &handle.queues.statuses;
        let received = match deadline {
            Some(timeout) => statuses.recv_timeout(timeout),
            None => statuses.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        received.map_err(|e| self.recv_failed(worker, e, deadline, phase))
    }

    /// After a pass's `StartIteration` went to worker `worker`: a parked
    /// worker runs here (`inline`, up to the inactivity timeout) or starts
    /// on its thread. A timeout there is the pass's error, as if met in its
    /// first wait.
    pub(crate) fn start_parked(&self, worker: usize, inline: bool) -> Result<(), Error> {
        let timeout = self.setup.timeout;
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let parked = self.handle(worker).pass_started(inline, deadline);
        self.parked_outcome(worker, parked, timeout, "iteration")
    }

    /// Before a wait for worker `worker`: a parked worker runs here
    /// (`inline`, up to `deadline`) or starts on its thread; a timeout there
    /// is the wait's.
    fn run_parked(
        &self,
        worker: usize,
        inline: bool,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        phase: &str,
    ) -> Result<(), Error> {
        let parked = self.handle(worker).before_wait(inline, deadline);
        self.parked_outcome(worker, parked, timeout, phase)
    }

    /// The error, if any, of a parked worker's run (`timeout`: the wait's
    /// bound, for the message).
    fn parked_outcome(
        &self,
        worker: usize,
        parked: Parked,
        timeout: Option<Duration>,
        phase: &str,
    ) -> Result<(), Error> {
        match parked {
            Parked::No | Parked::Ran => Ok(()),
            Parked::TimedOut => {
                Err(self.recv_failed(worker, RecvTimeoutError::Timeout, timeout, phase))
            }
            Parked::Forked => Err(self.named(
                worker,
                Error::new(
                    ErrorKind::WorkerDied,
                    format!(
                        "the worker thread of generator {} belongs to the process this one was forked from, and a forked process has none of its threads; create the iterable after the fork",
                        self.setup.generator
                    ),
                ),
            )),
        }
    }

    /// The error of a wait on worker `worker` that timed out or found the
    /// worker gone (the pass decides whether it ends the workers).
    fn recv_failed(
        &self,
        worker: usize,
        e: RecvTimeoutError,
        deadline: Option<Duration>,
        phase: &str,
    ) -> Error {
        if self.is_closed() {
            return self.closed_error();
        }
        let generator = &self.setup.generator;
        let error = match e {
            RecvTimeoutError::Timeout => Error::new(
                ErrorKind::Timeout,
                format!(
                    "generator {generator} timed out during {phase}: no data from its worker for {:?}",
                    deadline.unwrap_or_default()
                ),
            ),
            RecvTimeoutError::Disconnected => Error::new(
                ErrorKind::WorkerDied,
                format!(
                    "the worker of generator {generator} died during {phase} without reporting why"
                ),
            ),
        };
        self.named(worker, error)
    }
}
