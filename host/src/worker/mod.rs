//! Workers: where a generator runs. The caller talks to every worker the
//! same way, through a [`WorkerHandle`] (commands in, statuses out); the
//! flavour decides where the worker state machine (`machine.rs`) runs:
//!
//! - [`thread`]: on a thread of the caller's process;
//! - [`process`]: in a child process, over its stdin and stdout, running
//!   the very same thread flavour inside.
//!
//! A new isolation mode is a new flavour file here, one arm in
//! [`WorkerHandle::spawn`] (and in the two methods that reach the flavour),
//! and one entry in the tests' list of modes (`tests/all/util.rs`).

mod machine;
pub(crate) mod pool;
pub(crate) mod process;
mod session;
pub(crate) mod task;
mod thread;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::guest::Linked;
use crate::guest::output::OutputHandler;
use crate::protocol::Command;
pub(crate) use crate::worker::process::ProcessSpec;
use crate::worker::process::ProcessWorker;
pub(crate) use crate::worker::process::Recycler;
#[cfg(test)]
use crate::worker::task::WorkerQueues;
use crate::worker::task::{Queues, Task, queues};
pub(crate) use crate::worker::thread::Parked;
use crate::worker::thread::ThreadWorker;

/// Where a worker runs.
///
/// Parses from and prints as `thread` or `process`:
///
/// ```
/// use sandgen::Isolation;
///
/// assert_eq!("process".parse::<Isolation>().unwrap(), Isolation::Process);
/// assert_eq!(Isolation::default().to_string(), "thread");
/// assert!("vm".parse::<Isolation>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isolation {
    /// A thread of this process, with its own wasm instance and store: the
    /// fastest start and hand-off (a single worker's initializer and first
    /// batch run on the caller's own thread).
    #[default]
    Thread,
    /// A child process running the same worker, talking over its stdin and
    /// stdout (large batches through shared memory on Linux): adds an
    /// OS process boundary against faults of the runtime itself, and the OS
    /// can kill it. Needs the compile cache and a worker program (see
    /// [`EngineBuilder`](crate::EngineBuilder)).
    Process,
}

impl Isolation {
    /// Every isolation mode, in the order the docs list them.
    pub const ALL: [Isolation; 2] = [Isolation::Thread, Isolation::Process];
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Thread => "thread",
            Isolation::Process => "process",
        })
    }
}

impl FromStr for Isolation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Isolation::ALL
            .into_iter()
            .find(|mode| mode.to_string() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("unknown isolation `{s}`: use `thread` or `process`"),
                )
            })
    }
}

/// What a worker starts from: the plain spec the loading layer hands down
/// (a worker needs no loaded plugin, only this).
pub(crate) enum Placement {
    /// A worker thread instantiates this linked component.
    Thread(Linked),
    /// A worker process loads a compiled file.
    Process(ProcessSpec),
}

/// The caller's handle on a worker, wherever it runs.
pub(crate) struct WorkerHandle {
    pub(crate) queues: Queues,
    flavor: Flavor,
}

enum Flavor {
    Thread(ThreadWorker),
    Process(ProcessWorker),
    /// Played by a unit test through the worker's ends of the queues.
    #[cfg(test)]
    Fake,
}

impl WorkerHandle {
    /// Starts a worker, placed as `placement` says, running `task`. It
    /// reports `Loaded`, then `InitializationSucceeded` or
    /// `InitializationFailed`. With `park`, a worker thread runs its first
    /// steps on the caller's thread ([`before_wait`](Self::before_wait)).
    pub(crate) fn spawn(
        placement: &Placement,
        task: Task,
        output: OutputHandler,
        park: bool,
    ) -> Result<WorkerHandle, Error> {
        let (queues, worker_queues) = queues();
        let flavor = match placement {
            Placement::Thread(linked) => Flavor::Thread(ThreadWorker::spawn(
                linked.clone(),
                task,
                output,
                worker_queues.commands,
                worker_queues.statuses,
                park,
            )?),
            Placement::Process(spec) => {
                Flavor::Process(ProcessWorker::spawn(spec, task, output, worker_queues)?)
            }
        };
        Ok(WorkerHandle { queues, flavor })
    }

    /// A worker that a unit test plays: the test holds its ends of the
    /// queues.
    #[cfg(test)]
    pub(crate) fn fake() -> (WorkerHandle, WorkerQueues) {
        let (queues, worker_queues) = queues();
        let flavor = Flavor::Fake;
        (WorkerHandle { queues, flavor }, worker_queues)
    }

    /// Before the caller waits for this worker's next status: a parked
    /// worker with nothing queued runs on the caller's thread until it has
    /// reported something (`inline`, up to `deadline`), or starts on a
    /// thread of its own (not `inline`).
    pub(crate) fn before_wait(&self, inline: bool, deadline: Option<Instant>) -> Parked {
        match &self.flavor {
            Flavor::Thread(thread) if thread.forked() => Parked::Forked,
            Flavor::Thread(thread) if thread.may_be_parked() && self.queues.statuses.is_empty() => {
                thread.run_parked(inline, deadline)
            }
            _ => Parked::No,
        }
    }

    /// After a pass's `StartIteration` was sent: a parked worker runs on
    /// the caller's thread up to its first batch (`inline`, up to
    /// `deadline`), or starts on a thread of its own.
    pub(crate) fn pass_started(&self, inline: bool, deadline: Option<Instant>) -> Parked {
        match &self.flavor {
            Flavor::Thread(thread) => thread.run_parked(inline, deadline),
            Flavor::Process(_) => Parked::No,
            #[cfg(test)]
            Flavor::Fake => Parked::No,
        }
    }

    /// The worker process's id, in process isolation.
    pub(crate) fn process_id(&self) -> Option<u32> {
        match &self.flavor {
            Flavor::Thread(_) => None,
            Flavor::Process(process) => Some(process.pid()),
            #[cfg(test)]
            Flavor::Fake => None,
        }
    }

    /// Gives back the buffer of a batch the caller has read, for the worker
    /// to fill again (a worker process copies its shared batches into
    /// them: reusing memory already in place saves page faults).
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        if let Flavor::Process(process) = &self.flavor {
            process.recycle(buf);
        }
    }

    /// Where a batch handed to the caller whole gives its buffer back, in
    /// process isolation (a thread's batches are the guest's own lists).
    pub(crate) fn recycler(&self) -> Option<Recycler> {
        match &self.flavor {
            Flavor::Process(process) => Some(process.recycler()),
            _ => None,
        }
    }

    /// Stops the guest at once, wherever it is (a worker process is killed).
    pub(crate) fn interrupt(&self) {
        match &self.flavor {
            Flavor::Thread(thread) => thread.interrupt(),
            Flavor::Process(process) => process.kill(),
            #[cfg(test)]
            Flavor::Fake => {}
        }
    }

    /// Ends the worker: Abort, then wait up to `grace` for it. A thread still
    /// running then is left to end on its own; a process still running is
    /// killed.
    pub(crate) fn shutdown(&self, grace: Duration) {
        let _ = self.queues.commands.send(Command::Abort);
        match &self.flavor {
            Flavor::Thread(thread) => thread.shutdown(grace),
            Flavor::Process(process) => process.shutdown(grace),
            #[cfg(test)]
            Flavor::Fake => {}
        }
    }
}
